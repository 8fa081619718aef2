/* fc_gemm_sm90: the linear layers of CLIP (y = x w^T) on Hopper, with the bias, activation or residual step that
 * follows them fused into the store.
 *
 * Composed FlashAttention-3 style from three parts: the tile scheduler (gemm/scheduler.cuh: persistent blocks,
 * tiles banded for L2 reuse), the mainloop (gemm/mainloop.cuh: a TMA producer thread and two consumer
 * warpgroups on wgmma over a ring of swizzled shared-memory stages) and the epilogue (gemm/epilogue.cuh: from
 * registers to global memory through the fused operation). Tile shapes and the schedule (cooperative: both
 * consumers on one tile; ping-pong: each on its own tiles, in turns) live in one traits type (gemm/traits.cuh);
 * this file holds the kernel, the tensor maps and the one dispatch place.
 *
 * Registers (ptxas -v, sm_90a, CUDA 13.0): all 96 instantiations of the tuning build (both schedules, both
 * stores) report 168 a thread, the cap __launch_bounds__(384, 1) sets at entry, and 0 bytes of stack and spills;
 * setmaxnreg then moves them (producer 40, consumers 232).
 */
#include <cuda.h>
#include <cudaTypedefs.h>  // PFN_cuTensorMapEncodeTiled
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <stdint.h>

#include <algorithm>
#include <type_traits>

#include "flashclip.h"
#include "launch_host.cuh"
#include "gemm/epilogue.cuh"
#include "gemm/mainloop.cuh"
#include "gemm/scheduler.cuh"
#include "gemm/traits.cuh"
#include "warp_specialization.cuh"

namespace flashclip::gemm {
namespace {

template <class Traits, fc_gemm_epilogue kEpilogue, fc_activation kAct>
__global__ void __launch_bounds__(Traits::kThreads, 1)
    gemm_kernel(const fc_gemm_params p, const __grid_constant__ CUtensorMap a_map,
                const __grid_constant__ CUtensorMap b_map, const __grid_constant__ CUtensorMap y_map) {
#if defined(__CUDA_ARCH__) && !defined(__CUDA_ARCH_FEAT_SM90_ALL)
    // wgmma, TMA and setmaxnreg exist only in sm_90a code; the launcher refuses other devices.
    __trap();
#elif defined(__CUDA_ARCH__)
    extern __shared__ __align__(1024) unsigned char smem_raw[];
    unsigned char *tiles = smem_raw + ((1024 - (smem_addr(smem_raw) & 1023)) & 1023);
    unsigned char *staging = tiles + Traits::kStages * Traits::kStageBytes;  // the TMA store's, one per consumer
    uint64_t *full = reinterpret_cast<uint64_t *>(staging + Traits::kConsumers * Traits::kStoreTileBytes);
    const SharedStages<Traits> sm{tiles, full, full + Traits::kStages};

    const int tid = threadIdx.x;
    // Through a shuffle, so that ptxas knows it is warp-uniform and keeps the wgmma inside its branches async.
    const int warpgroup = __shfl_sync(0xffffffffu, tid / 128, 0);
    if (tid == 0) {
        for (int s = 0; s < Traits::kStages; ++s) {
            mbarrier_init(&sm.full[s], 1);  // the producer's arrival (+ the TMA bytes)
            mbarrier_init(&sm.empty[s], 4 * Traits::kWarpgroupsPerTile);  // one per warp multiplying it
        }
        asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
    }
    __syncthreads();

    const TileScheduler<Traits> sched(p.m, p.n);
    const int k_blocks = (p.k + Traits::kBlockK - 1) / Traits::kBlockK;
    if (warpgroup == 0) {
        setmaxnreg_dec<Traits::kProducerRegs>();
        if (tid == 0) produce<Traits>(sched, sm, &a_map, &b_map, k_blocks);
    } else {
        setmaxnreg_inc<Traits::kConsumerRegs>();
        const int consumer = warpgroup - 1, warp = (tid / 32) % 4, lane = tid % 32;
        const Epilogue<Traits, kEpilogue, kAct> epilogue{staging + consumer * Traits::kStoreTileBytes, &y_map,
                                                         consumer, warp, lane};
        Consumer<Traits> c;
        float acc[Traits::kBlockN / 2];
        if constexpr (Traits::kSchedule == Schedule::kCooperative) {
            for (int t = blockIdx.x; t < sched.count(); t += gridDim.x) {
                c.tile(acc, sm, consumer, k_blocks, lane, [] {});
                epilogue.store(acc, p, sched.at(t), consumer);
            }
        } else {
            // The block's tiles alternate between the consumers; each one's ring position skips the other's
            // tiles. Turns: see PingPongTurns (the balance argument needs exactly these passes).
            const int block_tiles = sched.count_of_block();
            const PingPongTurns<Traits> turns{consumer};
            c.slot.skip(consumer * k_blocks);
            if (consumer == 1 && block_tiles > 0) turns.pass();
            for (int i = consumer; i < block_tiles; i += 2) {
                turns.take();
                const bool last = i == block_tiles - 1;
                c.tile(acc, sm, 0, k_blocks, lane, [&] {
                    if (!last) turns.pass();
                });
                c.slot.skip(k_blocks);
                epilogue.store(acc, p, sched.of_block(i), 0);
            }
        }
        epilogue.finish();
    }
#endif
}

/* A row-major [rows, cols] matrix with row stride ld, read in boxes of box_rows x 64 columns, 128-byte swizzled as
 * the wgmma descriptors expect. */
template <typename Elem>
cudaError_t matrix_map(CUtensorMap *map, const void *base, int rows, int cols, long long ld, int box_rows) {
    const PFN_cuTensorMapEncodeTiled_v12000 encode = tensor_map_encoder();
    if (encode == nullptr) return cudaErrorNotSupported;
    const cuuint64_t dims[2] = {(cuuint64_t)cols, (cuuint64_t)rows};
    const cuuint64_t strides[1] = {(cuuint64_t)(ld * 2)};
    const cuuint32_t box[2] = {64, (cuuint32_t)box_rows};
    const cuuint32_t element_strides[2] = {1, 1};
    const CUtensorMapDataType dtype =
        std::is_same<Elem, __half>::value ? CU_TENSOR_MAP_DATA_TYPE_FLOAT16 : CU_TENSOR_MAP_DATA_TYPE_BFLOAT16;
    const CUresult r = encode(map, dtype, 2, const_cast<void *>(base), dims, strides, box, element_strides,
                              CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B,
                              CU_TENSOR_MAP_L2_PROMOTION_L2_256B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
    return r == CUDA_SUCCESS ? cudaSuccess : cudaErrorInvalidValue;
}

template <class Traits, fc_gemm_epilogue kEpilogue, fc_activation kAct>
int launch(const fc_gemm_params &p, int sms, cudaStream_t stream) {
    using Elem = typename Traits::Elem;
    CUtensorMap a_map, b_map, y_map{};  // y_map: the TMA store's (64 x 64 boxes); unused by register stores
    cudaError_t err = matrix_map<Elem>(&a_map, p.x, p.m, p.k, p.ldx, Traits::kBlockM);
    if (err == cudaSuccess) err = matrix_map<Elem>(&b_map, p.w, p.n, p.k, p.ldw, Traits::kBlockN);
    if (err == cudaSuccess && Traits::kStore == Store::kTma) err = matrix_map<Elem>(&y_map, p.y, p.m, p.n, p.ldy, 64);
    if (err != cudaSuccess) return (int)err;
    const auto kernel = gemm_kernel<Traits, kEpilogue, kAct>;
    err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, Traits::kSmemBytes);
    if (err != cudaSuccess) return (int)err;
    const long long tiles = (long long)((p.m + Traits::kBlockM - 1) / Traits::kBlockM) *
                            ((p.n + Traits::kBlockN - 1) / Traits::kBlockN);
    const int grid = (int)std::min<long long>(tiles, sms);
    kernel<<<grid, Traits::kThreads, Traits::kSmemBytes, stream>>>(p, a_map, b_map, y_map);
    return (int)cudaGetLastError();
}

/* Wide tiles when they make at least one full wave; narrow ones (twice the tiles) otherwise. */
template <typename Elem, Schedule kSchedule, Store kStore, fc_gemm_epilogue kEpilogue, fc_activation kAct>
int launch_tiles(const fc_gemm_params &p, cudaStream_t stream) {
    const int sms = current_sm_count();
    if (sms <= 0) return (int)cudaErrorInvalidDevice;
    using Wide = WideTiles<Elem, kSchedule, kStore>;
    const long long wide_tiles = (long long)((p.m + Wide::kBlockM - 1) / Wide::kBlockM) *
                                 ((p.n + Wide::kBlockN - 1) / Wide::kBlockN);
    if (wide_tiles >= sms) return launch<Wide, kEpilogue, kAct>(p, sms, stream);
    return launch<NarrowTiles<Elem, kSchedule, kStore>, kEpilogue, kAct>(p, sms, stream);
}

/* The one place where the schedule, the store, the runtime epilogue and the activation become template
 * instantiations. */
template <typename Elem, Schedule kSchedule, Store kStore>
int dispatch(const fc_gemm_params &p, cudaStream_t stream) {
    switch (p.epilogue) {
        case FC_GEMM_PLAIN: return launch_tiles<Elem, kSchedule, kStore, FC_GEMM_PLAIN, FC_IDENTITY>(p, stream);
        case FC_GEMM_BIAS: return launch_tiles<Elem, kSchedule, kStore, FC_GEMM_BIAS, FC_IDENTITY>(p, stream);
        case FC_GEMM_BIAS_RESIDUAL:
            return launch_tiles<Elem, kSchedule, kStore, FC_GEMM_BIAS_RESIDUAL, FC_IDENTITY>(p, stream);
        case FC_GEMM_BIAS_ACTIVATION:
            switch (p.activation) {
                case FC_QUICK_GELU:
                    return launch_tiles<Elem, kSchedule, kStore, FC_GEMM_BIAS_ACTIVATION, FC_QUICK_GELU>(p, stream);
                case FC_GELU_ERF:
                    return launch_tiles<Elem, kSchedule, kStore, FC_GEMM_BIAS_ACTIVATION, FC_GELU_ERF>(p, stream);
                case FC_GELU_TANH:
                    return launch_tiles<Elem, kSchedule, kStore, FC_GEMM_BIAS_ACTIVATION, FC_GELU_TANH>(p, stream);
                case FC_IDENTITY: return launch_tiles<Elem, kSchedule, kStore, FC_GEMM_BIAS, FC_IDENTITY>(p, stream);
            }
            return (int)cudaErrorInvalidValue;
    }
    return (int)cudaErrorInvalidValue;
}

template <Schedule kSchedule, Store kStore>
int dispatch_dtype(const fc_gemm_params &p, fc_dtype dtype, cudaStream_t stream) {
    switch (dtype) {
        case FC_F16: return dispatch<__half, kSchedule, kStore>(p, stream);
        case FC_BF16: return dispatch<__nv_bfloat16, kSchedule, kStore>(p, stream);
        default: return (int)cudaErrorInvalidValue;
    }
}

bool aligned(const void *ptr, uintptr_t bytes) { return (reinterpret_cast<uintptr_t>(ptr) & (bytes - 1)) == 0; }

/* What the TMA maps and the paired stores need (the Rust launcher checks the same before calling). */
bool valid(const fc_gemm_params &p) {
    if (p.m <= 0 || p.n <= 0 || p.k <= 0 || p.n % 8 != 0 || p.k % 8 != 0) return false;
    if (p.ldx < p.k || p.ldw < p.k || p.ldy < p.n || p.ldx % 8 != 0 || p.ldw % 8 != 0 || p.ldy % 2 != 0) return false;
    if (p.x == nullptr || p.w == nullptr || p.y == nullptr || !aligned(p.x, 16) || !aligned(p.w, 16) ||
        !aligned(p.y, 4))
        return false;
    if (p.epilogue != FC_GEMM_PLAIN && (p.bias == nullptr || !aligned(p.bias, 4))) return false;
    if (p.epilogue == FC_GEMM_BIAS_RESIDUAL &&
        (p.residual == nullptr || !aligned(p.residual, 4) || p.ld_residual < p.n || p.ld_residual % 2 != 0))
        return false;
    return true;
}

}  // namespace
}  // namespace flashclip::gemm

/* The default schedule, per call (the one place it is chosen), from the same-run table in benches/results (H100,
 * 47abfb7): the TMA-store epilogue beats register stores on every layer shape (605-731 against 461-619 TFLOP/s at
 * 9232-73856 rows: the register epilogue's 4-byte stores kept the tensor cores idle for long), and ping-pong beats
 * cooperative with the activation epilogue from a few thousand rows on (the longest epilogue, hidden under the
 * other consumer's mainloop; 1.12-1.22x cuBLAS + the separate bias+QuickGELU at 73856 rows), cooperative elsewhere.
 * Register stores remain for outputs TMA cannot address (rows not 16-byte multiples apart, or a misaligned start). */
constexpr int kPingPongMinRows = 4096;

extern "C" int fc_gemm_sm90(const fc_gemm_params *p, fc_dtype dtype, cudaStream_t stream) {
    using namespace flashclip::gemm;
    if (p == nullptr || !valid(*p)) return (int)cudaErrorInvalidValue;
    if (p->ldy % 8 != 0 || !aligned(p->y, 16))
        return dispatch_dtype<Schedule::kCooperative, Store::kRegisters>(*p, dtype, stream);
    if (p->epilogue == FC_GEMM_BIAS_ACTIVATION && p->m >= kPingPongMinRows)
        return dispatch_dtype<Schedule::kPingPong, Store::kTma>(*p, dtype, stream);
    return dispatch_dtype<Schedule::kCooperative, Store::kTma>(*p, dtype, stream);
}

#ifdef FLASHCLIP_TUNING
extern "C" int fc_gemm_sm90_schedule(const fc_gemm_params *p, fc_dtype dtype, fc_gemm_schedule schedule,
                                     cudaStream_t stream) {
    using namespace flashclip::gemm;
    if (p == nullptr || !valid(*p)) return (int)cudaErrorInvalidValue;
    const bool tma_store = schedule == FC_GEMM_COOPERATIVE_TMA_STORE || schedule == FC_GEMM_PINGPONG_TMA_STORE;
    // The y map's rows must start 16 bytes apart and its base 16-byte aligned.
    if (tma_store && (p->ldy % 8 != 0 || !aligned(p->y, 16))) return (int)cudaErrorInvalidValue;
    switch (schedule) {
        case FC_GEMM_COOPERATIVE: return dispatch_dtype<Schedule::kCooperative, Store::kRegisters>(*p, dtype, stream);
        case FC_GEMM_PINGPONG: return dispatch_dtype<Schedule::kPingPong, Store::kRegisters>(*p, dtype, stream);
        case FC_GEMM_COOPERATIVE_TMA_STORE:
            return dispatch_dtype<Schedule::kCooperative, Store::kTma>(*p, dtype, stream);
        case FC_GEMM_PINGPONG_TMA_STORE: return dispatch_dtype<Schedule::kPingPong, Store::kTma>(*p, dtype, stream);
    }
    return (int)cudaErrorInvalidValue;
}
#endif
