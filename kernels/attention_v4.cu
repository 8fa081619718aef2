/* fc_attention_v4: v3's math (wgmma, Q and P in registers, K/V from swizzled shared memory) with the work split
 * and scheduled the way FlashAttention-3 does it.
 *
 *   - Warp specialization. One producer warp only loads: per K/V tile, one thread announces the bytes on the
 *     stage's `full` mbarrier and issues TMA boxes (the tensor maps are built on the host from the strides, so the
 *     packed QKV layout is read in place; rows past seq_k and head-dim padding columns arrive as zeros). A stage is
 *     refilled after every consumer released it on `empty`. The other producer warps only give their registers
 *     away (setmaxnreg) and exit. Two or three consumer warpgroups of 64 query rows each multiply and run the
 *     softmax, each at its own pace: no block-wide barrier in the main loop.
 *   - Intra-warpgroup overlap. A consumer issues S = Q K_t^T and O += P_{t-1} V_{t-1} back to back, waits for S
 *     only, runs the softmax of tile t while the tensor cores finish P V, then rescales O. The softmax (MUFU- and
 *     FMA-bound) and the two GEMMs of neighbouring tiles overlap within one warpgroup, and across the two.
 *   - Ping-pong (Traits::kPingPong). All consumers wait for the same tile, so left alone they issue their GEMMs
 *     together and then run their softmaxes together, contending for the MUFU and issue slots while the tensor
 *     cores idle. With turns, consumer c issues a tile's GEMMs only after c - 1 has issued its own (a ring of
 *     hardware barriers): the tensor cores run one consumer's GEMMs while the others exponentiate.
 *   - Row sums on the tensor cores: next to each P V k step, P times a shared-memory tile of ones (m64n8k16) adds
 *     the probabilities of every row, and the result is rescaled with O. One FADD per score fewer for the issue
 *     slots the softmax is short of, and the sum is that of the rounded P that P V multiplies.
 *   - Batches whose key_lens cut a tile short get that tile through cp.async instead, with rows past the limit
 *     zero-filled: TMA would bring the real rows there, and 0 * NaN in P V must not happen.
 *   - Ragged ends (CLIP's lengths are 64k + 1). The last key tile is multiplied only as wide as the keys left
 *     (16 or 80), S and P V, last in the pipeline; a last query block of at most 64 rows is shared by all
 *     consumers, each taking part of the key tiles, merged through shared memory at the end. With three consumers
 *     at head dim 64, one of at most 8 rows (CLIP's one row past 3 x 192) is no work item at all: it rides on one
 *     of its head's full blocks, computed by the producer warpgroup's idle warps from the same K/V tiles
 *     (V4Rider).
 *   - Persistent blocks: one wave of blocks, each looping over work items (a query block of one head). A block's
 *     fixed costs (launch, barrier setup, the first Q and K/V loads, the pipeline's fill and drain) were about half
 *     of its time at CLIP's lengths; now the producer streams the next item's K/V into the ring while the consumers
 *     finish the current one, and each consumer loads its next Q rows under the current item's tiles.
 * A consumer with no rows left (past seq_q, or past its causal limit) still waits for and releases every tile,
 * so the producer never waits on it forever.
 *
 * The roles, in attention_v4/: traits.cuh (tile shapes, register split, barrier ids, shared-memory budget),
 * scheduler.cuh (the work items and their order), producer.cuh (the cp.async fallback), riders.cuh (V4Rider),
 * consumer.cuh (a consumer warpgroup's loop: Q rows, wgmma issue, softmax, release, turns), epilogue.cuh (the split
 * block's merge, the row stores). attention_v4_kernel below composes them; the producer warp's loop is in its body
 * (producer.cuh says why). This file also holds the host side: tensor maps and launchers.
 */
#include <cuda.h>
#include <cudaTypedefs.h>  // PFN_cuTensorMapEncodeTiled
#include <cuda_runtime.h>
#include <cuda_fp16.h>
#include <cuda_bf16.h>
#include <stdint.h>

#include <algorithm>
#include <climits>
#include <type_traits>

#include "flashclip.h"
#include "launch_host.cuh"
#include "flashclip_head_dims.h"
#include "dtype.cuh"
#include "ptx.cuh"
#include "warp_specialization.cuh"
#include "wgmma.cuh"
#include "attention_mask.cuh"
#include "online_softmax.cuh"
#include "attention_v4/consumer.cuh"
#include "attention_v4/epilogue.cuh"
#include "attention_v4/producer.cuh"
#include "attention_v4/riders.cuh"
#include "attention_v4/scheduler.cuh"
#include "attention_v4/traits.cuh"

namespace flashclip::attention {
namespace {

/* kTailN > 0: the last key tile holds at most kTailN keys (seq_k % kBlockN, rounded up to 16; the launcher picks it
 * only without causal masking or key_lens) and is multiplied that narrow. It is the item's last slot, run after the
 * loop (S and the previous P V, its softmax, then its own P V of kTailN / 16 k steps), so the loop body stays one
 * shape (taking it first, its P V full width in the loop, measured slower: H100, B16 N577 D64 73.9 against 72.5 us).
 * Persistent: block j takes work items j, j + gridDim.x, ...; the ring's slots run on from item to item, so the
 * producer loads the next item's K/V while the consumers finish this one, and each consumer loads its next Q rows
 * under this item's tiles. */
template <class Traits, int kTailN>
__global__ void __launch_bounds__(Traits::kThreads, Traits::kMinBlocks)
    attention_v4_kernel(const fc_attention_params p, const __grid_constant__ CUtensorMap k_map,
                        const __grid_constant__ CUtensorMap v_map, int split_last_block, int riders) {
#if defined(__CUDA_ARCH__) && !defined(__CUDA_ARCH_FEAT_SM90_ALL)
    // wgmma, TMA and setmaxnreg exist only in sm_90a code; the launcher refuses other devices.
    __trap();
#elif defined(__CUDA_ARCH__)
    using Elem = typename Traits::Elem;
    constexpr int kBlockN = Traits::kBlockN;
    constexpr int kStages = Traits::kStages;
    constexpr int kConsumers = Traits::kConsumers;
    constexpr int kSw = Traits::kSwizzleBytes;
    static_assert(kTailN % 16 == 0 && kTailN < kBlockN, "a narrow tile is whole k steps, narrower than a tile");

    extern __shared__ __align__(1024) unsigned char smem_raw[];
    unsigned char *smem = smem_raw + ((1024 - (smem_addr(smem_raw) & 1023)) & 1023);
    Elem *q_tile = reinterpret_cast<Elem *>(smem);
    unsigned char *ones = smem + Traits::kQTileBytes;
    unsigned char *k_tiles = ones + Traits::kOnesBytes;
    unsigned char *v_tiles = k_tiles + kStages * Traits::kKVTileBytes;
    float *partials = reinterpret_cast<float *>(v_tiles + kStages * Traits::kKVTileBytes);
    unsigned char *rider_region = reinterpret_cast<unsigned char *>(partials) + Traits::kPartialBytes;
    uint64_t *full = reinterpret_cast<uint64_t *>(rider_region + Traits::kRiderBytes);
    uint64_t *empty = full + kStages;

    const int tid = threadIdx.x;
    // Read through a shuffle so that ptxas knows it is warp-uniform: branches on it (and on what derives from it,
    // such as a consumer's ring slots) then keep the wgmma inside them asynchronous.
    const int warpgroup = __shfl_sync(0xffffffffu, tid / 128, 0);
    const int lane = tid % 32;

    const V4Scheduler<Traits> sched(p, riders);

    if (tid < Traits::kOnesBytes / 16) {
        const uint32_t one = pack2<Elem>(1.f, 1.f);
        *reinterpret_cast<uint4 *>(ones + 16 * tid) = make_uint4(one, one, one, one);
        fence_proxy_async();  // read by the tensor cores
    }
    if (tid == 0) {
        for (int s = 0; s < kStages; ++s) {
            mbarrier_init(&full[s], 1);                 // the producer's one arrival (+ the TMA bytes)
            mbarrier_init(&empty[s], 4 * kConsumers + (riders != 0 ? 3 : 0));  // one per consumer (rider) warp
        }
        asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
    }
    __syncthreads();

    // Warpgroup 0: the producer warp, and the riders or nothing; the others are the consumers.
    if (warpgroup == 0) {
        setmaxnreg_dec<Traits::kProducerRegs>();
        if (tid < 32) {  // the producer (attention_v4/producer.cuh)
            int g = 0;  // ring slot, counted over the block's items
            for (int item = blockIdx.x; item < sched.n_items; item += gridDim.x) {
                const V4Item it = sched.item_at(item);
                const int hk = it.h / (p.heads_q / p.heads_kv);
                const int key_limit = batch_key_limit(p.key_lens, it.b, p.seq_k);
                const int n_tiles = sched.item_tiles(it, key_limit);
                const Elem *k = static_cast<const Elem *>(p.k) + it.b * p.k_batch_stride + hk * p.k_head_stride;
                const Elem *v = static_cast<const Elem *>(p.v) + it.b * p.v_batch_stride + hk * p.v_head_stride;
                for (int t = 0; t < n_tiles; ++t, ++g) {
                    const int stage = g % kStages;
                    if (g >= kStages) mbarrier_wait(&empty[stage], (g / kStages - 1) & 1);
                    unsigned char *k_stage = k_tiles + stage * Traits::kKVTileBytes;
                    unsigned char *v_stage = v_tiles + stage * Traits::kKVTileBytes;
                    const int key0 = t * kBlockN;
                    if (key0 + kBlockN > key_limit && key_limit < p.seq_k) {
                        load_kv_rows_zero_filled<Traits, kBlockN>(k_stage, k, p.k_seq_stride, key0, key_limit,
                                                                  lane);
                        load_kv_rows_zero_filled<Traits, kBlockN>(v_stage, v, p.v_seq_stride, key0, key_limit,
                                                                  lane);
                        cp_async_commit();
                        cp_async_wait<0>();
                        fence_proxy_async();  // generic-proxy writes, read by the tensor cores
                        __syncwarp();
                        if (lane == 0) mbarrier_arrive(&full[stage]);
                    } else if (lane == 0) {
                        mbarrier_arrive_expect_tx(&full[stage], 2 * Traits::kKVTileBytes);
#pragma unroll
                        for (int a = 0; a < Traits::kAtoms; ++a) {
                            tma_load_4d(k_stage + a * kBlockN * kSw, &k_map, a * Traits::kAtomCols, key0, hk, it.b,
                                        &full[stage]);
                            tma_load_4d(v_stage + a * kBlockN * kSw, &v_map, a * Traits::kAtomCols, key0, hk, it.b,
                                        &full[stage]);
                        }
                    }
                }
            }
            return;
        }
        if constexpr (Traits::kRiders) {
            if (riders != 0) {
                typename V4Rider<Traits>::State st;
                V4Rider<Traits>::run(st, p, sched, rider_region, k_tiles, v_tiles, full, empty, tid);
            }
        }
        return;
    }

    setmaxnreg_inc<Traits::kConsumerRegs>();
    run_consumer<Traits, kTailN>(p, sched, split_last_block, q_tile, ones, k_tiles, v_tiles, partials, full, empty,
                                 warpgroup, tid, lane);
#endif
}

/* The tensor map of K or V for Traits: dims (head_dim, seq_k, heads_kv, batch) with the view's strides, boxes of
 * kAtomCols x kBlockN, swizzled as the wgmma descriptors read them. */
template <class Traits>
cudaError_t kv_tensor_map(CUtensorMap *map, const void *base, long long batch_stride, long long seq_stride,
                          long long head_stride, const fc_attention_params &p) {
    const PFN_cuTensorMapEncodeTiled_v12000 encode = tensor_map_encoder();
    if (encode == nullptr) return cudaErrorNotSupported;
    constexpr long long kElem = 2;
    const cuuint64_t dims[4] = {(cuuint64_t)p.head_dim, (cuuint64_t)p.seq_k, (cuuint64_t)p.heads_kv,
                                (cuuint64_t)p.batch};
    // A dimension of extent 1 is never stepped over: give it a stride the encoder accepts whatever the view says.
    const auto stride = [](long long s, int extent) { return (cuuint64_t)(extent == 1 ? 16 : s * kElem); };
    const cuuint64_t strides[3] = {stride(seq_stride, p.seq_k), stride(head_stride, p.heads_kv),
                                   stride(batch_stride, p.batch)};
    const cuuint32_t box[4] = {(cuuint32_t)Traits::kAtomCols, (cuuint32_t)Traits::kBlockN, 1, 1};
    const cuuint32_t element_strides[4] = {1, 1, 1, 1};
    const CUtensorMapSwizzle swizzle = Traits::kSwizzleBytes == 128  ? CU_TENSOR_MAP_SWIZZLE_128B
                                       : Traits::kSwizzleBytes == 64 ? CU_TENSOR_MAP_SWIZZLE_64B
                                                                     : CU_TENSOR_MAP_SWIZZLE_32B;
    const CUtensorMapDataType dtype = std::is_same<typename Traits::Elem, __half>::value
                                          ? CU_TENSOR_MAP_DATA_TYPE_FLOAT16
                                          : CU_TENSOR_MAP_DATA_TYPE_BFLOAT16;
    const CUresult r = encode(map, dtype, 4, const_cast<void *>(base), dims, strides, box, element_strides,
                              CU_TENSOR_MAP_INTERLEAVE_NONE, swizzle, CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
                              CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
    return r == CUDA_SUCCESS ? cudaSuccess : cudaErrorInvalidValue;
}

/* The last K and V tensor maps this host thread encoded for Traits, with what they were encoded from: a model
 * launches every layer's attention on the same buffers, and encoding costs host time on every launch of a
 * latency-bound (batch 1) forward. */
struct KVMapKey {
    const void *k, *v;
    long long k_strides[3], v_strides[3];
    int batch, seq_k, heads_kv, head_dim;
    bool operator==(const KVMapKey &o) const {
        return k == o.k && v == o.v && batch == o.batch && seq_k == o.seq_k && heads_kv == o.heads_kv &&
               head_dim == o.head_dim && std::equal(k_strides, k_strides + 3, o.k_strides) &&
               std::equal(v_strides, v_strides + 3, o.v_strides);
    }
};

template <class Traits>
cudaError_t kv_tensor_maps(const fc_attention_params &p, CUtensorMap *k_map, CUtensorMap *v_map) {
    struct Cache {
        bool valid = false;
        KVMapKey key;
        CUtensorMap k, v;
    };
    static thread_local Cache cache;
    const KVMapKey key{p.k,
                       p.v,
                       {p.k_batch_stride, p.k_seq_stride, p.k_head_stride},
                       {p.v_batch_stride, p.v_seq_stride, p.v_head_stride},
                       p.batch,
                       p.seq_k,
                       p.heads_kv,
                       p.head_dim};
    if (!(cache.valid && cache.key == key)) {
        cache.valid = false;
        cudaError_t err = kv_tensor_map<Traits>(&cache.k, p.k, p.k_batch_stride, p.k_seq_stride, p.k_head_stride, p);
        if (err == cudaSuccess)
            err = kv_tensor_map<Traits>(&cache.v, p.v, p.v_batch_stride, p.v_seq_stride, p.v_head_stride, p);
        if (err != cudaSuccess) return err;
        cache.key = key;
        cache.valid = true;
    }
    *k_map = cache.k;
    *v_map = cache.v;
    return cudaSuccess;
}

/* Whether the last query block of each head rides on a full one (V4Rider): a block of at most kRiderRows rows
 * after one or more full ones, without causal masking (whose item order and key limits per row it does not
 * follow). */
template <class Traits>
bool v4_riders(const fc_attention_params &p) {
    const int last_rows = p.seq_q % Traits::kBlockM;
    return Traits::kRiders && p.causal == 0 && p.seq_q > Traits::kBlockM && last_rows > 0 &&
           last_rows <= Traits::kRiderRows;
}

template <class Traits, int kTailN>
int launch_v4_kernel(const fc_attention_params &p, cudaStream_t stream) {
    CUtensorMap k_map, v_map;
    cudaError_t err = kv_tensor_maps<Traits>(p, &k_map, &v_map);
    if (err != cudaSuccess) return (int)err;
    const auto kernel = attention_v4_kernel<Traits, kTailN>;
    err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)Traits::kSmemBytes);
    if (err != cudaSuccess) return (int)err;
    // Persistent: as many blocks as fit at once (one wave), each looping over its work items.
    const bool riders = v4_riders<Traits>(p);
    const long long items = (long long)((p.seq_q + Traits::kBlockM - 1) / Traits::kBlockM - (riders ? 1 : 0)) *
                            p.heads_q * p.batch;
    const int sms = current_sm_count();
    if (sms <= 0) return (int)cudaErrorInvalidDevice;
    if (items > INT_MAX) return (int)cudaErrorInvalidValue;
    const int grid = (int)std::min<long long>(items, (long long)sms * Traits::kMinBlocks);
    // split_last_block is always 1 since the plain pipeline left; the kernel keeps the flag so that its code stays
    // as measured.
    kernel<<<grid, Traits::kThreads, Traits::kSmemBytes, stream>>>(p, k_map, v_map, 1, riders ? 1 : 0);
    return (int)cudaGetLastError();
}

/* The shape decides two things per launch: a narrow last key tile (16 or 80 keys wide, where the keys left past
 * the full tiles fit: CLIP's lengths are 64k + 1) and a key split among the consumers of a last query block of at
 * most 64 rows. */
template <class Traits>
int launch_v4(const fc_attention_params &p, cudaStream_t stream) {
    // One consumer (two blocks per SM, 128 registers a thread at launch) has no room for the narrow tile's scores.
    if constexpr (Traits::kConsumers > 1) {
        const int left = p.seq_k % Traits::kBlockN;
        const bool narrow = p.causal == 0 && p.key_lens == nullptr;
        if (narrow && left > 0 && left <= 16) return launch_v4_kernel<Traits, 16>(p, stream);
        if constexpr (Traits::kBlockN > 80) {
            if (narrow && left > 64 && left <= 80) return launch_v4_kernel<Traits, 80>(p, stream);
        }
    }
    return launch_v4_kernel<Traits, 0>(p, stream);
}

/* Three consumers (Wide) when their blocks fill more than one wave of SMs without causal masking, else Small. */
template <class Wide, class Small>
int launch_v4_by_grid(const fc_attention_params &p, cudaStream_t stream) {
    const long long blocks = (long long)((p.seq_q + Wide::kBlockM - 1) / Wide::kBlockM) * p.heads_q * p.batch;
    if (p.causal == 0 && blocks > current_sm_count()) return launch_v4<Wide>(p, stream);
    return launch_v4<Small>(p, stream);
}

/* Head dim 64 without causal masking takes three consumers of 96-key tiles, in ping-pong turns, when the 192-row
 * blocks fill more than one wave of SMs (batch 16, H100, fp16, same run: N 577 72.5 us against 74.9 without turns
 * and 86.5 for two consumers of 64-key tiles; N 257 24.9 against 29.2), head dim 80 three of 64-key tiles (N 257:
 * 33.9 against 41.1; 34.2 with turns; 96-key tiles do not fit six stages in shared memory), two consumers of 64-key
 * tiles otherwise (batch 1, where one block's latency is the time): the tile sweep of benches/attention.rs. Head dim
 * 72 (SigLIP so400m, N 729) is computed as 80 (TMA zero-fills the padding columns) and takes 80's shapes (launch
 * registers 168 with two consumers, 128 with three, as 80; 0 spills). */
template <typename Elem, int kHeadDim>
int launch_v4_for_head_dim(const fc_attention_params &p, cudaStream_t stream) {
    using Config = typename FlashV4Config<Elem, kHeadDim>::Traits;
    if constexpr (kHeadDim == 64)
        return launch_v4_by_grid<FlashV4Traits<Elem, 64, 96, 6, 3, true>, Config>(p, stream);
    else if constexpr (kHeadDim == 80 || kHeadDim == 72)
        return launch_v4_by_grid<FlashV4Traits<Elem, kHeadDim, 64, 6, 3>, Config>(p, stream);
    else
        return launch_v4<Config>(p, stream);
}

/* The one place where runtime shape/dtype choices become v4 template instantiations. */
template <typename Elem>
int dispatch_v4(const fc_attention_params &p, cudaStream_t stream) {
    switch (p.head_dim) {
#define FC_CASE(D) \
    case D: return launch_v4_for_head_dim<Elem, D>(p, stream);
        FC_FLASH_HEAD_DIMS(FC_CASE)
#undef FC_CASE
        default: return (int)cudaErrorInvalidValue;
    }
}

#ifdef FLASHCLIP_TUNING
/* The tile shapes of the sweep entry (FC_V4_TILES_*); two stages where two blocks share an SM. Three consumers
 * and two blocks per SM spill at head dim 80. */
template <typename Elem, int kHeadDim>
int launch_v4_tiles(const fc_attention_params &p, fc_v4_tiles tiles, cudaStream_t stream) {
    switch (tiles) {
        case FC_V4_TILES_WG2_N128: return launch_v4<FlashV4Traits<Elem, kHeadDim, 128, 4, 2>>(p, stream);
        case FC_V4_TILES_WG2_N64: return launch_v4<FlashV4Traits<Elem, kHeadDim, 64, 4, 2>>(p, stream);
        case FC_V4_TILES_WG3_N64: return launch_v4<FlashV4Traits<Elem, kHeadDim, 64, 6, 3>>(p, stream);
        case FC_V4_TILES_WG2_N64_PINGPONG: return launch_v4<FlashV4Traits<Elem, kHeadDim, 64, 4, 2, true>>(p, stream);
        case FC_V4_TILES_WG3_N64_PINGPONG: return launch_v4<FlashV4Traits<Elem, kHeadDim, 64, 6, 3, true>>(p, stream);
        default: break;
    }
    if constexpr (kHeadDim == 64) {
        switch (tiles) {
            case FC_V4_TILES_WG3_N96: return launch_v4<FlashV4Traits<Elem, kHeadDim, 96, 6, 3>>(p, stream);
            case FC_V4_TILES_WG3_N96_PINGPONG:
                return launch_v4<FlashV4Traits<Elem, kHeadDim, 96, 6, 3, true>>(p, stream);
            case FC_V4_TILES_WG1_N128: return launch_v4<FlashV4Traits<Elem, kHeadDim, 128, 2, 1>>(p, stream);
            default: break;
        }
    }
    return (int)cudaErrorInvalidValue;
}

template <typename Elem>
int dispatch_v4_tiles(const fc_attention_params &p, fc_v4_tiles tiles, cudaStream_t stream) {
    switch (p.head_dim) {
        case 64: return launch_v4_tiles<Elem, 64>(p, tiles, stream);
        case 80: return launch_v4_tiles<Elem, 80>(p, tiles, stream);
        default: return (int)cudaErrorInvalidValue;
    }
}
#endif

}  // namespace
}  // namespace flashclip::attention

#ifdef FLASHCLIP_TUNING
extern "C" int fc_attention_v4_tiles(const fc_attention_params *p, fc_dtype dtype, fc_v4_tiles tiles,
                                     cudaStream_t stream) {
    using namespace flashclip::attention;
    switch (dtype) {
        case FC_F16: return dispatch_v4_tiles<__half>(*p, tiles, stream);
        case FC_BF16: return dispatch_v4_tiles<__nv_bfloat16>(*p, tiles, stream);
        default: return (int)cudaErrorInvalidValue;
    }
}
#endif

extern "C" int fc_attention_v4(const fc_attention_params *p, fc_dtype dtype, cudaStream_t stream) {
    using namespace flashclip::attention;
    switch (dtype) {
        case FC_F16: return dispatch_v4<__half>(*p, stream);
        case FC_BF16: return dispatch_v4<__nv_bfloat16>(*p, stream);
        default: return (int)cudaErrorInvalidValue;
    }
}
