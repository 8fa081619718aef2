//! Float64 CPU references of every op: the ground truth the kernels are tested against.
//!
//! Each op also has a "naive low-precision" variant that computes the way an unfused framework would in
//! f16/bf16 (inputs, intermediates and outputs rounded to the element type, fp32 accumulation). Its error
//! against the f64 reference sets the tests' tolerance, as FlashAttention's tests do: a kernel may be at most
//! twice as far from the truth as the naive computation (plus a small absolute slack).

mod attention;
mod bias_activation;
mod layernorm;

pub use attention::{attention, attention_naive, AttentionRef};
pub use bias_activation::{activate, bias_activation, bias_activation_naive};
pub use layernorm::{
    bias_residual_layernorm, bias_residual_layernorm_naive, layernorm, layernorm_naive,
};

use crate::tensor::Element;

/// `x` rounded to `T` and back (identity for f32 up to f32 rounding).
pub fn round<T: Element>(x: f64) -> f64 {
    T::from_f32(x as f32).to_f32() as f64
}

/// Largest absolute difference between two equally long slices; NaN anywhere, or slices of different lengths,
/// give NaN (so the result never passes a `<=` check).
pub fn max_abs_diff(a: &[f64], b: &[f64]) -> f64 {
    if a.len() != b.len() {
        return f64::NAN;
    }
    a.iter().zip(b).fold(0.0f64, |m, (x, y)| {
        let d = (x - y).abs();
        if d.is_nan() || m.is_nan() {
            f64::NAN
        } else {
            m.max(d)
        }
    })
}
