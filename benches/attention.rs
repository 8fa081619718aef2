//! Attention forward at CLIP (and SigLIP so400m) shapes: every flash version and the materialized cuBLAS path, f16 and bf16,
//! CUDA-event timed. TFLOP/s counts 4·B·H·N²·D (halved when causal); the cuBLAS fp16 GEMM rate measured in the
//! same run is the compute ceiling. PyTorch's SDPA backends on the same shapes: benches/peers/sdpa.py.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use flashclip::bench::{median, time_device_us, time_iters, Summary};
use flashclip::ops::attention::{
    flash_attention, flash_attention_tiles, materialized_attention, MaterializedWorkspace, Options,
    Tiles, Version,
};
use flashclip::ops::gemm::linear;
use flashclip::{Element, Gpu, Tensor};
use half::{bf16, f16};
use rand::{rngs::StdRng, Rng, SeedableRng};

/// (batch, heads, seq, head_dim, causal)
const SHAPES: [(usize, usize, usize, usize, bool); 11] = [
    (16, 16, 577, 64, false),
    (256, 16, 577, 64, false),
    (1, 16, 577, 64, false),
    (16, 16, 257, 64, false),
    (16, 16, 257, 80, false),
    (16, 12, 77, 64, true),
    (16, 16, 577, 96, false),
    (16, 16, 577, 104, false),
    (16, 16, 577, 112, false),
    (16, 16, 577, 128, false),
    // SigLIP so400m/14 at 384 px: 27² patches, 16 heads of 72.
    (16, 16, 729, 72, false),
];

/// A tensor of uniform values in [-1, 1): a 1 Mi-element random block repeated (never zeros, cheap to make).
fn random<T: Element>(gpu: &Gpu, rng: &mut StdRng, shape: &[usize]) -> Tensor<T> {
    let n: usize = shape.iter().product();
    let block: Vec<T> = (0..n.min(1 << 20))
        .map(|_| T::from_f32(rng.random_range(-1.0..1.0)))
        .collect();
    let host: Vec<T> = block.iter().copied().cycle().take(n).collect();
    gpu.upload(&host, shape).expect("upload")
}

/// fp16 GEMM rate of cuBLAS at 8192³ (TFLOP/s), the compute ceiling.
fn gemm_ceiling(gpu: &Gpu, rng: &mut StdRng) -> f64 {
    let n = 8192;
    let a = random::<f16>(gpu, rng, &[n, n]);
    let b = random::<f16>(gpu, rng, &[n, n]);
    let mut c = gpu.zeros::<f16>(&[n, n]).expect("alloc");
    let us = median(
        &time_device_us(gpu, 3, 10, 1, || {
            linear(gpu, &a.view(), &b.view(), &mut c.view_mut(), 0.0)
        })
        .expect("gemm"),
    );
    2.0 * (n as f64).powi(3) / us / 1e6
}

#[derive(Clone, Copy)]
enum Path {
    Flash(Version),
    /// v3 or v4 at an explicit tile shape: the sweep behind the tile tables.
    Tiles(Tiles),
    Materialized,
}

impl Path {
    fn name(self) -> &'static str {
        match self {
            Path::Flash(v) => v.name(),
            Path::Tiles(t) => t.name(),
            Path::Materialized => "materialized",
        }
    }
}

fn bench_dtype<T: Element>(
    c: &mut Criterion,
    gpu: &Gpu,
    rng: &mut StdRng,
    summary: &mut Summary,
    ceiling: f64,
) {
    let mut group = c.benchmark_group(format!("attention_{}", T::DTYPE));
    group
        .sample_size(10)
        .warm_up_time(std::time::Duration::from_millis(300))
        .measurement_time(std::time::Duration::from_secs(1));
    for &(b, h, n, d, causal) in &SHAPES {
        let qkv = random::<T>(gpu, rng, &[b, n, 3, h, d]);
        let all = qkv.view();
        let (q, k, v) = (
            all.select(2, 0).expect("q"),
            all.select(2, 1).expect("k"),
            all.select(2, 2).expect("v"),
        );
        let mut o = gpu.zeros::<T>(&[b, n, h, d]).expect("alloc");
        let opts = Options {
            softmax_scale: None,
            causal,
        };
        let flops = flashclip::ops::attention::Shape {
            batch: b,
            seq_q: n,
            seq_k: n,
            heads_q: h,
            heads_kv: h,
            head_dim: d,
        }
        .flops(causal);
        // The slow references (v1, and the materialized path with its B·H·N² scores) only where they take
        // milliseconds, not tenths of seconds per call.
        let small = b * h * n * n <= 1 << 28;
        let mut paths: Vec<Path> = Version::ALL
            .iter()
            .filter(|v| v.supports(T::DTYPE, d) && v.runs_on(gpu) && (small || **v != Version::V1))
            .map(|&v| Path::Flash(v))
            .collect();
        if small {
            // Every shape, the one each version picks for this head dim included (its row repeats the version's).
            paths.extend(
                Tiles::ALL
                    .iter()
                    .filter(|t| t.version().runs_on(gpu) && t.head_dims().contains(&d))
                    .map(|&t| Path::Tiles(t)),
            );
        }
        if small {
            paths.push(Path::Materialized);
        }
        let mut ws = paths
            .iter()
            .any(|p| matches!(p, Path::Materialized))
            .then(|| MaterializedWorkspace::<T>::new(gpu, b, h, n, n).expect("workspace"));
        let label = format!("B{b} H{h} N{n} D{d}{}", if causal { " causal" } else { "" });
        group.throughput(Throughput::Elements(flops as u64));
        for path in paths {
            let mut run = || match path {
                Path::Flash(ver) => {
                    flash_attention(gpu, ver, &q, &k, &v, None, &opts, &mut o.view_mut(), None)
                }
                Path::Tiles(t) => {
                    flash_attention_tiles(gpu, t, &q, &k, &v, None, &opts, &mut o.view_mut(), None)
                }
                Path::Materialized => materialized_attention(
                    gpu,
                    &q,
                    &k,
                    &v,
                    None,
                    &opts,
                    &mut o.view_mut(),
                    None,
                    ws.as_mut().expect("workspace"),
                ),
            };
            group.bench_function(format!("{}/{label}", path.name()), |bencher| {
                bencher
                    .iter_custom(|iters| time_iters(gpu, iters, &mut run).expect("attention run"))
            });
            let us = median(&time_device_us(gpu, 3, 30, 3, &mut run).expect("attention run"));
            let tflops = flops / us / 1e6;
            summary.row(vec![
                label.clone(),
                T::DTYPE.to_string(),
                path.name().into(),
                format!("{us:.1}"),
                format!("{tflops:.1}"),
                format!("{:.0}%", 100.0 * tflops / ceiling),
            ]);
        }
    }
    group.finish();
}

fn benches(c: &mut Criterion) {
    let gpu = match Gpu::new(0) {
        Ok(g) => g,
        Err(e) => {
            println!("attention bench skipped: {e}");
            return;
        }
    };
    let mut rng = StdRng::seed_from_u64(7);
    let ceiling = gemm_ceiling(&gpu, &mut rng);
    let mut summary = Summary::new(
        &format!(
            "attention forward ({}; cuBLAS fp16 8192^3 ceiling {ceiling:.0} TFLOP/s, same run)",
            gpu.name().unwrap_or_default()
        ),
        &[
            "shape",
            "dtype",
            "version",
            "median us",
            "TFLOP/s",
            "of GEMM ceiling",
        ],
    );
    bench_dtype::<f16>(c, &gpu, &mut rng, &mut summary, ceiling);
    bench_dtype::<bf16>(c, &gpu, &mut rng, &mut summary, ceiling);
    summary.emit();
}

criterion_group!(attention, benches);
criterion_main!(attention);
