//! The model families flashclip runs, told apart by a Hugging Face `config.json`'s `model_type`, and what front
//! ends need of any of them: [`ModelConfig`] (the family's config), [`AnyTokenizer`] (its tokenizer),
//! [`open_model_dir`] (config and checkpoint checked against each other) and [`crate::backend::load`] (an
//! [`crate::Embedder`]) and [`ModelConfig::preprocessor`] (the family's image transform).
//!
//! Adding a family: a variant in [`Family`] (with its `model_type`s in [`Family::from_model_type`]), in
//! [`ModelConfig`] (with its arms in the accessors below), in [`AnyTokenizer`] if its tokenizer is new, the checkpoint
//! check in [`open_model_dir`], its CPU and GPU [`crate::Embedder`]s in [`crate::backend::load`], and its
//! [`FlopsInput`]; and [`ModelConfig::preprocessor`] if its image transform differs from CLIP's. Front ends see only
//! these types.

use std::path::Path;

use serde_json::Value;

use crate::checkpoint::{find_in_dir, Checkpoint, CheckpointError, CHECKPOINT_FILES, CONFIG_FILES};
use crate::chinese_clip::{self, BertTokenizer, ChineseClipConfig};
use crate::config::{self, ClipConfig, ConfigError};
use crate::flops::FlopsInput;
use crate::preprocess::Preprocessor;
use crate::siglip::{self, SiglipConfig, SiglipTokenizer};
use crate::tokenizer::{ClipTokenizer, TokenizerError, TokenizerOrigin};

/// A model family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// CLIP (Hugging Face `CLIPModel`, open_clip, OpenAI).
    Clip,
    /// Chinese-CLIP (Hugging Face `ChineseCLIPModel`).
    ChineseClip,
    /// SigLIP (Hugging Face `SiglipModel`, SigLIP 2 at fixed resolution).
    Siglip,
}

/// SigLIP's `model_type`.
const SIGLIP_MODEL_TYPE: &str = "siglip";

/// The `model_type`s flashclip knows, for error messages.
const KNOWN_MODEL_TYPES: [&str; 3] = ["clip", chinese_clip::MODEL_TYPE, SIGLIP_MODEL_TYPE];

impl Family {
    /// The family of a `model_type`, or an error naming the known ones.
    pub fn from_model_type(model_type: &str) -> Result<Family, ConfigError> {
        match model_type {
            "clip" => Ok(Family::Clip),
            chinese_clip::MODEL_TYPE => Ok(Family::ChineseClip),
            SIGLIP_MODEL_TYPE => Ok(Family::Siglip),
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

    /// A short name for logs ("CLIP", "Chinese-CLIP", "SigLIP").
    pub fn name(self) -> &'static str {
        match self {
            Family::Clip => "CLIP",
            Family::ChineseClip => "Chinese-CLIP",
            Family::Siglip => "SigLIP",
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
    /// A SigLIP model.
    Siglip(SiglipConfig),
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

impl From<SiglipConfig> for ModelConfig {
    fn from(config: SiglipConfig) -> Self {
        ModelConfig::Siglip(config)
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
            Family::Siglip => SiglipConfig::from_hf_value(&value)?.into(),
        })
    }

    /// A preset of any family: CLIP's names first, then Chinese-CLIP's (`CN-CLIP-ViT-L-14-336`) and SigLIP's
    /// (`siglip-so400m-patch14-384`, with or without `google/`).
    pub fn preset(name: &str) -> Result<ModelConfig, ConfigError> {
        match ClipConfig::preset(name) {
            Ok(config) => Ok(config.into()),
            Err(clip_error) => {
                let lower = name.to_ascii_lowercase();
                if lower.starts_with("cn-clip") {
                    Ok(ChineseClipConfig::preset(name)?.into())
                } else if lower.trim_start_matches("google/").starts_with("siglip") {
                    Ok(SiglipConfig::preset(name)?.into())
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
            ModelConfig::Siglip(_) => Family::Siglip,
        }
    }

    /// The side of the square images the image tower takes, in pixels.
    pub fn image_size(&self) -> usize {
        match self {
            ModelConfig::Clip(c) => c.vision.image_size,
            ModelConfig::ChineseClip(c) => c.vision.image_size,
            ModelConfig::Siglip(c) => c.vision.image_size,
        }
    }

    /// The family's image transform at [`Self::image_size`]: CLIP's resize, center crop and normalization for CLIP
    /// and Chinese-CLIP; for SigLIP a resize straight to the square, with the mean and std of `dir`'s
    /// `preprocessor_config.json` when there is one (else SigLIP's 0.5).
    pub fn preprocessor(&self, dir: Option<&Path>) -> Result<Preprocessor, ConfigError> {
        let size = self.image_size();
        let side = u32::try_from(size).map_err(|_| ConfigError::Unsupported {
            what: format!("image size {size}"),
        })?;
        let ModelConfig::Siglip(_) = self else {
            return Ok(Preprocessor::new(side));
        };
        let file = dir
            .map(|d| d.join("preprocessor_config.json"))
            .filter(|p| p.is_file());
        let Some(file) = file else {
            return Ok(Preprocessor::siglip(side));
        };
        let pre = siglip::preprocessor_from_config(&file)?;
        if pre.output_len() != Preprocessor::siglip(side).output_len() {
            return Err(ConfigError::Inconsistent {
                message: format!(
                    "{} resizes to another size than the model's {size}x{size} images",
                    file.display()
                ),
            });
        }
        Ok(pre)
    }

    /// Width of the shared embedding space.
    pub fn projection_dim(&self) -> usize {
        match self {
            ModelConfig::Clip(c) => c.projection_dim,
            ModelConfig::ChineseClip(c) => c.projection_dim,
            ModelConfig::Siglip(c) => c.embed_dim(),
        }
    }

    /// The text context texts are tokenized to: CLIP's 77 (its position table), Chinese-CLIP's 52, SigLIP's
    /// position table (texts are padded to exactly this length).
    pub fn context_length(&self) -> usize {
        match self {
            ModelConfig::Clip(c) => c.text.max_len(),
            ModelConfig::ChineseClip(c) => {
                chinese_clip::DEFAULT_CONTEXT_LENGTH.min(c.text.max_len())
            }
            ModelConfig::Siglip(c) => c.text.max_position_embeddings,
        }
    }

    /// The text tower's vocabulary size.
    pub fn vocab_size(&self) -> usize {
        match self {
            ModelConfig::Clip(c) => c.text.vocab_size,
            ModelConfig::ChineseClip(c) => c.text.vocab_size,
            ModelConfig::Siglip(c) => c.text.vocab_size,
        }
    }

    /// The CLIP config, if this is a CLIP model.
    pub fn as_clip(&self) -> Option<&ClipConfig> {
        match self {
            ModelConfig::Clip(c) => Some(c),
            ModelConfig::ChineseClip(_) | ModelConfig::Siglip(_) => None,
        }
    }

    /// The model's shape for FLOP counting.
    pub fn flops_input(&self) -> FlopsInput {
        match self {
            ModelConfig::Clip(c) => FlopsInput::from(c),
            ModelConfig::ChineseClip(c) => FlopsInput::from(c),
            ModelConfig::Siglip(c) => FlopsInput::from(c),
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
        ModelConfig::Siglip(c) => siglip::check_checkpoint(&checkpoint, c)?,
    }
    Ok((config, checkpoint))
}

/// One text tokenized for the model by [`AnyTokenizer::encode_within`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fitted {
    /// The ids the model takes (SigLIP's padded to the context) and the text's own token count (start and end
    /// tokens included, padding not).
    Fits {
        /// Token ids.
        ids: Vec<u32>,
        /// Tokens of the text itself.
        tokens: usize,
    },
    /// Longer than the context: its token count, unless the tokenizer cut it before it could be counted (SigLIP).
    TooLong {
        /// Tokens of the whole text, where known.
        tokens: Option<usize>,
    },
}

/// The tokenizer of a model of any family.
#[derive(Debug, Clone)]
pub enum AnyTokenizer {
    /// CLIP's byte-level BPE.
    Clip(ClipTokenizer),
    /// BERT's WordPiece (Chinese-CLIP).
    Bert(BertTokenizer),
    /// SigLIP's SentencePiece `tokenizer.json`, padded to the context.
    Siglip(SiglipTokenizer),
}

impl AnyTokenizer {
    /// The tokenizer of a model directory: for CLIP its own files or else OpenAI's
    /// ([`ClipTokenizer::for_model_dir`]); for Chinese-CLIP its `tokenizer.json` or `vocab.txt` (required); for
    /// SigLIP its `tokenizer.json` (required; with only `spiece.model` the error says how to convert it).
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
            Family::Siglip => (
                AnyTokenizer::Siglip(SiglipTokenizer::from_dir(dir, config.context_length())?),
                TokenizerOrigin::ModelDir,
            ),
        })
    }

    /// The ids of an empty text: the start and end tokens only (SigLIP: the pad token over the whole context).
    pub fn empty_text(&self) -> Vec<u32> {
        match self {
            AnyTokenizer::Clip(t) => vec![t.bos_id(), t.eos_id()],
            AnyTokenizer::Bert(t) => vec![t.cls_id(), t.sep_id()],
            AnyTokenizer::Siglip(t) => vec![t.pad_id(); t.max_len()],
        }
    }

    /// Tokenizes one text, not truncated; SigLIP's is truncated and padded to its context, as the model takes it
    /// (and as Hugging Face's processor does).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, TokenizerError> {
        match self {
            AnyTokenizer::Clip(t) => t.encode(text),
            AnyTokenizer::Bert(t) => t.encode(text),
            AnyTokenizer::Siglip(t) => Ok(t.encode_batch(&[text])?.ids.pop().unwrap_or_default()),
        }
    }

    /// Tokenizes one text for the model, for callers that refuse texts longer than the context rather than cut
    /// them.
    pub fn encode_within(
        &self,
        text: &str,
        context_length: usize,
    ) -> Result<Fitted, TokenizerError> {
        if let AnyTokenizer::Siglip(t) = self {
            let mut out = t.encode_batch(&[text])?;
            return Ok(
                match (out.ids.pop(), out.lengths.pop(), out.truncated.pop()) {
                    (Some(ids), Some(tokens), Some(false)) if ids.len() <= context_length => {
                        Fitted::Fits { ids, tokens }
                    }
                    _ => Fitted::TooLong { tokens: None },
                },
            );
        }
        let ids = self.encode(text)?;
        let tokens = ids.len();
        Ok(if tokens <= context_length {
            Fitted::Fits { ids, tokens }
        } else {
            Fitted::TooLong {
                tokens: Some(tokens),
            }
        })
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
            // Its own context, the model's position table (`for_model_dir` sets it from the config).
            AnyTokenizer::Siglip(t) => Ok(t.encode_batch(texts)?.ids),
        }
    }

    /// Number of token ids, special tokens included.
    pub fn vocab_size(&self) -> usize {
        match self {
            AnyTokenizer::Clip(t) => t.vocab_size(),
            AnyTokenizer::Bert(t) => t.vocab_size(),
            AnyTokenizer::Siglip(t) => t.vocab_size(),
        }
    }

    /// The largest token id, special tokens included.
    pub fn max_token_id(&self) -> Option<u32> {
        match self {
            AnyTokenizer::Clip(t) => t.max_token_id(),
            AnyTokenizer::Bert(t) => t.max_token_id(),
            AnyTokenizer::Siglip(t) => t.max_token_id(),
        }
    }
}
