/* Host-side helpers of the persistent, TMA-fed kernels (attention v4, the GEMM): the tensor-map encoder and the SM
 * count, each looked up once. Every .cu file compiles on its own, so each gets its own copy. */
#ifndef FLASHCLIP_LAUNCH_HOST_CUH
#define FLASHCLIP_LAUNCH_HOST_CUH

#include <cuda.h>
#include <cudaTypedefs.h>  // PFN_cuTensorMapEncodeTiled
#include <cuda_runtime.h>

#include <atomic>

namespace flashclip {
namespace {

/* cuTensorMapEncodeTiled, from the driver through the runtime (no libcuda link). */
PFN_cuTensorMapEncodeTiled_v12000 tensor_map_encoder() {
    static const PFN_cuTensorMapEncodeTiled_v12000 encode = [] {
        void *fn = nullptr;
        cudaDriverEntryPointQueryResult found;
        if (cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &fn, 12000, cudaEnableDefault, &found) !=
                cudaSuccess ||
            found != cudaDriverEntryPointSuccess)
            return (PFN_cuTensorMapEncodeTiled_v12000) nullptr;
        return reinterpret_cast<PFN_cuTensorMapEncodeTiled_v12000>(fn);
    }();
    return encode;
}

/* The SM count of the current device, asked once per device (every launch needs it). */
int current_sm_count() {
    constexpr int kDevices = 64;
    static std::atomic<int> counts[kDevices] = {};  // 0: not asked yet
    int device = 0;
    if (cudaGetDevice(&device) != cudaSuccess) return 0;
    const bool cached = device >= 0 && device < kDevices;
    if (cached && counts[device].load(std::memory_order_relaxed) > 0) return counts[device].load(std::memory_order_relaxed);
    int sms = 0;
    if (cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device) != cudaSuccess) return 0;
    if (cached) counts[device].store(sms, std::memory_order_relaxed);
    return sms;
}

}  // namespace
}  // namespace flashclip

#endif
