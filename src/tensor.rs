//! Typed device tensors with shape and strides.
//!
//! [`Tensor`] owns a contiguous row-major buffer. [`View`] and [`ViewMut`] borrow a buffer with an element offset,
//! a shape and strides (in elements), so an op can read e.g. the Q, K and V parts of one packed QKV tensor in place.

use cudarc::driver::{CudaSlice, DevicePtr, DevicePtrMut, DeviceRepr, ValidAsZeroBits};
use half::slice::HalfFloatSliceExt;
use half::{bf16, f16};

use crate::error::{Error, Result};
use crate::ffi;

/// Element types the kernels take.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum DType {
    F16,
    #[cfg_attr(feature = "clap", value(name = "bf16"))]
    BF16,
    F32,
}

impl DType {
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            DType::F16 | DType::BF16 => 2,
            DType::F32 => 4,
        }
    }

    pub(crate) fn ffi(self) -> ffi::fc_dtype {
        match self {
            DType::F16 => ffi::fc_dtype::FC_F16,
            DType::BF16 => ffi::fc_dtype::FC_BF16,
            DType::F32 => ffi::fc_dtype::FC_F32,
        }
    }

    pub(crate) fn cublas(self) -> cudarc::cublas::sys::cudaDataType {
        use cudarc::cublas::sys::cudaDataType::*;
        match self {
            DType::F16 => CUDA_R_16F,
            DType::BF16 => CUDA_R_16BF,
            DType::F32 => CUDA_R_32F,
        }
    }
}

impl DType {
    pub(crate) fn cublaslt(self) -> cudarc::cublaslt::sys::cudaDataType {
        use cudarc::cublaslt::sys::cudaDataType::*;
        match self {
            DType::F16 => CUDA_R_16F,
            DType::BF16 => CUDA_R_16BF,
            DType::F32 => CUDA_R_32F,
        }
    }
}

impl std::fmt::Display for DType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            DType::F16 => "f16",
            DType::BF16 => "bf16",
            DType::F32 => "f32",
        })
    }
}

/// A scalar type that lives in device tensors.
pub trait Element: DeviceRepr + ValidAsZeroBits + Copy + Default + Send + Sync + 'static {
    const DTYPE: DType;
    fn from_f32(x: f32) -> Self;
    fn to_f32(self) -> f32;

    /// `dst[i] = from_f32(src[i])` over equal-length slices (vectorized where the CPU converts in hardware).
    fn convert_from_f32_slice(dst: &mut [Self], src: &[f32]) {
        for (d, &s) in dst.iter_mut().zip(src) {
            *d = Self::from_f32(s);
        }
    }
}

impl Element for f16 {
    const DTYPE: DType = DType::F16;
    fn from_f32(x: f32) -> Self {
        f16::from_f32(x)
    }
    fn to_f32(self) -> f32 {
        f16::to_f32(self)
    }
    fn convert_from_f32_slice(dst: &mut [Self], src: &[f32]) {
        // F16C where the CPU has it (detected at run time); the same round-to-nearest-even as the scalar path.
        let n = dst.len().min(src.len());
        dst[..n].convert_from_f32_slice(&src[..n]);
    }
}

impl Element for bf16 {
    const DTYPE: DType = DType::BF16;
    fn from_f32(x: f32) -> Self {
        bf16::from_f32(x)
    }
    fn to_f32(self) -> f32 {
        bf16::to_f32(self)
    }
}

impl Element for f32 {
    const DTYPE: DType = DType::F32;
    fn from_f32(x: f32) -> Self {
        x
    }
    fn to_f32(self) -> f32 {
        self
    }
    fn convert_from_f32_slice(dst: &mut [Self], src: &[f32]) {
        let n = dst.len().min(src.len());
        dst[..n].copy_from_slice(&src[..n]);
    }
}

/// Product of the dims, or an error if it overflows.
pub(crate) fn numel(shape: &[usize]) -> Result<usize> {
    shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or(Error::TooLarge { what: "tensor" })
}

/// Row-major strides of a contiguous tensor.
pub fn contiguous_strides(shape: &[usize]) -> Vec<usize> {
    let mut strides = vec![1; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        strides[i] = strides[i + 1] * shape[i + 1];
    }
    strides
}

/// Offset, shape and strides of a view, checked against the buffer it borrows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    pub offset: usize,
    pub shape: Vec<usize>,
    pub strides: Vec<usize>,
}

impl Layout {
    fn contiguous(shape: &[usize]) -> Self {
        Self {
            offset: 0,
            shape: shape.to_vec(),
            strides: contiguous_strides(shape),
        }
    }

    /// One past the largest element index the layout reaches (0 for an empty view).
    fn extent(&self) -> Option<usize> {
        if self.shape.contains(&0) {
            return Some(0);
        }
        let mut last = self.offset;
        for (&d, &s) in self.shape.iter().zip(&self.strides) {
            last = last.checked_add((d - 1).checked_mul(s)?)?;
        }
        last.checked_add(1)
    }

    fn check(&self, what: &'static str, buffer_len: usize) -> Result<()> {
        if self.shape.len() != self.strides.len() {
            return Err(Error::Layout {
                what,
                detail: "shape and strides differ in rank".into(),
            });
        }
        match self.extent() {
            Some(end) if end <= buffer_len => Ok(()),
            _ => Err(Error::Layout {
                what,
                detail: format!(
                    "offset {} shape {:?} strides {:?} reach past a buffer of {} elements",
                    self.offset, self.shape, self.strides, buffer_len
                ),
            }),
        }
    }

    fn select(&self, what: &'static str, dim: usize, index: usize) -> Result<Self> {
        if dim >= self.shape.len() || index >= self.shape[dim] {
            return Err(Error::InvalidArgument {
                what,
                detail: format!(
                    "select index {index} of dim {dim} in shape {:?}",
                    self.shape
                ),
            });
        }
        let mut shape = self.shape.clone();
        let mut strides = self.strides.clone();
        let offset = self.offset + index * strides[dim];
        shape.remove(dim);
        strides.remove(dim);
        Ok(Self {
            offset,
            shape,
            strides,
        })
    }

    fn narrow(&self, what: &'static str, dim: usize, start: usize, len: usize) -> Result<Self> {
        if dim >= self.shape.len()
            || start
                .checked_add(len)
                .is_none_or(|end| end > self.shape[dim])
        {
            return Err(Error::InvalidArgument {
                what,
                detail: format!(
                    "narrow {start}..+{len} of dim {dim} in shape {:?}",
                    self.shape
                ),
            });
        }
        let mut out = self.clone();
        out.offset += start * self.strides[dim];
        out.shape[dim] = len;
        Ok(out)
    }

    fn reshape(&self, what: &'static str, shape: &[usize]) -> Result<Self> {
        if self.strides != contiguous_strides(&self.shape) {
            return Err(Error::Layout {
                what,
                detail: "reshape needs a contiguous view".into(),
            });
        }
        if numel(shape)? != numel(&self.shape)? {
            return Err(Error::Shape {
                what,
                expected: self.shape.clone(),
                got: shape.to_vec(),
            });
        }
        Ok(Self {
            offset: self.offset,
            shape: shape.to_vec(),
            strides: contiguous_strides(shape),
        })
    }

    /// Whether the innermost dimension is unit-stride and the rows are packed back to back.
    pub fn is_contiguous(&self) -> bool {
        self.strides == contiguous_strides(&self.shape)
    }
}

/// An owned, contiguous, row-major device tensor.
pub struct Tensor<T: Element> {
    data: CudaSlice<T>,
    shape: Vec<usize>,
}

impl<T: Element> Tensor<T> {
    pub(crate) fn from_parts(data: CudaSlice<T>, shape: Vec<usize>) -> Self {
        Self { data, shape }
    }

    /// The dims.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.data.len()
    }

    /// Whether the tensor has no element.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// The device buffer.
    pub fn data(&self) -> &CudaSlice<T> {
        &self.data
    }

    /// The device buffer, mutably.
    pub fn data_mut(&mut self) -> &mut CudaSlice<T> {
        &mut self.data
    }

    /// The whole tensor as a view.
    pub fn view(&self) -> View<'_, T> {
        View {
            data: &self.data,
            layout: Layout::contiguous(&self.shape),
        }
    }

    /// The whole tensor as a mutable view.
    pub fn view_mut(&mut self) -> ViewMut<'_, T> {
        let layout = Layout::contiguous(&self.shape);
        ViewMut {
            data: &mut self.data,
            layout,
        }
    }

    /// Changes the dims without moving data (same element count).
    pub fn reshape(self, shape: &[usize]) -> Result<Self> {
        if numel(shape)? != self.data.len() {
            return Err(Error::Shape {
                what: "reshape",
                expected: self.shape,
                got: shape.to_vec(),
            });
        }
        Ok(Self {
            data: self.data,
            shape: shape.to_vec(),
        })
    }
}

/// A borrowed strided view of a device buffer.
#[derive(Clone)]
pub struct View<'a, T: Element> {
    data: &'a CudaSlice<T>,
    layout: Layout,
}

/// A borrowed, mutable, strided view of a device buffer.
pub struct ViewMut<'a, T: Element> {
    data: &'a mut CudaSlice<T>,
    layout: Layout,
}

impl<'a, T: Element> View<'a, T> {
    /// A view with an explicit layout; fails if it reaches past the buffer.
    pub fn new(
        data: &'a CudaSlice<T>,
        offset: usize,
        shape: &[usize],
        strides: &[usize],
    ) -> Result<Self> {
        let layout = Layout {
            offset,
            shape: shape.to_vec(),
            strides: strides.to_vec(),
        };
        layout.check("view", data.len())?;
        Ok(Self { data, layout })
    }

    pub fn shape(&self) -> &[usize] {
        &self.layout.shape
    }

    pub fn strides(&self) -> &[usize] {
        &self.layout.strides
    }

    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// Drops dimension `dim`, keeping index `index` of it.
    pub fn select(&self, dim: usize, index: usize) -> Result<Self> {
        Ok(Self {
            data: self.data,
            layout: self.layout.select("view", dim, index)?,
        })
    }

    /// Keeps `len` indices of `dim` starting at `start`.
    pub fn narrow(&self, dim: usize, start: usize, len: usize) -> Result<Self> {
        Ok(Self {
            data: self.data,
            layout: self.layout.narrow("view", dim, start, len)?,
        })
    }

    /// New dims over a contiguous view.
    pub fn reshape(&self, shape: &[usize]) -> Result<Self> {
        Ok(Self {
            data: self.data,
            layout: self.layout.reshape("view", shape)?,
        })
    }

    /// Device address of the first element, valid while `stream` orders the use.
    pub(crate) fn device_ptr(&self, stream: &cudarc::driver::CudaStream) -> u64 {
        let (base, _sync) = self.data.device_ptr(stream);
        base + (self.layout.offset * std::mem::size_of::<T>()) as u64
    }
}

impl<'a, T: Element> ViewMut<'a, T> {
    /// A mutable view with an explicit layout; fails if it reaches past the buffer.
    pub fn new(
        data: &'a mut CudaSlice<T>,
        offset: usize,
        shape: &[usize],
        strides: &[usize],
    ) -> Result<Self> {
        let layout = Layout {
            offset,
            shape: shape.to_vec(),
            strides: strides.to_vec(),
        };
        layout.check("view", data.len())?;
        Ok(Self { data, layout })
    }

    pub fn shape(&self) -> &[usize] {
        &self.layout.shape
    }

    pub fn strides(&self) -> &[usize] {
        &self.layout.strides
    }

    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// Reborrows as a read-only view.
    pub fn as_view(&self) -> View<'_, T> {
        View {
            data: self.data,
            layout: self.layout.clone(),
        }
    }

    /// Reborrows mutably (for passing to an op without giving the view away).
    pub fn reborrow(&mut self) -> ViewMut<'_, T> {
        ViewMut {
            data: self.data,
            layout: self.layout.clone(),
        }
    }

    /// Drops dimension `dim`, keeping index `index` of it.
    pub fn select(self, dim: usize, index: usize) -> Result<Self> {
        let layout = self.layout.select("view", dim, index)?;
        Ok(Self {
            data: self.data,
            layout,
        })
    }

    /// Keeps `len` indices of `dim` starting at `start`.
    pub fn narrow(self, dim: usize, start: usize, len: usize) -> Result<Self> {
        let layout = self.layout.narrow("view", dim, start, len)?;
        Ok(Self {
            data: self.data,
            layout,
        })
    }

    /// New dims over a contiguous view.
    pub fn reshape(self, shape: &[usize]) -> Result<Self> {
        let layout = self.layout.reshape("view", shape)?;
        Ok(Self {
            data: self.data,
            layout,
        })
    }

    /// Device address of the first element, valid while `stream` orders the use.
    pub(crate) fn device_ptr_mut(&mut self, stream: &cudarc::driver::CudaStream) -> u64 {
        let (base, _sync) = self.data.device_ptr_mut(stream);
        base + (self.layout.offset * std::mem::size_of::<T>()) as u64
    }
}
