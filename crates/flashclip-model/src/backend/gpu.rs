//! The GPU backend: [`ClipModel`] on flashclip's kernels behind [`Embedder`].
//!
//! Small batches run as CUDA graphs, one per batch size (texts: per batch size and padded length), captured
//! the first time that shape comes and replayed after: at these sizes launching a few hundred kernels one by
//! one takes longer than the GPU takes to run them. A replay is bitwise the direct forward of the same shape.

use std::collections::HashMap;
use std::sync::Arc;

use flashclip::{Element, Gpu};
use ndarray::Array2;

use super::{check_batch, image_count, Embedder, LoadGpu};
use crate::checkpoint::Checkpoint;
use crate::config::ClipConfig;
use crate::error::Result;
use crate::family::ModelConfig;
use crate::graph::{Captured, GraphShape};
use crate::model::ClipModel;
use crate::nn::AttentionImpl;
use crate::workspace::Workspace;

/// Batches of up to this many images or texts run as CUDA graphs. From about here on the GPU's work per kernel
/// outlasts its launch, so a graph gains little and would cost a capture per batch size.
pub const GRAPH_MAX_BATCH: usize = 8;

/// Texts are padded to a multiple of this many tokens (or the context length), so that batches of texts of
/// nearby lengths share a graph. Padding is exact under the text tower's causal mask.
const TEXT_LEN_STEP: usize = 8;

/// A model on one GPU in element type `T`, with a workspace for `max_batch` images and texts and the fastest
/// attention for its shapes. Replicas ([`Embedder::replica`]) share the weights.
pub struct GpuBackend<T: Element> {
    ordinal: usize,
    config: ModelConfig,
    // Field order is drop order: the graphs go before the workspace and the weights they read, and those before
    // the stream and handles of the Gpu they were allocated through.
    /// Captured forwards by shape; `None` where the capture failed, so that shape runs directly from then on.
    graphs: HashMap<GraphShape, Option<Captured>>,
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
            graphs: HashMap::new(),
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
        self.graphs.values().flatten().count()
    }

    /// Captures the graph of `shape` if it is small enough ([`GRAPH_MAX_BATCH`]) and was not tried before. A
    /// failed capture only costs the graph (the direct forward computes the same), so it is remembered rather than
    /// reported; a fault of the GPU itself shows up again in the direct forward that follows.
    fn capture_if_new(&mut self, shape: GraphShape) {
        if shape.images.max(shape.texts) > GRAPH_MAX_BATCH || self.graphs.contains_key(&shape) {
            return;
        }
        let captured = self.model.capture(&self.gpu, &mut self.ws, shape).ok();
        self.graphs.insert(shape, captured);
    }

    /// Runs the forward of `shape` on what was uploaded last: its graph where there is one, else directly.
    fn replay_or_run(&mut self, shape: GraphShape) -> Result<()> {
        match self.graphs.get(&shape) {
            Some(Some(graph)) => graph.launch(&self.ws),
            _ if shape.images > 0 => self.model.run_vision(&self.gpu, &mut self.ws, shape.images),
            _ => self
                .model
                .run_uploaded_texts(&self.gpu, &mut self.ws)
                .map(drop),
        }
    }
}

impl<T: Element> Embedder for GpuBackend<T> {
    fn config(&self) -> &ModelConfig {
        &self.config
    }

    fn max_batch(&self) -> usize {
        self.max_batch
    }

    fn logit_scale(&self) -> f32 {
        self.model.logit_scale()
    }

    fn describe(&self) -> String {
        let name = self.gpu.name().unwrap_or_else(|_| "GPU".into());
        format!("cuda:{} {} ({name})", self.ordinal, T::DTYPE)
    }

    fn embed_images(&mut self, pixels: &[f32]) -> Result<Array2<f32>> {
        let n = image_count(&self.model.config().vision, pixels)?;
        check_batch("images", n, self.max_batch)?;
        let shape = GraphShape {
            images: n,
            texts: 0,
            text_len: 0,
        };
        self.capture_if_new(shape);
        self.model.upload_images(&self.gpu, &mut self.ws, pixels)?;
        self.replay_or_run(shape)?;
        self.model.read_image_embeds(&self.gpu, &self.ws, n)
    }

    fn embed_texts(&mut self, texts: &[Vec<u32>]) -> Result<Array2<f32>> {
        let n = texts.len();
        check_batch("texts", n, self.max_batch)?;
        let max_len = self.model.config().text.max_len();
        let longest = texts.iter().map(Vec::len).max().unwrap_or(0);
        // Past the context, `len` is the longest text, which the upload refuses.
        let len = longest
            .next_multiple_of(TEXT_LEN_STEP)
            .min(max_len)
            .max(longest);
        let shape = GraphShape {
            images: 0,
            texts: n,
            text_len: len,
        };
        if (1..=max_len).contains(&longest) {
            self.capture_if_new(shape);
        }
        self.model
            .upload_texts(&self.gpu, &mut self.ws, texts, Some(len))?;
        self.replay_or_run(shape)?;
        self.model.read_text_embeds(&self.gpu, &self.ws, n)
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
