//! open_clip model JSON (`ViT-H-14.json`, a hub `open_clip_config.json`, EVA-CLIP's):
//! serde structs and their conversion, with open_clip's `CLIPVisionCfg` / `CLIPTextCfg`
//! defaults.

use serde::Deserialize;
use serde_json::Value;

use super::assumed::{Assumed, Defaults, Reader};
use super::field::{root_object, Field, Layers, Section, Side};
use super::{
    Activation, ClipConfig, ConfigError, TextConfig, VisionConfig, CLIP_BOS, CLIP_EOS, CLIP_VOCAB,
    OPENAI_LOGIT_SCALE_INIT,
};

#[derive(Deserialize, Default)]
#[serde(default)]
struct Wrapper {
    model_cfg: Field<Section<Model>>,
}

#[derive(Deserialize, Default, Clone)]
#[serde(default)]
struct Model {
    embed_dim: Field<usize>,
    quick_gelu: Field<bool>,
    vision_cfg: Field<Section<Vision>>,
    text_cfg: Field<Section<Text>>,
}

#[derive(Deserialize, Default, Clone)]
#[serde(default)]
struct Vision {
    image_size: Field<Side>,
    patch_size: Field<Side>,
    width: Field<usize>,
    layers: Field<Layers>,
    head_width: Field<usize>,
    mlp_ratio: Field<f64>,
    timm_model_name: Field<Value>,
    ls_init_value: Field<Value>,
    attentional_pool: Field<bool>,
    no_ln_pre: Field<bool>,
    final_ln_after_pool: Field<bool>,
    input_patchnorm: Field<bool>,
    pool_type: Field<String>,
    eva_model_name: Field<Value>,
    naiveswiglu: Field<bool>,
    swiglu: Field<bool>,
    subln: Field<bool>,
    rope: Field<bool>,
}

#[derive(Deserialize, Default, Clone)]
#[serde(default)]
struct Text {
    context_length: Field<usize>,
    vocab_size: Field<usize>,
    width: Field<usize>,
    heads: Field<usize>,
    layers: Field<usize>,
    mlp_ratio: Field<f64>,
    hf_model_name: Field<Value>,
    ls_init_value: Field<Value>,
    embed_cls: Field<bool>,
    no_causal_mask: Field<bool>,
    proj_bias: Field<bool>,
    pool_type: Field<String>,
    proj_type: Field<String>,
}

/// The extras of an EVA-CLIP vision tower (`eva_model_name` set), which only the FLOP
/// counter models.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct EvaVision {
    /// `naiveswiglu` or `swiglu`.
    pub swiglu: bool,
    /// `subln`.
    pub sub_norm: bool,
    /// `rope`.
    pub rope: bool,
}

/// An open_clip config as read, before validation.
pub(crate) struct OpenClip {
    pub config: ClipConfig,
    pub assumed: Assumed,
    pub eva: Option<EvaVision>,
    /// The first option that makes the model something other than plain CLIP
    /// (`attentional_pool`, layer scale, ...), as "field: why"; the FLOP counter ignores it.
    pub variant: Option<String>,
}

/// Parses and validates an open_clip config for running it.
pub(crate) fn parse_validated(value: &Value) -> Result<(ClipConfig, Assumed), ConfigError> {
    let parsed = parse(value)?;
    if let Some(what) = parsed.variant {
        return Err(ConfigError::Unsupported { what });
    }
    parsed.config.validate_noting(&parsed.assumed)?;
    Ok((parsed.config, parsed.assumed))
}

/// Reads an open_clip config without validating it. ResNet, timm and Hugging Face towers
/// are rejected here: they have no [`ClipConfig`] shape at all.
pub(crate) fn parse(value: &Value) -> Result<OpenClip, ConfigError> {
    let wrapper: Wrapper = root_object(value)?;
    let (prefix, model) = match wrapper.model_cfg.resolve("model_cfg")? {
        Some(Section(model)) => ("model_cfg", model),
        None => ("", root_object::<Model>(value)?),
    };
    let mut assumed = Assumed::default();
    let root = Reader {
        assumed: &mut assumed,
        prefix,
        defaults: Defaults::OpenClip,
    };
    let embed_dim = model.embed_dim.required(&root.path("embed_dim"))?;
    let act = if root.opt(model.quick_gelu, "quick_gelu")?.unwrap_or(false) {
        Activation::QuickGelu
    } else {
        Activation::Gelu
    };
    let (vision_path, text_path) = (root.path("vision_cfg"), root.path("text_cfg"));
    let v = match model.vision_cfg.resolve(&vision_path)? {
        Some(Section(v)) => v,
        None => {
            assumed.missing_section(&vision_path, Defaults::OpenClip);
            Vision::default()
        }
    };
    let t = match model.text_cfg.resolve(&text_path)? {
        Some(Section(t)) => t,
        None => {
            assumed.missing_section(&text_path, Defaults::OpenClip);
            Text::default()
        }
    };
    let variant = variant(&v, &t, &vision_path, &text_path)?;
    let eva = eva(&v, &vision_path)?;
    let vision = vision(v, &vision_path, act, &mut assumed)?;
    let text = text(t, &text_path, act, &mut assumed)?;
    Ok(OpenClip {
        config: ClipConfig {
            vision,
            text,
            projection_dim: embed_dim,
            logit_scale_init: OPENAI_LOGIT_SCALE_INIT,
        },
        assumed,
        eva,
        variant,
    })
}

fn unsupported(field: String, why: &str) -> ConfigError {
    ConfigError::Unsupported {
        what: format!("{field}: {why}"),
    }
}

fn eva(v: &Vision, prefix: &str) -> Result<Option<EvaVision>, ConfigError> {
    let path = |key: &str| format!("{prefix}.{key}");
    if v.eva_model_name
        .clone()
        .resolve(&path("eva_model_name"))?
        .is_none()
    {
        return Ok(None);
    }
    let flag = |field: &Field<bool>, key: &str| -> Result<bool, ConfigError> {
        Ok(field.clone().resolve(&path(key))?.unwrap_or(false))
    };
    Ok(Some(EvaVision {
        swiglu: flag(&v.naiveswiglu, "naiveswiglu")? || flag(&v.swiglu, "swiglu")?,
        sub_norm: flag(&v.subln, "subln")?,
        rope: flag(&v.rope, "rope")?,
    }))
}

/// `int(width * mlp_ratio)` (truncation, as in Python); the cast saturates on huge values,
/// which validation then rejects.
fn mlp_width(ratio: Field<f64>, r: &mut Reader<'_>, width: usize) -> Result<usize, ConfigError> {
    let ratio = r.take(ratio, "mlp_ratio", 4.0, &["vision.intermediate_size"])?;
    if !(ratio.is_finite() && ratio > 0.0) {
        return Err(ConfigError::WrongType {
            field: r.path("mlp_ratio"),
            expected: "a positive number",
            found: ratio.to_string(),
        });
    }
    Ok((width as f64 * ratio) as usize)
}

fn vision(
    v: Vision,
    prefix: &str,
    act: Activation,
    assumed: &mut Assumed,
) -> Result<VisionConfig, ConfigError> {
    let mut r = Reader {
        assumed,
        prefix,
        defaults: Defaults::OpenClip,
    };
    let width = r.take(v.width, "width", 768, &["vision.hidden_size"])?;
    let head_width = r.take(
        v.head_width,
        "head_width",
        64,
        &["vision.num_attention_heads"],
    )?;
    if head_width == 0 || width % head_width != 0 {
        let error = ConfigError::Inconsistent {
            message: format!(
                "{} ({width}) is not divisible by {} ({head_width})",
                r.path("width"),
                r.path("head_width")
            ),
        };
        return Err(super::validate::noting(
            error,
            r.assumed,
            &["vision.hidden_size", "vision.num_attention_heads"],
        ));
    }
    let layers = match r.take(
        v.layers,
        "layers",
        Layers::Count(12),
        &["vision.num_hidden_layers"],
    )? {
        Layers::Count(n) => n,
        Layers::ResNet => {
            return Err(unsupported(
                r.path("layers"),
                "ResNet vision towers are not supported",
            ))
        }
    };
    Ok(VisionConfig {
        hidden_size: width,
        intermediate_size: mlp_width(v.mlp_ratio, &mut r, width)?,
        num_hidden_layers: layers,
        num_attention_heads: width / head_width,
        image_size: r
            .take(
                v.image_size,
                "image_size",
                Side(224),
                &["vision.image_size"],
            )?
            .0,
        patch_size: r
            .take(v.patch_size, "patch_size", Side(16), &["vision.patch_size"])?
            .0,
        num_channels: 3,
        layer_norm_eps: 1e-5,
        hidden_act: act,
    })
}

fn text(
    t: Text,
    prefix: &str,
    act: Activation,
    assumed: &mut Assumed,
) -> Result<TextConfig, ConfigError> {
    let mut r = Reader {
        assumed,
        prefix,
        defaults: Defaults::OpenClip,
    };
    let width = r.take(t.width, "width", 512, &["text.hidden_size"])?;
    let ratio = r.take(t.mlp_ratio, "mlp_ratio", 4.0, &["text.intermediate_size"])?;
    if !(ratio.is_finite() && ratio > 0.0) {
        return Err(ConfigError::WrongType {
            field: r.path("mlp_ratio"),
            expected: "a positive number",
            found: ratio.to_string(),
        });
    }
    Ok(TextConfig {
        vocab_size: r.take(t.vocab_size, "vocab_size", CLIP_VOCAB, &["text.vocab_size"])?,
        hidden_size: width,
        intermediate_size: (width as f64 * ratio) as usize,
        num_hidden_layers: r.take(t.layers, "layers", 12, &["text.num_hidden_layers"])?,
        num_attention_heads: r.take(t.heads, "heads", 8, &["text.num_attention_heads"])?,
        max_position_embeddings: r.take(
            t.context_length,
            "context_length",
            77,
            &["text.max_position_embeddings"],
        )?,
        layer_norm_eps: 1e-5,
        hidden_act: act,
        bos_token_id: CLIP_BOS,
        eos_token_id: CLIP_EOS,
        // open_clip's tokenizer pads with 0.
        pad_token_id: 0,
    })
}

/// The first option that changes the architecture away from plain CLIP, or a hard error
/// for towers that are not transformers of this shape at all.
fn variant(
    v: &Vision,
    t: &Text,
    vision_path: &str,
    text_path: &str,
) -> Result<Option<String>, ConfigError> {
    let vp = |key: &str| format!("{vision_path}.{key}");
    let tp = |key: &str| format!("{text_path}.{key}");
    if v.timm_model_name
        .clone()
        .resolve(&vp("timm_model_name"))?
        .is_some()
    {
        return Err(unsupported(
            vp("timm_model_name"),
            "timm vision towers are not supported",
        ));
    }
    if t.hf_model_name
        .clone()
        .resolve(&tp("hf_model_name"))?
        .is_some()
    {
        return Err(unsupported(
            tp("hf_model_name"),
            "Hugging Face text towers are not supported",
        ));
    }
    let present = [
        (&v.ls_init_value, vp("ls_init_value")),
        (&t.ls_init_value, tp("ls_init_value")),
    ];
    for (field, path) in present {
        if field.clone().resolve(&path)?.is_some() {
            return Ok(Some(format!("{path}: layer scale is not supported")));
        }
    }
    let flags = [
        (
            &v.attentional_pool,
            vp("attentional_pool"),
            "attentional pooling is not supported",
        ),
        (
            &v.no_ln_pre,
            vp("no_ln_pre"),
            "towers without ln_pre are not supported",
        ),
        (
            &v.final_ln_after_pool,
            vp("final_ln_after_pool"),
            "final LayerNorm after pooling is not supported",
        ),
        (
            &v.input_patchnorm,
            vp("input_patchnorm"),
            "input patch norm is not supported",
        ),
        (
            &t.embed_cls,
            tp("embed_cls"),
            "a CLS text token is not supported",
        ),
        (
            &t.no_causal_mask,
            tp("no_causal_mask"),
            "non-causal text towers are not supported",
        ),
        (
            &t.proj_bias,
            tp("proj_bias"),
            "a biased text projection is not supported",
        ),
    ];
    for (field, path, why) in flags {
        if field.clone().resolve(&path)?.unwrap_or(false) {
            return Ok(Some(format!("{path}: {why}")));
        }
    }
    let choices = [
        (&v.pool_type, vp("pool_type"), "tok", "pooling"),
        (&t.pool_type, tp("pool_type"), "argmax", "pooling"),
        (&t.proj_type, tp("proj_type"), "linear", "projection"),
    ];
    for (field, path, only, what) in choices {
        if let Some(found) = field.clone().resolve(&path)? {
            if found != only {
                return Ok(Some(format!(
                    "{path}: \"{found}\" {what} is not supported (only \"{only}\")"
                )));
            }
        }
    }
    Ok(None)
}
