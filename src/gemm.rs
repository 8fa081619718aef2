//! cuBLAS GEMMs in row-major terms: the linear layers of the model and the materialized attention path.
//!
//! cuBLAS is column-major; a row-major `[rows, cols]` matrix with row stride `ld` is the same memory as a
//! column-major `[cols, rows]` matrix with leading dimension `ld`, so every call below swaps operands instead of
//! moving data. Accumulation is always fp32 (fp16/bf16 inputs use CUBLAS_COMPUTE_32F; fp32 inputs are true fp32,
//! no TF32, like PyTorch's default).

use cudarc::cublas::sys::{cublasComputeType_t, cublasGemmAlgo_t, cublasOperation_t, cudaDataType};

use crate::check;
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::tensor::{Element, View, ViewMut};

/// One column-major strided-batched GEMM: C_i = alpha * op(A_i) op(B_i) + beta * C_i for i in 0..batch.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RawGemm {
    pub trans_a: bool,
    pub trans_b: bool,
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub a: u64,
    pub a_type: cudaDataType,
    pub lda: usize,
    pub stride_a: usize,
    pub b: u64,
    pub b_type: cudaDataType,
    pub ldb: usize,
    pub stride_b: usize,
    pub c: u64,
    pub c_type: cudaDataType,
    pub ldc: usize,
    pub stride_c: usize,
    pub batch: usize,
    pub alpha: f32,
    pub beta: f32,
}

impl RawGemm {
    /// # Safety
    /// All pointers must address device memory that holds the matrices the dims, leading dimensions and strides
    /// describe, in the given data types, for every batch index, and C must not overlap A or B.
    pub(crate) unsafe fn run(&self, gpu: &Gpu) -> Result<()> {
        let op = |t: bool| {
            if t {
                cublasOperation_t::CUBLAS_OP_T
            } else {
                cublasOperation_t::CUBLAS_OP_N
            }
        };
        let int = |what, v| check::fits_i32(what, v);
        let long = |what, v| check::fits_i64(what, v);
        let (m, n, k) = (
            int("gemm m", self.m)?,
            int("gemm n", self.n)?,
            int("gemm k", self.k)?,
        );
        let (lda, ldb, ldc) = (
            int("gemm lda", self.lda)?,
            int("gemm ldb", self.ldb)?,
            int("gemm ldc", self.ldc)?,
        );
        let (sa, sb, sc) = (
            long("gemm stride", self.stride_a)?,
            long("gemm stride", self.stride_b)?,
            long("gemm stride", self.stride_c)?,
        );
        let batch = int("gemm batch", self.batch)?;
        let alpha: *const f32 = &self.alpha;
        let beta: *const f32 = &self.beta;
        // SAFETY: the caller guarantees the buffers; the handle is bound to the gpu's stream; alpha/beta are host
        // fp32 scalars, as CUBLAS_COMPUTE_32F with the default host pointer mode expects.
        unsafe {
            cudarc::cublas::result::gemm_strided_batched_ex(
                *gpu.blas().handle(),
                op(self.trans_a),
                op(self.trans_b),
                m,
                n,
                k,
                alpha.cast(),
                self.a as *const _,
                self.a_type,
                lda,
                sa,
                self.b as *const _,
                self.b_type,
                ldb,
                sb,
                beta.cast(),
                self.c as *mut _,
                self.c_type,
                ldc,
                sc,
                batch,
                cublasComputeType_t::CUBLAS_COMPUTE_32F,
                cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT,
            )?;
        }
        Ok(())
    }
}

/// Row stride of a rank-2 view whose rows are unit-stride, or an error naming `what`.
fn row_stride(what: &'static str, shape: &[usize], strides: &[usize]) -> Result<usize> {
    check::rank(what, shape, 2)?;
    if strides[1] != 1 || strides[0] < shape[1] {
        return Err(Error::Layout {
            what,
            detail: format!(
                "rows must be unit-stride and not overlap (strides {strides:?}, shape {shape:?})"
            ),
        });
    }
    Ok(strides[0])
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
    let lda = row_stride("linear x", x.shape(), x.strides())?;
    let ldw = row_stride("linear weight", w.shape(), w.strides())?;
    let ldy = row_stride("linear y", y.shape(), y.strides())?;
    let (m, k, n) = (x.shape()[0], x.shape()[1], w.shape()[0]);
    check::shape("linear weight", w.shape(), &[n, k])?;
    check::shape("linear y", y.shape(), &[m, n])?;
    check::nonempty("linear", &[m, n, k])?;
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
    unsafe { gemm.run(gpu) }
}
