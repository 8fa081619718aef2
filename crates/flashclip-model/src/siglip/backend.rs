//! SigLIP behind [`Embedder`]: its reference forward for the CPU backend ([`CpuModel`]) and the GPU model
//! ([`SiglipGpu`]). Both take
//! texts as [`super::SiglipTokenizer`] gives them (padded to the context, read at the last position) and say that
//! zero-shot probabilities are a sigmoid per label ([`ZeroShot::Sigmoid`]).

use flashclip::{Element, Gpu};
use ndarray::{Array2, ArrayView4};

use super::config::SiglipConfig;
use super::gpu::{SiglipGpuModel, SiglipWorkspace};
use super::reference::{SiglipReference, TextAttention};
use super::weights::SiglipWeights;
use crate::backend::graphs::{Graphs, Readback};
use crate::backend::{CpuModel, Embedder, LoadGpu, ZeroShot};
use crate::checkpoint::{Checkpoint, Host};
use crate::error::Result;
use crate::family::ModelConfig;
use crate::nn::AttentionImpl;

impl CpuModel for SiglipConfig {
    type Weights = SiglipWeights;

    fn read_weights(&self, checkpoint: &Checkpoint) -> Result<SiglipWeights> {
        Ok(SiglipWeights::load_checkpoint(checkpoint, self, Host)?)
    }

    fn check(&self, weights: &SiglipWeights) -> Result<()> {
        SiglipReference::new(self, weights)?;
        Ok(())
    }

    fn model_config(&self) -> ModelConfig {
        ModelConfig::Siglip(self.clone())
    }

    fn image_shape(&self) -> (usize, usize) {
        (self.vision.num_channels, self.vision.image_size)
    }

    fn zero_shot(weights: &SiglipWeights) -> ZeroShot {
        ZeroShot::Sigmoid {
            scale: weights.logit_scale.exp(),
            bias: weights.logit_bias,
        }
    }

    fn embed_images(
        &self,
        weights: &SiglipWeights,
        images: ArrayView4<'_, f32>,
    ) -> Result<Array2<f32>> {
        Ok(SiglipReference::new(self, weights)?
            .vision_forward(images)?
            .image_embeds)
    }

    fn embed_texts(&self, weights: &SiglipWeights, texts: &[Vec<u32>]) -> Result<Array2<f32>> {
        // Unmasked over the padding, as SigLIP is trained and as the GPU model computes.
        Ok(SiglipReference::new(self, weights)?
            .text_forward(texts, TextAttention::Unmasked)?
            .text_embeds)
    }
}

/// SigLIP on one GPU in element type `T`, with a workspace for `max_batch` images and texts, the fastest
/// attention for its head dims, and small batches as CUDA graphs.
pub struct SiglipGpu<T: Element> {
    ordinal: usize,
    config: ModelConfig,
    // Field order is drop order: the graphs go before the workspace and the weights they read, and those before
    // the stream and handles of the Gpu they were allocated through.
    graphs: Graphs,
    readback: Readback<T>,
    ws: SiglipWorkspace<T>,
    model: SiglipGpuModel<T>,
    gpu: Gpu,
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
            graphs: Graphs::default(),
            readback: Readback::default(),
            ws,
            model,
            gpu,
            max_batch,
        })
    }

    /// How many CUDA graphs this backend holds (one per small batch shape it has run).
    pub fn graph_count(&self) -> usize {
        self.graphs.count()
    }
}

impl<T: Element> Embedder for SiglipGpu<T> {
    crate::backend::gpu_embedder_methods!(SiglipGpuModel);

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
