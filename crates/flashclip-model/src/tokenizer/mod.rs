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

mod clean;
mod error;
mod html;
mod load;
mod pipeline;
mod vocab;

use tokenizers::Tokenizer;

pub use clean::clean_text;
pub use error::TokenizerError;
pub use load::TokenizerOrigin;

use vocab::END_OF_WORD_SUFFIX;

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

    /// The largest token id, special tokens included: a model fits this tokenizer when its vocabulary is larger.
    pub fn max_token_id(&self) -> Option<u32> {
        self.inner.get_vocab(true).into_values().max()
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
}
