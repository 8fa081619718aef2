/* Shared pieces of the attention kernels: element-type conversions, the visibility rule, and the kernel traits
 * of the tensor-core kernels (fc_attention_v2, v3, v4).
 *
 * Element types: the kernels are templated on the storage type (__half, __nv_bfloat16, float). ElemOps<T> gathers
 * what a kernel needs to move values between storage and fp32 math, so kernel bodies stay type-agnostic. The
 * project may grow a common conversion header; these are kept here on purpose so the attention files build alone.
 *
 * Visibility: with key_lens and causal masking, the keys query row i may attend to always form a prefix
 * [0, row_key_limit) of the key sequence. Every kernel masks by comparing a key index against that one number, so
 * "has key_lens" and "causal" cost nothing in the inner loops and need no template parameters.
 */
#ifndef FLASHCLIP_ATTENTION_TRAITS_CUH
#define FLASHCLIP_ATTENTION_TRAITS_CUH

#include <cuda_runtime.h>
#include <cuda_fp16.h>
#include <cuda_bf16.h>
#include <stdint.h>

#include "flashclip.h"
#include "attention_ptx.cuh"

namespace flashclip_attention {

/* ------------------------------------------------------------------ element types */

template <typename T>
struct ElemOps;

template <>
struct ElemOps<float> {
    static __device__ __forceinline__ float from_float(float x) { return x; }
    /* 8 consecutive elements starting at a 16-byte aligned address (two float4 loads). */
    static __device__ __forceinline__ void load8(const float *src, float (&dst)[8]) {
        const float4 lo = *reinterpret_cast<const float4 *>(src);
        const float4 hi = *reinterpret_cast<const float4 *>(src + 4);
        dst[0] = lo.x, dst[1] = lo.y, dst[2] = lo.z, dst[3] = lo.w;
        dst[4] = hi.x, dst[5] = hi.y, dst[6] = hi.z, dst[7] = hi.w;
    }
};

template <>
struct ElemOps<__half> {
    static __device__ __forceinline__ __half from_float(float x) { return __float2half_rn(x); }
    /* Two floats rounded into one 32-bit register, `lo` in the low half (the mma operand order). */
    static __device__ __forceinline__ uint32_t pack2(float lo, float hi) {
        const __half2 v = __floats2half2_rn(lo, hi);
        return *reinterpret_cast<const uint32_t *>(&v);
    }
    /* 8 consecutive elements starting at a 16-byte aligned address. */
    static __device__ __forceinline__ void load8(const __half *src, float (&dst)[8]) {
        const uint4 raw = *reinterpret_cast<const uint4 *>(src);
        const __half2 *pairs = reinterpret_cast<const __half2 *>(&raw);
#pragma unroll
        for (int i = 0; i < 4; ++i) {
            const float2 f = __half22float2(pairs[i]);
            dst[2 * i] = f.x, dst[2 * i + 1] = f.y;
        }
    }
};

template <>
struct ElemOps<__nv_bfloat16> {
    static __device__ __forceinline__ __nv_bfloat16 from_float(float x) { return __float2bfloat16_rn(x); }
    static __device__ __forceinline__ uint32_t pack2(float lo, float hi) {
        const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
        return *reinterpret_cast<const uint32_t *>(&v);
    }
    static __device__ __forceinline__ void load8(const __nv_bfloat16 *src, float (&dst)[8]) {
        const uint4 raw = *reinterpret_cast<const uint4 *>(src);
        const __nv_bfloat162 *pairs = reinterpret_cast<const __nv_bfloat162 *>(&raw);
#pragma unroll
        for (int i = 0; i < 4; ++i) {
            const float2 f = __bfloat1622float2(pairs[i]);
            dst[2 * i] = f.x, dst[2 * i + 1] = f.y;
        }
    }
};

/* ------------------------------------------------------------------ visibility */

/* Keys of batch b that exist for every query: min(seq_k, key_lens[b]), never negative. */
__device__ __forceinline__ int batch_key_limit(const int *key_lens, int b, int seq_k) {
    if (key_lens == nullptr) return seq_k;
    return max(0, min(seq_k, key_lens[b]));
}

/* Query row i sees keys [0, row_key_limit). Causal attention requires seq_q == seq_k, so key j <= i. */
__device__ __forceinline__ int row_key_limit(int batch_limit, int row, bool causal) {
    return causal ? min(batch_limit, row + 1) : batch_limit;
}

/* ------------------------------------------------------------------ online softmax */

/* The online softmax for 16 query rows (an m16 tile in mma.sync/wgmma accumulator layout) against a tile of
 * kSTiles * 8 keys starting at key0, in steps so that a kernel can run the first while a P V product that still
 * reads the previous P is in flight (v4):
 *   softmax_scores: masks keys at or past each row's limit (kMask), updates the running max (of raw scores, lazily) and
 *     turns S into probabilities in place: p = exp2(s * scale_log2 - max * scale_log2), one FFMA and one MUFU per
 *     score; returns each row's rescale factor alpha for O and the row sums.
 *   add_row_sums: the running row sums (per lane: each lane adds its own columns) rescaled and the tile's added.
 *     v4 has the tensor cores add P's rows instead (a P x ones product next to P V).
 *   rescale_rows, pack_probs: O *= alpha, and the probabilities rounded to Elem as A operands of P V.
 * Raw scores are compared before scaling, so scale_log2 must be > 0 (the launchers check softmax_scale).
 * Element 4nt+e of s is key key0 + 8nt + 2t + e%2 of row g + 8(e/2) (g = lane/4, t = lane%4); a row's values are
 * spread over the 4 lanes of its group. S tiles 2kk and 2kk+1 (keys 16kk..16kk+15) are exactly the A fragment of
 * k step kk: a[0], a[1] from tile 2kk (rows g, g+8), a[2], a[3] from tile 2kk+1. The masking is a template
 * parameter: only the tiles that cross a row's limit pay for the compares. */

// Row maxima and sums over kLanes independent partials: a single running value would chain every score of the
// row through one register (2 * kSTiles dependent FMNMX/FADD per row, latency the two or three warps per scheduler
// cannot hide).
template <int kSTiles>
constexpr int softmax_partials() {
    return kSTiles >= 4 ? 4 : kSTiles;
}

template <int kSTiles, bool kMask>
__device__ __forceinline__ void softmax_scores(float (&s)[4 * kSTiles], float (&row_max)[2], float (&alpha)[2],
                                               const int (&key_limit)[2], int key0, int thread_in_group,
                                               float scale_log2) {
    constexpr int kLanes = softmax_partials<kSTiles>();
    float part[2][kLanes];
#pragma unroll
    for (int i = 0; i < kLanes; ++i) part[0][i] = part[1][i] = -INFINITY;
#pragma unroll
    for (int nt = 0; nt < kSTiles; ++nt) {
#pragma unroll
        for (int e = 0; e < 4; ++e) {
            if (kMask && key0 + 8 * nt + 2 * thread_in_group + e % 2 >= key_limit[e / 2]) s[4 * nt + e] = -INFINITY;
            part[e / 2][nt % kLanes] = fmaxf(part[e / 2][nt % kLanes], s[4 * nt + e]);
        }
    }
    float tile_max[2];
#pragma unroll
    for (int r = 0; r < 2; ++r) {
        tile_max[r] = part[r][0];
#pragma unroll
        for (int i = 1; i < kLanes; ++i) tile_max[r] = fmaxf(tile_max[r], part[r][i]);
    }
    float shift[2];
#pragma unroll
    for (int r = 0; r < 2; ++r) {
        tile_max[r] = fmaxf(tile_max[r], __shfl_xor_sync(0xffffffffu, tile_max[r], 1));
        tile_max[r] = fmaxf(tile_max[r], __shfl_xor_sync(0xffffffffu, tile_max[r], 2));
        // Lazy rescaling: a row keeps the max it has (and O its scale) until a tile's max passes it by more than
        // kRescaleLog2 in exp2 units. Probabilities then reach at most 2^kRescaleLog2, which fp32 sums and fp16/bf16
        // P hold without loss of relative precision, and the final division by the row sum of the same shift makes
        // it exact; O's rescale (a multiply per accumulator, almost every tile at N 577 with a running max) is
        // skipped for a warp whose 16 rows all keep theirs. -inf - -inf (no visible key yet) is NaN: kept.
        constexpr float kRescaleLog2 = 8.f;
        const float seen_max = fmaxf(row_max[r], tile_max[r]);
        const float new_max = (seen_max - row_max[r]) * scale_log2 > kRescaleLog2 ? seen_max : row_max[r];
        // A row with no visible key so far keeps max -inf; shifting by 0 keeps exp2 at 0, not NaN.
        shift[r] = new_max == -INFINITY ? 0.f : new_max * scale_log2;
        alpha[r] = exp2_approx(row_max[r] * scale_log2 - shift[r]);
        row_max[r] = new_max;
    }
#pragma unroll
    for (int nt = 0; nt < kSTiles; ++nt)
#pragma unroll
        for (int e = 0; e < 4; ++e) s[4 * nt + e] = exp2_approx(fmaf(s[4 * nt + e], scale_log2, -shift[e / 2]));
}

template <int kSTiles>
__device__ __forceinline__ void add_row_sums(const float (&s)[4 * kSTiles], float (&row_sum)[2],
                                             const float (&alpha)[2]) {
    constexpr int kLanes = softmax_partials<kSTiles>();
    float part[2][kLanes];
#pragma unroll
    for (int i = 0; i < kLanes; ++i) part[0][i] = part[1][i] = 0.f;
#pragma unroll
    for (int nt = 0; nt < kSTiles; ++nt)
#pragma unroll
        for (int e = 0; e < 4; ++e) part[e / 2][nt % kLanes] += s[4 * nt + e];
#pragma unroll
    for (int r = 0; r < 2; ++r) {
        row_sum[r] *= alpha[r];
#pragma unroll
        for (int i = 0; i < kLanes; ++i) row_sum[r] += part[r][i];
    }
}

/* alpha is exactly 1 (exp2 of exactly 0) where a row's max did not move, which after the first tiles is most
 * tiles: the rescale is skipped when that holds for the whole warp (one vote). */
__device__ __forceinline__ bool row_max_moved(const float (&alpha)[2]) {
    return !__all_sync(0xffffffffu, alpha[0] == 1.f && alpha[1] == 1.f);
}

/* Accumulators in m16 layout (rows g and g + 8 of each n8 tile) times their row's alpha. */
template <int kTiles>
__device__ __forceinline__ void rescale_rows(float (&acc)[4 * kTiles], const float (&alpha)[2]) {
#pragma unroll
    for (int nt = 0; nt < kTiles; ++nt) {
        acc[4 * nt] *= alpha[0];
        acc[4 * nt + 1] *= alpha[0];
        acc[4 * nt + 2] *= alpha[1];
        acc[4 * nt + 3] *= alpha[1];
    }
}

/* p may hold more k steps than s fills (v4's narrow last key tile packs into the first kSTiles / 2). */
template <typename Elem, int kSTiles, int kPSteps>
__device__ __forceinline__ void pack_probs(const float (&s)[4 * kSTiles], uint32_t (&p)[kPSteps][4]) {
    static_assert(kSTiles % 2 == 0 && kSTiles / 2 <= kPSteps, "P fragments hold whole k steps of S");
#pragma unroll
    for (int nt = 0; nt < kSTiles; ++nt) {
        p[nt / 2][2 * (nt % 2)] = ElemOps<Elem>::pack2(s[4 * nt], s[4 * nt + 1]);
        p[nt / 2][2 * (nt % 2) + 1] = ElemOps<Elem>::pack2(s[4 * nt + 2], s[4 * nt + 3]);
    }
}

/* All steps back to back (v2, v3): one online-softmax step, masked only where needs_mask. */
template <typename Elem, int kSTiles, int kOTiles>
__device__ __forceinline__ void online_softmax_tile(float (&s)[4 * kSTiles], float (&o)[4 * kOTiles],
                                                    uint32_t (&p)[kSTiles / 2][4], float (&row_max)[2],
                                                    float (&row_sum)[2], const int (&key_limit)[2], bool needs_mask,
                                                    int key0, int thread_in_group, float scale_log2) {
    float alpha[2];
    if (needs_mask)
        softmax_scores<kSTiles, true>(s, row_max, alpha, key_limit, key0, thread_in_group, scale_log2);
    else
        softmax_scores<kSTiles, false>(s, row_max, alpha, key_limit, key0, thread_in_group, scale_log2);
    add_row_sums<kSTiles>(s, row_sum, alpha);
    if (row_max_moved(alpha)) rescale_rows<kOTiles>(o, alpha);
    pack_probs<Elem, kSTiles>(s, p);
}

/* The epilogue of one warp of a wgmma kernel (v3, v4), whose 16 query rows from warp_row0 hold O in accumulator
 * layout: finishes the row sums over each row's 4 lanes (kLaneSums: each lane holds its columns' part), normalizes, stages the rows in o_stage (16 rows of
 * kRowStride elements of shared memory that only this warp uses), writes the rows below seq_q as 16-byte chunks,
 * and the row log-sum-exp where lse_rows (the head's [seq_q] row) is given. Intrinsics, not IEEE division /
 * log2f: their slow paths are calls, and any call in the kernel makes ptxas serialize every wgmma. Both are within
 * 2 ulp here (row_sum >= 1 whenever it is positive). */
template <typename Elem, int kOTiles, int kChunksPerRow, int kRowStride, bool kLaneSums>
__device__ __forceinline__ void store_warp_rows(const float (&o_acc)[4 * kOTiles], float (&row_sum)[2],
                                                const float (&row_max)[2], float scale_log2, Elem *o_stage, Elem *o,
                                                long long o_seq_stride, float *lse_rows, int warp_row0, int seq_q,
                                                int lane) {
    constexpr float kLn2 = 0.6931471805599453f;
    const int group = lane / 4, thread_in_group = lane % 4;
    __syncwarp();
    float inv_sum[2];
#pragma unroll
    for (int r = 0; r < 2; ++r) {
        if (kLaneSums) {
            row_sum[r] += __shfl_xor_sync(0xffffffffu, row_sum[r], 1);
            row_sum[r] += __shfl_xor_sync(0xffffffffu, row_sum[r], 2);
        }
        inv_sum[r] = row_sum[r] > 0.f ? __fdividef(1.f, row_sum[r]) : 0.f;
    }
#pragma unroll
    for (int nt = 0; nt < kOTiles; ++nt) {
        Elem *dst = o_stage + group * kRowStride + 8 * nt + 2 * thread_in_group;
        *reinterpret_cast<uint32_t *>(dst) =
            ElemOps<Elem>::pack2(o_acc[4 * nt] * inv_sum[0], o_acc[4 * nt + 1] * inv_sum[0]);
        *reinterpret_cast<uint32_t *>(dst + 8 * kRowStride) =
            ElemOps<Elem>::pack2(o_acc[4 * nt + 2] * inv_sum[1], o_acc[4 * nt + 3] * inv_sum[1]);
    }
    __syncwarp();
    for (int i = lane; i < 16 * kChunksPerRow; i += 32) {
        const int r = i / kChunksPerRow, c = i % kChunksPerRow;
        const int row = warp_row0 + r;
        if (row < seq_q)
            *reinterpret_cast<uint4 *>(o + (long long)row * o_seq_stride + 8 * c) =
                *reinterpret_cast<const uint4 *>(o_stage + r * kRowStride + 8 * c);
    }
    if (lse_rows != nullptr && thread_in_group == 0) {
#pragma unroll
        for (int r = 0; r < 2; ++r) {
            const int row = warp_row0 + group + 8 * r;
            if (row < seq_q)
                lse_rows[row] =
                    row_sum[r] > 0.f ? (row_max[r] * scale_log2 + __log2f(row_sum[r])) * kLn2 : -INFINITY;
        }
    }
}

/* ------------------------------------------------------------------ tile loads */

/* Copies rows [row0, row0 + kRows) of one head (real head-dim columns only) into a padded shared-memory tile with
 * 16-byte cp.async. Rows at or past row_end are zero-filled with plain stores instead: they may lie outside the
 * tensor, and zeros keep masked keys' V rows from turning 0 * garbage into NaN. Used by v2 for every tile and by v3 for
 * its Q tile. Fully unrolled on purpose: the rolled loop saves registers but measured 10-40% slower on an H100. */
template <class Traits, int kRows>
__device__ __forceinline__ void load_tile(typename Traits::Elem *tile, const typename Traits::Elem *src,
                                          long long row_stride, int row0, int row_end, int tid) {
    constexpr int kChunks = kRows * Traits::kChunksPerRow;
#pragma unroll
    for (int i0 = 0; i0 < kChunks; i0 += Traits::kThreads) {
        const int i = i0 + tid;
        if (kChunks % Traits::kThreads == 0 || i < kChunks) {
            const int r = i / Traits::kChunksPerRow, c = i % Traits::kChunksPerRow;
            typename Traits::Elem *dst = tile + r * Traits::kSmemRowStride + 8 * c;
            if (row0 + r < row_end)
                cp_async_16(dst, src + (long long)(row0 + r) * row_stride + 8 * c);
            else
                *reinterpret_cast<uint4 *>(dst) = make_uint4(0u, 0u, 0u, 0u);
        }
    }
}

/* ------------------------------------------------------------------ v2 kernel traits */

/* Head dims the tensor-core kernel is built for (the launcher's switch rejects any other). */
constexpr bool v2_supports_head_dim(int head_dim) {
    return head_dim == 64 || head_dim == 80 || head_dim == 96 || head_dim == 104 || head_dim == 112 ||
           head_dim == 128;
}

/* Everything about the shape of one fc_attention_v2 instantiation in one place.
 *
 * - Each warp owns kMTilesPerWarp * 16 query rows (m16 mma tiles) for the whole kernel: its Q fragments live in
 *   registers and its softmax statistics never leave the warp, so no block-wide reductions are needed. Two m
 *   tiles per warp let every K/V fragment read from shared memory feed two mmas, which halves the ldmatrix
 *   traffic (the limiter with one tile); it costs registers, so it is used only where they allow (see below).
 * - The head dim is padded to a multiple of 16 (the mma k depth); the padding columns are zero in shared memory
 *   and are never written out.
 * - Shared-memory rows are padded by 16 bytes: a row is then an odd number of 16-byte chunks, so the 8 row
 *   addresses of every ldmatrix phase land in 8 different bank groups (conflict-free without a swizzle).
 * - K and V tiles are double buffered: the cp.async copy of tile j+1 runs while tile j is being used. */
template <typename Elem_, int kHeadDim_, int kWarps_, int kMTilesPerWarp_, int kBlockN_>
struct FlashV2Traits {
    using Elem = Elem_;
    static_assert(sizeof(Elem) == 2, "tensor-core path is f16/bf16 only");
    static_assert(v2_supports_head_dim(kHeadDim_), "unsupported head dim");

    static constexpr int kHeadDim = kHeadDim_;                            // real columns, read and written
    static constexpr int kHeadDimPadded = (kHeadDim + 15) / 16 * 16;      // columns the mma loops cover
    static constexpr int kChunksPerRow = kHeadDim / 8;                    // 16-byte chunks actually copied
    static constexpr int kPaddedChunksPerRow = kHeadDimPadded / 8;

    static constexpr int kWarps = kWarps_;
    static constexpr int kThreads = kWarps * 32;
    static constexpr int kMTilesPerWarp = kMTilesPerWarp_;
    static constexpr int kRowsPerWarp = 16 * kMTilesPerWarp;
    static constexpr int kBlockM = kWarps * kRowsPerWarp;                 // query rows per block
    static constexpr int kBlockN = kBlockN_;                              // keys per K/V tile
    static constexpr int kStages = 2;

    static constexpr int kSmemRowStride = kHeadDimPadded + 8;             // elements
    static_assert((kSmemRowStride / 8) % 2 == 1, "row stride must be an odd number of 16-byte chunks");

    static constexpr int kQTileElems = kBlockM * kSmemRowStride;
    static constexpr int kKVTileElems = kBlockN * kSmemRowStride;
    static constexpr size_t kSmemBytes = (size_t)(kQTileElems + 2 * kStages * kKVTileElems) * sizeof(Elem);

    // mma tiling per warp: S = Q K^T is kRowsPerWarp x kBlockN, O = P V is kRowsPerWarp x kHeadDimPadded.
    static constexpr int kQKSteps = kHeadDimPadded / 16;                  // k steps over the head dim
    static constexpr int kSTiles = kBlockN / 8;                           // n8 tiles of S per m tile
    static constexpr int kPVSteps = kBlockN / 16;                         // k steps over the keys
    static constexpr int kOTiles = kHeadDimPadded / 8;                    // n8 tiles of O per m tile
    static_assert(kSTiles % 2 == 0 && kOTiles % 2 == 0, "ldmatrix.x4 loads n8 tiles in pairs");
};

/* Tile configuration per head dim: FlashV2Traits<Elem, head dim, warps, m16 tiles per warp, keys per tile>.
 * Per thread the kernel holds S (2 * mtiles * keys / 8 floats), O (mtiles * padded dim / 2 floats) and Q
 * (mtiles * padded dim / 4 registers); every choice below compiles to <= 255 registers with 0 spills. Among the
 * spill-free shapes, these measured fastest on an H100 for CLIP's shapes (batch 16, 12-16 heads, seq 77-577):
 *  - 64: two m tiles per warp (128-row blocks) halve ldmatrix traffic per mma: +12% at seq 577. Short sequences
 *    (the text tower's 77) prefer 64-row blocks: more blocks to spread over the SMs and less tail waste.
 *  - 80: two m tiles fit only with 32-key tiles; two warps per block (64-row blocks) did best at 257 tokens.
 *  - 96: two m tiles with 32-key tiles; only the 8-warp block compiles without spills, and it still beats one
 *    m tile per warp by 5-20%.
 *  - 104, 112: 32-key tiles (fewer accumulator registers, ~166 regs) beat 64-key ones by 5-13%.
 *  - 128: one m tile and 64-key tiles; the accumulators alone leave no room for more.
 * ShortSeqTraits is used when seq_q <= kShortSeqMax; where it is the same type, no extra kernel is built. */
template <typename Elem, int kHeadDim>
struct FlashV2Config;

template <typename Elem>
struct FlashV2Config<Elem, 64> {
    using Traits = FlashV2Traits<Elem, 64, 4, 2, 64>;
    using ShortSeqTraits = FlashV2Traits<Elem, 64, 4, 1, 64>;
    static constexpr int kShortSeqMax = 320;
};
template <typename Elem>
struct FlashV2Config<Elem, 80> {
    using Traits = FlashV2Traits<Elem, 80, 2, 2, 32>;
    using ShortSeqTraits = Traits;
    static constexpr int kShortSeqMax = 0;
};
template <typename Elem>
struct FlashV2Config<Elem, 96> {
    using Traits = FlashV2Traits<Elem, 96, 8, 2, 32>;
    using ShortSeqTraits = Traits;
    static constexpr int kShortSeqMax = 0;
};
template <typename Elem>
struct FlashV2Config<Elem, 104> {
    using Traits = FlashV2Traits<Elem, 104, 4, 1, 32>;
    using ShortSeqTraits = Traits;
    static constexpr int kShortSeqMax = 0;
};
template <typename Elem>
struct FlashV2Config<Elem, 112> {
    using Traits = FlashV2Traits<Elem, 112, 4, 1, 32>;
    using ShortSeqTraits = Traits;
    static constexpr int kShortSeqMax = 0;
};
template <typename Elem>
struct FlashV2Config<Elem, 128> {
    using Traits = FlashV2Traits<Elem, 128, 4, 1, 64>;
    using ShortSeqTraits = Traits;
    static constexpr int kShortSeqMax = 0;
};


/* ------------------------------------------------------------------ wgmma tile geometry (v3, v4) */

/* What the Hopper kernels share about their tiles: the head dim padded to whole MMA k steps (or further: v4 pads
 * 104 and 112 to 128), the swizzled K/V layout (the widest swizzle that divides the padded head dim: 128 B for 64
 * and 128, 64 B for 96, 32 B for 80 and 112; column block j holds head-dim columns [j*W, (j+1)*W), W = kAtomCols,
 * of all rows), Q's padded row layout, and the per-thread fragment counts of S = Q K^T (64 x kBlockN) and
 * O = P V (64 x head dim). */
template <typename Elem_, int kHeadDim_, int kBlockN_, int kHeadDimPadded_ = (kHeadDim_ + 15) / 16 * 16>
struct WgmmaTileShape {
    using Elem = Elem_;
    static_assert(sizeof(Elem) == 2, "tensor-core path is f16/bf16 only");
    static_assert(v2_supports_head_dim(kHeadDim_), "unsupported head dim");
    static_assert(kHeadDimPadded_ % 16 == 0 && kHeadDimPadded_ >= kHeadDim_, "whole k steps over the head dim");

    static constexpr int kHeadDim = kHeadDim_;
    static constexpr int kHeadDimPadded = kHeadDimPadded_;
    static constexpr int kChunksPerRow = kHeadDim / 8;
    static constexpr int kPaddedChunksPerRow = kHeadDimPadded / 8;
    static constexpr int kBlockN = kBlockN_;

    static constexpr int kSwizzleBytes = kHeadDimPadded % 64 == 0 ? 128 : kHeadDimPadded % 32 == 0 ? 64 : 32;
    static constexpr int kAtomCols = kSwizzleBytes / 2;                   // head-dim columns per column block
    static constexpr int kAtoms = kHeadDimPadded / kAtomCols;             // column blocks (TMA boxes) per tile
    static constexpr int kKVTileBytes = kBlockN * kHeadDimPadded * 2;
    static_assert(kKVTileBytes % 1024 == 0, "tiles must keep 1024-byte swizzle alignment");
    static constexpr int kSmemRowStride = kHeadDimPadded + 8;             // Q rows, elements; odd 16-byte chunks

    static constexpr int kQKSteps = kHeadDimPadded / 16;
    static constexpr int kSRegs = kBlockN / 2;                            // S accumulator floats per thread
    static constexpr int kSTiles = kBlockN / 8;
    static constexpr int kPVSteps = kBlockN / 16;
    static constexpr int kORegs = kHeadDimPadded / 2;
    static constexpr int kOTiles = kHeadDimPadded / 8;
};

/* ------------------------------------------------------------------ v3 kernel traits (Hopper, wgmma) */

/* One fc_attention_v3 instantiation: kWarpgroups warpgroups of 128 threads, each owning 64 query rows (one wgmma
 * m64 tile) for the whole kernel, sharing kBlockN-key K/V tiles.
 * - Q lives in registers (A operands of S = Q K^T, loaded once with ldmatrix from a padded row layout as in v2);
 *   P is repacked from the S accumulators into A operands of O = P V. Only K and V are read by the tensor cores
 *   from shared memory, so per MMA the shared-memory traffic is B alone.
 * - K and V tiles use the swizzled layout of WgmmaTileShape.
 * - Double-buffered K/V tiles through cp.async, as v2; kMinBlocksPerSm = 2 lets two blocks share an SM so one's
 *   softmax overlaps the other's MMAs (it caps registers at 128 per thread). */
template <typename Elem_, int kHeadDim_, int kWarpgroups_, int kBlockN_, int kMinBlocksPerSm_>
struct FlashV3Traits : WgmmaTileShape<Elem_, kHeadDim_, kBlockN_> {
    using Shape = WgmmaTileShape<Elem_, kHeadDim_, kBlockN_>;
    static constexpr int kWarpgroups = kWarpgroups_;
    static constexpr int kThreads = 128 * kWarpgroups;
    static constexpr int kMinBlocksPerSm = kMinBlocksPerSm_;
    static constexpr int kBlockM = 64 * kWarpgroups;
    static constexpr int kStages = 2;

    static constexpr int kQTileBytes = (kBlockM * Shape::kSmemRowStride * 2 + 1023) / 1024 * 1024;
    static constexpr size_t kSmemBytes =
        1024 /* alignment slack */ + kQTileBytes + 2 * kStages * Shape::kKVTileBytes;
};

/* Blocks per SM asked of the compiler (__launch_bounds__), which caps registers at 65536 / (threads * blocks):
 * as many blocks as the accumulators allow without spilling (checked in the ptxas report). */
constexpr int v3_min_blocks(int head_dim, int warpgroups, int block_n) {
    return warpgroups == 1 ? (block_n == 64 ? (head_dim <= 96 ? 3 : 2) : 2)
                           : (warpgroups == 2 && block_n == 64 && head_dim <= 64 ? 2 : 1);
}

template <typename Elem, int kHeadDim, int kWarpgroups, int kBlockN>
using FlashV3Tiles = FlashV3Traits<Elem, kHeadDim, kWarpgroups, kBlockN, v3_min_blocks(kHeadDim, kWarpgroups, kBlockN)>;

/* The tile shape fc_attention_v3 uses per head dim, from the sweep of fc_attention_v3_tiles (FC_V3_TILES_* in
 * flashclip.h; benches/NOTES.md and benches/results/ have the numbers). H100, B16 H16, fp16 and bf16 alike:
 *  - 64 (N 577 and 257): two warpgroups, 64-key tiles, two blocks per SM: 113 us at N 577 against 124-146 us for
 *    the other shapes; at N 257 one warpgroup ties it (38.0 vs 37.6 us).
 *  - 80 (N 257): one warpgroup, 64-key tiles, three blocks per SM: 48.7 us against 58.9 us for two warpgroups
 *    (which fit only one block per SM at this head dim's register count).
 *  - 96-128: two warpgroups, one block per SM (not swept yet; 12-28% faster than v2 as they are). */
template <typename Elem, int kHeadDim>
struct FlashV3Config {
    using Traits = FlashV3Tiles<Elem, kHeadDim, 2, 64>;
};
template <typename Elem>
struct FlashV3Config<Elem, 80> {
    using Traits = FlashV3Tiles<Elem, 80, 1, 64>;
};


/* ------------------------------------------------------------------ v4 kernel traits (Hopper, warp-specialized) */

/* v4 computes head dims 104 and 112 as 128: TMA zero-fills the columns past the head dim, and the tiles get the
 * 128-byte swizzle of 2 column blocks instead of the 32-byte one of 7. H100, B16 N577, same work for the tensor
 * cores as head dim 128: 112 took 145 us with 7 column blocks and takes 127 as 128 (128: 128 us); 104 took 190 and
 * takes 142. */
constexpr int v4_padded_head_dim(int head_dim) { return head_dim > 96 ? 128 : (head_dim + 15) / 16 * 16; }

/* One fc_attention_v4 instantiation: a producer warp that only loads (TMA boxes into the swizzled K/V layout of
 * WgmmaTileShape, kStages deep, published through mbarriers) and kConsumers consumer warpgroups of 64 query rows
 * each that only multiply and run the softmax, each at its own pace; kMinBlocks blocks per SM (2 with one consumer,
 * so that one block's prologue and epilogue overlap the other's main loop). The producer's warpgroup hands
 * registers to the consumers (setmaxnreg) within the pool the launch gave the block. */
template <typename Elem_, int kHeadDim_, int kBlockN_, int kStages_, int kConsumers_ = 2, bool kPingPong_ = false>
struct FlashV4Traits : WgmmaTileShape<Elem_, kHeadDim_, kBlockN_, v4_padded_head_dim(kHeadDim_)> {
    using Shape = WgmmaTileShape<Elem_, kHeadDim_, kBlockN_, v4_padded_head_dim(kHeadDim_)>;
    static constexpr int kConsumers = kConsumers_;                        // warpgroups of 64 query rows
    static_assert(kConsumers >= 1 && kConsumers <= 3, "one to three consumer warpgroups");
    // The consumers issue their GEMMs in turns (FA3's ping-pong), see attention_v4_kernel.
    static constexpr bool kPingPong = kPingPong_;
    static_assert(!kPingPong || kConsumers > 1, "turns need two or more consumers");
    // Hardware barriers: 1 + c for consumer c's Q rows, 1 + kConsumers for the merge of a split query block,
    // kTurnBarrier + c for consumer c's turn.
    static constexpr int kTurnBarrier = 2 + kConsumers;
    static constexpr int kMinBlocks = kConsumers == 1 ? 2 : 1;
    static constexpr int kThreads = 128 * (1 + kConsumers);
    static constexpr int kBlockM = 64 * kConsumers;
    // The pool is what the launch gave: kLaunchRegs x kThreads (__launch_bounds__(kThreads, kMinBlocks)).
    // Consumers with 128-key tiles use up to ~220 registers, with 64-key tiles ~210; the producer keeps at least
    // 48 (its loop over work items spills below that). Three consumers get 152, one consumer of two blocks per SM
    // 208.
    static constexpr int kLaunchRegs = 65536 / (kThreads * kMinBlocks) / 8 * 8;
    static constexpr int kPool = kLaunchRegs * kThreads;
    static constexpr int kConsumerCap = (kPool - 128 * 48) / (128 * kConsumers) / 8 * 8;
    static constexpr int kConsumerWant = kBlockN_ >= 128 ? 224 : 216;
    static constexpr int kConsumerRegs = kConsumerWant < kConsumerCap ? kConsumerWant : kConsumerCap;
    static constexpr int kProducerRegs = (kPool - 128 * kConsumers * kConsumerRegs) / 128 / 8 * 8;
    static_assert(kProducerRegs >= 24 && kProducerRegs <= 256, "register file");
    static constexpr int kStages = kStages_;
    // The consumers of a block may split its keys (v4's last query block) when each owns two or more stages.
    static constexpr bool kCanSplit = kConsumers > 1 && kStages % kConsumers == 0 && kStages / kConsumers >= 2;
    // Riders (V4Rider in attention_v4.cu): with three consumers at head dim 64, a last query block of at most
    // kRiderRows rows is computed by the producer warpgroup's three other warps, on mma.sync, from the K/V tiles of
    // one of its head's full blocks; they meet on hardware barrier kRiderBarrier and merge through kRiderBytes.
    static constexpr bool kRiders = kConsumers == 3 && Shape::kHeadDimPadded == 64 && kBlockN_ % 16 == 0;
    static constexpr int kRiderRows = 8;
    static constexpr int kRiderBarrier = kTurnBarrier + kConsumers;
    static_assert(kRiderBarrier < 16, "hardware barriers");
    static constexpr int kRiderBytes = kRiders ? 2 * (16 * 32 + 16) * 4 + 3 * 4 * 32 * 8 : 0;

    static constexpr int kQTileBytes = (kBlockM * Shape::kSmemRowStride * 2 + 1023) / 1024 * 1024;
    // The B operand of P x ones (the row sums on the tensor cores): 8 rows of one 128-byte swizzle atom.
    static constexpr int kOnesBytes = 1024;
    // Where the other consumers' partial results of a split query block meet the first's: O, row max and sum.
    static constexpr int kPartialBytes = kCanSplit ? (kConsumers - 1) * (Shape::kORegs + 4) * 128 * 4 : 0;
    static constexpr int kBarrierBytes = 2 * kStages * 8;                  // full[] and empty[] mbarriers
    static constexpr size_t kSmemBytes = 1024 /* alignment slack */ + kQTileBytes + kOnesBytes +
                                         2 * kStages * Shape::kKVTileBytes + kPartialBytes + kRiderBytes +
                                         kBarrierBytes;
    static_assert(kSmemBytes * kMinBlocks <= 227 * 1024, "shared memory");
};

/* v4 tile shapes per head dim (two consumers; head dims 64 and 80 may take three, see dispatch_v4): 128-key tiles
 * at 96, 64-key tiles elsewhere: at 80 ViT-H/14's N 257 = 4 x 64 + 1 (44.6 us against 47.3 with 128-key tiles),
 * at 64 batch 1 N 577 (12.0 us against 12.5 with lazy rescaling; 12.2 against 12.1 before it), at 104-128
 * registers.
 * Four stages (two per consumer, for the key split of the last query block) where they fit in shared memory,
 * three at 96. Ping-pong turns at 64 (batch 1 N 577, same run: fp16 12.0 us against 12.2 without, bf16 11.8
 * against 12.1). */
template <typename Elem, int kHeadDim>
struct FlashV4Config {
    using Traits =
        FlashV4Traits<Elem, kHeadDim, (kHeadDim == 96 ? 128 : 64), (kHeadDim == 96 ? 3 : 4), 2, kHeadDim == 64>;
};

}  // namespace flashclip_attention

#endif
