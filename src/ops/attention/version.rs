//! The flash kernel versions and the per-shape choice among them.

use super::{Shape, FLASH_HEAD_DIMS};
use crate::gpu::Gpu;
use crate::tensor::DType;

/// Flash attention kernel versions, simplest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum Version {
    /// Tiled online softmax on CUDA cores, fp32 math (f16, bf16, f32).
    V1,
    /// FlashAttention-2 style on tensor cores (mma.sync, sm_80+; f16, bf16).
    V2,
    /// Hopper warpgroup MMA (wgmma; compute capability 9.0 only; f16, bf16).
    V3,
    /// v3's math, warp-specialized: a producer warpgroup loads, two consumer warpgroups multiply (compute
    /// capability 9.0 only; f16, bf16).
    V4,
}

impl Version {
    /// Every version, in ladder order.
    pub const ALL: [Version; 4] = [Version::V1, Version::V2, Version::V3, Version::V4];

    /// Short name used in benchmarks and reports.
    pub fn name(self) -> &'static str {
        match self {
            Version::V1 => "v1",
            Version::V2 => "v2",
            Version::V3 => "v3",
            Version::V4 => "v4",
        }
    }

    /// Head dims the version compiles kernels for.
    pub fn head_dims(self) -> &'static [usize] {
        match self {
            Version::V1 => &[
                8, 16, 24, 32, 40, 48, 56, 64, 72, 80, 88, 96, 104, 112, 120, 128,
            ],
            Version::V2 | Version::V3 | Version::V4 => &FLASH_HEAD_DIMS,
        }
    }

    /// Element types the version takes.
    pub fn dtypes(self) -> &'static [DType] {
        match self {
            Version::V1 => &[DType::F16, DType::BF16, DType::F32],
            Version::V2 | Version::V3 | Version::V4 => &[DType::F16, DType::BF16],
        }
    }

    /// Whether the version runs this dtype and head dim.
    pub fn supports(self, dtype: DType, head_dim: usize) -> bool {
        self.dtypes().contains(&dtype) && self.head_dims().contains(&head_dim)
    }

    /// Whether the version's kernels run on this device: v3 and v4 are built for sm_90a (Hopper) alone, whose
    /// code runs on compute capability 9.0 and nowhere else; v1 and v2 run on sm_80 and newer.
    pub fn runs_on(self, gpu: &Gpu) -> bool {
        self.runs_on_capability(gpu.compute_capability())
    }

    /// [`Version::runs_on`] for a device of this compute capability (major, minor).
    pub fn runs_on_capability(self, capability: (i32, i32)) -> bool {
        match self {
            Version::V1 | Version::V2 => true,
            Version::V3 | Version::V4 => capability == (9, 0),
        }
    }

    /// The fastest version for this problem on this GPU, from the H100 measurements in
    /// benches/results/2026-11-26-h100-v4-persistent and -pingpong: the one place where the per-shape choice of
    /// version is made (v4 picks its tile shape per launch in kernels/attention_v4.cu).
    /// - Without causal masking: v4 (persistent blocks, narrow last key tiles, the key split of the last query block;
    ///   0.78x of v3's time at batch 16 N 577 and 0.72x at N 257, head dim 64; 0.67x at N 257 head dim 80;
    ///   0.6-0.7x at head dims 96-128; 0.73x at batch 1).
    /// - Causal (text, N 77): v3 at head dims 64/80 (7.5 µs; v4 8.8), v4 at 96-128.
    /// - No Hopper: v2 for f16/bf16, v1 for f32 or head dims v2 lacks.
    pub fn fastest(gpu: &Gpu, dtype: DType, shape: &Shape, causal: bool) -> Version {
        Version::fastest_on(gpu.compute_capability(), dtype, shape, causal)
    }

    /// [`Version::fastest`] for a device of this compute capability.
    pub fn fastest_on(
        capability: (i32, i32),
        dtype: DType,
        shape: &Shape,
        causal: bool,
    ) -> Version {
        let hopper = Version::V3.runs_on_capability(capability)
            && Version::V3.supports(dtype, shape.head_dim);
        if hopper {
            return if causal && shape.head_dim < 96 {
                Version::V3
            } else {
                Version::V4
            };
        }
        if Version::V2.supports(dtype, shape.head_dim) {
            Version::V2
        } else {
            Version::V1
        }
    }
}
