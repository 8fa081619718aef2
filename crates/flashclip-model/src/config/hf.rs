//! Hugging Face `CLIPModel` `config.json`: serde structs and their conversion, with the
//! defaults of transformers' `CLIPVisionConfig` / `CLIPTextConfig` / `CLIPConfig`.

use serde::Deserialize;
use serde_json::Value;

use super::assumed::{Assumed, Defaults, Reader};
use super::field::{root_object, Field, Section, Side, TokenId, TokenIdOrList};
use super::{
    Activation, ClipConfig, ConfigError, TextConfig, VisionConfig, CLIP_BOS, CLIP_EOS, CLIP_VOCAB,
};

/// The top level of a `CLIPConfig`-shaped `config.json` (CLIP's and its derivatives'), `T` the text section.
#[derive(Deserialize, Default)]
#[serde(default, bound(deserialize = "T: Default + for<'a> Deserialize<'a>"))]
struct Root<T> {
    model_type: Field<String>,
    vision_config: Field<Section<Vision>>,
    vision_config_dict: Field<Section<Vision>>,
    text_config: Field<Section<T>>,
    text_config_dict: Field<Section<T>>,
    projection_dim: Field<usize>,
    logit_scale_init_value: Field<f64>,
}

/// What a `CLIPConfig`-shaped `config.json` holds, before the whole is validated.
pub(crate) struct ClipLayout<C> {
    pub(crate) vision: VisionConfig,
    pub(crate) text: C,
    pub(crate) projection_dim: usize,
    pub(crate) logit_scale_init: f32,
    pub(crate) assumed: Assumed,
}

/// Reads a `CLIPConfig`-shaped `config.json` with transformers' defaults: a `model_type` other than `model_type`
/// is refused with `unsupported`'s message; the text section is read by `text`.
pub(crate) fn clip_layout<T, C>(
    value: &Value,
    model_type: &str,
    unsupported: impl FnOnce(&str) -> String,
    text: impl FnOnce(T, &str, &mut Assumed) -> Result<C, ConfigError>,
) -> Result<ClipLayout<C>, ConfigError>
where
    T: Default + for<'de> Deserialize<'de>,
{
    let root: Root<T> = root_object(value)?;
    if let Some(found) = root.model_type.resolve("model_type")? {
        if found != model_type {
            return Err(ConfigError::Unsupported {
                what: unsupported(&found),
            });
        }
    }
    let mut assumed = Assumed::default();
    let (v, vision_path) = section(
        root.vision_config,
        root.vision_config_dict,
        "vision_config",
        &mut assumed,
    )?;
    let (t, text_path) = section(
        root.text_config,
        root.text_config_dict,
        "text_config",
        &mut assumed,
    )?;
    let vision = vision(v, &vision_path, &mut assumed)?;
    let text = text(t, &text_path, &mut assumed)?;
    let mut r = Reader {
        assumed: &mut assumed,
        prefix: "",
        defaults: Defaults::HuggingFace,
    };
    let projection_dim = r.take(
        root.projection_dim,
        "projection_dim",
        512,
        &["projection_dim"],
    )?;
    let logit_scale_init = r.take(
        root.logit_scale_init_value,
        "logit_scale_init_value",
        2.6592,
        &["logit_scale_init"],
    )? as f32;
    Ok(ClipLayout {
        vision,
        text,
        projection_dim,
        logit_scale_init,
        assumed,
    })
}

#[derive(Deserialize, Default, Clone)]
#[serde(default)]
pub(crate) struct Vision {
    hidden_size: Field<usize>,
    intermediate_size: Field<usize>,
    num_hidden_layers: Field<usize>,
    num_attention_heads: Field<usize>,
    image_size: Field<Side>,
    patch_size: Field<Side>,
    num_channels: Field<usize>,
    layer_norm_eps: Field<f64>,
    hidden_act: Field<String>,
}

#[derive(Deserialize, Default, Clone)]
#[serde(default)]
struct Text {
    vocab_size: Field<usize>,
    hidden_size: Field<usize>,
    intermediate_size: Field<usize>,
    num_hidden_layers: Field<usize>,
    num_attention_heads: Field<usize>,
    max_position_embeddings: Field<usize>,
    layer_norm_eps: Field<f64>,
    hidden_act: Field<String>,
    bos_token_id: Field<TokenId>,
    eos_token_id: Field<TokenIdOrList>,
    pad_token_id: Field<TokenId>,
}

/// The sub-config at `key`, or at the legacy `{key}_dict` when only that one is given;
/// a missing one is recorded and read as empty (all defaults).
pub(crate) fn section<T: Default + for<'de> Deserialize<'de>>(
    current: Field<Section<T>>,
    legacy: Field<Section<T>>,
    key: &'static str,
    assumed: &mut Assumed,
) -> Result<(T, String), ConfigError> {
    let (field, path) = if !current.is_given() && legacy.is_given() {
        (legacy, format!("{key}_dict"))
    } else {
        (current, key.to_string())
    };
    Ok(match field.resolve(&path)? {
        Some(Section(t)) => (t, path),
        None => {
            assumed.missing_section(&path, Defaults::HuggingFace);
            (T::default(), path)
        }
    })
}

/// Parses and validates a `config.json`, returning the defaults it assumed.
pub(crate) fn parse(value: &Value) -> Result<(ClipConfig, Assumed), ConfigError> {
    let layout = clip_layout(
        value,
        "clip",
        |found| {
            format!(
                "model_type \"{found}\" (only CLIPModel configs, model_type \"clip\", are supported)"
            )
        },
        text,
    )?;
    let config = ClipConfig {
        vision: layout.vision,
        text: layout.text,
        projection_dim: layout.projection_dim,
        logit_scale_init: layout.logit_scale_init,
    };
    config.validate_noting(&layout.assumed)?;
    Ok((config, layout.assumed))
}

pub(crate) fn activation(name: String) -> Result<Activation, ConfigError> {
    Activation::from_hf_name(&name)
}

pub(crate) fn vision(
    v: Vision,
    prefix: &str,
    assumed: &mut Assumed,
) -> Result<VisionConfig, ConfigError> {
    let mut r = Reader {
        assumed,
        prefix,
        defaults: Defaults::HuggingFace,
    };
    Ok(VisionConfig {
        hidden_size: r.take(v.hidden_size, "hidden_size", 768, &["vision.hidden_size"])?,
        intermediate_size: r.take(
            v.intermediate_size,
            "intermediate_size",
            3072,
            &["vision.intermediate_size"],
        )?,
        num_hidden_layers: r.take(
            v.num_hidden_layers,
            "num_hidden_layers",
            12,
            &["vision.num_hidden_layers"],
        )?,
        num_attention_heads: r.take(
            v.num_attention_heads,
            "num_attention_heads",
            12,
            &["vision.num_attention_heads"],
        )?,
        image_size: r
            .take(
                v.image_size,
                "image_size",
                Side(224),
                &["vision.image_size"],
            )?
            .0,
        patch_size: r
            .take(v.patch_size, "patch_size", Side(32), &["vision.patch_size"])?
            .0,
        num_channels: r.take(v.num_channels, "num_channels", 3, &["vision.num_channels"])?,
        layer_norm_eps: r.take(
            v.layer_norm_eps,
            "layer_norm_eps",
            1e-5,
            &["vision.layer_norm_eps"],
        )?,
        hidden_act: activation(r.take(
            v.hidden_act,
            "hidden_act",
            "quick_gelu".into(),
            &["vision.hidden_act"],
        )?)?,
    })
}

fn text(t: Text, prefix: &str, assumed: &mut Assumed) -> Result<TextConfig, ConfigError> {
    let mut r = Reader {
        assumed,
        prefix,
        defaults: Defaults::HuggingFace,
    };
    Ok(TextConfig {
        vocab_size: r.take(t.vocab_size, "vocab_size", CLIP_VOCAB, &["text.vocab_size"])?,
        hidden_size: r.take(t.hidden_size, "hidden_size", 512, &["text.hidden_size"])?,
        intermediate_size: r.take(
            t.intermediate_size,
            "intermediate_size",
            2048,
            &["text.intermediate_size"],
        )?,
        num_hidden_layers: r.take(
            t.num_hidden_layers,
            "num_hidden_layers",
            12,
            &["text.num_hidden_layers"],
        )?,
        num_attention_heads: r.take(
            t.num_attention_heads,
            "num_attention_heads",
            8,
            &["text.num_attention_heads"],
        )?,
        max_position_embeddings: r.take(
            t.max_position_embeddings,
            "max_position_embeddings",
            77,
            &["text.max_position_embeddings"],
        )?,
        layer_norm_eps: r.take(
            t.layer_norm_eps,
            "layer_norm_eps",
            1e-5,
            &["text.layer_norm_eps"],
        )?,
        hidden_act: activation(r.take(
            t.hidden_act,
            "hidden_act",
            "quick_gelu".into(),
            &["text.hidden_act"],
        )?)?,
        bos_token_id: r
            .take(
                t.bos_token_id,
                "bos_token_id",
                TokenId(CLIP_BOS),
                &["text.bos_token_id"],
            )?
            .0,
        eos_token_id: r
            .take(
                t.eos_token_id,
                "eos_token_id",
                TokenIdOrList(CLIP_EOS),
                &["text.eos_token_id"],
            )?
            .0,
        pad_token_id: r
            .take(
                t.pad_token_id,
                "pad_token_id",
                TokenId(1),
                &["text.pad_token_id"],
            )?
            .0,
    })
}
