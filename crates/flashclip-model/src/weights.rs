//! Host-side CLIP checkpoints.
//!
//! [`ClipWeights::load`] memory-maps a `.safetensors` checkpoint, checks every tensor's name,
//! dtype and shape against a [`ClipConfig`], and converts everything to `f32`.
//!
//! # Layout
//!
//! The structs follow the Hugging Face `CLIPModel` module tree, and field names follow HF's
//! checkpoint keys (`vision_model.embeddings.patch_embedding`, `pre_layrnorm` — HF's
//! spelling —, `encoder.layers[i].self_attn`, ...). open_clip checkpoints are mapped into
//! the same structs, so downstream code never sees which format the file had.
//!
//! Tensors are owned `ndarray` arrays of `f32` with a fixed rank per field ([`Array1`],
//! [`Array2`], [`Array4`]), always in standard (row-major, contiguous) layout, so
//! `array.as_slice()` is `Some` and can be uploaded to the GPU as is. Linear weights keep
//! PyTorch's `[out_features, in_features]` layout (`y = x Wᵀ + b`).
//!
//! Two deliberate departures from the file layout:
//! - Q, K and V are packed into one [`Attention::qkv_proj`] (`[3·D, D]` weight, `[3·D]`
//!   bias, in q, k, v order) because the GPU runs one GEMM for all three. open_clip already
//!   stores them that way (`in_proj_weight`).
//! - open_clip stores `visual.proj` and `text_projection` as `[D, proj]`; they are
//!   transposed at load to HF's `[proj, D]`.

use std::collections::BTreeSet;
use std::fmt;
use std::fs::File;
use std::path::{Path, PathBuf};

use half::{bf16, f16};
use ndarray::{Array1, Array2, Array4, ArrayViewD};
use rayon::prelude::*;
use safetensors::{Dtype, SafeTensorError, SafeTensors};

use crate::config::{ClipConfig, ConfigError, TextConfig, VisionConfig};

/// A LayerNorm's affine parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerNorm {
    /// Scale, `[D]`.
    pub weight: Array1<f32>,
    /// Shift, `[D]`.
    pub bias: Array1<f32>,
}

/// A biased linear layer, `y = x Wᵀ + b`.
#[derive(Debug, Clone, PartialEq)]
pub struct Linear {
    /// `[out_features, in_features]`.
    pub weight: Array2<f32>,
    /// `[out_features]`.
    pub bias: Array1<f32>,
}

/// Multi-head self-attention.
#[derive(Debug, Clone, PartialEq)]
pub struct Attention {
    /// Packed Q/K/V projection: weight `[3·D, D]`, bias `[3·D]`; rows `0..D` are Q,
    /// `D..2D` K, `2D..3D` V, and within each, head `h` owns rows `h·head_dim..(h+1)·head_dim`.
    pub qkv_proj: Linear,
    /// Output projection, `[D, D]` / `[D]`.
    pub out_proj: Linear,
}

/// The two-layer MLP of an encoder layer.
#[derive(Debug, Clone, PartialEq)]
pub struct Mlp {
    /// `[intermediate, D]` / `[intermediate]`.
    pub fc1: Linear,
    /// `[D, intermediate]` / `[D]`.
    pub fc2: Linear,
}

/// One pre-norm transformer layer:
/// `x += out_proj(attn(layer_norm1(x)))`, then `x += fc2(act(fc1(layer_norm2(x))))`.
#[derive(Debug, Clone, PartialEq)]
pub struct EncoderLayer {
    /// Attention block.
    pub self_attn: Attention,
    /// LayerNorm before attention.
    pub layer_norm1: LayerNorm,
    /// MLP block.
    pub mlp: Mlp,
    /// LayerNorm before the MLP.
    pub layer_norm2: LayerNorm,
}

/// A stack of encoder layers.
#[derive(Debug, Clone, PartialEq)]
pub struct Encoder {
    /// `num_hidden_layers` layers, input to output.
    pub layers: Vec<EncoderLayer>,
}

/// Patch, class and position embeddings of the vision tower.
#[derive(Debug, Clone, PartialEq)]
pub struct VisionEmbeddings {
    /// The class token, `[D]`.
    pub class_embedding: Array1<f32>,
    /// Patch-embedding convolution kernel (no bias), `[D, C, P, P]`.
    pub patch_embedding: Array4<f32>,
    /// Learned positions, `[num_patches + 1, D]`; row 0 is the class token's.
    pub position_embedding: Array2<f32>,
}

/// The vision tower (HF `CLIPVisionTransformer`).
#[derive(Debug, Clone, PartialEq)]
pub struct VisionTransformer {
    /// Embeddings.
    pub embeddings: VisionEmbeddings,
    /// LayerNorm before the encoder (open_clip `ln_pre`; HF's spelling kept).
    pub pre_layrnorm: LayerNorm,
    /// Encoder layers.
    pub encoder: Encoder,
    /// LayerNorm on the pooled class token (open_clip `ln_post`).
    pub post_layernorm: LayerNorm,
}

/// Token and position embeddings of the text tower.
#[derive(Debug, Clone, PartialEq)]
pub struct TextEmbeddings {
    /// `[vocab_size, D]`.
    pub token_embedding: Array2<f32>,
    /// `[max_position_embeddings, D]`.
    pub position_embedding: Array2<f32>,
}

/// The text tower (HF `CLIPTextTransformer`).
#[derive(Debug, Clone, PartialEq)]
pub struct TextTransformer {
    /// Embeddings.
    pub embeddings: TextEmbeddings,
    /// Encoder layers (causal attention).
    pub encoder: Encoder,
    /// LayerNorm after the encoder (open_clip `ln_final`).
    pub final_layer_norm: LayerNorm,
}

/// Which key naming a checkpoint used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CheckpointFormat {
    /// Hugging Face `CLIPModel` (`vision_model.*`, `text_model.*`, ...).
    HuggingFace,
    /// open_clip / OpenAI (`visual.*`, `transformer.resblocks.*`, ...).
    OpenClip,
}

impl fmt::Display for CheckpointFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CheckpointFormat::HuggingFace => "Hugging Face",
            CheckpointFormat::OpenClip => "open_clip",
        })
    }
}

/// All weights of a CLIP model, in `f32` on the host.
#[derive(Debug, Clone, PartialEq)]
pub struct ClipWeights {
    /// Image tower.
    pub vision_model: VisionTransformer,
    /// Text tower.
    pub text_model: TextTransformer,
    /// Image projection (no bias), `[projection_dim, vision D]`.
    pub visual_projection: Array2<f32>,
    /// Text projection (no bias), `[projection_dim, text D]`.
    pub text_projection: Array2<f32>,
    /// Log of the logit scale; logits are `logit_scale.exp() · cos`.
    pub logit_scale: f32,
    /// Key naming of the file these weights came from.
    pub format: CheckpointFormat,
}

/// One tensor of a [`ClipWeights`], named by its canonical (HF-style) key.
#[derive(Debug, Clone)]
pub struct NamedTensor<'a> {
    /// Canonical name, e.g. `vision_model.encoder.layers.3.self_attn.qkv_proj.weight`.
    pub name: String,
    /// The data.
    pub view: ArrayViewD<'a, f32>,
}

/// A tensor whose shape differs from what the config implies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShapeMismatch {
    /// Tensor name (as in the file, or canonical for [`ClipWeights::check_shapes`]).
    pub name: String,
    /// Shape the config implies.
    pub expected: Vec<usize>,
    /// Shape found.
    pub found: Vec<usize>,
}

/// A tensor stored in a dtype this loader doesn't convert.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DtypeMismatch {
    /// Tensor name in the file.
    pub name: String,
    /// The file's dtype, e.g. `I64`.
    pub dtype: String,
}

/// Everything wrong with a checkpoint, found in one pass so a user sees all problems at once.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CheckpointMismatch {
    /// The detected key naming (`None` for [`ClipWeights::check_shapes`]).
    pub format: Option<CheckpointFormat>,
    /// Tensors the config requires that the file lacks.
    pub missing: Vec<String>,
    /// Tensors in the file that the config doesn't use.
    pub unexpected: Vec<String>,
    /// Tensors with the wrong shape.
    pub wrong_shape: Vec<ShapeMismatch>,
    /// Tensors with an unsupported dtype (only F32, F16 and BF16 are converted).
    pub unsupported_dtype: Vec<DtypeMismatch>,
}

impl CheckpointMismatch {
    /// Whether nothing is wrong.
    pub fn is_empty(&self) -> bool {
        self.missing.is_empty()
            && self.unexpected.is_empty()
            && self.wrong_shape.is_empty()
            && self.unsupported_dtype.is_empty()
    }
}

fn fmt_shape(shape: &[usize]) -> String {
    let parts: Vec<String> = shape.iter().map(usize::to_string).collect();
    format!("[{}]", parts.join(", "))
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

impl fmt::Display for CheckpointMismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.format {
            Some(format) => write!(f, "checkpoint ({format} format) does not match the config")?,
            None => write!(f, "weights do not match the config")?,
        }
        let mut sep = ": ";
        if !self.missing.is_empty() {
            let n = self.missing.len();
            write!(
                f,
                "{sep}{n} missing tensor{}: {}",
                plural(n),
                self.missing.join(", ")
            )?;
            sep = "; ";
        }
        if !self.unexpected.is_empty() {
            let n = self.unexpected.len();
            write!(
                f,
                "{sep}{n} unexpected tensor{}: {}",
                plural(n),
                self.unexpected.join(", ")
            )?;
            sep = "; ";
        }
        if !self.wrong_shape.is_empty() {
            let n = self.wrong_shape.len();
            let items: Vec<String> = self
                .wrong_shape
                .iter()
                .map(|m| {
                    format!(
                        "{} (expected {}, found {})",
                        m.name,
                        fmt_shape(&m.expected),
                        fmt_shape(&m.found)
                    )
                })
                .collect();
            write!(
                f,
                "{sep}{n} tensor{} with wrong shape: {}",
                plural(n),
                items.join(", ")
            )?;
            sep = "; ";
        }
        if !self.unsupported_dtype.is_empty() {
            let n = self.unsupported_dtype.len();
            let items: Vec<String> = self
                .unsupported_dtype
                .iter()
                .map(|m| format!("{} ({})", m.name, m.dtype))
                .collect();
            write!(
                f,
                "{sep}{n} tensor{} with unsupported dtype (supported: F32, F16, BF16): {}",
                plural(n),
                items.join(", ")
            )?;
        }
        Ok(())
    }
}

/// Errors from loading a checkpoint.
#[derive(Debug, thiserror::Error)]
pub enum WeightsError {
    /// The checkpoint file does not exist.
    #[error("checkpoint not found: {}", path.display())]
    NotFound {
        /// The path that was tried.
        path: PathBuf,
    },
    /// A directory has none of the files looked for.
    #[error("no {what} in {}: tried {}", dir.display(), tried.join(", "))]
    NotFoundInDir {
        /// "config" or "checkpoint".
        what: &'static str,
        /// The directory.
        dir: PathBuf,
        /// File names tried.
        tried: Vec<&'static str>,
    },
    /// The file exists but could not be opened or mapped.
    #[error("cannot read checkpoint {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The bytes are not a valid safetensors file (truncated, bad header, bad offsets).
    #[error("corrupt or truncated safetensors data in {origin}: {source}")]
    Corrupt {
        /// A path, or "buffer".
        origin: String,
        /// The safetensors parser's error.
        #[source]
        source: SafeTensorError,
    },
    /// The keys are neither Hugging Face's nor open_clip's.
    #[error(
        "unrecognized checkpoint layout in {origin}: expected Hugging Face keys (vision_model.*, text_model.*) or open_clip keys (visual.*, transformer.*); first keys: {}",
        sample.join(", ")
    )]
    UnknownFormat {
        /// A path, or "buffer".
        origin: String,
        /// Up to 8 key names from the file, sorted.
        sample: Vec<String>,
    },
    /// Tensors missing, unexpected, mis-shaped or of unsupported dtype; all are listed.
    #[error("{0}")]
    Mismatch(Box<CheckpointMismatch>),
    /// The config next to a checkpoint could not be read ([`ClipWeights::load_dir`]).
    #[error(transparent)]
    Config(#[from] ConfigError),
}

/// Tensors some exporters leave in a checkpoint that carry no weights (HF's `position_ids`
/// buffers, OpenAI's `input_resolution`/`context_length`/`vocab_size` scalars, an old
/// open_clip causal `attn_mask`).
fn is_ignorable(name: &str) -> bool {
    name.ends_with("position_ids")
        || matches!(
            name,
            "input_resolution" | "context_length" | "vocab_size" | "attn_mask"
        )
}

fn detect_format(names: &[&str]) -> Option<CheckpointFormat> {
    if names
        .iter()
        .any(|n| n.starts_with("vision_model.") || n.starts_with("text_model."))
    {
        Some(CheckpointFormat::HuggingFace)
    } else if names.iter().any(|n| {
        n.starts_with("visual.")
            || n.starts_with("transformer.resblocks.")
            || *n == "token_embedding.weight"
    }) {
        Some(CheckpointFormat::OpenClip)
    } else {
        None
    }
}

/// Converts little-endian F32/F16/BF16 bytes to `f32`; `None` for other dtypes.
///
/// Works byte-wise because a mapped file gives no alignment guarantee.
fn to_f32(dtype: Dtype, bytes: &[u8]) -> Option<Vec<f32>> {
    // Below this, rayon's overhead outweighs the conversion.
    const PAR_MIN: usize = 1 << 16;
    match dtype {
        Dtype::F32 => {
            let f = |c: &[u8]| f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
            Some(if bytes.len() >= PAR_MIN {
                bytes.par_chunks_exact(4).map(f).collect()
            } else {
                bytes.chunks_exact(4).map(f).collect()
            })
        }
        Dtype::F16 => {
            let f = |c: &[u8]| f16::from_bits(u16::from_le_bytes([c[0], c[1]])).to_f32();
            Some(if bytes.len() >= PAR_MIN {
                bytes.par_chunks_exact(2).map(f).collect()
            } else {
                bytes.chunks_exact(2).map(f).collect()
            })
        }
        Dtype::BF16 => {
            let f = |c: &[u8]| bf16::from_bits(u16::from_le_bytes([c[0], c[1]])).to_f32();
            Some(if bytes.len() >= PAR_MIN {
                bytes.par_chunks_exact(2).map(f).collect()
            } else {
                bytes.chunks_exact(2).map(f).collect()
            })
        }
        _ => None,
    }
}

/// Where a [`Loader`] gets tensors from.
enum Source<'a, 'data> {
    /// A safetensors file; `check_only` inspects headers without converting data.
    File {
        st: &'a SafeTensors<'data>,
        check_only: bool,
    },
    /// A caller-supplied function of (HF key, shape) ([`ClipWeights::from_fn`]).
    Fn(&'a mut dyn FnMut(&str, &[usize]) -> Vec<f32>),
}

/// Pulls tensors out of a source by name, recording every problem instead of stopping at
/// the first.
///
/// For files, the same builder runs twice: a check pass that only inspects headers (and
/// returns empty arrays), then, if nothing was wrong, a loading pass. That way a wrong
/// config never makes us allocate or convert gigabytes just to report an error.
struct Loader<'a, 'data> {
    source: Source<'a, 'data>,
    used: BTreeSet<String>,
    problems: CheckpointMismatch,
}

impl<'a, 'data> Loader<'a, 'data> {
    fn new(source: Source<'a, 'data>, format: Option<CheckpointFormat>) -> Self {
        Loader {
            source,
            used: BTreeSet::new(),
            problems: CheckpointMismatch {
                format,
                ..CheckpointMismatch::default()
            },
        }
    }

    /// The tensor's data if it exists with the right shape and a supported dtype; an empty
    /// vector otherwise (and in the check pass).
    fn take(&mut self, name: &str, shape: &[usize]) -> Vec<f32> {
        self.take_any(name, &[shape])
    }

    /// Like [`Self::take`], accepting any of several shapes (same element count).
    fn take_any(&mut self, name: &str, shapes: &[&[usize]]) -> Vec<f32> {
        self.used.insert(name.to_string());
        let first = shapes.first().copied().unwrap_or(&[]);
        let (st, check_only) = match &mut self.source {
            Source::Fn(f) => {
                let data = f(name, first);
                let want: usize = first.iter().product();
                if data.len() != want {
                    self.problems.wrong_shape.push(ShapeMismatch {
                        name: name.to_string(),
                        expected: first.to_vec(),
                        found: vec![data.len()],
                    });
                    return Vec::new();
                }
                return data;
            }
            Source::File { st, check_only } => (*st, *check_only),
        };
        let view = match st.tensor(name) {
            Ok(view) => view,
            Err(_) => {
                self.problems.missing.push(name.to_string());
                return Vec::new();
            }
        };
        let mut ok = true;
        if !shapes.contains(&view.shape()) {
            self.problems.wrong_shape.push(ShapeMismatch {
                name: name.to_string(),
                expected: first.to_vec(),
                found: view.shape().to_vec(),
            });
            ok = false;
        }
        if !matches!(view.dtype(), Dtype::F32 | Dtype::F16 | Dtype::BF16) {
            self.problems.unsupported_dtype.push(DtypeMismatch {
                name: name.to_string(),
                dtype: view.dtype().to_string(),
            });
            ok = false;
        }
        if !ok || check_only {
            return Vec::new();
        }
        to_f32(view.dtype(), view.data()).unwrap_or_default()
    }

    fn vec1(&mut self, name: &str, n: usize) -> Array1<f32> {
        Array1::from_vec(self.take(name, &[n]))
    }

    fn mat(&mut self, name: &str, rows: usize, cols: usize) -> Array2<f32> {
        mat_from(self.take(name, &[rows, cols]), rows, cols)
    }

    /// A `[rows, cols]` tensor stored transposed (`[cols, rows]`) in the file.
    fn mat_transposed(&mut self, name: &str, rows: usize, cols: usize) -> Array2<f32> {
        let stored = mat_from(self.take(name, &[cols, rows]), cols, rows);
        stored.reversed_axes().as_standard_layout().into_owned()
    }

    fn scalar(&mut self, name: &str) -> f32 {
        self.take_any(name, &[&[], &[1]])
            .first()
            .copied()
            .unwrap_or(0.0)
    }

    fn layer_norm(&mut self, prefix: &str, d: usize) -> LayerNorm {
        LayerNorm {
            weight: self.vec1(&format!("{prefix}.weight"), d),
            bias: self.vec1(&format!("{prefix}.bias"), d),
        }
    }

    fn linear(&mut self, prefix: &str, out: usize, inp: usize) -> Linear {
        Linear {
            weight: self.mat(&format!("{prefix}.weight"), out, inp),
            bias: self.vec1(&format!("{prefix}.bias"), out),
        }
    }

    fn finish(self) -> Result<(), WeightsError> {
        let mut problems = self.problems;
        if let Source::File { st, .. } = &self.source {
            problems.unexpected = st
                .names()
                .into_iter()
                .filter(|n| !self.used.contains(*n) && !is_ignorable(n))
                .map(str::to_string)
                .collect();
            problems.unexpected.sort();
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(WeightsError::Mismatch(Box::new(problems)))
        }
    }
}

/// Shapes a vector that [`Loader::take`] returned; empty input (check pass or a recorded
/// problem) gives an empty array rather than allocating.
fn mat_from(data: Vec<f32>, rows: usize, cols: usize) -> Array2<f32> {
    Array2::from_shape_vec((rows, cols), data).unwrap_or_else(|_| Array2::zeros((0, 0)))
}

fn array4_from(data: Vec<f32>, shape: [usize; 4]) -> Array4<f32> {
    Array4::from_shape_vec(shape, data).unwrap_or_else(|_| Array4::zeros((0, 0, 0, 0)))
}

/// Concatenates `[rows, cols]` blocks along rows (Q, K, V into QKV).
fn stack_rows(parts: [Vec<f32>; 3], rows: usize, cols: usize) -> Array2<f32> {
    if parts.iter().any(|p| p.len() != rows * cols) {
        return Array2::zeros((0, 0));
    }
    mat_from(parts.concat(), 3 * rows, cols)
}

fn hf_layer(l: &mut Loader<'_, '_>, prefix: &str, d: usize, inter: usize) -> EncoderLayer {
    let p = |s: &str| format!("{prefix}.{s}");
    let [qw, kw, vw] =
        ["q", "k", "v"].map(|x| l.take(&p(&format!("self_attn.{x}_proj.weight")), &[d, d]));
    let [qb, kb, vb] =
        ["q", "k", "v"].map(|x| l.take(&p(&format!("self_attn.{x}_proj.bias")), &[d]));
    let qkv_bias = if [&qb, &kb, &vb].iter().all(|b| b.len() == d) {
        Array1::from_vec([qb, kb, vb].concat())
    } else {
        Array1::zeros(0)
    };
    EncoderLayer {
        self_attn: Attention {
            qkv_proj: Linear {
                weight: stack_rows([qw, kw, vw], d, d),
                bias: qkv_bias,
            },
            out_proj: l.linear(&p("self_attn.out_proj"), d, d),
        },
        layer_norm1: l.layer_norm(&p("layer_norm1"), d),
        mlp: Mlp {
            fc1: l.linear(&p("mlp.fc1"), inter, d),
            fc2: l.linear(&p("mlp.fc2"), d, inter),
        },
        layer_norm2: l.layer_norm(&p("layer_norm2"), d),
    }
}

fn open_clip_layer(l: &mut Loader<'_, '_>, prefix: &str, d: usize, inter: usize) -> EncoderLayer {
    let p = |s: &str| format!("{prefix}.{s}");
    EncoderLayer {
        self_attn: Attention {
            qkv_proj: Linear {
                weight: l.mat(&p("attn.in_proj_weight"), 3 * d, d),
                bias: l.vec1(&p("attn.in_proj_bias"), 3 * d),
            },
            out_proj: l.linear(&p("attn.out_proj"), d, d),
        },
        layer_norm1: l.layer_norm(&p("ln_1"), d),
        mlp: Mlp {
            fc1: l.linear(&p("mlp.c_fc"), inter, d),
            fc2: l.linear(&p("mlp.c_proj"), d, inter),
        },
        layer_norm2: l.layer_norm(&p("ln_2"), d),
    }
}

fn patch_shape(v: &VisionConfig) -> [usize; 4] {
    [v.hidden_size, v.num_channels, v.patch_size, v.patch_size]
}

fn build_hf(l: &mut Loader<'_, '_>, cfg: &ClipConfig) -> ClipWeights {
    let (v, t) = (&cfg.vision, &cfg.text);
    let (dv, dt) = (v.hidden_size, t.hidden_size);
    let vision_model = VisionTransformer {
        embeddings: VisionEmbeddings {
            class_embedding: l.vec1("vision_model.embeddings.class_embedding", dv),
            patch_embedding: array4_from(
                l.take(
                    "vision_model.embeddings.patch_embedding.weight",
                    &patch_shape(v),
                ),
                patch_shape(v),
            ),
            position_embedding: l.mat(
                "vision_model.embeddings.position_embedding.weight",
                v.seq_len(),
                dv,
            ),
        },
        pre_layrnorm: l.layer_norm("vision_model.pre_layrnorm", dv),
        encoder: Encoder {
            layers: (0..v.num_hidden_layers)
                .map(|i| {
                    hf_layer(
                        l,
                        &format!("vision_model.encoder.layers.{i}"),
                        dv,
                        v.intermediate_size,
                    )
                })
                .collect(),
        },
        post_layernorm: l.layer_norm("vision_model.post_layernorm", dv),
    };
    let text_model = TextTransformer {
        embeddings: TextEmbeddings {
            token_embedding: l.mat(
                "text_model.embeddings.token_embedding.weight",
                t.vocab_size,
                dt,
            ),
            position_embedding: l.mat(
                "text_model.embeddings.position_embedding.weight",
                t.max_position_embeddings,
                dt,
            ),
        },
        encoder: Encoder {
            layers: (0..t.num_hidden_layers)
                .map(|i| {
                    hf_layer(
                        l,
                        &format!("text_model.encoder.layers.{i}"),
                        dt,
                        t.intermediate_size,
                    )
                })
                .collect(),
        },
        final_layer_norm: l.layer_norm("text_model.final_layer_norm", dt),
    };
    ClipWeights {
        vision_model,
        text_model,
        visual_projection: l.mat("visual_projection.weight", cfg.projection_dim, dv),
        text_projection: l.mat("text_projection.weight", cfg.projection_dim, dt),
        logit_scale: l.scalar("logit_scale"),
        format: CheckpointFormat::HuggingFace,
    }
}

fn build_open_clip(l: &mut Loader<'_, '_>, cfg: &ClipConfig) -> ClipWeights {
    let (v, t) = (&cfg.vision, &cfg.text);
    let (dv, dt) = (v.hidden_size, t.hidden_size);
    let vision_model = VisionTransformer {
        embeddings: VisionEmbeddings {
            class_embedding: l.vec1("visual.class_embedding", dv),
            patch_embedding: array4_from(
                l.take("visual.conv1.weight", &patch_shape(v)),
                patch_shape(v),
            ),
            position_embedding: l.mat("visual.positional_embedding", v.seq_len(), dv),
        },
        pre_layrnorm: l.layer_norm("visual.ln_pre", dv),
        encoder: Encoder {
            layers: (0..v.num_hidden_layers)
                .map(|i| {
                    open_clip_layer(
                        l,
                        &format!("visual.transformer.resblocks.{i}"),
                        dv,
                        v.intermediate_size,
                    )
                })
                .collect(),
        },
        post_layernorm: l.layer_norm("visual.ln_post", dv),
    };
    let text_model = TextTransformer {
        embeddings: TextEmbeddings {
            token_embedding: l.mat("token_embedding.weight", t.vocab_size, dt),
            position_embedding: l.mat("positional_embedding", t.max_position_embeddings, dt),
        },
        encoder: Encoder {
            layers: (0..t.num_hidden_layers)
                .map(|i| {
                    open_clip_layer(
                        l,
                        &format!("transformer.resblocks.{i}"),
                        dt,
                        t.intermediate_size,
                    )
                })
                .collect(),
        },
        final_layer_norm: l.layer_norm("ln_final", dt),
    };
    ClipWeights {
        vision_model,
        text_model,
        visual_projection: l.mat_transposed("visual.proj", cfg.projection_dim, dv),
        text_projection: l.mat_transposed("text_projection", cfg.projection_dim, dt),
        logit_scale: l.scalar("logit_scale"),
        format: CheckpointFormat::OpenClip,
    }
}

/// Canonical name and shape of every tensor a config implies, in [`ClipWeights::tensors`]
/// order.
fn expected_shapes(cfg: &ClipConfig) -> Vec<(String, Vec<usize>)> {
    let mut out = Vec::new();
    let tower = |prefix: &str, d: usize, inter: usize, layers: usize| {
        let mut v = Vec::new();
        for i in 0..layers {
            let p = format!("{prefix}.encoder.layers.{i}");
            v.push((format!("{p}.self_attn.qkv_proj.weight"), vec![3 * d, d]));
            v.push((format!("{p}.self_attn.qkv_proj.bias"), vec![3 * d]));
            v.push((format!("{p}.self_attn.out_proj.weight"), vec![d, d]));
            v.push((format!("{p}.self_attn.out_proj.bias"), vec![d]));
            v.push((format!("{p}.layer_norm1.weight"), vec![d]));
            v.push((format!("{p}.layer_norm1.bias"), vec![d]));
            v.push((format!("{p}.mlp.fc1.weight"), vec![inter, d]));
            v.push((format!("{p}.mlp.fc1.bias"), vec![inter]));
            v.push((format!("{p}.mlp.fc2.weight"), vec![d, inter]));
            v.push((format!("{p}.mlp.fc2.bias"), vec![d]));
            v.push((format!("{p}.layer_norm2.weight"), vec![d]));
            v.push((format!("{p}.layer_norm2.bias"), vec![d]));
        }
        v
    };
    let (vc, tc): (&VisionConfig, &TextConfig) = (&cfg.vision, &cfg.text);
    let (dv, dt) = (vc.hidden_size, tc.hidden_size);
    let vision_layers = tower(
        "vision_model",
        dv,
        vc.intermediate_size,
        vc.num_hidden_layers,
    );
    let text_layers = tower("text_model", dt, tc.intermediate_size, tc.num_hidden_layers);
    out.push(("vision_model.embeddings.class_embedding".into(), vec![dv]));
    out.push((
        "vision_model.embeddings.patch_embedding.weight".into(),
        patch_shape(vc).to_vec(),
    ));
    out.push((
        "vision_model.embeddings.position_embedding.weight".into(),
        vec![vc.seq_len(), dv],
    ));
    out.push(("vision_model.pre_layrnorm.weight".into(), vec![dv]));
    out.push(("vision_model.pre_layrnorm.bias".into(), vec![dv]));
    out.extend(vision_layers);
    out.push(("vision_model.post_layernorm.weight".into(), vec![dv]));
    out.push(("vision_model.post_layernorm.bias".into(), vec![dv]));
    out.push((
        "text_model.embeddings.token_embedding.weight".into(),
        vec![tc.vocab_size, dt],
    ));
    out.push((
        "text_model.embeddings.position_embedding.weight".into(),
        vec![tc.max_position_embeddings, dt],
    ));
    out.extend(text_layers);
    out.push(("text_model.final_layer_norm.weight".into(), vec![dt]));
    out.push(("text_model.final_layer_norm.bias".into(), vec![dt]));
    out.push((
        "visual_projection.weight".into(),
        vec![cfg.projection_dim, dv],
    ));
    out.push((
        "text_projection.weight".into(),
        vec![cfg.projection_dim, dt],
    ));
    out
}

impl ClipWeights {
    /// Memory-maps and loads a `.safetensors` checkpoint (HF or open_clip keys, detected
    /// from the names), checking it against `config`.
    ///
    /// Every tensor the config implies must be present with the implied shape and dtype
    /// F32, F16 or BF16; any other tensor is unexpected (except weightless buffers such as
    /// `position_ids`). All problems are reported together in [`WeightsError::Mismatch`].
    pub fn load(path: impl AsRef<Path>, config: &ClipConfig) -> Result<ClipWeights, WeightsError> {
        let path = path.as_ref();
        let io_err = |source: std::io::Error| {
            if source.kind() == std::io::ErrorKind::NotFound {
                WeightsError::NotFound {
                    path: path.to_path_buf(),
                }
            } else {
                WeightsError::Io {
                    path: path.to_path_buf(),
                    source,
                }
            }
        };
        let file = File::open(path).map_err(io_err)?;
        let len = file.metadata().map_err(io_err)?.len();
        let origin = path.display().to_string();
        if len == 0 {
            // mmap of an empty file fails with an unhelpful EINVAL; let the parser say why.
            return Self::from_bytes_with_origin(&[], config, &origin);
        }
        // SAFETY: the map is read-only and lives only for this call. As with any mmap, a
        // concurrent writer truncating the file could fault; checkpoints are not expected to
        // change while being loaded.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(io_err)?;
        Self::from_bytes_with_origin(&map, config, &origin)
    }

    /// Loads a checkpoint from the bytes of a `.safetensors` file (see [`Self::load`]).
    pub fn from_safetensors_bytes(
        bytes: &[u8],
        config: &ClipConfig,
    ) -> Result<ClipWeights, WeightsError> {
        Self::from_bytes_with_origin(bytes, config, "buffer")
    }

    fn from_bytes_with_origin(
        bytes: &[u8],
        config: &ClipConfig,
        origin: &str,
    ) -> Result<ClipWeights, WeightsError> {
        let st = SafeTensors::deserialize(bytes).map_err(|source| WeightsError::Corrupt {
            origin: origin.to_string(),
            source,
        })?;
        let mut names = st.names();
        names.sort_unstable();
        let format = detect_format(&names).ok_or_else(|| WeightsError::UnknownFormat {
            origin: origin.to_string(),
            sample: names.iter().take(8).map(|s| s.to_string()).collect(),
        })?;
        let build = match format {
            CheckpointFormat::HuggingFace => build_hf,
            CheckpointFormat::OpenClip => build_open_clip,
        };
        let source = |check_only| Source::File {
            st: &st,
            check_only,
        };
        let mut check = Loader::new(source(true), Some(format));
        build(&mut check, config);
        check.finish()?;
        let mut load = Loader::new(source(false), Some(format));
        let weights = build(&mut load, config);
        load.finish()?;
        Ok(weights)
    }

    /// Builds weights from a function of (Hugging Face checkpoint key, shape) returning the
    /// row-major data, e.g. random weights for tests. Keys are those of an HF `CLIPModel`
    /// (separate `q_proj`/`k_proj`/`v_proj`, packed here like at load). A function
    /// returning the wrong number of elements is reported as a shape mismatch (the `found`
    /// shape is the element count).
    pub fn from_fn(
        config: &ClipConfig,
        mut f: impl FnMut(&str, &[usize]) -> Vec<f32>,
    ) -> Result<ClipWeights, WeightsError> {
        let mut loader = Loader::new(Source::Fn(&mut f), None);
        let weights = build_hf(&mut loader, config);
        loader.finish()?;
        Ok(weights)
    }

    /// Loads a model directory: the config from `config.json` (HF) or
    /// `open_clip_config.json`, the weights from `model.safetensors` or
    /// `open_clip_model.safetensors`, whichever exists first.
    pub fn load_dir(dir: impl AsRef<Path>) -> Result<(ClipConfig, ClipWeights), WeightsError> {
        let dir = dir.as_ref();
        let find = |what: &'static str, names: [&'static str; 2]| {
            names
                .iter()
                .map(|n| dir.join(n))
                .find(|p| p.is_file())
                .ok_or_else(|| WeightsError::NotFoundInDir {
                    what,
                    dir: dir.to_path_buf(),
                    tried: names.to_vec(),
                })
        };
        let config_path = find("config", ["config.json", "open_clip_config.json"])?;
        let weights_path = find(
            "checkpoint",
            ["model.safetensors", "open_clip_model.safetensors"],
        )?;
        let config = ClipConfig::from_json_file(&config_path)?;
        let weights = Self::load(&weights_path, &config)?;
        Ok((config, weights))
    }

    /// Every tensor with its canonical HF-style name (Q/K/V as `self_attn.qkv_proj.*`),
    /// vision tower first, then text tower, then projections. `logit_scale` is a plain
    /// field and not listed.
    pub fn tensors(&self) -> Vec<NamedTensor<'_>> {
        let vm = &self.vision_model;
        let tm = &self.text_model;
        let mut out = vec![
            named(
                "vision_model.embeddings.class_embedding",
                &vm.embeddings.class_embedding,
            ),
            named(
                "vision_model.embeddings.patch_embedding.weight",
                &vm.embeddings.patch_embedding,
            ),
            named(
                "vision_model.embeddings.position_embedding.weight",
                &vm.embeddings.position_embedding,
            ),
            named("vision_model.pre_layrnorm.weight", &vm.pre_layrnorm.weight),
            named("vision_model.pre_layrnorm.bias", &vm.pre_layrnorm.bias),
        ];
        push_layers(&mut out, "vision_model", &vm.encoder);
        out.extend([
            named(
                "vision_model.post_layernorm.weight",
                &vm.post_layernorm.weight,
            ),
            named("vision_model.post_layernorm.bias", &vm.post_layernorm.bias),
            named(
                "text_model.embeddings.token_embedding.weight",
                &tm.embeddings.token_embedding,
            ),
            named(
                "text_model.embeddings.position_embedding.weight",
                &tm.embeddings.position_embedding,
            ),
        ]);
        push_layers(&mut out, "text_model", &tm.encoder);
        out.extend([
            named(
                "text_model.final_layer_norm.weight",
                &tm.final_layer_norm.weight,
            ),
            named(
                "text_model.final_layer_norm.bias",
                &tm.final_layer_norm.bias,
            ),
            named("visual_projection.weight", &self.visual_projection),
            named("text_projection.weight", &self.text_projection),
        ]);
        out
    }

    /// Total number of parameters (including `logit_scale`).
    pub fn num_parameters(&self) -> usize {
        self.tensors().iter().map(|t| t.view.len()).sum::<usize>() + 1
    }

    /// Checks that every array has the shape `config` implies (useful after building or
    /// editing weights by hand; [`Self::load`] already guarantees it). Lists all mismatches,
    /// by canonical name, and the layer-count differences as missing/unexpected tensors.
    pub fn check_shapes(&self, config: &ClipConfig) -> Result<(), WeightsError> {
        let expected = expected_shapes(config);
        let actual = self.tensors();
        let mut problems = CheckpointMismatch::default();
        let actual_map: std::collections::HashMap<&str, &[usize]> = actual
            .iter()
            .map(|t| (t.name.as_str(), t.view.shape()))
            .collect();
        let expected_names: BTreeSet<&str> = expected.iter().map(|(n, _)| n.as_str()).collect();
        for (name, shape) in &expected {
            match actual_map.get(name.as_str()) {
                None => problems.missing.push(name.clone()),
                Some(found) if *found != shape.as_slice() => {
                    problems.wrong_shape.push(ShapeMismatch {
                        name: name.clone(),
                        expected: shape.clone(),
                        found: found.to_vec(),
                    })
                }
                Some(_) => {}
            }
        }
        for t in &actual {
            if !expected_names.contains(t.name.as_str()) {
                problems.unexpected.push(t.name.clone());
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(WeightsError::Mismatch(Box::new(problems)))
        }
    }
}

fn named<'a, D: ndarray::Dimension>(
    name: &str,
    array: &'a ndarray::Array<f32, D>,
) -> NamedTensor<'a> {
    NamedTensor {
        name: name.to_string(),
        view: array.view().into_dyn(),
    }
}

fn push_layers<'a>(out: &mut Vec<NamedTensor<'a>>, prefix: &str, encoder: &'a Encoder) {
    for (i, layer) in encoder.layers.iter().enumerate() {
        let p = format!("{prefix}.encoder.layers.{i}");
        let items: [(&str, ArrayViewD<'a, f32>); 12] = [
            (
                "self_attn.qkv_proj.weight",
                layer.self_attn.qkv_proj.weight.view().into_dyn(),
            ),
            (
                "self_attn.qkv_proj.bias",
                layer.self_attn.qkv_proj.bias.view().into_dyn(),
            ),
            (
                "self_attn.out_proj.weight",
                layer.self_attn.out_proj.weight.view().into_dyn(),
            ),
            (
                "self_attn.out_proj.bias",
                layer.self_attn.out_proj.bias.view().into_dyn(),
            ),
            (
                "layer_norm1.weight",
                layer.layer_norm1.weight.view().into_dyn(),
            ),
            ("layer_norm1.bias", layer.layer_norm1.bias.view().into_dyn()),
            ("mlp.fc1.weight", layer.mlp.fc1.weight.view().into_dyn()),
            ("mlp.fc1.bias", layer.mlp.fc1.bias.view().into_dyn()),
            ("mlp.fc2.weight", layer.mlp.fc2.weight.view().into_dyn()),
            ("mlp.fc2.bias", layer.mlp.fc2.bias.view().into_dyn()),
            (
                "layer_norm2.weight",
                layer.layer_norm2.weight.view().into_dyn(),
            ),
            ("layer_norm2.bias", layer.layer_norm2.bias.view().into_dyn()),
        ];
        for (suffix, view) in items {
            out.push(NamedTensor {
                name: format!("{p}.{suffix}"),
                view,
            });
        }
    }
}
