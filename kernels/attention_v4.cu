/* fc_attention_v4: v3's math (wgmma, Q and P in registers, K/V from swizzled shared memory) with the work split
 * and scheduled the way FlashAttention-3 does it.
 *
 *   - Warp specialization. One producer warp only loads: per K/V tile, one thread announces the bytes on the
 *     stage's `full` mbarrier and issues TMA boxes (the tensor maps are built on the host from the strides, so the
 *     packed QKV layout is read in place; rows past seq_k and head-dim padding columns arrive as zeros). A stage is
 *     refilled after every consumer released it on `empty`. The other producer warps only give their registers
 *     away (setmaxnreg) and exit. Two or three consumer warpgroups of 64 query rows each multiply and run the
 *     softmax, each at its own pace: no block-wide barrier in the main loop.
 *   - Intra-warpgroup overlap. A consumer issues S = Q K_t^T and O += P_{t-1} V_{t-1} back to back, waits for S
 *     only, runs the softmax of tile t while the tensor cores finish P V, then rescales O. The softmax (MUFU- and
 *     FMA-bound) and the two GEMMs of neighbouring tiles overlap within one warpgroup, and across the two.
 *   - Ping-pong (Traits::kPingPong). All consumers wait for the same tile, so left alone they issue their GEMMs
 *     together and then run their softmaxes together, contending for the MUFU and issue slots while the tensor
 *     cores idle. With turns, consumer c issues a tile's GEMMs only after c - 1 has issued its own (a ring of
 *     hardware barriers): the tensor cores run one consumer's GEMMs while the others exponentiate.
 *   - Row sums on the tensor cores: next to each P V k step, P times a shared-memory tile of ones (m64n8k16) adds
 *     the probabilities of every row, and the result is rescaled with O. One FADD per score fewer for the issue
 *     slots the softmax is short of, and the sum is that of the rounded P that P V multiplies.
 *   - Batches whose key_lens cut a tile short get that tile through cp.async instead, with rows past the limit
 *     zero-filled: TMA would bring the real rows there, and 0 * NaN in P V must not happen.
 *   - Ragged ends (CLIP's lengths are 64k + 1). The last key tile is multiplied only as wide as the keys left
 *     (16 or 80), S and P V, last in the pipeline; a last query block of at most 64 rows is shared by all
 *     consumers, each taking part of the key tiles, merged through shared memory at the end. With three consumers
 *     at head dim 64, one of at most 8 rows (CLIP's one row past 3 x 192) is no work item at all: it rides on one
 *     of its head's full blocks, computed by the producer warpgroup's idle warps from the same K/V tiles
 *     (V4Rider).
 *   - Persistent blocks: one wave of blocks, each looping over work items (a query block of one head). A block's
 *     fixed costs (launch, barrier setup, the first Q and K/V loads, the pipeline's fill and drain) were about half
 *     of its time at CLIP's lengths; now the producer streams the next item's K/V into the ring while the consumers
 *     finish the current one, and each consumer loads its next Q rows under the current item's tiles.
 * A consumer with no rows left (past seq_q, or past its causal limit) still waits for and releases every tile,
 * so the producer never waits on it forever.
 *
 * The roles' pieces, in attention_v4/: traits.cuh (tile shapes, register split, barrier ids, shared-memory budget),
 * producer.cuh (the cp.async fallback), riders.cuh (V4Rider), consumer.cuh (Q rows, one tile's wgmma issue and
 * rescale, turns), epilogue.cuh (the split block's merge, the row stores). attention_v4_kernel below composes them:
 * the work items' order, the producer's loop, the riders' loop and the consumers' main loop are still in its body,
 * since moved into functions of their own they compiled to different instructions or registers. This file also
 * holds the host side: tensor maps and launchers.
 */
#include <cuda.h>
#include <cudaTypedefs.h>  // PFN_cuTensorMapEncodeTiled
#include <cuda_runtime.h>
#include <cuda_fp16.h>
#include <cuda_bf16.h>
#include <stdint.h>

#include <algorithm>
#include <atomic>
#include <climits>
#include <type_traits>

#include "flashclip.h"
#include "flashclip_head_dims.h"
#include "dtype.cuh"
#include "ptx.cuh"
#include "warp_specialization.cuh"
#include "wgmma.cuh"
#include "attention_mask.cuh"
#include "online_softmax.cuh"
#include "attention_v4/consumer.cuh"
#include "attention_v4/epilogue.cuh"
#include "attention_v4/producer.cuh"
#include "attention_v4/riders.cuh"
#include "attention_v4/traits.cuh"

namespace flashclip::attention {
namespace {

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

/* kTailN > 0: the last key tile holds at most kTailN keys (seq_k % kBlockN, rounded up to 16; the launcher picks it
 * only without causal masking or key_lens) and is multiplied that narrow. It is the item's last slot, run after the
 * loop (S and the previous P V, its softmax, then its own P V of kTailN / 16 k steps), so the loop body stays one
 * shape (taking it first, its P V full width in the loop, measured slower: H100, B16 N577 D64 73.9 against 72.5 us).
 * Persistent: block j takes work items j, j + gridDim.x, ...; the ring's slots run on from item to item, so the
 * producer loads the next item's K/V while the consumers finish this one, and each consumer loads its next Q rows
 * under this item's tiles. */
template <class Traits, int kTailN>
__global__ void __launch_bounds__(Traits::kThreads, Traits::kMinBlocks)
    attention_v4_kernel(const fc_attention_params p, const __grid_constant__ CUtensorMap k_map,
                        const __grid_constant__ CUtensorMap v_map, int split_last_block, int riders) {
#if defined(__CUDA_ARCH__) && !defined(__CUDA_ARCH_FEAT_SM90_ALL)
    // wgmma, TMA and setmaxnreg exist only in sm_90a code; the launcher refuses other devices.
    __trap();
#elif defined(__CUDA_ARCH__)
    constexpr float kLog2e = 1.4426950408889634f;
    using Elem = typename Traits::Elem;
    using Consumer = V4Consumer<Traits>;
    constexpr int kBlockM = Traits::kBlockM;
    constexpr int kBlockN = Traits::kBlockN;
    constexpr int kStages = Traits::kStages;
    constexpr int kConsumers = Traits::kConsumers;
    constexpr int kSw = Traits::kSwizzleBytes;
    constexpr int kQStride = Traits::kSmemRowStride;
    static_assert(kTailN % 16 == 0 && kTailN < kBlockN, "a narrow tile is whole k steps, narrower than a tile");

    extern __shared__ __align__(1024) unsigned char smem_raw[];
    unsigned char *smem = smem_raw + ((1024 - (smem_addr(smem_raw) & 1023)) & 1023);
    Elem *q_tile = reinterpret_cast<Elem *>(smem);
    unsigned char *ones = smem + Traits::kQTileBytes;
    unsigned char *k_tiles = ones + Traits::kOnesBytes;
    unsigned char *v_tiles = k_tiles + kStages * Traits::kKVTileBytes;
    float *partials = reinterpret_cast<float *>(v_tiles + kStages * Traits::kKVTileBytes);
    unsigned char *rider_region = reinterpret_cast<unsigned char *>(partials) + Traits::kPartialBytes;
    uint64_t *full = reinterpret_cast<uint64_t *>(rider_region + Traits::kRiderBytes);
    uint64_t *empty = full + kStages;

    const int tid = threadIdx.x;
    // Read through a shuffle so that ptxas knows it is warp-uniform: branches on it (and on what derives from it,
    // such as a consumer's ring slots) then keep the wgmma inside them asynchronous.
    const int warpgroup = __shfl_sync(0xffffffffu, tid / 128, 0);
    const int lane = tid % 32;

    const bool causal = p.causal != 0;
    // With riders (the launcher's v4_riders), the last query block of each head is no item of its own.
    const int items_per_head = (p.seq_q + kBlockM - 1) / kBlockM - (riders != 0 ? 1 : 0);
    const int n_items = items_per_head * p.heads_q * p.batch;
    // The item order. Blocks take items round-robin, so neighbouring items run at the same time: a head's query
    // blocks next to each other keep its K/V in L2 while they run (every head's block of one rank at once read
    // 132 heads' K/V per round and measured 16-28% slower at head dims 96-128). A last query block shorter than
    // the others (CLIP's 64k + 1 rows) costs less: every head's goes to the end, after the full blocks, so that
    // the light items spread over the blocks and fill the last round (head-major, the light last blocks of a
    // 2-block head landed on the same half of the blocks every round: +10% at N 257; each head's right after its
    // full blocks, in segments of a grid's worth of them: +3% at N 577). With causal masking: the costliest (last)
    // query blocks of every head first. Recomputed from the parameters per item rather than kept live across the
    // consumers' loop (registers).
    const auto item_at = [&](int i) {
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
    };
    // K/V tiles an item needs.
    const auto item_tiles = [&](const V4Item &it, int key_limit) {
        const int key_end = causal ? min(key_limit, min(it.m_block + kBlockM, p.seq_q)) : key_limit;
        return (key_end + kBlockN - 1) / kBlockN;
    };
    // A last query block of at most 64 rows (seq_q = 64k + 1 at CLIP's lengths) would leave all consumers but the
    // first idle for an item's time: there they all take those rows, split the key tiles and merge.
    const auto item_split = [&](const V4Item &it) {
        return Traits::kCanSplit && split_last_block != 0 && !causal && it.m_block + 64 >= p.seq_q;
    };

    if (tid < Traits::kOnesBytes / 16) {
        const uint32_t one = pack2<Elem>(1.f, 1.f);
        *reinterpret_cast<uint4 *>(ones + 16 * tid) = make_uint4(one, one, one, one);
        fence_proxy_async();  // read by the tensor cores
    }
    if (tid == 0) {
        for (int s = 0; s < kStages; ++s) {
            mbarrier_init(&full[s], 1);                 // the producer's one arrival (+ the TMA bytes)
            mbarrier_init(&empty[s], 4 * kConsumers + (riders != 0 ? 3 : 0));  // one per consumer (rider) warp
        }
        asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
    }
    __syncthreads();

    if (warpgroup == 0) {
        // ---------------------------------------------------------------- producer
        setmaxnreg_dec<Traits::kProducerRegs>();
        if (tid < 32) {
        int g = 0;  // ring slot, counted over the block's items
        for (int item = blockIdx.x; item < n_items; item += gridDim.x) {
            const V4Item it = item_at(item);
            const int hk = it.h / (p.heads_q / p.heads_kv);
            const int key_limit = batch_key_limit(p.key_lens, it.b, p.seq_k);
            const int n_tiles = item_tiles(it, key_limit);
            const Elem *k = static_cast<const Elem *>(p.k) + it.b * p.k_batch_stride + hk * p.k_head_stride;
            const Elem *v = static_cast<const Elem *>(p.v) + it.b * p.v_batch_stride + hk * p.v_head_stride;
            for (int t = 0; t < n_tiles; ++t, ++g) {
                const int stage = g % kStages;
                if (g >= kStages) mbarrier_wait(&empty[stage], (g / kStages - 1) & 1);
                unsigned char *k_stage = k_tiles + stage * Traits::kKVTileBytes;
                unsigned char *v_stage = v_tiles + stage * Traits::kKVTileBytes;
                const int key0 = t * kBlockN;
                if (key0 + kBlockN > key_limit && key_limit < p.seq_k) {
                    load_kv_rows_zero_filled<Traits, kBlockN>(k_stage, k, p.k_seq_stride, key0, key_limit, lane);
                    load_kv_rows_zero_filled<Traits, kBlockN>(v_stage, v, p.v_seq_stride, key0, key_limit, lane);
                    cp_async_commit();
                    cp_async_wait<0>();
                    fence_proxy_async();  // generic-proxy writes, read by the tensor cores
                    __syncwarp();
                    if (lane == 0) mbarrier_arrive(&full[stage]);
                } else if (lane == 0) {
                    mbarrier_arrive_expect_tx(&full[stage], 2 * Traits::kKVTileBytes);
#pragma unroll
                    for (int a = 0; a < Traits::kAtoms; ++a) {
                        tma_load_4d(k_stage + a * kBlockN * kSw, &k_map, a * Traits::kAtomCols, key0, hk, it.b,
                                    &full[stage]);
                        tma_load_4d(v_stage + a * kBlockN * kSw, &v_map, a * Traits::kAtomCols, key0, hk, it.b,
                                    &full[stage]);
                    }
                }
            }
        }
        return;
        }
        if constexpr (Traits::kRiders) {
            if (riders != 0) {
                // ---------------------------------------------------------- riders (V4Rider)
                using Rider = V4Rider<Traits>;
                // Opaque copies: computed here, not kept live (or spilled) through the other warps' code.
                int rider_lane = tid % 32, rider_warp = tid / 32 - 1;
                asm volatile("" : "+r"(rider_lane), "+r"(rider_warp));
                rider_warp = __shfl_sync(0xffffffffu, rider_warp, 0);
                const float scale_log2 = p.softmax_scale * kLog2e;
                const int rows = p.seq_q - items_per_head * kBlockM;
                int g = 0;
                for (int item = blockIdx.x; item < n_items; item += gridDim.x) {
                    const V4Item it = item_at(item);
                    const int key_limit = batch_key_limit(p.key_lens, it.b, p.seq_k);
                    const int n_tiles = item_tiles(it, key_limit);
                    // The head's rows ride on one of its full blocks, a different one from head to head, so that
                    // the blocks that take every third item (132 SMs) do not all carry them.
                    const bool rides = it.m_block / kBlockM == (it.b * p.heads_q + it.h) % items_per_head;
                    typename Rider::State st;
                    if (rides) {
                        const Elem *q = static_cast<const Elem *>(p.q) + it.b * p.q_batch_stride +
                                        it.h * p.q_head_stride + (long long)items_per_head * kBlockM * p.q_seq_stride;
                        Rider::begin(st, rider_region, q, p.q_seq_stride, rows, rider_warp, rider_lane);
                    }
                    for (int t = 0; t < n_tiles; ++t, ++g) {
                        const int stage = g % kStages;
                        mbarrier_wait(&full[stage], (g / kStages) & 1);
                        if (rides)
                            Rider::tile(st, rider_region, k_tiles + stage * Traits::kKVTileBytes,
                                        v_tiles + stage * Traits::kKVTileBytes, t * kBlockN,
                                        key_limit, scale_log2, rider_warp, rider_lane);
                        __syncwarp();
                        if (rider_lane == 0) mbarrier_arrive(&empty[stage]);
                    }
                    if (rides) {
                        const long long row0 = (long long)items_per_head * kBlockM;
                        Elem *o = static_cast<Elem *>(p.o) + it.b * p.o_batch_stride + it.h * p.o_head_stride +
                                  row0 * p.o_seq_stride;
                        float *lse = p.lse == nullptr
                                         ? nullptr
                                         : p.lse + ((long long)it.b * p.heads_q + it.h) * p.seq_q + row0;
                        Rider::finish(st, rider_region, o, p.o_seq_stride, lse, rows, rider_warp, rider_lane);
                    }
                }
            }
        }
        return;
    }

    // -------------------------------------------------------------------- consumers
    setmaxnreg_inc<Traits::kConsumerRegs>();
    const int consumer = warpgroup - 1;
    const int ctid = tid - 128 * warpgroup;  // 0..127 within the group
    const int warp_in_group = ctid / 32;
    const int group = lane / 4, thread_in_group = lane % 4;
    const float scale_log2 = p.softmax_scale * kLog2e;
    Elem *my_q = q_tile + 64 * consumer * kQStride;
    // The first query row of this consumer's rows in an item (in a split item all consumers take the same rows).
    const auto group_row0_of = [&](const V4Item &it, bool split) { return split ? it.m_block : it.m_block + 64 * consumer; };
    const auto load_q = [&](int item) {
        const V4Item it = item_at(item);
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
    if (blockIdx.x < n_items) load_q(blockIdx.x);
    for (int item = blockIdx.x; item < n_items; item += gridDim.x) {
        const V4Item it = item_at(item);
        const int key_limit = batch_key_limit(p.key_lens, it.b, p.seq_k);
        const int n_tiles = item_tiles(it, key_limit);
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
            group_row0 >= p.seq_q ? 0 : causal ? min(key_limit, min(group_row0 + 64, p.seq_q)) : key_limit;
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
        const int warp_unmasked_end = causal ? min(key_limit, warp_row0 + 1) : key_limit;
        int my_key_limit[2];
#pragma unroll
        for (int r = 0; r < 2; ++r) my_key_limit[r] = row_key_limit(key_limit, warp_row0 + group + 8 * r, causal);

        // Q rows: landed (every thread's part), into registers, then the shared rows take the next item's.
        uint32_t q_frag[Traits::kQKSteps][4];
        cp_async_wait<0>();
        named_barrier_sync(Traits::q_rows_barrier(consumer), 128);
        const Elem *q_warp = my_q + (16 * warp_in_group + lane % 16) * kQStride + 8 * (lane / 16);
#pragma unroll
        for (int kk = 0; kk < Traits::kQKSteps; ++kk) ldmatrix_x4(q_frag[kk], q_warp + 16 * kk);
        named_barrier_sync(Traits::q_rows_barrier(consumer), 128);
        if (item + gridDim.x < n_items) load_q(item + gridDim.x);

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
#endif
}

/* cuTensorMapEncodeTiled, from the driver through the runtime (no libcuda link). */
PFN_cuTensorMapEncodeTiled_v12000 tensor_map_encoder() {
    static const PFN_cuTensorMapEncodeTiled_v12000 encode = [] {
        void *fn = nullptr;
        cudaDriverEntryPointQueryResult found;
        if (cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &fn, 12000, cudaEnableDefault, &found) !=
                cudaSuccess ||
            found != cudaDriverEntryPointSuccess)
            return (PFN_cuTensorMapEncodeTiled_v12000) nullptr;
        return reinterpret_cast<PFN_cuTensorMapEncodeTiled_v12000>(fn);
    }();
    return encode;
}

/* The tensor map of K or V for Traits: dims (head_dim, seq_k, heads_kv, batch) with the view's strides, boxes of
 * kAtomCols x kBlockN, swizzled as the wgmma descriptors read them. */
template <class Traits>
cudaError_t kv_tensor_map(CUtensorMap *map, const void *base, long long batch_stride, long long seq_stride,
                          long long head_stride, const fc_attention_params &p) {
    const PFN_cuTensorMapEncodeTiled_v12000 encode = tensor_map_encoder();
    if (encode == nullptr) return cudaErrorNotSupported;
    constexpr long long kElem = 2;
    const cuuint64_t dims[4] = {(cuuint64_t)p.head_dim, (cuuint64_t)p.seq_k, (cuuint64_t)p.heads_kv,
                                (cuuint64_t)p.batch};
    // A dimension of extent 1 is never stepped over: give it a stride the encoder accepts whatever the view says.
    const auto stride = [](long long s, int extent) { return (cuuint64_t)(extent == 1 ? 16 : s * kElem); };
    const cuuint64_t strides[3] = {stride(seq_stride, p.seq_k), stride(head_stride, p.heads_kv),
                                   stride(batch_stride, p.batch)};
    const cuuint32_t box[4] = {(cuuint32_t)Traits::kAtomCols, (cuuint32_t)Traits::kBlockN, 1, 1};
    const cuuint32_t element_strides[4] = {1, 1, 1, 1};
    const CUtensorMapSwizzle swizzle = Traits::kSwizzleBytes == 128  ? CU_TENSOR_MAP_SWIZZLE_128B
                                       : Traits::kSwizzleBytes == 64 ? CU_TENSOR_MAP_SWIZZLE_64B
                                                                     : CU_TENSOR_MAP_SWIZZLE_32B;
    const CUtensorMapDataType dtype = std::is_same<typename Traits::Elem, __half>::value
                                          ? CU_TENSOR_MAP_DATA_TYPE_FLOAT16
                                          : CU_TENSOR_MAP_DATA_TYPE_BFLOAT16;
    const CUresult r = encode(map, dtype, 4, const_cast<void *>(base), dims, strides, box, element_strides,
                              CU_TENSOR_MAP_INTERLEAVE_NONE, swizzle, CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
                              CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
    return r == CUDA_SUCCESS ? cudaSuccess : cudaErrorInvalidValue;
}

/* The last K and V tensor maps this host thread encoded for Traits, with what they were encoded from: a model
 * launches every layer's attention on the same buffers, and encoding costs host time on every launch of a
 * latency-bound (batch 1) forward. */
struct KVMapKey {
    const void *k, *v;
    long long k_strides[3], v_strides[3];
    int batch, seq_k, heads_kv, head_dim;
    bool operator==(const KVMapKey &o) const {
        return k == o.k && v == o.v && batch == o.batch && seq_k == o.seq_k && heads_kv == o.heads_kv &&
               head_dim == o.head_dim && std::equal(k_strides, k_strides + 3, o.k_strides) &&
               std::equal(v_strides, v_strides + 3, o.v_strides);
    }
};

template <class Traits>
cudaError_t kv_tensor_maps(const fc_attention_params &p, CUtensorMap *k_map, CUtensorMap *v_map) {
    struct Cache {
        bool valid = false;
        KVMapKey key;
        CUtensorMap k, v;
    };
    static thread_local Cache cache;
    const KVMapKey key{p.k,
                       p.v,
                       {p.k_batch_stride, p.k_seq_stride, p.k_head_stride},
                       {p.v_batch_stride, p.v_seq_stride, p.v_head_stride},
                       p.batch,
                       p.seq_k,
                       p.heads_kv,
                       p.head_dim};
    if (!(cache.valid && cache.key == key)) {
        cache.valid = false;
        cudaError_t err = kv_tensor_map<Traits>(&cache.k, p.k, p.k_batch_stride, p.k_seq_stride, p.k_head_stride, p);
        if (err == cudaSuccess)
            err = kv_tensor_map<Traits>(&cache.v, p.v, p.v_batch_stride, p.v_seq_stride, p.v_head_stride, p);
        if (err != cudaSuccess) return err;
        cache.key = key;
        cache.valid = true;
    }
    *k_map = cache.k;
    *v_map = cache.v;
    return cudaSuccess;
}

/* The SM count of the current device, asked once per device (every launch needs it). */
int current_sm_count() {
    constexpr int kDevices = 64;
    static std::atomic<int> counts[kDevices] = {};  // 0: not asked yet
    int device = 0;
    if (cudaGetDevice(&device) != cudaSuccess) return 0;
    const bool cached = device >= 0 && device < kDevices;
    if (cached && counts[device].load(std::memory_order_relaxed) > 0) return counts[device].load(std::memory_order_relaxed);
    int sms = 0;
    if (cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device) != cudaSuccess) return 0;
    if (cached) counts[device].store(sms, std::memory_order_relaxed);
    return sms;
}

/* Whether the last query block of each head rides on a full one (V4Rider): a block of at most kRiderRows rows
 * after one or more full ones, without causal masking (whose item order and key limits per row it does not
 * follow). */
template <class Traits>
bool v4_riders(const fc_attention_params &p) {
    const int last_rows = p.seq_q % Traits::kBlockM;
    return Traits::kRiders && p.causal == 0 && p.seq_q > Traits::kBlockM && last_rows > 0 &&
           last_rows <= Traits::kRiderRows;
}

template <class Traits, int kTailN>
int launch_v4_kernel(const fc_attention_params &p, cudaStream_t stream) {
    CUtensorMap k_map, v_map;
    cudaError_t err = kv_tensor_maps<Traits>(p, &k_map, &v_map);
    if (err != cudaSuccess) return (int)err;
    const auto kernel = attention_v4_kernel<Traits, kTailN>;
    err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)Traits::kSmemBytes);
    if (err != cudaSuccess) return (int)err;
    // Persistent: as many blocks as fit at once (one wave), each looping over its work items.
    const bool riders = v4_riders<Traits>(p);
    const long long items = (long long)((p.seq_q + Traits::kBlockM - 1) / Traits::kBlockM - (riders ? 1 : 0)) *
                            p.heads_q * p.batch;
    const int sms = current_sm_count();
    if (sms <= 0) return (int)cudaErrorInvalidDevice;
    if (items > INT_MAX) return (int)cudaErrorInvalidValue;
    const int grid = (int)std::min<long long>(items, (long long)sms * Traits::kMinBlocks);
    // split_last_block is always 1 since the plain pipeline left; the kernel keeps the flag so that its code stays
    // as measured.
    kernel<<<grid, Traits::kThreads, Traits::kSmemBytes, stream>>>(p, k_map, v_map, 1, riders ? 1 : 0);
    return (int)cudaGetLastError();
}

/* The shape decides two things per launch: a narrow last key tile (16 or 80 keys wide, where the keys left past
 * the full tiles fit: CLIP's lengths are 64k + 1) and a key split among the consumers of a last query block of at
 * most 64 rows. */
template <class Traits>
int launch_v4(const fc_attention_params &p, cudaStream_t stream) {
    // One consumer (two blocks per SM, 128 registers a thread at launch) has no room for the narrow tile's scores.
    if constexpr (Traits::kConsumers > 1) {
        const int left = p.seq_k % Traits::kBlockN;
        const bool narrow = p.causal == 0 && p.key_lens == nullptr;
        if (narrow && left > 0 && left <= 16) return launch_v4_kernel<Traits, 16>(p, stream);
        if constexpr (Traits::kBlockN > 80) {
            if (narrow && left > 64 && left <= 80) return launch_v4_kernel<Traits, 80>(p, stream);
        }
    }
    return launch_v4_kernel<Traits, 0>(p, stream);
}

/* Three consumers (Wide) when their blocks fill more than one wave of SMs without causal masking, else Small. */
template <class Wide, class Small>
int launch_v4_by_grid(const fc_attention_params &p, cudaStream_t stream) {
    const long long blocks = (long long)((p.seq_q + Wide::kBlockM - 1) / Wide::kBlockM) * p.heads_q * p.batch;
    if (p.causal == 0 && blocks > current_sm_count()) return launch_v4<Wide>(p, stream);
    return launch_v4<Small>(p, stream);
}

/* Head dim 64 without causal masking takes three consumers of 96-key tiles, in ping-pong turns, when the 192-row
 * blocks fill more than one wave of SMs (batch 16, H100, fp16, same run: N 577 72.5 us against 74.9 without turns
 * and 86.5 for two consumers of 64-key tiles; N 257 24.9 against 29.2), head dim 80 three of 64-key tiles (N 257:
 * 33.9 against 41.1; 34.2 with turns; 96-key tiles do not fit six stages in shared memory), two consumers of 64-key
 * tiles otherwise (batch 1, where one block's latency is the time): the tile sweep of benches/attention.rs. */
template <typename Elem, int kHeadDim>
int launch_v4_for_head_dim(const fc_attention_params &p, cudaStream_t stream) {
    using Config = typename FlashV4Config<Elem, kHeadDim>::Traits;
    if constexpr (kHeadDim == 64)
        return launch_v4_by_grid<FlashV4Traits<Elem, 64, 96, 6, 3, true>, Config>(p, stream);
    else if constexpr (kHeadDim == 80)
        return launch_v4_by_grid<FlashV4Traits<Elem, 80, 64, 6, 3>, Config>(p, stream);
    else
        return launch_v4<Config>(p, stream);
}

/* The one place where runtime shape/dtype choices become v4 template instantiations. */
template <typename Elem>
int dispatch_v4(const fc_attention_params &p, cudaStream_t stream) {
    switch (p.head_dim) {
#define FC_CASE(D) \
    case D: return launch_v4_for_head_dim<Elem, D>(p, stream);
        FC_FLASH_HEAD_DIMS(FC_CASE)
#undef FC_CASE
        default: return (int)cudaErrorInvalidValue;
    }
}

#ifdef FLASHCLIP_TUNING
/* The tile shapes of the sweep entry (FC_V4_TILES_*); two stages where two blocks share an SM. Three consumers
 * and two blocks per SM spill at head dim 80. */
template <typename Elem, int kHeadDim>
int launch_v4_tiles(const fc_attention_params &p, fc_v4_tiles tiles, cudaStream_t stream) {
    switch (tiles) {
        case FC_V4_TILES_WG2_N128: return launch_v4<FlashV4Traits<Elem, kHeadDim, 128, 4, 2>>(p, stream);
        case FC_V4_TILES_WG2_N64: return launch_v4<FlashV4Traits<Elem, kHeadDim, 64, 4, 2>>(p, stream);
        case FC_V4_TILES_WG3_N64: return launch_v4<FlashV4Traits<Elem, kHeadDim, 64, 6, 3>>(p, stream);
        case FC_V4_TILES_WG2_N64_PINGPONG: return launch_v4<FlashV4Traits<Elem, kHeadDim, 64, 4, 2, true>>(p, stream);
        case FC_V4_TILES_WG3_N64_PINGPONG: return launch_v4<FlashV4Traits<Elem, kHeadDim, 64, 6, 3, true>>(p, stream);
        default: break;
    }
    if constexpr (kHeadDim == 64) {
        switch (tiles) {
            case FC_V4_TILES_WG3_N96: return launch_v4<FlashV4Traits<Elem, kHeadDim, 96, 6, 3>>(p, stream);
            case FC_V4_TILES_WG3_N96_PINGPONG:
                return launch_v4<FlashV4Traits<Elem, kHeadDim, 96, 6, 3, true>>(p, stream);
            case FC_V4_TILES_WG1_N128: return launch_v4<FlashV4Traits<Elem, kHeadDim, 128, 2, 1>>(p, stream);
            default: break;
        }
    }
    return (int)cudaErrorInvalidValue;
}

template <typename Elem>
int dispatch_v4_tiles(const fc_attention_params &p, fc_v4_tiles tiles, cudaStream_t stream) {
    switch (p.head_dim) {
        case 64: return launch_v4_tiles<Elem, 64>(p, tiles, stream);
        case 80: return launch_v4_tiles<Elem, 80>(p, tiles, stream);
        default: return (int)cudaErrorInvalidValue;
    }
}
#endif

}  // namespace
}  // namespace flashclip::attention

#ifdef FLASHCLIP_TUNING
extern "C" int fc_attention_v4_tiles(const fc_attention_params *p, fc_dtype dtype, fc_v4_tiles tiles,
                                     cudaStream_t stream) {
    using namespace flashclip::attention;
    switch (dtype) {
        case FC_F16: return dispatch_v4_tiles<__half>(*p, tiles, stream);
        case FC_BF16: return dispatch_v4_tiles<__nv_bfloat16>(*p, tiles, stream);
        default: return (int)cudaErrorInvalidValue;
    }
}
#endif

extern "C" int fc_attention_v4(const fc_attention_params *p, fc_dtype dtype, cudaStream_t stream) {
    using namespace flashclip::attention;
    switch (dtype) {
        case FC_F16: return dispatch_v4<__half>(*p, stream);
        case FC_BF16: return dispatch_v4<__nv_bfloat16>(*p, stream);
        default: return (int)cudaErrorInvalidValue;
    }
}
