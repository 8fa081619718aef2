//! OpenAI's BPE vocabulary: the byte-level alphabet, merge lines and token ids.

use std::collections::HashMap;

use super::{TokenizerError, END_OF_TEXT, OPENAI_VOCAB_SIZE, START_OF_TEXT};

/// The suffix BPE appends to the last piece of a word.
pub(super) const END_OF_WORD_SUFFIX: &str = "</w>";

/// Parses one `"left right"` merge line; `line_no` is 1-based, for the error message.
pub(super) fn parse_merge(line: &str, line_no: usize) -> Result<(String, String), TokenizerError> {
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
pub(super) fn byte_level_chars() -> Vec<char> {
    let printable = |b: u32| (0x21..=0x7E).contains(&b) || (0xA1..=0xAC).contains(&b) || b >= 0xAE;
    let own = (0u32..256).filter(|&b| printable(b));
    let shifted = (0u32..256)
        .filter(|&b| !printable(b))
        .enumerate()
        .map(|(n, _)| 256 + n as u32);
    own.chain(shifted).filter_map(char::from_u32).collect()
}

/// OpenAI's vocabulary: bytes, bytes + `</w>`, merge results, then the two special tokens.
///
/// Infallible: the alphabet always has 256 chars (see the test below) and the callers pass
/// [`OPENAI_NUM_MERGES`](super::OPENAI_NUM_MERGES) merges, so every id fits in a `u32`.
pub(super) fn openai_vocab(merges: &[(String, String)]) -> HashMap<String, u32> {
    let bytes = byte_level_chars();
    let tokens = bytes
        .iter()
        .map(|c| c.to_string())
        .chain(bytes.iter().map(|c| format!("{c}{END_OF_WORD_SUFFIX}")))
        .chain(merges.iter().map(|(a, b)| format!("{a}{b}")))
        .chain([START_OF_TEXT.to_owned(), END_OF_TEXT.to_owned()]);
    // Later duplicates win, as with Python's dict(zip(vocab, range(len(vocab)))).
    let mut vocab = HashMap::with_capacity(OPENAI_VOCAB_SIZE);
    for (id, token) in (0u32..).zip(tokens) {
        vocab.insert(token, id);
    }
    vocab
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
}
