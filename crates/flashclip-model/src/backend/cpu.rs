//! The CPU backend: a family's float32 reference forward behind [`Embedder`], one type for every family
//! ([`CpuModel`] says what differs).

use ndarray::{Array2, ArrayView4};

use super::{check_batch, image_batch, Embedder, LoadCpu, ZeroShot};
use crate::checkpoint::{Checkpoint, Host};
use crate::config::ClipConfig;
use crate::error::Result;
use crate::family::ModelConfig;
use crate::reference::ClipReference;
use crate::weights::ClipWeights;

/// What the CPU backend needs of a model family, implemented on its config: its f32 weights and the two towers of
/// its reference forward.
pub trait CpuModel: Clone + Send + 'static {
    /// The family's weights in host memory.
    type Weights: Send;

    /// Reads the checkpoint's weights for this config as f32.
    fn read_weights(&self, checkpoint: &Checkpoint) -> Result<Self::Weights>;

    /// Checks `weights` against this config (what building the reference forward checks).
    fn check(&self, weights: &Self::Weights) -> Result<()>;

    /// The config as front ends see it.
    fn model_config(&self) -> ModelConfig;

    /// Channels and side of the images the vision tower takes.
    fn image_shape(&self) -> (usize, usize);

    /// How zero-shot probabilities come from the logits of these weights.
    fn zero_shot(weights: &Self::Weights) -> ZeroShot;

    /// Projected image embeddings of `images` `[n, C, S, S]`.
    fn embed_images(
        &self,
        weights: &Self::Weights,
        images: ArrayView4<'_, f32>,
    ) -> Result<Array2<f32>>;

    /// Projected text embeddings of token id sequences.
    fn embed_texts(&self, weights: &Self::Weights, texts: &[Vec<u32>]) -> Result<Array2<f32>>;
}

/// A model on the CPU in float32, through its family's reference forward: the ground truth, and slow (about a
/// second per ViT-B/32 image on one core); every image and text of a batch runs in parallel on rayon's pool.
pub struct CpuBackend<C: CpuModel = ClipConfig> {
    config: C,
    model_config: ModelConfig,
    weights: C::Weights,
    max_batch: usize,
}

impl<C: CpuModel> CpuBackend<C> {
    /// Loads `checkpoint` for `config` into host memory as f32.
    pub fn load(config: &C, checkpoint: &Checkpoint, max_batch: usize) -> Result<Self> {
        let weights = config.read_weights(checkpoint)?;
        Self::new(config, weights, max_batch)
    }

    /// Wraps weights already in memory (checked against `config`).
    pub fn new(config: &C, weights: C::Weights, max_batch: usize) -> Result<Self> {
        config.check(&weights)?;
        Ok(Self {
            config: config.clone(),
            model_config: config.model_config(),
            weights,
            max_batch: max_batch.max(1),
        })
    }
}

impl<C: CpuModel> Embedder for CpuBackend<C> {
    fn config(&self) -> &ModelConfig {
        &self.model_config
    }

    fn max_batch(&self) -> usize {
        self.max_batch
    }

    fn logit_scale(&self) -> f32 {
        match C::zero_shot(&self.weights) {
            ZeroShot::Softmax { scale } | ZeroShot::Sigmoid { scale, .. } => scale,
        }
    }

    fn zero_shot(&self) -> ZeroShot {
        C::zero_shot(&self.weights)
    }

    fn describe(&self) -> String {
        "cpu f32 (reference forward, slow)".into()
    }

    fn embed_images(&mut self, pixels: &[f32]) -> Result<Array2<f32>> {
        let (channels, size) = self.config.image_shape();
        let view = image_batch(channels, size, pixels, self.max_batch)?;
        self.config.embed_images(&self.weights, view)
    }

    fn embed_texts(&mut self, texts: &[Vec<u32>]) -> Result<Array2<f32>> {
        check_batch("texts", texts.len(), self.max_batch)?;
        self.config.embed_texts(&self.weights, texts)
    }
}

impl<C: CpuModel> LoadCpu<C> for CpuBackend<C> {
    fn load_cpu(config: &C, checkpoint: &Checkpoint, max_batch: usize) -> Result<Self> {
        Self::load(config, checkpoint, max_batch)
    }
}

impl CpuModel for ClipConfig {
    type Weights = ClipWeights;

    fn read_weights(&self, checkpoint: &Checkpoint) -> Result<ClipWeights> {
        Ok(checkpoint.load(self, Host)?)
    }

    fn check(&self, weights: &ClipWeights) -> Result<()> {
        ClipReference::new(self, weights)?;
        Ok(())
    }

    fn model_config(&self) -> ModelConfig {
        ModelConfig::Clip(self.clone())
    }

    fn image_shape(&self) -> (usize, usize) {
        (self.vision.num_channels, self.vision.image_size)
    }

    fn zero_shot(weights: &ClipWeights) -> ZeroShot {
        ZeroShot::Softmax {
            scale: weights.logit_scale.exp(),
        }
    }

    fn embed_images(
        &self,
        weights: &ClipWeights,
        images: ArrayView4<'_, f32>,
    ) -> Result<Array2<f32>> {
        let reference = ClipReference::new(self, weights)?;
        Ok(reference.vision_forward(images, false)?.image_embeds)
    }

    fn embed_texts(&self, weights: &ClipWeights, texts: &[Vec<u32>]) -> Result<Array2<f32>> {
        let reference = ClipReference::new(self, weights)?;
        Ok(reference.text_forward(texts, false)?.text_embeds)
    }
}
