// Shared device helpers for the elementwise kernels: packed vector access and the dtype dispatch (conversions
// are in dtype.cuh).
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <stdint.h>

#include "dtype.cuh"
#include "flashclip.h"

namespace flashclip {

// N elements of T moved as one access: N * sizeof(T) == 16 gives 128-bit loads/stores, N == 1 the scalar tail path.
template <typename T, int N> struct alignas(sizeof(T) * N) Pack {
    T v[N];
};

template <typename T, int N> __device__ __forceinline__ Pack<T, N> load_pack(const T *p) {
    return *reinterpret_cast<const Pack<T, N> *>(p);
}

template <typename T, int N> __device__ __forceinline__ void store_pack(T *p, const Pack<T, N> &x) {
    *reinterpret_cast<Pack<T, N> *>(p) = x;
}

// Elements per 16-byte access.
template <typename T> constexpr int vec16() { return 16 / (int)sizeof(T); }

inline bool aligned16(const void *p) { return p == nullptr || (reinterpret_cast<uintptr_t>(p) & 15u) == 0; }

// Runs f.template operator()<T>() for the runtime dtype; false for an unknown dtype.
template <typename F> bool dispatch_dtype(fc_dtype dtype, F &&f) {
    switch (dtype) {
    case FC_F16: f(__half{}); return true;
    case FC_BF16: f(__nv_bfloat16{}); return true;
    case FC_F32: f(float{}); return true;
    }
    return false;
}

} // namespace flashclip
