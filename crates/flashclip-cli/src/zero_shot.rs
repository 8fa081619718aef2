//! `flashclip zero-shot`: one image against prompts made from labels.

use std::path::PathBuf;

use clap::Args;
use flashclip::{DType, Element};
use flashclip_model::backend::zero_shot_probabilities;
use flashclip_model::config::ClipConfig;
use flashclip_model::preprocess::Preprocessor;
use flashclip_model::Checkpoint;

use crate::error::{CliError, Result};
use crate::model_dir::{self, with_dtype, Runner};
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
}

fn zero_shot_with<T: Element>(
    config: &ClipConfig,
    checkpoint: &Checkpoint,
    pixels: &[f32],
    ids: &[Vec<u32>],
) -> Result<Vec<f64>> {
    let mut r = Runner::<T>::new(config, checkpoint, 1, ids.len())?;
    let dim = config.projection_dim;
    let mut image: Vec<f32> = r
        .model
        .encode_images(&r.gpu, &mut r.ws, pixels)?
        .iter()
        .copied()
        .collect();
    let mut text: Vec<f32> = r
        .model
        .encode_texts(&r.gpu, &mut r.ws, ids)?
        .iter()
        .copied()
        .collect();
    l2_normalize(&mut image, dim);
    l2_normalize(&mut text, dim);
    Ok(zero_shot_probabilities(
        &image,
        text.chunks_exact(dim),
        r.model.logit_scale(),
    ))
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
    let pre = Preprocessor::new(config.vision.image_size as u32);
    let pixels = pre
        .load_and_preprocess(&args.image)
        .map_err(|e| CliError::Usage(e.to_string()))?;
    let ids = model_dir::tokenize(&args.model, &config, &prompts)?;
    let probs =
        with_dtype!(args.dtype, T => zero_shot_with::<T>(&config, &checkpoint, &pixels, &ids)?);
    let mut ranked: Vec<(&str, f64)> = labels.iter().copied().zip(probs).collect();
    ranked.sort_by(|a, b| b.1.total_cmp(&a.1));
    for (label, p) in ranked {
        println!("{label}\t{p:.4}");
    }
    Ok(())
}
