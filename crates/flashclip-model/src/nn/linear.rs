//! A biased linear layer, `y = x Wᵀ + b`.

use flashclip::ops::gemm::{linear, linear_bias};
use flashclip::{Element, Tensor, View, ViewMut};

use crate::checkpoint::{key, Source};
use crate::error::Result;

/// `y = x Wᵀ + b`, PyTorch's `[out_features, in_features]` weight layout.
#[derive(Debug, Clone, PartialEq)]
pub struct Linear<A> {
    /// `[out_features, in_features]`.
    pub weight: A,
    /// `[out_features]`.
    pub bias: A,
}

impl<A> Linear<A> {
    /// Loads `prefix.weight` and `prefix.bias`.
    pub fn load<S: Source<Tensor = A>>(
        s: &mut S,
        prefix: &str,
        out: usize,
        inp: usize,
    ) -> Result<Self, S::Error> {
        Ok(Linear {
            weight: s.tensor(&key(prefix, "weight"), &[out, inp])?,
            bias: s.tensor(&key(prefix, "bias"), &[out])?,
        })
    }

    /// Visits the tensors in `load` order.
    pub fn for_each_tensor<'a>(&'a self, f: &mut dyn FnMut(&'a A)) {
        f(&self.weight);
        f(&self.bias);
    }
}

impl<T: Element> Linear<Tensor<T>> {
    /// `y = x Wᵀ + b`, the bias in the GEMM's epilogue.
    pub fn forward(&self, gpu: &flashclip::Gpu, x: &View<T>, y: &mut ViewMut<T>) -> Result<()> {
        Ok(linear_bias(
            gpu,
            x,
            &self.weight.view(),
            &self.bias.view(),
            y,
        )?)
    }

    /// `y = x Wᵀ` without the bias, for a next kernel that adds it fused with its own work.
    pub fn forward_unbiased(
        &self,
        gpu: &flashclip::Gpu,
        x: &View<T>,
        y: &mut ViewMut<T>,
    ) -> Result<()> {
        Ok(linear(gpu, x, &self.weight.view(), y, 0.0)?)
    }
}
