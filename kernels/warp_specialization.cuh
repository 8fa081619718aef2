/* Inline-PTX wrappers for warp-specialized kernels on sm_90a (fc_attention_v4, fc_gemm_sm90): mbarriers, TMA loads
 * and stores, named (hardware) barriers and the register reallocation between warpgroups (setmaxnreg). */
#ifndef FLASHCLIP_WARP_SPECIALIZATION_CUH
#define FLASHCLIP_WARP_SPECIALIZATION_CUH

#include <cuda.h>  // CUtensorMap
#include <stdint.h>

#include "ptx.cuh"

namespace flashclip {

/* mbarrier in shared memory: a phase completes when `count` arrivals have happened; waiters name the phase by its
 * parity (0 for the first completion, then 1, 0, ...). Arrive has release and the wait acquire semantics (CTA). */
__device__ __forceinline__ void mbarrier_init(uint64_t *bar, uint32_t count) {
    asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(smem_addr(bar)), "r"(count) : "memory");
}
__device__ __forceinline__ void mbarrier_arrive(uint64_t *bar) {
    asm volatile("{\n.reg .b64 state;\nmbarrier.arrive.shared::cta.b64 state, [%0];\n}\n" ::"r"(smem_addr(bar))
                 : "memory");
}
/* `count` arrivals at once (a warp that stands for several). */
__device__ __forceinline__ void mbarrier_arrive(uint64_t *bar, uint32_t count) {
    asm volatile("{\n.reg .b64 state;\nmbarrier.arrive.shared::cta.b64 state, [%0], %1;\n}\n" ::"r"(smem_addr(bar)),
                 "r"(count)
                 : "memory");
}
__device__ __forceinline__ void mbarrier_wait(uint64_t *bar, uint32_t parity) {
    asm volatile(
        "{\n.reg .pred done;\nwait:\n"
        "mbarrier.try_wait.parity.shared::cta.b64 done, [%0], %1;\n"
        "@!done bra wait;\n}\n" ::"r"(smem_addr(bar)),
        "r"(parity)
        : "memory");
}

/* Arrive on `bar` and announce `bytes` more of asynchronous (TMA) writes that its phase must wait for. */
__device__ __forceinline__ void mbarrier_arrive_expect_tx(uint64_t *bar, uint32_t bytes) {
    asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(smem_addr(bar)), "r"(bytes)
                 : "memory");
}

/* TMA: one box of a 4-d tensor map (coordinates innermost first) into shared memory, laid out and swizzled as
 * the map says; `bar` counts the bytes as they land. Parts of the box outside the tensor are written as zeros. */
__device__ __forceinline__ void tma_load_4d(void *smem_dst, const CUtensorMap *map, int c0, int c1, int c2, int c3,
                                            uint64_t *bar) {
    asm volatile(
        "cp.async.bulk.tensor.4d.shared::cluster.global.tile.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3, %4, "
        "%5}], [%6];\n" ::"r"(smem_addr(smem_dst)),
        "l"(reinterpret_cast<uint64_t>(map)), "r"(c0), "r"(c1), "r"(c2), "r"(c3), "r"(smem_addr(bar))
        : "memory");
}

/* TMA: one box of a 2-d tensor map (column, row) into shared memory, as tma_load_4d. */
__device__ __forceinline__ void tma_load_2d(void *smem_dst, const CUtensorMap *map, int c0, int c1, uint64_t *bar) {
    asm volatile(
        "cp.async.bulk.tensor.2d.shared::cluster.global.tile.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3}], "
        "[%4];\n" ::"r"(smem_addr(smem_dst)),
        "l"(reinterpret_cast<uint64_t>(map)), "r"(c0), "r"(c1), "r"(smem_addr(bar))
        : "memory");
}

/* TMA store: one box of a 2-d tensor map (column, row) from shared memory (laid out and swizzled as the map says)
 * into global memory, in this thread's current bulk group; parts of the box outside the tensor are not written.
 * The shared-memory writes it reads must be made visible to the async proxy first (fence_proxy_async). */
__device__ __forceinline__ void tma_store_2d(const CUtensorMap *map, const void *smem_src, int c0, int c1) {
    asm volatile("cp.async.bulk.tensor.2d.global.shared::cta.bulk_group [%0, {%1, %2}], [%3];\n" ::"l"(
                     reinterpret_cast<uint64_t>(map)),
                 "r"(c0), "r"(c1), "r"(smem_addr(smem_src))
                 : "memory");
}
__device__ __forceinline__ void bulk_commit_group() { asm volatile("cp.async.bulk.commit_group;\n" ::: "memory"); }
/* Until this thread's bulk groups have read their shared memory (it may then be overwritten). */
__device__ __forceinline__ void bulk_wait_group_read() {
    asm volatile("cp.async.bulk.wait_group.read 0;\n" ::: "memory");
}
/* Until this thread's bulk groups have completed (their global writes done). */
__device__ __forceinline__ void bulk_wait_group() { asm volatile("cp.async.bulk.wait_group 0;\n" ::: "memory"); }

/* Barrier among `count` threads (a multiple of 32) on hardware barrier `id` (0 is __syncthreads'). */
__device__ __forceinline__ void named_barrier_sync(int id, int count) {
    asm volatile("bar.sync %0, %1;\n" ::"r"(id), "r"(count) : "memory");
}

/* Arrival at hardware barrier `id` of `count` threads without waiting for it to complete. */
__device__ __forceinline__ void named_barrier_arrive(int id, int count) {
    asm volatile("bar.arrive %0, %1;\n" ::"r"(id), "r"(count) : "memory");
}

/* Move registers between warpgroups (sm_90a): the producer gives some back, the consumers take them. The kernel
 * needs a register cap at entry (__launch_bounds__(threads, 1)) for ptxas to honour these. */
template <int kRegs>
__device__ __forceinline__ void setmaxnreg_dec() {
    asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;\n" ::"n"(kRegs));
}
template <int kRegs>
__device__ __forceinline__ void setmaxnreg_inc() {
    asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;\n" ::"n"(kRegs));
}

}  // namespace flashclip

#endif
