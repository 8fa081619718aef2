//! The error type of config reading and validation.

use std::path::PathBuf;

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
    /// [`ClipConfig::preset`](super::ClipConfig::preset) got a name it doesn't know.
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
        /// [`SUPPORTED_HEAD_DIMS`](super::SUPPORTED_HEAD_DIMS).
        supported: &'static [usize],
    },
    /// A validation error on a parsed file whose offending fields were (partly) filled in
    /// with defaults; `note` says which, since a missing key is the likelier mistake.
    // `error` is not marked as the source: the message already contains it, and error
    // reporters that print the chain would show it twice.
    #[error("{error}; {note}")]
    WithDefaults {
        /// The validation error.
        error: Box<ConfigError>,
        /// Which keys were missing and what was assumed for them.
        note: String,
    },
}

impl ConfigError {
    /// The error without the note on assumed defaults ([`ConfigError::WithDefaults`]), for
    /// matching on the kind of failure.
    pub fn without_defaults_note(&self) -> &ConfigError {
        match self {
            ConfigError::WithDefaults { error, .. } => error,
            other => other,
        }
    }
}
