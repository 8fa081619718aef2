//! Explicit schedules of the fused GEMM's two consumer warpgroups (and its TMA-store epilogue), for tuning sweeps
//! (feature `tuning`).

use super::fused::{launch, Epilogue, Kernel};
use crate::error::Result;
use crate::ffi;
use crate::gpu::Gpu;
use crate::tensor::{Element, View, ViewMut};

/// How the fused GEMM's two consumer warpgroups share a block's tiles and write them out;
/// [`super::linear_fused`] chooses among them per call (see `fc_gemm_sm90`). All pick wide (N = 256) tiles when
/// those fill at least one wave of SMs, else N = 128.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Schedule {
    /// Both warpgroups on one 128-row tile, 64 rows each; the tensor cores idle during each tile's epilogue.
    Cooperative,
    /// Each warpgroup on its own 64-row tiles, taking turns at the tensor cores: one's epilogue runs while the
    /// other's mainloop does.
    PingPong,
    /// `Cooperative`, the epilogue staging the tile in swizzled shared memory for a TMA store (one stage fewer
    /// in the ring at N = 256). Needs y's row stride a multiple of 8 and y 16-byte aligned.
    CooperativeTmaStore,
    /// `PingPong` with the TMA-store epilogue of `CooperativeTmaStore`.
    PingPongTmaStore,
}

impl Schedule {
    pub const ALL: [Schedule; 4] = [
        Schedule::Cooperative,
        Schedule::PingPong,
        Schedule::CooperativeTmaStore,
        Schedule::PingPongTmaStore,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Schedule::Cooperative => "cooperative",
            Schedule::PingPong => "pingpong",
            Schedule::CooperativeTmaStore => "cooperative-tma",
            Schedule::PingPongTmaStore => "pingpong-tma",
        }
    }

    /// Whether the epilogue stores through shared memory and TMA.
    pub fn tma_store(self) -> bool {
        matches!(
            self,
            Schedule::CooperativeTmaStore | Schedule::PingPongTmaStore
        )
    }

    pub(super) fn ffi(self) -> ffi::fc_gemm_schedule {
        use ffi::fc_gemm_schedule as F;
        match self {
            Schedule::Cooperative => F::FC_GEMM_COOPERATIVE,
            Schedule::PingPong => F::FC_GEMM_PINGPONG,
            Schedule::CooperativeTmaStore => F::FC_GEMM_COOPERATIVE_TMA_STORE,
            Schedule::PingPongTmaStore => F::FC_GEMM_PINGPONG_TMA_STORE,
        }
    }
}

/// [`super::linear_fused`] at an explicit schedule; same shapes, checks and errors, plus y's row stride a multiple
/// of 8 and y 16-byte aligned for the TMA-store schedules.
pub fn linear_fused_schedule<T: Element>(
    gpu: &Gpu,
    schedule: Schedule,
    x: &View<T>,
    w: &View<T>,
    epilogue: Epilogue<'_, '_, T>,
    y: &mut ViewMut<T>,
) -> Result<()> {
    launch(gpu, Kernel::Schedule(schedule), x, w, epilogue, y)
}
