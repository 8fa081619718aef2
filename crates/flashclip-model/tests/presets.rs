//! Built-in presets: names, spellings and architecture numbers.

use flashclip_model::config::{Activation, ClipConfig, ConfigError, SUPPORTED_HEAD_DIMS};

#[test]
fn presets() {
    assert_eq!(
        ClipConfig::preset_names(),
        [
            "ViT-B-32",
            "ViT-B-16",
            "ViT-L-14",
            "ViT-L-14-336",
            "ViT-H-14",
            "ViT-bigG-14"
        ]
    );
    for name in ClipConfig::preset_names() {
        let c = ClipConfig::preset(name).unwrap();
        c.validate().unwrap();
        assert!(SUPPORTED_HEAD_DIMS.contains(&c.vision.head_dim()));
        assert!(SUPPORTED_HEAD_DIMS.contains(&c.text.head_dim()));
        assert_eq!(c.text.max_position_embeddings, 77);
        assert_eq!(c.text.vocab_size, 49408);
        assert_eq!(c.vision.layer_norm_eps, 1e-5);
    }
    let b32 = ClipConfig::preset("ViT-B/32").unwrap();
    assert_eq!(b32, ClipConfig::preset("ViT-B-32").unwrap());
    assert_eq!(b32, ClipConfig::preset("vit-b-32").unwrap());
    assert_eq!(b32, ClipConfig::preset("ViT-B-32-quickgelu").unwrap());
    assert_eq!((b32.vision.num_patches(), b32.vision.seq_len()), (49, 50));
    assert_eq!(b32.vision.hidden_act, Activation::QuickGelu);
    assert_eq!(b32.projection_dim, 512);

    let b16 = ClipConfig::preset("ViT-B/16").unwrap();
    assert_eq!(b16.vision.seq_len(), 197);

    let l14 = ClipConfig::preset("ViT-L/14").unwrap();
    assert_eq!(
        (
            l14.vision.hidden_size,
            l14.vision.num_hidden_layers,
            l14.vision.seq_len()
        ),
        (1024, 24, 257)
    );
    assert_eq!(
        (
            l14.text.hidden_size,
            l14.text.num_attention_heads,
            l14.projection_dim
        ),
        (768, 12, 768)
    );
    let l336 = ClipConfig::preset("ViT-L/14@336px").unwrap();
    assert_eq!((l336.vision.image_size, l336.vision.seq_len()), (336, 577));
    assert_eq!(l336, ClipConfig::preset("ViT-L-14-336").unwrap());

    let h = ClipConfig::preset("ViT-H-14").unwrap();
    assert_eq!(h.vision.hidden_act, Activation::Gelu);
    assert_eq!(
        (
            h.vision.hidden_size,
            h.vision.num_hidden_layers,
            h.vision.num_attention_heads,
            h.vision.head_dim()
        ),
        (1280, 32, 16, 80)
    );
    assert_eq!(h.vision.intermediate_size, 5120);
    assert_eq!(
        (
            h.text.hidden_size,
            h.text.num_hidden_layers,
            h.text.num_attention_heads
        ),
        (1024, 24, 16)
    );
    assert_eq!(h.projection_dim, 1024);

    let g = ClipConfig::preset("ViT-bigG/14").unwrap();
    assert_eq!(
        (
            g.vision.hidden_size,
            g.vision.num_hidden_layers,
            g.vision.num_attention_heads,
            g.vision.head_dim()
        ),
        (1664, 48, 16, 104)
    );
    assert_eq!(g.vision.intermediate_size, 8192);
    assert_eq!(
        (
            g.text.hidden_size,
            g.text.num_hidden_layers,
            g.text.num_attention_heads,
            g.text.head_dim()
        ),
        (1280, 32, 20, 64)
    );
    assert_eq!((g.text.intermediate_size, g.projection_dim), (5120, 1280));

    let err = ClipConfig::preset("ViT-X-99").unwrap_err();
    assert!(matches!(err, ConfigError::UnknownPreset { .. }), "{err}");
    assert_eq!(
        err.to_string(),
        "unknown preset \"ViT-X-99\"; valid presets: ViT-B-32, ViT-B-16, ViT-L-14, ViT-L-14-336, ViT-H-14, ViT-bigG-14"
    );
}
