/* fc_attention_v4's epilogue: a split item's merge of the consumers' partial results through shared memory, and
 * each consumer warp's rows (O / row sum, and the log-sum-exp) stored straight from its accumulators. */
#ifndef FLASHCLIP_ATTENTION_V4_EPILOGUE_CUH
#define FLASHCLIP_ATTENTION_V4_EPILOGUE_CUH

#include <cuda_runtime.h>
#include <stdint.h>

#include "../dtype.cuh"
#include "../ptx.cuh"
#include "../warp_specialization.cuh"
#include "traits.cuh"

namespace flashclip::attention {

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

/* A split item's partial results: the other consumers' to the first, which merges them (per thread: same rows and
 * columns in every group); the second barrier keeps the next split item's partials from landing before the first
 * has read these. */
template <class Traits>
__device__ __forceinline__ void merge_split(float (&o_acc)[Traits::kORegs], float (&row_max)[2], float (&row_sum)[2],
                                            float *partials, int consumer, int ctid, float scale_log2) {
    constexpr int kConsumers = Traits::kConsumers;
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
            merge_partial<Traits>(o_acc, row_max, row_sum, partials + (c - 1) * kFloats * 128 + ctid, scale_log2);
    }
    named_barrier_sync(Traits::kMergeBarrier, 128 * kConsumers);
}

}  // namespace flashclip::attention

#endif
