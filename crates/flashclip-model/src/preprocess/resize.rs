//! Pillow's `Image.resize` with the center crop folded in: dispatch between a plain copy,
//! `NEAREST` and `BICUBIC` (premultiplied for images with alpha).

use std::borrow::Cow;
use std::ops::Range;

use super::bicubic::bicubic;
pub(super) use super::bicubic::Rows;
use super::crop::{crop, crop_offset, resized_size};
use super::plane::{premultiply, unpremultiply, Plane};

/// How the resize step samples: Pillow's `BICUBIC`, or the `NEAREST` it forces on palette and
/// 1-bit images.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Filter {
    Bicubic,
    Nearest,
}

/// Resizes `src` like Pillow's `Image.resize(size, filter)` and returns the center
/// `n`×`n` crop, computing only the cropped pixels.
pub(super) fn resize_and_crop(
    src: &Plane<'_>,
    n: usize,
    filter: Filter,
    rows: Rows,
) -> Plane<'static> {
    let (out_w, out_h) = resized_size(src.width, src.height, n);
    let (left, top) = (crop_offset(out_w, n), crop_offset(out_h, n));
    resize_region(
        src,
        (out_w, out_h),
        (left..left + n, top..top + n),
        filter,
        rows,
    )
}

/// Pillow's `Image.resize((n, n), filter)`: straight to the square, whatever the aspect ratio (SigLIP).
pub(super) fn resize_square(
    src: &Plane<'_>,
    n: usize,
    filter: Filter,
    rows: Rows,
) -> Plane<'static> {
    resize_region(src, (n, n), (0..n, 0..n), filter, rows)
}

/// The `cols` × `rows` region of `src` resized to `out_w` × `out_h`.
fn resize_region(
    src: &Plane<'_>,
    (out_w, out_h): (usize, usize),
    (cols, rows): (Range<usize>, Range<usize>),
    filter: Filter,
    spread: Rows,
) -> Plane<'static> {
    if (out_w, out_h) == (src.width, src.height) {
        // Pillow returns a copy without resampling (and without the alpha round trip).
        return crop(src, cols, rows);
    }
    if filter == Filter::Nearest {
        return nearest(src, out_w, out_h, cols, rows);
    }
    if src.has_alpha() {
        let premultiplied = premultiply(src);
        let mut out = bicubic(&premultiplied, (out_w, out_h), cols, rows, spread);
        unpremultiply(&mut out);
        out
    } else {
        bicubic(src, (out_w, out_h), cols, rows, spread)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_image_stays_constant() {
        let src = Plane {
            width: 37,
            height: 53,
            channels: 3,
            data: Cow::Owned(vec![77; 37 * 53 * 3]),
        };
        let out = resize_and_crop(&src, 24, Filter::Bicubic, Rows::Serial);
        assert_eq!((out.width, out.height), (24, 24));
        assert!(out.data.iter().all(|&v| v == 77));
    }
}
