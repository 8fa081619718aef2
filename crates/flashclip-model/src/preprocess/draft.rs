//! JPEG decoding straight to a reduced size: the inverse DCT at 1/2, 1/4 or 1/8 scale (libjpeg's scaled decoding,
//! Pillow's `Image.draft`), chosen so the short side stays at least the model's input size. Large photos then cost a
//! fraction of the entropy-decoded pixels' IDCT and color work and a quarter (or less) of the resize's. The pixels
//! differ slightly from a full decode's (the scaled IDCT averages where the bicubic filter would), so this is an
//! option ([`super::Preprocessor::with_jpeg_draft`]), off by default.

use std::io::Cursor;

use image::{DynamicImage, GrayImage, RgbImage};
use jpeg_decoder::{Decoder, PixelFormat};

/// The image decoded at the largest reduction that keeps its short side at least `short_side`, or `None` when no
/// reduction applies or the stream is one this path leaves to the full decoder (CMYK, 16-bit, an error: the full
/// decoder then reports it).
pub(super) fn decode_reduced(bytes: &[u8], short_side: usize) -> Option<DynamicImage> {
    let mut decoder = Decoder::new(Cursor::new(bytes));
    decoder.read_info().ok()?;
    let info = decoder.info()?;
    let (w, h) = (usize::from(info.width), usize::from(info.height));
    let factor = [8usize, 4, 2]
        .into_iter()
        .find(|f| w.min(h).div_ceil(*f) >= short_side.max(1))?;
    let (want_w, want_h) = (w.div_ceil(factor), h.div_ceil(factor));
    let (got_w, got_h) = decoder
        .scale(u16::try_from(want_w).ok()?, u16::try_from(want_h).ok()?)
        .ok()?;
    let (got_w, got_h) = (u32::from(got_w), u32::from(got_h));
    if (got_w.min(got_h) as usize) < short_side {
        return None;
    }
    let pixels = decoder.decode().ok()?;
    match info.pixel_format {
        PixelFormat::RGB24 => RgbImage::from_raw(got_w, got_h, pixels).map(DynamicImage::ImageRgb8),
        PixelFormat::L8 => GrayImage::from_raw(got_w, got_h, pixels).map(DynamicImage::ImageLuma8),
        PixelFormat::L16 | PixelFormat::CMYK32 => None,
    }
}
