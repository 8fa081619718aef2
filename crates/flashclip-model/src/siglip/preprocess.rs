//! `SiglipImageProcessor` settings from a checkpoint's `preprocessor_config.json`.

use std::path::Path;

use serde_json::Value;

use crate::config::ConfigError;
use crate::preprocess::{Preprocessor, SIGLIP_MEAN_STD};

/// Pillow's `BICUBIC`, the only resample filter SigLIP checkpoints use.
const PIL_BICUBIC: u64 = 3;

/// The [`Preprocessor`] a `preprocessor_config.json` describes: `size` (`{"height", "width"}`, square), with
/// `image_mean` / `image_std` (default 0.5). Settings this crate does not reproduce (another resample filter, no
/// resize, a rescale other than 1/255, a crop) are refused rather than ignored.
pub fn preprocessor_from_config(path: impl AsRef<Path>) -> Result<Preprocessor, ConfigError> {
    let path = path.as_ref();
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let value: Value = serde_json::from_str(&text).map_err(|source| ConfigError::Json {
        origin: path.display().to_string(),
        source,
    })?;
    preprocessor_from_value(&value)
}

/// [`preprocessor_from_config`] on parsed JSON.
pub fn preprocessor_from_value(value: &Value) -> Result<Preprocessor, ConfigError> {
    let unsupported = |what: String| ConfigError::Unsupported { what };
    let size = value.get("size");
    let side = |key: &str| size.and_then(|s| s.get(key)).and_then(Value::as_u64);
    let n = match (side("height"), side("width")) {
        (Some(h), Some(w)) if h == w => h,
        (None, None) => 224,
        (h, w) => {
            return Err(unsupported(format!(
                "preprocessor size {h:?}x{w:?}: only square sizes are supported"
            )))
        }
    };
    let n = u32::try_from(n)
        .ok()
        .filter(|&n| (1..=16384).contains(&n))
        .ok_or_else(|| unsupported(format!("preprocessor size {n}")))?;
    let flag =
        |key: &str, default: bool| value.get(key).and_then(Value::as_bool).unwrap_or(default);
    if let Some(r) = value.get("resample").and_then(Value::as_u64) {
        if r != PIL_BICUBIC {
            return Err(unsupported(format!(
                "resample = {r}: only Pillow BICUBIC (3) is implemented"
            )));
        }
    }
    if !flag("do_resize", true) || flag("do_center_crop", false) {
        return Err(unsupported(
            "do_resize = false or do_center_crop = true in a SigLIP preprocessor config".into(),
        ));
    }
    if let Some(f) = value.get("rescale_factor").and_then(Value::as_f64) {
        if (f - 1.0 / 255.0).abs() > 1e-12 || !flag("do_rescale", true) {
            return Err(unsupported(format!(
                "rescale_factor = {f} (expected 1/255)"
            )));
        }
    }
    let triple = |key: &str| -> Result<[f32; 3], ConfigError> {
        match value.get(key) {
            None | Some(Value::Null) => Ok(SIGLIP_MEAN_STD),
            Some(Value::Array(a)) if a.len() == 3 => {
                let mut out = [0.0f32; 3];
                for (o, v) in out.iter_mut().zip(a) {
                    *o = v.as_f64().ok_or_else(|| wrong(key, value))? as f32;
                }
                Ok(out)
            }
            Some(_) => Err(wrong(key, value)),
        }
    };
    let (mean, std) = if flag("do_normalize", true) {
        (triple("image_mean")?, triple("image_std")?)
    } else {
        ([0.0; 3], [1.0; 3])
    };
    if std.iter().any(|&s| !(s.is_finite() && s != 0.0)) {
        return Err(wrong("image_std", value));
    }
    Ok(Preprocessor::siglip(n).with_mean_std(mean, std))
}

fn wrong(key: &str, value: &Value) -> ConfigError {
    ConfigError::WrongType {
        field: key.to_string(),
        expected: "three finite numbers (non-zero for image_std)",
        found: value
            .get(key)
            .map_or_else(|| "nothing".into(), Value::to_string),
    }
}
