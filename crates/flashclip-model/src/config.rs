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
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

/// Attention head sizes the CUDA attention kernels are instantiated for.
pub const SUPPORTED_HEAD_DIMS: [usize; 6] = [64, 80, 96, 104, 112, 128];

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

    /// Number of image patches (`grid_size²`).
    pub fn num_patches(&self) -> usize {
        self.grid_size() * self.grid_size()
    }

    /// Sequence length of the vision transformer: patches plus the class token.
    pub fn seq_len(&self) -> usize {
        self.num_patches() + 1
    }

    /// Length of one flattened patch, `num_channels * patch_size²` (the patch-embedding
    /// GEMM's inner dimension).
    pub fn patch_dim(&self) -> usize {
        self.num_channels * self.patch_size * self.patch_size
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

/// Errors from reading or validating a config.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file does not exist.
    #[error("config file not found: {}", path.display())]
    NotFound {
        /// The path that was tried.
        path: PathBuf,
    },
    /// The config file exists but could not be read.
    #[error("cannot read config file {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The text is not valid JSON.
    #[error("invalid JSON in {origin}: {source}")]
    Json {
        /// Where the text came from (a path, or "config string").
        origin: String,
        /// serde_json's message (with line and column).
        #[source]
        source: serde_json::Error,
    },
    /// A required key is absent.
    #[error("missing required field `{field}`")]
    MissingField {
        /// JSON path of the key, e.g. `vision_cfg.width`.
        field: String,
    },
    /// A key holds a value of the wrong type or out of range.
    #[error("field `{field}` must be {expected}, found {found}")]
    WrongType {
        /// JSON path of the key.
        field: String,
        /// What was expected, e.g. "a non-negative integer".
        expected: &'static str,
        /// The offending JSON value.
        found: String,
    },
    /// `hidden_act` names an activation the kernels don't implement.
    #[error(
        "unknown activation \"{name}\" (supported: quick_gelu, gelu, gelu_new, gelu_pytorch_tanh)"
    )]
    UnknownActivation {
        /// The name found.
        name: String,
    },
    /// [`ClipConfig::preset`] got a name it doesn't know.
    #[error("unknown preset \"{name}\"; valid presets: {}", valid.join(", "))]
    UnknownPreset {
        /// The name asked for.
        name: String,
        /// Every valid preset name.
        valid: Vec<&'static str>,
    },
    /// The config describes an architecture this crate does not implement.
    #[error("unsupported model: {what}")]
    Unsupported {
        /// What is unsupported and why.
        what: String,
    },
    /// A size or id is invalid on its own (zero, not finite, out of range).
    #[error("invalid `{field}` = {value}: {reason}")]
    InvalidField {
        /// Field path, e.g. `vision.patch_size`.
        field: &'static str,
        /// The value found.
        value: String,
        /// Why it is invalid.
        reason: String,
    },
    /// Two fields contradict each other.
    #[error("inconsistent config: {message}")]
    Inconsistent {
        /// Names both fields and their values.
        message: String,
    },
    /// A tower's head size is not one the attention kernels support.
    #[error(
        "unsupported head dimension {head_dim} in {tower} tower ({hidden_size} hidden / {num_heads} heads); supported: {supported:?}"
    )]
    UnsupportedHeadDim {
        /// "vision" or "text".
        tower: &'static str,
        /// `hidden_size / num_attention_heads`.
        head_dim: usize,
        /// The tower's hidden size.
        hidden_size: usize,
        /// The tower's head count.
        num_heads: usize,
        /// [`SUPPORTED_HEAD_DIMS`].
        supported: &'static [usize],
    },
}

// ---------------------------------------------------------------------------------------
// HF defaults (transformers' CLIPTextConfig / CLIPVisionConfig / CLIPConfig __init__).
// ---------------------------------------------------------------------------------------

const HF_DEFAULT_PROJECTION_DIM: usize = 512;
const HF_DEFAULT_LOGIT_SCALE_INIT: f64 = 2.6592;

/// Natural log of 1/0.07: the logit-scale init of OpenAI CLIP and open_clip.
const OPENAI_LOGIT_SCALE_INIT: f32 = 2.659_260_2;

/// CLIP BPE special token ids (`<|startoftext|>`, `<|endoftext|>`), used by presets and
/// open_clip configs.
const CLIP_BOS: u32 = 49406;
const CLIP_EOS: u32 = 49407;
const CLIP_VOCAB: usize = 49408;

fn default_vision() -> VisionConfig {
    VisionConfig {
        hidden_size: 768,
        intermediate_size: 3072,
        num_hidden_layers: 12,
        num_attention_heads: 12,
        image_size: 224,
        patch_size: 32,
        num_channels: 3,
        layer_norm_eps: 1e-5,
        hidden_act: Activation::QuickGelu,
    }
}

fn default_text() -> TextConfig {
    TextConfig {
        vocab_size: CLIP_VOCAB,
        hidden_size: 512,
        intermediate_size: 2048,
        num_hidden_layers: 12,
        num_attention_heads: 8,
        max_position_embeddings: 77,
        layer_norm_eps: 1e-5,
        hidden_act: Activation::QuickGelu,
        bos_token_id: CLIP_BOS,
        eos_token_id: CLIP_EOS,
        pad_token_id: 1,
    }
}

// ---------------------------------------------------------------------------------------
// JSON helpers: every accessor names the JSON path of the key it reads.
// ---------------------------------------------------------------------------------------

fn join(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_string()
    } else {
        format!("{prefix}.{key}")
    }
}

/// A JSON object together with its path, for error messages.
struct Obj<'a> {
    map: &'a Map<String, Value>,
    path: String,
}

impl<'a> Obj<'a> {
    fn new(value: &'a Value, path: &str) -> Result<Self, ConfigError> {
        match value {
            Value::Object(map) => Ok(Obj {
                map,
                path: path.to_string(),
            }),
            other => Err(wrong_type(
                if path.is_empty() { "<root>" } else { path },
                "a JSON object",
                other,
            )),
        }
    }

    fn field(&self, key: &str) -> String {
        join(&self.path, key)
    }

    /// The value of `key`; JSON `null` counts as absent (HF writes nulls for unset keys).
    fn get(&self, key: &str) -> Option<&'a Value> {
        self.map.get(key).filter(|v| !v.is_null())
    }

    fn child(&self, key: &str) -> Result<Option<Obj<'a>>, ConfigError> {
        self.get(key)
            .map(|v| Obj::new(v, &self.field(key)))
            .transpose()
    }

    fn usize_opt(&self, key: &str) -> Result<Option<usize>, ConfigError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_u64()
                .and_then(|n| usize::try_from(n).ok())
                .map(Some)
                .ok_or_else(|| wrong_type(&self.field(key), "a non-negative integer", v)),
        }
    }

    fn usize_or(&self, key: &str, default: usize) -> Result<usize, ConfigError> {
        Ok(self.usize_opt(key)?.unwrap_or(default))
    }

    fn usize_req(&self, key: &str) -> Result<usize, ConfigError> {
        self.usize_opt(key)?
            .ok_or_else(|| ConfigError::MissingField {
                field: self.field(key),
            })
    }

    fn u32_or(&self, key: &str, default: u32) -> Result<u32, ConfigError> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => v
                .as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .ok_or_else(|| wrong_type(&self.field(key), "a 32-bit token id", v)),
        }
    }

    /// A token id that HF may also write as a one-element list.
    fn token_id_or(&self, key: &str, default: u32) -> Result<u32, ConfigError> {
        match self.get(key) {
            Some(Value::Array(items)) => match items.as_slice() {
                [single] => single
                    .as_u64()
                    .and_then(|n| u32::try_from(n).ok())
                    .ok_or_else(|| wrong_type(&self.field(key), "a 32-bit token id", single)),
                _ => Err(ConfigError::Unsupported {
                    what: format!(
                        "{} lists several ids; exactly one is supported",
                        self.field(key)
                    ),
                }),
            },
            _ => self.u32_or(key, default),
        }
    }

    /// A square side in pixels: an integer, or a `[height, width]` pair with equal values.
    fn side_or(&self, key: &str, default: usize) -> Result<usize, ConfigError> {
        match self.get(key) {
            Some(Value::Array(sides)) => {
                let side = |i: usize| {
                    sides
                        .get(i)
                        .and_then(Value::as_u64)
                        .and_then(|n| usize::try_from(n).ok())
                };
                match (sides.len(), side(0), side(1)) {
                    (2, Some(h), Some(w)) if h == w => Ok(h),
                    _ => Err(ConfigError::Unsupported {
                        what: format!(
                            "{} = {} (only square sides are supported)",
                            self.field(key),
                            Value::Array(sides.clone())
                        ),
                    }),
                }
            }
            _ => self.usize_or(key, default),
        }
    }

    fn f64_opt(&self, key: &str) -> Result<Option<f64>, ConfigError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_f64()
                .map(Some)
                .ok_or_else(|| wrong_type(&self.field(key), "a number", v)),
        }
    }

    fn f64_or(&self, key: &str, default: f64) -> Result<f64, ConfigError> {
        Ok(self.f64_opt(key)?.unwrap_or(default))
    }

    fn bool_or(&self, key: &str, default: bool) -> Result<bool, ConfigError> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => v
                .as_bool()
                .ok_or_else(|| wrong_type(&self.field(key), "true or false", v)),
        }
    }

    fn str_opt(&self, key: &str) -> Result<Option<&'a str>, ConfigError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_str()
                .map(Some)
                .ok_or_else(|| wrong_type(&self.field(key), "a string", v)),
        }
    }
}

fn wrong_type(field: &str, expected: &'static str, found: &Value) -> ConfigError {
    let mut found = found.to_string();
    if found.len() > 80 {
        // Keep messages readable when someone passes a whole object by mistake.
        let cut = (0..=77)
            .rev()
            .find(|&i| found.is_char_boundary(i))
            .unwrap_or(0);
        found.truncate(cut);
        found.push_str("...");
    }
    ConfigError::WrongType {
        field: field.to_string(),
        expected,
        found,
    }
}

fn parse_json(text: &str, origin: &str) -> Result<Value, ConfigError> {
    serde_json::from_str(text).map_err(|source| ConfigError::Json {
        origin: origin.to_string(),
        source,
    })
}

fn read_file(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|source| {
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
    })
}

// ---------------------------------------------------------------------------------------
// Presets
// ---------------------------------------------------------------------------------------

/// Canonical preset names, in the order [`ClipConfig::preset_names`] lists them.
const PRESET_NAMES: [&str; 6] = [
    "ViT-B-32",
    "ViT-B-16",
    "ViT-L-14",
    "ViT-L-14-336",
    "ViT-H-14",
    "ViT-bigG-14",
];

/// Architecture numbers of one preset, in open_clip's vocabulary.
struct PresetSpec {
    embed_dim: usize,
    image_size: usize,
    patch_size: usize,
    vision_width: usize,
    vision_layers: usize,
    vision_heads: usize,
    vision_mlp: usize,
    text_width: usize,
    text_layers: usize,
    text_heads: usize,
    act: Activation,
}

fn preset_spec(canonical: &str) -> Option<PresetSpec> {
    // OpenAI ViT-B/L: head width 64, MLP ratio 4, QuickGELU.
    let openai = |embed_dim, image_size, patch_size, vw, vl, tw, tl| PresetSpec {
        embed_dim,
        image_size,
        patch_size,
        vision_width: vw,
        vision_layers: vl,
        vision_heads: vw / 64,
        vision_mlp: vw * 4,
        text_width: tw,
        text_layers: tl,
        text_heads: tw / 64,
        act: Activation::QuickGelu,
    };
    Some(match canonical {
        "ViT-B-32" => openai(512, 224, 32, 768, 12, 512, 12),
        "ViT-B-16" => openai(512, 224, 16, 768, 12, 512, 12),
        "ViT-L-14" => openai(768, 224, 14, 1024, 24, 768, 12),
        "ViT-L-14-336" => openai(768, 336, 14, 1024, 24, 768, 12),
        // LAION open_clip models: exact GELU; ViT-H has head width 80, bigG 104.
        "ViT-H-14" => PresetSpec {
            embed_dim: 1024,
            image_size: 224,
            patch_size: 14,
            vision_width: 1280,
            vision_layers: 32,
            vision_heads: 16,
            vision_mlp: 5120,
            text_width: 1024,
            text_layers: 24,
            text_heads: 16,
            act: Activation::Gelu,
        },
        "ViT-bigG-14" => PresetSpec {
            embed_dim: 1280,
            image_size: 224,
            patch_size: 14,
            vision_width: 1664,
            vision_layers: 48,
            vision_heads: 16,
            vision_mlp: 8192,
            text_width: 1280,
            text_layers: 32,
            text_heads: 20,
            act: Activation::Gelu,
        },
        _ => return None,
    })
}

/// Maps the spellings people use ("ViT-L/14", "vit-l-14", "ViT-L/14@336px") to a canonical
/// preset name.
fn canonical_preset(name: &str) -> Option<&'static str> {
    let mut key = name.trim().replace('/', "-").to_ascii_lowercase();
    if let Some(stripped) = key.strip_suffix("@336px") {
        key = format!("{stripped}-336");
    }
    if let Some(stripped) = key.strip_suffix("-quickgelu") {
        // open_clip's "ViT-B-32-quickgelu" is the same architecture as OpenAI's.
        key = stripped.to_string();
    }
    PRESET_NAMES
        .iter()
        .copied()
        .find(|p| p.to_ascii_lowercase() == key)
}

// ---------------------------------------------------------------------------------------
// ClipConfig
// ---------------------------------------------------------------------------------------

impl ClipConfig {
    /// All preset names accepted by [`ClipConfig::preset`] (canonical spelling).
    pub fn preset_names() -> &'static [&'static str] {
        &PRESET_NAMES
    }

    /// A built-in architecture: `"ViT-B-32"`, `"ViT-B-16"`, `"ViT-L-14"`, `"ViT-L-14-336"`
    /// (OpenAI: QuickGELU), `"ViT-H-14"`, `"ViT-bigG-14"` (LAION: exact GELU).
    ///
    /// Matching ignores case and accepts OpenAI spellings (`"ViT-L/14"`,
    /// `"ViT-L/14@336px"`). All presets use LayerNorm eps 1e-5, 224 px images (336 for
    /// `ViT-L-14-336`), the CLIP vocabulary (49408 tokens, bos 49406, eos 49407, pad 1 as in
    /// HF's `CLIPTextConfig`) and a 77-token context.
    pub fn preset(name: &str) -> Result<ClipConfig, ConfigError> {
        let spec = canonical_preset(name)
            .and_then(preset_spec)
            .ok_or_else(|| ConfigError::UnknownPreset {
                name: name.to_string(),
                valid: PRESET_NAMES.to_vec(),
            })?;
        let config = ClipConfig {
            vision: VisionConfig {
                hidden_size: spec.vision_width,
                intermediate_size: spec.vision_mlp,
                num_hidden_layers: spec.vision_layers,
                num_attention_heads: spec.vision_heads,
                image_size: spec.image_size,
                patch_size: spec.patch_size,
                num_channels: 3,
                layer_norm_eps: 1e-5,
                hidden_act: spec.act,
            },
            text: TextConfig {
                vocab_size: CLIP_VOCAB,
                hidden_size: spec.text_width,
                intermediate_size: spec.text_width * 4,
                num_hidden_layers: spec.text_layers,
                num_attention_heads: spec.text_heads,
                max_position_embeddings: 77,
                layer_norm_eps: 1e-5,
                hidden_act: spec.act,
                bos_token_id: CLIP_BOS,
                eos_token_id: CLIP_EOS,
                pad_token_id: 1,
            },
            projection_dim: spec.embed_dim,
            logit_scale_init: OPENAI_LOGIT_SCALE_INIT,
        };
        config.validate()?;
        Ok(config)
    }

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
        let path = path.as_ref();
        let text = read_file(path)?;
        Self::from_hf_value(&parse_json(&text, &path.display().to_string())?)
    }

    /// Builds a config from an already-parsed Hugging Face `config.json`.
    pub fn from_hf_value(value: &Value) -> Result<ClipConfig, ConfigError> {
        let root = Obj::new(value, "")?;
        if let Some(model_type) = root.str_opt("model_type")? {
            if model_type != "clip" {
                return Err(ConfigError::Unsupported {
                    what: format!(
                        "model_type \"{model_type}\" (only CLIPModel configs, model_type \"clip\", are supported)"
                    ),
                });
            }
        }
        let vision_key =
            if root.get("vision_config").is_none() && root.get("vision_config_dict").is_some() {
                "vision_config_dict"
            } else {
                "vision_config"
            };
        let text_key =
            if root.get("text_config").is_none() && root.get("text_config_dict").is_some() {
                "text_config_dict"
            } else {
                "text_config"
            };
        let empty = Value::Object(Map::new());
        let v = match root.child(vision_key)? {
            Some(obj) => obj,
            None => Obj::new(&empty, vision_key)?,
        };
        let t = match root.child(text_key)? {
            Some(obj) => obj,
            None => Obj::new(&empty, text_key)?,
        };

        let dv = default_vision();
        let vision = VisionConfig {
            hidden_size: v.usize_or("hidden_size", dv.hidden_size)?,
            intermediate_size: v.usize_or("intermediate_size", dv.intermediate_size)?,
            num_hidden_layers: v.usize_or("num_hidden_layers", dv.num_hidden_layers)?,
            num_attention_heads: v.usize_or("num_attention_heads", dv.num_attention_heads)?,
            image_size: v.side_or("image_size", dv.image_size)?,
            patch_size: v.side_or("patch_size", dv.patch_size)?,
            num_channels: v.usize_or("num_channels", dv.num_channels)?,
            layer_norm_eps: v.f64_or("layer_norm_eps", dv.layer_norm_eps)?,
            hidden_act: match v.str_opt("hidden_act")? {
                Some(name) => Activation::from_hf_name(name)?,
                None => dv.hidden_act,
            },
        };
        let dt = default_text();
        let text = TextConfig {
            vocab_size: t.usize_or("vocab_size", dt.vocab_size)?,
            hidden_size: t.usize_or("hidden_size", dt.hidden_size)?,
            intermediate_size: t.usize_or("intermediate_size", dt.intermediate_size)?,
            num_hidden_layers: t.usize_or("num_hidden_layers", dt.num_hidden_layers)?,
            num_attention_heads: t.usize_or("num_attention_heads", dt.num_attention_heads)?,
            max_position_embeddings: t
                .usize_or("max_position_embeddings", dt.max_position_embeddings)?,
            layer_norm_eps: t.f64_or("layer_norm_eps", dt.layer_norm_eps)?,
            hidden_act: match t.str_opt("hidden_act")? {
                Some(name) => Activation::from_hf_name(name)?,
                None => dt.hidden_act,
            },
            bos_token_id: t.u32_or("bos_token_id", dt.bos_token_id)?,
            eos_token_id: t.token_id_or("eos_token_id", dt.eos_token_id)?,
            pad_token_id: t.u32_or("pad_token_id", dt.pad_token_id)?,
        };
        let config = ClipConfig {
            vision,
            text,
            projection_dim: root.usize_or("projection_dim", HF_DEFAULT_PROJECTION_DIM)?,
            logit_scale_init: root.f64_or("logit_scale_init_value", HF_DEFAULT_LOGIT_SCALE_INIT)?
                as f32,
        };
        config.validate()?;
        Ok(config)
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
        let path = path.as_ref();
        let text = read_file(path)?;
        Self::from_open_clip_value(&parse_json(&text, &path.display().to_string())?)
    }

    /// Builds a config from an already-parsed open_clip model config.
    pub fn from_open_clip_value(value: &Value) -> Result<ClipConfig, ConfigError> {
        let outer = Obj::new(value, "")?;
        let root = match outer.child("model_cfg")? {
            Some(inner) => inner,
            None => outer,
        };
        let embed_dim = root.usize_req("embed_dim")?;
        let act = if root.bool_or("quick_gelu", false)? {
            Activation::QuickGelu
        } else {
            Activation::Gelu
        };
        let empty = Value::Object(Map::new());
        let vision_path = root.field("vision_cfg");
        let text_path = root.field("text_cfg");
        let v = match root.child("vision_cfg")? {
            Some(obj) => obj,
            None => Obj::new(&empty, &vision_path)?,
        };
        let t = match root.child("text_cfg")? {
            Some(obj) => obj,
            None => Obj::new(&empty, &text_path)?,
        };
        reject_open_clip_variants(&v, &t)?;

        let width = v.usize_or("width", 768)?;
        let head_width = v.usize_or("head_width", 64)?;
        if head_width == 0 || width % head_width != 0 {
            return Err(ConfigError::Inconsistent {
                message: format!(
                    "{} ({width}) is not divisible by {} ({head_width})",
                    v.field("width"),
                    v.field("head_width")
                ),
            });
        }
        let vision_mlp = mlp_width(&v, width)?;
        let image_size = v.side_or("image_size", 224)?;
        let vision = VisionConfig {
            hidden_size: width,
            intermediate_size: vision_mlp,
            num_hidden_layers: v.usize_or("layers", 12)?,
            num_attention_heads: width / head_width,
            image_size,
            patch_size: v.side_or("patch_size", 16)?,
            num_channels: 3,
            layer_norm_eps: 1e-5,
            hidden_act: act,
        };
        let text_width = t.usize_or("width", 512)?;
        let text = TextConfig {
            vocab_size: t.usize_or("vocab_size", CLIP_VOCAB)?,
            hidden_size: text_width,
            intermediate_size: mlp_width(&t, text_width)?,
            num_hidden_layers: t.usize_or("layers", 12)?,
            num_attention_heads: t.usize_or("heads", 8)?,
            max_position_embeddings: t.usize_or("context_length", 77)?,
            layer_norm_eps: 1e-5,
            hidden_act: act,
            bos_token_id: CLIP_BOS,
            eos_token_id: CLIP_EOS,
            // open_clip's tokenizer pads with 0.
            pad_token_id: 0,
        };
        let config = ClipConfig {
            vision,
            text,
            projection_dim: embed_dim,
            logit_scale_init: OPENAI_LOGIT_SCALE_INIT,
        };
        config.validate()?;
        Ok(config)
    }

    /// Reads a config file in either format: a JSON with `vision_cfg`/`text_cfg`/`embed_dim`
    /// or `model_cfg` is read as open_clip, anything else as Hugging Face.
    pub fn from_json_file(path: impl AsRef<Path>) -> Result<ClipConfig, ConfigError> {
        let path = path.as_ref();
        let text = read_file(path)?;
        let value = parse_json(&text, &path.display().to_string())?;
        let is_open_clip = value
            .as_object()
            .map(|m| {
                ["model_cfg", "vision_cfg", "text_cfg", "embed_dim"]
                    .iter()
                    .any(|k| m.contains_key(*k))
            })
            .unwrap_or(false);
        if is_open_clip {
            Self::from_open_clip_value(&value)
        } else {
            Self::from_hf_value(&value)
        }
    }

    /// Checks that the config is self-consistent and runnable by the CUDA kernels.
    ///
    /// Checks, per tower: nonzero sizes and layer counts; `hidden_size` divisible by
    /// `num_attention_heads`; head size a multiple of 8 and one of [`SUPPORTED_HEAD_DIMS`];
    /// positive finite LayerNorm eps. Vision: `image_size` divisible by `patch_size`.
    /// Text: bos/eos/pad ids inside the vocabulary. Model: nonzero `projection_dim`,
    /// finite `logit_scale_init`.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let v = &self.vision;
        let t = &self.text;
        let nonzero: [(&'static str, usize); 13] = [
            ("vision.hidden_size", v.hidden_size),
            ("vision.intermediate_size", v.intermediate_size),
            ("vision.num_hidden_layers", v.num_hidden_layers),
            ("vision.num_attention_heads", v.num_attention_heads),
            ("vision.image_size", v.image_size),
            ("vision.patch_size", v.patch_size),
            ("vision.num_channels", v.num_channels),
            ("text.vocab_size", t.vocab_size),
            ("text.hidden_size", t.hidden_size),
            ("text.intermediate_size", t.intermediate_size),
            ("text.num_hidden_layers", t.num_hidden_layers),
            ("text.num_attention_heads", t.num_attention_heads),
            ("text.max_position_embeddings", t.max_position_embeddings),
        ];
        for (field, value) in nonzero {
            if value == 0 {
                return Err(ConfigError::InvalidField {
                    field,
                    value: "0".into(),
                    reason: "must be greater than zero".into(),
                });
            }
        }
        if self.projection_dim == 0 {
            return Err(ConfigError::InvalidField {
                field: "projection_dim",
                value: "0".into(),
                reason: "must be greater than zero".into(),
            });
        }
        check_heads("vision", v.hidden_size, v.num_attention_heads)?;
        check_heads("text", t.hidden_size, t.num_attention_heads)?;
        if v.image_size % v.patch_size != 0 {
            return Err(ConfigError::Inconsistent {
                message: format!(
                    "vision.image_size ({}) is not divisible by vision.patch_size ({})",
                    v.image_size, v.patch_size
                ),
            });
        }
        for (field, eps) in [
            ("vision.layer_norm_eps", v.layer_norm_eps),
            ("text.layer_norm_eps", t.layer_norm_eps),
        ] {
            if !(eps.is_finite() && eps > 0.0) {
                return Err(ConfigError::InvalidField {
                    field,
                    value: eps.to_string(),
                    reason: "must be a positive finite number".into(),
                });
            }
        }
        for (field, id) in [
            ("text.bos_token_id", t.bos_token_id),
            ("text.eos_token_id", t.eos_token_id),
            ("text.pad_token_id", t.pad_token_id),
        ] {
            if id as usize >= t.vocab_size {
                return Err(ConfigError::Inconsistent {
                    message: format!(
                        "{field} ({id}) is outside the vocabulary (text.vocab_size = {})",
                        t.vocab_size
                    ),
                });
            }
        }
        if !self.logit_scale_init.is_finite() {
            return Err(ConfigError::InvalidField {
                field: "logit_scale_init",
                value: self.logit_scale_init.to_string(),
                reason: "must be finite".into(),
            });
        }
        Ok(())
    }
}

fn check_heads(
    tower: &'static str,
    hidden_size: usize,
    num_heads: usize,
) -> Result<(), ConfigError> {
    if hidden_size % num_heads != 0 {
        return Err(ConfigError::Inconsistent {
            message: format!(
                "{tower}.hidden_size ({hidden_size}) is not divisible by {tower}.num_attention_heads ({num_heads})"
            ),
        });
    }
    let head_dim = hidden_size / num_heads;
    if head_dim % 8 != 0 || !SUPPORTED_HEAD_DIMS.contains(&head_dim) {
        return Err(ConfigError::UnsupportedHeadDim {
            tower,
            head_dim,
            hidden_size,
            num_heads,
            supported: &SUPPORTED_HEAD_DIMS,
        });
    }
    Ok(())
}

/// open_clip's `mlp_width = int(width * mlp_ratio)` (truncation, as in Python).
fn mlp_width(cfg: &Obj<'_>, width: usize) -> Result<usize, ConfigError> {
    let ratio = cfg.f64_or("mlp_ratio", 4.0)?;
    if !(ratio.is_finite() && ratio > 0.0) {
        return Err(ConfigError::WrongType {
            field: cfg.field("mlp_ratio"),
            expected: "a positive number",
            found: ratio.to_string(),
        });
    }
    Ok((width as f64 * ratio) as usize)
}

/// Rejects open_clip options that change the architecture away from plain CLIP.
fn reject_open_clip_variants(v: &Obj<'_>, t: &Obj<'_>) -> Result<(), ConfigError> {
    let unsupported = |field: String, why: &str| ConfigError::Unsupported {
        what: format!("{field}: {why}"),
    };
    if matches!(v.get("layers"), Some(Value::Array(_))) {
        return Err(unsupported(
            v.field("layers"),
            "ResNet vision towers are not supported",
        ));
    }
    for (obj, key, why) in [
        (v, "timm_model_name", "timm vision towers are not supported"),
        (v, "ls_init_value", "layer scale is not supported"),
        (
            t,
            "hf_model_name",
            "Hugging Face text towers are not supported",
        ),
        (t, "ls_init_value", "layer scale is not supported"),
    ] {
        if obj.get(key).is_some() {
            return Err(unsupported(obj.field(key), why));
        }
    }
    for (obj, key, why) in [
        (
            v,
            "attentional_pool",
            "attentional pooling is not supported",
        ),
        (v, "no_ln_pre", "towers without ln_pre are not supported"),
        (
            v,
            "final_ln_after_pool",
            "final LayerNorm after pooling is not supported",
        ),
        (v, "input_patchnorm", "input patch norm is not supported"),
        (t, "embed_cls", "a CLS text token is not supported"),
        (
            t,
            "no_causal_mask",
            "non-causal text towers are not supported",
        ),
        (t, "proj_bias", "a biased text projection is not supported"),
    ] {
        if obj.bool_or(key, false)? {
            return Err(unsupported(obj.field(key), why));
        }
    }
    if let Some(pool) = v.str_opt("pool_type")? {
        if pool != "tok" {
            return Err(unsupported(
                v.field("pool_type"),
                &format!("\"{pool}\" pooling is not supported (only \"tok\")"),
            ));
        }
    }
    if let Some(pool) = t.str_opt("pool_type")? {
        if pool != "argmax" {
            return Err(unsupported(
                t.field("pool_type"),
                &format!("\"{pool}\" pooling is not supported (only \"argmax\")"),
            ));
        }
    }
    if let Some(proj) = t.str_opt("proj_type")? {
        if proj != "linear" {
            return Err(unsupported(
                t.field("proj_type"),
                &format!("\"{proj}\" projection is not supported (only \"linear\")"),
            ));
        }
    }
    Ok(())
}
