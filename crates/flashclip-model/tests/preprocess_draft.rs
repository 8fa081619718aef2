//! JPEG draft decoding (`Preprocessor::with_jpeg_draft`): large JPEGs decoded at a reduced scale must give nearly
//! the exact transform's pixels, and images too small to reduce exactly them.

use flashclip_model::preprocess::Preprocessor;
use image::{codecs::jpeg::JpegEncoder, RgbImage};

/// A photo-like JPEG: smooth gradients and shapes, with a little seeded noise (a photo's sensor grain).
fn photo(width: u32, height: u32, seed: u32) -> Vec<u8> {
    let mut state = seed.wrapping_mul(2_654_435_761).max(1);
    let mut noise = move || {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        (state % 17) as f32 - 8.0
    };
    let img = RgbImage::from_fn(width, height, |x, y| {
        let (u, v) = (x as f32 / width as f32, y as f32 / height as f32);
        let disc = ((u - 0.6).powi(2) + (v - 0.4).powi(2) < 0.05) as u8 as f32 * 90.0;
        let mut px = |base: f32| (base + noise()).clamp(0.0, 255.0) as u8;
        image::Rgb([
            px(40.0 + 180.0 * u + disc),
            px(200.0 - 150.0 * v),
            px(90.0 + 60.0 * (6.0 * u).sin() * (4.0 * v).cos() + disc * 0.5),
        ])
    });
    let mut bytes = Vec::new();
    JpegEncoder::new_with_quality(&mut bytes, 90)
        .encode_image(&img)
        .unwrap();
    bytes
}

fn mean_and_max_abs(a: &[f32], b: &[f32]) -> (f64, f64) {
    assert_eq!(a.len(), b.len());
    let diffs = a.iter().zip(b).map(|(x, y)| f64::from((x - y).abs()));
    let max = diffs.clone().fold(0.0, f64::max);
    (diffs.sum::<f64>() / a.len() as f64, max)
}

#[test]
fn large_jpegs_decoded_reduced_stay_close_to_the_exact_transform() {
    let exact = Preprocessor::new(224);
    let draft = Preprocessor::new(224).with_jpeg_draft(true);
    // 1024x768 -> decoded at 1/2 (512x384) or 1/4 (256x192 < 224: not allowed) -> 1/2; 1800x1200 -> 1/4.
    for (w, h, seed) in [(1024, 768, 1), (1800, 1200, 2), (768, 1024, 3)] {
        let bytes = photo(w, h, seed);
        let a = exact.preprocess_bytes(&bytes, "photo.jpg").unwrap();
        let b = draft.preprocess_bytes(&bytes, "photo.jpg").unwrap();
        let (mean, max) = mean_and_max_abs(&a, &b);
        println!(
            "{w}x{h}: draft against exact, normalized units: mean |d| {mean:.4}, max |d| {max:.3}"
        );
        // A normalized unit is about 70 pixel levels (std 0.27 x 255): the mean stays under one level.
        assert!(mean < 0.015, "{w}x{h}: mean {mean}"); // measured 0.0047-0.0071
        assert!(max < 0.25, "{w}x{h}: max {max}"); // measured 0.044-0.117
        assert_ne!(a, b, "{w}x{h}: the draft path did not run");
    }
}

#[test]
fn jpegs_too_small_to_reduce_and_other_formats_are_exact() {
    let exact = Preprocessor::new(224);
    let draft = Preprocessor::new(224).with_jpeg_draft(true);
    // 500x375: half would be 187 rows < 224, so no reduction.
    let bytes = photo(500, 375, 4);
    assert_eq!(
        exact.preprocess_bytes(&bytes, "small.jpg").unwrap(),
        draft.preprocess_bytes(&bytes, "small.jpg").unwrap()
    );
    let mut png = Vec::new();
    RgbImage::from_fn(900, 700, |x, y| {
        image::Rgb([x as u8, y as u8, (x ^ y) as u8])
    })
    .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
    .unwrap();
    assert_eq!(
        exact.preprocess_bytes(&png, "a.png").unwrap(),
        draft.preprocess_bytes(&png, "a.png").unwrap()
    );
}

#[test]
fn a_truncated_jpeg_is_refused_in_draft_mode_too() {
    let bytes = photo(1024, 768, 5);
    let cut = &bytes[..bytes.len() / 3];
    let err = Preprocessor::new(224)
        .with_jpeg_draft(true)
        .preprocess_bytes(cut, "cut.jpg")
        .unwrap_err();
    assert!(err.to_string().contains("truncated"), "{err}");
}
