//! The CPU reference forward against Hugging Face's own outputs on the tiny fixture
//! (tests/fixtures/tiny, made by scripts/make_hf_fixture.py).

mod common;

use std::path::PathBuf;

use flashclip_model::config::{Activation, ClipConfig};
use flashclip_model::reference::{
    activation, clip_logits, erf, l2_normalize, ClipReference, ReferenceError,
};
use flashclip_model::text::pooling_position;
use flashclip_model::ClipWeights;
use ndarray::{s, Array4};

use common::{check, errors, fixture_dir, input_texts, Tensors};

fn fixture(name: &str) -> PathBuf {
    fixture_dir("tiny").join(name)
}

struct Fixture {
    config: ClipConfig,
    weights: ClipWeights,
    inputs: Tensors,
    expected: Tensors,
}

fn load() -> Fixture {
    let config = ClipConfig::from_hf_json_file(fixture("config.json")).unwrap();
    let weights = ClipWeights::load(fixture("model.safetensors"), &config).unwrap();
    Fixture {
        config,
        weights,
        inputs: Tensors::open(fixture("inputs.safetensors")),
        expected: Tensors::open(fixture("expected.safetensors")),
    }
}

const REL_TOL: f32 = 1e-5;

#[test]
fn vision_tower_matches_hf() {
    let f = load();
    let model = ClipReference::new(&f.config, &f.weights).unwrap();
    let pixels = f.inputs.f32("pixel_values").into_dimensionality().unwrap();
    let out = model.vision_forward(pixels.view(), true).unwrap();

    assert_eq!(
        out.hidden_states.len(),
        f.config.vision.num_hidden_layers + 1
    );
    for (i, state) in out.hidden_states.iter().enumerate() {
        let key = format!("vision.hidden_states.{i}");
        check(
            &key,
            state.view().into_dyn(),
            f.expected.f32(&key).view(),
            REL_TOL,
        );
    }
    let e = &f.expected;
    check(
        "vision.last_hidden_state",
        out.last_hidden_state.view().into_dyn(),
        e.f32("vision.last_hidden_state").view(),
        REL_TOL,
    );
    check(
        "vision.pooler_output",
        out.pooler_output.view().into_dyn(),
        e.f32("vision.pooler_output").view(),
        REL_TOL,
    );
    check(
        "image_embeds",
        out.image_embeds.view().into_dyn(),
        e.f32("image_embeds").view(),
        REL_TOL,
    );
    check(
        "image_embeds_normalized",
        l2_normalize(out.image_embeds.view()).view().into_dyn(),
        e.f32("image_embeds_normalized").view(),
        REL_TOL,
    );
    // The fixture's random init makes the towers differ per image.
    assert!(
        (&out.image_embeds.row(0) - &out.image_embeds.row(1))
            .mapv(f32::abs)
            .sum()
            > 1.0
    );
}

#[test]
fn text_tower_matches_hf_at_real_positions() {
    let f = load();
    let model = ClipReference::new(&f.config, &f.weights).unwrap();
    let ids = input_texts(&f.inputs);
    assert_eq!(
        ids.iter().map(Vec::len).collect::<Vec<_>>(),
        vec![5, 9, 16],
        "fixture texts have mixed lengths"
    );
    let out = model.text_forward(&ids, true).unwrap();
    assert_eq!(out.lengths, vec![5, 9, 16]);
    // eos (999) is the last real token of every text.
    assert_eq!(out.pooling_positions, vec![4, 8, 15]);

    let e = &f.expected;
    let mut keys: Vec<String> = (0..=f.config.text.num_hidden_layers)
        .map(|i| format!("text.hidden_states.{i}"))
        .collect();
    keys.push("text.last_hidden_state".into());
    for (k, key) in keys.iter().enumerate() {
        let ours = if k < out.hidden_states.len() {
            &out.hidden_states[k]
        } else {
            &out.last_hidden_state
        };
        let theirs = e.f32(key);
        // HF's rows past a text's length see padding; compare real positions only.
        for (b, &len) in out.lengths.iter().enumerate() {
            check(
                &format!("{key}[{b}, ..{len}]"),
                ours.slice(s![b, ..len, ..]).into_dyn(),
                theirs.slice(s![b, ..len, ..]).into_dyn(),
                REL_TOL,
            );
            assert!(ours.slice(s![b, len.., ..]).iter().all(|&v| v == 0.0));
        }
    }
    check(
        "text.pooler_output",
        out.pooler_output.view().into_dyn(),
        e.f32("text.pooler_output").view(),
        REL_TOL,
    );
    check(
        "text_embeds",
        out.text_embeds.view().into_dyn(),
        e.f32("text_embeds").view(),
        REL_TOL,
    );
    check(
        "text_embeds_normalized",
        l2_normalize(out.text_embeds.view()).view().into_dyn(),
        e.f32("text_embeds_normalized").view(),
        REL_TOL,
    );
}

#[test]
fn logits_match_hf() {
    let f = load();
    assert_eq!(
        f.weights.logit_scale, 3.0,
        "logit_scale is read from the checkpoint"
    );
    let model = ClipReference::new(&f.config, &f.weights).unwrap();
    let pixels: Array4<f32> = f.inputs.f32("pixel_values").into_dimensionality().unwrap();
    let image = model.vision_forward(pixels.view(), false).unwrap();
    assert!(image.hidden_states.is_empty());
    let text = model.text_forward(&input_texts(&f.inputs), false).unwrap();
    let logits = model
        .logits_per_image(image.image_embeds.view(), text.text_embeds.view())
        .unwrap();
    let expected = f.expected.f32("logits_per_image");
    println!("logits_per_image ours:\n{logits:.5}\nHF:\n{expected:.5}");
    check(
        "logits_per_image",
        logits.view().into_dyn(),
        expected.view(),
        REL_TOL,
    );
    assert_eq!(f.expected.f32("logit_scale").iter().next(), Some(&3.0));
}

#[test]
fn padding_after_eos_does_not_change_real_positions() {
    let f = load();
    let model = ClipReference::new(&f.config, &f.weights).unwrap();
    let ids = input_texts(&f.inputs);
    let plain = model.text_forward(&ids, true).unwrap();
    let pad = f.config.text.pad_token_id;
    let padded: Vec<Vec<u32>> = ids
        .iter()
        .map(|t| {
            let mut t = t.clone();
            t.resize(16, pad);
            t
        })
        .collect();
    let out = model.text_forward(&padded, true).unwrap();
    assert_eq!(out.pooling_positions, plain.pooling_positions);
    assert_eq!(out.text_embeds, plain.text_embeds);
    for (b, &len) in plain.lengths.iter().enumerate() {
        for k in 0..plain.hidden_states.len() {
            assert_eq!(
                out.hidden_states[k].slice(s![b, ..len, ..]),
                plain.hidden_states[k].slice(s![b, ..len, ..]),
            );
        }
    }
    // Batch composition doesn't matter either.
    let alone = model.text_forward(&ids[1..2], false).unwrap();
    assert_eq!(alone.text_embeds.row(0), plain.text_embeds.row(1));
}

/// HF's own half-precision error (fixture's expected_fp16/bf16, computed on CPU), for
/// context: our f32 error must be far below it.
#[test]
fn reference_error_is_far_below_hf_half_precision_error() {
    let f = load();
    let model = ClipReference::new(&f.config, &f.weights).unwrap();
    let pixels: Array4<f32> = f.inputs.f32("pixel_values").into_dimensionality().unwrap();
    let ours = model.vision_forward(pixels.view(), false).unwrap();
    let ours_text = model.text_forward(&input_texts(&f.inputs), false).unwrap();
    let (_, our_img) = errors(
        ours.image_embeds.view().into_dyn(),
        f.expected.f32("image_embeds").view(),
    );
    let (_, our_txt) = errors(
        ours_text.text_embeds.view().into_dyn(),
        f.expected.f32("text_embeds").view(),
    );
    for file in ["expected_fp16.safetensors", "expected_bf16.safetensors"] {
        let half = Tensors::open(fixture(file));
        let (_, img) = errors(
            half.f32("image_embeds").view(),
            f.expected.f32("image_embeds").view(),
        );
        let (_, txt) = errors(
            half.f32("text_embeds").view(),
            f.expected.f32("text_embeds").view(),
        );
        println!(
            "{file}: HF relative error image {img:.3e} text {txt:.3e}; ours (f32) image {our_img:.3e} text {our_txt:.3e}"
        );
        assert!(
            img > 1e-4 && txt > 1e-4,
            "half outputs should differ from f32"
        );
        assert!(our_img < img / 50.0 && our_txt < txt / 50.0);
    }
}

#[test]
fn input_errors_are_reported() {
    let f = load();
    let model = ClipReference::new(&f.config, &f.weights).unwrap();
    let bad = Array4::<f32>::zeros((1, 3, 16, 16));
    let err = model.vision_forward(bad.view(), false).unwrap_err();
    assert!(
        matches!(err, ReferenceError::PixelShape { size: 32, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("[1, 3, 16, 16]"), "{err}");

    let err = model
        .text_forward(&[vec![998, 5, 999], vec![]], false)
        .unwrap_err();
    assert!(
        matches!(err, ReferenceError::EmptyText { index: 1 }),
        "{err}"
    );
    let err = model
        .text_forward(&[vec![998, 1000, 999]], false)
        .unwrap_err();
    assert!(
        matches!(
            err,
            ReferenceError::TokenOutOfRange {
                index: 0,
                position: 1,
                id: 1000,
                vocab_size: 1000
            }
        ),
        "{err}"
    );
    let err = model.text_forward(&[vec![1u32; 17]], false).unwrap_err();
    assert!(
        matches!(
            err,
            ReferenceError::TextTooLong {
                len: 17,
                max: 16,
                ..
            }
        ),
        "{err}"
    );

    // Empty batches are fine.
    let empty: Vec<Vec<u32>> = Vec::new();
    let out = model.text_forward(&empty, false).unwrap();
    assert_eq!(out.text_embeds.shape(), &[0, 64]);
}

#[test]
fn mismatched_weights_are_rejected() {
    let f = load();
    let mut other = f.config.clone();
    other.vision.num_hidden_layers = 3;
    let err = ClipReference::new(&other, &f.weights).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("vision_model.encoder.layers.2.self_attn.qkv_proj.weight"),
        "{msg}"
    );
}

#[test]
fn pooling_follows_hf_rules() {
    // New-style configs: first eos.
    assert_eq!(pooling_position(&[49406, 320, 49407, 49407], 49407), 2);
    // No eos at all: position 0 (HF's argmax of an all-false mask).
    assert_eq!(pooling_position(&[49406, 320, 1], 49407), 0);
    // Legacy eos_token_id == 2: the largest id, first on ties.
    assert_eq!(pooling_position(&[49406, 320, 49407, 49407, 0], 2), 2);
    assert_eq!(pooling_position(&[5, 7, 7], 2), 1);
}

#[test]
fn activations_match_their_formulas() {
    // erf against values from a high-precision table.
    let table = [
        (0.0, 0.0),
        (0.1, 0.112_462_916_018_284_9),
        (0.5, 0.520_499_877_813_046_5),
        (1.0, 0.842_700_792_949_714_9),
        (2.0, 0.995_322_265_018_952_7),
        (2.5, 0.999_593_047_982_555),
        (3.0, 0.999_977_909_503_001_4),
        (4.0, 0.999_999_984_582_742_1),
    ];
    for (x, want) in table {
        assert!(
            (erf(x) - want).abs() < 1e-14,
            "erf({x}) = {} want {want}",
            erf(x)
        );
        assert!((erf(-x) + want).abs() < 1e-14);
    }
    // GELU(1) = 0.5 (1 + erf(1/√2)) = 0.841344746...
    assert!((activation(Activation::Gelu, 1.0) - 0.841_344_7).abs() < 1e-6);
    assert!((activation(Activation::Gelu, -3.0) - -0.004_049_71).abs() < 1e-7);
    // Tanh GELU(1) = 0.841191990...
    assert!((activation(Activation::GeluTanh, 1.0) - 0.841_192).abs() < 1e-6);
    // QuickGELU(1) = 1 / (1 + e^-1.702) = 0.845796...
    assert!((activation(Activation::QuickGelu, 1.0) - 0.845_796_6).abs() < 1e-6);
    assert_eq!(activation(Activation::QuickGelu, -100.0), -0.0);
    assert_eq!(activation(Activation::Gelu, 0.0), 0.0);
}

#[test]
fn logits_helpers() {
    let a = ndarray::array![[3.0f32, 4.0], [0.0, 0.0]];
    let n = l2_normalize(a.view());
    assert_eq!(n, ndarray::array![[0.6f32, 0.8], [0.0, 0.0]]);
    let t = ndarray::array![[1.0f32, 0.0], [0.0, 2.0]];
    let logits = clip_logits(a.view(), t.view(), 2.0f32.ln()).unwrap();
    assert!((logits[[0, 0]] - 1.2).abs() < 1e-6 && (logits[[0, 1]] - 1.6).abs() < 1e-6);
    let wide = ndarray::Array2::<f32>::zeros((1, 3));
    assert!(matches!(
        clip_logits(a.view(), wide.view(), 0.0),
        Err(ReferenceError::EmbedDimMismatch { image: 2, text: 3 })
    ));
}

/// A full ViT-B/32 forward on random weights; run with
/// `cargo test --release -p flashclip-model --test reference -- --ignored --nocapture`.
#[test]
#[ignore = "slow in debug builds; a release-mode timing check"]
fn vit_b32_forward_timing() {
    use rand::{Rng, SeedableRng};
    let config = ClipConfig::preset("ViT-B-32").unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let weights = ClipWeights::from_fn(&config, |_, shape| {
        let n: usize = shape.iter().product();
        (0..n).map(|_| rng.random_range(-0.05f32..0.05)).collect()
    })
    .unwrap();
    let model = ClipReference::new(&config, &weights).unwrap();
    let pixels = Array4::<f32>::from_shape_fn((2, 3, 224, 224), |(b, c, y, x)| {
        ((b + c * 7 + y * 3 + x) % 17) as f32 / 17.0 - 0.5
    });
    let ids: Vec<Vec<u32>> = vec![
        (0..77).map(|i| 49406 - i as u32).collect(),
        vec![49406, 320, 49407],
    ];
    let start = std::time::Instant::now();
    let image = model.vision_forward(pixels.view(), false).unwrap();
    let text = model.text_forward(&ids, false).unwrap();
    let elapsed = start.elapsed();
    println!("ViT-B/32: 2 images + 2 texts in {elapsed:?}");
    assert_eq!(image.image_embeds.shape(), &[2, 512]);
    assert_eq!(text.text_embeds.shape(), &[2, 512]);
    assert!(image.image_embeds.iter().all(|v| v.is_finite()));
}
