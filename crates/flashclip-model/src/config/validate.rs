//! Validation of a [`ClipConfig`]: sizes within limits, towers the kernels can run.

use super::assumed::Assumed;
use super::{ClipConfig, ConfigError, VisionConfig, SUPPORTED_HEAD_DIMS};

/// Most encoder layers per tower (the largest CLIP has 64 in EVA02-CLIP-E).
pub(crate) const MAX_LAYERS: usize = 1024;
/// Largest width (residual, MLP, projection) and context length.
pub(crate) const MAX_WIDTH: usize = 65536;
/// Largest image side in pixels.
pub(crate) const MAX_IMAGE_SIZE: usize = 16384;
/// Most image patches (a 256 × 256 grid).
pub(crate) const MAX_PATCHES: usize = 65536;
/// Largest vocabulary (token ids are 32-bit; 16M covers every tokenizer in use).
pub(crate) const MAX_VOCAB: usize = 1 << 24;
/// Most input channels.
const MAX_CHANNELS: usize = 64;

/// A validation failure and the config fields it is about.
pub(crate) struct Failure {
    pub(crate) error: ConfigError,
    pub(crate) fields: Vec<&'static str>,
}

fn fail(error: ConfigError, fields: &[&'static str]) -> Failure {
    Failure {
        error,
        fields: fields.to_vec(),
    }
}

/// `error`, with a note on the defaults assumed for any of `fields`.
pub(crate) fn noting(error: ConfigError, assumed: &Assumed, fields: &[&str]) -> ConfigError {
    match assumed.note_for(fields) {
        Some(note) => ConfigError::WithDefaults {
            error: Box::new(error),
            note,
        },
        None => error,
    }
}

impl ClipConfig {
    /// Checks that the config is self-consistent and runnable by the CUDA kernels.
    ///
    /// Checks, per tower: nonzero sizes within limits (at most 1024 layers, widths and
    /// context length at most 65536, images at most 16384 px and 65536 patches, a
    /// vocabulary of at most 2²⁴); `hidden_size` divisible by `num_attention_heads`; head
    /// size one of [`SUPPORTED_HEAD_DIMS`]; positive finite LayerNorm eps. Vision:
    /// `image_size` divisible by `patch_size`. Text: bos/eos/pad ids inside the vocabulary.
    /// Model: nonzero `projection_dim`, finite `logit_scale_init`.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.check(true).map_err(|f| f.error)
    }

    /// [`Self::validate`], with errors noting the defaults assumed for the fields involved.
    pub(crate) fn validate_noting(&self, assumed: &Assumed) -> Result<(), ConfigError> {
        self.check(true)
            .map_err(|f| noting(f.error, assumed, &f.fields))
    }

    /// The shape checks of [`Self::validate`] only (sizes, limits, divisibility), for
    /// counting FLOPs of models the kernels cannot run.
    pub(crate) fn validate_shape_noting(&self, assumed: &Assumed) -> Result<(), ConfigError> {
        self.check(false)
            .map_err(|f| noting(f.error, assumed, &f.fields))
    }

    fn check(&self, kernels: bool) -> Result<(), Failure> {
        let v = &self.vision;
        let t = &self.text;
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
            ("projection_dim", self.projection_dim, MAX_WIDTH),
        ]);
        check_sizes(&sizes)?;
        check_heads("vision", v.hidden_size, v.num_attention_heads, kernels)?;
        check_heads("text", t.hidden_size, t.num_attention_heads, kernels)?;
        check_grid(v)?;
        if !kernels {
            return Ok(());
        }
        check_eps(&[
            ("vision.layer_norm_eps", v.layer_norm_eps),
            ("text.layer_norm_eps", t.layer_norm_eps),
        ])?;
        check_ids(
            &[
                ("text.bos_token_id", t.bos_token_id),
                ("text.eos_token_id", t.eos_token_id),
                ("text.pad_token_id", t.pad_token_id),
            ],
            t.vocab_size,
        )?;
        check_logit_scale(self.logit_scale_init)
    }
}

/// The vision tower's sizes with their limits, in the order they are checked.
pub(crate) fn vision_sizes(v: &VisionConfig) -> [(&'static str, usize, usize); 7] {
    [
        ("vision.hidden_size", v.hidden_size, MAX_WIDTH),
        ("vision.intermediate_size", v.intermediate_size, MAX_WIDTH),
        ("vision.num_hidden_layers", v.num_hidden_layers, MAX_LAYERS),
        (
            "vision.num_attention_heads",
            v.num_attention_heads,
            MAX_WIDTH,
        ),
        ("vision.image_size", v.image_size, MAX_IMAGE_SIZE),
        ("vision.patch_size", v.patch_size, MAX_IMAGE_SIZE),
        ("vision.num_channels", v.num_channels, MAX_CHANNELS),
    ]
}

/// Each `(field, value, limit)`: nonzero and at most its limit.
pub(crate) fn check_sizes(sizes: &[(&'static str, usize, usize)]) -> Result<(), Failure> {
    for &(field, value, limit) in sizes {
        let reason = if value == 0 {
            "must be greater than zero".to_string()
        } else if value > limit {
            format!("must be at most {limit}")
        } else {
            continue;
        };
        let error = ConfigError::InvalidField {
            field,
            value: value.to_string(),
            reason,
        };
        return Err(fail(error, &[field]));
    }
    Ok(())
}

/// The image divides into patches, and not into more than [`MAX_PATCHES`].
pub(crate) fn check_grid(v: &VisionConfig) -> Result<(), Failure> {
    if v.image_size % v.patch_size != 0 {
        let message = format!(
            "vision.image_size ({}) is not divisible by vision.patch_size ({})",
            v.image_size, v.patch_size
        );
        return Err(fail(
            ConfigError::Inconsistent { message },
            &["vision.image_size", "vision.patch_size"],
        ));
    }
    let grid = v.image_size / v.patch_size;
    // Checked: on a 32-bit target a 16384-pixel side at patch 1 overflows.
    let patches = grid.checked_mul(grid).filter(|&n| n <= MAX_PATCHES);
    if patches.is_none() {
        let message = format!(
            "vision.image_size / vision.patch_size = {} / {} = {grid} patches per side, \
             {grid}² exceeds the limit of {MAX_PATCHES} patches",
            v.image_size, v.patch_size
        );
        return Err(fail(
            ConfigError::Inconsistent { message },
            &["vision.image_size", "vision.patch_size"],
        ));
    }
    Ok(())
}

/// Each LayerNorm epsilon is positive and finite.
pub(crate) fn check_eps(eps: &[(&'static str, f64)]) -> Result<(), Failure> {
    for &(field, eps) in eps {
        if !(eps.is_finite() && eps > 0.0) {
            let error = ConfigError::InvalidField {
                field,
                value: eps.to_string(),
                reason: "must be a positive finite number".into(),
            };
            return Err(fail(error, &[field]));
        }
    }
    Ok(())
}

/// Each token id lies inside a vocabulary of `vocab_size` (named `text.vocab_size`).
pub(crate) fn check_ids(ids: &[(&'static str, u32)], vocab_size: usize) -> Result<(), Failure> {
    for &(field, id) in ids {
        if id as usize >= vocab_size {
            let message = format!(
                "{field} ({id}) is outside the vocabulary (text.vocab_size = {vocab_size})"
            );
            return Err(fail(
                ConfigError::Inconsistent { message },
                &[field, "text.vocab_size"],
            ));
        }
    }
    Ok(())
}

/// The initial logit scale is finite.
pub(crate) fn check_logit_scale(logit_scale_init: f32) -> Result<(), Failure> {
    if !logit_scale_init.is_finite() {
        let error = ConfigError::InvalidField {
            field: "logit_scale_init",
            value: logit_scale_init.to_string(),
            reason: "must be finite".into(),
        };
        return Err(fail(error, &["logit_scale_init"]));
    }
    Ok(())
}

pub(crate) fn check_heads(
    tower: &'static str,
    hidden_size: usize,
    num_heads: usize,
    kernels: bool,
) -> Result<(), Failure> {
    let fields: [&'static str; 2] = if tower == "vision" {
        ["vision.hidden_size", "vision.num_attention_heads"]
    } else {
        ["text.hidden_size", "text.num_attention_heads"]
    };
    if hidden_size % num_heads != 0 {
        let message = format!(
            "{tower}.hidden_size ({hidden_size}) is not divisible by {tower}.num_attention_heads ({num_heads})"
        );
        return Err(fail(ConfigError::Inconsistent { message }, &fields));
    }
    let head_dim = hidden_size / num_heads;
    if kernels && !SUPPORTED_HEAD_DIMS.contains(&head_dim) {
        let error = ConfigError::UnsupportedHeadDim {
            tower,
            head_dim,
            hidden_size,
            num_heads,
            supported: &SUPPORTED_HEAD_DIMS,
        };
        return Err(fail(error, &fields));
    }
    Ok(())
}
