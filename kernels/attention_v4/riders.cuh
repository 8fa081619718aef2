/* fc_attention_v4's riders (V4Rider): CLIP's last query block of at most 8 rows, computed by the producer
 * warpgroup's idle warps from the K/V tiles a full block of the same head streams through the ring. */
#ifndef FLASHCLIP_ATTENTION_V4_RIDERS_CUH
#define FLASHCLIP_ATTENTION_V4_RIDERS_CUH

#include <cuda_runtime.h>
#include <stdint.h>

#include "flashclip.h"
#include "../attention_mask.cuh"
#include "../dtype.cuh"
#include "../ptx.cuh"
#include "../warp_specialization.cuh"
#include "../wgmma.cuh"
#include "scheduler.cuh"
#include "traits.cuh"

namespace flashclip::attention {

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

    /* The rider warps' loop over the block's items (tid: the thread's index in the block; warps 1-3 ride). st is
     * the caller's: declared in here, it compiles to another register order than the code that was measured. */
    static __device__ __forceinline__ void run(State &st, const fc_attention_params &p,
                                               const V4Scheduler<Traits> &sched, unsigned char *region,
                                               const unsigned char *k_tiles, const unsigned char *v_tiles,
                                               uint64_t *full, uint64_t *empty, int tid) {
        constexpr float kLog2e = 1.4426950408889634f;
        constexpr int kBlockM = Traits::kBlockM;
        constexpr int kBlockN = Traits::kBlockN;
        constexpr int kStages = Traits::kStages;
        // Opaque copies: computed here, not kept live (or spilled) through the other warps' code.
        int rider_lane = tid % 32, rider_warp = tid / 32 - 1;
        asm volatile("" : "+r"(rider_lane), "+r"(rider_warp));
        rider_warp = __shfl_sync(0xffffffffu, rider_warp, 0);
        const float scale_log2 = p.softmax_scale * kLog2e;
        const int rows = p.seq_q - sched.items_per_head * kBlockM;
        int g = 0;
        for (int item = blockIdx.x; item < sched.n_items; item += gridDim.x) {
            const V4Item it = sched.item_at(item);
            const int key_limit = batch_key_limit(p.key_lens, it.b, p.seq_k);
            const int n_tiles = sched.item_tiles(it, key_limit);
            // The head's rows ride on one of its full blocks, a different one from head to head, so that the blocks
            // that take every third item (132 SMs) do not all carry them.
            const bool rides = it.m_block / kBlockM == (it.b * p.heads_q + it.h) % sched.items_per_head;
            if (rides) {
                const Elem *q = static_cast<const Elem *>(p.q) + it.b * p.q_batch_stride + it.h * p.q_head_stride +
                                (long long)sched.items_per_head * kBlockM * p.q_seq_stride;
                begin(st, region, q, p.q_seq_stride, rows, rider_warp, rider_lane);
            }
            for (int t = 0; t < n_tiles; ++t, ++g) {
                const int stage = g % kStages;
                mbarrier_wait(&full[stage], (g / kStages) & 1);
                if (rides)
                    tile(st, region, k_tiles + stage * Traits::kKVTileBytes,
                         v_tiles + stage * Traits::kKVTileBytes, t * kBlockN, key_limit, scale_log2, rider_warp,
                         rider_lane);
                __syncwarp();
                if (rider_lane == 0) mbarrier_arrive(&empty[stage]);
            }
            if (rides) {
                const long long row0 = (long long)sched.items_per_head * kBlockM;
                Elem *o = static_cast<Elem *>(p.o) + it.b * p.o_batch_stride + it.h * p.o_head_stride +
                          row0 * p.o_seq_stride;
                float *lse =
                    p.lse == nullptr ? nullptr : p.lse + ((long long)it.b * p.heads_q + it.h) * p.seq_q + row0;
                finish(st, region, o, p.o_seq_stride, lse, rows, rider_warp, rider_lane);
            }
        }
    }
};

}  // namespace flashclip::attention

#endif
