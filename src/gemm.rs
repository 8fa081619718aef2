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
    unsafe { gemm.run(gpu) }
}

/// cuBLASLt state: a handle, its workspace, and one cached plan (descriptors + algorithm) per problem shape, so
/// repeated calls skip the heuristic search.
pub(crate) struct Lt {
    handle: cublaslt_sys::cublasLtHandle_t,
    workspace: cudarc::driver::CudaSlice<u8>,
    /// `None` marks a shape cuBLASLt has no bias-epilogue algorithm for: those take the two-pass path.
    plans: std::sync::Mutex<std::collections::HashMap<PlanKey, Option<Plan>>>,
}

use cudarc::cublaslt::{result as lt, sys as cublaslt_sys};
use cudarc::driver::DevicePtr;

// SAFETY: the handle and the descriptors are only used under the plan mutex or from the thread that owns the Gpu;
// cuBLASLt handles may be used from any thread as long as calls are not concurrent on one handle.
unsafe impl Send for Lt {}
unsafe impl Sync for Lt {}

#[derive(Clone, Copy, PartialEq, Eq, Hash)]
struct PlanKey {
    m: usize,
    n: usize,
    k: usize,
    lda: usize,
    ldb: usize,
    ldc: usize,
    dtype: crate::tensor::DType,
}

struct Plan {
    desc: cublaslt_sys::cublasLtMatmulDesc_t,
    a: cublaslt_sys::cublasLtMatrixLayout_t,
    b: cublaslt_sys::cublasLtMatrixLayout_t,
    c: cublaslt_sys::cublasLtMatrixLayout_t,
    algo: cublaslt_sys::cublasLtMatmulAlgo_t,
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
const LT_WORKSPACE: usize = 32 << 20;

/// Buffer alignment cuBLASLt's algorithm search assumes by default (CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_*).
const LT_ALIGNMENT: u64 = 256;

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

    /// Descriptors and the heuristic's algorithm for one shape, in the column-major mapping of [`linear_bias`].
    fn plan(&self, key: PlanKey) -> Result<Plan> {
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
        crate::bias_activation::bias_activation_inplace(
            gpu,
            y,
            Some(bias),
            crate::bias_activation::Activation::Identity,
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
