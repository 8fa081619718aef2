/* fc_attention_v4's consumers, warpgroups of 64 query rows each that only multiply and run the softmax, each at
 * its own pace: their Q rows into shared memory, one tile's GEMMs (S = Q K_t^T, O += P V and the row sums on the
 * tensor cores) and rescale, and the ping-pong turns. Their main loop is in attention_v4_kernel. */
#ifndef FLASHCLIP_ATTENTION_V4_CONSUMER_CUH
#define FLASHCLIP_ATTENTION_V4_CONSUMER_CUH

#include <cuda_runtime.h>
#include <stdint.h>

#include "../dtype.cuh"
#include "../online_softmax.cuh"
#include "../ptx.cuh"
#include "../warp_specialization.cuh"
#include "../wgmma.cuh"
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

}  // namespace flashclip::attention

#endif
