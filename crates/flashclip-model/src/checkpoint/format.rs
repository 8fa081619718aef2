//! The checkpoint layouts: how each stores the tensors the modules ask for by their canonical (Hugging Face
//! `CLIPModel`) key. One table per layout; loading, shape checks and the missing/unexpected reports all go
//! through [`CheckpointFormat::stored`].

use std::fmt;

/// Which key naming a checkpoint uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CheckpointFormat {
    /// Hugging Face `CLIPModel` (`vision_model.*`, `text_model.*`, ...).
    HuggingFace,
    /// open_clip / OpenAI (`visual.*`, `transformer.resblocks.*`, ...).
    OpenClip,
}

impl fmt::Display for CheckpointFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CheckpointFormat::HuggingFace => "Hugging Face",
            CheckpointFormat::OpenClip => "open_clip",
        })
    }
}

/// How a file stores one canonical tensor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stored {
    /// One tensor of the canonical shape.
    One(String),
    /// Three tensors of a third of the rows each, stacked in order (Hugging Face's separate Q, K and V
    /// projections of the packed `qkv_proj`).
    Rows([String; 3]),
    /// One `[cols, rows]` tensor holding the canonical `[rows, cols]` one transposed (open_clip's projections).
    Transposed(String),
}

impl Stored {
    /// The file's keys with the shape each must have, for a canonical tensor of `shape`.
    pub fn parts(&self, shape: &[usize]) -> Vec<(&str, Vec<usize>)> {
        match self {
            Stored::One(key) => vec![(key.as_str(), shape.to_vec())],
            Stored::Rows(keys) => {
                let mut part = shape.to_vec();
                if let Some(rows) = part.first_mut() {
                    *rows /= 3;
                }
                keys.iter().map(|k| (k.as_str(), part.clone())).collect()
            }
            Stored::Transposed(key) => {
                vec![(key.as_str(), shape.iter().rev().copied().collect())]
            }
        }
    }
}

/// The two towers, for layer counting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tower {
    Vision,
    Text,
}

impl Tower {
    /// "vision" or "text".
    pub fn name(self) -> &'static str {
        match self {
            Tower::Vision => "vision",
            Tower::Text => "text",
        }
    }

    /// The canonical prefix of the tower's layers: `<prefix><i>.<suffix>`.
    pub(crate) fn layers_prefix(self) -> &'static str {
        match self {
            Tower::Vision => "vision_model.encoder.layers.",
            Tower::Text => "text_model.encoder.layers.",
        }
    }
}

/// The packed Q/K/V projections of the canonical keys (suffix before `.weight` / `.bias`) and the separate ones
/// Hugging Face stores: CLIP's attention, and BERT's (Chinese-CLIP's text tower, `attention.self.query` ...).
const HF_PACKED: [(&str, [&str; 3]); 2] = [
    (".qkv_proj", [".q_proj", ".k_proj", ".v_proj"]),
    (".self.qkv", [".self.query", ".self.key", ".self.value"]),
];

/// open_clip's names for everything outside the layers (canonical prefix -> stored prefix, first match).
const OPEN_CLIP_NAMES: [(&str, &str); 10] = [
    (
        "vision_model.embeddings.class_embedding",
        "visual.class_embedding",
    ),
    (
        "vision_model.embeddings.patch_embedding.weight",
        "visual.conv1.weight",
    ),
    (
        "vision_model.embeddings.position_embedding.weight",
        "visual.positional_embedding",
    ),
    ("vision_model.pre_layrnorm.", "visual.ln_pre."),
    ("vision_model.post_layernorm.", "visual.ln_post."),
    (
        "vision_model.encoder.layers.",
        "visual.transformer.resblocks.",
    ),
    (
        "text_model.embeddings.token_embedding.weight",
        "token_embedding.weight",
    ),
    (
        "text_model.embeddings.position_embedding.weight",
        "positional_embedding",
    ),
    ("text_model.final_layer_norm.", "ln_final."),
    ("text_model.encoder.layers.", "transformer.resblocks."),
];

/// open_clip's names within a layer (canonical suffix after the layer index -> stored suffix).
const OPEN_CLIP_LAYER_NAMES: [(&str, &str); 8] = [
    ("self_attn.qkv_proj.weight", "attn.in_proj_weight"),
    ("self_attn.qkv_proj.bias", "attn.in_proj_bias"),
    ("self_attn.out_proj.", "attn.out_proj."),
    ("layer_norm1.", "ln_1."),
    ("layer_norm2.", "ln_2."),
    ("mlp.fc1.", "mlp.c_fc."),
    ("mlp.fc2.", "mlp.c_proj."),
    ("", ""),
];

/// open_clip's `[D, proj]` projections, stored transposed against Hugging Face's `[proj, D]`.
const OPEN_CLIP_TRANSPOSED: [(&str, &str); 2] = [
    ("visual_projection.weight", "visual.proj"),
    ("text_projection.weight", "text_projection"),
];

fn rename(key: &str, table: &[(&str, &str)]) -> Option<String> {
    table
        .iter()
        .find_map(|(from, to)| key.strip_prefix(from).map(|rest| format!("{to}{rest}")))
}

impl CheckpointFormat {
    /// Recognizes the layout from a file's tensor names.
    pub fn detect<S: AsRef<str>>(names: &[S]) -> Option<CheckpointFormat> {
        let names = || names.iter().map(AsRef::as_ref);
        if names().any(|n| n.starts_with("vision_model.") || n.starts_with("text_model.")) {
            Some(CheckpointFormat::HuggingFace)
        } else if names().any(|n| {
            n.starts_with("visual.")
                || n.starts_with("transformer.resblocks.")
                || n == "token_embedding.weight"
        }) {
            Some(CheckpointFormat::OpenClip)
        } else {
            None
        }
    }

    /// How this layout stores the tensor of canonical key `key`.
    pub fn stored(self, key: &str) -> Stored {
        match self {
            CheckpointFormat::HuggingFace => HF_PACKED
                .iter()
                .find_map(|(packed, parts)| {
                    let (prefix, tensor) = key.rsplit_once('.')?;
                    let prefix = prefix.strip_suffix(packed)?;
                    Some(Stored::Rows(
                        parts.map(|part| format!("{prefix}{part}.{tensor}")),
                    ))
                })
                .unwrap_or_else(|| Stored::One(key.to_string())),
            CheckpointFormat::OpenClip => {
                if let Some((_, to)) = OPEN_CLIP_TRANSPOSED.iter().find(|(from, _)| *from == key) {
                    return Stored::Transposed(to.to_string());
                }
                for tower in [Tower::Vision, Tower::Text] {
                    if let Some((index, suffix)) = key
                        .strip_prefix(tower.layers_prefix())
                        .and_then(|rest| rest.split_once('.'))
                    {
                        let suffix = rename(suffix, &OPEN_CLIP_LAYER_NAMES).unwrap_or_default();
                        let prefix = self.layers_prefix(tower);
                        return Stored::One(format!("{prefix}{index}.{suffix}"));
                    }
                }
                Stored::One(rename(key, &OPEN_CLIP_NAMES).unwrap_or_else(|| key.to_string()))
            }
        }
    }

    /// The stored prefix of a tower's layers (`<prefix><i>.`), for counting the layers a file holds.
    pub fn layers_prefix(self, tower: Tower) -> &'static str {
        match self {
            CheckpointFormat::HuggingFace => tower.layers_prefix(),
            CheckpointFormat::OpenClip => match tower {
                Tower::Vision => "visual.transformer.resblocks.",
                Tower::Text => "transformer.resblocks.",
            },
        }
    }

    /// How many layers of `tower` a file with these tensor names holds: one past the largest layer index.
    pub fn layers_in<S: AsRef<str>>(self, tower: Tower, names: &[S]) -> usize {
        super::layers_with_prefix(self.layers_prefix(tower), names)
    }
}

/// Tensors some exporters leave in a checkpoint that carry no weights (HF's `position_ids` buffers, OpenAI's
/// `input_resolution`/`context_length`/`vocab_size` scalars, an old open_clip causal `attn_mask`).
pub fn is_ignorable(name: &str) -> bool {
    name.ends_with("position_ids")
        || matches!(
            name,
            "input_resolution" | "context_length" | "vocab_size" | "attn_mask"
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hugging_face_splits_the_packed_qkv() {
        let f = CheckpointFormat::HuggingFace;
        assert_eq!(
            f.stored("text_model.encoder.layers.1.self_attn.qkv_proj.bias"),
            Stored::Rows(
                ["q", "k", "v"]
                    .map(|x| format!("text_model.encoder.layers.1.self_attn.{x}_proj.bias"))
            )
        );
        assert_eq!(f.stored("logit_scale"), Stored::One("logit_scale".into()));
        assert_eq!(
            f.stored("text_model.encoder.layer.0.attention.self.qkv.weight"),
            Stored::Rows(
                ["query", "key", "value"]
                    .map(|x| format!("text_model.encoder.layer.0.attention.self.{x}.weight"))
            )
        );
        assert_eq!(
            f.stored("x.qkv_proj.weight").parts(&[384, 128])[2],
            ("x.v_proj.weight", vec![128, 128])
        );
    }

    #[test]
    fn open_clip_renames() {
        let f = CheckpointFormat::OpenClip;
        for (canonical, stored) in [
            (
                "vision_model.encoder.layers.3.self_attn.qkv_proj.weight",
                "visual.transformer.resblocks.3.attn.in_proj_weight",
            ),
            (
                "text_model.encoder.layers.11.mlp.fc2.bias",
                "transformer.resblocks.11.mlp.c_proj.bias",
            ),
            (
                "text_model.encoder.layers.0.layer_norm2.weight",
                "transformer.resblocks.0.ln_2.weight",
            ),
            ("vision_model.pre_layrnorm.bias", "visual.ln_pre.bias"),
            (
                "text_model.embeddings.position_embedding.weight",
                "positional_embedding",
            ),
            ("logit_scale", "logit_scale"),
        ] {
            assert_eq!(
                f.stored(canonical),
                Stored::One(stored.into()),
                "{canonical}"
            );
        }
        assert_eq!(
            f.stored("visual_projection.weight").parts(&[64, 128]),
            vec![("visual.proj", vec![128, 64])]
        );
        let names = [
            "visual.transformer.resblocks.0.ln_1.weight",
            "visual.transformer.resblocks.23.ln_1.weight",
        ];
        assert_eq!(f.layers_in(Tower::Vision, &names), 24);
        assert_eq!(f.layers_in(Tower::Text, &names), 0);
    }
}
