/* fc_attention_v4's consumers: warpgroups of 64 query rows each that only multiply and run the softmax, each at its
 * own pace (no block-wide barrier in the main loop). Their Q rows into shared memory (load_q_rows), one tile's GEMMs
 * and rescale (V4Consumer), the ping-pong turns (V4Turns), and the loop over the block's items (run_consumer): per
 * tile, S = Q K_t^T and O += P_{t-1} V_{t-1} issued back to back, the softmax of tile t under P V, the stage
 * released. */
#ifndef FLASHCLIP_ATTENTION_V4_CONSUMER_CUH
#define FLASHCLIP_ATTENTION_V4_CONSUMER_CUH

#include <cuda_runtime.h>
#include <stdint.h>

#include <type_traits>

#include "flashclip.h"
#include "../attention_mask.cuh"
#include "../dtype.cuh"
#include "../online_softmax.cuh"
#include "../ptx.cuh"
#include "../warp_specialization.cuh"
#include "../wgmma.cuh"
#include "epilogue.cuh"
#include "scheduler.cuh"
#include "traits.cuh"

namespace flashclip::attention {

/* Q rows [row0, row0 + 64) of one consumer group into the padded row layout, by its 128 threads. */
template <class Traits>
__device__ __forceinline__ void load_q_rows(typename Traits::Elem *tile, const typename Traits::Elem *src,
                                            long long row_stride, int row0, int row_end, int tid) {
    constexpr int kChunks = 64 * Traits::kPaddedChunksPerRow;
#pragma unroll
    for (int i0 = 0; i0 < kChunks; i0 += 128) {
        const int i = i0 + tid;
        if (kChunks % 128 == 0 || i < kChunks) {
            const int r = i / Traits::kPaddedChunksPerRow, c = i % Traits::kPaddedChunksPerRow;
            typename Traits::Elem *dst = tile + r * Traits::kSmemRowStride + 8 * c;
            if (row0 + r < row_end && c < Traits::kChunksPerRow)
                cp_async_16(dst, src + (long long)(row0 + r) * row_stride + 8 * c);
            else
                *reinterpret_cast<uint4 *>(dst) = make_uint4(0u, 0u, 0u, 0u);
        }
    }
}

/* The consumer side of one tile, split so that the caller can interleave it with the previous tile's P V. */
template <class Traits>
struct V4Consumer {
    using Elem = typename Traits::Elem;
    using MmaO = Wgmma<Elem, Traits::kHeadDimPadded>;
    using MmaSum = Wgmma<Elem, 8>;
    static constexpr int kSw = Traits::kSwizzleBytes;

    /* Descriptors of a K stage (K-major) and a V stage (N-major: column blocks kBlockN * kSw bytes apart). */
    static __device__ __forceinline__ uint64_t k_desc(uint32_t k_stage) { return smem_desc<kSw>(k_stage, 16, 8 * kSw); }
    static __device__ __forceinline__ uint64_t v_desc(uint32_t v_stage) {
        return smem_desc<kSw>(v_stage, Traits::kBlockN * kSw, 8 * kSw);
    }

    /* Issue S = Q K^T against the first kN keys of the K stage of descriptor k (not waited for): k step kk covers
     * head-dim columns 16kk..16kk+15, in column block 16kk / kAtomCols at byte 2 * (16kk % kAtomCols) of each
     * row. kN < kBlockN multiplies the narrow last tile only. */
    template <int kN>
    static __device__ __forceinline__ void issue_qk(float (&s)[kN / 2], const uint32_t (&q)[Traits::kQKSteps][4],
                                                    uint64_t k) {
#pragma unroll
        for (int kk = 0; kk < Traits::kQKSteps; ++kk)
            Wgmma<Elem, kN>::template mma<0>(s, q[kk],
                                             desc_advance(k, (16 * kk / Traits::kAtomCols) * Traits::kBlockN * kSw +
                                                                 2 * (16 * kk % Traits::kAtomCols)),
                                             kk > 0);
    }

    /* The ones tile, K-major like K: every element it reads is 1, whatever the layout. */
    static __device__ __forceinline__ uint64_t ones_desc(uint32_t ones) { return smem_desc<128>(ones, 16, 8 * 128); }

    /* Issue O += P V for the V stage of descriptor v and sums += P x ones (not waited for): k step kk = keys
     * 16kk..16kk+15. Every column of `sums` ends up with its row's sum: elements 0 and 2 are rows g and g + 8. */
    template <int kSteps = Traits::kPVSteps>
    static __device__ __forceinline__ void issue_pv(float (&o)[Traits::kORegs], float (&sums)[4],
                                                    const uint32_t (&p)[Traits::kPVSteps][4], uint64_t v,
                                                    uint64_t ones) {
#pragma unroll
        for (int kk = 0; kk < kSteps; ++kk) MmaO::template mma<1>(o, p[kk], desc_advance(v, 16 * kk * kSw), 1);
#pragma unroll
        for (int kk = 0; kk < kSteps; ++kk) MmaSum::template mma<0>(sums, p[kk], ones, 1);
    }

    /* O and the sums times alpha where a row's max moved, and the probabilities packed as P V's A operands. */
    template <int kSTiles>
    static __device__ __forceinline__ void rescale_and_pack(const float (&s)[4 * kSTiles],
                                                            float (&o)[Traits::kORegs], float (&sums)[4],
                                                            uint32_t (&p)[Traits::kPVSteps][4],
                                                            const float (&alpha)[2]) {
        if (row_max_moved(alpha)) {
            rescale_rows<Traits::kOTiles>(o, alpha);
            rescale_rows<1>(sums, alpha);
        }
        pack_probs<Elem, kSTiles>(s, p);
    }
};

/* Turns (ping-pong): consumer c waits on its barrier until c - 1 passed it the turn, issues, and passes the turn on
 * to c + 1. Every consumer takes n_tiles turns per item (a consumer passes the turn for a tile it does not multiply),
 * so the ring stays in step; split items take none. The last consumer gives the first its first turn, and the first
 * takes the last consumer's final pass before leaving, so every barrier phase completes. */
template <class Traits>
struct V4Turns {
    int consumer;
    __device__ __forceinline__ void take() const { named_barrier_sync(Traits::kTurnBarrier + consumer, 256); }
    __device__ __forceinline__ void pass() const {
        named_barrier_arrive(Traits::kTurnBarrier + (consumer + 1) % Traits::kConsumers, 256);
    }
};


/* One consumer warpgroup's loop over the block's items: per item its Q rows into registers (the next item's Q rows
 * then load under this one's tiles), the pipeline over its K/V tiles, and the epilogue. Consumer warpgroup - 1;
 * tid: the thread's index in the block; lane: in its warp. */
template <class Traits, int kTailN>
__device__ __forceinline__ void run_consumer(const fc_attention_params &p, const V4Scheduler<Traits> &sched,
                                             int split_last_block, typename Traits::Elem *q_tile,
                                             unsigned char *ones, unsigned char *k_tiles, unsigned char *v_tiles,
                                             float *partials, uint64_t *full, uint64_t *empty, int warpgroup,
                                             int tid, int lane) {
    constexpr float kLog2e = 1.4426950408889634f;
    using Elem = typename Traits::Elem;
    using Consumer = V4Consumer<Traits>;
    constexpr int kBlockN = Traits::kBlockN;
    constexpr int kStages = Traits::kStages;
    constexpr int kConsumers = Traits::kConsumers;
    constexpr int kQStride = Traits::kSmemRowStride;
    // A last query block of at most 64 rows (seq_q = 64k + 1 at CLIP's lengths) would leave all consumers but the
    // first idle for an item's time: there they all take those rows, split the key tiles and merge. (A lambda here:
    // as a V4Scheduler member, the kernels that never split compiled to other instructions.)
    const auto item_split = [&](const V4Item &it) {
        return Traits::kCanSplit && split_last_block != 0 && !sched.causal && it.m_block + 64 >= p.seq_q;
    };
    const int consumer = warpgroup - 1;
    const int ctid = tid - 128 * warpgroup;  // 0..127 within the group
    const int warp_in_group = ctid / 32;
    const int group = lane / 4, thread_in_group = lane % 4;
    const float scale_log2 = p.softmax_scale * kLog2e;
    Elem *my_q = q_tile + 64 * consumer * kQStride;
    // The first query row of this consumer's rows in an item (in a split item all consumers take the same rows).
    const auto group_row0_of = [&](const V4Item &it, bool split) {
        return split ? it.m_block : it.m_block + 64 * consumer;
    };
    const auto load_q = [&](int item) {
        const V4Item it = sched.item_at(item);
        const Elem *q = static_cast<const Elem *>(p.q) + it.b * p.q_batch_stride + it.h * p.q_head_stride;
        load_q_rows<Traits>(my_q, q, p.q_seq_stride, group_row0_of(it, item_split(it)), p.seq_q, ctid);
        cp_async_commit();
    };

    const uint64_t k_desc0 = Consumer::k_desc(smem_addr(k_tiles));
    const uint64_t v_desc0 = Consumer::v_desc(smem_addr(v_tiles));
    const uint64_t ones_desc = Consumer::ones_desc(smem_addr(ones));
    const auto k_base = [&](RingSlot r) { return desc_advance(k_desc0, r.stage * Traits::kKVTileBytes); };
    const auto v_base = [&](RingSlot r) { return desc_advance(v_desc0, r.stage * Traits::kKVTileBytes); };
    const auto wait_full = [&](RingSlot r) { mbarrier_wait(&full[r.stage], r.pass & 1); };

    // Ping-pong turns (V4Turns): the last consumer gives the first its first turn.
    const V4Turns<Traits> turn{consumer};
    if (Traits::kPingPong && consumer == kConsumers - 1) turn.pass();

    int g0 = 0;  // the current item's first ring slot
    if (blockIdx.x < sched.n_items) load_q(blockIdx.x);
    for (int item = blockIdx.x; item < sched.n_items; item += gridDim.x) {
        const V4Item it = sched.item_at(item);
        const int key_limit = batch_key_limit(p.key_lens, it.b, p.seq_k);
        const int n_tiles = sched.item_tiles(it, key_limit);
        const bool split = item_split(it);
        const bool turns = Traits::kPingPong && !split;
        // In a split item each consumer owns kStages / kConsumers (>= 2) neighbouring stages of the ring and
        // multiplies the item's slots that land there: the mbarrier phases of a stage are then waited for by one
        // consumer, in order (a parity wait cannot tell a phase from the one two later), and a consumer's two
        // slots in flight (S of one, P V of the one before) are in different stages, so the producer never waits
        // on a release that waits on it.
        const int round = split ? kStages / kConsumers : kStages;  // own stages
        const int first_stage = split ? consumer * round : 0;
        const auto next_slot = [&](RingSlot r) {
            return ++r.stage == first_stage + round ? RingSlot{first_stage, r.pass + 1} : r;
        };
        const int group_row0 = group_row0_of(it, split);
        const int warp_row0 = group_row0 + 16 * warp_in_group;
        const int group_key_end =
            group_row0 >= p.seq_q ? 0 : sched.causal ? min(key_limit, min(group_row0 + 64, p.seq_q)) : key_limit;
        const int group_tiles = (group_key_end + kBlockN - 1) / kBlockN;  // the tiles this group's rows see
        // Own slots before slot x of the ring (split items).
        const auto owned_before = [&](int x) {
            return x / kStages * round + min(max(x % kStages - first_stage, 0), round);
        };
        const int my_slots = split ? owned_before(g0 + n_tiles) - owned_before(g0) : group_tiles;
        RingSlot i{g0 % kStages, g0 / kStages};  // this consumer's first slot of the item
        if (split && i.stage < first_stage) i.stage = first_stage;
        if (split && i.stage >= first_stage + round) i = RingSlot{first_stage, i.pass + 1};
        // The narrow tile's slot: the item's last; whether this consumer has it.
        const int tail_slot = g0 + n_tiles - 1;
        const bool holds_tail =
            kTailN > 0 && my_slots > 0 && (split ? (tail_slot % kStages) / round == consumer : my_slots == n_tiles);
        const int warp_unmasked_end = sched.causal ? min(key_limit, warp_row0 + 1) : key_limit;
        int my_key_limit[2];
#pragma unroll
        for (int r = 0; r < 2; ++r) my_key_limit[r] = row_key_limit(key_limit, warp_row0 + group + 8 * r, sched.causal);

        // Q rows: landed (every thread's part), into registers, then the shared rows take the next item's.
        uint32_t q_frag[Traits::kQKSteps][4];
        cp_async_wait<0>();
        named_barrier_sync(Traits::q_rows_barrier(consumer), 128);
        const Elem *q_warp = my_q + (16 * warp_in_group + lane % 16) * kQStride + 8 * (lane / 16);
#pragma unroll
        for (int kk = 0; kk < Traits::kQKSteps; ++kk) ldmatrix_x4(q_frag[kk], q_warp + 16 * kk);
        named_barrier_sync(Traits::q_rows_barrier(consumer), 128);
        if (item + gridDim.x < sched.n_items) load_q(item + gridDim.x);

        float o_acc[Traits::kORegs];
#pragma unroll
        for (int r = 0; r < Traits::kORegs; ++r) o_acc[r] = 0.f;
        float row_sums[4] = {0.f, 0.f, 0.f, 0.f};  // P x ones: rows g (elements 0, 1) and g + 8 (2, 3)
        float row_max[2] = {-INFINITY, -INFINITY};

        if (my_slots > 0) {
            float s[Traits::kSRegs];
            uint32_t p_frag[Traits::kPVSteps][4];
            float alpha[2];
            // The softmax of the full tile in ring slot r (scores in s), masked where the tile crosses a row's
            // limit.
            auto softmax = [&](RingSlot r) {
                const int key0 = (r.pass * kStages + r.stage - g0) * kBlockN;
                if (key0 + kBlockN > warp_unmasked_end)
                    softmax_scores<Traits::kSTiles, true>(s, row_max, alpha, my_key_limit, key0, thread_in_group,
                                                          scale_log2);
                else
                    softmax_scores<Traits::kSTiles, false>(s, row_max, alpha, my_key_limit, key0, thread_in_group,
                                                           scale_log2);
            };
            // In a split item each tile has one consumer, which releases it for all of them.
            const auto release = [&](RingSlot r) {
                __syncwarp();
                if (lane == 0) mbarrier_arrive(&empty[r.stage], split ? kConsumers : 1);
            };
            // First slot: S, softmax, P.
            wait_full(i);
            // The narrow tile is this consumer's last slot, run after the loop, both its products narrow.
            const int loop_slots = holds_tail ? my_slots - 1 : my_slots;
            bool first_done = false;
            if constexpr (kTailN > 0) {
                if (loop_slots == 0) {  // the narrow tile is the only slot
                    float s_tail[kTailN / 2];
                    if (turns) turn.take();
                    wgmma_fence();
                    Consumer::template issue_qk<kTailN>(s_tail, q_frag, k_base(i));
                    wgmma_commit();
                    if (turns) turn.pass();
                    wgmma_wait<0>();
                    fence_operand(s_tail);
                    softmax_scores<kTailN / 8, true>(s_tail, row_max, alpha, my_key_limit, (n_tiles - 1) * kBlockN,
                                                     thread_in_group, scale_log2);
                    Consumer::template rescale_and_pack<kTailN / 8>(s_tail, o_acc, row_sums, p_frag, alpha);
                    // The k steps past the narrow tile as zero probabilities. The narrow P V below reads only the
                    // first kTailN / 16, but the fences pin every P register: kept as the kernel was measured.
#pragma unroll
                    for (int kk = kTailN / 16; kk < Traits::kPVSteps; ++kk)
                        p_frag[kk][0] = p_frag[kk][1] = p_frag[kk][2] = p_frag[kk][3] = 0u;
                    first_done = true;
                }
            }
            if (!first_done) {
                if (turns) turn.take();
                wgmma_fence();
                Consumer::template issue_qk<kBlockN>(s, q_frag, k_base(i));
                wgmma_commit();
                if (turns) turn.pass();
                wgmma_wait<0>();
                fence_operand(s);
                softmax(i);
                Consumer::template rescale_and_pack<Traits::kSTiles>(s, o_acc, row_sums, p_frag, alpha);
            }

            // A later slot of kN keys (scores: float[kN / 2]): S_i and P_prev V_prev in flight together, the softmax
            // of slot i (run_softmax) under P V.
            const auto later_slot = [&](auto &scores, auto run_softmax) {
                constexpr int kN = 2 * std::extent<std::remove_reference_t<decltype(scores)>>::value;
                const RingSlot prev = i;
                i = next_slot(i);
                wait_full(i);
                fence_operand(o_acc);
                fence_operand(row_sums);
                fence_operand(p_frag);
                if (turns) turn.take();
                wgmma_fence();
                Consumer::template issue_qk<kN>(scores, q_frag, k_base(i));
                wgmma_commit();
                Consumer::issue_pv(o_acc, row_sums, p_frag, v_base(prev), ones_desc);
                wgmma_commit();
                if (turns) turn.pass();
                wgmma_wait<1>();
                fence_operand(scores);
                run_softmax();
                wgmma_wait<0>();
                fence_operand(o_acc);
                fence_operand(row_sums);
                fence_operand(p_frag);
                release(prev);
                Consumer::template rescale_and_pack<kN / 8>(scores, o_acc, row_sums, p_frag, alpha);
            };
            for (int j = 1; j < loop_slots; ++j) later_slot(s, [&] { softmax(i); });

            bool last_narrow = holds_tail && loop_slots == 0;  // the only slot was the narrow one
            if constexpr (kTailN > 0) {
                if (holds_tail && loop_slots > 0) {
                    // The narrow tile after the loop: its S (kTailN keys) with the previous P V, then its softmax.
                    float s_tail[kTailN / 2];
                    later_slot(s_tail, [&] {
                        softmax_scores<kTailN / 8, true>(s_tail, row_max, alpha, my_key_limit, (n_tiles - 1) * kBlockN,
                                                         thread_in_group, scale_log2);
                    });
                    last_narrow = true;
                }
            }

            // The last P V (only the narrow tile's k steps where that is the last slot).
            fence_operand(o_acc);
            fence_operand(row_sums);
            fence_operand(p_frag);
            if (kTailN > 0 && last_narrow) {
                wgmma_fence();
                Consumer::template issue_pv<(kTailN + 15) / 16>(o_acc, row_sums, p_frag, v_base(i), ones_desc);
                wgmma_commit();
                wgmma_wait<0>();
            } else {
                wgmma_fence();
                Consumer::issue_pv(o_acc, row_sums, p_frag, v_base(i), ones_desc);
                wgmma_commit();
                wgmma_wait<0>();
            }
            fence_operand(o_acc);
            fence_operand(row_sums);
            release(i);
        }
        float row_sum[2] = {row_sums[0], row_sums[2]};
        if (split) {
            merge_split<Traits>(o_acc, row_max, row_sum, partials, consumer, ctid, scale_log2);
        } else {
            // Tiles this group does not need (causal, or no rows): wait for each, so the release lands in that
            // tile's phase; pass its turn.
            for (int t = group_tiles; t < n_tiles; ++t) {
                if (turns) {
                    turn.take();
                    turn.pass();
                }
                mbarrier_wait(&full[(g0 + t) % kStages], ((g0 + t) / kStages) & 1);
                if (lane == 0) mbarrier_arrive(&empty[(g0 + t) % kStages]);
            }
        }
        g0 += n_tiles;
        if (group_row0 >= p.seq_q || (split && consumer > 0)) continue;
        Elem *o = static_cast<Elem *>(p.o) + it.b * p.o_batch_stride + it.h * p.o_head_stride;
        store_rows<Traits>(o_acc, row_sum, row_max, scale_log2, o, p.o_seq_stride,
                           p.lse == nullptr ? nullptr : p.lse + ((long long)it.b * p.heads_q + it.h) * p.seq_q,
                           warp_row0, p.seq_q, lane);
    }
    if (Traits::kPingPong && consumer == 0) turn.take();
}

}  // namespace flashclip::attention

#endif
