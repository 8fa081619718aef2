//! The GPU backend: [`ClipModel`] on flashclip's kernels behind [`Embedder`], small batches as CUDA graphs
//! ([`super::graphs`]).

use std::sync::Arc;

use flashclip::{Element, Gpu};

use super::graphs::{Graphs, Readback};
use super::{Embedder, LoadGpu};
use crate::checkpoint::Checkpoint;
use crate::config::ClipConfig;
use crate::error::Result;
use crate::family::ModelConfig;
use crate::model::ClipModel;
use crate::nn::AttentionImpl;
use crate::workspace::Workspace;

/// A model on one GPU in element type `T`, with a workspace for `max_batch` images and texts and the fastest
/// attention for its shapes. Replicas ([`Embedder::replica`]) share the weights.
pub struct GpuBackend<T: Element> {
    ordinal: usize,
    config: ModelConfig,
    // Field order is drop order: the graphs go before the workspace and the weights they read, and those before
    // the stream and handles of the Gpu they were allocated through.
    graphs: Graphs,
    readback: Readback<T>,
    ws: Workspace<T>,
    model: Arc<ClipModel<T>>,
    gpu: Gpu,
    max_batch: usize,
}

impl<T: Element> GpuBackend<T> {
    /// Opens GPU `ordinal` and loads `checkpoint` onto it in `T`.
    pub fn load(
        ordinal: usize,
        config: &ClipConfig,
        checkpoint: &Checkpoint,
        max_batch: usize,
    ) -> Result<Self> {
        let gpu = Gpu::new(ordinal)?;
        let attention = AttentionImpl::best::<T>(&gpu, config);
        let model = ClipModel::<T>::load(&gpu, config, checkpoint, attention)?;
        Self::new(ordinal, gpu, model, max_batch)
    }

    /// Wraps a model already on `gpu` (GPU `ordinal`), allocating its workspace.
    pub fn new(ordinal: usize, gpu: Gpu, model: ClipModel<T>, max_batch: usize) -> Result<Self> {
        Self::sharing(ordinal, gpu, Arc::new(model), max_batch)
    }

    fn sharing(
        ordinal: usize,
        gpu: Gpu,
        model: Arc<ClipModel<T>>,
        max_batch: usize,
    ) -> Result<Self> {
        let max_batch = max_batch.max(1);
        let ws = model.workspace(&gpu, max_batch, max_batch)?;
        Ok(Self {
            ordinal,
            config: ModelConfig::Clip(model.config().clone()),
            graphs: Graphs::default(),
            readback: Readback::default(),
            ws,
            model,
            gpu,
            max_batch,
        })
    }
}

impl<T: Element> GpuBackend<T> {
    /// How many CUDA graphs this backend holds (one per small batch shape it has run).
    pub fn graph_count(&self) -> usize {
        self.graphs.count()
    }
}

/// The [`Embedder`] methods every GPU backend shares, for a struct generic over `T: Element` with the fields
/// `model` (a `$model<T>`, or an `Arc` of one), `ws`, `graphs`, `readback`, `gpu`, `ordinal`, `config` and
/// `max_batch`: small batches through CUDA graphs, images also started without waiting.
macro_rules! gpu_embedder_methods {
    ($model:ident) => {
        fn config(&self) -> &$crate::family::ModelConfig {
            &self.config
        }

        fn max_batch(&self) -> usize {
            self.max_batch
        }

        fn describe(&self) -> String {
            let name = self.gpu.name().unwrap_or_else(|_| "GPU".into());
            format!("cuda:{} {} ({name})", self.ordinal, T::DTYPE)
        }

        fn embed_images(&mut self, pixels: &[f32]) -> $crate::error::Result<ndarray::Array2<f32>> {
            self.embed_image_parts(&[pixels])
        }

        fn embed_image_parts(
            &mut self,
            parts: &[&[f32]],
        ) -> $crate::error::Result<ndarray::Array2<f32>> {
            let model: &$model<T> = std::borrow::Borrow::borrow(&self.model);
            let n = $crate::backend::graphs::checked_images(model, parts, self.max_batch)?;
            self.graphs
                .embed_images(model, &self.gpu, &mut self.ws, parts, n)
        }

        fn start_image_parts(
            &mut self,
            parts: &[&[f32]],
        ) -> $crate::error::Result<$crate::backend::StartedImages> {
            let model: &$model<T> = std::borrow::Borrow::borrow(&self.model);
            let n = $crate::backend::graphs::checked_images(model, parts, self.max_batch)?;
            let (ws, readback) = (&mut self.ws, &mut self.readback);
            self.graphs
                .start_images(model, &self.gpu, ws, (parts, n), readback)
        }

        fn finish_images(
            &mut self,
            started: $crate::backend::StartedImages,
        ) -> $crate::error::Result<ndarray::Array2<f32>> {
            self.readback.finish(started)
        }

        fn embed_texts(
            &mut self,
            texts: &[Vec<u32>],
        ) -> $crate::error::Result<ndarray::Array2<f32>> {
            $crate::backend::check_batch("texts", texts.len(), self.max_batch)?;
            let model: &$model<T> = std::borrow::Borrow::borrow(&self.model);
            self.graphs
                .embed_texts(model, &self.gpu, &mut self.ws, texts)
        }

        fn graph_max_batch(&self) -> usize {
            $crate::backend::GRAPH_MAX_BATCH.min(self.max_batch)
        }
    };
}
pub(crate) use gpu_embedder_methods;

impl<T: Element> Embedder for GpuBackend<T> {
    gpu_embedder_methods!(ClipModel);

    fn logit_scale(&self) -> f32 {
        self.model.logit_scale()
    }

    fn replica(&self) -> Result<Option<Box<dyn Embedder>>> {
        // The weights were written on this replica's stream; the new one reads them from its own.
        self.gpu.synchronize()?;
        let lane = self.gpu.new_lane()?;
        Ok(Some(Box::new(Self::sharing(
            self.ordinal,
            lane,
            self.model.clone(),
            self.max_batch,
        )?)))
    }
}

/// CLIP's [`GpuBackend`] in any element type, for [`super::load`].
pub(crate) struct GpuFamily;

impl LoadGpu<ClipConfig> for GpuFamily {
    fn load_gpu<T: Element>(
        ordinal: usize,
        config: &ClipConfig,
        checkpoint: &Checkpoint,
        max_batch: usize,
    ) -> Result<Box<dyn Embedder>> {
        Ok(Box::new(GpuBackend::<T>::load(
            ordinal, config, checkpoint, max_batch,
        )?))
    }
}
