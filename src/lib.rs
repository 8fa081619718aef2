//! flashclip: hand-written CUDA kernels for CLIP, driven from Rust.
//!
//! - [`ops`]: one module per op, each checking its inputs before an unsafe launch:
//!   - [`ops::attention`]: flash attention forward (tiled online softmax) in several versions, plus the
//!     materialized cuBLAS reference path;
//!   - [`ops::bias_activation`]: fused bias + QuickGELU / GELU;
//!   - [`ops::layernorm`]: fused bias + residual + LayerNorm, and plain LayerNorm;
//!   - [`ops::embedding`]: patch unfolding, class/patch/position assembly, token lookup, row gathers;
//!   - [`ops::gemm`]: cuBLAS / cuBLASLt linear layers;
//! - [`Gpu`]: the device, its stream and its cuBLAS handles; [`tensor`]: device tensors and strided views;
//! - [`reference`](mod@reference): float64 CPU references of every op, the ground truth of the tests;
//! - [`bench`]: CUDA-event timing and summaries for benchmarks;
//! - `testing` (feature `testing`): GPU-or-skip, seeded random inputs and NaN poisoning for tests.
//!
//! Features: `tuning` adds the explicit tile shapes of the v3/v4 attention kernels and the explicit schedules of
//! the fused GEMM for sweeps (`ops::attention::Tiles`, `ops::gemm::Schedule`); `testing` adds the test helpers (and the `rand` dependency); `clap` derives
//! `clap::ValueEnum` for [`DType`] and [`ops::attention::Version`].
//!
//! Every op checks shapes, strides, dtypes and alignment before its unsafe launch and reports a typed [`Error`].

pub mod bench;
mod blas;
mod check;
pub mod error;
mod ffi;
mod gpu;
pub mod ops;
pub mod reference;
pub mod tensor;
#[cfg(feature = "testing")]
pub mod testing;

pub use error::{Error, Result};
pub use gpu::Gpu;
pub use ops::attention::FLASH_HEAD_DIMS;
pub use tensor::{DType, Element, Layout, Tensor, View, ViewMut};
