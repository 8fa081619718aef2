//! The 8-bit interleaved pixel buffer the resize works on, and Pillow's alpha premultiplication.

use std::borrow::Cow;

use image::DynamicImage;

/// An 8-bit interleaved image: 1 (L), 2 (LA), 3 (RGB) or 4 (RGBA) channels. Borrows the
/// decoded pixels when they are already 8-bit, so a large photo is not copied.
pub(super) struct Plane<'a> {
    pub(super) width: usize,
    pub(super) height: usize,
    pub(super) channels: usize,
    pub(super) data: Cow<'a, [u8]>,
}

impl<'a> Plane<'a> {
    /// Pillow's view of a decoded image: 8 bits per channel, alpha kept apart from color.
    pub(super) fn from_dynamic(image: &'a DynamicImage) -> Self {
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

    pub(super) fn has_alpha(&self) -> bool {
        self.channels == 2 || self.channels == 4
    }
}

fn high_bytes(samples: &[u16]) -> Cow<'static, [u8]> {
    Cow::Owned(samples.iter().map(|&v| (v >> 8) as u8).collect())
}

/// Pillow's `RGBA -> RGBa` / `LA -> La`: `c * a / 255` rounded with its shift trick.
pub(super) fn premultiply(src: &Plane<'_>) -> Plane<'static> {
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
pub(super) fn unpremultiply(plane: &mut Plane<'_>) {
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
