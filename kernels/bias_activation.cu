// Fused bias + activation: y = act(x + bias), bias broadcast over rows (identity: a plain bias add).
//
// Memory-bound: each element is read once and written once, so the kernel is built for bandwidth: 16-byte
// accesses, several independent loads in flight per thread before the first use, fp32 math. Rows whose width is
// not a multiple of the vector width (or unaligned pointers) take the same kernel with 1-element packs.
#include "activation.cuh"
#include "common.cuh"

namespace flashclip {

constexpr int kThreads = 256;
constexpr int kUnroll = 4; // packs per thread, loaded together to keep memory busy

// Block b covers packs [b * kThreads * kUnroll, (b + 1) * kThreads * kUnroll); thread t takes every kThreads-th
// pack of that range so each warp's accesses stay contiguous. y may alias x: every thread loads its packs before
// it stores them and no two threads share a pack.
template <typename T, int N, fc_activation ACT, bool HAS_BIAS>
__global__ void __launch_bounds__(kThreads) bias_activation_kernel(T *y, const T *x,
                                                                   const T *__restrict__ bias, long long packs,
                                                                   int packs_per_row) {
    const long long first = (long long)blockIdx.x * kThreads * kUnroll + threadIdx.x;
    Pack<T, N> in[kUnroll];
    Pack<T, N> b[kUnroll];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
        const long long p = first + (long long)u * kThreads;
        if (p < packs) {
            in[u] = load_pack<T, N>(x + p * N);
            if (HAS_BIAS) b[u] = load_pack<T, N>(bias + (p % packs_per_row) * N);
        }
    }
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
        const long long p = first + (long long)u * kThreads;
        if (p < packs) {
            Pack<T, N> out;
#pragma unroll
            for (int i = 0; i < N; ++i) {
                float h = to_float(in[u].v[i]);
                if (HAS_BIAS) h += to_float(b[u].v[i]);
                out.v[i] = from_float<T>(activate<T, ACT>(h));
            }
            store_pack<T, N>(y + p * N, out);
        }
    }
}

template <typename T, int N, fc_activation ACT>
void launch(T *y, const T *x, const T *bias, long long rows, int cols, cudaStream_t stream) {
    const int packs_per_row = cols / N;
    const long long packs = rows * packs_per_row;
    const long long per_block = (long long)kThreads * kUnroll;
    const unsigned blocks = (unsigned)((packs + per_block - 1) / per_block);
    if (bias) {
        bias_activation_kernel<T, N, ACT, true><<<blocks, kThreads, 0, stream>>>(y, x, bias, packs, packs_per_row);
    } else {
        bias_activation_kernel<T, N, ACT, false><<<blocks, kThreads, 0, stream>>>(y, x, bias, packs, packs_per_row);
    }
}

template <typename T, fc_activation ACT>
void launch_vector_or_scalar(T *y, const T *x, const T *bias, long long rows, int cols, cudaStream_t stream) {
    constexpr int V = vec16<T>();
    if (cols % V == 0 && aligned16(y) && aligned16(x) && aligned16(bias)) {
        launch<T, V, ACT>(y, x, bias, rows, cols, stream);
    } else {
        launch<T, 1, ACT>(y, x, bias, rows, cols, stream);
    }
}

} // namespace flashclip

extern "C" int fc_bias_activation(void *y, const void *x, const void *bias, long long rows, int cols,
                                  fc_activation act, fc_dtype dtype, cudaStream_t stream) {
    using namespace flashclip;
    if (act != FC_QUICK_GELU && act != FC_GELU_ERF && act != FC_GELU_TANH && act != FC_IDENTITY)
        return (int)cudaErrorInvalidValue;
    bool ok = dispatch_dtype(dtype, [&](auto tag) {
        using T = decltype(tag);
        T *yt = static_cast<T *>(y);
        const T *xt = static_cast<const T *>(x);
        const T *bt = static_cast<const T *>(bias);
        switch (act) {
        case FC_QUICK_GELU: launch_vector_or_scalar<T, FC_QUICK_GELU>(yt, xt, bt, rows, cols, stream); break;
        case FC_GELU_ERF: launch_vector_or_scalar<T, FC_GELU_ERF>(yt, xt, bt, rows, cols, stream); break;
        case FC_GELU_TANH: launch_vector_or_scalar<T, FC_GELU_TANH>(yt, xt, bt, rows, cols, stream); break;
        case FC_IDENTITY: launch_vector_or_scalar<T, FC_IDENTITY>(yt, xt, bt, rows, cols, stream); break;
        }
    });
    if (!ok) return (int)cudaErrorInvalidValue;
    return (int)cudaGetLastError();
}
