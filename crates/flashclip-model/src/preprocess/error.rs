//! The error type of image loading and preprocessing.

use std::path::PathBuf;

/// Errors from loading and preprocessing an image.
#[derive(Debug, thiserror::Error)]
pub enum PreprocessError {
    /// The file could not be read.
    #[error("failed to read image {}: {source}", path.display())]
    Io {
        /// The image file.
        path: PathBuf,
        /// The underlying I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not a decodable JPEG, PNG or WebP image.
    #[error("failed to decode image {}: {source}", path.display())]
    Decode {
        /// The image file.
        path: PathBuf,
        /// What the decoder reported.
        #[source]
        source: image::ImageError,
    },
    /// A JPEG that ends before its end-of-image marker (a cut-off download or copy).
    #[error("image {} is truncated: the JPEG data ends before its end-of-image marker", path.display())]
    Truncated {
        /// The image file.
        path: PathBuf,
    },
    /// The image has no pixels.
    #[error("image {} is empty ({width}x{height})", path.display())]
    Empty {
        /// The image file.
        path: PathBuf,
        /// Its width.
        width: u32,
        /// Its height.
        height: u32,
    },
}
