//! Multi-head self-attention, and the choice of attention kernel.

use cudarc::driver::CudaSlice;
use flashclip::ops::attention::{
    flash_attention, materialized_attention, MaterializedWorkspace, Options, Shape, Version,
};
use flashclip::tensor::contiguous_strides;
use flashclip::{Element, Gpu, Tensor, View, ViewMut};

use super::{EncoderSpec, Linear};
use crate::checkpoint::{key, Source};
use crate::config::ClipConfig;
use crate::error::{ModelError, Result};
use crate::workspace::TowerBuffers;

/// How attention is computed: a flash kernel version, or the materialized cuBLAS path (the ladder's baseline).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttentionImpl {
    /// Flash attention, the version [`Version::fastest`] picks for each launch's shape.
    Fastest,
    /// Flash attention, this version everywhere.
    Flash(Version),
    /// Scores in memory through cuBLAS and a softmax kernel.
    Materialized,
}

impl AttentionImpl {
    /// [`AttentionImpl::Fastest`] where a flash version runs `T` at both towers' head dims on this GPU, else the
    /// materialized path.
    pub fn best<T: Element>(gpu: &Gpu, config: &ClipConfig) -> Self {
        Self::best_for::<T>(gpu, &[config.vision.head_dim(), config.text.head_dim()])
    }

    /// [`AttentionImpl::Fastest`] where a flash version runs `T` at every head dim of `head_dims` on this GPU,
    /// else the materialized path.
    pub fn best_for<T: Element>(gpu: &Gpu, head_dims: &[usize]) -> Self {
        if Version::ALL
            .iter()
            .any(|v| v.runs_on(gpu) && head_dims.iter().all(|&d| v.supports(T::DTYPE, d)))
        {
            AttentionImpl::Fastest
        } else {
            AttentionImpl::Materialized
        }
    }

    /// Short description for reports.
    pub fn describe(self) -> String {
        match self {
            AttentionImpl::Fastest => "flash (fastest per shape)".into(),
            AttentionImpl::Flash(v) => format!("flash {}", v.name()),
            AttentionImpl::Materialized => "materialized attention".into(),
        }
    }

    /// Checks that this choice runs `T` at both towers' head dims on `gpu`.
    pub fn check<T: Element>(self, gpu: &Gpu, config: &ClipConfig) -> Result<()> {
        self.check_for::<T>(
            gpu,
            &[
                ("vision", config.vision.head_dim()),
                ("text", config.text.head_dim()),
            ],
        )
    }

    /// Checks that this choice runs `T` at each `(tower, head dim)` of `towers` on `gpu`.
    pub fn check_for<T: Element>(self, gpu: &Gpu, towers: &[(&str, usize)]) -> Result<()> {
        if let AttentionImpl::Flash(ver) = self {
            if !ver.runs_on(gpu) {
                let (major, minor) = gpu.compute_capability();
                return Err(ModelError::Input(format!(
                    "attention {} does not run on this GPU (compute capability {major}.{minor})",
                    ver.name()
                )));
            }
        }
        // Fastest falls back to v1 where nothing faster takes the head dim: v1 must.
        let checked = match self {
            AttentionImpl::Flash(ver) => ver,
            AttentionImpl::Fastest => Version::V1,
            AttentionImpl::Materialized => return Ok(()),
        };
        for &(tower, head_dim) in towers {
            if !checked.supports(T::DTYPE, head_dim) {
                return Err(ModelError::Input(format!(
                    "attention {} does not support {} with the {tower} head dim {head_dim}",
                    checked.name(),
                    T::DTYPE
                )));
            }
        }
        Ok(())
    }

    /// `o = softmax(q kᵀ / sqrt(d)) v` on `[batch, seq, heads, head_dim]` views; with `key_lens` (at least
    /// `batch` ints), sequence `b` sees only its first `key_lens[b]` keys.
    #[allow(clippy::too_many_arguments)]
    fn run<T: Element>(
        self,
        gpu: &Gpu,
        q: &View<T>,
        k: &View<T>,
        v: &View<T>,
        causal: bool,
        key_lens: Option<&CudaSlice<i32>>,
        o: &mut ViewMut<T>,
        scratch: Option<&mut MaterializedWorkspace<T>>,
    ) -> Result<()> {
        let opts = Options {
            softmax_scale: None,
            causal,
        };
        match self {
            AttentionImpl::Flash(ver) => {
                flash_attention(gpu, ver, q, k, v, key_lens, &opts, o, None)?
            }
            AttentionImpl::Fastest => {
                let s = q.shape();
                let shape = Shape {
                    batch: s[0],
                    seq_q: s[1],
                    seq_k: s[1],
                    heads_q: s[2],
                    heads_kv: s[2],
                    head_dim: s[3],
                };
                let ver = Version::fastest(gpu, T::DTYPE, &shape, causal);
                flash_attention(gpu, ver, q, k, v, key_lens, &opts, o, None)?
            }
            AttentionImpl::Materialized => {
                let scratch = scratch.ok_or_else(|| {
                    ModelError::Input("workspace lacks the materialized-attention scratch".into())
                })?;
                materialized_attention(gpu, q, k, v, key_lens, &opts, o, None, scratch)?
            }
        }
        Ok(())
    }
}

/// `--attention fastest|v1|v2|v3|v4|materialized` on the command line.
#[cfg(feature = "clap")]
impl clap::ValueEnum for AttentionImpl {
    fn value_variants<'a>() -> &'a [Self] {
        &[
            AttentionImpl::Fastest,
            AttentionImpl::Flash(Version::V1),
            AttentionImpl::Flash(Version::V2),
            AttentionImpl::Flash(Version::V3),
            AttentionImpl::Flash(Version::V4),
            AttentionImpl::Materialized,
        ]
    }

    fn to_possible_value(&self) -> Option<clap::builder::PossibleValue> {
        use clap::builder::PossibleValue;
        Some(match self {
            AttentionImpl::Fastest => {
                PossibleValue::new("fastest").help("the fastest flash version per shape")
            }
            AttentionImpl::Flash(v) => PossibleValue::new(v.name()),
            AttentionImpl::Materialized => {
                PossibleValue::new("materialized").help("scores in memory through cuBLAS")
            }
        })
    }
}

/// Self-attention with Q, K and V packed into one projection.
#[derive(Debug, Clone, PartialEq)]
pub struct Attention<A> {
    /// Packed Q/K/V projection: weight `[3·D, D]`, bias `[3·D]`; rows `0..D` are Q, `D..2D` K, `2D..3D` V, and
    /// within each, head `h` owns rows `h·head_dim..(h+1)·head_dim`. One GEMM computes all three (Hugging Face
    /// stores them apart, open_clip packed; see [`crate::checkpoint::Stored`]).
    pub qkv_proj: Linear<A>,
    /// Output projection, `[D, D]` / `[D]`.
    pub out_proj: Linear<A>,
}

impl<A> Attention<A> {
    /// Loads `prefix.qkv_proj` and `prefix.out_proj`.
    pub fn load<S: Source<Tensor = A>>(
        s: &mut S,
        prefix: &str,
        d: usize,
    ) -> Result<Self, S::Error> {
        Ok(Attention {
            qkv_proj: Linear::load(s, &key(prefix, "qkv_proj"), 3 * d, d)?,
            out_proj: Linear::load(s, &key(prefix, "out_proj"), d, d)?,
        })
    }

    /// Visits the tensors in `load` order.
    pub fn for_each_tensor<'a>(&'a self, f: &mut dyn FnMut(&'a A)) {
        self.qkv_proj.for_each_tensor(f);
        self.out_proj.for_each_tensor(f);
    }
}

impl<T: Element> Attention<Tensor<T>> {
    /// `branch = out_proj(attention(qkv_proj(normed)))` for `batch` sequences of `seq` tokens, without
    /// out_proj's bias (the residual step that follows adds it); see [`self_attention`].
    pub fn forward(
        &self,
        gpu: &Gpu,
        b: &mut TowerBuffers<T>,
        spec: &EncoderSpec,
        shape: (usize, usize),
        attention: AttentionImpl,
    ) -> Result<()> {
        let projections = (&self.qkv_proj, &self.out_proj);
        self_attention(gpu, b, spec, shape, attention, projections, None)
    }
}

/// `branch = out(attention(qkv(normed)))` for `batch` sequences of `seq` tokens, without `out`'s bias (the
/// residual step that follows adds it); with `key_lens` (at least `batch` ints, on the device) sequence `b` attends
/// to its first `key_lens[b]` keys only. The attention kernel reads Q, K and V in place from the packed QKV rows,
/// and writes its output into the head of the MLP buffer, unused until the MLP runs.
pub(crate) fn self_attention<T: Element>(
    gpu: &Gpu,
    b: &mut TowerBuffers<T>,
    spec: &EncoderSpec,
    (batch, seq): (usize, usize),
    attention: AttentionImpl,
    (qkv, out): (&Linear<Tensor<T>>, &Linear<Tensor<T>>),
    key_lens: Option<&CudaSlice<i32>>,
) -> Result<()> {
    let (tokens, d, heads) = (batch * seq, spec.dim, spec.heads);
    let hd = d / heads;
    qkv.forward(
        gpu,
        &b.normed.view().narrow(0, 0, tokens)?,
        &mut b.qkv.view_mut().narrow(0, 0, tokens)?,
    )?;
    let packed_dims = [batch, seq, 3, heads, hd];
    let packed = View::new(
        b.qkv.data(),
        0,
        &packed_dims,
        &contiguous_strides(&packed_dims),
    )?;
    let (q, k, v) = (
        packed.select(2, 0)?,
        packed.select(2, 1)?,
        packed.select(2, 2)?,
    );
    let o_dims = [batch, seq, heads, hd];
    let mut o = ViewMut::new(b.mlp.data_mut(), 0, &o_dims, &contiguous_strides(&o_dims))?;
    attention.run(
        gpu,
        &q,
        &k,
        &v,
        spec.causal,
        key_lens,
        &mut o,
        b.materialized.as_mut(),
    )?;
    let o = View::new(b.mlp.data(), 0, &[tokens, d], &[d, 1])?;
    out.forward_unbiased(gpu, &o, &mut b.branch.view_mut().narrow(0, 0, tokens)?)
}
