/* The online softmax of the tensor-core attention kernels (v2, v3, v4), on accumulators in mma.sync/wgmma layout. */
#ifndef FLASHCLIP_ONLINE_SOFTMAX_CUH
#define FLASHCLIP_ONLINE_SOFTMAX_CUH

#include <cuda_runtime.h>
#include <stdint.h>

#include "dtype.cuh"
#include "ptx.cuh"

namespace flashclip::attention {

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
        p[nt / 2][2 * (nt % 2)] = pack2<Elem>(s[4 * nt], s[4 * nt + 1]);
        p[nt / 2][2 * (nt % 2) + 1] = pack2<Elem>(s[4 * nt + 2], s[4 * nt + 3]);
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

}  // namespace flashclip::attention

#endif
