//! The `flashclip` binary on a SigLIP model directory (the tiny fixture), without a GPU: embed on the CPU
//! reference (texts padded to the context by the directory's tokenizer, compared with Hugging Face's embeddings;
//! images through SigLIP's square resize and the directory's preprocessor_config.json), zero-shot as a sigmoid per
//! label, FLOP counts of its config and presets, and unknown model types naming siglip.

mod embed_common;

use embed_common::*;
use flashclip_model::preprocess::Preprocessor;
use flashclip_model::siglip::{SiglipReference, SiglipWeights};
use ndarray::ArrayView4;
use safetensors::SafeTensors;

fn siglip_tiny() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../flashclip-model/tests/fixtures/tiny-siglip")
}

fn image() -> PathBuf {
    siglip_tiny().join("../openai/franz-kafka.jpg")
}

/// A tensor of the fixture's expected.safetensors as f32 values.
fn expected(name: &str) -> (Vec<usize>, Vec<f32>) {
    let bytes = std::fs::read(siglip_tiny().join("expected.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let t = st.tensor(name).unwrap();
    let values = t
        .data()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    (t.shape().to_vec(), values)
}

fn normalized(v: &[f32]) -> Vec<f32> {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.iter().map(|x| x / norm).collect()
}

fn max_difference(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// The image's normalized embedding straight from the CPU reference, preprocessed by `pre`.
fn reference_image_embedding(pre: &Preprocessor) -> Vec<f32> {
    let (config, weights) = SiglipWeights::load_dir(siglip_tiny()).unwrap();
    let pixels = pre.load_and_preprocess(image()).unwrap();
    let s = config.vision.image_size;
    let view = ArrayView4::from_shape((1, 3, s, s), &pixels).unwrap();
    let reference = SiglipReference::new(&config, &weights).unwrap();
    let embeds = reference.vision_forward(view).unwrap().image_embeds;
    normalized(embeds.as_slice().unwrap())
}

/// Embeds the image and `texts` on the CPU from `model`; returns the normalized rows in input order.
fn embed_rows(model: &Path, texts: &[&str]) -> Vec<Vec<f32>> {
    let out_dir = TempDir::new().unwrap();
    let out = out_dir.path().join("out");
    let mut args: Vec<&str> = vec!["--out-dtype", "f32", "--batch", "4"];
    let image = image();
    args.extend(["--images", image.to_str().unwrap(), "--texts"]);
    args.extend(texts);
    args.extend(["--out", out.to_str().unwrap()]);
    assert_ok(&embed(model, &args));
    let (rows, embeds) = read_out(&out);
    assert_eq!(rows.len(), texts.len() + 1);
    (0..=texts.len() as i64)
        .map(|i| embeds[&i].clone())
        .collect()
}

#[test]
fn embed_matches_hf_texts_and_siglip_preprocessing() {
    let texts: Vec<String> =
        serde_json::from_slice(&std::fs::read(siglip_tiny().join("texts.json")).unwrap()).unwrap();
    let texts: Vec<&str> = texts.iter().map(String::as_str).collect();
    let rows = embed_rows(&siglip_tiny(), &texts);
    // Texts: HF's text_embeds of the ids padded to the context, unmasked (as SigLIP is trained).
    let (shape, want) = expected("text_embeds");
    for (i, want) in want.chunks(shape[1]).enumerate() {
        let worst = max_difference(&rows[i + 1], &normalized(want));
        assert!(
            worst < 1e-5,
            "text {i} ({:?}): max difference {worst}",
            texts[i]
        );
    }
    // The image: SigLIP's square resize with mean/std 0.5 (no preprocessor_config.json in the fixture).
    let want = reference_image_embedding(&Preprocessor::siglip(16));
    let worst = max_difference(&rows[0], &want);
    assert!(worst < 1e-5, "image: max difference {worst}");
    // CLIP's crop and normalization would give another embedding: the family's transform was used.
    let clip = reference_image_embedding(&Preprocessor::new(16));
    assert!(max_difference(&rows[0], &clip) > 1e-3);
}

#[test]
fn embed_takes_mean_and_std_from_preprocessor_config() {
    let dir = TempDir::new().unwrap();
    for entry in std::fs::read_dir(siglip_tiny()).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, dir.path().join(path.file_name().unwrap())).unwrap();
    }
    std::fs::write(
        dir.path().join("preprocessor_config.json"),
        r#"{"do_resize": true, "size": {"height": 16, "width": 16}, "resample": 3,
            "image_mean": [0.4, 0.45, 0.5], "image_std": [0.25, 0.3, 0.35]}"#,
    )
    .unwrap();
    let rows = embed_rows(dir.path(), &["a photo of a cat"]);
    let pre = Preprocessor::siglip(16).with_mean_std([0.4, 0.45, 0.5], [0.25, 0.3, 0.35]);
    let worst = max_difference(&rows[0], &reference_image_embedding(&pre));
    assert!(worst < 1e-5, "image: max difference {worst}");
    let default = reference_image_embedding(&Preprocessor::siglip(16));
    assert!(max_difference(&rows[0], &default) > 1e-3);

    std::fs::write(
        dir.path().join("preprocessor_config.json"),
        r#"{"size": {"height": 32, "width": 32}}"#,
    )
    .unwrap();
    let out = dir.path().join("out2");
    let err = assert_fails(&embed(
        dir.path(),
        &["--texts", "a", "--out", out.to_str().unwrap()],
    ));
    assert!(err.contains("preprocessor_config.json"), "{err}");
}

#[test]
fn zero_shot_gives_a_sigmoid_per_label() {
    let labels = [
        "a photo of a cat",
        "東京の夜景 and a cat",
        "Ünïcödé café naïve résumé",
    ];
    let rows = embed_rows(&siglip_tiny(), &labels);
    let scale = expected("logit_scale").1[0].exp();
    let bias = expected("logit_bias").1[0];
    let joined = labels.join(",");
    let dir = siglip_tiny();
    let image = image();
    let out = flashclip(&[
        "zero-shot",
        "--device",
        "cpu",
        "--model",
        dir.to_str().unwrap(),
        "--image",
        image.to_str().unwrap(),
        "--labels",
        &joined,
        "--template",
        "{}",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let cosines: Vec<f32> = rows[1..]
        .iter()
        .map(|text| rows[0].iter().zip(text).map(|(a, b)| a * b).sum())
        .collect();
    let softmax_total: f32 = cosines.iter().map(|c| (scale * c).exp()).sum();
    let mut softmax_gap = 0.0f32;
    for (label, &cos) in labels.iter().zip(&cosines) {
        let want = 1.0 / (1.0 + (-(scale * cos + bias)).exp());
        let got: f32 = stdout
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{label}\t")))
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("no line for {label:?} in:\n{stdout}"));
        assert!(
            (got - want).abs() < 1e-4,
            "{label}: {got} vs sigmoid {want}"
        );
        softmax_gap = softmax_gap.max((got - (scale * cos).exp() / softmax_total).abs());
    }
    // Not CLIP's softmax over the labels.
    assert!(softmax_gap > 0.05, "within {softmax_gap} of a softmax");
}

#[test]
fn flops_reads_siglip_configs_and_presets() {
    let config = siglip_tiny().join("config.json");
    flops_total(&[
        "--config",
        config.to_str().unwrap(),
        "--batch",
        "1",
        "--text-len",
        "16",
    ]);
    let total = flops_total(&[
        "--preset",
        "siglip-so400m-patch14-384",
        "--batch",
        "1",
        "--text-len",
        "64",
    ]);
    // so400m/14 at 384 px: 729 tokens through 27 layers of width 1152 is about 0.64 TFLOP an image (the pooling
    // head adds under 1%); a 64-token text about 0.05.
    assert!((0.65..0.8).contains(&total), "{total} TFLOPs");
}

#[test]
fn unknown_model_types_name_siglip() {
    let dir = TempDir::new().unwrap();
    std::fs::copy(
        siglip_tiny().join("model.safetensors"),
        dir.path().join("model.safetensors"),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("config.json"),
        r#"{"model_type": "siglip2_unknown"}"#,
    )
    .unwrap();
    let out = dir.path().join("out");
    let err = assert_fails(&embed(
        dir.path(),
        &["--texts", "a", "--out", out.to_str().unwrap()],
    ));
    assert!(
        err.contains("siglip2_unknown") && err.contains("clip, chinese_clip, siglip"),
        "{err}"
    );
}
