//! Chinese-CLIP behind [`Embedder`]: its reference forward for the CPU backend ([`CpuModel`]) and the GPU model
//! ([`ChineseClipGpu`]).

use flashclip::{Element, Gpu};
use ndarray::{Array2, ArrayView4};

use super::config::ChineseClipConfig;
use super::model::ChineseClipModel;
use super::reference::ChineseClipReference;
use super::weights::ChineseClipWeights;
use crate::backend::graphs::{Graphs, Readback};
use crate::backend::{CpuModel, Embedder, LoadGpu, ZeroShot};
use crate::checkpoint::{Checkpoint, Host};
use crate::error::Result;
use crate::family::ModelConfig;
use crate::workspace::Workspace;

impl CpuModel for ChineseClipConfig {
    type Weights = ChineseClipWeights;

    fn read_weights(&self, checkpoint: &Checkpoint) -> Result<ChineseClipWeights> {
        Ok(ChineseClipWeights::load_checkpoint(checkpoint, self, Host)?)
    }

    fn check(&self, weights: &ChineseClipWeights) -> Result<()> {
        ChineseClipReference::new(self, weights)?;
        Ok(())
    }

    fn model_config(&self) -> ModelConfig {
        ModelConfig::ChineseClip(self.clone())
    }

    fn image_shape(&self) -> (usize, usize) {
        (self.vision.num_channels, self.vision.image_size)
    }

    fn zero_shot(weights: &ChineseClipWeights) -> ZeroShot {
        ZeroShot::Softmax {
            scale: weights.logit_scale.exp(),
        }
    }

    fn embed_images(
        &self,
        weights: &ChineseClipWeights,
        images: ArrayView4<'_, f32>,
    ) -> Result<Array2<f32>> {
        let reference = ChineseClipReference::new(self, weights)?;
        Ok(reference.vision_forward(images, false)?.image_embeds)
    }

    fn embed_texts(&self, weights: &ChineseClipWeights, texts: &[Vec<u32>]) -> Result<Array2<f32>> {
        let reference = ChineseClipReference::new(self, weights)?;
        Ok(reference.text_forward(texts, false)?.text_embeds)
    }
}

/// Chinese-CLIP on one GPU in element type `T`, with a workspace for `max_batch` images and texts of up to the
/// 52-token context, and the fastest attention for its shapes; small batches run as CUDA graphs.
pub struct ChineseClipGpu<T: Element> {
    ordinal: usize,
    config: ModelConfig,
    // Field order is drop order: the graphs before the workspace and weights they read, those before the Gpu.
    graphs: Graphs,
    readback: Readback<T>,
    ws: Workspace<T>,
    model: ChineseClipModel<T>,
    gpu: Gpu,
    max_batch: usize,
}

impl<T: Element> ChineseClipGpu<T> {
    /// Opens GPU `ordinal` and loads `checkpoint` onto it in `T`.
    pub fn load(
        ordinal: usize,
        config: &ChineseClipConfig,
        checkpoint: &Checkpoint,
        max_batch: usize,
    ) -> Result<Self> {
        let gpu = Gpu::new(ordinal)?;
        let attention = ChineseClipModel::<T>::best_attention(&gpu, config);
        let model = ChineseClipModel::<T>::load(&gpu, config, checkpoint, attention)?;
        let max_batch = max_batch.max(1);
        let ws = model.workspace(&gpu, max_batch, max_batch)?;
        Ok(Self {
            ordinal,
            config: ModelConfig::ChineseClip(config.clone()),
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

impl<T: Element> Embedder for ChineseClipGpu<T> {
    crate::backend::gpu_embedder_methods!(ChineseClipModel);

    fn logit_scale(&self) -> f32 {
        self.model.logit_scale()
    }
}

/// [`ChineseClipGpu`] in any element type, for [`crate::backend::load`].
pub(crate) struct ChineseClipGpuFamily;

impl LoadGpu<ChineseClipConfig> for ChineseClipGpuFamily {
    fn load_gpu<T: Element>(
        ordinal: usize,
        config: &ChineseClipConfig,
        checkpoint: &Checkpoint,
        max_batch: usize,
    ) -> Result<Box<dyn Embedder>> {
        Ok(Box::new(ChineseClipGpu::<T>::load(
            ordinal, config, checkpoint, max_batch,
        )?))
    }
}
