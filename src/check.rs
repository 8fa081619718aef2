//! Argument checks shared by the ops; each returns the error the caller reports.

use crate::error::{Error, Result};
use crate::tensor::Layout;

pub(crate) fn shape(what: &'static str, got: &[usize], expected: &[usize]) -> Result<()> {
    if got == expected {
        Ok(())
    } else {
        Err(Error::Shape {
            what,
            expected: expected.to_vec(),
            got: got.to_vec(),
        })
    }
}

pub(crate) fn nonempty(what: &'static str, dims: &[usize]) -> Result<()> {
    if dims.contains(&0) {
        Err(Error::Empty { what })
    } else {
        Ok(())
    }
}

pub(crate) fn rank(what: &'static str, dims: &[usize], rank: usize) -> Result<()> {
    if dims.len() == rank {
        Ok(())
    } else {
        Err(Error::InvalidArgument {
            what,
            detail: format!("expected rank {rank}, got shape {dims:?}"),
        })
    }
}

/// The device address is a multiple of `bytes`.
pub(crate) fn aligned(what: &'static str, ptr: u64, bytes: u64) -> Result<()> {
    if ptr % bytes == 0 {
        Ok(())
    } else {
        Err(Error::Misaligned {
            what,
            detail: format!("address {ptr:#x} is not a multiple of {bytes} bytes"),
        })
    }
}

/// A value fits the kernel's `int`.
pub(crate) fn fits_i32(what: &'static str, v: usize) -> Result<i32> {
    i32::try_from(v).map_err(|_| Error::TooLarge { what })
}

/// A value fits the kernel's `long long`.
pub(crate) fn fits_i64(what: &'static str, v: usize) -> Result<i64> {
    i64::try_from(v).map_err(|_| Error::TooLarge { what })
}

/// A float parameter is finite (and positive when asked).
pub(crate) fn finite(what: &'static str, v: f32, positive: bool) -> Result<()> {
    if v.is_finite() && (!positive || v > 0.0) {
        Ok(())
    } else {
        Err(Error::InvalidArgument {
            what,
            detail: format!(
                "{v} must be finite{}",
                if positive { " and > 0" } else { "" }
            ),
        })
    }
}

/// The view is contiguous row-major.
pub(crate) fn contiguous(what: &'static str, layout: &Layout) -> Result<()> {
    if layout.is_contiguous() {
        Ok(())
    } else {
        Err(Error::Layout {
            what,
            detail: "must be contiguous".into(),
        })
    }
}

/// Row stride of a rank-2 view whose rows are unit-stride and do not overlap.
pub(crate) fn row_stride(what: &'static str, layout: &Layout) -> Result<usize> {
    rank(what, &layout.shape, 2)?;
    if layout.strides[1] != 1 || layout.strides[0] < layout.shape[1] {
        return Err(Error::Layout {
            what,
            detail: format!(
                "rows must be unit-stride and not overlap (strides {:?}, shape {:?})",
                layout.strides, layout.shape
            ),
        });
    }
    Ok(layout.strides[0])
}
