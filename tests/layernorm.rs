//! LayerNorm kernels against the float64 reference, and their error paths.

use flashclip::ops::layernorm::{bias_residual_layernorm, layernorm, MAX_COLS};
use flashclip::reference::{self, max_abs_diff, round};
use flashclip::testing::{gpu_or_skip, poison, rng, uniform};
use flashclip::{DType, Element, Error, Gpu, View, ViewMut};
use half::{bf16, f16};
use ndarray::{Array1, Array2};
use rand::rngs::StdRng;

/// CLIP widths (768 .. 1792), odd widths (scalar path), the widest supported, and rows of one.
const SHAPES: [(usize, usize); 8] = [
    (77, 768),
    (197, 1024),
    (9, 1280),
    (5, 1664),
    (3, 1792),
    (11, 1023),
    (2, 8192),
    (1, 8191),
];

fn atol<T: Element>() -> f64 {
    match T::DTYPE {
        DType::F16 => 2e-3,
        DType::BF16 => 1.6e-2,
        DType::F32 => 1e-5,
    }
}

fn host<T: Element>(a: &[f64]) -> Vec<T> {
    a.iter().map(|&v| T::from_f32(v as f32)).collect()
}

fn to_f64<T: Element>(v: &[T]) -> Vec<f64> {
    v.iter().map(|x| x.to_f32() as f64).collect()
}

fn check_fused<T: Element>(gpu: &Gpu, rng: &mut StdRng) {
    check_fused_shapes::<T>(gpu, rng, &SHAPES);
}

fn check_fused_shapes<T: Element>(gpu: &Gpu, rng: &mut StdRng, shapes: &[(usize, usize)]) {
    let eps = 1e-5;
    for &(rows, cols) in shapes {
        for with_bias in [true, false] {
            let mk = |rng: &mut StdRng, n, s| {
                uniform(rng, n, s)
                    .into_iter()
                    .map(round::<T>)
                    .collect::<Vec<f64>>()
            };
            // An offset in the residual makes the mean large against the spread, which E[x^2]-E[x]^2 would not survive.
            let x = Array2::from_shape_vec((rows, cols), mk(rng, rows * cols, 2.0)).unwrap();
            let res = Array2::from_shape_vec((rows, cols), mk(rng, rows * cols, 2.0))
                .unwrap()
                .mapv(|v| round::<T>(v + 3.0));
            let b = Array1::from_vec(mk(rng, cols, 0.5));
            let g = Array1::from_vec(mk(rng, cols, 1.5));
            let be = Array1::from_vec(mk(rng, cols, 0.5));
            let bias = with_bias.then_some(&b);
            let (sum_t, y_t) = reference::bias_residual_layernorm(&x, bias, &res, &g, &be, eps);
            let (sum_n, y_n) =
                reference::bias_residual_layernorm_naive::<T>(&x, bias, &res, &g, &be, eps);

            let xd = gpu
                .upload(&host::<T>(x.as_slice().unwrap()), &[rows, cols])
                .unwrap();
            let mut rd = gpu
                .upload(&host::<T>(res.as_slice().unwrap()), &[rows, cols])
                .unwrap();
            let (bd, gd, bed) = (
                gpu.upload(&host::<T>(b.as_slice().unwrap()), &[cols])
                    .unwrap(),
                gpu.upload(&host::<T>(g.as_slice().unwrap()), &[cols])
                    .unwrap(),
                gpu.upload(&host::<T>(be.as_slice().unwrap()), &[cols])
                    .unwrap(),
            );
            let mut y = gpu.empty::<T>(&[rows, cols]).unwrap();
            poison(gpu, y.data_mut()).unwrap();
            let bview = bd.view();
            bias_residual_layernorm(
                gpu,
                &xd.view(),
                with_bias.then_some(&bview),
                &mut rd.view_mut(),
                &gd.view(),
                &bed.view(),
                eps as f32,
                &mut y.view_mut(),
            )
            .unwrap();
            let sum = to_f64(&gpu.download(rd.data()).unwrap());
            let out = to_f64(&gpu.download(y.data()).unwrap());
            let tag = format!("{} {rows}x{cols} bias={with_bias}", T::DTYPE);
            for (what, got, truth, naive) in
                [("sum", &sum, &sum_t, &sum_n), ("y", &out, &y_t, &y_n)]
            {
                let err = max_abs_diff(got, truth.as_slice().unwrap());
                let bound = 2.0
                    * max_abs_diff(naive.as_slice().unwrap(), truth.as_slice().unwrap())
                    + atol::<T>();
                assert!(err <= bound, "{tag} {what}: err {err:.3e} > {bound:.3e}");
            }
        }
    }
}

fn check_plain<T: Element>(gpu: &Gpu, rng: &mut StdRng) {
    check_plain_shapes::<T>(gpu, rng, &SHAPES);
}

fn check_plain_shapes<T: Element>(gpu: &Gpu, rng: &mut StdRng, shapes: &[(usize, usize)]) {
    let eps = 1e-5;
    for &(rows, cols) in shapes {
        // Strided rows: every other row of a [2*rows, cols] buffer, as for the class tokens of a batch.
        let x = Array2::from_shape_vec((rows, cols), uniform(rng, rows * cols, 3.0))
            .unwrap()
            .mapv(|v| round::<T>(v - 1.0));
        let g = Array1::from_vec(uniform(rng, cols, 1.5)).mapv(round::<T>);
        let be = Array1::from_vec(uniform(rng, cols, 0.5)).mapv(round::<T>);
        let truth = reference::layernorm(&x, &g, &be, eps);
        let naive = reference::layernorm_naive::<T>(&x, &g, &be, eps);
        let mut buf = vec![T::from_f32(0.0); 2 * rows * cols];
        for r in 0..rows {
            for c in 0..cols {
                buf[2 * r * cols + c] = T::from_f32(x[[r, c]] as f32);
            }
        }
        let xd = gpu.upload(&buf, &[2 * rows * cols]).unwrap();
        let xv = View::new(xd.data(), 0, &[rows, cols], &[2 * cols, 1]).unwrap();
        let (gd, bed) = (
            gpu.upload(&host::<T>(g.as_slice().unwrap()), &[cols])
                .unwrap(),
            gpu.upload(&host::<T>(be.as_slice().unwrap()), &[cols])
                .unwrap(),
        );
        let mut y = gpu.empty::<T>(&[rows, cols]).unwrap();
        poison(gpu, y.data_mut()).unwrap();
        layernorm(
            gpu,
            &xv,
            &gd.view(),
            &bed.view(),
            eps as f32,
            &mut y.view_mut(),
        )
        .unwrap();
        let out = to_f64(&gpu.download(y.data()).unwrap());
        let err = max_abs_diff(&out, truth.as_slice().unwrap());
        let bound =
            2.0 * max_abs_diff(naive.as_slice().unwrap(), truth.as_slice().unwrap()) + atol::<T>();
        assert!(
            err <= bound,
            "{} plain {rows}x{cols}: err {err:.3e} > {bound:.3e}",
            T::DTYPE
        );
    }
}

macro_rules! gpu_tests {
    ($($name:ident: $t:ty => $f:ident),* $(,)?) => {$(
        #[test]
        fn $name() {
            let Some(gpu) = gpu_or_skip(stringify!($name)) else { return };
            $f::<$t>(&gpu, &mut rng(stringify!($name)));
        }
    )*};
}

gpu_tests! {
    gpu_fused_layernorm_f16: f16 => check_fused,
    gpu_fused_layernorm_bf16: bf16 => check_fused,
    gpu_fused_layernorm_f32: f32 => check_fused,
    gpu_layernorm_f16: f16 => check_plain,
    gpu_layernorm_bf16: bf16 => check_plain,
    gpu_layernorm_f32: f32 => check_plain,
}

/// Small odd shapes through every path (packed and scalar, 1 to 16 packs per thread), cheap enough for
/// compute-sanitizer.
#[test]
fn gpu_small_layernorm() {
    let Some(gpu) = gpu_or_skip("gpu_small_layernorm") else {
        return;
    };
    let mut r = rng("gpu_small_layernorm");
    let shapes = [(3, 24), (2, 13), (1, 8192), (2, 4104), (1, 5000)];
    check_fused_shapes::<f16>(&gpu, &mut r, &shapes);
    check_plain_shapes::<bf16>(&gpu, &mut r, &shapes);
    check_fused_shapes::<f32>(&gpu, &mut r, &shapes);
    check_plain_shapes::<f32>(&gpu, &mut r, &shapes);
}

#[test]
fn gpu_layernorm_rejects_bad_inputs() {
    let Some(gpu) = gpu_or_skip("gpu_layernorm_rejects_bad_inputs") else {
        return;
    };
    let x = gpu.zeros::<f16>(&[4, 16]).unwrap();
    let g = gpu.zeros::<f16>(&[16]).unwrap();
    let g15 = gpu.zeros::<f16>(&[15]).unwrap();
    let mut y = gpu.zeros::<f16>(&[4, 16]).unwrap();
    let r = layernorm(
        &gpu,
        &x.view(),
        &g15.view(),
        &g.view(),
        1e-5,
        &mut y.view_mut(),
    );
    assert!(
        matches!(r, Err(Error::Shape { what: "gamma", .. })),
        "{r:?}"
    );
    let r = layernorm(
        &gpu,
        &x.view(),
        &g.view(),
        &g.view(),
        -1.0,
        &mut y.view_mut(),
    );
    assert!(
        matches!(r, Err(Error::InvalidArgument { what: "eps", .. })),
        "{r:?}"
    );
    let wide = gpu.zeros::<f16>(&[1, MAX_COLS + 8]).unwrap();
    let gw = gpu.zeros::<f16>(&[MAX_COLS + 8]).unwrap();
    let mut yw = gpu.zeros::<f16>(&[1, MAX_COLS + 8]).unwrap();
    let r = layernorm(
        &gpu,
        &wide.view(),
        &gw.view(),
        &gw.view(),
        1e-5,
        &mut yw.view_mut(),
    );
    assert!(matches!(r, Err(Error::Unsupported(_))), "{r:?}");
    let mut res = gpu.zeros::<f16>(&[3, 16]).unwrap();
    let r = bias_residual_layernorm(
        &gpu,
        &x.view(),
        None,
        &mut res.view_mut(),
        &g.view(),
        &g.view(),
        1e-5,
        &mut y.view_mut(),
    );
    assert!(
        matches!(
            r,
            Err(Error::Shape {
                what: "residual",
                ..
            })
        ),
        "{r:?}"
    );
    let mut ybuf = gpu.zeros::<f16>(&[3 * 16 + 15 * 2 + 1]).unwrap();
    let ys = ViewMut::new(ybuf.data_mut(), 0, &[4, 16], &[16, 2]).unwrap();
    let mut ys = ys;
    let r = layernorm(&gpu, &x.view(), &g.view(), &g.view(), 1e-5, &mut ys);
    assert!(matches!(r, Err(Error::Layout { what: "y", .. })), "{r:?}");
}

#[test]
fn reference_layernorm_is_normalized() {
    let x = Array2::from_shape_vec((1, 4), vec![1.0, 2.0, 3.0, 4.0]).unwrap();
    let ones = Array1::from_elem(4, 1.0);
    let zeros = Array1::zeros(4);
    let y = reference::layernorm(&x, &ones, &zeros, 0.0);
    let s = 1.0 / 1.25f64.sqrt();
    for (got, want) in y.iter().zip([-1.5 * s, -0.5 * s, 0.5 * s, 1.5 * s]) {
        approx::assert_abs_diff_eq!(*got, want, epsilon = 1e-12);
    }
}
