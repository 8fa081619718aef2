/* flashclip kernel launchers: the C ABI between the CUDA sources in kernels/ and the Rust crate.
 *
 * Every launcher enqueues work on `stream` and returns a cudaError_t value as int (0 = success), taken from
 * cudaGetLastError() right after the launch. Launchers do not validate shapes: the Rust side checks every shape,
 * stride, dtype and alignment before calling. Strides and sizes are in elements, not bytes.
 * No system headers are included so that bindgen needs nothing but libclang.
 */
#ifndef FLASHCLIP_H
#define FLASHCLIP_H

#ifdef __cplusplus
extern "C" {
#endif

typedef struct CUstream_st *cudaStream_t;

typedef enum fc_dtype { FC_F16 = 0, FC_BF16 = 1, FC_F32 = 2 } fc_dtype;

/* ---------------------------------------------------------------- attention */

/* Q, K, V, O addressed as [batch, seq, heads, head_dim] through explicit strides (head_dim stride is 1).
 * Query head h reads K/V head h / (heads_q / heads_kv) (GQA/MQA).
 * Key j is visible to query i iff j < key_lens[b] (when key_lens != NULL) and, when causal, j <= i.
 * A query row that sees no key writes zeros and lse = -inf.
 * lse (optional, may be NULL): fp32 [batch, heads_q, seq_q], natural-log log-sum-exp of the scaled scores. */
typedef struct fc_attention_params {
    const void *q;
    const void *k;
    const void *v;
    void *o;
    float *lse;
    const int *key_lens;
    long long q_batch_stride, q_seq_stride, q_head_stride;
    long long k_batch_stride, k_seq_stride, k_head_stride;
    long long v_batch_stride, v_seq_stride, v_head_stride;
    long long o_batch_stride, o_seq_stride, o_head_stride;
    int batch;
    int heads_q;
    int heads_kv;
    int seq_q;
    int seq_k;
    int head_dim;
    float softmax_scale;
    int causal;
} fc_attention_params;

/* v1: simple tiled online softmax, fp32 math on CUDA cores. f16/bf16/f32. head_dim % 8 == 0, <= 128. */
int fc_attention_v1(const fc_attention_params *p, fc_dtype dtype, cudaStream_t stream);

/* v2: FlashAttention-2 style, mma.sync tensor cores (sm_80+). f16/bf16. head_dim in FC_FLASH_HEAD_DIMS
 * (flashclip_head_dims.h). */
int fc_attention_v2(const fc_attention_params *p, fc_dtype dtype, cudaStream_t stream);

/* v3: warpgroup MMA (wgmma), sm_90a only: the caller must check the device is compute capability 9.0. f16/bf16.
 * head_dim in FC_FLASH_HEAD_DIMS. */
int fc_attention_v3(const fc_attention_params *p, fc_dtype dtype, cudaStream_t stream);

/* v4: v3's math with warp specialization (a producer warp loading K/V by TMA through mbarriers, two or three
 * consumer warpgroups overlapping the softmax with the MMAs; tile shape chosen per launch), sm_90a only: the caller
 * must check the device is compute capability 9.0. f16/bf16. head_dim in FC_FLASH_HEAD_DIMS. K/V row, head and
 * batch strides must be multiples of 8 elements (16 bytes, as for every version); the tensor maps are built here,
 * on the host. */
int fc_attention_v4(const fc_attention_params *p, fc_dtype dtype, cudaStream_t stream);

#ifdef FLASHCLIP_TUNING
/* Tuning sweeps only (built with FLASHCLIP_TUNING). */

/* v3 with an explicit tile shape (warpgroups of 64 query rows x keys per K/V tile), for tuning sweeps; head_dim 64
 * or 80 only. fc_attention_v3 runs FC_V3_TILES_WG2_N64 at head_dim 64 and FC_V3_TILES_WG1_N64 at 80. */
typedef enum fc_v3_tiles {
    FC_V3_TILES_WG2_N64 = 0,
    FC_V3_TILES_WG1_N64 = 1,
    FC_V3_TILES_WG2_N128 = 2,
    FC_V3_TILES_WG3_N64 = 3
} fc_v3_tiles;
int fc_attention_v3_tiles(const fc_attention_params *p, fc_dtype dtype, fc_v3_tiles tiles, cudaStream_t stream);

/* v4 with an explicit tile shape (consumer warpgroups of 64 query rows x keys per K/V tile), for tuning sweeps;
 * head_dim 64, and 80 for the WG2 and WG3_N64 shapes. fc_attention_v4 picks per shape among WG3_N96_PINGPONG and
 * WG2_N64_PINGPONG at 64 and among WG3_N64 and WG2_N64 at 80; WG1 runs two blocks per SM. Every shape narrows
 * the last key tile to what is left of the keys where that fits 16 or 80 keys, and splits the keys among the
 * consumers of a last query block of at most 64 rows. The _PINGPONG shapes have the consumers issue their GEMMs in
 * turns (FlashAttention-3's ping-pong scheduling). Values are kept stable across removals. */
typedef enum fc_v4_tiles {
    FC_V4_TILES_WG2_N128 = 0,
    FC_V4_TILES_WG2_N64 = 1,
    FC_V4_TILES_WG3_N96 = 2,
    FC_V4_TILES_WG1_N128 = 3,
    FC_V4_TILES_WG3_N64 = 6,
    FC_V4_TILES_WG2_N64_PINGPONG = 7,
    FC_V4_TILES_WG3_N96_PINGPONG = 8,
    FC_V4_TILES_WG3_N64_PINGPONG = 9
} fc_v4_tiles;
int fc_attention_v4_tiles(const fc_attention_params *p, fc_dtype dtype, fc_v4_tiles tiles, cudaStream_t stream);
#endif /* FLASHCLIP_TUNING */

/* Keeps the stream busy for `ns` nanoseconds of GPU time (one thread waiting on the global timer): queued in front
 * of timed work so that the host's launch cost does not leave the GPU idle between timed launches. */
int fc_gpu_spin(unsigned long long ns, cudaStream_t stream);

/* Reference path helper: masked row softmax of fp32 scores S [rows = batch*heads_q*seq_q, seq_k] (row stride
 * s_row_stride) into P (dtype, row stride p_row_stride), scale applied before exp, same masking rules as above.
 * Row r = ((b * heads_q) + h) * seq_q + i. lse optional as above. */
int fc_attention_softmax(const float *s, long long s_row_stride, void *p, long long p_row_stride, float *lse,
                         const int *key_lens, int batch, int heads_q, int seq_q, int seq_k, float softmax_scale,
                         int causal, fc_dtype dtype, cudaStream_t stream);

/* ---------------------------------------------------------------- bias + activation */

typedef enum fc_activation { FC_QUICK_GELU = 0, FC_GELU_ERF = 1, FC_GELU_TANH = 2, FC_IDENTITY = 3 } fc_activation;

/* y[r, c] = act(x[r, c] + bias[c]) for a row-major [rows, cols] tensor (contiguous rows). bias may be NULL.
 * y may equal x (in place). Math in fp32. */
int fc_bias_activation(void *y, const void *x, const void *bias, long long rows, int cols, fc_activation act,
                       fc_dtype dtype, cudaStream_t stream);

/* ---------------------------------------------------------------- layernorm */

/* s = residual + x + bias (written to sum, which may alias residual), y = (s - mean) / sqrt(var + eps) * gamma + beta.
 * Row-major [rows, cols], contiguous rows. bias may be NULL. fp32 statistics. */
int fc_bias_residual_layernorm(void *y, void *sum, const void *x, const void *residual, const void *bias,
                               const void *gamma, const void *beta, long long rows, int cols, float eps,
                               fc_dtype dtype, cudaStream_t stream);

/* Plain LayerNorm: y = LN(x) * gamma + beta. x and y may have row strides (for the class-token rows of a batch). */
int fc_layernorm(void *y, long long y_row_stride, const void *x, long long x_row_stride, const void *gamma,
                 const void *beta, long long rows, int cols, float eps, fc_dtype dtype, cudaStream_t stream);

/* ---------------------------------------------------------------- embeddings (kernels/embedding.cu) */

/* Unfolds images T [batch, channels, size, size] into patch rows T [batch * grid * grid, channels * patch * patch]
 * in the order of a conv weight [out, channels, patch, patch] (c, ky, kx), grid = size / patch (pixels past the last
 * whole patch are not read, as a strided convolution ignores them). */
int fc_patchify(void *patches, const void *pixels, int batch, int channels, int image_size, int patch, fc_dtype dtype,
                cudaStream_t stream);

/* x[b, 0, :] = cls + pos[0];  x[b, 1 + p, :] = patch_out[b * num_patches + p, :] + pos[1 + p].  x: [batch, 1 + num_patches, dim]. */
int fc_vision_embed(void *x, const void *patch_out, const void *cls, const void *pos, int batch, int num_patches,
                    int dim, fc_dtype dtype, cudaStream_t stream);

/* x[b, i, :] = tok[ids[b * len + i], :] + pos[i, :] for ids in [0, vocab) (checked by the caller). */
int fc_text_embed(void *x, const int *ids, const void *tok, const void *pos, int batch, int len, int dim,
                  fc_dtype dtype, cudaStream_t stream);

/* dst[i, :] = src[rows[i] * src_row_stride + :dim] for i < n (row gather, e.g. end-of-text pooling). */
int fc_gather_rows(void *dst, const void *src, const int *rows, int n, int dim, long long src_row_stride, fc_dtype dtype,
                   cudaStream_t stream);

/* ---------------------------------------------------------------- GEMM with fused epilogues (kernels/gemm.cu) */

/* What the GEMM does to each fp32 accumulator before the one store: nothing, + bias[c], act(+ bias[c]), or
 * + bias[c] + residual[r, c] (the transformer's residual step, writing the next residual; y may equal residual). */
typedef enum fc_gemm_epilogue {
    FC_GEMM_PLAIN = 0,
    FC_GEMM_BIAS = 1,
    FC_GEMM_BIAS_ACTIVATION = 2,
    FC_GEMM_BIAS_RESIDUAL = 3
} fc_gemm_epilogue;

/* y[m, n] = epilogue(x[m, k] . w[n, k]^T): a linear layer with PyTorch's [out, in] weight layout, row-major, fp32
 * accumulation. Rows may be strided (ld* in elements); elements within a row are contiguous. */
typedef struct fc_gemm_params {
    const void *x;
    const void *w;
    void *y;
    const void *bias;     /* [n]; NULL only with FC_GEMM_PLAIN */
    const void *residual; /* [m, n] with row stride ld_residual; FC_GEMM_BIAS_RESIDUAL only */
    long long ldx, ldw, ldy, ld_residual;
    int m, n, k;
    fc_gemm_epilogue epilogue;
    fc_activation activation; /* FC_GEMM_BIAS_ACTIVATION only */
} fc_gemm_params;

/* Hopper (sm_90a) GEMM: TMA loads into swizzled shared memory, a producer warp and two consumer warpgroups on
 * wgmma, persistent blocks; f16/bf16. Needs k and n multiples of 8, ldx and ldw multiples of 8, x and w 16-byte
 * aligned, ldy and ld_residual even and y, residual, bias 4-byte aligned. Chooses its schedule per call: a TMA-store
 * epilogue where y's rows are 16-byte multiples apart from a 16-byte aligned start (else register stores),
 * ping-pong consumers for the activation epilogue from 4096 rows on, cooperative ones otherwise. */
int fc_gemm_sm90(const fc_gemm_params *p, fc_dtype dtype, cudaStream_t stream);

#ifdef FLASHCLIP_TUNING
/* Tuning sweeps only (built with FLASHCLIP_TUNING): fc_gemm_sm90 with an explicit schedule of its two consumer
 * warpgroups. COOPERATIVE: both on one 128-row tile. PINGPONG: each on its own 64-row
 * tiles, taking turns at the tensor cores so that one's epilogue runs under the other's mainloop. _TMA_STORE: the
 * epilogue stages the output tile in swizzled shared memory and stores it with TMA instead of storing from
 * registers; needs ldy a multiple of 8 and y 16-byte aligned (else cudaErrorInvalidValue). Values are kept stable
 * across removals. */
typedef enum fc_gemm_schedule {
    FC_GEMM_COOPERATIVE = 0,
    FC_GEMM_PINGPONG = 1,
    FC_GEMM_COOPERATIVE_TMA_STORE = 2,
    FC_GEMM_PINGPONG_TMA_STORE = 3
} fc_gemm_schedule;
int fc_gemm_sm90_schedule(const fc_gemm_params *p, fc_dtype dtype, fc_gemm_schedule schedule, cudaStream_t stream);
#endif /* FLASHCLIP_TUNING */

#ifdef __cplusplus
}
#endif

#endif
