//! The linear layers of ViT-L/14-336 at batch 1, 16 and 128 (577, 9232 and 73856 tokens): flashclip's GEMM with
//! its fused epilogue against what the model ran before it (cuBLAS(Lt), then flashclip's separate elementwise
//! kernel), with plain cuBLAS and the cuBLAS 8192³ rate measured in the same run as ceilings. CUDA-event device
//! times, medians.
//!
//! Per layer, the unfused path is the model's: QKV = cuBLASLt with its bias epilogue; fc1 = cuBLAS, then bias +
//! QuickGELU; out-proj and fc2 = cuBLAS, then bias + residual + LayerNorm (one kernel). The fused path: QKV and
//! fc1 in one GEMM; out-proj and fc2 as GEMM + bias + residual, then a plain LayerNorm. flashclip's GEMM runs at
//! each schedule of its consumer warpgroups (cooperative and ping-pong, each with register or TMA stores; the
//! default `linear_fused` chooses among them per call), side by side.

use criterion::{criterion_group, criterion_main, Criterion};
use flashclip::bench::{median, time_device_us, time_iters, Summary};
use flashclip::ops::bias_activation::{bias_activation_inplace, Activation};
use flashclip::ops::gemm::{
    fused_supported, linear, linear_bias, linear_fused_schedule, Epilogue, Schedule,
};
use flashclip::ops::layernorm::{bias_residual_layernorm, layernorm};
use flashclip::{Element, Gpu, Result, Tensor};
use half::{bf16, f16};
use rand::{rngs::StdRng, Rng, SeedableRng};

const WIDTH: usize = 1024;
const MLP: usize = 4096;
const TOKENS: [usize; 3] = [577, 9232, 73856];

#[derive(Debug, Clone, Copy, PartialEq)]
enum Layer {
    Qkv,
    OutProj,
    Fc1,
    Fc2,
}

impl Layer {
    /// (k, n)
    fn shape(self) -> (usize, usize) {
        match self {
            Layer::Qkv => (WIDTH, 3 * WIDTH),
            Layer::OutProj => (WIDTH, WIDTH),
            Layer::Fc1 => (WIDTH, MLP),
            Layer::Fc2 => (MLP, WIDTH),
        }
    }
}

fn random<T: Element>(gpu: &Gpu, rng: &mut StdRng, shape: &[usize], scale: f32) -> Tensor<T> {
    let n = shape.iter().product();
    let host: Vec<T> = (0..n)
        .map(|_| T::from_f32(rng.random_range(-scale..scale)))
        .collect();
    gpu.upload(&host, shape).expect("upload")
}

fn tflops(m: usize, n: usize, k: usize, us: f64) -> f64 {
    2.0 * (m * n * k) as f64 / us / 1e6
}

/// cuBLAS at 8192³, the matrix-unit ceiling of this run.
fn cublas_ceiling<T: Element>(gpu: &Gpu, rng: &mut StdRng) -> f64 {
    let s = 8192;
    let a = random::<T>(gpu, rng, &[s, s], 1.0);
    let b = random::<T>(gpu, rng, &[s, s], 1.0);
    let mut c = gpu.empty::<T>(&[s, s]).expect("alloc");
    let us = median(
        &time_device_us(gpu, 3, 10, 2, || {
            linear(gpu, &a.view(), &b.view(), &mut c.view_mut(), 0.0)
        })
        .expect("time"),
    );
    tflops(s, s, s, us)
}

struct Buffers<T: Element> {
    x: Tensor<T>,
    w: Tensor<T>,
    bias: Tensor<T>,
    gamma: Tensor<T>,
    beta: Tensor<T>,
    y: Tensor<T>,
    residual: Tensor<T>,
    normed: Tensor<T>,
}

impl<T: Element> Buffers<T> {
    fn new(gpu: &Gpu, rng: &mut StdRng, m: usize, (k, n): (usize, usize)) -> Self {
        Buffers {
            x: random(gpu, rng, &[m, k], 1.0),
            w: random(gpu, rng, &[n, k], 1.0 / (k as f32).sqrt()),
            bias: random(gpu, rng, &[n], 0.5),
            gamma: random(gpu, rng, &[n], 1.0),
            beta: random(gpu, rng, &[n], 0.5),
            y: random(gpu, rng, &[m, n], 1.0),
            residual: random(gpu, rng, &[m, n], 1.0),
            normed: random(gpu, rng, &[m, n], 1.0),
        }
    }

    /// The model's path before the fused GEMM.
    fn unfused(&mut self, gpu: &Gpu, layer: Layer) -> Result<()> {
        let (x, w, b) = (self.x.view(), self.w.view(), self.bias.view());
        match layer {
            Layer::Qkv => linear_bias(gpu, &x, &w, &b, &mut self.y.view_mut()),
            Layer::Fc1 => {
                linear(gpu, &x, &w, &mut self.y.view_mut(), 0.0)?;
                bias_activation_inplace(
                    gpu,
                    &mut self.y.view_mut(),
                    Some(&b),
                    Activation::QuickGelu,
                )
            }
            Layer::OutProj | Layer::Fc2 => {
                linear(gpu, &x, &w, &mut self.y.view_mut(), 0.0)?;
                bias_residual_layernorm(
                    gpu,
                    &self.y.view(),
                    Some(&b),
                    &mut self.residual.view_mut(),
                    &self.gamma.view(),
                    &self.beta.view(),
                    1e-5,
                    &mut self.normed.view_mut(),
                )
            }
        }
    }

    /// The same layer with the epilogue in flashclip's GEMM at `schedule`.
    fn fused(&mut self, gpu: &Gpu, layer: Layer, schedule: Schedule) -> Result<()> {
        let (x, w, b) = (self.x.view(), self.w.view(), self.bias.view());
        match layer {
            Layer::Qkv => linear_fused_schedule(
                gpu,
                schedule,
                &x,
                &w,
                Epilogue::Bias(&b),
                &mut self.y.view_mut(),
            ),
            Layer::Fc1 => linear_fused_schedule(
                gpu,
                schedule,
                &x,
                &w,
                Epilogue::BiasActivation(&b, Activation::QuickGelu),
                &mut self.y.view_mut(),
            ),
            Layer::OutProj | Layer::Fc2 => {
                linear_fused_schedule(
                    gpu,
                    schedule,
                    &x,
                    &w,
                    Epilogue::BiasAccumulate(&b),
                    &mut self.residual.view_mut(),
                )?;
                layernorm(
                    gpu,
                    &self.residual.view(),
                    &self.gamma.view(),
                    &self.beta.view(),
                    1e-5,
                    &mut self.normed.view_mut(),
                )
            }
        }
    }
}

fn bench_dtype<T: Element>(c: &mut Criterion, gpu: &Gpu, rng: &mut StdRng, summary: &mut Summary) {
    let ceiling = cublas_ceiling::<T>(gpu, rng);
    let mut group = c.benchmark_group(format!("gemm_{}", T::DTYPE));
    group
        .sample_size(10)
        .warm_up_time(std::time::Duration::from_millis(200))
        .measurement_time(std::time::Duration::from_millis(500));
    for m in TOKENS {
        for layer in [Layer::Qkv, Layer::OutProj, Layer::Fc1, Layer::Fc2] {
            let (k, n) = layer.shape();
            let mut buf = Buffers::<T>::new(gpu, rng, m, (k, n));
            let time = |f: &mut dyn FnMut() -> Result<()>| {
                median(&time_device_us(gpu, 3, 15, 3, f).expect("time"))
            };
            let plain = time(&mut || {
                linear(
                    gpu,
                    &buf.x.view(),
                    &buf.w.view(),
                    &mut buf.y.view_mut(),
                    0.0,
                )
            });
            let unfused = time(&mut || buf.unfused(gpu, layer));
            let mut row = vec![
                format!("{layer:?}"),
                format!("{m}x{n}x{k}"),
                T::DTYPE.to_string(),
                format!("{plain:.1} ({:.0})", tflops(m, n, k, plain)),
                format!("{unfused:.1}"),
            ];
            for schedule in Schedule::ALL {
                let ours_plain = time(&mut || {
                    linear_fused_schedule(
                        gpu,
                        schedule,
                        &buf.x.view(),
                        &buf.w.view(),
                        Epilogue::Plain,
                        &mut buf.y.view_mut(),
                    )
                });
                let fused = time(&mut || buf.fused(gpu, layer, schedule));
                group.bench_function(format!("{layer:?}/{m}/{}", schedule.name()), |b| {
                    b.iter_custom(|iters| {
                        time_iters(gpu, iters, || buf.fused(gpu, layer, schedule)).expect("run")
                    })
                });
                row.extend([
                    format!("{ours_plain:.1} ({:.0})", tflops(m, n, k, ours_plain)),
                    format!("{fused:.1}"),
                    format!("{:.2}x", unfused / fused),
                ]);
            }
            row.push(format!("{ceiling:.0}"));
            summary.row(row);
        }
    }
    group.finish();
}

fn benches(c: &mut Criterion) {
    let gpu = match Gpu::new(0) {
        Ok(g) => g,
        Err(e) => {
            println!("gemm bench skipped: {e}");
            return;
        }
    };
    if !fused_supported::<f16>(&gpu) {
        println!("gemm bench skipped: the fused GEMM needs an sm_90 GPU");
        return;
    }
    let mut rng = StdRng::seed_from_u64(17);
    let mut header: Vec<String> = ["layer", "m x n x k", "dtype", "cuBLAS plain", "unfused"]
        .map(String::from)
        .to_vec();
    for schedule in Schedule::ALL {
        let name = schedule.name();
        header.extend([
            format!("{name} plain"),
            format!("{name} fused"),
            format!("unfused / {name} fused"),
        ]);
    }
    header.push("cuBLAS 8192³ TFLOP/s".into());
    let header: Vec<&str> = header.iter().map(String::as_str).collect();
    let mut summary = Summary::new(
        &format!(
            "ViT-L/14-336 linear layers ({}): µs (TFLOP/s); unfused = cuBLAS(Lt) + flashclip's elementwise kernel, \
             fused = flashclip's GEMM with the epilogue (+ LayerNorm after out-proj/fc2), at each schedule \
             (`linear_fused` chooses per call)",
            gpu.name().unwrap_or_default()
        ),
        &header,
    );
    bench_dtype::<f16>(c, &gpu, &mut rng, &mut summary);
    bench_dtype::<bf16>(c, &gpu, &mut rng, &mut summary);
    summary.emit();
}

criterion_group!(gemm_benches, benches);
criterion_main!(gemm_benches);
