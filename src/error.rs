//! The crate's error type: every check that guards an unsafe launch reports through it.

use cudarc::cublas::result::CublasError;
use cudarc::driver::DriverError;

/// Everything that can go wrong between a caller and a kernel.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No usable CUDA driver or device on this machine.
    #[error("no CUDA device available: {0}")]
    NoDevice(String),
    /// A CUDA driver API call failed.
    #[error("CUDA driver error: {0}")]
    Driver(#[from] DriverError),
    /// A cuBLAS call failed.
    #[error("cuBLAS error: {0:?}")]
    Cublas(#[from] CublasError),
    /// A cuBLASLt call failed.
    #[error("cuBLASLt error: {0:?}")]
    CublasLt(#[from] cudarc::cublaslt::result::CublasError),
    /// A kernel launch returned a CUDA runtime error code.
    #[error("kernel {kernel} failed to launch: cudaError_t {code}")]
    Launch { kernel: &'static str, code: i32 },
    /// Two tensors (or a tensor and a parameter) disagree on a dimension.
    #[error("shape mismatch for {what}: expected {expected:?}, got {got:?}")]
    Shape {
        what: &'static str,
        expected: Vec<usize>,
        got: Vec<usize>,
    },
    /// A size is zero where the op needs at least one element.
    #[error("{what} is empty: every dimension must be at least 1")]
    Empty { what: &'static str },
    /// The kernel does not support this combination (head dim, dtype, ...).
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// A pointer or stride breaks the kernel's vector-access alignment.
    #[error("{what} is misaligned: {detail}")]
    Misaligned { what: &'static str, detail: String },
    /// A view reaches past the end of its buffer, or strides overlap where they must not.
    #[error("invalid layout for {what}: {detail}")]
    Layout { what: &'static str, detail: String },
    /// A scalar parameter is out of range.
    #[error("invalid argument {what}: {detail}")]
    InvalidArgument { what: &'static str, detail: String },
    /// Size overflows the 32/64-bit integers the kernels or cuBLAS take.
    #[error("{what} is too large for the kernel's index type")]
    TooLarge { what: &'static str },
}

/// Shorthand used across the crate.
pub type Result<T> = std::result::Result<T, Error>;

/// Turns a launcher's `cudaError_t` return value into a [`Result`].
pub(crate) fn check_launch(kernel: &'static str, code: i32) -> Result<()> {
    if code == 0 {
        Ok(())
    } else {
        Err(Error::Launch { kernel, code })
    }
}
