//! FLOP counts of a CLIP forward pass, in two conventions.
//!
//! [`count`] takes a model shape ([`FlopsInput`]), an image batch, a text batch and a text
//! length, and returns a [`FlopsReport`]: the FLOPs of encoding the images and the texts,
//! projecting both into the shared space and computing the image–text logits, broken down
//! by part and counted two ways (see [`Convention`]).
//!
//! # The two conventions
//!
//! **Every op** ([`Convention::EveryOp`]) counts each floating-point add, subtract,
//! multiply, divide, `exp`, `erf`, `tanh` and `sqrt` as one FLOP (a negation or a copy is
//! free). A dot product of length `K` is `K` multiplies and `K - 1` adds, so a linear layer
//! with a bias costs exactly `2K` per output and one without costs `2K - 1`. This is the
//! convention of the reference calculator whose table reads ViT-L/14-336 = 50, ViT-H/14 = 48
//! and EVA02-CLIP-E/14 = 295 TFLOPs (image and text batch 128, text length 64). Per token
//! and layer of a tower of width `d`, MLP width `m`, `h` heads and `N` tokens it gives
//!
//! | piece | every-op FLOPs per token |
//! |---|---|
//! | Q, K, V, out projections (with bias) | `4 · 2d·d = 8d²` |
//! | `q · scale` | `d` |
//! | `Q·Kᵀ`: `h·N` dot products of length `d/h` | `N·(2d − h)` |
//! | softmax (`exp`, `N − 1` adds, divide) per head | `h·(3N − 1)` |
//! | `P·V`: `d` dot products of length `N` | `d·(2N − 1)` |
//! | MLP fc1 + fc2 (with bias) | `4dm` |
//! | activation | `5m` (QuickGELU `x·σ(1.702x)`: mul, exp, add, div, mul; GELU: div, erf, add, mul, mul), `9m` (tanh GELU) |
//! | two LayerNorms | `2 · (8d + 2)` (mean `d`; variance `3d`; `x − μ` `d`; `+ε`, `sqrt`: 2; divide `d`; `·γ` `d`; `+β` `d`) |
//! | two residual adds | `2d` |
//!
//! that is `8d² + 4dm + 5m + (4N + 18)d + 2Nh − h + 4`. Outside the layers: the patch
//! embedding (`d` dot products of length `C·p²` per patch, no bias in CLIP), the position
//! embedding add (`d` per token), CLIP's `ln_pre` and the final LayerNorm over every token
//! (`8d + 2` each), the projections into the shared space (`P` dot products of length `d`,
//! no bias), and the contrastive head: L2 normalisation (`3P` per embedding), the logits
//! (`2P − 1` per image–text pair) and the logit scaling (`1` per pair).
//!
//! This reproduces every coefficient of the reference calculator's symbolic count for
//! ViT-L/14-336 (batch 128, text length 64) that depends on a width, an MLP width or a
//! layer count; its constant term, 32 244 224, is larger than ours by 6 373 376 = 128²·389
//! (1.3·10⁻⁷ of the total), which is not architecture-dependent and which we do not
//! reproduce: it fits `128 · 12 · 64²` (a causal-mask add over the text heads counted once
//! rather than per layer) plus `5 · 128²` (loss bookkeeping), neither of which is part of
//! computing features and logits. See [`REFERENCE_CONSTANT_EXCESS`].
//!
//! One deliberate quirk is kept from the reference for the sake of matching it: the vision
//! tower's final LayerNorm is counted over all `N` tokens (as EVA-CLIP computes it), where
//! Hugging Face's CLIP normalises only the pooled class token. The difference is
//! `(N − 1)(8d + 2)` per image, under 10⁻⁵ of the total.
//!
//! **Two per multiply-accumulate** ([`Convention::MacTimes2`]) is the usual convention for
//! model FLOPs utilisation: only matrix products count, at 2 FLOPs per multiply-add: the
//! linear layers (`2·in·out` per token, biases ignored), the patch-embedding convolution,
//! `Q·Kᵀ` and `P·V` (`2N·d` each per token; the causal text tower is counted as dense, as a
//! dense kernel computes it) and the logits. LayerNorms, activations, softmax and
//! elementwise adds are zero.
//!
//! # Model shapes
//!
//! A [`FlopsInput`] holds plain numbers, so it can describe any CLIP-like model. Build it
//! from a [`ClipConfig`] (`FlopsInput::from(&config)`), from a Hugging Face `config.json`
//! ([`FlopsInput::from_hf_json_str`]), from an open_clip or EVA-CLIP model JSON
//! ([`FlopsInput::from_open_clip_json_str`]), with [`FlopsInput::eva02_clip_bige_14`], or by
//! filling in the fields.
//!
//! ```
//! use flashclip_model::config::ClipConfig;
//! use flashclip_model::flops::{count, FlopsInput};
//!
//! let config = ClipConfig::preset("ViT-L-14-336").unwrap();
//! let report = count(&FlopsInput::from(&config), 128, 128, 64);
//! let tflops = report.every_op.total() as f64 / 1e12;
//! assert!((tflops - 50.4).abs() < 0.1);
//! println!("{report}");
//! ```

mod count;
mod report;

use std::fmt;
use std::path::Path;

use serde_json::Value;

pub use count::{checked_count, count};
pub use report::{Breakdown, FlopsReport, TowerFlops};

use crate::chinese_clip::ChineseClipConfig;
use crate::config::{
    self, Activation, ClipConfig, ConfigError, VisionConfig, MAX_LAYERS, MAX_PATCHES, MAX_WIDTH,
};
use crate::family::Family;
use crate::siglip::SiglipConfig;

/// How much the reference calculator's constant term exceeds this module's count for any
/// CLIP with the ViT-L/14-336 head counts at image and text batch 128, text length 64
/// (`128² · 389` FLOPs; see the [module documentation](self)).
pub const REFERENCE_CONSTANT_EXCESS: u128 = 6_373_376;

/// A FLOP-counting convention.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Convention {
    /// Every floating-point add, multiply, divide, `exp`, `sqrt`, ... is one FLOP; a dot
    /// product of length `K` is `2K − 1` FLOPs.
    EveryOp,
    /// Two FLOPs per multiply-accumulate of a matrix product; nothing else counts (the
    /// convention of model FLOPs utilisation, MFU).
    MacTimes2,
}

impl Convention {
    /// A short name for tables: `"every op"` or `"2/MAC"`.
    pub fn short_name(self) -> &'static str {
        match self {
            Convention::EveryOp => "every op",
            Convention::MacTimes2 => "2/MAC",
        }
    }
}

impl fmt::Display for Convention {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Convention::EveryOp => {
                "every op: each add, mul, div, exp, erf, sqrt counts 1 (dot product of length K = 2K-1)"
            }
            Convention::MacTimes2 => "2/MAC: 2 per multiply-accumulate of matrix products only",
        })
    }
}

/// The structure of a transformer block's MLP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MlpKind {
    /// `fc2(act(fc1(x)))`, both with bias (CLIP, EVA01-CLIP and EVA02-CLIP-E).
    Plain,
    /// SwiGLU, `w3(silu(w1(x)) · w2(x))`, all with bias (EVA02-CLIP-B/L with
    /// `naiveswiglu`). The activation is SiLU, whatever [`TowerShape::activation`] says.
    SwiGlu,
}

/// The shape of one transformer tower.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TowerShape {
    /// Width of the residual stream, `d`.
    pub width: usize,
    /// Number of transformer blocks.
    pub layers: usize,
    /// Number of attention heads.
    pub heads: usize,
    /// Width of the MLP hidden layer, `m`.
    pub mlp_width: usize,
    /// Sequence length: patches + 1 for the vision tower, the context length (maximum
    /// text length) for the text tower. [`count`] takes the text length to count as an
    /// argument, so for text this is informational.
    pub seq_len: usize,
    /// MLP activation (ignored for [`MlpKind::SwiGlu`]).
    pub activation: Activation,
    /// MLP structure.
    pub mlp: MlpKind,
}

/// The patch-embedding convolution of the vision tower.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PatchEmbed {
    /// Image side in pixels (square images).
    pub image_size: usize,
    /// Patch side in pixels (kernel size and stride of the convolution).
    pub patch_size: usize,
    /// Input channels.
    pub num_channels: usize,
    /// Whether the convolution has a bias (EVA-CLIP: yes; CLIP: no).
    pub bias: bool,
}

impl PatchEmbed {
    /// Number of patches, `(image_size / patch_size)²` (0 for a zero patch size).
    pub fn num_patches(&self) -> usize {
        let side = self.image_size.checked_div(self.patch_size).unwrap_or(0);
        side.saturating_mul(side)
    }
}

/// Architecture details of the vision tower that change the count slightly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct VisionDetails {
    /// A LayerNorm before the first block (CLIP's `ln_pre`; EVA-CLIP has none).
    pub pre_norm: bool,
    /// The projection into the shared space has a bias (EVA-CLIP's `head`; CLIP: no).
    pub projection_bias: bool,
    /// EVA02's sub-LayerNorms: one over the attention output before the out projection
    /// and one over the MLP hidden layer.
    pub sub_norm: bool,
    /// Rotary position embedding on `q` and `k` of the patch tokens (EVA02): `x·cos +
    /// rotate(x)·sin`, 3 FLOPs per element (every-op only).
    pub rope: bool,
    /// A class token in front of the patches (CLIP, EVA-CLIP; SigLIP has none, and its convolution drops the
    /// pixels past the last whole patch, as so400m/14 at 384 px does).
    pub class_token: bool,
}

impl VisionDetails {
    /// OpenAI / open_clip / Hugging Face CLIP.
    pub const CLIP: VisionDetails = VisionDetails {
        pre_norm: true,
        projection_bias: false,
        sub_norm: false,
        rope: false,
        class_token: true,
    };
    /// EVA-CLIP's `EVAVisionTransformer` without the EVA02 extras.
    pub const EVA: VisionDetails = VisionDetails {
        pre_norm: false,
        projection_bias: true,
        sub_norm: false,
        rope: false,
        class_token: true,
    };
}

/// Everything [`count`] needs to know about a CLIP model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FlopsInput {
    /// The image tower; its `seq_len` is `patch.num_patches() + 1` (the class token).
    pub vision: TowerShape,
    /// The image tower's patch embedding.
    pub patch: PatchEmbed,
    /// Small architecture differences of the image tower.
    pub vision_details: VisionDetails,
    /// The text tower (a causal pre-norm transformer without biases in the projection).
    pub text: TowerShape,
    /// Width of the shared embedding space, `P`.
    pub projection_dim: usize,
}

/// Errors from building a [`FlopsInput`].
#[derive(Debug, thiserror::Error)]
pub enum FlopsError {
    /// The config module rejected the config.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The text length to count is zero or longer than the context length.
    #[error("text length {text_len} must be between 1 and the context length {context_length}")]
    TextLen {
        /// The text length asked for.
        text_len: usize,
        /// The text tower's context length.
        context_length: usize,
    },
    /// The shape is inconsistent or has a zero size.
    #[error("invalid shape: {message}")]
    Invalid {
        /// What is wrong.
        message: String,
    },
}

impl TowerShape {
    /// A tower with a plain (two-matrix) MLP.
    pub(crate) fn plain(
        width: usize,
        layers: usize,
        heads: usize,
        mlp_width: usize,
        seq_len: usize,
        activation: Activation,
    ) -> Self {
        TowerShape {
            width,
            layers,
            heads,
            mlp_width,
            seq_len,
            activation,
            mlp: MlpKind::Plain,
        }
    }
}

impl FlopsInput {
    /// CLIP's layout: `v` as a ViT with a class token and a bias-free patch embedding, beside the `text` tower.
    pub(crate) fn clip_layout(v: &VisionConfig, text: TowerShape, projection_dim: usize) -> Self {
        let patch = PatchEmbed {
            image_size: v.image_size,
            patch_size: v.patch_size,
            num_channels: v.num_channels,
            bias: false,
        };
        FlopsInput {
            vision: TowerShape::plain(
                v.hidden_size,
                v.num_hidden_layers,
                v.num_attention_heads,
                v.intermediate_size,
                patch.num_patches().saturating_add(1),
                v.hidden_act,
            ),
            patch,
            vision_details: VisionDetails::CLIP,
            text,
            projection_dim,
        }
    }
}

impl From<&ClipConfig> for FlopsInput {
    fn from(config: &ClipConfig) -> Self {
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

impl From<ClipConfig> for FlopsInput {
    fn from(config: ClipConfig) -> Self {
        FlopsInput::from(&config)
    }
}

const EVA02_CLIP_BIGE_14_JSON: &str = include_str!("../../configs/EVA02-CLIP-bigE-14.json");

impl FlopsInput {
    /// The shape of a Hugging Face `CLIPModel` `config.json` (parsed and validated by
    /// [`ClipConfig::from_hf_json_str`]).
    pub fn from_hf_json_str(text: &str) -> Result<FlopsInput, FlopsError> {
        Ok(FlopsInput::from(&ClipConfig::from_hf_json_str(text)?))
    }

    /// The shape of an open_clip model JSON (`ViT-H-14.json`, or a hub
    /// `open_clip_config.json` wrapping it in `model_cfg`) or an EVA-CLIP one
    /// (`EVA02-CLIP-bigE-14.json`).
    ///
    /// open_clip keys: `embed_dim` (required), `quick_gelu`, `vision_cfg.{image_size,
    /// patch_size, width, layers, head_width, mlp_ratio}`, `text_cfg.{context_length, width,
    /// heads, layers, mlp_ratio}`, with open_clip's defaults where absent; MLP widths are
    /// `int(width · mlp_ratio)`. A `vision_cfg` with `eva_model_name` is an EVA vision tower
    /// ([`VisionDetails::EVA`]: bias in the patch embedding and the head, no `ln_pre`),
    /// which also honours `naiveswiglu` / `swiglu` ([`MlpKind::SwiGlu`]), `subln` and
    /// `rope`. Keys that do not change the FLOPs (`xattn`, `fusedLN`, `postnorm`,
    /// `drop_path_rate`, ...) are ignored. ResNet, timm and Hugging Face towers are
    /// rejected.
    pub fn from_open_clip_json_str(text: &str) -> Result<FlopsInput, FlopsError> {
        FlopsInput::from_open_clip_value(&config::parse_json(text, "config string")?)
    }

    /// The shape of a config file in either format (see [`ClipConfig::from_json_file`]),
    /// EVA-CLIP towers included.
    pub fn from_json_file(path: impl AsRef<Path>) -> Result<FlopsInput, FlopsError> {
        let value = config::read_json(path.as_ref())?;
        if config::is_open_clip(&value) {
            return FlopsInput::from_open_clip_value(&value);
        }
        Ok(match Family::of_config(&value)? {
            Family::Clip => FlopsInput::from(&ClipConfig::from_hf_value(&value)?),
            Family::ChineseClip => FlopsInput::from(&ChineseClipConfig::from_hf_value(&value)?.0),
            Family::Siglip => FlopsInput::from(&SiglipConfig::from_hf_value(&value)?),
        })
    }

    fn from_open_clip_value(value: &Value) -> Result<FlopsInput, FlopsError> {
        let parsed = config::parse_open_clip(value)?;
        // Shape checks only: a FLOP count needs no kernel for the head size.
        parsed.config.validate_shape_noting(&parsed.assumed)?;
        let mut input = FlopsInput::from(&parsed.config);
        if let Some(eva) = parsed.eva {
            input.patch.bias = true;
            input.vision_details = VisionDetails {
                sub_norm: eva.sub_norm,
                rope: eva.rope,
                ..VisionDetails::EVA
            };
            if eva.swiglu {
                input.vision.mlp = MlpKind::SwiGlu;
            }
        }
        input.validate()?;
        Ok(input)
    }

    /// EVA02-CLIP-bigE-14 (the architecture of `EVA02_CLIP_E_psz14_s4B`), parsed from
    /// `configs/EVA02-CLIP-bigE-14.json`: a 64-layer, 1792-wide vision tower (16 heads of
    /// 112, MLP 15360, patch 14 at 224 px) with a **plain** GELU MLP, and open_clip
    /// ViT-H/14's text tower (1024 wide, 16 heads, 24 layers, MLP 4096); `embed_dim` 1024.
    ///
    /// The plain MLP is what EVA's config says (no `naiveswiglu`) and what reproduces the
    /// reference's 295 TFLOPs (295.1 every-op at batch 128, text length 64); a SwiGLU MLP of
    /// the same hidden width would give 411. `EVA02-CLIP-bigE-14-plus`, whose text tower is
    /// ViT-bigG's (1280 wide, 20 heads, 32 layers), is in `configs/` as well (300.5).
    pub fn eva02_clip_bige_14() -> Result<FlopsInput, FlopsError> {
        FlopsInput::from_open_clip_json_str(EVA02_CLIP_BIGE_14_JSON)
    }

    /// Checks that every size is nonzero, that the widths are multiples of the head counts
    /// and that the vision sequence length is the number of patches plus one.
    pub fn validate(&self) -> Result<(), FlopsError> {
        let fields = [
            ("vision.width", self.vision.width),
            ("vision.layers", self.vision.layers),
            ("vision.heads", self.vision.heads),
            ("vision.mlp_width", self.vision.mlp_width),
            ("patch.image_size", self.patch.image_size),
            ("patch.patch_size", self.patch.patch_size),
            ("patch.num_channels", self.patch.num_channels),
            ("text.width", self.text.width),
            ("text.layers", self.text.layers),
            ("text.heads", self.text.heads),
            ("text.mlp_width", self.text.mlp_width),
            ("text.seq_len", self.text.seq_len),
            ("projection_dim", self.projection_dim),
        ];
        if let Some((name, _)) = fields.iter().find(|(_, value)| *value == 0) {
            return Err(FlopsError::Invalid {
                message: format!("{name} is zero"),
            });
        }
        // The config module's limits, so that a count never describes an absurd model.
        for (name, value) in fields {
            let limit = if name.ends_with(".layers") {
                MAX_LAYERS
            } else {
                MAX_WIDTH
            };
            if value > limit {
                return Err(FlopsError::Invalid {
                    message: format!("{name} = {value} exceeds the limit of {limit}"),
                });
            }
        }
        for (name, tower) in [("vision", &self.vision), ("text", &self.text)] {
            if tower.width % tower.heads != 0 {
                return Err(FlopsError::Invalid {
                    message: format!(
                        "{name} width {} is not a multiple of its {} heads",
                        tower.width, tower.heads
                    ),
                });
            }
        }
        let class_token = self.vision_details.class_token;
        if class_token && self.patch.image_size % self.patch.patch_size != 0 {
            return Err(FlopsError::Invalid {
                message: format!(
                    "image size {} is not a multiple of patch size {}",
                    self.patch.image_size, self.patch.patch_size
                ),
            });
        }
        let patches = self.patch.num_patches();
        if patches > MAX_PATCHES {
            return Err(FlopsError::Invalid {
                message: format!(
                    "image size {} / patch size {} gives {patches} patches, more than the limit of {MAX_PATCHES}",
                    self.patch.image_size, self.patch.patch_size
                ),
            });
        }
        let expected = patches + usize::from(class_token);
        if self.vision.seq_len != expected {
            return Err(FlopsError::Invalid {
                message: format!(
                    "vision seq_len {} is not patches{} = {expected}",
                    self.vision.seq_len,
                    if class_token { " + 1" } else { "" }
                ),
            });
        }
        Ok(())
    }
}
