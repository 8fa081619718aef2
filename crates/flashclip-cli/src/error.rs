//! The command's error type: every failure ends up here and is printed as one line by `main`.

use std::path::PathBuf;

use flashclip_model::config::ConfigError;
use flashclip_model::flops::FlopsError;
use flashclip_model::tokenizer::TokenizerError;
use flashclip_model::{CheckpointError, ModelError};

/// Everything that can make a `flashclip` command fail.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// No driver, no device, or the device could not be opened.
    #[error("no CUDA device: {0}")]
    NoDevice(String),
    /// A kernel, cuBLAS or CUDA call failed.
    #[error("GPU error: {0}")]
    Gpu(#[from] flashclip::Error),
    /// The GPU model rejected its input or failed.
    #[error("model: {0}")]
    Model(#[from] ModelError),
    /// A model directory or checkpoint could not be loaded.
    #[error("cannot load model from {}: {source}", dir.display())]
    LoadModel {
        dir: PathBuf,
        #[source]
        source: CheckpointError,
    },
    /// A config or preset is invalid.
    #[error("{0}")]
    Config(#[from] ConfigError),
    /// A FLOPs input is invalid.
    #[error("{0}")]
    Flops(#[from] FlopsError),
    /// The tokenizer could not be loaded or failed.
    #[error("tokenizer: {0}")]
    Tokenizer(#[from] TokenizerError),
    /// A file could not be read or written.
    #[error("{what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Arguments that parse but do not make sense together.
    #[error("{0}")]
    Usage(String),
    /// A job ended without embedding anything.
    #[error("nothing was embedded: all {failed} inputs failed")]
    NothingEmbedded { failed: u64 },
    /// Writing the output failed.
    #[error("cannot write output: {0}")]
    Output(String),
}

impl CliError {
    /// An I/O error on `path`, e.g. `CliError::io("cannot read", path, e)`.
    pub fn io(what: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        CliError::Io {
            what,
            path: path.into(),
            source,
        }
    }
}

/// Shorthand for the command's results.
pub type Result<T> = std::result::Result<T, CliError>;

/// Opens GPU 0, turning any failure into [`CliError::NoDevice`] with the driver's reason.
pub fn open_gpu() -> Result<flashclip::Gpu> {
    flashclip::Gpu::new(0).map_err(|e| match e {
        flashclip::Error::NoDevice(why) => CliError::NoDevice(why),
        other => CliError::NoDevice(other.to_string()),
    })
}
