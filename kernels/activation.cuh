// The activations of CLIP-family MLPs, in fp32, shared by the fused bias+activation kernel and the GEMM epilogue.
#pragma once

#include <cuda_runtime.h>

#include "flashclip.h"

namespace flashclip {

template <typename T, fc_activation ACT> __device__ __forceinline__ float activate(float h) {
    if constexpr (ACT == FC_QUICK_GELU) {
        // 16-bit outputs: __fdividef, not '/'. IEEE division carries a range check and a slow-path branch per
        // element (FCHK in SASS); the fast form is within 2 ulp of fp32, far below a 16-bit rounding step, and for
        // h -> -inf the divisor overflows to inf and it returns 0. fp32 outputs keep the exact division.
        if constexpr (sizeof(T) == 2) return __fdividef(h, 1.0f + __expf(-1.702f * h));
        return h / (1.0f + __expf(-1.702f * h));
    } else if constexpr (ACT == FC_GELU_ERF) {
        return 0.5f * h * (1.0f + erff(h * 0.70710678118654752f));
    } else if constexpr (ACT == FC_IDENTITY) {
        return h;
    } else {
        const float inner = 0.7978845608028654f * (h + 0.044715f * h * h * h);
        return 0.5f * h * (1.0f + tanhf(inner));
    }
}

} // namespace flashclip
