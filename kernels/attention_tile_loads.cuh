/* Global -> shared tile copies of the cp.async attention kernels (v2, v3). */
#ifndef FLASHCLIP_ATTENTION_TILE_LOADS_CUH
#define FLASHCLIP_ATTENTION_TILE_LOADS_CUH

#include <cuda_runtime.h>
#include <stdint.h>

#include "ptx.cuh"

namespace flashclip::attention {

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

}  // namespace flashclip::attention

#endif
