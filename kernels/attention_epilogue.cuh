/* The output of a wgmma attention kernel's warp (v3): normalized O rows and the row log-sum-exp. */
#ifndef FLASHCLIP_ATTENTION_EPILOGUE_CUH
#define FLASHCLIP_ATTENTION_EPILOGUE_CUH

#include <cuda_runtime.h>
#include <stdint.h>

#include "dtype.cuh"

namespace flashclip::attention {

/* The epilogue of one warp of a wgmma kernel (v3), whose 16 query rows from warp_row0 hold O in accumulator layout:
 * finishes the row sums over each row's 4 lanes (kLaneSums: each lane holds its columns' part), normalizes, stages
 * the rows in o_stage (16 rows of kRowStride elements of shared memory that only this warp uses), writes the rows
 * below seq_q as 16-byte chunks, and the row log-sum-exp where lse_rows (the head's [seq_q] row) is given.
 * Intrinsics, not IEEE division / log2f: their slow paths are calls, and any call in the kernel makes ptxas
 * serialize every wgmma. Both are within 2 ulp here (row_sum >= 1 whenever it is positive). */
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
            pack2<Elem>(o_acc[4 * nt] * inv_sum[0], o_acc[4 * nt + 1] * inv_sum[0]);
        *reinterpret_cast<uint32_t *>(dst + 8 * kRowStride) =
            pack2<Elem>(o_acc[4 * nt + 2] * inv_sum[1], o_acc[4 * nt + 3] * inv_sum[1]);
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

}  // namespace flashclip::attention

#endif
