//! The result of a count: FLOPs by part, in both conventions, and its table.

use std::fmt;

use super::Convention;

/// FLOPs of one tower, by part.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct TowerFlops {
    /// Vision: the patch-embedding convolution and the position-embedding add. Text: the
    /// position-embedding add (the token lookup is a gather, 0 FLOPs).
    pub embed: u128,
    /// The Q, K, V and output projections of every layer, with their biases.
    pub attn_proj: u128,
    /// Attention proper: `q` scaling, `Q·Kᵀ`, softmax, `P·V` (and rotary embeddings).
    pub attn_core: u128,
    /// The MLP's matrix products with their biases.
    pub mlp: u128,
    /// LayerNorms (in the blocks, `ln_pre`, the final one), activations, residual adds.
    pub norm_act: u128,
}

impl TowerFlops {
    /// Sum of the parts.
    pub fn total(&self) -> u128 {
        self.embed
            .saturating_add(self.attn_proj)
            .saturating_add(self.attn_core)
            .saturating_add(self.mlp)
            .saturating_add(self.norm_act)
    }
}

/// FLOPs of a whole forward, by part, in one convention.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Breakdown {
    /// The image tower over the whole image batch.
    pub vision: TowerFlops,
    /// The text tower over the whole text batch.
    pub text: TowerFlops,
    /// Projection of the pooled image tokens into the shared space.
    pub vision_projection: u128,
    /// Projection of the pooled text tokens into the shared space.
    pub text_projection: u128,
    /// L2 normalisation of both embeddings, the image × text logits and their scaling.
    pub contrastive: u128,
}

impl Breakdown {
    /// Everything: features of both towers and the logits.
    pub fn total(&self) -> u128 {
        self.features_total().saturating_add(self.contrastive)
    }

    /// Image and text features (towers and projections), without the contrastive head.
    pub fn features_total(&self) -> u128 {
        self.vision
            .total()
            .saturating_add(self.text.total())
            .saturating_add(self.vision_projection)
            .saturating_add(self.text_projection)
    }

    /// Image features only: the image tower and its projection.
    pub fn image_features(&self) -> u128 {
        self.vision.total().saturating_add(self.vision_projection)
    }

    /// Text features only: the text tower and its projection.
    pub fn text_features(&self) -> u128 {
        self.text.total().saturating_add(self.text_projection)
    }
}

/// The result of [`count`]: the same forward counted in both conventions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FlopsReport {
    /// Images in the batch.
    pub image_batch: usize,
    /// Tokens per image (patches + class token).
    pub image_tokens: usize,
    /// Texts in the batch.
    pub text_batch: usize,
    /// Tokens per text.
    pub text_len: usize,
    /// Counted with [`Convention::EveryOp`].
    pub every_op: Breakdown,
    /// Counted with [`Convention::MacTimes2`].
    pub mac2: Breakdown,
}

impl FlopsReport {
    /// The breakdown in the given convention.
    pub fn breakdown(&self, convention: Convention) -> &Breakdown {
        match convention {
            Convention::EveryOp => &self.every_op,
            Convention::MacTimes2 => &self.mac2,
        }
    }
}

impl fmt::Display for FlopsReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (scale, unit) = unit_for(self.every_op.total().max(self.mac2.total()));
        let a = &self.every_op;
        let m = &self.mac2;
        writeln!(
            f,
            "CLIP forward FLOPs: {} images x {} tokens, {} texts x {} tokens, {}x{} logits",
            self.image_batch,
            self.image_tokens,
            self.text_batch,
            self.text_len,
            self.image_batch,
            self.text_batch
        )?;
        writeln!(f, "  {}", Convention::EveryOp)?;
        writeln!(f, "  {}", Convention::MacTimes2)?;
        let head_a = format!("every op [{unit}]");
        let head_m = format!("2/MAC [{unit}]");
        writeln!(f, "{:<40} {:>18} {:>18}", "part", head_a, head_m)?;
        writeln!(f, "{}", "-".repeat(78))?;
        let row = |f: &mut fmt::Formatter<'_>, name: &str, x: u128, y: u128| {
            writeln!(
                f,
                "{:<40} {:>18.4} {:>18.4}",
                name,
                x as f64 / scale,
                y as f64 / scale
            )
        };
        for (tower, ta, tm, embed) in [
            ("vision", &a.vision, &m.vision, "patch embed + pos"),
            ("text", &a.text, &m.text, "pos embed"),
        ] {
            row(f, &format!("{tower}  {embed}"), ta.embed, tm.embed)?;
            row(
                f,
                &format!("{tower}  attn QKV+out proj"),
                ta.attn_proj,
                tm.attn_proj,
            )?;
            row(
                f,
                &format!("{tower}  attn scores+softmax+PV"),
                ta.attn_core,
                tm.attn_core,
            )?;
            row(f, &format!("{tower}  MLP"), ta.mlp, tm.mlp)?;
            row(
                f,
                &format!("{tower}  layernorm/act/residual"),
                ta.norm_act,
                tm.norm_act,
            )?;
            row(f, &format!("{tower}  total"), ta.total(), tm.total())?;
        }
        row(
            f,
            "projections (vision + text)",
            a.vision_projection.saturating_add(a.text_projection),
            m.vision_projection.saturating_add(m.text_projection),
        )?;
        row(
            f,
            "contrastive head (norm + logits)",
            a.contrastive,
            m.contrastive,
        )?;
        writeln!(f, "{}", "-".repeat(78))?;
        row(f, "total", a.total(), m.total())
    }
}

/// A decimal unit that keeps the largest number readable.
fn unit_for(max: u128) -> (f64, &'static str) {
    let max = max as f64;
    if max >= 1e15 {
        (1e15, "PFLOP")
    } else if max >= 1e12 {
        (1e12, "TFLOP")
    } else if max >= 1e9 {
        (1e9, "GFLOP")
    } else if max >= 1e6 {
        (1e6, "MFLOP")
    } else {
        (1.0, "FLOP")
    }
}
