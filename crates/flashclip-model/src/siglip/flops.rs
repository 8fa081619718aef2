//! Matrix-product FLOPs of a SigLIP forward (2 per multiply-accumulate; normalizations, activations and softmax
//! are not counted), the count behind the benchmark's TFLOP/s and scripts/peer_siglip_hf.py's.

use super::config::SiglipConfig;
use crate::flops::{FlopsInput, MlpKind, PatchEmbed, TowerShape, VisionDetails};

/// One encoder stack: per token and layer, Q/K/V/out projections (`8·D²`), the MLP (`4·D·mlp`) and the two
/// attention products (`4·seq·D`).
fn encoder(width: u64, mlp: u64, layers: u64, seq: u64) -> u64 {
    seq * layers * (8 * width * width + 4 * width * mlp + 4 * seq * width)
}

impl SiglipConfig {
    /// FLOPs of one image embedding: patch convolution, encoder, and the pooling head (K/V of every token, the
    /// probe's attention, `out_proj` and the MLP on one row; the probe's query is projected once at load).
    pub fn image_flops(&self) -> u64 {
        let v = &self.vision;
        let (n, d, mlp) = (
            v.seq_len() as u64,
            v.hidden_size as u64,
            v.intermediate_size as u64,
        );
        let patch = n * 2 * v.patch_dim() as u64 * d;
        let head = 4 * n * d * d + 4 * n * d + 2 * d * d + 4 * d * mlp;
        patch + encoder(d, mlp, v.num_hidden_layers as u64, n) + head
    }

    /// FLOPs of one text embedding at the full (padded) context, `head` included.
    pub fn text_flops(&self) -> u64 {
        let t = &self.text;
        let (l, d) = (t.max_position_embeddings as u64, t.hidden_size as u64);
        encoder(d, t.intermediate_size as u64, t.num_hidden_layers as u64, l)
            + 2 * d * t.projection_size as u64
    }
}

/// SigLIP in [`crate::flops::count`]'s CLIP-shaped terms: the patch tokens alone (no class token), a convolution
/// with bias and no LayerNorm before the encoder, and the pooling head counted as a `D → D` projection with bias
/// (its K/V over every token, the probe's attention and its MLP are left out: [`SiglipConfig::image_flops`] has
/// them); the text `head` is the text projection.
impl From<&SiglipConfig> for FlopsInput {
    fn from(config: &SiglipConfig) -> Self {
        let (v, t) = (&config.vision, &config.text);
        FlopsInput {
            vision: TowerShape {
                width: v.hidden_size,
                layers: v.num_hidden_layers,
                heads: v.num_attention_heads,
                mlp_width: v.intermediate_size,
                seq_len: v.seq_len(),
                activation: v.hidden_act,
                mlp: MlpKind::Plain,
            },
            patch: PatchEmbed {
                image_size: v.image_size,
                patch_size: v.patch_size,
                num_channels: v.num_channels,
                bias: true,
            },
            vision_details: VisionDetails {
                pre_norm: false,
                projection_bias: true,
                class_token: false,
                ..VisionDetails::CLIP
            },
            text: TowerShape {
                width: t.hidden_size,
                layers: t.num_hidden_layers,
                heads: t.num_attention_heads,
                mlp_width: t.intermediate_size,
                seq_len: t.max_position_embeddings,
                activation: t.hidden_act,
                mlp: MlpKind::Plain,
            },
            projection_dim: config.embed_dim(),
        }
    }
}
