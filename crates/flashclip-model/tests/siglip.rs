//! SigLIP against Hugging Face's own outputs on the tiny fixture (tests/fixtures/tiny-siglip, made by
//! scripts/make_hf_fixture_siglip.py): config, CPU reference, logits and sigmoid probabilities, tokenizer ids,
//! preprocessing.

mod common;

use std::path::PathBuf;

use flashclip::DType;
use flashclip_model::backend::{self, Device, ZeroShot};
use flashclip_model::config::{Activation, ConfigError};
use flashclip_model::preprocess::{Geometry, Preprocessor};
use flashclip_model::siglip::{
    preprocessor_from_value, siglip_logits, sigmoid_probabilities, SiglipConfig, SiglipReference,
    SiglipTokenizer, SiglipTokenizerError, SiglipWeights, TextAttention,
};
use flashclip_model::{open_model_dir, AnyTokenizer, Family};
use ndarray::{Array2, Array4, ArrayD, Axis, IxDyn};

use common::{check, fixture_dir, Tensors};

fn fixture(name: &str) -> PathBuf {
    fixture_dir("tiny-siglip").join(name)
}

/// fp32 against fp32 (PyTorch's accumulation order against ndarray's, f64 statistics here): the largest
/// relative error measured on this fixture is 8.4e-7; about twice that.
const REL_TOL: f32 = 1.5e-6;

struct Fixture {
    config: SiglipConfig,
    weights: SiglipWeights,
    inputs: Tensors,
    expected: Tensors,
}

fn load() -> Fixture {
    let (config, weights) = SiglipWeights::load_dir(fixture("")).unwrap();
    Fixture {
        config,
        weights,
        inputs: Tensors::open(fixture("inputs.safetensors")),
        expected: Tensors::open(fixture("expected.safetensors")),
    }
}

fn input_ids(f: &Fixture) -> Vec<Vec<u32>> {
    f.inputs
        .i64_rows("input_ids")
        .into_iter()
        .map(|r| r.into_iter().map(|id| id as u32).collect())
        .collect()
}

#[test]
fn config_reads_the_fixture_and_hf_defaults() {
    let f = load();
    let (v, t) = (&f.config.vision, &f.config.text);
    assert_eq!(
        (v.hidden_size, v.num_attention_heads, v.head_dim()),
        (144, 2, 72)
    );
    assert_eq!((v.image_size, v.patch_size, v.seq_len()), (16, 4, 16));
    assert_eq!(
        (t.hidden_size, t.projection_size, t.max_position_embeddings),
        (64, 144, 16)
    );
    assert_eq!((t.vocab_size, t.pad_token_id), (90, 1));
    assert_eq!(v.hidden_act, Activation::GeluTanh);
    assert_eq!(t.layer_norm_eps, 1e-6);

    // An empty config is siglip-base-patch16-224 (transformers' defaults).
    let defaults = SiglipConfig::from_hf_json_str("{}").unwrap();
    assert_eq!(
        defaults,
        SiglipConfig::preset("siglip-base-patch16-224").unwrap()
    );
}

#[test]
fn config_rejects_what_it_cannot_run() {
    let err = |json: &str| SiglipConfig::from_hf_json_str(json).unwrap_err();
    assert!(matches!(
        err(r#"{"model_type": "siglip2"}"#),
        ConfigError::Unsupported { .. }
    ));
    assert!(matches!(
        err(r#"{"model_type": "clip"}"#),
        ConfigError::Unsupported { .. }
    ));
    assert!(matches!(
        err(r#"{"vision_config": {"hidden_size": 100, "num_attention_heads": 3}}"#),
        ConfigError::Inconsistent { .. }
    ));
    assert!(matches!(
        err(r#"{"text_config": {"projection_size": 512}}"#),
        ConfigError::Inconsistent { .. }
    ));
    assert!(matches!(
        err(r#"{"text_config": {"hidden_size": "wide"}}"#),
        ConfigError::WrongType { .. }
    ));
    assert!(matches!(
        err(r#"{"vision_config": {"hidden_act": "relu"}}"#),
        ConfigError::UnknownActivation { .. }
    ));
    assert!(matches!(
        err(r#"{"vision_config": {"vision_use_head": false}}"#),
        ConfigError::Unsupported { .. }
    ));
}

#[test]
fn presets_have_the_published_sizes() {
    let so400m = SiglipConfig::preset("google/siglip-so400m-patch14-384").unwrap();
    assert_eq!(so400m.vision.head_dim(), 72);
    assert_eq!(so400m.vision.seq_len(), 729);
    assert_eq!(so400m.text.max_position_embeddings, 64);
    assert_eq!(
        SiglipConfig::preset("siglip-so400m-patch14-224")
            .unwrap()
            .text
            .max_position_embeddings,
        16
    );
    let large = SiglipConfig::preset("siglip-large-patch16-256").unwrap();
    assert_eq!(
        (large.vision.hidden_size, large.vision.seq_len()),
        (1024, 256)
    );
    for name in SiglipConfig::preset_names() {
        let c = SiglipConfig::preset(name).unwrap();
        c.validate().unwrap();
        assert_eq!(c.vision.head_dim(), c.text.head_dim(), "{name}");
    }
    assert!(matches!(
        SiglipConfig::preset("siglip-huge"),
        Err(ConfigError::UnknownPreset { .. })
    ));
}

#[test]
fn flops_count_the_matrix_products() {
    // By hand: vision D 4, MLP 8, one layer, 2x2 patches of 2 px (n 4, patch dim 12); text D 4, MLP 8, context 3.
    let tiny = SiglipConfig::from_hf_json_str(
        r#"{"vision_config": {"hidden_size": 4, "intermediate_size": 8, "num_hidden_layers": 1,
             "num_attention_heads": 1, "image_size": 4, "patch_size": 2},
            "text_config": {"hidden_size": 4, "intermediate_size": 8, "num_hidden_layers": 1,
             "num_attention_heads": 1, "max_position_embeddings": 3}}"#,
    )
    .unwrap();
    // patch 4·2·12·4 = 384; layer 4·(8·16 + 4·4·8 + 4·4·4) = 1280; head 4·4·16 + 4·4·4 + 2·16 + 4·4·8 = 480.
    assert_eq!(tiny.image_flops(), 384 + 1280 + 480);
    // layer 3·(128 + 128 + 4·3·4) = 912; head 2·4·4 = 32.
    assert_eq!(tiny.text_flops(), 912 + 32);
    // The count of scripts/peer_siglip_hf.py (features_flops at batch 1) for so400m/14-384 and base/16-224.
    let so400m = SiglipConfig::preset("siglip-so400m-patch14-384").unwrap();
    assert_eq!(so400m.image_flops() + so400m.text_flops(), 723_473_077_248);
    let base = SiglipConfig::preset("siglip-base-patch16-224").unwrap();
    assert_eq!(base.image_flops() + base.text_flops(), 46_439_215_104);
}

#[test]
fn reference_matches_hf_fp32() {
    let f = load();
    let model = SiglipReference::new(&f.config, &f.weights).unwrap();
    let pixels = f.inputs.f32("pixel_values");
    let pixels: Array4<f32> = pixels.into_dimensionality().unwrap();
    let vision = model.vision_forward(pixels.view()).unwrap();
    let e = &f.expected;
    let states: Vec<_> = vision
        .last_hidden_state
        .iter()
        .map(|x| x.view().insert_axis(Axis(0)))
        .collect();
    let states = ndarray::concatenate(Axis(0), &states).unwrap();
    check(
        "vision.last_hidden_state",
        states.view().into_dyn(),
        e.f32("vision.last_hidden_state").view(),
        REL_TOL,
    );
    check(
        "image_embeds",
        vision.image_embeds.view().into_dyn(),
        e.f32("image_embeds").view(),
        REL_TOL,
    );

    let ids = input_ids(&f);
    let text = model.text_forward(&ids, TextAttention::Unmasked).unwrap();
    let states: Vec<_> = text
        .last_hidden_state
        .iter()
        .map(|x| x.view().insert_axis(Axis(0)))
        .collect();
    let states = ndarray::concatenate(Axis(0), &states).unwrap();
    check(
        "text.last_hidden_state",
        states.view().into_dyn(),
        e.f32("text.last_hidden_state").view(),
        REL_TOL,
    );
    check(
        "text_embeds",
        text.text_embeds.view().into_dyn(),
        e.f32("text_embeds").view(),
        REL_TOL,
    );

    let lengths: Vec<usize> = f
        .inputs
        .i64_rows("attention_mask")
        .iter()
        .map(|m| m.iter().filter(|&&x| x != 0).count())
        .collect();
    let masked = model
        .text_forward(&ids, TextAttention::KeyLengths(&lengths))
        .unwrap();
    check(
        "text_embeds_masked",
        masked.text_embeds.view().into_dyn(),
        e.f32("text_embeds_masked").view(),
        REL_TOL,
    );
    // The mask matters on this fixture (padded texts), so the two paths are told apart.
    let diff = (&masked.text_embeds - &text.text_embeds)
        .iter()
        .fold(0.0f32, |m, v| m.max(v.abs()));
    assert!(diff > 0.1, "masking changed the embeddings by only {diff}");

    let logits = model
        .logits_per_image(vision.image_embeds.view(), text.text_embeds.view())
        .unwrap();
    check(
        "logits_per_image",
        logits.view().into_dyn(),
        e.f32("logits_per_image").view(),
        REL_TOL,
    );
    check(
        "probs",
        sigmoid_probabilities(logits.view()).view().into_dyn(),
        e.f32("probs").view(),
        REL_TOL,
    );
    assert_eq!(
        f.weights.logit_scale,
        e.f32("logit_scale").into_iter().next().unwrap()
    );
    assert_eq!(
        f.weights.logit_bias,
        e.f32("logit_bias").into_iter().next().unwrap()
    );
}

/// The CPU reference on full-size fixtures (`scripts/make_hf_fixture_siglip.py PRESET DIR`), listed in
/// FLASHCLIP_SIGLIP_PARITY_DIRS (colon-separated; build with --release). Does nothing when the variable is unset.
#[test]
fn reference_matches_hf_from_env() {
    let Ok(dirs) = std::env::var("FLASHCLIP_SIGLIP_PARITY_DIRS") else {
        println!(
            "FLASHCLIP_SIGLIP_PARITY_DIRS not set: no full-size SigLIP reference check requested"
        );
        return;
    };
    for dir in dirs.split(':').filter(|d| !d.is_empty()) {
        let dir = PathBuf::from(dir);
        let (config, weights) = SiglipWeights::load_dir(&dir).unwrap();
        let model = SiglipReference::new(&config, &weights).unwrap();
        let read = |name: &str| Tensors::open(dir.join(name));
        let (inputs, expected) = (read("inputs.safetensors"), read("expected.safetensors"));
        let pixels: Array4<f32> = inputs.f32("pixel_values").into_dimensionality().unwrap();
        let ids: Vec<Vec<u32>> = inputs
            .i64_rows("input_ids")
            .into_iter()
            .map(|r| r.into_iter().map(|id| id as u32).collect())
            .collect();
        let image = model.vision_forward(pixels.view()).unwrap().image_embeds;
        let text = model
            .text_forward(&ids, TextAttention::Unmasked)
            .unwrap()
            .text_embeds;
        // base/16-224 (12 layers, trap init) measured 1.0e-6 relative; deeper towers (so400m: 27 layers, not
        // measured here) accumulate more rounding.
        let tol = 5e-6;
        check(
            "image_embeds",
            image.view().into_dyn(),
            expected.f32("image_embeds").view(),
            tol,
        );
        check(
            "text_embeds",
            text.view().into_dyn(),
            expected.f32("text_embeds").view(),
            tol,
        );
    }
}

#[test]
fn logits_and_sigmoid_by_hand() {
    // Orthogonal and parallel pairs: cos 0 and 1.
    let images = Array2::from_shape_vec((1, 2), vec![3.0, 0.0]).unwrap();
    let texts = Array2::from_shape_vec((2, 2), vec![0.0, 2.0, 5.0, 0.0]).unwrap();
    let logits = siglip_logits(images.view(), texts.view(), 10f32.ln(), -5.0).unwrap();
    assert!((logits[[0, 0]] - -5.0).abs() < 1e-6);
    assert!((logits[[0, 1]] - 5.0).abs() < 1e-5);
    let p = sigmoid_probabilities(logits.view());
    assert!((p[[0, 0]] - 1.0 / (1.0 + 5f32.exp())).abs() < 1e-7);
    assert!((p[[0, 0]] + p[[0, 1]] - 1.0).abs() < 1e-6);
    let wide = Array2::<f32>::ones((1, 3));
    assert!(siglip_logits(images.view(), wide.view(), 0.0, 0.0).is_err());
}

#[test]
fn reference_rejects_bad_inputs() {
    let f = load();
    let model = SiglipReference::new(&f.config, &f.weights).unwrap();
    assert!(model
        .text_forward(&[vec![3u32; 17]], TextAttention::Unmasked)
        .is_err());
    assert!(model
        .text_forward(&[vec![90u32]], TextAttention::Unmasked)
        .is_err());
    assert!(model
        .text_forward(&[Vec::<u32>::new()], TextAttention::Unmasked)
        .is_err());
    assert!(model
        .text_forward(&[vec![3u32; 4]], TextAttention::KeyLengths(&[1, 2]))
        .is_err());
    let wrong = Array4::<f32>::ones((1, 3, 8, 8));
    assert!(model.vision_forward(wrong.view()).is_err());
    // Weights of another config are caught before any forward.
    let mut other = f.config.clone();
    other.text.num_hidden_layers = 3;
    assert!(SiglipReference::new(&other, &f.weights).is_err());
}

#[test]
fn tokenizer_ids_equal_hf() {
    let f = load();
    let texts: Vec<String> =
        serde_json::from_str(&std::fs::read_to_string(fixture("texts.json")).unwrap()).unwrap();
    let tok =
        SiglipTokenizer::from_dir(fixture(""), f.config.text.max_position_embeddings).unwrap();
    assert_eq!(tok.pad_id(), 1);
    let ours = tok.encode_batch(&texts).unwrap();
    assert_eq!(ours.ids, input_ids(&f), "ids differ from SiglipTokenizer's");
    let hf_lengths: Vec<usize> = f
        .inputs
        .i64_rows("attention_mask")
        .iter()
        .map(|m| m.iter().filter(|&&x| x != 0).count())
        .collect();
    assert_eq!(ours.lengths, hf_lengths);
    // Untruncated, SiglipTokenizer gives texts 2, 3 and 5 22, 21 and 46 tokens: more than the 16-token context.
    assert_eq!(ours.truncated, [false, false, true, true, false, true]);
}

#[test]
fn tokenizer_pads_on_the_configured_side() {
    let dir = std::env::temp_dir().join(format!("flashclip-siglip-left-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(fixture("tokenizer.json"), dir.join("tokenizer.json")).unwrap();
    let config =
        r#"{"tokenizer_class": "SiglipTokenizer", "pad_token": "</s>", "padding_side": "left"}"#;
    std::fs::write(dir.join("tokenizer_config.json"), config).unwrap();
    let left = SiglipTokenizer::from_dir(&dir, 16).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    let right = SiglipTokenizer::from_dir(fixture(""), 16).unwrap();
    let (l, r) = (
        left.encode_batch(&["a photo of a cat"]).unwrap(),
        right.encode_batch(&["a photo of a cat"]).unwrap(),
    );
    let n = r.lengths[0];
    assert_eq!(l.lengths, r.lengths);
    assert_eq!(l.ids[0][16 - n..], r.ids[0][..n]);
    assert!(l.ids[0][..16 - n].iter().all(|&id| id == 1));
}

#[test]
fn tokenizer_explains_a_sentencepiece_only_directory() {
    let dir = std::env::temp_dir().join(format!("flashclip-siglip-spm-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(fixture("spiece.model"), dir.join("spiece.model")).unwrap();
    let err = SiglipTokenizer::from_dir(&dir, 16).unwrap_err();
    let message = err.to_string();
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(matches!(
        err,
        SiglipTokenizerError::SentencePieceOnly { .. }
    ));
    assert!(
        message.contains("T5Converter") && message.contains("tokenizer.json"),
        "{message}"
    );
    assert!(message.contains(&dir.display().to_string()), "{message}");
}

#[test]
fn preprocessing_matches_pillow_siglip_processor() {
    let expected = Tensors::open(fixture("preprocessed.safetensors"));
    let image = image::open(
        PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| ".".into()))
            .join("tests/fixtures/openai/franz-kafka.pil-decoded.webp"),
    )
    .unwrap();
    let config = serde_json::json!({"size": {"height": 48, "width": 48},
        "image_mean": [0.4, 0.45, 0.5], "image_std": [0.25, 0.3, 0.35], "resample": 3});
    for (key, pre) in [
        ("kafka_64", Preprocessor::siglip(64)),
        ("kafka_48", preprocessor_from_value(&config).unwrap()),
    ] {
        assert_eq!(pre.geometry(), Geometry::Square);
        let ours = pre.preprocess_image(&image);
        let n = pre.image_size() as usize;
        let ours = ArrayD::from_shape_vec(IxDyn(&[3, n, n]), ours).unwrap();
        // Pillow's 8-bit resize reproduced exactly; the float steps round the same way here (0 error measured).
        check(key, ours.view(), expected.f32(key).view(), 1e-7);
    }
    let bad = serde_json::json!({"size": {"height": 48, "width": 64}});
    assert!(preprocessor_from_value(&bad).is_err());
    let bilinear = serde_json::json!({"resample": 2});
    assert!(preprocessor_from_value(&bilinear).is_err());
}

#[test]
fn a_model_directory_opens_as_siglip_behind_the_embedder() {
    let f = load();
    let (config, checkpoint) = open_model_dir(fixture("")).unwrap();
    assert_eq!(config.family(), Family::Siglip);
    assert_eq!(config.context_length(), 16);
    assert_eq!(config.projection_dim(), 144);
    let texts: Vec<String> =
        serde_json::from_slice(&std::fs::read(fixture("texts.json")).unwrap()).unwrap();
    let (tokenizer, _) = AnyTokenizer::for_model_dir(fixture(""), &config).unwrap();
    let ids = tokenizer
        .encode_batch(&texts, config.context_length())
        .unwrap();
    assert_eq!(ids, input_ids(&f), "ids differ from SiglipTokenizer's");
    let mut embedder = backend::load(Device::Cpu, DType::F32, &config, &checkpoint, 8).unwrap();
    let pixels = f.inputs.f32("pixel_values");
    let image = embedder.embed_images(pixels.as_slice().unwrap()).unwrap();
    check(
        "Embedder image_embeds",
        image.view().into_dyn(),
        f.expected.f32("image_embeds").view(),
        REL_TOL,
    );
    let text = embedder.embed_texts(&ids).unwrap();
    check(
        "Embedder text_embeds",
        text.view().into_dyn(),
        f.expected.f32("text_embeds").view(),
        REL_TOL,
    );
    // Zero-shot is HF's sigmoid of its logits, per image and label.
    let rule = embedder.zero_shot();
    assert!(matches!(rule, ZeroShot::Sigmoid { .. }), "{rule:?}");
    let normalize = |rows: &Array2<f32>| -> Vec<Vec<f32>> {
        rows.rows()
            .into_iter()
            .map(|r| {
                let n = r.dot(&r).sqrt();
                r.iter().map(|x| x / n).collect()
            })
            .collect()
    };
    let (images, texts) = (normalize(&image), normalize(&text));
    let probs = f.expected.f32("probs");
    for (i, image) in images.iter().enumerate() {
        let p = rule.probabilities(image, texts.iter().map(Vec::as_slice));
        for (j, p) in p.iter().enumerate() {
            let want = f64::from(probs[[i, j]]);
            assert!(
                (p - want).abs() < 1e-5,
                "image {i} label {j}: {p} vs {want}"
            );
        }
    }
}
