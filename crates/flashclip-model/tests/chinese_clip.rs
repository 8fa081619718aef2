//! Chinese-CLIP on the CPU against Hugging Face on the tiny fixture (tests/fixtures/tiny-chinese-clip, made by
//! scripts/make_hf_fixture_chinese_clip.py): config, tokenizer ids, checkpoint checks and the reference forward.

mod common;

use std::path::PathBuf;

use flashclip_model::checkpoint::Checkpoint;
use flashclip_model::chinese_clip::{
    BertOptions, BertTokenizer, ChineseClipConfig, ChineseClipReference, ChineseClipWeights,
};
use flashclip_model::config::{Activation, ConfigError};
use flashclip_model::reference::ReferenceError;
use flashclip_model::CheckpointError;
use ndarray::{ArrayD, IxDyn};
use serde_json::Value;

use common::{check, fixture_dir, input_texts, Tensors};

fn fixture(name: &str) -> PathBuf {
    fixture_dir("tiny-chinese-clip").join(name)
}

/// fp32 against fp32, summation order the only difference: the errors measured are at most 6e-7 of the largest
/// magnitude; about twice that.
const REL_TOL: f32 = 1.5e-6;

fn config() -> ChineseClipConfig {
    ChineseClipConfig::from_hf_json_file(fixture("config.json")).unwrap()
}

fn texts_json() -> Value {
    serde_json::from_str(&std::fs::read_to_string(fixture("texts.json")).unwrap()).unwrap()
}

fn ids(value: &Value) -> Vec<u32> {
    value
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as u32)
        .collect()
}

#[test]
fn config_reads_the_bert_fields() {
    let c = config();
    let t = &c.text;
    assert_eq!(
        (
            t.hidden_size,
            t.intermediate_size,
            t.num_hidden_layers,
            t.num_attention_heads
        ),
        (64, 128, 2, 1)
    );
    assert_eq!(
        (t.max_position_embeddings, t.type_vocab_size, t.pad_token_id),
        (64, 2, 0)
    );
    assert_eq!(t.layer_norm_eps, 1e-12);
    assert_eq!(t.hidden_act, Activation::Gelu);
    assert_eq!(c.vision.hidden_act, Activation::QuickGelu);
    assert_eq!((c.vision.image_size, c.vision.patch_size), (32, 8));
    assert_eq!(c.projection_dim, 32);
    assert_eq!(c.logit_scale_init, 3.0);
}

#[test]
fn config_defaults_and_refusals() {
    let c = ChineseClipConfig::from_hf_json_str(r#"{"model_type": "chinese_clip"}"#).unwrap();
    assert_eq!(
        (
            c.text.vocab_size,
            c.text.hidden_size,
            c.text.max_position_embeddings
        ),
        (30522, 768, 512)
    );
    assert_eq!(
        (c.text.layer_norm_eps, c.text.hidden_act),
        (1e-12, Activation::Gelu)
    );
    assert_eq!(
        (c.vision.patch_size, c.vision.hidden_act),
        (32, Activation::QuickGelu)
    );

    let clip = ChineseClipConfig::from_hf_json_str(r#"{"model_type": "clip"}"#).unwrap_err();
    assert!(matches!(clip, ConfigError::Unsupported { .. }), "{clip}");
    let heads = r#"{"model_type": "chinese_clip", "text_config": {"hidden_size": 768, "num_attention_heads": 7}}"#;
    let err = ChineseClipConfig::from_hf_json_str(heads).unwrap_err();
    assert!(err.to_string().contains("text.hidden_size (768)"), "{err}");
    let pad =
        r#"{"model_type": "chinese_clip", "text_config": {"vocab_size": 10, "pad_token_id": 10}}"#;
    let err = ChineseClipConfig::from_hf_json_str(pad).unwrap_err();
    assert!(err.to_string().contains("pad_token_id"), "{err}");
    let types = r#"{"model_type": "chinese_clip", "text_config": {"type_vocab_size": 0}}"#;
    let err = ChineseClipConfig::from_hf_json_str(types).unwrap_err();
    assert!(err.to_string().contains("type_vocab_size"), "{err}");
}

#[test]
fn presets_have_the_published_sizes() {
    // Parameter counts of OFA-Sys/Chinese-CLIP's model card (millions, rounded).
    for (name, millions) in [
        ("CN-CLIP-ViT-B-16", 188),
        ("ViT-L/14", 406),
        ("ViT-L/14@336px", 407),
        ("cn-clip-vit-h-14", 958),
    ] {
        let c = ChineseClipConfig::preset(name).unwrap();
        let n = ChineseClipWeights::parameter_count(&c) as f64 / 1e6;
        println!("{name}: {n:.1}M parameters");
        assert!(
            (n - millions as f64).abs() < 1.0,
            "{name}: {n:.1}M, expected {millions}M"
        );
    }
    let h = ChineseClipConfig::preset("ViT-H-14").unwrap();
    assert_eq!((h.vision.head_dim(), h.text.head_dim()), (80, 64));
    assert_eq!(
        ChineseClipConfig::preset("CN-CLIP-ViT-L-14-336")
            .unwrap()
            .vision
            .image_size,
        336
    );
    assert!(matches!(
        ChineseClipConfig::preset("ViT-bigG-14"),
        Err(ConfigError::UnknownPreset { .. })
    ));
}

fn check_tokenizer(tokenizer: &BertTokenizer, origin: &str) {
    let texts = texts_json();
    let context = texts["context"].as_u64().unwrap() as usize;
    let short = texts["short_context"].as_u64().unwrap() as usize;
    let entries = texts["texts"].as_array().unwrap();
    let strings: Vec<&str> = entries
        .iter()
        .map(|e| e["text"].as_str().unwrap())
        .collect();
    let ours = tokenizer.encode_batch(&strings, context).unwrap();
    let ours_short = tokenizer.encode_batch(&strings, short).unwrap();
    for (i, e) in entries.iter().enumerate() {
        assert_eq!(ours[i], ids(&e["ids"]), "{origin}: {:?}", strings[i]);
        assert_eq!(
            ours_short[i],
            ids(&e["ids_short"]),
            "{origin}, context {short}: {:?}",
            strings[i]
        );
    }
    // The long text is truncated to the context, the unknown character is [UNK].
    assert!(ours.iter().any(|t| t.len() == context));
    assert!(ours.iter().flatten().any(|&id| id == 1));
    let padded = tokenizer.encode_batch_padded(&strings[..2], 12).unwrap();
    assert_eq!(padded[0][8..], [0, 0, 0, 0]);
    assert_eq!(
        (tokenizer.cls_id(), tokenizer.sep_id(), tokenizer.pad_id()),
        (2, 3, 0)
    );
}

#[test]
fn tokenizer_json_gives_hf_ids() {
    let tokenizer = BertTokenizer::from_dir(fixture("")).unwrap();
    check_tokenizer(&tokenizer, "tokenizer.json");
}

#[test]
fn vocab_txt_gives_hf_ids() {
    let options: Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("tokenizer_config.json")).unwrap())
            .unwrap();
    let options = BertOptions::from_tokenizer_config(&options);
    assert_eq!(options, BertOptions::default());
    let tokenizer = BertTokenizer::from_vocab_txt(fixture("vocab.txt"), options).unwrap();
    check_tokenizer(&tokenizer, "vocab.txt");
    // Cased: "A" is no longer "a" and becomes [UNK].
    let cased = BertOptions {
        lowercase: false,
        ..BertOptions::default()
    };
    let cased = BertTokenizer::from_vocab_txt(fixture("vocab.txt"), cased).unwrap();
    assert_eq!(cased.encode("A cat").unwrap(), [2, 1, 14, 3]);
    let err =
        BertTokenizer::from_dir(std::env::temp_dir().join("no-such-cn-clip-dir")).unwrap_err();
    assert!(err.to_string().contains("vocab.txt"), "{err}");
}

#[test]
fn checkpoint_is_checked_against_the_config() {
    let mut c = config();
    let checkpoint = Checkpoint::open(fixture("model.safetensors")).unwrap();
    flashclip_model::chinese_clip::weights::check(&checkpoint, &c).unwrap();
    c.text.num_hidden_layers = 3;
    let err = flashclip_model::chinese_clip::weights::check(&checkpoint, &c).unwrap_err();
    assert!(
        matches!(err, CheckpointError::LayerCount { found: 2, .. }),
        "{err}"
    );
    let mut c = config();
    c.text.intermediate_size = 96;
    let err = flashclip_model::chinese_clip::weights::check(&checkpoint, &c).unwrap_err();
    let message = err.to_string();
    assert!(
        message.contains("text_model.encoder.layer.0.intermediate.dense.weight"),
        "{message}"
    );
}

fn reference_fixture() -> (ChineseClipConfig, ChineseClipWeights) {
    let c = config();
    let weights = ChineseClipWeights::load(fixture("model.safetensors"), &c).unwrap();
    (c, weights)
}

#[test]
fn text_tower_matches_hf() {
    let (c, weights) = reference_fixture();
    let model = ChineseClipReference::new(&c, &weights).unwrap();
    let (inputs, expected) = (
        Tensors::open(fixture("inputs.safetensors")),
        Tensors::open(fixture("expected.safetensors")),
    );
    let texts = input_texts(&inputs);
    let out = model.text_forward(&texts, true).unwrap();
    assert_eq!(out.hidden_states.len(), c.text.num_hidden_layers + 1);
    // HF's states are packed: the real rows of each text one after another.
    let pack = |a: &ndarray::Array3<f32>| {
        let rows: Vec<f32> = texts
            .iter()
            .enumerate()
            .flat_map(|(b, t)| {
                (0..t.len()).flat_map(move |i| a.slice(ndarray::s![b, i, ..]).to_vec())
            })
            .collect();
        ArrayD::from_shape_vec(
            IxDyn(&[rows.len() / c.text.hidden_size, c.text.hidden_size]),
            rows,
        )
        .unwrap()
    };
    for (k, state) in out.hidden_states.iter().enumerate() {
        let key = format!("text.hidden_states.{k}");
        check(&key, pack(state).view(), expected.f32(&key).view(), REL_TOL);
    }
    check(
        "text.last_hidden_state",
        pack(&out.last_hidden_state).view(),
        expected.f32("text.last_hidden_state").view(),
        REL_TOL,
    );
    check(
        "text.pooler_output",
        out.pooler_output.view().into_dyn(),
        expected.f32("text.pooler_output").view(),
        REL_TOL,
    );
    check(
        "text_embeds",
        out.text_embeds.view().into_dyn(),
        expected.f32("text_embeds").view(),
        REL_TOL,
    );
}

#[test]
fn whole_model_matches_hf() {
    let (c, weights) = reference_fixture();
    let model = ChineseClipReference::new(&c, &weights).unwrap();
    let (inputs, expected) = (
        Tensors::open(fixture("inputs.safetensors")),
        Tensors::open(fixture("expected.safetensors")),
    );
    let pixels = inputs.f32("pixel_values").into_dimensionality().unwrap();
    let vision = model.vision_forward(pixels.view(), false).unwrap();
    check(
        "vision.pooler_output",
        vision.pooler_output.view().into_dyn(),
        expected.f32("vision.pooler_output").view(),
        REL_TOL,
    );
    check(
        "image_embeds",
        vision.image_embeds.view().into_dyn(),
        expected.f32("image_embeds").view(),
        REL_TOL,
    );
    let text = model.text_forward(&input_texts(&inputs), false).unwrap();
    let logits = model
        .logits_per_image(vision.image_embeds.view(), text.text_embeds.view())
        .unwrap();
    check(
        "logits_per_image",
        logits.view().into_dyn(),
        expected.f32("logits_per_image").view(),
        REL_TOL,
    );
    // HF's own half-precision error, for scale: the GPU tests hold fp16/bf16 to these.
    for tag in ["fp16", "bf16"] {
        let half = Tensors::open(fixture(&format!("expected_{tag}.safetensors")));
        let rel = check(
            &format!("HF {tag} text_embeds"),
            half.f32("text_embeds").view(),
            expected.f32("text_embeds").view(),
            0.1,
        );
        assert!(rel > 1e-4, "HF's {tag} run looks like fp32 ({rel:.1e})");
    }
}

#[test]
fn reference_refuses_bad_texts() {
    let (c, weights) = reference_fixture();
    let model = ChineseClipReference::new(&c, &weights).unwrap();
    let empty: Vec<Vec<u32>> = vec![vec![2, 3], vec![]];
    assert!(matches!(
        model.text_forward(&empty, false),
        Err(ReferenceError::EmptyText { index: 1 })
    ));
    let too_long = vec![vec![5u32; 65]];
    assert!(matches!(
        model.text_forward(&too_long, false),
        Err(ReferenceError::TextTooLong {
            len: 65,
            max: 64,
            ..
        })
    ));
    let outside = vec![vec![2u32, c.text.vocab_size as u32, 3]];
    assert!(matches!(
        model.text_forward(&outside, false),
        Err(ReferenceError::TokenOutOfRange { position: 1, .. })
    ));
    // Weights of another config are refused with the first mismatching key.
    let mut other = c.clone();
    other.text.intermediate_size = 96;
    let err = ChineseClipReference::new(&other, &weights).unwrap_err();
    assert!(
        err.to_string().contains("intermediate.dense.weight"),
        "{err}"
    );
}

#[test]
fn a_model_directory_opens_as_chinese_clip_behind_the_embedder() {
    use flashclip_model::backend::{self, Device};
    use flashclip_model::{open_model_dir, AnyTokenizer, Family, ModelConfig};

    let (config, checkpoint) = open_model_dir(fixture("")).unwrap();
    assert_eq!(config.family(), Family::ChineseClip);
    assert_eq!(
        (
            config.context_length(),
            config.projection_dim(),
            config.vocab_size()
        ),
        (52, 32, 70)
    );
    let (tokenizer, _) = AnyTokenizer::for_model_dir(fixture(""), &config).unwrap();
    let texts = texts_json();
    let strings: Vec<&str> = texts["texts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["text"].as_str().unwrap())
        .collect();
    let ids = tokenizer
        .encode_batch(&strings, config.context_length())
        .unwrap();
    let mut embedder =
        backend::load(Device::Cpu, flashclip::DType::F32, &config, &checkpoint, 8).unwrap();
    assert!(matches!(embedder.config(), ModelConfig::ChineseClip(_)));
    let (inputs, expected) = (
        Tensors::open(fixture("inputs.safetensors")),
        Tensors::open(fixture("expected.safetensors")),
    );
    let pixels = inputs.f32("pixel_values");
    let image = embedder.embed_images(pixels.as_slice().unwrap()).unwrap();
    let text = embedder.embed_texts(&ids).unwrap();
    check(
        "Embedder image_embeds",
        image.view().into_dyn(),
        expected.f32("image_embeds").view(),
        REL_TOL,
    );
    check(
        "Embedder text_embeds",
        text.view().into_dyn(),
        expected.f32("text_embeds").view(),
        REL_TOL,
    );
    assert!((embedder.logit_scale() - 3.0f32.exp()).abs() < 1e-4);

    // A config.json of another family is refused by name, with the known ones.
    let dir = std::env::temp_dir().join(format!("cn-clip-family-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("config.json"), r#"{"model_type": "blip"}"#).unwrap();
    let err = ModelConfig::from_json_file(dir.join("config.json")).unwrap_err();
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(
        err.to_string().contains("\"blip\"")
            && err.to_string().contains("clip, chinese_clip, siglip"),
        "{err}"
    );
}
