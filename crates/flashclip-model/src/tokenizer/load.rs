//! Building a [`ClipTokenizer`] from OpenAI's or Hugging Face's files.

use std::collections::HashMap;
use std::io::Read;
use std::path::Path;

use tokenizers::Tokenizer;

use super::pipeline::clip_post_processor;
use super::vocab::{openai_vocab, parse_merge};
use super::{ClipTokenizer, TokenizerError, END_OF_TEXT, OPENAI_NUM_MERGES, START_OF_TEXT};

/// OpenAI's `bpe_simple_vocab_16e6.txt.gz`, embedded so the default tokenizer needs no files.
const OPENAI_BPE_VOCAB_GZ: &[u8] = include_bytes!("../../assets/bpe_simple_vocab_16e6.txt.gz");

/// Largest decompressed vocabulary accepted; OpenAI's file decompresses to 3.2 MB.
const MAX_VOCAB_TEXT_BYTES: u64 = 64 << 20;

impl ClipTokenizer {
    /// OpenAI's tokenizer, built from the vocabulary embedded in this crate (no files needed).
    pub fn openai() -> Result<Self, TokenizerError> {
        Self::from_bpe_vocab_gz_bytes(OPENAI_BPE_VOCAB_GZ)
    }

    /// Builds the tokenizer from an OpenAI-style `bpe_simple_vocab_16e6.txt.gz` file.
    pub fn from_bpe_vocab_gz(path: impl AsRef<Path>) -> Result<Self, TokenizerError> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|source| TokenizerError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_bpe_vocab_gz_bytes(&bytes)
    }

    /// Builds the tokenizer from the bytes of an OpenAI-style `bpe_simple_vocab_16e6.txt.gz`.
    ///
    /// Like OpenAI's code, uses lines `1..=48894` of the file (line 0 is a header) as merges.
    pub fn from_bpe_vocab_gz_bytes(gz: &[u8]) -> Result<Self, TokenizerError> {
        // Bounded: a few kilobytes of crafted gzip could otherwise expand until memory runs out.
        let mut raw = Vec::new();
        flate2::read::GzDecoder::new(gz)
            .take(MAX_VOCAB_TEXT_BYTES + 1)
            .read_to_end(&mut raw)
            .map_err(|e| TokenizerError::InvalidVocab(format!("cannot decompress: {e}")))?;
        if raw.len() as u64 > MAX_VOCAB_TEXT_BYTES {
            return Err(TokenizerError::InvalidVocab(format!(
                "decompressed vocabulary is larger than {} MiB",
                MAX_VOCAB_TEXT_BYTES >> 20
            )));
        }
        let text = String::from_utf8(raw).map_err(|_| {
            TokenizerError::InvalidVocab(
                "cannot decompress: stream did not contain valid UTF-8".into(),
            )
        })?;
        let lines: Vec<&str> = text.split('\n').collect();
        if lines.len() < OPENAI_NUM_MERGES + 1 {
            return Err(TokenizerError::InvalidVocab(format!(
                "expected at least {} merge lines after the header, found {}",
                OPENAI_NUM_MERGES,
                lines.len().saturating_sub(1)
            )));
        }
        let merges = lines[1..=OPENAI_NUM_MERGES]
            .iter()
            .enumerate()
            .map(|(i, line)| parse_merge(line, i + 2))
            .collect::<Result<Vec<_>, _>>()?;
        let vocab = openai_vocab(&merges);
        Self::from_parts(vocab, merges)
    }

    /// Builds the tokenizer from Hugging Face's slow-tokenizer files: `vocab.json` (token → id)
    /// and `merges.txt` (one merge per line, optional `#version` header).
    pub fn from_vocab_and_merges(
        vocab_json: impl AsRef<Path>,
        merges_txt: impl AsRef<Path>,
    ) -> Result<Self, TokenizerError> {
        let vocab_path = vocab_json.as_ref();
        let vocab_text = read_text(vocab_path)?;
        let vocab: HashMap<String, u32> =
            serde_json::from_str(&vocab_text).map_err(|e| TokenizerError::Load {
                path: vocab_path.to_path_buf(),
                message: e.to_string(),
            })?;
        let merges_text = read_text(merges_txt.as_ref())?;
        let merges = merges_text
            .lines()
            .enumerate()
            .filter(|(i, line)| !(line.trim().is_empty() || (*i == 0 && line.starts_with('#'))))
            .map(|(i, line)| parse_merge(line, i + 1))
            .collect::<Result<Vec<_>, _>>()?;
        Self::from_parts(vocab, merges)
    }

    /// Loads a Hugging Face `tokenizer.json` and uses its pipeline as it is.
    ///
    /// Any truncation or padding stored in the file is dropped (this type does its own), and a
    /// `<|startoftext|> … <|endoftext|>` post-processor is installed only if the file has none.
    /// Text cleanup is off, so ids equal those of Hugging Face's `CLIPTokenizerFast`; turn it on
    /// with [`with_text_cleanup`](Self::with_text_cleanup) to get closer to OpenAI's ids.
    pub fn from_tokenizer_json(path: impl AsRef<Path>) -> Result<Self, TokenizerError> {
        let path = path.as_ref();
        let text = read_text(path)?;
        let mut inner =
            Tokenizer::from_bytes(text.as_bytes()).map_err(|e| TokenizerError::Load {
                path: path.to_path_buf(),
                message: e.to_string(),
            })?;
        inner
            .with_truncation(None)
            .map_err(|e| TokenizerError::Build(e.to_string()))?;
        inner.with_padding(None);
        let bos = inner
            .token_to_id(START_OF_TEXT)
            .ok_or(TokenizerError::MissingSpecialToken(START_OF_TEXT))?;
        let eos = inner
            .token_to_id(END_OF_TEXT)
            .ok_or(TokenizerError::MissingSpecialToken(END_OF_TEXT))?;
        if inner.get_post_processor().is_none() {
            inner.with_post_processor(Some(clip_post_processor(bos, eos)));
        }
        Ok(Self {
            inner,
            bos,
            eos,
            clean: false,
        })
    }

    /// Loads the tokenizer of a checkpoint directory.
    ///
    /// Looks, in order, for `tokenizer.json` (used as it is, see
    /// [`from_tokenizer_json`](Self::from_tokenizer_json)), `vocab.json` + `merges.txt`, and
    /// `bpe_simple_vocab_16e6.txt.gz`. open_clip checkpoints ship none of these: use
    /// [`openai`](Self::openai) for them.
    pub fn from_dir(dir: impl AsRef<Path>) -> Result<Self, TokenizerError> {
        let dir = dir.as_ref();
        let tokenizer_json = dir.join("tokenizer.json");
        if tokenizer_json.is_file() {
            return Self::from_tokenizer_json(tokenizer_json);
        }
        let (vocab, merges) = (dir.join("vocab.json"), dir.join("merges.txt"));
        if vocab.is_file() && merges.is_file() {
            return Self::from_vocab_and_merges(vocab, merges);
        }
        let gz = dir.join("bpe_simple_vocab_16e6.txt.gz");
        if gz.is_file() {
            return Self::from_bpe_vocab_gz(gz);
        }
        Err(TokenizerError::NotFound {
            dir: dir.to_path_buf(),
        })
    }

    /// The tokenizer a model directory is used with: its own files (see [`from_dir`](Self::from_dir)) when it has
    /// them, else OpenAI's, which fits every released CLIP; the origin says which, so callers can tell the user.
    pub fn for_model_dir(dir: impl AsRef<Path>) -> Result<(Self, TokenizerOrigin), TokenizerError> {
        match Self::from_dir(dir) {
            Ok(t) => Ok((t, TokenizerOrigin::ModelDir)),
            Err(TokenizerError::NotFound { .. }) => Ok((Self::openai()?, TokenizerOrigin::OpenAi)),
            Err(e) => Err(e),
        }
    }
}

/// Where [`ClipTokenizer::for_model_dir`] found its tokenizer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenizerOrigin {
    /// The model directory's own tokenizer files.
    ModelDir,
    /// None in the directory: OpenAI's vocabulary, embedded in this crate.
    OpenAi,
}

fn read_text(path: &Path) -> Result<String, TokenizerError> {
    std::fs::read_to_string(path).map_err(|source| TokenizerError::Io {
        path: path.to_path_buf(),
        source,
    })
}
