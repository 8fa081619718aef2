//! `flashclip`: embed images and texts with CLIP (on GPUs, or the CPU for embedding jobs), zero-shot classify an image, count FLOPs, and run
//! the speed-up ladder benchmark. One module per subcommand; each owns its clap arguments.

mod bench;
mod bench_cn;
mod bench_siglip;
mod embed;
mod error;
mod flops_cmd;
mod model_dir;
mod output;
mod random;
mod serve;
mod zero_shot;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::error::Result;

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

#[derive(Debug, Subcommand)]
enum Command {
    /// Embed images and/or texts into a directory of shards: L2-normalized .npy embeddings, Parquet metadata and a
    /// manifest; resumable, splittable across processes (--shard K/N) and GPUs (--devices).
    Embed(embed::EmbedArgs),
    /// Zero-shot classification of one image, most likely first: softmax(logit_scale · cos) over the labels (CLIP,
    /// Chinese-CLIP), or sigmoid(logit_scale · cos + logit_bias) per label (SigLIP).
    ZeroShot(zero_shot::ZeroShotArgs),
    /// FLOPs of one forward (both towers, projections, logits) in both counting conventions, for a CLIP,
    /// Chinese-CLIP or SigLIP config or preset.
    Flops(flops_cmd::FlopsArgs),
    /// The speed-up ladder: fp32 materialized attention → fp32 flash v1 → fp16 with the fastest flash version for
    /// this GPU + fused kernels → the same as one CUDA graph (→ bf16).
    Bench(bench::BenchArgs),
    /// Serve embeddings over HTTP with dynamic batching (OpenAI-style /v1/embeddings, /embed/*, /zero-shot).
    Serve(serve::ServeArgs),
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Embed(args) => embed::run(&args),
        Command::ZeroShot(args) => zero_shot::run(&args),
        Command::Flops(args) => flops_cmd::run_args(&args),
        Command::Bench(args) => bench::run(&args),
        Command::Serve(args) => serve::run(&args),
    }
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
