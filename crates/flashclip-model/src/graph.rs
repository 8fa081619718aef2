//! One forward captured into a CUDA graph and replayed in one launch instead of a few hundred, which is what
//! bounds small batches. A graph holds the shape it was captured for (images, texts, padded text length) and
//! borrows the GPU, the model and the workspace whose buffers it bakes in, so it cannot outlive them and they
//! cannot change under it; inputs for each replay go in through the graph's own upload methods.

use cudarc::driver::sys::{CUgraphInstantiate_flags, CUstreamCaptureMode, CUstreamCaptureStatus};
use cudarc::driver::CudaGraph;
use flashclip::{Element, Gpu, Tensor};
use ndarray::Array2;

use crate::error::{ModelError, Result};
use crate::model::ClipModel;
use crate::text::{StagedTexts, TextBatch};
use crate::workspace::Workspace;

/// A workspace that forwards can be captured on: its buffers stay put for as long as it lives, and its id tells
/// it from every other.
pub(crate) trait GraphWorkspace {
    /// Unique in the process ([`crate::workspace::next_workspace_id`]).
    fn id(&self) -> u64;
    fn max_images(&self) -> usize;
    fn max_texts(&self) -> usize;
    /// What the text inputs hold, if anything was uploaded.
    fn staged_texts(&self) -> Option<StagedTexts>;
}

impl<T: Element> GraphWorkspace for Workspace<T> {
    fn id(&self) -> u64 {
        Workspace::id(self)
    }
    fn max_images(&self) -> usize {
        Workspace::max_images(self)
    }
    fn max_texts(&self) -> usize {
        Workspace::max_texts(self)
    }
    fn staged_texts(&self) -> Option<StagedTexts> {
        self.tokens.staged
    }
}

/// A model with two towers on a [`GraphWorkspace`], as a CUDA graph captures it: the device work of each tower
/// on what was uploaded last. CLIP, Chinese-CLIP and SigLIP implement it.
pub(crate) trait TowerModel {
    type Workspace: GraphWorkspace;
    type Elem: Element;
    /// The longest text (in tokens) the model's workspaces hold.
    fn text_context(&self) -> usize;
    /// Every token id is below this.
    fn vocab_size(&self) -> usize;
    /// (channels, size) of the images the vision tower takes.
    fn image_shape(&self) -> (usize, usize);
    fn upload_image_parts(
        &self,
        gpu: &Gpu,
        ws: &mut Self::Workspace,
        parts: &[&[f32]],
    ) -> Result<usize>;
    fn upload_texts(
        &self,
        gpu: &Gpu,
        ws: &mut Self::Workspace,
        texts: &[Vec<u32>],
        pad_to: Option<usize>,
    ) -> Result<TextBatch>;
    fn run_vision(&self, gpu: &Gpu, ws: &mut Self::Workspace, batch: usize) -> Result<()>;
    fn run_uploaded_texts(&self, gpu: &Gpu, ws: &mut Self::Workspace) -> Result<TextBatch>;
    fn read_image_embeds(
        &self,
        gpu: &Gpu,
        ws: &Self::Workspace,
        batch: usize,
    ) -> Result<Array2<f32>>;
    /// Where the vision tower leaves its embeddings (one row per image from the first on) and the row width.
    fn image_rows<'w>(&self, ws: &'w Self::Workspace) -> (&'w Tensor<Self::Elem>, usize);
    fn read_text_embeds(
        &self,
        gpu: &Gpu,
        ws: &Self::Workspace,
        batch: usize,
    ) -> Result<Array2<f32>>;
}

/// Implements [`TowerModel`] for a model type whose inherent methods of the same names do the work, given its
/// workspace type and how its text context, vocabulary size, image shape and image embedding rows are found.
macro_rules! tower_model {
    (
        $model:ident,
        $workspace:ident,
        context: |$c:ident| $context:expr,
        vocab: |$v:ident| $vocab:expr,
        image: |$i:ident| $image:expr,
        rows: |$rm:ident, $rw:ident| $rows:expr
    ) => {
        impl<T: flashclip::Element> $crate::graph::TowerModel for $model<T> {
            type Workspace = $workspace<T>;
            type Elem = T;
            fn image_rows<'w>(&self, ws: &'w $workspace<T>) -> (&'w flashclip::Tensor<T>, usize) {
                let ($rm, $rw) = (self, ws);
                $rows
            }
            fn text_context(&self) -> usize {
                let $c = self;
                $context
            }
            fn vocab_size(&self) -> usize {
                let $v = self;
                $vocab
            }
            fn image_shape(&self) -> (usize, usize) {
                let $i = self;
                $image
            }
            fn upload_image_parts(
                &self,
                gpu: &flashclip::Gpu,
                ws: &mut $workspace<T>,
                parts: &[&[f32]],
            ) -> $crate::error::Result<usize> {
                $model::upload_image_parts(self, gpu, ws, parts)
            }
            fn upload_texts(
                &self,
                gpu: &flashclip::Gpu,
                ws: &mut $workspace<T>,
                texts: &[Vec<u32>],
                pad_to: Option<usize>,
            ) -> $crate::error::Result<$crate::text::TextBatch> {
                $model::upload_texts(self, gpu, ws, texts, pad_to)
            }
            fn run_vision(
                &self,
                gpu: &flashclip::Gpu,
                ws: &mut $workspace<T>,
                batch: usize,
            ) -> $crate::error::Result<()> {
                $model::run_vision(self, gpu, ws, batch)
            }
            fn run_uploaded_texts(
                &self,
                gpu: &flashclip::Gpu,
                ws: &mut $workspace<T>,
            ) -> $crate::error::Result<$crate::text::TextBatch> {
                $model::run_uploaded_texts(self, gpu, ws)
            }
            fn read_image_embeds(
                &self,
                gpu: &flashclip::Gpu,
                ws: &$workspace<T>,
                batch: usize,
            ) -> $crate::error::Result<ndarray::Array2<f32>> {
                $model::read_image_embeds(self, gpu, ws, batch)
            }
            fn read_text_embeds(
                &self,
                gpu: &flashclip::Gpu,
                ws: &$workspace<T>,
                batch: usize,
            ) -> $crate::error::Result<ndarray::Array2<f32>> {
                $model::read_text_embeds(self, gpu, ws, batch)
            }
        }
    };
}
pub(crate) use tower_model;

tower_model!(
    ClipModel,
    Workspace,
    context: |m| m.config().text.max_len(),
    vocab: |m| m.config().text.vocab_size,
    image: |m| (m.config().vision.num_channels, m.config().vision.image_size),
    rows: |m, ws| (&ws.vision.projected, m.config().projection_dim)
);

/// Whether the GPU's stream is being captured into a CUDA graph.
pub(crate) fn capturing(gpu: &Gpu) -> Result<bool> {
    let status = gpu
        .stream()
        .capture_status()
        .map_err(flashclip::Error::from)?;
    Ok(status != CUstreamCaptureStatus::CU_STREAM_CAPTURE_STATUS_NONE)
}

/// What a [`ForwardGraph`] runs: `images` images through the vision tower and `texts` texts of `text_len` tokens
/// (after padding) through the text tower. 0 images or 0 texts leaves that tower out (`text_len` is then ignored).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct GraphShape {
    pub images: usize,
    pub texts: usize,
    pub text_len: usize,
}

/// One forward of a fixed [`GraphShape`] captured into a CUDA graph (of CLIP, Chinese-CLIP or SigLIP: `M` is the
/// model): [`ForwardGraph::launch`] replays every
/// kernel and GEMM of it in one launch. The graph reads its inputs from the workspace it was captured with, so
/// each replay sees what [`ForwardGraph::upload_images`] / [`ForwardGraph::upload_texts`] copied there last (they
/// refuse inputs of another shape), and writes the embeddings that [`ForwardGraph::read_image_embeds`] /
/// [`ForwardGraph::read_text_embeds`] return.
// The bound names a crate-private trait: a graph comes only from a model's `capture_forward`.
#[allow(private_bounds)]
pub struct ForwardGraph<'a, M: TowerModel> {
    gpu: &'a Gpu,
    model: &'a M,
    ws: &'a mut M::Workspace,
    captured: Captured,
}

/// A captured forward without the borrows: the graph and what it launches on, tied to the workspace it was
/// captured with by that workspace's id. Whoever holds one keeps the model (whose weights the graph reads) and
/// the workspace alive and unreallocated for as long as it may launch; [`ForwardGraph`] does so through its
/// borrows, the GPU backends by owning all three.
pub(crate) struct Captured {
    shape: GraphShape,
    workspace: u64,
    graph: CudaGraph,
    /// The text tower's stream, cuBLAS handle and workspace when the graph runs both towers; declared after
    /// `graph`, which uses them, so it outlives it.
    _lane: Option<Gpu>,
}

// SAFETY: CUDA forbids concurrent calls on one graph, not calls from different threads one after another; a
// Captured is not Sync, so after a move its owner's thread alone reaches the graph, and every call binds the context
// to the calling thread first (cudarc's launch and drop do).
unsafe impl Send for Captured {}

impl Captured {
    /// Enqueues one replay on the stream of the GPU it was captured on (no sync). `ws` must be the workspace it
    /// was captured with: the graph reads and writes that workspace's buffers and no other's.
    pub(crate) fn launch(&self, ws: &impl GraphWorkspace) -> Result<()> {
        if ws.id() != self.workspace {
            return Err(ModelError::Input(
                "a forward graph launched with another workspace than it was captured with".into(),
            ));
        }
        Ok(self.graph.launch().map_err(flashclip::Error::from)?)
    }
}

impl<T: Element> ClipModel<T> {
    /// Captures one forward of `shape` on `ws` into a CUDA graph. Runs the forward once eagerly first (loading the
    /// kernels and planning the GEMMs outside the capture) and synchronizes; that run, and the capture, read the
    /// inputs already in the workspace, or placeholder token ids when the uploaded texts have another shape.
    /// Upload real inputs through the returned graph before launching it.
    ///
    /// CUDA invalidates a capture when any thread synchronizes the device while it runs, and dropping a [`Gpu`]
    /// does (destroying its cuBLAS handle synchronizes the device): in a program that drops GPUs on other threads,
    /// keep them from doing so during the capture, or it fails with a launch error.
    pub fn capture_forward<'a>(
        &'a self,
        gpu: &'a Gpu,
        ws: &'a mut Workspace<T>,
        shape: GraphShape,
    ) -> Result<ForwardGraph<'a, Self>> {
        ForwardGraph::capture(self, gpu, ws, shape)
    }
}

/// [`ClipModel::capture_forward`] without the borrows (see [`Captured`]), for any [`TowerModel`].
pub(crate) fn capture<M: TowerModel>(
    model: &M,
    gpu: &Gpu,
    ws: &mut M::Workspace,
    shape: GraphShape,
) -> Result<Captured> {
    let max_len = model.text_context();
    if shape.images == 0 && shape.texts == 0 {
        return Err(ModelError::Input(
            "a forward graph needs at least one image or one text".into(),
        ));
    }
    if shape.images > ws.max_images() || shape.texts > ws.max_texts() {
        return Err(ModelError::Input(format!(
            "{} images and {} texts exceed the workspace's {} and {}",
            shape.images,
            shape.texts,
            ws.max_images(),
            ws.max_texts()
        )));
    }
    if shape.texts > 0 {
        if shape.text_len == 0 || shape.text_len > max_len {
            return Err(ModelError::Input(format!(
                "text length {} outside 1..={max_len}",
                shape.text_len
            )));
        }
        let want = TextBatch {
            batch: shape.texts,
            len: shape.text_len,
        };
        let vocab = model.vocab_size();
        if !ws
            .staged_texts()
            .is_some_and(|s| s.shape == want && s.id_bound <= vocab)
        {
            let placeholder = vec![vec![0u32; shape.text_len]; shape.texts];
            model.upload_texts(gpu, ws, &placeholder, Some(shape.text_len))?;
        }
    }
    // The towers are independent until the logits: with both, the text tower runs on a stream of its own, forked
    // from and joined back into the main one, so at small batches it fills the SMs the vision tower leaves idle.
    let lane = if shape.images > 0 && shape.texts > 0 {
        Some(gpu.new_lane()?)
    } else {
        None
    };
    enqueue_forward(model, gpu, lane.as_ref(), ws, &shape)?;
    gpu.synchronize()?;
    let stream = gpu.stream();
    // Thread-local mode: a call from this thread that is not allowed during capture (a synchronizing copy, an
    // allocation) fails the capture instead of being recorded; other threads' work is left alone.
    stream
        .begin_capture(CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL)
        .map_err(flashclip::Error::from)?;
    let enqueued = enqueue_forward(model, gpu, lane.as_ref(), ws, &shape);
    // The capture always ends, also after a failed enqueue, so the stream leaves capture mode.
    let ended = stream.end_capture(CUgraphInstantiate_flags(0));
    enqueued?;
    let graph = ended
        .map_err(flashclip::Error::from)?
        .ok_or_else(|| ModelError::Input("the captured forward is empty".into()))?;
    graph.upload().map_err(flashclip::Error::from)?;
    Ok(Captured {
        shape,
        workspace: ws.id(),
        graph,
        _lane: lane,
    })
}

/// The device part of a forward of `shape`: no copy, no sync, so it can be captured. With a `lane`, the text
/// tower runs there, after everything enqueued on `gpu` so far (the uploads), and `gpu` waits for it at the end.
fn enqueue_forward<M: TowerModel>(
    model: &M,
    gpu: &Gpu,
    lane: Option<&Gpu>,
    ws: &mut M::Workspace,
    shape: &GraphShape,
) -> Result<()> {
    let text_gpu = lane.unwrap_or(gpu);
    if let Some(lane) = lane {
        let uploaded = gpu
            .stream()
            .record_event(None)
            .map_err(flashclip::Error::from)?;
        lane.stream()
            .wait(&uploaded)
            .map_err(flashclip::Error::from)?;
    }
    if shape.texts > 0 {
        let ran = model.run_uploaded_texts(text_gpu, ws)?;
        if ran.batch != shape.texts || ran.len != shape.text_len {
            return Err(ModelError::Input(format!(
                "the workspace holds {} texts of {} tokens, the graph is for {} of {}",
                ran.batch, ran.len, shape.texts, shape.text_len
            )));
        }
    }
    if shape.images > 0 {
        model.run_vision(gpu, ws, shape.images)?;
    }
    if let Some(lane) = lane {
        gpu.stream()
            .join(lane.stream())
            .map_err(flashclip::Error::from)?;
    }
    Ok(())
}

#[allow(private_bounds)]
impl<'a, M: TowerModel> ForwardGraph<'a, M> {
    /// Captures one forward of `shape` of `model` on `ws` (see [`ClipModel::capture_forward`]).
    pub(crate) fn capture(
        model: &'a M,
        gpu: &'a Gpu,
        ws: &'a mut M::Workspace,
        shape: GraphShape,
    ) -> Result<Self> {
        let captured = capture(model, gpu, ws, shape)?;
        Ok(ForwardGraph {
            gpu,
            model,
            ws,
            captured,
        })
    }

    /// The shape the graph was captured for.
    pub fn shape(&self) -> GraphShape {
        self.captured.shape
    }

    /// Copies the images of the next replays (`[images, C, S, S]` f32, exactly the captured number of images).
    pub fn upload_images(&mut self, pixels: &[f32]) -> Result<()> {
        let (channels, size) = self.model.image_shape();
        let want = self.captured.shape.images * channels * size * size;
        if self.captured.shape.images == 0 || pixels.len() != want {
            return Err(ModelError::Input(format!(
                "the graph takes {} images ({want} floats), got {} floats",
                self.captured.shape.images,
                pixels.len()
            )));
        }
        self.model
            .upload_image_parts(self.gpu, self.ws, &[pixels])?;
        Ok(())
    }
    /// Copies the token ids of the next replays: exactly the captured number of texts, each at most the captured
    /// length (shorter ones are padded to it).
    pub fn upload_texts(&mut self, texts: &[Vec<u32>]) -> Result<()> {
        if self.captured.shape.texts == 0 || texts.len() != self.captured.shape.texts {
            return Err(ModelError::Input(format!(
                "the graph takes {} texts, got {}",
                self.captured.shape.texts,
                texts.len()
            )));
        }
        self.model
            .upload_texts(self.gpu, self.ws, texts, Some(self.captured.shape.text_len))?;
        Ok(())
    }

    /// Enqueues one replay of the captured forward on the GPU's stream (no sync).
    pub fn launch(&self) -> Result<()> {
        self.captured.launch(self.ws)
    }

    /// The projected image embeddings of the last replay (syncs).
    pub fn read_image_embeds(&self) -> Result<Array2<f32>> {
        if self.captured.shape.images == 0 {
            return Err(ModelError::Input("the graph has no vision tower".into()));
        }
        self.model
            .read_image_embeds(self.gpu, self.ws, self.captured.shape.images)
    }

    /// The projected text embeddings of the last replay (syncs).
    pub fn read_text_embeds(&self) -> Result<Array2<f32>> {
        if self.captured.shape.texts == 0 {
            return Err(ModelError::Input("the graph has no text tower".into()));
        }
        self.model
            .read_text_embeds(self.gpu, self.ws, self.captured.shape.texts)
    }
}
