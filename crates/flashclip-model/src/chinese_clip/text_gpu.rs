//! The BERT text tower on the GPU, on the kernels CLIP's layers use.
//!
//! Embeddings: Chinese-CLIP passes token type 0 everywhere, so row 0 of `token_type_embeddings` is added into the
//! position table once at load ([`BertModel::fold_token_type`]) and the embedding is CLIP's gather
//! `word[id] + position'[i]`, then the embedding LayerNorm.
//!
//! Each post-LN layer alternates between the two residual-width buffers of the tower: with the layer's input `x`
//! in `normed`, `branch = attention(x)·Wᵀ` (keys past each text's length masked), then the fused residual step
//! `normed += branch + b; residual = LN(normed)` (the post-LN `LN(x + attn(x))`, written to the other buffer);
//! `branch = fc2(gelu(fc1(residual)))`, then `residual += branch + b; normed = LN(residual)`. The layer's output
//! is back in `normed`, where the next layer (and, after the last, the `[CLS]` gather) reads it.

use flashclip::ops::bias_activation::{bias_activation_inplace, Activation as KernelActivation};
use flashclip::{Element, Gpu, Tensor};

use super::config::BertConfig;
use super::weights::{BertLayer, BertModel};
use crate::error::{ModelError, Result};
use crate::nn::{kernel_activation, self_attention, AttentionImpl, EncoderSpec};
use crate::text::{embed_tokens, gather_pooled, stage_texts, TextBatch, TextRules};
use crate::workspace::{TowerBuffers, Workspace};

/// The sizes and options of the BERT layers (bidirectional attention).
pub(crate) fn encoder_spec(t: &BertConfig) -> EncoderSpec {
    EncoderSpec {
        dim: t.hidden_size,
        heads: t.num_attention_heads,
        mlp: t.intermediate_size,
        eps: t.layer_norm_eps as f32,
        act: kernel_activation(t.hidden_act),
        causal: false,
    }
}

/// Checks token ids (`[CLS] … [SEP]`, at most `max_len` each) and copies them, padded with `[PAD]` to `pad_to`
/// tokens (default: the longest text), with each text's `[CLS]` row and length, into the workspace.
pub(crate) fn upload_texts<T: Element>(
    gpu: &Gpu,
    t: &BertConfig,
    ws: &mut Workspace<T>,
    texts: &[Vec<u32>],
    pad_to: Option<usize>,
) -> Result<TextBatch> {
    let rules = TextRules {
        max_len: t.max_len(),
        vocab_size: t.vocab_size,
        pad_token_id: t.pad_token_id,
        pooling: &|_| 0,
        key_lens: true,
    };
    stage_texts(gpu, &rules, &mut ws.tokens, texts, pad_to)
}

impl<T: Element> BertModel<Tensor<T>> {
    /// Adds `token_type_embeddings[0]` into every row of `position_embeddings` (once, after loading), so that the
    /// embedding is `word[id] + position[i]` (see the [module docs](self)).
    pub(crate) fn fold_token_type(&mut self, gpu: &Gpu) -> Result<()> {
        let e = &mut self.embeddings;
        let d = e.position_embeddings.shape().get(1).copied().unwrap_or(0);
        let type0 = e
            .token_type_embeddings
            .view()
            .narrow(0, 0, 1)?
            .reshape(&[d])?;
        Ok(bias_activation_inplace(
            gpu,
            &mut e.position_embeddings.view_mut(),
            Some(&type0),
            KernelActivation::Identity,
        )?)
    }

    /// The tower on the texts in the workspace; on return `pooled` holds each text's `[CLS]` row of the last
    /// layer's output. Returns their shape.
    pub fn forward(
        &self,
        gpu: &Gpu,
        t: &BertConfig,
        ws: &mut Workspace<T>,
        attention: AttentionImpl,
    ) -> Result<TextBatch> {
        if !ws.tokens.staged.is_some_and(|s| s.key_lens) {
            return Err(ModelError::Input(
                "the workspace holds no texts uploaded with their lengths (upload them through the Chinese-CLIP model)"
                    .into(),
            ));
        }
        let e = &self.embeddings;
        let shape = embed_tokens(
            gpu,
            &ws.tokens,
            &mut ws.text,
            &e.word_embeddings,
            &e.position_embeddings,
        )?;
        let tokens = shape.batch * shape.len;
        let spec = encoder_spec(t);
        let b = &mut ws.text;
        e.layer_norm.forward(
            gpu,
            &b.residual.view().narrow(0, 0, tokens)?,
            spec.eps,
            &mut b.normed.view_mut().narrow(0, 0, tokens)?,
        )?;
        for layer in &self.encoder.layer {
            layer.forward(gpu, b, &ws.tokens.key_lens, &spec, shape, attention)?;
        }
        gather_pooled(gpu, &ws.tokens, &mut ws.text, shape)?;
        Ok(shape)
    }
}

impl<T: Element> BertLayer<Tensor<T>> {
    /// One post-LN layer on the `shape.batch` texts whose input is in `b.normed`; its output lands there too.
    pub(crate) fn forward(
        &self,
        gpu: &Gpu,
        b: &mut TowerBuffers<T>,
        key_lens: &cudarc::driver::CudaSlice<i32>,
        spec: &EncoderSpec,
        shape: TextBatch,
        attention: AttentionImpl,
    ) -> Result<()> {
        let tokens = shape.batch * shape.len;
        let attn_out = &self.attention.output;
        let projections = (&self.attention.self_attention.qkv, &attn_out.dense);
        let seqs = (shape.batch, shape.len);
        self_attention(gpu, b, spec, seqs, attention, projections, Some(key_lens))?;
        attn_out.layer_norm.forward_residual(
            gpu,
            &b.branch.view().narrow(0, 0, tokens)?,
            &attn_out.dense.bias,
            &mut b.normed.view_mut().narrow(0, 0, tokens)?,
            spec.eps,
            &mut b.residual.view_mut().narrow(0, 0, tokens)?,
        )?;
        let mut hidden = b.mlp.view_mut().narrow(0, 0, tokens)?;
        let up = &self.intermediate.dense;
        up.forward_unbiased(gpu, &b.residual.view().narrow(0, 0, tokens)?, &mut hidden)?;
        bias_activation_inplace(gpu, &mut hidden, Some(&up.bias.view()), spec.act)?;
        let out = &self.output;
        out.dense.forward_unbiased(
            gpu,
            &b.mlp.view().narrow(0, 0, tokens)?,
            &mut b.branch.view_mut().narrow(0, 0, tokens)?,
        )?;
        out.layer_norm.forward_residual(
            gpu,
            &b.branch.view().narrow(0, 0, tokens)?,
            &out.dense.bias,
            &mut b.residual.view_mut().narrow(0, 0, tokens)?,
            spec.eps,
            &mut b.normed.view_mut().narrow(0, 0, tokens)?,
        )
    }
}
