/* Tile shapes of fc_attention_v3 (wgmma, sm_90a). */
#ifndef FLASHCLIP_ATTENTION_V3_TRAITS_CUH
#define FLASHCLIP_ATTENTION_V3_TRAITS_CUH

#include <stddef.h>

#include "attention_wgmma_shape.cuh"

namespace flashclip::attention {

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
/* 72 (SigLIP so400m) is computed as 80 (padded, the padding zeroed once as 104's): 80's shape, 162 registers, 0
 * spills. */
template <typename Elem>
struct FlashV3Config<Elem, 72> {
    using Traits = FlashV3Tiles<Elem, 72, 1, 64>;
};

}  // namespace flashclip::attention

#endif
