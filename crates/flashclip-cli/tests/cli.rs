//! The `flashclip` binary on things that need no GPU: FLOP counts and error paths.

use std::process::{Command, Output};

fn flashclip(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_flashclip"))
        .args(args)
        .output()
        .expect("run flashclip")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A failure with a message, not a panic (Rust panics exit with 101) and not a success.
fn assert_clean_failure(out: &Output) -> String {
    let stderr = text(&out.stderr);
    let code = out.status.code();
    assert!(
        code.is_some_and(|c| c != 0 && c != 101),
        "exit code {code:?}, stderr:\n{stderr}"
    );
    assert!(!stderr.contains("panicked"), "panicked:\n{stderr}");
    stderr
}

#[test]
fn flops_vit_l_14_336_is_about_50_tflops() {
    let out = flashclip(&[
        "flops",
        "--preset",
        "ViT-L-14-336",
        "--batch",
        "128",
        "--text-len",
        "64",
    ]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "stderr:\n{}", text(&out.stderr));
    let total: f64 = stdout
        .lines()
        .find_map(|l| l.strip_prefix("every-op total:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no `every-op total:` line in:\n{stdout}"));
    assert!((total - 50.0).abs() <= 0.03 * 50.0, "total {total} TFLOPs");
    // The module's table is printed too, in both conventions.
    assert!(
        stdout.contains("every op [TFLOP]") && stdout.contains("2/MAC [TFLOP]"),
        "{stdout}"
    );
}

#[test]
fn flops_all_prints_the_seed_table() {
    let out = flashclip(&["flops", "--all"]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "stderr:\n{}", text(&out.stderr));
    for name in ["ViT-L/14-336", "ViT-H/14", "EVA02-CLIP-E/14"] {
        assert!(
            stdout.contains(&format!("| {name}")),
            "{name} missing:\n{stdout}"
        );
    }
}

#[test]
fn flops_unknown_preset_lists_the_presets() {
    let out = flashclip(&["flops", "--preset", "nope"]);
    let stderr = assert_clean_failure(&out);
    assert!(stderr.contains("nope"), "{stderr}");
    assert!(
        stderr.contains("ViT-L-14-336") && stderr.contains("ViT-B-32"),
        "{stderr}"
    );
}

#[test]
fn flops_rejects_text_lengths_outside_the_context() {
    // 0 is refused by the argument parser already.
    for len in ["78", "1000"] {
        let out = flashclip(&["flops", "--preset", "ViT-B-32", "--text-len", len]);
        let stderr = assert_clean_failure(&out);
        assert!(
            stderr.contains(&format!(
                "text length {len} must be between 1 and the context length 77"
            )),
            "{stderr}"
        );
    }
}

#[test]
fn embed_missing_model_fails_clearly() {
    let tmp = tempfile::TempDir::new().unwrap();
    let out_dir = tmp.path().join("out");
    let out = flashclip(&[
        "embed",
        "--model",
        "/nonexistent",
        "--texts",
        "a cat",
        "--out",
        out_dir.to_str().unwrap(),
    ]);
    let stderr = assert_clean_failure(&out);
    assert!(
        stderr.contains("/nonexistent") && stderr.contains("does not exist"),
        "{stderr}"
    );
}

#[test]
fn zero_shot_missing_model_fails_clearly() {
    let out = flashclip(&[
        "zero-shot",
        "--model",
        "/nonexistent",
        "--image",
        "x.jpg",
        "--labels",
        "a,b",
    ]);
    let stderr = assert_clean_failure(&out);
    assert!(stderr.contains("does not exist"), "{stderr}");
}

#[test]
fn bench_without_a_visible_device_fails_clearly() {
    // Hiding every device makes this the no-GPU path on any machine.
    let out = Command::new(env!("CARGO_BIN_EXE_flashclip"))
        .args(["bench", "--batch", "1", "--iters", "1", "--warmup", "0"])
        .env("CUDA_VISIBLE_DEVICES", "")
        .output()
        .expect("run flashclip");
    let stderr = assert_clean_failure(&out);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr.contains("no CUDA device"), "{stderr}");
}

#[test]
fn bench_attention_choice_is_checked() {
    let out = flashclip(&["bench", "--attention", "v9"]);
    let stderr = assert_clean_failure(&out);
    assert!(
        stderr.contains("fastest") && stderr.contains("v4"),
        "{stderr}"
    );
    // A valid choice gets as far as looking for the device.
    let out = Command::new(env!("CARGO_BIN_EXE_flashclip"))
        .args([
            "bench",
            "--attention",
            "v3",
            "--iters",
            "1",
            "--warmup",
            "0",
        ])
        .env("CUDA_VISIBLE_DEVICES", "")
        .output()
        .expect("run flashclip");
    let stderr = assert_clean_failure(&out);
    assert!(stderr.contains("no CUDA device"), "{stderr}");
}

/// The tiny Hugging Face checkpoint of flashclip-model's tests.
fn tiny_model() -> String {
    format!(
        "{}/../flashclip-model/tests/fixtures/tiny",
        env!("CARGO_MANIFEST_DIR")
    )
}

#[test]
fn embed_loads_a_model_then_needs_a_device() {
    let out = Command::new(env!("CARGO_BIN_EXE_flashclip"))
        .args([
            "embed",
            "--model",
            &tiny_model(),
            "--images",
            concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../flashclip-model/tests/fixtures/openai/franz-kafka.jpg"
            ),
            "--out",
        ])
        .arg(tempfile::TempDir::new().unwrap().path().join("out"))
        .env("CUDA_VISIBLE_DEVICES", "")
        .output()
        .expect("run flashclip");
    let stderr = assert_clean_failure(&out);
    assert!(stderr.contains("no CUDA device"), "{stderr}");
}

#[test]
fn embed_rejects_a_tokenizer_that_does_not_fit_the_model() {
    // The tiny model has a 1000-token vocabulary and no tokenizer files: OpenAI's ids do not fit.
    let tmp = tempfile::TempDir::new().unwrap();
    let out_dir = tmp.path().join("out");
    let out = flashclip(&[
        "embed",
        "--model",
        &tiny_model(),
        "--texts",
        "a cat",
        "--out",
        out_dir.to_str().unwrap(),
    ]);
    let stderr = assert_clean_failure(&out);
    assert!(stderr.contains("vocabulary of 1000"), "{stderr}");
}
