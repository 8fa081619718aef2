//! flashclip's Hopper GEMM with fused epilogues against the float64 reference: every epilogue, both 16-bit
//! dtypes, CLIP's layer shapes, ragged and strided shapes, and the inputs it refuses. Each case runs the default
//! launch and every explicit schedule (cooperative, ping-pong, each with register or TMA stores) against one
//! reference.
//!
//! Every output element is poisoned with NaN before each launch and must come back finite; rows sampled from each
//! output (the first and last of every 128-row tile band's edges and random ones) are compared with float64.

use flashclip::ops::bias_activation::Activation;
use flashclip::ops::gemm::{
    fused_supported, linear_fused, linear_fused_schedule, Epilogue, Schedule,
};
use flashclip::reference::{activate, max_abs_diff, round};
use flashclip::testing::{gpu_or_skip, gpu_test, poison, uniform};
use flashclip::{Element, Error, Gpu, View, ViewMut};
use half::{bf16, f16};
use rand::rngs::StdRng;
use rand::Rng;

/// (m, k, n): batch 1 and the text tower (77), ViT-L/14-336 at batch 1 (577) and 16 (9233 = one more than
/// 16 x 577, a ragged last tile), every CLIP width as k and n, an odd n that is a multiple of 8, tiny shapes.
const CLIP_SHAPES: [(usize, usize, usize); 10] = [
    (1, 768, 768),
    (77, 512, 1536),
    (577, 1024, 3072),
    (577, 4096, 1024),
    (9233, 1024, 4096),
    (129, 1280, 5120),
    (65, 1664, 8192),
    (33, 8192, 1664),
    (257, 1032, 1288),
    (3, 3072, 1280),
];

/// Small odd shapes for the sanitizers: one tile, ragged edges in every dimension, k below one k block.
const SMALL_SHAPES: [(usize, usize, usize); 4] =
    [(1, 8, 8), (130, 72, 40), (200, 136, 264), (5, 24, 520)];

/// Shapes past one wave of 132 SMs whose persistent blocks take two or three tiles each (both parities, so either
/// ping-pong consumer has the block's last tile), with a partial second k block and a one-k-block case.
const WAVE_SHAPES: [(usize, usize, usize); 2] = [(4300, 72, 1024), (9000, 8, 520)];

const EPILOGUES: [Kind; 6] = [
    Kind::Plain,
    Kind::Bias,
    Kind::Act(Activation::QuickGelu),
    Kind::Act(Activation::GeluErf),
    Kind::Act(Activation::GeluTanh),
    Kind::Accumulate,
];

#[derive(Debug, Clone, Copy)]
enum Kind {
    Plain,
    Bias,
    Act(Activation),
    Accumulate,
}

fn rounded<T: Element>(rng: &mut StdRng, n: usize, scale: f64) -> Vec<f64> {
    uniform(rng, n, scale).into_iter().map(round::<T>).collect()
}

fn host<T: Element>(v: &[f64]) -> Vec<T> {
    v.iter().map(|&x| T::from_f32(x as f32)).collect()
}

/// Rows to compare with float64: both edges of the matrix and of the first tile band, plus random rows.
fn sample_rows(rng: &mut StdRng, m: usize) -> Vec<usize> {
    let mut rows: Vec<usize> = [0, 1, 63, 64, 127, 128, m / 2, m - 1]
        .into_iter()
        .filter(|&r| r < m)
        .collect();
    rows.extend((0..12).map(|_| rng.random_range(0..m)));
    rows.sort_unstable();
    rows.dedup();
    rows
}

/// What a case launches: the default entry point, or an explicit schedule.
#[derive(Debug, Clone, Copy)]
enum Launch {
    Default,
    Schedule(Schedule),
}

fn launches() -> impl Iterator<Item = Launch> {
    std::iter::once(Launch::Default).chain(Schedule::ALL.map(Launch::Schedule))
}

/// One shape, one epilogue: y = epilogue(x · wᵀ) with x rows `lda` apart, by every launch in [`launches`].
fn check_one<T: Element>(
    gpu: &Gpu,
    rng: &mut StdRng,
    (m, k, n): (usize, usize, usize),
    lda: usize,
    kind: Kind,
) {
    // Inputs scaled so that dot products are O(1): activations see both signs and their curved parts.
    let xs = rounded::<T>(rng, (m - 1) * lda + k, 1.0);
    let w = rounded::<T>(rng, n * k, 2.0 / (k as f64).sqrt());
    let b = rounded::<T>(rng, n, 1.0);
    let r = rounded::<T>(rng, m * n, 2.0);
    let xd = gpu.upload(&host::<T>(&xs), &[xs.len()]).unwrap();
    let xv = View::new(xd.data(), 0, &[m, k], &[lda, 1]).unwrap();
    let wd = gpu.upload(&host::<T>(&w), &[n, k]).unwrap();
    let bd = gpu.upload(&host::<T>(&b), &[n]).unwrap();
    let bv = bd.view();
    let epilogue = match kind {
        Kind::Plain => Epilogue::Plain,
        Kind::Bias => Epilogue::Bias(&bv),
        Kind::Act(act) => Epilogue::BiasActivation(&bv, act),
        Kind::Accumulate => Epilogue::BiasAccumulate(&bv),
    };
    // Float64 truth, and what the unfused path computes in T (the GEMM rounded to T, then the epilogue rounded).
    let rows = sample_rows(rng, m);
    let (mut truth, mut naive) = (Vec::new(), Vec::new());
    for &i in &rows {
        for j in 0..n {
            let dot: f64 = (0..k).map(|c| xs[i * lda + c] * w[j * k + c]).sum();
            let (t, nv) = match kind {
                Kind::Plain => (dot, round::<T>(dot)),
                Kind::Bias => (dot + b[j], round::<T>(round::<T>(dot) + b[j])),
                Kind::Act(act) => (
                    activate(act, dot + b[j]),
                    round::<T>(activate(act, round::<T>(round::<T>(dot) + b[j]))),
                ),
                Kind::Accumulate => (
                    dot + b[j] + r[i * n + j],
                    round::<T>(round::<T>(round::<T>(dot) + b[j]) + r[i * n + j]),
                ),
            };
            truth.push(t);
            naive.push(nv);
        }
    }
    let scale = truth.iter().fold(0.0f64, |a, v| a.max(v.abs()));
    let bound = 2.0 * max_abs_diff(&naive, &truth) + 1e-4 * scale;

    for launch in launches() {
        // The residual is y's old value; every other epilogue must write all of a NaN-poisoned y.
        let mut y = if matches!(kind, Kind::Accumulate) {
            gpu.upload(&host::<T>(&r), &[m, n]).unwrap()
        } else {
            let mut y = gpu.empty::<T>(&[m, n]).unwrap();
            poison(gpu, y.data_mut()).unwrap();
            y
        };
        match launch {
            Launch::Default => linear_fused(gpu, &xv, &wd.view(), epilogue, &mut y.view_mut()),
            Launch::Schedule(s) => {
                linear_fused_schedule(gpu, s, &xv, &wd.view(), epilogue, &mut y.view_mut())
            }
        }
        .unwrap();
        let got: Vec<f64> = gpu
            .download(y.data())
            .unwrap()
            .iter()
            .map(|v| v.to_f32() as f64)
            .collect();
        let unwritten = got.iter().filter(|v| !v.is_finite()).count();
        assert_eq!(
            unwritten,
            0,
            "{} {kind:?} {m}x{k}x{n} {launch:?}: {unwritten} elements not written (NaN)",
            T::DTYPE
        );
        let ours: Vec<f64> = rows
            .iter()
            .flat_map(|&i| got[i * n..(i + 1) * n].iter().copied())
            .collect();
        let err = max_abs_diff(&ours, &truth);
        println!(
            "{} {kind:?} {m}x{k}x{n} lda {lda} {launch:?}: err {err:.3e} bound {bound:.3e}",
            T::DTYPE
        );
        assert!(
            err <= bound,
            "{} {kind:?} {m}x{k}x{n} lda {lda} {launch:?}: err {err:.3e} > {bound:.3e}",
            T::DTYPE
        );
    }
}

fn check<T: Element>(gpu: &Gpu, rng: &mut StdRng, shapes: &[(usize, usize, usize)]) {
    if !fused_supported::<T>(gpu) {
        println!("fused GEMM not supported on this GPU: nothing to check");
        return;
    }
    for &shape in shapes {
        for kind in EPILOGUES {
            check_one::<T>(gpu, rng, shape, shape.1, kind);
        }
    }
    // Strided rows (the class-token rows of a batch): x rows three widths apart.
    let (m, k, n) = (65, 1024, 768);
    check_one::<T>(gpu, rng, (m, k, n), 3 * k, Kind::Bias);
}

#[test]
fn gpu_gemm_fused_f16() {
    gpu_test("gpu_gemm_fused_f16", |gpu, rng| {
        check::<f16>(gpu, rng, &CLIP_SHAPES);
        check::<f16>(gpu, rng, &WAVE_SHAPES);
    });
}

#[test]
fn gpu_gemm_fused_bf16() {
    gpu_test("gpu_gemm_fused_bf16", |gpu, rng| {
        check::<bf16>(gpu, rng, &CLIP_SHAPES);
        check::<bf16>(gpu, rng, &WAVE_SHAPES);
    });
}

#[test]
fn gpu_small_gemm_fused() {
    gpu_test("gpu_small_gemm_fused", |gpu, rng| {
        check::<f16>(gpu, rng, &SMALL_SHAPES);
        check::<bf16>(gpu, rng, &SMALL_SHAPES[..2]);
    });
}

#[test]
fn gpu_gemm_fused_refuses_what_it_cannot_run() {
    let Some(gpu) = gpu_or_skip("gpu_gemm_fused_refuses_what_it_cannot_run") else {
        return;
    };
    let x = gpu.zeros::<f16>(&[4, 16]).unwrap();
    let w = gpu.zeros::<f16>(&[8, 16]).unwrap();
    let mut y = gpu.zeros::<f16>(&[4, 8]).unwrap();
    if !fused_supported::<f16>(&gpu) {
        let r = linear_fused(
            &gpu,
            &x.view(),
            &w.view(),
            Epilogue::Plain,
            &mut y.view_mut(),
        );
        assert!(matches!(r, Err(Error::Unsupported(_))), "{r:?}");
        return;
    }
    // k = 12 is no multiple of 8 (the loads move 16-byte rows).
    let x12 = gpu.zeros::<f16>(&[4, 12]).unwrap();
    let w12 = gpu.zeros::<f16>(&[8, 12]).unwrap();
    let r = linear_fused(
        &gpu,
        &x12.view(),
        &w12.view(),
        Epilogue::Plain,
        &mut y.view_mut(),
    );
    match r {
        Err(Error::Unsupported(msg)) => assert!(msg.contains("k is 12"), "{msg}"),
        other => panic!("{other:?}"),
    }
    // x starting 8 bytes into its buffer.
    let xv = View::new(x.data(), 4, &[3, 8], &[16, 1]).unwrap();
    let w8 = gpu.zeros::<f16>(&[8, 8]).unwrap();
    let mut y3 = gpu.zeros::<f16>(&[3, 8]).unwrap();
    let r = linear_fused(&gpu, &xv, &w8.view(), Epilogue::Plain, &mut y3.view_mut());
    assert!(
        matches!(
            r,
            Err(Error::Misaligned {
                what: "fused GEMM x",
                ..
            })
        ),
        "{r:?}"
    );
    // The TMA-store schedules need y's rows 16 bytes apart: a y of 4 rows of 8, 10 apart.
    let mut y10 = gpu.zeros::<f16>(&[4, 10]).unwrap();
    let mut yv = ViewMut::new(y10.data_mut(), 0, &[4, 8], &[10, 1]).unwrap();
    let r = linear_fused_schedule(
        &gpu,
        Schedule::PingPongTmaStore,
        &x.view(),
        &w.view(),
        Epilogue::Plain,
        &mut yv,
    );
    match r {
        Err(Error::Unsupported(msg)) => assert!(msg.contains("TMA store"), "{msg}"),
        other => panic!("{other:?}"),
    }
    // A bias of the wrong length.
    let b = gpu.zeros::<f16>(&[7]).unwrap();
    let bv = b.view();
    let r = linear_fused(
        &gpu,
        &x.view(),
        &w.view(),
        Epilogue::Bias(&bv),
        &mut y.view_mut(),
    );
    assert!(
        matches!(
            r,
            Err(Error::Shape {
                what: "fused GEMM bias",
                ..
            })
        ),
        "{r:?}"
    );
    // f32 has no tensor-core path here.
    let xf = gpu.zeros::<f32>(&[4, 16]).unwrap();
    let wf = gpu.zeros::<f32>(&[8, 16]).unwrap();
    let mut yf = gpu.zeros::<f32>(&[4, 8]).unwrap();
    let r = linear_fused(
        &gpu,
        &xf.view(),
        &wf.view(),
        Epilogue::Plain,
        &mut yf.view_mut(),
    );
    assert!(matches!(r, Err(Error::Unsupported(_))), "{r:?}");
}
