//! flashclip's own GEMM (kernels/gemm.cu, Hopper sm_90a): `y = epilogue(x · wᵀ)` with the bias, activation or
//! residual step of a linear layer fused into the store, so that no separate elementwise pass reads and writes
//! `y` again.

use crate::check;
use crate::error::{check_launch, Error, Result};
use crate::ffi;
use crate::gpu::Gpu;
use crate::ops::bias_activation::Activation;
use crate::tensor::{DType, Element, View, ViewMut};

use super::{check_linear, LinearShape};

/// What the GEMM does to each `x · wᵀ` element before storing it in `y`.
#[derive(Clone, Copy)]
pub enum Epilogue<'v, 'a, T: Element> {
    /// `y = x · wᵀ`.
    Plain,
    /// `y = x · wᵀ + bias`.
    Bias(&'v View<'a, T>),
    /// `y = act(x · wᵀ + bias)`: a transformer MLP's first layer.
    BiasActivation(&'v View<'a, T>, Activation),
    /// `y += x · wᵀ + bias`: a residual step, `y` holding the residual stream.
    BiasAccumulate(&'v View<'a, T>),
}

/// Whether [`linear_fused`] runs on this GPU and dtype: sm_90 (Hopper; the kernel uses wgmma and TMA) and a
/// 16-bit element type.
pub fn supported<T: Element>(gpu: &Gpu) -> bool {
    gpu.compute_capability() == (9, 0) && matches!(T::DTYPE, DType::F16 | DType::BF16)
}

/// `y = epilogue(x · wᵀ)`: x `[m, k]`, w `[n, k]` (PyTorch's `[out, in]`), y `[m, n]`, bias `[n]`, all f16 or
/// bf16, on sm_90 (see [`supported`]). Rows may be strided; `k`, `n` and the row strides of x and w must be
/// multiples of 8 with x and w 16-byte aligned (the tensor-memory-accelerator loads), y's row stride even.
pub fn linear_fused<T: Element>(
    gpu: &Gpu,
    x: &View<T>,
    w: &View<T>,
    epilogue: Epilogue<'_, '_, T>,
    y: &mut ViewMut<T>,
) -> Result<()> {
    launch(gpu, Kernel::Default, x, w, epilogue, y)
}

/// What a launch runs: the kernel at its default schedule, or (tuning) an explicit one.
#[derive(Clone, Copy)]
pub(super) enum Kernel {
    Default,
    #[cfg(feature = "tuning")]
    Schedule(super::schedule::Schedule),
}

pub(super) fn launch<T: Element>(
    gpu: &Gpu,
    kernel: Kernel,
    x: &View<T>,
    w: &View<T>,
    epilogue: Epilogue<'_, '_, T>,
    y: &mut ViewMut<T>,
) -> Result<()> {
    if !supported::<T>(gpu) {
        let (major, minor) = gpu.compute_capability();
        return Err(Error::Unsupported(format!(
            "the fused GEMM needs an sm_90 GPU and f16/bf16 (this is sm_{major}{minor}, {})",
            T::DTYPE
        )));
    }
    let LinearShape {
        m,
        n,
        k,
        lda,
        ldw,
        ldy,
    } = check_linear(x, w, y)?;
    for (what, v, multiple) in [
        ("fused GEMM n", n, 8),
        ("fused GEMM k", k, 8),
        ("fused GEMM x row stride", lda, 8),
        ("fused GEMM w row stride", ldw, 8),
        ("fused GEMM y row stride", ldy, 2),
    ] {
        if v % multiple != 0 {
            return Err(Error::Unsupported(format!(
                "{what} is {v}, not a multiple of {multiple}"
            )));
        }
    }
    let stream = gpu.stream();
    let (xp, wp) = (x.device_ptr(stream), w.device_ptr(stream));
    check::aligned("fused GEMM x", xp, 16)?;
    check::aligned("fused GEMM w", wp, 16)?;
    let (epi, act, bias) = match epilogue {
        Epilogue::Plain => (
            ffi::fc_gemm_epilogue::FC_GEMM_PLAIN,
            Activation::Identity,
            None,
        ),
        Epilogue::Bias(b) => (
            ffi::fc_gemm_epilogue::FC_GEMM_BIAS,
            Activation::Identity,
            Some(b),
        ),
        Epilogue::BiasActivation(b, act) => {
            (ffi::fc_gemm_epilogue::FC_GEMM_BIAS_ACTIVATION, act, Some(b))
        }
        Epilogue::BiasAccumulate(b) => (
            ffi::fc_gemm_epilogue::FC_GEMM_BIAS_RESIDUAL,
            Activation::Identity,
            Some(b),
        ),
    };
    let bias_ptr = match bias {
        Some(b) => {
            check::shape("fused GEMM bias", b.shape(), &[n])?;
            check::contiguous("fused GEMM bias", b.layout())?;
            let p = b.device_ptr(stream);
            check::aligned("fused GEMM bias", p, 4)?;
            p
        }
        None => 0,
    };
    let yp = y.device_ptr_mut(stream);
    check::aligned("fused GEMM y", yp, 4)?;
    #[cfg(feature = "tuning")]
    if let Kernel::Schedule(s) = kernel {
        if s.tma_store() {
            // The store's tensor map: rows 16 bytes apart from a 16-byte aligned start.
            if ldy % 8 != 0 {
                return Err(Error::Unsupported(format!(
                    "fused GEMM y row stride is {ldy}, not a multiple of 8 (TMA store)"
                )));
            }
            check::aligned("fused GEMM y", yp, 16)?;
        }
    }
    let accumulate = epi == ffi::fc_gemm_epilogue::FC_GEMM_BIAS_RESIDUAL;
    let params = ffi::fc_gemm_params {
        x: xp as *const _,
        w: wp as *const _,
        y: yp as *mut _,
        bias: bias_ptr as *const _,
        residual: if accumulate {
            yp as *const _
        } else {
            std::ptr::null()
        },
        ldx: check::fits_i64("fused GEMM x row stride", lda)?,
        ldw: check::fits_i64("fused GEMM w row stride", ldw)?,
        ldy: check::fits_i64("fused GEMM y row stride", ldy)?,
        ld_residual: check::fits_i64("fused GEMM y row stride", ldy)?,
        m: check::fits_i32("fused GEMM m", m)?,
        n: check::fits_i32("fused GEMM n", n)?,
        k: check::fits_i32("fused GEMM k", k)?,
        epilogue: epi,
        activation: act.ffi(),
    };
    // SAFETY: x, w and y were checked to hold [m,k], [n,k] and [m,n] matrices with the given row strides inside
    // their buffers, the bias n contiguous elements, with the alignments and multiples the kernel requires; y is a
    // distinct mutable borrow (read back only as the residual of the accumulate epilogue, element by element by
    // the thread that writes it); the launch is ordered on the gpu's stream.
    let code = unsafe {
        match kernel {
            Kernel::Default => ffi::fc_gemm_sm90(&params, T::DTYPE.ffi(), ffi::stream(stream)),
            #[cfg(feature = "tuning")]
            Kernel::Schedule(s) => {
                ffi::fc_gemm_sm90_schedule(&params, T::DTYPE.ffi(), s.ffi(), ffi::stream(stream))
            }
        }
    };
    check_launch("gemm_sm90", code)
}
