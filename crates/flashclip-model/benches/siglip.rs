//! SigLIP image + text embedding on the GPU at so400m/14-384 (27 layers of width 1152, 16 heads of 72, 729 patches,
//! 64-token texts) with seeded random weights: the flashclip side of scripts/peer_siglip_hf.py, same batches and
//! the same timer (CUDA events around each call after warm-ups, median of the timed runs). Run both on one machine,
//! one after the other:
//!
//!     cargo bench -p flashclip-model --bench siglip
//!     python3 scripts/peer_siglip_hf.py --batch 1 16 128
//!
//! `SIGLIP_BENCH_PRESET` picks another preset (e.g. siglip-base-patch16-224), `SIGLIP_BENCH_BATCHES` the batches
//! (comma-separated). Rows also go to the file named by FLASHCLIP_BENCH_OUT.

use flashclip::bench::{median, Summary};
use flashclip::{Element, Gpu};
use flashclip_model::siglip::{SiglipConfig, SiglipGpuModel};
use flashclip_model::AttentionImpl;
use half::{bf16, f16};
use rand::{rngs::StdRng, Rng, SeedableRng};

const SEED: u64 = 20261207;
const WARMUP: usize = 4;
const ITERS: usize = 10;

/// Weights of a plausible scale (std 0.02; LayerNorm gains 1), so activations stay finite in f16.
fn weights(rng: &mut StdRng) -> impl FnMut(&str, &[usize]) -> Vec<f32> + '_ {
    move |key, shape| {
        let n = shape.iter().product::<usize>();
        if key.contains("norm") && key.ends_with("weight") {
            vec![1.0; n]
        } else {
            (0..n).map(|_| rng.random_range(-0.035f32..0.035)).collect()
        }
    }
}

fn bench<T: Element>(gpu: &Gpu, config: &SiglipConfig, batches: &[usize], summary: &mut Summary) {
    let mut rng = StdRng::seed_from_u64(SEED);
    let attention = AttentionImpl::Fastest;
    let model =
        SiglipGpuModel::<T>::from_fn(gpu, config, attention, weights(&mut rng)).expect("model");
    let (v, t) = (&config.vision, &config.text);
    for &batch in batches {
        let mut ws = model.workspace(gpu, batch, batch).expect("workspace");
        let pixels: Vec<f32> = (0..batch * v.num_channels * v.image_size * v.image_size)
            .map(|_| rng.random_range(-1.0f32..1.0))
            .collect();
        let texts: Vec<Vec<u32>> = (0..batch)
            .map(|_| {
                (0..t.max_position_embeddings)
                    .map(|_| rng.random_range(2..t.vocab_size as u32))
                    .collect()
            })
            .collect();
        let mut run = || {
            let n = model.encode_images(gpu, &mut ws, &pixels).expect("images");
            model.encode_texts(gpu, &mut ws, &texts).expect("texts");
            n
        };
        for _ in 0..WARMUP {
            run();
        }
        gpu.synchronize().expect("sync");
        let mut times = Vec::with_capacity(ITERS);
        for _ in 0..ITERS {
            let (start, end) = (
                gpu.timing_event().expect("event"),
                gpu.timing_event().expect("event"),
            );
            start.record(gpu.stream()).expect("record");
            run();
            end.record(gpu.stream()).expect("record");
            end.synchronize().expect("sync");
            times.push(start.elapsed_ms(&end).expect("elapsed") as f64);
        }
        // The embeddings are finite (a broken path shows here, not only in the tests).
        let image = model.read_image_embeds(gpu, &ws, batch).expect("read");
        assert!(
            image.iter().all(|x| x.is_finite()),
            "non-finite image embeddings"
        );
        let med = median(&times);
        let flops = batch as f64 * (config.image_flops() + config.text_flops()) as f64;
        summary.row(vec![
            batch.to_string(),
            T::DTYPE.to_string(),
            format!("{med:.2}"),
            format!("{:.2}", times.iter().copied().fold(f64::INFINITY, f64::min)),
            format!("{:.3}", flops / (med * 1e-3) / 1e12),
        ]);
    }
}

fn main() {
    let Ok(gpu) = Gpu::new(0) else {
        println!("siglip bench: no GPU, nothing to time");
        return;
    };
    let preset =
        std::env::var("SIGLIP_BENCH_PRESET").unwrap_or_else(|_| "siglip-so400m-patch14-384".into());
    let config = SiglipConfig::preset(&preset).expect("preset");
    let batches: Vec<usize> = std::env::var("SIGLIP_BENCH_BATCHES")
        .unwrap_or_else(|_| "1,16,128".into())
        .split(',')
        .filter_map(|b| b.trim().parse().ok())
        .collect();
    let mut summary = Summary::new(
        &format!(
            "flashclip SigLIP {preset} image + text embedding ({WARMUP} warm-ups, {ITERS} timed runs, CUDA events)"
        ),
        &["B", "dtype", "median ms", "min ms", "TFLOP/s (2/MAC, median)"],
    );
    bench::<f16>(&gpu, &config, &batches, &mut summary);
    bench::<bf16>(&gpu, &config, &batches, &mut summary);
    summary.emit();
}
