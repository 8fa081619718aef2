//! The `flashclip` binary on a Chinese-CLIP model directory (the tiny fixture), without a GPU: embed on the CPU
//! reference (texts tokenized by the directory's WordPiece tokenizer, compared with Hugging Face's embeddings), FLOP
//! counts of its config and presets, and the refusals of the GPU subcommands and of unknown model types.

mod embed_common;

use embed_common::*;
use safetensors::SafeTensors;

fn cn_tiny() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../flashclip-model/tests/fixtures/tiny-chinese-clip")
}

/// HF's normalized text embeddings of the fixture's texts, and the texts.
fn expected_texts() -> (Vec<String>, Vec<Vec<f32>>) {
    let texts: serde_json::Value =
        serde_json::from_slice(&std::fs::read(cn_tiny().join("texts.json")).unwrap()).unwrap();
    let texts: Vec<String> = texts["texts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["text"].as_str().unwrap().to_string())
        .collect();
    let bytes = std::fs::read(cn_tiny().join("expected.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let t = st.tensor("text_embeds_normalized").unwrap();
    let values: Vec<f32> = t
        .data()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    let rows = values.chunks(t.shape()[1]).map(<[f32]>::to_vec).collect();
    (texts, rows)
}

#[test]
fn embed_tokenizes_and_embeds_like_hf() {
    let out_dir = TempDir::new().unwrap();
    let out = out_dir.path().join("out");
    let (texts, want) = expected_texts();
    let mut args: Vec<&str> = vec!["--out-dtype", "f32", "--texts"];
    args.extend(texts.iter().map(String::as_str));
    args.extend(["--out", out.to_str().unwrap()]);
    assert_ok(&embed(&cn_tiny(), &args));
    let (rows, embeds) = read_out(&out);
    assert_eq!(rows.len(), texts.len());
    for (i, want) in want.iter().enumerate() {
        let got = &embeds[&(i as i64)];
        let worst = got
            .iter()
            .zip(want)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        assert!(
            worst < 1e-5,
            "text {i} ({:?}): max difference {worst}",
            texts[i]
        );
    }
}

#[test]
fn flops_reads_chinese_clip_configs_and_presets() {
    let config = cn_tiny().join("config.json");
    flops_total(&[
        "--config",
        config.to_str().unwrap(),
        "--batch",
        "1",
        "--text-len",
        "52",
    ]);
    let total = flops_total(&[
        "--preset",
        "CN-CLIP-ViT-L-14-336",
        "--batch",
        "1",
        "--text-len",
        "52",
    ]);
    // ViT-L/14 at 336 px (577 tokens) is about 0.38 TFLOP an image; a 52-token BERT-base text about 0.009.
    assert!((0.35..0.43).contains(&total), "{total} TFLOPs");
}

#[test]
fn gpu_subcommands_refuse_cleanly_without_a_device() {
    let dir = cn_tiny();
    let dir = dir.to_str().unwrap();
    let image = dir.to_string() + "/../openai/franz-kafka.jpg";
    for args in [
        vec![
            "zero-shot",
            "--model",
            dir,
            "--image",
            &image,
            "--labels",
            "猫,狗",
        ],
        vec![
            "bench", "--model", dir, "--batch", "2", "--iters", "1", "--warmup", "0",
        ],
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_flashclip"))
            .args(&args)
            .env("CUDA_VISIBLE_DEVICES", "")
            .output()
            .unwrap();
        let err = assert_fails(&out);
        assert!(
            err.to_lowercase().contains("gpu") || err.contains("device"),
            "{args:?}: {err}"
        );
    }
}

#[test]
fn unknown_model_types_are_named() {
    let dir = TempDir::new().unwrap();
    std::fs::copy(
        cn_tiny().join("model.safetensors"),
        dir.path().join("model.safetensors"),
    )
    .unwrap();
    std::fs::write(dir.path().join("config.json"), r#"{"model_type": "blip"}"#).unwrap();
    let out = dir.path().join("out");
    let err = assert_fails(&embed(
        dir.path(),
        &["--texts", "a", "--out", out.to_str().unwrap()],
    ));
    assert!(
        err.contains("blip") && err.contains("chinese_clip") && err.contains("siglip"),
        "{err}"
    );
}
