/* Masked row softmax for the materialized (reference) attention path: P = softmax(scale * S) over the visible
 * keys of each row, written in the storage dtype, plus the optional natural-log lse of the scaled scores.
 *
 * One warp per row: rows are independent and a few hundred to a few thousand keys long, so a warp streams a row
 * with coalesced loads and reduces with shuffles, and no shared memory or block barrier is needed. The row is
 * read three times (max, sum, write) instead of being cached: that keeps any seq_k working, and the re-reads of a
 * row just read hit L1/L2. This is the reference path, so it uses the accurate expf/logf.
 */
#include <cuda_runtime.h>
#include <cuda_fp16.h>
#include <cuda_bf16.h>
#include <stdint.h>

#include "flashclip.h"
#include "dtype.cuh"
#include "attention_mask.cuh"

namespace flashclip::attention {
namespace {

constexpr int kSoftmaxRowsPerBlock = 8;
constexpr int kSoftmaxThreads = kSoftmaxRowsPerBlock * 32;

__device__ __forceinline__ float warp_max(float x) {
#pragma unroll
    for (int offset = 16; offset > 0; offset /= 2) x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, offset));
    return x;
}

__device__ __forceinline__ float warp_sum(float x) {
#pragma unroll
    for (int offset = 16; offset > 0; offset /= 2) x += __shfl_xor_sync(0xffffffffu, x, offset);
    return x;
}

template <typename Elem>
__global__ void __launch_bounds__(kSoftmaxThreads)
    attention_softmax_kernel(const float *s, long long s_row_stride, Elem *p, long long p_row_stride, float *lse,
                             const int *key_lens, int heads_q, int seq_q, int seq_k, long long rows,
                             float softmax_scale, int causal) {
    const long long row = (long long)blockIdx.x * kSoftmaxRowsPerBlock + threadIdx.x / 32;
    if (row >= rows) return;  // uniform per warp
    const int lane = threadIdx.x % 32;
    const int query = (int)(row % seq_q);
    const int b = (int)(row / ((long long)heads_q * seq_q));
    const int key_limit = row_key_limit(batch_key_limit(key_lens, b, seq_k), query, causal != 0);

    const float *s_row = s + row * s_row_stride;
    Elem *p_row = p + row * p_row_stride;

    float row_max = -INFINITY;
    for (int j = lane; j < key_limit; j += 32) row_max = fmaxf(row_max, s_row[j] * softmax_scale);
    row_max = warp_max(row_max);

    float row_sum = 0.f;
    if (row_max != -INFINITY)  // otherwise every term is exp(-inf - -inf): the row has nothing to sum
        for (int j = lane; j < key_limit; j += 32) row_sum += expf(s_row[j] * softmax_scale - row_max);
    row_sum = warp_sum(row_sum);

    const float inv_sum = row_sum > 0.f ? 1.f / row_sum : 0.f;
    for (int j = lane; j < seq_k; j += 32) {
        const float prob = j < key_limit ? expf(s_row[j] * softmax_scale - row_max) * inv_sum : 0.f;
        p_row[j] = from_float<Elem>(prob);
    }
    if (lse != nullptr && lane == 0) lse[row] = row_sum > 0.f ? row_max + logf(row_sum) : -INFINITY;
}

template <typename Elem>
int launch_softmax(const float *s, long long s_row_stride, void *p, long long p_row_stride, float *lse,
                   const int *key_lens, int batch, int heads_q, int seq_q, int seq_k, float softmax_scale, int causal,
                   cudaStream_t stream) {
    const long long rows = (long long)batch * heads_q * seq_q;
    const unsigned blocks = (unsigned)((rows + kSoftmaxRowsPerBlock - 1) / kSoftmaxRowsPerBlock);
    attention_softmax_kernel<Elem><<<blocks, kSoftmaxThreads, 0, stream>>>(
        s, s_row_stride, static_cast<Elem *>(p), p_row_stride, lse, key_lens, heads_q, seq_q, seq_k, rows,
        softmax_scale, causal);
    return (int)cudaGetLastError();
}

}  // namespace
}  // namespace flashclip::attention

extern "C" int fc_attention_softmax(const float *s, long long s_row_stride, void *p, long long p_row_stride,
                                    float *lse, const int *key_lens, int batch, int heads_q, int seq_q, int seq_k,
                                    float softmax_scale, int causal, fc_dtype dtype, cudaStream_t stream) {
    using namespace flashclip::attention;
    switch (dtype) {
        case FC_F16:
            return launch_softmax<__half>(s, s_row_stride, p, p_row_stride, lse, key_lens, batch, heads_q, seq_q,
                                          seq_k, softmax_scale, causal, stream);
        case FC_BF16:
            return launch_softmax<__nv_bfloat16>(s, s_row_stride, p, p_row_stride, lse, key_lens, batch, heads_q,
                                                 seq_q, seq_k, softmax_scale, causal, stream);
        case FC_F32:
            return launch_softmax<float>(s, s_row_stride, p, p_row_stride, lse, key_lens, batch, heads_q, seq_q,
                                         seq_k, softmax_scale, causal, stream);
        default: return (int)cudaErrorInvalidValue;
    }
}
