//! A `SiglipModel`'s weights as one tree of its checkpoint's submodules, field names equal to the Hugging Face
//! keys (Q, K and V of the encoder layers packed into `qkv_proj` at load, as for CLIP).

use std::collections::BTreeSet;
use std::fs::File;
use std::path::Path;

use safetensors::{Dtype, SafeTensors};

use super::config::{SiglipConfig, SiglipTextConfig, SiglipVisionConfig};
use crate::checkpoint::{
    is_ignorable, key, Checkpoint, CheckpointError, CheckpointFormat, CheckpointMismatch,
    DtypeMismatch, FileRaw, FnRaw, Host, HostTensor, LayerStack, Loader, Plan, ShapeMismatch,
    Source, Spec, Target,
};
use crate::nn::{Encoder, LayerNorm, Linear, Mlp};

/// The patch embedding: a stride-`patch_size` convolution with bias.
#[derive(Debug, Clone, PartialEq)]
pub struct PatchEmbedding<A> {
    /// `[D, C, P, P]`.
    pub weight: A,
    /// `[D]`.
    pub bias: A,
}

/// `vision_model.embeddings`.
#[derive(Debug, Clone, PartialEq)]
pub struct SiglipVisionEmbeddings<A> {
    /// The patch convolution.
    pub patch_embedding: PatchEmbedding<A>,
    /// Learned position embeddings, `[num_patches, D]` (`position_embedding.weight`).
    pub position_embedding: A,
}

/// PyTorch's `nn.MultiheadAttention` with packed input projections (rows `0..D` Q, `D..2D` K, `2D..3D` V).
#[derive(Debug, Clone, PartialEq)]
pub struct MultiheadAttention<A> {
    /// `[3D, D]`.
    pub in_proj_weight: A,
    /// `[3D]`.
    pub in_proj_bias: A,
    /// `[D, D]` / `[D]`.
    pub out_proj: Linear<A>,
}

/// `vision_model.head`: a learned probe query attending over the patch tokens, then `x + mlp(layernorm(x))`.
#[derive(Debug, Clone, PartialEq)]
pub struct SiglipPoolingHead<A> {
    /// The query, `[1, 1, D]`.
    pub probe: A,
    /// Attention of the probe over the tokens.
    pub attention: MultiheadAttention<A>,
    /// LayerNorm before the MLP.
    pub layernorm: LayerNorm<A>,
    /// The MLP (the encoder layers' widths).
    pub mlp: Mlp<A>,
}

/// `vision_model`.
#[derive(Debug, Clone, PartialEq)]
pub struct SiglipVisionTransformer<A> {
    /// Patch and position embeddings.
    pub embeddings: SiglipVisionEmbeddings<A>,
    /// Pre-norm encoder layers.
    pub encoder: Encoder<A>,
    /// LayerNorm of every token after the encoder.
    pub post_layernorm: LayerNorm<A>,
    /// Attention pooling.
    pub head: SiglipPoolingHead<A>,
}

/// `text_model.embeddings`.
#[derive(Debug, Clone, PartialEq)]
pub struct SiglipTextEmbeddings<A> {
    /// `[vocab, D]` (`token_embedding.weight`).
    pub token_embedding: A,
    /// `[max_position_embeddings, D]` (`position_embedding.weight`).
    pub position_embedding: A,
}

/// `text_model`.
#[derive(Debug, Clone, PartialEq)]
pub struct SiglipTextTransformer<A> {
    /// Token and position embeddings.
    pub embeddings: SiglipTextEmbeddings<A>,
    /// Pre-norm bidirectional encoder layers.
    pub encoder: Encoder<A>,
    /// LayerNorm after the encoder.
    pub final_layer_norm: LayerNorm<A>,
    /// Projection of the last position, `[projection_size, D]` with bias.
    pub head: Linear<A>,
}

/// All weights of a `SiglipModel`.
#[derive(Debug, Clone, PartialEq)]
pub struct SiglipWeights<A = HostTensor> {
    /// Image tower.
    pub vision_model: SiglipVisionTransformer<A>,
    /// Text tower.
    pub text_model: SiglipTextTransformer<A>,
    /// Log of the logit scale.
    pub logit_scale: f32,
    /// The logit bias: logits are `logit_scale.exp() · cos + logit_bias`.
    pub logit_bias: f32,
}

impl<A> SiglipVisionTransformer<A> {
    fn load<S: Source<Tensor = A>>(s: &mut S, v: &SiglipVisionConfig) -> Result<Self, S::Error> {
        let (d, p) = (v.hidden_size, v.patch_size);
        let e = "vision_model.embeddings";
        let h = "vision_model.head";
        Ok(SiglipVisionTransformer {
            embeddings: SiglipVisionEmbeddings {
                patch_embedding: PatchEmbedding {
                    weight: s.tensor(
                        &key(e, "patch_embedding.weight"),
                        &[d, v.num_channels, p, p],
                    )?,
                    bias: s.tensor(&key(e, "patch_embedding.bias"), &[d])?,
                },
                position_embedding: s
                    .tensor(&key(e, "position_embedding.weight"), &[v.seq_len(), d])?,
            },
            encoder: Encoder::load(
                s,
                "vision_model.encoder",
                v.num_hidden_layers,
                d,
                v.intermediate_size,
            )?,
            post_layernorm: LayerNorm::load(s, "vision_model.post_layernorm", d)?,
            head: SiglipPoolingHead {
                probe: s.tensor(&key(h, "probe"), &[1, 1, d])?,
                attention: MultiheadAttention {
                    in_proj_weight: s.tensor(&key(h, "attention.in_proj_weight"), &[3 * d, d])?,
                    in_proj_bias: s.tensor(&key(h, "attention.in_proj_bias"), &[3 * d])?,
                    out_proj: Linear::load(s, &key(h, "attention.out_proj"), d, d)?,
                },
                layernorm: LayerNorm::load(s, &key(h, "layernorm"), d)?,
                mlp: Mlp::load(s, &key(h, "mlp"), d, v.intermediate_size)?,
            },
        })
    }

    fn for_each_tensor<'a>(&'a self, f: &mut dyn FnMut(&'a A)) {
        let e = &self.embeddings;
        f(&e.patch_embedding.weight);
        f(&e.patch_embedding.bias);
        f(&e.position_embedding);
        self.encoder.for_each_tensor(f);
        self.post_layernorm.for_each_tensor(f);
        let h = &self.head;
        f(&h.probe);
        f(&h.attention.in_proj_weight);
        f(&h.attention.in_proj_bias);
        h.attention.out_proj.for_each_tensor(f);
        h.layernorm.for_each_tensor(f);
        h.mlp.for_each_tensor(f);
    }
}

impl<A> SiglipTextTransformer<A> {
    fn load<S: Source<Tensor = A>>(s: &mut S, t: &SiglipTextConfig) -> Result<Self, S::Error> {
        let d = t.hidden_size;
        let e = "text_model.embeddings";
        Ok(SiglipTextTransformer {
            embeddings: SiglipTextEmbeddings {
                token_embedding: s.tensor(&key(e, "token_embedding.weight"), &[t.vocab_size, d])?,
                position_embedding: s.tensor(
                    &key(e, "position_embedding.weight"),
                    &[t.max_position_embeddings, d],
                )?,
            },
            encoder: Encoder::load(
                s,
                "text_model.encoder",
                t.num_hidden_layers,
                d,
                t.intermediate_size,
            )?,
            final_layer_norm: LayerNorm::load(s, "text_model.final_layer_norm", d)?,
            head: Linear::load(s, "text_model.head", t.projection_size, d)?,
        })
    }

    fn for_each_tensor<'a>(&'a self, f: &mut dyn FnMut(&'a A)) {
        f(&self.embeddings.token_embedding);
        f(&self.embeddings.position_embedding);
        self.encoder.for_each_tensor(f);
        self.final_layer_norm.for_each_tensor(f);
        self.head.for_each_tensor(f);
    }
}

impl<A> SiglipWeights<A> {
    /// Loads every tensor `config` implies from `source`, in table order.
    pub fn from_source<S: Source<Tensor = A>>(
        s: &mut S,
        config: &SiglipConfig,
    ) -> Result<Self, S::Error> {
        Ok(SiglipWeights {
            vision_model: SiglipVisionTransformer::load(s, &config.vision)?,
            text_model: SiglipTextTransformer::load(s, &config.text)?,
            logit_scale: s.scalar("logit_scale")?,
            logit_bias: s.scalar("logit_bias")?,
        })
    }

    /// Visits the tensors in table order (the two scalars are not visited).
    pub fn for_each_tensor<'a>(&'a self, f: &mut dyn FnMut(&'a A)) {
        self.vision_model.for_each_tensor(f);
        self.text_model.for_each_tensor(f);
    }
}

impl SiglipWeights<()> {
    /// The tensor table of `config`: every canonical key and shape in load order, the scalars last.
    pub fn plan(config: &SiglipConfig) -> Vec<Spec> {
        let mut plan = Plan::default();
        match SiglipWeights::from_source(&mut plan, config) {
            Ok(_) => plan.specs,
            Err(never) => match never {},
        }
    }
}

impl SiglipWeights {
    /// Memory-maps a `.safetensors` checkpoint, checks it against `config` (every problem reported at once) and
    /// loads it as host f32 arrays.
    pub fn load(path: impl AsRef<Path>, config: &SiglipConfig) -> Result<Self, CheckpointError> {
        load_file(path.as_ref(), config, Host)
    }

    /// Loads `config.json` and `model.safetensors` from a model directory.
    pub fn load_dir(dir: impl AsRef<Path>) -> Result<(SiglipConfig, Self), CheckpointError> {
        let dir = dir.as_ref();
        let config = SiglipConfig::from_hf_json_file(dir.join("config.json"))?;
        let weights = Self::load(dir.join("model.safetensors"), &config)?;
        Ok((config, weights))
    }

    /// Weights from a function of (Hugging Face key, shape) returning row-major data (e.g. random weights for
    /// tests); `logit_scale` and `logit_bias` are asked for with shape `[]`.
    pub fn from_fn(
        config: &SiglipConfig,
        f: impl FnMut(&str, &[usize]) -> Vec<f32>,
    ) -> Result<Self, CheckpointError> {
        SiglipWeights::from_source(
            &mut Loader {
                raw: FnRaw(f),
                format: CheckpointFormat::HuggingFace,
                target: Host,
            },
            config,
        )
    }
}

impl<A> SiglipWeights<A> {
    /// Checks an opened checkpoint against `config` (every problem reported at once), then loads it into
    /// `target`.
    pub fn load_checkpoint<G: Target<Tensor = A>>(
        checkpoint: &Checkpoint,
        config: &SiglipConfig,
        target: G,
    ) -> Result<Self, CheckpointError> {
        check_checkpoint(checkpoint, config)?;
        checkpoint.load_with(target, |loader| Self::from_source(loader, config))
    }
}

/// Checks an opened checkpoint against `config` without converting any data: a Hugging Face layout with every
/// tensor of the config's table.
pub fn check_checkpoint(
    checkpoint: &Checkpoint,
    config: &SiglipConfig,
) -> Result<(), CheckpointError> {
    if checkpoint.format() != CheckpointFormat::HuggingFace {
        return Err(CheckpointError::UnknownFormat {
            origin: checkpoint.origin().to_string(),
            sample: checkpoint.names().iter().take(8).cloned().collect(),
        });
    }
    let stacks = [
        LayerStack {
            tower: "vision",
            layers: config.vision.num_hidden_layers,
            prefix: "vision_model.encoder.layers.",
        },
        LayerStack {
            tower: "text",
            layers: config.text.num_hidden_layers,
            prefix: "text_model.encoder.layers.",
        },
    ];
    checkpoint.check_table(&SiglipWeights::plan(config), &stacks, is_ignorable)
}

impl<A: HasShape> SiglipWeights<A> {
    /// Checks that every tensor has the shape `config` implies (after building or editing weights by hand;
    /// loading already guarantees it).
    pub fn check_shapes(&self, config: &SiglipConfig) -> Result<(), CheckpointError> {
        let mut found = Vec::new();
        self.for_each_tensor(&mut |t| found.push(t.dims()));
        let expected: Vec<Spec> = SiglipWeights::plan(config)
            .into_iter()
            .filter(|s| !s.scalar)
            .collect();
        let mut problems = CheckpointMismatch::default();
        for (spec, shape) in expected.iter().zip(&found) {
            if spec.shape != *shape {
                problems.wrong_shape.push(ShapeMismatch {
                    name: spec.key.clone(),
                    expected: spec.shape.clone(),
                    found: shape.clone(),
                });
            }
        }
        // Layer counts differing from the config's show as tensors missing or left over at the end.
        let common = expected.len().min(found.len());
        problems
            .missing
            .extend(expected[common..].iter().map(|s| s.key.clone()));
        problems.unexpected.extend((common..found.len()).map(|i| {
            format!(
                "tensor {i} of {} (more layers than the config)",
                found.len()
            )
        }));
        if problems.is_empty() {
            Ok(())
        } else {
            Err(CheckpointError::Mismatch(Box::new(problems)))
        }
    }
}

/// A tensor whose shape can be read (host arrays and device tensors alike).
pub trait HasShape {
    /// The dimensions.
    fn dims(&self) -> Vec<usize>;
}

impl HasShape for HostTensor {
    fn dims(&self) -> Vec<usize> {
        self.shape().to_vec()
    }
}

/// Checks the checkpoint at `path` against `config`, then loads it into `target` (each tensor converted once
/// from the file's dtype to the target's).
pub fn load_file<G: Target>(
    path: &Path,
    config: &SiglipConfig,
    target: G,
) -> Result<SiglipWeights<G::Tensor>, CheckpointError> {
    let io_err = |source: std::io::Error| {
        if source.kind() == std::io::ErrorKind::NotFound {
            CheckpointError::NotFound {
                path: path.to_path_buf(),
            }
        } else {
            CheckpointError::Io {
                path: path.to_path_buf(),
                source,
            }
        }
    };
    let file = File::open(path).map_err(io_err)?;
    let origin = path.display().to_string();
    let corrupt = |source| CheckpointError::Corrupt {
        origin: origin.clone(),
        source,
    };
    let map;
    let bytes: &[u8] = if file.metadata().map_err(io_err)?.len() == 0 {
        // mmap of an empty file fails with an unhelpful EINVAL; let the parser say why.
        &[]
    } else {
        // SAFETY: the map is read-only; checkpoints are not expected to change while they are open.
        map = unsafe { memmap2::Mmap::map(&file) }.map_err(io_err)?;
        &map
    };
    let st = SafeTensors::deserialize(bytes).map_err(corrupt)?;
    check(&st, config)?;
    let format = CheckpointFormat::HuggingFace;
    SiglipWeights::from_source(
        &mut Loader {
            raw: FileRaw { st: &st, format },
            format,
            target,
        },
        config,
    )
}

/// Every missing, misshapen, undecodable and unexpected tensor of a file against `config`'s table.
fn check(st: &SafeTensors<'_>, config: &SiglipConfig) -> Result<(), CheckpointError> {
    let format = CheckpointFormat::HuggingFace;
    let mut problems = CheckpointMismatch {
        format: Some(format),
        ..CheckpointMismatch::default()
    };
    let mut used = BTreeSet::new();
    for spec in SiglipWeights::plan(config) {
        for (part, shape) in format.stored(&spec.key).parts(&spec.shape) {
            used.insert(part.to_string());
            let Ok(view) = st.tensor(part) else {
                problems.missing.push(part.to_string());
                continue;
            };
            let scalar_ok = spec.scalar && view.shape() == [1];
            if view.shape() != shape && !scalar_ok {
                problems.wrong_shape.push(ShapeMismatch {
                    name: part.to_string(),
                    expected: shape,
                    found: view.shape().to_vec(),
                });
            }
            if !matches!(view.dtype(), Dtype::F32 | Dtype::F16 | Dtype::BF16) {
                problems.unsupported_dtype.push(DtypeMismatch {
                    name: part.to_string(),
                    dtype: view.dtype().to_string(),
                });
            }
        }
    }
    let mut unexpected: Vec<String> = st
        .names()
        .into_iter()
        .filter(|n| !used.contains(*n) && !is_ignorable(n))
        .map(str::to_string)
        .collect();
    unexpected.sort_unstable();
    problems.unexpected = unexpected;
    if problems.is_empty() {
        Ok(())
    } else {
        Err(CheckpointError::Mismatch(Box::new(problems)))
    }
}
