//! The GPU model's plumbing: the upload target, the layer specs, the attention check and reading results back.

use std::marker::PhantomData;

use flashclip::ops::attention::Version;
use flashclip::ops::bias_activation::Activation as KernelActivation;
use flashclip::{Element, Gpu, Tensor};
use ndarray::Array2;

use super::config::SiglipConfig;
use super::weights::HasShape;
use crate::checkpoint::Target;
use crate::config::Activation;
use crate::error::{ModelError, Result};
use crate::nn::{AttentionImpl, EncoderSpec};

/// The [`Target`] that uploads each tensor to the GPU in `T`.
pub(super) struct Device<'g, T> {
    pub(super) gpu: &'g Gpu,
    pub(super) _elem: PhantomData<T>,
}

impl<T: Element> Target for Device<'_, T> {
    type Elem = T;
    type Tensor = Tensor<T>;
    type Error = flashclip::Error;

    fn make(&mut self, data: Vec<T>, shape: &[usize]) -> flashclip::Result<Tensor<T>> {
        self.gpu.upload(&data, shape)
    }
}

impl<T: Element> HasShape for Tensor<T> {
    fn dims(&self) -> Vec<usize> {
        self.shape().to_vec()
    }
}

pub(super) fn kernel_activation(a: Activation) -> KernelActivation {
    match a {
        Activation::QuickGelu => KernelActivation::QuickGelu,
        Activation::Gelu => KernelActivation::GeluErf,
        Activation::GeluTanh => KernelActivation::GeluTanh,
    }
}

/// Both towers' layer specs: bidirectional attention in both.
pub(super) fn specs(config: &SiglipConfig) -> (EncoderSpec, EncoderSpec) {
    let (v, t) = (&config.vision, &config.text);
    (
        EncoderSpec {
            dim: v.hidden_size,
            heads: v.num_attention_heads,
            mlp: v.intermediate_size,
            eps: v.layer_norm_eps as f32,
            act: kernel_activation(v.hidden_act),
            causal: false,
        },
        EncoderSpec {
            dim: t.hidden_size,
            heads: t.num_attention_heads,
            mlp: t.intermediate_size,
            eps: t.layer_norm_eps as f32,
            act: kernel_activation(t.hidden_act),
            causal: false,
        },
    )
}

/// Checks that `attention` runs `T` at both towers' head dims on `gpu`.
pub(super) fn check_attention<T: Element>(
    gpu: &Gpu,
    config: &SiglipConfig,
    attention: AttentionImpl,
) -> Result<()> {
    let version = match attention {
        AttentionImpl::Flash(v) => v,
        // Fastest falls back to v1 where nothing faster takes the head dim.
        AttentionImpl::Fastest => Version::V1,
        AttentionImpl::Materialized => return Ok(()),
    };
    if !version.runs_on(gpu) {
        return Err(ModelError::Input(format!(
            "attention {} does not run on this GPU",
            version.name()
        )));
    }
    for (tower, head_dim) in [
        ("vision", config.vision.head_dim()),
        ("text", config.text.head_dim()),
    ] {
        if !version.supports(T::DTYPE, head_dim) {
            return Err(ModelError::Input(format!(
                "attention {} does not support {} with the {tower} head dim {head_dim}",
                version.name(),
                T::DTYPE
            )));
        }
    }
    Ok(())
}

/// The first `batch` rows of `t` as f32 (syncs).
pub(super) fn read<T: Element>(
    gpu: &Gpu,
    t: &Tensor<T>,
    batch: usize,
    dim: usize,
) -> Result<Array2<f32>> {
    let host = gpu.download(t.data())?;
    let rows = host.get(..batch * dim).ok_or_else(|| {
        ModelError::Input(format!(
            "{batch} rows of {dim} exceed the workspace's {} values",
            host.len()
        ))
    })?;
    let v: Vec<f32> = rows.iter().map(|x| x.to_f32()).collect();
    Array2::from_shape_vec((batch, dim), v).map_err(|e| ModelError::Input(e.to_string()))
}
