/* fc_attention_v4: v3's math (wgmma, Q and P in registers, K/V from swizzled shared memory) with the work split
 * the way FlashAttention-3 splits it: warp specialization.
 *
 *   - Warpgroup 0 is the producer. It only copies K/V tiles (16-byte cp.async into the swizzled layout, rows past
 *     the key limit zero-filled) into a ring of kStages stages and publishes each stage on its `full` mbarrier once
 *     its copies have landed (wait, proxy fence, arrive: the order v3 uses before its block barrier). It runs one
 *     tile ahead of what it publishes and refills a stage only after both consumers released it on `empty`.
 *   - Warpgroups 1 and 2 are consumers, 64 query rows each. They load their own Q rows once, then per tile wait on
 *     `full`, run S = Q K^T, the online softmax and O += P V exactly as v3, and arrive on `empty`. No block-wide
 *     barrier ties them together, so one consumer's softmax overlaps the other's MMAs, and the per-thread address
 *     arithmetic of the loads (ncu's busiest pipe in v3) has left their instruction stream.
 *   - setmaxnreg moves registers from the producer (kProducerRegs) to the consumers (kConsumerRegs), which is what
 *     lets 128-key tiles fit.
 * A consumer group with no rows left (past seq_q, or past its causal limit) still waits and releases every tile,
 * so the producer never waits on it forever.
 */
#include <cuda_runtime.h>
#include <cuda_fp16.h>
#include <cuda_bf16.h>
#include <stdint.h>

#include "flashclip.h"
#include "attention_ptx.cuh"
#include "attention_traits.cuh"
#include "attention_wgmma.cuh"

namespace flashclip_attention {
namespace {

/* Rows [row0, row0 + kRows) into a swizzled K or V stage, by the kLoaders threads numbered `tid`. Rolled (two
 * chunks per trip): the producer runs on few registers, and the copies are asynchronous anyway. */
template <class Traits, int kRows, int kLoaders>
__device__ __forceinline__ void load_swizzled_rows(unsigned char *tile, const typename Traits::Elem *src,
                                                   long long row_stride, int row0, int row_end, int tid) {
    constexpr int kChunks = kRows * Traits::kChunksPerRow;
    constexpr int kAtomChunks = Traits::kAtomCols / 8;
#pragma unroll 2
    for (int i0 = 0; i0 < kChunks; i0 += kLoaders) {
        const int i = i0 + tid;
        if (kChunks % kLoaders == 0 || i < kChunks) {
            const int r = i / Traits::kChunksPerRow, c = i % Traits::kChunksPerRow;
            const uint32_t offset = swizzle<Traits::kSwizzleBytes>(
                (c / kAtomChunks) * kRows * Traits::kSwizzleBytes + r * Traits::kSwizzleBytes + 16 * (c % kAtomChunks));
            if (row0 + r < row_end)
                cp_async_16(tile + offset, src + (long long)(row0 + r) * row_stride + 8 * c);
            else
                *reinterpret_cast<uint4 *>(tile + offset) = make_uint4(0u, 0u, 0u, 0u);
        }
    }
}

/* Q rows [row0, row0 + 64) of one consumer group into the padded row layout, by its 128 threads. */
template <class Traits>
__device__ __forceinline__ void load_q_rows(typename Traits::Elem *tile, const typename Traits::Elem *src,
                                            long long row_stride, int row0, int row_end, int tid) {
    constexpr int kChunks = 64 * Traits::kChunksPerRow;
#pragma unroll
    for (int i0 = 0; i0 < kChunks; i0 += 128) {
        const int i = i0 + tid;
        if (kChunks % 128 == 0 || i < kChunks) {
            const int r = i / Traits::kChunksPerRow, c = i % Traits::kChunksPerRow;
            typename Traits::Elem *dst = tile + r * Traits::kSmemRowStride + 8 * c;
            if (row0 + r < row_end)
                cp_async_16(dst, src + (long long)(row0 + r) * row_stride + 8 * c);
            else
                *reinterpret_cast<uint4 *>(dst) = make_uint4(0u, 0u, 0u, 0u);
        }
    }
}

template <class Traits>
__global__ void __launch_bounds__(Traits::kThreads, 1) attention_v4_kernel(const fc_attention_params p) {
#if defined(__CUDA_ARCH__) && !defined(__CUDA_ARCH_FEAT_SM90_ALL)
    // wgmma and setmaxnreg exist only in sm_90a code; the launcher refuses other devices.
    __trap();
#elif defined(__CUDA_ARCH__)
    constexpr float kLog2e = 1.4426950408889634f;
    constexpr float kLn2 = 0.6931471805599453f;
    using Elem = typename Traits::Elem;
    using Ops = ElemOps<Elem>;
    using Mma = Wgmma<Elem, Traits::kHeadDimPadded>;
    using MmaS = Wgmma<Elem, Traits::kBlockN>;
    constexpr int kBlockM = Traits::kBlockM;
    constexpr int kBlockN = Traits::kBlockN;
    constexpr int kStages = Traits::kStages;
    constexpr int kSw = Traits::kSwizzleBytes;
    constexpr int kQStride = Traits::kSmemRowStride;
    constexpr int kConsumerThreads = 128 * Traits::kConsumers;

    extern __shared__ __align__(1024) unsigned char smem_raw[];
    unsigned char *smem = smem_raw + ((1024 - (smem_addr(smem_raw) & 1023)) & 1023);
    Elem *q_tile = reinterpret_cast<Elem *>(smem);
    unsigned char *k_tiles = smem + Traits::kQTileBytes;
    unsigned char *v_tiles = k_tiles + kStages * Traits::kKVTileBytes;
    uint64_t *full = reinterpret_cast<uint64_t *>(v_tiles + kStages * Traits::kKVTileBytes);
    uint64_t *empty = full + kStages;

    const int tid = threadIdx.x;
    const int warpgroup = tid / 128;

    const int m_block = (gridDim.x - 1 - blockIdx.x) * kBlockM;  // reversed: longest causal blocks start first
    const int h = blockIdx.y, b = blockIdx.z;
    const int hk = h / (p.heads_q / p.heads_kv);
    const bool causal = p.causal != 0;
    const int key_limit = batch_key_limit(p.key_lens, b, p.seq_k);
    const int block_key_end = causal ? min(key_limit, min(m_block + kBlockM, p.seq_q)) : key_limit;
    const int n_tiles = (block_key_end + kBlockN - 1) / kBlockN;

    if (tid == 0) {
        for (int s = 0; s < kStages; ++s) {
            mbarrier_init(&full[s], 128);                // every producer thread, after its copies landed
            mbarrier_init(&empty[s], kConsumerThreads);  // every consumer thread, after its MMAs read the stage
        }
    }
    __syncthreads();

    if (warpgroup == 0) {
        // ---------------------------------------------------------------- producer
        setmaxnreg_dec<Traits::kProducerRegs>();
        const Elem *k = static_cast<const Elem *>(p.k) + b * p.k_batch_stride + hk * p.k_head_stride;
        const Elem *v = static_cast<const Elem *>(p.v) + b * p.v_batch_stride + hk * p.v_head_stride;
        if constexpr (Traits::kChunksPerRow < Traits::kPaddedChunksPerRow) {
            // Head-dim padding (104 -> 112): zero once in every stage, never overwritten by the loads; published
            // with the first tile's copies.
            constexpr int kPad = Traits::kPaddedChunksPerRow - Traits::kChunksPerRow;
            constexpr int kAtomChunks = Traits::kAtomCols / 8;
            for (int i = tid; i < 2 * kStages * kBlockN * kPad; i += 128) {
                const int tile = i / (kBlockN * kPad), r = (i / kPad) % kBlockN;
                const int c = Traits::kChunksPerRow + i % kPad;
                const uint32_t offset =
                    swizzle<kSw>((c / kAtomChunks) * kBlockN * kSw + r * kSw + 16 * (c % kAtomChunks));
                *reinterpret_cast<uint4 *>(k_tiles + tile * Traits::kKVTileBytes + offset) = make_uint4(0u, 0u, 0u, 0u);
            }
        }
        for (int t = 0; t < n_tiles; ++t) {
            const int stage = t % kStages;
            if (t >= kStages) mbarrier_wait(&empty[stage], (t / kStages - 1) & 1);
            load_swizzled_rows<Traits, kBlockN, 128>(k_tiles + stage * Traits::kKVTileBytes, k, p.k_seq_stride,
                                                     t * kBlockN, key_limit, tid);
            load_swizzled_rows<Traits, kBlockN, 128>(v_tiles + stage * Traits::kKVTileBytes, v, p.v_seq_stride,
                                                     t * kBlockN, key_limit, tid);
            cp_async_commit();
            if (t >= 1) {
                cp_async_wait<1>();   // tile t-1 has landed (tile t may still be in flight)
                fence_proxy_async();  // ... and is visible to the tensor cores
                mbarrier_arrive(&full[(t - 1) % kStages]);
            }
        }
        if (n_tiles >= 1) {
            cp_async_wait<0>();
            fence_proxy_async();
            mbarrier_arrive(&full[(n_tiles - 1) % kStages]);
        }
    } else {
        // ---------------------------------------------------------------- consumers
        setmaxnreg_inc<Traits::kConsumerRegs>();
        const int consumer = warpgroup - 1;
        const int ctid = tid - 128 * warpgroup;  // 0..127 within the group
        const int lane = ctid % 32, warp_in_group = ctid / 32;
        const int group = lane / 4, thread_in_group = lane % 4;

        const Elem *q = static_cast<const Elem *>(p.q) + b * p.q_batch_stride + h * p.q_head_stride;
        Elem *o = static_cast<Elem *>(p.o) + b * p.o_batch_stride + h * p.o_head_stride;
        Elem *my_q = q_tile + 64 * consumer * kQStride;

        const int group_row0 = m_block + 64 * consumer;
        const int warp_row0 = group_row0 + 16 * warp_in_group;
        const bool group_has_rows = group_row0 < p.seq_q;
        const int group_key_end = causal ? min(key_limit, min(group_row0 + 64, p.seq_q)) : key_limit;
        const int warp_unmasked_end = causal ? min(key_limit, warp_row0 + 1) : key_limit;
        int my_key_limit[2];
#pragma unroll
        for (int r = 0; r < 2; ++r) my_key_limit[r] = row_key_limit(key_limit, warp_row0 + group + 8 * r, causal);
        const float scale_log2 = p.softmax_scale * kLog2e;

        float o_acc[Traits::kORegs];
#pragma unroll
        for (int i = 0; i < Traits::kORegs; ++i) o_acc[i] = 0.f;
        float row_max[2] = {-INFINITY, -INFINITY};
        float row_sum[2] = {0.f, 0.f};

        uint32_t q_frag[Traits::kQKSteps][4];
        if (n_tiles > 0 && group_has_rows) {
            if constexpr (Traits::kChunksPerRow < Traits::kPaddedChunksPerRow) {
                constexpr int kPad = Traits::kPaddedChunksPerRow - Traits::kChunksPerRow;
                for (int i = ctid; i < 64 * kPad; i += 128)
                    *reinterpret_cast<uint4 *>(my_q + (i / kPad) * kQStride + 8 * (Traits::kChunksPerRow + i % kPad)) =
                        make_uint4(0u, 0u, 0u, 0u);
            }
            load_q_rows<Traits>(my_q, q, p.q_seq_stride, group_row0, p.seq_q, ctid);
            cp_async_commit();
            cp_async_wait<0>();
            named_barrier_sync(1 + consumer, 128);
            const Elem *q_warp = my_q + (16 * warp_in_group + lane % 16) * kQStride + 8 * (lane / 16);
#pragma unroll
            for (int kk = 0; kk < Traits::kQKSteps; ++kk) ldmatrix_x4(q_frag[kk], q_warp + 16 * kk);
        }

        for (int t = 0; t < n_tiles; ++t) {
            const int stage = t % kStages;
            mbarrier_wait(&full[stage], (t / kStages) & 1);
            const int key0 = t * kBlockN;
            if (group_has_rows && key0 < group_key_end) {
                const uint32_t k_base = smem_addr(k_tiles + stage * Traits::kKVTileBytes);
                const uint32_t v_base = smem_addr(v_tiles + stage * Traits::kKVTileBytes);

                float s[Traits::kSRegs];
                wgmma_fence();
#pragma unroll
                for (int kk = 0; kk < Traits::kQKSteps; ++kk) {
                    const uint32_t start = k_base + (16 * kk / Traits::kAtomCols) * kBlockN * kSw +
                                           2 * (16 * kk % Traits::kAtomCols);
                    MmaS::template mma<0>(s, q_frag[kk], smem_desc<kSw>(start, 16, 8 * kSw), kk > 0);
                }
                wgmma_commit();
                wgmma_wait<0>();
                fence_operand(s);

                const bool needs_mask = key0 + kBlockN > warp_unmasked_end;
                uint32_t p_frag[Traits::kPVSteps][4];
                online_softmax_tile<Elem, Traits::kSTiles, Traits::kOTiles>(s, o_acc, p_frag, row_max, row_sum,
                                                                            my_key_limit, needs_mask, key0,
                                                                            thread_in_group, scale_log2);

                fence_operand(o_acc);
                wgmma_fence();
#pragma unroll
                for (int kk = 0; kk < Traits::kPVSteps; ++kk)
                    Mma::template mma<1>(o_acc, p_frag[kk],
                                         smem_desc<kSw>(v_base + 16 * kk * kSw, kBlockN * kSw, 8 * kSw), 1);
                wgmma_commit();
                wgmma_wait<0>();
                fence_operand(o_acc);
            }
            mbarrier_arrive(&empty[stage]);  // this thread's reads of the stage are done
        }

        // Epilogue (as v3): the warp's rows staged in its own Q rows, then 16-byte stores.
        Elem *o_stage = my_q + 16 * warp_in_group * kQStride;
        __syncwarp();
        float inv_sum[2];
#pragma unroll
        for (int r = 0; r < 2; ++r) {
            row_sum[r] += __shfl_xor_sync(0xffffffffu, row_sum[r], 1);
            row_sum[r] += __shfl_xor_sync(0xffffffffu, row_sum[r], 2);
            inv_sum[r] = row_sum[r] > 0.f ? __fdividef(1.f, row_sum[r]) : 0.f;
        }
#pragma unroll
        for (int nt = 0; nt < Traits::kOTiles; ++nt) {
            Elem *dst = o_stage + group * kQStride + 8 * nt + 2 * thread_in_group;
            *reinterpret_cast<uint32_t *>(dst) = Ops::pack2(o_acc[4 * nt] * inv_sum[0], o_acc[4 * nt + 1] * inv_sum[0]);
            *reinterpret_cast<uint32_t *>(dst + 8 * kQStride) =
                Ops::pack2(o_acc[4 * nt + 2] * inv_sum[1], o_acc[4 * nt + 3] * inv_sum[1]);
        }
        __syncwarp();
        for (int i = lane; i < 16 * Traits::kChunksPerRow; i += 32) {
            const int r = i / Traits::kChunksPerRow, c = i % Traits::kChunksPerRow;
            const int row = warp_row0 + r;
            if (row < p.seq_q)
                *reinterpret_cast<uint4 *>(o + (long long)row * p.o_seq_stride + 8 * c) =
                    *reinterpret_cast<const uint4 *>(o_stage + r * kQStride + 8 * c);
        }
        if (p.lse != nullptr && thread_in_group == 0) {
#pragma unroll
            for (int r = 0; r < 2; ++r) {
                const int row = warp_row0 + group + 8 * r;
                if (row < p.seq_q)
                    p.lse[((long long)b * p.heads_q + h) * p.seq_q + row] =
                        row_sum[r] > 0.f ? (row_max[r] + __log2f(row_sum[r])) * kLn2 : -INFINITY;
            }
        }
    }
#endif
}

template <class Traits>
int launch_v4(const fc_attention_params &p, cudaStream_t stream) {
    const auto kernel = attention_v4_kernel<Traits>;
    const cudaError_t attr =
        cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)Traits::kSmemBytes);
    if (attr != cudaSuccess) return (int)attr;
    const dim3 grid((p.seq_q + Traits::kBlockM - 1) / Traits::kBlockM, p.heads_q, p.batch);
    kernel<<<grid, Traits::kThreads, Traits::kSmemBytes, stream>>>(p);
    return (int)cudaGetLastError();
}

/* The one place where runtime shape/dtype choices become v4 template instantiations. */
template <typename Elem>
int dispatch_v4(const fc_attention_params &p, cudaStream_t stream) {
    switch (p.head_dim) {
        case 64: return launch_v4<typename FlashV4Config<Elem, 64>::Traits>(p, stream);
        case 80: return launch_v4<typename FlashV4Config<Elem, 80>::Traits>(p, stream);
        case 96: return launch_v4<typename FlashV4Config<Elem, 96>::Traits>(p, stream);
        case 104: return launch_v4<typename FlashV4Config<Elem, 104>::Traits>(p, stream);
        case 112: return launch_v4<typename FlashV4Config<Elem, 112>::Traits>(p, stream);
        case 128: return launch_v4<typename FlashV4Config<Elem, 128>::Traits>(p, stream);
        default: return (int)cudaErrorInvalidValue;
    }
}

}  // namespace
}  // namespace flashclip_attention

extern "C" int fc_attention_v4(const fc_attention_params *p, fc_dtype dtype, cudaStream_t stream) {
    using namespace flashclip_attention;
    switch (dtype) {
        case FC_F16: return dispatch_v4<__half>(*p, stream);
        case FC_BF16: return dispatch_v4<__nv_bfloat16>(*p, stream);
        default: return (int)cudaErrorInvalidValue;
    }
}
