//! Explicit schedules of the fused GEMM's two consumer warpgroups, for tuning sweeps (feature `tuning`).

use super::fused::{launch, Epilogue, Kernel};
use crate::error::Result;
use crate::ffi;
use crate::gpu::Gpu;
use crate::tensor::{Element, View, ViewMut};

/// How the fused GEMM's two consumer warpgroups share a block's tiles; [`super::linear_fused`] runs
/// `Cooperative`. Both pick wide (N = 256) tiles when those fill at least one wave of SMs, else N = 128.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Schedule {
    /// Both warpgroups on one 128-row tile, 64 rows each; the tensor cores idle during each tile's epilogue.
    Cooperative,
    /// Each warpgroup on its own 64-row tiles, taking turns at the tensor cores: one's epilogue runs while the
    /// other's mainloop does.
    PingPong,
}

impl Schedule {
    pub const ALL: [Schedule; 2] = [Schedule::Cooperative, Schedule::PingPong];

    pub fn name(self) -> &'static str {
        match self {
            Schedule::Cooperative => "cooperative",
            Schedule::PingPong => "pingpong",
        }
    }

    pub(super) fn ffi(self) -> ffi::fc_gemm_schedule {
        match self {
            Schedule::Cooperative => ffi::fc_gemm_schedule::FC_GEMM_COOPERATIVE,
            Schedule::PingPong => ffi::fc_gemm_schedule::FC_GEMM_PINGPONG,
        }
    }
}

/// [`super::linear_fused`] at an explicit schedule; same shapes, checks and errors.
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
