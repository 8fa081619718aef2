//! SigLIP's text tokenizer: the checkpoint's `tokenizer.json` through the `tokenizers` crate, with Hugging Face
//! `SiglipTokenizer`'s text canonicalization in front, padded to the context length as SigLIP is trained.
//!
//! `SiglipTokenizer` (SentencePiece, no fast version in transformers) lower-cases the text, deletes ASCII
//! punctuation, collapses whitespace runs to one space and strips the ends, after prefixing a `▁` (so a text that
//! started with whitespace keeps a lone `▁` token). [`SiglipTokenizer::canonicalize`] reproduces that; the
//! unigram model, the `</s>` appended to every text and the padding come from `tokenizer.json`. Texts are
//! truncated to `max_len - 1` pieces plus `</s>`, then padded with the pad token to exactly `max_len` (HF's
//! `padding="max_length", truncation=True`).
//!
//! Checkpoints of other tokenizer classes (SigLIP 2's Gemma tokenizer) are used as their `tokenizer.json` says,
//! lower-cased first for `Siglip2Tokenizer`; `padding_side` comes from `tokenizer_config.json` (default: right,
//! left for `Siglip2Tokenizer`, as in transformers).
//!
//! The original SigLIP repositories ship only `spiece.model`; [`SiglipTokenizer::from_dir`] then says how to
//! write a `tokenizer.json` next to it with transformers ([`CONVERT_COMMAND`]).

use std::path::{Path, PathBuf};

use tokenizers::{
    PaddingDirection, PaddingParams, PaddingStrategy, Tokenizer, TruncationDirection,
    TruncationParams, TruncationStrategy,
};

/// A one-line transformers command writing `DIR/tokenizer.json` from `DIR/spiece.model` (`DIR` last).
pub const CONVERT_COMMAND: &str = "python3 -c \"import sys; from transformers import SiglipTokenizer; \
from transformers.convert_slow_tokenizer import T5Converter; t = SiglipTokenizer.from_pretrained(sys.argv[1]); \
t._extra_ids = 0; T5Converter(t).converted().save(sys.argv[1] + '/tokenizer.json')\" DIR";

/// Errors of the SigLIP tokenizer.
#[derive(Debug, thiserror::Error)]
pub enum SiglipTokenizerError {
    /// The directory has a SentencePiece model but no `tokenizer.json`.
    #[error(
        "{} has only a SentencePiece model ({}); write a tokenizer.json next to it with: {}",
        dir.display(), model.display(), CONVERT_COMMAND.replace("DIR", &dir.display().to_string())
    )]
    SentencePieceOnly {
        /// The model directory.
        dir: PathBuf,
        /// The `.model` file found.
        model: PathBuf,
    },
    /// Neither `tokenizer.json` nor a SentencePiece model is in the directory.
    #[error("no tokenizer.json in {}", dir.display())]
    NotFound {
        /// The model directory.
        dir: PathBuf,
    },
    /// A file could not be read or parsed.
    #[error("cannot load {}: {message}", path.display())]
    Load {
        /// The file.
        path: PathBuf,
        /// Why.
        message: String,
    },
    /// The pad token is not in the vocabulary.
    #[error("the tokenizer has no pad token {0:?}")]
    MissingPadToken(String),
    /// The context length is zero.
    #[error("context length must be at least 1")]
    ContextLength,
    /// The `tokenizers` crate failed.
    #[error("tokenizer failed: {0}")]
    Tokenizers(String),
}

/// How text is changed before the `tokenizer.json` pipeline sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Canonicalization {
    /// `SiglipTokenizer`'s: lower-case, ASCII punctuation deleted, whitespace collapsed, leading `▁`.
    Siglip,
    /// Lower-case only (`Siglip2Tokenizer`).
    Lowercase,
    /// None.
    None,
}

/// A batch of tokenized texts, each exactly `max_len` ids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SiglipTokens {
    /// `[B][max_len]` ids, padded with the pad id.
    pub ids: Vec<Vec<u32>>,
    /// Each text's length before padding (its `attention_mask` sum).
    pub lengths: Vec<usize>,
    /// Whether each text was cut to fit the context.
    pub truncated: Vec<bool>,
}

/// SigLIP's tokenizer; see the [module docs](self).
#[derive(Clone)]
pub struct SiglipTokenizer {
    tokenizer: Tokenizer,
    canonicalization: Canonicalization,
    max_len: usize,
    pad_id: u32,
}

impl std::fmt::Debug for SiglipTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SiglipTokenizer")
            .field("canonicalization", &self.canonicalization)
            .field("max_len", &self.max_len)
            .field("pad_id", &self.pad_id)
            .finish()
    }
}

impl SiglipTokenizer {
    /// Loads `tokenizer.json` from a model directory (and `tokenizer_config.json`, when present, for the
    /// tokenizer class and pad token); `max_len` is the text config's `max_position_embeddings`.
    pub fn from_dir(dir: impl AsRef<Path>, max_len: usize) -> Result<Self, SiglipTokenizerError> {
        let dir = dir.as_ref();
        let json = dir.join("tokenizer.json");
        if !json.is_file() {
            let model = ["spiece.model", "tokenizer.model"]
                .iter()
                .map(|n| dir.join(n))
                .find(|p| p.is_file());
            return Err(match model {
                Some(model) => SiglipTokenizerError::SentencePieceOnly {
                    dir: dir.to_path_buf(),
                    model,
                },
                None => SiglipTokenizerError::NotFound {
                    dir: dir.to_path_buf(),
                },
            });
        }
        let config_path = dir.join("tokenizer_config.json");
        let settings = if config_path.is_file() {
            read_tokenizer_config(&config_path)?
        } else {
            TokenizerSettings::default()
        };
        let class = settings.class;
        let canonicalization = match class.as_deref() {
            None | Some("SiglipTokenizer") => Canonicalization::Siglip,
            Some("Siglip2Tokenizer") => Canonicalization::Lowercase,
            Some(_) => Canonicalization::None,
        };
        // transformers' class defaults: SiglipTokenizer pads on the right, Siglip2Tokenizer on the left.
        let padding = match settings.padding_side.as_deref() {
            Some("left") => PaddingDirection::Left,
            Some(_) => PaddingDirection::Right,
            None if class.as_deref() == Some("Siglip2Tokenizer") => PaddingDirection::Left,
            None => PaddingDirection::Right,
        };
        let tokenizer = Tokenizer::from_file(&json).map_err(|e| SiglipTokenizerError::Load {
            path: json.clone(),
            message: e.to_string(),
        })?;
        let mut tokenizer = Self::new(
            tokenizer,
            canonicalization,
            settings.pad_token.as_deref().unwrap_or("</s>"),
            max_len,
        )?;
        tokenizer.set_padding_side(padding);
        Ok(tokenizer)
    }

    /// A tokenizer from a loaded `tokenizers` pipeline.
    pub fn new(
        mut tokenizer: Tokenizer,
        canonicalization: Canonicalization,
        pad_token: &str,
        max_len: usize,
    ) -> Result<Self, SiglipTokenizerError> {
        if max_len == 0 {
            return Err(SiglipTokenizerError::ContextLength);
        }
        let pad_id = tokenizer
            .token_to_id(pad_token)
            .ok_or_else(|| SiglipTokenizerError::MissingPadToken(pad_token.to_string()))?;
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length: max_len,
                strategy: TruncationStrategy::LongestFirst,
                stride: 0,
                direction: TruncationDirection::Right,
            }))
            .map_err(|e| SiglipTokenizerError::Tokenizers(e.to_string()))?;
        tokenizer.with_padding(Some(PaddingParams {
            strategy: PaddingStrategy::Fixed(max_len),
            direction: PaddingDirection::Right,
            pad_to_multiple_of: None,
            pad_id,
            pad_type_id: 0,
            pad_token: pad_token.to_string(),
        }));
        Ok(SiglipTokenizer {
            tokenizer,
            canonicalization,
            max_len,
            pad_id,
        })
    }

    /// Pads on `side` (the text tower reads the last position: with left padding, the text's own last token).
    pub fn set_padding_side(&mut self, side: PaddingDirection) {
        if let Some(p) = self.tokenizer.get_padding_mut() {
            p.direction = side;
        }
    }

    /// The padded length.
    pub fn max_len(&self) -> usize {
        self.max_len
    }

    /// The pad id.
    pub fn pad_id(&self) -> u32 {
        self.pad_id
    }

    /// Number of token ids, special tokens included.
    pub fn vocab_size(&self) -> usize {
        self.tokenizer.get_vocab_size(true)
    }

    /// The largest token id, special tokens included.
    pub fn max_token_id(&self) -> Option<u32> {
        self.tokenizer.get_vocab(true).into_values().max()
    }

    /// The text as the `tokenizer.json` pipeline is given it.
    pub fn canonicalize(&self, text: &str) -> String {
        match self.canonicalization {
            Canonicalization::Siglip => siglip_canonical(text),
            Canonicalization::Lowercase => text.to_lowercase(),
            Canonicalization::None => text.to_string(),
        }
    }

    /// Tokenizes a batch: each text canonicalized, encoded with `</s>`, truncated and padded to `max_len`.
    pub fn encode_batch<S: AsRef<str>>(
        &self,
        texts: &[S],
    ) -> Result<SiglipTokens, SiglipTokenizerError> {
        let inputs: Vec<String> = texts
            .iter()
            .map(|t| self.canonicalize(t.as_ref()))
            .collect();
        let encodings = self
            .tokenizer
            .encode_batch(inputs, true)
            .map_err(|e| SiglipTokenizerError::Tokenizers(e.to_string()))?;
        let mut out = SiglipTokens {
            ids: Vec::with_capacity(encodings.len()),
            lengths: Vec::with_capacity(encodings.len()),
            truncated: Vec::with_capacity(encodings.len()),
        };
        for e in encodings {
            out.lengths
                .push(e.get_attention_mask().iter().filter(|&&m| m != 0).count());
            out.truncated.push(!e.get_overflowing().is_empty());
            out.ids.push(e.get_ids().to_vec());
        }
        Ok(out)
    }
}

/// What `tokenizer_config.json` says that matters here.
#[derive(Debug, Default)]
struct TokenizerSettings {
    class: Option<String>,
    pad_token: Option<String>,
    padding_side: Option<String>,
}

/// `tokenizer_class`, the pad token's content and `padding_side` from `tokenizer_config.json`.
fn read_tokenizer_config(path: &Path) -> Result<TokenizerSettings, SiglipTokenizerError> {
    let load = |message: String| SiglipTokenizerError::Load {
        path: path.to_path_buf(),
        message,
    };
    let text = std::fs::read_to_string(path).map_err(|e| load(e.to_string()))?;
    let value: serde_json::Value = serde_json::from_str(&text).map_err(|e| load(e.to_string()))?;
    let string = |key: &str| value.get(key).and_then(|v| v.as_str()).map(str::to_string);
    // The pad token is a string or an AddedToken object with a `content`.
    let pad = value.get("pad_token").and_then(|v| {
        v.as_str()
            .or_else(|| v.get("content").and_then(|c| c.as_str()))
            .map(str::to_string)
    });
    Ok(TokenizerSettings {
        class: string("tokenizer_class"),
        pad_token: pad,
        padding_side: string("padding_side"),
    })
}

/// `SiglipTokenizer`'s `canonicalize_text` of `"▁" + text` (its `tokenize` prefixes one), as the pipeline's
/// input: a text that canonicalizes to nothing gives the empty string.
fn siglip_canonical(text: &str) -> String {
    let prefixed = format!("\u{2581}{}", text.replace('\u{2581}', " ").to_lowercase());
    let mut out = String::with_capacity(prefixed.len());
    let mut in_space = false;
    for c in prefixed.chars().filter(|c| !c.is_ascii_punctuation()) {
        // Python's `\s`: Unicode whitespace, plus the separators \x1c-\x1f that Rust does not count.
        if c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c) {
            in_space = true;
        } else {
            if in_space {
                out.push(' ');
                in_space = false;
            }
            out.push(c);
        }
    }
    // A trailing whitespace run is dropped (strip); the leading `▁` means there is never a leading one.
    if out == "\u{2581}" {
        String::new()
    } else {
        out
    }
}

#[cfg(test)]
mod tests {
    use super::siglip_canonical;

    #[test]
    fn canonicalizes_like_siglip_tokenizer() {
        assert_eq!(siglip_canonical("Hello, World!"), "\u{2581}hello world");
        assert_eq!(siglip_canonical("  two \t cats "), "\u{2581} two cats");
        assert_eq!(siglip_canonical("a\u{2581}b"), "\u{2581}a b");
        assert_eq!(siglip_canonical("..."), "");
        assert_eq!(siglip_canonical(""), "");
    }
}
