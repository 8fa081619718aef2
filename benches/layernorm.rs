//! Fused bias + residual + LayerNorm and plain LayerNorm at CLIP widths, CUDA-event timed; GB/s on minimal bytes
//! (fused: x and residual read, sum and y written; plain: x read, y written) next to a device-to-device copy of
//! the same bytes measured in the same run.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use flashclip::bench::{copy_ceiling, median, time_device_us, time_iters, Summary};
use flashclip::ops::layernorm::{bias_residual_layernorm, layernorm};
use flashclip::{Element, Gpu};
use half::{bf16, f16};
use rand::{rngs::StdRng, Rng, SeedableRng};

/// (rows, cols): ViT-L/14-336 batch 16 tokens x 1024, ViT-H batch 16 x 1280, ViT-B/16 batch 16 x 768.
const SHAPES: [(usize, usize); 3] = [(9232, 1024), (4112, 1280), (3152, 768)];

fn bench_dtype<T: Element>(c: &mut Criterion, gpu: &Gpu, rng: &mut StdRng, summary: &mut Summary) {
    let mut group = c.benchmark_group(format!("layernorm_{}", T::DTYPE));
    group
        .sample_size(20)
        .warm_up_time(std::time::Duration::from_millis(300))
        .measurement_time(std::time::Duration::from_secs(1));
    for &(rows, cols) in &SHAPES {
        let host: Vec<T> = (0..rows * cols)
            .map(|_| T::from_f32(rng.random_range(-2.0..2.0)))
            .collect();
        let mut residual = gpu.upload(&host, &[rows, cols]).expect("upload");
        let params = gpu.upload(&host[..cols], &[cols]).expect("upload");
        // x = -bias in every row: the in-place residual update adds exactly zero, so thousands of timed runs keep
        // the residual at its random start instead of growing to inf.
        let neg: Vec<T> = host[..cols]
            .iter()
            .map(|v| T::from_f32(-v.to_f32()))
            .cycle()
            .take(rows * cols)
            .collect();
        let x = gpu.upload(&neg, &[rows, cols]).expect("upload");
        let mut y = gpu.zeros::<T>(&[rows, cols]).expect("alloc");
        let size = std::mem::size_of::<T>();
        for fused in [true, false] {
            let bytes = rows * cols * size * if fused { 4 } else { 2 };
            let (copy_us, copy_gbs) = copy_ceiling(gpu, bytes / 2).expect("copy");
            group.throughput(Throughput::BytesDecimal(bytes as u64));
            let p = params.view();
            let mut run = || {
                if fused {
                    bias_residual_layernorm(
                        gpu,
                        &x.view(),
                        Some(&p),
                        &mut residual.view_mut(),
                        &p,
                        &p,
                        1e-5,
                        &mut y.view_mut(),
                    )
                } else {
                    layernorm(gpu, &x.view(), &p, &p, 1e-5, &mut y.view_mut())
                }
            };
            let name = if fused {
                "bias_residual_layernorm"
            } else {
                "layernorm"
            };
            group.bench_function(format!("{name}/{rows}x{cols}"), |b| {
                b.iter_custom(|iters| time_iters(gpu, iters, &mut run).expect("run"))
            });
            let us = median(&time_device_us(gpu, 5, 50, 5, &mut run).expect("run"));
            let gbs = bytes as f64 / us / 1e3;
            summary.row(vec![
                format!("{rows}x{cols}"),
                T::DTYPE.to_string(),
                name.into(),
                format!("{us:.1}"),
                format!("{gbs:.0}"),
                format!("{copy_us:.1} us, {copy_gbs:.0} GB/s"),
                format!("{:.0}%", 100.0 * gbs / copy_gbs),
            ]);
        }
    }
    group.finish();
}

fn benches(c: &mut Criterion) {
    let gpu = match Gpu::new(0) {
        Ok(g) => g,
        Err(e) => {
            println!("layernorm bench skipped: {e}");
            return;
        }
    };
    let mut rng = StdRng::seed_from_u64(13);
    let mut summary = Summary::new(
        &format!(
            "LayerNorm ({}; copy of the same bytes measured in the same run)",
            gpu.name().unwrap_or_default()
        ),
        &[
            "shape",
            "dtype",
            "kernel",
            "median us",
            "GB/s",
            "d2d copy",
            "of copy",
        ],
    );
    bench_dtype::<f16>(c, &gpu, &mut rng, &mut summary);
    bench_dtype::<bf16>(c, &gpu, &mut rng, &mut summary);
    summary.emit();
}

criterion_group!(layernorm_benches, benches);
criterion_main!(layernorm_benches);
