//! CLIP's two towers on the GPU: weights uploaded once in `T` (f16, bf16 or f32), forwards on a preallocated
//! [`Workspace`].
//!
//! A forward is two steps: uploading the inputs into the workspace ([`ClipModel::upload_images`],
//! [`ClipModel::upload_texts`]: the only host-to-device copies) and enqueuing the towers, which read them on the
//! device ([`ClipModel::run_vision`], [`ClipModel::run_uploaded_texts`]). The second step can be captured once
//! into a CUDA graph and replayed ([`crate::graph`]).
//!
//! Each encoder layer is four cuBLAS GEMMs plus flashclip's kernels ([`crate::nn::EncoderLayer::forward`]):
//! `qkv = h·Wqkvᵀ + b` (bias in the cuBLASLt epilogue) → attention reading Q/K/V in place from `qkv` →
//! `a = o·Woutᵀ` → fused `residual += a + b_out; h = LN2(residual)` → `m = act(h·Wfc1ᵀ + b_fc1)` (fused
//! bias+activation) → `f = m·Wfc2ᵀ` → fused `residual += f + b_fc2; h = LN1'(residual)`, where LN1' is the next
//! layer's first norm (or the tower's final norm after the last layer).

use std::marker::PhantomData;

use flashclip::ops::gemm::linear;
use flashclip::{Element, Gpu, Tensor};
use ndarray::Array2;

use crate::checkpoint::{Checkpoint, CheckpointFormat, FnRaw, Loader, Target};
use crate::config::{ClipConfig, VisionConfig};
use crate::error::{ModelError, Result};
use crate::nn::AttentionImpl;
use crate::text::{self, TextBatch};
use crate::vision;
use crate::weights::ClipWeights;
use crate::workspace::Workspace;

/// The [`Target`] that uploads each tensor to the GPU in `T`.
pub(crate) struct Device<'g, T> {
    gpu: &'g Gpu,
    _elem: PhantomData<T>,
}

impl<'g, T> Device<'g, T> {
    pub(crate) fn new(gpu: &'g Gpu) -> Self {
        Device {
            gpu,
            _elem: PhantomData,
        }
    }
}

impl<T: Element> Target for Device<'_, T> {
    type Elem = T;
    type Tensor = Tensor<T>;
    type Error = flashclip::Error;

    fn make(&mut self, data: Vec<T>, shape: &[usize]) -> flashclip::Result<Tensor<T>> {
        self.gpu.upload(&data, shape)
    }
}

/// CLIP's two towers on the GPU in element type `T`.
pub struct ClipModel<T: Element> {
    config: ClipConfig,
    attention: AttentionImpl,
    weights: ClipWeights<Tensor<T>>,
}

impl<T: Element> ClipModel<T> {
    /// Loads a checkpoint onto the GPU, each tensor converted once from the file's dtype to `T`, after checking the
    /// attention choice against the config and the GPU.
    pub fn load(
        gpu: &Gpu,
        config: &ClipConfig,
        checkpoint: &Checkpoint,
        attention: AttentionImpl,
    ) -> Result<Self> {
        attention.check::<T>(gpu, config)?;
        let weights = checkpoint.load(config, Device::new(gpu))?;
        Ok(Self {
            config: config.clone(),
            attention,
            weights,
        })
    }

    /// Builds the model from a function of (Hugging Face checkpoint key, shape), as
    /// [`ClipWeights::from_fn`] does on the host (e.g. seeded random weights for benchmarks).
    pub fn from_fn(
        gpu: &Gpu,
        config: &ClipConfig,
        attention: AttentionImpl,
        f: impl FnMut(&str, &[usize]) -> Vec<f32>,
    ) -> Result<Self> {
        attention.check::<T>(gpu, config)?;
        let format = CheckpointFormat::HuggingFace;
        let target = Device::new(gpu);
        let weights = ClipWeights::from_source(
            &mut Loader {
                raw: FnRaw(f),
                format,
                target,
            },
            config,
            format,
        )?;
        Ok(Self {
            config: config.clone(),
            attention,
            weights,
        })
    }

    /// The config the model was built from.
    pub fn config(&self) -> &ClipConfig {
        &self.config
    }

    /// The attention path in use.
    pub fn attention(&self) -> AttentionImpl {
        self.attention
    }

    /// `exp(logit_scale)`, the temperature of image-text logits.
    pub fn logit_scale(&self) -> f32 {
        self.weights.logit_scale.exp()
    }

    pub(crate) fn weights(&self) -> &ClipWeights<Tensor<T>> {
        &self.weights
    }

    /// Scratch for up to `max_images` images and `max_texts` texts per forward.
    pub fn workspace(
        &self,
        gpu: &Gpu,
        max_images: usize,
        max_texts: usize,
    ) -> Result<Workspace<T>> {
        Workspace::new(gpu, &self.config, self.attention, max_images, max_texts)
    }

    /// Copies preprocessed images (`[batch, channels, size, size]` f32, CLIP-normalized) into the workspace and
    /// returns the batch.
    pub fn upload_images(&self, gpu: &Gpu, ws: &mut Workspace<T>, pixels: &[f32]) -> Result<usize> {
        self.upload_image_parts(gpu, ws, &[pixels])
    }

    /// [`Self::upload_images`] of images given in parts (each `[n, C, S, S]`), in order, without gathering them
    /// first.
    pub fn upload_image_parts(
        &self,
        gpu: &Gpu,
        ws: &mut Workspace<T>,
        parts: &[&[f32]],
    ) -> Result<usize> {
        let v = &self.config.vision;
        ws.pixels.upload(gpu, (v.num_channels, v.image_size), parts)
    }

    /// Enqueues the vision tower on the first `batch` images in the workspace; the projected (unnormalized)
    /// embeddings land in the workspace ([`ClipModel::read_image_embeds`]).
    pub fn run_vision(&self, gpu: &Gpu, ws: &mut Workspace<T>, batch: usize) -> Result<()> {
        self.weights
            .vision_model
            .forward(gpu, &self.config.vision, ws, batch, self.attention)?;
        self.project_images(gpu, ws, batch)
    }

    /// `projected = visual_projection(class tokens)`.
    pub(crate) fn project_images(
        &self,
        gpu: &Gpu,
        ws: &mut Workspace<T>,
        batch: usize,
    ) -> Result<()> {
        let projection = &self.weights.visual_projection;
        project_images(gpu, &self.config.vision, projection, ws, batch)
    }

    /// Checks token ids (one Vec per text, each with start and end tokens, at most the context length) and copies
    /// them, padded to `pad_to` tokens (default: the longest text), with each text's pooling row, into the
    /// workspace, from pinned memory without synchronizing the stream. Padding is exact under the causal mask.
    pub fn upload_texts(
        &self,
        gpu: &Gpu,
        ws: &mut Workspace<T>,
        texts: &[Vec<u32>],
        pad_to: Option<usize>,
    ) -> Result<TextBatch> {
        text::upload_texts(gpu, &self.config.text, ws, texts, pad_to)
    }

    /// Enqueues the text tower on the texts of the last [`ClipModel::upload_texts`] and returns their shape.
    /// Nothing is copied or synchronized.
    pub fn run_uploaded_texts(&self, gpu: &Gpu, ws: &mut Workspace<T>) -> Result<TextBatch> {
        let shape = self
            .weights
            .text_model
            .forward(gpu, &self.config.text, ws, self.attention)?;
        self.project_texts(gpu, ws, shape.batch)?;
        Ok(shape)
    }

    /// `projected = text_projection(pooled)`.
    pub(crate) fn project_texts(
        &self,
        gpu: &Gpu,
        ws: &mut Workspace<T>,
        batch: usize,
    ) -> Result<()> {
        let b = &mut ws.text;
        let pooled = b.pooled.view().narrow(0, 0, batch)?;
        let mut out = b.projected.view_mut().narrow(0, 0, batch)?;
        Ok(linear(
            gpu,
            &pooled,
            &self.weights.text_projection.view(),
            &mut out,
            0.0,
        )?)
    }

    /// [`ClipModel::upload_texts`] (padded to the longest text) followed by [`ClipModel::run_uploaded_texts`].
    pub fn run_text(&self, gpu: &Gpu, ws: &mut Workspace<T>, texts: &[Vec<u32>]) -> Result<()> {
        self.upload_texts(gpu, ws, texts, None)?;
        self.run_uploaded_texts(gpu, ws)?;
        Ok(())
    }

    /// The projected image embeddings of the last [`ClipModel::run_vision`] (syncs).
    pub fn read_image_embeds(
        &self,
        gpu: &Gpu,
        ws: &Workspace<T>,
        batch: usize,
    ) -> Result<Array2<f32>> {
        read_rows(gpu, &ws.vision.projected, batch, self.config.projection_dim)
    }

    /// The projected text embeddings of the last [`ClipModel::run_text`] (syncs).
    pub fn read_text_embeds(
        &self,
        gpu: &Gpu,
        ws: &Workspace<T>,
        batch: usize,
    ) -> Result<Array2<f32>> {
        read_rows(gpu, &ws.text.projected, batch, self.config.projection_dim)
    }

    /// Projected embeddings of preprocessed images (`[batch, C, S, S]` f32).
    pub fn encode_images(
        &self,
        gpu: &Gpu,
        ws: &mut Workspace<T>,
        pixels: &[f32],
    ) -> Result<Array2<f32>> {
        let batch = self.upload_images(gpu, ws, pixels)?;
        self.run_vision(gpu, ws, batch)?;
        self.read_image_embeds(gpu, ws, batch)
    }

    /// Projected embeddings of tokenized texts.
    pub fn encode_texts(
        &self,
        gpu: &Gpu,
        ws: &mut Workspace<T>,
        texts: &[Vec<u32>],
    ) -> Result<Array2<f32>> {
        self.run_text(gpu, ws, texts)?;
        self.read_text_embeds(gpu, ws, texts.len())
    }
}

/// `projected = visual_projection(class tokens)` for the first `batch` images of the workspace (CLIP's vision tower,
/// shared by every family that has it).
pub(crate) fn project_images<T: Element>(
    gpu: &Gpu,
    v: &VisionConfig,
    visual_projection: &Tensor<T>,
    ws: &mut Workspace<T>,
    batch: usize,
) -> Result<()> {
    let cls = vision::class_tokens(v, &ws.vision.normed, batch)?;
    let mut out = ws.vision.projected.view_mut().narrow(0, 0, batch)?;
    Ok(linear(gpu, &cls, &visual_projection.view(), &mut out, 0.0)?)
}

/// The first `batch` rows of `dim` values of `t` as f32 (syncs; copies only those rows).
pub(crate) fn read_rows<T: Element>(
    gpu: &Gpu,
    t: &Tensor<T>,
    batch: usize,
    dim: usize,
) -> Result<Array2<f32>> {
    let len = batch
        .checked_mul(dim)
        .filter(|&n| n <= t.data().len())
        .ok_or_else(|| {
            ModelError::Input(format!(
                "{batch} rows of {dim} exceed the workspace's {} values",
                t.data().len()
            ))
        })?;
    let host = gpu.download(&t.data().slice(..len))?;
    let v: Vec<f32> = host.iter().map(|x| x.to_f32()).collect();
    Array2::from_shape_vec((batch, dim), v).map_err(|e| ModelError::Input(e.to_string()))
}
