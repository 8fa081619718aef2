//! A float32 CPU forward of a whole Chinese-CLIP model, following Hugging Face's `ChineseCLIPModel`:
//!
//! - vision: CLIP's ViT ([`crate::reference`]'s vision tower), `visual_projection`;
//! - text: word + position + token-type (type 0) embeddings, the embedding `LayerNorm`, post-LN BERT layers
//!   (`x = LN(x + attn(x))`, `x = LN(x + dense(act(intermediate(x))))`) with bidirectional attention, the last
//!   layer's `[CLS]` row (position 0; no pooler), `text_projection`.
//!
//! Each text runs on its own at its own length: HF masks padded keys, so what a padded batch computes at a
//! text's real positions is exactly this.

use ndarray::{s, Array2, Array3, ArrayView2, ArrayView4};
use rayon::prelude::*;

use super::config::ChineseClipConfig;
use super::weights::{BertLayer, BertResidualOutput, ChineseClipWeights};
use crate::checkpoint::HostTensor;
use crate::config::{Activation, ConfigError};
use crate::reference::ops::{activation, attention, clip_logits, layer_norm, linear, mat};
use crate::reference::{check_texts, vision_tower, ReferenceError, VisionOutput};

/// Output of [`ChineseClipReference::text_forward`]. Sequence arrays are `[B, L, D]` with `L` the longest text;
/// rows at or past a text's length are zero.
#[derive(Debug, Clone)]
pub struct BertOutput {
    /// Per-layer states if requested, else empty: entry 0 is the embeddings (after their LayerNorm), entry `k`
    /// the output of layer `k` (as HF's `hidden_states`).
    pub hidden_states: Vec<Array3<f32>>,
    /// The last layer's output.
    pub last_hidden_state: Array3<f32>,
    /// Each text's `[CLS]` row of `last_hidden_state`, `[B, D]`.
    pub pooler_output: Array2<f32>,
    /// `text_projection(pooler_output)`, `[B, projection_dim]`, not normalized.
    pub text_embeds: Array2<f32>,
    /// Each text's length.
    pub lengths: Vec<usize>,
}

/// The reference model: a config and weights checked against each other.
#[derive(Debug, Clone, Copy)]
pub struct ChineseClipReference<'a> {
    config: &'a ChineseClipConfig,
    weights: &'a ChineseClipWeights,
}

/// The options of the text tower's layers.
#[derive(Debug, Clone, Copy)]
struct Layers {
    heads: usize,
    eps: f64,
    act: Activation,
}

impl<'a> ChineseClipReference<'a> {
    /// Pairs a config with weights, checking the config's shapes (any head size: the CPU has no kernel
    /// restrictions) and every weight shape against it.
    pub fn new(
        config: &'a ChineseClipConfig,
        weights: &'a ChineseClipWeights,
    ) -> Result<Self, ReferenceError> {
        config.validate_shape()?;
        let mut expected = ChineseClipWeights::plan(config)
            .into_iter()
            .filter(|s| !s.scalar);
        let mut mismatch = None;
        weights.for_each_tensor(&mut |t: &HostTensor| match expected.next() {
            Some(spec) if spec.shape == t.shape() => {}
            Some(spec) => {
                mismatch.get_or_insert(format!(
                    "{} has shape {:?}, the config implies {:?}",
                    spec.key,
                    t.shape(),
                    spec.shape
                ));
            }
            None => {
                mismatch.get_or_insert("the weights hold more tensors than the config".into());
            }
        });
        if expected.next().is_some() {
            mismatch.get_or_insert("the weights hold fewer tensors than the config".into());
        }
        match mismatch {
            Some(message) => Err(ConfigError::Inconsistent { message }.into()),
            None => Ok(ChineseClipReference { config, weights }),
        }
    }

    /// The config.
    pub fn config(&self) -> &'a ChineseClipConfig {
        self.config
    }

    /// Runs the vision tower (CLIP's) on `pixel_values` `[B, C, S, S]`.
    pub fn vision_forward(
        &self,
        pixel_values: ArrayView4<'_, f32>,
        output_hidden_states: bool,
    ) -> Result<VisionOutput, ReferenceError> {
        vision_tower(
            &self.config.vision,
            &self.weights.vision_model,
            &self.weights.visual_projection,
            pixel_values,
            output_hidden_states,
        )
    }

    /// Runs the text tower on token-id sequences of any lengths (each `[CLS] … [SEP]`, at most
    /// `max_position_embeddings` long), token type 0 everywhere.
    pub fn text_forward<T: AsRef<[u32]> + Sync>(
        &self,
        input_ids: &[T],
        output_hidden_states: bool,
    ) -> Result<BertOutput, ReferenceError> {
        let t = &self.config.text;
        let w = &self.weights.text_model;
        check_texts(input_ids, t.max_position_embeddings, t.vocab_size)?;
        let d = t.hidden_size;
        let e = &w.embeddings;
        let words = mat("word_embeddings", &e.word_embeddings)?;
        let positions = mat("position_embeddings", &e.position_embeddings)?;
        let types = mat("token_type_embeddings", &e.token_type_embeddings)?;
        let type0 = types.row(0);
        let opts = Layers {
            heads: t.num_attention_heads,
            eps: t.layer_norm_eps,
            act: t.hidden_act,
        };
        let per_text: Vec<(Vec<Array2<f32>>, Array2<f32>)> = input_ids
            .par_iter()
            .map(|ids| {
                let ids = ids.as_ref();
                let mut x = Array2::<f32>::zeros((ids.len(), d));
                for (i, &id) in ids.iter().enumerate() {
                    let mut row = x.row_mut(i);
                    // HF's order: (word + type) + position.
                    row.assign(&words.row(id as usize));
                    row += &type0;
                    row += &positions.row(i);
                }
                let mut x = layer_norm(x.view(), &e.layer_norm, opts.eps);
                let mut states = Vec::new();
                if output_hidden_states {
                    states.push(x.clone());
                }
                for layer in &w.encoder.layer {
                    x = bert_layer(x.view(), layer, opts)?;
                    if output_hidden_states {
                        states.push(x.clone());
                    }
                }
                Ok((states, x))
            })
            .collect::<Result<_, ReferenceError>>()?;

        let batch = per_text.len();
        let lengths: Vec<usize> = input_ids.iter().map(|ids| ids.as_ref().len()).collect();
        let max_len = lengths.iter().copied().max().unwrap_or(0);
        let mut hidden_states = Vec::new();
        if output_hidden_states {
            for k in 0..=t.num_hidden_layers {
                let mut a = Array3::zeros((batch, max_len, d));
                for (b, (states, _)) in per_text.iter().enumerate() {
                    a.slice_mut(s![b, ..lengths[b], ..]).assign(&states[k]);
                }
                hidden_states.push(a);
            }
        }
        let mut last_hidden_state = Array3::zeros((batch, max_len, d));
        let mut pooler_output = Array2::zeros((batch, d));
        for (b, (_, x)) in per_text.iter().enumerate() {
            last_hidden_state
                .slice_mut(s![b, ..lengths[b], ..])
                .assign(x);
            pooler_output.row_mut(b).assign(&x.row(0));
        }
        let text_embeds =
            pooler_output.dot(&mat("text_projection", &self.weights.text_projection)?.t());
        Ok(BertOutput {
            hidden_states,
            last_hidden_state,
            pooler_output,
            text_embeds,
            lengths,
        })
    }

    /// `logit_scale.exp() · cos(image_i, text_j)` with the checkpoint's logit scale, `[B_img, B_txt]`.
    pub fn logits_per_image(
        &self,
        image_embeds: ArrayView2<'_, f32>,
        text_embeds: ArrayView2<'_, f32>,
    ) -> Result<Array2<f32>, ReferenceError> {
        clip_logits(image_embeds, text_embeds, self.weights.logit_scale)
    }
}

/// `LN(x + dense(h))`: the post-LN residual step.
fn residual_output(
    x: ArrayView2<'_, f32>,
    h: ArrayView2<'_, f32>,
    out: &BertResidualOutput<HostTensor>,
    eps: f64,
) -> Result<Array2<f32>, ReferenceError> {
    let sum = &x + &linear(h, &out.dense)?;
    Ok(layer_norm(sum.view(), &out.layer_norm, eps))
}

/// One post-LN BERT layer on one sequence `[L, D]`.
fn bert_layer(
    x: ArrayView2<'_, f32>,
    layer: &BertLayer<HostTensor>,
    opts: Layers,
) -> Result<Array2<f32>, ReferenceError> {
    let qkv = linear(x, &layer.attention.self_attention.qkv)?;
    // Each sequence comes cut to its own length: every key it has is real.
    let attn = attention(qkv.view(), opts.heads, false, usize::MAX);
    let x = residual_output(x, attn.view(), &layer.attention.output, opts.eps)?;
    let mut h = linear(x.view(), &layer.intermediate.dense)?;
    h.mapv_inplace(|v| activation(opts.act, v));
    residual_output(x.view(), h.view(), &layer.output, opts.eps)
}
