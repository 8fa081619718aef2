//! Fused bias + activation (kernels/bias_activation.cu): `y = act(x + bias)`, bias broadcast over rows.

use crate::check;
use crate::error::{check_launch, Result};
use crate::ffi;
use crate::gpu::Gpu;
use crate::tensor::{Element, View, ViewMut};

/// The activations CLIP checkpoints use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Activation {
    /// OpenAI CLIP: `h * sigmoid(1.702 h)`.
    QuickGelu,
    /// Exact GELU, `0.5 h (1 + erf(h / sqrt 2))` (open_clip / laion models).
    GeluErf,
    /// Tanh-approximated GELU.
    GeluTanh,
    /// No activation: a plain bias add (e.g. the QKV projection's bias).
    Identity,
}

impl Activation {
    pub(crate) fn ffi(self) -> ffi::fc_activation {
        match self {
            Activation::QuickGelu => ffi::fc_activation::FC_QUICK_GELU,
            Activation::GeluErf => ffi::fc_activation::FC_GELU_ERF,
            Activation::GeluTanh => ffi::fc_activation::FC_GELU_TANH,
            Activation::Identity => ffi::fc_activation::FC_IDENTITY,
        }
    }
}

fn rows_cols(what: &'static str, shape: &[usize]) -> Result<(usize, usize)> {
    check::rank(what, shape, 2)?;
    check::nonempty(what, shape)?;
    Ok((shape[0], shape[1]))
}

fn check_bias<T: Element>(bias: Option<&View<T>>, cols: usize) -> Result<()> {
    if let Some(b) = bias {
        check::shape("bias", b.shape(), &[cols])?;
        check::contiguous("bias", b.layout())?;
    }
    Ok(())
}

/// `y = act(x + bias)` for contiguous `[rows, cols]` tensors; `bias` is `[cols]` or absent.
pub fn bias_activation<T: Element>(
    gpu: &Gpu,
    x: &View<T>,
    bias: Option<&View<T>>,
    act: Activation,
    y: &mut ViewMut<T>,
) -> Result<()> {
    let (rows, cols) = rows_cols("x", x.shape())?;
    check::shape("y", y.shape(), x.shape())?;
    check::contiguous("x", x.layout())?;
    check::contiguous("y", y.layout())?;
    check_bias(bias, cols)?;
    let stream = gpu.stream();
    let x_ptr = x.device_ptr(stream);
    let y_ptr = y.device_ptr_mut(stream);
    launch::<T>(
        gpu,
        y_ptr,
        x_ptr,
        bias.map(|b| b.device_ptr(stream)),
        rows,
        cols,
        act,
    )
}

/// In place: `x = act(x + bias)`.
pub fn bias_activation_inplace<T: Element>(
    gpu: &Gpu,
    x: &mut ViewMut<T>,
    bias: Option<&View<T>>,
    act: Activation,
) -> Result<()> {
    let (rows, cols) = rows_cols("x", x.shape())?;
    check::contiguous("x", x.layout())?;
    check_bias(bias, cols)?;
    let stream = gpu.stream();
    let ptr = x.device_ptr_mut(stream);
    launch::<T>(
        gpu,
        ptr,
        ptr,
        bias.map(|b| b.device_ptr(stream)),
        rows,
        cols,
        act,
    )
}

fn launch<T: Element>(
    gpu: &Gpu,
    y: u64,
    x: u64,
    bias: Option<u64>,
    rows: usize,
    cols: usize,
    act: Activation,
) -> Result<()> {
    let rows = check::fits_i64("rows", rows)?;
    let cols = check::fits_i32("cols", cols)?;
    // SAFETY: x and y (possibly the same buffer, which the kernel allows) hold rows*cols contiguous elements of T
    // and bias `cols` elements, as checked by the callers; the launch is ordered on the gpu's stream.
    let code = unsafe {
        ffi::fc_bias_activation(
            y as *mut _,
            x as *const _,
            bias.map_or(std::ptr::null(), |b| b as *const _),
            rows,
            cols,
            act.ffi(),
            T::DTYPE.ffi(),
            ffi::stream(gpu.stream()),
        )
    };
    check_launch("bias_activation", code)
}
