//! The linear layers of the model: cuBLAS GEMMs in row-major terms (the strided-batched call and the cuBLASLt
//! plans behind them live in `blas.rs`, which the materialized attention path shares), and flashclip's own Hopper
//! GEMM with the bias, activation or residual step fused into its store ([`linear_fused`], in `fused.rs`; its
//! explicit schedules for tuning sweeps in `schedule.rs`, feature `tuning`).
//!
//! cuBLAS is column-major; a row-major `[rows, cols]` matrix with row stride `ld` is the same memory as a
//! column-major `[cols, rows]` matrix with leading dimension `ld`, so every call below swaps operands instead of
//! moving data. Accumulation is always fp32 (fp16/bf16 inputs use CUBLAS_COMPUTE_32F; fp32 inputs are true fp32,
//! no TF32, like PyTorch's default).

mod fused;
#[cfg(feature = "tuning")]
mod schedule;

pub use fused::{linear_fused, supported as fused_supported, Epilogue};
#[cfg(feature = "tuning")]
pub use schedule::{linear_fused_schedule, Schedule};

use cudarc::cublaslt::{result as lt, sys as cublaslt_sys};
use cudarc::driver::DevicePtr;

use crate::blas::{PlanKey, RawGemm, LT_ALIGNMENT, LT_WORKSPACE};
use crate::check;
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::tensor::{Element, View, ViewMut};

/// Sizes and row strides of a linear layer `y[m, n] = x[m, k] · w[n, k]ᵀ`, checked.
struct LinearShape {
    m: usize,
    n: usize,
    k: usize,
    lda: usize,
    ldw: usize,
    ldy: usize,
}

fn check_linear<T: Element>(x: &View<T>, w: &View<T>, y: &ViewMut<T>) -> Result<LinearShape> {
    let lda = check::row_stride("linear x", x.layout())?;
    let ldw = check::row_stride("linear weight", w.layout())?;
    let ldy = check::row_stride("linear y", y.layout())?;
    let (m, k, n) = (x.shape()[0], x.shape()[1], w.shape()[0]);
    check::shape("linear weight", w.shape(), &[n, k])?;
    check::shape("linear y", y.shape(), &[m, n])?;
    check::nonempty("linear", &[m, n, k])?;
    for (what, v) in [
        ("m", m),
        ("n", n),
        ("k", k),
        ("lda", lda),
        ("ldw", ldw),
        ("ldy", ldy),
    ] {
        check::fits_i32(what, v)?;
    }
    Ok(LinearShape {
        m,
        n,
        k,
        lda,
        ldw,
        ldy,
    })
}

/// `y = x · wᵀ` (+ `beta * y`): x `[m, k]`, w `[n, k]` (PyTorch's `[out, in]` weight layout), y `[m, n]`.
/// Rows may be strided (e.g. the class-token rows of a batch); elements within a row must be contiguous.
pub fn linear<T: Element>(
    gpu: &Gpu,
    x: &View<T>,
    w: &View<T>,
    y: &mut ViewMut<T>,
    beta: f32,
) -> Result<()> {
    let LinearShape {
        m,
        n,
        k,
        lda,
        ldw,
        ldy,
    } = check_linear(x, w, y)?;
    check::finite("beta", beta, false)?;
    let t = T::DTYPE.cublas();
    let stream = gpu.stream();
    let gemm = RawGemm {
        trans_a: true,
        trans_b: false,
        m: n,
        n: m,
        k,
        a: w.device_ptr(stream),
        a_type: t,
        lda: ldw,
        stride_a: 0,
        b: x.device_ptr(stream),
        b_type: t,
        ldb: lda,
        stride_b: 0,
        c: y.device_ptr_mut(stream),
        c_type: t,
        ldc: ldy,
        stride_c: 0,
        batch: 1,
        alpha: 1.0,
        beta,
    };
    // SAFETY: the three views were checked to hold [n,k], [m,k] and [m,n] matrices with the given row strides
    // inside their buffers, and y is borrowed mutably, so it overlaps neither input.
    unsafe { gemm.run(gpu.blas()) }
}

/// `y = x · wᵀ + bias` in one cuBLASLt GEMM with the bias fused into its epilogue (f16/bf16). f32, and any shape
/// for which cuBLASLt offers no bias-epilogue algorithm, run the GEMM of [`linear`] followed by a bias pass.
/// Shapes as in [`linear`], bias `[n]`.
pub fn linear_bias<T: Element>(
    gpu: &Gpu,
    x: &View<T>,
    w: &View<T>,
    bias: &View<T>,
    y: &mut ViewMut<T>,
) -> Result<()> {
    let two_pass = |y: &mut ViewMut<T>| -> Result<()> {
        linear(gpu, x, w, y, 0.0)?;
        crate::ops::bias_activation::bias_activation_inplace(
            gpu,
            y,
            Some(bias),
            crate::ops::bias_activation::Activation::Identity,
        )
    };
    if T::DTYPE == crate::tensor::DType::F32 {
        return two_pass(y);
    }
    let LinearShape {
        m,
        n,
        k,
        lda,
        ldw,
        ldy,
    } = check_linear(x, w, y)?;
    check::shape("linear bias", bias.shape(), &[n])?;
    check::contiguous("linear bias", bias.layout())?;
    let stream = gpu.stream();
    let (wp, xp, bp, yp) = (
        w.device_ptr(stream),
        x.device_ptr(stream),
        bias.device_ptr(stream),
        y.device_ptr_mut(stream),
    );
    // cuBLASLt's heuristic assumes 256-byte aligned buffers unless told otherwise; views at other offsets take the
    // two-pass path.
    if [wp, xp, bp, yp].iter().any(|p| p % LT_ALIGNMENT != 0) {
        return two_pass(y);
    }
    let lt_state = gpu.lt();
    // Column-major view: C (n x m, ld ldy) = Wᵀ-op (W stored k x n, ld ldw) · X (k x m, ld lda); bias per row of C.
    let key = PlanKey {
        m: n,
        n: m,
        k,
        lda: ldw,
        ldb: lda,
        ldc: ldy,
        dtype: T::DTYPE,
    };
    let mut plans = lt_state.plans.lock().map_err(|_| Error::InvalidArgument {
        what: "cuBLASLt plans",
        detail: "lock poisoned".into(),
    })?;
    let plan = match plans.entry(key) {
        std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
        std::collections::hash_map::Entry::Vacant(e) => e.insert(lt_state.plan(key).ok()),
    };
    let Some(plan) = plan.as_ref() else {
        drop(plans);
        return two_pass(y);
    };
    let (alpha, beta) = (1.0f32, 0.0f32);
    let (ws_ptr, _ws_sync) = lt_state.workspace.device_ptr(stream);
    // SAFETY: the plan's layouts describe exactly the checked views (sizes and leading dimensions above), the bias
    // holds n contiguous elements, y is a distinct mutable borrow, the workspace is LT_WORKSPACE bytes as the plan
    // was told, and everything is ordered on the gpu's stream.
    unsafe {
        lt::set_matmul_desc_attribute(
            plan.desc,
            cublaslt_sys::cublasLtMatmulDescAttributes_t::CUBLASLT_MATMUL_DESC_BIAS_POINTER,
            (&bp as *const u64).cast(),
            std::mem::size_of::<u64>(),
        )?;
        lt::matmul(
            lt_state.handle,
            plan.desc,
            (&alpha as *const f32).cast(),
            (&beta as *const f32).cast(),
            wp as *const _,
            plan.a,
            xp as *const _,
            plan.b,
            yp as *const _,
            plan.c,
            yp as *mut _,
            plan.c,
            &plan.algo,
            ws_ptr as *mut _,
            LT_WORKSPACE,
            stream.cu_stream() as *mut _,
        )?;
    }
    Ok(())
}
