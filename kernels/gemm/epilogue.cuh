/* The GEMM's epilogue: each consumer thread applies the fused operation to its fp32 accumulators and stores them
 * straight from registers, two adjacent columns (4 bytes) at a time. The bias (and the activation's inputs) never
 * make a round trip through memory: the separate bias+activation pass this replaces read and wrote the whole
 * output once more. */
#ifndef FLASHCLIP_GEMM_EPILOGUE_CUH
#define FLASHCLIP_GEMM_EPILOGUE_CUH

#include "../activation.cuh"
#include "../dtype.cuh"
#include "flashclip.h"
#include "scheduler.cuh"

namespace flashclip::gemm {

template <class Traits, fc_gemm_epilogue kEpilogue, fc_activation kAct>
struct Epilogue {
    using Elem = typename Traits::Elem;
    using Pair = typename std::conditional<std::is_same<Elem, __half>::value, __half2, __nv_bfloat162>::type;

    static __device__ __forceinline__ float2 load_pair(const Elem *p) {
        const Pair v = *reinterpret_cast<const Pair *>(p);
        return make_float2(to_float(v.x), to_float(v.y));
    }

    /* Rows [m0 + 64 * row_block, +64) of the tile (row_block: the consumer's half of a cooperative tile, 0 for
     * ping-pong's 64-row tiles): warp w of the warpgroup holds rows 16w + g and 16w + g + 8,
     * columns 8i + 2t and 8i + 2t + 1 (g = lane / 4, t = lane % 4). n is a multiple of 8, so a pair is either
     * inside the matrix or wholly past its edge. */
    static __device__ __forceinline__ void store(const float (&acc)[Traits::kBlockN / 2], const fc_gemm_params &p,
                                                 Tile tile, int row_block, int warp, int lane) {
        const int row0 = tile.m0 + 64 * row_block + 16 * warp + lane / 4;
        const int col_in_block = 2 * (lane % 4);
        Elem *y = static_cast<Elem *>(p.y);
        const Elem *bias = static_cast<const Elem *>(p.bias);
        const Elem *residual = static_cast<const Elem *>(p.residual);
#pragma unroll
        for (int i = 0; i < Traits::kBlockN / 8; ++i) {
            const int col = tile.n0 + 8 * i + col_in_block;
            if (col >= p.n) continue;
            float2 b = make_float2(0.f, 0.f);
            if constexpr (kEpilogue != FC_GEMM_PLAIN) b = load_pair(bias + col);
#pragma unroll
            for (int half = 0; half < 2; ++half) {
                const int row = row0 + 8 * half;
                if (row >= p.m) continue;
                float v0 = acc[4 * i + 2 * half] + b.x, v1 = acc[4 * i + 2 * half + 1] + b.y;
                if constexpr (kEpilogue == FC_GEMM_BIAS_ACTIVATION) {
                    v0 = activate<Elem, kAct>(v0);
                    v1 = activate<Elem, kAct>(v1);
                } else if constexpr (kEpilogue == FC_GEMM_BIAS_RESIDUAL) {
                    const float2 r = load_pair(residual + (long long)row * p.ld_residual + col);
                    v0 += r.x;
                    v1 += r.y;
                }
                *reinterpret_cast<uint32_t *>(y + (long long)row * p.ldy + col) = pack2<Elem>(v0, v1);
            }
        }
    }
};

}  // namespace flashclip::gemm

#endif
