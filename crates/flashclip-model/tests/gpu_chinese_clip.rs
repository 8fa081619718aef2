//! Chinese-CLIP on the GPU against Hugging Face's fp32 outputs on the tiny fixture (tests/fixtures/tiny-chinese-clip):
//! the projected embeddings must be at least as close to HF fp32 as HF's own fp16/bf16 forward is, with the
//! fixture's texts (Chinese, English, mixed; lengths 5 to 52) in one padded batch; padding must not change a
//! text's embedding (the attention masks padded keys). Skips with one line without a GPU.

mod common;

use std::path::{Path, PathBuf};

use flashclip::ops::attention::Version;
use flashclip::testing::gpu_or_skip;
use flashclip::{Element, Gpu};
use flashclip_model::chinese_clip::{ChineseClipConfig, ChineseClipModel};
use flashclip_model::{AttentionImpl, Checkpoint};
use half::{bf16, f16};

use common::{
    assert_bitwise_on_random_images, assert_embeddings, attention_sweep, bits, compare,
    exclusive_device, fixture_dir, fixture_inputs, shared_device,
};

fn tiny() -> PathBuf {
    fixture_dir("tiny-chinese-clip")
}

fn run<T: Element>(gpu: &Gpu, dir: &Path, attention: AttentionImpl, half_reference: Option<&str>) {
    let config = ChineseClipConfig::from_hf_json_file(dir.join("config.json")).unwrap();
    let checkpoint = Checkpoint::open(dir.join("model.safetensors")).unwrap();
    let expected = std::fs::read(dir.join("expected.safetensors")).unwrap();
    let (images, pixels, texts) = fixture_inputs(dir);

    let model = ChineseClipModel::<T>::load(gpu, &config, &checkpoint, attention).unwrap();
    let mut ws = model.workspace(gpu, images, texts.len()).unwrap();
    let image = model.encode_images(gpu, &mut ws, &pixels).unwrap();
    let text = model.encode_texts(gpu, &mut ws, &texts).unwrap();

    let dir_name = dir
        .file_name()
        .map_or(String::new(), |n| n.to_string_lossy().into_owned());
    let tag = format!("{dir_name} {} {attention:?}", T::DTYPE);
    let half = half_reference.map(|f| std::fs::read(dir.join(f)).unwrap());
    let n = config.projection_dim;
    for (what, got) in [("image_embeds", &image), ("text_embeds", &text)] {
        let got: Vec<f64> = got.iter().map(|&x| x as f64).collect();
        assert_embeddings(&tag, what, &got, &expected, half.as_deref(), n);
    }

    // Padding invariance: the short texts alone, padded to their longest and to the whole context, in reverse
    // order, give the embeddings of the mixed batch (to T's rounding: the GEMM shapes differ).
    let short: Vec<Vec<u32>> = texts
        .iter()
        .filter(|t| t.len() < 20)
        .rev()
        .cloned()
        .collect();
    let index: Vec<usize> = (0..texts.len())
        .filter(|&b| texts[b].len() < 20)
        .rev()
        .collect();
    let tol = if half.is_some() { 2e-2 } else { 1e-5 };
    for pad_to in [None, Some(model.context_length())] {
        model.upload_texts(gpu, &mut ws, &short, pad_to).unwrap();
        let shape = model.run_uploaded_texts(gpu, &mut ws).unwrap();
        let longest = short.iter().map(Vec::len).max().unwrap();
        assert_eq!(shape.len, pad_to.unwrap_or(longest));
        let padded = model.read_text_embeds(gpu, &ws, short.len()).unwrap();
        for (row, &b) in index.iter().enumerate() {
            let (cos, err) = compare(
                &padded
                    .row(row)
                    .iter()
                    .map(|&x| x as f64)
                    .collect::<Vec<_>>(),
                &text.row(b).iter().map(|&x| x as f64).collect::<Vec<_>>(),
                n,
            );
            assert!(
                cos > 1.0 - tol && err < tol * 10.0,
                "{tag} pad {pad_to:?} text {b}: cos {cos}, err {err}"
            );
        }
    }
}

#[test]
fn gpu_tiny_chinese_clip_f16() {
    let _device = shared_device();
    let Some(gpu) = gpu_or_skip("gpu_tiny_chinese_clip_f16") else {
        return;
    };
    let versions = [Version::V4, Version::V3, Version::V2, Version::V1];
    let others = [AttentionImpl::Fastest, AttentionImpl::Materialized];
    for attention in attention_sweep(&gpu, &versions, &others) {
        run::<f16>(&gpu, &tiny(), attention, Some("expected_fp16.safetensors"));
    }
}

#[test]
fn gpu_tiny_chinese_clip_bf16() {
    let _device = shared_device();
    let Some(gpu) = gpu_or_skip("gpu_tiny_chinese_clip_bf16") else {
        return;
    };
    let versions = [Version::V4, Version::V3, Version::V2];
    for attention in attention_sweep(&gpu, &versions, &[AttentionImpl::Fastest]) {
        run::<bf16>(&gpu, &tiny(), attention, Some("expected_bf16.safetensors"));
    }
}

#[test]
fn gpu_tiny_chinese_clip_f32() {
    let _device = shared_device();
    let Some(gpu) = gpu_or_skip("gpu_tiny_chinese_clip_f32") else {
        return;
    };
    run::<f32>(&gpu, &tiny(), AttentionImpl::Flash(Version::V1), None);
    run::<f32>(&gpu, &tiny(), AttentionImpl::Materialized, None);
}

/// Full-size parity: fixtures made on a GPU machine by `scripts/make_hf_fixture_chinese_clip.py PRESET DIR --half`,
/// listed in FLASHCLIP_CN_CLIP_PARITY_DIRS (colon-separated). Does nothing when the variable is unset.
#[test]
fn gpu_chinese_clip_parity_from_env() {
    let _device = shared_device();
    let Ok(dirs) = std::env::var("FLASHCLIP_CN_CLIP_PARITY_DIRS") else {
        println!("FLASHCLIP_CN_CLIP_PARITY_DIRS not set: no full-size Chinese-CLIP parity check requested");
        return;
    };
    let Some(gpu) = gpu_or_skip("gpu_chinese_clip_parity_from_env") else {
        return;
    };
    for dir in dirs.split(':').filter(|d| !d.is_empty()) {
        let dir = PathBuf::from(dir);
        let config = ChineseClipConfig::from_hf_json_file(dir.join("config.json")).unwrap();
        let f16_attention = ChineseClipModel::<f16>::best_attention(&gpu, &config);
        run::<f16>(&gpu, &dir, f16_attention, Some("expected_fp16.safetensors"));
        let bf16_attention = ChineseClipModel::<bf16>::best_attention(&gpu, &config);
        run::<bf16>(
            &gpu,
            &dir,
            bf16_attention,
            Some("expected_bf16.safetensors"),
        );
    }
}

/// The GPU backend runs batches up to `GRAPH_MAX_BATCH` as CUDA graphs captured on first use: every batch (the
/// capturing one and later replays on other inputs) must be bitwise the direct forward of the same shape (texts
/// padded to the backend's multiple of 8 tokens); larger batches run directly.
#[test]
fn gpu_tiny_chinese_clip_backend_graphs_equal_the_direct_forward() {
    use flashclip_model::backend::{Embedder, GRAPH_MAX_BATCH};
    use flashclip_model::chinese_clip::ChineseClipGpu;
    // Exclusive: another test's Gpu dropped during a capture would invalidate it.
    let _device = exclusive_device();
    let Some(gpu) = gpu_or_skip("gpu_tiny_chinese_clip_backend_graphs_equal_the_direct_forward")
    else {
        return;
    };
    let dir = tiny();
    let config = ChineseClipConfig::from_hf_json_file(dir.join("config.json")).unwrap();
    let checkpoint = Checkpoint::open(dir.join("model.safetensors")).unwrap();
    let (_, _, fixture_texts) = fixture_inputs(&dir);
    let max = GRAPH_MAX_BATCH + 1;
    let attention = ChineseClipModel::<f16>::best_attention(&gpu, &config);
    let model = ChineseClipModel::<f16>::load(&gpu, &config, &checkpoint, attention).unwrap();
    let mut ws = model.workspace(&gpu, max, max).unwrap();
    let mut backend = ChineseClipGpu::<f16>::load(0, &config, &checkpoint, max).unwrap();
    let seed = 0x6a10_u64;
    println!("seed {seed}");
    let per_image = 3 * config.vision.image_size * config.vision.image_size;
    let sizes = [1, 3, GRAPH_MAX_BATCH, GRAPH_MAX_BATCH + 1];
    assert_bitwise_on_random_images(
        seed,
        per_image,
        &sizes,
        |pixels| backend.embed_images(pixels).unwrap(),
        |pixels| model.encode_images(&gpu, &mut ws, pixels).unwrap(),
    );
    let context = model.context_length();
    let mut text_shapes = std::collections::HashSet::new();
    for n in sizes {
        for round in 0..2 {
            let texts: Vec<Vec<u32>> = (0..n)
                .map(|i| fixture_texts[(i * 3 + round) % fixture_texts.len()].clone())
                .collect();
            let longest = texts.iter().map(Vec::len).max().unwrap();
            let len = longest.next_multiple_of(8).min(context);
            if n <= GRAPH_MAX_BATCH {
                text_shapes.insert((n, len));
            }
            let got = backend.embed_texts(&texts).unwrap();
            model
                .upload_texts(&gpu, &mut ws, &texts, Some(len))
                .unwrap();
            model.run_uploaded_texts(&gpu, &mut ws).unwrap();
            let want = model.read_text_embeds(&gpu, &ws, n).unwrap();
            assert_eq!(
                bits(&got),
                bits(&want),
                "{n} texts padded to {len}, round {round}"
            );
        }
    }
    assert_eq!(backend.graph_count(), 3 + text_shapes.len());
    println!(
        "{} graphs, every batch bitwise the direct forward",
        backend.graph_count()
    );
}
