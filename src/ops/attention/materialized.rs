//! The unfused baseline: scores in memory through cuBLAS and a softmax kernel.

use cudarc::driver::{CudaSlice, DevicePtr, DevicePtrMut};

use super::{check_aux, check_shapes, scale, Options};
use crate::blas::RawGemm;
use crate::check;
use crate::error::{check_launch, Error, Result};
use crate::ffi;
use crate::gpu::Gpu;
use crate::tensor::{DType, Element, View, ViewMut};

/// Scratch for [`materialized_attention`]: the fp32 scores and the probabilities in `T`, `[batch, heads_q, seq_q,
/// seq_k]` each. Allocate once per maximum shape and reuse.
pub struct MaterializedWorkspace<T: Element> {
    scores: CudaSlice<f32>,
    probs: CudaSlice<T>,
}

impl<T: Element> MaterializedWorkspace<T> {
    /// Room for attention up to these sizes.
    pub fn new(
        gpu: &Gpu,
        batch: usize,
        heads_q: usize,
        seq_q: usize,
        seq_k: usize,
    ) -> Result<Self> {
        let len = [batch, heads_q, seq_q, seq_k]
            .iter()
            .try_fold(1usize, |a, &d| a.checked_mul(d))
            .ok_or(Error::TooLarge {
                what: "attention workspace",
            })?;
        Ok(Self {
            scores: gpu.zeros::<f32>(&[len])?.data().clone(),
            probs: gpu.zeros::<T>(&[len])?.data().clone(),
        })
    }
}

/// The unfused path: `S = q kᵀ` (fp32, cuBLAS), masked softmax into `P` (in `T`), `o = P v` (cuBLAS).
/// The baseline the flash kernels are measured against; fp32 inputs give an all-fp32 computation.
#[allow(clippy::too_many_arguments)]
pub fn materialized_attention<T: Element>(
    gpu: &Gpu,
    q: &View<T>,
    k: &View<T>,
    v: &View<T>,
    key_lens: Option<&CudaSlice<i32>>,
    opts: &Options,
    o: &mut ViewMut<T>,
    lse: Option<&mut CudaSlice<f32>>,
    ws: &mut MaterializedWorkspace<T>,
) -> Result<()> {
    let sh = check_shapes(q.layout(), k.layout(), v.layout(), o.layout(), opts)?;
    check_aux(&sh, key_lens, lse.as_deref())?;
    let plane = sh.seq_q * sh.seq_k;
    let needed = sh.batch * sh.heads_q * plane;
    if ws.scores.len() < needed {
        return Err(Error::Shape {
            what: "attention workspace",
            expected: vec![needed],
            got: vec![ws.scores.len()],
        });
    }
    let stream = gpu.stream();
    let (qp, kp, vp, op) = (
        q.device_ptr(stream),
        k.device_ptr(stream),
        v.device_ptr(stream),
        o.device_ptr_mut(stream),
    );
    let sp = ws.scores.device_ptr_mut(stream).0;
    let pp = ws.probs.device_ptr_mut(stream).0;
    let (qs, ks, vs, os) = (q.strides(), k.strides(), v.strides(), o.strides());
    let esize = std::mem::size_of::<T>() as u64;
    let t = T::DTYPE.cublas();
    let f32t = DType::F32.cublas();
    let group = sh.heads_q / sh.heads_kv;
    // MHA batches all heads of a sequence in one call; GQA batches the query heads sharing one K/V head (stride 0).
    let (kv_heads_per_call, heads_per_call) = if group == 1 {
        (sh.heads_kv, sh.heads_q)
    } else {
        (1, group)
    };
    for b in 0..sh.batch {
        for hk in (0..sh.heads_kv).step_by(kv_heads_per_call) {
            let h0 = hk * group;
            let q0 = qp + ((b * qs[0] + h0 * qs[2]) as u64) * esize;
            let k0 = kp + ((b * ks[0] + hk * ks[2]) as u64) * esize;
            let s0 = sp + (((b * sh.heads_q + h0) * plane) as u64) * 4;
            let kv_stride = |s: &[usize]| if group == 1 { s[2] } else { 0 };
            let scores = RawGemm {
                trans_a: true,
                trans_b: false,
                m: sh.seq_k,
                n: sh.seq_q,
                k: sh.head_dim,
                a: k0,
                a_type: t,
                lda: ks[1],
                stride_a: kv_stride(ks),
                b: q0,
                b_type: t,
                ldb: qs[1],
                stride_b: qs[2],
                c: s0,
                c_type: f32t,
                ldc: sh.seq_k,
                stride_c: plane,
                batch: heads_per_call,
                alpha: 1.0,
                beta: 0.0,
            };
            // SAFETY: the views were checked to be inside their buffers with the shapes above, so every batch index
            // addresses [seq_k, head_dim] K rows (row stride ks[1]) and [seq_q, head_dim] Q rows; the scores
            // workspace holds batch*heads_q planes of seq_q*seq_k fp32.
            unsafe { scores.run(gpu.blas())? };
        }
    }
    let s = ffi::stream(stream);
    // SAFETY: scores and probs hold batch*heads_q*seq_q rows of seq_k elements (checked above); key_lens and lse
    // were checked by check_aux.
    let code = unsafe {
        ffi::fc_attention_softmax(
            sp as *const f32,
            check::fits_i64("seq_k", sh.seq_k)?,
            pp as *mut _,
            check::fits_i64("seq_k", sh.seq_k)?,
            lse.map_or(std::ptr::null_mut(), |l| {
                l.device_ptr_mut(stream).0 as *mut f32
            }),
            key_lens.map_or(std::ptr::null(), |kl| kl.device_ptr(stream).0 as *const i32),
            check::fits_i32("batch", sh.batch)?,
            check::fits_i32("heads_q", sh.heads_q)?,
            check::fits_i32("seq_q", sh.seq_q)?,
            check::fits_i32("seq_k", sh.seq_k)?,
            scale(opts, sh.head_dim),
            opts.causal as i32,
            T::DTYPE.ffi(),
            s,
        )
    };
    check_launch("attention_softmax", code)?;
    for b in 0..sh.batch {
        for hk in (0..sh.heads_kv).step_by(kv_heads_per_call) {
            let h0 = hk * group;
            let v0 = vp + ((b * vs[0] + hk * vs[2]) as u64) * esize;
            let o0 = op + ((b * os[0] + h0 * os[2]) as u64) * esize;
            let p0 = pp + (((b * sh.heads_q + h0) * plane) as u64) * esize;
            let out = RawGemm {
                trans_a: false,
                trans_b: false,
                m: sh.head_dim,
                n: sh.seq_q,
                k: sh.seq_k,
                a: v0,
                a_type: t,
                lda: vs[1],
                stride_a: if group == 1 { vs[2] } else { 0 },
                b: p0,
                b_type: t,
                ldb: sh.seq_k,
                stride_b: plane,
                c: o0,
                c_type: t,
                ldc: os[1],
                stride_c: os[2],
                batch: heads_per_call,
                alpha: 1.0,
                beta: 0.0,
            };
            // SAFETY: as for the scores: V rows [seq_k, head_dim] per K/V head, P planes in the workspace, O rows
            // [seq_q, head_dim] per query head, all inside their checked buffers; O is a distinct mutable borrow.
            unsafe { out.run(gpu.blas())? };
        }
    }
    Ok(())
}
