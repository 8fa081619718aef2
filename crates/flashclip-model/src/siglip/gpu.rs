//! SigLIP's two towers on the GPU, on the CLIP model's kernels and layers.
//!
//! - vision: patch GEMM (conv bias and positions added in the residual step fused with layer 0's first norm), the
//!   encoder, `post_layernorm` fused into the last layer; then the pooling head: K/V of every token in one GEMM
//!   (rows `D..3D` of the packed `in_proj`), the probe's query (constant: projected once at load) attending over
//!   them with the flash kernel (one query row per image and head, `seq_q = 1`, `seq_k` = patches),
//!   `out_proj`, and `x + fc2(act(fc1(layernorm(x))))` (the residual as the GEMM's `beta = 1` input);
//! - text: token + position embeddings, the bidirectional encoder (no mask: texts are padded to the context as
//!   SigLIP is trained), `final_layer_norm` fused into the last layer, the last position of each text through
//!   `head`.

use std::marker::PhantomData;
use std::path::Path;

use flashclip::ops::attention::{flash_attention, Options, Shape, Version};
use flashclip::ops::bias_activation::{bias_activation_inplace, Activation as KernelActivation};
use flashclip::ops::embedding::patchify;
use flashclip::ops::gemm::{linear, linear_bias};
use flashclip::tensor::contiguous_strides;
use flashclip::{Element, Gpu, Tensor, View, ViewMut};
use ndarray::{Array2, ArrayView2};

use super::config::SiglipConfig;
use super::device::{check_attention, kernel_activation, read, specs, Device};
use super::reference::{siglip_logits, sigmoid_probabilities};
use super::weights::{load_file, SiglipWeights};
use crate::checkpoint::{Checkpoint, CheckpointFormat, FnRaw, Loader};
use crate::error::{ModelError, Result};
use crate::graph::{ForwardGraph, GraphShape, GraphWorkspace};
use crate::nn::AttentionImpl;
use crate::pixels::Pixels;
use crate::text::{
    embed_tokens, gather_pooled, stage_texts, StagedTexts, TextBatch, TextInputs, TextRules,
};
use crate::workspace::{next_workspace_id, TowerBuffers};

/// Device scratch for up to a maximum number of images and texts per forward.
pub struct SiglipWorkspace<T: Element> {
    vision: TowerBuffers<T>,
    text: TowerBuffers<T>,
    pixels: Pixels<T>,
    patches: Tensor<T>,
    patch_out: Tensor<T>,
    tokens: TextInputs,
    /// The probe's projected query, repeated per image: `[max_images, D]`.
    head_q: Tensor<T>,
    /// The pooling attention's output: `[max_images, D]`.
    head_o: Tensor<T>,
    id: u64,
}

impl<T: Element> SiglipWorkspace<T> {
    /// Images per forward at most.
    pub fn max_images(&self) -> usize {
        self.vision.max_batch
    }

    /// Texts per forward at most.
    pub fn max_texts(&self) -> usize {
        self.text.max_batch
    }
}

impl<T: Element> GraphWorkspace for SiglipWorkspace<T> {
    fn id(&self) -> u64 {
        self.id
    }
    fn max_images(&self) -> usize {
        SiglipWorkspace::max_images(self)
    }
    fn max_texts(&self) -> usize {
        SiglipWorkspace::max_texts(self)
    }
    fn staged_texts(&self) -> Option<StagedTexts> {
        self.tokens.staged
    }
}

/// SigLIP's towers on the GPU in element type `T`.
pub struct SiglipGpuModel<T: Element> {
    config: SiglipConfig,
    attention: AttentionImpl,
    weights: SiglipWeights<Tensor<T>>,
    /// `probe · Wqᵀ + bq`, `[1, D]`: the same for every image.
    probe_q: Tensor<T>,
}

impl<T: Element> SiglipGpuModel<T> {
    /// Loads a `model.safetensors` onto the GPU (checked against `config` first; each tensor converted once to
    /// `T`).
    pub fn load(
        gpu: &Gpu,
        config: &SiglipConfig,
        checkpoint: impl AsRef<Path>,
        attention: AttentionImpl,
    ) -> Result<Self> {
        config
            .validate()
            .map_err(|e| ModelError::Input(e.to_string()))?;
        check_attention::<T>(gpu, config, attention)?;
        let weights = load_file(
            checkpoint.as_ref(),
            config,
            Device {
                gpu,
                _elem: PhantomData,
            },
        )?;
        Self::with_weights(gpu, config, attention, weights)
    }

    /// Loads an opened checkpoint onto the GPU (checked against `config` first), as [`Self::load`] does a file.
    pub fn load_checkpoint(
        gpu: &Gpu,
        config: &SiglipConfig,
        checkpoint: &Checkpoint,
        attention: AttentionImpl,
    ) -> Result<Self> {
        config
            .validate()
            .map_err(|e| ModelError::Input(e.to_string()))?;
        check_attention::<T>(gpu, config, attention)?;
        let weights = SiglipWeights::load_checkpoint(
            checkpoint,
            config,
            Device {
                gpu,
                _elem: PhantomData,
            },
        )?;
        Self::with_weights(gpu, config, attention, weights)
    }

    /// Builds the model from a function of (Hugging Face key, shape), as [`SiglipWeights::from_fn`] does on the
    /// host (e.g. seeded random weights for benchmarks).
    pub fn from_fn(
        gpu: &Gpu,
        config: &SiglipConfig,
        attention: AttentionImpl,
        f: impl FnMut(&str, &[usize]) -> Vec<f32>,
    ) -> Result<Self> {
        config
            .validate()
            .map_err(|e| ModelError::Input(e.to_string()))?;
        check_attention::<T>(gpu, config, attention)?;
        let weights = SiglipWeights::from_source(
            &mut Loader {
                raw: FnRaw(f),
                format: CheckpointFormat::HuggingFace,
                target: Device {
                    gpu,
                    _elem: PhantomData,
                },
            },
            config,
        )?;
        Self::with_weights(gpu, config, attention, weights)
    }

    /// Projects the probe's query once.
    fn with_weights(
        gpu: &Gpu,
        config: &SiglipConfig,
        attention: AttentionImpl,
        weights: SiglipWeights<Tensor<T>>,
    ) -> Result<Self> {
        let d = config.vision.hidden_size;
        let head = &weights.vision_model.head;
        let mut probe_q = gpu.zeros::<T>(&[1, d])?;
        linear_bias(
            gpu,
            &head.probe.view().reshape(&[1, d])?,
            &head.attention.in_proj_weight.view().narrow(0, 0, d)?,
            &head.attention.in_proj_bias.view().narrow(0, 0, d)?,
            &mut probe_q.view_mut(),
        )?;
        Ok(SiglipGpuModel {
            config: config.clone(),
            attention,
            weights,
            probe_q,
        })
    }

    /// The config.
    pub fn config(&self) -> &SiglipConfig {
        &self.config
    }

    /// The checkpoint's `logit_scale` (its log) and `logit_bias`.
    pub fn logit_scale_bias(&self) -> (f32, f32) {
        (self.weights.logit_scale, self.weights.logit_bias)
    }

    /// Scratch for up to `max_images` images and `max_texts` texts per forward.
    pub fn workspace(
        &self,
        gpu: &Gpu,
        max_images: usize,
        max_texts: usize,
    ) -> Result<SiglipWorkspace<T>> {
        let (v, t) = (&self.config.vision, &self.config.text);
        let (max_images, max_texts) = (max_images.max(1), max_texts.max(1));
        let (vs, ts) = specs(&self.config);
        let n = v.seq_len();
        let checked = |what: &str, dims: &[usize]| {
            dims.iter()
                .try_fold(1usize, |a, &x| a.checked_mul(x))
                .ok_or_else(|| ModelError::Input(format!("the workspace's {what} overflows")))
        };
        let patches = checked("patch rows", &[max_images, n])?;
        let ids = checked("token ids", &[max_texts, t.max_position_embeddings])?;
        let d = v.hidden_size;
        let mut head_q = gpu.zeros::<T>(&[max_images, d])?;
        for i in 0..max_images {
            let mut row = head_q.data_mut().slice_mut(i * d..(i + 1) * d);
            gpu.stream()
                .memcpy_dtod(self.probe_q.data(), &mut row)
                .map_err(flashclip::Error::from)?;
        }
        Ok(SiglipWorkspace {
            vision: TowerBuffers::new(gpu, &vs, (max_images, n), d, self.attention)?,
            text: TowerBuffers::new(
                gpu,
                &ts,
                (max_texts, t.max_position_embeddings),
                t.projection_size,
                self.attention,
            )?,
            pixels: Pixels::new(gpu, max_images, v.num_channels, v.image_size)?,
            patches: gpu.zeros(&[patches, v.patch_dim()])?,
            patch_out: gpu.zeros(&[patches, d])?,
            tokens: TextInputs::new(gpu, max_texts, ids)?,
            head_q,
            head_o: gpu.zeros(&[max_images, d])?,
            id: next_workspace_id(),
        })
    }

    /// Captures one forward of `shape` on `ws` into a CUDA graph, as [`crate::ClipModel::capture_forward`] does
    /// (texts are `max_position_embeddings` long: `shape.text_len` must be that).
    pub fn capture_forward<'a>(
        &'a self,
        gpu: &'a Gpu,
        ws: &'a mut SiglipWorkspace<T>,
        shape: GraphShape,
    ) -> Result<ForwardGraph<'a, Self>> {
        ForwardGraph::capture(self, gpu, ws, shape)
    }

    /// Image embeddings (not normalized), `[batch, D]`, of preprocessed images (`[batch, C, S, S]` f32, e.g. from
    /// [`crate::preprocess::Preprocessor::siglip`]). Pixels past the last whole patch are dropped, as the
    /// convolution does.
    pub fn embed_images(
        &self,
        gpu: &Gpu,
        ws: &mut SiglipWorkspace<T>,
        pixels: &[f32],
    ) -> Result<Array2<f32>> {
        self.embed_image_parts(gpu, ws, &[pixels])
    }

    /// [`Self::embed_images`] of images given in parts (each `[n, C, S, S]`), in order, without gathering them
    /// first.
    pub fn embed_image_parts(
        &self,
        gpu: &Gpu,
        ws: &mut SiglipWorkspace<T>,
        parts: &[&[f32]],
    ) -> Result<Array2<f32>> {
        let batch = self.encode_image_parts(gpu, ws, parts)?;
        self.read_image_embeds(gpu, ws, batch)
    }

    /// [`Self::embed_images`] without reading the result back: uploads the images and enqueues the tower;
    /// returns the batch.
    pub fn encode_images(
        &self,
        gpu: &Gpu,
        ws: &mut SiglipWorkspace<T>,
        pixels: &[f32],
    ) -> Result<usize> {
        self.encode_image_parts(gpu, ws, &[pixels])
    }

    fn encode_image_parts(
        &self,
        gpu: &Gpu,
        ws: &mut SiglipWorkspace<T>,
        parts: &[&[f32]],
    ) -> Result<usize> {
        let batch = self.upload_image_parts(gpu, ws, parts)?;
        self.run_vision(gpu, ws, batch)?;
        Ok(batch)
    }

    /// Copies preprocessed images given in parts (each `[n, C, S, S]` f32, in order) into the workspace; returns
    /// the batch.
    pub fn upload_image_parts(
        &self,
        gpu: &Gpu,
        ws: &mut SiglipWorkspace<T>,
        parts: &[&[f32]],
    ) -> Result<usize> {
        let v = &self.config.vision;
        ws.pixels.upload(gpu, (v.num_channels, v.image_size), parts)
    }

    /// The image embeddings of the last [`Self::encode_images`] of `batch` images (syncs).
    pub fn read_image_embeds(
        &self,
        gpu: &Gpu,
        ws: &SiglipWorkspace<T>,
        batch: usize,
    ) -> Result<Array2<f32>> {
        read(
            gpu,
            &ws.vision.projected,
            batch,
            self.config.vision.hidden_size,
        )
    }

    /// Enqueues the vision tower and its pooling head on the first `batch` images in the workspace.
    pub fn run_vision(&self, gpu: &Gpu, ws: &mut SiglipWorkspace<T>, batch: usize) -> Result<()> {
        let v = &self.config.vision;
        let w = &self.weights.vision_model;
        let (vs, _) = specs(&self.config);
        let (n, d) = (v.seq_len(), v.hidden_size);
        let tokens = batch * n;
        patchify(
            gpu,
            &ws.pixels.device,
            batch,
            v.num_channels,
            v.image_size,
            v.patch_size,
            &mut ws.patches.view_mut().narrow(0, 0, tokens)?,
        )?;
        let kernel = w
            .embeddings
            .patch_embedding
            .weight
            .view()
            .reshape(&[d, v.patch_dim()])?;
        linear(
            gpu,
            &ws.patches.view().narrow(0, 0, tokens)?,
            &kernel,
            &mut ws.patch_out.view_mut().narrow(0, 0, tokens)?,
            0.0,
        )?;
        let b = &mut ws.vision;
        // residual = positions (per image), then += patches + conv bias fused with layer 0's first norm.
        for i in 0..batch {
            let mut rows = b.residual.data_mut().slice_mut(i * n * d..(i + 1) * n * d);
            gpu.stream()
                .memcpy_dtod(w.embeddings.position_embedding.data(), &mut rows)
                .map_err(flashclip::Error::from)?;
        }
        let first = w
            .encoder
            .layers
            .first()
            .map_or(&w.post_layernorm, |l| &l.layer_norm1);
        first.forward_residual(
            gpu,
            &ws.patch_out.view().narrow(0, 0, tokens)?,
            &w.embeddings.patch_embedding.bias,
            &mut b.residual.view_mut().narrow(0, 0, tokens)?,
            vs.eps,
            &mut b.normed.view_mut().narrow(0, 0, tokens)?,
        )?;
        for i in 0..w.encoder.layers.len() {
            w.encoder.layer(
                i,
                gpu,
                b,
                &vs,
                (batch, n),
                &w.post_layernorm,
                self.attention,
            )?;
        }
        self.pool(gpu, ws, batch)
    }

    /// The pooling head over `normed` (post-norm tokens) into `vision.projected`.
    fn pool(&self, gpu: &Gpu, ws: &mut SiglipWorkspace<T>, batch: usize) -> Result<()> {
        let v = &self.config.vision;
        let head = &self.weights.vision_model.head;
        let (n, d, heads) = (v.seq_len(), v.hidden_size, v.num_attention_heads);
        let hd = d / heads;
        let b = &mut ws.vision;
        let inw = head.attention.in_proj_weight.view();
        let inb = head.attention.in_proj_bias.view();
        let kv_dims = [batch, n, 2, heads, hd];
        {
            let mut kv = ViewMut::new(b.qkv.data_mut(), 0, &[batch * n, 2 * d], &[2 * d, 1])?;
            linear_bias(
                gpu,
                &b.normed.view().narrow(0, 0, batch * n)?,
                &inw.narrow(0, d, 2 * d)?,
                &inb.narrow(0, d, 2 * d)?,
                &mut kv,
            )?;
        }
        let packed = View::new(b.qkv.data(), 0, &kv_dims, &contiguous_strides(&kv_dims))?;
        let (k, vv) = (packed.select(2, 0)?, packed.select(2, 1)?);
        let q_dims = [batch, 1, heads, hd];
        let q = View::new(ws.head_q.data(), 0, &q_dims, &contiguous_strides(&q_dims))?;
        let mut o = ViewMut::new(
            ws.head_o.data_mut(),
            0,
            &q_dims,
            &contiguous_strides(&q_dims),
        )?;
        let shape = Shape {
            batch,
            seq_q: 1,
            seq_k: n,
            heads_q: heads,
            heads_kv: heads,
            head_dim: hd,
        };
        // One query row per image: the flash kernel (seq_q != seq_k) whatever the encoder's attention path.
        let version = Version::fastest(gpu, T::DTYPE, &shape, false);
        let opts = Options {
            softmax_scale: None,
            causal: false,
        };
        flash_attention(gpu, version, &q, &k, &vv, None, &opts, &mut o, None)?;
        // x = out_proj(o) in `pooled`; h = layernorm(x) in `branch`; m = act(fc1(h)) in `mlp`;
        // projected = x + fc2(m) + b.
        let o = View::new(ws.head_o.data(), 0, &[batch, d], &[d, 1])?;
        head.attention
            .out_proj
            .forward(gpu, &o, &mut b.pooled.view_mut().narrow(0, 0, batch)?)?;
        head.layernorm.forward(
            gpu,
            &b.pooled.view().narrow(0, 0, batch)?,
            v.layer_norm_eps as f32,
            &mut b.branch.view_mut().narrow(0, 0, batch)?,
        )?;
        let inter = v.intermediate_size;
        {
            let mut hidden = ViewMut::new(b.mlp.data_mut(), 0, &[batch, inter], &[inter, 1])?;
            head.mlp.fc1.forward_unbiased(
                gpu,
                &b.branch.view().narrow(0, 0, batch)?,
                &mut hidden,
            )?;
            bias_activation_inplace(
                gpu,
                &mut hidden,
                Some(&head.mlp.fc1.bias.view()),
                kernel_activation(v.hidden_act),
            )?;
        }
        {
            let mut out = b.projected.data_mut().slice_mut(..batch * d);
            gpu.stream()
                .memcpy_dtod(&b.pooled.data().slice(..batch * d), &mut out)
                .map_err(flashclip::Error::from)?;
        }
        let hidden = View::new(b.mlp.data(), 0, &[batch, inter], &[inter, 1])?;
        let mut out = b.projected.view_mut().narrow(0, 0, batch)?;
        linear(gpu, &hidden, &head.mlp.fc2.weight.view(), &mut out, 1.0)?;
        bias_activation_inplace(
            gpu,
            &mut out,
            Some(&head.mlp.fc2.bias.view()),
            KernelActivation::Identity,
        )?;
        Ok(())
    }

    /// Text embeddings (not normalized), `[batch, projection_size]`, of token ids each exactly
    /// `max_position_embeddings` long (as [`super::SiglipTokenizer`] pads them).
    pub fn embed_texts(
        &self,
        gpu: &Gpu,
        ws: &mut SiglipWorkspace<T>,
        texts: &[Vec<u32>],
    ) -> Result<Array2<f32>> {
        self.encode_texts(gpu, ws, texts)?;
        self.read_text_embeds(gpu, ws, texts.len())
    }

    /// The text embeddings of the last [`Self::encode_texts`] of `batch` texts (syncs).
    pub fn read_text_embeds(
        &self,
        gpu: &Gpu,
        ws: &SiglipWorkspace<T>,
        batch: usize,
    ) -> Result<Array2<f32>> {
        read(
            gpu,
            &ws.text.projected,
            batch,
            self.config.text.projection_size,
        )
    }

    /// [`Self::embed_texts`] without reading the result back: copies the ids in and enqueues the tower.
    pub fn encode_texts(
        &self,
        gpu: &Gpu,
        ws: &mut SiglipWorkspace<T>,
        texts: &[Vec<u32>],
    ) -> Result<()> {
        self.upload_texts(gpu, ws, texts, None)?;
        self.run_uploaded_texts(gpu, ws)?;
        Ok(())
    }

    /// Checks token ids (each exactly `max_position_embeddings` long, as [`super::SiglipTokenizer`] pads them)
    /// and copies them into the workspace, from pinned memory without synchronizing the stream. `pad_to`, if
    /// given, must be that length: SigLIP reads every text at its last position, so it takes no other padding.
    pub fn upload_texts(
        &self,
        gpu: &Gpu,
        ws: &mut SiglipWorkspace<T>,
        texts: &[Vec<u32>],
        pad_to: Option<usize>,
    ) -> Result<TextBatch> {
        let t = &self.config.text;
        let l = t.max_position_embeddings;
        if let Some(p) = pad_to.filter(|&p| p != l) {
            return Err(ModelError::Input(format!(
                "SigLIP texts are padded to exactly {l} tokens, not {p}"
            )));
        }
        if let Some((i, ids)) = texts.iter().enumerate().find(|(_, ids)| ids.len() != l) {
            return Err(ModelError::Input(format!(
                "text {i} has {} tokens; SigLIP texts are padded to exactly {l}",
                ids.len()
            )));
        }
        let rules = TextRules {
            max_len: l,
            vocab_size: t.vocab_size,
            pad_token_id: t.pad_token_id,
            pooling: &|ids| ids.len() - 1,
            key_lens: false,
        };
        stage_texts(gpu, &rules, &mut ws.tokens, texts, Some(l))
    }

    /// Enqueues the text tower and its head on the texts of the last [`Self::upload_texts`]; returns their shape.
    /// Nothing is copied or synchronized.
    pub fn run_uploaded_texts(&self, gpu: &Gpu, ws: &mut SiglipWorkspace<T>) -> Result<TextBatch> {
        let w = &self.weights.text_model;
        let (_, ts) = specs(&self.config);
        let e = &w.embeddings;
        let b = &mut ws.text;
        let shape = embed_tokens(
            gpu,
            &ws.tokens,
            b,
            &e.token_embedding,
            &e.position_embedding,
        )?;
        w.encoder.forward(
            gpu,
            b,
            &ts,
            (shape.batch, shape.len),
            &w.final_layer_norm,
            self.attention,
        )?;
        gather_pooled(gpu, &ws.tokens, b, shape)?;
        w.head.forward(
            gpu,
            &b.pooled.view().narrow(0, 0, shape.batch)?,
            &mut b.projected.view_mut().narrow(0, 0, shape.batch)?,
        )?;
        Ok(shape)
    }

    /// `logit_scale.exp() · cos + logit_bias` and their sigmoid (the zero-shot probabilities), `[images, texts]`.
    pub fn zero_shot(
        &self,
        image_embeds: ArrayView2<'_, f32>,
        text_embeds: ArrayView2<'_, f32>,
    ) -> Result<(Array2<f32>, Array2<f32>)> {
        let logits = siglip_logits(
            image_embeds,
            text_embeds,
            self.weights.logit_scale,
            self.weights.logit_bias,
        )?;
        let probs = sigmoid_probabilities(logits.view());
        Ok((logits, probs))
    }
}

crate::graph::tower_model!(
    SiglipGpuModel,
    SiglipWorkspace,
    context: |m| m.config.text.max_position_embeddings,
    vocab: |m| m.config.text.vocab_size,
    image: |m| (m.config.vision.num_channels, m.config.vision.image_size),
    rows: |m, ws| (&ws.vision.projected, m.config.vision.hidden_size)
);
