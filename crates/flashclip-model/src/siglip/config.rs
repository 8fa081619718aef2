//! Hugging Face `SiglipModel` configs (`model_type` `siglip`): `config.json` parsing with the defaults of
//! transformers' `SiglipVisionConfig` / `SiglipTextConfig`, validation, and the published sizes as presets.
//!
//! SigLIP has no shared projection (`projection_dim`): the image embedding is the vision tower's attention-pooling
//! head output (width `vision.hidden_size`), the text embedding its `head` Linear's output (width
//! `text.projection_size`, the text width unless set). Both must be equally wide to be compared.

use std::path::Path;

use serde_json::{Map, Value};

use crate::config::{Activation, ConfigError};

/// Largest sizes accepted from a file (bounds every allocation a config implies).
const MAX_WIDTH: usize = 65536;
const MAX_LAYERS: usize = 1024;
const MAX_PATCHES: usize = 65536;
const MAX_VOCAB: usize = 1 << 24;
const MAX_POSITIONS: usize = 65536;

/// The vision tower: a pre-norm ViT without a class token, then `post_layernorm` and the attention-pooling head.
#[derive(Debug, Clone, PartialEq)]
pub struct SiglipVisionConfig {
    /// Width of the residual stream (also the image embedding's width).
    pub hidden_size: usize,
    /// Width of the MLP hidden layer (encoder layers and pooling head).
    pub intermediate_size: usize,
    /// Number of encoder layers.
    pub num_hidden_layers: usize,
    /// Attention heads (encoder layers and pooling head).
    pub num_attention_heads: usize,
    /// Input image side in pixels.
    pub image_size: usize,
    /// Patch side in pixels.
    pub patch_size: usize,
    /// Input channels.
    pub num_channels: usize,
    /// LayerNorm epsilon.
    pub layer_norm_eps: f64,
    /// MLP activation.
    pub hidden_act: Activation,
}

impl SiglipVisionConfig {
    /// `hidden_size / num_attention_heads`.
    pub fn head_dim(&self) -> usize {
        self.hidden_size
            .checked_div(self.num_attention_heads)
            .unwrap_or(0)
    }

    /// Whole patches along one side (the convolution ignores the remainder, as so400m/14 at 384 px does).
    pub fn grid_size(&self) -> usize {
        self.image_size.checked_div(self.patch_size).unwrap_or(0)
    }

    /// Sequence length of the encoder: the patches alone (no class token).
    pub fn seq_len(&self) -> usize {
        self.grid_size().saturating_mul(self.grid_size())
    }

    /// `num_channels · patch_size²`, the patch convolution's inner dimension.
    pub fn patch_dim(&self) -> usize {
        self.num_channels
            .saturating_mul(self.patch_size)
            .saturating_mul(self.patch_size)
    }
}

/// The text tower: bidirectional pre-norm encoder, `final_layer_norm`, the last position through `head`.
#[derive(Debug, Clone, PartialEq)]
pub struct SiglipTextConfig {
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Width of the residual stream.
    pub hidden_size: usize,
    /// Width of the MLP hidden layer.
    pub intermediate_size: usize,
    /// Number of encoder layers.
    pub num_hidden_layers: usize,
    /// Attention heads.
    pub num_attention_heads: usize,
    /// Context length; SigLIP is trained on texts padded to exactly this length.
    pub max_position_embeddings: usize,
    /// LayerNorm epsilon.
    pub layer_norm_eps: f64,
    /// MLP activation.
    pub hidden_act: Activation,
    /// Padding token id (the tokenizer's pad token wins where one is loaded).
    pub pad_token_id: u32,
    /// Output width of `head` (the text embedding's width).
    pub projection_size: usize,
}

impl SiglipTextConfig {
    /// `hidden_size / num_attention_heads`.
    pub fn head_dim(&self) -> usize {
        self.hidden_size
            .checked_div(self.num_attention_heads)
            .unwrap_or(0)
    }
}

/// A whole `SiglipModel`.
#[derive(Debug, Clone, PartialEq)]
pub struct SiglipConfig {
    /// Image tower.
    pub vision: SiglipVisionConfig,
    /// Text tower.
    pub text: SiglipTextConfig,
}

/// One published size: (name, image, patch, vision and text width, layers, heads, MLP width, vocab, context).
struct Preset {
    name: &'static str,
    image: usize,
    patch: usize,
    width: usize,
    layers: usize,
    heads: usize,
    mlp: usize,
    vocab: usize,
    context: usize,
}

/// The published checkpoints' sizes, from their Hugging Face `config.json` files (google/siglip-base-patch16-224,
/// -base-patch16-384, -large-patch16-256, -large-patch16-384, -so400m-patch14-224, -so400m-patch14-384) and the
/// defaults of transformers' `SiglipVisionConfig`/`SiglipTextConfig` for the keys they leave out. Both towers have
/// the same width, layers and heads in every size; so400m/14@224 was trained with a 16-token context, the others
/// with 64. SigLIP 2's fixed-resolution checkpoints (google/siglip2-*-patch16-224 etc.) are `SiglipModel`s too,
/// with Gemma's 256000-token vocabulary: they load from their `config.json` like any other.
const PRESETS: [Preset; 6] = [
    preset("siglip-base-patch16-224", 224, 16, 768, 12, 12, 3072, 64),
    preset("siglip-base-patch16-384", 384, 16, 768, 12, 12, 3072, 64),
    preset("siglip-large-patch16-256", 256, 16, 1024, 24, 16, 4096, 64),
    preset("siglip-large-patch16-384", 384, 16, 1024, 24, 16, 4096, 64),
    preset("siglip-so400m-patch14-224", 224, 14, 1152, 27, 16, 4304, 16),
    preset("siglip-so400m-patch14-384", 384, 14, 1152, 27, 16, 4304, 64),
];

#[allow(clippy::too_many_arguments)]
const fn preset(
    name: &'static str,
    image: usize,
    patch: usize,
    width: usize,
    layers: usize,
    heads: usize,
    mlp: usize,
    context: usize,
) -> Preset {
    Preset {
        name,
        image,
        patch,
        width,
        layers,
        heads,
        mlp,
        vocab: 32000,
        context,
    }
}

/// SigLIP's tokenizer pads with `</s>`, id 1 (also transformers' default `pad_token_id`).
const SIGLIP_PAD: u32 = 1;

impl SiglipConfig {
    /// The names [`Self::preset`] accepts.
    pub fn preset_names() -> Vec<&'static str> {
        PRESETS.iter().map(|p| p.name).collect()
    }

    /// A published size by name (`siglip-so400m-patch14-384`; a `google/` prefix is accepted).
    pub fn preset(name: &str) -> Result<SiglipConfig, ConfigError> {
        let bare = name.strip_prefix("google/").unwrap_or(name);
        let p =
            PRESETS
                .iter()
                .find(|p| p.name == bare)
                .ok_or_else(|| ConfigError::UnknownPreset {
                    name: name.to_string(),
                    valid: Self::preset_names(),
                })?;
        Ok(SiglipConfig {
            vision: SiglipVisionConfig {
                hidden_size: p.width,
                intermediate_size: p.mlp,
                num_hidden_layers: p.layers,
                num_attention_heads: p.heads,
                image_size: p.image,
                patch_size: p.patch,
                num_channels: 3,
                layer_norm_eps: 1e-6,
                hidden_act: Activation::GeluTanh,
            },
            text: SiglipTextConfig {
                vocab_size: p.vocab,
                hidden_size: p.width,
                intermediate_size: p.mlp,
                num_hidden_layers: p.layers,
                num_attention_heads: p.heads,
                max_position_embeddings: p.context,
                layer_norm_eps: 1e-6,
                hidden_act: Activation::GeluTanh,
                pad_token_id: SIGLIP_PAD,
                projection_size: p.width,
            },
        })
    }

    /// Reads a `config.json` file (see [`Self::from_hf_json_str`]).
    pub fn from_hf_json_file(path: impl AsRef<Path>) -> Result<SiglipConfig, ConfigError> {
        let path = path.as_ref();
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
        Self::parse(&text, &path.display().to_string())
    }

    /// Parses a Hugging Face `SiglipModel` `config.json`: `model_type` must be `siglip` (when given); absent keys
    /// of `vision_config` / `text_config` take transformers' defaults (siglip-base-patch16-224). The result is
    /// validated.
    pub fn from_hf_json_str(text: &str) -> Result<SiglipConfig, ConfigError> {
        Self::parse(text, "config string")
    }

    fn parse(text: &str, origin: &str) -> Result<SiglipConfig, ConfigError> {
        let root: Value = serde_json::from_str(text).map_err(|source| ConfigError::Json {
            origin: origin.to_string(),
            source,
        })?;
        Self::from_hf_value(&root)
    }

    /// Builds a config from a parsed `config.json`.
    pub fn from_hf_value(root: &Value) -> Result<SiglipConfig, ConfigError> {
        let root = object(root, "config")?;
        match root.get("model_type").and_then(Value::as_str) {
            None | Some("siglip") => {}
            Some("siglip2") => {
                return Err(ConfigError::Unsupported {
                    what: "model_type siglip2 (SigLIP 2 NaFlex: variable resolution, linear patch embedding); \
                           the fixed-resolution SigLIP 2 checkpoints (model_type siglip) are supported"
                        .into(),
                })
            }
            Some(other) => {
                return Err(ConfigError::Unsupported {
                    what: format!("model_type {other} is not a SigLIP model (expected siglip)"),
                })
            }
        }
        let empty = Map::new();
        let v = section(root, "vision_config", &empty)?;
        let t = section(root, "text_config", &empty)?;
        let vision = SiglipVisionConfig {
            hidden_size: int(v, "vision_config.hidden_size", 768)?,
            intermediate_size: int(v, "vision_config.intermediate_size", 3072)?,
            num_hidden_layers: int(v, "vision_config.num_hidden_layers", 12)?,
            num_attention_heads: int(v, "vision_config.num_attention_heads", 12)?,
            image_size: int(v, "vision_config.image_size", 224)?,
            patch_size: int(v, "vision_config.patch_size", 16)?,
            num_channels: int(v, "vision_config.num_channels", 3)?,
            layer_norm_eps: float(v, "vision_config.layer_norm_eps", 1e-6)?,
            hidden_act: act(v, "vision_config.hidden_act")?,
        };
        if v.get("vision_use_head").and_then(Value::as_bool) == Some(false) {
            return Err(ConfigError::Unsupported {
                what: "vision_config.vision_use_head = false (a vision tower without its pooling head embeds no \
                       images)"
                    .into(),
            });
        }
        let hidden = int(t, "text_config.hidden_size", 768)?;
        let text = SiglipTextConfig {
            vocab_size: int(t, "text_config.vocab_size", 32000)?,
            hidden_size: hidden,
            intermediate_size: int(t, "text_config.intermediate_size", 3072)?,
            num_hidden_layers: int(t, "text_config.num_hidden_layers", 12)?,
            num_attention_heads: int(t, "text_config.num_attention_heads", 12)?,
            max_position_embeddings: int(t, "text_config.max_position_embeddings", 64)?,
            layer_norm_eps: float(t, "text_config.layer_norm_eps", 1e-6)?,
            hidden_act: act(t, "text_config.hidden_act")?,
            pad_token_id: u32::try_from(int(t, "text_config.pad_token_id", SIGLIP_PAD as usize)?)
                .map_err(|_| wrong("text_config.pad_token_id", "a 32-bit token id", t))?,
            projection_size: int(t, "text_config.projection_size", hidden)?,
        };
        let config = SiglipConfig { vision, text };
        config.validate()?;
        Ok(config)
    }

    /// Checks sizes for zeros and limits, heads dividing widths, a patch fitting in the image, and that
    /// the two embeddings are equally wide. Any head size passes: the kernels' list is checked where they run.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let (v, t) = (&self.vision, &self.text);
        for (field, value, max) in [
            ("vision.hidden_size", v.hidden_size, MAX_WIDTH),
            ("vision.intermediate_size", v.intermediate_size, MAX_WIDTH),
            ("vision.num_hidden_layers", v.num_hidden_layers, MAX_LAYERS),
            (
                "vision.num_attention_heads",
                v.num_attention_heads,
                MAX_WIDTH,
            ),
            ("vision.patch_size", v.patch_size, MAX_WIDTH),
            ("vision.num_channels", v.num_channels, 64),
            ("text.vocab_size", t.vocab_size, MAX_VOCAB),
            ("text.hidden_size", t.hidden_size, MAX_WIDTH),
            ("text.intermediate_size", t.intermediate_size, MAX_WIDTH),
            ("text.num_hidden_layers", t.num_hidden_layers, MAX_LAYERS),
            ("text.num_attention_heads", t.num_attention_heads, MAX_WIDTH),
            (
                "text.max_position_embeddings",
                t.max_position_embeddings,
                MAX_POSITIONS,
            ),
            ("text.projection_size", t.projection_size, MAX_WIDTH),
        ] {
            if value == 0 || value > max {
                return Err(ConfigError::InvalidField {
                    field,
                    value: value.to_string(),
                    reason: format!("must be between 1 and {max}"),
                });
            }
        }
        for (tower, hidden, heads) in [
            ("vision", v.hidden_size, v.num_attention_heads),
            ("text", t.hidden_size, t.num_attention_heads),
        ] {
            if hidden % heads != 0 {
                return Err(inconsistent(format!(
                    "{tower}.hidden_size ({hidden}) is not divisible by {tower}.num_attention_heads ({heads})"
                )));
            }
        }
        // The convolution drops what is left over past the last whole patch (384 px at patch 14: 27 patches).
        if v.image_size < v.patch_size {
            return Err(inconsistent(format!(
                "vision.image_size ({}) is smaller than vision.patch_size ({})",
                v.image_size, v.patch_size
            )));
        }
        if v.grid_size() > MAX_PATCHES / v.grid_size() {
            return Err(inconsistent(format!(
                "{} patches exceed the limit of {MAX_PATCHES}",
                v.grid_size().saturating_mul(v.grid_size())
            )));
        }
        if t.pad_token_id as usize >= t.vocab_size {
            return Err(inconsistent(format!(
                "text.pad_token_id ({}) is outside the vocabulary ({})",
                t.pad_token_id, t.vocab_size
            )));
        }
        if t.projection_size != v.hidden_size {
            return Err(inconsistent(format!(
                "text.projection_size ({}) differs from vision.hidden_size ({}): the embeddings cannot be compared",
                t.projection_size, v.hidden_size
            )));
        }
        for (field, eps) in [
            ("vision.layer_norm_eps", v.layer_norm_eps),
            ("text.layer_norm_eps", t.layer_norm_eps),
        ] {
            if !(eps.is_finite() && eps > 0.0) {
                return Err(ConfigError::InvalidField {
                    field,
                    value: eps.to_string(),
                    reason: "must be positive and finite".into(),
                });
            }
        }
        Ok(())
    }

    /// Width of both embeddings.
    pub fn embed_dim(&self) -> usize {
        self.vision.hidden_size
    }
}

fn inconsistent(message: String) -> ConfigError {
    ConfigError::Inconsistent { message }
}

fn object<'a>(value: &'a Value, path: &str) -> Result<&'a Map<String, Value>, ConfigError> {
    value.as_object().ok_or_else(|| ConfigError::WrongType {
        field: path.to_string(),
        expected: "a JSON object",
        found: short(value),
    })
}

/// The sub-config at `key` (absent or `null`: all defaults).
fn section<'a>(
    root: &'a Map<String, Value>,
    key: &str,
    empty: &'a Map<String, Value>,
) -> Result<&'a Map<String, Value>, ConfigError> {
    match root.get(key) {
        None | Some(Value::Null) => Ok(empty),
        Some(v) => object(v, key),
    }
}

fn leaf<'a>(m: &'a Map<String, Value>, path: &str) -> Option<&'a Value> {
    let key = path.rsplit('.').next().unwrap_or(path);
    m.get(key).filter(|v| !v.is_null())
}

fn short(value: &Value) -> String {
    let s = value.to_string();
    if s.chars().count() > 60 {
        s.chars().take(57).chain("...".chars()).collect()
    } else {
        s
    }
}

fn wrong(path: &str, expected: &'static str, m: &Map<String, Value>) -> ConfigError {
    ConfigError::WrongType {
        field: path.to_string(),
        expected,
        found: leaf(m, path).map_or_else(|| "nothing".into(), short),
    }
}

fn int(m: &Map<String, Value>, path: &str, default: usize) -> Result<usize, ConfigError> {
    match leaf(m, path) {
        None => Ok(default),
        // Sizes written as a [h, w] pair must be square.
        Some(Value::Array(pair)) if pair.len() == 2 && pair[0] == pair[1] => pair[0]
            .as_u64()
            .and_then(|n| usize::try_from(n).ok())
            .ok_or_else(|| wrong(path, "a non-negative integer", m)),
        Some(v) => v
            .as_u64()
            .and_then(|n| usize::try_from(n).ok())
            .ok_or_else(|| wrong(path, "a non-negative integer", m)),
    }
}

fn float(m: &Map<String, Value>, path: &str, default: f64) -> Result<f64, ConfigError> {
    match leaf(m, path) {
        None => Ok(default),
        Some(v) => v.as_f64().ok_or_else(|| wrong(path, "a number", m)),
    }
}

fn act(m: &Map<String, Value>, path: &str) -> Result<Activation, ConfigError> {
    match leaf(m, path) {
        None => Ok(Activation::GeluTanh),
        Some(Value::String(name)) => Activation::from_hf_name(name),
        Some(_) => Err(wrong(path, "a string", m)),
    }
}
