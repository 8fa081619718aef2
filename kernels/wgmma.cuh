/* Inline-PTX wrappers for Hopper's warpgroup MMA (wgmma, sm_90a only) and its shared-memory descriptors, used by
 * fc_attention_v3 and v4 (the mbarrier, TMA and register-reallocation instructions of v4 are in
 * warp_specialization.cuh).
 *
 * A warpgroup (4 consecutive warps, the first a multiple of 4) issues wgmma.mma_async together: D (64 x N, fp32,
 * in registers) += A (64 x 16, from registers; from shared memory in v4's few-row blocks) * B (16 x N, read by the
 * tensor cores straight from shared memory through a 64-bit matrix descriptor). Register layouts are those of
 * mma.sync m16n8k16 repeated: warp w of the group owns rows 16w..16w+15; D element 4i+e of a thread is
 * (row g + 8*(e/2), column 8i + 2t + e%2) with g = lane/4, t = lane%4; A registers 0..3 are (g, 2t..), (g+8, 2t..),
 * (g, 2t+8..), (g+8, 2t+8..) of the 16-column k slice. So the S accumulator of one GEMM becomes the A operand of
 * the next without leaving registers.
 *
 * The MMA runs asynchronously: wgmma.fence before issuing (registers written by ordinary code become visible to it),
 * commit_group after, wait_group before the accumulators are touched again. fence_operand pins each accumulator
 * register at those points so the compiler cannot move ordinary reads or writes of them across the asynchronous
 * region (the asm statements themselves keep their order; register uses need the explicit dependency).
 *
 * Shared-memory operands use the swizzled canonical layouts of the PTX ISA ("Shared Memory Matrix Layout"):
 * rows of S bytes (S = 32, 64 or 128, the swizzle width), 8-row atoms of 8*S bytes, 16-byte chunk c of row r
 * stored at chunk c ^ ((address >> 7) & (S/16 - 1)). For a K-major operand (B = K in S = Q K^T) the descriptor
 * gives the stride between 8-row groups (SBO = 8*S); for an MN-major operand (B = V in O = P V, the head dim
 * contiguous) additionally the stride between S-byte column blocks along N (LBO).
 */
#ifndef FLASHCLIP_WGMMA_CUH
#define FLASHCLIP_WGMMA_CUH

#include <cuda_runtime.h>
#include <cuda_fp16.h>
#include <cuda_bf16.h>
#include <stdint.h>

#include <type_traits>

#include "ptx.cuh"

namespace flashclip {

/* Swizzle width in bytes -> the descriptor's 2-bit layout code. */
template <int kSwizzleBytes>
struct SwizzleCode;
template <>
struct SwizzleCode<128> {
    static constexpr uint64_t value = 1;
};
template <>
struct SwizzleCode<64> {
    static constexpr uint64_t value = 2;
};
template <>
struct SwizzleCode<32> {
    static constexpr uint64_t value = 3;
};

/* Byte offset of 16-byte chunk `byte_offset` after the swizzle (offsets relative to a 1024-byte aligned base). */
template <int kSwizzleBytes>
__device__ __forceinline__ uint32_t swizzle(uint32_t byte_offset) {
    return byte_offset ^ (((byte_offset >> 7) & (kSwizzleBytes / 16 - 1)) << 4);
}

/* Matrix descriptor: start address, leading/stride byte offsets (16-byte units, 14 bits each), layout code. */
template <int kSwizzleBytes>
__device__ __forceinline__ uint64_t smem_desc(uint32_t smem_address, uint32_t lbo_bytes, uint32_t sbo_bytes) {
    return (uint64_t)((smem_address & 0x3FFFF) >> 4) | ((uint64_t)((lbo_bytes >> 4) & 0x3FFF) << 16) |
           ((uint64_t)((sbo_bytes >> 4) & 0x3FFF) << 32) | (SwizzleCode<kSwizzleBytes>::value << 62);
}

/* The same descriptor moved by `bytes` (a multiple of 16): the start address is the low field, in 16-byte units,
 * and a kernel's shared memory (< 256 KB) never carries out of it. Lets a kernel build one descriptor per tile
 * and step through it with constant adds instead of re-encoding the address for every MMA. The add stays in the
 * low word so that the compiler sees the high word (stride and swizzle fields) as the constant it is: a 64-bit add
 * costs a carry chain and two register moves to the uniform datapath per MMA, this one add and one move. */
__device__ __forceinline__ uint64_t desc_advance(uint64_t desc, uint32_t bytes) {
    return (desc & 0xFFFFFFFF00000000ull) | (uint32_t)((uint32_t)desc + (bytes >> 4));
}

__device__ __forceinline__ void wgmma_fence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void wgmma_commit() { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }
template <int kPending>
__device__ __forceinline__ void wgmma_wait() {
    asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(kPending) : "memory");
}

template <int kN>
__device__ __forceinline__ void fence_operand(float (&d)[kN]) {
#pragma unroll
    for (int i = 0; i < kN; ++i) asm volatile("" : "+f"(d[i])::"memory");
}
template <int kN>
__device__ __forceinline__ void fence_operand(uint32_t (&a)[kN][4]) {
#pragma unroll
    for (int i = 0; i < kN; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j) asm volatile("" : "+r"(a[i][j])::"memory");
}

/* Shared memory written through the generic proxy (plain stores, cp.async) must be fenced before the tensor cores
 * read it through the async proxy; each writing thread fences, then the block barrier orders the rest. */
__device__ __forceinline__ void fence_proxy_async() { asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory"); }

/* D (64 x kN) += A (registers) * B (descriptor); B is N-major (transposed) when kTransB = 1. scale_d = 0 ignores
 * D's old value (the first k step of a fresh product). PTX names every accumulator register: the lists below are
 * put together from chunks of 8 (register names and "+f" operands), one instruction template per N and element
 * type (a string literal). */
#define FC_WGMMA_R8_0 "%0, %1, %2, %3, %4, %5, %6, %7"
#define FC_WGMMA_R8_8 "%8, %9, %10, %11, %12, %13, %14, %15"
#define FC_WGMMA_R8_16 "%16, %17, %18, %19, %20, %21, %22, %23"
#define FC_WGMMA_R8_24 "%24, %25, %26, %27, %28, %29, %30, %31"
#define FC_WGMMA_R8_32 "%32, %33, %34, %35, %36, %37, %38, %39"
#define FC_WGMMA_R8_40 "%40, %41, %42, %43, %44, %45, %46, %47"
#define FC_WGMMA_R8_48 "%48, %49, %50, %51, %52, %53, %54, %55"
#define FC_WGMMA_R8_56 "%56, %57, %58, %59, %60, %61, %62, %63"
#define FC_WGMMA_R4 "%0, %1, %2, %3"
#define FC_WGMMA_D4 "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
#define FC_WGMMA_D8(i)                                                                                      \
    "+f"(d[(i)]), "+f"(d[(i) + 1]), "+f"(d[(i) + 2]), "+f"(d[(i) + 3]), "+f"(d[(i) + 4]), "+f"(d[(i) + 5]), \
        "+f"(d[(i) + 6]), "+f"(d[(i) + 7])
#define FC_WGMMA_R32 FC_WGMMA_R8_0 ", " FC_WGMMA_R8_8 ", " FC_WGMMA_R8_16 ", " FC_WGMMA_R8_24
#define FC_WGMMA_D32 FC_WGMMA_D8(0), FC_WGMMA_D8(8), FC_WGMMA_D8(16), FC_WGMMA_D8(24)
#define FC_WGMMA_R40 FC_WGMMA_R32 ", " FC_WGMMA_R8_32
#define FC_WGMMA_D40 FC_WGMMA_D32, FC_WGMMA_D8(32)
#define FC_WGMMA_R48 FC_WGMMA_R40 ", " FC_WGMMA_R8_40
#define FC_WGMMA_D48 FC_WGMMA_D40, FC_WGMMA_D8(40)
#define FC_WGMMA_R56 FC_WGMMA_R48 ", " FC_WGMMA_R8_48
#define FC_WGMMA_D56 FC_WGMMA_D48, FC_WGMMA_D8(48)
#define FC_WGMMA_R64 FC_WGMMA_R56 ", " FC_WGMMA_R8_56
#define FC_WGMMA_D64 FC_WGMMA_D56, FC_WGMMA_D8(56)
// Operand numbers: the accumulators first, then A's four registers, the descriptor, scale_d and kTransB.
#define FC_WGMMA_RS(N, TYPE, REGS, OPERANDS, A0, A1, A2, A3, DESC, SCALE, TRANS)                            \
    asm volatile("{\n.reg .pred p;\n"                                                                     \
                 "setp.ne.b32 p, %" #SCALE ", 0;\n"                                                       \
                 "wgmma.mma_async.sync.aligned.m64n" #N "k16.f32." TYPE "." TYPE " "                     \
                 "{" REGS "}, {%" #A0 ", %" #A1 ", %" #A2 ", %" #A3 "}, %" #DESC ", p, 1, 1, %" #TRANS ";\n}\n" \
                 : OPERANDS                                                                               \
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc_b), "r"(scale_d), "n"(kTransB))
#define FC_WGMMA_RS_BY_N(TYPE) \
    if constexpr (kN == 8) FC_WGMMA_RS(8, TYPE, FC_WGMMA_R4, FC_WGMMA_D4, 4, 5, 6, 7, 8, 9, 10); \
    else if constexpr (kN == 16) FC_WGMMA_RS(16, TYPE, FC_WGMMA_R8_0, FC_WGMMA_D8(0), 8, 9, 10, 11, 12, 13, 14); \
    else if constexpr (kN == 64) FC_WGMMA_RS(64, TYPE, FC_WGMMA_R32, FC_WGMMA_D32, 32, 33, 34, 35, 36, 37, 38); \
    else if constexpr (kN == 80) FC_WGMMA_RS(80, TYPE, FC_WGMMA_R40, FC_WGMMA_D40, 40, 41, 42, 43, 44, 45, 46); \
    else if constexpr (kN == 96) FC_WGMMA_RS(96, TYPE, FC_WGMMA_R48, FC_WGMMA_D48, 48, 49, 50, 51, 52, 53, 54); \
    else if constexpr (kN == 112) FC_WGMMA_RS(112, TYPE, FC_WGMMA_R56, FC_WGMMA_D56, 56, 57, 58, 59, 60, 61, 62); \
    else if constexpr (kN == 128) FC_WGMMA_RS(128, TYPE, FC_WGMMA_R64, FC_WGMMA_D64, 64, 65, 66, 67, 68, 69, 70);

template <typename Elem, int kN>
struct Wgmma {
    static_assert(kN == 8 || kN == 16 || kN == 64 || kN == 80 || kN == 96 || kN == 112 || kN == 128,
                  "an N the wrappers spell out");
    template <int kTransB>
    static __device__ __forceinline__ void mma(float (&d)[kN / 2], const uint32_t (&a)[4], uint64_t desc_b,
                                               int scale_d) {
        if constexpr (std::is_same<Elem, __half>::value) {
            FC_WGMMA_RS_BY_N("f16")
        } else {
            FC_WGMMA_RS_BY_N("bf16")
        }
    }
};
#undef FC_WGMMA_RS_BY_N
#undef FC_WGMMA_RS
#undef FC_WGMMA_R64
#undef FC_WGMMA_D64
#undef FC_WGMMA_R56
#undef FC_WGMMA_D56
#undef FC_WGMMA_R48
#undef FC_WGMMA_D48
#undef FC_WGMMA_R40
#undef FC_WGMMA_D40
#undef FC_WGMMA_R32
#undef FC_WGMMA_D32
#undef FC_WGMMA_D8
#undef FC_WGMMA_D4
#undef FC_WGMMA_R4
#undef FC_WGMMA_R8_0
#undef FC_WGMMA_R8_8
#undef FC_WGMMA_R8_16
#undef FC_WGMMA_R8_24
#undef FC_WGMMA_R8_32
#undef FC_WGMMA_R8_40
#undef FC_WGMMA_R8_48
#undef FC_WGMMA_R8_56

}  // namespace flashclip

#endif
