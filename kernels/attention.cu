/* Fused attention forward: O = softmax(scale * Q K^T, masked) V, two rungs of the ladder.
 *
 * Both kernels make one pass over the keys with the online softmax (running row max m and row sum l; when the
 * max grows, the partial output and sum are rescaled by exp(m_old - m_new)), so no seq_q x seq_k matrix ever
 * exists in memory. Tensors are addressed through explicit strides, which lets them read the packed output of
 * the QKV GEMM in place. Visible keys of every query row form a prefix [0, row_key_limit) (attention_traits.cuh),
 * so key_lens, the sequence tail and causal masking are all one comparison against a per-row limit.
 *
 * fc_attention_v1, the readable baseline (f16/bf16/f32, any head_dim % 8 == 0 up to 128):
 *   a block of 128 threads owns 16 query rows of one (batch, head); 8 threads share a row. Q (pre-scaled), a
 *   32-key K tile and V tile are staged in shared memory as fp32; each thread computes 4 scores of its row, the
 *   8 threads agree on the row max with shuffles, write P to shared memory, and each accumulates head_dim/8
 *   output columns. All math is fp32 on CUDA cores.
 *
 * fc_attention_v2, FlashAttention-2 style on tensor cores (f16/bf16, sm_80+; tile shapes per head dim in
 *   FlashV2Config, attention_traits.cuh): a block of 2-8 warps owns 64-256 query rows, each warp 16 or 32 rows
 *   (one or two m16 tiles) for the whole kernel. The warp's Q fragments are loaded once (ldmatrix) and kept in
 *   registers; 32- or 64-key K and V tiles stream through double-buffered shared memory with 16-byte cp.async, so
 *   the copy of tile j+1 overlaps the math of tile j. Per tile a warp computes S = Q K^T with mma.m16n8k16 (K via
 *   ldmatrix, each fragment shared by the warp's m tiles), does the online softmax in registers in the log2 domain
 *   (exp2 of scale*log2e-scaled scores, one MUFU op each), repacks P from the S accumulator layout straight into
 *   A-operand registers (the two layouts coincide, so P never touches shared memory), and accumulates O += P V
 *   with V fragments from ldmatrix.trans. Row sums stay per-thread partials until the end. The output goes
 *   through the warp's own (now unused) Q rows in shared memory so global stores are 16-byte and row-contiguous.
 *   Work skipping: under causal masking a block stops at its last visible key tile and each warp skips tiles
 *   beyond its own rows' last key (and warps past seq_q skip all math), but still helps load tiles and reaches
 *   every barrier. Blocks are issued in reverse query-tile order so the longest causal blocks start first.
 *   Masking costs nothing on tiles that need none: a per-warp test picks the tiles that straddle a row's limit.
 *   Only the dtype and head dim (plus, for head dim 64, a short-sequence tile shape) are template parameters:
 *   key_lens, causal and lse act through per-block scalars (key limits, the mask test, one branch at the end),
 *   so making them template flags too would multiply the builds by 8 for no speed.
 */
#include <cuda_runtime.h>
#include <cuda_fp16.h>
#include <cuda_bf16.h>
#include <stdint.h>

#include "flashclip.h"
#include "flashclip_head_dims.h"
#include "dtype.cuh"
#include "ptx.cuh"
#include "attention_mask.cuh"
#include "attention_tile_loads.cuh"
#include "attention_v2_traits.cuh"
#include "online_softmax.cuh"

namespace flashclip::attention {
namespace {

constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;

/* ================================================================== v1: tiled online softmax, CUDA cores */

constexpr int kV1Rows = 16;          // query rows per block
constexpr int kV1ThreadsPerRow = 8;  // threads cooperating on one query row
constexpr int kV1Threads = kV1Rows * kV1ThreadsPerRow;
constexpr int kV1Keys = 32;          // keys per K/V tile
constexpr int kV1MaxHeadDim = 128;
constexpr int kV1KeysPerThread = kV1Keys / kV1ThreadsPerRow;
constexpr int kV1ColsPerThread = kV1MaxHeadDim / kV1ThreadsPerRow;

template <typename Elem>
__global__ void __launch_bounds__(kV1Threads) attention_v1_kernel(const fc_attention_params p) {
    // +1 float padding on rows read across threads of one warp at the same column: the 4 rows (Q, P) or 8 keys
    // (K) a warp touches per instruction then fall in different banks.
    __shared__ float q_tile[kV1Rows][kV1MaxHeadDim + 1];
    __shared__ float k_tile[kV1Keys][kV1MaxHeadDim + 1];
    __shared__ float v_tile[kV1Keys][kV1MaxHeadDim];
    __shared__ float p_tile[kV1Rows][kV1Keys + 1];

    const int tid = threadIdx.x;
    const int local_row = tid / kV1ThreadsPerRow;
    const int sub = tid % kV1ThreadsPerRow;  // which of the row's 8 threads
    const int b = blockIdx.z, h = blockIdx.y;
    const int hk = h / (p.heads_q / p.heads_kv);
    const int row0 = blockIdx.x * kV1Rows;
    const int row = row0 + local_row;
    const int head_dim = p.head_dim;
    const int chunks_per_row = head_dim / 8;

    const Elem *q = static_cast<const Elem *>(p.q) + b * p.q_batch_stride + h * p.q_head_stride;
    const Elem *k = static_cast<const Elem *>(p.k) + b * p.k_batch_stride + hk * p.k_head_stride;
    const Elem *v = static_cast<const Elem *>(p.v) + b * p.v_batch_stride + hk * p.v_head_stride;
    Elem *o = static_cast<Elem *>(p.o) + b * p.o_batch_stride + h * p.o_head_stride;

    const bool causal = p.causal != 0;
    const int key_limit = batch_key_limit(p.key_lens, b, p.seq_k);
    const int my_key_limit = row_key_limit(key_limit, row, causal);
    const int block_key_end = causal ? min(key_limit, min(row0 + kV1Rows, p.seq_q)) : key_limit;

    // Q rows, pre-multiplied by the softmax scale so that dot products are the final scores.
    for (int i = tid; i < kV1Rows * chunks_per_row; i += kV1Threads) {
        const int r = i / chunks_per_row, c = i % chunks_per_row;
        float x[8] = {};
        if (row0 + r < p.seq_q) load8(q + (long long)(row0 + r) * p.q_seq_stride + 8 * c, x);
#pragma unroll
        for (int e = 0; e < 8; ++e) q_tile[r][8 * c + e] = x[e] * p.softmax_scale;
    }

    float row_max = -INFINITY;
    float row_sum = 0.f;  // partial: this thread's keys only, reduced over the row's threads at the end
    float acc[kV1ColsPerThread] = {};  // output columns sub, sub + 8, sub + 16, ...

    for (int key0 = 0; key0 < block_key_end; key0 += kV1Keys) {
        __syncthreads();  // the previous tile (and on the first pass, Q) is no longer being read / fully written
        for (int i = tid; i < kV1Keys * chunks_per_row; i += kV1Threads) {
            const int r = i / chunks_per_row, c = i % chunks_per_row;
            float kx[8] = {}, vx[8] = {};
            // Keys past the limit are zero, not garbage: P is 0 there, but 0 * NaN would still poison O.
            if (key0 + r < key_limit) {
                load8(k + (long long)(key0 + r) * p.k_seq_stride + 8 * c, kx);
                load8(v + (long long)(key0 + r) * p.v_seq_stride + 8 * c, vx);
            }
#pragma unroll
            for (int e = 0; e < 8; ++e) {
                k_tile[r][8 * c + e] = kx[e];
                v_tile[r][8 * c + e] = vx[e];
            }
        }
        __syncthreads();

        float score[kV1KeysPerThread];
        float tile_max = -INFINITY;
#pragma unroll
        for (int j = 0; j < kV1KeysPerThread; ++j) {
            const int key = sub + kV1ThreadsPerRow * j;
            float dot = 0.f;
            for (int d = 0; d < head_dim; ++d) dot += q_tile[local_row][d] * k_tile[key][d];
            score[j] = key0 + key < my_key_limit ? dot : -INFINITY;
            tile_max = fmaxf(tile_max, score[j]);
        }
        // The row's 8 threads are 8 consecutive lanes of one warp.
#pragma unroll
        for (int offset = kV1ThreadsPerRow / 2; offset > 0; offset /= 2)
            tile_max = fmaxf(tile_max, __shfl_xor_sync(0xffffffffu, tile_max, offset));

        const float new_max = fmaxf(row_max, tile_max);
        // While a row has seen no visible key its max is -inf; subtracting 0 instead keeps exp() at 0, not NaN.
        const float shift = new_max == -INFINITY ? 0.f : new_max;
        const float alpha = expf(row_max - shift);
        row_max = new_max;
        row_sum *= alpha;
#pragma unroll
        for (int j = 0; j < kV1KeysPerThread; ++j) {
            const float prob = expf(score[j] - shift);
            row_sum += prob;
            p_tile[local_row][sub + kV1ThreadsPerRow * j] = prob;
        }
        __syncwarp();  // a row's P is written and read by the same 8 lanes

#pragma unroll
        for (int j = 0; j < kV1ColsPerThread; ++j) {
            const int col = sub + kV1ThreadsPerRow * j;
            if (col < head_dim) {
                float a = acc[j] * alpha;
                for (int key = 0; key < kV1Keys; ++key) a += p_tile[local_row][key] * v_tile[key][col];
                acc[j] = a;
            }
        }
    }

#pragma unroll
    for (int offset = kV1ThreadsPerRow / 2; offset > 0; offset /= 2)
        row_sum += __shfl_xor_sync(0xffffffffu, row_sum, offset);

    if (row < p.seq_q) {
        const float inv_sum = row_sum > 0.f ? 1.f / row_sum : 0.f;
        Elem *o_row = o + (long long)row * p.o_seq_stride;
#pragma unroll
        for (int j = 0; j < kV1ColsPerThread; ++j) {
            const int col = sub + kV1ThreadsPerRow * j;
            if (col < head_dim) o_row[col] = from_float<Elem>(acc[j] * inv_sum);
        }
        if (p.lse != nullptr && sub == 0)
            p.lse[((long long)b * p.heads_q + h) * p.seq_q + row] =
                row_sum > 0.f ? row_max + logf(row_sum) : -INFINITY;
    }
}

template <typename Elem>
int launch_v1(const fc_attention_params &p, cudaStream_t stream) {
    const dim3 grid((p.seq_q + kV1Rows - 1) / kV1Rows, p.heads_q, p.batch);
    attention_v1_kernel<Elem><<<grid, kV1Threads, 0, stream>>>(p);
    return (int)cudaGetLastError();
}

/* ================================================================== v2: FlashAttention-2 on mma.sync */

template <class Traits>
__global__ void __launch_bounds__(Traits::kThreads) attention_v2_kernel(const fc_attention_params p) {
    using Elem = typename Traits::Elem;
    constexpr int kStride = Traits::kSmemRowStride;
    constexpr int kBlockM = Traits::kBlockM;
    constexpr int kBlockN = Traits::kBlockN;
    constexpr int kRowsPerWarp = Traits::kRowsPerWarp;
    constexpr int kMTiles = Traits::kMTilesPerWarp;

    extern __shared__ __align__(16) unsigned char smem[];
    Elem *q_tile = reinterpret_cast<Elem *>(smem);
    Elem *k_tiles = q_tile + Traits::kQTileElems;                        // kStages tiles
    Elem *v_tiles = k_tiles + Traits::kStages * Traits::kKVTileElems;    // kStages tiles

    const int tid = threadIdx.x;
    const int warp = tid / 32, lane = tid % 32;
    const int group = lane / 4, thread_in_group = lane % 4;  // mma fragment coordinates

    const int m_block = (gridDim.x - 1 - blockIdx.x) * kBlockM;  // reversed: longest causal blocks start first
    const int h = blockIdx.y, b = blockIdx.z;
    const int hk = h / (p.heads_q / p.heads_kv);

    const Elem *q = static_cast<const Elem *>(p.q) + b * p.q_batch_stride + h * p.q_head_stride;
    const Elem *k = static_cast<const Elem *>(p.k) + b * p.k_batch_stride + hk * p.k_head_stride;
    const Elem *v = static_cast<const Elem *>(p.v) + b * p.v_batch_stride + hk * p.v_head_stride;
    Elem *o = static_cast<Elem *>(p.o) + b * p.o_batch_stride + h * p.o_head_stride;

    const bool causal = p.causal != 0;
    const int key_limit = batch_key_limit(p.key_lens, b, p.seq_k);
    const int block_key_end = causal ? min(key_limit, min(m_block + kBlockM, p.seq_q)) : key_limit;
    const int n_tiles = (block_key_end + kBlockN - 1) / kBlockN;

    const int warp_row0 = m_block + warp * kRowsPerWarp;
    const bool warp_has_rows = warp_row0 < p.seq_q;
    // Keys any row of this warp sees, and keys every row of it sees (tiles past the latter need masking).
    const int warp_key_end = causal ? min(key_limit, min(warp_row0 + kRowsPerWarp, p.seq_q)) : key_limit;
    const int warp_unmasked_end = causal ? min(key_limit, warp_row0 + 1) : key_limit;

    // Accumulator element e of m tile mt belongs to row warp_row0 + 16 * mt + group + 8 * (e / 2); index such
    // per-row values as [mt][e / 2].
    int my_key_limit[kMTiles][2];
#pragma unroll
    for (int mt = 0; mt < kMTiles; ++mt)
#pragma unroll
        for (int r = 0; r < 2; ++r)
            my_key_limit[mt][r] = row_key_limit(key_limit, warp_row0 + 16 * mt + group + 8 * r, causal);
    const float scale_log2 = p.softmax_scale * kLog2e;

    float o_acc[kMTiles][Traits::kOTiles][4] = {};
    float row_max[kMTiles][2];  // of the raw scores
    float row_sum[kMTiles][2];  // partial over this thread's columns, reduced at the end
#pragma unroll
    for (int mt = 0; mt < kMTiles; ++mt)
#pragma unroll
        for (int r = 0; r < 2; ++r) row_max[mt][r] = -INFINITY, row_sum[mt][r] = 0.f;

    if (n_tiles > 0) {
        if constexpr (Traits::kChunksPerRow < Traits::kPaddedChunksPerRow) {
            // Padding columns of the head dim: zero once in every tile (Q, K and V tiles share one row layout and
            // are contiguous), never overwritten by the loads.
            constexpr int kTotalRows = kBlockM + 2 * Traits::kStages * kBlockN;
            constexpr int kPadChunks = Traits::kPaddedChunksPerRow - Traits::kChunksPerRow;
            for (int i = tid; i < kTotalRows * kPadChunks; i += Traits::kThreads) {
                const int r = i / kPadChunks, c = Traits::kChunksPerRow + i % kPadChunks;
                *reinterpret_cast<uint4 *>(q_tile + r * kStride + 8 * c) = make_uint4(0u, 0u, 0u, 0u);
            }
        }

        load_tile<Traits, kBlockM>(q_tile, q, p.q_seq_stride, m_block, p.seq_q, tid);
        cp_async_commit();
        load_tile<Traits, kBlockN>(k_tiles, k, p.k_seq_stride, 0, key_limit, tid);
        load_tile<Traits, kBlockN>(v_tiles, v, p.v_seq_stride, 0, key_limit, tid);
        cp_async_commit();
        cp_async_wait<1>();  // Q has landed; K/V tile 0 may still be in flight
        __syncthreads();

        // A fragments of Q per m tile and 16-column step of the head dim: matrices (rows 0-7 | 8-15) x
        // (cols 0-7 | 8-15) in the order a[0..3] expects, so lane L addresses row L % 16, column 8 * (L / 16).
        uint32_t q_frag[kMTiles][Traits::kQKSteps][4];
        if (warp_has_rows) {
            const Elem *q_warp = q_tile + (warp * kRowsPerWarp + lane % 16) * kStride + 8 * (lane / 16);
#pragma unroll
            for (int mt = 0; mt < kMTiles; ++mt)
#pragma unroll
                for (int kk = 0; kk < Traits::kQKSteps; ++kk)
                    ldmatrix_x4(q_frag[mt][kk], q_warp + 16 * mt * kStride + 16 * kk);
        }

        // ldmatrix lane offsets inside a K or V tile. K (non-transposed, keys are B's n index): matrices
        // (keys 0-7, d 0-7), (keys 0-7, d 8-15), (keys 8-15, d 0-7), (keys 8-15, d 8-15) = b0, b1 of two n8 tiles.
        // V (transposed, keys are B's k index): (keys 0-7, d 0-7), (keys 8-15, d 0-7), (keys 0-7, d 8-15),
        // (keys 8-15, d 8-15) = b0, b1 of two n8 tiles of O.
        const int k_lane_offset = (8 * (lane / 16) + lane % 8) * kStride + 8 * ((lane / 8) % 2);
        const int v_lane_offset = (lane % 16) * kStride + 8 * (lane / 16);

        for (int tile = 0; tile < n_tiles; ++tile) {
            // Prefetch the next tile into the other stage (freed by the barrier ending the previous iteration). An
            // empty commit on the last tile keeps "wait for all but the newest group" meaning "tile has landed".
            if (tile + 1 < n_tiles) {
                const int stage = (tile + 1) % Traits::kStages;
                const int next_key0 = (tile + 1) * kBlockN;
                load_tile<Traits, kBlockN>(k_tiles + stage * Traits::kKVTileElems, k, p.k_seq_stride, next_key0,
                                           key_limit, tid);
                load_tile<Traits, kBlockN>(v_tiles + stage * Traits::kKVTileElems, v, p.v_seq_stride, next_key0,
                                           key_limit, tid);
            }
            cp_async_commit();
            cp_async_wait<1>();
            __syncthreads();

            const int key0 = tile * kBlockN;
            if (warp_has_rows && key0 < warp_key_end) {
                const Elem *k_tile = k_tiles + (tile % Traits::kStages) * Traits::kKVTileElems;
                const Elem *v_tile = v_tiles + (tile % Traits::kStages) * Traits::kKVTileElems;

                // S = Q K^T for this warp's rows x kBlockN keys; each K fragment feeds every m tile.
                float s[kMTiles][Traits::kSTiles][4] = {};
#pragma unroll
                for (int kk = 0; kk < Traits::kQKSteps; ++kk) {
#pragma unroll
                    for (int np = 0; np < Traits::kSTiles / 2; ++np) {
                        uint32_t kb[4];
                        ldmatrix_x4(kb, k_tile + k_lane_offset + 16 * np * kStride + 16 * kk);
#pragma unroll
                        for (int mt = 0; mt < kMTiles; ++mt) {
                            mma_m16n8k16<Elem>(s[mt][2 * np], q_frag[mt][kk], kb[0], kb[1]);
                            mma_m16n8k16<Elem>(s[mt][2 * np + 1], q_frag[mt][kk], kb[2], kb[3]);
                        }
                    }
                }

                const bool needs_mask = key0 + kBlockN > warp_unmasked_end;
                uint32_t p_frag[kMTiles][Traits::kPVSteps][4];
#pragma unroll
                for (int mt = 0; mt < kMTiles; ++mt)
                    online_softmax_tile<Elem, Traits::kSTiles, Traits::kOTiles>(
                        reinterpret_cast<float(&)[4 * Traits::kSTiles]>(s[mt]),
                        reinterpret_cast<float(&)[4 * Traits::kOTiles]>(o_acc[mt]), p_frag[mt], row_max[mt],
                        row_sum[mt], my_key_limit[mt], needs_mask, key0, thread_in_group, scale_log2);

                // O += P V; each V fragment feeds every m tile.
#pragma unroll
                for (int kk = 0; kk < Traits::kPVSteps; ++kk) {
#pragma unroll
                    for (int np = 0; np < Traits::kOTiles / 2; ++np) {
                        uint32_t vb[4];
                        ldmatrix_x4_trans(vb, v_tile + v_lane_offset + 16 * kk * kStride + 16 * np);
#pragma unroll
                        for (int mt = 0; mt < kMTiles; ++mt) {
                            mma_m16n8k16<Elem>(o_acc[mt][2 * np], p_frag[mt][kk], vb[0], vb[1]);
                            mma_m16n8k16<Elem>(o_acc[mt][2 * np + 1], p_frag[mt][kk], vb[2], vb[3]);
                        }
                    }
                }
            }
            __syncthreads();  // every warp is done with this stage before the next iteration refills it
        }
    }

    // Epilogue: finish the row sums, normalize, stage the warp's output rows in its own Q rows of shared memory
    // (only this warp ever reads them, and it is done with them), then write 16-byte chunks.
    Elem *o_stage = q_tile + warp * kRowsPerWarp * kStride;
    __syncwarp();
#pragma unroll
    for (int mt = 0; mt < kMTiles; ++mt) {
        float inv_sum[2];
#pragma unroll
        for (int r = 0; r < 2; ++r) {
            row_sum[mt][r] += __shfl_xor_sync(0xffffffffu, row_sum[mt][r], 1);
            row_sum[mt][r] += __shfl_xor_sync(0xffffffffu, row_sum[mt][r], 2);
            inv_sum[r] = row_sum[mt][r] > 0.f ? 1.f / row_sum[mt][r] : 0.f;
        }
#pragma unroll
        for (int nt = 0; nt < Traits::kOTiles; ++nt) {
            Elem *dst = o_stage + (16 * mt + group) * kStride + 8 * nt + 2 * thread_in_group;
            *reinterpret_cast<uint32_t *>(dst) =
                pack2<Elem>(o_acc[mt][nt][0] * inv_sum[0], o_acc[mt][nt][1] * inv_sum[0]);
            *reinterpret_cast<uint32_t *>(dst + 8 * kStride) =
                pack2<Elem>(o_acc[mt][nt][2] * inv_sum[1], o_acc[mt][nt][3] * inv_sum[1]);
        }
    }
    __syncwarp();
    for (int i = lane; i < kRowsPerWarp * Traits::kChunksPerRow; i += 32) {
        const int r = i / Traits::kChunksPerRow, c = i % Traits::kChunksPerRow;
        const int row = warp_row0 + r;
        if (row < p.seq_q)
            *reinterpret_cast<uint4 *>(o + (long long)row * p.o_seq_stride + 8 * c) =
                *reinterpret_cast<const uint4 *>(o_stage + r * kStride + 8 * c);
    }

    if (p.lse != nullptr && thread_in_group == 0) {
#pragma unroll
        for (int mt = 0; mt < kMTiles; ++mt)
#pragma unroll
            for (int r = 0; r < 2; ++r) {
                const int row = warp_row0 + 16 * mt + group + 8 * r;
                if (row < p.seq_q)
                    p.lse[((long long)b * p.heads_q + h) * p.seq_q + row] =
                        row_sum[mt][r] > 0.f ? (row_max[mt][r] * scale_log2 + log2f(row_sum[mt][r])) * kLn2 : -INFINITY;
            }
    }
}

template <class Traits>
int launch_v2(const fc_attention_params &p, cudaStream_t stream) {
    const auto kernel = attention_v2_kernel<Traits>;
    if (Traits::kSmemBytes > 48 * 1024) {
        const cudaError_t err =
            cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)Traits::kSmemBytes);
        if (err != cudaSuccess) return (int)err;
    }
    const dim3 grid((p.seq_q + Traits::kBlockM - 1) / Traits::kBlockM, p.heads_q, p.batch);
    kernel<<<grid, Traits::kThreads, Traits::kSmemBytes, stream>>>(p);
    return (int)cudaGetLastError();
}

template <typename Elem, int kHeadDim>
int launch_v2_for_head_dim(const fc_attention_params &p, cudaStream_t stream) {
    using Config = FlashV2Config<Elem, kHeadDim>;
    if (p.seq_q <= Config::kShortSeqMax) return launch_v2<typename Config::ShortSeqTraits>(p, stream);
    return launch_v2<typename Config::Traits>(p, stream);
}

/* The one place where runtime shape/dtype choices become template instantiations. */
template <typename Elem>
int dispatch_v2(const fc_attention_params &p, cudaStream_t stream) {
    switch (p.head_dim) {
#define FC_CASE(D) \
    case D: return launch_v2_for_head_dim<Elem, D>(p, stream);
        FC_FLASH_HEAD_DIMS(FC_CASE)
#undef FC_CASE
        default: return (int)cudaErrorInvalidValue;
    }
}

}  // namespace
}  // namespace flashclip::attention

extern "C" int fc_attention_v1(const fc_attention_params *p, fc_dtype dtype, cudaStream_t stream) {
    using namespace flashclip::attention;
    if (p->head_dim <= 0 || p->head_dim > kV1MaxHeadDim || p->head_dim % 8 != 0) return (int)cudaErrorInvalidValue;
    switch (dtype) {
        case FC_F16: return launch_v1<__half>(*p, stream);
        case FC_BF16: return launch_v1<__nv_bfloat16>(*p, stream);
        case FC_F32: return launch_v1<float>(*p, stream);
        default: return (int)cudaErrorInvalidValue;
    }
}

extern "C" int fc_attention_v2(const fc_attention_params *p, fc_dtype dtype, cudaStream_t stream) {
    using namespace flashclip::attention;
    switch (dtype) {
        case FC_F16: return dispatch_v2<__half>(*p, stream);
        case FC_BF16: return dispatch_v2<__nv_bfloat16>(*p, stream);
        default: return (int)cudaErrorInvalidValue;
    }
}
