//! `flashclip`: embed images and texts with CLIP on the GPU, zero-shot classify an image, count FLOPs, and run
//! the speed-up ladder benchmark.

mod bench;
mod embed;
mod error;
mod flops_cmd;
mod inputs;
mod output;
mod random;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};
use flashclip_model::config::ClipConfig;
use flashclip_model::weights::ClipWeights;

use crate::error::{CliError, Result};

#[derive(Debug, Parser)]
#[command(
    name = "flashclip",
    version,
    about = "CLIP on hand-written CUDA kernels"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Element type of the weights and activations on the GPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Dtype {
    F16,
    Bf16,
    F32,
}

/// Attention of the ladder's fp16/bf16 rungs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BenchAttention {
    /// The fastest flash version for each launch's shape.
    Fastest,
    V1,
    V2,
    V3,
    V4,
    /// Scores in memory through cuBLAS.
    Materialized,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Embed images and/or texts (L2-normalized) and write them as JSON lines, .npy or .safetensors.
    Embed {
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
        format: Option<output::Format>,
        /// Images or texts per GPU batch.
        #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..))]
        batch: u32,
        #[arg(long, value_enum, default_value_t = Dtype::F16)]
        dtype: Dtype,
    },
    /// Zero-shot classification of one image: softmax(logit_scale · cos) over the labels, most likely first.
    ZeroShot {
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
        #[arg(long, value_enum, default_value_t = Dtype::F16)]
        dtype: Dtype,
    },
    /// FLOPs of one CLIP forward (both towers, projections, logits) in both counting conventions.
    Flops(FlopsArgs),
    /// The speed-up ladder: fp32 materialized attention → fp32 flash v1 → fp16 with the fastest flash version for
    /// this GPU + fused kernels → the same as one CUDA graph (→ bf16).
    Bench {
        /// Model directory (default: random weights of --preset).
        #[arg(long)]
        model: Option<PathBuf>,
        /// Architecture of the random weights when no --model is given.
        #[arg(long, default_value = "ViT-L-14-336")]
        preset: String,
        /// Images and texts per forward.
        #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..))]
        batch: u32,
        /// Tokens per text.
        #[arg(long, default_value_t = 77)]
        text_len: usize,
        #[arg(long, default_value_t = 4)]
        warmup: usize,
        #[arg(long, default_value_t = 10)]
        iters: usize,
        /// Also write the report as JSON.
        #[arg(long)]
        json: Option<PathBuf>,
        /// Also write the markdown table.
        #[arg(long)]
        markdown: Option<PathBuf>,
        /// Attention of the fp16/bf16 rungs: the per-shape choice, or one version everywhere (to compare versions
        /// end to end).
        #[arg(long, value_enum, default_value_t = BenchAttention::Fastest)]
        attention: BenchAttention,
    },
}

#[derive(Debug, Args)]
struct FlopsArgs {
    /// A Hugging Face config.json, open_clip or EVA-CLIP model JSON.
    #[arg(long, conflicts_with_all = ["preset", "eva", "all"])]
    config: Option<PathBuf>,
    /// A built-in architecture (default ViT-L-14-336).
    #[arg(long, conflicts_with_all = ["eva", "all"])]
    preset: Option<String>,
    /// EVA02-CLIP-bigE-14.
    #[arg(long, conflicts_with = "all")]
    eva: bool,
    /// The seed table: ViT-L/14-336, LAION ViT-H/14 and EVA02-CLIP-E/14.
    #[arg(long)]
    all: bool,
    /// Images and texts.
    #[arg(long, default_value_t = 128, value_parser = clap::value_parser!(u32).range(1..))]
    batch: u32,
    /// Tokens per text.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..))]
    text_len: u32,
}

/// Loads a model directory, with a clear message when it is not one.
pub fn load_model(dir: &Path) -> Result<(ClipConfig, ClipWeights)> {
    if !dir.exists() {
        return Err(CliError::Usage(format!(
            "model directory {} does not exist",
            dir.display()
        )));
    }
    if !dir.is_dir() {
        return Err(CliError::Usage(format!(
            "--model must be a directory (config.json + model.safetensors), {} is not",
            dir.display()
        )));
    }
    ClipWeights::load_dir(dir).map_err(|source| CliError::LoadModel {
        dir: dir.to_path_buf(),
        source,
    })
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Embed {
            model,
            images,
            texts,
            texts_file,
            out,
            format,
            batch,
            dtype,
        } => embed::run(&embed::EmbedArgs {
            model,
            images,
            texts,
            texts_file,
            out,
            format,
            batch: batch as usize,
            dtype,
        }),
        Command::ZeroShot {
            model,
            image,
            labels,
            template,
            dtype,
        } => embed::zero_shot(&embed::ZeroShotArgs {
            model,
            image,
            labels,
            template,
            dtype,
        }),
        Command::Flops(a) => {
            let (batch, text_len) = (a.batch as usize, a.text_len as usize);
            if a.all {
                return flops_cmd::run_all(batch, text_len);
            }
            let source = match (&a.config, &a.preset, a.eva) {
                (Some(path), _, _) => flops_cmd::Source::Config(path),
                (None, _, true) => flops_cmd::Source::Eva,
                (None, Some(name), false) => flops_cmd::Source::Preset(name),
                (None, None, false) => flops_cmd::Source::Preset("ViT-L-14-336"),
            };
            flops_cmd::run(&source, batch, text_len)
        }
        Command::Bench {
            model,
            preset,
            batch,
            text_len,
            warmup,
            iters,
            json,
            markdown,
            attention,
        } => bench::run(&bench::BenchArgs {
            model,
            preset,
            batch: batch as usize,
            text_len,
            warmup,
            iters,
            json,
            markdown,
            attention,
        }),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
