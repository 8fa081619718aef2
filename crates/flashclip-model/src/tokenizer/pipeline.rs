//! The `tokenizers` pipeline that reproduces CLIP: normalizer, split regex, byte-level BPE
//! and the start/end post-processor.

use std::collections::HashMap;

use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::{Vocab, BPE};
use tokenizers::normalizers::{Lowercase, Replace, Sequence as NormalizerSequence, Strip, NFC};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence as PreTokenizerSequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::processors::roberta::RobertaProcessing;
use tokenizers::{
    AddedToken, NormalizerWrapper, PreTokenizerWrapper, SplitDelimiterBehavior, Tokenizer,
};

use super::vocab::END_OF_WORD_SUFFIX;
use super::{ClipTokenizer, TokenizerError, END_OF_TEXT, START_OF_TEXT};

/// CLIP's pre-tokenization regex (OpenAI's `simple_tokenizer.py`, special tokens first).
const CLIP_SPLIT_PATTERN: &str =
    r"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+";

impl ClipTokenizer {
    /// Builds the CLIP pipeline around a BPE vocabulary and merge list.
    pub(super) fn from_parts(
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

pub(super) fn clip_post_processor(bos: u32, eos: u32) -> RobertaProcessing {
    RobertaProcessing::new(
        (END_OF_TEXT.to_owned(), eos),
        (START_OF_TEXT.to_owned(), bos),
    )
    .trim_offsets(false)
    .add_prefix_space(false)
}
