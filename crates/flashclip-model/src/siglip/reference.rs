//! A float32 CPU forward of a `SiglipModel`, operation for operation as transformers' `modeling_siglip.py`: the
//! ground truth the GPU model is tested against.
//!
//! - vision: patch convolution (with bias) as one matrix product over unfolded patches, learned position
//!   embeddings (no class token), pre-norm encoder layers, `post_layernorm` of every token, then the pooling
//!   head: the probe attends over the tokens through `nn.MultiheadAttention`'s packed projections, `out_proj`,
//!   and `x + mlp(layernorm(x))`;
//! - text: token + position embeddings, bidirectional encoder layers, `final_layer_norm`, the LAST position
//!   (a padding token when the text is padded, as SigLIP is trained) through `head`.
//!
//! Logits are `logit_scale.exp() · cos + logit_bias`; zero-shot probabilities are their sigmoid, each label
//! judged on its own (they don't sum to 1).

use ndarray::{s, Array1, Array2, ArrayView1, ArrayView2, ArrayView3, ArrayView4, Axis};
use rayon::prelude::*;

use super::config::SiglipConfig;
use super::weights::{SiglipPoolingHead, SiglipWeights};
use crate::reference::ops::{
    internal_shape, layer_norm, linear, mat, run_encoder, unfold_patches, vector, Layers,
};
use crate::reference::{activation, l2_normalize, ReferenceError};

/// Output of [`SiglipReference::vision_forward`].
#[derive(Debug, Clone)]
pub struct SiglipVisionOutput {
    /// `post_layernorm` of the last layer's tokens, one `[num_patches, D]` per image.
    pub last_hidden_state: Vec<Array2<f32>>,
    /// The pooling head's output, `[B, D]`: the image embeddings, not normalized.
    pub image_embeds: Array2<f32>,
}

/// Output of [`SiglipReference::text_forward`].
#[derive(Debug, Clone)]
pub struct SiglipTextOutput {
    /// `final_layer_norm` of the last layer's tokens, one `[L, D]` per text.
    pub last_hidden_state: Vec<Array2<f32>>,
    /// `head(last position)`, `[B, projection_size]`: the text embeddings, not normalized.
    pub text_embeds: Array2<f32>,
}

/// Which keys the text tower's attention sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextAttention<'a> {
    /// Every position, padding included: how SigLIP was trained, and what transformers computes from
    /// `input_ids` alone.
    Unmasked,
    /// The first `lengths[b]` positions of text `b` (right-padded texts): transformers with the tokenizer's
    /// `attention_mask`.
    KeyLengths(&'a [usize]),
}

/// The reference model: a config and weights checked against each other.
#[derive(Debug, Clone, Copy)]
pub struct SiglipReference<'a> {
    config: &'a SiglipConfig,
    weights: &'a SiglipWeights,
}

impl<'a> SiglipReference<'a> {
    /// Pairs a config with weights, checking every weight shape against the config.
    pub fn new(
        config: &'a SiglipConfig,
        weights: &'a SiglipWeights,
    ) -> Result<Self, ReferenceError> {
        config.validate()?;
        weights.check_shapes(config)?;
        Ok(SiglipReference { config, weights })
    }

    /// The config.
    pub fn config(&self) -> &'a SiglipConfig {
        self.config
    }

    /// Runs the vision tower on `pixel_values` `[B, C, S, S]` (already normalized).
    pub fn vision_forward(
        &self,
        pixel_values: ArrayView4<'_, f32>,
    ) -> Result<SiglipVisionOutput, ReferenceError> {
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
        let e = &w.embeddings;
        let kernel = e
            .patch_embedding
            .weight
            .view()
            .into_shape_with_order((d, v.patch_dim()))
            .map_err(|err| internal_shape("patch_embedding.weight", err))?;
        let conv_bias = vector("patch_embedding.bias", &e.patch_embedding.bias)?;
        let positions = mat("position_embedding", &e.position_embedding)?;
        let opts = Layers {
            heads: v.num_attention_heads,
            eps: v.layer_norm_eps,
            act: v.hidden_act,
            causal: false,
            key_len: usize::MAX,
        };
        let images: Vec<ArrayView3<'_, f32>> = pixel_values.axis_iter(Axis(0)).collect();
        let per_image: Vec<(Array2<f32>, Array1<f32>)> = images
            .par_iter()
            .map(|image| {
                let mut x = unfold_patches(image.view(), v.patch_size).dot(&kernel.t());
                x += &conv_bias;
                x += &positions;
                let (_, x) = run_encoder(x, &w.encoder, opts, false)?;
                let x = layer_norm(x.view(), &w.post_layernorm, v.layer_norm_eps);
                let pooled = pool(&w.head, x.view(), opts)?;
                Ok((x, pooled))
            })
            .collect::<Result<_, ReferenceError>>()?;
        let mut image_embeds = Array2::zeros((per_image.len(), d));
        for (b, (_, pooled)) in per_image.iter().enumerate() {
            image_embeds.row_mut(b).assign(pooled);
        }
        Ok(SiglipVisionOutput {
            last_hidden_state: per_image.into_iter().map(|(x, _)| x).collect(),
            image_embeds,
        })
    }

    /// Runs the text tower on token-id sequences (each at most `max_position_embeddings` long; SigLIP expects
    /// them padded to exactly that length, see [`super::SiglipTokenizer`]).
    pub fn text_forward<T: AsRef<[u32]> + Sync>(
        &self,
        input_ids: &[T],
        attention: TextAttention<'_>,
    ) -> Result<SiglipTextOutput, ReferenceError> {
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
        let key_lens: Vec<usize> = match attention {
            TextAttention::Unmasked => vec![usize::MAX; input_ids.len()],
            TextAttention::KeyLengths(lens) => {
                if lens.len() != input_ids.len() {
                    return Err(ReferenceError::KeyLengths {
                        texts: input_ids.len(),
                        lengths: lens.len(),
                    });
                }
                if let Some(index) = lens.iter().position(|&n| n == 0) {
                    return Err(ReferenceError::EmptyText { index });
                }
                lens.to_vec()
            }
        };
        let tokens = mat("token_embedding", &w.embeddings.token_embedding)?;
        let positions = mat("position_embedding", &w.embeddings.position_embedding)?;
        let per_text: Vec<(Array2<f32>, Array1<f32>)> = input_ids
            .par_iter()
            .zip(key_lens.par_iter())
            .map(|(ids, &key_len)| {
                let ids = ids.as_ref();
                let mut x = Array2::<f32>::zeros((ids.len(), t.hidden_size));
                for (i, &id) in ids.iter().enumerate() {
                    let mut row = x.row_mut(i);
                    row.assign(&tokens.row(id as usize));
                    row += &positions.row(i);
                }
                let opts = Layers {
                    heads: t.num_attention_heads,
                    eps: t.layer_norm_eps,
                    act: t.hidden_act,
                    causal: false,
                    key_len,
                };
                let (_, x) = run_encoder(x, &w.encoder, opts, false)?;
                let x = layer_norm(x.view(), &w.final_layer_norm, t.layer_norm_eps);
                let last = x.slice(s![x.nrows() - 1.., ..]);
                let pooled = linear(last, &w.head)?.row(0).to_owned();
                Ok((x, pooled))
            })
            .collect::<Result<_, ReferenceError>>()?;
        let mut text_embeds = Array2::zeros((per_text.len(), t.projection_size));
        for (b, (_, pooled)) in per_text.iter().enumerate() {
            text_embeds.row_mut(b).assign(pooled);
        }
        Ok(SiglipTextOutput {
            last_hidden_state: per_text.into_iter().map(|(x, _)| x).collect(),
            text_embeds,
        })
    }

    /// `logit_scale.exp() · cos(image_i, text_j) + logit_bias`, `[B_img, B_txt]` (HF's `logits_per_image`).
    pub fn logits_per_image(
        &self,
        image_embeds: ArrayView2<'_, f32>,
        text_embeds: ArrayView2<'_, f32>,
    ) -> Result<Array2<f32>, ReferenceError> {
        siglip_logits(
            image_embeds,
            text_embeds,
            self.weights.logit_scale,
            self.weights.logit_bias,
        )
    }
}

/// The pooling head on one image's tokens `[N, D]`: returns `[D]`.
fn pool(
    head: &SiglipPoolingHead<crate::checkpoint::HostTensor>,
    x: ArrayView2<'_, f32>,
    opts: Layers,
) -> Result<Array1<f32>, ReferenceError> {
    let d = x.ncols();
    let w = mat("in_proj_weight", &head.attention.in_proj_weight)?;
    let b = vector("in_proj_bias", &head.attention.in_proj_bias)?;
    let probe = head
        .probe
        .view()
        .into_shape_with_order((1, d))
        .map_err(|err| internal_shape("probe", err))?;
    let project = |rows: ArrayView2<'_, f32>, part: usize| {
        let range = part * d..(part + 1) * d;
        let mut y = rows.dot(&w.slice(s![range.clone(), ..]).t());
        y += &b.slice(s![range]);
        y
    };
    let q = project(probe, 0);
    let k = project(x, 1);
    let v = project(x, 2);
    let attended = probe_attention(q.row(0), k.view(), v.view(), opts.heads);
    let attended = attended.insert_axis(Axis(0));
    let o = linear(attended.view(), &head.attention.out_proj)?;
    let h = layer_norm(o.view(), &head.layernorm, opts.eps);
    let mut m = linear(h.view(), &head.mlp.fc1)?;
    m.mapv_inplace(|z| activation(opts.act, z));
    let out = &o + &linear(m.view(), &head.mlp.fc2)?;
    Ok(out.row(0).to_owned())
}

/// One query `[D]` attending over `k`, `v` `[N, D]` per head (scale `1/sqrt(head_dim)`, softmax sums in f64).
fn probe_attention(
    q: ArrayView1<'_, f32>,
    k: ArrayView2<'_, f32>,
    v: ArrayView2<'_, f32>,
    heads: usize,
) -> Array1<f32> {
    let d = q.len();
    let hd = d / heads.max(1);
    let scale = 1.0 / (hd as f32).sqrt();
    let mut out = Array1::zeros(d);
    for h in 0..heads {
        let cols = h * hd..(h + 1) * hd;
        let scores = k
            .slice(s![.., cols.clone()])
            .dot(&q.slice(s![cols.clone()]))
            * scale;
        let max = scores.fold(f32::NEG_INFINITY, |m, &z| m.max(z));
        let weights = scores.mapv(|z| (z - max).exp());
        let sum: f64 = weights.iter().map(|&z| z as f64).sum();
        let weights = weights.mapv(|z| (z as f64 / sum) as f32);
        out.slice_mut(s![cols.clone()])
            .assign(&weights.dot(&v.slice(s![.., cols])));
    }
    out
}

/// `logit_scale.exp() · cos(image_i, text_j) + logit_bias`, `[B_img, B_txt]`, from unnormalized embeddings.
pub fn siglip_logits(
    image_embeds: ArrayView2<'_, f32>,
    text_embeds: ArrayView2<'_, f32>,
    logit_scale: f32,
    logit_bias: f32,
) -> Result<Array2<f32>, ReferenceError> {
    if image_embeds.ncols() != text_embeds.ncols() {
        return Err(ReferenceError::EmbedDimMismatch {
            image: image_embeds.ncols(),
            text: text_embeds.ncols(),
        });
    }
    let i = l2_normalize(image_embeds);
    let t = l2_normalize(text_embeds);
    Ok(i.dot(&t.t()) * logit_scale.exp() + logit_bias)
}

/// Zero-shot probabilities: the sigmoid of each logit, each image–label pair judged on its own.
pub fn sigmoid_probabilities(logits: ArrayView2<'_, f32>) -> Array2<f32> {
    logits.mapv(|z| (1.0 / (1.0 + (-(z as f64)).exp())) as f32)
}
