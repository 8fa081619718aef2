//! Fused bias + activation at CLIP MLP shapes, CUDA-event timed; GB/s on minimal bytes (x and bias read once,
//! y written once) next to a device-to-device copy of the same bytes measured in the same run.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use flashclip::bench::{copy_ceiling, median, time_device_us, time_iters, Summary};
use flashclip::ops::bias_activation::{bias_activation, Activation};
use flashclip::{Element, Gpu};
use half::{bf16, f16};
use rand::{rngs::StdRng, Rng, SeedableRng};

/// (rows, cols): ViT-L/14-336 batch 16 (9232 tokens) fc1 output, ViT-B/16 batch 16, text batch 16.
const SHAPES: [(usize, usize); 3] = [(9232, 4096), (3152, 3072), (1232, 3072)];

fn bench_dtype<T: Element>(c: &mut Criterion, gpu: &Gpu, rng: &mut StdRng, summary: &mut Summary) {
    let mut group = c.benchmark_group(format!("bias_activation_{}", T::DTYPE));
    group
        .sample_size(20)
        .warm_up_time(std::time::Duration::from_millis(300))
        .measurement_time(std::time::Duration::from_secs(1));
    for &(rows, cols) in &SHAPES {
        let host: Vec<T> = (0..rows * cols)
            .map(|_| T::from_f32(rng.random_range(-4.0..4.0)))
            .collect();
        let x = gpu.upload(&host, &[rows, cols]).expect("upload");
        let bias = gpu.upload(&host[..cols], &[cols]).expect("upload");
        let mut y = gpu.zeros::<T>(&[rows, cols]).expect("alloc");
        let bytes = (2 * rows * cols + cols) * std::mem::size_of::<T>();
        let (copy_us, copy_gbs) = copy_ceiling(gpu, bytes / 2).expect("copy");
        group.throughput(Throughput::BytesDecimal(bytes as u64));
        for act in [Activation::QuickGelu, Activation::GeluErf] {
            let bview = bias.view();
            let mut run = || bias_activation(gpu, &x.view(), Some(&bview), act, &mut y.view_mut());
            group.bench_function(format!("{act:?}/{rows}x{cols}"), |b| {
                b.iter_custom(|iters| time_iters(gpu, iters, &mut run).expect("run"))
            });
            let us = median(&time_device_us(gpu, 5, 50, 5, &mut run).expect("run"));
            let gbs = bytes as f64 / us / 1e3;
            summary.row(vec![
                format!("{rows}x{cols}"),
                T::DTYPE.to_string(),
                format!("{act:?}"),
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
            println!("bias_activation bench skipped: {e}");
            return;
        }
    };
    let mut rng = StdRng::seed_from_u64(11);
    let mut summary = Summary::new(
        &format!(
            "bias + activation ({}; copy of the same bytes measured in the same run)",
            gpu.name().unwrap_or_default()
        ),
        &[
            "shape",
            "dtype",
            "activation",
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

criterion_group!(bias_activation_benches, benches);
criterion_main!(bias_activation_benches);
