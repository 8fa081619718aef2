//! Pillow's 8-bit `BICUBIC` resampling (`ImagingResample`): fixed-point separable passes.

use std::borrow::Cow;
use std::ops::Range;

use rayon::prelude::*;

use super::crop::crop;
use super::plane::Plane;

/// Pillow's fixed-point precision for 8-bit resampling: 32 bits minus 8 for the value and 2
/// for overshoot of the cubic's negative lobes.
const PRECISION_BITS: u32 = 32 - 8 - 2;

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
fn clip8(acc: i32) -> u8 {
    (acc >> PRECISION_BITS).clamp(0, 255) as u8
}

const ROUNDING: i32 = 1 << (PRECISION_BITS - 1);

/// Whether a pass computes its output rows on the calling thread or spreads them over rayon's pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Rows {
    Serial,
    Spread,
}

/// Output rows per rayon task when spread: a few microseconds of work each.
const SPREAD_MIN_ROWS: usize = 8;

/// Runs `f` on every (index, row) of `data` cut into rows of `row_len`, as `rows` says.
fn for_each_row(data: &mut [u8], row_len: usize, rows: Rows, f: impl Fn(usize, &mut [u8]) + Sync) {
    let row_len = row_len.max(1);
    match rows {
        Rows::Serial => data
            .chunks_mut(row_len)
            .enumerate()
            .for_each(|(i, r)| f(i, r)),
        Rows::Spread => data
            .par_chunks_mut(row_len)
            .with_min_len(SPREAD_MIN_ROWS)
            .enumerate()
            .for_each(|(i, r)| f(i, r)),
    }
}

/// Horizontal pass over source rows `src_rows`: output has `coeffs.starts.len()` columns.
fn horizontal(
    src: &Plane<'_>,
    coeffs: &Coeffs,
    src_rows: Range<usize>,
    rows: Rows,
) -> Plane<'static> {
    match src.channels {
        1 => horizontal_n::<1>(src, coeffs, src_rows, rows),
        2 => horizontal_n::<2>(src, coeffs, src_rows, rows),
        3 => horizontal_n::<3>(src, coeffs, src_rows, rows),
        _ => horizontal_n::<4>(src, coeffs, src_rows, rows),
    }
}

/// Vertical pass: `src` holds source rows from `row0` on; output has `coeffs.starts.len()`
/// rows over source columns `cols`.
fn vertical(
    src: &Plane<'_>,
    coeffs: &Coeffs,
    row0: usize,
    cols: Range<usize>,
    rows: Rows,
) -> Plane<'static> {
    match src.channels {
        1 => vertical_n::<1>(src, coeffs, row0, cols, rows),
        2 => vertical_n::<2>(src, coeffs, row0, cols, rows),
        3 => vertical_n::<3>(src, coeffs, row0, cols, rows),
        _ => vertical_n::<4>(src, coeffs, row0, cols, rows),
    }
}

// The passes are generic over the channel count so the per-pixel channel loop unrolls and
// each source pixel is read once per tap. Accumulators are i32, as in Pillow: one output's weights sum to 2^22
// and their magnitudes to at most 1.25 x 2^22 (the cubic's negative lobes, widest when upscaling), so 255 times
// that plus the rounding stays under 2^31 (i64 accumulators measured 11% slower: 1 thread 106-107 against 119-120
// images/s, 2 threads 199-208 against 225-228, on the workload below). By default each image is resized on one
// thread: callers parallelize across images (the embedding job's decode threads, `preprocess_batch`), and fanning one
// image's rows out to rayon's shared pool as well made those threads wait on each other (2 cores, 1024x768 JPEGs to
// 336: 2 threads 134-178 images/s with the fan-out, 199-208 without; 1 thread 97-100 and 106-107). `Rows::Spread`
// is for a lone image whose latency matters (a server's only request in flight).

fn horizontal_n<const C: usize>(
    src: &Plane<'_>,
    coeffs: &Coeffs,
    src_rows: Range<usize>,
    rows: Rows,
) -> Plane<'static> {
    let out_w = coeffs.starts.len();
    let mut data = vec![0u8; out_w * src_rows.len() * C];
    let row_len = src.width * C;
    for_each_row(&mut data, out_w * C, rows, |i, line_out| {
        let y = src_rows.start + i;
        let line_in = &src.data[y * row_len..(y + 1) * row_len];
        for (xx, px_out) in line_out.chunks_exact_mut(C).enumerate() {
            let (xmin, k) = coeffs.taps(xx);
            let taps = &line_in[xmin * C..(xmin + k.len()) * C];
            let mut acc = [ROUNDING; C];
            for (px, &w) in taps.chunks_exact(C).zip(k) {
                for ch in 0..C {
                    acc[ch] += i32::from(px[ch]) * w;
                }
            }
            for ch in 0..C {
                px_out[ch] = clip8(acc[ch]);
            }
        }
    });
    Plane {
        width: out_w,
        height: src_rows.len(),
        channels: C,
        data: Cow::Owned(data),
    }
}

fn vertical_n<const C: usize>(
    src: &Plane<'_>,
    coeffs: &Coeffs,
    row0: usize,
    cols: Range<usize>,
    rows: Rows,
) -> Plane<'static> {
    let out_h = coeffs.starts.len();
    let out_w = cols.len();
    let row_len = src.width * C;
    let mut data = vec![0u8; out_w * out_h * C];
    for_each_row(&mut data, out_w * C, rows, |yy, line_out| {
        let (ymin, k) = coeffs.taps(yy);
        // Accumulate whole rows at a time: sequential reads of each source row.
        let mut acc = vec![ROUNDING; out_w * C];
        for (t, &w) in k.iter().enumerate() {
            let y = ymin + t - row0;
            let line_in = &src.data[y * row_len + cols.start * C..y * row_len + cols.end * C];
            for (a, &v) in acc.iter_mut().zip(line_in) {
                *a += i32::from(v) * w;
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
pub(super) fn bicubic(
    src: &Plane<'_>,
    (out_w, out_h): (usize, usize),
    cols: Range<usize>,
    rows: Range<usize>,
    spread: Rows,
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
            vertical(src, &vc, 0, src_cols.clone(), spread)
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
        return horizontal(&tmp, &shifted, 0..tmp.height, spread);
    }

    let src_rows = if need_v {
        vc.source_span()
    } else {
        rows.clone()
    };
    let tmp = if need_h {
        horizontal(src, &hc, src_rows.clone(), spread)
    } else {
        crop(src, cols, src_rows.clone())
    };
    if !need_v {
        return tmp;
    }
    vertical(&tmp, &vc, src_rows.start, 0..tmp.width, spread)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn i32_accumulators_cannot_overflow() {
        for (in_size, out_size) in [
            (1, 336),
            (2, 336),
            (7, 224),
            (100, 224),
            (655, 326),
            (4000, 224),
        ] {
            let c = Coeffs::bicubic(in_size, out_size, 0..out_size);
            for i in 0..out_size {
                let (_, k) = c.taps(i);
                let magnitude: i64 = k.iter().map(|&w| i64::from(w).abs()).sum();
                let worst = 255 * magnitude + i64::from(ROUNDING);
                assert!(
                    worst < i64::from(i32::MAX),
                    "{in_size}->{out_size} #{i}: {worst}"
                );
            }
        }
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
}
