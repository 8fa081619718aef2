//! The CPU backend: the float32 reference forward ([`crate::reference`]) behind [`Embedder`].

use ndarray::Array2;

use super::{check_batch, image_batch, Embedder, LoadCpu};
use crate::checkpoint::{Checkpoint, Host};
use crate::config::ClipConfig;
use crate::error::Result;
use crate::family::ModelConfig;
use crate::reference::ClipReference;
use crate::weights::ClipWeights;

/// A model on the CPU in float32, through the reference forward: the ground truth, and slow (about a second per
/// ViT-B/32 image on one core); every image and text of a batch runs in parallel on rayon's pool.
pub struct CpuBackend {
    config: ClipConfig,
    model_config: ModelConfig,
    weights: ClipWeights,
    max_batch: usize,
}

impl CpuBackend {
    /// Loads `checkpoint` for `config` into host memory as f32.
    pub fn load(config: &ClipConfig, checkpoint: &Checkpoint, max_batch: usize) -> Result<Self> {
        let weights = checkpoint.load(config, Host)?;
        Self::new(config, weights, max_batch)
    }

    /// Wraps weights already in memory (checked against `config`).
    pub fn new(config: &ClipConfig, weights: ClipWeights, max_batch: usize) -> Result<Self> {
        ClipReference::new(config, &weights)?;
        Ok(Self {
            config: config.clone(),
            model_config: ModelConfig::Clip(config.clone()),
            weights,
            max_batch: max_batch.max(1),
        })
    }

    fn reference(&self) -> Result<ClipReference<'_>> {
        Ok(ClipReference::new(&self.config, &self.weights)?)
    }
}

impl Embedder for CpuBackend {
    fn config(&self) -> &ModelConfig {
        &self.model_config
    }

    fn max_batch(&self) -> usize {
        self.max_batch
    }

    fn logit_scale(&self) -> f32 {
        self.weights.logit_scale.exp()
    }

    fn describe(&self) -> String {
        "cpu f32 (reference forward, slow)".into()
    }

    fn embed_images(&mut self, pixels: &[f32]) -> Result<Array2<f32>> {
        let v = &self.config.vision;
        let view = image_batch(v.num_channels, v.image_size, pixels, self.max_batch)?;
        Ok(self.reference()?.vision_forward(view, false)?.image_embeds)
    }

    fn embed_texts(&mut self, texts: &[Vec<u32>]) -> Result<Array2<f32>> {
        check_batch("texts", texts.len(), self.max_batch)?;
        Ok(self.reference()?.text_forward(texts, false)?.text_embeds)
    }
}

impl LoadCpu<ClipConfig> for CpuBackend {
    fn load_cpu(config: &ClipConfig, checkpoint: &Checkpoint, max_batch: usize) -> Result<Self> {
        Self::load(config, checkpoint, max_batch)
    }
}
