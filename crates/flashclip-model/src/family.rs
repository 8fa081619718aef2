//! The model families flashclip runs, told apart by a Hugging Face `config.json`'s `model_type`, and what front
//! ends need of any of them: [`ModelConfig`] (the family's config), [`AnyTokenizer`] (its tokenizer),
//! [`open_model_dir`] (config and checkpoint checked against each other) and [`crate::backend::load`] (an
//! [`crate::Embedder`]).
//!
//! Adding a family: a variant in [`Family`] (with its `model_type`s in [`Family::from_model_type`]), in
//! [`ModelConfig`] (with its arms in the accessors below), in [`AnyTokenizer`] if its tokenizer is new, the checkpoint
//! check in [`open_model_dir`], its CPU and GPU [`crate::Embedder`]s in [`crate::backend::load`], and its
//! [`FlopsInput`]. Front ends see only these types.

use std::path::Path;

use serde_json::Value;

use crate::checkpoint::{find_in_dir, Checkpoint, CheckpointError, CHECKPOINT_FILES, CONFIG_FILES};
use crate::chinese_clip::{self, BertTokenizer, ChineseClipConfig};
use crate::config::{self, ClipConfig, ConfigError, VisionConfig};
use crate::flops::FlopsInput;
use crate::tokenizer::{ClipTokenizer, TokenizerError, TokenizerOrigin};

/// A model family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// CLIP (Hugging Face `CLIPModel`, open_clip, OpenAI).
    Clip,
    /// Chinese-CLIP (Hugging Face `ChineseCLIPModel`).
    ChineseClip,
}

/// The `model_type`s flashclip knows, for error messages.
const KNOWN_MODEL_TYPES: [&str; 2] = ["clip", chinese_clip::MODEL_TYPE];

impl Family {
    /// The family of a `model_type`, or an error naming the known ones.
    pub fn from_model_type(model_type: &str) -> Result<Family, ConfigError> {
        match model_type {
            "clip" => Ok(Family::Clip),
            chinese_clip::MODEL_TYPE => Ok(Family::ChineseClip),
            other => Err(ConfigError::Unsupported {
                what: format!(
                    "model_type \"{other}\" (known model types: {})",
                    KNOWN_MODEL_TYPES.join(", ")
                ),
            }),
        }
    }

    /// The family of a parsed config file: open_clip's format and a Hugging Face config without `model_type` are
    /// CLIP.
    pub fn of_config(value: &Value) -> Result<Family, ConfigError> {
        if config::is_open_clip(value) {
            return Ok(Family::Clip);
        }
        match value.get("model_type") {
            None | Some(Value::Null) => Ok(Family::Clip),
            Some(Value::String(model_type)) => Family::from_model_type(model_type),
            Some(other) => Err(ConfigError::WrongType {
                field: "model_type".into(),
                expected: "a string",
                found: other.to_string(),
            }),
        }
    }

    /// A short name for logs ("CLIP", "Chinese-CLIP").
    pub fn name(self) -> &'static str {
        match self {
            Family::Clip => "CLIP",
            Family::ChineseClip => "Chinese-CLIP",
        }
    }
}

/// The config of a model of any family.
#[derive(Debug, Clone, PartialEq)]
pub enum ModelConfig {
    /// A CLIP model.
    Clip(ClipConfig),
    /// A Chinese-CLIP model.
    ChineseClip(ChineseClipConfig),
}

impl From<ClipConfig> for ModelConfig {
    fn from(config: ClipConfig) -> Self {
        ModelConfig::Clip(config)
    }
}

impl From<&ClipConfig> for ModelConfig {
    fn from(config: &ClipConfig) -> Self {
        ModelConfig::Clip(config.clone())
    }
}

impl From<&ModelConfig> for ModelConfig {
    fn from(config: &ModelConfig) -> Self {
        config.clone()
    }
}

impl From<ChineseClipConfig> for ModelConfig {
    fn from(config: ChineseClipConfig) -> Self {
        ModelConfig::ChineseClip(config)
    }
}

impl ModelConfig {
    /// Reads a config file of any family (detected by [`Family::of_config`]).
    pub fn from_json_file(path: impl AsRef<Path>) -> Result<ModelConfig, ConfigError> {
        let path = path.as_ref();
        let value = config::read_json(path)?;
        Ok(match Family::of_config(&value)? {
            Family::Clip => ClipConfig::from_json_file(path)?.into(),
            Family::ChineseClip => ChineseClipConfig::from_hf_value(&value)?.0.into(),
        })
    }

    /// A preset of any family: CLIP's names first, then Chinese-CLIP's (`CN-CLIP-ViT-L-14-336`).
    pub fn preset(name: &str) -> Result<ModelConfig, ConfigError> {
        match ClipConfig::preset(name) {
            Ok(config) => Ok(config.into()),
            Err(clip_error) => {
                if name.to_ascii_lowercase().starts_with("cn-clip") {
                    Ok(ChineseClipConfig::preset(name)?.into())
                } else {
                    Err(clip_error)
                }
            }
        }
    }

    /// The family.
    pub fn family(&self) -> Family {
        match self {
            ModelConfig::Clip(_) => Family::Clip,
            ModelConfig::ChineseClip(_) => Family::ChineseClip,
        }
    }

    /// The image tower (CLIP's ViT in every family so far).
    pub fn vision(&self) -> &VisionConfig {
        match self {
            ModelConfig::Clip(c) => &c.vision,
            ModelConfig::ChineseClip(c) => &c.vision,
        }
    }

    /// Width of the shared embedding space.
    pub fn projection_dim(&self) -> usize {
        match self {
            ModelConfig::Clip(c) => c.projection_dim,
            ModelConfig::ChineseClip(c) => c.projection_dim,
        }
    }

    /// The text context texts are tokenized to: CLIP's 77 (its position table), Chinese-CLIP's 52.
    pub fn context_length(&self) -> usize {
        match self {
            ModelConfig::Clip(c) => c.text.max_len(),
            ModelConfig::ChineseClip(c) => {
                chinese_clip::DEFAULT_CONTEXT_LENGTH.min(c.text.max_len())
            }
        }
    }

    /// The text tower's vocabulary size.
    pub fn vocab_size(&self) -> usize {
        match self {
            ModelConfig::Clip(c) => c.text.vocab_size,
            ModelConfig::ChineseClip(c) => c.text.vocab_size,
        }
    }

    /// The CLIP config, if this is a CLIP model.
    pub fn as_clip(&self) -> Option<&ClipConfig> {
        match self {
            ModelConfig::Clip(c) => Some(c),
            ModelConfig::ChineseClip(_) => None,
        }
    }

    /// The model's shape for FLOP counting.
    pub fn flops_input(&self) -> FlopsInput {
        match self {
            ModelConfig::Clip(c) => FlopsInput::from(c),
            ModelConfig::ChineseClip(c) => FlopsInput::from(c),
        }
    }
}

/// Opens a model directory of any family: the config from `config.json` (or `open_clip_config.json`), the
/// checkpoint from `model.safetensors` (or `open_clip_model.safetensors`), checked against each other before
/// returning. No tensor data is read.
pub fn open_model_dir(dir: impl AsRef<Path>) -> Result<(ModelConfig, Checkpoint), CheckpointError> {
    let dir = dir.as_ref();
    let config = ModelConfig::from_json_file(find_in_dir(dir, "config", CONFIG_FILES)?)?;
    let checkpoint = Checkpoint::open(find_in_dir(dir, "checkpoint", CHECKPOINT_FILES)?)?;
    match &config {
        ModelConfig::Clip(c) => {
            checkpoint.check(c)?;
        }
        ModelConfig::ChineseClip(c) => chinese_clip::weights::check(&checkpoint, c)?,
    }
    Ok((config, checkpoint))
}

/// The tokenizer of a model of any family.
#[derive(Debug, Clone)]
pub enum AnyTokenizer {
    /// CLIP's byte-level BPE.
    Clip(ClipTokenizer),
    /// BERT's WordPiece (Chinese-CLIP).
    Bert(BertTokenizer),
}

impl AnyTokenizer {
    /// The tokenizer of a model directory: for CLIP its own files or else OpenAI's
    /// ([`ClipTokenizer::for_model_dir`]); for Chinese-CLIP its `tokenizer.json` or `vocab.txt` (required).
    pub fn for_model_dir(
        dir: impl AsRef<Path>,
        config: &ModelConfig,
    ) -> Result<(AnyTokenizer, TokenizerOrigin), TokenizerError> {
        Ok(match config.family() {
            Family::Clip => {
                let (t, origin) = ClipTokenizer::for_model_dir(dir)?;
                (AnyTokenizer::Clip(t), origin)
            }
            Family::ChineseClip => (
                AnyTokenizer::Bert(BertTokenizer::from_dir(dir)?),
                TokenizerOrigin::ModelDir,
            ),
        })
    }

    /// The ids of an empty text: the start and end tokens only.
    pub fn empty_text(&self) -> Vec<u32> {
        match self {
            AnyTokenizer::Clip(t) => vec![t.bos_id(), t.eos_id()],
            AnyTokenizer::Bert(t) => vec![t.cls_id(), t.sep_id()],
        }
    }

    /// Tokenizes one text, not truncated.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, TokenizerError> {
        match self {
            AnyTokenizer::Clip(t) => t.encode(text),
            AnyTokenizer::Bert(t) => t.encode(text),
        }
    }

    /// Tokenizes texts in parallel, each to at most `context_length` ids (the family's truncation).
    pub fn encode_batch<S: AsRef<str>>(
        &self,
        texts: &[S],
        context_length: usize,
    ) -> Result<Vec<Vec<u32>>, TokenizerError> {
        match self {
            AnyTokenizer::Clip(t) => t.encode_batch(texts, context_length),
            AnyTokenizer::Bert(t) => t.encode_batch(texts, context_length),
        }
    }

    /// Number of token ids, special tokens included.
    pub fn vocab_size(&self) -> usize {
        match self {
            AnyTokenizer::Clip(t) => t.vocab_size(),
            AnyTokenizer::Bert(t) => t.vocab_size(),
        }
    }

    /// The largest token id, special tokens included.
    pub fn max_token_id(&self) -> Option<u32> {
        match self {
            AnyTokenizer::Clip(t) => t.max_token_id(),
            AnyTokenizer::Bert(t) => t.max_token_id(),
        }
    }
}
