//! Bad inputs a new user runs into: absurd sizes, missing keys that take HF's defaults,
//! sizes whose products overflow, and FLOP counts with impossible text lengths.

use flashclip_model::config::{ClipConfig, ConfigError};
use flashclip_model::flops::{checked_count, FlopsError, FlopsInput};

#[test]
fn absurd_sizes_are_rejected_with_the_limit() {
    let err =
        ClipConfig::from_hf_json_str(r#"{"vision_config": {"num_hidden_layers": 100000000}}"#)
            .unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid `vision.num_hidden_layers` = 100000000: must be at most 1024"
    );
    for (json, field, limit) in [
        (
            r#"{"text_config": {"intermediate_size": 70000}}"#,
            "text.intermediate_size",
            "65536",
        ),
        (
            r#"{"vision_config": {"hidden_size": 1048576}}"#,
            "vision.hidden_size",
            "65536",
        ),
        (
            r#"{"text_config": {"vocab_size": 100000000}}"#,
            "text.vocab_size",
            "16777216",
        ),
        (
            r#"{"text_config": {"max_position_embeddings": 1000000}}"#,
            "text.max_position_embeddings",
            "65536",
        ),
        (
            r#"{"vision_config": {"image_size": 20000}}"#,
            "vision.image_size",
            "16384",
        ),
    ] {
        let err = ClipConfig::from_hf_json_str(json).unwrap_err().to_string();
        assert!(
            err.contains(field) && err.contains(&format!("at most {limit}")),
            "{err}"
        );
    }
}

#[test]
fn huge_image_grids_do_not_wrap() {
    // 2^40 px at patch 1: rejected by the image-size limit before any product is formed.
    let err = ClipConfig::from_hf_json_str(
        r#"{"vision_config": {"image_size": 1099511627776, "patch_size": 1}}"#,
    )
    .unwrap_err();
    assert!(err.to_string().contains("vision.image_size"), "{err}");
    assert!(err.to_string().contains("at most 16384"), "{err}");
    // Within the side limit, the patch count is checked.
    let err = ClipConfig::from_hf_json_str(
        r#"{"vision_config": {"image_size": 16384, "patch_size": 1}}"#,
    )
    .unwrap_err();
    assert!(
        err.to_string()
            .contains("16384 patches per side, 16384² exceeds the limit of 65536 patches"),
        "{err}"
    );
    // A config built by hand keeps the accessors from wrapping.
    let mut c = ClipConfig::preset("ViT-B-32").unwrap();
    c.vision.image_size = usize::MAX;
    c.vision.patch_size = 1;
    assert_eq!(c.vision.num_patches(), usize::MAX);
    assert_eq!(c.vision.seq_len(), usize::MAX);
    assert!(c.validate().is_err());
}

#[test]
fn missing_keys_are_recorded_and_named_in_errors() {
    let json = r#"{"vision_config": {"num_attention_heads": 2, "intermediate_size": 256,
                   "num_hidden_layers": 2, "image_size": 32, "patch_size": 8},
                   "text_config": {"hidden_size": 128, "intermediate_size": 256,
                   "num_attention_heads": 2, "num_hidden_layers": 2}, "projection_dim": 64}"#;
    let err = ClipConfig::from_json_str_noting_defaults(json).unwrap_err();
    assert!(
        matches!(
            err.without_defaults_note(),
            ConfigError::UnsupportedHeadDim { head_dim: 384, .. }
        ),
        "{err}"
    );
    assert!(
        err.to_string().ends_with(
            "; vision_config.hidden_size was missing from config.json, HF's default 768 was assumed"
        ),
        "{err}"
    );
    // Defaults unrelated to the failure are not mentioned.
    assert!(!err.to_string().contains("layer_norm_eps"), "{err}");

    let fixed = json.replace(
        r#""num_attention_heads": 2, "intermediate"#,
        r#""hidden_size": 128, "num_attention_heads": 2, "intermediate"#,
    );
    let (config, assumed) = ClipConfig::from_json_str_noting_defaults(&fixed).unwrap();
    assert_eq!(config.vision.hidden_size, 128);
    assert_eq!(assumed.value_of("vision_config.hidden_size"), None);
    assert_eq!(
        assumed.value_of("vision_config.layer_norm_eps"),
        Some("0.00001")
    );
    assert_eq!(
        assumed.value_of("text_config.hidden_act"),
        Some("quick_gelu")
    );
    assert!(assumed.missing_sections().is_empty());
    assert_eq!(assumed.note(), None);
}

#[test]
fn missing_sections_are_noted() {
    let (config, assumed) =
        ClipConfig::from_json_str_noting_defaults(r#"{"text_config": {}}"#).unwrap();
    assert_eq!(config.vision.hidden_size, 768);
    assert_eq!(assumed.missing_sections(), ["vision_config"]);
    assert_eq!(
        assumed.note().as_deref(),
        Some("config.json has no vision_config; HF's CLIPVisionConfig defaults were assumed")
    );
    assert!(assumed
        .defaults()
        .iter()
        .any(|d| d.field() == "vision_config.patch_size" && d.value() == "32"));

    let (_, assumed) =
        ClipConfig::from_json_str_noting_defaults(r#"{"embed_dim": 512, "vision_cfg": {}}"#)
            .unwrap();
    assert_eq!(
        assumed.note().as_deref(),
        Some("the open_clip config has no text_cfg; open_clip's CLIPTextCfg defaults were assumed")
    );
}

#[test]
fn wrong_types_name_field_expectation_and_value() {
    for (json, message) in [
        (
            r#"{"vision_config": {"image_size": "224"}}"#,
            "field `vision_config.image_size` must be a non-negative integer or a [height, width] pair, found \"224\"",
        ),
        (
            r#"{"text_config": {"layer_norm_eps": true}}"#,
            "field `text_config.layer_norm_eps` must be a number, found true",
        ),
        (
            r#"{"text_config": {"bos_token_id": 4294967296}}"#,
            "field `text_config.bos_token_id` must be a 32-bit token id, found 4294967296",
        ),
        (
            r#"{"embed_dim": 512, "quick_gelu": "yes"}"#,
            "field `quick_gelu` must be true or false, found \"yes\"",
        ),
        ("[1]", "field `<root>` must be a JSON object, found [1]"),
    ] {
        assert_eq!(ClipConfig::from_json_str_noting_defaults(json).unwrap_err().to_string(), message);
    }
}

#[test]
fn flops_text_length_and_layers_are_checked() {
    let input = FlopsInput::from(&ClipConfig::preset("ViT-L-14-336").unwrap());
    checked_count(&input, 128, 128, 77).unwrap();
    for text_len in [0, 78] {
        let err = checked_count(&input, 1, 1, text_len).unwrap_err();
        assert!(matches!(err, FlopsError::TextLen { .. }), "{err}");
        assert_eq!(
            err.to_string(),
            format!("text length {text_len} must be between 1 and the context length 77")
        );
    }
    let mut absurd = input;
    absurd.vision.layers = 100_000_000;
    let err = checked_count(&absurd, 1, 1, 8).unwrap_err();
    assert!(
        err.to_string()
            .contains("vision.layers = 100000000 exceeds the limit of 1024"),
        "{err}"
    );
    let err = FlopsInput::from_open_clip_json_str(
        r#"{"embed_dim": 512, "vision_cfg": {"layers": 100000000}}"#,
    )
    .unwrap_err();
    assert!(err.to_string().contains("must be at most 1024"), "{err}");
}
