//! torchvision's `Resize(n)` size and `CenterCrop` geometry, and the crop itself.

use std::borrow::Cow;
use std::ops::Range;

use super::plane::Plane;

/// torchvision's `Resize(n)` output size for an int `n`: the short side becomes `n`, the long
/// side `int(n * long / short)` (Python: exact integer product, correctly rounded division,
/// truncation).
pub(super) fn resized_size(width: usize, height: usize, n: usize) -> (usize, usize) {
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
pub(super) fn crop_offset(size: usize, crop: usize) -> usize {
    let diff = size.saturating_sub(crop);
    let half = diff / 2;
    if diff % 2 == 1 && half % 2 == 1 {
        half + 1
    } else {
        half
    }
}

pub(super) fn crop(src: &Plane<'_>, cols: Range<usize>, rows: Range<usize>) -> Plane<'static> {
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
}
