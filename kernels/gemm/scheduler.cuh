/* The persistent tile scheduler: one wave of clusters (of kClusterM blocks; a lone block is a cluster of one),
 * cluster c taking cluster tiles c, c + clusters, ...; a cluster tile is kClusterM tiles stacked in M with the same
 * columns, one per block in rank order. Cluster tiles are ordered in bands of kBandM rows, column by column within
 * a band, so that the clusters running at once share a few rows of x and a few columns of w in L2 instead of
 * streaming all of w once per row of tiles. */
#ifndef FLASHCLIP_GEMM_SCHEDULER_CUH
#define FLASHCLIP_GEMM_SCHEDULER_CUH

namespace flashclip::gemm {

struct Tile {
    int m0, n0;
};

template <class Traits>
struct TileScheduler {
    static constexpr int kBandM = 8;
    static constexpr int kClusterRows = Traits::kBlockM * Traits::kClusterM;
    int tiles_m, tiles_n;  // cluster tiles
    int cluster, clusters, rank;

    __device__ __forceinline__ TileScheduler(int m, int n, int rank_in_cluster)
        : tiles_m((m + kClusterRows - 1) / kClusterRows),
          tiles_n((n + Traits::kBlockN - 1) / Traits::kBlockN),
          cluster((int)blockIdx.x / Traits::kClusterM),
          clusters((int)gridDim.x / Traits::kClusterM),
          rank(rank_in_cluster) {}

    __device__ __forceinline__ int count() const { return tiles_m * tiles_n; }

    /* How many tiles this block takes (as many as every block of its cluster): 0 when there are fewer cluster
     * tiles than clusters (the launcher never starts such clusters, but the ping-pong turns stay balanced if it
     * does). */
    __device__ __forceinline__ int count_of_block() const {
        return cluster < count() ? (count() - cluster + clusters - 1) / clusters : 0;
    }

    /* The block's i-th tile, in the order the producer loads them. A block whose tile starts past the last row of
     * x (the odd one out of a cluster at the bottom edge) still runs it on zero-filled rows: the epilogue stores
     * no row past m, and the cluster's loads stay in step. */
    __device__ __forceinline__ Tile of_block(int i) const {
        const int t = cluster + i * clusters;
        const int per_band = kBandM * tiles_n;
        const int band = t / per_band, in_band = t % per_band;
        const int band_m0 = band * kBandM;
        const int band_rows = min(kBandM, tiles_m - band_m0);
        return Tile{(band_m0 + in_band % band_rows) * kClusterRows + rank * Traits::kBlockM,
                    (in_band / band_rows) * Traits::kBlockN};
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
