//! `flashclip zero-shot`: one image against prompts made from labels, for a model of any family (softmax over the
//! labels, as CLIP and Chinese-CLIP are trained; a sigmoid per label for SigLIP).

use std::path::PathBuf;

use clap::Args;
use flashclip::DType;
use flashclip_model::backend::{self, Device};
use flashclip_model::{Checkpoint, ModelConfig};

use crate::error::{open_gpu, CliError, Result};
use crate::model_dir;
use crate::output::l2_normalize;

/// `flashclip zero-shot` arguments.
#[derive(Debug, Args)]
pub struct ZeroShotArgs {
    /// Model directory (as for `embed`).
    #[arg(long)]
    model: PathBuf,
    #[arg(long)]
    image: PathBuf,
    /// Comma-separated labels, e.g. "a cat,a dog".
    #[arg(long)]
    labels: String,
    /// Prompt template; `{}` is replaced by each label.
    #[arg(long, default_value = "a photo of {}")]
    template: String,
    /// Element type of the weights and activations on the GPU.
    #[arg(long, value_enum, default_value_t = DType::F16)]
    dtype: DType,
    /// Where the model runs: cuda, cuda:N or cpu (float32 reference, slow).
    #[arg(long, default_value = "cuda")]
    device: Device,
}

/// Label probabilities of one image against the prompts, on `device` in `dtype`, for a model of any family, by
/// the family's rule ([`backend::ZeroShot`]).
fn zero_shot(
    config: &ModelConfig,
    checkpoint: &Checkpoint,
    (device, dtype): (Device, DType),
    pixels: &[f32],
    ids: &[Vec<u32>],
) -> Result<Vec<f64>> {
    if let Device::Cuda(_) = device {
        // A missing GPU is reported as such before anything loads.
        drop(open_gpu()?);
    }
    let mut model = backend::load(device, dtype, config, checkpoint, ids.len().max(1))?;
    let dim = config.projection_dim();
    let mut image: Vec<f32> = model.embed_images(pixels)?.iter().copied().collect();
    let mut text: Vec<f32> = model.embed_texts(ids)?.iter().copied().collect();
    l2_normalize(&mut image, dim);
    l2_normalize(&mut text, dim);
    Ok(model
        .zero_shot()
        .probabilities(&image, text.chunks_exact(dim)))
}

/// `flashclip zero-shot`.
pub fn run(args: &ZeroShotArgs) -> Result<()> {
    let labels: Vec<&str> = args
        .labels
        .split(',')
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    if labels.is_empty() {
        return Err(CliError::Usage(
            "--labels needs at least one label, e.g. --labels \"a cat,a dog\"".into(),
        ));
    }
    if !args.template.contains("{}") {
        return Err(CliError::Usage(format!(
            "--template must contain {{}} where the label goes, got \"{}\"",
            args.template
        )));
    }
    let prompts: Vec<String> = labels
        .iter()
        .map(|l| args.template.replace("{}", l))
        .collect();
    let (config, checkpoint) = model_dir::open(&args.model)?;
    let pre = config
        .preprocessor(Some(&args.model))
        .map_err(|e| CliError::Usage(format!("{}: {e}", args.model.display())))?;
    let pixels = pre
        .load_and_preprocess(&args.image)
        .map_err(|e| CliError::Usage(e.to_string()))?;
    let ids = model_dir::tokenize(&args.model, &config, &prompts)?;
    let run_on = (args.device, args.dtype);
    let probs = zero_shot(&config, &checkpoint, run_on, &pixels, &ids)?;
    let mut ranked: Vec<(&str, f64)> = labels.iter().copied().zip(probs).collect();
    ranked.sort_by(|a, b| b.1.total_cmp(&a.1));
    for (label, p) in ranked {
        println!("{label}\t{p:.4}");
    }
    Ok(())
}
