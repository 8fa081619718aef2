//! Explicit tile shapes of the v3 and v4 kernels, for tuning sweeps (feature `tuning`).

use cudarc::driver::CudaSlice;

use super::{launch, Kernel, Options, Version};
use crate::error::{Error, Result};
use crate::ffi;
use crate::gpu::Gpu;
use crate::tensor::{Element, View, ViewMut};

/// Tile shapes of the v3 and v4 kernels that can be chosen explicitly, for tuning sweeps (benches/attention.rs);
/// [`Version::V3`] and [`Version::V4`] use the tuned choice per shape (v3: `V3Wg2N64` at head dim 64, `V3Wg1N64`
/// at 80; v4 without causal masking: `V4Wg3N96PingPong` at 64 and `V4Wg3N64` at 80 when their blocks fill more
/// than one wave of SMs, else `V4Wg2N64PingPong` at 64 and `V4Wg2N64` at 80). `WgXNy`: X (consumer) warpgroups of
/// 64 query rows per block, y keys per K/V tile; v4's `Wg1` runs two blocks per SM. v4 shapes narrow the last key
/// tile (16 or 80 keys) where the keys left over fit, and split the keys of a last query block of at most 64 rows
/// among the consumers. The `PingPong` shapes have the consumers issue their GEMMs in turns (FlashAttention-3's
/// ping-pong scheduling).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tiles {
    V3Wg2N64,
    V3Wg1N64,
    V3Wg2N128,
    V3Wg3N64,
    V4Wg2N128,
    V4Wg2N64,
    V4Wg3N96,
    V4Wg1N128,
    V4Wg3N64,
    V4Wg2N64PingPong,
    V4Wg3N96PingPong,
    V4Wg3N64PingPong,
}

/// A sweep shape as the C entry point of its version names it.
pub(super) enum TilesFfi {
    V3(ffi::fc_v3_tiles),
    V4(ffi::fc_v4_tiles),
}

impl Tiles {
    pub const ALL: [Tiles; 12] = [
        Tiles::V3Wg2N64,
        Tiles::V3Wg1N64,
        Tiles::V3Wg2N128,
        Tiles::V3Wg3N64,
        Tiles::V4Wg2N128,
        Tiles::V4Wg2N64,
        Tiles::V4Wg3N96,
        Tiles::V4Wg1N128,
        Tiles::V4Wg3N64,
        Tiles::V4Wg2N64PingPong,
        Tiles::V4Wg3N96PingPong,
        Tiles::V4Wg3N64PingPong,
    ];

    /// The kernel version the shape belongs to.
    pub fn version(self) -> Version {
        match self {
            Tiles::V3Wg2N64 | Tiles::V3Wg1N64 | Tiles::V3Wg2N128 | Tiles::V3Wg3N64 => Version::V3,
            Tiles::V4Wg2N128
            | Tiles::V4Wg2N64
            | Tiles::V4Wg3N96
            | Tiles::V4Wg1N128
            | Tiles::V4Wg3N64
            | Tiles::V4Wg2N64PingPong
            | Tiles::V4Wg3N96PingPong
            | Tiles::V4Wg3N64PingPong => Version::V4,
        }
    }

    /// Head dims the version's sweep entry point is built for.
    pub fn head_dims(self) -> &'static [usize] {
        match self {
            Tiles::V4Wg3N96 | Tiles::V4Wg1N128 | Tiles::V4Wg3N96PingPong => &[64],
            _ => &[64, 80],
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Tiles::V3Wg2N64 => "v3 wg2 n64",
            Tiles::V3Wg1N64 => "v3 wg1 n64",
            Tiles::V3Wg2N128 => "v3 wg2 n128",
            Tiles::V3Wg3N64 => "v3 wg3 n64",
            Tiles::V4Wg2N128 => "v4 wg2 n128",
            Tiles::V4Wg2N64 => "v4 wg2 n64",
            Tiles::V4Wg3N96 => "v4 wg3 n96",
            Tiles::V4Wg1N128 => "v4 wg1 n128",
            Tiles::V4Wg3N64 => "v4 wg3 n64",
            Tiles::V4Wg2N64PingPong => "v4 wg2 n64 pingpong",
            Tiles::V4Wg3N96PingPong => "v4 wg3 n96 pingpong",
            Tiles::V4Wg3N64PingPong => "v4 wg3 n64 pingpong",
        }
    }

    pub(super) fn ffi(self) -> TilesFfi {
        use ffi::{fc_v3_tiles as F3, fc_v4_tiles as F4};
        match self {
            Tiles::V3Wg2N64 => TilesFfi::V3(F3::FC_V3_TILES_WG2_N64),
            Tiles::V3Wg1N64 => TilesFfi::V3(F3::FC_V3_TILES_WG1_N64),
            Tiles::V3Wg2N128 => TilesFfi::V3(F3::FC_V3_TILES_WG2_N128),
            Tiles::V3Wg3N64 => TilesFfi::V3(F3::FC_V3_TILES_WG3_N64),
            Tiles::V4Wg2N128 => TilesFfi::V4(F4::FC_V4_TILES_WG2_N128),
            Tiles::V4Wg2N64 => TilesFfi::V4(F4::FC_V4_TILES_WG2_N64),
            Tiles::V4Wg3N96 => TilesFfi::V4(F4::FC_V4_TILES_WG3_N96),
            Tiles::V4Wg1N128 => TilesFfi::V4(F4::FC_V4_TILES_WG1_N128),
            Tiles::V4Wg3N64 => TilesFfi::V4(F4::FC_V4_TILES_WG3_N64),
            Tiles::V4Wg2N64PingPong => TilesFfi::V4(F4::FC_V4_TILES_WG2_N64_PINGPONG),
            Tiles::V4Wg3N96PingPong => TilesFfi::V4(F4::FC_V4_TILES_WG3_N96_PINGPONG),
            Tiles::V4Wg3N64PingPong => TilesFfi::V4(F4::FC_V4_TILES_WG3_N64_PINGPONG),
        }
    }
}

/// [`flash_attention`] with the version of `tiles` at that explicit tile shape; head dims [`Tiles::head_dims`]
/// only.
#[allow(clippy::too_many_arguments)]
pub fn flash_attention_tiles<T: Element>(
    gpu: &Gpu,
    tiles: Tiles,
    q: &View<T>,
    k: &View<T>,
    v: &View<T>,
    key_lens: Option<&CudaSlice<i32>>,
    opts: &Options,
    o: &mut ViewMut<T>,
    lse: Option<&mut CudaSlice<f32>>,
) -> Result<()> {
    let head_dim = q.layout().shape.get(3).copied().unwrap_or(0);
    if !tiles.head_dims().contains(&head_dim) {
        return Err(Error::Unsupported(format!(
            "{} is built for head dims {:?}, not {head_dim}",
            tiles.name(),
            tiles.head_dims()
        )));
    }
    launch(gpu, Kernel::Tiles(tiles), q, k, v, key_lens, opts, o, lse)
}
