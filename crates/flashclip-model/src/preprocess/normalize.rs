//! torchvision's `ToTensor` + `Normalize`: 8-bit pixels to normalized `f32` planes, CHW order.

use super::plane::Plane;

/// torchvision's `ToTensor` + `Normalize` for one value, in the same `f32` operations.
fn normalize(v: u8, mean: f32, std: f32) -> f32 {
    (f32::from(v) / 255.0 - mean) / std
}

/// Writes the `n`×`n` image `cropped` into `out` (`3 * n * n` floats) as normalized R, G, B
/// planes: gray is replicated to three channels and alpha is dropped.
pub(super) fn write_chw(
    cropped: &Plane<'_>,
    n: usize,
    mean: [f32; 3],
    std: [f32; 3],
    out: &mut [f32],
) {
    // LUTs: each output value depends only on the 8-bit input and the channel.
    let luts: [[f32; 256]; 3] =
        std::array::from_fn(|c| std::array::from_fn(|v| normalize(v as u8, mean[c], std[c])));
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
}

/// Fills `out` (`3 * n * n` floats) with the normalized value of black.
pub(super) fn fill_black(n: usize, mean: [f32; 3], std: [f32; 3], out: &mut [f32]) {
    for c in 0..3 {
        out[c * n * n..(c + 1) * n * n].fill(normalize(0, mean[c], std[c]));
    }
}
