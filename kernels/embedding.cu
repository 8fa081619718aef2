// Embedding-side kernels of the CLIP towers: patch unfolding, class/patch/position assembly, token lookup and row
// gathers. All are memory-bound copies with an add; one thread per output element keeps them simple, and they
// run once per forward (not per layer), so they are a small share of its time.
#include "common.cuh"

namespace flashclip {

constexpr int kThreads = 256;

inline unsigned blocks_for(long long n) { return (unsigned)((n + kThreads - 1) / kThreads); }

// Pixels arrive in T already (converted on the host, which halves the upload for 16-bit models): a pure gather.
template <typename T>
__global__ void patchify_kernel(T *patches, const T *pixels, int channels, int size, int patch, long long total) {
    const long long idx = (long long)blockIdx.x * kThreads + threadIdx.x;
    if (idx >= total) return;
    const int grid = size / patch, row_len = channels * patch * patch;
    const int col = (int)(idx % row_len);
    const long long row = idx / row_len; // b * grid^2 + p
    const int p = (int)(row % (grid * grid));
    const long long b = row / (grid * grid);
    const int c = col / (patch * patch), ky = (col / patch) % patch, kx = col % patch;
    const int y = (p / grid) * patch + ky, x = (p % grid) * patch + kx;
    patches[idx] = pixels[((b * channels + c) * size + y) * size + x];
}

template <typename T>
__global__ void vision_embed_kernel(T *x, const T *patch_out, const T *cls, const T *pos, int num_patches, int dim,
                                    long long total) {
    const long long idx = (long long)blockIdx.x * kThreads + threadIdx.x;
    if (idx >= total) return;
    const int d = (int)(idx % dim);
    const long long token = idx / dim;
    const int i = (int)(token % (num_patches + 1));
    const long long b = token / (num_patches + 1);
    const float base = i == 0 ? to_float(cls[d]) : to_float(patch_out[(b * num_patches + i - 1) * dim + d]);
    x[idx] = from_float<T>(base + to_float(pos[(long long)i * dim + d]));
}

template <typename T>
__global__ void text_embed_kernel(T *x, const int *ids, const T *tok, const T *pos, int len, int dim, long long total) {
    const long long idx = (long long)blockIdx.x * kThreads + threadIdx.x;
    if (idx >= total) return;
    const int d = (int)(idx % dim);
    const long long token = idx / dim;
    const int i = (int)(token % len);
    x[idx] = from_float<T>(to_float(tok[(long long)ids[token] * dim + d]) + to_float(pos[(long long)i * dim + d]));
}

template <typename T>
__global__ void gather_rows_kernel(T *dst, const T *src, const int *rows, int dim, long long src_row_stride,
                                   long long total) {
    const long long idx = (long long)blockIdx.x * kThreads + threadIdx.x;
    if (idx >= total) return;
    const int d = (int)(idx % dim);
    const long long i = idx / dim;
    dst[idx] = src[(long long)rows[i] * src_row_stride + d];
}

} // namespace flashclip

using namespace flashclip;

extern "C" int fc_patchify(void *patches, const void *pixels, int batch, int channels, int image_size, int patch,
                           fc_dtype dtype, cudaStream_t stream) {
    const int grid = image_size / patch;
    const long long total = (long long)batch * grid * grid * channels * patch * patch;
    if (!dispatch_dtype(dtype, [&](auto tag) {
            using T = decltype(tag);
            patchify_kernel<T><<<blocks_for(total), kThreads, 0, stream>>>(static_cast<T *>(patches),
                                                                            static_cast<const T *>(pixels), channels,
                                                                            image_size, patch, total);
        }))
        return (int)cudaErrorInvalidValue;
    return (int)cudaGetLastError();
}

extern "C" int fc_vision_embed(void *x, const void *patch_out, const void *cls, const void *pos, int batch,
                               int num_patches, int dim, fc_dtype dtype, cudaStream_t stream) {
    const long long total = (long long)batch * (num_patches + 1) * dim;
    if (!dispatch_dtype(dtype, [&](auto tag) {
            using T = decltype(tag);
            vision_embed_kernel<T><<<blocks_for(total), kThreads, 0, stream>>>(
                static_cast<T *>(x), static_cast<const T *>(patch_out), static_cast<const T *>(cls),
                static_cast<const T *>(pos), num_patches, dim, total);
        }))
        return (int)cudaErrorInvalidValue;
    return (int)cudaGetLastError();
}

extern "C" int fc_text_embed(void *x, const int *ids, const void *tok, const void *pos, int batch, int len, int dim,
                             fc_dtype dtype, cudaStream_t stream) {
    const long long total = (long long)batch * len * dim;
    if (!dispatch_dtype(dtype, [&](auto tag) {
            using T = decltype(tag);
            text_embed_kernel<T><<<blocks_for(total), kThreads, 0, stream>>>(
                static_cast<T *>(x), ids, static_cast<const T *>(tok), static_cast<const T *>(pos), len, dim, total);
        }))
        return (int)cudaErrorInvalidValue;
    return (int)cudaGetLastError();
}

extern "C" int fc_gather_rows(void *dst, const void *src, const int *rows, int n, int dim, long long src_row_stride,
                              fc_dtype dtype, cudaStream_t stream) {
    const long long total = (long long)n * dim;
    if (!dispatch_dtype(dtype, [&](auto tag) {
            using T = decltype(tag);
            gather_rows_kernel<T><<<blocks_for(total), kThreads, 0, stream>>>(
                static_cast<T *>(dst), static_cast<const T *>(src), rows, dim, src_row_stride, total);
        }))
        return (int)cudaErrorInvalidValue;
    return (int)cudaGetLastError();
}
