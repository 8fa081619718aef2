//! `flashclip bench` on a SigLIP model: one image + text embedding forward per timed run in fp16 and bf16 (the
//! chosen flash attention; the pooling head always on the flash kernel), launch by launch and (fp16) as a CUDA
//! graph, on inputs uploaded once; texts at SigLIP's full padded context.
//! `cargo bench -p flashclip-model --bench siglip` has the batch sweep against Hugging Face.

use flashclip::bench::Summary;
use flashclip::{Element, Gpu};
use flashclip_model::siglip::{SiglipConfig, SiglipGpuModel};
use flashclip_model::{AttentionImpl, Checkpoint};
use half::{bf16, f16};

use crate::bench::{emit_rungs, rung_row, time_uploaded_forward, BenchArgs};
use crate::error::Result;
use crate::random::{self, SplitMix};

/// `logit_scale` of the random weights: log 10, SigLIP's initialization.
const LOGIT_SCALE_INIT: f32 = std::f32::consts::LN_10;

/// Builds the model in `T` (from `checkpoint`, else seeded random weights), uploads the inputs once and times
/// `iters` forwards after `warmup` untimed ones, enqueued launch by launch or (`graph`) as one replay of the
/// forward captured into a CUDA graph; device microseconds per forward.
fn time_forward<T: Element>(
    gpu: &Gpu,
    config: &SiglipConfig,
    (checkpoint, seed): (Option<&Checkpoint>, u64),
    (attention, graph): (AttentionImpl, bool),
    (pixels, texts): (&[f32], &[Vec<u32>]),
    (warmup, iters): (usize, usize),
) -> Result<Vec<f64>> {
    let model = match checkpoint {
        Some(c) => SiglipGpuModel::<T>::load_checkpoint(gpu, config, c, attention)?,
        None => SiglipGpuModel::<T>::from_fn(
            gpu,
            config,
            attention,
            random::weights(LOGIT_SCALE_INIT, seed),
        )?,
    };
    let mut ws = model.workspace(gpu, texts.len(), texts.len())?;
    let timing = (warmup, iters);
    Ok(time_uploaded_forward!(
        gpu,
        &model,
        &mut ws,
        (pixels, texts),
        graph,
        timing
    ))
}

/// Times the forward in fp16 and bf16 and prints the table.
pub fn run(
    args: &BenchArgs,
    gpu: &Gpu,
    config: &SiglipConfig,
    checkpoint: Option<&Checkpoint>,
    (model_name, seed): (&str, u64),
) -> Result<()> {
    let (v, t) = (&config.vision, &config.text);
    let context = t.max_position_embeddings;
    if args.text_len != context {
        eprintln!(
            "SigLIP texts are padded to its context: {context} tokens, whatever --text-len says"
        );
    }
    let b = args.batch as usize;
    println!(
        "SigLIP {model_name}: images {b} x {}x{} ({} tokens), texts {b} x {context} tokens; warmup {}, iters {}",
        v.image_size,
        v.image_size,
        v.seq_len(),
        args.warmup,
        args.iters
    );
    let flops = b as f64 * (config.image_flops() + config.text_flops()) as f64;
    let pixels = random::uniform(
        seed ^ 1,
        b * v.num_channels * v.image_size * v.image_size,
        1.0,
    );
    let mut rng = SplitMix::new(seed ^ 2);
    let vocab = t.vocab_size.max(3) as u64;
    let texts: Vec<Vec<u32>> = (0..b)
        .map(|_| {
            (0..context)
                .map(|_| 2 + rng.below(vocab - 2) as u32)
                .collect()
        })
        .collect();
    let head_dims = [v.head_dim(), t.head_dim()];
    let fixed = Some(args.attention).filter(|&a| a != AttentionImpl::Fastest);
    let f16_attention = fixed.unwrap_or_else(|| AttentionImpl::best_for::<f16>(gpu, &head_dims));
    let rungs = [
        ("fp16 + flash + fused kernels", f16_attention),
        ("fp16 + flash + fused kernels + CUDA graph", f16_attention),
        (
            "bf16 + flash + fused kernels",
            fixed.unwrap_or_else(|| AttentionImpl::best_for::<bf16>(gpu, &head_dims)),
        ),
    ];
    let mut summary = Summary::new(
        &format!("SigLIP forward: {model_name}, {b} images + {b} texts x {context} tokens"),
        &["config", "attention", "median [ms]", "TFLOP/s (2/MAC)"],
    );
    let mut failed = 0;
    for (i, (name, attention)) in rungs.into_iter().enumerate() {
        let timing = (args.warmup, args.iters as usize);
        let weights = (checkpoint, seed);
        let ins = (&pixels[..], &texts[..]);
        let result = match i {
            0 | 1 => time_forward::<f16>(gpu, config, weights, (attention, i == 1), ins, timing),
            _ => time_forward::<bf16>(gpu, config, weights, (attention, false), ins, timing),
        };
        summary.row(rung_row(name, attention, result, flops, &mut failed));
    }
    emit_rungs(summary, failed, 3)
}
