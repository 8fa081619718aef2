//! Pre-norm transformer layers and the stack of them.

use flashclip::ops::bias_activation::Activation as KernelActivation;
use flashclip::{Element, Gpu, Tensor};

use super::{Attention, AttentionImpl, LayerNorm, Mlp};
use crate::checkpoint::{key, Source};
use crate::config::{Activation, TextConfig, VisionConfig};
use crate::error::{ModelError, Result};
use crate::workspace::TowerBuffers;

/// One pre-norm layer: `x += out_proj(attn(layer_norm1(x)))`, then `x += fc2(act(fc1(layer_norm2(x))))`.
#[derive(Debug, Clone, PartialEq)]
pub struct EncoderLayer<A> {
    /// Attention block.
    pub self_attn: Attention<A>,
    /// LayerNorm before attention.
    pub layer_norm1: LayerNorm<A>,
    /// MLP block.
    pub mlp: Mlp<A>,
    /// LayerNorm before the MLP.
    pub layer_norm2: LayerNorm<A>,
}

impl<A> EncoderLayer<A> {
    /// Loads the layer at `prefix` (e.g. `vision_model.encoder.layers.3`).
    pub fn load<S: Source<Tensor = A>>(
        s: &mut S,
        prefix: &str,
        d: usize,
        inter: usize,
    ) -> Result<Self, S::Error> {
        Ok(EncoderLayer {
            self_attn: Attention::load(s, &key(prefix, "self_attn"), d)?,
            layer_norm1: LayerNorm::load(s, &key(prefix, "layer_norm1"), d)?,
            mlp: Mlp::load(s, &key(prefix, "mlp"), d, inter)?,
            layer_norm2: LayerNorm::load(s, &key(prefix, "layer_norm2"), d)?,
        })
    }

    /// Visits the tensors in `load` order.
    pub fn for_each_tensor<'a>(&'a self, f: &mut dyn FnMut(&'a A)) {
        self.self_attn.for_each_tensor(f);
        self.layer_norm1.for_each_tensor(f);
        self.mlp.for_each_tensor(f);
        self.layer_norm2.for_each_tensor(f);
    }
}

/// A stack of encoder layers.
#[derive(Debug, Clone, PartialEq)]
pub struct Encoder<A> {
    /// `num_hidden_layers` layers, input to output.
    pub layers: Vec<EncoderLayer<A>>,
}

impl<A> Encoder<A> {
    /// Loads `layers` layers at `prefix.layers.{i}`.
    pub fn load<S: Source<Tensor = A>>(
        s: &mut S,
        prefix: &str,
        layers: usize,
        d: usize,
        inter: usize,
    ) -> Result<Self, S::Error> {
        let layers = (0..layers)
            .map(|i| EncoderLayer::load(s, &format!("{prefix}.layers.{i}"), d, inter))
            .collect::<Result<_, _>>()?;
        Ok(Encoder { layers })
    }

    /// Visits the tensors in `load` order.
    pub fn for_each_tensor<'a>(&'a self, f: &mut dyn FnMut(&'a A)) {
        self.layers.iter().for_each(|l| l.for_each_tensor(f));
    }
}

/// Sizes and options of one tower's layers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EncoderSpec {
    /// Width of the residual stream.
    pub dim: usize,
    /// Attention heads.
    pub heads: usize,
    /// Width of the MLP's hidden layer.
    pub mlp: usize,
    /// LayerNorm epsilon.
    pub eps: f32,
    /// MLP activation.
    pub act: KernelActivation,
    /// Causal attention (the text tower).
    pub causal: bool,
}

pub(crate) fn kernel_activation(a: Activation) -> KernelActivation {
    match a {
        Activation::QuickGelu => KernelActivation::QuickGelu,
        Activation::Gelu => KernelActivation::GeluErf,
        Activation::GeluTanh => KernelActivation::GeluTanh,
    }
}

impl EncoderSpec {
    /// The vision tower's layers.
    pub fn vision(v: &VisionConfig) -> Self {
        EncoderSpec {
            dim: v.hidden_size,
            heads: v.num_attention_heads,
            mlp: v.intermediate_size,
            eps: v.layer_norm_eps as f32,
            act: kernel_activation(v.hidden_act),
            causal: false,
        }
    }

    /// The text tower's layers.
    pub fn text(t: &TextConfig) -> Self {
        EncoderSpec {
            dim: t.hidden_size,
            heads: t.num_attention_heads,
            mlp: t.intermediate_size,
            eps: t.layer_norm_eps as f32,
            act: kernel_activation(t.hidden_act),
            causal: true,
        }
    }
}

impl<T: Element> EncoderLayer<Tensor<T>> {
    /// One layer on `b.normed`, which holds this layer's `layer_norm1(residual)`: `residual += attn(normed)`,
    /// `normed = layer_norm2(residual)`, `residual += mlp(normed)`, `normed = next(residual)` with `next` the
    /// next layer's `layer_norm1` or the tower's final norm. Each residual step is fused with the norm after it
    /// and with the bias of the projection before it.
    pub fn forward(
        &self,
        gpu: &Gpu,
        b: &mut TowerBuffers<T>,
        spec: &EncoderSpec,
        (batch, seq): (usize, usize),
        next: &LayerNorm<Tensor<T>>,
        attention: AttentionImpl,
    ) -> Result<()> {
        let tokens = batch * seq;
        self.self_attn
            .forward(gpu, b, spec, (batch, seq), attention)?;
        self.layer_norm2.forward_residual(
            gpu,
            &b.branch.view().narrow(0, 0, tokens)?,
            &self.self_attn.out_proj.bias,
            &mut b.residual.view_mut().narrow(0, 0, tokens)?,
            spec.eps,
            &mut b.normed.view_mut().narrow(0, 0, tokens)?,
        )?;
        self.mlp.forward(gpu, b, spec.act, tokens)?;
        next.forward_residual(
            gpu,
            &b.branch.view().narrow(0, 0, tokens)?,
            &self.mlp.fc2.bias,
            &mut b.residual.view_mut().narrow(0, 0, tokens)?,
            spec.eps,
            &mut b.normed.view_mut().narrow(0, 0, tokens)?,
        )
    }
}

impl<T: Element> Encoder<Tensor<T>> {
    /// `normed = LN(residual)` with the first layer's `layer_norm1` (`final_norm` when there are no layers): the
    /// input of [`Encoder::layer`] 0.
    pub fn begin(
        &self,
        gpu: &Gpu,
        b: &mut TowerBuffers<T>,
        spec: &EncoderSpec,
        tokens: usize,
        final_norm: &LayerNorm<Tensor<T>>,
    ) -> Result<()> {
        if tokens > b.max_tokens {
            return Err(ModelError::Input(format!(
                "{tokens} tokens exceed the workspace's {}",
                b.max_tokens
            )));
        }
        let first = self.layers.first().map_or(final_norm, |l| &l.layer_norm1);
        first.forward(
            gpu,
            &b.residual.view().narrow(0, 0, tokens)?,
            spec.eps,
            &mut b.normed.view_mut().narrow(0, 0, tokens)?,
        )
    }

    /// Layer `i` of [`Encoder::forward`]; after the last one `normed` holds `final_norm(residual)`.
    #[allow(clippy::too_many_arguments)]
    pub fn layer(
        &self,
        i: usize,
        gpu: &Gpu,
        b: &mut TowerBuffers<T>,
        spec: &EncoderSpec,
        shape: (usize, usize),
        final_norm: &LayerNorm<Tensor<T>>,
        attention: AttentionImpl,
    ) -> Result<()> {
        let layer = self
            .layers
            .get(i)
            .ok_or_else(|| ModelError::Input(format!("no layer {i}")))?;
        let next = self
            .layers
            .get(i + 1)
            .map_or(final_norm, |l| &l.layer_norm1);
        layer.forward(gpu, b, spec, shape, next, attention)
    }

    /// Every layer over `residual` (`batch * seq` tokens); on return `normed` holds `final_norm(residual)`.
    pub fn forward(
        &self,
        gpu: &Gpu,
        b: &mut TowerBuffers<T>,
        spec: &EncoderSpec,
        (batch, seq): (usize, usize),
        final_norm: &LayerNorm<Tensor<T>>,
        attention: AttentionImpl,
    ) -> Result<()> {
        self.begin(gpu, b, spec, batch * seq, final_norm)?;
        for i in 0..self.layers.len() {
            self.layer(i, gpu, b, spec, (batch, seq), final_norm, attention)?;
        }
        Ok(())
    }
}
