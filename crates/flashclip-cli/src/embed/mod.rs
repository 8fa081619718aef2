//! `flashclip embed`: a streaming embedding job. Inputs are listed, decoded on a pool of threads, batched,
//! embedded by one model per device and written as shards of `.npy` embeddings with Parquet metadata and a
//! `manifest.json`, so a job of any size runs in flat memory, can be resumed, and can be split across processes.

mod batch;
mod decode;
mod inputs;
mod manifest;
mod pipeline;
mod shard;
mod stages;
mod writer;

use std::collections::BTreeSet;
use std::path::PathBuf;

use clap::Args;
use flashclip::DType;
use flashclip_model::backend::Device;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::error::{CliError, Result};
use crate::model_dir;
use crate::output::OutDType;
use inputs::Inputs;
use manifest::{Existing, Job, Manifest};
use shard::{Partition, Plan};

/// `flashclip embed` arguments.
#[derive(Debug, Args)]
pub struct EmbedArgs {
    /// Model directory: config.json + model.safetensors (Hugging Face) or open_clip_config.json +
    /// open_clip_model.safetensors.
    #[arg(long)]
    model: PathBuf,
    /// Image files, directories (searched recursively for jpg/jpeg/png/webp and .tar), webdataset .tar shards, or
    /// patterns with `*` / `?` (quote them so the shell leaves them alone).
    #[arg(long, num_args = 1..)]
    images: Vec<PathBuf>,
    /// A file with one image path (or .tar shard, or directory) per line; `-` reads standard input.
    #[arg(long, value_name = "FILE")]
    images_from: Option<PathBuf>,
    /// Texts to embed.
    #[arg(long, num_args = 1..)]
    texts: Vec<String>,
    /// A file with one text per line (empty lines skipped); `-` reads standard input.
    #[arg(long, value_name = "FILE")]
    texts_file: Option<PathBuf>,
    /// A JSON-lines file whose records hold a text in --text-field; `-` reads standard input.
    #[arg(long, value_name = "FILE", requires = "text_field")]
    texts_jsonl: Option<PathBuf>,
    /// The field of --texts-jsonl records that holds the text.
    #[arg(long, value_name = "NAME", requires = "texts_jsonl")]
    text_field: Option<String>,
    /// Output directory: embeddings-NNNNN.npy, metadata-NNNNN.parquet and manifest.json.
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// Replace the outputs of an earlier job in --out.
    #[arg(long, conflicts_with = "resume")]
    overwrite: bool,
    /// Continue the job in --out from its manifest: written shards are kept, the others are (re)written.
    #[arg(long)]
    resume: bool,
    /// Inputs per output shard (embedded or failed).
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    shard_rows: u64,
    /// Embed only part K/N of the inputs (K from 0): inputs whose listing index is K modulo N.
    #[arg(long, value_name = "K/N")]
    shard: Option<Partition>,
    /// Element type of the written embeddings.
    #[arg(long, value_enum, default_value_t = OutDType::Float16)]
    out_dtype: OutDType,
    /// Where the model runs: cpu (float32 reference, slow), cuda or cuda:N.
    #[arg(long, default_value = "cuda")]
    device: Device,
    /// GPUs to run a model replica each on, e.g. 0,1,2,3 (batches are dealt round-robin).
    #[arg(long, value_delimiter = ',', conflicts_with = "device")]
    devices: Vec<usize>,
    /// Images or texts per model call [default: 128 on GPUs, 16 on the CPU].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=4096))]
    batch: Option<u32>,
    /// Element type of the weights and activations on the GPU.
    #[arg(long, value_enum, default_value_t = DType::F16)]
    dtype: DType,
    /// Model replicas per GPU, each on a stream and workspace of its own and sharing the weights, so that one's
    /// upload and bookkeeping overlap another's forward (the CPU always runs one). Two ran 6% faster than one with
    /// ViT-L/14-336 at batch 128 on an H100; a GPU without room for the second workspace runs one.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=8))]
    streams_per_device: u32,
    /// Decode large JPEGs straight to a reduced size (1/2, 1/4 or 1/8 while the short side stays at least the
    /// model's input size), as Pillow's draft mode does: much less decoding work on large photos, pixels slightly
    /// different from the exact transform's (mean difference under 0.01 of a normalized unit).
    #[arg(long)]
    jpeg_draft: bool,
    /// Decode threads [default: the number of cores].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1024))]
    threads: Option<u32>,
    /// No progress bar.
    #[arg(long, short)]
    quiet: bool,
    /// For tests of --resume: exit abruptly (code 75) after writing this many shards, as a killed job would.
    #[arg(long, hide = true)]
    stop_after_shards: Option<u64>,
}

impl EmbedArgs {
    fn devices(&self) -> Vec<Device> {
        if self.devices.is_empty() {
            vec![self.device]
        } else {
            self.devices.iter().map(|&n| Device::Cuda(n)).collect()
        }
    }
}

/// `flashclip embed`. Everything that can be checked is checked before a model loads: the output directory, the
/// model directory, the inputs and the tokenizer.
pub fn run(args: &EmbedArgs) -> Result<()> {
    let devices = args.devices();
    let partition = args.shard.unwrap_or(Partition::WHOLE);
    let existing = manifest::check_out_dir(&args.out, args.overwrite, args.resume)?;
    let (config, checkpoint) = model_dir::open(&args.model)?;
    let inputs = Inputs::new(
        &args.images,
        args.images_from.as_deref(),
        &args.texts,
        args.texts_file.as_deref(),
        args.texts_jsonl.as_deref().zip(args.text_field.as_deref()),
    )?;
    let listing = inputs.count()?;
    if listing.count == 0 {
        return Err(CliError::Usage(
            "nothing to embed: give --images, --images-from, --texts, --texts-file or --texts-jsonl".into(),
        ));
    }
    let tokenizer = if listing.texts > 0 {
        Some(model_dir::text_tokenizer(&args.model, &config)?)
    } else {
        None
    };
    let on_gpu = devices.iter().any(|d| matches!(d, Device::Cuda(_)));
    let job = job_identity(args, on_gpu, config.projection_dim(), partition, &listing);
    let probe = Plan::new(partition, listing.count, args.shard_rows, BTreeSet::new());
    if probe.local_total() == 0 {
        return Err(CliError::Usage(format!(
            "nothing to embed: --shard {partition} gets none of the {} inputs",
            listing.count
        )));
    }
    let missing = matches!(existing, Existing::Missing);
    let (manifest, clear) = match existing {
        Existing::Resume(previous) => (Manifest::resume_from(previous, &job, &args.out)?, false),
        Existing::Overwrite => (Manifest::new(job, probe.shard_count()), true),
        Existing::Missing | Existing::Empty => (Manifest::new(job, probe.shard_count()), false),
    };
    let finished: BTreeSet<u64> = manifest.shards.iter().map(|e| e.shard).collect();
    let plan = Plan::new(partition, listing.count, args.shard_rows, finished);
    if manifest.complete {
        eprintln!("{}: the job is already complete", args.out.display());
        return check_embedded(&manifest);
    }

    let max_batch = args
        .batch
        .map_or(if on_gpu { 128 } else { 16 }, |b| b as usize);
    let threads = args.threads.map(|t| t as usize).unwrap_or_else(|| {
        std::thread::available_parallelism().map_or(4, std::num::NonZeroUsize::get)
    });
    let pre = config
        .preprocessor(Some(&args.model))
        .map_err(|e| CliError::Usage(format!("{}: {e}", args.model.display())))?;
    let decoder = decode::Decoder {
        pre: pre.with_jpeg_draft(args.jpeg_draft),
        tokenizer,
        max_len: config.context_length(),
        vocab: config.vocab_size(),
    };
    let setup = pipeline::Setup {
        inputs: &inputs,
        listing: &listing,
        plan: &plan,
        decoder,
        config: &config,
        checkpoint: &checkpoint,
        devices: &devices,
        dtype: args.dtype,
        max_batch,
        threads,
        streams_per_device: if on_gpu {
            args.streams_per_device as usize
        } else {
            1
        },
    };
    let (dir, quiet, stop_after) = (&args.out, args.quiet, args.stop_after_shards);
    // Runs once every model has loaded: a job refused before (no GPU, a bad checkpoint) leaves no --out behind.
    let outcome = pipeline::run(setup, |described| {
        if missing {
            manifest::create_out_dir(dir)?;
        }
        manifest::remove_temporaries(dir)?;
        if clear {
            manifest::clear_outputs(dir)?;
        }
        let pending = plan.pending_inputs();
        eprintln!(
            "embedding {pending} inputs ({} shards of {}) on {}",
            plan.shard_count() - manifest.shards.len() as u64,
            plan.shard_count(),
            described.join(", ")
        );
        Ok(writer::Writer {
            dir,
            plan: &plan,
            dim: config.projection_dim(),
            out_dtype: args.out_dtype,
            manifest,
            progress: progress(pending, quiet),
            stop_after,
        })
    })?;
    print_summary(&outcome.report, outcome.seconds, dir);
    eprintln!(
        "{}",
        outcome
            .stages
            .summary(outcome.seconds, threads, outcome.model_workers)
    );
    check_embedded(&outcome.manifest)
}

/// The first failures and the summary line.
fn print_summary(report: &writer::Report, seconds: f64, dir: &std::path::Path) {
    if report.failed > 0 {
        eprintln!("{} inputs could not be embedded:", report.failed);
        for e in &report.first_errors {
            eprintln!("  {e}");
        }
        if report.failed > report.first_errors.len() as u64 {
            eprintln!("  ... (every failure has status \"error\" in the metadata files)");
        }
    }
    eprintln!(
        "embedded {} images and {} texts, skipped {}, {:.1} images/s -> {}",
        report.images,
        report.texts,
        report.failed,
        report.images as f64 / seconds.max(1e-9),
        dir.display()
    );
}

/// What a resumed run must match. The model is named by its canonical path; the CPU computes in f32 whatever
/// --dtype says.
fn job_identity(
    args: &EmbedArgs,
    on_gpu: bool,
    dim: usize,
    partition: Partition,
    listing: &inputs::Listing,
) -> Job {
    let dtype = if on_gpu { args.dtype } else { DType::F32 };
    Job {
        model: std::fs::canonicalize(&args.model)
            .unwrap_or_else(|_| args.model.clone())
            .display()
            .to_string(),
        dtype: format!("{dtype:?}").to_lowercase(),
        out_dtype: args.out_dtype,
        dim,
        shard_rows: args.shard_rows,
        partition,
        inputs: listing.count,
        fingerprint: listing.fingerprint.clone(),
    }
}

/// Fails when the job (this run and any before it) embedded nothing.
fn check_embedded(manifest: &Manifest) -> Result<()> {
    if manifest.embedded == 0 {
        return Err(CliError::NothingEmbedded {
            failed: manifest.failed,
        });
    }
    Ok(())
}

fn progress(total: u64, quiet: bool) -> ProgressBar {
    // indicatif draws nothing when stderr is not a terminal.
    let target = if quiet {
        ProgressDrawTarget::hidden()
    } else {
        ProgressDrawTarget::stderr()
    };
    let bar = ProgressBar::with_draw_target(Some(total), target);
    if let Ok(style) = ProgressStyle::with_template(
        "{bar:40} {pos}/{len} inputs {per_sec} [{elapsed_precise} < {eta}]",
    ) {
        bar.set_style(style);
    }
    bar
}
