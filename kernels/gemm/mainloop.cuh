/* The GEMM's two roles over the ring of shared-memory stages: the producer (one thread issuing TMA loads) and the
 * consumers (warpgroups multiplying on wgmma). Stage s is handed over through two mbarriers: full[s] completes
 * when its A and B tiles have landed (the producer's arrival plus the TMA bytes), empty[s] when every consumer warp
 * has finished reading it. */
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

/* One consumer warpgroup's part of a tile: its 64 rows times kBlockN columns, accumulated over every k block into
 * `acc`. One wgmma group stays in flight: a stage is released as soon as the group that read it has completed,
 * while the next group runs. */
template <class Traits>
struct Consumer {
    using Elem = typename Traits::Elem;
    static constexpr int kAcc = Traits::kBlockN / 2;

    RingSlot<Traits::kStages> slot;

    __device__ __forceinline__ void release(int stage, int lane, const SharedStages<Traits> &sm) {
        __syncwarp();
        if (lane == 0) mbarrier_arrive(&sm.empty[stage]);
    }

    __device__ __forceinline__ void tile(float (&acc)[kAcc], const SharedStages<Traits> &sm, int consumer,
                                         int k_blocks, int lane) {
        int previous = -1;
        for (int kb = 0; kb < k_blocks; ++kb) {
            mbarrier_wait(&sm.full[slot.stage], slot.phase);
            // K-major operands in 128-byte swizzled rows: 8-row groups 1024 bytes apart; each k step of 16
            // elements is 32 bytes further along the row (the swizzle is applied to the full address).
            const uint64_t a_desc = smem_desc<128>(smem_addr(sm.a(slot.stage)) + consumer * 64 * 128, 16, 1024);
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
        wgmma_wait<0>();
        fence_operand(acc);
        if (previous >= 0) release(previous, lane, sm);
    }
};

}  // namespace flashclip::gemm

#endif
