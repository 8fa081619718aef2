//! CUDA graphs for the GPU backends' small batches: one per batch size (texts: per batch size and padded length),
//! captured the first time that shape comes and replayed after. At these sizes launching a few hundred kernels one
//! by one takes longer than the GPU takes to run them. A replay is bitwise the direct forward of the same shape.

use std::collections::HashMap;

use flashclip::Gpu;
use ndarray::Array2;

use crate::error::Result;
use crate::graph::{capture, Captured, GraphShape, TowerModel};

/// Batches of up to this many images or texts run as CUDA graphs. From about here on the GPU's work per kernel
/// outlasts its launch, so a graph gains little and would cost a capture per batch size.
pub const GRAPH_MAX_BATCH: usize = 8;

/// Texts are padded to a multiple of this many tokens (or the context length), so that batches of texts of
/// nearby lengths share a graph. Padding is exact: the text towers never let a token see the padding after it
/// (CLIP's causal mask, Chinese-CLIP's key lengths).
const TEXT_LEN_STEP: usize = 8;

/// The graphs of one model on one workspace. Whoever holds it keeps both alive and drops it first (see
/// [`Captured`]).
#[derive(Default)]
pub(crate) struct Graphs {
    /// Captured forwards by shape; `None` where the capture failed, so that shape runs directly from then on.
    by_shape: HashMap<GraphShape, Option<Captured>>,
}

impl Graphs {
    /// How many graphs were captured.
    pub(crate) fn count(&self) -> usize {
        self.by_shape.values().flatten().count()
    }

    /// Embeds `n` images (given in `parts`, already checked), through a graph where the batch is small.
    pub(crate) fn embed_images<M: TowerModel>(
        &mut self,
        model: &M,
        gpu: &Gpu,
        ws: &mut M::Workspace,
        parts: &[&[f32]],
        n: usize,
    ) -> Result<Array2<f32>> {
        let shape = GraphShape {
            images: n,
            texts: 0,
            text_len: 0,
        };
        self.capture_if_new(model, gpu, ws, shape);
        model.upload_image_parts(gpu, ws, parts)?;
        self.replay_or_run(model, gpu, ws, shape)?;
        model.read_image_embeds(gpu, ws, n)
    }

    /// Embeds token id sequences (their count already checked), padded to a multiple of [`TEXT_LEN_STEP`], through
    /// a graph where the batch is small.
    pub(crate) fn embed_texts<M: TowerModel>(
        &mut self,
        model: &M,
        gpu: &Gpu,
        ws: &mut M::Workspace,
        texts: &[Vec<u32>],
    ) -> Result<Array2<f32>> {
        let context = model.text_context();
        let longest = texts.iter().map(Vec::len).max().unwrap_or(0);
        // Past the context, `len` is the longest text, which the upload refuses.
        let len = longest
            .next_multiple_of(TEXT_LEN_STEP)
            .min(context)
            .max(longest);
        let shape = GraphShape {
            images: 0,
            texts: texts.len(),
            text_len: len,
        };
        if (1..=context).contains(&longest) {
            self.capture_if_new(model, gpu, ws, shape);
        }
        model.upload_texts(gpu, ws, texts, Some(len))?;
        self.replay_or_run(model, gpu, ws, shape)?;
        model.read_text_embeds(gpu, ws, texts.len())
    }

    /// Captures the graph of `shape` if it is small enough ([`GRAPH_MAX_BATCH`]) and was not tried before. A
    /// failed capture only costs the graph (the direct forward computes the same), so it is remembered rather than
    /// reported; a fault of the GPU itself shows up again in the direct forward that follows.
    fn capture_if_new<M: TowerModel>(
        &mut self,
        model: &M,
        gpu: &Gpu,
        ws: &mut M::Workspace,
        shape: GraphShape,
    ) {
        if shape.images.max(shape.texts) > GRAPH_MAX_BATCH || self.by_shape.contains_key(&shape) {
            return;
        }
        let captured = capture(model, gpu, ws, shape).ok();
        self.by_shape.insert(shape, captured);
    }

    /// Runs the forward of `shape` on what was uploaded last: its graph where there is one, else directly.
    fn replay_or_run<M: TowerModel>(
        &self,
        model: &M,
        gpu: &Gpu,
        ws: &mut M::Workspace,
        shape: GraphShape,
    ) -> Result<()> {
        match self.by_shape.get(&shape) {
            Some(Some(graph)) => graph.launch(ws),
            _ if shape.images > 0 => model.run_vision(gpu, ws, shape.images),
            _ => model.run_uploaded_texts(gpu, ws).map(drop),
        }
    }
}
