//! The GPU model's error type.

use crate::checkpoint::CheckpointError;
use crate::reference::ReferenceError;

/// Errors of the GPU model.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// A kernel, cuBLAS or CUDA call failed (or rejected its arguments).
    #[error(transparent)]
    Gpu(#[from] flashclip::Error),
    /// The caller's input does not fit the model or the workspace.
    #[error("invalid input: {0}")]
    Input(String),
    /// The weights could not be loaded.
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    /// The CPU reference forward rejected its input or weights.
    #[error(transparent)]
    Reference(#[from] ReferenceError),
}

/// Shorthand for the crate's results (`E` defaults to [`ModelError`]).
pub type Result<T, E = ModelError> = std::result::Result<T, E>;
