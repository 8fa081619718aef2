/* fc_attention_v4's persistent tile scheduler: the work items (a query block of one head), their order and the K/V
 * tiles each needs, and the K/V ring's slots. Block j takes items j, j + gridDim.x, ...; every role of the block
 * (producer, riders, consumers) walks the same items, and the same ring slots in the same order. Whether the
 * consumers split an item's keys, and which stages each then owns, is run_consumer's (consumer.cuh). */
#ifndef FLASHCLIP_ATTENTION_V4_SCHEDULER_CUH
#define FLASHCLIP_ATTENTION_V4_SCHEDULER_CUH

#include <cuda_runtime.h>

#include "flashclip.h"

namespace flashclip::attention {

/* One work item of the persistent grid: a query block of one head. */
struct V4Item {
    int m_block, h, b;
};

/* A consumer's place in the K/V ring: slot pass * kStages + stage, in the stage's pass-th phase (parity pass & 1).
 * A consumer walks the stages [first, first + round) it owns, pass after pass: the next slot is a compare and an
 * add, not the division by round and the modulo that index arithmetic would cost per tile. */
struct RingSlot {
    int stage, pass;
};

template <class Traits>
struct V4Scheduler {
    static constexpr int kBlockM = Traits::kBlockM;
    static constexpr int kBlockN = Traits::kBlockN;

    const fc_attention_params &p;
    const bool causal;
    // With riders (the launcher's v4_riders), the last query block of each head is no item of its own.
    const int items_per_head;
    const int n_items;

    __device__ __forceinline__ V4Scheduler(const fc_attention_params &p, int riders)
        : p(p),
          causal(p.causal != 0),
          items_per_head((p.seq_q + kBlockM - 1) / kBlockM - (riders != 0 ? 1 : 0)),
          n_items(items_per_head * p.heads_q * p.batch) {}

    /* The item order. Blocks take items round-robin, so neighbouring items run at the same time: a head's query
     * blocks next to each other keep its K/V in L2 while they run (every head's block of one rank at once read 132
     * heads' K/V per round and measured 16-28% slower at head dims 96-128). A last query block shorter than the
     * others (CLIP's 64k + 1 rows) costs less: every head's goes to the end, after the full blocks, so that the
     * light items spread over the blocks and fill the last round (head-major, the light last blocks of a 2-block
     * head landed on the same half of the blocks every round: +10% at N 257; each head's right after its full
     * blocks, in segments of a grid's worth of them: +3% at N 577). With causal masking: the costliest (last) query
     * blocks of every head first. Recomputed from the parameters per item rather than kept live across the
     * consumers' loop (registers). */
    __device__ __forceinline__ V4Item item_at(int i) const {
        const int q_blocks = (p.seq_q + kBlockM - 1) / kBlockM, heads_batch = p.heads_q * p.batch;
        const int full_per_head = p.seq_q % kBlockM == 0 ? q_blocks : q_blocks - 1;
        const int n_full = full_per_head * heads_batch;
        int q_block, hb;
        if (causal) {
            q_block = q_blocks - 1 - i / heads_batch, hb = i % heads_batch;
        } else if (i < n_full) {
            q_block = i % full_per_head, hb = i / full_per_head;
        } else {
            q_block = q_blocks - 1, hb = i - n_full;
        }
        return V4Item{q_block * kBlockM, hb % p.heads_q, hb / p.heads_q};
    }

    /* K/V tiles an item needs. */
    __device__ __forceinline__ int item_tiles(const V4Item &it, int key_limit) const {
        const int key_end = causal ? min(key_limit, min(it.m_block + kBlockM, p.seq_q)) : key_limit;
        return (key_end + kBlockN - 1) / kBlockN;
    }
};

}  // namespace flashclip::attention

#endif
