/* Tile shapes, register split, barrier ids and shared-memory budget of fc_attention_v4 (warp-specialized, sm_90a). */
#ifndef FLASHCLIP_ATTENTION_V4_TRAITS_CUH
#define FLASHCLIP_ATTENTION_V4_TRAITS_CUH

#include <stddef.h>

#include "../attention_wgmma_shape.cuh"

namespace flashclip::attention {

/* v4 computes head dims 104 and 112 as 128: TMA zero-fills the columns past the head dim, and the tiles get the
 * 128-byte swizzle of 2 column blocks instead of the 32-byte one of 7. H100, B16 N577, same work for the tensor
 * cores as head dim 128: 112 took 145 us with 7 column blocks and takes 127 as 128 (128: 128 us); 104 took 190 and
 * takes 142. */
constexpr int v4_padded_head_dim(int head_dim) { return head_dim > 96 ? 128 : (head_dim + 15) / 16 * 16; }

/* One fc_attention_v4 instantiation: a producer warp that only loads (TMA boxes into the swizzled K/V layout of
 * WgmmaTileShape, kStages deep, published through mbarriers) and kConsumers consumer warpgroups of 64 query rows
 * each that only multiply and run the softmax, each at its own pace; kMinBlocks blocks per SM (2 with one consumer,
 * so that one block's prologue and epilogue overlap the other's main loop). The producer's warpgroup hands
 * registers to the consumers (setmaxnreg) within the pool the launch gave the block. */
template <typename Elem_, int kHeadDim_, int kBlockN_, int kStages_, int kConsumers_ = 2, bool kPingPong_ = false>
struct FlashV4Traits : WgmmaTileShape<Elem_, kHeadDim_, kBlockN_, v4_padded_head_dim(kHeadDim_)> {
    using Shape = WgmmaTileShape<Elem_, kHeadDim_, kBlockN_, v4_padded_head_dim(kHeadDim_)>;
    static constexpr int kConsumers = kConsumers_;                        // warpgroups of 64 query rows
    static_assert(kConsumers >= 1 && kConsumers <= 3, "one to three consumer warpgroups");
    // The consumers issue their GEMMs in turns (FA3's ping-pong), see attention_v4_kernel.
    static constexpr bool kPingPong = kPingPong_;
    static_assert(!kPingPong || kConsumers > 1, "turns need two or more consumers");
    // Hardware (named) barrier ids; 0 is __syncthreads'. Each consumer has one of its own for its Q rows
    // (q_rows_barrier) and one for its turn (V4Turns).
    enum Barrier : int {
        kQRowsBarrier = 1,
        kMergeBarrier = kQRowsBarrier + kConsumers,  // the consumers of a split query block
        kTurnBarrier = kMergeBarrier + 1,
        kRiderBarrier = kTurnBarrier + kConsumers,   // the rider warps (V4Rider)
    };
    static_assert(kRiderBarrier < 16, "hardware barriers");
    static constexpr int q_rows_barrier(int consumer) { return kQRowsBarrier + consumer; }
    static constexpr int kMinBlocks = kConsumers == 1 ? 2 : 1;
    static constexpr int kThreads = 128 * (1 + kConsumers);
    static constexpr int kBlockM = 64 * kConsumers;
    // The pool is what the launch gave: kLaunchRegs x kThreads (__launch_bounds__(kThreads, kMinBlocks)).
    // Consumers with 128-key tiles use up to ~220 registers, with 64-key tiles ~210; the producer keeps at least
    // 48 (its loop over work items spills below that). Three consumers get 152, one consumer of two blocks per SM
    // 208.
    static constexpr int kLaunchRegs = 65536 / (kThreads * kMinBlocks) / 8 * 8;
    static constexpr int kPool = kLaunchRegs * kThreads;
    static constexpr int kConsumerCap = (kPool - 128 * 48) / (128 * kConsumers) / 8 * 8;
    static constexpr int kConsumerWant = kBlockN_ >= 128 ? 224 : 216;
    static constexpr int kConsumerRegs = kConsumerWant < kConsumerCap ? kConsumerWant : kConsumerCap;
    static constexpr int kProducerRegs = (kPool - 128 * kConsumers * kConsumerRegs) / 128 / 8 * 8;
    static_assert(kProducerRegs >= 24 && kProducerRegs <= 256, "register file");
    static constexpr int kStages = kStages_;
    // The consumers of a block may split its keys (v4's last query block) when each owns two or more stages.
    static constexpr bool kCanSplit = kConsumers > 1 && kStages % kConsumers == 0 && kStages / kConsumers >= 2;
    // Riders (V4Rider in attention_v4/riders.cuh): with three consumers at head dim 64, a last query block of at most
    // kRiderRows rows is computed by the producer warpgroup's three other warps, on mma.sync, from the K/V tiles of
    // one of its head's full blocks; they meet on hardware barrier kRiderBarrier and merge through kRiderBytes.
    static constexpr bool kRiders = kConsumers == 3 && Shape::kHeadDimPadded == 64 && kBlockN_ % 16 == 0;
    static constexpr int kRiderRows = 8;
    static constexpr int kRiderBytes = kRiders ? 2 * (16 * 32 + 16) * 4 + 3 * 4 * 32 * 8 : 0;

    static constexpr int kQTileBytes = (kBlockM * Shape::kSmemRowStride * 2 + 1023) / 1024 * 1024;
    // The B operand of P x ones (the row sums on the tensor cores): 8 rows of one 128-byte swizzle atom.
    static constexpr int kOnesBytes = 1024;
    // Where the other consumers' partial results of a split query block meet the first's: O, row max and sum.
    static constexpr int kPartialBytes = kCanSplit ? (kConsumers - 1) * (Shape::kORegs + 4) * 128 * 4 : 0;
    static constexpr int kBarrierBytes = 2 * kStages * 8;                  // full[] and empty[] mbarriers
    static constexpr size_t kSmemBytes = 1024 /* alignment slack */ + kQTileBytes + kOnesBytes +
                                         2 * kStages * Shape::kKVTileBytes + kPartialBytes + kRiderBytes +
                                         kBarrierBytes;
    static_assert(kSmemBytes * kMinBlocks <= 227 * 1024, "shared memory");
};

/* v4 tile shapes per head dim (two consumers; head dims 64 and 80 may take three, see dispatch_v4): 128-key tiles
 * at 96, 64-key tiles elsewhere: at 80 ViT-H/14's N 257 = 4 x 64 + 1 (44.6 us against 47.3 with 128-key tiles),
 * at 64 batch 1 N 577 (12.0 us against 12.5 with lazy rescaling; 12.2 against 12.1 before it), at 104-128
 * registers.
 * Four stages (two per consumer, for the key split of the last query block) where they fit in shared memory,
 * three at 96. Ping-pong turns at 64 (batch 1 N 577, same run: fp16 12.0 us against 12.2 without, bf16 11.8
 * against 12.1). */
template <typename Elem, int kHeadDim>
struct FlashV4Config {
    using Traits =
        FlashV4Traits<Elem, kHeadDim, (kHeadDim == 96 ? 128 : 64), (kHeadDim == 96 ? 3 : 4), 2, kHeadDim == 64>;
};

}  // namespace flashclip::attention

#endif
