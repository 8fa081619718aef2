//! OpenAI's CLIP image preprocessing, reproduced to the pixel; and SigLIP's ([`Preprocessor::siglip`]), which
//! resizes straight to the square with the same Pillow `BICUBIC` and does not crop.
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

mod bicubic;
mod crop;
mod draft;
mod error;
mod load;
mod normalize;
mod plane;
mod resize;

use image::DynamicImage;

pub use error::PreprocessError;

use plane::Plane;
use resize::{resize_and_crop, resize_square, Filter, Rows};

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

/// How the image is brought to `image_size`².
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Geometry {
    /// OpenAI CLIP's: the short side to `image_size`, then the center crop.
    #[default]
    ShortSideCenterCrop,
    /// `SiglipImageProcessor`'s: straight to `image_size`×`image_size` (the aspect ratio is not kept), no crop.
    Square,
}

/// SigLIP's normalization: `(v / 255 - 0.5) / 0.5`, `SiglipImageProcessor`'s default.
pub const SIGLIP_MEAN_STD: [f32; 3] = [0.5; 3];

/// OpenAI's CLIP image transform (or SigLIP's, [`Preprocessor::siglip`]); see the [module docs](self) for the
/// exact steps.
#[derive(Debug, Clone, PartialEq)]
pub struct Preprocessor {
    image_size: u32,
    mean: [f32; 3],
    std: [f32; 3],
    geometry: Geometry,
    jpeg_draft: bool,
}

impl Preprocessor {
    /// A transform to `image_size`×`image_size` with OpenAI's mean and std.
    pub fn new(image_size: u32) -> Self {
        Self {
            image_size,
            mean: OPENAI_MEAN,
            std: OPENAI_STD,
            geometry: Geometry::ShortSideCenterCrop,
            jpeg_draft: false,
        }
    }

    /// `SiglipImageProcessor` with its defaults: Pillow `BICUBIC` straight to `image_size`², no crop, mean and
    /// std 0.5 (replace them with [`Self::with_mean_std`] from a `preprocessor_config.json`).
    pub fn siglip(image_size: u32) -> Self {
        Self {
            image_size,
            mean: SIGLIP_MEAN_STD,
            std: SIGLIP_MEAN_STD,
            geometry: Geometry::Square,
            jpeg_draft: false,
        }
    }

    /// The resize geometry.
    pub fn geometry(&self) -> Geometry {
        self.geometry
    }

    /// Decodes large JPEGs straight to a reduced size (1/2, 1/4 or 1/8, keeping the short side at least
    /// `image_size`), as Pillow's `Image.draft` does: several times less decoding and resizing for large photos,
    /// at the price of pixels slightly different from the exact transform's. Off by default.
    #[must_use]
    pub fn with_jpeg_draft(mut self, on: bool) -> Self {
        self.jpeg_draft = on;
        self
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

    /// Preprocesses a decoded image into a CHW `[3, image_size, image_size]` array.
    ///
    /// Always resizes with bicubic (the image's palette, if it had one, is gone after
    /// decoding). An empty (0-pixel) image gives the normalized value of black everywhere.
    pub fn preprocess_image(&self, image: &DynamicImage) -> Vec<f32> {
        self.run(image, Filter::Bicubic, Rows::Serial)
    }

    fn run(&self, image: &DynamicImage, filter: Filter, rows: Rows) -> Vec<f32> {
        let n = self.image_size as usize;
        let mut out = vec![0.0f32; 3 * n * n];
        if n == 0 {
            return out;
        }
        let plane = Plane::from_dynamic(image);
        if plane.width == 0 || plane.height == 0 {
            normalize::fill_black(n, self.mean, self.std, &mut out);
            return out;
        }
        let cropped = match self.geometry {
            Geometry::ShortSideCenterCrop => resize_and_crop(&plane, n, filter, rows),
            Geometry::Square => resize_square(&plane, n, filter, rows),
        };
        normalize::write_chw(&cropped, n, self.mean, self.std, &mut out);
        out
    }
}
