//! The reference's operations on one sequence at a time: f32 matrices through ndarray, LayerNorm statistics
//! and softmax sums in f64.

use ndarray::{s, Array2, ArrayView1, ArrayView2, ArrayView3, ArrayViewMut1, Ix1, Ix2};

use super::ReferenceError;
use crate::checkpoint::HostTensor;
use crate::config::{Activation, ConfigError};
use crate::nn::{Encoder, EncoderLayer, LayerNorm, Linear};

/// A loaded tensor as the matrix its table entry says it is (checked at [`super::ClipReference::new`]).
pub(crate) fn mat<'a>(
    name: &str,
    t: &'a HostTensor,
) -> Result<ArrayView2<'a, f32>, ReferenceError> {
    t.view()
        .into_dimensionality::<Ix2>()
        .map_err(|e| internal_shape(name, e))
}

/// A loaded tensor as the vector its table entry says it is.
pub(crate) fn vector<'a>(
    name: &str,
    t: &'a HostTensor,
) -> Result<ArrayView1<'a, f32>, ReferenceError> {
    t.view()
        .into_dimensionality::<Ix1>()
        .map_err(|e| internal_shape(name, e))
}

pub(crate) fn internal_shape(name: &str, err: ndarray::ShapeError) -> ReferenceError {
    // Unreachable after check_shapes, but reported rather than panicking.
    ReferenceError::Config(ConfigError::Inconsistent {
        message: format!("{name} cannot be reshaped: {err}"),
    })
}

/// Unfolds one image `[C, S, S]` into `[grid², C·P·P]` rows, patches in row-major grid order and each row in the
/// `[C, P, P]` order of the convolution kernel.
pub(crate) fn unfold_patches(image: ArrayView3<'_, f32>, patch: usize) -> Array2<f32> {
    let (channels, size) = (image.shape()[0], image.shape()[1]);
    let grid = size / patch;
    let mut out = Array2::zeros((grid * grid, channels * patch * patch));
    for gy in 0..grid {
        for gx in 0..grid {
            let tile = image.slice(s![
                ..,
                gy * patch..(gy + 1) * patch,
                gx * patch..(gx + 1) * patch
            ]);
            let mut row = out.row_mut(gy * grid + gx);
            for (dst, &src) in row.iter_mut().zip(tile.iter()) {
                *dst = src;
            }
        }
    }
    out
}

/// The options of one tower's layers.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Layers {
    pub heads: usize,
    pub eps: f64,
    pub act: Activation,
    pub causal: bool,
    /// Keys every query may see (the rest are padding); `usize::MAX` for all.
    pub key_len: usize,
}

/// Runs an encoder on one sequence `[L, D]`; returns the per-layer states (input first) if asked, and the final
/// state.
pub(crate) fn run_encoder(
    mut x: Array2<f32>,
    encoder: &Encoder<HostTensor>,
    opts: Layers,
    keep_states: bool,
) -> Result<(Vec<Array2<f32>>, Array2<f32>), ReferenceError> {
    let mut states = Vec::new();
    if keep_states {
        states.push(x.clone());
    }
    for layer in &encoder.layers {
        encoder_layer(&mut x, layer, opts)?;
        if keep_states {
            states.push(x.clone());
        }
    }
    Ok((states, x))
}

/// One pre-norm layer, in place: `x += attn(LN1(x))`, `x += mlp(LN2(x))`.
fn encoder_layer(
    x: &mut Array2<f32>,
    layer: &EncoderLayer<HostTensor>,
    opts: Layers,
) -> Result<(), ReferenceError> {
    let h = layer_norm(x.view(), &layer.layer_norm1, opts.eps);
    let qkv = linear(h.view(), &layer.self_attn.qkv_proj)?;
    let attn = attention(qkv.view(), opts.heads, opts.causal, opts.key_len);
    *x += &linear(attn.view(), &layer.self_attn.out_proj)?;

    let h = layer_norm(x.view(), &layer.layer_norm2, opts.eps);
    let mut m = linear(h.view(), &layer.mlp.fc1)?;
    m.mapv_inplace(|v| activation(opts.act, v));
    *x += &linear(m.view(), &layer.mlp.fc2)?;
    Ok(())
}

/// `x Wᵀ + b` for `x` `[L, in]`.
pub(crate) fn linear(
    x: ArrayView2<'_, f32>,
    layer: &Linear<HostTensor>,
) -> Result<Array2<f32>, ReferenceError> {
    let mut y = x.dot(&mat("linear weight", &layer.weight)?.t());
    y += &vector("linear bias", &layer.bias)?;
    Ok(y)
}

/// Row-wise LayerNorm of `x` `[L, D]` (biased variance, statistics in f64).
pub(crate) fn layer_norm(
    x: ArrayView2<'_, f32>,
    ln: &LayerNorm<HostTensor>,
    eps: f64,
) -> Array2<f32> {
    let mut out = Array2::zeros(x.raw_dim());
    for (row, mut dst) in x.rows().into_iter().zip(out.rows_mut()) {
        let n = row.len() as f64;
        let mean = row.iter().map(|&v| v as f64).sum::<f64>() / n;
        let var = row.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n;
        let inv = 1.0 / (var + eps).sqrt();
        for (((d, &v), &g), &b) in dst
            .iter_mut()
            .zip(row.iter())
            .zip(ln.weight.iter())
            .zip(ln.bias.iter())
        {
            *d = ((v as f64 - mean) * inv) as f32 * g + b;
        }
    }
    out
}

/// Multi-head scaled dot-product attention over packed `qkv` `[L, 3D]` (q, k, v blocks,
/// heads contiguous within each); returns `[L, D]`. `causal` masks keys after the query, `key_len` the keys from
/// that position on.
pub(crate) fn attention(
    qkv: ArrayView2<'_, f32>,
    heads: usize,
    causal: bool,
    key_len: usize,
) -> Array2<f32> {
    let len = qkv.nrows();
    let d = qkv.ncols() / 3;
    let hd = d / heads.max(1);
    let scale = 1.0 / (hd as f32).sqrt();
    let mut out = Array2::zeros((len, d));
    for h in 0..heads {
        let cols = h * hd..(h + 1) * hd;
        let q = qkv.slice(s![.., cols.clone()]);
        let k = qkv.slice(s![.., d + cols.start..d + cols.end]);
        let v = qkv.slice(s![.., 2 * d + cols.start..2 * d + cols.end]);
        let mut scores = q.dot(&k.t());
        for (i, row) in scores.rows_mut().into_iter().enumerate() {
            let visible = if causal { i + 1 } else { len }.min(key_len);
            softmax_prefix(row, visible, scale);
        }
        out.slice_mut(s![.., cols]).assign(&scores.dot(&v));
    }
    out
}

/// Softmax of `scale · row[..visible]` in place, zeroing `row[visible..]`.
fn softmax_prefix(mut row: ArrayViewMut1<'_, f32>, visible: usize, scale: f32) {
    let visible = visible.min(row.len());
    let max = row
        .iter()
        .take(visible)
        .fold(f32::NEG_INFINITY, |m, &v| m.max(v * scale));
    let mut sum = 0.0f64;
    for v in row.iter_mut().take(visible) {
        *v = (*v * scale - max).exp();
        sum += *v as f64;
    }
    let inv = (1.0 / sum) as f32;
    for (j, v) in row.iter_mut().enumerate() {
        *v = if j < visible { *v * inv } else { 0.0 };
    }
}

/// The activation function, elementwise.
pub fn activation(act: Activation, x: f32) -> f32 {
    match act {
        Activation::QuickGelu => x / (1.0 + (-1.702 * x).exp()),
        Activation::Gelu => {
            let x = x as f64;
            (0.5 * x * (1.0 + erf(x / std::f64::consts::SQRT_2))) as f32
        }
        Activation::GeluTanh => {
            let x = x as f64;
            let c = (2.0 / std::f64::consts::PI).sqrt();
            (0.5 * x * (1.0 + (c * (x + 0.044715 * x * x * x)).tanh())) as f32
        }
    }
}

/// The error function, to about 1e-15 relative accuracy (std's `erf` is not stable).
///
/// Maclaurin series for |x| < 2.5, Laplace continued fraction for erfc beyond.
pub fn erf(x: f64) -> f64 {
    let a = x.abs();
    let r = if a < 2.5 {
        // erf(x) = 2/√π Σ (-1)^n x^(2n+1) / (n! (2n+1))
        let x2 = a * a;
        let mut term = a;
        let mut sum = a;
        let mut n = 0.0;
        while term.abs() > 1e-17 * sum.abs() {
            n += 1.0;
            term *= -x2 / n;
            sum += term / (2.0 * n + 1.0);
        }
        sum * std::f64::consts::FRAC_2_SQRT_PI
    } else if a < 27.0 {
        // erfc(x) = exp(-x²)/√π · 1/(x + 1/2/(x + 1/(x + 3/2/(x + 2/(x + ...)))))
        let mut frac = a;
        for k in (1..=60).rev() {
            frac = a + (k as f64 / 2.0) / frac;
        }
        1.0 - (-a * a).exp() / (std::f64::consts::PI.sqrt() * frac)
    } else {
        1.0
    };
    r.copysign(x)
}

/// Each row divided by its L2 norm (rows of norm 0 stay 0).
pub fn l2_normalize(x: ArrayView2<'_, f32>) -> Array2<f32> {
    let mut out = x.to_owned();
    for mut row in out.rows_mut() {
        let norm = row
            .iter()
            .map(|&v| (v as f64) * (v as f64))
            .sum::<f64>()
            .sqrt();
        if norm > 0.0 {
            row.mapv_inplace(|v| (v as f64 / norm) as f32);
        }
    }
    out
}

/// `logit_scale.exp() · cos(image_i, text_j)`, `[B_img, B_txt]`, from unnormalized
/// embeddings.
pub fn clip_logits(
    image_embeds: ArrayView2<'_, f32>,
    text_embeds: ArrayView2<'_, f32>,
    logit_scale: f32,
) -> Result<Array2<f32>, ReferenceError> {
    if image_embeds.ncols() != text_embeds.ncols() {
        return Err(ReferenceError::EmbedDimMismatch {
            image: image_embeds.ncols(),
            text: text_embeds.ncols(),
        });
    }
    let i = l2_normalize(image_embeds);
    let t = l2_normalize(text_embeds);
    Ok(i.dot(&t.t()) * logit_scale.exp())
}

/// Cosine similarity of two vectors (0 if either is zero).
pub fn cosine(a: ArrayView1<'_, f32>, b: ArrayView1<'_, f32>) -> f32 {
    let dot: f64 = a
        .iter()
        .zip(b.iter())
        .map(|(&x, &y)| x as f64 * y as f64)
        .sum();
    let na: f64 = a.iter().map(|&x| (x as f64).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|&x| (x as f64).powi(2)).sum::<f64>().sqrt();
    if na == 0.0 || nb == 0.0 {
        0.0
    } else {
        (dot / (na * nb)) as f32
    }
}
