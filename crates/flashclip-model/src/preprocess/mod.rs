//! OpenAI's CLIP image preprocessing, reproduced to the pixel.
//!
//! OpenAI's transform is `Resize(n, BICUBIC)`, `CenterCrop(n)`, `convert("RGB")`, `ToTensor()`,
//! `Normalize(mean, std)` on a PIL image. [`Preprocessor`] does the same:
//!
//! 1. **Resize** so the shortest side is `image_size` (the long side is
//!    `int(image_size * long / short)`, as torchvision computes it), with Pillow's `BICUBIC`
//!    resampling emulated exactly: a separable cubic convolution (a = -0.5) whose support is
//!    widened by the downscale factor (antialiasing), coefficients in 22-bit fixed point, a
//!    horizontal pass then a vertical pass, each rounded and clamped to 8 bits, as in Pillow's
//!    `ImagingResample`. The `image` crate's resize filters would not match.
//! 2. **Center crop** to `image_size`², with torchvision's offsets
//!    `top = round((h - n) / 2)`, rounding half to even like Python's `round`. Only the cropped
//!    pixels are computed; the result is the same as resizing everything and cropping.
//! 3. **RGB**: grayscale is replicated to three channels; images with alpha are resized with
//!    premultiplied alpha and the alpha is then dropped, as Pillow does for `LA`/`RGBA`
//!    (`resize` goes through `La`/`RGBa`, then `convert("RGB")` discards alpha).
//!    Palette and 1-bit PNGs are resized with Pillow's nearest-neighbour rule, because Pillow
//!    forces `NEAREST` for `P` and `1` mode images; a gray or RGB PNG's `tRNS` color key is
//!    ignored, as Pillow keeps it out of the pixels.
//! 4. **Normalize**: `(v / 255 - mean) / std` in `f32`, output in CHW order.
//!
//! On OpenAI's reference image the output matches the reference array up to the JPEG
//! decoder: the `image` crate's decoder (zune-jpeg) and libjpeg-turbo, which Pillow uses,
//! round some pixels differently, which the resize then spreads. PNG and WebP inputs decode
//! identically, so their output matches Pillow's bit for bit.
//!
//! Known differences from Pillow: 16-bit images are reduced to 8 bits by keeping the high
//! byte (Pillow does so for RGB; for 16-bit grayscale it clips values above 255 instead,
//! which whitens the image); CMYK JPEGs are converted to RGB by the decoder before resizing
//! (Pillow resizes in CMYK). EXIF orientation is ignored, as by Pillow's `Image.open`.

use std::borrow::Cow;
use std::io::Cursor;
use std::ops::Range;
use std::path::{Path, PathBuf};

use image::{DynamicImage, ImageReader};
use rayon::prelude::*;

/// OpenAI CLIP's per-channel (RGB) normalization mean.
pub const OPENAI_MEAN: [f32; 3] = [
    0.48145466_f64 as f32,
    0.4578275_f64 as f32,
    0.40821073_f64 as f32,
];

/// OpenAI CLIP's per-channel (RGB) normalization standard deviation.
pub const OPENAI_STD: [f32; 3] = [
    0.26862954_f64 as f32,
    0.26130258_f64 as f32,
    0.27577711_f64 as f32,
];

/// Pillow's fixed-point precision for 8-bit resampling: 32 bits minus 8 for the value and 2
/// for overshoot of the cubic's negative lobes.
const PRECISION_BITS: u32 = 32 - 8 - 2;

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

/// How the resize step samples: Pillow's `BICUBIC`, or the `NEAREST` it forces on palette and
/// 1-bit images.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Filter {
    Bicubic,
    Nearest,
}

/// OpenAI's CLIP image transform; see the [module docs](self) for the exact steps.
#[derive(Debug, Clone, PartialEq)]
pub struct Preprocessor {
    image_size: u32,
    mean: [f32; 3],
    std: [f32; 3],
}

impl Preprocessor {
    /// A transform to `image_size`×`image_size` with OpenAI's mean and std.
    pub fn new(image_size: u32) -> Self {
        Self {
            image_size,
            mean: OPENAI_MEAN,
            std: OPENAI_STD,
        }
    }

    /// Replaces the normalization (RGB order), e.g. `[0.5; 3]` / `[0.5; 3]` for SigLIP-style
    /// checkpoints. `std` entries must be non-zero.
    #[must_use]
    pub fn with_mean_std(mut self, mean: [f32; 3], std: [f32; 3]) -> Self {
        self.mean = mean;
        self.std = std;
        self
    }

    /// Output side length in pixels.
    pub fn image_size(&self) -> u32 {
        self.image_size
    }

    /// Normalization mean (RGB).
    pub fn mean(&self) -> [f32; 3] {
        self.mean
    }

    /// Normalization standard deviation (RGB).
    pub fn std(&self) -> [f32; 3] {
        self.std
    }

    /// Number of floats in one output: `3 * image_size * image_size`.
    pub fn output_len(&self) -> usize {
        let n = self.image_size as usize;
        3 * n * n
    }

    /// Reads, decodes (JPEG, PNG or WebP, detected from the content) and preprocesses one
    /// image file into a CHW `[3, image_size, image_size]` array.
    pub fn load_and_preprocess(&self, path: impl AsRef<Path>) -> Result<Vec<f32>, PreprocessError> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|source| PreprocessError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let decode_err = |source| PreprocessError::Decode {
            path: path.to_path_buf(),
            source,
        };
        let image = ImageReader::new(Cursor::new(&bytes))
            .with_guessed_format()
            .map_err(|source| PreprocessError::Io {
                path: path.to_path_buf(),
                source,
            })?
            .decode()
            .map_err(decode_err)?;
        if image.width() == 0 || image.height() == 0 {
            return Err(PreprocessError::Empty {
                path: path.to_path_buf(),
                width: image.width(),
                height: image.height(),
            });
        }
        Ok(match png_mode(&bytes) {
            PngMode::PaletteOrBilevel => self.run(&image, Filter::Nearest),
            // Pillow keeps a tRNS color key of a gray/RGB PNG as metadata, not as an alpha
            // channel, so it resizes without premultiplying: drop the decoder's alpha.
            PngMode::NoAlphaChannel if image.color().has_alpha() => {
                let opaque = match &image {
                    DynamicImage::ImageLumaA8(_) => DynamicImage::ImageLuma8(image.to_luma8()),
                    DynamicImage::ImageLumaA16(_) => DynamicImage::ImageLuma16(image.to_luma16()),
                    DynamicImage::ImageRgba16(_) => DynamicImage::ImageRgb16(image.to_rgb16()),
                    _ => DynamicImage::ImageRgb8(image.to_rgb8()),
                };
                self.run(&opaque, Filter::Bicubic)
            }
            _ => self.run(&image, Filter::Bicubic),
        })
    }

    /// Preprocesses a decoded image into a CHW `[3, image_size, image_size]` array.
    ///
    /// Always resizes with bicubic (the image's palette, if it had one, is gone after
    /// decoding). An empty (0-pixel) image gives the normalized value of black everywhere.
    pub fn preprocess_image(&self, image: &DynamicImage) -> Vec<f32> {
        self.run(image, Filter::Bicubic)
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

    fn run(&self, image: &DynamicImage, filter: Filter) -> Vec<f32> {
        let n = self.image_size as usize;
        let mut out = vec![0.0f32; 3 * n * n];
        if n == 0 {
            return out;
        }
        let plane = Plane::from_dynamic(image);
        if plane.width == 0 || plane.height == 0 {
            let black = self.normalize_channels(&[0, 0, 0]);
            for (c, v) in black.iter().enumerate() {
                out[c * n * n..(c + 1) * n * n].fill(*v);
            }
            return out;
        }
        let cropped = resize_and_crop(&plane, n, filter);
        // LUTs: each output value depends only on the 8-bit input and the channel.
        let luts: [[f32; 256]; 3] = std::array::from_fn(|c| {
            std::array::from_fn(|v| normalize(v as u8, self.mean[c], self.std[c]))
        });
        let src_channel = |c: usize| match cropped.channels {
            1 | 2 => 0, // L / LA: gray replicated, alpha dropped
            _ => c,     // RGB / RGBA: alpha dropped
        };
        for (c, lut) in luts.iter().enumerate() {
            let sc = src_channel(c);
            let dst = &mut out[c * n * n..(c + 1) * n * n];
            for (d, px) in dst
                .iter_mut()
                .zip(cropped.data.chunks_exact(cropped.channels))
            {
                *d = lut[px[sc] as usize];
            }
        }
        out
    }

    fn normalize_channels(&self, rgb: &[u8; 3]) -> [f32; 3] {
        std::array::from_fn(|c| normalize(rgb[c], self.mean[c], self.std[c]))
    }
}

/// torchvision's `ToTensor` + `Normalize` for one value, in the same `f32` operations.
fn normalize(v: u8, mean: f32, std: f32) -> f32 {
    (f32::from(v) / 255.0 - mean) / std
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

/// An 8-bit interleaved image: 1 (L), 2 (LA), 3 (RGB) or 4 (RGBA) channels. Borrows the
/// decoded pixels when they are already 8-bit, so a large photo is not copied.
struct Plane<'a> {
    width: usize,
    height: usize,
    channels: usize,
    data: Cow<'a, [u8]>,
}

impl<'a> Plane<'a> {
    /// Pillow's view of a decoded image: 8 bits per channel, alpha kept apart from color.
    fn from_dynamic(image: &'a DynamicImage) -> Self {
        let (width, height) = (image.width() as usize, image.height() as usize);
        let (channels, data): (usize, Cow<'a, [u8]>) = match image {
            DynamicImage::ImageLuma8(im) => (1, Cow::Borrowed(im.as_raw())),
            DynamicImage::ImageLumaA8(im) => (2, Cow::Borrowed(im.as_raw())),
            DynamicImage::ImageRgb8(im) => (3, Cow::Borrowed(im.as_raw())),
            DynamicImage::ImageRgba8(im) => (4, Cow::Borrowed(im.as_raw())),
            // Pillow reads 16-bit PNG samples by their high byte.
            DynamicImage::ImageLuma16(im) => (1, high_bytes(im.as_raw())),
            DynamicImage::ImageLumaA16(im) => (2, high_bytes(im.as_raw())),
            DynamicImage::ImageRgb16(im) => (3, high_bytes(im.as_raw())),
            DynamicImage::ImageRgba16(im) => (4, high_bytes(im.as_raw())),
            other if other.color().has_alpha() => (4, Cow::Owned(other.to_rgba8().into_raw())),
            other => (3, Cow::Owned(other.to_rgb8().into_raw())),
        };
        Self {
            width,
            height,
            channels,
            data,
        }
    }

    fn has_alpha(&self) -> bool {
        self.channels == 2 || self.channels == 4
    }
}

fn high_bytes(samples: &[u16]) -> Cow<'static, [u8]> {
    Cow::Owned(samples.iter().map(|&v| (v >> 8) as u8).collect())
}

/// torchvision's `Resize(n)` output size for an int `n`: the short side becomes `n`, the long
/// side `int(n * long / short)` (Python: exact integer product, correctly rounded division,
/// truncation).
fn resized_size(width: usize, height: usize, n: usize) -> (usize, usize) {
    let scaled =
        |long: usize, short: usize| ((n as u64 * long as u64) as f64 / short as f64) as usize;
    if width <= height {
        (n, scaled(height, width))
    } else {
        (scaled(width, height), n)
    }
}

/// torchvision's `CenterCrop` offset: `int(round((size - crop) / 2))` with Python's
/// round-half-to-even.
fn crop_offset(size: usize, crop: usize) -> usize {
    let diff = size.saturating_sub(crop);
    let half = diff / 2;
    if diff % 2 == 1 && half % 2 == 1 {
        half + 1
    } else {
        half
    }
}

/// Resizes `src` like Pillow's `Image.resize(size, filter)` and returns the center
/// `n`×`n` crop, computing only the cropped pixels.
fn resize_and_crop(src: &Plane<'_>, n: usize, filter: Filter) -> Plane<'static> {
    let (out_w, out_h) = resized_size(src.width, src.height, n);
    let (left, top) = (crop_offset(out_w, n), crop_offset(out_h, n));
    let cols = left..left + n;
    let rows = top..top + n;
    if (out_w, out_h) == (src.width, src.height) {
        // Pillow returns a copy without resampling (and without the alpha round trip).
        return crop(src, cols, rows);
    }
    if filter == Filter::Nearest {
        return nearest(src, out_w, out_h, cols, rows);
    }
    if src.has_alpha() {
        let premultiplied = premultiply(src);
        let mut out = bicubic(&premultiplied, out_w, out_h, cols, rows);
        unpremultiply(&mut out);
        out
    } else {
        bicubic(src, out_w, out_h, cols, rows)
    }
}

fn crop(src: &Plane<'_>, cols: Range<usize>, rows: Range<usize>) -> Plane<'static> {
    let c = src.channels;
    let mut data = Vec::with_capacity(cols.len() * rows.len() * c);
    for y in rows.clone() {
        let line = &src.data[(y * src.width + cols.start) * c..(y * src.width + cols.end) * c];
        data.extend_from_slice(line);
    }
    Plane {
        width: cols.len(),
        height: rows.len(),
        channels: c,
        data: Cow::Owned(data),
    }
}

/// Pillow's `RGBA -> RGBa` / `LA -> La`: `c * a / 255` rounded with its shift trick.
fn premultiply(src: &Plane<'_>) -> Plane<'static> {
    let c = src.channels;
    let mut data = src.data.to_vec();
    for px in data.chunks_exact_mut(c) {
        let alpha = u32::from(px[c - 1]);
        for v in &mut px[..c - 1] {
            let tmp = u32::from(*v) * alpha + 128;
            *v = (((tmp >> 8) + tmp) >> 8) as u8;
        }
    }
    Plane {
        data: Cow::Owned(data),
        width: src.width,
        height: src.height,
        channels: c,
    }
}

/// Pillow's `RGBa -> RGBA` / `La -> LA`: `255 * c / a` truncated and clamped; alpha 0 and 255
/// leave the color as it is.
fn unpremultiply(plane: &mut Plane<'_>) {
    let c = plane.channels;
    for px in plane.data.to_mut().chunks_exact_mut(c) {
        let alpha = u32::from(px[c - 1]);
        if alpha == 0 || alpha == 255 {
            continue;
        }
        for v in &mut px[..c - 1] {
            *v = ((255 * u32::from(*v)) / alpha).min(255) as u8;
        }
    }
}

/// Pillow's `NEAREST` resize (its affine "scale" path): source positions accumulate
/// `in / out` from half a step, in `f64`, and are truncated.
fn nearest(
    src: &Plane<'_>,
    out_w: usize,
    out_h: usize,
    cols: Range<usize>,
    rows: Range<usize>,
) -> Plane<'static> {
    let positions = |in_size: usize, out_size: usize, range: &Range<usize>| -> Vec<usize> {
        // Pillow's box is float: the scale is computed from the f32 size.
        let step = f64::from(in_size as f32) / out_size as f64;
        let mut pos = step * 0.5;
        let mut picked = Vec::with_capacity(range.len());
        for i in 0..range.end {
            if i >= range.start {
                // Truncation toward zero; positions are never negative here.
                picked.push((pos as usize).min(in_size - 1));
            }
            pos += step;
        }
        picked
    };
    let xs = positions(src.width, out_w, &cols);
    let ys = positions(src.height, out_h, &rows);
    let c = src.channels;
    let mut data = Vec::with_capacity(xs.len() * ys.len() * c);
    for &y in &ys {
        for &x in &xs {
            let i = (y * src.width + x) * c;
            data.extend_from_slice(&src.data[i..i + c]);
        }
    }
    Plane {
        width: xs.len(),
        height: ys.len(),
        channels: c,
        data: Cow::Owned(data),
    }
}

/// Pillow's bicubic kernel, a = -0.5, written in its order of operations.
fn bicubic_kernel(x: f64) -> f64 {
    const A: f64 = -0.5;
    let x = x.abs();
    if x < 1.0 {
        ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        (((x - 5.0) * x + 8.0) * x - 4.0) * A
    } else {
        0.0
    }
}

/// Fixed-point resampling weights for the output indices in `range` of a 1-D resize.
struct Coeffs {
    /// First source index of each output index.
    starts: Vec<usize>,
    /// Weights, `ksize` per output index (only the first `counts[i]` used).
    weights: Vec<i32>,
    counts: Vec<usize>,
    ksize: usize,
}

impl Coeffs {
    /// Pillow's `precompute_coeffs` + `normalize_coeffs_8bpc` for a box of `[0, in_size]`.
    fn bicubic(in_size: usize, out_size: usize, range: Range<usize>) -> Self {
        const SUPPORT: f64 = 2.0;
        // Pillow's box is float, so the scale comes from an f32 size.
        let scale = f64::from(in_size as f32) / out_size as f64;
        let filterscale = scale.max(1.0);
        let support = SUPPORT * filterscale;
        let ksize = support.ceil() as usize * 2 + 1;
        let inv_filterscale = 1.0 / filterscale;
        let mut starts = Vec::with_capacity(range.len());
        let mut counts = Vec::with_capacity(range.len());
        let mut weights = vec![0i32; range.len() * ksize];
        let mut k = vec![0.0f64; ksize];
        for (i, xx) in range.enumerate() {
            let center = (xx as f64 + 0.5) * scale;
            // C's (int) cast truncates toward zero; negatives are clamped to 0 anyway.
            let xmin = ((center - support + 0.5) as i64).max(0) as usize;
            let xmax = ((center + support + 0.5) as i64).clamp(0, in_size as i64) as usize;
            let count = xmax.saturating_sub(xmin).min(ksize);
            let mut total = 0.0;
            for (x, w) in k.iter_mut().enumerate().take(count) {
                *w = bicubic_kernel(((x + xmin) as f64 - center + 0.5) * inv_filterscale);
                total += *w;
            }
            let fixed = &mut weights[i * ksize..i * ksize + count];
            for (dst, &w) in fixed.iter_mut().zip(&k) {
                let w = if total != 0.0 { w / total } else { w };
                // Round half away from zero, as Pillow's (int)(w * 2^22 ± 0.5).
                let scaled = w * f64::from(1u32 << PRECISION_BITS);
                *dst = if w < 0.0 {
                    (scaled - 0.5) as i32
                } else {
                    (scaled + 0.5) as i32
                };
            }
            starts.push(xmin);
            counts.push(count);
        }
        Self {
            starts,
            weights,
            counts,
            ksize,
        }
    }

    fn taps(&self, i: usize) -> (usize, &[i32]) {
        let w = &self.weights[i * self.ksize..i * self.ksize + self.counts[i]];
        (self.starts[i], w)
    }

    /// Source indices touched by all output indices: `[first, last)`.
    fn source_span(&self) -> Range<usize> {
        let first = self.starts.iter().copied().min().unwrap_or(0);
        let last = (0..self.starts.len())
            .map(|i| self.starts[i] + self.counts[i])
            .max()
            .unwrap_or(0);
        first..last.max(first)
    }
}

/// Pillow's `clip8`: drop the fraction bits (flooring) and clamp to 0..=255.
fn clip8(acc: i64) -> u8 {
    (acc >> PRECISION_BITS).clamp(0, 255) as u8
}

const ROUNDING: i64 = 1 << (PRECISION_BITS - 1);

/// Horizontal pass over source rows `rows`: output has `coeffs.starts.len()` columns.
fn horizontal(src: &Plane<'_>, coeffs: &Coeffs, rows: Range<usize>) -> Plane<'static> {
    match src.channels {
        1 => horizontal_n::<1>(src, coeffs, rows),
        2 => horizontal_n::<2>(src, coeffs, rows),
        3 => horizontal_n::<3>(src, coeffs, rows),
        _ => horizontal_n::<4>(src, coeffs, rows),
    }
}

/// Vertical pass: `src` holds source rows from `row0` on; output has `coeffs.starts.len()`
/// rows over source columns `cols`.
fn vertical(src: &Plane<'_>, coeffs: &Coeffs, row0: usize, cols: Range<usize>) -> Plane<'static> {
    match src.channels {
        1 => vertical_n::<1>(src, coeffs, row0, cols),
        2 => vertical_n::<2>(src, coeffs, row0, cols),
        3 => vertical_n::<3>(src, coeffs, row0, cols),
        _ => vertical_n::<4>(src, coeffs, row0, cols),
    }
}

// The passes are generic over the channel count so the per-pixel channel loop unrolls and
// each source pixel is read once per tap. Accumulators are i64, so no weight set can
// overflow them (Pillow relies on i32 being just wide enough).

fn horizontal_n<const C: usize>(
    src: &Plane<'_>,
    coeffs: &Coeffs,
    rows: Range<usize>,
) -> Plane<'static> {
    let out_w = coeffs.starts.len();
    let mut data = vec![0u8; out_w * rows.len() * C];
    let row_len = src.width * C;
    data.par_chunks_mut((out_w * C).max(1))
        .zip(rows.clone().into_par_iter())
        .for_each(|(line_out, y)| {
            let line_in = &src.data[y * row_len..(y + 1) * row_len];
            for (xx, px_out) in line_out.chunks_exact_mut(C).enumerate() {
                let (xmin, k) = coeffs.taps(xx);
                let taps = &line_in[xmin * C..(xmin + k.len()) * C];
                let mut acc = [ROUNDING; C];
                for (px, &w) in taps.chunks_exact(C).zip(k) {
                    for ch in 0..C {
                        acc[ch] += i64::from(px[ch]) * i64::from(w);
                    }
                }
                for ch in 0..C {
                    px_out[ch] = clip8(acc[ch]);
                }
            }
        });
    Plane {
        width: out_w,
        height: rows.len(),
        channels: C,
        data: Cow::Owned(data),
    }
}

fn vertical_n<const C: usize>(
    src: &Plane<'_>,
    coeffs: &Coeffs,
    row0: usize,
    cols: Range<usize>,
) -> Plane<'static> {
    let out_h = coeffs.starts.len();
    let out_w = cols.len();
    let row_len = src.width * C;
    let mut data = vec![0u8; out_w * out_h * C];
    data.par_chunks_mut((out_w * C).max(1))
        .enumerate()
        .for_each(|(yy, line_out)| {
            let (ymin, k) = coeffs.taps(yy);
            // Accumulate whole rows at a time: sequential reads of each source row.
            let mut acc = vec![ROUNDING; out_w * C];
            for (t, &w) in k.iter().enumerate() {
                let y = ymin + t - row0;
                let line_in = &src.data[y * row_len + cols.start * C..y * row_len + cols.end * C];
                for (a, &v) in acc.iter_mut().zip(line_in) {
                    *a += i64::from(v) * i64::from(w);
                }
            }
            for (v, a) in line_out.iter_mut().zip(&acc) {
                *v = clip8(*a);
            }
        });
    Plane {
        width: out_w,
        height: out_h,
        channels: C,
        data: Cow::Owned(data),
    }
}

/// Pillow's `ImagingResample` (two 8-bit passes), restricted to output `cols` × `rows`.
///
/// Pillow resizes horizontally first, except for images more than 100 times taller than
/// wide that shrink vertically, which it resizes vertically first; the order matters because
/// each pass rounds to 8 bits.
fn bicubic(
    src: &Plane<'_>,
    out_w: usize,
    out_h: usize,
    cols: Range<usize>,
    rows: Range<usize>,
) -> Plane<'static> {
    let need_h = out_w != src.width;
    let need_v = out_h != src.height;
    let vertical_first = src.height > src.width * 100 && out_h < src.height;
    let hc = Coeffs::bicubic(src.width, out_w, cols.clone());
    let vc = Coeffs::bicubic(src.height, out_h, rows.clone());

    if vertical_first {
        let src_cols = if need_h {
            hc.source_span()
        } else {
            cols.clone()
        };
        let tmp = if need_v {
            vertical(src, &vc, 0, src_cols.clone())
        } else {
            crop(src, src_cols.clone(), rows)
        };
        if !need_h {
            return tmp;
        }
        // `tmp` starts at source column `src_cols.start`: shift the horizontal taps.
        let shifted = Coeffs {
            starts: hc.starts.iter().map(|s| s - src_cols.start).collect(),
            ..hc
        };
        return horizontal(&tmp, &shifted, 0..tmp.height);
    }

    let src_rows = if need_v {
        vc.source_span()
    } else {
        rows.clone()
    };
    let tmp = if need_h {
        horizontal(src, &hc, src_rows.clone())
    } else {
        crop(src, cols, src_rows.clone())
    };
    if !need_v {
        return tmp;
    }
    vertical(&tmp, &vc, src_rows.start, 0..tmp.width)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resize_sizes_match_torchvision() {
        assert_eq!(resized_size(450, 655, 224), (224, 326));
        assert_eq!(resized_size(655, 450, 224), (326, 224));
        assert_eq!(resized_size(300, 300, 224), (224, 224));
        assert_eq!(resized_size(640, 480, 336), (448, 336));
    }

    #[test]
    fn crop_offsets_round_half_even() {
        assert_eq!(crop_offset(326, 224), 51);
        assert_eq!(crop_offset(225, 224), 0); // round(0.5) = 0
        assert_eq!(crop_offset(227, 224), 2); // round(1.5) = 2
        assert_eq!(crop_offset(229, 224), 2); // round(2.5) = 2
        assert_eq!(crop_offset(231, 224), 4); // round(3.5) = 4
        assert_eq!(crop_offset(224, 224), 0);
    }

    #[test]
    fn coefficients_sum_to_one() {
        for (in_size, out_size) in [(655, 326), (100, 224), (4000, 224), (225, 224)] {
            let c = Coeffs::bicubic(in_size, out_size, 0..out_size);
            for i in 0..out_size {
                let (_, k) = c.taps(i);
                let sum: i64 = k.iter().map(|&w| i64::from(w)).sum();
                assert!(
                    (sum - (1 << PRECISION_BITS)).abs() <= k.len() as i64,
                    "{in_size}->{out_size} #{i}"
                );
            }
        }
    }

    #[test]
    fn constant_image_stays_constant() {
        let src = Plane {
            width: 37,
            height: 53,
            channels: 3,
            data: Cow::Owned(vec![77; 37 * 53 * 3]),
        };
        let out = resize_and_crop(&src, 24, Filter::Bicubic);
        assert_eq!((out.width, out.height), (24, 24));
        assert!(out.data.iter().all(|&v| v == 77));
    }
}
