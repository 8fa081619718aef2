//! CPU image preprocessing, one image at a time: decode + resize + crop + normalize of photo-like JPEGs (smooth
//! content with seeded sensor-like noise, quality 90) to 224 and 336 px, exact on one thread against JPEG draft
//! decoding (`Preprocessor::with_jpeg_draft`) and against the exact resize's rows spread over rayon's pool
//! (`Preprocessor::preprocess_bytes_spread`, what a server does for a lone request). Medians of wall-clock times; the
//! embedding job runs one thread per core, each on its own image.
//!
//!     cargo bench -p flashclip-model --bench preprocess

use std::time::Instant;

use flashclip::bench::{median, Summary};
use flashclip_model::preprocess::Preprocessor;
use image::{codecs::jpeg::JpegEncoder, RgbImage};

const ITERS: usize = 15;

fn photo(width: u32, height: u32, seed: u32) -> Vec<u8> {
    let mut state = seed.wrapping_mul(2_654_435_761).max(1);
    let mut noise = move || {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        (state % 25) as f32 - 12.0
    };
    let img = RgbImage::from_fn(width, height, |x, y| {
        let (u, v) = (x as f32 / width as f32, y as f32 / height as f32);
        let mut px = |base: f32| (base + noise()).clamp(0.0, 255.0) as u8;
        image::Rgb([
            px(40.0 + 180.0 * u),
            px(200.0 - 150.0 * v),
            px(90.0 + 60.0 * (6.0 * u).sin() * (4.0 * v).cos()),
        ])
    });
    let mut bytes = Vec::new();
    JpegEncoder::new_with_quality(&mut bytes, 90)
        .encode_image(&img)
        .expect("encode");
    bytes
}

fn time_ms(pre: &Preprocessor, bytes: &[u8], spread: bool) -> f64 {
    let mut samples = Vec::with_capacity(ITERS);
    for _ in 0..ITERS + 2 {
        let start = Instant::now();
        let out = if spread {
            pre.preprocess_bytes_spread(bytes, "photo.jpg")
        } else {
            pre.preprocess_bytes(bytes, "photo.jpg")
        }
        .expect("preprocess");
        std::hint::black_box(out);
        samples.push(start.elapsed().as_secs_f64() * 1e3);
    }
    median(&samples[2..])
}

fn main() {
    let mut summary = Summary::new(
        &format!(
            "JPEG preprocessing, ms per image (median); rows spread over {} threads",
            rayon::current_num_threads()
        ),
        &[
            "image",
            "to",
            "exact",
            "draft",
            "speed-up",
            "exact, rows spread",
            "speed-up",
        ],
    );
    for (w, h) in [(1024, 768), (640, 480), (2048, 1536)] {
        let bytes = photo(w, h, w ^ h);
        for size in [224, 336] {
            let exact = time_ms(&Preprocessor::new(size), &bytes, false);
            let draft = time_ms(
                &Preprocessor::new(size).with_jpeg_draft(true),
                &bytes,
                false,
            );
            let spread = time_ms(&Preprocessor::new(size), &bytes, true);
            summary.row(vec![
                format!("{w}x{h} ({} KiB)", bytes.len() / 1024),
                format!("{size}"),
                format!("{exact:.2}"),
                format!("{draft:.2}"),
                format!("{:.2}x", exact / draft),
                format!("{spread:.2}"),
                format!("{:.2}x", exact / spread),
            ]);
        }
    }
    summary.emit();
}
