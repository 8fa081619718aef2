/* Tile shapes, schedule, barrier ids and shared-memory layout of the Hopper GEMM, in one type. */
#ifndef FLASHCLIP_GEMM_TRAITS_CUH
#define FLASHCLIP_GEMM_TRAITS_CUH

#include <stdint.h>

namespace flashclip::gemm {

/* How the two consumer warpgroups share the work of a block.
 * - kCooperative: both work on one 128 x kBlockN tile, 64 rows each; the tensor cores idle during every tile's
 *   epilogue.
 * - kPingPong: each warpgroup owns whole 64 x kBlockN tiles (the block's even tiles to the first, odd ones to the
 *   second) and they take turns at the tensor cores: one issues its mainloop while the other runs its epilogue
 *   (CUTLASS's KernelTmaWarpSpecializedPingpong, FlashAttention-3's ping-pong scheduling). */
enum class Schedule { kCooperative, kPingPong };

/* How the epilogue writes y.
 * - kRegisters: each thread stores its pairs of columns straight from registers (4 bytes a store).
 * - kTma: each consumer writes its 64 rows into a 128-byte swizzled staging tile in shared memory (conflict-free)
 *   and one thread stores it with TMA in 64 x 64 boxes (whole 128-byte rows; the edges clipped by the map). Needs
 *   y's row stride a multiple of 8 and y 16-byte aligned; costs a stage of the ring where the staging tiles do
 *   not fit beside it. */
enum class Store { kRegisters, kTma };

/* A block computes kBlockM x kBlockN tiles of y: one producer warpgroup (one thread issues the TMA loads; the
 * others give their registers away) and kConsumers warpgroups of 64 rows each. K moves in steps of kBlockK = 64
 * 16-bit elements: one 128-byte swizzled row per tile row, the widest swizzle, which TMA writes and wgmma reads
 * without bank conflicts. kStages tiles of A and B are in flight.
 *
 * Ping-pong tiles are 64 x kBlockN, one m64nNk16 wgmma per k step: the same kBlockN / 2 fp32 accumulators a
 * thread as a cooperative warpgroup's half of a 128-row tile, so the same register split (232 a consumer thread)
 * holds them and the epilogue; a stage is smaller (40 KiB at N = 256 against 48), which pays for the extra
 * loads of B per output (B is read once per 64 rows instead of 128). */
template <typename Elem_, Schedule kSchedule_, Store kStore_, int kBlockN_, int kStages_>
struct GemmTraits {
    using Elem = Elem_;
    static constexpr Schedule kSchedule = kSchedule_;
    static constexpr Store kStore = kStore_;
    static constexpr int kConsumers = 2;
    // Consumer warpgroups that multiply each stage (and so arrive on its empty barrier, one arrival a warp).
    static constexpr int kWarpgroupsPerTile = kSchedule == Schedule::kCooperative ? kConsumers : 1;
    static constexpr int kBlockM = 64 * kWarpgroupsPerTile;
    static constexpr int kBlockN = kBlockN_;
    static constexpr int kBlockK = 64;
    static constexpr int kStages = kStages_;
    static constexpr int kThreads = 128 * (1 + kConsumers);
    static constexpr int kSwizzleBytes = 128;
    static constexpr int kATileBytes = kBlockM * kBlockK * 2;
    static constexpr int kBTileBytes = kBlockN * kBlockK * 2;
    static constexpr int kStageBytes = kATileBytes + kBTileBytes;
    // TMA store: one staging tile of 64 rows x kBlockN per consumer, as kBlockN / 64 boxes of 64 x 64 (8 KiB).
    static constexpr int kStoreBoxBytes = 64 * 64 * 2;
    static constexpr int kStoreTileBytes = kStore == Store::kTma ? 64 * kBlockN * 2 : 0;
    // The stages, the staging tiles (1024-byte multiples, so every box starts on a swizzle atom), then the full
    // and empty barriers of each stage, plus room to align the start to 1024 bytes (the 128-byte swizzle's atom).
    static constexpr int kSmemBytes =
        kStages * kStageBytes + kConsumers * kStoreTileBytes + 2 * kStages * 8 + 1024;
    // Registers after setmaxnreg: the producer keeps few; each consumer holds kBlockN / 2 accumulators.
    static constexpr int kProducerRegs = 40;
    static constexpr int kConsumerRegs = 232;
    // Hardware (named) barrier ids; 0 is __syncthreads'. Ping-pong: consumer c waits for its turn at the tensor
    // cores on kTurnBarrier + c (PingPongTurns). TMA store: consumer c's 128 threads meet on kStoreBarrier + c
    // around its staging tile.
    enum Barrier : int { kTurnBarrier = 1, kStoreBarrier = kTurnBarrier + kConsumers };
    static_assert(kStoreBarrier + kConsumers <= 16, "hardware barriers");
    static_assert(kBlockN == 128 || kBlockN == 256, "the wgmma wrappers spell out N = 128 and 256");
    static_assert(kSmemBytes <= 227 * 1024, "fits one block's shared memory");
    static_assert(128 * kProducerRegs + 128 * kConsumers * kConsumerRegs <= 65536, "fits the register file");
};

/* Wide tiles where the grid is large (fewer loads per FLOP), narrow ones where wide tiles would leave SMs idle.
 * Stages: as many as fit 227 KiB beside the TMA store's staging tiles (2 x 32 KiB wide, 2 x 16 KiB narrow).
 *   cooperative wide 4 x 48 KiB (TMA store 3), narrow 6 x 32 KiB (6);
 *   ping-pong   wide 5 x 40 KiB (TMA store 4), narrow 8 x 24 KiB (8). */
template <Schedule kSchedule, Store kStore, int kCooperative, int kCooperativeTma, int kPingPong, int kPingPongTma>
constexpr int kStagesOf = kSchedule == Schedule::kCooperative ? (kStore == Store::kTma ? kCooperativeTma : kCooperative)
                                                              : (kStore == Store::kTma ? kPingPongTma : kPingPong);
template <typename Elem, Schedule kSchedule, Store kStore>
using WideTiles = GemmTraits<Elem, kSchedule, kStore, 256, kStagesOf<kSchedule, kStore, 4, 3, 5, 4>>;
template <typename Elem, Schedule kSchedule, Store kStore>
using NarrowTiles = GemmTraits<Elem, kSchedule, kStore, 128, kStagesOf<kSchedule, kStore, 6, 6, 8, 8>>;

}  // namespace flashclip::gemm

#endif
