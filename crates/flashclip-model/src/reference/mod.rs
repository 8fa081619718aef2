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

pub(crate) mod ops;

use ndarray::{s, Array1, Array2, Array3, ArrayView2, ArrayView3, ArrayView4, Axis};
use rayon::prelude::*;

pub use ops::{activation, clip_logits, cosine, erf, l2_normalize};
use ops::{internal_shape, layer_norm, mat, run_encoder, unfold_patches, Layers};

use crate::checkpoint::CheckpointError;
use crate::checkpoint::HostTensor;
use crate::config::{ClipConfig, ConfigError, VisionConfig};
use crate::text::pooling_position;
use crate::vision::VisionTransformer;
use crate::weights::ClipWeights;

/// Errors from the reference forward.
#[derive(Debug, thiserror::Error)]
pub enum ReferenceError {
    /// The config cannot describe a runnable model (e.g. heads not dividing the width).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The weights don't match the config.
    #[error(transparent)]
    Weights(#[from] CheckpointError),
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
    /// A batch of texts came with a different number of key lengths.
    #[error("{lengths} key lengths for {texts} texts")]
    KeyLengths {
        /// Texts in the batch.
        texts: usize,
        /// Key lengths given.
        lengths: usize,
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
    /// Each text's pooling position (see [`crate::text::pooling_position`]).
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
        vision_tower(
            &self.config.vision,
            &self.weights.vision_model,
            &self.weights.visual_projection,
            pixel_values,
            output_hidden_states,
        )
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
        check_texts(input_ids, t.max_position_embeddings, t.vocab_size)?;
        let d = t.hidden_size;
        let tokens = mat("token_embedding", &w.embeddings.token_embedding)?;
        let positions = mat("position_embedding", &w.embeddings.position_embedding)?;
        let opts = Layers {
            heads: t.num_attention_heads,
            eps: t.layer_norm_eps,
            act: t.hidden_act,
            causal: true,
            key_len: usize::MAX,
        };
        let per_text: Vec<(States, Array2<f32>, usize)> = input_ids
            .par_iter()
            .map(|ids| {
                let ids = ids.as_ref();
                let mut x = Array2::<f32>::zeros((ids.len(), d));
                for (i, &id) in ids.iter().enumerate() {
                    let mut row = x.row_mut(i);
                    row.assign(&tokens.row(id as usize));
                    row += &positions.row(i);
                }
                let (states, x) = run_encoder(x, &w.encoder, opts, output_hidden_states)?;
                let x = layer_norm(x.view(), &w.final_layer_norm, t.layer_norm_eps);
                Ok((states, x, pooling_position(ids, t.eos_token_id)))
            })
            .collect::<Result<_, ReferenceError>>()?;

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
        let text_embeds =
            pooler_output.dot(&mat("text_projection", &self.weights.text_projection)?.t());
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

/// CLIP's vision tower and its projection on `pixel_values` `[B, C, S, S]` (shared by every family with CLIP's
/// ViT).
pub(crate) fn vision_tower(
    v: &VisionConfig,
    w: &VisionTransformer<HostTensor>,
    visual_projection: &HostTensor,
    pixel_values: ArrayView4<'_, f32>,
    output_hidden_states: bool,
) -> Result<VisionOutput, ReferenceError> {
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
    // [D, C, P, P] -> [D, C·P·P]: the convolution as a matrix over unfolded patches.
    let kernel = e
        .patch_embedding
        .view()
        .into_shape_with_order((d, v.patch_dim()))
        .map_err(|err| internal_shape("patch_embedding", err))?;
    let class = ops::vector("class_embedding", &e.class_embedding)?;
    let positions = mat("position_embedding", &e.position_embedding)?;
    let opts = Layers {
        heads: v.num_attention_heads,
        eps: v.layer_norm_eps,
        act: v.hidden_act,
        causal: false,
        key_len: usize::MAX,
    };
    let images: Vec<ArrayView3<'_, f32>> = pixel_values.axis_iter(Axis(0)).collect();
    let per_image: Vec<(States, Array2<f32>, Array1<f32>)> = images
        .par_iter()
        .map(|image| {
            let patches = unfold_patches(image.view(), v.patch_size);
            let mut x = Array2::<f32>::zeros((v.seq_len(), d));
            x.row_mut(0).assign(&class);
            x.slice_mut(s![1.., ..]).assign(&patches.dot(&kernel.t()));
            x += &positions;
            let x = layer_norm(x.view(), &w.pre_layrnorm, v.layer_norm_eps);
            let (states, x) = run_encoder(x, &w.encoder, opts, output_hidden_states)?;
            let pooled = layer_norm(x.slice(s![0..1, ..]), &w.post_layernorm, v.layer_norm_eps)
                .row(0)
                .to_owned();
            Ok((states, x, pooled))
        })
        .collect::<Result<_, ReferenceError>>()?;

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
    let image_embeds = pooler_output.dot(&mat("visual_projection", visual_projection)?.t());
    Ok(VisionOutput {
        hidden_states,
        last_hidden_state,
        pooler_output,
        image_embeds,
    })
}

/// Each text has 1 to `max_len` tokens, every id inside a vocabulary of `vocab_size`.
pub(crate) fn check_texts<T: AsRef<[u32]>>(
    input_ids: &[T],
    max_len: usize,
    vocab_size: usize,
) -> Result<(), ReferenceError> {
    for (index, ids) in input_ids.iter().enumerate() {
        let ids = ids.as_ref();
        if ids.is_empty() {
            return Err(ReferenceError::EmptyText { index });
        }
        if ids.len() > max_len {
            return Err(ReferenceError::TextTooLong {
                index,
                len: ids.len(),
                max: max_len,
            });
        }
        if let Some((position, &id)) = ids
            .iter()
            .enumerate()
            .find(|(_, &id)| id as usize >= vocab_size)
        {
            return Err(ReferenceError::TokenOutOfRange {
                index,
                position,
                id,
                vocab_size,
            });
        }
    }
    Ok(())
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
