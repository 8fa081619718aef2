//! Reading and decoding image files, one or many (in parallel), with Pillow's per-mode quirks.

use std::io::Cursor;
use std::path::Path;

use image::{DynamicImage, ImageFormat, ImageReader};
use rayon::prelude::*;

use super::draft;
use super::resize::{Filter, Rows};
use super::{PreprocessError, Preprocessor};

impl Preprocessor {
    /// Reads, decodes (JPEG, PNG or WebP, detected from the content) and preprocesses one
    /// image file into a CHW `[3, image_size, image_size]` array.
    pub fn load_and_preprocess(&self, path: impl AsRef<Path>) -> Result<Vec<f32>, PreprocessError> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|source| PreprocessError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        self.preprocess_bytes(&bytes, path)
    }

    /// Decodes (JPEG, PNG or WebP, detected from the content) and preprocesses an image held in memory (a file
    /// read elsewhere, a tar member, a request body); `name` only labels errors. A JPEG that ends before its
    /// end-of-image marker is refused, as Pillow refuses it, rather than embedded from invented pixels.
    pub fn preprocess_bytes(
        &self,
        bytes: &[u8],
        name: impl AsRef<Path>,
    ) -> Result<Vec<f32>, PreprocessError> {
        self.decode_and_run(bytes, name.as_ref(), Rows::Serial)
    }

    /// [`Self::preprocess_bytes`] with the resize's rows spread over rayon's pool (the same pixels): for a lone
    /// image whose latency matters, such as a server's only request in flight. Where many images are being
    /// preprocessed at once, one per thread ([`Self::preprocess_bytes`]) is faster.
    pub fn preprocess_bytes_spread(
        &self,
        bytes: &[u8],
        name: impl AsRef<Path>,
    ) -> Result<Vec<f32>, PreprocessError> {
        self.decode_and_run(bytes, name.as_ref(), Rows::Spread)
    }

    fn decode_and_run(
        &self,
        bytes: &[u8],
        path: &Path,
        rows: Rows,
    ) -> Result<Vec<f32>, PreprocessError> {
        let decode_err = |source| PreprocessError::Decode {
            path: path.to_path_buf(),
            source,
        };
        let reader = ImageReader::new(Cursor::new(bytes))
            .with_guessed_format()
            .map_err(|source| PreprocessError::Io {
                path: path.to_path_buf(),
                source,
            })?;
        if reader.format() == Some(ImageFormat::Jpeg) {
            if !jpeg_is_complete(bytes) {
                return Err(PreprocessError::Truncated {
                    path: path.to_path_buf(),
                });
            }
            if self.jpeg_draft {
                if let Some(image) = draft::decode_reduced(bytes, self.image_size as usize) {
                    return Ok(self.run(&image, Filter::Bicubic, rows));
                }
            }
        }
        let image = reader.decode().map_err(decode_err)?;
        if image.width() == 0 || image.height() == 0 {
            return Err(PreprocessError::Empty {
                path: path.to_path_buf(),
                width: image.width(),
                height: image.height(),
            });
        }
        Ok(match png_mode(bytes) {
            PngMode::PaletteOrBilevel => self.run(&image, Filter::Nearest, rows),
            // Pillow keeps a tRNS color key of a gray/RGB PNG as metadata, not as an alpha
            // channel, so it resizes without premultiplying: drop the decoder's alpha.
            PngMode::NoAlphaChannel if image.color().has_alpha() => {
                let opaque = match &image {
                    DynamicImage::ImageLumaA8(_) => DynamicImage::ImageLuma8(image.to_luma8()),
                    DynamicImage::ImageLumaA16(_) => DynamicImage::ImageLuma16(image.to_luma16()),
                    DynamicImage::ImageRgba16(_) => DynamicImage::ImageRgb16(image.to_rgb16()),
                    _ => DynamicImage::ImageRgb8(image.to_rgb8()),
                };
                self.run(&opaque, Filter::Bicubic, rows)
            }
            _ => self.run(&image, Filter::Bicubic, rows),
        })
    }

    /// Loads and preprocesses many files, decoding in parallel on rayon's pool.
    ///
    /// Results are in input order; an unreadable or corrupt file is an error for its own slot
    /// only.
    pub fn preprocess_batch<P: AsRef<Path> + Sync>(
        &self,
        paths: &[P],
    ) -> Vec<Result<Vec<f32>, PreprocessError>> {
        paths
            .par_iter()
            .map(|path| self.load_and_preprocess(path))
            .collect()
    }
}

/// What Pillow's PNG reader makes of a file, where it differs from the `image` crate's
/// decoded pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PngMode {
    /// Not a PNG (or an unreadable header).
    Other,
    /// Mode `P` (palette) or `1` (1-bit gray): Pillow resizes these with `NEAREST`.
    PaletteOrBilevel,
    /// Gray or RGB without an alpha channel (a `tRNS` color key stays metadata in Pillow).
    NoAlphaChannel,
    /// Gray + alpha or RGBA.
    AlphaChannel,
}

/// Reads the PNG header's bit depth and color type.
fn png_mode(bytes: &[u8]) -> PngMode {
    const SIGNATURE: &[u8] = b"\x89PNG\r\n\x1a\n";
    if bytes.len() < 26 || !bytes.starts_with(SIGNATURE) || &bytes[12..16] != b"IHDR" {
        return PngMode::Other;
    }
    match (bytes[24], bytes[25]) {
        (_, 3) | (1, 0) => PngMode::PaletteOrBilevel,
        (_, 0 | 2) => PngMode::NoAlphaChannel,
        _ => PngMode::AlphaChannel,
    }
}

/// Whether a JPEG stream reaches its end-of-image marker (`FF D9`). Encoders may pad after it, so the marker is
/// looked for near the end rather than at the last two bytes.
fn jpeg_is_complete(bytes: &[u8]) -> bool {
    const TAIL: usize = 4096;
    let tail = &bytes[bytes.len().saturating_sub(TAIL)..];
    tail.windows(2).any(|w| w == [0xFF, 0xD9])
}
