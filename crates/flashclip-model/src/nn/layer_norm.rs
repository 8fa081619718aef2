//! LayerNorm's affine parameters and its two GPU forms.

use flashclip::ops::layernorm::{bias_residual_layernorm, layernorm};
use flashclip::{Element, Gpu, Tensor, View, ViewMut};

use crate::checkpoint::{key, Source};
use crate::error::Result;

/// `y = (x - mean) / sqrt(var + eps) * weight + bias` over the last dimension.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerNorm<A> {
    /// Scale, `[D]`.
    pub weight: A,
    /// Shift, `[D]`.
    pub bias: A,
}

impl<A> LayerNorm<A> {
    /// Loads `prefix.weight` and `prefix.bias`.
    pub fn load<S: Source<Tensor = A>>(
        s: &mut S,
        prefix: &str,
        d: usize,
    ) -> Result<Self, S::Error> {
        Ok(LayerNorm {
            weight: s.tensor(&key(prefix, "weight"), &[d])?,
            bias: s.tensor(&key(prefix, "bias"), &[d])?,
        })
    }

    /// Visits the tensors in `load` order.
    pub fn for_each_tensor<'a>(&'a self, f: &mut dyn FnMut(&'a A)) {
        f(&self.weight);
        f(&self.bias);
    }
}

impl<T: Element> LayerNorm<Tensor<T>> {
    /// `y = LN(x)`; rows of `x` and `y` may be strided.
    pub fn forward(&self, gpu: &Gpu, x: &View<T>, eps: f32, y: &mut ViewMut<T>) -> Result<()> {
        Ok(layernorm(
            gpu,
            x,
            &self.weight.view(),
            &self.bias.view(),
            eps,
            y,
        )?)
    }

    /// The residual step fused with the norm that follows it: `residual += branch + bias`, `y = LN(residual)`.
    pub fn forward_residual(
        &self,
        gpu: &Gpu,
        branch: &View<T>,
        bias: &Tensor<T>,
        residual: &mut ViewMut<T>,
        eps: f32,
        y: &mut ViewMut<T>,
    ) -> Result<()> {
        Ok(bias_residual_layernorm(
            gpu,
            branch,
            Some(&bias.view()),
            residual,
            &self.weight.view(),
            &self.bias.view(),
            eps,
            y,
        )?)
    }
}
