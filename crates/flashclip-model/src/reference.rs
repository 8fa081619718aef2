//! A float32 CPU forward pass of a whole CLIP model: the ground truth the CUDA model is
//! tested against.
//!
//! It follows Hugging Face's `CLIPModel` operation for operation (and so open_clip, whose
//! checkpoints load into the same [`ClipWeights`]):
//!
//! - vision: patch embedding (a stride-`P` convolution, done as one matrix product over
//!   unfolded patches), class token, position embeddings, `pre_layrnorm`, pre-norm encoder
//!   layers, `post_layernorm` on the class token, `visual_projection`;
//! - text: token + position embeddings, causal encoder layers, `final_layer_norm`, pooling
//!   at the end-of-text token, `text_projection`.
//!
//! Each image and each text is computed on its own (in parallel with rayon), and each text
//! at its own length. With causal attention that is exactly what a padded batch computes
//! at the real positions, so mixed-length batches need no mask here.
//!
//! Matrix products go through ndarray (`matrixmultiply`); LayerNorm statistics and softmax
//! sums are accumulated in f64. Build tests with optimizations for large models: a ViT-B/32
//! image + text forward takes about a second in release mode.

use ndarray::{
    s, Array1, Array2, Array3, ArrayView1, ArrayView2, ArrayView3, ArrayView4, ArrayViewMut1, Axis,
};
use rayon::prelude::*;

use crate::config::{Activation, ClipConfig, ConfigError};
use crate::weights::{ClipWeights, Encoder, EncoderLayer, LayerNorm, Linear, WeightsError};

/// Errors from the reference forward.
#[derive(Debug, thiserror::Error)]
pub enum ReferenceError {
    /// The config cannot describe a runnable model (e.g. heads not dividing the width).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The weights don't match the config.
    #[error(transparent)]
    Weights(#[from] WeightsError),
    /// `pixel_values` is not `[batch, channels, image_size, image_size]`.
    #[error("pixel_values must have shape [batch, {channels}, {size}, {size}], got {found:?}")]
    PixelShape {
        /// Expected channels.
        channels: usize,
        /// Expected image side.
        size: usize,
        /// Shape given.
        found: Vec<usize>,
    },
    /// A text has no tokens.
    #[error("text {index} is empty")]
    EmptyText {
        /// Index in the batch.
        index: usize,
    },
    /// A text is longer than the context.
    #[error("text {index} has {len} tokens, more than max_position_embeddings = {max}")]
    TextTooLong {
        /// Index in the batch.
        index: usize,
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A token id is outside the vocabulary.
    #[error("text {index}, position {position}: token id {id} is outside the vocabulary ({vocab_size} tokens)")]
    TokenOutOfRange {
        /// Index in the batch.
        index: usize,
        /// Position in the text.
        position: usize,
        /// The id.
        id: u32,
        /// The vocabulary size.
        vocab_size: usize,
    },
    /// Image and text embeddings of different widths were compared.
    #[error("embedding widths differ: image {image}, text {text}")]
    EmbedDimMismatch {
        /// Width of the image embeddings.
        image: usize,
        /// Width of the text embeddings.
        text: usize,
    },
}

/// Per-layer states of one sequence (empty unless requested).
type States = Vec<Array2<f32>>;

/// Output of [`ClipReference::vision_forward`].
#[derive(Debug, Clone)]
pub struct VisionOutput {
    /// Per-layer states `[B, seq_len, D]` if requested, else empty: entry 0 is the encoder
    /// input (after `pre_layrnorm`), entry `k` the output of layer `k` (as HF's
    /// `hidden_states`).
    pub hidden_states: Vec<Array3<f32>>,
    /// Output of the last encoder layer, `[B, seq_len, D]` (no `post_layernorm`).
    pub last_hidden_state: Array3<f32>,
    /// `post_layernorm` of the class token, `[B, D]`.
    pub pooler_output: Array2<f32>,
    /// `visual_projection(pooler_output)`, `[B, projection_dim]`, not normalized.
    pub image_embeds: Array2<f32>,
}

/// Output of [`ClipReference::text_forward`]. Sequence arrays are `[B, L, D]` with `L` the
/// longest text; rows at or past a text's length are zero.
#[derive(Debug, Clone)]
pub struct TextOutput {
    /// Per-layer states if requested, else empty: entry 0 is token + position embeddings,
    /// entry `k` the output of layer `k`.
    pub hidden_states: Vec<Array3<f32>>,
    /// `final_layer_norm` of the last layer's output.
    pub last_hidden_state: Array3<f32>,
    /// The state at each text's pooling position, `[B, D]`.
    pub pooler_output: Array2<f32>,
    /// `text_projection(pooler_output)`, `[B, projection_dim]`, not normalized.
    pub text_embeds: Array2<f32>,
    /// Each text's length.
    pub lengths: Vec<usize>,
    /// Each text's pooling position (see [`pooling_position`]).
    pub pooling_positions: Vec<usize>,
}

/// The reference model: a config and weights checked against each other.
#[derive(Debug, Clone, Copy)]
pub struct ClipReference<'a> {
    config: &'a ClipConfig,
    weights: &'a ClipWeights,
}

impl<'a> ClipReference<'a> {
    /// Pairs a config with weights, checking every weight shape against the config.
    ///
    /// Unlike [`ClipConfig::validate`], any head size is accepted: the CPU has no kernel
    /// restrictions, so tiny test models may use small heads.
    pub fn new(config: &'a ClipConfig, weights: &'a ClipWeights) -> Result<Self, ReferenceError> {
        check_structure(config)?;
        weights.check_shapes(config)?;
        Ok(ClipReference { config, weights })
    }

    /// The config.
    pub fn config(&self) -> &'a ClipConfig {
        self.config
    }

    /// The weights.
    pub fn weights(&self) -> &'a ClipWeights {
        self.weights
    }

    /// Runs the vision tower on `pixel_values` `[B, C, S, S]` (already normalized, as HF's
    /// `pixel_values`).
    pub fn vision_forward(
        &self,
        pixel_values: ArrayView4<'_, f32>,
        output_hidden_states: bool,
    ) -> Result<VisionOutput, ReferenceError> {
        let v = &self.config.vision;
        let w = &self.weights.vision_model;
        let shape = pixel_values.shape();
        if shape[1] != v.num_channels || shape[2] != v.image_size || shape[3] != v.image_size {
            return Err(ReferenceError::PixelShape {
                channels: v.num_channels,
                size: v.image_size,
                found: shape.to_vec(),
            });
        }
        let d = v.hidden_size;
        let patch_dim = v.patch_dim();
        // [D, C, P, P] -> [D, C·P·P]: the convolution as a matrix over unfolded patches.
        let kernel = w
            .embeddings
            .patch_embedding
            .to_shape((d, patch_dim))
            .map_err(|e| internal_shape("patch_embedding", e))?;
        let images: Vec<ArrayView3<'_, f32>> = pixel_values.axis_iter(Axis(0)).collect();
        let per_image: Vec<(States, Array2<f32>, Array1<f32>)> = images
            .par_iter()
            .map(|image| {
                let patches = unfold_patches(image.view(), v.patch_size);
                let mut x = Array2::<f32>::zeros((v.seq_len(), d));
                x.row_mut(0).assign(&w.embeddings.class_embedding);
                x.slice_mut(s![1.., ..]).assign(&patches.dot(&kernel.t()));
                x += &w.embeddings.position_embedding;
                let x = layer_norm(x.view(), &w.pre_layrnorm, v.layer_norm_eps);
                let (states, x) = run_encoder(
                    x,
                    &w.encoder,
                    v.num_attention_heads,
                    v.layer_norm_eps,
                    v.hidden_act,
                    false,
                    output_hidden_states,
                );
                let pooled = layer_norm(x.slice(s![0..1, ..]), &w.post_layernorm, v.layer_norm_eps)
                    .row(0)
                    .to_owned();
                (states, x, pooled)
            })
            .collect();

        let batch = per_image.len();
        let seq = v.seq_len();
        let mut hidden_states = Vec::new();
        if output_hidden_states {
            for k in 0..=v.num_hidden_layers {
                let mut a = Array3::zeros((batch, seq, d));
                for (b, (states, _, _)) in per_image.iter().enumerate() {
                    a.slice_mut(s![b, .., ..]).assign(&states[k]);
                }
                hidden_states.push(a);
            }
        }
        let mut last_hidden_state = Array3::zeros((batch, seq, d));
        let mut pooler_output = Array2::zeros((batch, d));
        for (b, (_, x, pooled)) in per_image.iter().enumerate() {
            last_hidden_state.slice_mut(s![b, .., ..]).assign(x);
            pooler_output.row_mut(b).assign(pooled);
        }
        let image_embeds = pooler_output.dot(&self.weights.visual_projection.t());
        Ok(VisionOutput {
            hidden_states,
            last_hidden_state,
            pooler_output,
            image_embeds,
        })
    }

    /// Runs the text tower on a batch of token-id sequences of any lengths (each including
    /// its start and end tokens, at most `max_position_embeddings` long).
    pub fn text_forward<T: AsRef<[u32]> + Sync>(
        &self,
        input_ids: &[T],
        output_hidden_states: bool,
    ) -> Result<TextOutput, ReferenceError> {
        let t = &self.config.text;
        let w = &self.weights.text_model;
        for (index, ids) in input_ids.iter().enumerate() {
            let ids = ids.as_ref();
            if ids.is_empty() {
                return Err(ReferenceError::EmptyText { index });
            }
            if ids.len() > t.max_position_embeddings {
                return Err(ReferenceError::TextTooLong {
                    index,
                    len: ids.len(),
                    max: t.max_position_embeddings,
                });
            }
            if let Some((position, &id)) = ids
                .iter()
                .enumerate()
                .find(|(_, &id)| id as usize >= t.vocab_size)
            {
                return Err(ReferenceError::TokenOutOfRange {
                    index,
                    position,
                    id,
                    vocab_size: t.vocab_size,
                });
            }
        }
        let d = t.hidden_size;
        let per_text: Vec<(States, Array2<f32>, usize)> = input_ids
            .par_iter()
            .map(|ids| {
                let ids = ids.as_ref();
                let mut x = Array2::<f32>::zeros((ids.len(), d));
                for (i, &id) in ids.iter().enumerate() {
                    let mut row = x.row_mut(i);
                    row.assign(&w.embeddings.token_embedding.row(id as usize));
                    row += &w.embeddings.position_embedding.row(i);
                }
                let (states, x) = run_encoder(
                    x,
                    &w.encoder,
                    t.num_attention_heads,
                    t.layer_norm_eps,
                    t.hidden_act,
                    true,
                    output_hidden_states,
                );
                let x = layer_norm(x.view(), &w.final_layer_norm, t.layer_norm_eps);
                (states, x, pooling_position(ids, t.eos_token_id))
            })
            .collect();

        let batch = per_text.len();
        let lengths: Vec<usize> = input_ids.iter().map(|ids| ids.as_ref().len()).collect();
        let max_len = lengths.iter().copied().max().unwrap_or(0);
        let mut hidden_states = Vec::new();
        if output_hidden_states {
            for k in 0..=t.num_hidden_layers {
                let mut a = Array3::zeros((batch, max_len, d));
                for (b, (states, _, _)) in per_text.iter().enumerate() {
                    a.slice_mut(s![b, ..lengths[b], ..]).assign(&states[k]);
                }
                hidden_states.push(a);
            }
        }
        let mut last_hidden_state = Array3::zeros((batch, max_len, d));
        let mut pooler_output = Array2::zeros((batch, d));
        let mut pooling_positions = Vec::with_capacity(batch);
        for (b, (_, x, pos)) in per_text.iter().enumerate() {
            last_hidden_state
                .slice_mut(s![b, ..lengths[b], ..])
                .assign(x);
            pooler_output.row_mut(b).assign(&x.row(*pos));
            pooling_positions.push(*pos);
        }
        let text_embeds = pooler_output.dot(&self.weights.text_projection.t());
        Ok(TextOutput {
            hidden_states,
            last_hidden_state,
            pooler_output,
            text_embeds,
            lengths,
            pooling_positions,
        })
    }

    /// `logit_scale.exp() · cos(image_i, text_j)` with the checkpoint's logit scale,
    /// `[B_img, B_txt]` (HF's `logits_per_image`; transpose for `logits_per_text`).
    pub fn logits_per_image(
        &self,
        image_embeds: ArrayView2<'_, f32>,
        text_embeds: ArrayView2<'_, f32>,
    ) -> Result<Array2<f32>, ReferenceError> {
        clip_logits(image_embeds, text_embeds, self.weights.logit_scale)
    }
}

/// Structural checks the forward needs (a subset of [`ClipConfig::validate`] that allows
/// any head size).
fn check_structure(config: &ClipConfig) -> Result<(), ConfigError> {
    let v = &config.vision;
    let t = &config.text;
    for (tower, hidden, heads) in [
        ("vision", v.hidden_size, v.num_attention_heads),
        ("text", t.hidden_size, t.num_attention_heads),
    ] {
        if heads == 0 || hidden % heads != 0 {
            return Err(ConfigError::Inconsistent {
                message: format!(
                    "{tower}.hidden_size ({hidden}) is not divisible by {tower}.num_attention_heads ({heads})"
                ),
            });
        }
    }
    if v.patch_size == 0 || v.image_size % v.patch_size != 0 {
        return Err(ConfigError::Inconsistent {
            message: format!(
                "vision.image_size ({}) is not divisible by vision.patch_size ({})",
                v.image_size, v.patch_size
            ),
        });
    }
    Ok(())
}

fn internal_shape(name: &str, err: ndarray::ShapeError) -> ReferenceError {
    // Unreachable after check_shapes, but reported rather than panicking.
    ReferenceError::Config(ConfigError::Inconsistent {
        message: format!("{name} cannot be reshaped: {err}"),
    })
}

/// The position whose final state is the text embedding, following HF: with the legacy
/// `eos_token_id == 2` the position of the largest id (first one on ties), otherwise the
/// first position holding `eos_token_id`, or 0 if there is none (HF's `argmax` of an
/// all-false mask).
pub fn pooling_position(ids: &[u32], eos_token_id: u32) -> usize {
    if eos_token_id == 2 {
        let mut best = 0;
        for (i, &id) in ids.iter().enumerate() {
            if id > ids[best] {
                best = i;
            }
        }
        best
    } else {
        ids.iter().position(|&id| id == eos_token_id).unwrap_or(0)
    }
}

/// Unfolds one image `[C, S, S]` into `[grid², C·P·P]` rows, patches in row-major grid
/// order and each row in the `[C, P, P]` order of the convolution kernel.
fn unfold_patches(image: ArrayView3<'_, f32>, patch: usize) -> Array2<f32> {
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

/// Runs an encoder on one sequence `[L, D]`; returns the per-layer states (input first) if
/// asked, and the final state.
fn run_encoder(
    mut x: Array2<f32>,
    encoder: &Encoder,
    heads: usize,
    eps: f64,
    act: Activation,
    causal: bool,
    keep_states: bool,
) -> (Vec<Array2<f32>>, Array2<f32>) {
    let mut states = Vec::new();
    if keep_states {
        states.push(x.clone());
    }
    for layer in &encoder.layers {
        encoder_layer(&mut x, layer, heads, eps, act, causal);
        if keep_states {
            states.push(x.clone());
        }
    }
    (states, x)
}

/// One pre-norm layer, in place: `x += attn(LN1(x))`, `x += mlp(LN2(x))`.
fn encoder_layer(
    x: &mut Array2<f32>,
    layer: &EncoderLayer,
    heads: usize,
    eps: f64,
    act: Activation,
    causal: bool,
) {
    let h = layer_norm(x.view(), &layer.layer_norm1, eps);
    let qkv = linear(h.view(), &layer.self_attn.qkv_proj);
    let attn = attention(qkv.view(), heads, causal);
    *x += &linear(attn.view(), &layer.self_attn.out_proj);

    let h = layer_norm(x.view(), &layer.layer_norm2, eps);
    let mut m = linear(h.view(), &layer.mlp.fc1);
    m.mapv_inplace(|v| activation(act, v));
    *x += &linear(m.view(), &layer.mlp.fc2);
}

/// `x Wᵀ + b` for `x` `[L, in]`.
fn linear(x: ArrayView2<'_, f32>, layer: &Linear) -> Array2<f32> {
    let mut y = x.dot(&layer.weight.t());
    y += &layer.bias;
    y
}

/// Row-wise LayerNorm of `x` `[L, D]` (biased variance, statistics in f64).
fn layer_norm(x: ArrayView2<'_, f32>, ln: &LayerNorm, eps: f64) -> Array2<f32> {
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
/// heads contiguous within each); returns `[L, D]`. `causal` masks keys after the query.
fn attention(qkv: ArrayView2<'_, f32>, heads: usize, causal: bool) -> Array2<f32> {
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
            let visible = if causal { i + 1 } else { len };
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
