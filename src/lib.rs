//! flashclip: hand-written CUDA kernels for CLIP, driven from Rust.
//!
//! - [`attention`]: flash attention forward (tiled online softmax) in several versions, plus the materialized
//!   cuBLAS reference path;
//! - [`bias_activation`]: fused bias + QuickGELU / GELU;
//! - [`layernorm`]: fused bias + residual + LayerNorm, and plain LayerNorm;
//! - [`reference`](mod@reference): float64 CPU references of every op, the ground truth of the tests.
//!
//! Every op checks shapes, strides, dtypes and alignment before its unsafe launch and reports a typed [`Error`].

pub mod attention;
pub mod bias_activation;
mod check;
pub mod embedding;
pub mod error;
mod ffi;
pub mod gemm;
mod gpu;
pub mod layernorm;
pub mod reference;
pub mod tensor;
pub mod testing;

pub use error::{Error, Result};
pub use gpu::Gpu;
pub use tensor::{DType, Element, Layout, Tensor, View, ViewMut};
