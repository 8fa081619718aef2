/* fc_attention_v4: v3's math (wgmma, Q and P in registers, K/V from swizzled shared memory) with the work split
 * and scheduled the way FlashAttention-3 does it.
 *
 *   - Warp specialization. One producer warp only loads: per K/V tile, one thread announces the bytes on the
 *     stage's `full` mbarrier and issues TMA boxes (the tensor maps are built on the host from the strides, so the
 *     packed QKV layout is read in place; rows past seq_k and head-dim padding columns arrive as zeros). A stage is
 *     refilled after both consumers released it on `empty`. The other producer warps only give their registers
 *     away (setmaxnreg) and exit. Two consumer warpgroups of 64 query rows each multiply and run the softmax, each
 *     at its own pace: no block-wide barrier in the main loop.
 *   - Intra-warpgroup overlap. A consumer issues S = Q K_t^T and O += P_{t-1} V_{t-1} back to back, waits for S
 *     only, runs the softmax of tile t while the tensor cores finish P V, then rescales O. The softmax (MUFU- and
 *     FMA-bound) and the two GEMMs of neighbouring tiles overlap within one warpgroup, and across the two.
 *   - Batches whose key_lens cut a tile short get that tile through cp.async instead, with rows past the limit
 *     zero-filled: TMA would bring the real rows there, and 0 * NaN in P V must not happen.
 * A consumer with no rows left (past seq_q, or past its causal limit) still waits for and releases every tile,
 * so the producer never waits on it forever.
 */
#include <cuda.h>
#include <cudaTypedefs.h>  // PFN_cuTensorMapEncodeTiled
#include <cuda_runtime.h>
#include <cuda_fp16.h>
#include <cuda_bf16.h>
#include <stdint.h>

#include <algorithm>
#include <type_traits>

#include "flashclip.h"
#include "attention_ptx.cuh"
#include "attention_traits.cuh"
#include "attention_wgmma.cuh"

namespace flashclip_attention {
namespace {

/* Rows [row0, row0 + kRows) of K or V into a swizzled stage by the 32 lanes of the producer warp, every column
 * block of the padded head dim; rows at or past row_end and padding columns are zero-filled. The fallback of the
 * TMA path for tiles cut by key_lens. */
template <class Traits, int kRows>
__device__ __forceinline__ void load_kv_rows_zero_filled(unsigned char *tile, const typename Traits::Elem *src,
                                                         long long row_stride, int row0, int row_end, int lane) {
    constexpr int kChunks = kRows * Traits::kPaddedChunksPerRow;
    constexpr int kAtomChunks = Traits::kAtomCols / 8;
    constexpr int kSw = Traits::kSwizzleBytes;
    for (int i = lane; i < kChunks; i += 32) {
        const int r = i / Traits::kPaddedChunksPerRow, c = i % Traits::kPaddedChunksPerRow;
        const uint32_t offset = swizzle<kSw>((c / kAtomChunks) * kRows * kSw + r * kSw + 16 * (c % kAtomChunks));
        if (row0 + r < row_end && c < Traits::kChunksPerRow)
            cp_async_16(tile + offset, src + (long long)(row0 + r) * row_stride + 8 * c);
        else
            *reinterpret_cast<uint4 *>(tile + offset) = make_uint4(0u, 0u, 0u, 0u);
    }
}

/* Q rows [row0, row0 + 64) of one consumer group into the padded row layout, by its 128 threads. */
template <class Traits>
__device__ __forceinline__ void load_q_rows(typename Traits::Elem *tile, const typename Traits::Elem *src,
                                            long long row_stride, int row0, int row_end, int tid) {
    constexpr int kChunks = 64 * Traits::kPaddedChunksPerRow;
#pragma unroll
    for (int i0 = 0; i0 < kChunks; i0 += 128) {
        const int i = i0 + tid;
        if (kChunks % 128 == 0 || i < kChunks) {
            const int r = i / Traits::kPaddedChunksPerRow, c = i % Traits::kPaddedChunksPerRow;
            typename Traits::Elem *dst = tile + r * Traits::kSmemRowStride + 8 * c;
            if (row0 + r < row_end && c < Traits::kChunksPerRow)
                cp_async_16(dst, src + (long long)(row0 + r) * row_stride + 8 * c);
            else
                *reinterpret_cast<uint4 *>(dst) = make_uint4(0u, 0u, 0u, 0u);
        }
    }
}

/* The consumer side of one tile, split so that the caller can interleave it with the previous tile's P V. */
template <class Traits>
struct V4Consumer {
    using Elem = typename Traits::Elem;
    using MmaO = Wgmma<Elem, Traits::kHeadDimPadded>;
    using MmaS = Wgmma<Elem, Traits::kBlockN>;
    static constexpr int kSw = Traits::kSwizzleBytes;

    /* Descriptors of a K stage (K-major) and a V stage (N-major: column blocks kBlockN * kSw bytes apart). */
    static __device__ __forceinline__ uint64_t k_desc(uint32_t k_stage) { return smem_desc<kSw>(k_stage, 16, 8 * kSw); }
    static __device__ __forceinline__ uint64_t v_desc(uint32_t v_stage) {
        return smem_desc<kSw>(v_stage, Traits::kBlockN * kSw, 8 * kSw);
    }

    /* Issue S = Q K^T for the K stage of descriptor k (not waited for): k step kk covers head-dim columns
     * 16kk..16kk+15, in column block 16kk / kAtomCols at byte 2 * (16kk % kAtomCols) of each row. */
    static __device__ __forceinline__ void issue_qk(float (&s)[Traits::kSRegs],
                                                    const uint32_t (&q)[Traits::kQKSteps][4], uint64_t k) {
#pragma unroll
        for (int kk = 0; kk < Traits::kQKSteps; ++kk)
            MmaS::template mma<0>(s, q[kk],
                                  desc_advance(k, (16 * kk / Traits::kAtomCols) * Traits::kBlockN * kSw +
                                                      2 * (16 * kk % Traits::kAtomCols)),
                                  kk > 0);
    }

    /* Issue O += P V for the V stage of descriptor v (not waited for): k step kk = keys 16kk..16kk+15. */
    static __device__ __forceinline__ void issue_pv(float (&o)[Traits::kORegs],
                                                    const uint32_t (&p)[Traits::kPVSteps][4], uint64_t v) {
#pragma unroll
        for (int kk = 0; kk < Traits::kPVSteps; ++kk) MmaO::template mma<1>(o, p[kk], desc_advance(v, 16 * kk * kSw), 1);
    }
};

template <class Traits>
__global__ void __launch_bounds__(Traits::kThreads, Traits::kMinBlocks)
    attention_v4_kernel(const fc_attention_params p, const __grid_constant__ CUtensorMap k_map,
                        const __grid_constant__ CUtensorMap v_map) {
#if defined(__CUDA_ARCH__) && !defined(__CUDA_ARCH_FEAT_SM90_ALL)
    // wgmma, TMA and setmaxnreg exist only in sm_90a code; the launcher refuses other devices.
    __trap();
#elif defined(__CUDA_ARCH__)
    constexpr float kLog2e = 1.4426950408889634f;
    using Elem = typename Traits::Elem;
    using Ops = ElemOps<Elem>;
    using Consumer = V4Consumer<Traits>;
    constexpr int kBlockM = Traits::kBlockM;
    constexpr int kBlockN = Traits::kBlockN;
    constexpr int kStages = Traits::kStages;
    constexpr int kSw = Traits::kSwizzleBytes;
    constexpr int kQStride = Traits::kSmemRowStride;

    extern __shared__ __align__(1024) unsigned char smem_raw[];
    unsigned char *smem = smem_raw + ((1024 - (smem_addr(smem_raw) & 1023)) & 1023);
    Elem *q_tile = reinterpret_cast<Elem *>(smem);
    unsigned char *k_tiles = smem + Traits::kQTileBytes;
    unsigned char *v_tiles = k_tiles + kStages * Traits::kKVTileBytes;
    uint64_t *full = reinterpret_cast<uint64_t *>(v_tiles + kStages * Traits::kKVTileBytes);
    uint64_t *empty = full + kStages;

    const int tid = threadIdx.x;
    const int warpgroup = tid / 128;
    const int lane = tid % 32;

    const int m_block = (gridDim.x - 1 - blockIdx.x) * kBlockM;  // reversed: longest causal blocks start first
    const int h = blockIdx.y, b = blockIdx.z;
    const int hk = h / (p.heads_q / p.heads_kv);
    const bool causal = p.causal != 0;
    const int key_limit = batch_key_limit(p.key_lens, b, p.seq_k);
    // K/V tiles the block needs (computed after the register split in each branch: kept live across it, ptxas
    // spilled it at some head dims).
    const auto block_tiles = [&] {
        const int block_key_end = causal ? min(key_limit, min(m_block + kBlockM, p.seq_q)) : key_limit;
        return (block_key_end + kBlockN - 1) / kBlockN;
    };

    if (tid == 0) {
        for (int s = 0; s < kStages; ++s) {
            mbarrier_init(&full[s], 1);                      // the producer's one arrival (+ the TMA bytes)
            mbarrier_init(&empty[s], 4 * Traits::kConsumers);  // one per consumer warp
        }
        asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
    }
    __syncthreads();

    if (warpgroup == 0) {
        // ---------------------------------------------------------------- producer
        setmaxnreg_dec<Traits::kProducerRegs>();
        if (tid >= 32) return;
        const int n_tiles = block_tiles();
        const Elem *k = static_cast<const Elem *>(p.k) + b * p.k_batch_stride + hk * p.k_head_stride;
        const Elem *v = static_cast<const Elem *>(p.v) + b * p.v_batch_stride + hk * p.v_head_stride;
        for (int t = 0; t < n_tiles; ++t) {
            const int stage = t % kStages;
            if (t >= kStages) mbarrier_wait(&empty[stage], (t / kStages - 1) & 1);
            unsigned char *k_stage = k_tiles + stage * Traits::kKVTileBytes;
            unsigned char *v_stage = v_tiles + stage * Traits::kKVTileBytes;
            const int key0 = t * kBlockN;
            if (key0 + kBlockN > key_limit && key_limit < p.seq_k) {
                load_kv_rows_zero_filled<Traits, kBlockN>(k_stage, k, p.k_seq_stride, key0, key_limit, lane);
                load_kv_rows_zero_filled<Traits, kBlockN>(v_stage, v, p.v_seq_stride, key0, key_limit, lane);
                cp_async_commit();
                cp_async_wait<0>();
                fence_proxy_async();  // generic-proxy writes, read by the tensor cores
                __syncwarp();
                if (lane == 0) mbarrier_arrive(&full[stage]);
            } else if (lane == 0) {
                mbarrier_arrive_expect_tx(&full[stage], 2 * Traits::kKVTileBytes);
#pragma unroll
                for (int a = 0; a < Traits::kAtoms; ++a) {
                    tma_load_4d(k_stage + a * kBlockN * kSw, &k_map, a * Traits::kAtomCols, key0, hk, b, &full[stage]);
                    tma_load_4d(v_stage + a * kBlockN * kSw, &v_map, a * Traits::kAtomCols, key0, hk, b, &full[stage]);
                }
            }
        }
        return;
    }

    // -------------------------------------------------------------------- consumers
    setmaxnreg_inc<Traits::kConsumerRegs>();
    const int n_tiles = block_tiles();
    const int consumer = warpgroup - 1;
    const int ctid = tid - 128 * warpgroup;  // 0..127 within the group
    const int warp_in_group = ctid / 32;
    const int group = lane / 4, thread_in_group = lane % 4;

    const Elem *q = static_cast<const Elem *>(p.q) + b * p.q_batch_stride + h * p.q_head_stride;
    Elem *o = static_cast<Elem *>(p.o) + b * p.o_batch_stride + h * p.o_head_stride;
    Elem *my_q = q_tile + 64 * consumer * kQStride;

    const int group_row0 = m_block + 64 * consumer;
    const int warp_row0 = group_row0 + 16 * warp_in_group;
    const int group_key_end =
        group_row0 >= p.seq_q ? 0 : causal ? min(key_limit, min(group_row0 + 64, p.seq_q)) : key_limit;
    const int my_tiles = (group_key_end + kBlockN - 1) / kBlockN;  // the tiles this group multiplies
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

    if (my_tiles > 0) {
        uint32_t q_frag[Traits::kQKSteps][4];
        load_q_rows<Traits>(my_q, q, p.q_seq_stride, group_row0, p.seq_q, ctid);
        cp_async_commit();
        cp_async_wait<0>();
        named_barrier_sync(1 + consumer, 128);
        const Elem *q_warp = my_q + (16 * warp_in_group + lane % 16) * kQStride + 8 * (lane / 16);
#pragma unroll
        for (int kk = 0; kk < Traits::kQKSteps; ++kk) ldmatrix_x4(q_frag[kk], q_warp + 16 * kk);

        float s[Traits::kSRegs];
        uint32_t p_frag[Traits::kPVSteps][4];
        float alpha[2];
        // The softmax of tile t (scores in s), masked where the tile crosses a row's limit.
        auto softmax = [&](int t) {
            const int key0 = t * kBlockN;
            if (key0 + kBlockN > warp_unmasked_end)
                softmax_scores<Traits::kSTiles, true>(s, row_max, row_sum, alpha, my_key_limit, key0, thread_in_group,
                                                      scale_log2);
            else
                softmax_scores<Traits::kSTiles, false>(s, row_max, row_sum, alpha, my_key_limit, key0,
                                                       thread_in_group, scale_log2);
        };
        const uint64_t k_desc0 = Consumer::k_desc(smem_addr(k_tiles));
        const uint64_t v_desc0 = Consumer::v_desc(smem_addr(v_tiles));
        const auto k_base = [&](int t) { return desc_advance(k_desc0, (t % kStages) * Traits::kKVTileBytes); };
        const auto v_base = [&](int t) { return desc_advance(v_desc0, (t % kStages) * Traits::kKVTileBytes); };
        const auto release = [&](int t) {
            __syncwarp();
            if (lane == 0) mbarrier_arrive(&empty[t % kStages]);
        };

        // Tile 0: S, softmax, P.
        mbarrier_wait(&full[0], 0);
        wgmma_fence();
        Consumer::issue_qk(s, q_frag, k_base(0));
        wgmma_commit();
        wgmma_wait<0>();
        fence_operand(s);
        softmax(0);
        rescale_and_pack<Elem, Traits::kSTiles, Traits::kOTiles>(s, o_acc, p_frag, alpha);

        // Tiles 1..: S_t and P_{t-1} V_{t-1} in flight together; the softmax of t runs under P V.
        for (int t = 1; t < my_tiles; ++t) {
            mbarrier_wait(&full[t % kStages], (t / kStages) & 1);
            fence_operand(o_acc);
            fence_operand(p_frag);
            wgmma_fence();
            Consumer::issue_qk(s, q_frag, k_base(t));
            wgmma_commit();
            Consumer::issue_pv(o_acc, p_frag, v_base(t - 1));
            wgmma_commit();
            wgmma_wait<1>();
            fence_operand(s);
            softmax(t);
            wgmma_wait<0>();
            fence_operand(o_acc);
            fence_operand(p_frag);
            release(t - 1);
            rescale_and_pack<Elem, Traits::kSTiles, Traits::kOTiles>(s, o_acc, p_frag, alpha);
        }

        // The last P V.
        fence_operand(o_acc);
        fence_operand(p_frag);
        wgmma_fence();
        Consumer::issue_pv(o_acc, p_frag, v_base(my_tiles - 1));
        wgmma_commit();
        wgmma_wait<0>();
        fence_operand(o_acc);
        release(my_tiles - 1);
    }
    // Tiles this group does not need (causal): wait for each, so the release lands in that tile's phase.
    for (int t = my_tiles; t < n_tiles; ++t) {
        mbarrier_wait(&full[t % kStages], (t / kStages) & 1);
        if (lane == 0) mbarrier_arrive(&empty[t % kStages]);
    }
    if (group_row0 >= p.seq_q) return;

    // Epilogue (as v3): the warp's rows staged in its own Q rows, then 16-byte stores.
    store_warp_rows<Elem, Traits::kOTiles, Traits::kChunksPerRow, kQStride>(
        o_acc, row_sum, row_max, scale_log2, my_q + 16 * warp_in_group * kQStride, o, p.o_seq_stride,
        p.lse == nullptr ? nullptr : p.lse + ((long long)b * p.heads_q + h) * p.seq_q, warp_row0, p.seq_q, lane);
#endif
}

/* cuTensorMapEncodeTiled, from the driver through the runtime (no libcuda link). */
PFN_cuTensorMapEncodeTiled_v12000 tensor_map_encoder() {
    static const PFN_cuTensorMapEncodeTiled_v12000 encode = [] {
        void *fn = nullptr;
        cudaDriverEntryPointQueryResult found;
        if (cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &fn, 12000, cudaEnableDefault, &found) !=
                cudaSuccess ||
            found != cudaDriverEntryPointSuccess)
            return (PFN_cuTensorMapEncodeTiled_v12000) nullptr;
        return reinterpret_cast<PFN_cuTensorMapEncodeTiled_v12000>(fn);
    }();
    return encode;
}

/* The tensor map of K or V for Traits: dims (head_dim, seq_k, heads_kv, batch) with the view's strides, boxes of
 * kAtomCols x kBlockN, swizzled as the wgmma descriptors read them. */
template <class Traits>
cudaError_t kv_tensor_map(CUtensorMap *map, const void *base, long long batch_stride, long long seq_stride,
                          long long head_stride, const fc_attention_params &p) {
    const PFN_cuTensorMapEncodeTiled_v12000 encode = tensor_map_encoder();
    if (encode == nullptr) return cudaErrorNotSupported;
    constexpr long long kElem = 2;
    const cuuint64_t dims[4] = {(cuuint64_t)p.head_dim, (cuuint64_t)p.seq_k, (cuuint64_t)p.heads_kv,
                                (cuuint64_t)p.batch};
    // A dimension of extent 1 is never stepped over: give it a stride the encoder accepts whatever the view says.
    const auto stride = [](long long s, int extent) { return (cuuint64_t)(extent == 1 ? 16 : s * kElem); };
    const cuuint64_t strides[3] = {stride(seq_stride, p.seq_k), stride(head_stride, p.heads_kv),
                                   stride(batch_stride, p.batch)};
    const cuuint32_t box[4] = {(cuuint32_t)Traits::kAtomCols, (cuuint32_t)Traits::kBlockN, 1, 1};
    const cuuint32_t element_strides[4] = {1, 1, 1, 1};
    const CUtensorMapSwizzle swizzle = Traits::kSwizzleBytes == 128  ? CU_TENSOR_MAP_SWIZZLE_128B
                                       : Traits::kSwizzleBytes == 64 ? CU_TENSOR_MAP_SWIZZLE_64B
                                                                     : CU_TENSOR_MAP_SWIZZLE_32B;
    const CUtensorMapDataType dtype = std::is_same<typename Traits::Elem, __half>::value
                                          ? CU_TENSOR_MAP_DATA_TYPE_FLOAT16
                                          : CU_TENSOR_MAP_DATA_TYPE_BFLOAT16;
    const CUresult r = encode(map, dtype, 4, const_cast<void *>(base), dims, strides, box, element_strides,
                              CU_TENSOR_MAP_INTERLEAVE_NONE, swizzle, CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
                              CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
    return r == CUDA_SUCCESS ? cudaSuccess : cudaErrorInvalidValue;
}

/* The last K and V tensor maps this host thread encoded for Traits, with what they were encoded from: a model
 * launches every layer's attention on the same buffers, and encoding costs host time on every launch of a
 * latency-bound (batch 1) forward. */
struct KVMapKey {
    const void *k, *v;
    long long k_strides[3], v_strides[3];
    int batch, seq_k, heads_kv, head_dim;
    bool operator==(const KVMapKey &o) const {
        return k == o.k && v == o.v && batch == o.batch && seq_k == o.seq_k && heads_kv == o.heads_kv &&
               head_dim == o.head_dim && std::equal(k_strides, k_strides + 3, o.k_strides) &&
               std::equal(v_strides, v_strides + 3, o.v_strides);
    }
};

template <class Traits>
cudaError_t kv_tensor_maps(const fc_attention_params &p, CUtensorMap *k_map, CUtensorMap *v_map) {
    struct Cache {
        bool valid = false;
        KVMapKey key;
        CUtensorMap k, v;
    };
    static thread_local Cache cache;
    const KVMapKey key{p.k,
                       p.v,
                       {p.k_batch_stride, p.k_seq_stride, p.k_head_stride},
                       {p.v_batch_stride, p.v_seq_stride, p.v_head_stride},
                       p.batch,
                       p.seq_k,
                       p.heads_kv,
                       p.head_dim};
    if (!(cache.valid && cache.key == key)) {
        cache.valid = false;
        cudaError_t err = kv_tensor_map<Traits>(&cache.k, p.k, p.k_batch_stride, p.k_seq_stride, p.k_head_stride, p);
        if (err == cudaSuccess)
            err = kv_tensor_map<Traits>(&cache.v, p.v, p.v_batch_stride, p.v_seq_stride, p.v_head_stride, p);
        if (err != cudaSuccess) return err;
        cache.key = key;
        cache.valid = true;
    }
    *k_map = cache.k;
    *v_map = cache.v;
    return cudaSuccess;
}

template <class Traits>
int launch_v4(const fc_attention_params &p, cudaStream_t stream) {
    CUtensorMap k_map, v_map;
    cudaError_t err = kv_tensor_maps<Traits>(p, &k_map, &v_map);
    if (err != cudaSuccess) return (int)err;
    const auto kernel = attention_v4_kernel<Traits>;
    err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)Traits::kSmemBytes);
    if (err != cudaSuccess) return (int)err;
    const dim3 grid((p.seq_q + Traits::kBlockM - 1) / Traits::kBlockM, p.heads_q, p.batch);
    kernel<<<grid, Traits::kThreads, Traits::kSmemBytes, stream>>>(p, k_map, v_map);
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

/* The tile shapes of the sweep entry (FC_V4_TILES_*); two stages where two blocks share an SM. */
template <typename Elem, int kHeadDim>
int launch_v4_tiles(const fc_attention_params &p, fc_v4_tiles tiles, cudaStream_t stream) {
    switch (tiles) {
        case FC_V4_TILES_WG2_N128: return launch_v4<FlashV4Traits<Elem, kHeadDim, 128, 3, 2>>(p, stream);
        case FC_V4_TILES_WG2_N64: return launch_v4<FlashV4Traits<Elem, kHeadDim, 64, 3, 2>>(p, stream);
        case FC_V4_TILES_WG3_N96: return launch_v4<FlashV4Traits<Elem, kHeadDim, 96, 3, 3>>(p, stream);
        case FC_V4_TILES_WG1_N128: return launch_v4<FlashV4Traits<Elem, kHeadDim, 128, 2, 1>>(p, stream);
        default: return (int)cudaErrorInvalidValue;
    }
}

template <typename Elem>
int dispatch_v4_tiles(const fc_attention_params &p, fc_v4_tiles tiles, cudaStream_t stream) {
    // Head dim 64 only: at 80 the three-consumer and two-blocks-per-SM shapes spill.
    return p.head_dim == 64 ? launch_v4_tiles<Elem, 64>(p, tiles, stream) : (int)cudaErrorInvalidValue;
}

}  // namespace
}  // namespace flashclip_attention

extern "C" int fc_attention_v4_tiles(const fc_attention_params *p, fc_dtype dtype, fc_v4_tiles tiles,
                                     cudaStream_t stream) {
    using namespace flashclip_attention;
    switch (dtype) {
        case FC_F16: return dispatch_v4_tiles<__half>(*p, tiles, stream);
        case FC_BF16: return dispatch_v4_tiles<__nv_bfloat16>(*p, tiles, stream);
        default: return (int)cudaErrorInvalidValue;
    }
}

extern "C" int fc_attention_v4(const fc_attention_params *p, fc_dtype dtype, cudaStream_t stream) {
    using namespace flashclip_attention;
    switch (dtype) {
        case FC_F16: return dispatch_v4<__half>(*p, stream);
        case FC_BF16: return dispatch_v4<__nv_bfloat16>(*p, stream);
        default: return (int)cudaErrorInvalidValue;
    }
}
