//! Fused bias + activation against the float64 reference, and its error paths.

use flashclip::ops::bias_activation::{bias_activation, bias_activation_inplace, Activation};
use flashclip::reference::{self, max_abs_diff, round};
use flashclip::testing::{gpu_or_skip, poison, rng, uniform};
use flashclip::{DType, Element, Error, Gpu};
use half::{bf16, f16};
use ndarray::{Array1, Array2};
use rand::rngs::StdRng;

const ACTS: [Activation; 3] = [
    Activation::QuickGelu,
    Activation::GeluErf,
    Activation::GeluTanh,
];

/// Widths: CLIP's MLP widths, odd widths (scalar path), one element, and rows of one.
const SHAPES: [(usize, usize); 7] = [
    (77, 3072),
    (197, 4096),
    (3, 5120),
    (13, 1001),
    (1, 1),
    (64, 8),
    (1, 7),
];

fn atol<T: Element>() -> f64 {
    match T::DTYPE {
        DType::F16 => 1e-4,
        DType::BF16 => 1e-3,
        DType::F32 => 1e-6,
    }
}

fn check<T: Element>(gpu: &Gpu, rng: &mut StdRng) {
    check_shapes::<T>(gpu, rng, &SHAPES);
}

fn check_shapes<T: Element>(gpu: &Gpu, rng: &mut StdRng, shapes: &[(usize, usize)]) {
    for &(rows, cols) in shapes {
        for act in ACTS {
            for with_bias in [true, false] {
                for inplace in [false, true] {
                    let x = Array2::from_shape_vec((rows, cols), uniform(rng, rows * cols, 6.0))
                        .unwrap()
                        .mapv(round::<T>);
                    let b = Array1::from_vec(uniform(rng, cols, 1.0)).mapv(round::<T>);
                    let bias = with_bias.then_some(&b);
                    let truth = reference::bias_activation(&x, bias, act);
                    let naive = reference::bias_activation_naive::<T>(&x, bias, act);

                    let host =
                        |a: &[f64]| a.iter().map(|&v| T::from_f32(v as f32)).collect::<Vec<T>>();
                    let mut xd = gpu
                        .upload(&host(x.as_slice().unwrap()), &[rows, cols])
                        .unwrap();
                    let bd = gpu.upload(&host(b.as_slice().unwrap()), &[cols]).unwrap();
                    let bview = bd.view();
                    let out = if inplace {
                        bias_activation_inplace(
                            gpu,
                            &mut xd.view_mut(),
                            with_bias.then_some(&bview),
                            act,
                        )
                        .unwrap();
                        gpu.download(xd.data()).unwrap()
                    } else {
                        let mut y = gpu.empty::<T>(&[rows, cols]).unwrap();
                        poison(gpu, y.data_mut()).unwrap();
                        bias_activation(
                            gpu,
                            &xd.view(),
                            with_bias.then_some(&bview),
                            act,
                            &mut y.view_mut(),
                        )
                        .unwrap();
                        gpu.download(y.data()).unwrap()
                    };
                    let out: Vec<f64> = out.iter().map(|v| v.to_f32() as f64).collect();
                    let err = max_abs_diff(&out, truth.as_slice().unwrap());
                    let naive_err =
                        max_abs_diff(naive.as_slice().unwrap(), truth.as_slice().unwrap());
                    let bound = 2.0 * naive_err + atol::<T>();
                    assert!(
                        err <= bound,
                        "{} {rows}x{cols} {act:?} bias={with_bias} inplace={inplace}: err {err:.3e} > {bound:.3e}",
                        T::DTYPE
                    );
                }
            }
        }
    }
}

#[test]
fn gpu_bias_activation_f16() {
    let Some(gpu) = gpu_or_skip("gpu_bias_activation_f16") else {
        return;
    };
    check::<f16>(&gpu, &mut rng("gpu_bias_activation_f16"));
}

#[test]
fn gpu_bias_activation_bf16() {
    let Some(gpu) = gpu_or_skip("gpu_bias_activation_bf16") else {
        return;
    };
    check::<bf16>(&gpu, &mut rng("gpu_bias_activation_bf16"));
}

#[test]
fn gpu_bias_activation_f32() {
    let Some(gpu) = gpu_or_skip("gpu_bias_activation_f32") else {
        return;
    };
    check::<f32>(&gpu, &mut rng("gpu_bias_activation_f32"));
}

/// Small odd shapes through every path, cheap enough for compute-sanitizer.
#[test]
fn gpu_small_bias_activation() {
    let Some(gpu) = gpu_or_skip("gpu_small_bias_activation") else {
        return;
    };
    let mut r = rng("gpu_small_bias_activation");
    let shapes = [(3, 24), (5, 13), (1, 1)];
    check_shapes::<f16>(&gpu, &mut r, &shapes);
    check_shapes::<bf16>(&gpu, &mut r, &shapes);
    check_shapes::<f32>(&gpu, &mut r, &shapes);
}

#[test]
fn gpu_bias_activation_rejects_bad_shapes() {
    let Some(gpu) = gpu_or_skip("gpu_bias_activation_rejects_bad_shapes") else {
        return;
    };
    let x = gpu.zeros::<f16>(&[4, 16]).unwrap();
    let mut y = gpu.zeros::<f16>(&[4, 8]).unwrap();
    let r = bias_activation(
        &gpu,
        &x.view(),
        None,
        Activation::QuickGelu,
        &mut y.view_mut(),
    );
    assert!(matches!(r, Err(Error::Shape { what: "y", .. })), "{r:?}");
    let mut y = gpu.zeros::<f16>(&[4, 16]).unwrap();
    let b = gpu.zeros::<f16>(&[15]).unwrap();
    let r = bias_activation(
        &gpu,
        &x.view(),
        Some(&b.view()),
        Activation::QuickGelu,
        &mut y.view_mut(),
    );
    assert!(matches!(r, Err(Error::Shape { what: "bias", .. })), "{r:?}");
    let e = gpu.zeros::<f16>(&[1]).unwrap().reshape(&[1, 1]).unwrap();
    let empty = flashclip::View::new(e.data(), 0, &[0, 1], &[1, 1]).unwrap();
    let r = bias_activation(&gpu, &empty, None, Activation::QuickGelu, &mut y.view_mut());
    assert!(matches!(r, Err(Error::Empty { .. })), "{r:?}");
    let strided = x.view().narrow(1, 0, 8).unwrap();
    let mut y8 = gpu.zeros::<f16>(&[4, 8]).unwrap();
    let r = bias_activation(
        &gpu,
        &strided,
        None,
        Activation::QuickGelu,
        &mut y8.view_mut(),
    );
    assert!(matches!(r, Err(Error::Layout { what: "x", .. })), "{r:?}");
}

#[test]
fn reference_activations_match_known_values() {
    // quick_gelu(1) = 1 / (1 + e^-1.702); gelu(1) = 0.841344746...; tanh-gelu(1) = 0.841191990...
    approx::assert_abs_diff_eq!(
        reference::activate(Activation::QuickGelu, 1.0),
        1.0 / (1.0 + (-1.702f64).exp()),
        epsilon = 1e-15
    );
    approx::assert_abs_diff_eq!(
        reference::activate(Activation::GeluErf, 1.0),
        0.8413447460685429,
        epsilon = 1e-13
    );
    approx::assert_abs_diff_eq!(
        reference::activate(Activation::GeluTanh, 1.0),
        0.8411919906082768,
        epsilon = 1e-13
    );
    approx::assert_abs_diff_eq!(
        reference::activate(Activation::GeluErf, -3.0),
        -0.00404969409489031,
        epsilon = 1e-14
    );
}
