//! cuBLAS and cuBLASLt plumbing the ops share: one strided-batched GEMM call, and the cuBLASLt handle with its
//! cached plans. Depends on no op and not on [`crate::Gpu`] (which owns the handles), so the ops and the GPU handle
//! both build on it.

use cudarc::cublas::sys::{cublasComputeType_t, cublasGemmAlgo_t, cublasOperation_t, cudaDataType};
use cudarc::cublas::CudaBlas;
use cudarc::cublaslt::{result as lt, sys as cublaslt_sys};

use crate::check;
use crate::error::Result;

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
    pub(crate) unsafe fn run(&self, blas: &CudaBlas) -> Result<()> {
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
        // SAFETY: the caller guarantees the buffers; the handle is bound to the Gpu's stream; alpha/beta are host
        // fp32 scalars, as CUBLAS_COMPUTE_32F with the default host pointer mode expects.
        unsafe {
            cudarc::cublas::result::gemm_strided_batched_ex(
                *blas.handle(),
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

/// cuBLASLt state: a handle, its workspace, and one cached plan (descriptors + algorithm) per problem shape, so
/// repeated calls skip the heuristic search.
pub(crate) struct Lt {
    pub(crate) handle: cublaslt_sys::cublasLtHandle_t,
    pub(crate) workspace: cudarc::driver::CudaSlice<u8>,
    /// `None` marks a shape cuBLASLt has no bias-epilogue algorithm for: those take the two-pass path.
    pub(crate) plans: std::sync::Mutex<std::collections::HashMap<PlanKey, Option<Plan>>>,
}

// SAFETY: the handle and the descriptors are only used under the plan mutex or from the thread that owns the Gpu;
// cuBLASLt handles may be used from any thread as long as calls are not concurrent on one handle.
unsafe impl Send for Lt {}
unsafe impl Sync for Lt {}

#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct PlanKey {
    pub(crate) m: usize,
    pub(crate) n: usize,
    pub(crate) k: usize,
    pub(crate) lda: usize,
    pub(crate) ldb: usize,
    pub(crate) ldc: usize,
    pub(crate) dtype: crate::tensor::DType,
}

pub(crate) struct Plan {
    pub(crate) desc: cublaslt_sys::cublasLtMatmulDesc_t,
    pub(crate) a: cublaslt_sys::cublasLtMatrixLayout_t,
    pub(crate) b: cublaslt_sys::cublasLtMatrixLayout_t,
    pub(crate) c: cublaslt_sys::cublasLtMatrixLayout_t,
    pub(crate) algo: cublaslt_sys::cublasLtMatmulAlgo_t,
}

impl Drop for Plan {
    fn drop(&mut self) {
        // SAFETY: each descriptor was created once by Lt::plan and is destroyed once here. Errors on teardown
        // cannot be reported from drop and leak nothing worth failing for.
        unsafe {
            let _ = lt::destroy_matmul_desc(self.desc);
            let _ = lt::destroy_matrix_layout(self.a);
            let _ = lt::destroy_matrix_layout(self.b);
            let _ = lt::destroy_matrix_layout(self.c);
        }
    }
}

impl Drop for Lt {
    fn drop(&mut self) {
        if let Ok(mut plans) = self.plans.lock() {
            plans.clear();
        }
        // SAFETY: the handle was created in Lt::new and is destroyed once, after its plans.
        unsafe {
            let _ = lt::destroy_handle(self.handle);
        }
    }
}

/// Workspace cuBLASLt may use (NVIDIA's recommendation for Hopper).
pub(crate) const LT_WORKSPACE: usize = 32 << 20;

/// Buffer alignment cuBLASLt's algorithm search assumes by default (CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_*).
pub(crate) const LT_ALIGNMENT: u64 = 256;

impl Lt {
    pub(crate) fn new(stream: &std::sync::Arc<cudarc::driver::CudaStream>) -> Result<Self> {
        let handle = lt::create_handle()?;
        let workspace = stream.alloc_zeros::<u8>(LT_WORKSPACE)?;
        Ok(Self {
            handle,
            workspace,
            plans: Default::default(),
        })
    }

    /// Descriptors and the heuristic's algorithm for one shape, in the column-major mapping of [`crate::ops::gemm::linear_bias`].
    pub(crate) fn plan(&self, key: PlanKey) -> Result<Plan> {
        let t = key.dtype.cublaslt();
        let attr = |desc, a, v: &i32| {
            // SAFETY: desc is a live descriptor; the attribute takes a 4-byte int.
            unsafe { lt::set_matmul_desc_attribute(desc, a, (v as *const i32).cast(), 4) }
        };
        use cublaslt_sys::cublasLtMatmulDescAttributes_t as A;
        let desc = lt::create_matmul_desc(
            cublaslt_sys::cublasComputeType_t::CUBLAS_COMPUTE_32F,
            cublaslt_sys::cudaDataType::CUDA_R_32F,
        )?;
        let mut plan = Plan {
            desc,
            a: lt::create_matrix_layout(t, key.k as u64, key.m as u64, key.lda as i64)?,
            b: lt::create_matrix_layout(t, key.k as u64, key.n as u64, key.ldb as i64)?,
            c: lt::create_matrix_layout(t, key.m as u64, key.n as u64, key.ldc as i64)?,
            // SAFETY: plain data; an all-zero placeholder until the heuristic's choice is stored below.
            algo: unsafe { std::mem::zeroed() },
        };
        attr(plan.desc, A::CUBLASLT_MATMUL_DESC_TRANSA, &1)?;
        attr(plan.desc, A::CUBLASLT_MATMUL_DESC_TRANSB, &0)?;
        let epilogue = cublaslt_sys::cublasLtEpilogue_t::CUBLASLT_EPILOGUE_BIAS as i32;
        attr(plan.desc, A::CUBLASLT_MATMUL_DESC_EPILOGUE, &epilogue)?;
        let pref = lt::create_matmul_pref()?;
        let ws = LT_WORKSPACE;
        // SAFETY: pref is live; the attribute takes a size_t.
        let heuristic = unsafe {
            let set = lt::set_matmul_pref_attribute(
                pref,
                cublaslt_sys::cublasLtMatmulPreferenceAttributes_t::CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                (&ws as *const usize).cast(),
                std::mem::size_of::<usize>(),
            );
            let h = set.and_then(|_| {
                lt::get_matmul_algo_heuristic(
                    self.handle,
                    plan.desc,
                    plan.a,
                    plan.b,
                    plan.c,
                    plan.c,
                    pref,
                )
            });
            let _ = lt::destroy_matmul_pref(pref);
            h?
        };
        // Assign in place: building a new Plan from this one's fields would copy the raw descriptors and
        // then destroy them when this one drops.
        plan.algo = heuristic.algo;
        Ok(plan)
    }
}
