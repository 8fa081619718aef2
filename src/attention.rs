//! Attention forward (kernels/attention*.cu).
//!
//! Q, K, V and O are `[batch, seq, heads, head_dim]` views with any strides whose innermost stride is 1, so the
//! packed `[batch, seq, 3, heads, head_dim]` output of one QKV GEMM is read in place (`qkv.select(2, i)`) and O is
//! written in the layout the out-projection GEMM consumes. K/V may have fewer heads than Q (GQA/MQA). Key `j` is
//! visible to query `i` iff `j < key_lens[b]` (when given) and, when causal, `j <= i`; a query that sees no key
//! outputs zeros (and lse = -inf). The flash versions never read keys at or past `key_lens[b]` into the result,
//! whatever those rows hold (NaN included).
//!
//! Versions ([`Version`]) are the rungs of the speed-up ladder; [`materialized_attention`] is the plain path
//! (scores in memory through cuBLAS + a softmax kernel) they are measured against.

use cudarc::driver::{CudaSlice, DevicePtr, DevicePtrMut};

use crate::check;
use crate::error::{check_launch, Error, Result};
use crate::ffi;
use crate::gemm::RawGemm;
use crate::gpu::Gpu;
use crate::tensor::{DType, Element, Layout, View, ViewMut};

/// Flash attention kernel versions, simplest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
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
            Version::V2 | Version::V3 | Version::V4 => &[64, 80, 96, 104, 112, 128],
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

/// Scale and masking.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Options {
    /// Multiplies Q·Kᵀ before the softmax (finite, > 0); `None` means `1 / sqrt(head_dim)`.
    pub softmax_scale: Option<f32>,
    /// Query `i` sees keys `j <= i` only (needs seq_q == seq_k).
    pub causal: bool,
}

/// Sizes shared by Q, K, V and O, checked against each other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    pub batch: usize,
    pub seq_q: usize,
    pub seq_k: usize,
    pub heads_q: usize,
    pub heads_kv: usize,
    pub head_dim: usize,
}

impl Shape {
    /// Floating-point operations of the two matrix products, `4 * B * Hq * Nq * Nk * D`, halved when causal
    /// (the usual convention for attention TFLOP/s).
    pub fn flops(&self, causal: bool) -> f64 {
        let full = 4.0
            * (self.batch * self.heads_q) as f64
            * self.seq_q as f64
            * self.seq_k as f64
            * self.head_dim as f64;
        if causal {
            full / 2.0
        } else {
            full
        }
    }

    fn lse_len(&self) -> usize {
        self.batch * self.heads_q * self.seq_q
    }
}

fn rank4(what: &'static str, l: &Layout) -> Result<()> {
    check::rank(what, &l.shape, 4)?;
    check::nonempty(what, &l.shape)?;
    if l.strides.len() != 4 || l.strides[3] != 1 {
        return Err(Error::Layout {
            what,
            detail: format!("head_dim stride must be 1, got strides {:?}", l.strides),
        });
    }
    Ok(())
}

/// Checks the layouts of Q, K, V and O against each other and the options, and returns the sizes. Pure: needs
/// no GPU (the launch functions call it first, then check pointers).
pub fn check_shapes(
    q: &Layout,
    k: &Layout,
    v: &Layout,
    o: &Layout,
    opts: &Options,
) -> Result<Shape> {
    rank4("q", q)?;
    rank4("k", k)?;
    rank4("v", v)?;
    rank4("o", o)?;
    let [batch, seq_q, heads_q, head_dim] = [q.shape[0], q.shape[1], q.shape[2], q.shape[3]];
    let [seq_k, heads_kv] = [k.shape[1], k.shape[2]];
    check::shape("k", &k.shape, &[batch, seq_k, heads_kv, head_dim])?;
    check::shape("v", &v.shape, &k.shape)?;
    check::shape("o", &o.shape, &q.shape)?;
    if heads_q % heads_kv != 0 {
        return Err(Error::InvalidArgument {
            what: "heads",
            detail: format!(
                "query heads {heads_q} must be a multiple of key/value heads {heads_kv}"
            ),
        });
    }
    if opts.causal && seq_q != seq_k {
        return Err(Error::InvalidArgument {
            what: "causal",
            detail: format!("causal attention needs seq_q == seq_k, got {seq_q} and {seq_k}"),
        });
    }
    if let Some(s) = opts.softmax_scale {
        // The kernels compare raw scores to find the row maximum: a scale <= 0 would reverse that order.
        check::finite("softmax_scale", s, true)?;
    }
    Ok(Shape {
        batch,
        seq_q,
        seq_k,
        heads_q,
        heads_kv,
        head_dim,
    })
}

/// Everything [`flash_attention`] checks before touching the GPU: [`check_shapes`], the version's dtype and head
/// dims, and strides that keep 16-byte vector loads aligned.
pub fn check_flash(
    version: Version,
    dtype: DType,
    q: &Layout,
    k: &Layout,
    v: &Layout,
    o: &Layout,
    opts: &Options,
) -> Result<Shape> {
    let shape = check_shapes(q, k, v, o, opts)?;
    if !version.supports(dtype, shape.head_dim) {
        return Err(Error::Unsupported(format!(
            "attention {} does not support {} with head_dim {} (head dims {:?}, dtypes {:?})",
            version.name(),
            dtype,
            shape.head_dim,
            version.head_dims(),
            version.dtypes()
        )));
    }
    let elems = 16 / dtype.size();
    for (what, l) in [("q", q), ("k", k), ("v", v), ("o", o)] {
        if l.strides[..3]
            .iter()
            .chain([&l.offset])
            .any(|s| s % elems != 0)
        {
            return Err(Error::Misaligned {
                what,
                detail: format!(
                    "offset {} and strides {:?} must be multiples of {elems} elements (16 bytes)",
                    l.offset, l.strides
                ),
            });
        }
    }
    Ok(shape)
}

fn scale(opts: &Options, head_dim: usize) -> f32 {
    opts.softmax_scale.unwrap_or(1.0 / (head_dim as f32).sqrt())
}

fn check_aux(
    shape: &Shape,
    key_lens: Option<&CudaSlice<i32>>,
    lse: Option<&CudaSlice<f32>>,
) -> Result<()> {
    if let Some(kl) = key_lens {
        check::shape("key_lens", &[kl.len()], &[shape.batch])?;
    }
    if let Some(l) = lse {
        if l.len() < shape.lse_len() {
            return Err(Error::Shape {
                what: "lse",
                expected: vec![shape.lse_len()],
                got: vec![l.len()],
            });
        }
    }
    Ok(())
}

/// Strides (batch, seq, head) as the kernel's 64-bit ints, after checking the base address is 16-byte aligned.
fn strides3(what: &'static str, strides: &[usize], ptr: u64) -> Result<[i64; 3]> {
    check::aligned(what, ptr, 16)?;
    Ok([
        check::fits_i64(what, strides[0])?,
        check::fits_i64(what, strides[1])?,
        check::fits_i64(what, strides[2])?,
    ])
}

/// Flash attention forward: `o = softmax(scale * q kᵀ + mask) v`, optionally writing the row log-sum-exp
/// (`lse`, fp32 `[batch, heads_q, seq_q]`). v4 sums each row's probabilities as rounded to `T` for the product
/// with v (so that `o`'s weights sum to one): its lse is that of the rounded probabilities, within `T`'s unit
/// roundoff of the exact one (bf16: 2⁻⁸).
#[allow(clippy::too_many_arguments)]
pub fn flash_attention<T: Element>(
    gpu: &Gpu,
    version: Version,
    q: &View<T>,
    k: &View<T>,
    v: &View<T>,
    key_lens: Option<&CudaSlice<i32>>,
    opts: &Options,
    o: &mut ViewMut<T>,
    lse: Option<&mut CudaSlice<f32>>,
) -> Result<()> {
    launch(
        gpu,
        Kernel::Version(version),
        q,
        k,
        v,
        key_lens,
        opts,
        o,
        lse,
    )
}

/// Tile shapes of the v3 and v4 kernels that can be chosen explicitly, for tuning sweeps (benches/attention.rs);
/// [`Version::V3`] and [`Version::V4`] use the tuned choice per shape (v3: `V3Wg2N64` at head dim 64, `V3Wg1N64`
/// at 80; v4 without causal masking: `V4Wg3N96PingPong` at 64 and `V4Wg3N64` at 80 when their blocks fill more
/// than one wave of SMs, else `V4Wg2N64PingPong` at 64 and `V4Wg2N64` at 80). `WgXNy`: X (consumer) warpgroups of
/// 64 query rows per block, y keys per K/V tile; v4's `Wg1` runs two blocks per SM. v4 shapes narrow the last key
/// tile (16 or 80 keys) where the keys left over fit, and split the keys of a last query block of at most 64 rows
/// among the consumers. The `PingPong` shapes have the consumers issue their GEMMs in turns (FlashAttention-3's
/// ping-pong scheduling).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tiles {
    V3Wg2N64,
    V3Wg1N64,
    V3Wg2N128,
    V3Wg3N64,
    V4Wg2N128,
    V4Wg2N64,
    V4Wg3N96,
    V4Wg1N128,
    V4Wg3N64,
    V4Wg2N64PingPong,
    V4Wg3N96PingPong,
    V4Wg3N64PingPong,
}

/// A sweep shape as the C entry point of its version names it.
enum TilesFfi {
    V3(ffi::fc_v3_tiles),
    V4(ffi::fc_v4_tiles),
}

impl Tiles {
    pub const ALL: [Tiles; 12] = [
        Tiles::V3Wg2N64,
        Tiles::V3Wg1N64,
        Tiles::V3Wg2N128,
        Tiles::V3Wg3N64,
        Tiles::V4Wg2N128,
        Tiles::V4Wg2N64,
        Tiles::V4Wg3N96,
        Tiles::V4Wg1N128,
        Tiles::V4Wg3N64,
        Tiles::V4Wg2N64PingPong,
        Tiles::V4Wg3N96PingPong,
        Tiles::V4Wg3N64PingPong,
    ];

    /// The kernel version the shape belongs to.
    pub fn version(self) -> Version {
        match self {
            Tiles::V3Wg2N64 | Tiles::V3Wg1N64 | Tiles::V3Wg2N128 | Tiles::V3Wg3N64 => Version::V3,
            Tiles::V4Wg2N128
            | Tiles::V4Wg2N64
            | Tiles::V4Wg3N96
            | Tiles::V4Wg1N128
            | Tiles::V4Wg3N64
            | Tiles::V4Wg2N64PingPong
            | Tiles::V4Wg3N96PingPong
            | Tiles::V4Wg3N64PingPong => Version::V4,
        }
    }

    /// Head dims the version's sweep entry point is built for.
    pub fn head_dims(self) -> &'static [usize] {
        match self {
            Tiles::V4Wg3N96
            | Tiles::V4Wg1N128
            | Tiles::V4Wg3N96PingPong => &[64],
            _ => &[64, 80],
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Tiles::V3Wg2N64 => "v3 wg2 n64",
            Tiles::V3Wg1N64 => "v3 wg1 n64",
            Tiles::V3Wg2N128 => "v3 wg2 n128",
            Tiles::V3Wg3N64 => "v3 wg3 n64",
            Tiles::V4Wg2N128 => "v4 wg2 n128",
            Tiles::V4Wg2N64 => "v4 wg2 n64",
            Tiles::V4Wg3N96 => "v4 wg3 n96",
            Tiles::V4Wg1N128 => "v4 wg1 n128",
            Tiles::V4Wg3N64 => "v4 wg3 n64",
            Tiles::V4Wg2N64PingPong => "v4 wg2 n64 pingpong",
            Tiles::V4Wg3N96PingPong => "v4 wg3 n96 pingpong",
            Tiles::V4Wg3N64PingPong => "v4 wg3 n64 pingpong",
        }
    }

    fn ffi(self) -> TilesFfi {
        use ffi::{fc_v3_tiles as F3, fc_v4_tiles as F4};
        match self {
            Tiles::V3Wg2N64 => TilesFfi::V3(F3::FC_V3_TILES_WG2_N64),
            Tiles::V3Wg1N64 => TilesFfi::V3(F3::FC_V3_TILES_WG1_N64),
            Tiles::V3Wg2N128 => TilesFfi::V3(F3::FC_V3_TILES_WG2_N128),
            Tiles::V3Wg3N64 => TilesFfi::V3(F3::FC_V3_TILES_WG3_N64),
            Tiles::V4Wg2N128 => TilesFfi::V4(F4::FC_V4_TILES_WG2_N128),
            Tiles::V4Wg2N64 => TilesFfi::V4(F4::FC_V4_TILES_WG2_N64),
            Tiles::V4Wg3N96 => TilesFfi::V4(F4::FC_V4_TILES_WG3_N96),
            Tiles::V4Wg1N128 => TilesFfi::V4(F4::FC_V4_TILES_WG1_N128),
            Tiles::V4Wg3N64 => TilesFfi::V4(F4::FC_V4_TILES_WG3_N64),
            Tiles::V4Wg2N64PingPong => TilesFfi::V4(F4::FC_V4_TILES_WG2_N64_PINGPONG),
            Tiles::V4Wg3N96PingPong => TilesFfi::V4(F4::FC_V4_TILES_WG3_N96_PINGPONG),
            Tiles::V4Wg3N64PingPong => TilesFfi::V4(F4::FC_V4_TILES_WG3_N64_PINGPONG),
        }
    }
}

/// [`flash_attention`] with the version of `tiles` at that explicit tile shape; head dims [`Tiles::head_dims`]
/// only.
#[allow(clippy::too_many_arguments)]
pub fn flash_attention_tiles<T: Element>(
    gpu: &Gpu,
    tiles: Tiles,
    q: &View<T>,
    k: &View<T>,
    v: &View<T>,
    key_lens: Option<&CudaSlice<i32>>,
    opts: &Options,
    o: &mut ViewMut<T>,
    lse: Option<&mut CudaSlice<f32>>,
) -> Result<()> {
    let head_dim = q.layout().shape.get(3).copied().unwrap_or(0);
    if !tiles.head_dims().contains(&head_dim) {
        return Err(Error::Unsupported(format!(
            "{} is built for head dims {:?}, not {head_dim}",
            tiles.name(),
            tiles.head_dims()
        )));
    }
    launch(gpu, Kernel::Tiles(tiles), q, k, v, key_lens, opts, o, lse)
}

#[derive(Clone, Copy)]
enum Kernel {
    Version(Version),
    Tiles(Tiles),
}

impl Kernel {
    fn version(self) -> Version {
        match self {
            Kernel::Version(v) => v,
            Kernel::Tiles(t) => t.version(),
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn launch<T: Element>(
    gpu: &Gpu,
    kernel: Kernel,
    q: &View<T>,
    k: &View<T>,
    v: &View<T>,
    key_lens: Option<&CudaSlice<i32>>,
    opts: &Options,
    o: &mut ViewMut<T>,
    lse: Option<&mut CudaSlice<f32>>,
) -> Result<()> {
    let version = kernel.version();
    let shape = check_flash(
        version,
        T::DTYPE,
        q.layout(),
        k.layout(),
        v.layout(),
        o.layout(),
        opts,
    )?;
    check_aux(&shape, key_lens, lse.as_deref())?;
    if !version.runs_on(gpu) {
        let (major, minor) = gpu.compute_capability();
        return Err(Error::Unsupported(format!(
            "attention {} needs a compute capability 9.0 GPU (Hopper), this one is {major}.{minor}",
            version.name()
        )));
    }
    let stream = gpu.stream();
    let (qp, kp, vp, op) = (
        q.device_ptr(stream),
        k.device_ptr(stream),
        v.device_ptr(stream),
        o.device_ptr_mut(stream),
    );
    let [qb, qs, qh] = strides3("q", q.strides(), qp)?;
    let [kb, ks, kh] = strides3("k", k.strides(), kp)?;
    let [vb, vs, vh] = strides3("v", v.strides(), vp)?;
    let [ob, os, oh] = strides3("o", o.strides(), op)?;
    let params = ffi::fc_attention_params {
        q: qp as *const _,
        k: kp as *const _,
        v: vp as *const _,
        o: op as *mut _,
        lse: lse.map_or(std::ptr::null_mut(), |l| {
            l.device_ptr_mut(stream).0 as *mut f32
        }),
        key_lens: key_lens.map_or(std::ptr::null(), |kl| kl.device_ptr(stream).0 as *const i32),
        q_batch_stride: qb,
        q_seq_stride: qs,
        q_head_stride: qh,
        k_batch_stride: kb,
        k_seq_stride: ks,
        k_head_stride: kh,
        v_batch_stride: vb,
        v_seq_stride: vs,
        v_head_stride: vh,
        o_batch_stride: ob,
        o_seq_stride: os,
        o_head_stride: oh,
        batch: check::fits_i32("batch", shape.batch)?,
        heads_q: check::fits_i32("heads_q", shape.heads_q)?,
        heads_kv: check::fits_i32("heads_kv", shape.heads_kv)?,
        seq_q: check::fits_i32("seq_q", shape.seq_q)?,
        seq_k: check::fits_i32("seq_k", shape.seq_k)?,
        head_dim: check::fits_i32("head_dim", shape.head_dim)?,
        softmax_scale: scale(opts, shape.head_dim),
        causal: opts.causal as i32,
    };
    let s = ffi::stream(stream);
    // SAFETY: check_shapes/check_aux/strides3 verified that Q, K, V, O are rank-4 views inside their buffers with
    // matching sizes, unit head_dim stride, 16-byte aligned bases and strides, a supported dtype/head_dim for this
    // version, key_lens of `batch` ints and lse of at least batch*heads_q*seq_q floats. O (and lse) are mutable
    // borrows, so they alias no input. The launch is ordered on the gpu's stream.
    let code = unsafe {
        match kernel {
            Kernel::Version(Version::V1) => ffi::fc_attention_v1(&params, T::DTYPE.ffi(), s),
            Kernel::Version(Version::V2) => ffi::fc_attention_v2(&params, T::DTYPE.ffi(), s),
            // runs_on checked the device is the one its sm_90a code runs on.
            Kernel::Version(Version::V3) => ffi::fc_attention_v3(&params, T::DTYPE.ffi(), s),
            Kernel::Version(Version::V4) => ffi::fc_attention_v4(&params, T::DTYPE.ffi(), s),
            // The caller checked the head dim is one the sweep entry is built for.
            Kernel::Tiles(t) => match t.ffi() {
                TilesFfi::V3(f) => ffi::fc_attention_v3_tiles(&params, T::DTYPE.ffi(), f, s),
                TilesFfi::V4(f) => ffi::fc_attention_v4_tiles(&params, T::DTYPE.ffi(), f, s),
            },
        }
    };
    check_launch(version.name(), code)
}

/// Scratch for [`materialized_attention`]: the fp32 scores and the probabilities in `T`, `[batch, heads_q, seq_q,
/// seq_k]` each. Allocate once per maximum shape and reuse.
pub struct MaterializedWorkspace<T: Element> {
    scores: CudaSlice<f32>,
    probs: CudaSlice<T>,
}

impl<T: Element> MaterializedWorkspace<T> {
    /// Room for attention up to these sizes.
    pub fn new(
        gpu: &Gpu,
        batch: usize,
        heads_q: usize,
        seq_q: usize,
        seq_k: usize,
    ) -> Result<Self> {
        let len = [batch, heads_q, seq_q, seq_k]
            .iter()
            .try_fold(1usize, |a, &d| a.checked_mul(d))
            .ok_or(Error::TooLarge {
                what: "attention workspace",
            })?;
        Ok(Self {
            scores: gpu.zeros::<f32>(&[len])?.data().clone(),
            probs: gpu.zeros::<T>(&[len])?.data().clone(),
        })
    }
}

/// The unfused path: `S = q kᵀ` (fp32, cuBLAS), masked softmax into `P` (in `T`), `o = P v` (cuBLAS).
/// The baseline the flash kernels are measured against; fp32 inputs give an all-fp32 computation.
#[allow(clippy::too_many_arguments)]
pub fn materialized_attention<T: Element>(
    gpu: &Gpu,
    q: &View<T>,
    k: &View<T>,
    v: &View<T>,
    key_lens: Option<&CudaSlice<i32>>,
    opts: &Options,
    o: &mut ViewMut<T>,
    lse: Option<&mut CudaSlice<f32>>,
    ws: &mut MaterializedWorkspace<T>,
) -> Result<()> {
    let sh = check_shapes(q.layout(), k.layout(), v.layout(), o.layout(), opts)?;
    check_aux(&sh, key_lens, lse.as_deref())?;
    let plane = sh.seq_q * sh.seq_k;
    let needed = sh.batch * sh.heads_q * plane;
    if ws.scores.len() < needed {
        return Err(Error::Shape {
            what: "attention workspace",
            expected: vec![needed],
            got: vec![ws.scores.len()],
        });
    }
    let stream = gpu.stream();
    let (qp, kp, vp, op) = (
        q.device_ptr(stream),
        k.device_ptr(stream),
        v.device_ptr(stream),
        o.device_ptr_mut(stream),
    );
    let sp = ws.scores.device_ptr_mut(stream).0;
    let pp = ws.probs.device_ptr_mut(stream).0;
    let (qs, ks, vs, os) = (q.strides(), k.strides(), v.strides(), o.strides());
    let esize = std::mem::size_of::<T>() as u64;
    let t = T::DTYPE.cublas();
    let f32t = DType::F32.cublas();
    let group = sh.heads_q / sh.heads_kv;
    // MHA batches all heads of a sequence in one call; GQA batches the query heads sharing one K/V head (stride 0).
    let (kv_heads_per_call, heads_per_call) = if group == 1 {
        (sh.heads_kv, sh.heads_q)
    } else {
        (1, group)
    };
    for b in 0..sh.batch {
        for hk in (0..sh.heads_kv).step_by(kv_heads_per_call) {
            let h0 = hk * group;
            let q0 = qp + ((b * qs[0] + h0 * qs[2]) as u64) * esize;
            let k0 = kp + ((b * ks[0] + hk * ks[2]) as u64) * esize;
            let s0 = sp + (((b * sh.heads_q + h0) * plane) as u64) * 4;
            let kv_stride = |s: &[usize]| if group == 1 { s[2] } else { 0 };
            let scores = RawGemm {
                trans_a: true,
                trans_b: false,
                m: sh.seq_k,
                n: sh.seq_q,
                k: sh.head_dim,
                a: k0,
                a_type: t,
                lda: ks[1],
                stride_a: kv_stride(ks),
                b: q0,
                b_type: t,
                ldb: qs[1],
                stride_b: qs[2],
                c: s0,
                c_type: f32t,
                ldc: sh.seq_k,
                stride_c: plane,
                batch: heads_per_call,
                alpha: 1.0,
                beta: 0.0,
            };
            // SAFETY: the views were checked to be inside their buffers with the shapes above, so every batch index
            // addresses [seq_k, head_dim] K rows (row stride ks[1]) and [seq_q, head_dim] Q rows; the scores
            // workspace holds batch*heads_q planes of seq_q*seq_k fp32.
            unsafe { scores.run(gpu)? };
        }
    }
    let s = ffi::stream(stream);
    // SAFETY: scores and probs hold batch*heads_q*seq_q rows of seq_k elements (checked above); key_lens and lse
    // were checked by check_aux.
    let code = unsafe {
        ffi::fc_attention_softmax(
            sp as *const f32,
            check::fits_i64("seq_k", sh.seq_k)?,
            pp as *mut _,
            check::fits_i64("seq_k", sh.seq_k)?,
            lse.map_or(std::ptr::null_mut(), |l| {
                l.device_ptr_mut(stream).0 as *mut f32
            }),
            key_lens.map_or(std::ptr::null(), |kl| kl.device_ptr(stream).0 as *const i32),
            check::fits_i32("batch", sh.batch)?,
            check::fits_i32("heads_q", sh.heads_q)?,
            check::fits_i32("seq_q", sh.seq_q)?,
            check::fits_i32("seq_k", sh.seq_k)?,
            scale(opts, sh.head_dim),
            opts.causal as i32,
            T::DTYPE.ffi(),
            s,
        )
    };
    check_launch("attention_softmax", code)?;
    for b in 0..sh.batch {
        for hk in (0..sh.heads_kv).step_by(kv_heads_per_call) {
            let h0 = hk * group;
            let v0 = vp + ((b * vs[0] + hk * vs[2]) as u64) * esize;
            let o0 = op + ((b * os[0] + h0 * os[2]) as u64) * esize;
            let p0 = pp + (((b * sh.heads_q + h0) * plane) as u64) * esize;
            let out = RawGemm {
                trans_a: false,
                trans_b: false,
                m: sh.head_dim,
                n: sh.seq_q,
                k: sh.seq_k,
                a: v0,
                a_type: t,
                lda: vs[1],
                stride_a: if group == 1 { vs[2] } else { 0 },
                b: p0,
                b_type: t,
                ldb: sh.seq_k,
                stride_b: plane,
                c: o0,
                c_type: t,
                ldc: os[1],
                stride_c: os[2],
                batch: heads_per_call,
                alpha: 1.0,
                beta: 0.0,
            };
            // SAFETY: as for the scores: V rows [seq_k, head_dim] per K/V head, P planes in the workspace, O rows
            // [seq_q, head_dim] per query head, all inside their checked buffers; O is a distinct mutable borrow.
            unsafe { out.run(gpu)? };
        }
    }
    Ok(())
}
