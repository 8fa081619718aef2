//! CLIP model configurations.
//!
//! A [`ClipConfig`] describes the two towers of a CLIP model (a ViT image encoder and a
//! causal text transformer) plus the shared projection. It can come from
//!
//! - a Hugging Face `CLIPModel` `config.json` ([`ClipConfig::from_hf_json_str`],
//!   [`ClipConfig::from_hf_json_file`]); keys missing from `vision_config` / `text_config`
//!   take the defaults of HF's `CLIPVisionConfig` / `CLIPTextConfig`;
//! - an open_clip model JSON such as `ViT-H-14.json` or a hub `open_clip_config.json`
//!   ([`ClipConfig::from_open_clip_json_str`], [`ClipConfig::from_open_clip_json_file`]);
//! - a built-in preset ([`ClipConfig::preset`]).
//!
//! Every constructor runs [`ClipConfig::validate`], so a config you hold is one the CUDA
//! kernels can run. The fields are public: a config built by hand should be validated too.

use std::fmt;
use std::path::Path;

use serde_json::Value;

pub(crate) mod assumed;
mod error;
pub(crate) mod field;
pub(crate) mod hf;
mod open_clip;
mod presets;
pub(crate) mod validate;

pub use assumed::{Assumed, AssumedDefault};
pub use error::ConfigError;
pub(crate) use open_clip::parse as parse_open_clip;
pub(crate) use validate::{MAX_LAYERS, MAX_PATCHES, MAX_WIDTH};

/// Attention head sizes the CUDA attention kernels are instantiated for.
pub const SUPPORTED_HEAD_DIMS: [usize; 7] = [64, 72, 80, 96, 104, 112, 128];

/// Activation function of the MLP blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Activation {
    /// OpenAI's `x * sigmoid(1.702 x)` (HF `"quick_gelu"`).
    QuickGelu,
    /// Exact GELU, `x * Φ(x)` with the erf form (HF `"gelu"`, PyTorch `nn.GELU()`).
    Gelu,
    /// Tanh-approximated GELU (HF `"gelu_new"` / `"gelu_pytorch_tanh"`).
    GeluTanh,
}

impl Activation {
    /// Parses a Hugging Face `hidden_act` name.
    pub fn from_hf_name(name: &str) -> Result<Self, ConfigError> {
        match name {
            "quick_gelu" => Ok(Activation::QuickGelu),
            "gelu" => Ok(Activation::Gelu),
            "gelu_new" | "gelu_pytorch_tanh" => Ok(Activation::GeluTanh),
            other => Err(ConfigError::UnknownActivation {
                name: other.to_string(),
            }),
        }
    }

    /// The canonical Hugging Face name (`"quick_gelu"`, `"gelu"`, `"gelu_pytorch_tanh"`).
    pub fn hf_name(self) -> &'static str {
        match self {
            Activation::QuickGelu => "quick_gelu",
            Activation::Gelu => "gelu",
            Activation::GeluTanh => "gelu_pytorch_tanh",
        }
    }
}

impl fmt::Display for Activation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.hf_name())
    }
}

/// Configuration of the vision tower (a pre-norm ViT with a class token).
#[derive(Debug, Clone, PartialEq)]
pub struct VisionConfig {
    /// Width of the residual stream.
    pub hidden_size: usize,
    /// Width of the MLP hidden layer.
    pub intermediate_size: usize,
    /// Number of encoder layers.
    pub num_hidden_layers: usize,
    /// Number of attention heads.
    pub num_attention_heads: usize,
    /// Input image side in pixels (images are square).
    pub image_size: usize,
    /// Patch side in pixels (the stride of the patch-embedding convolution).
    pub patch_size: usize,
    /// Input channels (3 for RGB).
    pub num_channels: usize,
    /// LayerNorm epsilon.
    pub layer_norm_eps: f64,
    /// MLP activation.
    pub hidden_act: Activation,
}

impl VisionConfig {
    /// Size of one attention head (`hidden_size / num_attention_heads`; 0 if there are no heads).
    pub fn head_dim(&self) -> usize {
        self.hidden_size
            .checked_div(self.num_attention_heads)
            .unwrap_or(0)
    }

    /// Patches along one side of the image.
    pub fn grid_size(&self) -> usize {
        self.image_size.checked_div(self.patch_size).unwrap_or(0)
    }

    /// Number of image patches (`grid_size²`). Saturates instead of wrapping; a validated
    /// config has at most `MAX_PATCHES`.
    pub fn num_patches(&self) -> usize {
        self.grid_size().saturating_mul(self.grid_size())
    }

    /// Sequence length of the vision transformer: patches plus the class token.
    pub fn seq_len(&self) -> usize {
        self.num_patches().saturating_add(1)
    }

    /// Length of one flattened patch, `num_channels * patch_size²` (the patch-embedding
    /// GEMM's inner dimension).
    pub fn patch_dim(&self) -> usize {
        self.num_channels
            .saturating_mul(self.patch_size)
            .saturating_mul(self.patch_size)
    }
}

/// Configuration of the text tower (a pre-norm causal transformer).
#[derive(Debug, Clone, PartialEq)]
pub struct TextConfig {
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Width of the residual stream.
    pub hidden_size: usize,
    /// Width of the MLP hidden layer.
    pub intermediate_size: usize,
    /// Number of encoder layers.
    pub num_hidden_layers: usize,
    /// Number of attention heads.
    pub num_attention_heads: usize,
    /// Maximum sequence length (context length, 77 for CLIP).
    pub max_position_embeddings: usize,
    /// LayerNorm epsilon.
    pub layer_norm_eps: f64,
    /// MLP activation.
    pub hidden_act: Activation,
    /// Start-of-text token id.
    pub bos_token_id: u32,
    /// End-of-text token id; the text embedding is read at this token. The legacy value 2
    /// (old HF configs) means "pool at the largest token id" instead.
    pub eos_token_id: u32,
    /// Padding token id.
    pub pad_token_id: u32,
}

impl TextConfig {
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

    /// Whether pooling uses HF's legacy rule (argmax of token ids) because `eos_token_id == 2`.
    pub fn legacy_eos_pooling(&self) -> bool {
        self.eos_token_id == 2
    }
}

/// Configuration of a whole CLIP model.
#[derive(Debug, Clone, PartialEq)]
pub struct ClipConfig {
    /// Image tower.
    pub vision: VisionConfig,
    /// Text tower.
    pub text: TextConfig,
    /// Width of the shared embedding space.
    pub projection_dim: usize,
    /// Initial value of the (log) logit scale; the checkpoint's `logit_scale` wins at load.
    pub logit_scale_init: f32,
}

/// Natural log of 1/0.07: the logit-scale init of OpenAI CLIP and open_clip.
pub(crate) const OPENAI_LOGIT_SCALE_INIT: f32 = 2.659_260_2;

/// CLIP BPE special token ids (`<|startoftext|>`, `<|endoftext|>`), used by presets and
/// open_clip configs.
pub(crate) const CLIP_BOS: u32 = 49406;
pub(crate) const CLIP_EOS: u32 = 49407;
pub(crate) const CLIP_VOCAB: usize = 49408;

impl ClipConfig {
    /// Parses a Hugging Face `CLIPModel` `config.json` from a string.
    ///
    /// Reads `vision_config`, `text_config` (or the legacy `*_config_dict`), `projection_dim`
    /// and `logit_scale_init_value`; absent or `null` keys take HF's defaults (ViT-B/32).
    /// Unknown keys are ignored. The result is validated.
    pub fn from_hf_json_str(text: &str) -> Result<ClipConfig, ConfigError> {
        Self::from_hf_value(&parse_json(text, "config string")?)
    }

    /// Reads and parses a Hugging Face `config.json` file (see [`Self::from_hf_json_str`]).
    pub fn from_hf_json_file(path: impl AsRef<Path>) -> Result<ClipConfig, ConfigError> {
        Self::from_hf_value(&read_json(path.as_ref())?)
    }

    /// Builds a config from an already-parsed Hugging Face `config.json`.
    pub fn from_hf_value(value: &Value) -> Result<ClipConfig, ConfigError> {
        hf::parse(value).map(|(config, _)| config)
    }

    /// Parses an open_clip model config (e.g. `ViT-H-14.json`) from a string.
    ///
    /// Accepts the bare model config (`embed_dim`, `vision_cfg`, `text_cfg`, optional
    /// `quick_gelu`) or a hub `open_clip_config.json` that wraps it in `model_cfg`.
    /// Missing keys take open_clip's `CLIPVisionCfg` / `CLIPTextCfg` defaults; heads of the
    /// vision tower are `width / head_width`, MLP widths `int(width * mlp_ratio)`.
    /// Activation is exact GELU unless `"quick_gelu": true`; LayerNorm eps is 1e-5.
    /// Architecture variants this crate doesn't run (ResNet or timm towers, HF text towers,
    /// attentional pooling, layer scale, ...) are rejected with [`ConfigError::Unsupported`].
    pub fn from_open_clip_json_str(text: &str) -> Result<ClipConfig, ConfigError> {
        Self::from_open_clip_value(&parse_json(text, "config string")?)
    }

    /// Reads and parses an open_clip model config file (see [`Self::from_open_clip_json_str`]).
    pub fn from_open_clip_json_file(path: impl AsRef<Path>) -> Result<ClipConfig, ConfigError> {
        Self::from_open_clip_value(&read_json(path.as_ref())?)
    }

    /// Builds a config from an already-parsed open_clip model config.
    pub fn from_open_clip_value(value: &Value) -> Result<ClipConfig, ConfigError> {
        open_clip::parse_validated(value).map(|(config, _)| config)
    }

    /// Reads a config file in either format: a JSON with `vision_cfg`/`text_cfg`/`embed_dim`
    /// or `model_cfg` is read as open_clip, anything else as Hugging Face.
    pub fn from_json_file(path: impl AsRef<Path>) -> Result<ClipConfig, ConfigError> {
        Self::from_json_file_noting_defaults(path).map(|(config, _)| config)
    }

    /// Like [`Self::from_json_file`], and also returns which defaults were assumed for
    /// keys the file leaves out.
    pub fn from_json_file_noting_defaults(
        path: impl AsRef<Path>,
    ) -> Result<(ClipConfig, Assumed), ConfigError> {
        Self::from_value_noting_defaults(&read_json(path.as_ref())?)
    }

    /// Like [`Self::from_json_file_noting_defaults`], for the text of a config file.
    pub fn from_json_str_noting_defaults(text: &str) -> Result<(ClipConfig, Assumed), ConfigError> {
        Self::from_value_noting_defaults(&parse_json(text, "config string")?)
    }

    fn from_value_noting_defaults(value: &Value) -> Result<(ClipConfig, Assumed), ConfigError> {
        if is_open_clip(value) {
            open_clip::parse_validated(value)
        } else {
            hf::parse(value)
        }
    }
}

/// Whether a parsed config file is open_clip's format (else Hugging Face's).
pub(crate) fn is_open_clip(value: &Value) -> bool {
    value.as_object().is_some_and(|m| {
        ["model_cfg", "vision_cfg", "text_cfg", "embed_dim"]
            .iter()
            .any(|k| m.contains_key(*k))
    })
}

pub(crate) fn parse_json(text: &str, origin: &str) -> Result<Value, ConfigError> {
    serde_json::from_str(text).map_err(|source| ConfigError::Json {
        origin: origin.to_string(),
        source,
    })
}

/// Reads and parses a JSON file, telling a missing file from an unreadable one.
pub(crate) fn read_json(path: &Path) -> Result<Value, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| {
        if source.kind() == std::io::ErrorKind::NotFound {
            ConfigError::NotFound {
                path: path.to_path_buf(),
            }
        } else {
            ConfigError::Io {
                path: path.to_path_buf(),
                source,
            }
        }
    })?;
    parse_json(&text, &path.display().to_string())
}
