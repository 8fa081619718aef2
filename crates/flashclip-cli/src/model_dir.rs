//! What the subcommands that run a model share: opening a model directory, its tokenizer, and a model on the GPU
//! with its workspace.

use std::path::Path;

use flashclip::{Element, Gpu};
use flashclip_model::config::ClipConfig;
use flashclip_model::tokenizer::{ClipTokenizer, TokenizerOrigin};
use flashclip_model::{AttentionImpl, Checkpoint, ClipModel, Workspace};

use crate::error::{open_gpu, CliError, Result};

/// Runs `$body` with the type alias `$T` bound to the element type of a [`flashclip::DType`].
macro_rules! with_dtype {
    ($dtype:expr, $T:ident => $body:expr) => {
        match $dtype {
            flashclip::DType::F16 => {
                type $T = half::f16;
                $body
            }
            flashclip::DType::BF16 => {
                type $T = half::bf16;
                $body
            }
            flashclip::DType::F32 => {
                type $T = f32;
                $body
            }
        }
    };
}
pub(crate) use with_dtype;

/// Opens a model directory (config and checkpoint, checked against each other), with a clear message when the
/// path is not one. No tensor data is read yet.
pub fn open(dir: &Path) -> Result<(ClipConfig, Checkpoint)> {
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
    Checkpoint::open_dir(dir).map_err(|source| CliError::LoadModel {
        dir: dir.to_path_buf(),
        source,
    })
}

/// The tokenizer of a model directory, or OpenAI's when the directory has none.
fn tokenizer(dir: &Path) -> Result<ClipTokenizer> {
    let (tokenizer, origin) = ClipTokenizer::for_model_dir(dir)?;
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
pub fn tokenize(dir: &Path, config: &ClipConfig, texts: &[String]) -> Result<Vec<Vec<u32>>> {
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

/// The tokenizer of a model directory, checked to produce ids inside the model's vocabulary (a directory without
/// tokenizer files gets OpenAI's, which fits only CLIP's 49,408-token vocabulary).
pub fn text_tokenizer(dir: &Path, config: &ClipConfig) -> Result<ClipTokenizer> {
    let tokenizer = tokenizer(dir)?;
    let vocab = config.text.vocab_size;
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

/// A model on the GPU with its workspace.
pub struct Runner<T: Element> {
    pub gpu: Gpu,
    pub model: ClipModel<T>,
    pub ws: Workspace<T>,
}

impl<T: Element> Runner<T> {
    /// Loads `checkpoint` onto GPU 0 in `T` with the fastest attention for it, and a workspace for up to
    /// `max_images` images and `max_texts` texts per forward.
    pub fn new(
        config: &ClipConfig,
        checkpoint: &Checkpoint,
        max_images: usize,
        max_texts: usize,
    ) -> Result<Self> {
        let gpu = open_gpu()?;
        let attention = AttentionImpl::best::<T>(&gpu, config);
        let model = ClipModel::<T>::load(&gpu, config, checkpoint, attention)?;
        let ws = model.workspace(&gpu, max_images, max_texts)?;
        Ok(Self { gpu, model, ws })
    }
}
