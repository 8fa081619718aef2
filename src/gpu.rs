//! The GPU handle: one CUDA context, one stream, one cuBLAS handle.

use std::sync::Arc;

use cudarc::cublas::CudaBlas;
use cudarc::driver::sys::CUdevice_attribute;
use cudarc::driver::{
    CudaContext, CudaEvent, CudaSlice, CudaStream, DevicePtrMut, DeviceRepr, ValidAsZeroBits,
};

use crate::error::{Error, Result};
use crate::tensor::{Element, Tensor};

/// cuBLAS workspace: NVIDIA's recommended size (32 MiB from Hopper on, 4 MiB before). Eager forwards and graph
/// replays use the same one, so cuBLAS picks the same algorithms for both.
fn blas_workspace_bytes((major, _minor): (i32, i32)) -> usize {
    if major >= 9 {
        32 << 20
    } else {
        4 << 20
    }
}

/// A CUDA device with the stream every flashclip op runs on and a cuBLAS handle bound to it.
///
/// All work is ordered on the one stream (or, for a [`Gpu::new_lane`], on streams joined by explicit events), so
/// flashclip turns off cudarc's per-buffer event tracking (which exists to order work across streams) to keep
/// launches free of extra event records.
///
/// The cuBLAS handle works in a workspace owned here (the size cuBLAS recommends for the architecture), so cuBLAS
/// never allocates on its own, also not while the stream is being captured into a CUDA graph.
pub struct Gpu {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    blas: CudaBlas,
    /// Declared after `blas`, so it is freed after the handle that uses it is destroyed.
    _blas_workspace: CudaSlice<u8>,
    lt: crate::blas::Lt,
    sm_count: usize,
    compute_capability: (i32, i32),
}

impl Gpu {
    /// Opens device `ordinal`. Fails with [`Error::NoDevice`] when there is no driver or no such device,
    /// instead of panicking inside the dynamic loader.
    pub fn new(ordinal: usize) -> Result<Self> {
        // SAFETY: only probes whether libcuda can be loaded; no CUDA call is made through it.
        if !unsafe { cudarc::driver::sys::is_culib_present() } {
            return Err(Error::NoDevice(
                "the NVIDIA driver library (libcuda.so) was not found".into(),
            ));
        }
        let count = CudaContext::device_count()?;
        if count <= 0 {
            return Err(Error::NoDevice("the driver reports no CUDA device".into()));
        }
        if ordinal >= count as usize {
            return Err(Error::NoDevice(format!(
                "device {ordinal} requested, {count} present"
            )));
        }
        let ctx = CudaContext::new(ordinal)?;
        // SAFETY: every buffer this context allocates is used on one stream, or on a lane's stream ordered by
        // events (see the type's doc), so cross-stream event tracking has nothing to order.
        unsafe { ctx.disable_event_tracking() };
        let stream = ctx.new_stream()?;
        Self::on_stream(ctx, stream)
    }

    /// Another handle on the same device and context, with a stream, cuBLAS handle and workspace of its own, for
    /// work that may run concurrently with this handle's (one tower of a forward while the other runs here).
    /// Event tracking is off, so work on both that touches the same buffers must be ordered with events
    /// ([`CudaStream::record_event`], [`CudaStream::wait`]).
    pub fn new_lane(&self) -> Result<Self> {
        let stream = self.ctx.new_stream()?;
        Self::on_stream(self.ctx.clone(), stream)
    }

    fn on_stream(ctx: Arc<CudaContext>, stream: Arc<CudaStream>) -> Result<Self> {
        let compute_capability = ctx.compute_capability()?;
        let blas = CudaBlas::new(stream.clone())?;
        let mut blas_workspace =
            stream.alloc_zeros::<u8>(blas_workspace_bytes(compute_capability))?;
        {
            let bytes = blas_workspace.len();
            let (ptr, _sync) = blas_workspace.device_ptr_mut(&stream);
            // SAFETY: the handle is live and bound to `stream` (cublasSetStream, which resets the workspace, is not
            // called again); `ptr` addresses `bytes` bytes of device memory (256-byte aligned, as allocations are)
            // that the Gpu owns and frees only after the handle (field order), and cuBLAS only uses it for work
            // ordered on that one stream.
            unsafe {
                cudarc::cublas::sys::cublasSetWorkspace_v2(*blas.handle(), ptr as *mut _, bytes)
                    .result()?;
            }
        }
        let lt = crate::blas::Lt::new(&stream)?;
        let sm_count =
            ctx.attribute(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)? as usize;
        Ok(Self {
            ctx,
            stream,
            blas,
            _blas_workspace: blas_workspace,
            lt,
            sm_count,
            compute_capability,
        })
    }

    /// The CUDA context.
    pub fn context(&self) -> &Arc<CudaContext> {
        &self.ctx
    }

    /// The stream all ops are enqueued on.
    pub fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }

    /// The cuBLAS handle bound to [`Gpu::stream`].
    pub fn blas(&self) -> &CudaBlas {
        &self.blas
    }

    pub(crate) fn lt(&self) -> &crate::blas::Lt {
        &self.lt
    }

    /// Number of streaming multiprocessors.
    pub fn sm_count(&self) -> usize {
        self.sm_count
    }

    /// Compute capability (major, minor).
    pub fn compute_capability(&self) -> (i32, i32) {
        self.compute_capability
    }

    /// Device name as the driver reports it.
    pub fn name(&self) -> Result<String> {
        Ok(self.ctx.name()?)
    }

    /// Waits for all work on the stream.
    pub fn synchronize(&self) -> Result<()> {
        Ok(self.stream.synchronize()?)
    }

    /// A new tensor with unspecified contents.
    pub fn empty<T: Element>(&self, shape: &[usize]) -> Result<Tensor<T>> {
        let len = crate::tensor::numel(shape)?;
        // SAFETY: the device memory is left uninitialized; every bit pattern is a valid f16/bf16/f32 and the host
        // only sees it through explicit copies.
        let data = unsafe { self.stream.alloc::<T>(len) }?;
        Ok(Tensor::from_parts(data, shape.to_vec()))
    }

    /// A new tensor filled with zeros.
    pub fn zeros<T: Element>(&self, shape: &[usize]) -> Result<Tensor<T>> {
        let len = crate::tensor::numel(shape)?;
        Ok(Tensor::from_parts(
            self.stream.alloc_zeros::<T>(len)?,
            shape.to_vec(),
        ))
    }

    /// Copies a host slice (row-major, `shape`) to a new device tensor.
    pub fn upload<T: Element>(&self, host: &[T], shape: &[usize]) -> Result<Tensor<T>> {
        let len = crate::tensor::numel(shape)?;
        if host.len() != len {
            return Err(Error::Shape {
                what: "host data",
                expected: vec![len],
                got: vec![host.len()],
            });
        }
        Ok(Tensor::from_parts(
            self.stream.clone_htod(host)?,
            shape.to_vec(),
        ))
    }

    /// Copies plain values (e.g. i32 key lengths) to a new device buffer.
    pub fn upload_slice<T: DeviceRepr>(&self, host: &[T]) -> Result<cudarc::driver::CudaSlice<T>> {
        Ok(self.stream.clone_htod(host)?)
    }

    /// Copies a device slice of plain values to a new host vector (synchronizes the stream).
    pub fn download<T: DeviceRepr + ValidAsZeroBits + Clone + Default>(
        &self,
        data: &impl cudarc::driver::DevicePtr<T>,
    ) -> Result<Vec<T>> {
        Ok(self.stream.clone_dtoh(data)?)
    }

    /// A timing event (CUDA events made by cudarc's default constructor cannot time).
    pub fn timing_event(&self) -> Result<CudaEvent> {
        Ok(self
            .ctx
            .new_event(Some(cudarc::driver::sys::CUevent_flags::CU_EVENT_DEFAULT))?)
    }
}
