//! What can be wrong with a checkpoint, reported all at once and readably however many tensors are involved.

use std::fmt;
use std::path::PathBuf;

use safetensors::SafeTensorError;

use super::format::CheckpointFormat;
use crate::config::ConfigError;

/// A tensor whose shape differs from what the config implies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShapeMismatch {
    /// Tensor name (as in the file, or canonical for checks of weights in memory).
    pub name: String,
    /// Shape the config implies.
    pub expected: Vec<usize>,
    /// Shape found.
    pub found: Vec<usize>,
}

/// A tensor stored in a dtype the loader doesn't convert.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DtypeMismatch {
    /// Tensor name in the file.
    pub name: String,
    /// The file's dtype, e.g. `I64`.
    pub dtype: String,
}

/// Everything wrong with a checkpoint against a config, found in one pass.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CheckpointMismatch {
    /// The detected key naming (`None` for weights checked in memory).
    pub format: Option<CheckpointFormat>,
    /// Tensors the config requires that the file lacks.
    pub missing: Vec<String>,
    /// Tensors in the file that the config doesn't use.
    pub unexpected: Vec<String>,
    /// Tensors with the wrong shape.
    pub wrong_shape: Vec<ShapeMismatch>,
    /// Tensors with an unsupported dtype (only F32, F16 and BF16 are converted).
    pub unsupported_dtype: Vec<DtypeMismatch>,
    /// Why the config may not be the checkpoint's (the defaults a config file left to be assumed), if any.
    pub note: Option<String>,
}

impl CheckpointMismatch {
    /// Whether nothing is wrong.
    pub fn is_empty(&self) -> bool {
        self.missing.is_empty()
            && self.unexpected.is_empty()
            && self.wrong_shape.is_empty()
            && self.unsupported_dtype.is_empty()
    }
}

/// Names listed per kind of problem before the rest is only counted.
const LISTED: usize = 8;

/// `n thing(s): a, b, c and 5 more`.
fn list(f: &mut fmt::Formatter<'_>, what: &str, items: &[String]) -> fmt::Result {
    let n = items.len();
    write!(
        f,
        "{n} {what}{}: {}",
        if n == 1 { "" } else { "s" },
        items[..n.min(LISTED)].join(", ")
    )?;
    if n > LISTED {
        write!(f, " and {} more", n - LISTED)?;
    }
    Ok(())
}

fn fmt_shape(shape: &[usize]) -> String {
    let parts: Vec<String> = shape.iter().map(usize::to_string).collect();
    format!("[{}]", parts.join(", "))
}

impl fmt::Display for CheckpointMismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.format {
            Some(format) => write!(f, "checkpoint ({format} format) does not match the config")?,
            None => write!(f, "weights do not match the config")?,
        }
        let shapes: Vec<String> = self
            .wrong_shape
            .iter()
            .map(|m| {
                format!(
                    "{} (expected {}, found {})",
                    m.name,
                    fmt_shape(&m.expected),
                    fmt_shape(&m.found)
                )
            })
            .collect();
        let dtypes: Vec<String> = self
            .unsupported_dtype
            .iter()
            .map(|m| format!("{} ({})", m.name, m.dtype))
            .collect();
        let mut sep = ": ";
        for (what, items) in [
            ("missing tensor", &self.missing),
            ("unexpected tensor", &self.unexpected),
            ("tensor with wrong shape", &shapes),
            (
                "tensor with unsupported dtype (supported: F32, F16, BF16)",
                &dtypes,
            ),
        ] {
            if !items.is_empty() {
                f.write_str(sep)?;
                list(f, what, items)?;
                sep = "; ";
            }
        }
        if let Some(note) = &self.note {
            write!(f, " ({note})")?;
        }
        Ok(())
    }
}

/// Errors from opening, checking or loading a checkpoint.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// The checkpoint file does not exist.
    #[error("checkpoint not found: {}", path.display())]
    NotFound {
        /// The path that was tried.
        path: PathBuf,
    },
    /// A directory has none of the files looked for.
    #[error("no {what} in {}: tried {}", dir.display(), tried.join(", "))]
    NotFoundInDir {
        /// "config" or "checkpoint".
        what: &'static str,
        /// The directory.
        dir: PathBuf,
        /// File names tried.
        tried: Vec<&'static str>,
    },
    /// The file exists but could not be opened or mapped.
    #[error("cannot read checkpoint {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The bytes are not a valid safetensors file (truncated, bad header, bad offsets).
    #[error("corrupt or truncated safetensors data in {origin}: {source}")]
    Corrupt {
        /// A path, or "buffer".
        origin: String,
        /// The safetensors parser's error.
        #[source]
        source: SafeTensorError,
    },
    /// The keys are neither Hugging Face's nor open_clip's.
    #[error(
        "unrecognized checkpoint layout in {origin}: expected Hugging Face keys (vision_model.*, text_model.*) or open_clip keys (visual.*, transformer.*); first keys: {}",
        sample.join(", ")
    )]
    UnknownFormat {
        /// A path, or "buffer".
        origin: String,
        /// Up to 8 key names from the file, sorted.
        sample: Vec<String>,
    },
    /// The config asks for more layers than the file holds (checked before anything is sized by the config).
    #[error(
        "the config gives the {tower} tower {config} layers, the checkpoint {origin} has {found} ({prefix}0..{found}){}",
        note.as_ref().map(|n| format!(" ({n})")).unwrap_or_default()
    )]
    LayerCount {
        /// "vision" or "text".
        tower: &'static str,
        /// Layers in the config.
        config: usize,
        /// Layers in the file.
        found: usize,
        /// The file's key prefix of the tower's layers.
        prefix: &'static str,
        /// A path, or "buffer".
        origin: String,
        /// The defaults the config file left to be assumed, if any.
        note: Option<String>,
    },
    /// Tensors missing, unexpected, mis-shaped or of unsupported dtype; all are counted, the first few named.
    #[error("{0}")]
    Mismatch(Box<CheckpointMismatch>),
    /// The config next to a checkpoint could not be read.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A tensor could not be placed where it goes (e.g. a device upload failed).
    #[error("cannot load {key}: {source}")]
    Target {
        /// Canonical key of the tensor.
        key: String,
        /// What went wrong.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}
