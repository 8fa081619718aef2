//! Checkpoint loading: the tiny HF fixture, the same model under open_clip key names and in
//! half precision, and broken files made from it in a temp dir.

use std::collections::BTreeMap;
use std::path::PathBuf;

use flashclip_model::checkpoint::{CheckpointError, CheckpointFormat, CheckpointMismatch};
use flashclip_model::config::ClipConfig;
use flashclip_model::ClipWeights;
use half::{bf16, f16};
use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| ".".into()))
        .join("tests/fixtures/tiny")
        .join(name)
}

fn config() -> ClipConfig {
    ClipConfig::from_hf_json_file(fixture("config.json")).unwrap()
}

/// A scratch directory removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        let dir =
            std::env::temp_dir().join(format!("flashclip-weights-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    fn write(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, bytes).unwrap();
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A checkpoint as an editable map of name -> (dtype, shape, bytes).
#[derive(Clone)]
struct Raw(BTreeMap<String, (Dtype, Vec<usize>, Vec<u8>)>);

impl Raw {
    fn fixture() -> Raw {
        let bytes = std::fs::read(fixture("model.safetensors")).unwrap();
        let st = SafeTensors::deserialize(&bytes).unwrap();
        Raw(st
            .tensors()
            .into_iter()
            .map(|(name, v)| (name, (v.dtype(), v.shape().to_vec(), v.data().to_vec())))
            .collect())
    }

    fn f32(&self, name: &str) -> (Vec<usize>, Vec<f32>) {
        let (dtype, shape, data) = &self.0[name];
        assert_eq!(*dtype, Dtype::F32);
        let values = data
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        (shape.clone(), values)
    }

    fn put_f32(&mut self, name: &str, shape: Vec<usize>, values: &[f32]) {
        let bytes = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.0.insert(name.to_string(), (Dtype::F32, shape, bytes));
    }

    fn remove(&mut self, name: &str) -> (Vec<usize>, Vec<f32>) {
        let t = self.f32(name);
        self.0.remove(name);
        t
    }

    fn bytes(&self) -> Vec<u8> {
        let views: Vec<(String, TensorView<'_>)> = self
            .0
            .iter()
            .map(|(n, (d, s, b))| (n.clone(), TensorView::new(*d, s.clone(), b).unwrap()))
            .collect();
        safetensors::serialize(views, None).unwrap()
    }
}

fn transpose(shape: &[usize], v: &[f32]) -> (Vec<usize>, Vec<f32>) {
    let (r, c) = (shape[0], shape[1]);
    let mut out = vec![0.0; v.len()];
    for i in 0..r {
        for j in 0..c {
            out[j * r + i] = v[i * c + j];
        }
    }
    (vec![c, r], out)
}

/// Renames the HF fixture to open_clip's keys and layouts (packed in_proj, transposed
/// projections), as open_clip's own HF-conversion does in reverse.
fn to_open_clip(hf: &Raw, cfg: &ClipConfig) -> Raw {
    let mut hf = hf.clone();
    let mut oc = Raw(BTreeMap::new());
    let mv = |hf: &mut Raw, oc: &mut Raw, from: &str, to: &str| {
        let (s, v) = hf.remove(from);
        oc.put_f32(to, s, &v);
    };
    mv(
        &mut hf,
        &mut oc,
        "vision_model.embeddings.class_embedding",
        "visual.class_embedding",
    );
    mv(
        &mut hf,
        &mut oc,
        "vision_model.embeddings.patch_embedding.weight",
        "visual.conv1.weight",
    );
    mv(
        &mut hf,
        &mut oc,
        "vision_model.embeddings.position_embedding.weight",
        "visual.positional_embedding",
    );
    mv(
        &mut hf,
        &mut oc,
        "text_model.embeddings.token_embedding.weight",
        "token_embedding.weight",
    );
    mv(
        &mut hf,
        &mut oc,
        "text_model.embeddings.position_embedding.weight",
        "positional_embedding",
    );
    mv(&mut hf, &mut oc, "logit_scale", "logit_scale");
    for (from, to) in [
        ("vision_model.pre_layrnorm", "visual.ln_pre"),
        ("vision_model.post_layernorm", "visual.ln_post"),
        ("text_model.final_layer_norm", "ln_final"),
    ] {
        for p in ["weight", "bias"] {
            mv(
                &mut hf,
                &mut oc,
                &format!("{from}.{p}"),
                &format!("{to}.{p}"),
            );
        }
    }
    for (hf_tower, oc_tower, layers) in [
        (
            "vision_model",
            "visual.transformer",
            cfg.vision.num_hidden_layers,
        ),
        ("text_model", "transformer", cfg.text.num_hidden_layers),
    ] {
        for i in 0..layers {
            let h = format!("{hf_tower}.encoder.layers.{i}");
            let o = format!("{oc_tower}.resblocks.{i}");
            for (a, b) in [
                ("self_attn.out_proj", "attn.out_proj"),
                ("layer_norm1", "ln_1"),
                ("layer_norm2", "ln_2"),
                ("mlp.fc1", "mlp.c_fc"),
                ("mlp.fc2", "mlp.c_proj"),
            ] {
                for p in ["weight", "bias"] {
                    mv(
                        &mut hf,
                        &mut oc,
                        &format!("{h}.{a}.{p}"),
                        &format!("{o}.{b}.{p}"),
                    );
                }
            }
            for p in ["weight", "bias"] {
                let mut packed = Vec::new();
                let mut shape = Vec::new();
                for x in ["q", "k", "v"] {
                    let (s, v) = hf.remove(&format!("{h}.self_attn.{x}_proj.{p}"));
                    packed.extend(v);
                    shape = s;
                }
                shape[0] *= 3;
                oc.put_f32(&format!("{o}.attn.in_proj_{p}"), shape, &packed);
            }
        }
    }
    for (from, to) in [
        ("visual_projection.weight", "visual.proj"),
        ("text_projection.weight", "text_projection"),
    ] {
        let (s, v) = hf.remove(from);
        let (s, v) = transpose(&s, &v);
        oc.put_f32(to, s, &v);
    }
    assert!(
        hf.0.is_empty(),
        "unconverted: {:?}",
        hf.0.keys().collect::<Vec<_>>()
    );
    oc
}

fn mismatch(err: CheckpointError) -> CheckpointMismatch {
    match err {
        CheckpointError::Mismatch(m) => *m,
        other => panic!("expected a mismatch error, got: {other}"),
    }
}

#[test]
fn loads_the_hf_fixture_with_packed_qkv() {
    let cfg = config();
    let w = ClipWeights::load(fixture("model.safetensors"), &cfg).unwrap();
    assert_eq!(w.format, CheckpointFormat::HuggingFace);
    assert_eq!(w.logit_scale, 3.0);
    assert_eq!(w.vision_model.encoder.layers.len(), 2);
    assert_eq!(w.text_model.encoder.layers.len(), 2);
    assert_eq!(
        w.vision_model.embeddings.patch_embedding.shape(),
        &[128, 3, 8, 8]
    );
    assert_eq!(
        w.vision_model.embeddings.position_embedding.shape(),
        &[17, 128]
    );
    assert_eq!(
        w.text_model.embeddings.token_embedding.shape(),
        &[1000, 128]
    );
    assert_eq!(
        w.text_model.embeddings.position_embedding.shape(),
        &[16, 128]
    );
    assert_eq!(w.visual_projection.shape(), &[64, 128]);
    assert_eq!(w.text_projection.shape(), &[64, 128]);

    // Q, K, V rows land in that order in qkv_proj.
    let raw = Raw::fixture();
    let layer = &w.text_model.encoder.layers[1].self_attn.qkv_proj;
    assert_eq!(layer.weight.shape(), &[384, 128]);
    assert_eq!(layer.bias.shape(), &[384]);
    for (block, x) in ["q", "k", "v"].iter().enumerate() {
        let (_, wv) = raw.f32(&format!(
            "text_model.encoder.layers.1.self_attn.{x}_proj.weight"
        ));
        let (_, bv) = raw.f32(&format!(
            "text_model.encoder.layers.1.self_attn.{x}_proj.bias"
        ));
        let rows = layer
            .weight
            .slice(ndarray::s![block * 128..(block + 1) * 128, ..]);
        assert_eq!(rows.iter().copied().collect::<Vec<_>>(), wv, "{x} weight");
        assert_eq!(
            layer
                .bias
                .slice(ndarray::s![block * 128..(block + 1) * 128])
                .to_vec(),
            bv,
            "{x} bias"
        );
    }
    let (_, fc1) = raw.f32("vision_model.encoder.layers.0.mlp.fc1.weight");
    assert_eq!(
        w.vision_model.encoder.layers[0]
            .mlp
            .fc1
            .weight
            .as_slice()
            .unwrap(),
        &fc1[..]
    );

    // Every array is contiguous row-major, and tensors() names them canonically.
    let tensors = w.tensors(&cfg);
    assert!(tensors.iter().all(|t| t.tensor.is_standard_layout()));
    assert_eq!(tensors.len(), 5 + 2 * 12 + 2 + 2 + 2 * 12 + 2 + 2);
    assert_eq!(
        tensors[5].name,
        "vision_model.encoder.layers.0.self_attn.qkv_proj.weight"
    );
    let params: usize = raw
        .0
        .values()
        .map(|(_, s, _)| s.iter().product::<usize>())
        .sum();
    assert_eq!(w.num_parameters(), params);
    w.check_shapes(&cfg).unwrap();
}

#[test]
fn open_clip_keys_load_into_the_same_structs() {
    let cfg = config();
    let hf = ClipWeights::load(fixture("model.safetensors"), &cfg).unwrap();
    let oc_bytes = to_open_clip(&Raw::fixture(), &cfg).bytes();
    let oc = ClipWeights::from_safetensors_bytes(&oc_bytes, &cfg).unwrap();
    assert_eq!(oc.format, CheckpointFormat::OpenClip);
    // Same numbers everywhere: the packed QKV, the transposed-back projections, ...
    let mut oc_as_hf = oc.clone();
    oc_as_hf.format = CheckpointFormat::HuggingFace;
    assert_eq!(oc_as_hf, hf);
    assert!(oc.visual_projection.is_standard_layout());
}

#[test]
fn half_precision_checkpoints_are_converted() {
    let cfg = config();
    let full = ClipWeights::load(fixture("model.safetensors"), &cfg).unwrap();
    for dtype in [Dtype::F16, Dtype::BF16] {
        let mut raw = Raw::fixture();
        for (d, _, bytes) in raw.0.values_mut() {
            let values: Vec<f32> = bytes
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                .collect();
            *bytes = values
                .iter()
                .flat_map(|&v| match dtype {
                    Dtype::F16 => f16::from_f32(v).to_le_bytes(),
                    _ => bf16::from_f32(v).to_le_bytes(),
                })
                .collect();
            *d = dtype;
        }
        let w = ClipWeights::from_safetensors_bytes(&raw.bytes(), &cfg).unwrap();
        let round = |v: f32| match dtype {
            Dtype::F16 => f16::from_f32(v).to_f32(),
            _ => bf16::from_f32(v).to_f32(),
        };
        for (a, b) in w.tensors(&cfg).iter().zip(full.tensors(&cfg).iter()) {
            assert_eq!(a.name, b.name);
            assert!(
                a.tensor
                    .iter()
                    .zip(b.tensor.iter())
                    .all(|(&x, &y)| x == round(y)),
                "{dtype:?} {}",
                a.name
            );
        }
        assert_eq!(w.logit_scale, 3.0);
    }
}

#[test]
fn every_problem_is_reported_by_name_in_one_error() {
    let cfg = config();
    let mut raw = Raw::fixture();
    raw.remove("vision_model.encoder.layers.1.mlp.fc2.bias");
    raw.remove("text_projection.weight");
    raw.remove("text_model.encoder.layers.0.self_attn.k_proj.weight");
    raw.put_f32("extra.weight", vec![2], &[1.0, 2.0]);
    raw.put_f32(
        "vision_model.encoder.layers.2.mlp.fc1.bias",
        vec![256],
        &[0.0; 256],
    );
    raw.put_f32("text_model.final_layer_norm.weight", vec![64], &[1.0; 64]);
    raw.0.insert(
        "vision_model.pre_layrnorm.bias".into(),
        (Dtype::I64, vec![128], vec![0; 128 * 8]),
    );
    // Weightless buffers some exporters write are not "unexpected".
    raw.0.insert(
        "text_model.embeddings.position_ids".into(),
        (Dtype::I64, vec![1, 16], vec![0; 16 * 8]),
    );
    let dir = TempDir::new("problems");
    let path = dir.write("model.safetensors", &raw.bytes());
    let err = ClipWeights::load(&path, &cfg).unwrap_err();
    let msg = err.to_string();
    println!("{msg}");
    let m = mismatch(err);
    assert_eq!(m.format, Some(CheckpointFormat::HuggingFace));
    assert_eq!(
        m.missing,
        vec![
            "vision_model.encoder.layers.1.mlp.fc2.bias",
            "text_model.encoder.layers.0.self_attn.k_proj.weight",
            "text_projection.weight",
        ]
    );
    assert_eq!(
        m.unexpected,
        vec!["extra.weight", "vision_model.encoder.layers.2.mlp.fc1.bias"]
    );
    assert_eq!(m.wrong_shape.len(), 1);
    assert_eq!(m.wrong_shape[0].name, "text_model.final_layer_norm.weight");
    assert_eq!(m.wrong_shape[0].expected, vec![128]);
    assert_eq!(m.wrong_shape[0].found, vec![64]);
    assert_eq!(m.unsupported_dtype.len(), 1);
    assert_eq!(
        m.unsupported_dtype[0].name,
        "vision_model.pre_layrnorm.bias"
    );
    assert_eq!(m.unsupported_dtype[0].dtype, "I64");
    for needle in [
        "3 missing tensors",
        "text_projection.weight",
        "2 unexpected tensors: extra.weight",
        "text_model.final_layer_norm.weight (expected [128], found [64])",
        "vision_model.pre_layrnorm.bias (I64)",
    ] {
        assert!(msg.contains(needle), "{needle:?} not in: {msg}");
    }
}

#[test]
fn a_config_with_other_sizes_lists_every_wrong_shape() {
    let mut cfg = config();
    cfg.vision.intermediate_size = 512;
    cfg.projection_dim = 32;
    let err = ClipWeights::load(fixture("model.safetensors"), &cfg).unwrap_err();
    let m = mismatch(err);
    let names: Vec<&str> = m.wrong_shape.iter().map(|s| s.name.as_str()).collect();
    // fc1 weight+bias and fc2 weight per vision layer, plus both projections.
    assert_eq!(names.len(), 2 * 3 + 2, "{names:?}");
    assert!(names.contains(&"vision_model.encoder.layers.1.mlp.fc2.weight"));
    assert!(names.contains(&"visual_projection.weight"));
    assert!(m.missing.is_empty() && m.unexpected.is_empty());
}

#[test]
fn truncated_and_corrupt_files_are_errors_not_panics() {
    let cfg = config();
    let good = std::fs::read(fixture("model.safetensors")).unwrap();
    let dir = TempDir::new("corrupt");
    let header_len = u64::from_le_bytes(good[..8].try_into().unwrap()) as usize;
    let mut bad_header = good.clone();
    bad_header[10] = b'#';
    let mut huge_len = good.clone();
    huge_len[..8].copy_from_slice(&(u64::MAX / 2).to_le_bytes());
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("empty", vec![]),
        ("four bytes", good[..4].to_vec()),
        ("header only", good[..8 + header_len].to_vec()),
        ("half the data", good[..good.len() / 2].to_vec()),
        ("one byte short", good[..good.len() - 1].to_vec()),
        ("one byte long", [good.as_slice(), &[0]].concat()),
        ("bad header json", bad_header),
        ("absurd header length", huge_len),
    ];
    for (what, bytes) in cases {
        let path = dir.write("model.safetensors", &bytes);
        let err = ClipWeights::load(&path, &cfg).unwrap_err();
        println!("{what}: {err}");
        assert!(
            matches!(err, CheckpointError::Corrupt { .. }),
            "{what}: {err}"
        );
        assert!(
            err.to_string().contains("corrupt or truncated"),
            "{what}: {err}"
        );
        assert!(
            err.to_string().contains("model.safetensors"),
            "{what}: {err}"
        );
    }
}

#[test]
fn missing_file_and_unknown_layout() {
    let cfg = config();
    let err = ClipWeights::load(fixture("no-such-file.safetensors"), &cfg).unwrap_err();
    assert!(matches!(err, CheckpointError::NotFound { .. }), "{err}");
    assert!(err.to_string().contains("no-such-file.safetensors"));

    let mut raw = Raw(BTreeMap::new());
    raw.put_f32("encoder.weight", vec![1], &[0.0]);
    let err = ClipWeights::from_safetensors_bytes(&raw.bytes(), &cfg).unwrap_err();
    assert!(
        matches!(err, CheckpointError::UnknownFormat { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("encoder.weight"), "{err}");
}

#[test]
fn load_dir_reads_config_and_weights() {
    let (cfg, w) = ClipWeights::load_dir(fixture("")).unwrap();
    assert_eq!(cfg, config());
    assert_eq!(w.format, CheckpointFormat::HuggingFace);

    let dir = TempDir::new("dir");
    let err = ClipWeights::load_dir(&dir.0).unwrap_err();
    assert!(
        matches!(err, CheckpointError::NotFoundInDir { what: "config", .. }),
        "{err}"
    );
    dir.write(
        "config.json",
        b"{\"vision_config\": {\"hidden_size\": \"wide\"}}",
    );
    dir.write("model.safetensors", b"");
    let err = ClipWeights::load_dir(&dir.0).unwrap_err();
    assert!(matches!(err, CheckpointError::Config(_)), "{err}");
    assert!(
        err.to_string().contains("vision_config.hidden_size"),
        "{err}"
    );
}

#[test]
fn from_fn_builds_weights_and_checks_lengths() {
    let cfg = config();
    let w = ClipWeights::from_fn(&cfg, |_, shape| vec![0.5; shape.iter().product()]).unwrap();
    w.check_shapes(&cfg).unwrap();
    assert_eq!(
        w.vision_model.encoder.layers[0]
            .self_attn
            .qkv_proj
            .weight
            .shape(),
        &[384, 128]
    );
    let err = ClipWeights::from_fn(&cfg, |name, shape| {
        let n: usize = shape.iter().product();
        vec![0.0; if name == "logit_scale" { 2 } else { n }]
    })
    .unwrap_err();
    let m = mismatch(err);
    assert_eq!(m.wrong_shape.len(), 1);
    assert_eq!(m.wrong_shape[0].name, "logit_scale");
}

#[test]
fn check_shapes_reports_hand_edited_weights() {
    let cfg = config();
    let mut w = ClipWeights::load(fixture("model.safetensors"), &cfg).unwrap();
    w.text_model.encoder.layers.pop();
    w.visual_projection = ndarray::Array2::zeros((3, 3)).into_dyn();
    let m = mismatch(w.check_shapes(&cfg).unwrap_err());
    assert_eq!(m.missing.len(), 12);
    assert!(m
        .missing
        .iter()
        .all(|n| n.starts_with("text_model.encoder.layers.1.")));
    assert_eq!(m.wrong_shape[0].name, "visual_projection.weight");
}
