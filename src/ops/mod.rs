//! The ops, one module each. Each checks shapes, strides, dtypes and alignment, then launches its kernel (or
//! cuBLAS) on the [`crate::Gpu`]'s stream.

pub mod attention;
pub mod bias_activation;
pub mod embedding;
pub mod gemm;
pub mod layernorm;
