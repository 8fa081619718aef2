//! The FLOP formulas (see the module documentation of [`super`]).

use std::ops::{Add, Mul, Sub};

use super::{Breakdown, FlopsError, FlopsInput, FlopsReport, MlpKind, TowerFlops, TowerShape};
use crate::config::Activation;

/// [`count`] for a model and batch that make sense: `input` passes
/// [`FlopsInput::validate`] and `text_len` is between 1 and the text tower's context
/// length.
pub fn checked_count(
    input: &FlopsInput,
    image_batch: usize,
    text_batch: usize,
    text_len: usize,
) -> Result<FlopsReport, FlopsError> {
    input.validate()?;
    if text_len == 0 || text_len > input.text.seq_len {
        return Err(FlopsError::TextLen {
            text_len,
            context_length: input.text.seq_len,
        });
    }
    Ok(count(input, image_batch, text_batch, text_len))
}

/// Counts the FLOPs of encoding `image_batch` images and `text_batch` texts of `text_len`
/// tokens, projecting both, and computing the `image_batch × text_batch` logits.
///
/// Any input is accepted; [`FlopsInput::validate`] tells whether it describes a real model.
/// `text_len` is not checked against `input.text.seq_len` ([`checked_count`] checks). Counts saturate at `u128::MAX`
/// instead of overflowing.
pub fn count(
    input: &FlopsInput,
    image_batch: usize,
    text_batch: usize,
    text_len: usize,
) -> FlopsReport {
    let (mut every_op, mut mac2) = (Breakdown::default(), Breakdown::default());
    let p = C::from(input.projection_dim);

    // Vision tower.
    let v = &input.vision;
    let d = C::from(v.width);
    let images = C::from(image_batch);
    let n = C::from(v.seq_len);
    let tokens = images * n;
    let patches = images * C::from(input.patch.num_patches());
    let patch_k = C::from(input.patch.num_channels)
        * C::from(input.patch.patch_size)
        * C::from(input.patch.patch_size);
    let details = input.vision_details;
    let (mut all, mut mac) = blocks(v, n, tokens, details.sub_norm);
    let conv_bias = C::from(usize::from(input.patch.bias));
    all.embed = (patches * d * (C(2) * patch_k - C(1) + conv_bias) + tokens * d).0;
    mac.embed = (patches * d * C(2) * patch_k).0;
    let outer_norms = C::from(usize::from(details.pre_norm) + 1);
    all.norm_act = (C(all.norm_act) + tokens * layernorm(d) * outer_norms).0;
    if details.rope {
        // q and k of every patch token (not the class token), 3 FLOPs per element.
        all.attn_core = (C(all.attn_core) + patches * C::from(v.layers) * C(6) * d).0;
    }
    every_op.vision = all;
    mac2.vision = mac;
    let proj_bias = C::from(usize::from(details.projection_bias));
    every_op.vision_projection = (images * p * (C(2) * d - C(1) + proj_bias)).0;
    mac2.vision_projection = (images * p * C(2) * d).0;

    // Text tower.
    let t = &input.text;
    let d = C::from(t.width);
    let texts = C::from(text_batch);
    let n = C::from(text_len);
    let tokens = texts * n;
    let (mut all, mac) = blocks(t, n, tokens, false);
    all.embed = (tokens * d).0;
    all.norm_act = (C(all.norm_act) + tokens * layernorm(d)).0;
    every_op.text = all;
    mac2.text = mac;
    every_op.text_projection = (texts * p * (C(2) * d - C(1))).0;
    mac2.text_projection = (texts * p * C(2) * d).0;

    // Contrastive head.
    let pairs = images * texts;
    every_op.contrastive = ((images + texts) * C(3) * p + pairs * (C(2) * p - C(1)) + pairs).0;
    mac2.contrastive = (pairs * C(2) * p).0;

    FlopsReport {
        image_batch,
        image_tokens: v.seq_len,
        text_batch,
        text_len,
        every_op,
        mac2,
    }
}

/// Every-op FLOPs of one LayerNorm over a vector of width `d` (see the module docs).
fn layernorm(d: C) -> C {
    C(8) * d + C(2)
}

/// Every-op FLOPs of an activation, per element.
fn activation_ops(act: Activation) -> C {
    match act {
        // x·σ(1.702x): mul, exp, add, div, mul. erf GELU: x/√2, erf, +1, ·x, ·0.5.
        Activation::QuickGelu | Activation::Gelu => C(5),
        // 0.5·x·(1 + tanh(c·(x + 0.044715·x³))): x³ (2), ·0.044715, +x, ·c, tanh, +1, ·x, ·0.5.
        Activation::GeluTanh => C(9),
    }
}

/// The transformer blocks of one tower: `tokens` tokens in all, in sequences of `n`.
/// Returns (every-op, 2/MAC) with `embed` left at zero.
fn blocks(shape: &TowerShape, n: C, tokens: C, sub_norm: bool) -> (TowerFlops, TowerFlops) {
    let d = C::from(shape.width);
    let m = C::from(shape.mlp_width);
    let h = C::from(shape.heads);
    let per_layer = tokens * C::from(shape.layers);

    let attn_proj = C(8) * d * d;
    // q·scale (d) + QKᵀ (N(2d − h)) + softmax (h(3N − 1)) + PV (d(2N − 1)).
    let attn_core = d + n * (C(2) * d - h) + h * (C(3) * n - C(1)) + d * (C(2) * n - C(1));
    let (mlp_all, mlp_mac, act) = match shape.mlp {
        MlpKind::Plain => (
            C(4) * d * m,
            C(4) * d * m,
            activation_ops(shape.activation) * m,
        ),
        // silu = x·σ(x): exp, add, div, mul; then the gate multiply.
        MlpKind::SwiGlu => (C(6) * d * m, C(6) * d * m, C(5) * m),
    };
    let mut norm_act = C(2) * layernorm(d) + C(2) * d + act;
    if sub_norm {
        norm_act = norm_act + layernorm(d) + layernorm(m);
    }
    let every_op = TowerFlops {
        embed: 0,
        attn_proj: (per_layer * attn_proj).0,
        attn_core: (per_layer * attn_core).0,
        mlp: (per_layer * mlp_all).0,
        norm_act: (per_layer * norm_act).0,
    };
    let mac2 = TowerFlops {
        embed: 0,
        attn_proj: (per_layer * attn_proj).0,
        attn_core: (per_layer * C(4) * n * d).0,
        mlp: (per_layer * mlp_mac).0,
        norm_act: 0,
    };
    (every_op, mac2)
}

/// A saturating FLOP count, to keep the formulas readable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct C(u128);

impl From<usize> for C {
    fn from(x: usize) -> Self {
        C(x as u128)
    }
}

impl Add for C {
    type Output = C;
    fn add(self, rhs: C) -> C {
        C(self.0.saturating_add(rhs.0))
    }
}

impl Sub for C {
    type Output = C;
    fn sub(self, rhs: C) -> C {
        C(self.0.saturating_sub(rhs.0))
    }
}

impl Mul for C {
    type Output = C;
    fn mul(self, rhs: C) -> C {
        C(self.0.saturating_mul(rhs.0))
    }
}
