//! The two-layer MLP of an encoder layer.

use flashclip::ops::bias_activation::{bias_activation_inplace, Activation};
use flashclip::ops::gemm::{fused_supported, linear_fused, Epilogue};
use flashclip::{Element, Gpu, Tensor};

use super::Linear;
use crate::checkpoint::{key, Source};
use crate::error::Result;
use crate::workspace::TowerBuffers;

/// From this many rows on, fc1 runs on flashclip's GEMM with its bias and activation in the epilogue (Hopper,
/// 16-bit types): 1.01-1.06x cuBLAS + the separate bias+activation pass at 9232 rows (ViT-L/14-336 at batch 16) and
/// 1.12-1.22x at 73856 (same run, benches/results). Below it cuBLAS's kernels for few rows win.
const FUSED_FC1_MIN_ROWS: usize = 4096;

/// `fc2(act(fc1(x)))`.
#[derive(Debug, Clone, PartialEq)]
pub struct Mlp<A> {
    /// `[intermediate, D]` / `[intermediate]`.
    pub fc1: Linear<A>,
    /// `[D, intermediate]` / `[D]`.
    pub fc2: Linear<A>,
}

impl<A> Mlp<A> {
    /// Loads `prefix.fc1` and `prefix.fc2`.
    pub fn load<S: Source<Tensor = A>>(
        s: &mut S,
        prefix: &str,
        d: usize,
        inter: usize,
    ) -> Result<Self, S::Error> {
        Ok(Mlp {
            fc1: Linear::load(s, &key(prefix, "fc1"), inter, d)?,
            fc2: Linear::load(s, &key(prefix, "fc2"), d, inter)?,
        })
    }

    /// Visits the tensors in `load` order.
    pub fn for_each_tensor<'a>(&'a self, f: &mut dyn FnMut(&'a A)) {
        self.fc1.for_each_tensor(f);
        self.fc2.for_each_tensor(f);
    }
}

impl<T: Element> Mlp<Tensor<T>> {
    /// `branch = fc2(act(fc1(normed)))` over the first `tokens` rows, without fc2's bias (the residual step that
    /// follows adds it).
    pub fn forward(
        &self,
        gpu: &Gpu,
        b: &mut TowerBuffers<T>,
        act: Activation,
        tokens: usize,
    ) -> Result<()> {
        let mut hidden = b.mlp.view_mut().narrow(0, 0, tokens)?;
        let x = b.normed.view().narrow(0, 0, tokens)?;
        let (n, k) = (self.fc1.weight.shape()[0], self.fc1.weight.shape()[1]);
        if tokens >= FUSED_FC1_MIN_ROWS && n % 8 == 0 && k % 8 == 0 && fused_supported::<T>(gpu) {
            let epilogue = Epilogue::BiasActivation(&self.fc1.bias.view(), act);
            linear_fused(gpu, &x, &self.fc1.weight.view(), epilogue, &mut hidden)?;
        } else {
            self.fc1.forward_unbiased(gpu, &x, &mut hidden)?;
            bias_activation_inplace(gpu, &mut hidden, Some(&self.fc1.bias.view()), act)?;
        }
        self.fc2.forward_unbiased(
            gpu,
            &b.mlp.view().narrow(0, 0, tokens)?,
            &mut b.branch.view_mut().narrow(0, 0, tokens)?,
        )
    }
}
