/* The GEMM's epilogue: each consumer thread applies the fused operation to its fp32 accumulators and writes them
 * out, either straight from registers, two adjacent columns (4 bytes) at a time, or through a swizzled staging tile
 * in shared memory that TMA stores (Store in traits.cuh). The bias (and the activation's inputs) never make a round
 * trip through memory: the separate bias+activation pass this replaces read and wrote the whole output once more. */
#ifndef FLASHCLIP_GEMM_EPILOGUE_CUH
#define FLASHCLIP_GEMM_EPILOGUE_CUH

#include <cuda.h>
#include <stdint.h>

#include "../activation.cuh"
#include "../dtype.cuh"
#include "../warp_specialization.cuh"
#include "../wgmma.cuh"
#include "flashclip.h"
#include "scheduler.cuh"
#include "traits.cuh"

namespace flashclip::gemm {

/* One consumer warpgroup's epilogue. `staging`: its staging tile and `y_map`: y's TMA map (Store::kTma only);
 * `consumer`, `warp` (in the warpgroup) and `lane` place the thread. */
template <class Traits, fc_gemm_epilogue kEpilogue, fc_activation kAct>
struct Epilogue {
    using Elem = typename Traits::Elem;
    using Pair = typename std::conditional<std::is_same<Elem, __half>::value, __half2, __nv_bfloat162>::type;

    unsigned char *staging;
    const CUtensorMap *y_map;
    int consumer, warp, lane;

    static __device__ __forceinline__ float2 load_pair(const Elem *p) {
        const Pair v = *reinterpret_cast<const Pair *>(p);
        return make_float2(to_float(v.x), to_float(v.y));
    }

    /* Rows [row0, row0 + 64) and columns [col0, col0 + kBlockN) of y: warp w of the warpgroup holds rows 16w + g
     * and 16w + g + 8, columns 8i + 2t and 8i + 2t + 1 (g = lane / 4, t = lane % 4). Calls write(r, c, pair) with
     * the pair's place in that 64 x kBlockN block, for every pair inside the matrix: n is a multiple of 8, so a
     * pair is either inside or wholly past its edge. */
    template <class Write>
    __device__ __forceinline__ void apply(const float (&acc)[Traits::kBlockN / 2], const fc_gemm_params &p, int row0,
                                         int col0, Write write) const {
        const Elem *bias = static_cast<const Elem *>(p.bias);
        const Elem *residual = static_cast<const Elem *>(p.residual);
#pragma unroll
        for (int i = 0; i < Traits::kBlockN / 8; ++i) {
            const int c = 8 * i + 2 * (lane % 4), col = col0 + c;
            if (col >= p.n) continue;
            float2 b = make_float2(0.f, 0.f);
            if constexpr (kEpilogue != FC_GEMM_PLAIN) b = load_pair(bias + col);
#pragma unroll
            for (int half = 0; half < 2; ++half) {
                const int r = 16 * warp + lane / 4 + 8 * half, row = row0 + r;
                if (row >= p.m) continue;
                float v0 = acc[4 * i + 2 * half] + b.x, v1 = acc[4 * i + 2 * half + 1] + b.y;
                if constexpr (kEpilogue == FC_GEMM_BIAS_ACTIVATION) {
                    v0 = activate<Elem, kAct>(v0);
                    v1 = activate<Elem, kAct>(v1);
                } else if constexpr (kEpilogue == FC_GEMM_BIAS_RESIDUAL) {
                    const float2 res = load_pair(residual + (long long)row * p.ld_residual + col);
                    v0 += res.x;
                    v1 += res.y;
                }
                write(r, c, pack2<Elem>(v0, v1));
            }
        }
    }

    /* The warpgroup's 64 rows of `tile` (row_block: the consumer's half of a cooperative tile, 0 for ping-pong's
     * 64-row tiles).
     *
     * TMA store, per tile: thread 0 of the warpgroup waits until its previous tile's stores have read the staging
     * tile, the warpgroup meets (kStoreBarrier + consumer, 128 threads), every thread writes its pairs and fences
     * them for the async proxy, the warpgroup meets again, and thread 0 issues the boxes inside the matrix (the map
     * clips rows and columns past its edges) as one bulk group. Both meetings are the same 128 threads every tile,
     * so they cannot go out of step. A residual read here is y's old value at the thread's own elements, read
     * before the store that overwrites them is issued. */
    __device__ __forceinline__ void store(const float (&acc)[Traits::kBlockN / 2], const fc_gemm_params &p, Tile tile,
                                          int row_block) const {
        const int row0 = tile.m0 + 64 * row_block;
        if constexpr (Traits::kStore == Store::kRegisters) {
            Elem *y = static_cast<Elem *>(p.y) + (long long)row0 * p.ldy + tile.n0;
            apply(acc, p, row0, tile.n0, [&](int r, int c, uint32_t pair) {
                *reinterpret_cast<uint32_t *>(y + (long long)r * p.ldy + c) = pair;
            });
        } else {
            const bool issuer = warp == 0 && lane == 0;
            if (issuer) bulk_wait_group_read();
            named_barrier_sync(Traits::kStoreBarrier + consumer, 128);
            // 64 x 64 boxes of 128-byte rows; the 16-byte chunk c of row r sits at chunk c ^ (r % 8), the 128-byte
            // swizzle of the map, which also spreads a warp's 8 rows over all 32 banks.
            apply(acc, p, row0, tile.n0, [&](int r, int c, uint32_t pair) {
                const int byte = (c % 64) * 2;
                unsigned char *box = staging + (c / 64) * Traits::kStoreBoxBytes;
                *reinterpret_cast<uint32_t *>(box + r * 128 + (((byte / 16) ^ (r % 8)) * 16) + byte % 16) = pair;
            });
            fence_proxy_async();
            named_barrier_sync(Traits::kStoreBarrier + consumer, 128);
            if (issuer && row0 < p.m) {
#pragma unroll
                for (int box = 0; box < Traits::kBlockN / 64; ++box)
                    if (tile.n0 + 64 * box < p.n)
                        tma_store_2d(y_map, staging + box * Traits::kStoreBoxBytes, tile.n0 + 64 * box, row0);
                bulk_commit_group();
            }
        }
    }

    /* Before the block exits: its last stores have completed (they read the staging tile until then). */
    __device__ __forceinline__ void finish() const {
        if constexpr (Traits::kStore == Store::kTma)
            if (warp == 0 && lane == 0) bulk_wait_group();
    }
};

}  // namespace flashclip::gemm

#endif
