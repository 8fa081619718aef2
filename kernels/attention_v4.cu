/* fc_attention_v4: v3's math (wgmma, Q and P in registers, K/V from swizzled shared memory) with the work split
 * and scheduled the way FlashAttention-3 does it.
 *
 *   - Warp specialization. One producer warp only loads: per K/V tile, one thread announces the bytes on the
 *     stage's `full` mbarrier and issues TMA boxes (the tensor maps are built on the host from the strides, so the
 *     packed QKV layout is read in place; rows past seq_k and head-dim padding columns arrive as zeros). A stage is
 *     refilled after every consumer released it on `empty`. The other producer warps only give their registers
 *     away (setmaxnreg) and exit. Two or three consumer warpgroups of 64 query rows each multiply and run the
 *     softmax, each at its own pace: no block-wide barrier in the main loop.
 *   - Intra-warpgroup overlap. A consumer issues S = Q K_t^T and O += P_{t-1} V_{t-1} back to back, waits for S
 *     only, runs the softmax of tile t while the tensor cores finish P V, then rescales O. The softmax (MUFU- and
 *     FMA-bound) and the two GEMMs of neighbouring tiles overlap within one warpgroup, and across the two.
 *   - Ping-pong (Traits::kPingPong). All consumers wait for the same tile, so left alone they issue their GEMMs
 *     together and then run their softmaxes together, contending for the MUFU and issue slots while the tensor
 *     cores idle. With turns, consumer c issues a tile's GEMMs only after c - 1 has issued its own (a ring of
 *     hardware barriers): the tensor cores run one consumer's GEMMs while the others exponentiate.
 *   - Row sums on the tensor cores: next to each P V k step, P times a shared-memory tile of ones (m64n8k16) adds
 *     the probabilities of every row, and the result is rescaled with O. One FADD per score fewer for the issue
 *     slots the softmax is short of, and the sum is that of the rounded P that P V multiplies.
 *   - Batches whose key_lens cut a tile short get that tile through cp.async instead, with rows past the limit
 *     zero-filled: TMA would bring the real rows there, and 0 * NaN in P V must not happen.
 *   - Ragged ends (CLIP's lengths are 64k + 1). The last key tile is multiplied only as wide as the keys left
 *     (16 or 80), S and P V, last in the pipeline; a last query block of at most 64 rows is shared by all
 *     consumers, each taking part of the key tiles, merged through shared memory at the end. With three consumers
 *     at head dim 64, one of at most 8 rows (CLIP's one row past 3 x 192) is no work item at all: it rides on one
 *     of its head's full blocks, computed by the producer warpgroup's idle warps from the same K/V tiles
 *     (V4Rider).
 *   - Persistent blocks: one wave of blocks, each looping over work items (a query block of one head). A block's
 *     fixed costs (launch, barrier setup, the first Q and K/V loads, the pipeline's fill and drain) were about half
 *     of its time at CLIP's lengths; now the producer streams the next item's K/V into the ring while the consumers
 *     finish the current one, and each consumer loads its next Q rows under the current item's tiles.
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
#include <atomic>
#include <climits>
#include <type_traits>

#include "flashclip.h"
#include "flashclip_head_dims.h"
#include "dtype.cuh"
#include "ptx.cuh"
#include "warp_specialization.cuh"
#include "wgmma.cuh"
#include "attention_mask.cuh"
#include "online_softmax.cuh"
#include "attention_v4/traits.cuh"

namespace flashclip::attention {
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
    // Not unrolled: a rare path, and the producer warpgroup's 56 registers are shared with the riders' code.
#pragma unroll 1
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
    using MmaSum = Wgmma<Elem, 8>;
    static constexpr int kSw = Traits::kSwizzleBytes;

    /* Descriptors of a K stage (K-major) and a V stage (N-major: column blocks kBlockN * kSw bytes apart). */
    static __device__ __forceinline__ uint64_t k_desc(uint32_t k_stage) { return smem_desc<kSw>(k_stage, 16, 8 * kSw); }
    static __device__ __forceinline__ uint64_t v_desc(uint32_t v_stage) {
        return smem_desc<kSw>(v_stage, Traits::kBlockN * kSw, 8 * kSw);
    }

    /* Issue S = Q K^T against the first kN keys of the K stage of descriptor k (not waited for): k step kk covers
     * head-dim columns 16kk..16kk+15, in column block 16kk / kAtomCols at byte 2 * (16kk % kAtomCols) of each
     * row. kN < kBlockN multiplies the narrow last tile only. */
    template <int kN>
    static __device__ __forceinline__ void issue_qk(float (&s)[kN / 2], const uint32_t (&q)[Traits::kQKSteps][4],
                                                    uint64_t k) {
#pragma unroll
        for (int kk = 0; kk < Traits::kQKSteps; ++kk)
            Wgmma<Elem, kN>::template mma<0>(s, q[kk],
                                             desc_advance(k, (16 * kk / Traits::kAtomCols) * Traits::kBlockN * kSw +
                                                                 2 * (16 * kk % Traits::kAtomCols)),
                                             kk > 0);
    }

    /* The ones tile, K-major like K: every element it reads is 1, whatever the layout. */
    static __device__ __forceinline__ uint64_t ones_desc(uint32_t ones) { return smem_desc<128>(ones, 16, 8 * 128); }

    /* Issue O += P V for the V stage of descriptor v and sums += P x ones (not waited for): k step kk = keys
     * 16kk..16kk+15. Every column of `sums` ends up with its row's sum: elements 0 and 2 are rows g and g + 8. */
    template <int kSteps = Traits::kPVSteps>
    static __device__ __forceinline__ void issue_pv(float (&o)[Traits::kORegs], float (&sums)[4],
                                                    const uint32_t (&p)[Traits::kPVSteps][4], uint64_t v,
                                                    uint64_t ones) {
#pragma unroll
        for (int kk = 0; kk < kSteps; ++kk) MmaO::template mma<1>(o, p[kk], desc_advance(v, 16 * kk * kSw), 1);
#pragma unroll
        for (int kk = 0; kk < kSteps; ++kk) MmaSum::template mma<0>(sums, p[kk], ones, 1);
    }

    /* O and the sums times alpha where a row's max moved, and the probabilities packed as P V's A operands. */
    template <int kSTiles>
    static __device__ __forceinline__ void rescale_and_pack(const float (&s)[4 * kSTiles],
                                                            float (&o)[Traits::kORegs], float (&sums)[4],
                                                            uint32_t (&p)[Traits::kPVSteps][4],
                                                            const float (&alpha)[2]) {
        if (row_max_moved(alpha)) {
            rescale_rows<Traits::kOTiles>(o, alpha);
            rescale_rows<1>(sums, alpha);
        }
        pack_probs<Elem, kSTiles>(s, p);
    }
};

/* A consumer's place in the K/V ring: slot pass * kStages + stage, in the stage's pass-th phase (parity pass & 1).
 * A consumer walks the stages [first, first + round) it owns, pass after pass: the next slot is a compare and an
 * add, not the division by round and the modulo that index arithmetic would cost per tile. */
struct RingSlot {
    int stage, pass;
};

/* What one consumer warp keeps of its 16 rows while the block's consumers merge a split key range: O, and each
 * row's max and sum, per thread, float r of thread t at r * 128 + t; the other consumers' in a region of their own
 * (the ring is already taking the next item's tiles). */
template <class Traits>
struct V4Partial {
    static constexpr int kFloats = Traits::kORegs + 4;
    static_assert(!Traits::kCanSplit || Traits::kPartialBytes == (Traits::kConsumers - 1) * kFloats * 128 * 4,
                  "the traits reserve the partials");
};

/* Folds another consumer's O, row max and row sum (laid out as V4Partial says, from this thread's first float) into
 * this thread's. */
template <class Traits>
__device__ __forceinline__ void merge_partial(float (&o_acc)[Traits::kORegs], float (&row_max)[2],
                                              float (&row_sum)[2], const float *theirs, float scale_log2) {
    float scale_mine[2], scale_theirs[2];
#pragma unroll
    for (int r = 0; r < 2; ++r) {
        const float their_max = theirs[(Traits::kORegs + r) * 128];
        const float new_max = fmaxf(row_max[r], their_max);
        // A side that saw no key has max -inf and contributes nothing (never exp2 of -inf - -inf).
        scale_mine[r] = row_max[r] == -INFINITY ? 0.f : exp2_approx((row_max[r] - new_max) * scale_log2);
        scale_theirs[r] = their_max == -INFINITY ? 0.f : exp2_approx((their_max - new_max) * scale_log2);
        row_sum[r] = row_sum[r] * scale_mine[r] + theirs[(Traits::kORegs + 2 + r) * 128] * scale_theirs[r];
        row_max[r] = new_max;
    }
#pragma unroll
    for (int r = 0; r < Traits::kORegs; ++r)
        o_acc[r] = o_acc[r] * scale_mine[(r % 4) / 2] + theirs[r * 128] * scale_theirs[(r % 4) / 2];
}

/* The epilogue of one consumer warp, straight from the accumulators: O / sum of its 16 rows from warp_row0 (rows
 * below seq_q, real head-dim columns) as 4-byte stores, and the row log-sum-exp where lse_rows (the head's [seq_q]
 * row) is given. No staging in shared memory: the Q rows there already hold the next item's. */
template <class Traits>
__device__ __forceinline__ void store_rows(const float (&o_acc)[Traits::kORegs], const float (&row_sum)[2],
                                           const float (&row_max)[2], float scale_log2, typename Traits::Elem *o,
                                           long long o_seq_stride, float *lse_rows, int warp_row0, int seq_q,
                                           int lane) {
    using Elem = typename Traits::Elem;
    constexpr float kLn2 = 0.6931471805599453f;
    const int group = lane / 4, thread_in_group = lane % 4;
#pragma unroll
    for (int r = 0; r < 2; ++r) {
        const int row = warp_row0 + group + 8 * r;
        if (row >= seq_q) continue;
        // Intrinsics, not IEEE division / log2f: their slow paths are calls, and a call makes ptxas serialize the
        // kernel's wgmma. Within 2 ulp here (row_sum >= 1 whenever it is positive).
        const float inv_sum = row_sum[r] > 0.f ? __fdividef(1.f, row_sum[r]) : 0.f;
        Elem *dst = o + (long long)row * o_seq_stride + 2 * thread_in_group;
#pragma unroll
        for (int nt = 0; nt < Traits::kOTiles; ++nt)
            if (8 * nt < Traits::kHeadDim)  // the padded head dim's last columns are not the tensor's
                *reinterpret_cast<uint32_t *>(dst + 8 * nt) =
                    pack2<Elem>(o_acc[4 * nt + 2 * r] * inv_sum, o_acc[4 * nt + 2 * r + 1] * inv_sum);
        if (lse_rows != nullptr && thread_in_group == 0)
            lse_rows[row] = row_sum[r] > 0.f ? (row_max[r] * scale_log2 + __log2f(row_sum[r])) * kLn2 : -INFINITY;
    }
}

/* Riders: a last query block of at most kRiderRows rows (CLIP's one row past 3 x 192) computed by the producer
 * warpgroup's three other warps (which would otherwise exit) from the K/V tiles that one full query block of the same
 * head streams through the ring anyway: no item of its own, no extra loads, and the consumers never wait for it. (As
 * an item of its own, a row cost about half of a full item, its consumers waiting on loads and on each other; riding,
 * H100 B16 H16 N577 D64 went from 72.4 to 65.8 us, B256 from 1102 to 946.) mma.sync, not wgmma, so that the loading
 * warp takes no part. Transposed, as the rows are few: per 16-key m tile, S^T = K Q^T (m16n8k16: keys along M, the
 * block's rows along N, Q^T as B operands staged once per item) and O^T += V^T P^T (head dims along M, V^T by
 * ldmatrix.trans, P^T shuffled from the accumulators into B operands). Rider warp w takes m tiles w, w + 3, ... of
 * each K/V tile with its own online softmax per column, so the warps never meet until the block's end, where the first
 * merges the others' O^T, maxima and sums and writes the rows. Each rider warp waits for every tile of the block's
 * items and releases it (the `empty` barriers count three more arrivals), multiplying only the tiles of the item it
 * rides on.
 * Accumulator element e of lane (g = lane / 4, t = lane % 4): row g + 8 (e / 2) of its m tile (a key, or a head dim),
 * column 2t + e % 2 (a row of the block). */
template <class Traits>
struct V4Rider {
    using Elem = typename Traits::Elem;
    static_assert(Traits::kHeadDim == 64 && Traits::kSwizzleBytes == 128, "one 128-byte atom per K/V row");
    static constexpr int kWarps = 3;
    static constexpr int kMTiles = Traits::kBlockN / 16;
    // The region: O^T of rider warps 1 and 2 ([16 floats][32 lanes]) and their column maxima and sums for the
    // merge, then each warp's Q^T B operands ([k step][lane] pairs; in shared memory, as the producer warpgroup's
    // 56 registers do not hold them next to the rest).
    static constexpr int kWarpFloats = 16 * 32 + 16;
    static constexpr int kQFragBytes = 4 * 32 * 8;
    static constexpr int kQFrag = (kWarps - 1) * kWarpFloats * 4;
    static_assert(Traits::kRiderBytes == kQFrag + kWarps * kQFragBytes, "the traits reserve the region");

    struct State {
        float o[4][4];  // O^T, m tile mo = head dims 16mo..16mo+15
        float max[2];   // columns 2t, 2t + 1: running max of the scaled scores (log2 units), same for every g
        float sum[2];   // this lane's part of the columns' sums
    };

    static __device__ __forceinline__ uint2 *q_frags(unsigned char *region, int warp) {
        return reinterpret_cast<uint2 *>(region + kQFrag + warp * kQFragBytes);
    }

    /* Zeroed state, and the block's rows [row0, row0 + rows) of Q (q_rows: row0's) as the warp's B operands. */
    static __device__ __forceinline__ void begin(State &st, unsigned char *region, const Elem *q_rows,
                                                 long long q_seq_stride, int rows, int warp, int lane) {
        asm volatile("" : "+r"(lane));  // as in tile()
        const int g = lane / 4, t = lane % 4;
        const uint32_t *q = reinterpret_cast<const uint32_t *>(q_rows + (long long)g * q_seq_stride + 2 * t);
        uint2 *frags = q_frags(region, warp);
#pragma unroll
        for (int kk = 0; kk < 4; ++kk)
            frags[32 * kk + lane] = g < rows ? make_uint2(q[8 * kk], q[8 * kk + 4]) : make_uint2(0u, 0u);
        __syncwarp();
#pragma unroll
        for (int mo = 0; mo < 4; ++mo)
#pragma unroll
            for (int e = 0; e < 4; ++e) st.o[mo][e] = 0.f;
        st.max[0] = st.max[1] = -INFINITY;
        st.sum[0] = st.sum[1] = 0.f;
    }

    /* This warp's m tiles of one K/V tile (keys key0.. in the stages k_stage, v_stage). */
    static __device__ __forceinline__ void tile(State &st, unsigned char *region, const unsigned char *k_stage,
                                                const unsigned char *v_stage, int key0, int key_limit,
                                                float scale_log2, int warp, int lane) {
        // Opaque: the lane's shared-memory offsets are recomputed per tile, not hoisted out of the loops and kept
        // live (the producer warpgroup has 56 registers; ptxas spilled them).
        asm volatile("" : "+r"(lane));
        const int g = lane / 4, t = lane % 4;
#pragma unroll
        for (int j = 0; j < (kMTiles + kWarps - 1) / kWarps; ++j) {
            const int m = warp + kWarps * j;
            if (m >= kMTiles || key0 + 16 * m >= key_limit) break;  // warp-uniform: the rest is past the keys
            float s[4] = {0.f, 0.f, 0.f, 0.f};
            const int k_row = 16 * m + lane % 16;
#pragma unroll
            for (int kk = 0; kk < 4; ++kk) {
                uint32_t a[4];
                ldmatrix_x4(a, k_stage + swizzle<128>(k_row * 128 + 16 * (2 * kk + lane / 16)));
                const uint2 q = q_frags(region, warp)[32 * kk + lane];
                mma_m16n8k16<Elem>(s, a, q.x, q.y);
            }
            const int key = key0 + 16 * m + g;
            float x[4], tile_max[2], shift[2], alpha[2];
#pragma unroll
            for (int e = 0; e < 4; ++e) x[e] = key + 8 * (e / 2) < key_limit ? s[e] * scale_log2 : -INFINITY;
#pragma unroll
            for (int c = 0; c < 2; ++c) {
                tile_max[c] = fmaxf(x[c], x[c + 2]);
#pragma unroll
                for (int offset = 4; offset < 32; offset *= 2)
                    tile_max[c] = fmaxf(tile_max[c], __shfl_xor_sync(0xffffffffu, tile_max[c], offset));
                const float new_max = fmaxf(st.max[c], tile_max[c]);  // finite: key0 + 16m is a visible key
                shift[c] = new_max;
                alpha[c] = exp2_approx(st.max[c] - new_max);
                st.max[c] = new_max;
            }
            float prob[4];
#pragma unroll
            for (int e = 0; e < 4; ++e) prob[e] = exp2_approx(x[e] - shift[e % 2]);
#pragma unroll
            for (int c = 0; c < 2; ++c) st.sum[c] = st.sum[c] * alpha[c] + prob[c] + prob[c + 2];
#pragma unroll
            for (int mo = 0; mo < 4; ++mo)
#pragma unroll
                for (int e = 0; e < 4; ++e) st.o[mo][e] *= alpha[e % 2];
            // P^T as B operands: lane (g, t) takes keys 2t, 2t + 1 (b0) and 2t + 8, 2t + 9 (b1) of column g, held
            // as keys g', g' + 8 of columns 2t', 2t' + 1 by lane 4g' + t': keys 2t and 2t + 1 by lanes 8t + g / 2
            // and 8t + 4 + g / 2, in the low (g even) or high half of their pairs.
            const uint32_t near = pack2<Elem>(prob[0], prob[1]), far = pack2<Elem>(prob[2], prob[3]);
            const int src = 8 * t + g / 2;
            const uint32_t near_a = __shfl_sync(0xffffffffu, near, src);
            const uint32_t near_b = __shfl_sync(0xffffffffu, near, src + 4);
            const uint32_t far_a = __shfl_sync(0xffffffffu, far, src), far_b = __shfl_sync(0xffffffffu, far, src + 4);
            const uint32_t select = g % 2 == 0 ? 0x5410u : 0x7632u;
            const uint32_t b0 = __byte_perm(near_a, near_b, select), b1 = __byte_perm(far_a, far_b, select);
            const int v_row = 16 * m + lane % 8 + 8 * (lane / 16);
#pragma unroll
            for (int mo = 0; mo < 4; ++mo) {
                uint32_t a[4];
                ldmatrix_x4_trans(a, v_stage + swizzle<128>(v_row * 128 + 16 * (2 * mo + (lane / 8) % 2)));
                mma_m16n8k16<Elem>(st.o[mo], a, b0, b1);
            }
        }
    }

    /* The rider warps' results merged by the first, which writes rows [0, rows) of o_rows (and their lse where
     * lse_rows is given). All three warps call it. */
    static __device__ __forceinline__ void finish(State &st, unsigned char *region_bytes, Elem *o_rows,
                                                  long long o_seq_stride, float *lse_rows, int rows, int warp,
                                                  int lane) {
        constexpr float kLn2 = 0.6931471805599453f;
        float *region = reinterpret_cast<float *>(region_bytes);
        asm volatile("" : "+r"(lane));  // as in tile()
        const int g = lane / 4, t = lane % 4;
#pragma unroll
        for (int c = 0; c < 2; ++c)
#pragma unroll
            for (int offset = 4; offset < 32; offset *= 2) st.sum[c] += __shfl_xor_sync(0xffffffffu, st.sum[c], offset);
        if (warp > 0) {
            float *mine = region + (warp - 1) * kWarpFloats;
#pragma unroll
            for (int mo = 0; mo < 4; ++mo)
#pragma unroll
                for (int e = 0; e < 4; ++e) mine[(4 * mo + e) * 32 + lane] = st.o[mo][e];
            if (g == 0) {
#pragma unroll
                for (int c = 0; c < 2; ++c) {
                    mine[512 + 2 * t + c] = st.max[c];
                    mine[520 + 2 * t + c] = st.sum[c];
                }
            }
        }
        named_barrier_sync(Traits::kRiderBarrier, 32 * kWarps);
        if (warp == 0) {
            float factor[kWarps][2], sum[2];
#pragma unroll
            for (int c = 0; c < 2; ++c) {
                float max = st.max[c];
#pragma unroll
                for (int w = 1; w < kWarps; ++w) max = fmaxf(max, region[(w - 1) * kWarpFloats + 512 + 2 * t + c]);
                // A warp that saw no key (max -inf) contributes nothing.
                factor[0][c] = st.max[c] == -INFINITY ? 0.f : exp2_approx(st.max[c] - max);
                sum[c] = factor[0][c] * st.sum[c];
#pragma unroll
                for (int w = 1; w < kWarps; ++w) {
                    const float their_max = region[(w - 1) * kWarpFloats + 512 + 2 * t + c];
                    factor[w][c] = their_max == -INFINITY ? 0.f : exp2_approx(their_max - max);
                    sum[c] += factor[w][c] * region[(w - 1) * kWarpFloats + 520 + 2 * t + c];
                }
                if (lse_rows != nullptr && g == 0 && 2 * t + c < rows)
                    lse_rows[2 * t + c] = sum[c] > 0.f ? (max + __log2f(sum[c])) * kLn2 : -INFINITY;
            }
            // In place, one warp's O^T at a time (registers).
#pragma unroll
            for (int c = 0; c < 2; ++c) factor[0][c] *= sum[c] > 0.f ? __fdividef(1.f, sum[c]) : 0.f;
#pragma unroll
            for (int mo = 0; mo < 4; ++mo)
#pragma unroll
                for (int e = 0; e < 4; ++e) st.o[mo][e] *= factor[0][e % 2];
#pragma unroll
            for (int w = 1; w < kWarps; ++w) {
#pragma unroll
                for (int c = 0; c < 2; ++c) factor[w][c] *= sum[c] > 0.f ? __fdividef(1.f, sum[c]) : 0.f;
#pragma unroll
                for (int mo = 0; mo < 4; ++mo)
#pragma unroll
                    for (int e = 0; e < 4; ++e)
                        st.o[mo][e] += factor[w][e % 2] * region[(w - 1) * kWarpFloats + (4 * mo + e) * 32 + lane];
            }
            // Rows 2t and 2t + 1, head dims 16mo + g + 8 (e / 2).
#pragma unroll
            for (int c = 0; c < 2; ++c) {
                if (2 * t + c >= rows) continue;
                Elem *dst = o_rows + (long long)(2 * t + c) * o_seq_stride + g;
#pragma unroll
                for (int mo = 0; mo < 4; ++mo)
#pragma unroll
                    for (int e = c; e < 4; e += 2) dst[16 * mo + 8 * (e / 2)] = from_float<Elem>(st.o[mo][e]);
            }
        }
        // The region is free again once the first warp has read it.
        named_barrier_sync(Traits::kRiderBarrier, 32 * kWarps);
    }
};

/* One work item of the persistent grid: a query block of one head. */
struct V4Item {
    int m_block, h, b;
};

/* kTailN > 0: the last key tile holds at most kTailN keys (seq_k % kBlockN, rounded up to 16; the launcher picks it
 * only without causal masking or key_lens) and is multiplied that narrow. It is the item's last slot, run after the
 * loop (S and the previous P V, its softmax, then its own P V of kTailN / 16 k steps), so the loop body stays one
 * shape (taking it first, its P V full width in the loop, measured slower: H100, B16 N577 D64 73.9 against 72.5 us).
 * Persistent: block j takes work items j, j + gridDim.x, ...; the ring's slots run on from item to item, so the
 * producer loads the next item's K/V while the consumers finish this one, and each consumer loads its next Q rows
 * under this item's tiles. */
template <class Traits, int kTailN>
__global__ void __launch_bounds__(Traits::kThreads, Traits::kMinBlocks)
    attention_v4_kernel(const fc_attention_params p, const __grid_constant__ CUtensorMap k_map,
                        const __grid_constant__ CUtensorMap v_map, int split_last_block, int riders) {
#if defined(__CUDA_ARCH__) && !defined(__CUDA_ARCH_FEAT_SM90_ALL)
    // wgmma, TMA and setmaxnreg exist only in sm_90a code; the launcher refuses other devices.
    __trap();
#elif defined(__CUDA_ARCH__)
    constexpr float kLog2e = 1.4426950408889634f;
    using Elem = typename Traits::Elem;
    using Consumer = V4Consumer<Traits>;
    constexpr int kBlockM = Traits::kBlockM;
    constexpr int kBlockN = Traits::kBlockN;
    constexpr int kStages = Traits::kStages;
    constexpr int kConsumers = Traits::kConsumers;
    constexpr int kSw = Traits::kSwizzleBytes;
    constexpr int kQStride = Traits::kSmemRowStride;
    static_assert(kTailN % 16 == 0 && kTailN < kBlockN, "a narrow tile is whole k steps, narrower than a tile");

    extern __shared__ __align__(1024) unsigned char smem_raw[];
    unsigned char *smem = smem_raw + ((1024 - (smem_addr(smem_raw) & 1023)) & 1023);
    Elem *q_tile = reinterpret_cast<Elem *>(smem);
    unsigned char *ones = smem + Traits::kQTileBytes;
    unsigned char *k_tiles = ones + Traits::kOnesBytes;
    unsigned char *v_tiles = k_tiles + kStages * Traits::kKVTileBytes;
    float *partials = reinterpret_cast<float *>(v_tiles + kStages * Traits::kKVTileBytes);
    unsigned char *rider_region = reinterpret_cast<unsigned char *>(partials) + Traits::kPartialBytes;
    uint64_t *full = reinterpret_cast<uint64_t *>(rider_region + Traits::kRiderBytes);
    uint64_t *empty = full + kStages;

    const int tid = threadIdx.x;
    // Read through a shuffle so that ptxas knows it is warp-uniform: branches on it (and on what derives from it,
    // such as a consumer's ring slots) then keep the wgmma inside them asynchronous.
    const int warpgroup = __shfl_sync(0xffffffffu, tid / 128, 0);
    const int lane = tid % 32;

    const bool causal = p.causal != 0;
    // With riders (the launcher's v4_riders), the last query block of each head is no item of its own.
    const int items_per_head = (p.seq_q + kBlockM - 1) / kBlockM - (riders != 0 ? 1 : 0);
    const int n_items = items_per_head * p.heads_q * p.batch;
    // The item order. Blocks take items round-robin, so neighbouring items run at the same time: a head's query
    // blocks next to each other keep its K/V in L2 while they run (every head's block of one rank at once read
    // 132 heads' K/V per round and measured 16-28% slower at head dims 96-128). A last query block shorter than
    // the others (CLIP's 64k + 1 rows) costs less: every head's goes to the end, after the full blocks, so that
    // the light items spread over the blocks and fill the last round (head-major, the light last blocks of a
    // 2-block head landed on the same half of the blocks every round: +10% at N 257; each head's right after its
    // full blocks, in segments of a grid's worth of them: +3% at N 577). With causal masking: the costliest (last)
    // query blocks of every head first. Recomputed from the parameters per item rather than kept live across the
    // consumers' loop (registers).
    const auto item_at = [&](int i) {
        const int q_blocks = (p.seq_q + kBlockM - 1) / kBlockM, heads_batch = p.heads_q * p.batch;
        const int full_per_head = p.seq_q % kBlockM == 0 ? q_blocks : q_blocks - 1;
        const int n_full = full_per_head * heads_batch;
        int q_block, hb;
        if (causal) {
            q_block = q_blocks - 1 - i / heads_batch, hb = i % heads_batch;
        } else if (i < n_full) {
            q_block = i % full_per_head, hb = i / full_per_head;
        } else {
            q_block = q_blocks - 1, hb = i - n_full;
        }
        return V4Item{q_block * kBlockM, hb % p.heads_q, hb / p.heads_q};
    };
    // K/V tiles an item needs.
    const auto item_tiles = [&](const V4Item &it, int key_limit) {
        const int key_end = causal ? min(key_limit, min(it.m_block + kBlockM, p.seq_q)) : key_limit;
        return (key_end + kBlockN - 1) / kBlockN;
    };
    // A last query block of at most 64 rows (seq_q = 64k + 1 at CLIP's lengths) would leave all consumers but the
    // first idle for an item's time: there they all take those rows, split the key tiles and merge.
    const auto item_split = [&](const V4Item &it) {
        return Traits::kCanSplit && split_last_block != 0 && !causal && it.m_block + 64 >= p.seq_q;
    };

    if (tid < Traits::kOnesBytes / 16) {
        const uint32_t one = pack2<Elem>(1.f, 1.f);
        *reinterpret_cast<uint4 *>(ones + 16 * tid) = make_uint4(one, one, one, one);
        fence_proxy_async();  // read by the tensor cores
    }
    if (tid == 0) {
        for (int s = 0; s < kStages; ++s) {
            mbarrier_init(&full[s], 1);                 // the producer's one arrival (+ the TMA bytes)
            mbarrier_init(&empty[s], 4 * kConsumers + (riders != 0 ? 3 : 0));  // one per consumer (rider) warp
        }
        asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
    }
    __syncthreads();

    if (warpgroup == 0) {
        // ---------------------------------------------------------------- producer
        setmaxnreg_dec<Traits::kProducerRegs>();
        if (tid < 32) {
        int g = 0;  // ring slot, counted over the block's items
        for (int item = blockIdx.x; item < n_items; item += gridDim.x) {
            const V4Item it = item_at(item);
            const int hk = it.h / (p.heads_q / p.heads_kv);
            const int key_limit = batch_key_limit(p.key_lens, it.b, p.seq_k);
            const int n_tiles = item_tiles(it, key_limit);
            const Elem *k = static_cast<const Elem *>(p.k) + it.b * p.k_batch_stride + hk * p.k_head_stride;
            const Elem *v = static_cast<const Elem *>(p.v) + it.b * p.v_batch_stride + hk * p.v_head_stride;
            for (int t = 0; t < n_tiles; ++t, ++g) {
                const int stage = g % kStages;
                if (g >= kStages) mbarrier_wait(&empty[stage], (g / kStages - 1) & 1);
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
                        tma_load_4d(k_stage + a * kBlockN * kSw, &k_map, a * Traits::kAtomCols, key0, hk, it.b,
                                    &full[stage]);
                        tma_load_4d(v_stage + a * kBlockN * kSw, &v_map, a * Traits::kAtomCols, key0, hk, it.b,
                                    &full[stage]);
                    }
                }
            }
        }
        return;
        }
        if constexpr (Traits::kRiders) {
            if (riders != 0) {
                // ---------------------------------------------------------- riders (V4Rider)
                using Rider = V4Rider<Traits>;
                // Opaque copies: computed here, not kept live (or spilled) through the other warps' code.
                int rider_lane = tid % 32, rider_warp = tid / 32 - 1;
                asm volatile("" : "+r"(rider_lane), "+r"(rider_warp));
                rider_warp = __shfl_sync(0xffffffffu, rider_warp, 0);
                const float scale_log2 = p.softmax_scale * kLog2e;
                const int rows = p.seq_q - items_per_head * kBlockM;
                int g = 0;
                for (int item = blockIdx.x; item < n_items; item += gridDim.x) {
                    const V4Item it = item_at(item);
                    const int key_limit = batch_key_limit(p.key_lens, it.b, p.seq_k);
                    const int n_tiles = item_tiles(it, key_limit);
                    // The head's rows ride on one of its full blocks, a different one from head to head, so that
                    // the blocks that take every third item (132 SMs) do not all carry them.
                    const bool rides = it.m_block / kBlockM == (it.b * p.heads_q + it.h) % items_per_head;
                    typename Rider::State st;
                    if (rides) {
                        const Elem *q = static_cast<const Elem *>(p.q) + it.b * p.q_batch_stride +
                                        it.h * p.q_head_stride + (long long)items_per_head * kBlockM * p.q_seq_stride;
                        Rider::begin(st, rider_region, q, p.q_seq_stride, rows, rider_warp, rider_lane);
                    }
                    for (int t = 0; t < n_tiles; ++t, ++g) {
                        const int stage = g % kStages;
                        mbarrier_wait(&full[stage], (g / kStages) & 1);
                        if (rides)
                            Rider::tile(st, rider_region, k_tiles + stage * Traits::kKVTileBytes,
                                        v_tiles + stage * Traits::kKVTileBytes, t * kBlockN,
                                        key_limit, scale_log2, rider_warp, rider_lane);
                        __syncwarp();
                        if (rider_lane == 0) mbarrier_arrive(&empty[stage]);
                    }
                    if (rides) {
                        const long long row0 = (long long)items_per_head * kBlockM;
                        Elem *o = static_cast<Elem *>(p.o) + it.b * p.o_batch_stride + it.h * p.o_head_stride +
                                  row0 * p.o_seq_stride;
                        float *lse = p.lse == nullptr
                                         ? nullptr
                                         : p.lse + ((long long)it.b * p.heads_q + it.h) * p.seq_q + row0;
                        Rider::finish(st, rider_region, o, p.o_seq_stride, lse, rows, rider_warp, rider_lane);
                    }
                }
            }
        }
        return;
    }

    // -------------------------------------------------------------------- consumers
    setmaxnreg_inc<Traits::kConsumerRegs>();
    const int consumer = warpgroup - 1;
    const int ctid = tid - 128 * warpgroup;  // 0..127 within the group
    const int warp_in_group = ctid / 32;
    const int group = lane / 4, thread_in_group = lane % 4;
    const float scale_log2 = p.softmax_scale * kLog2e;
    Elem *my_q = q_tile + 64 * consumer * kQStride;
    // The first query row of this consumer's rows in an item (in a split item all consumers take the same rows).
    const auto group_row0_of = [&](const V4Item &it, bool split) { return split ? it.m_block : it.m_block + 64 * consumer; };
    const auto load_q = [&](int item) {
        const V4Item it = item_at(item);
        const Elem *q = static_cast<const Elem *>(p.q) + it.b * p.q_batch_stride + it.h * p.q_head_stride;
        load_q_rows<Traits>(my_q, q, p.q_seq_stride, group_row0_of(it, item_split(it)), p.seq_q, ctid);
        cp_async_commit();
    };

    const uint64_t k_desc0 = Consumer::k_desc(smem_addr(k_tiles));
    const uint64_t v_desc0 = Consumer::v_desc(smem_addr(v_tiles));
    const uint64_t ones_desc = Consumer::ones_desc(smem_addr(ones));
    const auto k_base = [&](RingSlot r) { return desc_advance(k_desc0, r.stage * Traits::kKVTileBytes); };
    const auto v_base = [&](RingSlot r) { return desc_advance(v_desc0, r.stage * Traits::kKVTileBytes); };
    const auto wait_full = [&](RingSlot r) { mbarrier_wait(&full[r.stage], r.pass & 1); };

    // Turns (ping-pong): consumer c waits on its barrier until c - 1 passed it the turn, issues, and passes the
    // turn on to c + 1. Every consumer takes n_tiles turns per item (a consumer passes the turn for a tile it does
    // not multiply), so the ring stays in step; split items take none. The last consumer gives the first its first
    // turn, and the first takes the last consumer's final pass before leaving, so every barrier phase completes.
    const auto take_turn = [&] { named_barrier_sync(Traits::kTurnBarrier + consumer, 256); };
    const auto pass_turn = [&] { named_barrier_arrive(Traits::kTurnBarrier + (consumer + 1) % kConsumers, 256); };
    if (Traits::kPingPong && consumer == kConsumers - 1) pass_turn();

    int g0 = 0;  // the current item's first ring slot
    if (blockIdx.x < n_items) load_q(blockIdx.x);
    for (int item = blockIdx.x; item < n_items; item += gridDim.x) {
        const V4Item it = item_at(item);
        const int key_limit = batch_key_limit(p.key_lens, it.b, p.seq_k);
        const int n_tiles = item_tiles(it, key_limit);
        const bool split = item_split(it);
        const bool turns = Traits::kPingPong && !split;
        // In a split item each consumer owns kStages / kConsumers (>= 2) neighbouring stages of the ring and
        // multiplies the item's slots that land there: the mbarrier phases of a stage are then waited for by one
        // consumer, in order (a parity wait cannot tell a phase from the one two later), and a consumer's two
        // slots in flight (S of one, P V of the one before) are in different stages, so the producer never waits
        // on a release that waits on it.
        const int round = split ? kStages / kConsumers : kStages;  // own stages
        const int first_stage = split ? consumer * round : 0;
        const auto next_slot = [&](RingSlot r) {
            return ++r.stage == first_stage + round ? RingSlot{first_stage, r.pass + 1} : r;
        };
        const int group_row0 = group_row0_of(it, split);
        const int warp_row0 = group_row0 + 16 * warp_in_group;
        const int group_key_end =
            group_row0 >= p.seq_q ? 0 : causal ? min(key_limit, min(group_row0 + 64, p.seq_q)) : key_limit;
        const int group_tiles = (group_key_end + kBlockN - 1) / kBlockN;  // the tiles this group's rows see
        // Own slots before slot x of the ring (split items).
        const auto owned_before = [&](int x) {
            return x / kStages * round + min(max(x % kStages - first_stage, 0), round);
        };
        const int my_slots = split ? owned_before(g0 + n_tiles) - owned_before(g0) : group_tiles;
        RingSlot i{g0 % kStages, g0 / kStages};  // this consumer's first slot of the item
        if (split && i.stage < first_stage) i.stage = first_stage;
        if (split && i.stage >= first_stage + round) i = RingSlot{first_stage, i.pass + 1};
        // The narrow tile's slot: the item's last; whether this consumer has it.
        const int tail_slot = g0 + n_tiles - 1;
        const bool holds_tail =
            kTailN > 0 && my_slots > 0 && (split ? (tail_slot % kStages) / round == consumer : my_slots == n_tiles);
        const int warp_unmasked_end = causal ? min(key_limit, warp_row0 + 1) : key_limit;
        int my_key_limit[2];
#pragma unroll
        for (int r = 0; r < 2; ++r) my_key_limit[r] = row_key_limit(key_limit, warp_row0 + group + 8 * r, causal);

        // Q rows: landed (every thread's part), into registers, then the shared rows take the next item's.
        uint32_t q_frag[Traits::kQKSteps][4];
        cp_async_wait<0>();
        named_barrier_sync(Traits::kQRowsBarrier + consumer, 128);
        const Elem *q_warp = my_q + (16 * warp_in_group + lane % 16) * kQStride + 8 * (lane / 16);
#pragma unroll
        for (int kk = 0; kk < Traits::kQKSteps; ++kk) ldmatrix_x4(q_frag[kk], q_warp + 16 * kk);
        named_barrier_sync(Traits::kQRowsBarrier + consumer, 128);
        if (item + gridDim.x < n_items) load_q(item + gridDim.x);

        float o_acc[Traits::kORegs];
#pragma unroll
        for (int r = 0; r < Traits::kORegs; ++r) o_acc[r] = 0.f;
        float row_sums[4] = {0.f, 0.f, 0.f, 0.f};  // P x ones: rows g (elements 0, 1) and g + 8 (2, 3)
        float row_max[2] = {-INFINITY, -INFINITY};

        if (my_slots > 0) {
            float s[Traits::kSRegs];
            uint32_t p_frag[Traits::kPVSteps][4];
            float alpha[2];
            // The softmax of the full tile in ring slot r (scores in s), masked where the tile crosses a row's
            // limit.
            auto softmax = [&](RingSlot r) {
                const int key0 = (r.pass * kStages + r.stage - g0) * kBlockN;
                if (key0 + kBlockN > warp_unmasked_end)
                    softmax_scores<Traits::kSTiles, true>(s, row_max, alpha, my_key_limit, key0, thread_in_group,
                                                          scale_log2);
                else
                    softmax_scores<Traits::kSTiles, false>(s, row_max, alpha, my_key_limit, key0, thread_in_group,
                                                           scale_log2);
            };
            // In a split item each tile has one consumer, which releases it for all of them.
            const auto release = [&](RingSlot r) {
                __syncwarp();
                if (lane == 0) mbarrier_arrive(&empty[r.stage], split ? kConsumers : 1);
            };
            // First slot: S, softmax, P.
            wait_full(i);
            // The narrow tile is this consumer's last slot, run after the loop, both its products narrow.
            const int loop_slots = holds_tail ? my_slots - 1 : my_slots;
            bool first_done = false;
            if constexpr (kTailN > 0) {
                if (loop_slots == 0) {  // the narrow tile is the only slot
                    float s_tail[kTailN / 2];
                    if (turns) take_turn();
                    wgmma_fence();
                    Consumer::template issue_qk<kTailN>(s_tail, q_frag, k_base(i));
                    wgmma_commit();
                    if (turns) pass_turn();
                    wgmma_wait<0>();
                    fence_operand(s_tail);
                    softmax_scores<kTailN / 8, true>(s_tail, row_max, alpha, my_key_limit, (n_tiles - 1) * kBlockN,
                                                     thread_in_group, scale_log2);
                    Consumer::template rescale_and_pack<kTailN / 8>(s_tail, o_acc, row_sums, p_frag, alpha);
                    // The k steps past the narrow tile as zero probabilities. The narrow P V below reads only the
                    // first kTailN / 16, but the fences pin every P register: kept as the kernel was measured.
#pragma unroll
                    for (int kk = kTailN / 16; kk < Traits::kPVSteps; ++kk)
                        p_frag[kk][0] = p_frag[kk][1] = p_frag[kk][2] = p_frag[kk][3] = 0u;
                    first_done = true;
                }
            }
            if (!first_done) {
                if (turns) take_turn();
                wgmma_fence();
                Consumer::template issue_qk<kBlockN>(s, q_frag, k_base(i));
                wgmma_commit();
                if (turns) pass_turn();
                wgmma_wait<0>();
                fence_operand(s);
                softmax(i);
                Consumer::template rescale_and_pack<Traits::kSTiles>(s, o_acc, row_sums, p_frag, alpha);
            }

            // A later slot of kN keys (scores: float[kN / 2]): S_i and P_prev V_prev in flight together, the softmax
            // of slot i (run_softmax) under P V.
            const auto later_slot = [&](auto &scores, auto run_softmax) {
                constexpr int kN = 2 * std::extent<std::remove_reference_t<decltype(scores)>>::value;
                const RingSlot prev = i;
                i = next_slot(i);
                wait_full(i);
                fence_operand(o_acc);
                fence_operand(row_sums);
                fence_operand(p_frag);
                if (turns) take_turn();
                wgmma_fence();
                Consumer::template issue_qk<kN>(scores, q_frag, k_base(i));
                wgmma_commit();
                Consumer::issue_pv(o_acc, row_sums, p_frag, v_base(prev), ones_desc);
                wgmma_commit();
                if (turns) pass_turn();
                wgmma_wait<1>();
                fence_operand(scores);
                run_softmax();
                wgmma_wait<0>();
                fence_operand(o_acc);
                fence_operand(row_sums);
                fence_operand(p_frag);
                release(prev);
                Consumer::template rescale_and_pack<kN / 8>(scores, o_acc, row_sums, p_frag, alpha);
            };
            for (int j = 1; j < loop_slots; ++j) later_slot(s, [&] { softmax(i); });

            bool last_narrow = holds_tail && loop_slots == 0;  // the only slot was the narrow one
            if constexpr (kTailN > 0) {
                if (holds_tail && loop_slots > 0) {
                    // The narrow tile after the loop: its S (kTailN keys) with the previous P V, then its softmax.
                    float s_tail[kTailN / 2];
                    later_slot(s_tail, [&] {
                        softmax_scores<kTailN / 8, true>(s_tail, row_max, alpha, my_key_limit, (n_tiles - 1) * kBlockN,
                                                         thread_in_group, scale_log2);
                    });
                    last_narrow = true;
                }
            }

            // The last P V (only the narrow tile's k steps where that is the last slot).
            fence_operand(o_acc);
            fence_operand(row_sums);
            fence_operand(p_frag);
            if (kTailN > 0 && last_narrow) {
                wgmma_fence();
                Consumer::template issue_pv<(kTailN + 15) / 16>(o_acc, row_sums, p_frag, v_base(i), ones_desc);
                wgmma_commit();
                wgmma_wait<0>();
            } else {
                wgmma_fence();
                Consumer::issue_pv(o_acc, row_sums, p_frag, v_base(i), ones_desc);
                wgmma_commit();
                wgmma_wait<0>();
            }
            fence_operand(o_acc);
            fence_operand(row_sums);
            release(i);
        }
        float row_sum[2] = {row_sums[0], row_sums[2]};
        if (split) {
            // The other consumers' partial results to the first, which merges them (per thread: same rows and
            // columns in every group); the second barrier keeps the next split item's partials from landing
            // before the first has read these.
            constexpr int kFloats = V4Partial<Traits>::kFloats;
            if (consumer > 0) {
                float *mine = partials + (consumer - 1) * kFloats * 128 + ctid;
#pragma unroll
                for (int r = 0; r < Traits::kORegs; ++r) mine[r * 128] = o_acc[r];
#pragma unroll
                for (int r = 0; r < 2; ++r) {
                    mine[(Traits::kORegs + r) * 128] = row_max[r];
                    mine[(Traits::kORegs + 2 + r) * 128] = row_sum[r];
                }
            }
            named_barrier_sync(Traits::kMergeBarrier, 128 * kConsumers);
            if (consumer == 0) {
#pragma unroll
                for (int c = 1; c < kConsumers; ++c)
                    merge_partial<Traits>(o_acc, row_max, row_sum, partials + (c - 1) * kFloats * 128 + ctid,
                                          scale_log2);
            }
            named_barrier_sync(Traits::kMergeBarrier, 128 * kConsumers);
        } else {
            // Tiles this group does not need (causal, or no rows): wait for each, so the release lands in that
            // tile's phase; pass its turn.
            for (int t = group_tiles; t < n_tiles; ++t) {
                if (turns) {
                    take_turn();
                    pass_turn();
                }
                mbarrier_wait(&full[(g0 + t) % kStages], ((g0 + t) / kStages) & 1);
                if (lane == 0) mbarrier_arrive(&empty[(g0 + t) % kStages]);
            }
        }
        g0 += n_tiles;
        if (group_row0 >= p.seq_q || (split && consumer > 0)) continue;
        Elem *o = static_cast<Elem *>(p.o) + it.b * p.o_batch_stride + it.h * p.o_head_stride;
        store_rows<Traits>(o_acc, row_sum, row_max, scale_log2, o, p.o_seq_stride,
                           p.lse == nullptr ? nullptr : p.lse + ((long long)it.b * p.heads_q + it.h) * p.seq_q,
                           warp_row0, p.seq_q, lane);
    }
    if (Traits::kPingPong && consumer == 0) take_turn();
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

/* The SM count of the current device, asked once per device (every launch needs it). */
int current_sm_count() {
    constexpr int kDevices = 64;
    static std::atomic<int> counts[kDevices] = {};  // 0: not asked yet
    int device = 0;
    if (cudaGetDevice(&device) != cudaSuccess) return 0;
    const bool cached = device >= 0 && device < kDevices;
    if (cached && counts[device].load(std::memory_order_relaxed) > 0) return counts[device].load(std::memory_order_relaxed);
    int sms = 0;
    if (cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device) != cudaSuccess) return 0;
    if (cached) counts[device].store(sms, std::memory_order_relaxed);
    return sms;
}

/* Whether the last query block of each head rides on a full one (V4Rider): a block of at most kRiderRows rows
 * after one or more full ones, without causal masking (whose item order and key limits per row it does not
 * follow). */
template <class Traits>
bool v4_riders(const fc_attention_params &p) {
    const int last_rows = p.seq_q % Traits::kBlockM;
    return Traits::kRiders && p.causal == 0 && p.seq_q > Traits::kBlockM && last_rows > 0 &&
           last_rows <= Traits::kRiderRows;
}

template <class Traits, int kTailN>
int launch_v4_kernel(const fc_attention_params &p, cudaStream_t stream) {
    CUtensorMap k_map, v_map;
    cudaError_t err = kv_tensor_maps<Traits>(p, &k_map, &v_map);
    if (err != cudaSuccess) return (int)err;
    const auto kernel = attention_v4_kernel<Traits, kTailN>;
    err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)Traits::kSmemBytes);
    if (err != cudaSuccess) return (int)err;
    // Persistent: as many blocks as fit at once (one wave), each looping over its work items.
    const bool riders = v4_riders<Traits>(p);
    const long long items = (long long)((p.seq_q + Traits::kBlockM - 1) / Traits::kBlockM - (riders ? 1 : 0)) *
                            p.heads_q * p.batch;
    const int sms = current_sm_count();
    if (sms <= 0) return (int)cudaErrorInvalidDevice;
    if (items > INT_MAX) return (int)cudaErrorInvalidValue;
    const int grid = (int)std::min<long long>(items, (long long)sms * Traits::kMinBlocks);
    // split_last_block is always 1 since the plain pipeline left; the kernel keeps the flag so that its code stays
    // as measured.
    kernel<<<grid, Traits::kThreads, Traits::kSmemBytes, stream>>>(p, k_map, v_map, 1, riders ? 1 : 0);
    return (int)cudaGetLastError();
}

/* The shape decides two things per launch: a narrow last key tile (16 or 80 keys wide, where the keys left past
 * the full tiles fit: CLIP's lengths are 64k + 1) and a key split among the consumers of a last query block of at
 * most 64 rows. */
template <class Traits>
int launch_v4(const fc_attention_params &p, cudaStream_t stream) {
    // One consumer (two blocks per SM, 128 registers a thread at launch) has no room for the narrow tile's scores.
    if constexpr (Traits::kConsumers > 1) {
        const int left = p.seq_k % Traits::kBlockN;
        const bool narrow = p.causal == 0 && p.key_lens == nullptr;
        if (narrow && left > 0 && left <= 16) return launch_v4_kernel<Traits, 16>(p, stream);
        if constexpr (Traits::kBlockN > 80) {
            if (narrow && left > 64 && left <= 80) return launch_v4_kernel<Traits, 80>(p, stream);
        }
    }
    return launch_v4_kernel<Traits, 0>(p, stream);
}

/* Three consumers (Wide) when their blocks fill more than one wave of SMs without causal masking, else Small. */
template <class Wide, class Small>
int launch_v4_by_grid(const fc_attention_params &p, cudaStream_t stream) {
    const long long blocks = (long long)((p.seq_q + Wide::kBlockM - 1) / Wide::kBlockM) * p.heads_q * p.batch;
    if (p.causal == 0 && blocks > current_sm_count()) return launch_v4<Wide>(p, stream);
    return launch_v4<Small>(p, stream);
}

/* Head dim 64 without causal masking takes three consumers of 96-key tiles, in ping-pong turns, when the 192-row
 * blocks fill more than one wave of SMs (batch 16, H100, fp16, same run: N 577 72.5 us against 74.9 without turns
 * and 86.5 for two consumers of 64-key tiles; N 257 24.9 against 29.2), head dim 80 three of 64-key tiles (N 257:
 * 33.9 against 41.1; 34.2 with turns; 96-key tiles do not fit six stages in shared memory), two consumers of 64-key
 * tiles otherwise (batch 1, where one block's latency is the time): the tile sweep of benches/attention.rs. */
template <typename Elem, int kHeadDim>
int launch_v4_for_head_dim(const fc_attention_params &p, cudaStream_t stream) {
    using Config = typename FlashV4Config<Elem, kHeadDim>::Traits;
    if constexpr (kHeadDim == 64)
        return launch_v4_by_grid<FlashV4Traits<Elem, 64, 96, 6, 3, true>, Config>(p, stream);
    else if constexpr (kHeadDim == 80)
        return launch_v4_by_grid<FlashV4Traits<Elem, 80, 64, 6, 3>, Config>(p, stream);
    else
        return launch_v4<Config>(p, stream);
}

/* The one place where runtime shape/dtype choices become v4 template instantiations. */
template <typename Elem>
int dispatch_v4(const fc_attention_params &p, cudaStream_t stream) {
    switch (p.head_dim) {
#define FC_CASE(D) \
    case D: return launch_v4_for_head_dim<Elem, D>(p, stream);
        FC_FLASH_HEAD_DIMS(FC_CASE)
#undef FC_CASE
        default: return (int)cudaErrorInvalidValue;
    }
}

#ifdef FLASHCLIP_TUNING
/* The tile shapes of the sweep entry (FC_V4_TILES_*); two stages where two blocks share an SM. Three consumers
 * and two blocks per SM spill at head dim 80. */
template <typename Elem, int kHeadDim>
int launch_v4_tiles(const fc_attention_params &p, fc_v4_tiles tiles, cudaStream_t stream) {
    switch (tiles) {
        case FC_V4_TILES_WG2_N128: return launch_v4<FlashV4Traits<Elem, kHeadDim, 128, 4, 2>>(p, stream);
        case FC_V4_TILES_WG2_N64: return launch_v4<FlashV4Traits<Elem, kHeadDim, 64, 4, 2>>(p, stream);
        case FC_V4_TILES_WG3_N64: return launch_v4<FlashV4Traits<Elem, kHeadDim, 64, 6, 3>>(p, stream);
        case FC_V4_TILES_WG2_N64_PINGPONG: return launch_v4<FlashV4Traits<Elem, kHeadDim, 64, 4, 2, true>>(p, stream);
        case FC_V4_TILES_WG3_N64_PINGPONG: return launch_v4<FlashV4Traits<Elem, kHeadDim, 64, 6, 3, true>>(p, stream);
        default: break;
    }
    if constexpr (kHeadDim == 64) {
        switch (tiles) {
            case FC_V4_TILES_WG3_N96: return launch_v4<FlashV4Traits<Elem, kHeadDim, 96, 6, 3>>(p, stream);
            case FC_V4_TILES_WG3_N96_PINGPONG:
                return launch_v4<FlashV4Traits<Elem, kHeadDim, 96, 6, 3, true>>(p, stream);
            case FC_V4_TILES_WG1_N128: return launch_v4<FlashV4Traits<Elem, kHeadDim, 128, 2, 1>>(p, stream);
            default: break;
        }
    }
    return (int)cudaErrorInvalidValue;
}

template <typename Elem>
int dispatch_v4_tiles(const fc_attention_params &p, fc_v4_tiles tiles, cudaStream_t stream) {
    switch (p.head_dim) {
        case 64: return launch_v4_tiles<Elem, 64>(p, tiles, stream);
        case 80: return launch_v4_tiles<Elem, 80>(p, tiles, stream);
        default: return (int)cudaErrorInvalidValue;
    }
}
#endif

}  // namespace
}  // namespace flashclip::attention

#ifdef FLASHCLIP_TUNING
extern "C" int fc_attention_v4_tiles(const fc_attention_params *p, fc_dtype dtype, fc_v4_tiles tiles,
                                     cudaStream_t stream) {
    using namespace flashclip::attention;
    switch (dtype) {
        case FC_F16: return dispatch_v4_tiles<__half>(*p, tiles, stream);
        case FC_BF16: return dispatch_v4_tiles<__nv_bfloat16>(*p, tiles, stream);
        default: return (int)cudaErrorInvalidValue;
    }
}
#endif

extern "C" int fc_attention_v4(const fc_attention_params *p, fc_dtype dtype, cudaStream_t stream) {
    using namespace flashclip::attention;
    switch (dtype) {
        case FC_F16: return dispatch_v4<__half>(*p, stream);
        case FC_BF16: return dispatch_v4<__nv_bfloat16>(*p, stream);
        default: return (int)cudaErrorInvalidValue;
    }
}
