//! `flashclip embed`: a checkpoint on the GPU, fed decoded images and tokenized texts in batches.

use std::path::PathBuf;

use clap::Args;
use flashclip::{DType, Element};
use flashclip_model::config::ClipConfig;
use flashclip_model::preprocess::Preprocessor;
use flashclip_model::Checkpoint;
use indicatif::{ProgressBar, ProgressStyle};

use crate::error::{CliError, Result};
use crate::inputs;
use crate::model_dir::{self, with_dtype, Runner};
use crate::output::{self, l2_normalize, Embeddings, Format};

/// `flashclip embed` arguments.
#[derive(Debug, Args)]
pub struct EmbedArgs {
    /// Model directory: config.json + model.safetensors (Hugging Face) or open_clip_config.json +
    /// open_clip_model.safetensors.
    #[arg(long)]
    model: PathBuf,
    /// Image files, directories (searched recursively for jpg/jpeg/png/webp) or patterns with `*` / `?` in
    /// the file name (quote them so the shell leaves them alone).
    #[arg(long, num_args = 1..)]
    images: Vec<PathBuf>,
    /// Texts to embed.
    #[arg(long, num_args = 1..)]
    texts: Vec<String>,
    /// A file with one text per line (empty lines skipped; `-` reads standard input).
    #[arg(long)]
    texts_file: Option<PathBuf>,
    /// Output file (default: JSON lines on standard output).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Output format (default: from the --out extension, else jsonl). npy stacks image rows, then text rows.
    #[arg(long, value_enum)]
    format: Option<Format>,
    /// Images or texts per GPU batch.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..))]
    batch: u32,
    /// Element type of the weights and activations on the GPU.
    #[arg(long, value_enum, default_value_t = DType::F16)]
    dtype: DType,
}

/// A model on the GPU, embedding batches.
impl<T: Element> Runner<T> {
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
fn embed_with<T: Element>(
    config: &ClipConfig,
    checkpoint: &Checkpoint,
    paths: &[PathBuf],
    texts: &[String],
    ids: &[Vec<u32>],
    batch: usize,
) -> Result<(Embeddings, usize)> {
    let mut runner = Runner::<T>::new(
        config,
        checkpoint,
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
    let (config, checkpoint) = model_dir::open(&args.model)?;
    if paths.is_empty() && texts.is_empty() {
        return Err(CliError::Usage(
            "nothing to embed: give --images PATH... and/or --texts TEXT... / --texts-file FILE"
                .into(),
        ));
    }
    let ids = if texts.is_empty() {
        Vec::new()
    } else {
        model_dir::tokenize(&args.model, &config, &texts)?
    };
    let batch = args.batch as usize;
    let (embeddings, skipped) = with_dtype!(args.dtype, T => {
        embed_with::<T>(&config, &checkpoint, &paths, &texts, &ids, batch)?
    });
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
