/* fc_attention_v3: flash attention forward on Hopper's warpgroup MMA (wgmma, sm_90a), the third rung after v1
 * (CUDA cores) and v2 (mma.sync) in attention.cu. Same contract, masking rules and online softmax as v2; what
 * changes is who multiplies:
 *
 *   - A block is kWarpgroups warpgroups; each owns 64 query rows (one m64 wgmma tile). Its Q rows are loaded once
 *     into registers as wgmma A operands. Per kBlockN-key tile the warpgroup issues S = Q K^T (kQKSteps wgmmas of
 *     m64 x kBlockN x 16, K read by the tensor cores from swizzled shared memory), runs the online softmax on the
 *     accumulators (each warp of the group owns 16 rows, exactly as a v2 warp), repacks P into A operands, and
 *     issues O += P V (kPVSteps wgmmas of m64 x head_dim x 16, V read N-major, i.e. transposed by the hardware).
 *   - K/V tiles stream through two shared-memory stages with 16-byte cp.async into the swizzled layout; tile j+1
 *     is in flight while tile j is multiplied. Rows past the key limit are zero-filled.
 *   - Work skipping is per warpgroup (all 4 warps of a group must issue each wgmma): a group skips tiles past its
 *     rows' last visible key and groups past seq_q skip all math; per-warp masking handles the rest.
 *
 * Not yet here (the FlashAttention-3 steps after this one): TMA loads, producer/consumer warp specialization with
 * register reallocation, and overlapping the softmax of tile j with the S GEMM of tile j+1.
 */
#include <cuda_runtime.h>
#include <cuda_fp16.h>
#include <cuda_bf16.h>
#include <stdint.h>

#include "flashclip.h"
#include "flashclip_head_dims.h"
#include "dtype.cuh"
#include "ptx.cuh"
#include "wgmma.cuh"
#include "attention_epilogue.cuh"
#include "attention_mask.cuh"
#include "attention_tile_loads.cuh"
#include "attention_v3_traits.cuh"
#include "online_softmax.cuh"

namespace flashclip::attention {
namespace {

/* Rows [row0, row0 + kRows) of one head into a K or V tile in the swizzled layout (real head-dim chunks only).
 * Rows at or past row_end are zero-filled: they may lie outside the tensor, and zeros keep 0 * garbage out of O. */
template <class Traits, int kRows>
__device__ __forceinline__ void load_kv_tile(unsigned char *tile, const typename Traits::Elem *src,
                                             long long row_stride, int row0, int row_end, int tid) {
    constexpr int kChunks = kRows * Traits::kChunksPerRow;
    constexpr int kAtomChunks = Traits::kAtomCols / 8;
#pragma unroll
    for (int i0 = 0; i0 < kChunks; i0 += Traits::kThreads) {
        const int i = i0 + tid;
        if (kChunks % Traits::kThreads == 0 || i < kChunks) {
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

template <class Traits>
__global__ void __launch_bounds__(Traits::kThreads, Traits::kMinBlocksPerSm)
    attention_v3_kernel(const fc_attention_params p) {
#if defined(__CUDA_ARCH__) && !defined(__CUDA_ARCH_FEAT_SM90_ALL)
    // wgmma exists only in sm_90a code; the launcher refuses other devices, so reaching this is a build mix-up.
    __trap();
#elif defined(__CUDA_ARCH__)
    constexpr float kLog2e = 1.4426950408889634f;
    using Elem = typename Traits::Elem;
    using Mma = Wgmma<Elem, Traits::kHeadDimPadded>;
    using MmaS = Wgmma<Elem, Traits::kBlockN>;
    constexpr int kBlockM = Traits::kBlockM;
    constexpr int kBlockN = Traits::kBlockN;
    constexpr int kSw = Traits::kSwizzleBytes;
    constexpr int kQStride = Traits::kSmemRowStride;

    extern __shared__ __align__(1024) unsigned char smem_raw[];
    // The swizzle is a function of the address bits, so tiles start on 1024-byte boundaries.
    unsigned char *smem = smem_raw + ((1024 - (smem_addr(smem_raw) & 1023)) & 1023);
    Elem *q_tile = reinterpret_cast<Elem *>(smem);
    unsigned char *k_tiles = smem + Traits::kQTileBytes;
    unsigned char *v_tiles = k_tiles + Traits::kStages * Traits::kKVTileBytes;

    const int tid = threadIdx.x;
    const int warp = tid / 32, lane = tid % 32;
    const int warpgroup = warp / 4, warp_in_group = warp % 4;
    const int group = lane / 4, thread_in_group = lane % 4;

    const int m_block = (gridDim.x - 1 - blockIdx.x) * kBlockM;  // reversed: longest causal blocks start first
    const int h = blockIdx.y, b = blockIdx.z;
    const int hk = h / (p.heads_q / p.heads_kv);

    const Elem *q = static_cast<const Elem *>(p.q) + b * p.q_batch_stride + h * p.q_head_stride;
    const Elem *k = static_cast<const Elem *>(p.k) + b * p.k_batch_stride + hk * p.k_head_stride;
    const Elem *v = static_cast<const Elem *>(p.v) + b * p.v_batch_stride + hk * p.v_head_stride;
    Elem *o = static_cast<Elem *>(p.o) + b * p.o_batch_stride + h * p.o_head_stride;

    const bool causal = p.causal != 0;
    const int key_limit = batch_key_limit(p.key_lens, b, p.seq_k);
    const int block_key_end = causal ? min(key_limit, min(m_block + kBlockM, p.seq_q)) : key_limit;
    const int n_tiles = (block_key_end + kBlockN - 1) / kBlockN;

    const int group_row0 = m_block + 64 * warpgroup;
    const int warp_row0 = group_row0 + 16 * warp_in_group;
    const bool group_has_rows = group_row0 < p.seq_q;
    const int group_key_end = causal ? min(key_limit, min(group_row0 + 64, p.seq_q)) : key_limit;
    const int warp_unmasked_end = causal ? min(key_limit, warp_row0 + 1) : key_limit;
    int my_key_limit[2];  // rows warp_row0 + group and + 8
#pragma unroll
    for (int r = 0; r < 2; ++r) my_key_limit[r] = row_key_limit(key_limit, warp_row0 + group + 8 * r, causal);
    const float scale_log2 = p.softmax_scale * kLog2e;

    float o_acc[Traits::kORegs];
#pragma unroll
    for (int i = 0; i < Traits::kORegs; ++i) o_acc[i] = 0.f;
    float row_max[2] = {-INFINITY, -INFINITY};  // of scale*log2e*scores
    float row_sum[2] = {0.f, 0.f};              // partial over this thread's columns, reduced at the end

    if (n_tiles > 0) {
        if constexpr (Traits::kChunksPerRow < Traits::kPaddedChunksPerRow) {
            // Head-dim padding (104 -> 112): zero once in Q and in every K/V stage, never overwritten by the loads.
            constexpr int kPad = Traits::kPaddedChunksPerRow - Traits::kChunksPerRow;
            constexpr int kAtomChunks = Traits::kAtomCols / 8;
            for (int i = tid; i < kBlockM * kPad; i += Traits::kThreads)
                *reinterpret_cast<uint4 *>(q_tile + (i / kPad) * kQStride + 8 * (Traits::kChunksPerRow + i % kPad)) =
                    make_uint4(0u, 0u, 0u, 0u);
            for (int i = tid; i < 2 * Traits::kStages * kBlockN * kPad; i += Traits::kThreads) {
                const int tile = i / (kBlockN * kPad), r = (i / kPad) % kBlockN;
                const int c = Traits::kChunksPerRow + i % kPad;
                const uint32_t offset =
                    swizzle<kSw>((c / kAtomChunks) * kBlockN * kSw + r * kSw + 16 * (c % kAtomChunks));
                *reinterpret_cast<uint4 *>(k_tiles + tile * Traits::kKVTileBytes + offset) = make_uint4(0u, 0u, 0u, 0u);
            }
        }

        load_tile<Traits, kBlockM>(q_tile, q, p.q_seq_stride, m_block, p.seq_q, tid);
        cp_async_commit();
        load_kv_tile<Traits, kBlockN>(k_tiles, k, p.k_seq_stride, 0, key_limit, tid);
        load_kv_tile<Traits, kBlockN>(v_tiles, v, p.v_seq_stride, 0, key_limit, tid);
        cp_async_commit();
        cp_async_wait<1>();  // Q has landed; K/V tile 0 may still be in flight
        __syncthreads();

        const Elem *q_warp = q_tile + (64 * warpgroup + 16 * warp_in_group + lane % 16) * kQStride + 8 * (lane / 16);

        for (int tile = 0; tile < n_tiles; ++tile) {
            if (tile + 1 < n_tiles) {
                const int stage = (tile + 1) % Traits::kStages;
                const int next_key0 = (tile + 1) * kBlockN;
                load_kv_tile<Traits, kBlockN>(k_tiles + stage * Traits::kKVTileBytes, k, p.k_seq_stride, next_key0,
                                              key_limit, tid);
                load_kv_tile<Traits, kBlockN>(v_tiles + stage * Traits::kKVTileBytes, v, p.v_seq_stride, next_key0,
                                              key_limit, tid);
            }
            cp_async_commit();
            cp_async_wait<1>();
            fence_proxy_async();  // this thread's copies and zero stores -> visible to the tensor cores
            __syncthreads();

            const int key0 = tile * kBlockN;
            if (group_has_rows && key0 < group_key_end) {
                // One descriptor per stage, stepped by constant offsets below.
                const uint64_t k_desc = smem_desc<kSw>(
                    smem_addr(k_tiles + (tile % Traits::kStages) * Traits::kKVTileBytes), 16, 8 * kSw);
                const uint64_t v_desc = smem_desc<kSw>(
                    smem_addr(v_tiles + (tile % Traits::kStages) * Traits::kKVTileBytes), kBlockN * kSw, 8 * kSw);

                // S = Q K^T: B = K tile, K-major; k step kk covers head-dim columns 16kk..16kk+15, which sit in
                // column block 16kk / W at byte offset 2 * (16kk % W) inside each row.
                // A operands of Q per 16-column k step (the v2 ldmatrix pattern on this warp's 16 rows), read
                // again for every tile: kept in registers across the loop, ptxas (13.0) gave them to P at some tile
                // shapes and every tile after the first multiplied P instead of Q.
                uint32_t q_frag[Traits::kQKSteps][4];
#pragma unroll
                for (int kk = 0; kk < Traits::kQKSteps; ++kk) ldmatrix_x4(q_frag[kk], q_warp + 16 * kk);
                float s[Traits::kSRegs];
                wgmma_fence();
#pragma unroll
                for (int kk = 0; kk < Traits::kQKSteps; ++kk)
                    MmaS::template mma<0>(s, q_frag[kk],
                                          desc_advance(k_desc, (16 * kk / Traits::kAtomCols) * kBlockN * kSw +
                                                                   2 * (16 * kk % Traits::kAtomCols)),
                                          kk > 0);
                wgmma_commit();
                wgmma_wait<0>();
                fence_operand(s);

                const bool needs_mask = key0 + kBlockN > warp_unmasked_end;
                uint32_t p_frag[Traits::kPVSteps][4];
                online_softmax_tile<Elem, Traits::kSTiles, Traits::kOTiles>(s, o_acc, p_frag, row_max, row_sum,
                                                                            my_key_limit, needs_mask, key0,
                                                                            thread_in_group, scale_log2);

                // O += P V: B = V tile, N-major (head dim contiguous); k step kk = keys 16kk..16kk+15 = rows
                // 16kk.. of every column block; column blocks are kBlockN * S bytes apart (LBO).
                // P and the rescaled O are written by ordinary code: both must be in their registers before
                // wgmma.fence, or the compiler may sink the writes below it (wrong results, no warning).
                fence_operand(p_frag);
                fence_operand(o_acc);
                wgmma_fence();
#pragma unroll
                for (int kk = 0; kk < Traits::kPVSteps; ++kk)
                    Mma::template mma<1>(o_acc, p_frag[kk], desc_advance(v_desc, 16 * kk * kSw), 1);
                wgmma_commit();
                wgmma_wait<0>();
                fence_operand(o_acc);
            }
            __syncthreads();  // every group is done with this stage before the next iteration refills it
        }
    }

    // Epilogue: the warp's rows staged in its own Q rows of shared memory, then 16-byte stores.
    store_warp_rows<Elem, Traits::kOTiles, Traits::kChunksPerRow, kQStride, true>(
        o_acc, row_sum, row_max, scale_log2, q_tile + (64 * warpgroup + 16 * warp_in_group) * kQStride, o,
        p.o_seq_stride, p.lse == nullptr ? nullptr : p.lse + ((long long)b * p.heads_q + h) * p.seq_q, warp_row0,
        p.seq_q, lane);
#endif
}

template <class Traits>
int launch_v3(const fc_attention_params &p, cudaStream_t stream) {
    const auto kernel = attention_v3_kernel<Traits>;
    // Per launch, not cached: the limit belongs to the current device, and a process may drive several.
    const cudaError_t attr =
        cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)Traits::kSmemBytes);
    if (attr != cudaSuccess) return (int)attr;
    const dim3 grid((p.seq_q + Traits::kBlockM - 1) / Traits::kBlockM, p.heads_q, p.batch);
    kernel<<<grid, Traits::kThreads, Traits::kSmemBytes, stream>>>(p);
    return (int)cudaGetLastError();
}

/* The one place where runtime shape/dtype choices become v3 template instantiations. */
template <typename Elem>
int dispatch_v3(const fc_attention_params &p, cudaStream_t stream) {
    switch (p.head_dim) {
#define FC_CASE(D) \
    case D: return launch_v3<typename FlashV3Config<Elem, D>::Traits>(p, stream);
        FC_FLASH_HEAD_DIMS(FC_CASE)
#undef FC_CASE
        default: return (int)cudaErrorInvalidValue;
    }
}

#ifdef FLASHCLIP_TUNING
template <typename Elem, int kHeadDim>
int launch_v3_tiles(const fc_attention_params &p, fc_v3_tiles tiles, cudaStream_t stream) {
    switch (tiles) {
        case FC_V3_TILES_WG2_N64: return launch_v3<FlashV3Tiles<Elem, kHeadDim, 2, 64>>(p, stream);
        case FC_V3_TILES_WG1_N64: return launch_v3<FlashV3Tiles<Elem, kHeadDim, 1, 64>>(p, stream);
        case FC_V3_TILES_WG2_N128: return launch_v3<FlashV3Tiles<Elem, kHeadDim, 2, 128>>(p, stream);
        case FC_V3_TILES_WG3_N64: return launch_v3<FlashV3Tiles<Elem, kHeadDim, 3, 64>>(p, stream);
        default: return (int)cudaErrorInvalidValue;
    }
}

template <typename Elem>
int dispatch_v3_tiles(const fc_attention_params &p, fc_v3_tiles tiles, cudaStream_t stream) {
    switch (p.head_dim) {
        case 64: return launch_v3_tiles<Elem, 64>(p, tiles, stream);
        case 80: return launch_v3_tiles<Elem, 80>(p, tiles, stream);
        default: return (int)cudaErrorInvalidValue;
    }
}
#endif

}  // namespace
}  // namespace flashclip::attention

extern "C" int fc_attention_v3(const fc_attention_params *p, fc_dtype dtype, cudaStream_t stream) {
    using namespace flashclip::attention;
    switch (dtype) {
        case FC_F16: return dispatch_v3<__half>(*p, stream);
        case FC_BF16: return dispatch_v3<__nv_bfloat16>(*p, stream);
        default: return (int)cudaErrorInvalidValue;
    }
}

#ifdef FLASHCLIP_TUNING
extern "C" int fc_attention_v3_tiles(const fc_attention_params *p, fc_dtype dtype, fc_v3_tiles tiles,
                                     cudaStream_t stream) {
    using namespace flashclip::attention;
    switch (dtype) {
        case FC_F16: return dispatch_v3_tiles<__half>(*p, tiles, stream);
        case FC_BF16: return dispatch_v3_tiles<__nv_bfloat16>(*p, tiles, stream);
        default: return (int)cudaErrorInvalidValue;
    }
}
#endif
