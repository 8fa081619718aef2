//! Chinese-CLIP's weights as one tree of the checkpoint's submodules: CLIP's vision tower and a BERT text tower,
//! field names equal to Hugging Face `ChineseCLIPModel`'s keys (BERT's `LayerNorm` spelled `layer_norm`, its
//! `self` submodule `self_attention`). Q, K and V are packed into one `qkv` projection, as in CLIP's layers
//! ([`crate::checkpoint::Stored::Rows`] maps it to `query`, `key`, `value`).

use std::path::Path;

use super::config::{BertConfig, ChineseClipConfig};
use crate::checkpoint::{
    key, Checkpoint, CheckpointError, CheckpointFormat, FnRaw, Host, HostTensor, LayerStack,
    Loader, Plan, Source, Spec, Target,
};
use crate::nn::{LayerNorm, Linear};
use crate::vision::VisionTransformer;

/// Word, position and token-type embeddings and their LayerNorm.
#[derive(Debug, Clone, PartialEq)]
pub struct BertEmbeddings<A> {
    /// `[vocab_size, D]`.
    pub word_embeddings: A,
    /// `[max_position_embeddings, D]`.
    pub position_embeddings: A,
    /// `[type_vocab_size, D]`.
    pub token_type_embeddings: A,
    /// `LayerNorm` in the checkpoint.
    pub layer_norm: LayerNorm<A>,
}

/// `attention.self`: the packed Q/K/V projection.
#[derive(Debug, Clone, PartialEq)]
pub struct BertSelfAttention<A> {
    /// `[3·D, D]` / `[3·D]`: rows `0..D` are `query`, `D..2D` `key`, `2D..3D` `value`.
    pub qkv: Linear<A>,
}

/// A projection followed by the post-LN residual step, `LayerNorm(x + dense(h))` (`attention.output`, `output`).
#[derive(Debug, Clone, PartialEq)]
pub struct BertResidualOutput<A> {
    /// The projection.
    pub dense: Linear<A>,
    /// `LayerNorm` in the checkpoint.
    pub layer_norm: LayerNorm<A>,
}

/// `attention`: self-attention and its output block.
#[derive(Debug, Clone, PartialEq)]
pub struct BertAttention<A> {
    /// `self` in the checkpoint.
    pub self_attention: BertSelfAttention<A>,
    /// `output`: `LayerNorm(x + dense(attention))`.
    pub output: BertResidualOutput<A>,
}

/// `intermediate`: the MLP's first projection (the activation follows it).
#[derive(Debug, Clone, PartialEq)]
pub struct BertIntermediate<A> {
    /// `[intermediate_size, D]` / `[intermediate_size]`.
    pub dense: Linear<A>,
}

/// One post-LN layer: `x = LN(x + attn(x))`, `x = LN(x + out(act(intermediate(x))))`.
#[derive(Debug, Clone, PartialEq)]
pub struct BertLayer<A> {
    /// Attention block.
    pub attention: BertAttention<A>,
    /// MLP up-projection.
    pub intermediate: BertIntermediate<A>,
    /// MLP down-projection with the second residual step.
    pub output: BertResidualOutput<A>,
}

/// `encoder`: the stack of layers.
#[derive(Debug, Clone, PartialEq)]
pub struct BertEncoder<A> {
    /// `num_hidden_layers` layers, input to output.
    pub layer: Vec<BertLayer<A>>,
}

/// The text tower at `text_model` (no pooler: Chinese-CLIP reads the `[CLS]` row of the last layer).
#[derive(Debug, Clone, PartialEq)]
pub struct BertModel<A> {
    /// Embeddings.
    pub embeddings: BertEmbeddings<A>,
    /// Encoder layers.
    pub encoder: BertEncoder<A>,
}

impl<A> BertResidualOutput<A> {
    fn load<S: Source<Tensor = A>>(
        s: &mut S,
        prefix: &str,
        d: usize,
        inp: usize,
    ) -> Result<Self, S::Error> {
        Ok(BertResidualOutput {
            dense: Linear::load(s, &key(prefix, "dense"), d, inp)?,
            layer_norm: LayerNorm::load(s, &key(prefix, "LayerNorm"), d)?,
        })
    }

    fn for_each_tensor<'a>(&'a self, f: &mut dyn FnMut(&'a A)) {
        self.dense.for_each_tensor(f);
        self.layer_norm.for_each_tensor(f);
    }
}

impl<A> BertLayer<A> {
    /// Loads the layer at `prefix` (e.g. `text_model.encoder.layer.3`).
    pub fn load<S: Source<Tensor = A>>(
        s: &mut S,
        prefix: &str,
        t: &BertConfig,
    ) -> Result<Self, S::Error> {
        let (d, inter) = (t.hidden_size, t.intermediate_size);
        let a = key(prefix, "attention");
        Ok(BertLayer {
            attention: BertAttention {
                self_attention: BertSelfAttention {
                    qkv: Linear::load(s, &key(&a, "self.qkv"), 3 * d, d)?,
                },
                output: BertResidualOutput::load(s, &key(&a, "output"), d, d)?,
            },
            intermediate: BertIntermediate {
                dense: Linear::load(s, &key(prefix, "intermediate.dense"), inter, d)?,
            },
            output: BertResidualOutput::load(s, &key(prefix, "output"), d, inter)?,
        })
    }

    /// Visits the tensors in `load` order.
    pub fn for_each_tensor<'a>(&'a self, f: &mut dyn FnMut(&'a A)) {
        self.attention.self_attention.qkv.for_each_tensor(f);
        self.attention.output.for_each_tensor(f);
        self.intermediate.dense.for_each_tensor(f);
        self.output.for_each_tensor(f);
    }
}

impl<A> BertModel<A> {
    /// Loads the tower at `text_model`.
    pub fn load<S: Source<Tensor = A>>(s: &mut S, t: &BertConfig) -> Result<Self, S::Error> {
        let (p, d) = ("text_model", t.hidden_size);
        let e = key(p, "embeddings");
        let embeddings = BertEmbeddings {
            word_embeddings: s.tensor(&key(&e, "word_embeddings.weight"), &[t.vocab_size, d])?,
            position_embeddings: s.tensor(
                &key(&e, "position_embeddings.weight"),
                &[t.max_position_embeddings, d],
            )?,
            token_type_embeddings: s.tensor(
                &key(&e, "token_type_embeddings.weight"),
                &[t.type_vocab_size, d],
            )?,
            layer_norm: LayerNorm::load(s, &key(&e, "LayerNorm"), d)?,
        };
        let layer = (0..t.num_hidden_layers)
            .map(|i| BertLayer::load(s, &format!("{p}.encoder.layer.{i}"), t))
            .collect::<Result<_, _>>()?;
        Ok(BertModel {
            embeddings,
            encoder: BertEncoder { layer },
        })
    }

    /// Visits the tensors in `load` order.
    pub fn for_each_tensor<'a>(&'a self, f: &mut dyn FnMut(&'a A)) {
        let e = &self.embeddings;
        f(&e.word_embeddings);
        f(&e.position_embeddings);
        f(&e.token_type_embeddings);
        e.layer_norm.for_each_tensor(f);
        self.encoder.layer.iter().for_each(|l| l.for_each_tensor(f));
    }
}

/// All weights of a Chinese-CLIP model; tensors of type `A` (host f32 arrays by default).
#[derive(Debug, Clone, PartialEq)]
pub struct ChineseClipWeights<A = HostTensor> {
    /// Image tower (CLIP's).
    pub vision_model: VisionTransformer<A>,
    /// Text tower.
    pub text_model: BertModel<A>,
    /// Image projection (no bias), `[projection_dim, vision D]`.
    pub visual_projection: A,
    /// Text projection (no bias), `[projection_dim, text D]`.
    pub text_projection: A,
    /// Log of the logit scale.
    pub logit_scale: f32,
}

/// The stored prefix of the BERT layers, `text_model.encoder.layer.<i>.`.
const TEXT_LAYERS: &str = "text_model.encoder.layer.";

/// Tensors of a `ChineseCLIPModel` file that carry nothing the forward uses: the embeddings' `token_type_ids`
/// buffer and a BERT pooler (`ChineseCLIPModel` builds its text tower without one, so transformers drops it too).
fn ignorable(name: &str) -> bool {
    name.ends_with("token_type_ids") || name.starts_with("text_model.pooler.")
}

impl<A> ChineseClipWeights<A> {
    /// Loads every tensor `config` implies from `s`: the model's tensor table, in order.
    pub fn from_source<S: Source<Tensor = A>>(
        s: &mut S,
        config: &ChineseClipConfig,
    ) -> Result<Self, S::Error> {
        let p = config.projection_dim;
        Ok(ChineseClipWeights {
            vision_model: VisionTransformer::load(s, &config.vision)?,
            text_model: BertModel::load(s, &config.text)?,
            visual_projection: s.tensor(
                &key("visual_projection", "weight"),
                &[p, config.vision.hidden_size],
            )?,
            text_projection: s.tensor(
                &key("text_projection", "weight"),
                &[p, config.text.hidden_size],
            )?,
            logit_scale: s.scalar("logit_scale")?,
        })
    }

    /// Visits the tensors in table order (the logit scale is not visited).
    pub fn for_each_tensor<'a>(&'a self, f: &mut dyn FnMut(&'a A)) {
        self.vision_model.for_each_tensor(f);
        self.text_model.for_each_tensor(f);
        f(&self.visual_projection);
        f(&self.text_projection);
    }

    /// Checks `checkpoint` against `config` (layer counts first, then every tensor; all problems reported at
    /// once) and loads it into `target`.
    pub fn load_checkpoint<G: Target<Tensor = A>>(
        checkpoint: &Checkpoint,
        config: &ChineseClipConfig,
        target: G,
    ) -> Result<Self, CheckpointError> {
        check(checkpoint, config)?;
        checkpoint.load_with(target, |loader| Self::from_source(loader, config))
    }
}

/// Checks a checkpoint against a config without converting any data.
pub fn check(checkpoint: &Checkpoint, config: &ChineseClipConfig) -> Result<(), CheckpointError> {
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
            prefix: TEXT_LAYERS,
        },
    ];
    checkpoint.check_table(&ChineseClipWeights::plan(config), &stacks, ignorable)
}

impl ChineseClipWeights<()> {
    /// The tensor table of `config`: every canonical key and shape, in load order (the logit scale last).
    pub fn plan(config: &ChineseClipConfig) -> Vec<Spec> {
        let mut plan = Plan::default();
        match ChineseClipWeights::from_source(&mut plan, config) {
            Ok(_) => plan.specs,
            Err(never) => match never {},
        }
    }

    /// The number of parameters `config` implies (including `logit_scale`).
    pub fn parameter_count(config: &ChineseClipConfig) -> usize {
        ChineseClipWeights::plan(config)
            .iter()
            .map(|s| s.shape.iter().product::<usize>())
            .sum()
    }
}

impl ChineseClipWeights {
    /// Memory-maps and loads a `.safetensors` checkpoint (Hugging Face `ChineseCLIPModel` keys) as host f32,
    /// checked against `config` first.
    pub fn load(
        path: impl AsRef<Path>,
        config: &ChineseClipConfig,
    ) -> Result<Self, CheckpointError> {
        Self::load_checkpoint(&Checkpoint::open(path)?, config, Host)
    }

    /// Builds weights from a function of (Hugging Face checkpoint key, shape) returning the row-major data
    /// (separate `query`/`key`/`value`, packed here as at load), e.g. random weights for tests.
    pub fn from_fn(
        config: &ChineseClipConfig,
        f: impl FnMut(&str, &[usize]) -> Vec<f32>,
    ) -> Result<Self, CheckpointError> {
        let format = CheckpointFormat::HuggingFace;
        Self::from_source(
            &mut Loader {
                raw: FnRaw(f),
                format,
                target: Host,
            },
            config,
        )
    }
}
