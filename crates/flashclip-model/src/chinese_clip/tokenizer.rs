//! Chinese-CLIP's WordPiece (BERT) tokenizer, on the `tokenizers` crate.
//!
//! From a checkpoint's `tokenizer.json` (used as it is) or, failing that, its `vocab.txt` with the options of
//! `tokenizer_config.json` (`do_lower_case`, `tokenize_chinese_chars`, `strip_accents`), built as transformers'
//! `BertTokenizer` builds it: BERT normalizer (control characters removed, whitespace unified, a space around each
//! CJK character, lower-casing and accent stripping as configured), BERT pre-tokenizer (whitespace and
//! punctuation), WordPiece with `##` continuations and `[UNK]`, then `[CLS] … [SEP]`.
//!
//! Texts are truncated like transformers' `truncation=True, max_length=context`: the first `context - 2` word
//! pieces are kept between `[CLS]` and `[SEP]`.

use std::path::Path;

use serde_json::Value;
use tokenizers::models::wordpiece::WordPiece;
use tokenizers::normalizers::bert::BertNormalizer;
use tokenizers::pre_tokenizers::bert::BertPreTokenizer;
use tokenizers::processors::bert::BertProcessing;
use tokenizers::{AddedToken, Tokenizer};

use crate::tokenizer::TokenizerError;

const CLS: &str = "[CLS]";
const SEP: &str = "[SEP]";
const PAD: &str = "[PAD]";
const UNK: &str = "[UNK]";
const MASK: &str = "[MASK]";

/// Largest `vocab.txt` read (BERT vocabularies are well under 1 MB).
const MAX_VOCAB_BYTES: u64 = 64 << 20;

/// The options of `tokenizer_config.json` that shape the pipeline built from `vocab.txt`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BertOptions {
    /// Lower-case the text (`do_lower_case`, default true).
    pub lowercase: bool,
    /// Put spaces around CJK characters so each is a word (`tokenize_chinese_chars`, default true).
    pub tokenize_chinese_chars: bool,
    /// Strip accents (`strip_accents`; `None`, the default, follows `lowercase`).
    pub strip_accents: Option<bool>,
}

impl Default for BertOptions {
    fn default() -> Self {
        BertOptions {
            lowercase: true,
            tokenize_chinese_chars: true,
            strip_accents: None,
        }
    }
}

impl BertOptions {
    /// Reads the options from a parsed `tokenizer_config.json` (absent keys keep their defaults).
    pub fn from_tokenizer_config(value: &Value) -> Self {
        let default = BertOptions::default();
        let flag =
            |key: &str, default: bool| value.get(key).and_then(Value::as_bool).unwrap_or(default);
        BertOptions {
            lowercase: flag("do_lower_case", default.lowercase),
            tokenize_chinese_chars: flag("tokenize_chinese_chars", default.tokenize_chinese_chars),
            strip_accents: value.get("strip_accents").and_then(Value::as_bool),
        }
    }
}

/// Chinese-CLIP's text tokenizer; see the [module docs](self). `Send + Sync`; batch encoding runs on rayon's pool.
#[derive(Clone)]
pub struct BertTokenizer {
    inner: Tokenizer,
    cls: u32,
    sep: u32,
    pad: u32,
}

impl std::fmt::Debug for BertTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BertTokenizer")
            .field("vocab_size", &self.vocab_size())
            .field("cls", &self.cls)
            .field("sep", &self.sep)
            .field("pad", &self.pad)
            .finish()
    }
}

fn special(inner: &Tokenizer, token: &'static str) -> Result<u32, TokenizerError> {
    inner
        .token_to_id(token)
        .ok_or(TokenizerError::MissingSpecialToken(token))
}

fn read_text(path: &Path) -> Result<String, TokenizerError> {
    std::fs::read_to_string(path).map_err(|source| TokenizerError::Io {
        path: path.to_path_buf(),
        source,
    })
}

impl BertTokenizer {
    fn new(inner: Tokenizer) -> Result<Self, TokenizerError> {
        Ok(BertTokenizer {
            cls: special(&inner, CLS)?,
            sep: special(&inner, SEP)?,
            pad: special(&inner, PAD)?,
            inner,
        })
    }

    /// Loads a Hugging Face `tokenizer.json` and uses its pipeline as it is (any truncation or padding stored in
    /// it is dropped: this type does its own).
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
        Self::new(inner)
    }

    /// Builds the BERT pipeline around a `vocab.txt` (one token a line, the line number its id).
    pub fn from_vocab_txt(
        path: impl AsRef<Path>,
        options: BertOptions,
    ) -> Result<Self, TokenizerError> {
        let path = path.as_ref();
        let size = std::fs::metadata(path)
            .map_err(|source| TokenizerError::Io {
                path: path.to_path_buf(),
                source,
            })?
            .len();
        if size > MAX_VOCAB_BYTES {
            return Err(TokenizerError::InvalidVocab(format!(
                "{} is larger than {} MiB",
                path.display(),
                MAX_VOCAB_BYTES >> 20
            )));
        }
        Self::from_vocab_lines(&read_text(path)?, options)
    }

    /// Builds the BERT pipeline around the text of a `vocab.txt`.
    pub fn from_vocab_lines(text: &str, options: BertOptions) -> Result<Self, TokenizerError> {
        // One token a line, trailing whitespace dropped; a repeated token keeps its last line (as transformers'
        // `load_vocab`).
        let vocab = WordPiece::read_bytes(text.as_bytes())
            .map_err(|e| TokenizerError::InvalidVocab(e.to_string()))?;
        let wordpiece = WordPiece::builder()
            .vocab(vocab)
            .unk_token(UNK.into())
            .continuing_subword_prefix("##".into())
            .build()
            .map_err(|e| TokenizerError::Build(e.to_string()))?;
        let mut inner = Tokenizer::new(wordpiece);
        inner.with_normalizer(Some(BertNormalizer::new(
            true,
            options.tokenize_chinese_chars,
            options.strip_accents,
            options.lowercase,
        )));
        inner.with_pre_tokenizer(Some(BertPreTokenizer));
        let (cls, sep) = (special(&inner, CLS)?, special(&inner, SEP)?);
        inner.with_post_processor(Some(BertProcessing::new(
            (SEP.into(), sep),
            (CLS.into(), cls),
        )));
        // Special tokens written in a text are matched before normalization, as transformers does.
        let specials: Vec<AddedToken> = [PAD, UNK, CLS, SEP, MASK]
            .into_iter()
            .filter(|t| inner.token_to_id(t).is_some())
            .map(|t| AddedToken::from(t, true))
            .collect();
        inner.add_special_tokens(&specials);
        Self::new(inner)
    }

    /// The tokenizer of a checkpoint directory: `tokenizer.json` when present, else `vocab.txt` with the options
    /// of `tokenizer_config.json` (defaults when that file is absent).
    pub fn from_dir(dir: impl AsRef<Path>) -> Result<Self, TokenizerError> {
        let dir = dir.as_ref();
        let json = dir.join("tokenizer.json");
        if json.is_file() {
            return Self::from_tokenizer_json(json);
        }
        let vocab = dir.join("vocab.txt");
        if !vocab.is_file() {
            return Err(TokenizerError::NoWordPiece {
                dir: dir.to_path_buf(),
            });
        }
        let config_path = dir.join("tokenizer_config.json");
        let options = if config_path.is_file() {
            let value: Value = serde_json::from_str(&read_text(&config_path)?).map_err(|e| {
                TokenizerError::Load {
                    path: config_path.clone(),
                    message: e.to_string(),
                }
            })?;
            BertOptions::from_tokenizer_config(&value)
        } else {
            BertOptions::default()
        };
        Self::from_vocab_txt(vocab, options)
    }

    /// Id of `[CLS]`.
    pub fn cls_id(&self) -> u32 {
        self.cls
    }

    /// Id of `[SEP]`.
    pub fn sep_id(&self) -> u32 {
        self.sep
    }

    /// Id of `[PAD]`.
    pub fn pad_id(&self) -> u32 {
        self.pad
    }

    /// Number of token ids, special tokens included.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// The largest token id, special tokens included.
    pub fn max_token_id(&self) -> Option<u32> {
        self.inner.get_vocab(true).into_values().max()
    }

    /// Tokenizes one text: `[CLS] … [SEP]`, not truncated.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, TokenizerError> {
        let encoding = self
            .inner
            .encode_fast(text, true)
            .map_err(|e| TokenizerError::Encode(e.to_string()))?;
        Ok(encoding.get_ids().to_vec())
    }

    /// Tokenizes texts in parallel, each truncated to at most `context_length` ids (the first
    /// `context_length - 2` word pieces between `[CLS]` and `[SEP]`), not padded.
    pub fn encode_batch<S: AsRef<str>>(
        &self,
        texts: &[S],
        context_length: usize,
    ) -> Result<Vec<Vec<u32>>, TokenizerError> {
        if context_length < 2 {
            return Err(TokenizerError::ContextLength(context_length));
        }
        let inputs: Vec<&str> = texts.iter().map(AsRef::as_ref).collect();
        let encodings = self
            .inner
            .encode_batch_fast(inputs, true)
            .map_err(|e| TokenizerError::Encode(e.to_string()))?;
        Ok(encodings
            .iter()
            .map(|enc| {
                let mut ids = enc.get_ids().to_vec();
                if ids.len() > context_length {
                    ids.truncate(context_length);
                    ids[context_length - 1] = self.sep;
                }
                ids
            })
            .collect())
    }

    /// [`encode_batch`](Self::encode_batch), each sequence padded with `[PAD]` to exactly `context_length` ids
    /// (`cn_clip.clip.tokenize`'s output).
    pub fn encode_batch_padded<S: AsRef<str>>(
        &self,
        texts: &[S],
        context_length: usize,
    ) -> Result<Vec<Vec<u32>>, TokenizerError> {
        let mut batch = self.encode_batch(texts, context_length)?;
        for ids in &mut batch {
            ids.resize(context_length, self.pad);
        }
        Ok(batch)
    }
}
