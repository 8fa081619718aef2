//! SigLIP behind [`Embedder`]: the CPU reference ([`SiglipCpu`]) and the GPU model ([`SiglipGpu`]). Both take
//! texts as [`super::SiglipTokenizer`] gives them (padded to the context, read at the last position) and say that
//! zero-shot probabilities are a sigmoid per label ([`ZeroShot::Sigmoid`]).

use flashclip::{Element, Gpu};
use ndarray::Array2;

use super::config::SiglipConfig;
use super::gpu::{SiglipGpuModel, SiglipWorkspace};
use super::reference::{SiglipReference, TextAttention};
use super::weights::SiglipWeights;
use crate::backend::{check_batch, image_batch, Embedder, LoadCpu, LoadGpu, ZeroShot};
use crate::checkpoint::{Checkpoint, Host};
use crate::error::Result;
use crate::family::ModelConfig;
use crate::nn::AttentionImpl;

/// SigLIP on the CPU in float32 through the reference forward (slow; the ground truth).
pub struct SiglipCpu {
    config: SiglipConfig,
    model_config: ModelConfig,
    weights: SiglipWeights,
    max_batch: usize,
}

impl SiglipCpu {
    /// Loads `checkpoint` for `config` into host memory as f32.
    pub fn load(config: &SiglipConfig, checkpoint: &Checkpoint, max_batch: usize) -> Result<Self> {
        let weights = SiglipWeights::load_checkpoint(checkpoint, config, Host)?;
        SiglipReference::new(config, &weights)?;
        Ok(Self {
            config: config.clone(),
            model_config: ModelConfig::Siglip(config.clone()),
            weights,
            max_batch: max_batch.max(1),
        })
    }

    fn reference(&self) -> Result<SiglipReference<'_>> {
        Ok(SiglipReference::new(&self.config, &self.weights)?)
    }
}

impl Embedder for SiglipCpu {
    fn config(&self) -> &ModelConfig {
        &self.model_config
    }

    fn max_batch(&self) -> usize {
        self.max_batch
    }

    fn logit_scale(&self) -> f32 {
        self.weights.logit_scale.exp()
    }

    fn zero_shot(&self) -> ZeroShot {
        ZeroShot::Sigmoid {
            scale: self.weights.logit_scale.exp(),
            bias: self.weights.logit_bias,
        }
    }

    fn describe(&self) -> String {
        "cpu f32 (reference forward, slow)".into()
    }

    fn embed_images(&mut self, pixels: &[f32]) -> Result<Array2<f32>> {
        let v = &self.config.vision;
        let view = image_batch(v.num_channels, v.image_size, pixels, self.max_batch)?;
        Ok(self.reference()?.vision_forward(view)?.image_embeds)
    }

    fn embed_texts(&mut self, texts: &[Vec<u32>]) -> Result<Array2<f32>> {
        check_batch("texts", texts.len(), self.max_batch)?;
        // Unmasked over the padding, as SigLIP is trained and as the GPU model computes.
        Ok(self
            .reference()?
            .text_forward(texts, TextAttention::Unmasked)?
            .text_embeds)
    }
}

impl LoadCpu<SiglipConfig> for SiglipCpu {
    fn load_cpu(config: &SiglipConfig, checkpoint: &Checkpoint, max_batch: usize) -> Result<Self> {
        Self::load(config, checkpoint, max_batch)
    }
}

/// SigLIP on one GPU in element type `T`, with a workspace for `max_batch` images and texts, and the fastest
/// attention for its head dims.
pub struct SiglipGpu<T: Element> {
    ordinal: usize,
    config: ModelConfig,
    gpu: Gpu,
    model: SiglipGpuModel<T>,
    ws: SiglipWorkspace<T>,
    max_batch: usize,
}

impl<T: Element> SiglipGpu<T> {
    /// Opens GPU `ordinal` and loads `checkpoint` onto it in `T`.
    pub fn load(
        ordinal: usize,
        config: &SiglipConfig,
        checkpoint: &Checkpoint,
        max_batch: usize,
    ) -> Result<Self> {
        let gpu = Gpu::new(ordinal)?;
        let head_dims = [config.vision.head_dim(), config.text.head_dim()];
        let attention = AttentionImpl::best_for::<T>(&gpu, &head_dims);
        let model = SiglipGpuModel::<T>::load_checkpoint(&gpu, config, checkpoint, attention)?;
        let max_batch = max_batch.max(1);
        let ws = model.workspace(&gpu, max_batch, max_batch)?;
        Ok(Self {
            ordinal,
            config: ModelConfig::Siglip(config.clone()),
            gpu,
            model,
            ws,
            max_batch,
        })
    }
}

impl<T: Element> Embedder for SiglipGpu<T> {
    fn config(&self) -> &ModelConfig {
        &self.config
    }

    fn max_batch(&self) -> usize {
        self.max_batch
    }

    fn logit_scale(&self) -> f32 {
        self.model.logit_scale_bias().0.exp()
    }

    fn zero_shot(&self) -> ZeroShot {
        let (scale, bias) = self.model.logit_scale_bias();
        ZeroShot::Sigmoid {
            scale: scale.exp(),
            bias,
        }
    }

    fn describe(&self) -> String {
        let name = self.gpu.name().unwrap_or_else(|_| "GPU".into());
        format!("cuda:{} {} ({name})", self.ordinal, T::DTYPE)
    }

    fn embed_images(&mut self, pixels: &[f32]) -> Result<Array2<f32>> {
        self.embed_image_parts(&[pixels])
    }

    fn embed_image_parts(&mut self, parts: &[&[f32]]) -> Result<Array2<f32>> {
        // The model checks the pixel counts and the batch against the workspace.
        self.model.embed_image_parts(&self.gpu, &mut self.ws, parts)
    }

    fn embed_texts(&mut self, texts: &[Vec<u32>]) -> Result<Array2<f32>> {
        check_batch("texts", texts.len(), self.max_batch)?;
        self.model.embed_texts(&self.gpu, &mut self.ws, texts)
    }
}

/// [`SiglipGpu`] in any element type, for [`crate::backend::load`].
pub(crate) struct SiglipGpuFamily;

impl LoadGpu<SiglipConfig> for SiglipGpuFamily {
    fn load_gpu<T: Element>(
        ordinal: usize,
        config: &SiglipConfig,
        checkpoint: &Checkpoint,
        max_batch: usize,
    ) -> Result<Box<dyn Embedder>> {
        Ok(Box::new(SiglipGpu::<T>::load(
            ordinal, config, checkpoint, max_batch,
        )?))
    }
}
