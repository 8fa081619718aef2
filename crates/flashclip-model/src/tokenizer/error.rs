//! The error type of tokenizer loading, encoding and decoding.

use std::path::PathBuf;

/// Errors from loading a tokenizer or encoding text.
#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    /// A tokenizer file could not be read.
    #[error("failed to read {path}: {source}")]
    Io {
        /// The file that failed.
        path: PathBuf,
        /// The underlying I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A vocabulary or merges file is malformed.
    #[error("invalid BPE vocabulary: {0}")]
    InvalidVocab(String),
    /// A `tokenizer.json` (or another tokenizer file) could not be parsed.
    #[error("failed to load tokenizer from {path}: {message}")]
    Load {
        /// The file that failed.
        path: PathBuf,
        /// What the parser reported.
        message: String,
    },
    /// `from_dir` found none of the files it knows.
    #[error(
        "no tokenizer found in {dir}: expected tokenizer.json, vocab.json + merges.txt, \
         or bpe_simple_vocab_16e6.txt.gz"
    )]
    NotFound {
        /// The directory that was searched.
        dir: PathBuf,
    },
    /// A Chinese-CLIP directory has neither `tokenizer.json` nor `vocab.txt`.
    #[error("no WordPiece tokenizer found in {dir}: expected tokenizer.json or vocab.txt")]
    NoWordPiece {
        /// The directory that was searched.
        dir: PathBuf,
    },
    /// The tokenizer lacks a special token it needs (`<|startoftext|>`, `[CLS]`, ...).
    #[error("tokenizer has no {0} token")]
    MissingSpecialToken(&'static str),
    /// The `tokenizers` crate refused to build the pipeline.
    #[error("failed to build tokenizer: {0}")]
    Build(String),
    /// Encoding failed inside the `tokenizers` crate.
    #[error("failed to encode text: {0}")]
    Encode(String),
    /// Decoding failed inside the `tokenizers` crate.
    #[error("failed to decode ids: {0}")]
    Decode(String),
    /// SigLIP's tokenizer could not be loaded or failed.
    #[error(transparent)]
    Siglip(#[from] crate::siglip::SiglipTokenizerError),
    /// The requested context length cannot hold the start and end tokens.
    #[error("context length {0} is too small: it must hold at least the start and end tokens (2)")]
    ContextLength(usize),
}
