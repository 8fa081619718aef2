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
 *   - Batches whose key_lens cut a tile short get that tile through cp.async instead, with rows past the limit
 *     zero-filled: TMA would bring the real rows there, and 0 * NaN in P V must not happen.
 *   - Ragged ends (CLIP's lengths are 64k + 1). The last key tile is multiplied only as wide as the keys left
 *     (16 or 80), first in the pipeline; a last query block of at most 64 rows is shared by all consumers, each
 *     taking part of the key tiles, merged through shared memory at the end.
 * A consumer with no rows left (past seq_q, or past its causal limit) still waits for and releases every tile,
 * so the producer never waits on it forever.
 */
#include <cuda.h>
#include <cudaTypedefs.h>  // PFN_cuTensorMapEncodeTiled
#include <cuda_runtime.h>
#include <cuda_fp16.h>
#include <cuda_bf16.h>
#include <stdint.h>

#include <algorithm>
#include <type_traits>

#include "flashclip.h"
#include "attention_ptx.cuh"
#include "attention_traits.cuh"
#include "attention_wgmma.cuh"

namespace flashclip_attention {
namespace {

/* Rows [row0, row0 + kRows) of K or V into a swizzled stage by the 32 lanes of the producer warp, every column
 * block of the padded head dim; rows at or past row_end and padding columns are zero-filled. The fallback of the
 * TMA path for tiles cut by key_lens. */
template <class Traits, int kRows>
__device__ __forceinline__ void load_kv_rows_zero_filled(unsigned char *tile, const typename Traits::Elem *src,
                                                         long long row_stride, int row0, int row_end, int lane) {
    constexpr int kChunks = kRows * Traits::kPaddedChunksPerRow;
    constexpr int kAtomChunks = Traits::kAtomCols / 8;
    constexpr int kSw = Traits::kSwizzleBytes;
    for (int i = lane; i < kChunks; i += 32) {
        const int r = i / Traits::kPaddedChunksPerRow, c = i % Traits::kPaddedChunksPerRow;
        const uint32_t offset = swizzle<kSw>((c / kAtomChunks) * kRows * kSw + r * kSw + 16 * (c % kAtomChunks));
        if (row0 + r < row_end && c < Traits::kChunksPerRow)
            cp_async_16(tile + offset, src + (long long)(row0 + r) * row_stride + 8 * c);
        else
            *reinterpret_cast<uint4 *>(tile + offset) = make_uint4(0u, 0u, 0u, 0u);
    }
}

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

    /* Issue O += P V for the V stage of descriptor v (not waited for): k step kk = keys 16kk..16kk+15. */
    static __device__ __forceinline__ void issue_pv(float (&o)[Traits::kORegs],
                                                    const uint32_t (&p)[Traits::kPVSteps][4], uint64_t v) {
#pragma unroll
        for (int kk = 0; kk < Traits::kPVSteps; ++kk) MmaO::template mma<1>(o, p[kk], desc_advance(v, 16 * kk * kSw), 1);
    }
};

/* What one consumer warp keeps of its 16 rows while the block's consumers merge a split key range: O, and each
 * row's max and (partial) sum, per thread. */
template <class Traits>
struct V4Partial {
    static constexpr int kFloats = Traits::kORegs + 4;
    static constexpr int kBytes = (Traits::kConsumers - 1) * kFloats * 128 * 4;
    static_assert(kBytes <= 2 * Traits::kStages * Traits::kKVTileBytes, "partials fit in the K/V stages");
};

/* kTailN > 0: the last key tile holds at most kTailN keys (seq_k % kBlockN, rounded up to 16; the launcher picks it
 * only without causal masking or key_lens) and is multiplied that narrow. The pipeline takes it first, so the loop
 * body stays one shape: ring slot i holds key tile n_tiles - 1 for i = 0 and i - 1 after. */
template <class Traits, int kTailN>
__global__ void __launch_bounds__(Traits::kThreads, Traits::kMinBlocks)
    attention_v4_kernel(const fc_attention_params p, const __grid_constant__ CUtensorMap k_map,
                        const __grid_constant__ CUtensorMap v_map, int split_last_block) {
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
    unsigned char *k_tiles = smem + Traits::kQTileBytes;
    unsigned char *v_tiles = k_tiles + kStages * Traits::kKVTileBytes;
    uint64_t *full = reinterpret_cast<uint64_t *>(v_tiles + kStages * Traits::kKVTileBytes);
    uint64_t *empty = full + kStages;

    const int tid = threadIdx.x;
    // Read through a shuffle so that ptxas knows it is warp-uniform: branches on it (and on what derives from it,
    // such as a consumer's ring slots) then keep the wgmma inside them asynchronous.
    const int warpgroup = __shfl_sync(0xffffffffu, tid / 128, 0);
    const int lane = tid % 32;

    const int m_block = (gridDim.x - 1 - blockIdx.x) * kBlockM;  // reversed: longest causal blocks start first
    const int h = blockIdx.y, b = blockIdx.z;
    const int hk = h / (p.heads_q / p.heads_kv);
    const bool causal = p.causal != 0;
    const int key_limit = batch_key_limit(p.key_lens, b, p.seq_k);
    // K/V tiles the block needs (computed after the register split in each branch: kept live across it, ptxas
    // spilled it at some head dims).
    const auto block_tiles = [&] {
        const int block_key_end = causal ? min(key_limit, min(m_block + kBlockM, p.seq_q)) : key_limit;
        return (block_key_end + kBlockN - 1) / kBlockN;
    };
    const auto key_tile = [](int slot, int n_tiles) { return kTailN == 0 ? slot : slot == 0 ? n_tiles - 1 : slot - 1; };

    if (tid == 0) {
        for (int s = 0; s < kStages; ++s) {
            mbarrier_init(&full[s], 1);                 // the producer's one arrival (+ the TMA bytes)
            mbarrier_init(&empty[s], 4 * kConsumers);  // one per consumer warp
        }
        asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
    }
    __syncthreads();

    if (warpgroup == 0) {
        // ---------------------------------------------------------------- producer
        setmaxnreg_dec<Traits::kProducerRegs>();
        if (tid >= 32) return;
        const int n_tiles = block_tiles();
        const Elem *k = static_cast<const Elem *>(p.k) + b * p.k_batch_stride + hk * p.k_head_stride;
        const Elem *v = static_cast<const Elem *>(p.v) + b * p.v_batch_stride + hk * p.v_head_stride;
        for (int t = 0; t < n_tiles; ++t) {
            const int stage = t % kStages;
            if (t >= kStages) mbarrier_wait(&empty[stage], (t / kStages - 1) & 1);
            unsigned char *k_stage = k_tiles + stage * Traits::kKVTileBytes;
            unsigned char *v_stage = v_tiles + stage * Traits::kKVTileBytes;
            const int key0 = key_tile(t, n_tiles) * kBlockN;
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
                    tma_load_4d(k_stage + a * kBlockN * kSw, &k_map, a * Traits::kAtomCols, key0, hk, b, &full[stage]);
                    tma_load_4d(v_stage + a * kBlockN * kSw, &v_map, a * Traits::kAtomCols, key0, hk, b, &full[stage]);
                }
            }
        }
        return;
    }

    // -------------------------------------------------------------------- consumers
    setmaxnreg_inc<Traits::kConsumerRegs>();
    const int n_tiles = block_tiles();
    const int consumer = warpgroup - 1;
    const int ctid = tid - 128 * warpgroup;  // 0..127 within the group
    const int warp_in_group = ctid / 32;
    const int group = lane / 4, thread_in_group = lane % 4;
    // A last query block of at most 64 rows (seq_q = 64k + 1 at CLIP's lengths) would leave all consumers but the
    // first idle for a whole block's time: there they all take those rows, split the key tiles and merge through
    // shared memory. Each consumer owns kStages / kConsumers (>= 2) neighbouring stages of the ring and multiplies
    // the slots that land there: the mbarrier phases of a stage are then waited for by one consumer, in order
    // (a parity wait cannot tell a phase from the one two later), and a consumer's two slots in flight (S of one,
    // P V of the one before) are in different stages, so the producer never waits on a release that waits on it.
    constexpr bool kCanSplit = Traits::kCanSplit;
    const bool split = kCanSplit && split_last_block != 0 && !causal && m_block + 64 >= p.seq_q;
    const int round = split ? kStages / kConsumers : kStages;  // own slots per pass around the ring
    const int first_slot = split ? consumer * round : 0;
    const auto slot_of = [&](int j) { return j / round * kStages + first_slot + j % round; };

    const Elem *q = static_cast<const Elem *>(p.q) + b * p.q_batch_stride + h * p.q_head_stride;
    Elem *o = static_cast<Elem *>(p.o) + b * p.o_batch_stride + h * p.o_head_stride;
    Elem *my_q = q_tile + 64 * consumer * kQStride;

    const int group_row0 = split ? m_block : m_block + 64 * consumer;
    const int warp_row0 = group_row0 + 16 * warp_in_group;
    const int group_key_end =
        group_row0 >= p.seq_q ? 0 : causal ? min(key_limit, min(group_row0 + 64, p.seq_q)) : key_limit;
    const int group_tiles = (group_key_end + kBlockN - 1) / kBlockN;  // the tiles this group's rows see
    const int my_slots =
        split ? n_tiles / kStages * round + min(max(n_tiles % kStages - first_slot, 0), round) : group_tiles;
    const int warp_unmasked_end = causal ? min(key_limit, warp_row0 + 1) : key_limit;
    int my_key_limit[2];
#pragma unroll
    for (int r = 0; r < 2; ++r) my_key_limit[r] = row_key_limit(key_limit, warp_row0 + group + 8 * r, causal);
    const float scale_log2 = p.softmax_scale * kLog2e;

    float o_acc[Traits::kORegs];
#pragma unroll
    for (int i = 0; i < Traits::kORegs; ++i) o_acc[i] = 0.f;
    float row_max[2] = {-INFINITY, -INFINITY};
    float row_sum[2] = {0.f, 0.f};

    if (my_slots > 0) {
        uint32_t q_frag[Traits::kQKSteps][4];
        load_q_rows<Traits>(my_q, q, p.q_seq_stride, group_row0, p.seq_q, ctid);
        cp_async_commit();
        cp_async_wait<0>();
        named_barrier_sync(1 + consumer, 128);
        const Elem *q_warp = my_q + (16 * warp_in_group + lane % 16) * kQStride + 8 * (lane / 16);
#pragma unroll
        for (int kk = 0; kk < Traits::kQKSteps; ++kk) ldmatrix_x4(q_frag[kk], q_warp + 16 * kk);

        float s[Traits::kSRegs];
        uint32_t p_frag[Traits::kPVSteps][4];
        float alpha[2];
        // The softmax of the full tile in ring slot i (scores in s), masked where the tile crosses a row's limit.
        auto softmax = [&](int i) {
            const int key0 = key_tile(i, n_tiles) * kBlockN;
            if (key0 + kBlockN > warp_unmasked_end)
                softmax_scores<Traits::kSTiles, true>(s, row_max, row_sum, alpha, my_key_limit, key0, thread_in_group,
                                                      scale_log2);
            else
                softmax_scores<Traits::kSTiles, false>(s, row_max, row_sum, alpha, my_key_limit, key0,
                                                       thread_in_group, scale_log2);
        };
        const uint64_t k_desc0 = Consumer::k_desc(smem_addr(k_tiles));
        const uint64_t v_desc0 = Consumer::v_desc(smem_addr(v_tiles));
        const auto k_base = [&](int i) { return desc_advance(k_desc0, (i % kStages) * Traits::kKVTileBytes); };
        const auto v_base = [&](int i) { return desc_advance(v_desc0, (i % kStages) * Traits::kKVTileBytes); };
        const auto wait_full = [&](int i) { mbarrier_wait(&full[i % kStages], (i / kStages) & 1); };
        // In a split block each tile has one consumer, which releases it for all of them.
        const auto release = [&](int i) {
            __syncwarp();
            if (lane == 0) mbarrier_arrive(&empty[i % kStages], split ? kConsumers : 1);
        };
        // First slot: S, softmax, P.
        int i = slot_of(0);
        wait_full(i);
        bool first_done = false;
        if constexpr (kTailN > 0) {
            if (i == 0) {
                float s_tail[kTailN / 2];
                wgmma_fence();
                Consumer::template issue_qk<kTailN>(s_tail, q_frag, k_base(i));
                wgmma_commit();
                wgmma_wait<0>();
                fence_operand(s_tail);
                softmax_scores<kTailN / 8, true>(s_tail, row_max, row_sum, alpha, my_key_limit,
                                                 (n_tiles - 1) * kBlockN, thread_in_group, scale_log2);
                rescale_and_pack<Elem, kTailN / 8, Traits::kOTiles>(s_tail, o_acc, p_frag, alpha);
                // P V stays full width: zero probabilities against the stage's rows past seq_k, which TMA filled
                // with zeros. Narrowing it too would need a second P V in the loop, and ptxas closes a commit group
                // that ends in either of two branches with a dummy wgmma whose wait also waits for P V (no overlap).
#pragma unroll
                for (int kk = kTailN / 16; kk < Traits::kPVSteps; ++kk)
                    p_frag[kk][0] = p_frag[kk][1] = p_frag[kk][2] = p_frag[kk][3] = 0u;
                first_done = true;
            }
        }
        if (!first_done) {
            wgmma_fence();
            Consumer::template issue_qk<kBlockN>(s, q_frag, k_base(i));
            wgmma_commit();
            wgmma_wait<0>();
            fence_operand(s);
            softmax(i);
            rescale_and_pack<Elem, Traits::kSTiles, Traits::kOTiles>(s, o_acc, p_frag, alpha);
        }

        // Later slots: S_i and P_prev V_prev in flight together; the softmax of slot i runs under P V.
        for (int j = 1; j < my_slots; ++j) {
            const int prev = i;
            i = slot_of(j);
            wait_full(i);
            fence_operand(o_acc);
            fence_operand(p_frag);
            wgmma_fence();
            Consumer::template issue_qk<kBlockN>(s, q_frag, k_base(i));
            wgmma_commit();
            Consumer::issue_pv(o_acc, p_frag, v_base(prev));
            wgmma_commit();
            wgmma_wait<1>();
            fence_operand(s);
            softmax(i);
            wgmma_wait<0>();
            fence_operand(o_acc);
            fence_operand(p_frag);
            release(prev);
            rescale_and_pack<Elem, Traits::kSTiles, Traits::kOTiles>(s, o_acc, p_frag, alpha);
        }

        // The last P V.
        fence_operand(o_acc);
        fence_operand(p_frag);
        wgmma_fence();
        Consumer::issue_pv(o_acc, p_frag, v_base(i));
        wgmma_commit();
        wgmma_wait<0>();
        fence_operand(o_acc);
        release(i);
    }
    if (split) {
        // Every tile was multiplied and released: the K/V stages are free to carry the other consumers' partial
        // results to the first, which merges them (per thread: same rows and columns in every group).
        constexpr int kFloats = V4Partial<Traits>::kFloats;
        float *partial = reinterpret_cast<float *>(k_tiles);
        named_barrier_sync(1 + kConsumers, 128 * kConsumers);
        if (consumer > 0) {
            float *mine = partial + (consumer - 1) * kFloats * 128 + ctid;
#pragma unroll
            for (int r = 0; r < Traits::kORegs; ++r) mine[r * 128] = o_acc[r];
#pragma unroll
            for (int r = 0; r < 2; ++r) {
                mine[(Traits::kORegs + r) * 128] = row_max[r];
                mine[(Traits::kORegs + 2 + r) * 128] = row_sum[r];
            }
        }
        named_barrier_sync(1 + kConsumers, 128 * kConsumers);
        if (consumer > 0) return;
#pragma unroll
        for (int c = 1; c < kConsumers; ++c) {
            const float *theirs = partial + (c - 1) * kFloats * 128 + ctid;
            float scale_mine[2], scale_theirs[2];
#pragma unroll
            for (int r = 0; r < 2; ++r) {
                const float their_max = theirs[(Traits::kORegs + r) * 128];
                const float new_max = fmaxf(row_max[r], their_max);
                // A side that saw no key has max -inf and contributes nothing (never exp2 of -inf - -inf).
                scale_mine[r] = row_max[r] == -INFINITY ? 0.f : exp2_approx((row_max[r] - new_max) * scale_log2);
                scale_theirs[r] = their_max == -INFINITY ? 0.f : exp2_approx((their_max - new_max) * scale_log2);
                row_sum[r] = row_sum[r] * scale_mine[r] + theirs[(Traits::kORegs + 2 + r) * 128] * scale_theirs[r];
                row_max[r] = new_max;
            }
#pragma unroll
            for (int r = 0; r < Traits::kORegs; ++r)
                o_acc[r] = o_acc[r] * scale_mine[(r % 4) / 2] + theirs[r * 128] * scale_theirs[(r % 4) / 2];
        }
    } else {
        // Tiles this group does not need (causal): wait for each, so the release lands in that tile's phase.
        for (int t = group_tiles; t < n_tiles; ++t) {
            mbarrier_wait(&full[t % kStages], (t / kStages) & 1);
            if (lane == 0) mbarrier_arrive(&empty[t % kStages]);
        }
        if (group_row0 >= p.seq_q) return;
    }

    // Epilogue (as v3): the warp's rows staged in its own Q rows, then 16-byte stores.
    store_warp_rows<Elem, Traits::kOTiles, Traits::kChunksPerRow, kQStride>(
        o_acc, row_sum, row_max, scale_log2, my_q + 16 * warp_in_group * kQStride, o, p.o_seq_stride,
        p.lse == nullptr ? nullptr : p.lse + ((long long)b * p.heads_q + h) * p.seq_q, warp_row0, p.seq_q, lane);
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

template <class Traits, int kTailN>
int launch_v4_kernel(const fc_attention_params &p, bool split_last_block, cudaStream_t stream) {
    CUtensorMap k_map, v_map;
    cudaError_t err = kv_tensor_maps<Traits>(p, &k_map, &v_map);
    if (err != cudaSuccess) return (int)err;
    const auto kernel = attention_v4_kernel<Traits, kTailN>;
    err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)Traits::kSmemBytes);
    if (err != cudaSuccess) return (int)err;
    const dim3 grid((p.seq_q + Traits::kBlockM - 1) / Traits::kBlockM, p.heads_q, p.batch);
    kernel<<<grid, Traits::kThreads, Traits::kSmemBytes, stream>>>(p, k_map, v_map, split_last_block ? 1 : 0);
    return (int)cudaGetLastError();
}

/* With `tails`, the shape decides two things per launch: a narrow last key tile (16 or 80 keys wide, where the
 * keys left past the full tiles fit: CLIP's lengths are 64k + 1) and a key split among the consumers of a last
 * query block of at most 64 rows. Without, every tile is full and every consumer owns its rows (the plain
 * pipeline, kept for comparison). */
template <class Traits>
int launch_v4(const fc_attention_params &p, bool tails, cudaStream_t stream) {
    // One consumer (two blocks per SM, 128 registers a thread at launch) has no room for the narrow tile's scores.
    if constexpr (Traits::kConsumers > 1) {
        const int left = p.seq_k % Traits::kBlockN;
        const bool narrow = tails && p.causal == 0 && p.key_lens == nullptr;
        if (narrow && left > 0 && left <= 16) return launch_v4_kernel<Traits, 16>(p, tails, stream);
        if constexpr (Traits::kBlockN > 80) {
            if (narrow && left > 64 && left <= 80) return launch_v4_kernel<Traits, 80>(p, tails, stream);
        }
    }
    return launch_v4_kernel<Traits, 0>(p, tails, stream);
}

int current_sm_count() {
    int device = 0, sms = 0;
    if (cudaGetDevice(&device) != cudaSuccess ||
        cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device) != cudaSuccess)
        return 0;
    return sms;
}

/* The one place where runtime shape/dtype choices become v4 template instantiations. Head dim 64 without causal
 * masking takes three consumers of 96-key tiles when the 192-row blocks fill more than one wave of SMs (N 577:
 * 91 us against 98 for two consumers of 128-key tiles at batch 16; N 257: 30 against 37), two consumers
 * otherwise (batch 1, where one block's latency is the time): the tile sweep of benches/attention.rs. */
template <typename Elem>
int dispatch_v4(const fc_attention_params &p, cudaStream_t stream) {
    switch (p.head_dim) {
        case 64: {
            using Wg3N96 = FlashV4Traits<Elem, 64, 96, 6, 3>;
            const long long blocks =
                (long long)((p.seq_q + Wg3N96::kBlockM - 1) / Wg3N96::kBlockM) * p.heads_q * p.batch;
            if (p.causal == 0 && blocks > current_sm_count()) return launch_v4<Wg3N96>(p, true, stream);
            return launch_v4<typename FlashV4Config<Elem, 64>::Traits>(p, true, stream);
        }
        case 80: return launch_v4<typename FlashV4Config<Elem, 80>::Traits>(p, true, stream);
        case 96: return launch_v4<typename FlashV4Config<Elem, 96>::Traits>(p, true, stream);
        case 104: return launch_v4<typename FlashV4Config<Elem, 104>::Traits>(p, true, stream);
        case 112: return launch_v4<typename FlashV4Config<Elem, 112>::Traits>(p, true, stream);
        case 128: return launch_v4<typename FlashV4Config<Elem, 128>::Traits>(p, true, stream);
        default: return (int)cudaErrorInvalidValue;
    }
}

/* The tile shapes of the sweep entry (FC_V4_TILES_*); two stages where two blocks share an SM. Three consumers
 * and two blocks per SM spill at head dim 80. */
template <typename Elem, int kHeadDim>
int launch_v4_tiles(const fc_attention_params &p, fc_v4_tiles tiles, cudaStream_t stream) {
    using Wg2N128 = FlashV4Traits<Elem, kHeadDim, 128, 4, 2>;
    using Wg3N96 = FlashV4Traits<Elem, kHeadDim, 96, 6, 3>;
    switch (tiles) {
        case FC_V4_TILES_WG2_N128: return launch_v4<Wg2N128>(p, true, stream);
        case FC_V4_TILES_WG2_N128_PLAIN: return launch_v4<Wg2N128>(p, false, stream);
        case FC_V4_TILES_WG2_N64: return launch_v4<FlashV4Traits<Elem, kHeadDim, 64, 4, 2>>(p, true, stream);
        default: break;
    }
    if constexpr (kHeadDim == 64) {
        switch (tiles) {
            case FC_V4_TILES_WG3_N96: return launch_v4<Wg3N96>(p, true, stream);
            case FC_V4_TILES_WG3_N96_PLAIN: return launch_v4<Wg3N96>(p, false, stream);
            case FC_V4_TILES_WG1_N128: return launch_v4<FlashV4Traits<Elem, kHeadDim, 128, 2, 1>>(p, true, stream);
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

}  // namespace
}  // namespace flashclip_attention

extern "C" int fc_attention_v4_tiles(const fc_attention_params *p, fc_dtype dtype, fc_v4_tiles tiles,
                                     cudaStream_t stream) {
    using namespace flashclip_attention;
    switch (dtype) {
        case FC_F16: return dispatch_v4_tiles<__half>(*p, tiles, stream);
        case FC_BF16: return dispatch_v4_tiles<__nv_bfloat16>(*p, tiles, stream);
        default: return (int)cudaErrorInvalidValue;
    }
}

extern "C" int fc_attention_v4(const fc_attention_params *p, fc_dtype dtype, cudaStream_t stream) {
    using namespace flashclip_attention;
    switch (dtype) {
        case FC_F16: return dispatch_v4<__half>(*p, stream);
        case FC_BF16: return dispatch_v4<__nv_bfloat16>(*p, stream);
        default: return (int)cudaErrorInvalidValue;
    }
}
