//! `flashclip flops`: FLOP counts of a CLIP forward in both conventions.

use std::path::{Path, PathBuf};

use clap::Args;

use flashclip_model::flops::{checked_count, FlopsInput, FlopsReport};
use flashclip_model::ModelConfig;

use crate::error::{CliError, Result};

/// `flashclip flops` arguments.
#[derive(Debug, Args)]
pub struct FlopsArgs {
    /// A Hugging Face config.json (CLIP, Chinese-CLIP or SigLIP), open_clip or EVA-CLIP model JSON.
    #[arg(long, conflicts_with_all = ["preset", "eva", "all"])]
    config: Option<PathBuf>,
    /// A built-in architecture (default ViT-L-14-336; Chinese-CLIP's as CN-CLIP-ViT-L-14-336, ..., SigLIP's as
    /// siglip-so400m-patch14-384, ...).
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

/// `flashclip flops`.
pub fn run_args(a: &FlopsArgs) -> Result<()> {
    let (batch, text_len) = (a.batch as usize, a.text_len as usize);
    if a.all {
        return run_all(batch, text_len);
    }
    let source = match (&a.config, &a.preset, a.eva) {
        (Some(path), _, _) => Source::Config(path),
        (None, _, true) => Source::Eva,
        (None, Some(name), false) => Source::Preset(name),
        (None, None, false) => Source::Preset("ViT-L-14-336"),
    };
    run(&source, batch, text_len)
}

/// Where the model shape comes from.
pub enum Source<'a> {
    Config(&'a Path),
    Preset(&'a str),
    Eva,
}

/// Reads a config file in either format (open_clip / EVA-CLIP or Hugging Face).
fn input_from_file(path: &Path) -> Result<FlopsInput> {
    FlopsInput::from_json_file(path)
        .map_err(|e| CliError::Usage(format!("{}: {e}", path.display())))
}

/// The model shape and a display name.
pub fn input(source: &Source) -> Result<(String, FlopsInput)> {
    Ok(match source {
        Source::Config(path) => (path.display().to_string(), input_from_file(path)?),
        Source::Preset(name) => (name.to_string(), ModelConfig::preset(name)?.flops_input()),
        Source::Eva => (
            "EVA02-CLIP-bigE-14".into(),
            FlopsInput::eva02_clip_bige_14()?,
        ),
    })
}

/// The summary lines under each report (the tests parse `every-op total:`).
fn totals(report: &FlopsReport) -> String {
    format!(
        "every-op total: {:.4} TFLOPs\n2/MAC total: {:.4} TFLOPs\n",
        report.every_op.total() as f64 / 1e12,
        report.mac2.total() as f64 / 1e12
    )
}

/// Prints the report of one model.
pub fn run(source: &Source, batch: usize, text_len: usize) -> Result<()> {
    let (name, input) = input(source)?;
    let report = checked_count(&input, batch, batch, text_len)?;
    println!("model: {name}");
    println!("{report}");
    print!("{}", totals(&report));
    Ok(())
}

/// The seed table: ViT-L/14-336, LAION ViT-H/14 and EVA02-CLIP-E/14 next to the reference calculator's numbers.
pub fn run_all(batch: usize, text_len: usize) -> Result<()> {
    let models: [(&str, Source, f64); 3] = [
        (
            "ViT-L/14-336 (OpenAI)",
            Source::Preset("ViT-L-14-336"),
            50.0,
        ),
        ("ViT-H/14 (LAION)", Source::Preset("ViT-H-14"), 48.0),
        ("EVA02-CLIP-E/14", Source::Eva, 295.0),
    ];
    let seed_shape = batch == 128 && text_len == 64;
    let mut table = format!(
        "| model | every op [TFLOP] | 2/MAC [TFLOP] |{}\n|---|---|---|{}\n",
        if seed_shape {
            " reference [TFLOP] |"
        } else {
            ""
        },
        if seed_shape { "---|" } else { "" }
    );
    for (label, source, reference) in &models {
        let (_, input) = input(source)?;
        let report = checked_count(&input, batch, batch, text_len)?;
        println!("model: {label}");
        println!("{report}");
        print!("{}", totals(&report));
        println!();
        table += &format!(
            "| {label} | {:.1} | {:.1} |{}\n",
            report.every_op.total() as f64 / 1e12,
            report.mac2.total() as f64 / 1e12,
            if seed_shape {
                format!(" {reference:.0} |")
            } else {
                String::new()
            }
        );
    }
    println!("image batch {batch}, text batch {batch}, text length {text_len}\n");
    print!("{table}");
    Ok(())
}
