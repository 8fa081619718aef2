//! The SigLIP GPU model against Hugging Face's fp32 outputs on the tiny fixture (tests/fixtures/tiny-siglip:
//! vision head dim 72, so400m's) and on full-size fixtures named in FLASHCLIP_SIGLIP_PARITY_DIRS: fp16/bf16
//! embeddings at least as close to HF fp32 as HF's own half forward (cosine >= 0.999 or HF's), f32 within 1e-4.

mod common;

use std::path::{Path, PathBuf};

use flashclip::ops::attention::Version;
use flashclip::testing::gpu_or_skip;
use flashclip::{DType, Element, Gpu};
use flashclip_model::backend::{self, Device, ZeroShot};
use flashclip_model::checkpoint::Checkpoint;
use flashclip_model::siglip::{SiglipConfig, SiglipGpu, SiglipGpuModel};
use flashclip_model::{open_model_dir, AttentionImpl};
use half::{bf16, f16};

use common::{
    assert_bitwise_on_random_images, assert_embeddings, bits, compare, exclusive_device,
    fixture_dir, shared_device, tensor,
};

fn tiny() -> PathBuf {
    fixture_dir("tiny-siglip")
}

fn run<T: Element>(gpu: &Gpu, dir: &Path, attention: AttentionImpl, hf_half: Option<&str>) {
    let config = SiglipConfig::from_hf_json_file(dir.join("config.json")).unwrap();
    let model =
        SiglipGpuModel::<T>::load(gpu, &config, dir.join("model.safetensors"), attention).unwrap();
    let inputs = std::fs::read(dir.join("inputs.safetensors")).unwrap();
    let expected = std::fs::read(dir.join("expected.safetensors")).unwrap();
    let (pshape, pixels) = tensor(&inputs, "pixel_values");
    let pixels: Vec<f32> = pixels.iter().map(|&x| x as f32).collect();
    let (ishape, ids) = tensor(&inputs, "input_ids");
    let texts: Vec<Vec<u32>> = ids
        .chunks(ishape[1])
        .map(|r| r.iter().map(|&x| x as u32).collect())
        .collect();
    let mut ws = model.workspace(gpu, pshape[0], texts.len()).unwrap();
    let image = model.embed_images(gpu, &mut ws, &pixels).unwrap();
    let text = model.embed_texts(gpu, &mut ws, &texts).unwrap();
    let tag = format!("{} {} {attention:?}", dir.display(), T::DTYPE);
    let dim = config.embed_dim();
    let hf_half = hf_half.map(|f| std::fs::read(dir.join(f)).unwrap());
    for (what, got) in [
        (
            "image_embeds",
            image.iter().map(|&x| x as f64).collect::<Vec<_>>(),
        ),
        ("text_embeds", text.iter().map(|&x| x as f64).collect()),
    ] {
        assert!(
            got.iter().all(|x| x.is_finite()),
            "{tag} {what}: not finite"
        );
        assert_embeddings(&tag, what, &got, &expected, hf_half.as_deref(), dim);
    }
    // Zero-shot probabilities from the GPU embeddings against HF's.
    let (_, probs) = model.zero_shot(image.view(), text.view()).unwrap();
    let (_, want) = tensor(&expected, "probs");
    let got: Vec<f64> = probs.iter().map(|&x| x as f64).collect();
    let (_, err) = compare(&got, &want, want.len());
    let bar = if hf_half.is_some() { 2e-2 } else { 1e-4 };
    println!("{tag} probs: max abs {err:.3e}");
    assert!(err <= bar, "{tag} probs: max abs {err:.3e} > {bar:.1e}");
}

#[test]
fn gpu_siglip_matches_hf_on_tiny() {
    let _device = shared_device();
    let Some(gpu) = gpu_or_skip("gpu_siglip_matches_hf_on_tiny") else {
        return;
    };
    let dir = tiny();
    for attention in [
        AttentionImpl::Fastest,
        AttentionImpl::Flash(Version::V2),
        AttentionImpl::Materialized,
    ] {
        run::<f16>(&gpu, &dir, attention, Some("expected_fp16.safetensors"));
        run::<bf16>(&gpu, &dir, attention, Some("expected_bf16.safetensors"));
    }
    if Version::V4.runs_on(&gpu) {
        let v4 = AttentionImpl::Flash(Version::V4);
        run::<f16>(&gpu, &dir, v4, Some("expected_fp16.safetensors"));
        run::<bf16>(&gpu, &dir, v4, Some("expected_bf16.safetensors"));
    }
    run::<f32>(&gpu, &dir, AttentionImpl::Flash(Version::V1), None);
    run::<f32>(&gpu, &dir, AttentionImpl::Materialized, None);
}

/// Full-size parity: fixtures made on a GPU machine by `scripts/make_hf_fixture_siglip.py PRESET DIR --half`,
/// listed in FLASHCLIP_SIGLIP_PARITY_DIRS (colon-separated). Does nothing when the variable is unset.
#[test]
fn gpu_siglip_parity_from_env() {
    let _device = shared_device();
    let Ok(dirs) = std::env::var("FLASHCLIP_SIGLIP_PARITY_DIRS") else {
        println!(
            "FLASHCLIP_SIGLIP_PARITY_DIRS not set: no full-size SigLIP parity check requested"
        );
        return;
    };
    let Some(gpu) = gpu_or_skip("gpu_siglip_parity_from_env") else {
        return;
    };
    for dir in dirs.split(':').filter(|d| !d.is_empty()) {
        let dir = PathBuf::from(dir);
        run::<f16>(
            &gpu,
            &dir,
            AttentionImpl::Fastest,
            Some("expected_fp16.safetensors"),
        );
        run::<bf16>(
            &gpu,
            &dir,
            AttentionImpl::Fastest,
            Some("expected_bf16.safetensors"),
        );
    }
}

/// The SigLIP GPU Embedder (as `backend::load` gives the front ends) against the CPU one on the tiny fixture's HF
/// inputs: f32 within 1e-4, fp16/bf16 cosine >= 0.999; both say zero-shot is the same sigmoid.
#[test]
fn gpu_siglip_embedder_matches_cpu_on_tiny() {
    let _device = shared_device();
    let Some(gpu) = gpu_or_skip("gpu_siglip_embedder_matches_cpu_on_tiny") else {
        return;
    };
    drop(gpu);
    let dir = tiny();
    let (config, checkpoint) = open_model_dir(&dir).unwrap();
    let inputs = std::fs::read(dir.join("inputs.safetensors")).unwrap();
    let pixels: Vec<f32> = tensor(&inputs, "pixel_values")
        .1
        .iter()
        .map(|&x| x as f32)
        .collect();
    let (shape, ids) = tensor(&inputs, "input_ids");
    let ids: Vec<Vec<u32>> = ids
        .chunks(shape[1])
        .map(|r| r.iter().map(|&x| x as u32).collect())
        .collect();
    let embed = |device, dtype| {
        let mut e = backend::load(device, dtype, &config, &checkpoint, 8).unwrap();
        let image: Vec<f64> = e
            .embed_images(&pixels)
            .unwrap()
            .iter()
            .map(|&x| x as f64)
            .collect();
        let text: Vec<f64> = e
            .embed_texts(&ids)
            .unwrap()
            .iter()
            .map(|&x| x as f64)
            .collect();
        (image, text, e.zero_shot())
    };
    let (cpu_image, cpu_text, cpu_rule) = embed(Device::Cpu, DType::F32);
    let dim = config.projection_dim();
    for (dtype, min_cos, max_err) in [
        (DType::F32, 0.99999, 1e-4),
        (DType::F16, 0.999, f64::INFINITY),
        (DType::BF16, 0.999, f64::INFINITY),
    ] {
        let (image, text, rule) = embed(Device::Cuda(0), dtype);
        assert_eq!(rule, cpu_rule, "{dtype:?}");
        assert!(matches!(rule, ZeroShot::Sigmoid { .. }));
        for (what, got, want) in [("image", &image, &cpu_image), ("text", &text, &cpu_text)] {
            let (cos, err) = compare(got, want, dim);
            println!("Embedder {dtype:?} {what}: min cosine {cos:.6}, max |error| {err:.2e}");
            assert!(
                cos >= min_cos && err <= max_err,
                "{dtype:?} {what}: {cos} {err}"
            );
        }
    }
}

/// The SigLIP GPU backend runs batches up to `GRAPH_MAX_BATCH` as CUDA graphs captured on first use: every batch
/// (the capturing one and later replays on other inputs) must be bitwise the model's direct forward of the same
/// shape; larger batches run directly.
#[test]
fn gpu_siglip_backend_graphs_equal_the_direct_forward() {
    use flashclip_model::backend::{Embedder, GRAPH_MAX_BATCH};
    // Exclusive: another test's Gpu dropped during a capture would invalidate it.
    let _device = exclusive_device();
    let Some(gpu) = gpu_or_skip("gpu_siglip_backend_graphs_equal_the_direct_forward") else {
        return;
    };
    let dir = tiny();
    let config = SiglipConfig::from_hf_json_file(dir.join("config.json")).unwrap();
    let checkpoint = Checkpoint::open(dir.join("model.safetensors")).unwrap();
    let inputs = std::fs::read(dir.join("inputs.safetensors")).unwrap();
    let (ishape, ids) = tensor(&inputs, "input_ids");
    let fixture_texts: Vec<Vec<u32>> = ids
        .chunks(ishape[1])
        .map(|r| r.iter().map(|&x| x as u32).collect())
        .collect();
    let max = GRAPH_MAX_BATCH + 1;
    let attention = AttentionImpl::Fastest;
    let model =
        SiglipGpuModel::<f16>::load_checkpoint(&gpu, &config, &checkpoint, attention).unwrap();
    let mut ws = model.workspace(&gpu, max, max).unwrap();
    let mut backend = SiglipGpu::<f16>::load(0, &config, &checkpoint, max).unwrap();
    let seed = 0x5161_u64;
    println!("seed {seed}");
    let v = &config.vision;
    let per_image = v.num_channels * v.image_size * v.image_size;
    let sizes = [1, 3, GRAPH_MAX_BATCH, GRAPH_MAX_BATCH + 1];
    assert_bitwise_on_random_images(
        seed,
        per_image,
        &sizes,
        |pixels| backend.embed_images(pixels).unwrap(),
        |pixels| model.embed_images(&gpu, &mut ws, pixels).unwrap(),
    );
    for n in sizes {
        for round in 0..2 {
            let texts: Vec<Vec<u32>> = (0..n)
                .map(|i| fixture_texts[(i * 3 + round) % fixture_texts.len()].clone())
                .collect();
            let got = backend.embed_texts(&texts).unwrap();
            let want = model.embed_texts(&gpu, &mut ws, &texts).unwrap();
            assert_eq!(bits(&got), bits(&want), "{n} texts, round {round}");
        }
    }
    // Three image batch sizes and three text batch sizes (one padded length) are small enough.
    assert_eq!(backend.graph_count(), 6);
    println!(
        "{} graphs, every batch bitwise the direct forward",
        backend.graph_count()
    );
}
