//! CUDA graphs for the GPU backends' small batches: one per batch size (texts: per batch size and padded length),
//! captured the first time that shape comes and replayed after. At these sizes launching a few hundred kernels one
//! by one takes longer than the GPU takes to run them. A replay is bitwise the direct forward of the same shape.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

use flashclip::{Element, Gpu, Tensor};
use ndarray::Array2;

use super::{check_batch, image_parts_count, Started, StartedImages, MAX_STARTED};
use crate::error::{ModelError, Result};
use crate::graph::{capture, Captured, GraphShape, TowerModel};
use crate::workspace::Staging;

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

/// The number of images in `parts`, checked against `model`'s image shape and `max_batch`.
pub(crate) fn checked_images(
    model: &impl TowerModel,
    parts: &[&[f32]],
    max_batch: usize,
) -> Result<usize> {
    let n = image_parts_count(model.image_shape(), parts)?;
    check_batch("images", n, max_batch)?;
    Ok(n)
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

    /// [`Self::embed_images`] up to enqueuing the copy of the rows back into a slot of `readback`: nothing waits
    /// for the forward.
    pub(crate) fn start_images<M: TowerModel>(
        &mut self,
        model: &M,
        gpu: &Gpu,
        ws: &mut M::Workspace,
        (parts, n): (&[&[f32]], usize),
        readback: &mut Readback<M::Elem>,
    ) -> Result<StartedImages> {
        let shape = GraphShape {
            images: n,
            texts: 0,
            text_len: 0,
        };
        let slot = readback.claim()?;
        self.capture_if_new(model, gpu, ws, shape);
        model.upload_image_parts(gpu, ws, parts)?;
        self.replay_or_run(model, gpu, ws, shape)?;
        let (rows, dim) = model.image_rows(ws);
        readback.enqueue(gpu, slot, rows, (n, dim))
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

/// Pinned host buffers that started images' rows are copied back into without waiting, one per batch that may be
/// in flight ([`MAX_STARTED`]), each allocated on its first use.
pub(crate) struct Readback<T: Element> {
    slots: [Option<Slot<T>>; MAX_STARTED],
    /// The slot the next start takes.
    next: usize,
}

/// Numbers every start in the process, so a finish can tell its batch from a later one in the same slot, or from
/// one another backend started.
static TICKETS: AtomicU64 = AtomicU64::new(0);

struct Slot<T: Element> {
    staging: Staging<T>,
    /// The started batch whose rows the slot holds or receives, until it is finished: (ticket, rows, width).
    pending: Option<(u64, usize, usize)>,
}

impl<T: Element> Default for Readback<T> {
    fn default() -> Self {
        Self {
            slots: std::array::from_fn(|_| None),
            next: 0,
        }
    }
}

impl<T: Element> Readback<T> {
    /// The slot for the next start, refused while the batch started there last is not finished.
    fn claim(&mut self) -> Result<usize> {
        let slot = self.next;
        if self.slots[slot]
            .as_ref()
            .is_some_and(|s| s.pending.is_some())
        {
            return Err(ModelError::Input(format!(
                "{MAX_STARTED} batches of images are started and not finished: finish one first"
            )));
        }
        Ok(slot)
    }

    /// Enqueues the copy of the first `n` rows of `width` of `rows` into `slot` on `gpu`'s stream.
    fn enqueue(
        &mut self,
        gpu: &Gpu,
        slot: usize,
        rows: &Tensor<T>,
        (n, width): (usize, usize),
    ) -> Result<StartedImages> {
        let len = n * width;
        let src = rows.data();
        if len == 0 || len > src.len() {
            return Err(ModelError::Input(format!(
                "{n} rows of {width} are not in the workspace's {} values",
                src.len()
            )));
        }
        let staging = match &mut self.slots[slot] {
            Some(s) => s,
            empty => empty.insert(Slot {
                staging: Staging::new(gpu, src.len())?,
                pending: None,
            }),
        };
        let host = staging.staging.writable()?;
        let stream = gpu.stream();
        let copied = stream.memcpy_dtoh(&src.slice(..len), &mut host[..len]);
        staging.staging.enqueued(stream, copied)?;
        let ticket = TICKETS.fetch_add(1, Ordering::Relaxed);
        staging.pending = Some((ticket, n, width));
        self.next = (slot + 1) % MAX_STARTED;
        Ok(StartedImages(Started::OnDevice {
            slot,
            ticket,
            rows: n,
        }))
    }

    /// Waits for the rows of `started` and returns them as f32.
    pub(crate) fn finish(&mut self, started: StartedImages) -> Result<Array2<f32>> {
        let (slot, ticket) = match started.0 {
            Started::Done(rows) => return Ok(rows),
            Started::OnDevice { slot, ticket, .. } => (slot, ticket),
            Started::External { .. } => {
                return Err(ModelError::Input(
                    "these images were started on another embedder".into(),
                ))
            }
        };
        let held = self.slots.get_mut(slot).and_then(Option::as_mut);
        let Some(held) = held.filter(|s| s.pending.is_some_and(|p| p.0 == ticket)) else {
            return Err(ModelError::Input(
                "these images were not started on this backend, or were finished already".into(),
            ));
        };
        let (_, n, width) = held.pending.take().unwrap_or_default();
        // `writable` waits for the copy out of the device and hands the buffer over for the next one.
        let host = held.staging.writable()?;
        let values: Vec<f32> = host[..n * width].iter().map(|x| x.to_f32()).collect();
        Array2::from_shape_vec((n, width), values).map_err(|e| ModelError::Input(e.to_string()))
    }
}
