/* Tile geometry shared by the Hopper attention kernels (v3, v4). */
#ifndef FLASHCLIP_ATTENTION_WGMMA_SHAPE_CUH
#define FLASHCLIP_ATTENTION_WGMMA_SHAPE_CUH

#include "attention_head_dims.cuh"

namespace flashclip::attention {

/* What the Hopper kernels share about their tiles: the head dim padded to whole MMA k steps (or further: v4 pads
 * 104 and 112 to 128), the swizzled K/V layout (the widest swizzle that divides the padded head dim: 128 B for 64
 * and 128, 64 B for 96, 32 B for 80 and 112; column block j holds head-dim columns [j*W, (j+1)*W), W = kAtomCols,
 * of all rows), Q's padded row layout, and the per-thread fragment counts of S = Q K^T (64 x kBlockN) and
 * O = P V (64 x head dim). */
template <typename Elem_, int kHeadDim_, int kBlockN_, int kHeadDimPadded_ = (kHeadDim_ + 15) / 16 * 16>
struct WgmmaTileShape {
    using Elem = Elem_;
    static_assert(sizeof(Elem) == 2, "tensor-core path is f16/bf16 only");
    static_assert(supports_head_dim(kHeadDim_), "unsupported head dim");
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

}  // namespace flashclip::attention

#endif
