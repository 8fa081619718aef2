//! The published Chinese-CLIP sizes.
//!
//! From OFA-Sys/Chinese-CLIP: `cn_clip/clip/model_configs/ViT-L-14-336.json` (embed 768, 336 px, 24 layers, width
//! 1024, patch 14), `ViT-H-14.json` (embed 1024, 32 layers, width 1280, head width 80, patch 14) and
//! `RoBERTa-wwm-ext-large-chinese.json` (vocab 21128, width 1024, 24 layers, 16 heads, MLP 4096, 512 positions, 2
//! token types, GELU); the README's model card for the pairings (ViT-B/16, ViT-L/14 and ViT-L/14@336px with
//! RoBERTa-wwm-Base, ViT-H/14 with RoBERTa-wwm-Large) and parameter counts (188M, 406M, 407M, 958M, which the
//! presets reproduce). RoBERTa-wwm-Base is BERT-base (width 768, 12 layers, 12 heads) on the same vocabulary, as
//! Hugging Face's `OFA-Sys/chinese-clip-vit-base-patch16` config says. `cn_clip` keeps OpenAI's ViT: heads of width
//! 64 unless stated, MLP ratio 4, QuickGELU, LayerNorm eps 1e-5; BERT's LayerNorm eps is 1e-12.

use super::config::{BertConfig, ChineseClipConfig};
use crate::config::{Activation, ConfigError, VisionConfig, OPENAI_LOGIT_SCALE_INIT};

/// Canonical preset names.
const PRESET_NAMES: [&str; 4] = [
    "CN-CLIP-ViT-B-16",
    "CN-CLIP-ViT-L-14",
    "CN-CLIP-ViT-L-14-336",
    "CN-CLIP-ViT-H-14",
];

/// RoBERTa-wwm-ext-base-chinese (ViT-B and ViT-L models) or -large-chinese (ViT-H).
fn roberta_wwm(large: bool) -> BertConfig {
    let (width, layers, heads) = if large { (1024, 24, 16) } else { (768, 12, 12) };
    BertConfig {
        vocab_size: 21128,
        hidden_size: width,
        intermediate_size: 4 * width,
        num_hidden_layers: layers,
        num_attention_heads: heads,
        max_position_embeddings: 512,
        type_vocab_size: 2,
        layer_norm_eps: 1e-12,
        hidden_act: Activation::Gelu,
        pad_token_id: 0,
    }
}

fn vit(width: usize, layers: usize, head_width: usize, patch: usize, image: usize) -> VisionConfig {
    VisionConfig {
        hidden_size: width,
        intermediate_size: 4 * width,
        num_hidden_layers: layers,
        num_attention_heads: width / head_width,
        image_size: image,
        patch_size: patch,
        num_channels: 3,
        layer_norm_eps: 1e-5,
        hidden_act: Activation::QuickGelu,
    }
}

/// Maps "ViT-L/14@336px", "cn-clip-vit-l-14-336", "CN-CLIP/ViT-H-14" to a canonical name.
fn canonical(name: &str) -> Option<&'static str> {
    let mut key = name.trim().replace('/', "-").to_ascii_lowercase();
    if let Some(stripped) = key.strip_suffix("@336px") {
        key = format!("{stripped}-336");
    }
    if !key.starts_with("cn-clip-") {
        key = format!("cn-clip-{key}");
    }
    PRESET_NAMES
        .iter()
        .copied()
        .find(|p| p.to_ascii_lowercase() == key)
}

impl ChineseClipConfig {
    /// All preset names accepted by [`ChineseClipConfig::preset`] (canonical spelling).
    pub fn preset_names() -> &'static [&'static str] {
        &PRESET_NAMES
    }

    /// A published Chinese-CLIP architecture: `"CN-CLIP-ViT-B-16"`, `"CN-CLIP-ViT-L-14"`,
    /// `"CN-CLIP-ViT-L-14-336"`, `"CN-CLIP-ViT-H-14"`. Case is ignored, the `CN-CLIP-` prefix is optional and the
    /// OpenAI spellings are accepted (`"ViT-L/14@336px"`).
    pub fn preset(name: &str) -> Result<ChineseClipConfig, ConfigError> {
        let unknown = || ConfigError::UnknownPreset {
            name: name.to_string(),
            valid: PRESET_NAMES.to_vec(),
        };
        let (vision, text, projection_dim) = match canonical(name).ok_or_else(unknown)? {
            "CN-CLIP-ViT-B-16" => (vit(768, 12, 64, 16, 224), roberta_wwm(false), 512),
            "CN-CLIP-ViT-L-14" => (vit(1024, 24, 64, 14, 224), roberta_wwm(false), 768),
            "CN-CLIP-ViT-L-14-336" => (vit(1024, 24, 64, 14, 336), roberta_wwm(false), 768),
            "CN-CLIP-ViT-H-14" => (vit(1280, 32, 80, 14, 224), roberta_wwm(true), 1024),
            _ => return Err(unknown()),
        };
        let config = ChineseClipConfig {
            vision,
            text,
            projection_dim,
            logit_scale_init: OPENAI_LOGIT_SCALE_INIT,
        };
        config.validate()?;
        Ok(config)
    }
}
