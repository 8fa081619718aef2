/* Tile shapes of fc_attention_v2 (mma.sync, sm_80+). */
#ifndef FLASHCLIP_ATTENTION_V2_TRAITS_CUH
#define FLASHCLIP_ATTENTION_V2_TRAITS_CUH

#include <stddef.h>

#include "attention_head_dims.cuh"

namespace flashclip::attention {

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
    static_assert(supports_head_dim(kHeadDim_), "unsupported head dim");

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
 *  - 72 (SigLIP so400m): computed as 80 (padded), so it takes 80's shape; not measured on its own yet.
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
struct FlashV2Config<Elem, 72> {
    // SigLIP so400m: padded to 80 for the mma k steps, so 80's shape fits (240 registers at sm_90a, 241 at sm_80,
    // 0 spills; 80: 240).
    using Traits = FlashV2Traits<Elem, 72, 2, 2, 32>;
    using ShortSeqTraits = Traits;
    static constexpr int kShortSeqMax = 0;
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

}  // namespace flashclip::attention

#endif
