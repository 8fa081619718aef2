//! Chinese-CLIP on the GPU: CLIP's vision tower and the BERT text tower ([`super::text_gpu`]) with weights
//! uploaded once in `T`, forwards on a preallocated [`Workspace`].

use flashclip::ops::gemm::linear;
use flashclip::{Element, Gpu, Tensor};
use ndarray::Array2;

use super::config::ChineseClipConfig;
use super::text_gpu::{encoder_spec, upload_texts};
use super::weights::ChineseClipWeights;
use crate::checkpoint::{Checkpoint, CheckpointFormat, FnRaw, Loader};
use crate::error::Result;
use crate::graph::{ForwardGraph, GraphShape};
use crate::model::{project_images, read_rows, Device};
use crate::nn::AttentionImpl;
use crate::text::TextBatch;
use crate::workspace::{Towers, Workspace};

/// Chinese-CLIP's two towers on the GPU in element type `T`.
pub struct ChineseClipModel<T: Element> {
    config: ChineseClipConfig,
    attention: AttentionImpl,
    weights: ChineseClipWeights<Tensor<T>>,
}

impl<T: Element> ChineseClipModel<T> {
    /// The head dims attention runs at, by tower.
    fn towers(config: &ChineseClipConfig) -> [(&'static str, usize); 2] {
        [
            ("vision", config.vision.head_dim()),
            ("text", config.text.head_dim()),
        ]
    }

    /// [`AttentionImpl::best_for`] this config's head dims.
    pub fn best_attention(gpu: &Gpu, config: &ChineseClipConfig) -> AttentionImpl {
        AttentionImpl::best_for::<T>(gpu, &Self::towers(config).map(|(_, d)| d))
    }

    fn with_weights(
        gpu: &Gpu,
        config: &ChineseClipConfig,
        attention: AttentionImpl,
        mut weights: ChineseClipWeights<Tensor<T>>,
    ) -> Result<Self> {
        weights.text_model.fold_token_type(gpu)?;
        Ok(Self {
            config: config.clone(),
            attention,
            weights,
        })
    }

    /// Checks `checkpoint` against `config` and the attention choice against the GPU, then loads it, each tensor
    /// converted once from the file's dtype to `T`.
    pub fn load(
        gpu: &Gpu,
        config: &ChineseClipConfig,
        checkpoint: &Checkpoint,
        attention: AttentionImpl,
    ) -> Result<Self> {
        config
            .validate()
            .map_err(crate::checkpoint::CheckpointError::from)?;
        attention.check_for::<T>(gpu, &Self::towers(config))?;
        let weights = ChineseClipWeights::load_checkpoint(checkpoint, config, Device::new(gpu))?;
        Self::with_weights(gpu, config, attention, weights)
    }

    /// Builds the model from a function of (Hugging Face checkpoint key, shape), e.g. seeded random weights.
    pub fn from_fn(
        gpu: &Gpu,
        config: &ChineseClipConfig,
        attention: AttentionImpl,
        f: impl FnMut(&str, &[usize]) -> Vec<f32>,
    ) -> Result<Self> {
        config
            .validate()
            .map_err(crate::checkpoint::CheckpointError::from)?;
        attention.check_for::<T>(gpu, &Self::towers(config))?;
        let format = CheckpointFormat::HuggingFace;
        let mut loader = Loader {
            raw: FnRaw(f),
            format,
            target: Device::new(gpu),
        };
        let weights = ChineseClipWeights::from_source(&mut loader, config)?;
        Self::with_weights(gpu, config, attention, weights)
    }

    /// The config the model was built from.
    pub fn config(&self) -> &ChineseClipConfig {
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

    /// The longest text a default workspace takes: the 52-token context Chinese-CLIP was trained with, or the
    /// position table if that is shorter.
    pub fn context_length(&self) -> usize {
        self.config.context_length()
    }

    /// Scratch for up to `max_images` images and `max_texts` texts of up to [`Self::context_length`] tokens.
    pub fn workspace(
        &self,
        gpu: &Gpu,
        max_images: usize,
        max_texts: usize,
    ) -> Result<Workspace<T>> {
        self.workspace_for_context(gpu, max_images, max_texts, self.context_length())
    }

    /// Scratch for texts of up to `context` tokens (at most `max_position_embeddings`).
    pub fn workspace_for_context(
        &self,
        gpu: &Gpu,
        max_images: usize,
        max_texts: usize,
        context: usize,
    ) -> Result<Workspace<T>> {
        let context = context.clamp(1, self.config.text.max_len());
        let towers = Towers {
            vision: &self.config.vision,
            text: (encoder_spec(&self.config.text), context),
            projection_dim: self.config.projection_dim,
        };
        Workspace::for_towers(gpu, &towers, self.attention, max_images, max_texts)
    }

    /// Captures one forward of `shape` on `ws` into a CUDA graph, as [`crate::ClipModel::capture_forward`] does.
    pub fn capture_forward<'a>(
        &'a self,
        gpu: &'a Gpu,
        ws: &'a mut Workspace<T>,
        shape: GraphShape,
    ) -> Result<ForwardGraph<'a, Self>> {
        ForwardGraph::capture(self, gpu, ws, shape)
    }

    /// Copies preprocessed images (`[batch, channels, size, size]` f32), given in parts (each `[n, C, S, S]`, in
    /// order; one part is one slice of them all), into the workspace; returns the batch.
    pub fn upload_image_parts(
        &self,
        gpu: &Gpu,
        ws: &mut Workspace<T>,
        parts: &[&[f32]],
    ) -> Result<usize> {
        let v = &self.config.vision;
        ws.pixels.upload(gpu, (v.num_channels, v.image_size), parts)
    }

    /// Enqueues the vision tower and its projection on the first `batch` images in the workspace.
    pub fn run_vision(&self, gpu: &Gpu, ws: &mut Workspace<T>, batch: usize) -> Result<()> {
        let w = &self.weights;
        w.vision_model
            .forward(gpu, &self.config.vision, ws, batch, self.attention)?;
        project_images(gpu, &self.config.vision, &w.visual_projection, ws, batch)
    }

    /// Checks token ids (`[CLS] … [SEP]` each) and copies them, padded to `pad_to` tokens (default: the longest),
    /// with their lengths, into the workspace.
    pub fn upload_texts(
        &self,
        gpu: &Gpu,
        ws: &mut Workspace<T>,
        texts: &[Vec<u32>],
        pad_to: Option<usize>,
    ) -> Result<TextBatch> {
        upload_texts(gpu, &self.config.text, ws, texts, pad_to)
    }

    /// Enqueues the text tower and its projection on the texts of the last [`Self::upload_texts`].
    pub fn run_uploaded_texts(&self, gpu: &Gpu, ws: &mut Workspace<T>) -> Result<TextBatch> {
        let w = &self.weights;
        let shape = w
            .text_model
            .forward(gpu, &self.config.text, ws, self.attention)?;
        let b = &mut ws.text;
        let pooled = b.pooled.view().narrow(0, 0, shape.batch)?;
        let mut out = b.projected.view_mut().narrow(0, 0, shape.batch)?;
        linear(gpu, &pooled, &w.text_projection.view(), &mut out, 0.0)?;
        Ok(shape)
    }

    /// The projected image embeddings of the last [`Self::run_vision`] on `batch` images (syncs).
    pub fn read_image_embeds(
        &self,
        gpu: &Gpu,
        ws: &Workspace<T>,
        batch: usize,
    ) -> Result<Array2<f32>> {
        read_rows(gpu, &ws.vision.projected, batch, self.config.projection_dim)
    }

    /// The projected text embeddings of the last [`Self::run_uploaded_texts`] on `batch` texts (syncs).
    pub fn read_text_embeds(
        &self,
        gpu: &Gpu,
        ws: &Workspace<T>,
        batch: usize,
    ) -> Result<Array2<f32>> {
        read_rows(gpu, &ws.text.projected, batch, self.config.projection_dim)
    }

    /// Projected (unnormalized) embeddings of preprocessed images (`[batch, C, S, S]` f32).
    pub fn encode_images(
        &self,
        gpu: &Gpu,
        ws: &mut Workspace<T>,
        pixels: &[f32],
    ) -> Result<Array2<f32>> {
        let batch = self.upload_image_parts(gpu, ws, &[pixels])?;
        self.run_vision(gpu, ws, batch)?;
        self.read_image_embeds(gpu, ws, batch)
    }

    /// Projected (unnormalized) embeddings of tokenized texts.
    pub fn encode_texts(
        &self,
        gpu: &Gpu,
        ws: &mut Workspace<T>,
        texts: &[Vec<u32>],
    ) -> Result<Array2<f32>> {
        self.upload_texts(gpu, ws, texts, None)?;
        let shape = self.run_uploaded_texts(gpu, ws)?;
        read_rows(
            gpu,
            &ws.text.projected,
            shape.batch,
            self.config.projection_dim,
        )
    }
}

crate::graph::tower_model!(
    ChineseClipModel,
    Workspace,
    context: |m| m.context_length(),
    vocab: |m| m.config().text.vocab_size,
    image: |m| (m.config().vision.num_channels, m.config().vision.image_size),
    rows: |m, ws| (&ws.vision.projected, m.config().projection_dim)
);
