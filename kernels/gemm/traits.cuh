/* Tile shapes and shared-memory layout of the Hopper GEMM, in one type. */
#ifndef FLASHCLIP_GEMM_TRAITS_CUH
#define FLASHCLIP_GEMM_TRAITS_CUH

#include <stdint.h>

namespace flashclip::gemm {

/* A block computes a kBlockM x kBlockN tile of y: one producer warpgroup (one thread issues the TMA loads; the
 * others give their registers away) and kConsumers warpgroups of 64 rows each. K moves in steps of kBlockK = 64
 * 16-bit elements: one 128-byte swizzled row per tile row, the widest swizzle, which TMA writes and wgmma reads
 * without bank conflicts. kStages tiles of A and B are in flight. */
template <typename Elem_, int kBlockN_, int kStages_>
struct GemmTraits {
    using Elem = Elem_;
    static constexpr int kConsumers = 2;
    static constexpr int kBlockM = 64 * kConsumers;
    static constexpr int kBlockN = kBlockN_;
    static constexpr int kBlockK = 64;
    static constexpr int kStages = kStages_;
    static constexpr int kThreads = 128 * (1 + kConsumers);
    static constexpr int kSwizzleBytes = 128;
    static constexpr int kATileBytes = kBlockM * kBlockK * 2;
    static constexpr int kBTileBytes = kBlockN * kBlockK * 2;
    static constexpr int kStageBytes = kATileBytes + kBTileBytes;
    // The tiles, then the full and empty barriers of each stage, plus room to align the start to 1024 bytes (the
    // 128-byte swizzle's atom).
    static constexpr int kSmemBytes = kStages * kStageBytes + 2 * kStages * 8 + 1024;
    // Registers after setmaxnreg: the producer keeps few; each consumer holds kBlockN / 2 accumulators.
    static constexpr int kProducerRegs = 40;
    static constexpr int kConsumerRegs = 232;
    static_assert(kBlockN == 128 || kBlockN == 256, "the wgmma wrappers spell out N = 128 and 256");
    static_assert(kSmemBytes <= 227 * 1024, "fits one block's shared memory");
    static_assert(128 * kProducerRegs + 128 * kConsumers * kConsumerRegs <= 65536, "fits the register file");
};

/* Wide tiles where the grid is large (fewer loads per FLOP), narrow ones where wide tiles would leave SMs idle. */
template <typename Elem>
using WideTiles = GemmTraits<Elem, 256, 4>;
template <typename Elem>
using NarrowTiles = GemmTraits<Elem, 128, 6>;

}  // namespace flashclip::gemm

#endif
