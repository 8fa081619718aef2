//! LayerNorm kernels (kernels/layernorm.cu): fused bias + residual + LayerNorm, and plain LayerNorm.

use crate::check;
use crate::error::{check_launch, Error, Result};
use crate::ffi;
use crate::gpu::Gpu;
use crate::tensor::{Element, View, ViewMut};

/// Widest row the kernels keep in registers.
pub const MAX_COLS: usize = 8192;

fn rows_cols(what: &'static str, shape: &[usize]) -> Result<(usize, usize)> {
    check::rank(what, shape, 2)?;
    check::nonempty(what, shape)?;
    if shape[1] > MAX_COLS {
        return Err(Error::Unsupported(format!(
            "{what}: LayerNorm width {} exceeds {MAX_COLS}",
            shape[1]
        )));
    }
    Ok((shape[0], shape[1]))
}

fn check_affine<T: Element>(gamma: &View<T>, beta: &View<T>, cols: usize) -> Result<()> {
    check::shape("gamma", gamma.shape(), &[cols])?;
    check::shape("beta", beta.shape(), &[cols])?;
    check::contiguous("gamma", gamma.layout())?;
    check::contiguous("beta", beta.layout())
}

/// The transformer's residual step: `residual += x + bias`, then `y = LayerNorm(residual) * gamma + beta`.
///
/// All of x, residual and y are contiguous `[rows, cols]`; bias, gamma and beta are `[cols]`. The updated residual
/// is rounded to `T` before normalizing, so `y` is exactly the LayerNorm of what is stored.
#[allow(clippy::too_many_arguments)]
pub fn bias_residual_layernorm<T: Element>(
    gpu: &Gpu,
    x: &View<T>,
    bias: Option<&View<T>>,
    residual: &mut ViewMut<T>,
    gamma: &View<T>,
    beta: &View<T>,
    eps: f32,
    y: &mut ViewMut<T>,
) -> Result<()> {
    let (rows, cols) = rows_cols("x", x.shape())?;
    check::shape("residual", residual.shape(), x.shape())?;
    check::shape("y", y.shape(), x.shape())?;
    check::contiguous("x", x.layout())?;
    check::contiguous("residual", residual.layout())?;
    check::contiguous("y", y.layout())?;
    if let Some(b) = bias {
        check::shape("bias", b.shape(), &[cols])?;
        check::contiguous("bias", b.layout())?;
    }
    check_affine(gamma, beta, cols)?;
    check::finite("eps", eps, true)?;
    let stream = gpu.stream();
    let (rows_i, cols_i) = (
        check::fits_i64("rows", rows)?,
        check::fits_i32("cols", cols)?,
    );
    let res = residual.device_ptr_mut(stream);
    // SAFETY: every pointer addresses a checked contiguous tensor of the documented shape; `sum` and `residual`
    // are the same buffer, which the kernel allows (each element is read before it is written, by one thread);
    // y is a distinct mutable borrow. Ordered on the gpu's stream.
    let code = unsafe {
        ffi::fc_bias_residual_layernorm(
            y.device_ptr_mut(stream) as *mut _,
            res as *mut _,
            x.device_ptr(stream) as *const _,
            res as *const _,
            bias.map_or(std::ptr::null(), |b| b.device_ptr(stream) as *const _),
            gamma.device_ptr(stream) as *const _,
            beta.device_ptr(stream) as *const _,
            rows_i,
            cols_i,
            eps,
            T::DTYPE.ffi(),
            ffi::stream(stream),
        )
    };
    check_launch("bias_residual_layernorm", code)
}

/// `y = LayerNorm(x) * gamma + beta` over `[rows, cols]`; x and y rows may be strided (elements unit-stride).
pub fn layernorm<T: Element>(
    gpu: &Gpu,
    x: &View<T>,
    gamma: &View<T>,
    beta: &View<T>,
    eps: f32,
    y: &mut ViewMut<T>,
) -> Result<()> {
    let (rows, cols) = rows_cols("x", x.shape())?;
    check::shape("y", y.shape(), x.shape())?;
    let xs = check::row_stride("x", x.layout())?;
    let ys = check::row_stride("y", y.layout())?;
    check_affine(gamma, beta, cols)?;
    check::finite("eps", eps, true)?;
    let stream = gpu.stream();
    // SAFETY: x and y address rows x cols elements with the checked row strides inside their buffers; y is a
    // distinct mutable borrow; gamma/beta hold `cols` elements. Ordered on the gpu's stream.
    let code = unsafe {
        ffi::fc_layernorm(
            y.device_ptr_mut(stream) as *mut _,
            check::fits_i64("y row stride", ys)?,
            x.device_ptr(stream) as *const _,
            check::fits_i64("x row stride", xs)?,
            gamma.device_ptr(stream) as *const _,
            beta.device_ptr(stream) as *const _,
            check::fits_i64("rows", rows)?,
            check::fits_i32("cols", cols)?,
            eps,
            T::DTYPE.ffi(),
            ffi::stream(stream),
        )
    };
    check_launch("layernorm", code)
}
