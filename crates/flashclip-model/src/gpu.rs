//! The CLIP model on the GPU: weights uploaded once in `T` (f16, bf16 or f32), one [`Workspace`] per maximum batch
//! reused by every forward (no device allocation and no host sync inside a forward; a forward's only sync is the
//! final read of the embeddings).
//!
//! A forward is two steps: uploading the inputs into the workspace ([`ClipModel::upload_images`],
//! [`ClipModel::upload_texts`]: the only host-to-device copies) and enqueuing the towers, which read them on the
//! device ([`ClipModel::run_vision`], [`ClipModel::run_uploaded_texts`]). The second step can be captured once into a
//! CUDA graph and replayed ([`ClipModel::capture_forward`] → [`ForwardGraph`]): one launch instead of a few hundred,
//! which is what bounds small batches. A graph holds the shape it was captured for (images, texts, padded text
//! length) and borrows the GPU, the model and the workspace whose buffers it bakes in, so it cannot outlive them and
//! they cannot change under it; inputs for each replay go in through the graph's own upload methods.
//!
//! Each encoder layer is four cuBLAS GEMMs plus flashclip's kernels:
//! `qkv = h·Wqkvᵀ + b` (bias in the cuBLASLt epilogue) → attention reading Q/K/V in place from `qkv` → `a = o·Woutᵀ` →
//! fused `residual += a + b_out; h = LN2(residual)` → `m = act(h·Wfc1ᵀ + b_fc1)` (fused bias+activation) →
//! `f = m·Wfc2ᵀ` → fused `residual += f + b_fc2; h = LN1'(residual)`, where LN1' is the next layer's first norm
//! (or the tower's final norm after the last layer).

use cudarc::driver::sys::{CUgraphInstantiate_flags, CUstreamCaptureMode, CUstreamCaptureStatus};
use cudarc::driver::{CudaEvent, CudaGraph, PinnedHostSlice};
use flashclip::attention::{
    flash_attention, materialized_attention, MaterializedWorkspace, Options,
    Shape as AttentionShape, Version,
};
use flashclip::bias_activation::{bias_activation_inplace, Activation as KernelActivation};
use flashclip::embedding::{gather_rows_device, patchify, text_embed_device, vision_embed};
use flashclip::gemm::{linear, linear_bias};
use flashclip::layernorm::{bias_residual_layernorm, layernorm};
use flashclip::{Element, Gpu, Tensor, View};
use ndarray::Array2;

use crate::config::{Activation, ClipConfig};
use crate::reference::pooling_position;
use crate::weights::{self, ClipWeights};

/// Errors of the GPU model.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// A kernel, cuBLAS or CUDA call failed (or rejected its arguments).
    #[error(transparent)]
    Gpu(#[from] flashclip::Error),
    /// The caller's input does not fit the model or the workspace.
    #[error("invalid input: {0}")]
    Input(String),
    /// Weights and config disagree in a way loading did not catch.
    #[error("weights: {0}")]
    Weights(String),
}

type Result<T> = std::result::Result<T, ModelError>;

/// How attention is computed: a flash kernel version, or the materialized cuBLAS path (the ladder's baseline).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttentionImpl {
    /// Flash attention, the version [`Version::fastest`] picks for each launch's shape.
    Fastest,
    /// Flash attention, this version everywhere.
    Flash(Version),
    Materialized,
}

impl AttentionImpl {
    /// [`AttentionImpl::Fastest`] where a flash version runs `T` at both towers' head dims on this GPU, else the
    /// materialized path.
    pub fn best<T: Element>(gpu: &Gpu, config: &ClipConfig) -> Self {
        let dims = [config.vision.head_dim(), config.text.head_dim()];
        if Version::ALL
            .iter()
            .any(|v| v.runs_on(gpu) && dims.iter().all(|&d| v.supports(T::DTYPE, d)))
        {
            AttentionImpl::Fastest
        } else {
            AttentionImpl::Materialized
        }
    }

    /// Short description for reports.
    pub fn describe(self) -> String {
        match self {
            AttentionImpl::Fastest => "flash (fastest per shape)".into(),
            AttentionImpl::Flash(v) => format!("flash {}", v.name()),
            AttentionImpl::Materialized => "materialized attention".into(),
        }
    }
}

fn kernel_activation(a: Activation) -> KernelActivation {
    match a {
        Activation::QuickGelu => KernelActivation::QuickGelu,
        Activation::Gelu => KernelActivation::GeluErf,
        Activation::GeluTanh => KernelActivation::GeluTanh,
    }
}

fn upload<T: Element>(gpu: &Gpu, data: &[f32], shape: &[usize]) -> Result<Tensor<T>> {
    let host: Vec<T> = data.iter().map(|&x| T::from_f32(x)).collect();
    Ok(gpu.upload(&host, shape)?)
}

fn upload_array<T: Element, D: ndarray::Dimension>(
    gpu: &Gpu,
    a: &ndarray::Array<f32, D>,
) -> Result<Tensor<T>> {
    let shape = a.shape().to_vec();
    match a.as_slice() {
        Some(s) => upload(gpu, s, &shape),
        None => upload(gpu, &a.iter().copied().collect::<Vec<_>>(), &shape),
    }
}

struct GpuLinear<T: Element> {
    weight: Tensor<T>,
    bias: Tensor<T>,
}

impl<T: Element> GpuLinear<T> {
    fn new(gpu: &Gpu, l: &weights::Linear) -> Result<Self> {
        Ok(Self {
            weight: upload_array(gpu, &l.weight)?,
            bias: upload_array(gpu, &l.bias)?,
        })
    }
}

struct GpuLayerNorm<T: Element> {
    weight: Tensor<T>,
    bias: Tensor<T>,
}

impl<T: Element> GpuLayerNorm<T> {
    fn new(gpu: &Gpu, l: &weights::LayerNorm) -> Result<Self> {
        Ok(Self {
            weight: upload_array(gpu, &l.weight)?,
            bias: upload_array(gpu, &l.bias)?,
        })
    }
}

struct GpuLayer<T: Element> {
    layer_norm1: GpuLayerNorm<T>,
    qkv_proj: GpuLinear<T>,
    out_proj: GpuLinear<T>,
    layer_norm2: GpuLayerNorm<T>,
    fc1: GpuLinear<T>,
    fc2: GpuLinear<T>,
}

fn upload_layers<T: Element>(gpu: &Gpu, enc: &weights::Encoder) -> Result<Vec<GpuLayer<T>>> {
    enc.layers
        .iter()
        .map(|l| {
            Ok(GpuLayer {
                layer_norm1: GpuLayerNorm::new(gpu, &l.layer_norm1)?,
                qkv_proj: GpuLinear::new(gpu, &l.self_attn.qkv_proj)?,
                out_proj: GpuLinear::new(gpu, &l.self_attn.out_proj)?,
                layer_norm2: GpuLayerNorm::new(gpu, &l.layer_norm2)?,
                fc1: GpuLinear::new(gpu, &l.mlp.fc1)?,
                fc2: GpuLinear::new(gpu, &l.mlp.fc2)?,
            })
        })
        .collect()
}

/// Sizes of one tower's transformer.
#[derive(Debug, Clone, Copy)]
struct TowerShape {
    dim: usize,
    heads: usize,
    mlp: usize,
    eps: f32,
    act: KernelActivation,
    causal: bool,
}

/// Scratch of one tower, for up to `max_tokens` tokens (batch × sequence).
struct TowerWorkspace<T: Element> {
    residual: Tensor<T>,
    normed: Tensor<T>,
    tmp: Tensor<T>,
    qkv: Tensor<T>,
    mlp: Tensor<T>,
    pooled: Tensor<T>,
    projected: Tensor<T>,
    materialized: Option<MaterializedWorkspace<T>>,
    max_tokens: usize,
    max_batch: usize,
}

impl<T: Element> TowerWorkspace<T> {
    #[allow(clippy::too_many_arguments)]
    fn new(
        gpu: &Gpu,
        s: &TowerShape,
        max_batch: usize,
        max_seq: usize,
        proj: usize,
        attention: AttentionImpl,
    ) -> Result<Self> {
        let t = max_batch * max_seq;
        Ok(Self {
            residual: gpu.zeros(&[t, s.dim])?,
            normed: gpu.zeros(&[t, s.dim])?,
            tmp: gpu.zeros(&[t, s.dim])?,
            qkv: gpu.zeros(&[t, 3 * s.dim])?,
            mlp: gpu.zeros(&[t, s.mlp])?,
            pooled: gpu.zeros(&[max_batch, s.dim])?,
            projected: gpu.zeros(&[max_batch, proj])?,
            materialized: match attention {
                AttentionImpl::Materialized => Some(MaterializedWorkspace::new(
                    gpu, max_batch, s.heads, max_seq, max_seq,
                )?),
                AttentionImpl::Flash(_) | AttentionImpl::Fastest => None,
            },
            max_tokens: t,
            max_batch,
        })
    }
}

/// The shape of a text batch as the text tower runs it: `batch` texts, each padded to `len` tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TextBatch {
    pub batch: usize,
    pub len: usize,
}

/// Texts whose token ids and pooling rows have been copied into the workspace.
#[derive(Debug, Clone, Copy)]
struct StagedTexts {
    shape: TextBatch,
    /// Every staged id is below this (the vocabulary size the ids were checked against).
    id_bound: usize,
}

/// Pinned host memory the token ids and pooling rows are written to before their asynchronous copy to the device,
/// and an event recorded after that copy: the host waits on it before writing the buffer again.
struct IndexStaging {
    host: PinnedHostSlice<i32>,
    copied: CudaEvent,
}

impl Drop for IndexStaging {
    fn drop(&mut self) {
        // The pinned buffer is freed right after this; a copy still reading it must finish first. An error here
        // cannot be reported from drop (the context records it).
        let _ = self.copied.synchronize();
    }
}

impl IndexStaging {
    fn new(gpu: &Gpu, len: usize) -> Result<Self> {
        let ctx = gpu.context();
        // SAFETY: the buffer starts uninitialized and is zeroed below before anything reads it.
        let mut host = unsafe { ctx.alloc_pinned::<i32>(len) }.map_err(flashclip::Error::from)?;
        let ptr = host.as_mut_ptr().map_err(flashclip::Error::from)?;
        // SAFETY: `ptr` addresses the `len` i32 just allocated, owned by `host`, and nothing else uses them yet.
        unsafe { std::ptr::write_bytes(ptr, 0, len) };
        Ok(Self {
            host,
            copied: ctx.new_event(None).map_err(flashclip::Error::from)?,
        })
    }
}

/// Device scratch for forwards of up to `max_images` images and `max_texts` texts of up to the model's context
/// length. Allocate once, reuse for every forward.
pub struct Workspace<T: Element> {
    vision: TowerWorkspace<T>,
    text: TowerWorkspace<T>,
    pixels: cudarc::driver::CudaSlice<f32>,
    patches: Tensor<T>,
    patch_out: Tensor<T>,
    ids: cudarc::driver::CudaSlice<i32>,
    rows: cudarc::driver::CudaSlice<i32>,
    staging: IndexStaging,
    texts: Option<StagedTexts>,
}

/// CLIP's two towers on the GPU in element type `T`.
pub struct ClipModel<T: Element> {
    config: ClipConfig,
    attention: AttentionImpl,
    patch_weight: Tensor<T>,
    class_embedding: Tensor<T>,
    vision_position: Tensor<T>,
    pre_layrnorm: GpuLayerNorm<T>,
    vision_layers: Vec<GpuLayer<T>>,
    post_layernorm: GpuLayerNorm<T>,
    visual_projection: Tensor<T>,
    token_embedding: Tensor<T>,
    text_position: Tensor<T>,
    text_layers: Vec<GpuLayer<T>>,
    final_layer_norm: GpuLayerNorm<T>,
    text_projection: Tensor<T>,
    logit_scale: f32,
}

impl<T: Element> ClipModel<T> {
    /// Uploads the weights (converted to `T` on the host, once) and picks the attention path.
    pub fn new(
        gpu: &Gpu,
        config: &ClipConfig,
        w: &ClipWeights,
        attention: AttentionImpl,
    ) -> Result<Self> {
        let v = &config.vision;
        if let AttentionImpl::Flash(ver) = attention {
            if !ver.runs_on(gpu) {
                let (major, minor) = gpu.compute_capability();
                return Err(ModelError::Input(format!(
                    "attention {} does not run on this GPU (compute capability {major}.{minor})",
                    ver.name()
                )));
            }
        }
        for (what, head_dim) in [("vision", v.head_dim()), ("text", config.text.head_dim())] {
            // Fastest falls back to v1 where nothing faster takes the head dim: v1 must.
            let checked = match attention {
                AttentionImpl::Flash(ver) => Some(ver),
                AttentionImpl::Fastest => Some(Version::V1),
                AttentionImpl::Materialized => None,
            };
            if let Some(ver) = checked {
                if !ver.supports(T::DTYPE, head_dim) {
                    return Err(ModelError::Input(format!(
                        "attention {} does not support {} with the {what} head dim {head_dim}",
                        ver.name(),
                        T::DTYPE
                    )));
                }
            }
        }
        let vm = &w.vision_model;
        let tm = &w.text_model;
        let patch = vm
            .embeddings
            .patch_embedding
            .as_slice()
            .map(<[f32]>::to_vec)
            .unwrap_or_else(|| vm.embeddings.patch_embedding.iter().copied().collect());
        Ok(Self {
            config: config.clone(),
            attention,
            patch_weight: upload(gpu, &patch, &[v.hidden_size, v.patch_dim()])?,
            class_embedding: upload_array(gpu, &vm.embeddings.class_embedding)?,
            vision_position: upload_array(gpu, &vm.embeddings.position_embedding)?,
            pre_layrnorm: GpuLayerNorm::new(gpu, &vm.pre_layrnorm)?,
            vision_layers: upload_layers(gpu, &vm.encoder)?,
            post_layernorm: GpuLayerNorm::new(gpu, &vm.post_layernorm)?,
            visual_projection: upload_array(gpu, &w.visual_projection)?,
            token_embedding: upload_array(gpu, &tm.embeddings.token_embedding)?,
            text_position: upload_array(gpu, &tm.embeddings.position_embedding)?,
            text_layers: upload_layers(gpu, &tm.encoder)?,
            final_layer_norm: GpuLayerNorm::new(gpu, &tm.final_layer_norm)?,
            text_projection: upload_array(gpu, &w.text_projection)?,
            logit_scale: w.logit_scale,
        })
    }

    /// The config the model was built from.
    pub fn config(&self) -> &ClipConfig {
        &self.config
    }

    /// The attention path in use.
    pub fn attention(&self) -> AttentionImpl {
        self.attention
    }

    /// `exp(logit_scale)`, the temperature of image-text logits.
    pub fn logit_scale(&self) -> f32 {
        self.logit_scale.exp()
    }

    fn vision_shape(&self) -> TowerShape {
        let v = &self.config.vision;
        TowerShape {
            dim: v.hidden_size,
            heads: v.num_attention_heads,
            mlp: v.intermediate_size,
            eps: v.layer_norm_eps as f32,
            act: kernel_activation(v.hidden_act),
            causal: false,
        }
    }

    fn text_shape(&self) -> TowerShape {
        let t = &self.config.text;
        TowerShape {
            dim: t.hidden_size,
            heads: t.num_attention_heads,
            mlp: t.intermediate_size,
            eps: t.layer_norm_eps as f32,
            act: kernel_activation(t.hidden_act),
            causal: true,
        }
    }

    /// Scratch for up to `max_images` images and `max_texts` texts per forward.
    pub fn workspace(
        &self,
        gpu: &Gpu,
        max_images: usize,
        max_texts: usize,
    ) -> Result<Workspace<T>> {
        let v = &self.config.vision;
        let (max_images, max_texts) = (max_images.max(1), max_texts.max(1));
        let patches = max_images * v.num_patches();
        Ok(Workspace {
            vision: TowerWorkspace::new(
                gpu,
                &self.vision_shape(),
                max_images,
                v.seq_len(),
                self.config.projection_dim,
                self.attention,
            )?,
            text: TowerWorkspace::new(
                gpu,
                &self.text_shape(),
                max_texts,
                self.config.text.max_len(),
                self.config.projection_dim,
                self.attention,
            )?,
            pixels: gpu
                .zeros::<f32>(&[max_images * v.num_channels * v.image_size * v.image_size])?
                .data()
                .clone(),
            patches: gpu.zeros(&[patches, v.patch_dim()])?,
            patch_out: gpu.zeros(&[patches, v.hidden_size])?,
            ids: gpu.upload_slice(&vec![0i32; max_texts * self.config.text.max_len()])?,
            rows: gpu.upload_slice(&vec![0i32; max_texts.max(max_images)])?,
            staging: IndexStaging::new(gpu, max_texts * (self.config.text.max_len() + 1))?,
            texts: None,
        })
    }

    /// Copies preprocessed images (`[batch, channels, size, size]` f32, CLIP-normalized) into the workspace.
    pub fn upload_images(&self, gpu: &Gpu, ws: &mut Workspace<T>, pixels: &[f32]) -> Result<usize> {
        let v = &self.config.vision;
        let per = v.num_channels * v.image_size * v.image_size;
        if pixels.is_empty() || pixels.len() % per != 0 {
            return Err(ModelError::Input(format!(
                "pixels: {} floats is not a positive multiple of {per} (one {}x{}x{} image)",
                pixels.len(),
                v.num_channels,
                v.image_size,
                v.image_size
            )));
        }
        let batch = pixels.len() / per;
        if batch > ws.vision.max_batch {
            return Err(ModelError::Input(format!(
                "{batch} images exceed the workspace's {}",
                ws.vision.max_batch
            )));
        }
        let mut head = ws.pixels.slice_mut(..pixels.len());
        gpu.stream()
            .memcpy_htod(pixels, &mut head)
            .map_err(flashclip::Error::from)?;
        Ok(batch)
    }

    /// Enqueues the vision tower on the images in the workspace; the projected (unnormalized) embeddings land in
    /// the workspace (read them with [`ClipModel::read_image_embeds`]). `hidden`, when given, receives the residual
    /// stream after the pre-norm and after each layer (this syncs; for parity checks only).
    pub fn run_vision(
        &self,
        gpu: &Gpu,
        ws: &mut Workspace<T>,
        batch: usize,
        hidden: Option<&mut Vec<Vec<f32>>>,
    ) -> Result<()> {
        let v = &self.config.vision;
        let (n, d) = (v.seq_len(), v.hidden_size);
        let tokens = batch * n;
        let patches = batch * v.num_patches();
        let tw = &mut ws.vision;
        let mut p = ws.patches.view_mut().narrow(0, 0, patches)?;
        patchify(
            gpu,
            &ws.pixels,
            batch,
            v.num_channels,
            v.image_size,
            v.patch_size,
            &mut p,
        )?;
        let patches_view = ws.patches.view().narrow(0, 0, patches)?;
        linear(
            gpu,
            &patches_view,
            &self.patch_weight.view(),
            &mut ws.patch_out.view_mut().narrow(0, 0, patches)?,
            0.0,
        )?;
        let mut emb = tw
            .tmp
            .view_mut()
            .narrow(0, 0, tokens)?
            .reshape(&[batch, n, d])?;
        vision_embed(
            gpu,
            &ws.patch_out.view().narrow(0, 0, patches)?,
            &self.class_embedding.view(),
            &self.vision_position.view(),
            &mut emb,
        )?;
        let pre = &self.pre_layrnorm;
        layernorm(
            gpu,
            &tw.tmp.view().narrow(0, 0, tokens)?,
            &pre.weight.view(),
            &pre.bias.view(),
            self.vision_shape().eps,
            &mut tw.residual.view_mut().narrow(0, 0, tokens)?,
        )?;
        encoder(
            gpu,
            &self.vision_layers,
            &self.post_layernorm,
            tw,
            &self.vision_shape(),
            self.attention,
            batch,
            n,
            hidden,
        )?;
        // Class token of each image: rows 0, n, 2n, ... of the normed stream, read in place with a row stride.
        let cls = View::new(tw.normed.data(), 0, &[batch, d], &[n * d, 1])?;
        linear(
            gpu,
            &cls,
            &self.visual_projection.view(),
            &mut tw.projected.view_mut().narrow(0, 0, batch)?,
            0.0,
        )?;
        Ok(())
    }

    /// Enqueues the text tower on token ids (one Vec per text, each with start and end tokens, at most the context
    /// length). The batch is padded to its longest text, which is exact under the causal mask.
    /// [`ClipModel::upload_texts`] followed by [`ClipModel::run_uploaded_texts`].
    pub fn run_text(
        &self,
        gpu: &Gpu,
        ws: &mut Workspace<T>,
        texts: &[Vec<u32>],
        hidden: Option<&mut Vec<Vec<f32>>>,
    ) -> Result<()> {
        self.upload_texts(gpu, ws, texts, None)?;
        self.run_uploaded_texts(gpu, ws, hidden)?;
        Ok(())
    }

    /// Checks token ids (one Vec per text, each with start and end tokens, at most the context length) and copies
    /// them, padded to `pad_to` tokens (default: the longest text), with each text's pooling row, into the
    /// workspace, from pinned memory without synchronizing the stream. Padding is exact under the causal mask.
    pub fn upload_texts(
        &self,
        gpu: &Gpu,
        ws: &mut Workspace<T>,
        texts: &[Vec<u32>],
        pad_to: Option<usize>,
    ) -> Result<TextBatch> {
        let t = &self.config.text;
        let batch = texts.len();
        if batch == 0 || batch > ws.text.max_batch {
            return Err(ModelError::Input(format!(
                "{batch} texts: need 1 to {}",
                ws.text.max_batch
            )));
        }
        let longest = texts.iter().map(Vec::len).max().unwrap_or(0);
        if longest == 0 || longest > t.max_len() {
            return Err(ModelError::Input(format!(
                "texts must have 1 to {} tokens, the longest has {longest}",
                t.max_len()
            )));
        }
        let len = match pad_to {
            None => longest,
            Some(l) if (longest..=t.max_len()).contains(&l) => l,
            Some(l) => {
                return Err(ModelError::Input(format!(
                    "cannot pad texts to {l} tokens: the longest has {longest}, the context length is {}",
                    t.max_len()
                )))
            }
        };
        for (b, text) in texts.iter().enumerate() {
            if text.is_empty() {
                return Err(ModelError::Input(format!("text {b} has no tokens")));
            }
            if let Some(&id) = text.iter().find(|&&id| id as usize >= t.vocab_size) {
                return Err(ModelError::Input(format!(
                    "text {b}: token id {id} outside the vocabulary of {}",
                    t.vocab_size
                )));
            }
        }
        let (n_ids, shape) = (batch * len, TextBatch { batch, len });
        if n_ids > ws.ids.len() || batch > ws.rows.len() || n_ids + batch > ws.staging.host.len() {
            return Err(ModelError::Input(format!(
                "{batch} texts of {len} tokens exceed the workspace"
            )));
        }
        let pad = t.pad_token_id.min(t.vocab_size.saturating_sub(1) as u32) as i32;
        // The previous copy out of the staging buffer must be done before it is overwritten.
        ws.staging
            .copied
            .synchronize()
            .map_err(flashclip::Error::from)?;
        let host = ws
            .staging
            .host
            .as_mut_slice()
            .map_err(flashclip::Error::from)?;
        let (ids, rest) = host.split_at_mut(n_ids);
        let rows = &mut rest[..batch];
        for (b, text) in texts.iter().enumerate() {
            let row = &mut ids[b * len..(b + 1) * len];
            for (dst, &id) in row.iter_mut().zip(text) {
                *dst = id as i32;
            }
            row[text.len()..].fill(pad);
            let pos = pooling_position(text, t.eos_token_id);
            if pos >= text.len() {
                return Err(ModelError::Input(format!(
                    "text {b}: pooling position {pos} outside its {} tokens",
                    text.len()
                )));
            }
            rows[b] = (b * len + pos) as i32;
        }
        // Until both copies are enqueued the device buffers hold a mix; a forward must not run on them.
        ws.texts = None;
        let stream = gpu.stream();
        let copied = stream
            .memcpy_htod(&ids[..], &mut ws.ids.slice_mut(..n_ids))
            .and_then(|_| stream.memcpy_htod(&rows[..], &mut ws.rows.slice_mut(..batch)));
        // Recorded even after a failed copy, so the next upload waits for whatever was enqueued.
        let recorded = ws.staging.copied.record(stream);
        copied.and(recorded).map_err(flashclip::Error::from)?;
        ws.texts = Some(StagedTexts {
            shape,
            id_bound: t.vocab_size,
        });
        Ok(shape)
    }

    /// Enqueues the text tower on the texts of the last [`ClipModel::upload_texts`] and returns their shape. Nothing
    /// is copied or synchronized unless `hidden` is given: it then receives the residual stream after the token
    /// embedding and after each layer (this syncs; for parity checks only, and refused during graph capture).
    pub fn run_uploaded_texts(
        &self,
        gpu: &Gpu,
        ws: &mut Workspace<T>,
        hidden: Option<&mut Vec<Vec<f32>>>,
    ) -> Result<TextBatch> {
        let staged = ws
            .texts
            .ok_or_else(|| ModelError::Input("no texts uploaded to the workspace".into()))?;
        let vocab = self.token_embedding.shape().first().copied().unwrap_or(0);
        if staged.id_bound > vocab {
            return Err(ModelError::Input(format!(
                "the uploaded token ids were checked against a vocabulary of {}, this model's has {vocab}",
                staged.id_bound
            )));
        }
        let TextBatch { batch, len } = staged.shape;
        let d = self.config.text.hidden_size;
        let tokens = batch * len;
        let tw = &mut ws.text;
        let mut x = tw
            .residual
            .view_mut()
            .narrow(0, 0, tokens)?
            .reshape(&[batch, len, d])?;
        // SAFETY: `ws.texts` is only set by upload_texts, after it enqueued the copy of batch*len ids into `ws.ids`,
        // each checked to be below `id_bound`, which is at most this model's vocabulary (checked above): the copy is
        // ordered before this launch on the stream, and nothing else writes `ws.ids`.
        unsafe {
            text_embed_device(
                gpu,
                &ws.ids,
                &self.token_embedding.view(),
                &self.text_position.view(),
                &mut x,
            )?;
        }
        encoder(
            gpu,
            &self.text_layers,
            &self.final_layer_norm,
            tw,
            &self.text_shape(),
            self.attention,
            batch,
            len,
            hidden,
        )?;
        let normed = tw.normed.view().narrow(0, 0, tokens)?;
        // SAFETY: as for the ids: upload_texts copied `batch` rows into `ws.rows`, row b being b*len + p with
        // p < len (checked there), so each is below batch*len, the row count of `normed`.
        unsafe {
            gather_rows_device(
                gpu,
                &normed,
                &ws.rows,
                &mut tw.pooled.view_mut().narrow(0, 0, batch)?,
            )?;
        }
        linear(
            gpu,
            &tw.pooled.view().narrow(0, 0, batch)?,
            &self.text_projection.view(),
            &mut tw.projected.view_mut().narrow(0, 0, batch)?,
            0.0,
        )?;
        Ok(staged.shape)
    }

    fn read(gpu: &Gpu, t: &Tensor<T>, batch: usize, dim: usize) -> Result<Array2<f32>> {
        let host = gpu.download(t.data())?;
        let v: Vec<f32> = host[..batch * dim].iter().map(|x| x.to_f32()).collect();
        Array2::from_shape_vec((batch, dim), v).map_err(|e| ModelError::Weights(e.to_string()))
    }

    /// The projected image embeddings of the last [`ClipModel::run_vision`] (syncs).
    pub fn read_image_embeds(
        &self,
        gpu: &Gpu,
        ws: &Workspace<T>,
        batch: usize,
    ) -> Result<Array2<f32>> {
        Self::read(gpu, &ws.vision.projected, batch, self.config.projection_dim)
    }

    /// The projected text embeddings of the last [`ClipModel::run_text`] (syncs).
    pub fn read_text_embeds(
        &self,
        gpu: &Gpu,
        ws: &Workspace<T>,
        batch: usize,
    ) -> Result<Array2<f32>> {
        Self::read(gpu, &ws.text.projected, batch, self.config.projection_dim)
    }

    /// Projected embeddings of preprocessed images (`[batch, C, S, S]` f32).
    pub fn encode_images(
        &self,
        gpu: &Gpu,
        ws: &mut Workspace<T>,
        pixels: &[f32],
    ) -> Result<Array2<f32>> {
        let batch = self.upload_images(gpu, ws, pixels)?;
        self.run_vision(gpu, ws, batch, None)?;
        self.read_image_embeds(gpu, ws, batch)
    }

    /// Projected embeddings of tokenized texts.
    pub fn encode_texts(
        &self,
        gpu: &Gpu,
        ws: &mut Workspace<T>,
        texts: &[Vec<u32>],
    ) -> Result<Array2<f32>> {
        self.run_text(gpu, ws, texts, None)?;
        self.read_text_embeds(gpu, ws, texts.len())
    }
}

/// Whether the GPU's stream is being captured into a CUDA graph.
fn capturing(gpu: &Gpu) -> Result<bool> {
    let status = gpu
        .stream()
        .capture_status()
        .map_err(flashclip::Error::from)?;
    Ok(status != CUstreamCaptureStatus::CU_STREAM_CAPTURE_STATUS_NONE)
}

/// What a [`ForwardGraph`] runs: `images` images through the vision tower and `texts` texts of `text_len` tokens
/// (after padding) through the text tower. 0 images or 0 texts leaves that tower out (`text_len` is then ignored).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GraphShape {
    pub images: usize,
    pub texts: usize,
    pub text_len: usize,
}

/// One CLIP forward of a fixed [`GraphShape`] captured into a CUDA graph: [`ForwardGraph::launch`] replays every
/// kernel and GEMM of it in one launch. The graph reads its inputs from the workspace it was captured with, so
/// each replay sees what [`ForwardGraph::upload_images`] / [`ForwardGraph::upload_texts`] copied there last (they
/// refuse inputs of another shape), and writes the embeddings that [`ForwardGraph::read_image_embeds`] /
/// [`ForwardGraph::read_text_embeds`] return. It borrows the GPU, the model and the workspace, whose device
/// addresses it holds, for as long as it lives.
pub struct ForwardGraph<'a, T: Element> {
    gpu: &'a Gpu,
    model: &'a ClipModel<T>,
    ws: &'a mut Workspace<T>,
    shape: GraphShape,
    graph: CudaGraph,
}

impl<T: Element> ClipModel<T> {
    /// Captures one forward of `shape` on `ws` into a CUDA graph. Runs the forward once eagerly first (loading the
    /// kernels and planning the GEMMs outside the capture) and synchronizes; that run, and the capture, read the
    /// inputs already in the workspace, or placeholder token ids when the uploaded texts have another shape. Upload
    /// real inputs through the returned graph before launching it.
    ///
    /// CUDA invalidates a capture when any thread synchronizes the device while it runs, and dropping a [`Gpu`]
    /// does (destroying its cuBLAS handle synchronizes the device): in a program that drops GPUs on other threads,
    /// keep them from doing so during the capture, or it fails with a launch error.
    pub fn capture_forward<'a>(
        &'a self,
        gpu: &'a Gpu,
        ws: &'a mut Workspace<T>,
        shape: GraphShape,
    ) -> Result<ForwardGraph<'a, T>> {
        let max_len = self.config.text.max_len();
        if shape.images == 0 && shape.texts == 0 {
            return Err(ModelError::Input(
                "a forward graph needs at least one image or one text".into(),
            ));
        }
        if shape.images > ws.vision.max_batch || shape.texts > ws.text.max_batch {
            return Err(ModelError::Input(format!(
                "{} images and {} texts exceed the workspace's {} and {}",
                shape.images, shape.texts, ws.vision.max_batch, ws.text.max_batch
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
            let vocab = self.token_embedding.shape().first().copied().unwrap_or(0);
            let usable = ws
                .texts
                .is_some_and(|s| s.shape == want && s.id_bound <= vocab);
            if !usable {
                let placeholder = vec![vec![0u32; shape.text_len]; shape.texts];
                self.upload_texts(gpu, ws, &placeholder, Some(shape.text_len))?;
            }
        }
        self.enqueue_forward(gpu, ws, &shape)?;
        gpu.synchronize()?;
        let stream = gpu.stream();
        // Thread-local mode: a call from this thread that is not allowed during capture (a synchronizing copy, an
        // allocation) fails the capture instead of being recorded; other threads' work is left alone.
        stream
            .begin_capture(CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL)
            .map_err(flashclip::Error::from)?;
        let enqueued = self.enqueue_forward(gpu, ws, &shape);
        // The capture always ends, also after a failed enqueue, so the stream leaves capture mode.
        let ended = stream.end_capture(CUgraphInstantiate_flags(0));
        enqueued?;
        let graph = ended
            .map_err(flashclip::Error::from)?
            .ok_or_else(|| ModelError::Input("the captured forward is empty".into()))?;
        graph.upload().map_err(flashclip::Error::from)?;
        Ok(ForwardGraph {
            gpu,
            model: self,
            ws,
            shape,
            graph,
        })
    }

    /// The device part of a forward of `shape`: no copy, no sync, so it can be captured.
    fn enqueue_forward(&self, gpu: &Gpu, ws: &mut Workspace<T>, shape: &GraphShape) -> Result<()> {
        if shape.images > 0 {
            self.run_vision(gpu, ws, shape.images, None)?;
        }
        if shape.texts > 0 {
            let ran = self.run_uploaded_texts(gpu, ws, None)?;
            if ran.batch != shape.texts || ran.len != shape.text_len {
                return Err(ModelError::Input(format!(
                    "the workspace holds {} texts of {} tokens, the graph is for {} of {}",
                    ran.batch, ran.len, shape.texts, shape.text_len
                )));
            }
        }
        Ok(())
    }
}

impl<T: Element> ForwardGraph<'_, T> {
    /// The shape the graph was captured for.
    pub fn shape(&self) -> GraphShape {
        self.shape
    }

    /// Copies the images of the next replays (`[images, C, S, S]` f32, exactly the captured number of images).
    pub fn upload_images(&mut self, pixels: &[f32]) -> Result<()> {
        let v = &self.model.config.vision;
        let want = self.shape.images * v.num_channels * v.image_size * v.image_size;
        if self.shape.images == 0 || pixels.len() != want {
            return Err(ModelError::Input(format!(
                "the graph takes {} images ({want} floats), got {} floats",
                self.shape.images,
                pixels.len()
            )));
        }
        self.model.upload_images(self.gpu, self.ws, pixels)?;
        Ok(())
    }

    /// Copies the token ids of the next replays: exactly the captured number of texts, each at most the captured
    /// length (shorter ones are padded to it).
    pub fn upload_texts(&mut self, texts: &[Vec<u32>]) -> Result<()> {
        if self.shape.texts == 0 || texts.len() != self.shape.texts {
            return Err(ModelError::Input(format!(
                "the graph takes {} texts, got {}",
                self.shape.texts,
                texts.len()
            )));
        }
        self.model
            .upload_texts(self.gpu, self.ws, texts, Some(self.shape.text_len))?;
        Ok(())
    }

    /// Enqueues one replay of the captured forward on the GPU's stream (no sync).
    pub fn launch(&self) -> Result<()> {
        Ok(self.graph.launch().map_err(flashclip::Error::from)?)
    }

    /// The projected image embeddings of the last replay (syncs).
    pub fn read_image_embeds(&self) -> Result<Array2<f32>> {
        if self.shape.images == 0 {
            return Err(ModelError::Input("the graph has no vision tower".into()));
        }
        self.model
            .read_image_embeds(self.gpu, self.ws, self.shape.images)
    }

    /// The projected text embeddings of the last replay (syncs).
    pub fn read_text_embeds(&self) -> Result<Array2<f32>> {
        if self.shape.texts == 0 {
            return Err(ModelError::Input("the graph has no text tower".into()));
        }
        self.model
            .read_text_embeds(self.gpu, self.ws, self.shape.texts)
    }
}

/// The first `tokens` rows of a workspace tensor.
fn first_rows<T: Element>(tokens: usize, t: &Tensor<T>) -> flashclip::Result<View<'_, T>> {
    t.view().narrow(0, 0, tokens)
}

/// Runs the layers over `tw.residual` (`batch * seq` tokens); on return `tw.normed` holds `final_ln(residual)`.
#[allow(clippy::too_many_arguments)]
fn encoder<T: Element>(
    gpu: &Gpu,
    layers: &[GpuLayer<T>],
    final_ln: &GpuLayerNorm<T>,
    tw: &mut TowerWorkspace<T>,
    s: &TowerShape,
    attention: AttentionImpl,
    batch: usize,
    seq: usize,
    mut hidden: Option<&mut Vec<Vec<f32>>>,
) -> Result<()> {
    if hidden.is_some() && capturing(gpu)? {
        return Err(ModelError::Input(
            "hidden-state snapshots copy to the host and cannot be captured into a CUDA graph"
                .into(),
        ));
    }
    let tokens = batch * seq;
    if tokens > tw.max_tokens {
        return Err(ModelError::Input(format!(
            "{tokens} tokens exceed the workspace's {}",
            tw.max_tokens
        )));
    }
    let (d, hd) = (s.dim, s.dim / s.heads);
    let snapshot =
        |tw: &TowerWorkspace<T>, hidden: &mut Option<&mut Vec<Vec<f32>>>| -> Result<()> {
            if let Some(h) = hidden.as_deref_mut() {
                let all = gpu.download(tw.residual.data())?;
                h.push(all[..tokens * d].iter().map(|x| x.to_f32()).collect());
            }
            Ok(())
        };
    snapshot(tw, &mut hidden)?;
    let Some(first) = layers.first() else {
        layernorm(
            gpu,
            &first_rows(tokens, &tw.residual)?,
            &final_ln.weight.view(),
            &final_ln.bias.view(),
            s.eps,
            &mut tw.normed.view_mut().narrow(0, 0, tokens)?,
        )?;
        return Ok(());
    };
    layernorm(
        gpu,
        &first_rows(tokens, &tw.residual)?,
        &first.layer_norm1.weight.view(),
        &first.layer_norm1.bias.view(),
        s.eps,
        &mut tw.normed.view_mut().narrow(0, 0, tokens)?,
    )?;
    let opts = Options {
        softmax_scale: None,
        causal: s.causal,
    };
    for (i, layer) in layers.iter().enumerate() {
        let mut qkv = tw.qkv.view_mut().narrow(0, 0, tokens)?;
        linear_bias(
            gpu,
            &first_rows(tokens, &tw.normed)?,
            &layer.qkv_proj.weight.view(),
            &layer.qkv_proj.bias.view(),
            &mut qkv,
        )?;
        {
            let packed = View::new(
                tw.qkv.data(),
                0,
                &[batch, seq, 3, s.heads, hd],
                &flashclip::tensor::contiguous_strides(&[batch, seq, 3, s.heads, hd]),
            )?;
            let (q, k, v) = (
                packed.select(2, 0)?,
                packed.select(2, 1)?,
                packed.select(2, 2)?,
            );
            let mut o = tw
                .tmp
                .view_mut()
                .narrow(0, 0, tokens)?
                .reshape(&[batch, seq, s.heads, hd])?;
            match attention {
                AttentionImpl::Flash(ver) => {
                    flash_attention(gpu, ver, &q, &k, &v, None, &opts, &mut o, None)?
                }
                AttentionImpl::Fastest => {
                    let shape = AttentionShape {
                        batch,
                        seq_q: seq,
                        seq_k: seq,
                        heads_q: s.heads,
                        heads_kv: s.heads,
                        head_dim: hd,
                    };
                    let ver = Version::fastest(gpu, T::DTYPE, &shape, opts.causal);
                    flash_attention(gpu, ver, &q, &k, &v, None, &opts, &mut o, None)?
                }
                AttentionImpl::Materialized => {
                    let ws = tw.materialized.as_mut().ok_or_else(|| {
                        ModelError::Input(
                            "workspace lacks the materialized-attention scratch".into(),
                        )
                    })?;
                    materialized_attention(gpu, &q, &k, &v, None, &opts, &mut o, None, ws)?
                }
            }
        }
        linear(
            gpu,
            &first_rows(tokens, &tw.tmp)?,
            &layer.out_proj.weight.view(),
            &mut tw.normed.view_mut().narrow(0, 0, tokens)?,
            0.0,
        )?;
        bias_residual_layernorm(
            gpu,
            &first_rows(tokens, &tw.normed)?,
            Some(&layer.out_proj.bias.view()),
            &mut tw.residual.view_mut().narrow(0, 0, tokens)?,
            &layer.layer_norm2.weight.view(),
            &layer.layer_norm2.bias.view(),
            s.eps,
            &mut tw.tmp.view_mut().narrow(0, 0, tokens)?,
        )?;
        let mut m = tw.mlp.view_mut().narrow(0, 0, tokens)?;
        linear(
            gpu,
            &first_rows(tokens, &tw.tmp)?,
            &layer.fc1.weight.view(),
            &mut m,
            0.0,
        )?;
        bias_activation_inplace(gpu, &mut m, Some(&layer.fc1.bias.view()), s.act)?;
        linear(
            gpu,
            &first_rows(tokens, &tw.mlp)?,
            &layer.fc2.weight.view(),
            &mut tw.normed.view_mut().narrow(0, 0, tokens)?,
            0.0,
        )?;
        let next = layers.get(i + 1).map_or(final_ln, |l| &l.layer_norm1);
        bias_residual_layernorm(
            gpu,
            &first_rows(tokens, &tw.normed)?,
            Some(&layer.fc2.bias.view()),
            &mut tw.residual.view_mut().narrow(0, 0, tokens)?,
            &next.weight.view(),
            &next.bias.view(),
            s.eps,
            &mut tw.tmp.view_mut().narrow(0, 0, tokens)?,
        )?;
        std::mem::swap(&mut tw.normed, &mut tw.tmp);
        snapshot(tw, &mut hidden)?;
    }
    Ok(())
}
