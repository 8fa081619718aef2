//! The GPU model against Hugging Face's fp32 outputs on the tiny fixture (tests/fixtures/tiny): every layer's
//! residual stream, and the projected embeddings, must be at least as close to HF fp32 as HF's own fp16/bf16
//! forward is (cosine >= 0.999 in fp16), with texts of mixed lengths in one padded batch.

mod common;

use std::path::PathBuf;

use flashclip::ops::attention::Version;
use flashclip::testing::gpu_or_skip;
use flashclip::{Element, Gpu};
use flashclip_model::config::ClipConfig;
use flashclip_model::{AttentionImpl, Checkpoint, ClipModel, GraphShape};
use half::{bf16, f16};

use common::{
    assert_bitwise_on_random_images, assert_embeddings, attention_sweep, bits, compare,
    exclusive_device, fixture_dir, fixture_inputs, max_abs, shared_device, tensor,
};

fn tiny() -> PathBuf {
    fixture_dir("tiny")
}

fn run<T: Element>(
    gpu: &Gpu,
    dir: &std::path::Path,
    attention: AttentionImpl,
    reference_file: Option<&str>,
) {
    let fixture = |name: &str| dir.join(name);
    let config = ClipConfig::from_hf_json_file(fixture("config.json")).unwrap();
    let checkpoint = Checkpoint::open(fixture("model.safetensors")).unwrap();
    let expected = std::fs::read(fixture("expected.safetensors")).unwrap();
    let (images, pixels32, texts) = fixture_inputs(dir);

    let model = ClipModel::<T>::load(gpu, &config, &checkpoint, attention).unwrap();
    let mut ws = model.workspace(gpu, images, texts.len()).unwrap();
    let batch = model.upload_images(gpu, &mut ws, &pixels32).unwrap();
    let vision_hidden = model.vision_hidden_states(gpu, &mut ws, batch).unwrap();
    let image = model.read_image_embeds(gpu, &ws, batch).unwrap();
    model.upload_texts(gpu, &mut ws, &texts, None).unwrap();
    let text_hidden = model.text_hidden_states(gpu, &mut ws).unwrap();
    let text = model.read_text_embeds(gpu, &ws, texts.len()).unwrap();

    let tag = format!(
        "{} {} {:?}",
        dir.file_name()
            .map_or(String::new(), |n| n.to_string_lossy().into_owned()),
        T::DTYPE,
        attention
    );
    // HF's own error in this dtype sets the bar (fp32: a tight absolute bound instead).
    let hf_half = reference_file.map(|f| std::fs::read(fixture(f)).unwrap());
    for (what, got) in [
        (
            "image_embeds",
            image.iter().map(|&x| x as f64).collect::<Vec<_>>(),
        ),
        ("text_embeds", text.iter().map(|&x| x as f64).collect()),
    ] {
        assert_embeddings(
            &tag,
            what,
            &got,
            &expected,
            hf_half.as_deref(),
            config.projection_dim,
        );
    }
    // Per-layer residual streams: vision over all tokens; text over each text's real tokens only (HF pads to 16).
    for (l, h) in vision_hidden.iter().enumerate() {
        let (_, want) = tensor(&expected, &format!("vision.hidden_states.{l}"));
        let h: Vec<f64> = h.iter().map(|&x| x as f64).collect();
        let err = max_abs(&h, &want);
        let scale = want.iter().fold(0.0f64, |m, x| m.max(x.abs()));
        println!("{tag} vision layer {l}: max abs {err:.3e} (max |x| {scale:.2})");
        assert!(err <= 0.1 * scale.max(1.0), "{tag} vision layer {l}: {err}");
    }
    let len = texts.iter().map(Vec::len).max().unwrap();
    let d = config.text.hidden_size;
    for (l, h) in text_hidden.iter().enumerate() {
        let (wshape, want) = tensor(&expected, &format!("text.hidden_states.{l}"));
        let (mut err, mut scale) = (0.0f64, 0.0f64);
        for (b, t) in texts.iter().enumerate() {
            for i in 0..t.len() {
                let g = &h[(b * len + i) * d..(b * len + i + 1) * d];
                let w = &want[(b * wshape[1] + i) * d..(b * wshape[1] + i + 1) * d];
                let g: Vec<f64> = g.iter().map(|&x| x as f64).collect();
                err = err.max(max_abs(&g, w));
                scale = w.iter().fold(scale, |m, x| m.max(x.abs()));
            }
        }
        println!("{tag} text layer {l}: max abs {err:.3e} (max |x| {scale:.2})");
        // Same rule as the vision stream: relative to the layer's largest value (the residual stream grows).
        assert!(err <= 0.1 * scale.max(1.0), "{tag} text layer {l}: {err}");
    }
}

#[test]
fn gpu_small_model_f16() {
    let _device = shared_device();
    let Some(gpu) = gpu_or_skip("gpu_small_model_f16") else {
        return;
    };
    let versions = [Version::V4, Version::V3, Version::V2, Version::V1];
    let others = [AttentionImpl::Fastest, AttentionImpl::Materialized];
    for attention in attention_sweep(&gpu, &versions, &others) {
        run::<f16>(&gpu, &tiny(), attention, Some("expected_fp16.safetensors"));
    }
}

#[test]
fn gpu_small_model_bf16() {
    let _device = shared_device();
    let Some(gpu) = gpu_or_skip("gpu_small_model_bf16") else {
        return;
    };
    let versions = [Version::V4, Version::V3, Version::V2];
    for attention in attention_sweep(&gpu, &versions, &[AttentionImpl::Fastest]) {
        run::<bf16>(&gpu, &tiny(), attention, Some("expected_bf16.safetensors"));
    }
}

#[test]
fn gpu_small_model_f32() {
    let _device = shared_device();
    let Some(gpu) = gpu_or_skip("gpu_small_model_f32") else {
        return;
    };
    run::<f32>(&gpu, &tiny(), AttentionImpl::Flash(Version::V1), None);
    run::<f32>(&gpu, &tiny(), AttentionImpl::Materialized, None);
}

/// Full-size parity: fixtures made on a GPU machine by scripts/make_hf_fixture.py PRESET DIR --half, listed in
/// FLASHCLIP_PARITY_DIRS (colon-separated). Does nothing when the variable is unset.
#[test]
fn gpu_parity_from_env() {
    let Ok(dirs) = std::env::var("FLASHCLIP_PARITY_DIRS") else {
        println!("FLASHCLIP_PARITY_DIRS not set: no full-size parity check requested");
        return;
    };
    let _device = shared_device();
    let Some(gpu) = gpu_or_skip("gpu_parity_from_env") else {
        return;
    };
    for dir in dirs.split(':').filter(|d| !d.is_empty()) {
        let dir = PathBuf::from(dir);
        // The path `flashclip embed` takes on this GPU.
        let config = ClipConfig::from_hf_json_file(dir.join("config.json")).unwrap();
        run::<f16>(
            &gpu,
            &dir,
            AttentionImpl::best::<f16>(&gpu, &config),
            Some("expected_fp16.safetensors"),
        );
        run::<bf16>(
            &gpu,
            &dir,
            AttentionImpl::best::<bf16>(&gpu, &config),
            Some("expected_bf16.safetensors"),
        );
    }
}

/// Captures the forward into a CUDA graph and replays it on two different inputs, uploaded between the replays:
/// each replay's embeddings must be bitwise those of the direct path on the same inputs (same kernels, same GEMM
/// plans, same padding), and the two inputs must give different embeddings (the graph reads the buffers fresh).
fn graph_replay<T: Element>(gpu: &Gpu, dir: &std::path::Path, attention: AttentionImpl) {
    let config = ClipConfig::from_hf_json_file(dir.join("config.json")).unwrap();
    let checkpoint = Checkpoint::open(dir.join("model.safetensors")).unwrap();
    let (images, pixels_a, texts_a) = fixture_inputs(dir);
    let n_texts = texts_a.len();
    let len = texts_a.iter().map(Vec::len).max().unwrap();
    // Second inputs: other pixel values, the texts in reverse order (same count and padded length).
    let pixels_b: Vec<f32> = pixels_a.iter().map(|&x| 0.5 - 0.75 * x).collect();
    let texts_b: Vec<Vec<u32>> = texts_a.iter().rev().cloned().collect();
    let tag = format!("{} {attention:?}", T::DTYPE);

    let model = ClipModel::<T>::load(gpu, &config, &checkpoint, attention).unwrap();
    let mut ws = model.workspace(gpu, images, n_texts).unwrap();
    let mut direct = |pixels: &[f32], texts: &[Vec<u32>]| {
        let batch = model.upload_images(gpu, &mut ws, pixels).unwrap();
        model.run_vision(gpu, &mut ws, batch).unwrap();
        let shape = model.upload_texts(gpu, &mut ws, texts, Some(len)).unwrap();
        assert_eq!((shape.batch, shape.len), (n_texts, len));
        model.run_uploaded_texts(gpu, &mut ws).unwrap();
        (
            model.read_image_embeds(gpu, &ws, batch).unwrap(),
            model.read_text_embeds(gpu, &ws, n_texts).unwrap(),
        )
    };
    let (image_a, text_a) = direct(&pixels_a, &texts_a);
    let (image_b, text_b) = direct(&pixels_b, &texts_b);
    // The direct path must repeat itself bitwise, or the graph comparison below could not mean anything.
    let (image_a2, text_a2) = direct(&pixels_a, &texts_a);
    assert_eq!(
        (bits(&image_a2), bits(&text_a2)),
        (bits(&image_a), bits(&text_a)),
        "{tag}: the direct path is not bitwise repeatable"
    );
    assert_ne!(
        bits(&image_a),
        bits(&image_b),
        "{tag}: inputs A and B give the same image embeddings"
    );
    assert_ne!(
        bits(&text_a),
        bits(&text_b),
        "{tag}: inputs A and B give the same text embeddings"
    );
    // run_text (upload + run in one call) is the same computation.
    model.run_text(gpu, &mut ws, &texts_a).unwrap();
    let again = model.read_text_embeds(gpu, &ws, n_texts).unwrap();
    assert_eq!(
        bits(&again),
        bits(&text_a),
        "{tag}: run_text differs from upload_texts + run_uploaded_texts"
    );

    // A fresh workspace for the graph, so it also shows that the graph does not depend on state the direct runs
    // left behind.
    let mut gws = model.workspace(gpu, images, n_texts).unwrap();
    let shape = GraphShape {
        images,
        texts: n_texts,
        text_len: len,
    };
    let mut graph = model.capture_forward(gpu, &mut gws, shape).unwrap();
    assert_eq!(graph.shape(), shape);
    for (round, (pixels, texts, image, text)) in [
        (&pixels_a, &texts_a, &image_a, &text_a),
        (&pixels_b, &texts_b, &image_b, &text_b),
        (&pixels_a, &texts_a, &image_a, &text_a),
    ]
    .into_iter()
    .enumerate()
    {
        graph.upload_images(pixels).unwrap();
        graph.upload_texts(texts).unwrap();
        graph.launch().unwrap();
        let got_image = graph.read_image_embeds().unwrap();
        let got_text = graph.read_text_embeds().unwrap();
        println!("{tag} replay {round}: image and text embeddings compared bitwise");
        assert_eq!(
            bits(&got_image),
            bits(image),
            "{tag} replay {round}: image embeddings"
        );
        assert_eq!(
            bits(&got_text),
            bits(text),
            "{tag} replay {round}: text embeddings"
        );
    }
    // Two launches back to back on the same inputs: same result.
    graph.launch().unwrap();
    graph.launch().unwrap();
    assert_eq!(
        bits(&graph.read_text_embeds().unwrap()),
        bits(&text_a),
        "{tag}: repeated launch"
    );

    // Inputs of another shape are refused (and leave the graph usable).
    assert!(graph
        .upload_images(&pixels_a[..pixels_a.len() - 1])
        .is_err());
    assert!(graph
        .upload_images(&[pixels_a.clone(), pixels_a.clone()].concat())
        .is_err());
    assert!(graph.upload_texts(&texts_a[..n_texts - 1]).is_err());
    let mut too_long = texts_a.clone();
    too_long[0] = vec![0; len + 1];
    assert!(graph.upload_texts(&too_long).is_err());
    drop(graph);

    // Shapes the workspace or the model cannot hold are refused before any capture.
    let bad = [
        GraphShape {
            images: 0,
            texts: 0,
            text_len: len,
        },
        GraphShape {
            images: images + 1,
            ..shape
        },
        GraphShape {
            texts: n_texts + 1,
            ..shape
        },
        GraphShape {
            text_len: config.text.max_len() + 1,
            ..shape
        },
        GraphShape {
            text_len: 0,
            ..shape
        },
    ];
    for s in bad {
        assert!(
            model.capture_forward(gpu, &mut gws, s).is_err(),
            "{tag}: {s:?} accepted"
        );
    }
    // Hidden-state snapshots sync and are refused while the stream is being captured.
    gpu.stream()
        .begin_capture(
            cudarc::driver::sys::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL,
        )
        .unwrap();
    let refused = model.vision_hidden_states(gpu, &mut gws, images);
    let _ = gpu
        .stream()
        .end_capture(cudarc::driver::sys::CUgraphInstantiate_flags(0));
    assert!(
        refused.is_err(),
        "{tag}: hidden snapshot during capture accepted"
    );

    // The workspace is free again after the graph is dropped: the direct path still gives the same result.
    let batch = model.upload_images(gpu, &mut gws, &pixels_b).unwrap();
    model.run_vision(gpu, &mut gws, batch).unwrap();
    assert_eq!(
        bits(&model.read_image_embeds(gpu, &gws, batch).unwrap()),
        bits(&image_b),
        "{tag}: direct path after the graph"
    );
}

#[test]
fn gpu_small_graph_replay() {
    let _device = exclusive_device();
    let Some(gpu) = gpu_or_skip("gpu_small_graph_replay") else {
        return;
    };
    graph_replay::<f16>(&gpu, &tiny(), AttentionImpl::Fastest);
    graph_replay::<f16>(&gpu, &tiny(), AttentionImpl::Flash(Version::V2));
    graph_replay::<f16>(&gpu, &tiny(), AttentionImpl::Materialized);
    graph_replay::<f32>(&gpu, &tiny(), AttentionImpl::Flash(Version::V1));
}

/// Replicas share the weights but run on streams and workspaces of their own: embedding from two threads at once,
/// round after round, each must give bitwise what the original gives alone.
#[test]
fn gpu_small_replicas_match_the_original_from_two_threads() {
    use flashclip_model::backend::{self, Device};
    // Exclusive: the replicas capture their CUDA graphs while they run.
    let _device = exclusive_device();
    let Some(gpu) = gpu_or_skip("gpu_small_replicas_match_the_original_from_two_threads") else {
        return;
    };
    drop(gpu);
    let config = ClipConfig::from_hf_json_file(tiny().join("config.json")).unwrap();
    let checkpoint = Checkpoint::open(tiny().join("model.safetensors")).unwrap();
    let (images, pixels, texts) = fixture_inputs(&tiny());
    let mut original = backend::load(
        Device::Cuda(0),
        flashclip::DType::F16,
        &config,
        &checkpoint,
        8,
    )
    .unwrap();
    let want_images = bits(&original.embed_images(&pixels).unwrap());
    let want_texts = bits(&original.embed_texts(&texts).unwrap());
    assert!(images > 0 && !texts.is_empty());
    let mut replica = original
        .replica()
        .unwrap()
        .expect("the GPU backend has replicas");
    std::thread::scope(|s| {
        for model in [&mut original, &mut replica] {
            let (pixels, texts) = (&pixels, &texts);
            let (want_images, want_texts) = (&want_images, &want_texts);
            s.spawn(move || {
                for round in 0..20 {
                    let got = bits(&model.embed_images(pixels).unwrap());
                    assert_eq!(&got, want_images, "images, round {round}");
                    let got = bits(&model.embed_texts(texts).unwrap());
                    assert_eq!(&got, want_texts, "texts, round {round}");
                }
            });
        }
    });
    println!("original and replica: 20 concurrent rounds each, bitwise equal");
}

/// The GPU backend runs batches up to `GRAPH_MAX_BATCH` as CUDA graphs captured on first use: each batch (the
/// capturing one and later replays on other inputs) must be bitwise the direct forward of the same shape, and
/// batches above the limit run directly.
#[test]
fn gpu_small_backend_graphs_equal_the_direct_forward() {
    use flashclip_model::backend::{Embedder, GpuBackend, GRAPH_MAX_BATCH};
    use rand::{rngs::StdRng, Rng, SeedableRng};
    let _device = exclusive_device();
    let Some(gpu) = gpu_or_skip("gpu_small_backend_graphs_equal_the_direct_forward") else {
        return;
    };
    let config = ClipConfig::from_hf_json_file(tiny().join("config.json")).unwrap();
    let checkpoint = Checkpoint::open(tiny().join("model.safetensors")).unwrap();
    let max = GRAPH_MAX_BATCH + 1;
    let attention = AttentionImpl::best::<f16>(&gpu, &config);
    let model = ClipModel::<f16>::load(&gpu, &config, &checkpoint, attention).unwrap();
    let mut ws = model.workspace(&gpu, max, max).unwrap();
    let mut backend = GpuBackend::<f16>::load(0, &config, &checkpoint, max).unwrap();

    let seed = 0x6a0f_u64;
    println!("seed {seed}");
    let mut rng = StdRng::seed_from_u64(seed);
    let per_image = 3 * config.vision.image_size * config.vision.image_size;
    let max_len = config.text.max_len();
    let vocab = config.text.vocab_size as u32;
    let eos = config.text.eos_token_id;
    let mut text = |len: usize| -> Vec<u32> {
        let mut ids: Vec<u32> = (0..len).map(|_| rng.random_range(1..vocab - 1)).collect();
        ids[len - 1] = eos;
        ids
    };
    // Lengths in both padding buckets of the tiny context; every batch's longest text sets its bucket.
    let lens = [3, max_len, 5, 9, 2, 7, 11, max_len - 1, 4];
    let text_batches: Vec<Vec<Vec<u32>>> = [1, 3, GRAPH_MAX_BATCH, GRAPH_MAX_BATCH + 1]
        .iter()
        .flat_map(|&n| [0, 1].map(|round| (n, round)))
        .map(|(n, round)| {
            (0..n)
                .map(|i| text(lens[(i + round) % lens.len()].max(2)))
                .collect()
        })
        .collect();
    assert_bitwise_on_random_images(
        seed + 1,
        per_image,
        &[1, 3, GRAPH_MAX_BATCH, GRAPH_MAX_BATCH + 1],
        |pixels| backend.embed_images(pixels).unwrap(),
        |pixels| model.encode_images(&gpu, &mut ws, pixels).unwrap(),
    );
    // The same images handed over in parts (one image, then the rest in two) embed bitwise the same, through a
    // graph and directly.
    assert_bitwise_on_random_images(
        seed + 2,
        per_image,
        &[3, GRAPH_MAX_BATCH + 1],
        |pixels| {
            let (first, rest) = pixels.split_at(per_image);
            let (a, b) = rest.split_at(rest.len() / per_image / 2 * per_image);
            backend.embed_image_parts(&[first, a, b]).unwrap()
        },
        |pixels| model.encode_images(&gpu, &mut ws, pixels).unwrap(),
    );
    for texts in &text_batches {
        let longest = texts.iter().map(Vec::len).max().unwrap();
        let len = longest.next_multiple_of(8).min(max_len);
        let got = backend.embed_texts(texts).unwrap();
        model.upload_texts(&gpu, &mut ws, texts, Some(len)).unwrap();
        model.run_uploaded_texts(&gpu, &mut ws).unwrap();
        let want = model.read_text_embeds(&gpu, &ws, texts.len()).unwrap();
        assert_eq!(
            bits(&got),
            bits(&want),
            "{} texts padded to {len}",
            texts.len()
        );
    }
    // Images: batches 1, 3 and 8; texts: the same batches, each in the buckets its two rounds hit.
    let text_shapes: std::collections::HashSet<(usize, usize)> = text_batches
        .iter()
        .filter(|t| t.len() <= GRAPH_MAX_BATCH)
        .map(|t| {
            let longest = t.iter().map(Vec::len).max().unwrap();
            (t.len(), longest.next_multiple_of(8).min(max_len))
        })
        .collect();
    assert_eq!(backend.graph_count(), 3 + text_shapes.len());
    println!(
        "{} graphs (3 image, {} text), every batch bitwise the direct forward",
        backend.graph_count(),
        text_shapes.len()
    );
}

/// Batches of 4096 rows and more run the MLP's fc1 on flashclip's GEMM with the bias and activation fused (below,
/// cuBLAS and a separate pass): 256 images (4352 vision rows) and 256 texts (4096 text rows) in one batch must be
/// as close to the CPU float32 reference as the same inputs in batches of 8 are (within twice their error plus
/// 1e-3, cosine >= 0.999 in f16, 0.995 in bf16).
#[test]
fn gpu_small_large_batches_match_the_cpu_reference() {
    use flashclip_model::backend::{self, CpuBackend, Device, Embedder};
    use rand::{rngs::StdRng, Rng, SeedableRng};
    let _device = shared_device();
    let Some(gpu) = gpu_or_skip("gpu_small_large_batches_match_the_cpu_reference") else {
        return;
    };
    drop(gpu);
    let config = ClipConfig::from_hf_json_file(tiny().join("config.json")).unwrap();
    let checkpoint = Checkpoint::open(tiny().join("model.safetensors")).unwrap();
    let n = 256;
    let seed = 0x6a11_u64;
    println!("seed {seed}");
    let mut rng = StdRng::seed_from_u64(seed);
    let per_image = 3 * config.vision.image_size * config.vision.image_size;
    let pixels: Vec<f32> = (0..n * per_image)
        .map(|_| rng.random_range(-2.0f32..2.0))
        .collect();
    let max_len = config.text.max_len();
    let vocab = config.text.vocab_size as u32;
    let texts: Vec<Vec<u32>> = (0..n)
        .map(|i| {
            // The longest text sets the padded length: one of full length, so 256 texts make 4096 rows.
            let len = if i == 0 {
                max_len
            } else {
                rng.random_range(2..=max_len)
            };
            let mut ids: Vec<u32> = (0..len).map(|_| rng.random_range(1..vocab - 1)).collect();
            ids[len - 1] = config.text.eos_token_id;
            ids
        })
        .collect();
    let mut cpu = CpuBackend::load(&config, &checkpoint, n).unwrap();
    let want = [
        cpu.embed_images(&pixels).unwrap(),
        cpu.embed_texts(&texts).unwrap(),
    ];
    let dim = config.projection_dim;
    let flat = |a: &ndarray::Array2<f32>| a.iter().map(|&x| f64::from(x)).collect::<Vec<f64>>();
    for (dtype, min_cos) in [
        (flashclip::DType::F16, 0.999),
        (flashclip::DType::BF16, 0.995),
    ] {
        let mut gpu = backend::load(Device::Cuda(0), dtype, &config, &checkpoint, n).unwrap();
        let whole = [
            gpu.embed_images(&pixels).unwrap(),
            gpu.embed_texts(&texts).unwrap(),
        ];
        let chunked_images: Vec<f32> = pixels
            .chunks(8 * per_image)
            .flat_map(|c| gpu.embed_images(c).unwrap().into_iter())
            .collect();
        let chunked_texts: Vec<f32> = texts
            .chunks(8)
            .flat_map(|c| gpu.embed_texts(c).unwrap().into_iter())
            .collect();
        let chunked = [chunked_images, chunked_texts];
        for (tower, ((whole, chunked), want)) in ["images", "texts"]
            .iter()
            .zip(whole.iter().zip(&chunked).zip(&want))
        {
            let want = flat(want);
            let (cos, err) = compare(&flat(whole), &want, dim);
            let chunked: Vec<f64> = chunked.iter().map(|&x| f64::from(x)).collect();
            let (chunked_cos, chunked_err) = compare(&chunked, &want, dim);
            println!(
                "{dtype:?} {tower}: one batch of {n}: min cosine {cos:.6}, max abs {err:.3e}; \
                 batches of 8: {chunked_cos:.6}, {chunked_err:.3e}"
            );
            assert!(cos >= min_cos, "{dtype:?} {tower}: cosine {cos}");
            assert!(
                err <= 2.0 * chunked_err + 1e-3,
                "{dtype:?} {tower}: max abs {err:.3e} against {chunked_err:.3e} in batches of 8"
            );
        }
    }
}

/// Started images (`Embedder::start_image_parts`) are the rows `embed_image_parts` gives, bitwise, also with a
/// second batch started (its upload and forward enqueued) before the first is finished, in graph-sized and larger
/// batches; a third start before a finish is an error.
#[test]
fn gpu_small_started_images_equal_the_direct_embedding() {
    use flashclip_model::backend::{Embedder, GpuBackend, GRAPH_MAX_BATCH, MAX_STARTED};
    use rand::{rngs::StdRng, Rng, SeedableRng};
    let _device = exclusive_device();
    let Some(gpu) = gpu_or_skip("gpu_small_started_images_equal_the_direct_embedding") else {
        return;
    };
    drop(gpu);
    let config = ClipConfig::from_hf_json_file(tiny().join("config.json")).unwrap();
    let checkpoint = Checkpoint::open(tiny().join("model.safetensors")).unwrap();
    let max = 2 * GRAPH_MAX_BATCH + 3;
    let mut backend = GpuBackend::<f16>::load(0, &config, &checkpoint, max).unwrap();
    let seed = 0x57a7_u64;
    println!("seed {seed}");
    let mut rng = StdRng::seed_from_u64(seed);
    let per_image = 3 * config.vision.image_size * config.vision.image_size;
    let mut images = |n: usize| -> Vec<f32> {
        (0..n * per_image)
            .map(|_| rng.random_range(-2.0f32..2.0))
            .collect()
    };
    for (a, b) in [(max, 3), (2, max), (GRAPH_MAX_BATCH, GRAPH_MAX_BATCH + 1)] {
        let (first, second) = (images(a), images(b));
        // The second batch in two parts, as a server hands requests over.
        let (head, tail) = second.split_at(per_image);
        let started_first = backend.start_image_parts(&[&first]).unwrap();
        let started_second = backend.start_image_parts(&[head, tail]).unwrap();
        assert_eq!((started_first.len(), started_second.len()), (a, b));
        let third = backend.start_image_parts(&[&first]);
        assert!(third.is_err(), "a start past {MAX_STARTED} unfinished");
        let got_first = backend.finish_images(started_first).unwrap();
        let got_second = backend.finish_images(started_second).unwrap();
        let want_first = backend.embed_images(&first).unwrap();
        let want_second = backend.embed_images(&second).unwrap();
        assert_eq!(bits(&got_first), bits(&want_first), "{a} then {b}: first");
        assert_eq!(
            bits(&got_second),
            bits(&want_second),
            "{a} then {b}: second"
        );
    }
    println!("started batches bitwise equal to direct ones");
}
