//! What the subcommands that run a model share: opening a model directory of any family, and its tokenizer.

use std::path::Path;

use flashclip_model::tokenizer::TokenizerOrigin;
use flashclip_model::{open_model_dir, AnyTokenizer, Checkpoint, ModelConfig};

use crate::error::{CliError, Result};

/// Opens a model directory of any family (config and checkpoint, checked against each other), with a clear message
/// when the path is not one. No tensor data is read yet.
pub fn open(dir: &Path) -> Result<(ModelConfig, Checkpoint)> {
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
    open_model_dir(dir).map_err(|source| CliError::LoadModel {
        dir: dir.to_path_buf(),
        source,
    })
}

/// The tokenizer of a model directory, or OpenAI's when a CLIP directory has none.
fn tokenizer(dir: &Path, config: &ModelConfig) -> Result<AnyTokenizer> {
    let (tokenizer, origin) = AnyTokenizer::for_model_dir(dir, config)?;
    if origin == TokenizerOrigin::OpenAi {
        eprintln!(
            "no tokenizer files in {}: using OpenAI's CLIP vocabulary",
            dir.display()
        );
    }
    Ok(tokenizer)
}

/// Tokenizes `texts` for `config`, checking that the ids fit the model's vocabulary (a model directory without
/// tokenizer files gets OpenAI's, which fits only CLIP's 49,408-token vocabulary).
pub fn tokenize(dir: &Path, config: &ModelConfig, texts: &[String]) -> Result<Vec<Vec<u32>>> {
    let ids = tokenizer(dir, config)?.encode_batch(texts, config.context_length())?;
    let vocab = config.vocab_size();
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

/// The tokenizer of a model directory, checked to produce ids inside the model's vocabulary (a directory without
/// tokenizer files gets OpenAI's, which fits only CLIP's 49,408-token vocabulary).
pub fn text_tokenizer(dir: &Path, config: &ModelConfig) -> Result<AnyTokenizer> {
    let tokenizer = tokenizer(dir, config)?;
    let vocab = config.vocab_size();
    if tokenizer.vocab_size() > vocab {
        return Err(CliError::Usage(format!(
            "the tokenizer has {} tokens, more than the model's vocabulary of {vocab}: put the model's \
             tokenizer.json (or vocab.json + merges.txt) in {}",
            tokenizer.vocab_size(),
            dir.display()
        )));
    }
    Ok(tokenizer)
}
