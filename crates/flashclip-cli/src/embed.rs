//! `flashclip embed` and `flashclip zero-shot`: a checkpoint on the GPU, fed decoded images and tokenized texts in
//! batches.

use std::path::{Path, PathBuf};

use flashclip::{Element, Gpu};
use flashclip_model::config::ClipConfig;
use flashclip_model::gpu::{AttentionImpl, ClipModel, Workspace};
use flashclip_model::preprocess::Preprocessor;
use flashclip_model::tokenizer::{ClipTokenizer, TokenizerError};
use flashclip_model::weights::ClipWeights;
use half::{bf16, f16};
use indicatif::{ProgressBar, ProgressStyle};

use crate::error::{open_gpu, CliError, Result};
use crate::output::{self, l2_normalize, Embeddings, Format};
use crate::{inputs, load_model, Dtype};

/// What `flashclip embed` was asked for.
pub struct EmbedArgs {
    pub model: PathBuf,
    pub images: Vec<PathBuf>,
    pub texts: Vec<String>,
    pub texts_file: Option<PathBuf>,
    pub out: Option<PathBuf>,
    pub format: Option<Format>,
    pub batch: usize,
    pub dtype: Dtype,
}

/// The tokenizer of a model directory, or OpenAI's when the directory has none.
fn tokenizer(dir: &Path) -> Result<ClipTokenizer> {
    match ClipTokenizer::from_dir(dir) {
        Ok(t) => Ok(t),
        Err(TokenizerError::NotFound { .. }) => {
            eprintln!(
                "no tokenizer files in {}: using OpenAI's CLIP vocabulary",
                dir.display()
            );
            Ok(ClipTokenizer::openai()?)
        }
        Err(e) => Err(e.into()),
    }
}

/// Tokenizes `texts` for `config`, checking that the ids fit the model's vocabulary (a model directory without
/// tokenizer files gets OpenAI's, which fits only CLIP's 49,408-token vocabulary).
fn tokenize(dir: &Path, config: &ClipConfig, texts: &[String]) -> Result<Vec<Vec<u32>>> {
    let ids = tokenizer(dir)?.encode_batch(texts, config.text.max_len())?;
    let vocab = config.text.vocab_size;
    if let Some(max) = ids
        .iter()
        .flatten()
        .copied()
        .max()
        .filter(|&m| m as usize >= vocab)
    {
        return Err(CliError::Usage(format!(
            "the tokenizer produces id {max}, outside the model's vocabulary of {vocab}: put the model's \
             tokenizer.json (or vocab.json + merges.txt) in {}",
            dir.display()
        )));
    }
    Ok(ids)
}

/// A model on the GPU with its workspace.
struct Runner<T: Element> {
    gpu: Gpu,
    model: ClipModel<T>,
    ws: Workspace<T>,
}

impl<T: Element> Runner<T> {
    fn new(
        config: &ClipConfig,
        weights: &ClipWeights,
        max_images: usize,
        max_texts: usize,
    ) -> Result<Self> {
        let gpu = open_gpu()?;
        let model = ClipModel::<T>::new(
            &gpu,
            config,
            weights,
            AttentionImpl::best::<T>(&gpu, config),
        )?;
        let ws = model.workspace(&gpu, max_images, max_texts)?;
        Ok(Self { gpu, model, ws })
    }

    /// Decodes `paths` in parallel batches and embeds those that decode; the others are reported and skipped.
    /// Returns the paths embedded, their normalized embeddings and the number skipped.
    fn images(
        &mut self,
        pre: &Preprocessor,
        paths: &[PathBuf],
        batch: usize,
        bar: &ProgressBar,
    ) -> Result<(Vec<String>, Vec<f32>, usize)> {
        let dim = self.model.config().projection_dim;
        let (mut done, mut embeds, mut skipped) = (Vec::new(), Vec::new(), 0);
        for chunk in paths.chunks(batch) {
            let mut pixels = Vec::with_capacity(chunk.len() * pre.output_len());
            for (path, decoded) in chunk.iter().zip(pre.preprocess_batch(chunk)) {
                match decoded {
                    Ok(p) => {
                        pixels.extend_from_slice(&p);
                        done.push(path.display().to_string());
                    }
                    Err(e) => {
                        bar.suspend(|| eprintln!("skipped: {e}"));
                        skipped += 1;
                    }
                }
            }
            if !pixels.is_empty() {
                let e = self.model.encode_images(&self.gpu, &mut self.ws, &pixels)?;
                embeds.extend(e.iter().copied());
            }
            bar.inc(1);
        }
        l2_normalize(&mut embeds, dim);
        Ok((done, embeds, skipped))
    }

    /// Embeds tokenized texts in batches; normalized.
    fn texts(&mut self, ids: &[Vec<u32>], batch: usize, bar: &ProgressBar) -> Result<Vec<f32>> {
        let dim = self.model.config().projection_dim;
        let mut embeds = Vec::with_capacity(ids.len() * dim);
        for chunk in ids.chunks(batch) {
            let e = self.model.encode_texts(&self.gpu, &mut self.ws, chunk)?;
            embeds.extend(e.iter().copied());
            bar.inc(1);
        }
        l2_normalize(&mut embeds, dim);
        Ok(embeds)
    }
}

fn progress(batches: usize) -> ProgressBar {
    if batches <= 1 {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(batches as u64);
    if let Ok(style) =
        ProgressStyle::with_template("{bar:40} {pos}/{len} batches [{elapsed_precise} < {eta}]")
    {
        bar.set_style(style);
    }
    bar
}

/// Everything `embed` computes, in the element type `T`.
#[allow(clippy::too_many_arguments)]
fn embed_with<T: Element>(
    config: &ClipConfig,
    weights: &ClipWeights,
    paths: &[PathBuf],
    texts: &[String],
    ids: &[Vec<u32>],
    batch: usize,
) -> Result<(Embeddings, usize)> {
    let mut runner = Runner::<T>::new(
        config,
        weights,
        batch.min(paths.len()),
        batch.min(ids.len()),
    )?;
    let bar = progress(paths.len().div_ceil(batch) + ids.len().div_ceil(batch));
    let pre = Preprocessor::new(config.vision.image_size as u32);
    let (image_paths, image, skipped) = runner.images(&pre, paths, batch, &bar)?;
    let text = runner.texts(ids, batch, &bar)?;
    bar.finish_and_clear();
    Ok((
        Embeddings {
            dim: config.projection_dim,
            image_paths,
            image,
            texts: texts.to_vec(),
            text,
        },
        skipped,
    ))
}

/// `flashclip embed`.
pub fn run(args: &EmbedArgs) -> Result<()> {
    let format = match (args.format, &args.out) {
        (Some(f), _) => f,
        (None, Some(path)) => Format::from_extension(path).ok_or_else(|| {
            CliError::Usage(format!(
                "cannot tell the format of {} from its extension: give --format npy|safetensors|jsonl",
                path.display()
            ))
        })?,
        (None, None) => Format::Jsonl,
    };
    if format != Format::Jsonl && args.out.is_none() {
        // Checked before any work is done (output::write checks again).
        return output::write(&Embeddings::default(), format, None);
    }
    let paths = inputs::expand_images(&args.images)?;
    let mut texts = args.texts.clone();
    if let Some(file) = &args.texts_file {
        texts.extend(inputs::read_texts_file(file)?);
    }
    let (config, weights) = load_model(&args.model)?;
    if paths.is_empty() && texts.is_empty() {
        return Err(CliError::Usage(
            "nothing to embed: give --images PATH... and/or --texts TEXT... / --texts-file FILE"
                .into(),
        ));
    }
    let ids = if texts.is_empty() {
        Vec::new()
    } else {
        tokenize(&args.model, &config, &texts)?
    };
    let (embeddings, skipped) = match args.dtype {
        Dtype::F16 => embed_with::<f16>(&config, &weights, &paths, &texts, &ids, args.batch)?,
        Dtype::Bf16 => embed_with::<bf16>(&config, &weights, &paths, &texts, &ids, args.batch)?,
        Dtype::F32 => embed_with::<f32>(&config, &weights, &paths, &texts, &ids, args.batch)?,
    };
    output::write(&embeddings, format, args.out.as_deref())?;
    if !paths.is_empty() {
        eprintln!(
            "embedded {} images, skipped {skipped}",
            embeddings.image_paths.len()
        );
    }
    if !texts.is_empty() {
        eprintln!("embedded {} texts", embeddings.texts.len());
    }
    Ok(())
}

/// What `flashclip zero-shot` was asked for.
pub struct ZeroShotArgs {
    pub model: PathBuf,
    pub image: PathBuf,
    pub labels: String,
    pub template: String,
    pub dtype: Dtype,
}

/// `softmax(scale · cos)` of one image against each prompt.
pub fn probabilities(image: &[f32], texts: &[f32], dim: usize, scale: f32) -> Vec<f64> {
    let logits: Vec<f64> = texts
        .chunks_exact(dim)
        .map(|t| {
            f64::from(scale)
                * t.iter()
                    .zip(image)
                    .map(|(&a, &b)| f64::from(a) * f64::from(b))
                    .sum::<f64>()
        })
        .collect();
    let max = logits.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let exps: Vec<f64> = logits.iter().map(|l| (l - max).exp()).collect();
    let sum: f64 = exps.iter().sum();
    exps.iter().map(|e| e / sum).collect()
}

fn zero_shot_with<T: Element>(
    config: &ClipConfig,
    weights: &ClipWeights,
    pixels: &[f32],
    ids: &[Vec<u32>],
) -> Result<Vec<f64>> {
    let mut r = Runner::<T>::new(config, weights, 1, ids.len())?;
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
    Ok(probabilities(&image, &text, dim, r.model.logit_scale()))
}

/// `flashclip zero-shot`.
pub fn zero_shot(args: &ZeroShotArgs) -> Result<()> {
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
    let (config, weights) = load_model(&args.model)?;
    let pre = Preprocessor::new(config.vision.image_size as u32);
    let pixels = pre
        .load_and_preprocess(&args.image)
        .map_err(|e| CliError::Usage(e.to_string()))?;
    let ids = tokenize(&args.model, &config, &prompts)?;
    let probs = match args.dtype {
        Dtype::F16 => zero_shot_with::<f16>(&config, &weights, &pixels, &ids)?,
        Dtype::Bf16 => zero_shot_with::<bf16>(&config, &weights, &pixels, &ids)?,
        Dtype::F32 => zero_shot_with::<f32>(&config, &weights, &pixels, &ids)?,
    };
    let mut ranked: Vec<(&str, f64)> = labels.iter().copied().zip(probs).collect();
    ranked.sort_by(|a, b| b.1.total_cmp(&a.1));
    for (label, p) in ranked {
        println!("{label}\t{p:.4}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn softmax_of_scaled_cosines() {
        let image = [1.0, 0.0];
        let texts = [1.0, 0.0, 0.0, 1.0];
        let p = probabilities(&image, &texts, 2, 100.0);
        assert!((p.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        assert!(p[0] > 0.999 && p[1] < 1e-3);
        let even = probabilities(&image, &[0.0, 1.0, 0.0, -1.0], 2, 100.0);
        assert!((even[0] - 0.5).abs() < 1e-12);
    }
}
