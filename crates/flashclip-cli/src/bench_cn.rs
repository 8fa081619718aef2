//! `flashclip bench` on a Chinese-CLIP model: one full forward (CLIP's vision tower + the BERT text tower) per
//! timed run, in fp32 (materialized attention), fp16 and bf16 (the chosen flash attention), launch by launch and
//! (fp16) as a CUDA graph.

use flashclip::bench::Summary;
use flashclip::{Element, Gpu};
use flashclip_model::chinese_clip::{ChineseClipConfig, ChineseClipModel, ChineseClipWeights};
use flashclip_model::flops::{count, FlopsInput};
use flashclip_model::{AttentionImpl, Checkpoint};
use half::{bf16, f16};

use crate::bench::{emit_rungs, rung_row, time_uploaded_forward, BenchArgs};
use crate::error::{CliError, Result};
use crate::random;

/// `[CLS]` and `[SEP]` of the BERT-Chinese vocabulary every released Chinese-CLIP uses (the last two ids of a
/// smaller vocabulary).
fn cls_sep(vocab: usize) -> (u32, u32) {
    let last = vocab.saturating_sub(1) as u32;
    (101.min(last.saturating_sub(1)), 102.min(last))
}

/// Builds the model in `T` (from `checkpoint`, else seeded random weights), uploads the inputs once and times
/// `iters` forwards after `warmup` untimed ones, enqueued launch by launch or (`graph`) as one replay of the
/// forward captured into a CUDA graph; device microseconds per forward.
#[allow(clippy::too_many_arguments)]
fn time_forward<T: Element>(
    gpu: &Gpu,
    config: &ChineseClipConfig,
    checkpoint: Option<&Checkpoint>,
    seed: u64,
    (attention, graph): (AttentionImpl, bool),
    pixels: &[f32],
    texts: &[Vec<u32>],
    (warmup, iters): (usize, usize),
) -> Result<Vec<f64>> {
    let model = match checkpoint {
        Some(c) => ChineseClipModel::<T>::load(gpu, config, c, attention)?,
        None => {
            let weights = random::weights(config.logit_scale_init, seed);
            ChineseClipModel::<T>::from_fn(gpu, config, attention, weights)?
        }
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

/// Times the forward in each dtype and prints the table.
pub fn run(
    args: &BenchArgs,
    gpu: &Gpu,
    config: &ChineseClipConfig,
    checkpoint: Option<&Checkpoint>,
    (model_name, seed): (&str, u64),
) -> Result<()> {
    let context = config.context_length();
    let text_len = args.text_len.min(context);
    if text_len < args.text_len {
        eprintln!(
            "--text-len {} is past Chinese-CLIP's context: texts of {context} tokens",
            args.text_len
        );
    }
    if text_len < 2 {
        return Err(CliError::Usage(format!(
            "--text-len must be between 2 and the model's context length {context}"
        )));
    }
    let b = args.batch as usize;
    let v = &config.vision;
    println!(
        "Chinese-CLIP {model_name}: {} params; images {b} x {}x{} ({} tokens), texts {b} x {text_len} tokens; warmup {}, iters {}",
        ChineseClipWeights::parameter_count(config),
        v.image_size,
        v.image_size,
        v.seq_len(),
        args.warmup,
        args.iters
    );
    let flops = count(&FlopsInput::from(config), b, b, text_len)
        .mac2
        .features_total() as f64;
    let pixels = random::pixels(v, b, seed ^ 1);
    let vocab = config.text.vocab_size;
    let texts = random::wordpiece_ids(cls_sep(vocab), vocab, b, text_len, seed ^ 2);
    let fixed = Some(args.attention).filter(|&a| a != AttentionImpl::Fastest);
    let f16_attention =
        fixed.unwrap_or_else(|| ChineseClipModel::<f16>::best_attention(gpu, config));
    let rungs = [
        ("fp32, materialized attention", AttentionImpl::Materialized),
        ("fp16 + flash + fused kernels", f16_attention),
        ("fp16 + flash + fused kernels + CUDA graph", f16_attention),
        (
            "bf16 + flash + fused kernels",
            fixed.unwrap_or_else(|| ChineseClipModel::<bf16>::best_attention(gpu, config)),
        ),
    ];
    let mut summary = Summary::new(
        &format!("Chinese-CLIP forward: {model_name}, {b} images + {b} texts x {text_len} tokens"),
        &["config", "attention", "median [ms]", "TFLOP/s (2/MAC)"],
    );
    let mut failed = 0;
    for (i, (name, attention)) in rungs.into_iter().enumerate() {
        let timing = (args.warmup, args.iters as usize);
        let ins = (&pixels[..], &texts[..]);
        let how = (attention, i == 2);
        let result = match i {
            0 => time_forward::<f32>(gpu, config, checkpoint, seed, how, ins.0, ins.1, timing),
            1 | 2 => time_forward::<f16>(gpu, config, checkpoint, seed, how, ins.0, ins.1, timing),
            _ => time_forward::<bf16>(gpu, config, checkpoint, seed, how, ins.0, ins.1, timing),
        };
        summary.row(rung_row(name, attention, result, flops, &mut failed));
    }
    emit_rungs(summary, failed, 4)
}
