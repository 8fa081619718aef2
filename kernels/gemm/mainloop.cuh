/* The GEMM's two roles over the ring of shared-memory stages: the producer (one thread issuing TMA loads) and the
 * consumers (warpgroups multiplying on wgmma). Stage s is handed over through two mbarriers: full[s] completes
 * when its A and B tiles have landed (the producer's arrival plus the TMA bytes), empty[s] when every warp that
 * multiplies it has finished reading it (both consumers' 8 warps when they share tiles, one consumer's 4 in
 * ping-pong). The ring is one sequence of slots, tile after tile in the order the producer loads them; in
 * ping-pong the consumers take alternate tiles' runs of slots. */
#ifndef FLASHCLIP_GEMM_MAINLOOP_CUH
#define FLASHCLIP_GEMM_MAINLOOP_CUH

#include <cuda.h>
#include <stdint.h>

#include "../ptx.cuh"
#include "../warp_specialization.cuh"
#include "../wgmma.cuh"
#include "scheduler.cuh"
#include "wgmma_ss.cuh"

namespace flashclip::gemm {

/* The shared memory both roles address: kStages stages of [A tile | B tile], then the barriers. */
template <class Traits>
struct SharedStages {
    unsigned char *tiles;
    uint64_t *full, *empty;

    __device__ __forceinline__ unsigned char *a(int stage) const { return tiles + stage * Traits::kStageBytes; }
    __device__ __forceinline__ unsigned char *b(int stage) const { return a(stage) + Traits::kATileBytes; }
};

/* Loads every k block of every tile of this block, kStages ahead of the consumers. Rows and columns past the
 * matrices' edges (M, N or K not multiples of the tile) arrive as zeros, so the consumers need no masking. */
template <class Traits>
__device__ __forceinline__ void produce(const TileScheduler<Traits> &sched, const SharedStages<Traits> &sm,
                                        const CUtensorMap *a_map, const CUtensorMap *b_map, int k_blocks) {
    RingSlot<Traits::kStages> slot;
    for (int t = blockIdx.x; t < sched.count(); t += gridDim.x) {
        const Tile tile = sched.at(t);
        for (int kb = 0; kb < k_blocks; ++kb, slot.advance()) {
            // A fresh barrier's phase "before the first" counts as complete: the first pass does not wait.
            mbarrier_wait(&sm.empty[slot.stage], slot.phase ^ 1u);
            mbarrier_arrive_expect_tx(&sm.full[slot.stage], Traits::kStageBytes);
            tma_load_2d(sm.a(slot.stage), a_map, kb * Traits::kBlockK, tile.m0, &sm.full[slot.stage]);
            tma_load_2d(sm.b(slot.stage), b_map, kb * Traits::kBlockK, tile.n0, &sm.full[slot.stage]);
        }
    }
}

/* One consumer warpgroup's part of a tile: 64 rows (the `row_block`-th 64 of the A tile) times kBlockN columns,
 * accumulated over every k block into `acc`. One wgmma group stays in flight: a stage is released as soon as the
 * group that read it has completed, while the next group runs. `issued` runs once every group is issued, before
 * the last completes (the ping-pong turn passes there, so that the other warpgroup's first group queues right
 * behind this one's last). */
template <class Traits>
struct Consumer {
    using Elem = typename Traits::Elem;
    static constexpr int kAcc = Traits::kBlockN / 2;

    RingSlot<Traits::kStages> slot;

    __device__ __forceinline__ void release(int stage, int lane, const SharedStages<Traits> &sm) {
        __syncwarp();
        if (lane == 0) mbarrier_arrive(&sm.empty[stage]);
    }

    template <class Issued>
    __device__ __forceinline__ void tile(float (&acc)[kAcc], const SharedStages<Traits> &sm, int row_block,
                                         int k_blocks, int lane, Issued issued) {
        int previous = -1;
        for (int kb = 0; kb < k_blocks; ++kb) {
            mbarrier_wait(&sm.full[slot.stage], slot.phase);
            // K-major operands in 128-byte swizzled rows: 8-row groups 1024 bytes apart; each k step of 16
            // elements is 32 bytes further along the row (the swizzle is applied to the full address).
            const uint64_t a_desc = smem_desc<128>(smem_addr(sm.a(slot.stage)) + row_block * 64 * 128, 16, 1024);
            const uint64_t b_desc = smem_desc<128>(smem_addr(sm.b(slot.stage)), 16, 1024);
            wgmma_fence();
#pragma unroll
            for (int kk = 0; kk < Traits::kBlockK / 16; ++kk)
                wgmma_ss<Elem, Traits::kBlockN>(acc, desc_advance(a_desc, 32 * kk), desc_advance(b_desc, 32 * kk),
                                                (kb > 0 || kk > 0) ? 1 : 0);
            wgmma_commit();
            fence_operand(acc);
            if (previous >= 0) {
                wgmma_wait<1>();
                fence_operand(acc);
                release(previous, lane, sm);
            }
            previous = slot.stage;
            slot.advance();
        }
        issued();
        wgmma_wait<0>();
        fence_operand(acc);
        if (previous >= 0) release(previous, lane, sm);
    }
};

/* Ping-pong turns at the tensor cores: consumer c waits on hardware barrier kTurnBarrier + c until the other
 * consumer passes it the turn, issues a whole tile's mainloop, and passes the turn back. Each barrier phase is
 * 256 threads: the 128 of the consumer taking the turn (bar.sync) and the 128 of the one passing it (bar.arrive).
 *
 * Why every phase completes and none completes early, for any number T >= 0 of tiles in the block: the block's
 * tile i (in load order) is consumer i % 2's, and turn i is taken by that consumer before tile i's mainloop.
 * Consumer 1 passes consumer 0 its first turn when T > 0, and turn i passes on unless i = T - 1. Then consumer 0's
 * barrier gets ceil(T / 2) passes (the first, plus consumer 1's turns but its last when T is even) for its
 * ceil(T / 2) turns, and consumer 1's barrier gets floor(T / 2) passes (consumer 0's turns but its last when T is
 * odd) for its floor(T / 2): nothing is left half-arrived when the block exits, and no consumer waits on a pass
 * that never comes (T = 0: no pass, no turn; T = 1: the first pass, consumer 0's one turn). Between two passes to the same barrier the passing consumer takes its own turn, which needs
 * the other consumer to have taken (and so completed) the previous phase: a phase never sees two arrivals of one
 * warp.
 *
 * The ring stays consistent too: a consumer waits on a tile's full barriers only during its turn, after every
 * earlier tile's consumer has waited on all of its slots, so no full barrier is ever two phases behind its waiter
 * (its parity would then read as complete). scripts/gemm_schedule_model.py runs this protocol (and the
 * cooperative one) under random interleavings for T = 0..7, 1..7 k blocks and 2..8 stages. */
template <class Traits>
struct PingPongTurns {
    int consumer;
    __device__ __forceinline__ void take() const {
        named_barrier_sync(Traits::kTurnBarrier + consumer, 256);
    }
    __device__ __forceinline__ void pass() const {
        named_barrier_arrive(Traits::kTurnBarrier + (consumer ^ 1), 256);
    }
};

}  // namespace flashclip::gemm

#endif
