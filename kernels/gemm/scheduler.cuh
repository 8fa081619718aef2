/* The persistent tile scheduler: one wave of blocks, block b taking tiles b, b + gridDim.x, ... Tiles are ordered
 * in bands of kBandM block rows, column by column within a band, so that the blocks running at once share a few
 * rows of x and a few columns of w in L2 instead of streaming all of w once per row of tiles. */
#ifndef FLASHCLIP_GEMM_SCHEDULER_CUH
#define FLASHCLIP_GEMM_SCHEDULER_CUH

namespace flashclip::gemm {

struct Tile {
    int m0, n0;
};

template <class Traits>
struct TileScheduler {
    static constexpr int kBandM = 8;
    int tiles_m, tiles_n;

    __device__ __forceinline__ TileScheduler(int m, int n)
        : tiles_m((m + Traits::kBlockM - 1) / Traits::kBlockM), tiles_n((n + Traits::kBlockN - 1) / Traits::kBlockN) {}

    __device__ __forceinline__ int count() const { return tiles_m * tiles_n; }

    /* How many tiles this block takes: 0 when there are fewer tiles than blocks (the launcher never starts such
     * blocks, but the ping-pong turns stay balanced if it does). */
    __device__ __forceinline__ int count_of_block() const {
        const int block = blockIdx.x, blocks = gridDim.x;
        return block < count() ? (count() - block + blocks - 1) / blocks : 0;
    }

    /* The block's i-th tile, in the order the producer loads them. */
    __device__ __forceinline__ Tile of_block(int i) const { return at((int)blockIdx.x + i * (int)gridDim.x); }

    __device__ __forceinline__ Tile at(int t) const {
        const int per_band = kBandM * tiles_n;
        const int band = t / per_band, in_band = t % per_band;
        const int band_m0 = band * kBandM;
        const int band_rows = min(kBandM, tiles_m - band_m0);
        return Tile{(band_m0 + in_band % band_rows) * Traits::kBlockM, (in_band / band_rows) * Traits::kBlockN};
    }
};

/* A position in the ring of kStages shared-memory stages; `phase` flips each time the ring wraps, which is the
 * parity the stage's barriers are waited on with. */
template <int kStages>
struct RingSlot {
    int stage = 0;
    uint32_t phase = 0;
    __device__ __forceinline__ void advance() {
        if (++stage == kStages) stage = 0, phase ^= 1u;
    }
    /* `steps` advances at once: the ring slots of a tile another consumer multiplies (ping-pong). */
    __device__ __forceinline__ void skip(int steps) {
        stage += steps;
        phase ^= (uint32_t)(stage / kStages) & 1u;
        stage %= kStages;
    }
};

}  // namespace flashclip::gemm

#endif
