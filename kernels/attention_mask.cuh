/* Visibility: with key_lens and causal masking, the keys query row i may attend to always form a prefix
 * [0, row_key_limit) of the key sequence. Every kernel masks by comparing a key index against that one number, so
 * "has key_lens" and "causal" cost nothing in the inner loops and need no template parameters. */
#ifndef FLASHCLIP_ATTENTION_MASK_CUH
#define FLASHCLIP_ATTENTION_MASK_CUH

#include <cuda_runtime.h>

namespace flashclip::attention {

/* Keys of batch b that exist for every query: min(seq_k, key_lens[b]), never negative. */
__device__ __forceinline__ int batch_key_limit(const int *key_lens, int b, int seq_k) {
    if (key_lens == nullptr) return seq_k;
    return max(0, min(seq_k, key_lens[b]));
}

/* Query row i sees keys [0, row_key_limit). Causal attention requires seq_q == seq_k, so key j <= i. */
__device__ __forceinline__ int row_key_limit(int batch_limit, int row, bool causal) {
    return causal ? min(batch_limit, row + 1) : batch_limit;
}

}  // namespace flashclip::attention

#endif
