//! CLIP's byte-level BPE tokenizer.
//!
//! [`ClipTokenizer`] reproduces the token ids of OpenAI's `clip/simple_tokenizer.py`
//! (and of Hugging Face's `CLIPTokenizerFast`), built on the `tokenizers` crate:
//!
//! - vocabulary: the 256 byte-level characters, the same with `</w>` appended, the
//!   first 48,894 merges of `bpe_simple_vocab_16e6.txt.gz`, then `<|startoftext|>`
//!   (49406) and `<|endoftext|>` (49407): 49,408 entries;
//! - normalization: NFC, runs of whitespace collapsed to one space, stripped, lowercased;
//! - pre-tokenization: CLIP's split regex, then GPT-2's byte-to-unicode mapping;
//! - BPE with the end-of-word suffix `</w>`;
//! - post-processing: `<|startoftext|>` first and `<|endoftext|>` last.
//!
//! OpenAI's vocabulary file (MIT license, shipped in the `open_clip_torch` wheel) is embedded
//! in the binary, so [`ClipTokenizer::openai`] works offline.
//!
//! # Differences from OpenAI's tokenizer
//!
//! OpenAI runs every text through `ftfy.fix_text` and `html.unescape` twice before
//! tokenizing. Only the cheap, deterministic parts of that are reproduced here (see
//! [`clean_text`]): HTML entity decoding for common named entities and all numeric
//! references, curly quotes to straight quotes, Latin ligatures (`ﬁ` → `fi`), fullwidth and
//! halfwidth forms (`ＡＢＣ` → `ABC`) and removal of stray control characters. ftfy's
//! mojibake repair (`fix_encoding`: text that was decoded with the wrong codec, such as
//! `cafÃ©`), its C1-control and lossy-sequence fixes, and HTML5's rarer named entities are
//! not reproduced; such texts can tokenize differently from OpenAI's. Well-formed text
//! (the overwhelming majority of prompts) gives identical ids.
//!
//! A literal `<|endoftext|>` or `<|startoftext|>` in the text becomes the special token, as in
//! OpenAI's code. Where such a literal directly follows punctuation (`"!<|endoftext|>"`), OpenAI's
//! regex swallows it into the punctuation run while this tokenizer still emits the special
//! token, as Hugging Face's fast tokenizer does.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::{Vocab, BPE};
use tokenizers::normalizers::{Lowercase, Replace, Sequence as NormalizerSequence, Strip, NFC};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence as PreTokenizerSequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::processors::roberta::RobertaProcessing;
use tokenizers::{
    AddedToken, NormalizedString, NormalizerWrapper, PreTokenizerWrapper, SplitDelimiterBehavior,
    Tokenizer,
};

/// OpenAI's `bpe_simple_vocab_16e6.txt.gz`, embedded so the default tokenizer needs no files.
const OPENAI_BPE_VOCAB_GZ: &[u8] = include_bytes!("../../assets/bpe_simple_vocab_16e6.txt.gz");

/// The context length of every released CLIP text encoder.
pub const DEFAULT_CONTEXT_LENGTH: usize = 77;

/// Number of merges OpenAI keeps from the vocabulary file (`merges[1:49152-256-2+1]`).
pub const OPENAI_NUM_MERGES: usize = 49152 - 256 - 2;

/// Size of OpenAI's CLIP vocabulary: 512 byte-level tokens + 48,894 merges + 2 special tokens.
pub const OPENAI_VOCAB_SIZE: usize = 49408;

/// The start-of-text token string (id 49406 in OpenAI's vocabulary).
pub const START_OF_TEXT: &str = "<|startoftext|>";

/// The end-of-text token string (id 49407 in OpenAI's vocabulary).
pub const END_OF_TEXT: &str = "<|endoftext|>";

/// CLIP's pre-tokenization regex (OpenAI's `simple_tokenizer.py`, special tokens first).
const CLIP_SPLIT_PATTERN: &str =
    r"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+";

const END_OF_WORD_SUFFIX: &str = "</w>";

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
    /// The tokenizer lacks `<|startoftext|>` or `<|endoftext|>`.
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
    /// The requested context length cannot hold the start and end tokens.
    #[error("context length {0} is too small: it must hold at least the start and end tokens (2)")]
    ContextLength(usize),
}

/// CLIP's text tokenizer; see the [module docs](self) for the exact pipeline.
///
/// `Send + Sync`: build it once (building takes ~0.1 s) and share it, e.g. in an `Arc`;
/// batch encoding runs in parallel on rayon's pool.
#[derive(Clone)]
pub struct ClipTokenizer {
    inner: Tokenizer,
    bos: u32,
    eos: u32,
    clean: bool,
}

impl std::fmt::Debug for ClipTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClipTokenizer")
            .field("vocab_size", &self.vocab_size())
            .field("bos", &self.bos)
            .field("eos", &self.eos)
            .field("clean_text", &self.clean)
            .finish()
    }
}

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
        let mut text = String::new();
        flate2::read::GzDecoder::new(gz)
            .read_to_string(&mut text)
            .map_err(|e| TokenizerError::InvalidVocab(format!("cannot decompress: {e}")))?;
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
        let vocab = openai_vocab(&merges)?;
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

    /// Turns the ftfy/HTML-like [`clean_text`] step on or off.
    ///
    /// On by default for tokenizers built from BPE files (OpenAI's behaviour), off for
    /// `tokenizer.json` (Hugging Face's behaviour).
    #[must_use]
    pub fn with_text_cleanup(mut self, enabled: bool) -> Self {
        self.clean = enabled;
        self
    }

    /// Whether the [`clean_text`] step runs before tokenization.
    pub fn text_cleanup(&self) -> bool {
        self.clean
    }

    /// Id of `<|startoftext|>` (49406 for OpenAI's vocabulary).
    pub fn bos_id(&self) -> u32 {
        self.bos
    }

    /// Id of `<|endoftext|>` (49407 for OpenAI's vocabulary).
    pub fn eos_id(&self) -> u32 {
        self.eos
    }

    /// Number of token ids, special tokens included (49,408 for OpenAI's vocabulary).
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// Id of a token string such as `"dog</w>"`, if it is in the vocabulary.
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// Tokenizes one text: `[bos, …, eos]`, not truncated.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, TokenizerError> {
        let encoding = if self.clean {
            self.inner.encode_fast(clean_text(text), true)
        } else {
            self.inner.encode_fast(text, true)
        }
        .map_err(|e| TokenizerError::Encode(e.to_string()))?;
        Ok(encoding.get_ids().to_vec())
    }

    /// Tokenizes texts in parallel, each truncated to at most `context_length` ids.
    ///
    /// Truncation follows OpenAI's `tokenize(..., truncate=True)`: the first
    /// `context_length` ids are kept and the last one is replaced by `eos`, so every sequence
    /// still ends with `<|endoftext|>`. Sequences are not padded (see
    /// [`encode_batch_padded`](Self::encode_batch_padded)).
    pub fn encode_batch<S: AsRef<str>>(
        &self,
        texts: &[S],
        context_length: usize,
    ) -> Result<Vec<Vec<u32>>, TokenizerError> {
        if context_length < 2 {
            return Err(TokenizerError::ContextLength(context_length));
        }
        let inputs: Vec<String> = texts
            .iter()
            .map(|t| {
                if self.clean {
                    clean_text(t.as_ref())
                } else {
                    t.as_ref().to_owned()
                }
            })
            .collect();
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
                    ids[context_length - 1] = self.eos;
                }
                ids
            })
            .collect())
    }

    /// Like [`encode_batch`](Self::encode_batch), then pads every sequence with `pad_id` to
    /// exactly `context_length` ids: the `[batch, context_length]` input of the text encoder.
    ///
    /// OpenAI's code pads with 0; Hugging Face pads with `<|endoftext|>`. CLIP pools at the
    /// first occurrence of the largest id (`eos`), so either works.
    pub fn encode_batch_padded<S: AsRef<str>>(
        &self,
        texts: &[S],
        context_length: usize,
        pad_id: u32,
    ) -> Result<Vec<Vec<u32>>, TokenizerError> {
        let mut batch = self.encode_batch(texts, context_length)?;
        for ids in &mut batch {
            ids.resize(context_length, pad_id);
        }
        Ok(batch)
    }

    /// Turns ids back into text (special tokens dropped, `</w>` read as a space).
    ///
    /// Lossy like OpenAI's `decode`: case and whitespace are not restored.
    pub fn decode(&self, ids: &[u32]) -> Result<String, TokenizerError> {
        let text = self
            .inner
            .decode(ids, true)
            .map_err(|e| TokenizerError::Decode(e.to_string()))?;
        Ok(text.replace(END_OF_WORD_SUFFIX, " ").trim().to_owned())
    }

    /// Builds the CLIP pipeline around a BPE vocabulary and merge list.
    fn from_parts(
        vocab: HashMap<String, u32>,
        merges: Vec<(String, String)>,
    ) -> Result<Self, TokenizerError> {
        let bos = *vocab
            .get(START_OF_TEXT)
            .ok_or(TokenizerError::MissingSpecialToken(START_OF_TEXT))?;
        let eos = *vocab
            .get(END_OF_TEXT)
            .ok_or(TokenizerError::MissingSpecialToken(END_OF_TEXT))?;
        let vocab: Vocab = vocab.into_iter().collect();
        let bpe = BPE::builder()
            .vocab_and_merges(vocab, merges)
            .end_of_word_suffix(END_OF_WORD_SUFFIX.to_owned())
            .build()
            .map_err(|e| TokenizerError::Build(e.to_string()))?;

        let mut inner = Tokenizer::new(bpe);
        let collapse_whitespace = Replace::new(
            tokenizers::normalizers::replace::ReplacePattern::Regex(r"\s+".into()),
            " ",
        )
        .map_err(|e| TokenizerError::Build(e.to_string()))?;
        inner.with_normalizer(Some(NormalizerSequence::new(vec![
            NormalizerWrapper::from(NFC),
            NormalizerWrapper::from(collapse_whitespace),
            NormalizerWrapper::from(Strip::new(true, true)),
            NormalizerWrapper::from(Lowercase),
        ])));
        // "Invert + Removed": the regex matches are the pieces; what lies between them
        // (whitespace) is dropped, like OpenAI's `re.findall`.
        let split = Split::new(
            SplitPattern::Regex(CLIP_SPLIT_PATTERN.into()),
            SplitDelimiterBehavior::Removed,
            true,
        )
        .map_err(|e| TokenizerError::Build(e.to_string()))?;
        // The split above already did the word splitting, so ByteLevel only maps bytes.
        let byte_level = ByteLevel::new(false, true, false);
        inner.with_pre_tokenizer(Some(PreTokenizerSequence::new(vec![
            PreTokenizerWrapper::from(split),
            PreTokenizerWrapper::from(byte_level),
        ])));
        inner.with_decoder(Some(ByteLevelDecoder::default()));
        inner.with_post_processor(Some(clip_post_processor(bos, eos)));
        // Matched after normalization (lowercasing), so "<|ENDOFTEXT|>" is special too, as in
        // OpenAI's code, which lowercases before splitting.
        inner.add_special_tokens(&[
            AddedToken::from(START_OF_TEXT, true).normalized(true),
            AddedToken::from(END_OF_TEXT, true).normalized(true),
        ]);
        Ok(Self {
            inner,
            bos,
            eos,
            clean: true,
        })
    }
}

fn clip_post_processor(bos: u32, eos: u32) -> RobertaProcessing {
    RobertaProcessing::new(
        (END_OF_TEXT.to_owned(), eos),
        (START_OF_TEXT.to_owned(), bos),
    )
    .trim_offsets(false)
    .add_prefix_space(false)
}

fn read_text(path: &Path) -> Result<String, TokenizerError> {
    std::fs::read_to_string(path).map_err(|source| TokenizerError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Parses one `"left right"` merge line; `line_no` is 1-based, for the error message.
fn parse_merge(line: &str, line_no: usize) -> Result<(String, String), TokenizerError> {
    let mut parts = line.split_whitespace();
    match (parts.next(), parts.next(), parts.next()) {
        (Some(a), Some(b), None) => Ok((a.to_owned(), b.to_owned())),
        _ => Err(TokenizerError::InvalidVocab(format!(
            "merge line {line_no} is not two tokens: {line:?}"
        ))),
    }
}

/// GPT-2's reversible byte → printable-char table, in OpenAI's order: bytes that are already
/// printable map to themselves (in byte order), the rest to U+0100 onwards.
fn byte_level_chars() -> Vec<char> {
    let printable = |b: u32| (0x21..=0x7E).contains(&b) || (0xA1..=0xAC).contains(&b) || b >= 0xAE;
    let own = (0u32..256).filter(|&b| printable(b));
    let shifted = (0u32..256)
        .filter(|&b| !printable(b))
        .enumerate()
        .map(|(n, _)| 256 + n as u32);
    own.chain(shifted).filter_map(char::from_u32).collect()
}

/// OpenAI's vocabulary: bytes, bytes + `</w>`, merge results, then the two special tokens.
fn openai_vocab(merges: &[(String, String)]) -> Result<HashMap<String, u32>, TokenizerError> {
    let bytes = byte_level_chars();
    if bytes.len() != 256 {
        return Err(TokenizerError::InvalidVocab(
            "byte alphabet is not 256 chars".into(),
        ));
    }
    let tokens = bytes
        .iter()
        .map(|c| c.to_string())
        .chain(bytes.iter().map(|c| format!("{c}{END_OF_WORD_SUFFIX}")))
        .chain(merges.iter().map(|(a, b)| format!("{a}{b}")))
        .chain([START_OF_TEXT.to_owned(), END_OF_TEXT.to_owned()]);
    // Later duplicates win, as with Python's dict(zip(vocab, range(len(vocab)))).
    let mut vocab = HashMap::with_capacity(OPENAI_VOCAB_SIZE);
    for (id, token) in tokens.enumerate() {
        let id = u32::try_from(id)
            .map_err(|_| TokenizerError::InvalidVocab("vocabulary too large".into()))?;
        vocab.insert(token, id);
    }
    Ok(vocab)
}

/// The cheap part of OpenAI's `basic_clean` (`ftfy.fix_text` + `html.unescape` twice).
///
/// Applied, in ftfy's order: HTML entities (only if the text has no `<`, like ftfy's "auto"
/// mode), Latin ligatures, fullwidth/halfwidth forms, curly quotes, control characters; then
/// two more rounds of HTML unescaping as OpenAI does, and Python-style lowercasing (with
/// the final-sigma rule). NFC and whitespace are handled by the tokenizer's normalizer.
/// Mojibake repair is not attempted (see the module docs).
pub fn clean_text(text: &str) -> String {
    let text = if text.contains('&') && !text.contains('<') {
        unescape_html(text, false)
    } else {
        text.to_owned()
    };
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        fix_char(c, &mut out);
    }
    if out.contains('&') {
        out = unescape_html(&unescape_html(&out, true), true);
    }
    // Whole-string lowercasing, like Python's `str.lower()`: unlike the tokenizer's per-char
    // normalizer it knows that a word-final 'Σ' becomes 'ς'.
    out.to_lowercase()
}

/// ftfy's per-character fixes, in its order: ligatures, width, quotes, control characters.
fn fix_char(c: char, out: &mut String) {
    if let Some(s) = latin_ligature(c) {
        out.push_str(s);
        return;
    }
    let c = match c {
        '\u{3000}' => ' ',
        '\u{FF01}'..='\u{FFEF}' => {
            // ftfy maps each width form to its NFKC equivalent.
            let mut normalized = NormalizedString::from(c.to_string());
            normalized.nfkc();
            for c in normalized.get().chars() {
                push_fixed_quote_or_control(c, out);
            }
            return;
        }
        c => c,
    };
    push_fixed_quote_or_control(c, out);
}

fn push_fixed_quote_or_control(c: char, out: &mut String) {
    match c {
        '\u{02BC}' | '\u{2018}'..='\u{201B}' => out.push('\''),
        '\u{201C}'..='\u{201F}' => out.push('"'),
        '\u{0}'..='\u{8}'
        | '\u{B}'
        | '\u{E}'..='\u{1F}'
        | '\u{7F}'
        | '\u{206A}'..='\u{206F}'
        | '\u{FEFF}'
        | '\u{FFF9}'..='\u{FFFC}' => {}
        c => out.push(c),
    }
}

fn latin_ligature(c: char) -> Option<&'static str> {
    Some(match c {
        'Ĳ' => "IJ",
        'ĳ' => "ij",
        'ŉ' => "ʼn",
        'Ǳ' => "DZ",
        'ǲ' => "Dz",
        'ǳ' => "dz",
        'Ǆ' => "DŽ",
        'ǅ' => "Dž",
        'ǆ' => "dž",
        'Ǉ' => "LJ",
        'ǈ' => "Lj",
        'ǉ' => "lj",
        'Ǌ' => "NJ",
        'ǋ' => "Nj",
        'ǌ' => "nj",
        'ﬀ' => "ff",
        'ﬁ' => "fi",
        'ﬂ' => "fl",
        'ﬃ' => "ffi",
        'ﬄ' => "ffl",
        'ﬅ' => "ſt",
        'ﬆ' => "st",
        _ => return None,
    })
}

/// Common named entities (HTML5 names, value). Covers the ones seen in captions and alt text;
/// the rest of HTML5's 2,000+ names are left as they are.
const NAMED_ENTITIES: &[(&str, &str)] = &[
    ("amp", "&"),
    ("lt", "<"),
    ("gt", ">"),
    ("quot", "\""),
    ("apos", "'"),
    ("nbsp", "\u{A0}"),
    ("copy", "©"),
    ("reg", "®"),
    ("trade", "™"),
    ("hellip", "…"),
    ("mdash", "—"),
    ("ndash", "–"),
    ("lsquo", "‘"),
    ("rsquo", "’"),
    ("sbquo", "‚"),
    ("ldquo", "“"),
    ("rdquo", "”"),
    ("bdquo", "„"),
    ("laquo", "«"),
    ("raquo", "»"),
    ("bull", "•"),
    ("middot", "·"),
    ("deg", "°"),
    ("times", "×"),
    ("divide", "÷"),
    ("plusmn", "±"),
    ("euro", "€"),
    ("pound", "£"),
    ("yen", "¥"),
    ("cent", "¢"),
    ("sect", "§"),
    ("para", "¶"),
    ("frac12", "½"),
    ("frac14", "¼"),
    ("frac34", "¾"),
    ("iexcl", "¡"),
    ("iquest", "¿"),
    ("aacute", "á"),
    ("agrave", "à"),
    ("acirc", "â"),
    ("atilde", "ã"),
    ("auml", "ä"),
    ("aring", "å"),
    ("aelig", "æ"),
    ("ccedil", "ç"),
    ("eacute", "é"),
    ("egrave", "è"),
    ("ecirc", "ê"),
    ("euml", "ë"),
    ("iacute", "í"),
    ("igrave", "ì"),
    ("icirc", "î"),
    ("iuml", "ï"),
    ("ntilde", "ñ"),
    ("oacute", "ó"),
    ("ograve", "ò"),
    ("ocirc", "ô"),
    ("otilde", "õ"),
    ("ouml", "ö"),
    ("oslash", "ø"),
    ("uacute", "ú"),
    ("ugrave", "ù"),
    ("ucirc", "û"),
    ("uuml", "ü"),
    ("yacute", "ý"),
    ("yuml", "ÿ"),
    ("szlig", "ß"),
    ("Aacute", "Á"),
    ("Agrave", "À"),
    ("Acirc", "Â"),
    ("Atilde", "Ã"),
    ("Auml", "Ä"),
    ("Aring", "Å"),
    ("AElig", "Æ"),
    ("Ccedil", "Ç"),
    ("Eacute", "É"),
    ("Egrave", "È"),
    ("Ecirc", "Ê"),
    ("Euml", "Ë"),
    ("Iacute", "Í"),
    ("Igrave", "Ì"),
    ("Icirc", "Î"),
    ("Iuml", "Ï"),
    ("Ntilde", "Ñ"),
    ("Oacute", "Ó"),
    ("Ograve", "Ò"),
    ("Ocirc", "Ô"),
    ("Otilde", "Õ"),
    ("Ouml", "Ö"),
    ("Oslash", "Ø"),
    ("Uacute", "Ú"),
    ("Ugrave", "Ù"),
    ("Ucirc", "Û"),
    ("Uuml", "Ü"),
    ("Yacute", "Ý"),
];

/// Names HTML5 also accepts without the `;` (the legacy subset of [`NAMED_ENTITIES`] that
/// Python's `html.unescape` honours), longest first so the longest prefix wins.
const LEGACY_NO_SEMICOLON: &[&str] = &["nbsp", "quot", "copy", "amp", "reg", "lt", "gt"];

/// Decodes HTML character references. `lenient` mimics Python's `html.unescape` (numeric
/// references without `;`, legacy names without `;`); otherwise only `&name;`, `&#N;` and
/// `&#xH;` are decoded, like ftfy's `unescape_html`.
fn unescape_html(text: &str, lenient: bool) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(pos) = rest.find('&') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        match decode_reference(after, lenient) {
            Some((decoded, consumed)) => {
                out.push_str(&decoded);
                rest = &after[consumed..];
            }
            None => {
                out.push('&');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// Decodes the reference at the start of `s` (just after `&`): returns the text and the
/// number of bytes of `s` consumed.
fn decode_reference(s: &str, lenient: bool) -> Option<(String, usize)> {
    if let Some(num) = s.strip_prefix('#') {
        let (radix, digits_start) = match num.as_bytes().first() {
            Some(b'x' | b'X') => (16, 2),
            _ => (10, 1),
        };
        let digits: &str = {
            let body = &s[digits_start..];
            let end = body
                .find(|c: char| !c.is_digit(radix))
                .unwrap_or(body.len());
            &body[..end]
        };
        if digits.is_empty() {
            return None;
        }
        let mut consumed = digits_start + digits.len();
        if s[consumed..].starts_with(';') {
            consumed += 1;
        } else if !lenient {
            return None;
        }
        let value = u32::from_str_radix(digits, radix).unwrap_or(u32::MAX);
        return Some((numeric_reference(value), consumed));
    }
    let name_end = s
        .find(|c: char| !c.is_ascii_alphanumeric())
        .unwrap_or(s.len());
    let name = &s[..name_end];
    if s[name_end..].starts_with(';') {
        if let Some((_, value)) = NAMED_ENTITIES.iter().find(|(n, _)| *n == name) {
            return Some(((*value).to_owned(), name_end + 1));
        }
    }
    if lenient {
        for legacy in LEGACY_NO_SEMICOLON {
            if name.starts_with(legacy) {
                let value = NAMED_ENTITIES
                    .iter()
                    .find(|(n, _)| n == legacy)
                    .map(|(_, v)| *v)?;
                return Some((value.to_owned(), legacy.len()));
            }
        }
    }
    None
}

/// A numeric character reference's text, following HTML5 (and Python's `html.unescape`):
/// NUL, surrogates and out-of-range values become U+FFFD, 0x80–0x9F are read as Windows-1252,
/// and non-characters / C0 controls are dropped.
fn numeric_reference(value: u32) -> String {
    const CP1252: [char; 32] = [
        '€', '\u{81}', '‚', 'ƒ', '„', '…', '†', '‡', 'ˆ', '‰', 'Š', '‹', 'Œ', '\u{8D}', 'Ž',
        '\u{8F}', '\u{90}', '‘', '’', '“', '”', '•', '–', '—', '˜', '™', 'š', '›', 'œ', '\u{9D}',
        'ž', 'Ÿ',
    ];
    match value {
        0 | 0xD800..=0xDFFF | 0x11_0000.. => "\u{FFFD}".into(),
        0x0D => "\r".into(),
        0x80..=0x9F => CP1252[(value - 0x80) as usize].to_string(),
        0x01..=0x08 | 0x0B | 0x0E..=0x1F | 0x7F | 0xFDD0..=0xFDEF => String::new(),
        v if v & 0xFFFE == 0xFFFE => String::new(),
        v => char::from_u32(v).map(String::from).unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_alphabet_matches_gpt2() {
        let chars = byte_level_chars();
        assert_eq!(chars.len(), 256);
        assert_eq!(chars[0], '!');
        assert_eq!(chars[93], '~');
        // Byte 0 is the first non-printable byte, mapped to U+0100.
        assert_eq!(chars[188], '\u{100}');
        assert_eq!(chars[255], '\u{143}');
    }

    #[test]
    fn html_unescape_subset() {
        assert_eq!(
            unescape_html("fish &amp; chips &lt;3", true),
            "fish & chips <3"
        );
        assert_eq!(unescape_html("&amp;amp;", true), "&amp;");
        assert_eq!(unescape_html("&#233;t&#xE9;", true), "été");
        assert_eq!(unescape_html("&ampx &#65", true), "&x A");
        assert_eq!(unescape_html("&ampx &#65", false), "&ampx &#65");
        assert_eq!(unescape_html("&unknown; & &", true), "&unknown; & &");
        assert_eq!(unescape_html("&#150;", true), "–");
        assert_eq!(unescape_html("&#0;&#x110000;", true), "\u{FFFD}\u{FFFD}");
    }

    #[test]
    fn cleanup_like_ftfy() {
        assert_eq!(clean_text("‘a’ “b”"), "'a' \"b\"");
        assert_eq!(clean_text("ﬁne"), "fine");
        assert_eq!(clean_text("ＡＢＣ１\u{3000}x"), "abc1 x");
        assert_eq!(clean_text("ΟΔΟΣ"), "\u{3bf}\u{3b4}\u{3bf}\u{3c2}");
        assert_eq!(clean_text("a\u{0}b\u{7F}c\u{FEFF}"), "abc");
        assert_eq!(clean_text("&ldquo;hi&rdquo;"), "\"hi\"");
        // With a '<' ftfy skips its own unescaping, so the quotes stay curly.
        assert_eq!(clean_text("<&ldquo;"), "<“");
    }
}
