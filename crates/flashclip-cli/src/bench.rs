//! `flashclip bench`: the speed-up ladder, one full CLIP forward (vision + text tower) per timed run.

use std::path::PathBuf;
use std::time::Instant;

use clap::Args;
use flashclip::bench::{median, time_device_us, time_samples_us, Summary};
use flashclip::ops::attention::Version;
use flashclip::ops::gemm::linear;
use flashclip::{Element, Gpu};
use flashclip_model::backend::{Embedder, GpuBackend};
use flashclip_model::config::ClipConfig;
use flashclip_model::flops::{count, FlopsInput};
use flashclip_model::{
    AttentionImpl, Checkpoint, ClipModel, ClipWeights, GraphShape, ModelConfig, ModelError,
};
use half::{bf16, f16};
use serde::Serialize;

use crate::error::{open_gpu, CliError, Result};
use crate::{bench_cn, bench_siglip, model_dir, random};

/// Seed of the random weights, pixels and tokens (fixed, so runs are comparable).
const SEED: u64 = 0x5EED_C11B;

/// `flashclip bench` arguments.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Model directory (default: random weights of --preset).
    #[arg(long)]
    pub(crate) model: Option<PathBuf>,
    /// Architecture of the random weights when no --model is given (a CLIP preset, CN-CLIP-ViT-L-14-336 and the
    /// other Chinese-CLIP presets, or siglip-so400m-patch14-384 and the other SigLIP presets). A Chinese-CLIP model
    /// is timed in fp32, fp16 (also as a CUDA graph) and bf16, a SigLIP model in fp16 (also as a CUDA graph) and
    /// bf16.
    #[arg(long, default_value = "ViT-L-14-336")]
    pub(crate) preset: String,
    /// Images and texts per forward.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) batch: u32,
    /// Tokens per text.
    #[arg(long, default_value_t = 77)]
    pub(crate) text_len: usize,
    #[arg(long, default_value_t = 4)]
    pub(crate) warmup: usize,
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) iters: u32,
    /// Also write the report as JSON.
    #[arg(long)]
    pub(crate) json: Option<PathBuf>,
    /// Also write the markdown table.
    #[arg(long)]
    pub(crate) markdown: Option<PathBuf>,
    /// Attention of the fp16/bf16 rungs: the per-shape choice, or one version everywhere (to compare versions
    /// end to end).
    #[arg(long, value_enum, default_value_t = AttentionImpl::Fastest)]
    pub(crate) attention: AttentionImpl,
    /// Instead of the ladder, time what the embedding job and the server call (CLIP models): the fp16 GPU
    /// backend's `embed_images` on --batch images in host memory (conversion, upload, vision forward, download),
    /// wall clock: the model-only rate the job and the server are measured against; then the same batches with
    /// one in flight while the next is started, as the server runs them.
    #[arg(long)]
    pub(crate) embedder: bool,
}

/// Where the benchmarked weights come from.
enum Weights {
    Checkpoint(Checkpoint),
    /// Seeded random weights ([`random::weights`]).
    Random(u64),
}

impl Weights {
    fn build<T: Element>(
        &self,
        gpu: &Gpu,
        config: &ClipConfig,
        attention: AttentionImpl,
    ) -> Result<ClipModel<T>> {
        Ok(match self {
            Weights::Checkpoint(c) => ClipModel::load(gpu, config, c, attention)?,
            Weights::Random(seed) => ClipModel::from_fn(
                gpu,
                config,
                attention,
                random::weights(config.logit_scale_init, *seed),
            )?,
        })
    }
}

/// One rung of the ladder.
#[derive(Debug, Clone, Copy)]
enum Rung {
    F32Materialized,
    F32FlashV1,
    F16Best,
    F16Graph,
    Bf16Best,
}

impl Rung {
    const ALL: [Rung; 5] = [
        Rung::F32Materialized,
        Rung::F32FlashV1,
        Rung::F16Best,
        Rung::F16Graph,
        Rung::Bf16Best,
    ];

    fn dtype(self) -> &'static str {
        match self {
            Rung::F32Materialized | Rung::F32FlashV1 => "f32",
            Rung::F16Best | Rung::F16Graph => "f16",
            Rung::Bf16Best => "bf16",
        }
    }

    /// The rung's attention; `chosen` (--attention) applies to the 16-bit rungs.
    fn attention(self, gpu: &Gpu, config: &ClipConfig, chosen: AttentionImpl) -> AttentionImpl {
        let fixed = Some(chosen).filter(|&c| c != AttentionImpl::Fastest);
        match self {
            Rung::F32Materialized => AttentionImpl::Materialized,
            Rung::F32FlashV1 => AttentionImpl::Flash(Version::V1),
            Rung::F16Best | Rung::F16Graph => {
                fixed.unwrap_or_else(|| AttentionImpl::best::<f16>(gpu, config))
            }
            Rung::Bf16Best => fixed.unwrap_or_else(|| AttentionImpl::best::<bf16>(gpu, config)),
        }
    }

    /// Whether the rung replays a CUDA graph of the forward instead of enqueuing its launches one by one.
    fn graph(self) -> bool {
        matches!(self, Rung::F16Graph)
    }

    fn name(self, attention: AttentionImpl) -> String {
        let flash = attention.describe();
        match self {
            Rung::F32Materialized => "fp32, materialized attention".into(),
            Rung::F32FlashV1 => "fp32 + flash attention v1".into(),
            Rung::F16Best => format!("fp16 + {flash} + fused kernels"),
            Rung::F16Graph => format!("fp16 + {flash} + fused kernels + CUDA graph"),
            Rung::Bf16Best => format!("bf16 + {flash} + fused kernels (extra)"),
        }
    }
}

/// One row of the report.
#[derive(Debug, Serialize)]
struct Row {
    rung: usize,
    name: String,
    dtype: &'static str,
    attention: String,
    mean_ms: Option<f64>,
    sd_ms: Option<f64>,
    median_ms: Option<f64>,
    speedup_vs_rung1: Option<f64>,
    tflops: Option<f64>,
    mfu: Option<f64>,
    samples_ms: Vec<f64>,
    error: Option<String>,
}

/// The whole report (`--json`).
#[derive(Debug, Serialize)]
struct Report {
    gpu: String,
    compute_capability: String,
    model: String,
    weights: String,
    image_batch: usize,
    image_size: usize,
    image_tokens: usize,
    text_batch: usize,
    text_len: usize,
    warmup: usize,
    iters: usize,
    flops_convention: &'static str,
    flops_per_forward: f64,
    gemm_ceiling_tflops: f64,
    rows: Vec<Row>,
}

/// cuBLAS fp16 GEMM rate at 8192³ in TFLOP/s (2 FLOPs per MAC), the compute ceiling of the MFU column.
fn gemm_ceiling(gpu: &Gpu) -> Result<f64> {
    let n = 8192;
    let host: Vec<f16> = random::uniform(SEED, 1 << 20, 1.0)
        .into_iter()
        .map(f16::from_f32)
        .collect();
    let block: Vec<f16> = host.iter().copied().cycle().take(n * n).collect();
    let a = gpu.upload(&block, &[n, n])?;
    let b = gpu.upload(&block, &[n, n])?;
    let mut c = gpu.zeros::<f16>(&[n, n])?;
    let us = median(&time_device_us(gpu, 3, 10, 1, || {
        linear(gpu, &a.view(), &b.view(), &mut c.view_mut(), 0.0)
    })?);
    Ok(2.0 * (n as f64).powi(3) / us / 1e6)
}

/// Maps a model error into the kernel crate's error (the timing closure's type), keeping GPU errors as they are.
pub(crate) fn as_gpu_error(e: ModelError) -> flashclip::Error {
    match e {
        ModelError::Gpu(e) => e,
        other => flashclip::Error::InvalidArgument {
            what: "forward",
            detail: other.to_string(),
        },
    }
}

/// Builds the model in `T`, uploads the images and token ids once and times `iters` forwards (after `warmup`
/// untimed ones) on those device-resident inputs: both towers enqueued launch by launch, or, with `graph`, one
/// replay of the forward captured into a CUDA graph (captured before timing). Returns the per-forward device times
/// in microseconds. Model and workspace are dropped on return.
#[allow(clippy::too_many_arguments)]
fn time_rung<T: Element>(
    gpu: &Gpu,
    config: &ClipConfig,
    weights: &Weights,
    attention: AttentionImpl,
    pixels: &[f32],
    texts: &[Vec<u32>],
    graph: bool,
    warmup: usize,
    iters: usize,
) -> Result<Vec<f64>> {
    let model = weights.build::<T>(gpu, config, attention)?;
    let mut ws = model.workspace(gpu, texts.len(), texts.len())?;
    let images = model.upload_images(gpu, &mut ws, pixels)?;
    let uploaded = model.upload_texts(gpu, &mut ws, texts, None)?;
    let (samples, image, text) = if graph {
        let shape = GraphShape {
            images,
            texts: uploaded.batch,
            text_len: uploaded.len,
        };
        let mut forward = model.capture_forward(gpu, &mut ws, shape)?;
        forward.upload_images(pixels)?;
        forward.upload_texts(texts)?;
        let samples = time_samples_us(gpu, warmup, iters, 1, || {
            forward.launch().map_err(as_gpu_error)
        })?;
        (
            samples,
            forward.read_image_embeds()?,
            forward.read_text_embeds()?,
        )
    } else {
        let samples = time_samples_us(gpu, warmup, iters, 1, || {
            model
                .run_vision(gpu, &mut ws, images)
                .map_err(as_gpu_error)?;
            model
                .run_uploaded_texts(gpu, &mut ws)
                .map(|_| ())
                .map_err(as_gpu_error)
        })?;
        (
            samples,
            model.read_image_embeds(gpu, &ws, images)?,
            model.read_text_embeds(gpu, &ws, texts.len())?,
        )
    };
    if image.iter().chain(text.iter()).any(|x| !x.is_finite()) {
        eprintln!(
            "warning: {} forward produced non-finite embeddings",
            T::DTYPE
        );
    }
    Ok(samples)
}

/// One timed configuration of a family's bench as its table row (name, attention, median ms, TFLOP/s at `flops`
/// per forward), or its error in the median's place; `failed` counts the errors.
pub(crate) fn rung_row(
    name: &str,
    attention: AttentionImpl,
    result: Result<Vec<f64>>,
    flops: f64,
    failed: &mut usize,
) -> Vec<String> {
    let (ms, rate) = match result {
        Ok(us) => {
            let med = median(&us) / 1e3;
            (
                format!("{med:.2}"),
                format!("{:.1}", flops / (med * 1e-3) / 1e12),
            )
        }
        Err(e) => {
            *failed += 1;
            (format!("failed: {e}"), "-".into())
        }
    };
    vec![name.into(), attention.describe(), ms, rate]
}

/// Prints the table, then fails if any of its `total` configurations did.
pub(crate) fn emit_rungs(summary: Summary, failed: usize, total: usize) -> Result<()> {
    summary.emit();
    if failed > 0 {
        return Err(CliError::Usage(format!(
            "{failed} of {total} configurations failed (see above)"
        )));
    }
    Ok(())
}

fn mean_sd(xs: &[f64]) -> (f64, f64) {
    let n = xs.len() as f64;
    let mean = xs.iter().sum::<f64>() / n;
    let var = if xs.len() > 1 {
        xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0)
    } else {
        0.0
    };
    (mean, var.sqrt())
}

fn write_file(path: &PathBuf, text: &str) -> Result<()> {
    std::fs::write(path, text).map_err(|e| CliError::io("cannot write", path, e))
}

/// For the benches of the other families (Chinese-CLIP, SigLIP): uploads `$inputs` (pixels, token ids) to `$ws` once,
/// times `$timing.1` forwards of `$model` after `$timing.0` untimed ones, launch by launch or (`$graph`) as one replay
/// of the forward
/// captured into a CUDA graph, warns on non-finite embeddings, and evaluates to the device microseconds per forward.
/// A macro because the families' models share these methods by name, not through a trait the CLI can name.
macro_rules! time_uploaded_forward {
    ($gpu:expr, $model:expr, $ws:expr, $inputs:expr, $graph:expr, $timing:expr) => {{
        let (gpu, model, ws) = ($gpu, $model, $ws);
        let ((pixels, texts), (warmup, iters)) = ($inputs, $timing);
        let images = model.upload_image_parts(gpu, ws, &[pixels])?;
        let uploaded = model.upload_texts(gpu, ws, texts, None)?;
        let samples = if $graph {
            let shape = flashclip_model::GraphShape {
                images,
                texts: uploaded.batch,
                text_len: uploaded.len,
            };
            let forward = model.capture_forward(gpu, ws, shape)?;
            flashclip::bench::time_samples_us(gpu, warmup, iters, 1, || {
                forward.launch().map_err($crate::bench::as_gpu_error)
            })?
        } else {
            flashclip::bench::time_samples_us(gpu, warmup, iters, 1, || {
                model
                    .run_vision(gpu, ws, images)
                    .map_err($crate::bench::as_gpu_error)?;
                model
                    .run_uploaded_texts(gpu, ws)
                    .map(|_| ())
                    .map_err($crate::bench::as_gpu_error)
            })?
        };
        let image = model.read_image_embeds(gpu, ws, images)?;
        let text = model.read_text_embeds(gpu, ws, texts.len())?;
        if image.iter().chain(text.iter()).any(|x| !x.is_finite()) {
            eprintln!(
                "warning: {} forward produced non-finite embeddings",
                T::DTYPE
            );
        }
        samples
    }};
}
pub(crate) use time_uploaded_forward;

/// Refuses `--embedder` for the families whose bench times only the forward.
fn clip_only(args: &BenchArgs) -> Result<()> {
    if args.embedder {
        return Err(CliError::Usage(
            "--embedder times CLIP models only (Chinese-CLIP and SigLIP time their forwards)"
                .into(),
        ));
    }
    Ok(())
}

/// `--embedder`: wall-clock calls of the fp16 [`GpuBackend`]'s `embed_images` on `--batch` random images in host
/// memory, after `--warmup` untimed ones; prints the median call and the images/s it gives.
fn time_embedder(
    args: &BenchArgs,
    gpu: Gpu,
    config: &ClipConfig,
    weights: &Weights,
    model_name: &str,
) -> Result<()> {
    let b = args.batch as usize;
    let attention = Rung::F16Best.attention(&gpu, config, args.attention);
    let model = weights.build::<f16>(&gpu, config, attention)?;
    let mut backend = GpuBackend::new(0, gpu, model, b)?;
    let pixels = random::pixels(&config.vision, b, SEED ^ 1);
    for _ in 0..args.warmup {
        backend.embed_images(&pixels)?;
    }
    let mut ms = Vec::with_capacity(args.iters as usize);
    for _ in 0..args.iters {
        let start = Instant::now();
        let embeds = backend.embed_images(&pixels)?;
        ms.push(start.elapsed().as_secs_f64() * 1e3);
        if embeds.iter().any(|x| !x.is_finite()) {
            eprintln!("warning: non-finite embeddings");
        }
    }
    let (med, (mean, sd)) = (median(&ms), mean_sd(&ms));
    println!(
        "model only: {model_name} fp16 embed_images of {b} images from host memory (convert, upload, vision \
         forward, download), wall clock over {} calls: median {med:.2} ms (mean {mean:.2} ± {sd:.2}), {:.1} images/s",
        args.iters,
        b as f64 / med * 1e3
    );
    // The same calls as the server makes them: each batch started (converted, uploaded, enqueued) while the one
    // before it runs, then that one's rows taken.
    let start = Instant::now();
    let mut in_flight = None;
    for _ in 0..args.iters {
        let started = backend.start_image_parts(&[&pixels])?;
        if let Some(before) = in_flight.replace(started) {
            backend.finish_images(before)?;
        }
    }
    if let Some(last) = in_flight {
        backend.finish_images(last)?;
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "model only, one batch in flight: {model_name} fp16 start_image_parts / finish_images of {b} images, \
         {} batches in {secs:.3} s: {:.1} images/s",
        args.iters,
        (b * args.iters as usize) as f64 / secs
    );
    Ok(())
}

/// Runs the ladder and prints the table.
pub fn run(args: &BenchArgs) -> Result<()> {
    // The GPU first: without one there is nothing to do, and no reason to build gigabytes of weights.
    let gpu = open_gpu()?;
    let gpu_name = gpu.name().unwrap_or_else(|_| "unknown GPU".into());
    let (major, minor) = gpu.compute_capability();
    println!(
        "GPU: {gpu_name} (sm_{major}{minor}, {} SMs)",
        gpu.sm_count()
    );

    let (config, weights, model_name, weights_desc) = match &args.model {
        Some(dir) => {
            let (config, checkpoint) = model_dir::open(dir)?;
            let name = dir.display().to_string();
            let config = match config {
                ModelConfig::Clip(c) => c,
                ModelConfig::ChineseClip(c) => {
                    clip_only(args)?;
                    return bench_cn::run(args, &gpu, &c, Some(&checkpoint), (&name, SEED));
                }
                ModelConfig::Siglip(c) => {
                    clip_only(args)?;
                    return bench_siglip::run(args, &gpu, &c, Some(&checkpoint), (&name, SEED));
                }
            };
            (config, Weights::Checkpoint(checkpoint), name.clone(), name)
        }
        None => {
            let config = match ModelConfig::preset(&args.preset)? {
                ModelConfig::Clip(c) => c,
                ModelConfig::ChineseClip(c) => {
                    clip_only(args)?;
                    println!("random weights (no --model given)");
                    return bench_cn::run(args, &gpu, &c, None, (&args.preset, SEED));
                }
                ModelConfig::Siglip(c) => {
                    clip_only(args)?;
                    println!("random weights (no --model given)");
                    return bench_siglip::run(args, &gpu, &c, None, (&args.preset, SEED));
                }
            };
            println!("random weights (no --model given)");
            let weights = Weights::Random(SEED);
            let desc = format!(
                "random (seed {SEED:#x}, uniform ±{}, LayerNorm 1, biases 0)",
                random::WEIGHT_SCALE
            );
            (config, weights, args.preset.clone(), desc)
        }
    };
    if args.embedder {
        return time_embedder(args, gpu, &config, &weights, &model_name);
    }
    let max_len = config.text.max_len();
    if args.text_len < 2 || args.text_len > max_len {
        return Err(CliError::Usage(format!(
            "--text-len must be between 2 and the model's context length {max_len}, got {}",
            args.text_len
        )));
    }
    let b = args.batch as usize;
    let v = &config.vision;
    println!(
        "model {model_name}: {} params; images {b} x {}x{} ({} tokens), texts {b} x {} tokens; warmup {}, iters {}",
        ClipWeights::parameter_count(&config),
        v.image_size,
        v.image_size,
        v.seq_len(),
        args.text_len,
        args.warmup,
        args.iters
    );

    let ceiling = gemm_ceiling(&gpu)?;
    println!("cuBLAS fp16 GEMM ceiling (8192^3, this run): {ceiling:.1} TFLOP/s");

    let flops = count(&FlopsInput::from(&config), b, b, args.text_len)
        .mac2
        .features_total() as f64;
    println!(
        "FLOPs per forward (2/MAC, both towers + projections): {:.3} TFLOP",
        flops / 1e12
    );

    let pixels = random::pixels(&config.vision, b, SEED ^ 1);
    let texts = random::token_ids(&config, b, args.text_len, SEED ^ 2);

    let mut rows: Vec<Row> = Vec::new();
    let mut baseline: Option<f64> = None;
    for (i, rung) in Rung::ALL.iter().enumerate() {
        let attention = rung.attention(&gpu, &config, args.attention);
        let name = rung.name(attention);
        eprintln!("[{}/{}] {name} ...", i + 1, Rung::ALL.len());
        let (w, it) = (args.warmup, args.iters as usize);
        let g = rung.graph();
        let result = match rung {
            Rung::F32Materialized | Rung::F32FlashV1 => time_rung::<f32>(
                &gpu, &config, &weights, attention, &pixels, &texts, g, w, it,
            ),
            Rung::F16Best | Rung::F16Graph => time_rung::<f16>(
                &gpu, &config, &weights, attention, &pixels, &texts, g, w, it,
            ),
            Rung::Bf16Best => time_rung::<bf16>(
                &gpu, &config, &weights, attention, &pixels, &texts, g, w, it,
            ),
        };
        let mut row = Row {
            rung: i + 1,
            name,
            dtype: rung.dtype(),
            attention: AttentionImpl::describe(attention),
            mean_ms: None,
            sd_ms: None,
            median_ms: None,
            speedup_vs_rung1: None,
            tflops: None,
            mfu: None,
            samples_ms: Vec::new(),
            error: None,
        };
        match result {
            Ok(us) => {
                let ms: Vec<f64> = us.iter().map(|x| x / 1e3).collect();
                let (mean, sd) = mean_sd(&ms);
                let med = median(&ms);
                if i == 0 {
                    baseline = Some(med);
                }
                let tflops = flops / (med * 1e-3) / 1e12;
                row.mean_ms = Some(mean);
                row.sd_ms = Some(sd);
                row.median_ms = Some(med);
                row.speedup_vs_rung1 = baseline.map(|base| base / med);
                row.tflops = Some(tflops);
                row.mfu = Some(tflops / ceiling);
                row.samples_ms = ms;
            }
            Err(e) => {
                eprintln!("rung {} ({}) failed: {e}", i + 1, row.name);
                row.error = Some(e.to_string());
            }
        }
        rows.push(row);
    }

    let mut summary = Summary::new(
        &format!(
            "CLIP forward ladder: {model_name}, {b} images + {b} texts x {} tokens ({gpu_name}; cuBLAS fp16 8192^3 ceiling {ceiling:.0} TFLOP/s, same run; inputs uploaded before timing, each timed forward reads them on the device)",
            args.text_len
        ),
        &[
            "rung",
            "config",
            "mean ± sd [ms]",
            "median [ms]",
            "speed-up vs 1",
            "TFLOP/s (2/MAC)",
            "MFU (of GEMM ceiling)",
        ],
    );
    let cell = |x: Option<f64>, f: &dyn Fn(f64) -> String| x.map_or_else(|| "-".into(), f);
    for r in &rows {
        let timing = match (r.mean_ms, r.sd_ms) {
            (Some(m), Some(s)) => format!("{m:.2} ± {s:.2}"),
            _ => format!("failed: {}", r.error.as_deref().unwrap_or("?")),
        };
        summary.row(vec![
            r.rung.to_string(),
            r.name.clone(),
            timing,
            cell(r.median_ms, &|x| format!("{x:.2}")),
            cell(r.speedup_vs_rung1, &|x| format!("{x:.2}x")),
            cell(r.tflops, &|x| format!("{x:.1}")),
            cell(r.mfu, &|x| format!("{:.1}%", 100.0 * x)),
        ]);
    }
    summary.emit();
    let md = summary.markdown();
    if let Some(path) = &args.markdown {
        write_file(path, &md)?;
    }
    let failed = rows.iter().filter(|r| r.error.is_some()).count();
    if let Some(path) = &args.json {
        let report = Report {
            gpu: gpu_name,
            compute_capability: format!("{major}.{minor}"),
            model: model_name,
            weights: weights_desc,
            image_batch: b,
            image_size: v.image_size,
            image_tokens: v.seq_len(),
            text_batch: b,
            text_len: args.text_len,
            warmup: args.warmup,
            iters: args.iters as usize,
            flops_convention: "2/MAC, both towers + projections",
            flops_per_forward: flops,
            gemm_ceiling_tflops: ceiling,
            rows,
        };
        let text =
            serde_json::to_string_pretty(&report).map_err(|e| CliError::Output(e.to_string()))?;
        write_file(path, &(text + "\n"))?;
    }
    if failed > 0 {
        return Err(CliError::Usage(format!(
            "{failed} of {} rungs failed (see above)",
            Rung::ALL.len()
        )));
    }
    Ok(())
}
