//! Config parsing (Hugging Face and open_clip JSON), presets and validation errors.

use std::path::PathBuf;

use flashclip_model::config::{Activation, ClipConfig, ConfigError};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| ".".into()))
        .join("tests/fixtures/tiny")
        .join(name)
}

/// Compares the architecture (everything but token ids and logit-scale init).
fn assert_same_architecture(a: &ClipConfig, b: &ClipConfig) {
    assert_eq!(a.vision, b.vision);
    assert_eq!(a.projection_dim, b.projection_dim);
    let (x, y) = (&a.text, &b.text);
    assert_eq!(
        (
            x.vocab_size,
            x.hidden_size,
            x.intermediate_size,
            x.num_hidden_layers
        ),
        (
            y.vocab_size,
            y.hidden_size,
            y.intermediate_size,
            y.num_hidden_layers
        )
    );
    assert_eq!(
        (
            x.num_attention_heads,
            x.max_position_embeddings,
            x.hidden_act
        ),
        (
            y.num_attention_heads,
            y.max_position_embeddings,
            y.hidden_act
        )
    );
    assert_eq!(x.layer_norm_eps, y.layer_norm_eps);
}

#[test]
fn hf_fixture_config() {
    let c = ClipConfig::from_hf_json_file(fixture("config.json")).unwrap();
    let v = &c.vision;
    assert_eq!(
        (v.hidden_size, v.intermediate_size, v.num_hidden_layers),
        (128, 256, 2)
    );
    assert_eq!(
        (
            v.num_attention_heads,
            v.image_size,
            v.patch_size,
            v.num_channels
        ),
        (2, 32, 8, 3)
    );
    assert_eq!(v.hidden_act, Activation::QuickGelu);
    assert_eq!(v.layer_norm_eps, 1e-5);
    assert_eq!(
        (v.head_dim(), v.grid_size(), v.num_patches(), v.seq_len()),
        (64, 4, 16, 17)
    );
    assert_eq!(v.patch_dim(), 192);
    let t = &c.text;
    assert_eq!(
        (t.vocab_size, t.hidden_size, t.intermediate_size),
        (1000, 128, 256)
    );
    assert_eq!(
        (
            t.num_hidden_layers,
            t.num_attention_heads,
            t.max_position_embeddings
        ),
        (2, 2, 16)
    );
    assert_eq!(t.hidden_act, Activation::Gelu);
    assert_eq!(
        (t.bos_token_id, t.eos_token_id, t.pad_token_id),
        (998, 999, 0)
    );
    assert_eq!((t.head_dim(), t.max_len()), (64, 16));
    assert!(!t.legacy_eos_pooling());
    // The top-level projection_dim wins over the sub-configs' (512 in the file).
    assert_eq!(c.projection_dim, 64);
    assert_eq!(c.logit_scale_init, 3.0);
}

#[test]
fn hf_missing_keys_take_hf_defaults() {
    let c = ClipConfig::from_hf_json_str("{}").unwrap();
    let v = &c.vision;
    assert_eq!(
        (
            v.hidden_size,
            v.intermediate_size,
            v.num_hidden_layers,
            v.num_attention_heads
        ),
        (768, 3072, 12, 12)
    );
    assert_eq!((v.image_size, v.patch_size, v.num_channels), (224, 32, 3));
    assert_eq!(v.hidden_act, Activation::QuickGelu);
    assert_eq!(v.layer_norm_eps, 1e-5);
    let t = &c.text;
    assert_eq!(
        (
            t.vocab_size,
            t.hidden_size,
            t.intermediate_size,
            t.num_hidden_layers,
            t.num_attention_heads
        ),
        (49408, 512, 2048, 12, 8)
    );
    assert_eq!(t.max_position_embeddings, 77);
    assert_eq!(
        (t.bos_token_id, t.eos_token_id, t.pad_token_id),
        (49406, 49407, 1)
    );
    assert_eq!(c.projection_dim, 512);
    assert!((c.logit_scale_init - 2.6592).abs() < 1e-6);
    // HF's defaults are ViT-B/32.
    assert_same_architecture(&c, &ClipConfig::preset("ViT-B-32").unwrap());

    // Partial sub-dicts and nulls fill in too.
    let c = ClipConfig::from_hf_json_str(
        r#"{"vision_config": {"patch_size": 16, "hidden_act": null}, "text_config": null}"#,
    )
    .unwrap();
    assert_eq!(c.vision.patch_size, 16);
    assert_eq!(c.vision.hidden_act, Activation::QuickGelu);
    assert_same_architecture(&c, &ClipConfig::preset("ViT-B/16").unwrap());
}

/// Shaped like openai/clip-vit-large-patch14's config.json (legacy eos id 2).
const OPENAI_L14: &str = r#"{
  "_name_or_path": "clip-vit-large-patch14/",
  "architectures": ["CLIPModel"],
  "initializer_factor": 1.0,
  "logit_scale_init_value": 2.6592,
  "model_type": "clip",
  "projection_dim": 768,
  "text_config": {
    "_name_or_path": "", "add_cross_attention": false, "architectures": null,
    "attention_dropout": 0.0, "bos_token_id": 0, "dropout": 0.0, "eos_token_id": 2,
    "hidden_act": "quick_gelu", "hidden_size": 768, "initializer_factor": 1.0,
    "initializer_range": 0.02, "intermediate_size": 3072, "layer_norm_eps": 1e-05,
    "max_position_embeddings": 77, "model_type": "clip_text_model",
    "num_attention_heads": 12, "num_hidden_layers": 12, "pad_token_id": 1,
    "projection_dim": 768, "vocab_size": 49408
  },
  "text_config_dict": {"hidden_size": 768},
  "torch_dtype": "float32",
  "transformers_version": null,
  "vision_config": {
    "attention_dropout": 0.0, "dropout": 0.0, "hidden_act": "quick_gelu",
    "hidden_size": 1024, "image_size": 224, "initializer_factor": 1.0,
    "initializer_range": 0.02, "intermediate_size": 4096, "layer_norm_eps": 1e-05,
    "model_type": "clip_vision_model", "num_attention_heads": 16, "num_channels": 3,
    "num_hidden_layers": 24, "patch_size": 14, "projection_dim": 768
  }
}"#;

#[test]
fn hf_openai_style_config() {
    let c = ClipConfig::from_hf_json_str(OPENAI_L14).unwrap();
    assert_same_architecture(&c, &ClipConfig::preset("ViT-L/14").unwrap());
    assert_eq!((c.text.bos_token_id, c.text.eos_token_id), (0, 2));
    assert!(c.text.legacy_eos_pooling());
    // Square sizes may be written as [h, w] lists.
    let c = ClipConfig::from_hf_json_str(
        r#"{"vision_config": {"image_size": [336, 336], "patch_size": [14, 14], "hidden_size": 1024,
            "intermediate_size": 4096, "num_hidden_layers": 24, "num_attention_heads": 16},
            "text_config": {"hidden_size": 768, "intermediate_size": 3072, "num_attention_heads": 12,
            "eos_token_id": [49407]},
            "projection_dim": 768}"#,
    )
    .unwrap();
    assert_same_architecture(&c, &ClipConfig::preset("ViT-L/14@336px").unwrap());
    assert_eq!(c.text.eos_token_id, 49407);
}

#[test]
fn hf_activation_names() {
    for (name, act) in [
        ("quick_gelu", Activation::QuickGelu),
        ("gelu", Activation::Gelu),
        ("gelu_new", Activation::GeluTanh),
        ("gelu_pytorch_tanh", Activation::GeluTanh),
    ] {
        let json = format!(r#"{{"text_config": {{"hidden_act": "{name}"}}}}"#);
        assert_eq!(
            ClipConfig::from_hf_json_str(&json).unwrap().text.hidden_act,
            act
        );
        assert_eq!(Activation::from_hf_name(act.hf_name()).unwrap(), act);
    }
    let err =
        ClipConfig::from_hf_json_str(r#"{"vision_config": {"hidden_act": "relu"}}"#).unwrap_err();
    assert!(
        matches!(&err, ConfigError::UnknownActivation { name } if name == "relu"),
        "{err}"
    );
    assert!(err.to_string().contains("\"relu\""), "{err}");
}

#[test]
fn hf_parse_errors_name_the_field() {
    let err =
        ClipConfig::from_hf_json_str(r#"{"vision_config": {"hidden_size": "768"}}"#).unwrap_err();
    assert!(
        matches!(&err, ConfigError::WrongType { field, .. } if field == "vision_config.hidden_size"),
        "{err}"
    );
    assert_eq!(
        err.to_string(),
        "field `vision_config.hidden_size` must be a non-negative integer, found \"768\""
    );
    let err =
        ClipConfig::from_hf_json_str(r#"{"text_config": {"num_hidden_layers": -1}}"#).unwrap_err();
    assert!(
        err.to_string().contains("text_config.num_hidden_layers"),
        "{err}"
    );
    let err = ClipConfig::from_hf_json_str(r#"{"text_config": [1, 2]}"#).unwrap_err();
    assert!(
        err.to_string()
            .contains("`text_config` must be a JSON object"),
        "{err}"
    );
    let err = ClipConfig::from_hf_json_str(r#"{"model_type": "siglip"}"#).unwrap_err();
    assert!(matches!(err, ConfigError::Unsupported { .. }), "{err}");
    assert!(err.to_string().contains("siglip"), "{err}");
    let err = ClipConfig::from_hf_json_str(r#"{"vision_config": {"image_size": [224, 160]}}"#)
        .unwrap_err();
    assert!(
        err.to_string().contains("vision_config.image_size"),
        "{err}"
    );
}

#[test]
fn bad_json_and_missing_files() {
    let err = ClipConfig::from_hf_json_str("{\"vision_config\": {,}").unwrap_err();
    assert!(matches!(err, ConfigError::Json { .. }), "{err}");
    // serde's message, with its position.
    assert!(err.to_string().contains("line 1 column"), "{err}");

    let missing = fixture("does-not-exist.json");
    for err in [
        ClipConfig::from_hf_json_file(&missing).unwrap_err(),
        ClipConfig::from_open_clip_json_file(&missing).unwrap_err(),
        ClipConfig::from_json_file(&missing).unwrap_err(),
    ] {
        assert!(matches!(err, ConfigError::NotFound { .. }), "{err}");
        assert!(err.to_string().contains("config file not found"), "{err}");
        assert!(err.to_string().contains("does-not-exist.json"), "{err}");
    }

    let dir = std::env::temp_dir().join(format!("flashclip-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("config.json");
    std::fs::write(&path, "{\"embed_dim\": 512,").unwrap();
    let err = ClipConfig::from_json_file(&path).unwrap_err();
    assert!(err.to_string().contains("config.json"), "{err}");
    assert!(err.to_string().contains("EOF"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn validation_errors_are_specific() {
    let base = ClipConfig::preset("ViT-B-32").unwrap();

    let mut c = base.clone();
    c.vision.num_attention_heads = 7;
    let err = c.validate().unwrap_err();
    assert!(matches!(err, ConfigError::Inconsistent { .. }), "{err}");
    assert_eq!(
        err.to_string(),
        "inconsistent config: vision.hidden_size (768) is not divisible by vision.num_attention_heads (7)"
    );

    let mut c = base.clone();
    c.text.num_attention_heads = 16; // head dim 32
    let err = c.validate().unwrap_err();
    assert!(
        matches!(
            err,
            ConfigError::UnsupportedHeadDim {
                tower: "text",
                head_dim: 32,
                ..
            }
        ),
        "{err}"
    );
    assert!(
        err.to_string().contains("[64, 72, 80, 96, 104, 112, 128]"),
        "{err}"
    );

    let mut c = base.clone();
    c.vision.hidden_size = 12 * 88; // head dim 88: multiple of 8, no kernel
    c.vision.intermediate_size = 4 * c.vision.hidden_size;
    assert!(matches!(
        c.validate().unwrap_err(),
        ConfigError::UnsupportedHeadDim {
            tower: "vision",
            head_dim: 88,
            ..
        }
    ));
    c.vision.hidden_size = 12 * 72; // head dim 72 (SigLIP so400m's) has kernels
    c.vision.intermediate_size = 4 * c.vision.hidden_size;
    c.validate().unwrap();

    let mut c = base.clone();
    c.vision.image_size = 230;
    let err = c.validate().unwrap_err();
    assert!(err.to_string().contains("vision.image_size (230)"), "{err}");
    assert!(err.to_string().contains("vision.patch_size (32)"), "{err}");

    let mut c = base.clone();
    c.text.num_hidden_layers = 0;
    let err = c.validate().unwrap_err();
    assert!(
        matches!(
            err,
            ConfigError::InvalidField {
                field: "text.num_hidden_layers",
                ..
            }
        ),
        "{err}"
    );

    let mut c = base.clone();
    c.text.eos_token_id = 49408;
    let err = c.validate().unwrap_err();
    assert!(
        err.to_string().contains("text.eos_token_id (49408)"),
        "{err}"
    );

    let mut c = base.clone();
    c.vision.layer_norm_eps = 0.0;
    assert!(matches!(
        c.validate().unwrap_err(),
        ConfigError::InvalidField {
            field: "vision.layer_norm_eps",
            ..
        }
    ));

    let mut c = base.clone();
    c.projection_dim = 0;
    assert!(matches!(
        c.validate().unwrap_err(),
        ConfigError::InvalidField {
            field: "projection_dim",
            ..
        }
    ));

    // Parsers validate too.
    let err = ClipConfig::from_hf_json_str(r#"{"text_config": {"hidden_size": 500}}"#).unwrap_err();
    assert!(err.to_string().contains("text.hidden_size (500)"), "{err}");
    let err = ClipConfig::from_hf_json_str(r#"{"vision_config": {"patch_size": 0}}"#).unwrap_err();
    assert!(
        matches!(
            err,
            ConfigError::InvalidField {
                field: "vision.patch_size",
                ..
            }
        ),
        "{err}"
    );
}

/// open_clip's src/open_clip/model_configs/ViT-H-14.json.
const OPEN_CLIP_H14: &str = r#"{
    "embed_dim": 1024,
    "vision_cfg": {"image_size": 224, "layers": 32, "width": 1280, "head_width": 80, "patch_size": 14},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 1024, "heads": 16, "layers": 24}
}"#;

#[test]
fn open_clip_configs() {
    let h = ClipConfig::from_open_clip_json_str(OPEN_CLIP_H14).unwrap();
    assert_same_architecture(&h, &ClipConfig::preset("ViT-H-14").unwrap());
    assert_eq!(
        (
            h.text.bos_token_id,
            h.text.eos_token_id,
            h.text.pad_token_id
        ),
        (49406, 49407, 0)
    );

    // bigG: mlp_ratio 4.9231 -> int(1664 * 4.9231) = 8192.
    let g = ClipConfig::from_open_clip_json_str(
        r#"{"embed_dim": 1280,
            "vision_cfg": {"image_size": 224, "layers": 48, "width": 1664, "head_width": 104,
                           "mlp_ratio": 4.9231, "patch_size": 14},
            "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 1280, "heads": 20, "layers": 32}}"#,
    )
    .unwrap();
    assert_same_architecture(&g, &ClipConfig::preset("ViT-bigG-14").unwrap());

    // OpenAI models in open_clip: quick_gelu at top level; defaults for head_width/mlp_ratio.
    let b32 = ClipConfig::from_open_clip_json_str(
        r#"{"embed_dim": 512, "quick_gelu": true,
            "vision_cfg": {"image_size": 224, "layers": 12, "width": 768, "patch_size": 32},
            "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 512, "heads": 8, "layers": 12}}"#,
    )
    .unwrap();
    assert_same_architecture(&b32, &ClipConfig::preset("ViT-B-32").unwrap());
    // Without quick_gelu open_clip uses exact GELU.
    let b32_gelu = ClipConfig::from_open_clip_json_str(
        r#"{"embed_dim": 512, "vision_cfg": {"patch_size": 32}, "text_cfg": {}}"#,
    )
    .unwrap();
    assert_eq!(b32_gelu.vision.hidden_act, Activation::Gelu);
    assert_eq!(b32_gelu.text.hidden_act, Activation::Gelu);
    let mut gelu_vision = ClipConfig::preset("ViT-B-32").unwrap().vision;
    gelu_vision.hidden_act = Activation::Gelu;
    assert_eq!(b32_gelu.vision, gelu_vision);

    // A hub open_clip_config.json wraps the model config.
    let wrapped =
        format!(r#"{{"model_cfg": {OPEN_CLIP_H14}, "preprocess_cfg": {{"mean": [0.5]}}}}"#);
    assert_eq!(ClipConfig::from_open_clip_json_str(&wrapped).unwrap(), h);
}

#[test]
fn open_clip_errors() {
    let err =
        ClipConfig::from_open_clip_json_str(r#"{"vision_cfg": {}, "text_cfg": {}}"#).unwrap_err();
    assert!(
        matches!(&err, ConfigError::MissingField { field } if field == "embed_dim"),
        "{err}"
    );
    let err = ClipConfig::from_open_clip_json_str(
        r#"{"embed_dim": 1024, "vision_cfg": {"image_size": 224, "layers": [3, 4, 6, 3], "width": 64}}"#,
    )
    .unwrap_err();
    assert!(matches!(err, ConfigError::Unsupported { .. }), "{err}");
    assert!(err.to_string().contains("vision_cfg.layers"), "{err}");
    assert!(err.to_string().contains("ResNet"), "{err}");
    let err = ClipConfig::from_open_clip_json_str(
        r#"{"embed_dim": 512, "vision_cfg": {"timm_model_name": "convnext_base"}}"#,
    )
    .unwrap_err();
    assert!(
        err.to_string().contains("vision_cfg.timm_model_name"),
        "{err}"
    );
    let err = ClipConfig::from_open_clip_json_str(
        r#"{"model_cfg": {"embed_dim": 512, "text_cfg": {"hf_model_name": "xlm-roberta-base"}}}"#,
    )
    .unwrap_err();
    assert!(
        err.to_string().contains("model_cfg.text_cfg.hf_model_name"),
        "{err}"
    );
    let err = ClipConfig::from_open_clip_json_str(
        r#"{"embed_dim": 512, "vision_cfg": {"attentional_pool": true}}"#,
    )
    .unwrap_err();
    assert!(err.to_string().contains("attentional pooling"), "{err}");
    let err = ClipConfig::from_open_clip_json_str(
        r#"{"embed_dim": 512, "vision_cfg": {"width": 768, "head_width": 100}}"#,
    )
    .unwrap_err();
    assert!(
        err.to_string()
            .contains("vision_cfg.width (768) is not divisible by vision_cfg.head_width (100)"),
        "{err}"
    );
    let err = ClipConfig::from_open_clip_json_str(
        r#"{"embed_dim": 512, "text_cfg": {"pool_type": "last"}}"#,
    )
    .unwrap_err();
    assert!(err.to_string().contains("text_cfg.pool_type"), "{err}");
}

#[test]
fn from_json_file_detects_the_format() {
    let dir = std::env::temp_dir().join(format!("flashclip-config-detect-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let oc = dir.join("ViT-H-14.json");
    std::fs::write(&oc, OPEN_CLIP_H14).unwrap();
    let hf = dir.join("config.json");
    std::fs::write(&hf, OPENAI_L14).unwrap();
    assert_eq!(
        ClipConfig::from_json_file(&oc).unwrap(),
        ClipConfig::from_open_clip_json_file(&oc).unwrap()
    );
    assert_eq!(
        ClipConfig::from_json_file(&hf).unwrap(),
        ClipConfig::from_hf_json_file(&hf).unwrap()
    );
    assert_eq!(
        ClipConfig::from_json_file(&oc).unwrap().vision.head_dim(),
        80
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
