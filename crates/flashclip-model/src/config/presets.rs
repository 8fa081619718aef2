//! Built-in architectures (the OpenAI and LAION CLIP models).

use super::{
    Activation, ClipConfig, ConfigError, TextConfig, VisionConfig, CLIP_BOS, CLIP_EOS, CLIP_VOCAB,
    OPENAI_LOGIT_SCALE_INIT,
};

/// Canonical preset names, in the order [`ClipConfig::preset_names`] lists them.
const PRESET_NAMES: [&str; 6] = [
    "ViT-B-32",
    "ViT-B-16",
    "ViT-L-14",
    "ViT-L-14-336",
    "ViT-H-14",
    "ViT-bigG-14",
];

/// Architecture numbers of one preset, in open_clip's vocabulary.
struct PresetSpec {
    embed_dim: usize,
    image_size: usize,
    patch_size: usize,
    vision_width: usize,
    vision_layers: usize,
    vision_heads: usize,
    vision_mlp: usize,
    text_width: usize,
    text_layers: usize,
    text_heads: usize,
    act: Activation,
}

fn preset_spec(canonical: &str) -> Option<PresetSpec> {
    // OpenAI ViT-B/L: head width 64, MLP ratio 4, QuickGELU.
    let openai = |embed_dim, image_size, patch_size, vw, vl, tw, tl| PresetSpec {
        embed_dim,
        image_size,
        patch_size,
        vision_width: vw,
        vision_layers: vl,
        vision_heads: vw / 64,
        vision_mlp: vw * 4,
        text_width: tw,
        text_layers: tl,
        text_heads: tw / 64,
        act: Activation::QuickGelu,
    };
    Some(match canonical {
        "ViT-B-32" => openai(512, 224, 32, 768, 12, 512, 12),
        "ViT-B-16" => openai(512, 224, 16, 768, 12, 512, 12),
        "ViT-L-14" => openai(768, 224, 14, 1024, 24, 768, 12),
        "ViT-L-14-336" => openai(768, 336, 14, 1024, 24, 768, 12),
        // LAION open_clip models: exact GELU; ViT-H has head width 80, bigG 104.
        "ViT-H-14" => PresetSpec {
            embed_dim: 1024,
            image_size: 224,
            patch_size: 14,
            vision_width: 1280,
            vision_layers: 32,
            vision_heads: 16,
            vision_mlp: 5120,
            text_width: 1024,
            text_layers: 24,
            text_heads: 16,
            act: Activation::Gelu,
        },
        "ViT-bigG-14" => PresetSpec {
            embed_dim: 1280,
            image_size: 224,
            patch_size: 14,
            vision_width: 1664,
            vision_layers: 48,
            vision_heads: 16,
            vision_mlp: 8192,
            text_width: 1280,
            text_layers: 32,
            text_heads: 20,
            act: Activation::Gelu,
        },
        _ => return None,
    })
}

/// Maps the spellings people use ("ViT-L/14", "vit-l-14", "ViT-L/14@336px") to a canonical
/// preset name.
fn canonical_preset(name: &str) -> Option<&'static str> {
    let mut key = name.trim().replace('/', "-").to_ascii_lowercase();
    if let Some(stripped) = key.strip_suffix("@336px") {
        key = format!("{stripped}-336");
    }
    if let Some(stripped) = key.strip_suffix("-quickgelu") {
        // open_clip's "ViT-B-32-quickgelu" is the same architecture as OpenAI's.
        key = stripped.to_string();
    }
    PRESET_NAMES
        .iter()
        .copied()
        .find(|p| p.to_ascii_lowercase() == key)
}

impl ClipConfig {
    /// All preset names accepted by [`ClipConfig::preset`] (canonical spelling).
    pub fn preset_names() -> &'static [&'static str] {
        &PRESET_NAMES
    }

    /// A built-in architecture: `"ViT-B-32"`, `"ViT-B-16"`, `"ViT-L-14"`, `"ViT-L-14-336"`
    /// (OpenAI: QuickGELU), `"ViT-H-14"`, `"ViT-bigG-14"` (LAION: exact GELU).
    ///
    /// Matching ignores case and accepts OpenAI spellings (`"ViT-L/14"`,
    /// `"ViT-L/14@336px"`). All presets use LayerNorm eps 1e-5, 224 px images (336 for
    /// `ViT-L-14-336`), the CLIP vocabulary (49408 tokens, bos 49406, eos 49407, pad 1 as in
    /// HF's `CLIPTextConfig`) and a 77-token context.
    pub fn preset(name: &str) -> Result<ClipConfig, ConfigError> {
        let spec = canonical_preset(name)
            .and_then(preset_spec)
            .ok_or_else(|| ConfigError::UnknownPreset {
                name: name.to_string(),
                valid: PRESET_NAMES.to_vec(),
            })?;
        let config = ClipConfig {
            vision: VisionConfig {
                hidden_size: spec.vision_width,
                intermediate_size: spec.vision_mlp,
                num_hidden_layers: spec.vision_layers,
                num_attention_heads: spec.vision_heads,
                image_size: spec.image_size,
                patch_size: spec.patch_size,
                num_channels: 3,
                layer_norm_eps: 1e-5,
                hidden_act: spec.act,
            },
            text: TextConfig {
                vocab_size: CLIP_VOCAB,
                hidden_size: spec.text_width,
                intermediate_size: spec.text_width * 4,
                num_hidden_layers: spec.text_layers,
                num_attention_heads: spec.text_heads,
                max_position_embeddings: 77,
                layer_norm_eps: 1e-5,
                hidden_act: spec.act,
                bos_token_id: CLIP_BOS,
                eos_token_id: CLIP_EOS,
                pad_token_id: 1,
            },
            projection_dim: spec.embed_dim,
            logit_scale_init: OPENAI_LOGIT_SCALE_INIT,
        };
        config.validate()?;
        Ok(config)
    }
}
