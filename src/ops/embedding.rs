//! Embedding-side ops of the CLIP towers (kernels/embedding.cu): patch unfolding, class/patch/position
//! assembly, token lookup, row gathers.
//!
//! Token ids and gather rows are taken on the host, checked, and copied into a caller-owned device buffer, so an
//! out-of-range id is an error here rather than an out-of-bounds read on the device. The `*_device` variants read
//! indices a caller has already checked and staged (no copy, so they can be captured into a CUDA graph); they are
//! `unsafe` because the device cannot check them.

use cudarc::driver::{CudaSlice, DevicePtr};

use crate::check;
use crate::error::{check_launch, Error, Result};
use crate::ffi;
use crate::gpu::Gpu;
use crate::tensor::{Element, View, ViewMut};

/// Unfolds images `[batch, channels, size, size]` into `[batch * grid², channels * patch²]` rows, in a conv
/// weight's (c, ky, kx) order, so the patch embedding is one GEMM. `grid = size / patch`: pixels past the last whole
/// patch are not read, as a strided convolution ignores them (SigLIP so400m/14 at 384 px).
pub fn patchify<T: Element>(
    gpu: &Gpu,
    pixels: &CudaSlice<T>,
    batch: usize,
    channels: usize,
    image_size: usize,
    patch: usize,
    out: &mut ViewMut<T>,
) -> Result<()> {
    check::nonempty("patchify", &[batch, channels, image_size, patch])?;
    if patch > image_size {
        return Err(Error::InvalidArgument {
            what: "patch",
            detail: format!("{patch} is larger than the image ({image_size})"),
        });
    }
    let grid = image_size / patch;
    let n_pixels = crate::tensor::numel(&[batch, channels, image_size, image_size])?;
    if pixels.len() < n_pixels {
        return Err(Error::Shape {
            what: "pixels",
            expected: vec![n_pixels],
            got: vec![pixels.len()],
        });
    }
    check::shape(
        "patches",
        out.shape(),
        &[batch * grid * grid, channels * patch * patch],
    )?;
    check::contiguous("patches", out.layout())?;
    let stream = gpu.stream();
    // SAFETY: pixels holds batch*channels*size² elements of T and out the [batch*grid², channels*patch²] patch
    // rows (checked above); out is a distinct mutable borrow.
    let code = unsafe {
        ffi::fc_patchify(
            out.device_ptr_mut(stream) as *mut _,
            pixels.device_ptr(stream).0 as *const _,
            check::fits_i32("batch", batch)?,
            check::fits_i32("channels", channels)?,
            check::fits_i32("image_size", image_size)?,
            check::fits_i32("patch", patch)?,
            T::DTYPE.ffi(),
            ffi::stream(stream),
        )
    };
    check_launch("patchify", code)
}

/// `x[b] = [cls; patch_out[b]] + pos` for the vision tower: patch_out `[batch * patches, dim]`, cls `[dim]`, pos
/// `[patches + 1, dim]`, x `[batch, patches + 1, dim]`.
pub fn vision_embed<T: Element>(
    gpu: &Gpu,
    patch_out: &View<T>,
    cls: &View<T>,
    pos: &View<T>,
    x: &mut ViewMut<T>,
) -> Result<()> {
    check::rank("x", x.shape(), 3)?;
    let (batch, tokens, dim) = (x.shape()[0], x.shape()[1], x.shape()[2]);
    check::nonempty("x", x.shape())?;
    let patches = tokens - 1;
    check::shape("patch_out", patch_out.shape(), &[batch * patches, dim])?;
    check::shape("class_embedding", cls.shape(), &[dim])?;
    check::shape("position_embedding", pos.shape(), &[tokens, dim])?;
    for (what, l) in [
        ("patch_out", patch_out.layout()),
        ("class_embedding", cls.layout()),
        ("position_embedding", pos.layout()),
        ("x", x.layout()),
    ] {
        check::contiguous(what, l)?;
    }
    let stream = gpu.stream();
    // SAFETY: shapes and contiguity checked above; x is a distinct mutable borrow.
    let code = unsafe {
        ffi::fc_vision_embed(
            x.device_ptr_mut(stream) as *mut _,
            patch_out.device_ptr(stream) as *const _,
            cls.device_ptr(stream) as *const _,
            pos.device_ptr(stream) as *const _,
            check::fits_i32("batch", batch)?,
            check::fits_i32("patches", patches)?,
            check::fits_i32("dim", dim)?,
            T::DTYPE.ffi(),
            ffi::stream(stream),
        )
    };
    check_launch("vision_embed", code)
}

/// Copies checked host indices into the device buffer `dev` (no allocation).
fn stage_indices(
    gpu: &Gpu,
    what: &'static str,
    host: &[i32],
    bound: usize,
    dev: &mut CudaSlice<i32>,
) -> Result<()> {
    if let Some(bad) = host.iter().find(|&&i| i < 0 || i as usize >= bound) {
        return Err(Error::InvalidArgument {
            what,
            detail: format!("index {bad} outside 0..{bound}"),
        });
    }
    if dev.len() < host.len() {
        return Err(Error::Shape {
            what,
            expected: vec![host.len()],
            got: vec![dev.len()],
        });
    }
    let mut head = dev.slice_mut(..host.len());
    gpu.stream().memcpy_htod(host, &mut head)?;
    Ok(())
}

/// Checks the shapes of a text embedding and returns `(batch, len, dim)`.
fn check_text_embed<T: Element>(
    tok: &View<T>,
    pos: &View<T>,
    x: &ViewMut<T>,
) -> Result<(usize, usize, usize)> {
    check::rank("x", x.shape(), 3)?;
    check::nonempty("x", x.shape())?;
    let (batch, len, dim) = (x.shape()[0], x.shape()[1], x.shape()[2]);
    check::rank("token_embedding", tok.shape(), 2)?;
    check::shape("token_embedding", &tok.shape()[1..], &[dim])?;
    check::rank("position_embedding", pos.shape(), 2)?;
    if pos.shape()[1] != dim || pos.shape()[0] < len {
        return Err(Error::Shape {
            what: "position_embedding",
            expected: vec![len, dim],
            got: pos.shape().to_vec(),
        });
    }
    for (what, l) in [
        ("token_embedding", tok.layout()),
        ("position_embedding", pos.layout()),
        ("x", x.layout()),
    ] {
        check::contiguous(what, l)?;
    }
    Ok((batch, len, dim))
}

/// `x[b, i] = tok[ids[b, i]] + pos[i]`: ids `[batch * len]` (host, each `< vocab`), staged through `ids_dev`;
/// tok `[vocab, dim]`, pos `[max_len, dim]` with `len <= max_len`, x `[batch, len, dim]`.
pub fn text_embed<T: Element>(
    gpu: &Gpu,
    ids: &[i32],
    ids_dev: &mut CudaSlice<i32>,
    tok: &View<T>,
    pos: &View<T>,
    x: &mut ViewMut<T>,
) -> Result<()> {
    let (batch, len, _) = check_text_embed(tok, pos, x)?;
    check::shape("ids", &[ids.len()], &[batch * len])?;
    stage_indices(gpu, "token id", ids, tok.shape()[0], ids_dev)?;
    // SAFETY: ids_dev now holds the batch*len checked ids, each < vocab, copied before the launch in stream order.
    unsafe { text_embed_device(gpu, ids_dev, tok, pos, x) }
}

/// [`text_embed`] with the ids already on the device: the first `batch * len` ints of `ids_dev`. Nothing is copied
/// or synchronized, so the call can be captured into a CUDA graph.
///
/// # Safety
/// When the kernel runs (it reads `ids_dev` in stream order), each of the first `batch * len` ints of `ids_dev`
/// must be in `0..vocab`; an id outside it is an out-of-bounds read of `tok`.
pub unsafe fn text_embed_device<T: Element>(
    gpu: &Gpu,
    ids_dev: &CudaSlice<i32>,
    tok: &View<T>,
    pos: &View<T>,
    x: &mut ViewMut<T>,
) -> Result<()> {
    let (batch, len, dim) = check_text_embed(tok, pos, x)?;
    if ids_dev.len() < batch * len {
        return Err(Error::Shape {
            what: "ids",
            expected: vec![batch * len],
            got: vec![ids_dev.len()],
        });
    }
    let stream = gpu.stream();
    // SAFETY: ids_dev holds at least batch*len ids, each < vocab (the caller's contract); tables and x checked
    // above; x is a distinct mutable borrow.
    let code = unsafe {
        ffi::fc_text_embed(
            x.device_ptr_mut(stream) as *mut _,
            ids_dev.device_ptr(stream).0 as *const i32,
            tok.device_ptr(stream) as *const _,
            pos.device_ptr(stream) as *const _,
            check::fits_i32("batch", batch)?,
            check::fits_i32("len", len)?,
            check::fits_i32("dim", dim)?,
            T::DTYPE.ffi(),
            ffi::stream(stream),
        )
    };
    check_launch("text_embed", code)
}

/// Checks the shapes of a row gather into `n` rows and returns `dim`.
fn check_gather<T: Element>(src: &View<T>, n: usize, out: &ViewMut<T>) -> Result<usize> {
    check::rank("src", src.shape(), 2)?;
    check::nonempty("src", src.shape())?;
    let dim = src.shape()[1];
    if src.strides()[1] != 1 {
        return Err(Error::Layout {
            what: "src",
            detail: "rows must be unit-stride".into(),
        });
    }
    check::shape("out", out.shape(), &[n, dim])?;
    check::nonempty("out", out.shape())?;
    check::contiguous("out", out.layout())?;
    Ok(dim)
}

/// `out[i] = src[rows[i]]`: src `[n_rows, dim]` with unit-stride rows, rows (host, each `< n_rows`) staged
/// through `rows_dev`, out `[rows.len(), dim]`.
pub fn gather_rows<T: Element>(
    gpu: &Gpu,
    src: &View<T>,
    rows: &[i32],
    rows_dev: &mut CudaSlice<i32>,
    out: &mut ViewMut<T>,
) -> Result<()> {
    check_gather(src, rows.len(), out)?;
    stage_indices(gpu, "row", rows, src.shape()[0], rows_dev)?;
    // SAFETY: rows_dev now holds the rows.len() checked indices, each < n_rows, copied before the launch in stream
    // order.
    unsafe { gather_rows_device(gpu, src, rows_dev, out) }
}

/// [`gather_rows`] with the row indices already on the device: the first `out.shape()[0]` ints of `rows_dev`.
/// Nothing is copied or synchronized, so the call can be captured into a CUDA graph.
///
/// # Safety
/// When the kernel runs (it reads `rows_dev` in stream order), each of the first `out.shape()[0]` ints of
/// `rows_dev` must be in `0..src.shape()[0]`; a row outside it is an out-of-bounds read of `src`.
pub unsafe fn gather_rows_device<T: Element>(
    gpu: &Gpu,
    src: &View<T>,
    rows_dev: &CudaSlice<i32>,
    out: &mut ViewMut<T>,
) -> Result<()> {
    check::rank("out", out.shape(), 2)?;
    let n = out.shape()[0];
    let dim = check_gather(src, n, out)?;
    if rows_dev.len() < n {
        return Err(Error::Shape {
            what: "row",
            expected: vec![n],
            got: vec![rows_dev.len()],
        });
    }
    let stream = gpu.stream();
    // SAFETY: rows_dev holds at least n indices < n_rows (the caller's contract); src spans n_rows rows of the
    // given stride; out checked and a distinct mutable borrow.
    let code = unsafe {
        ffi::fc_gather_rows(
            out.device_ptr_mut(stream) as *mut _,
            src.device_ptr(stream) as *const _,
            rows_dev.device_ptr(stream).0 as *const i32,
            check::fits_i32("rows", n)?,
            check::fits_i32("dim", dim)?,
            check::fits_i64("src row stride", src.strides()[0])?,
            T::DTYPE.ffi(),
            ffi::stream(stream),
        )
    };
    check_launch("gather_rows", code)
}
