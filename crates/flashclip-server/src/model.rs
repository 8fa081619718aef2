//! The model a server runs: an [`Embedder`] and its tokenizer, how to load them from a model directory, and what
//! the request handlers need to know about them.

use std::path::Path;

use flashclip::DType;
use flashclip_model::backend::{self, Device, ZeroShot};
use flashclip_model::preprocess::Preprocessor;
use flashclip_model::tokenizer::TokenizerOrigin;
use flashclip_model::{open_model_dir, AnyTokenizer, Embedder};

use crate::errors::ServerError;

/// A loaded model and the tokenizer its texts go through.
pub struct Model {
    /// The model, on whatever device it was loaded.
    pub embedder: Box<dyn Embedder>,
    /// Its tokenizer; every id it can produce must be inside the model's vocabulary.
    pub tokenizer: AnyTokenizer,
    /// The family's image transform ([`flashclip_model::ModelConfig::preprocessor`]).
    pub preprocessor: Preprocessor,
}

/// Loads the model on the batcher's thread (a GPU model stays on the thread that made it); `/health` answers
/// 503 until it has loaded and run one batch.
pub type Loader = Box<dyn FnOnce() -> Result<Model, ServerError> + Send>;

/// Loads a model directory (config, checkpoint, and tokenizer files or else OpenAI's tokenizer) on `device`
/// with batches of up to `max_batch`.
pub fn load_model_dir(
    dir: &Path,
    device: Device,
    dtype: DType,
    max_batch: usize,
) -> Result<Model, ServerError> {
    let (config, checkpoint) = open_model_dir(dir)?;
    let (tokenizer, origin) = AnyTokenizer::for_model_dir(dir, &config)?;
    if origin == TokenizerOrigin::OpenAi {
        eprintln!(
            "no tokenizer files in {}: using OpenAI's CLIP vocabulary",
            dir.display()
        );
    }
    // Before the weights load, which can take a while.
    check_vocabulary(&tokenizer, config.vocab_size())?;
    let preprocessor = config
        .preprocessor(Some(dir))
        .map_err(|e| ServerError::Mismatch(format!("{}: {e}", dir.display())))?;
    let embedder = backend::load(device, dtype, &config, &checkpoint, max_batch)?;
    Ok(Model {
        embedder,
        tokenizer,
        preprocessor,
    })
}

/// What request handlers need from the model: how to prepare inputs, and how to score zero-shot labels.
pub(crate) struct ModelInfo {
    pub tokenizer: AnyTokenizer,
    pub preprocessor: Preprocessor,
    /// Longest token sequence, start and end tokens included.
    pub context_length: usize,
    /// How label probabilities come from the logits (softmax, or SigLIP's sigmoid).
    pub zero_shot: ZeroShot,
}

impl ModelInfo {
    /// Checks that the tokenizer fits the model, then runs one image and one text so that the first request
    /// does not pay for lazy initialization; where the model captures CUDA graphs of small batches, it runs every
    /// such image batch size, and texts of up to 8 and 16 tokens, so that their captures happen here too.
    pub fn warm_up(
        model: Model,
        max_batch: usize,
    ) -> Result<(Box<dyn Embedder>, ModelInfo), ServerError> {
        let Model {
            mut embedder,
            tokenizer,
            preprocessor,
        } = model;
        let config = embedder.config().clone();
        check_vocabulary(&tokenizer, config.vocab_size())?;
        if embedder.max_batch() < max_batch {
            return Err(ServerError::Mismatch(format!(
                "the model takes batches of at most {}, the server asks for {max_batch}",
                embedder.max_batch()
            )));
        }
        if preprocessor.output_len() != 3 * config.image_size() * config.image_size() {
            return Err(ServerError::Mismatch(format!(
                "the preprocessor's images are not the model's 3x{0}x{0}",
                config.image_size()
            )));
        }
        let info = ModelInfo {
            tokenizer,
            preprocessor,
            context_length: config.context_length(),
            zero_shot: embedder.zero_shot(),
        };
        info.warm(embedder.as_mut(), max_batch)?;
        Ok((embedder, info))
    }

    /// Runs one image and one text through `embedder` (this model or a replica of it), and where it captures CUDA
    /// graphs of small batches, every such image batch size and texts of up to 8 and 16 tokens at each.
    pub fn warm(&self, embedder: &mut dyn Embedder, max_batch: usize) -> Result<(), ServerError> {
        let per_image = self.preprocessor.output_len();
        let graphs = embedder.graph_max_batch().min(max_batch);
        for n in 1..=graphs.max(1) {
            embedder.embed_images(&vec![0.0; n * per_image])?;
        }
        let empty = self.tokenizer.empty_text();
        embedder.embed_texts(std::slice::from_ref(&empty))?;
        // Short queries: one text of each padding bucket of up to 16 tokens, at each batch size.
        let lengths = [8, 16].map(|len| len.min(self.context_length));
        for n in 1..=graphs {
            for len in lengths.into_iter().filter(|&len| len >= empty.len()) {
                let mut text = vec![empty[0]; len - 1];
                text.extend(empty.last());
                embedder.embed_texts(&vec![text; n])?;
            }
        }
        Ok(())
    }
}

/// Refuses a tokenizer that can produce ids outside the model's vocabulary.
fn check_vocabulary(tokenizer: &AnyTokenizer, vocab: usize) -> Result<(), ServerError> {
    match tokenizer.max_token_id().filter(|&m| m as usize >= vocab) {
        Some(max) => Err(ServerError::Mismatch(format!(
            "the tokenizer has token id {max}, outside the model's vocabulary of {vocab}: put the model's \
             tokenizer.json (or vocab.json + merges.txt, vocab.txt for Chinese-CLIP) in its directory"
        ))),
        None => Ok(()),
    }
}
