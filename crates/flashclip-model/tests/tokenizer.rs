//! Token ids checked against OpenAI's reference tokenizer and Hugging Face's fast tokenizer.
//!
//! The expected ids were generated with open_clip's `SimpleTokenizer` set up exactly like
//! OpenAI's `clip/simple_tokenizer.py` (ftfy + `html.unescape` cleanup, `<|startoftext|>` /
//! `<|endoftext|>` specials) and with the `tokenizers` Python package loading
//! `fixtures/openai/tokenizer.json`, which `transformers.CLIPTokenizer` saved from the same
//! vocabulary.

use std::path::PathBuf;
use std::sync::OnceLock;

use flashclip_model::tokenizer::{
    ClipTokenizer, TokenizerError, TokenizerOrigin, DEFAULT_CONTEXT_LENGTH,
};

/// (text, ids) from OpenAI's reference tokenizer (`clip/simple_tokenizer.py`: ftfy + html
/// cleanup), `[bos, ..., eos]`, not truncated.
const OPENAI_CASES: &[(&str, &[u32])] = &[
    ("a diagram", &[49406, 320, 22697, 49407]),
    ("a dog", &[49406, 320, 1929, 49407]),
    ("a cat", &[49406, 320, 2368, 49407]),
    ("", &[49406, 49407]),
    ("Hello, World!", &[49406, 3306, 267, 1002, 256, 49407]),
    ("A PHOTO OF A DOG.", &[49406, 320, 1125, 539, 320, 1929, 269, 49407]),
    ("it's a dog's life, isn't it? we'll see; they've done, I'm here, you'd go", &[49406, 585, 568, 320, 1929, 568, 970, 267, 2923, 713, 585, 286, 649, 1342, 862, 282, 889, 1200, 1700, 267, 328, 880, 763, 267, 592, 1896, 861, 49407]),
    ("  multiple   spaces\tand\ttabs\nand newlines  ", &[49406, 6470, 9006, 537, 29163, 537, 1218, 3418, 49407]),
    ("3.14159 and 2024 and 1,000,000", &[49406, 274, 269, 272, 275, 272, 276, 280, 537, 273, 271, 273, 275, 537, 272, 267, 271, 271, 271, 267, 271, 271, 271, 49407]),
    ("price: $42.99 (approx.)", &[49406, 2827, 281, 259, 275, 273, 269, 280, 280, 263, 18266, 5376, 49407]),
    ("caf\u{e9} na\u{ef}ve r\u{e9}sum\u{e9}", &[49406, 15304, 1097, 35689, 563, 29106, 7054, 4166, 49407]),
    ("\u{dc}n\u{ef}c\u{f6}d\u{e9} \u{c5}NGSTR\u{d6}M", &[49406, 6522, 77, 35689, 66, 7255, 67, 4166, 23176, 10352, 807, 7255, 332, 49407]),
    ("\u{6771}\u{4eac}\u{30bf}\u{30ef}\u{30fc}\u{306e}\u{5199}\u{771f}", &[49406, 48338, 21078, 105, 34941, 2429, 107, 13457, 21575, 44653, 33440, 509, 49407]),
    ("\u{43f}\u{440}\u{438}\u{432}\u{435}\u{442} \u{43c}\u{438}\u{440}", &[49406, 26302, 16370, 29503, 110, 22176, 141, 480, 38018, 16701, 141, 478, 49407]),
    ("emoji \u{1f436}\u{1f431} and \u{1f44d}\u{1f3fd} party \u{1f389}", &[49406, 16327, 14466, 22979, 537, 43722, 1580, 3986, 49407]),
    ("<|endoftext|>", &[49406, 49407, 49407]),
    ("hello<|endoftext|>world", &[49406, 3306, 49407, 1002, 49407]),
    ("<|startoftext|>a dog", &[49406, 49406, 320, 1929, 49407]),
    ("foo_bar-baz/qux@example.com", &[49406, 23435, 318, 2411, 268, 25268, 270, 666, 343, 287, 6228, 269, 2464, 49407]),
    ("#hashtag @mention https://example.com/path?q=1&r=2", &[49406, 258, 9238, 287, 6762, 30901, 12441, 6228, 269, 2464, 270, 5035, 286, 336, 284, 272, 261, 337, 284, 273, 49407]),
    ("e\u{301}cole", &[49406, 3459, 8166, 49407]),
    ("xxxxxxxxxxxxxxxxxxxxxxxxxxxxxx", &[49406, 32035, 32035, 32035, 32035, 32035, 32035, 5675, 22819, 49407]),
    ("antidisestablishmentarianism", &[49406, 3120, 4262, 7726, 12658, 1585, 44351, 49407]),
    ("!!!???...", &[49406, 11194, 5195, 22641, 49407]),
    ("a\u{a0}b", &[49406, 320, 321, 49407]),
    ("1st 2nd 3rd 42nd", &[49406, 272, 545, 273, 1764, 274, 1973, 275, 273, 1764, 49407]),
    ("a photo of a \u{2018}quoted\u{2019} \u{201c}thing\u{201d}", &[49406, 320, 1125, 539, 320, 262, 27706, 262, 257, 946, 257, 49407]),
    ("fish &amp; chips &lt;3", &[49406, 2759, 261, 8855, 283, 274, 49407]),
    ("\u{fb01}ne \u{fb02}our", &[49406, 3797, 18592, 49407]),
    ("\u{ff26}\u{ff35}\u{ff2c}\u{ff2c}\u{ff37}\u{ff29}\u{ff24}\u{ff34}\u{ff28} \u{ff54}\u{ff45}\u{ff58}\u{ff54} \u{ff11}\u{ff12}\u{ff13}", &[49406, 9407, 23571, 4160, 272, 273, 274, 49407]),
    ("&ldquo;hi&rdquo; &amp;amp; a < b &amp; c", &[49406, 728, 506, 1883, 728, 507, 261, 320, 283, 321, 261, 322, 49407]),
    ("\u{ff76}\u{ff80}\u{ff76}\u{ff85} \u{ff83}\u{ff7d}\u{ff84}", &[49406, 37367, 34941, 37367, 2429, 488, 2429, 228, 32421, 486, 49407]),
    ("a\u{0}b\u{7f}c\u{feff}d", &[49406, 596, 4480, 49407]),
    ("\u{130}stanbul \u{3a3}\u{38a}\u{3a3}\u{3a5}\u{3a6}\u{39f}\u{3a3}", &[49406, 328, 16384, 11231, 139, 225, 138, 107, 139, 225, 139, 227, 139, 228, 138, 123, 139, 480, 49407]),
    ("The <|ENDOFTEXT|> end", &[49406, 518, 49407, 806, 49407]),
    ("don\u{2019}t stop", &[49406, 847, 713, 1691, 49407]),
    ("tab\u{3000}space", &[49406, 14724, 2138, 49407]),
];

/// Cases where Hugging Face's `CLIPTokenizerFast` (no ftfy/html cleanup, per-char lowercasing)
/// gives other ids than OpenAI's; all other [`OPENAI_CASES`] are identical for it.
const HF_DIFFERENT_CASES: &[(&str, &[u32])] = &[
    ("a photo of a \u{2018}quoted\u{2019} \u{201c}thing\u{201d}", &[49406, 320, 1125, 539, 320, 728, 502, 27706, 728, 503, 728, 506, 946, 728, 507, 49407]),
    ("fish &amp; chips &lt;3", &[49406, 2759, 261, 6259, 282, 8855, 261, 3333, 282, 274, 49407]),
    ("\u{fb01}ne \u{fb02}our", &[49406, 171, 105, 223, 1422, 171, 105, 224, 581, 49407]),
    ("\u{ff26}\u{ff35}\u{ff2c}\u{ff2c}\u{ff37}\u{ff29}\u{ff24}\u{ff34}\u{ff28} \u{ff54}\u{ff45}\u{ff58}\u{ff54} \u{ff11}\u{ff12}\u{ff13}", &[49406, 171, 121, 228, 171, 121, 243, 171, 121, 234, 171, 121, 234, 171, 121, 245, 171, 121, 231, 171, 121, 226, 171, 121, 242, 171, 121, 486, 171, 121, 242, 171, 121, 227, 171, 121, 246, 171, 121, 498, 171, 120, 495, 171, 120, 496, 171, 120, 497, 49407]),
    ("&ldquo;hi&rdquo; &amp;amp; a < b &amp; c", &[49406, 261, 1431, 28127, 282, 1883, 261, 13501, 28127, 282, 261, 6259, 282, 6259, 282, 320, 283, 321, 261, 6259, 282, 322, 49407]),
    ("\u{ff76}\u{ff80}\u{ff76}\u{ff85} \u{ff83}\u{ff7d}\u{ff84}", &[49406, 171, 121, 114, 171, 122, 222, 171, 121, 114, 171, 122, 483, 171, 122, 225, 171, 121, 121, 171, 122, 482, 49407]),
    ("a\u{0}b\u{7f}c\u{feff}d", &[49406, 320, 444, 321, 477, 322, 171, 119, 379, 323, 49407]),
    ("\u{130}stanbul \u{3a3}\u{38a}\u{3a3}\u{3a5}\u{3a6}\u{39f}\u{3a3}", &[49406, 328, 16384, 11231, 139, 225, 138, 107, 139, 225, 139, 227, 139, 228, 138, 123, 139, 481, 49407]),
    ("The <|ENDOFTEXT|> end", &[49406, 518, 27, 347, 40786, 4160, 91, 285, 806, 49407]),
    ("don\u{2019}t stop", &[49406, 847, 728, 503, 339, 1691, 49407]),
];

/// The first 77 ids OpenAI's `tokenize(long_text(), truncate=True)` returns.
const LONG_TRUNCATED_77: [u32; 77] = [
    49406, 518, 3712, 2866, 3240, 18911, 962, 518, 10753, 1929, 1519, 320, 8853, 539, 550, 18376,
    6765, 320, 4558, 525, 518, 3293, 533, 18967, 530, 320, 2786, 518, 3712, 2866, 3240, 18911, 962,
    518, 10753, 1929, 1519, 320, 8853, 539, 550, 18376, 6765, 320, 4558, 525, 518, 3293, 533,
    18967, 530, 320, 2786, 518, 3712, 2866, 3240, 18911, 962, 518, 10753, 1929, 1519, 320, 8853,
    539, 550, 18376, 6765, 320, 4558, 525, 518, 3293, 533, 18967, 49407,
];

/// Untruncated length of `long_text()`'s encoding (bos + 200 words + eos).
const LONG_FULL_LEN: usize = 202;

fn fixtures() -> PathBuf {
    PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| ".".into()))
        .join("tests/fixtures/openai")
}

/// A 200-word text, far longer than the 77-token context.
fn long_text() -> String {
    let words: Vec<&str> = "the quick brown fox jumps over the lazy dog while a photograph of an \
                            astronaut riding a horse on the moon is displayed in a museum"
        .split(' ')
        .collect();
    words
        .iter()
        .cycle()
        .take(200)
        .copied()
        .collect::<Vec<_>>()
        .join(" ")
}

fn scratch_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "flashclip-tokenizer-test-{}-{name}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create scratch dir");
    dir
}

/// Built once and shared: building the 49,408-entry vocabulary is the slow part of each test.
fn openai() -> &'static ClipTokenizer {
    static TOKENIZER: OnceLock<ClipTokenizer> = OnceLock::new();
    TOKENIZER.get_or_init(|| ClipTokenizer::openai().expect("embedded vocabulary builds"))
}

#[test]
fn known_answers() {
    let tok = openai();
    assert_eq!(tok.encode("a diagram").unwrap(), [49406, 320, 22697, 49407]);
    assert_eq!(tok.encode("a dog").unwrap(), [49406, 320, 1929, 49407]);
    assert_eq!(tok.encode("a cat").unwrap(), [49406, 320, 2368, 49407]);
}

#[test]
fn special_ids_and_vocab_size() {
    let tok = openai();
    assert_eq!(tok.bos_id(), 49406);
    assert_eq!(tok.eos_id(), 49407);
    assert_eq!(tok.vocab_size(), 49408);
    assert_eq!(tok.token_to_id("dog</w>"), Some(1929));
    assert!(tok.text_cleanup());
}

#[test]
fn matches_openai_reference() {
    let tok = openai();
    for (text, expected) in OPENAI_CASES {
        assert_eq!(tok.encode(text).unwrap(), *expected, "text {text:?}");
    }
}

#[test]
fn long_text_is_truncated_keeping_eos() {
    let tok = openai();
    let text = long_text();
    assert_eq!(tok.encode(&text).unwrap().len(), LONG_FULL_LEN);
    let batch = tok
        .encode_batch(&[text.as_str()], DEFAULT_CONTEXT_LENGTH)
        .unwrap();
    assert_eq!(batch.len(), 1);
    assert_eq!(batch[0], LONG_TRUNCATED_77);
    assert_eq!(batch[0].last(), Some(&tok.eos_id()));
}

#[test]
fn batch_equals_single_encodes() {
    let tok = openai();
    let texts: Vec<&str> = OPENAI_CASES.iter().map(|(t, _)| *t).collect();
    let batch = tok.encode_batch(&texts, 77).unwrap();
    assert_eq!(batch.len(), texts.len());
    for ((text, expected), got) in OPENAI_CASES.iter().zip(&batch) {
        assert!(expected.len() <= 77);
        assert_eq!(got.as_slice(), *expected, "text {text:?}");
    }
    // Owned strings work too.
    let owned: Vec<String> = texts.iter().map(|t| t.to_string()).collect();
    assert_eq!(tok.encode_batch(&owned, 77).unwrap(), batch);
}

#[test]
fn short_context_truncation() {
    let tok = openai();
    let ids = tok.encode_batch(&["a photo of a dog"], 4).unwrap();
    // [bos, a, photo, eos]: the 4th id ("of") is replaced by eos.
    assert_eq!(ids, [[49406, 320, 1125, 49407]]);
    let ids = tok.encode_batch(&["a photo of a dog"], 2).unwrap();
    assert_eq!(ids, [[49406, 49407]]);
    assert!(matches!(
        tok.encode_batch(&["a dog"], 1),
        Err(TokenizerError::ContextLength(1))
    ));
}

#[test]
fn padded_batch() {
    let tok = openai();
    let text = long_text();
    let batch = tok
        .encode_batch_padded(&["a dog", "", text.as_str()], 77, 0)
        .unwrap();
    assert!(batch.iter().all(|ids| ids.len() == 77));
    assert_eq!(batch[0][..4], [49406, 320, 1929, 49407]);
    assert!(batch[0][4..].iter().all(|&id| id == 0));
    assert_eq!(batch[1][..2], [49406, 49407]);
    assert_eq!(batch[2], LONG_TRUNCATED_77);
}

#[test]
fn decode_round_trip() {
    let tok = openai();
    let ids = tok.encode("A photo of a dog, 2 cats!").unwrap();
    assert_eq!(tok.decode(&ids).unwrap(), "a photo of a dog , 2 cats !");
}

#[test]
fn gz_file_equals_embedded() {
    let path = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| ".".into()))
        .join("assets/bpe_simple_vocab_16e6.txt.gz");
    let tok = ClipTokenizer::from_bpe_vocab_gz(&path).unwrap();
    assert_eq!(tok.vocab_size(), 49408);
    for (text, expected) in OPENAI_CASES.iter().take(8) {
        assert_eq!(tok.encode(text).unwrap(), *expected);
    }
    // from_dir finds the .gz as well.
    let dir = scratch_dir("gz");
    std::fs::copy(&path, dir.join("bpe_simple_vocab_16e6.txt.gz")).unwrap();
    let tok = ClipTokenizer::from_dir(&dir).unwrap();
    assert_eq!(tok.encode("a diagram").unwrap(), [49406, 320, 22697, 49407]);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn hf_tokenizer_json_as_is() {
    let tok = ClipTokenizer::from_dir(fixtures()).unwrap();
    assert_eq!(tok.bos_id(), 49406);
    assert_eq!(tok.eos_id(), 49407);
    assert_eq!(tok.vocab_size(), 49408);
    assert!(!tok.text_cleanup());
    for (text, openai_ids) in OPENAI_CASES {
        let expected = HF_DIFFERENT_CASES
            .iter()
            .find(|(t, _)| t == text)
            .map_or(*openai_ids, |(_, ids)| *ids);
        assert_eq!(tok.encode(text).unwrap(), expected, "text {text:?}");
    }
    let text = long_text();
    assert_eq!(
        tok.encode_batch(&[text.as_str()], 77).unwrap()[0],
        LONG_TRUNCATED_77
    );
}

#[test]
fn hf_tokenizer_json_with_cleanup_matches_openai() {
    let tok = ClipTokenizer::from_tokenizer_json(fixtures().join("tokenizer.json"))
        .unwrap()
        .with_text_cleanup(true);
    for (text, expected) in OPENAI_CASES {
        assert_eq!(tok.encode(text).unwrap(), *expected, "text {text:?}");
    }
}

#[test]
fn vocab_json_and_merges_txt() {
    let dir = scratch_dir("vocab-merges");
    std::fs::write(
        dir.join("vocab.json"),
        r#"{"a": 0, "b": 1, "a</w>": 2, "b</w>": 3, "ab</w>": 4,
            "<|startoftext|>": 5, "<|endoftext|>": 6}"#,
    )
    .unwrap();
    std::fs::write(dir.join("merges.txt"), "#version: 0.2\na b</w>\n").unwrap();
    let tok = ClipTokenizer::from_dir(&dir).unwrap();
    assert_eq!((tok.bos_id(), tok.eos_id(), tok.vocab_size()), (5, 6, 7));
    assert_eq!(tok.encode("AB").unwrap(), [5, 4, 6]);
    assert_eq!(tok.encode("ba").unwrap(), [5, 1, 2, 6]);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn load_errors() {
    let dir = scratch_dir("errors");
    assert!(matches!(
        ClipTokenizer::from_dir(&dir),
        Err(TokenizerError::NotFound { .. })
    ));
    let missing = dir.join("missing.txt.gz");
    match ClipTokenizer::from_bpe_vocab_gz(&missing) {
        Err(TokenizerError::Io { path, .. }) => assert_eq!(path, missing),
        other => panic!("expected an I/O error, got {other:?}"),
    }
    assert!(matches!(
        ClipTokenizer::from_bpe_vocab_gz_bytes(b"not gzip"),
        Err(TokenizerError::InvalidVocab(_))
    ));
    std::fs::write(dir.join("tokenizer.json"), "{ not json").unwrap();
    assert!(matches!(
        ClipTokenizer::from_dir(&dir),
        Err(TokenizerError::Load { .. })
    ));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn tokenizer_is_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<ClipTokenizer>();
}

#[test]
fn oversized_gz_vocabulary_is_refused_before_it_is_inflated() {
    use std::io::Write;
    // 65 MiB of newlines compress to about 64 KiB.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let chunk = vec![b'\n'; 1 << 20];
    for _ in 0..65 {
        gz.write_all(&chunk).unwrap();
    }
    let gz = gz.finish().unwrap();
    let err = ClipTokenizer::from_bpe_vocab_gz_bytes(&gz).unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid BPE vocabulary: decompressed vocabulary is larger than 64 MiB"
    );
}

#[test]
fn gz_vocabulary_that_is_not_utf8_is_an_error() {
    use std::io::Write;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(b"header\n\xff\xfe\n").unwrap();
    let err = ClipTokenizer::from_bpe_vocab_gz_bytes(&gz.finish().unwrap()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid BPE vocabulary: cannot decompress: stream did not contain valid UTF-8"
    );
}

#[test]
fn a_model_dir_without_tokenizer_files_gets_openais() {
    let (tok, origin) = ClipTokenizer::for_model_dir(scratch_dir("model-dir-empty")).unwrap();
    assert_eq!(origin, TokenizerOrigin::OpenAi);
    assert_eq!(tok.max_token_id(), Some(49407));
    let (tok, origin) = ClipTokenizer::for_model_dir(fixtures()).unwrap();
    assert_eq!(origin, TokenizerOrigin::ModelDir);
    assert_eq!(tok.encode("a dog").unwrap(), [49406, 320, 1929, 49407]);
    assert_eq!(tok.max_token_id(), Some(49407));
}
