//! The one place that decides which GEMM runs a linear layer with an epilogue: flashclip's fused GEMM where it
//! runs and was measured faster than cuBLAS(Lt) plus the separate elementwise kernel, that pair otherwise.

use crate::error::Result;
use crate::gpu::Gpu;
use crate::ops::bias_activation::{bias_activation_inplace, Activation};
use crate::tensor::{Element, View, ViewMut};

use super::fused::{linear_fused, runs, Epilogue};
use super::{linear, linear_bias};

/// Which GEMM a linear layer runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GemmImpl {
    /// cuBLAS or cuBLASLt (the bias in cuBLASLt's epilogue), then flashclip's elementwise kernel where the
    /// epilogue needs one.
    Cublas,
    /// flashclip's sm_90a GEMM with the epilogue fused into its store.
    Fused,
}

impl GemmImpl {
    /// The choice for `y = epilogue(x · wᵀ)`. The fused GEMM takes the bias + activation layers (a transformer
    /// MLP's first layer), where it saves a whole pass over its widest output; the bias-only and residual layers
    /// stay on cuBLASLt's bias epilogue and the fused bias + residual + LayerNorm kernel until measured otherwise.
    pub fn choose<T: Element>(
        gpu: &Gpu,
        x: &View<T>,
        w: &View<T>,
        epilogue: &Epilogue<'_, '_, T>,
        y: &ViewMut<T>,
    ) -> GemmImpl {
        match epilogue {
            Epilogue::BiasActivation(..) if runs(gpu, x, w, epilogue, y) => GemmImpl::Fused,
            _ => GemmImpl::Cublas,
        }
    }
}

/// `y = epilogue(x · wᵀ)` on the GEMM [`GemmImpl::choose`] picks. Shapes as in [`super::linear`].
pub fn linear_epilogue<T: Element>(
    gpu: &Gpu,
    x: &View<T>,
    w: &View<T>,
    epilogue: Epilogue<'_, '_, T>,
    y: &mut ViewMut<T>,
) -> Result<()> {
    if GemmImpl::choose(gpu, x, w, &epilogue, y) == GemmImpl::Fused {
        return linear_fused(gpu, x, w, epilogue, y);
    }
    match epilogue {
        Epilogue::Plain => linear(gpu, x, w, y, 0.0),
        Epilogue::Bias(b) => linear_bias(gpu, x, w, b, y),
        Epilogue::BiasActivation(b, act) => {
            linear(gpu, x, w, y, 0.0)?;
            bias_activation_inplace(gpu, y, Some(b), act)
        }
        Epilogue::BiasAccumulate(b) => {
            linear(gpu, x, w, y, 1.0)?;
            bias_activation_inplace(gpu, y, Some(b), Activation::Identity)
        }
    }
}
