//! Chinese-CLIP configs: Hugging Face `ChineseCLIPConfig` `config.json` files (with the defaults of transformers'
//! `ChineseCLIPTextConfig` / `ChineseCLIPVisionConfig` / `ChineseCLIPConfig`) and presets of the published sizes.

use std::path::Path;

use serde::Deserialize;
use serde_json::Value;

use crate::config::assumed::{Assumed, Defaults, Reader};
use crate::config::field::{Field, TokenId};
use crate::config::hf::{activation, clip_layout};
use crate::config::validate::{
    check_eps, check_grid, check_heads, check_ids, check_logit_scale, check_sizes, noting,
    vision_sizes, Failure, MAX_LAYERS, MAX_VOCAB, MAX_WIDTH,
};
use crate::config::{parse_json, read_json, Activation, ConfigError, VisionConfig};
use crate::flops::{FlopsInput, TowerShape};

/// The `model_type` of a Chinese-CLIP `config.json`.
pub const MODEL_TYPE: &str = "chinese_clip";

/// The context length Chinese-CLIP was trained with (`cn_clip`'s `context_length`): texts are tokenized to at
/// most this many ids, `[CLS]` and `[SEP]` included.
pub const DEFAULT_CONTEXT_LENGTH: usize = 52;

/// Most token types (BERT has 2; a bound before anything is sized by it).
const MAX_TYPE_VOCAB: usize = 1024;

/// The text tower: a BERT (RoBERTa-wwm-ext in the released models) encoder.
#[derive(Debug, Clone, PartialEq)]
pub struct BertConfig {
    /// Vocabulary size (21128 for the released models).
    pub vocab_size: usize,
    /// Width of the residual stream.
    pub hidden_size: usize,
    /// Width of the MLP (`intermediate`) layer.
    pub intermediate_size: usize,
    /// Number of encoder layers.
    pub num_hidden_layers: usize,
    /// Number of attention heads.
    pub num_attention_heads: usize,
    /// Rows of the position table (512 for the released models); the longest text the model accepts.
    pub max_position_embeddings: usize,
    /// Rows of the token-type table (2). Chinese-CLIP passes type 0 everywhere.
    pub type_vocab_size: usize,
    /// LayerNorm epsilon (1e-12 in BERT).
    pub layer_norm_eps: f64,
    /// MLP activation (`gelu`, the erf form, in BERT).
    pub hidden_act: Activation,
    /// Padding token id (0, `[PAD]`).
    pub pad_token_id: u32,
}

impl BertConfig {
    /// Size of one attention head (`hidden_size / num_attention_heads`; 0 if there are no heads).
    pub fn head_dim(&self) -> usize {
        self.hidden_size
            .checked_div(self.num_attention_heads)
            .unwrap_or(0)
    }

    /// Longest token sequence the model accepts (`max_position_embeddings`).
    pub fn max_len(&self) -> usize {
        self.max_position_embeddings
    }
}

/// A whole Chinese-CLIP model: CLIP's ViT (the same [`VisionConfig`]) and a BERT text tower.
#[derive(Debug, Clone, PartialEq)]
pub struct ChineseClipConfig {
    /// Image tower (CLIP's ViT).
    pub vision: VisionConfig,
    /// Text tower.
    pub text: BertConfig,
    /// Width of the shared embedding space.
    pub projection_dim: usize,
    /// Initial value of the (log) logit scale; the checkpoint's `logit_scale` wins at load.
    pub logit_scale_init: f32,
}

#[derive(Deserialize, Default, Clone)]
#[serde(default)]
struct Text {
    vocab_size: Field<usize>,
    hidden_size: Field<usize>,
    intermediate_size: Field<usize>,
    num_hidden_layers: Field<usize>,
    num_attention_heads: Field<usize>,
    max_position_embeddings: Field<usize>,
    type_vocab_size: Field<usize>,
    layer_norm_eps: Field<f64>,
    hidden_act: Field<String>,
    pad_token_id: Field<TokenId>,
}

impl ChineseClipConfig {
    /// The context texts are tokenized to: [`DEFAULT_CONTEXT_LENGTH`], or the position table if that is shorter.
    pub fn context_length(&self) -> usize {
        DEFAULT_CONTEXT_LENGTH.min(self.text.max_len())
    }

    /// Parses a Hugging Face `ChineseCLIPModel` `config.json` from a string; absent or `null` keys take
    /// transformers' defaults (ViT-B/32 vision, BERT-base text with a 30522-token vocabulary). The result is
    /// validated.
    pub fn from_hf_json_str(text: &str) -> Result<Self, ConfigError> {
        Self::from_hf_value(&parse_json(text, "config string")?).map(|(c, _)| c)
    }

    /// Reads and parses a Hugging Face `config.json` file (see [`Self::from_hf_json_str`]).
    pub fn from_hf_json_file(path: impl AsRef<Path>) -> Result<Self, ConfigError> {
        Self::from_hf_value(&read_json(path.as_ref())?).map(|(c, _)| c)
    }

    /// Builds a config from a parsed `config.json`, returning the defaults it assumed.
    pub fn from_hf_value(value: &Value) -> Result<(Self, Assumed), ConfigError> {
        let layout = clip_layout(
            value,
            MODEL_TYPE,
            |found| {
                format!("model_type \"{found}\" is not a Chinese-CLIP config (\"{MODEL_TYPE}\")")
            },
            bert,
        )?;
        let assumed = layout.assumed;
        let config = ChineseClipConfig {
            vision: layout.vision,
            text: layout.text,
            projection_dim: layout.projection_dim,
            logit_scale_init: layout.logit_scale_init,
        };
        config
            .check(true)
            .map_err(|f| noting(f.error, &assumed, &f.fields))?;
        Ok((config, assumed))
    }

    /// Checks that the config is self-consistent and runnable by the CUDA kernels: the vision tower as
    /// [`crate::config::ClipConfig::validate`] checks it; for the text tower nonzero sizes within limits, heads
    /// dividing the width into a supported head size, a positive finite LayerNorm eps and a pad id inside the
    /// vocabulary; a nonzero projection and a finite logit scale.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.check(true).map_err(|f| f.error)
    }

    /// The shape checks of [`Self::validate`] only, as the CPU reference needs them (any head size).
    pub(crate) fn validate_shape(&self) -> Result<(), ConfigError> {
        self.check(false).map_err(|f| f.error)
    }

    fn check(&self, kernels: bool) -> Result<(), Failure> {
        let (v, t) = (&self.vision, &self.text);
        let mut sizes = vision_sizes(v).to_vec();
        sizes.extend([
            ("text.vocab_size", t.vocab_size, MAX_VOCAB),
            ("text.hidden_size", t.hidden_size, MAX_WIDTH),
            ("text.intermediate_size", t.intermediate_size, MAX_WIDTH),
            ("text.num_hidden_layers", t.num_hidden_layers, MAX_LAYERS),
            ("text.num_attention_heads", t.num_attention_heads, MAX_WIDTH),
            (
                "text.max_position_embeddings",
                t.max_position_embeddings,
                MAX_WIDTH,
            ),
            ("text.type_vocab_size", t.type_vocab_size, MAX_TYPE_VOCAB),
            ("projection_dim", self.projection_dim, MAX_WIDTH),
        ]);
        check_sizes(&sizes)?;
        check_heads("vision", v.hidden_size, v.num_attention_heads, kernels)?;
        check_heads("text", t.hidden_size, t.num_attention_heads, kernels)?;
        check_grid(v)?;
        check_eps(&[
            ("vision.layer_norm_eps", v.layer_norm_eps),
            ("text.layer_norm_eps", t.layer_norm_eps),
        ])?;
        check_ids(&[("text.pad_token_id", t.pad_token_id)], t.vocab_size)?;
        check_logit_scale(self.logit_scale_init)
    }
}

fn bert(t: Text, prefix: &str, assumed: &mut Assumed) -> Result<BertConfig, ConfigError> {
    let mut r = Reader {
        assumed,
        prefix,
        defaults: Defaults::HuggingFace,
    };
    Ok(BertConfig {
        vocab_size: r.take(t.vocab_size, "vocab_size", 30522, &["text.vocab_size"])?,
        hidden_size: r.take(t.hidden_size, "hidden_size", 768, &["text.hidden_size"])?,
        intermediate_size: r.take(
            t.intermediate_size,
            "intermediate_size",
            3072,
            &["text.intermediate_size"],
        )?,
        num_hidden_layers: r.take(
            t.num_hidden_layers,
            "num_hidden_layers",
            12,
            &["text.num_hidden_layers"],
        )?,
        num_attention_heads: r.take(
            t.num_attention_heads,
            "num_attention_heads",
            12,
            &["text.num_attention_heads"],
        )?,
        max_position_embeddings: r.take(
            t.max_position_embeddings,
            "max_position_embeddings",
            512,
            &["text.max_position_embeddings"],
        )?,
        type_vocab_size: r.take(
            t.type_vocab_size,
            "type_vocab_size",
            2,
            &["text.type_vocab_size"],
        )?,
        layer_norm_eps: r.take(
            t.layer_norm_eps,
            "layer_norm_eps",
            1e-12,
            &["text.layer_norm_eps"],
        )?,
        hidden_act: activation(r.take(
            t.hidden_act,
            "hidden_act",
            "gelu".into(),
            &["text.hidden_act"],
        )?)?,
        pad_token_id: r
            .take(
                t.pad_token_id,
                "pad_token_id",
                TokenId(0),
                &["text.pad_token_id"],
            )?
            .0,
    })
}

/// The shape to count FLOPs of: CLIP's vision tower, and the BERT tower counted as CLIP's text tower is (the same
/// projections and norms per layer; the embedding LayerNorm stands where CLIP's final norm is), up to its whole
/// position table.
impl From<&ChineseClipConfig> for FlopsInput {
    fn from(config: &ChineseClipConfig) -> Self {
        let t = &config.text;
        let text = TowerShape::plain(
            t.hidden_size,
            t.num_hidden_layers,
            t.num_attention_heads,
            t.intermediate_size,
            t.max_position_embeddings,
            t.hidden_act,
        );
        FlopsInput::clip_layout(&config.vision, text, config.projection_dim)
    }
}
