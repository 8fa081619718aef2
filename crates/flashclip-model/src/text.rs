//! The text tower (Hugging Face's `CLIPTextTransformer`): token and position embeddings, the causal encoder, a
//! final norm, and pooling at each text's end-of-text token.

use cudarc::driver::CudaSlice;
use flashclip::ops::embedding::{gather_rows_device, text_embed_device};
use flashclip::{Element, Gpu, Tensor};

use crate::checkpoint::{key, Source};
use crate::config::TextConfig;
use crate::error::{ModelError, Result};
use crate::nn::{AttentionImpl, Encoder, EncoderSpec, LayerNorm};
use crate::workspace::{Staging, TowerBuffers, Workspace};

/// Token and position embeddings.
#[derive(Debug, Clone, PartialEq)]
pub struct TextEmbeddings<A> {
    /// `[vocab_size, D]`.
    pub token_embedding: A,
    /// `[max_position_embeddings, D]`.
    pub position_embedding: A,
}

/// The text tower.
#[derive(Debug, Clone, PartialEq)]
pub struct TextTransformer<A> {
    /// Embeddings.
    pub embeddings: TextEmbeddings<A>,
    /// Encoder layers (causal attention).
    pub encoder: Encoder<A>,
    /// LayerNorm after the encoder (open_clip `ln_final`).
    pub final_layer_norm: LayerNorm<A>,
}

impl<A> TextTransformer<A> {
    /// Loads the tower at `text_model`.
    pub fn load<S: Source<Tensor = A>>(s: &mut S, t: &TextConfig) -> Result<Self, S::Error> {
        let (p, d) = ("text_model", t.hidden_size);
        let e = key(p, "embeddings");
        Ok(TextTransformer {
            embeddings: TextEmbeddings {
                token_embedding: s
                    .tensor(&key(&e, "token_embedding.weight"), &[t.vocab_size, d])?,
                position_embedding: s.tensor(
                    &key(&e, "position_embedding.weight"),
                    &[t.max_position_embeddings, d],
                )?,
            },
            encoder: Encoder::load(
                s,
                &key(p, "encoder"),
                t.num_hidden_layers,
                d,
                t.intermediate_size,
            )?,
            final_layer_norm: LayerNorm::load(s, &key(p, "final_layer_norm"), d)?,
        })
    }

    /// Visits the tensors in `load` order.
    pub fn for_each_tensor<'a>(&'a self, f: &mut dyn FnMut(&'a A)) {
        f(&self.embeddings.token_embedding);
        f(&self.embeddings.position_embedding);
        self.encoder.for_each_tensor(f);
        self.final_layer_norm.for_each_tensor(f);
    }
}

/// The position whose final state is the text embedding, following Hugging Face: with the legacy
/// `eos_token_id == 2` the position of the largest id (first one on ties), otherwise the first position holding
/// `eos_token_id`, or 0 if there is none (HF's `argmax` of an all-false mask).
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

/// The shape of a text batch as the text tower runs it: `batch` texts, each padded to `len` tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TextBatch {
    pub batch: usize,
    pub len: usize,
}

/// A text tower's inputs on the device: token ids, each text's pooling row and length, the pinned buffer they
/// are copied from, and what was copied last. Every workspace with a text tower holds one.
pub(crate) struct TextInputs {
    /// Token ids, `[batch · len]`.
    pub(crate) ids: CudaSlice<i32>,
    /// Each text's pooling row in the token rows.
    pub(crate) rows: CudaSlice<i32>,
    /// Each text's length, for text towers whose attention masks padded keys (bidirectional ones).
    pub(crate) key_lens: CudaSlice<i32>,
    /// Ids, then pooling rows, then key lengths.
    staging: Staging<i32>,
    /// What the ids and rows hold, once both copies are enqueued.
    pub(crate) staged: Option<StagedTexts>,
    max_texts: usize,
}

impl TextInputs {
    /// Room for `max_texts` texts of up to `max_ids` ids in all.
    pub(crate) fn new(gpu: &Gpu, max_texts: usize, max_ids: usize) -> Result<Self> {
        let staged = max_texts
            .checked_mul(2)
            .and_then(|r| r.checked_add(max_ids))
            .ok_or_else(|| {
                ModelError::Input(format!("{max_texts} texts overflow the workspace"))
            })?;
        Ok(Self {
            ids: gpu.upload_slice(&vec![0i32; max_ids])?,
            rows: gpu.upload_slice(&vec![0i32; max_texts])?,
            key_lens: gpu.upload_slice(&vec![0i32; max_texts])?,
            staging: Staging::new(gpu, staged)?,
            staged: None,
            max_texts,
        })
    }
}

/// Texts whose token ids and pooling rows have been copied into the workspace.
#[derive(Debug, Clone, Copy)]
pub(crate) struct StagedTexts {
    pub shape: TextBatch,
    /// Every staged id is below this (the vocabulary size the ids were checked against).
    pub id_bound: usize,
    /// Whether `ws.key_lens` holds the texts' lengths.
    pub key_lens: bool,
}

/// Checks token ids (one Vec per text, each with start and end tokens, at most the context length) and copies
/// them, padded to `pad_to` tokens (default: the longest text), with each text's pooling row, into the
/// workspace, from pinned memory without synchronizing the stream. Padding is exact under the causal mask.
pub(crate) fn upload_texts<T: Element>(
    gpu: &Gpu,
    t: &TextConfig,
    ws: &mut Workspace<T>,
    texts: &[Vec<u32>],
    pad_to: Option<usize>,
) -> Result<TextBatch> {
    let rules = TextRules {
        max_len: t.max_len(),
        vocab_size: t.vocab_size,
        pad_token_id: t.pad_token_id,
        pooling: &|ids| pooling_position(ids, t.eos_token_id),
        key_lens: false,
    };
    stage_texts(gpu, &rules, &mut ws.tokens, texts, pad_to)
}

/// What a text tower asks of its token ids, for [`stage_texts`].
pub(crate) struct TextRules<'a> {
    /// Longest text.
    pub max_len: usize,
    /// Every id must be below this.
    pub vocab_size: usize,
    /// Fills the rows past a text's end.
    pub pad_token_id: u32,
    /// Each text's pooling position (below its length).
    pub pooling: &'a (dyn Fn(&[u32]) -> usize + Sync),
    /// Whether to copy each text's length into `ws.key_lens` too (for bidirectional attention, which must not
    /// see the padding).
    pub key_lens: bool,
}

/// Checks token ids against `rules` and copies them, padded to `pad_to` tokens (default: the longest text), with
/// each text's pooling row (and length, if asked), into `inputs`, from pinned memory without synchronizing
/// the stream.
pub(crate) fn stage_texts(
    gpu: &Gpu,
    rules: &TextRules<'_>,
    inputs: &mut TextInputs,
    texts: &[Vec<u32>],
    pad_to: Option<usize>,
) -> Result<TextBatch> {
    let batch = texts.len();
    if batch == 0 || batch > inputs.max_texts {
        return Err(ModelError::Input(format!(
            "{batch} texts: need 1 to {}",
            inputs.max_texts
        )));
    }
    let max_len = rules.max_len;
    let longest = texts.iter().map(Vec::len).max().unwrap_or(0);
    if longest == 0 || longest > max_len {
        return Err(ModelError::Input(format!(
            "texts must have 1 to {max_len} tokens, the longest has {longest}"
        )));
    }
    let len = match pad_to {
        None => longest,
        Some(l) if (longest..=max_len).contains(&l) => l,
        Some(l) => {
            return Err(ModelError::Input(format!(
                "cannot pad texts to {l} tokens: the longest has {longest}, the context length is {max_len}"
            )))
        }
    };
    for (b, text) in texts.iter().enumerate() {
        if text.is_empty() {
            return Err(ModelError::Input(format!("text {b} has no tokens")));
        }
        if let Some(&id) = text.iter().find(|&&id| id as usize >= rules.vocab_size) {
            return Err(ModelError::Input(format!(
                "text {b}: token id {id} outside the vocabulary of {}",
                rules.vocab_size
            )));
        }
    }
    let (n_ids, shape) = (batch * len, TextBatch { batch, len });
    if n_ids > inputs.ids.len()
        || batch > inputs.rows.len()
        || batch > inputs.key_lens.len()
        || n_ids + 2 * batch > inputs.staging.host.len()
    {
        return Err(ModelError::Input(format!(
            "{batch} texts of {len} tokens exceed the workspace"
        )));
    }
    let pad = rules
        .pad_token_id
        .min(rules.vocab_size.saturating_sub(1) as u32) as i32;
    let host = inputs.staging.writable()?;
    let (ids, rest) = host.split_at_mut(n_ids);
    let (rows, rest) = rest.split_at_mut(batch);
    let lens = &mut rest[..batch];
    for (b, text) in texts.iter().enumerate() {
        let row = &mut ids[b * len..(b + 1) * len];
        for (dst, &id) in row.iter_mut().zip(text) {
            *dst = id as i32;
        }
        row[text.len()..].fill(pad);
        // Clamped below text.len(), so every row lies inside the batch's token rows.
        let position = (rules.pooling)(text).min(text.len() - 1);
        rows[b] = (b * len + position) as i32;
        lens[b] = text.len() as i32;
    }
    // Until every copy is enqueued the device buffers hold a mix; a forward must not run on them.
    inputs.staged = None;
    let stream = gpu.stream();
    let mut copied = stream
        .memcpy_htod(&ids[..], &mut inputs.ids.slice_mut(..n_ids))
        .and_then(|_| stream.memcpy_htod(&rows[..], &mut inputs.rows.slice_mut(..batch)));
    if rules.key_lens {
        copied = copied
            .and_then(|_| stream.memcpy_htod(&lens[..], &mut inputs.key_lens.slice_mut(..batch)));
    }
    inputs.staging.enqueued(stream, copied)?;
    inputs.staged = Some(StagedTexts {
        shape,
        id_bound: rules.vocab_size,
        key_lens: rules.key_lens,
    });
    Ok(shape)
}

/// `b.residual = tokens[ids] + positions[i]` for the texts in `inputs` (`tokens` `[vocab, dim]`, `positions`
/// `[max_len, dim]`); returns their shape.
pub(crate) fn embed_tokens<T: Element>(
    gpu: &Gpu,
    inputs: &TextInputs,
    b: &mut TowerBuffers<T>,
    tokens: &Tensor<T>,
    positions: &Tensor<T>,
) -> Result<TextBatch> {
    let staged = inputs
        .staged
        .ok_or_else(|| ModelError::Input("no texts uploaded to the workspace".into()))?;
    let (vocab, dim) = match tokens.shape() {
        [vocab, dim] => (*vocab, *dim),
        other => {
            return Err(ModelError::Input(format!(
                "the token table must be [vocab, dim], it is {other:?}"
            )))
        }
    };
    if staged.id_bound > vocab {
        return Err(ModelError::Input(format!(
            "the uploaded token ids were checked against a vocabulary of {}, this model's has {vocab}",
            staged.id_bound
        )));
    }
    let TextBatch { batch, len } = staged.shape;
    let mut x = b
        .residual
        .view_mut()
        .narrow(0, 0, batch * len)?
        .reshape(&[batch, len, dim])?;
    // SAFETY: `staged` is only set by stage_texts, after it enqueued the copy of batch*len ids into `ids`, each
    // checked to be below `id_bound`, which is at most this table's vocabulary (checked above): the copy is
    // ordered before this launch on the stream, and nothing else writes `ids`.
    unsafe {
        text_embed_device(gpu, &inputs.ids, &tokens.view(), &positions.view(), &mut x)?;
    }
    Ok(staged.shape)
}

/// `b.pooled` = each text's row of `b.normed` at its pooling position.
pub(crate) fn gather_pooled<T: Element>(
    gpu: &Gpu,
    inputs: &TextInputs,
    b: &mut TowerBuffers<T>,
    shape: TextBatch,
) -> Result<()> {
    if !inputs.staged.is_some_and(|s| s.shape == shape) {
        return Err(ModelError::Input(format!(
            "the workspace holds no uploaded texts of shape {shape:?}"
        )));
    }
    let normed = b.normed.view().narrow(0, 0, shape.batch * shape.len)?;
    // SAFETY: stage_texts copied `batch` rows into `rows` before `staged` was set to this shape (checked
    // above), row b being b*len + p with p < len, so each is below batch*len, the row count of `normed`.
    unsafe {
        gather_rows_device(
            gpu,
            &normed,
            &inputs.rows,
            &mut b.pooled.view_mut().narrow(0, 0, shape.batch)?,
        )?;
    }
    Ok(())
}

impl<T: Element> TextTransformer<Tensor<T>> {
    /// `residual = token + position embeddings` of the texts in the workspace; returns their shape.
    pub fn embed(&self, gpu: &Gpu, ws: &mut Workspace<T>) -> Result<TextBatch> {
        let e = &self.embeddings;
        embed_tokens(
            gpu,
            &ws.tokens,
            &mut ws.text,
            &e.token_embedding,
            &e.position_embedding,
        )
    }

    /// `pooled` = each text's row of `normed` at its pooling position.
    pub(crate) fn pool(&self, gpu: &Gpu, ws: &mut Workspace<T>, shape: TextBatch) -> Result<()> {
        gather_pooled(gpu, &ws.tokens, &mut ws.text, shape)
    }

    /// The tower on the texts in the workspace; on return `pooled` holds each text's final state at its pooling
    /// position. Returns their shape.
    pub fn forward(
        &self,
        gpu: &Gpu,
        t: &TextConfig,
        ws: &mut Workspace<T>,
        attention: AttentionImpl,
    ) -> Result<TextBatch> {
        let shape = self.embed(gpu, ws)?;
        let spec = EncoderSpec::text(t);
        self.encoder.forward(
            gpu,
            &mut ws.text,
            &spec,
            (shape.batch, shape.len),
            &self.final_layer_norm,
            attention,
        )?;
        self.pool(gpu, ws, shape)?;
        Ok(shape)
    }
}
