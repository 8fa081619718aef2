/* fc_attention_v4's producer: one warp that only loads K/V tiles into the ring. Per tile, one thread announces the
 * bytes on the stage's `full` mbarrier and issues TMA boxes (the tensor maps are built on the host from the strides,
 * so the packed QKV layout is read in place; rows past seq_k and head-dim padding columns arrive as zeros); a tile
 * cut short by key_lens comes through cp.async instead (load_kv_rows_zero_filled), its rows past the limit
 * zero-filled: TMA would bring the real rows there, and 0 * NaN in P V must not happen. A stage is refilled after
 * every consumer (and rider) warp released it on `empty`.
 * The producer's loop itself is in attention_v4_kernel: moved into a function, its shared-memory address arithmetic
 * compiled to other instructions than the code that was measured. */
#ifndef FLASHCLIP_ATTENTION_V4_PRODUCER_CUH
#define FLASHCLIP_ATTENTION_V4_PRODUCER_CUH

#include <cuda_runtime.h>
#include <stdint.h>

#include "../ptx.cuh"
#include "../wgmma.cuh"

namespace flashclip::attention {

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

}  // namespace flashclip::attention

#endif
