//! The CLIP model on the GPU: weights uploaded once in `T` (f16, bf16 or f32), one [`Workspace`] per maximum batch
//! reused by every forward (no device allocation and no host sync inside a forward; a forward's only sync is the
//! final read of the embeddings).
//!
//! Each encoder layer is four cuBLAS GEMMs plus flashclip's kernels:
//! `qkv = h·Wqkvᵀ + b` (bias in the cuBLASLt epilogue) → attention reading Q/K/V in place from `qkv` → `a = o·Woutᵀ` →
//! fused `residual += a + b_out; h = LN2(residual)` → `m = act(h·Wfc1ᵀ + b_fc1)` (fused bias+activation) →
//! `f = m·Wfc2ᵀ` → fused `residual += f + b_fc2; h = LN1'(residual)`, where LN1' is the next layer's first norm
//! (or the tower's final norm after the last layer).

use flashclip::attention::{
    flash_attention, materialized_attention, MaterializedWorkspace, Options, Version,
};
use flashclip::bias_activation::{bias_activation_inplace, Activation as KernelActivation};
use flashclip::embedding::{gather_rows, patchify, text_embed, vision_embed};
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
    Flash(Version),
    Materialized,
}

impl AttentionImpl {
    /// The fastest flash version that runs `T` at both towers' head dims on this GPU, else the materialized path.
    pub fn best<T: Element>(gpu: &Gpu, config: &ClipConfig) -> Self {
        let dims = [config.vision.head_dim(), config.text.head_dim()];
        Version::ALL
            .iter()
            .rev()
            .find(|v| v.runs_on(gpu) && dims.iter().all(|&d| v.supports(T::DTYPE, d)))
            .map_or(AttentionImpl::Materialized, |&v| AttentionImpl::Flash(v))
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
                AttentionImpl::Flash(_) => None,
            },
            max_tokens: t,
            max_batch,
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
            if let AttentionImpl::Flash(ver) = attention {
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
    pub fn run_text(
        &self,
        gpu: &Gpu,
        ws: &mut Workspace<T>,
        texts: &[Vec<u32>],
        hidden: Option<&mut Vec<Vec<f32>>>,
    ) -> Result<()> {
        let t = &self.config.text;
        let batch = texts.len();
        if batch == 0 || batch > ws.text.max_batch {
            return Err(ModelError::Input(format!(
                "{batch} texts: need 1 to {}",
                ws.text.max_batch
            )));
        }
        let len = texts.iter().map(Vec::len).max().unwrap_or(0);
        if len == 0 || len > t.max_len() {
            return Err(ModelError::Input(format!(
                "texts must have 1 to {} tokens, the longest has {len}",
                t.max_len()
            )));
        }
        let d = t.hidden_size;
        let mut ids = Vec::with_capacity(batch * len);
        let mut rows = Vec::with_capacity(batch);
        for (b, text) in texts.iter().enumerate() {
            if text.is_empty() {
                return Err(ModelError::Input(format!("text {b} has no tokens")));
            }
            for &id in text {
                if id as usize >= t.vocab_size {
                    return Err(ModelError::Input(format!(
                        "text {b}: token id {id} outside the vocabulary of {}",
                        t.vocab_size
                    )));
                }
                ids.push(id as i32);
            }
            ids.extend(std::iter::repeat_n(
                t.pad_token_id.min(t.vocab_size as u32 - 1) as i32,
                len - text.len(),
            ));
            rows.push((b * len + pooling_position(text, t.eos_token_id)) as i32);
        }
        let tokens = batch * len;
        let tw = &mut ws.text;
        let mut x = tw
            .residual
            .view_mut()
            .narrow(0, 0, tokens)?
            .reshape(&[batch, len, d])?;
        text_embed(
            gpu,
            &ids,
            &mut ws.ids,
            &self.token_embedding.view(),
            &self.text_position.view(),
            &mut x,
        )?;
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
        gather_rows(
            gpu,
            &normed,
            &rows,
            &mut ws.rows,
            &mut tw.pooled.view_mut().narrow(0, 0, batch)?,
        )?;
        linear(
            gpu,
            &tw.pooled.view().narrow(0, 0, batch)?,
            &self.text_projection.view(),
            &mut tw.projected.view_mut().narrow(0, 0, batch)?,
            0.0,
        )?;
        Ok(())
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
