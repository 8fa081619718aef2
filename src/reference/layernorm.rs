use ndarray::{Array1, Array2, Axis};

use super::round;
use crate::tensor::Element;

/// `LayerNorm(x) * gamma + beta` row by row, in f64.
pub fn layernorm(
    x: &Array2<f64>,
    gamma: &Array1<f64>,
    beta: &Array1<f64>,
    eps: f64,
) -> Array2<f64> {
    let mut y = x.clone();
    for mut row in y.axis_iter_mut(Axis(0)) {
        let n = row.len() as f64;
        let mean = row.sum() / n;
        let var = row.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n;
        let rstd = 1.0 / (var + eps).sqrt();
        for (c, v) in row.iter_mut().enumerate() {
            *v = (*v - mean) * rstd * gamma[c] + beta[c];
        }
    }
    y
}

/// `(sum, y)` with `sum = residual + x + bias` and `y = LayerNorm(sum) * gamma + beta`, in f64.
pub fn bias_residual_layernorm(
    x: &Array2<f64>,
    bias: Option<&Array1<f64>>,
    residual: &Array2<f64>,
    gamma: &Array1<f64>,
    beta: &Array1<f64>,
    eps: f64,
) -> (Array2<f64>, Array2<f64>) {
    let mut sum = residual + x;
    if let Some(b) = bias {
        sum += b;
    }
    let y = layernorm(&sum, gamma, beta, eps);
    (sum, y)
}

/// LayerNorm as a framework computes it in `T`: fp32 statistics, output rounded to `T`.
pub fn layernorm_naive<T: Element>(
    x: &Array2<f64>,
    gamma: &Array1<f64>,
    beta: &Array1<f64>,
    eps: f64,
) -> Array2<f64> {
    let xr = x.mapv(round::<T>);
    layernorm(&xr, gamma, beta, eps).mapv(round::<T>)
}

/// The unfused sequence in `T`: `x + bias` rounded, `+ residual` rounded, then a `T` LayerNorm.
pub fn bias_residual_layernorm_naive<T: Element>(
    x: &Array2<f64>,
    bias: Option<&Array1<f64>>,
    residual: &Array2<f64>,
    gamma: &Array1<f64>,
    beta: &Array1<f64>,
    eps: f64,
) -> (Array2<f64>, Array2<f64>) {
    let mut h = x.clone();
    if let Some(b) = bias {
        h += b;
    }
    let sum = (h.mapv(round::<T>) + residual).mapv(round::<T>);
    let y = layernorm_naive::<T>(&sum, gamma, beta, eps);
    (sum, y)
}
