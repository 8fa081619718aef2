// Fused bias + residual + LayerNorm, and plain LayerNorm.
//
//   sum = residual + x + bias      (written: it is the next layer's residual stream)
//   y   = (sum - mean) / sqrt(var + eps) * gamma + beta
//
// One block per row. The row stays in registers between the statistics and the output, so each input is read
// once and each output written once; mean and variance are computed in two passes over the registers (no
// E[x^2] - E[x]^2 cancellation) in fp32. Packs of 16 bytes when the width and pointers allow, else 1 element.
#include "common.cuh"

namespace flashclip {

constexpr int kMaxThreads = 512;

// Sum over the block; `scratch` holds one float per warp.
__device__ __forceinline__ float block_sum(float v, float *scratch) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, warps = blockDim.x / 32;
    __syncthreads(); // scratch may still be read by a previous call
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    float total = 0.f;
    for (int w = 0; w < warps; ++w) total += scratch[w];
    return total;
}

// ITEMS packs of N elements per thread; FUSED selects residual + bias + sum output.
template <typename T, int N, int ITEMS, bool FUSED, bool HAS_BIAS>
__global__ void __launch_bounds__(kMaxThreads)
    layernorm_kernel(T *y, long long y_row_stride, T *sum, const T *x, long long x_row_stride, const T *residual,
                     const T *__restrict__ bias, const T *__restrict__ gamma, const T *__restrict__ beta, int cols,
                     float eps) {
    __shared__ float scratch[kMaxThreads / 32];
    const long long row = blockIdx.x;
    const int packs = cols / N;
    const T *x_row = x + row * x_row_stride;
    float v[ITEMS][N];

    float local = 0.f;
#pragma unroll
    for (int it = 0; it < ITEMS; ++it) {
        const int p = threadIdx.x + it * blockDim.x;
        if (p < packs) {
            Pack<T, N> xv = load_pack<T, N>(x_row + p * N);
#pragma unroll
            for (int i = 0; i < N; ++i) v[it][i] = to_float(xv.v[i]);
            if constexpr (FUSED) {
                Pack<T, N> rv = load_pack<T, N>(residual + row * cols + p * N);
#pragma unroll
                for (int i = 0; i < N; ++i) v[it][i] += to_float(rv.v[i]);
                if constexpr (HAS_BIAS) {
                    Pack<T, N> bv = load_pack<T, N>(bias + p * N);
#pragma unroll
                    for (int i = 0; i < N; ++i) v[it][i] += to_float(bv.v[i]);
                }
                // Round the sum to T once, so the normalized output is computed from exactly what is stored.
                Pack<T, N> sv;
#pragma unroll
                for (int i = 0; i < N; ++i) {
                    sv.v[i] = from_float<T>(v[it][i]);
                    v[it][i] = to_float(sv.v[i]);
                }
                store_pack<T, N>(sum + row * cols + p * N, sv);
            }
#pragma unroll
            for (int i = 0; i < N; ++i) local += v[it][i];
        }
    }
    const float mean = block_sum(local, scratch) / cols;

    local = 0.f;
#pragma unroll
    for (int it = 0; it < ITEMS; ++it) {
        const int p = threadIdx.x + it * blockDim.x;
        if (p < packs) {
#pragma unroll
            for (int i = 0; i < N; ++i) {
                const float d = v[it][i] - mean;
                local += d * d;
            }
        }
    }
    const float rstd = rsqrtf(block_sum(local, scratch) / cols + eps);

#pragma unroll
    for (int it = 0; it < ITEMS; ++it) {
        const int p = threadIdx.x + it * blockDim.x;
        if (p < packs) {
            Pack<T, N> g = load_pack<T, N>(gamma + p * N), b = load_pack<T, N>(beta + p * N), out;
#pragma unroll
            for (int i = 0; i < N; ++i)
                out.v[i] = from_float<T>((v[it][i] - mean) * rstd * to_float(g.v[i]) + to_float(b.v[i]));
            store_pack<T, N>(y + row * y_row_stride + p * N, out);
        }
    }
}

template <typename T, int N, bool FUSED, bool HAS_BIAS>
int launch_items(T *y, long long ys, T *sum, const T *x, long long xs, const T *residual, const T *bias,
                 const T *gamma, const T *beta, long long rows, int cols, float eps, cudaStream_t stream) {
    const int packs = cols / N;
    // Fewest packs per thread that keep the block within kMaxThreads: small rows get small blocks, and many of
    // them run per SM.
    auto run = [&](auto items_tag) {
        constexpr int ITEMS = decltype(items_tag)::value;
        const int threads = ((packs + ITEMS - 1) / ITEMS + 31) / 32 * 32;
        layernorm_kernel<T, N, ITEMS, FUSED, HAS_BIAS>
            <<<(unsigned)rows, threads, 0, stream>>>(y, ys, sum, x, xs, residual, bias, gamma, beta, cols, eps);
        return (int)cudaGetLastError();
    };
    // At most 16 (scalar) or 32 (packed) floats of row per thread, so the row stays in registers at 512 threads
    // without spills: widths up to 8192 on any path (16384 on the packed one).
    if (packs <= kMaxThreads) return run(std::integral_constant<int, 1>{});
    if (packs <= 2 * kMaxThreads) return run(std::integral_constant<int, 2>{});
    if (packs <= 4 * kMaxThreads) return run(std::integral_constant<int, 4>{});
    if constexpr (N <= 4) {
        if (packs <= 8 * kMaxThreads) return run(std::integral_constant<int, 8>{});
    }
    if constexpr (N <= 2) {
        if (packs <= 16 * kMaxThreads) return run(std::integral_constant<int, 16>{});
    }
    return (int)cudaErrorInvalidValue;
}

template <typename T, bool FUSED>
int launch(T *y, long long ys, T *sum, const T *x, long long xs, const T *residual, const T *bias, const T *gamma,
           const T *beta, long long rows, int cols, float eps, cudaStream_t stream) {
    constexpr int V = vec16<T>();
    const bool vectorizable = cols % V == 0 && ys % V == 0 && xs % V == 0 && aligned16(y) && aligned16(sum) &&
                              aligned16(x) && aligned16(residual) && aligned16(bias) && aligned16(gamma) &&
                              aligned16(beta);
    if (vectorizable) {
        return bias ? launch_items<T, V, FUSED, true>(y, ys, sum, x, xs, residual, bias, gamma, beta, rows, cols, eps, stream)
                    : launch_items<T, V, FUSED, false>(y, ys, sum, x, xs, residual, bias, gamma, beta, rows, cols, eps, stream);
    }
    return bias ? launch_items<T, 1, FUSED, true>(y, ys, sum, x, xs, residual, bias, gamma, beta, rows, cols, eps, stream)
                : launch_items<T, 1, FUSED, false>(y, ys, sum, x, xs, residual, bias, gamma, beta, rows, cols, eps, stream);
}

} // namespace flashclip

extern "C" int fc_bias_residual_layernorm(void *y, void *sum, const void *x, const void *residual, const void *bias,
                                          const void *gamma, const void *beta, long long rows, int cols, float eps,
                                          fc_dtype dtype, cudaStream_t stream) {
    using namespace flashclip;
    int code = (int)cudaErrorInvalidValue;
    dispatch_dtype(dtype, [&](auto tag) {
        using T = decltype(tag);
        code = launch<T, true>(static_cast<T *>(y), cols, static_cast<T *>(sum), static_cast<const T *>(x), cols,
                               static_cast<const T *>(residual), static_cast<const T *>(bias),
                               static_cast<const T *>(gamma), static_cast<const T *>(beta), rows, cols, eps, stream);
    });
    return code;
}

extern "C" int fc_layernorm(void *y, long long y_row_stride, const void *x, long long x_row_stride, const void *gamma,
                            const void *beta, long long rows, int cols, float eps, fc_dtype dtype,
                            cudaStream_t stream) {
    using namespace flashclip;
    int code = (int)cudaErrorInvalidValue;
    dispatch_dtype(dtype, [&](auto tag) {
        using T = decltype(tag);
        code = launch<T, false>(static_cast<T *>(y), y_row_stride, nullptr, static_cast<const T *>(x), x_row_stride,
                                nullptr, nullptr, static_cast<const T *>(gamma), static_cast<const T *>(beta), rows,
                                cols, eps, stream);
    });
    return code;
}
