//! cuBLAS / cuBLASLt linear layers against the float64 reference: plain and bias-fused, strided rows.

use flashclip::ops::gemm::{linear, linear_bias};
use flashclip::reference::{max_abs_diff, round};
use flashclip::testing::{gpu_or_skip, gpu_test, poison, uniform};
use flashclip::{Element, Error, Gpu, View};
use half::{bf16, f16};
use rand::rngs::StdRng;

/// (m, k, n, x row stride, x offset): CLIP-like widths, odd sizes, the strided class-token rows of a batch, and a view
/// that starts 16 bytes into its buffer (not 256-byte aligned: the two-pass path).
const SHAPES: [(usize, usize, usize, usize, usize); 6] = [
    (77, 512, 1536, 512, 0),
    (33, 64, 64, 64, 0),
    (5, 24, 40, 24, 0),
    (4, 128, 96, 128 * 17, 0),
    (1, 8, 8, 8, 0),
    (9, 64, 72, 64, 8),
];

fn check<T: Element>(gpu: &Gpu, rng: &mut StdRng, shapes: &[(usize, usize, usize, usize, usize)]) {
    for &(m, k, n, lda, offset) in shapes {
        let xs = uniform(rng, (m - 1) * lda + k, 1.0)
            .into_iter()
            .map(round::<T>)
            .collect::<Vec<_>>();
        let w = uniform(rng, n * k, 1.0)
            .into_iter()
            .map(round::<T>)
            .collect::<Vec<_>>();
        let b = uniform(rng, n, 1.0)
            .into_iter()
            .map(round::<T>)
            .collect::<Vec<_>>();
        let mut truth = vec![0.0f64; m * n];
        let mut naive = vec![0.0f64; m * n];
        for i in 0..m {
            for j in 0..n {
                let dot: f64 = (0..k).map(|c| xs[i * lda + c] * w[j * k + c]).sum();
                truth[i * n + j] = dot + b[j];
                naive[i * n + j] = round::<T>(round::<T>(dot) + b[j]);
            }
        }
        let host = |v: &[f64]| v.iter().map(|&x| T::from_f32(x as f32)).collect::<Vec<T>>();
        // `offset` leading elements before the matrix (1.0, never read).
        let padded: Vec<f64> = std::iter::repeat_n(1.0, offset)
            .chain(xs.iter().copied())
            .collect();
        let xd = gpu.upload(&host(&padded), &[padded.len()]).unwrap();
        let xv = View::new(xd.data(), offset, &[m, k], &[lda, 1]).unwrap();
        let wd = gpu.upload(&host(&w), &[n, k]).unwrap();
        let bd = gpu.upload(&host(&b), &[n]).unwrap();
        let mut y = gpu.empty::<T>(&[m, n]).unwrap();
        poison(gpu, y.data_mut()).unwrap();
        linear_bias(gpu, &xv, &wd.view(), &bd.view(), &mut y.view_mut()).unwrap();
        let got: Vec<f64> = gpu
            .download(y.data())
            .unwrap()
            .iter()
            .map(|v| v.to_f32() as f64)
            .collect();
        let scale = truth.iter().fold(0.0f64, |a, v| a.max(v.abs()));
        let err = max_abs_diff(&got, &truth);
        let bound = 2.0 * max_abs_diff(&naive, &truth) + 1e-3 * scale;
        println!(
            "{} linear_bias {m}x{k}x{n} lda {lda}: err {err:.3e} bound {bound:.3e}",
            T::DTYPE
        );
        assert!(
            err <= bound,
            "{} linear_bias {m}x{k}x{n}: err {err:.3e} > {bound:.3e}",
            T::DTYPE
        );

        // Without bias, through plain cuBLAS.
        poison(gpu, y.data_mut()).unwrap();
        linear(gpu, &xv, &wd.view(), &mut y.view_mut(), 0.0).unwrap();
        let got: Vec<f64> = gpu
            .download(y.data())
            .unwrap()
            .iter()
            .map(|v| v.to_f32() as f64)
            .collect();
        let truth_nb: Vec<f64> = truth
            .iter()
            .enumerate()
            .map(|(i, v)| v - b[i % n])
            .collect();
        let err = max_abs_diff(&got, &truth_nb);
        assert!(
            err <= bound,
            "{} linear {m}x{k}x{n}: err {err:.3e} > {bound:.3e}",
            T::DTYPE
        );
    }
}

#[test]
fn gpu_linear_f16() {
    gpu_test("gpu_linear_f16", |gpu, rng| check::<f16>(gpu, rng, &SHAPES));
}

#[test]
fn gpu_linear_bf16() {
    gpu_test("gpu_linear_bf16", |gpu, rng| {
        check::<bf16>(gpu, rng, &SHAPES)
    });
}

#[test]
fn gpu_linear_f32() {
    gpu_test("gpu_linear_f32", |gpu, rng| check::<f32>(gpu, rng, &SHAPES));
}

#[test]
fn gpu_linear_rejects_bad_shapes() {
    let Some(gpu) = gpu_or_skip("gpu_linear_rejects_bad_shapes") else {
        return;
    };
    let x = gpu.zeros::<f16>(&[4, 8]).unwrap();
    let w = gpu.zeros::<f16>(&[6, 7]).unwrap();
    let b = gpu.zeros::<f16>(&[6]).unwrap();
    let mut y = gpu.zeros::<f16>(&[4, 6]).unwrap();
    let r = linear_bias(&gpu, &x.view(), &w.view(), &b.view(), &mut y.view_mut());
    assert!(
        matches!(
            r,
            Err(Error::Shape {
                what: "linear weight",
                ..
            })
        ),
        "{r:?}"
    );
    let w = gpu.zeros::<f16>(&[6, 8]).unwrap();
    let b5 = gpu.zeros::<f16>(&[5]).unwrap();
    let r = linear_bias(&gpu, &x.view(), &w.view(), &b5.view(), &mut y.view_mut());
    assert!(
        matches!(
            r,
            Err(Error::Shape {
                what: "linear bias",
                ..
            })
        ),
        "{r:?}"
    );
    let xt = View::new(x.data(), 0, &[8, 4], &[1, 8]).unwrap();
    let mut y2 = gpu.zeros::<f16>(&[8, 6]).unwrap();
    let w4 = gpu.zeros::<f16>(&[6, 4]).unwrap();
    let r = linear(&gpu, &xt, &w4.view(), &mut y2.view_mut(), 0.0);
    assert!(matches!(r, Err(Error::Layout { .. })), "{r:?}");
}
