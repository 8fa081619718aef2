//! Attention kernels against the float64 reference: every version, both half dtypes (and f32 where supported),
//! odd lengths, packed QKV strides, causal, key lengths, GQA, lse; and the error paths. Explicit tile shapes:
//! tests/attention_tiles.rs; shared helpers: tests/common.

mod common;

use common::*;
use flashclip::ops::attention::{self, check_flash, Options, Tiles, Version};
use flashclip::reference;
use flashclip::testing::gpu_test;
use flashclip::{DType, Error, Layout, View};
use half::{bf16, f16};
use ndarray::Array4;
#[test]
fn gpu_v1_f16() {
    gpu_test("gpu_v1_f16", |g, r| {
        check_version::<f16>(g, r, Some(Version::V1))
    });
}
#[test]
fn gpu_v1_bf16() {
    gpu_test("gpu_v1_bf16", |g, r| {
        check_version::<bf16>(g, r, Some(Version::V1))
    });
}
#[test]
fn gpu_v1_f32() {
    gpu_test("gpu_v1_f32", |g, r| {
        check_version::<f32>(g, r, Some(Version::V1))
    });
}
#[test]
fn gpu_v2_f16() {
    gpu_test("gpu_v2_f16", |g, r| {
        check_version::<f16>(g, r, Some(Version::V2))
    });
}
#[test]
fn gpu_v2_bf16() {
    gpu_test("gpu_v2_bf16", |g, r| {
        check_version::<bf16>(g, r, Some(Version::V2))
    });
}
#[test]
fn gpu_v3_f16() {
    gpu_test("gpu_v3_f16", |g, r| {
        check_version::<f16>(g, r, Some(Version::V3))
    });
}
#[test]
fn gpu_v3_bf16() {
    gpu_test("gpu_v3_bf16", |g, r| {
        check_version::<bf16>(g, r, Some(Version::V3))
    });
}
#[test]
fn gpu_v4_f16() {
    gpu_test("gpu_v4_f16", |g, r| {
        check_version::<f16>(g, r, Some(Version::V4))
    });
}
#[test]
fn gpu_v4_bf16() {
    gpu_test("gpu_v4_bf16", |g, r| {
        check_version::<bf16>(g, r, Some(Version::V4))
    });
}
#[test]
fn gpu_materialized_f16() {
    gpu_test("gpu_materialized_f16", |g, r| {
        check_version::<f16>(g, r, None)
    });
}
#[test]
fn gpu_materialized_f32() {
    gpu_test("gpu_materialized_f32", |g, r| {
        check_version::<f32>(g, r, None)
    });
}

#[test]
fn gpu_small_every_path() {
    gpu_test("gpu_small_every_path", |g, r| {
        let paths = Version::ALL
            .map(Path::Flash)
            .into_iter()
            .chain(Tiles::ALL.map(Path::Tiles))
            .chain([Path::Materialized]);
        for path in paths {
            check_cases::<f16>(g, r, path, small_cases());
            check_cases::<bf16>(g, r, path, small_cases());
        }
        check_cases::<f32>(g, r, Path::Flash(Version::V1), small_cases());
        check_cases::<f32>(g, r, Path::Materialized, small_cases());
    });
}

#[test]
fn gpu_rejects_bad_inputs_before_launch() {
    gpu_test("gpu_rejects_bad_inputs_before_launch", |gpu, _| {
        let t = gpu.zeros::<f16>(&[2, 8, 3, 2, 64]).unwrap();
        let all = t.view();
        let (q, k, v) = (
            all.select(2, 0).unwrap(),
            all.select(2, 1).unwrap(),
            all.select(2, 2).unwrap(),
        );
        let mut o = gpu.zeros::<f16>(&[2, 8, 2, 64]).unwrap();
        let opts = Options::default();
        // key_lens shorter than the batch (a longer buffer is allowed: its first `batch` ints are read)
        let kl = gpu.upload_slice(&[1i32]).unwrap();
        let r = attention::flash_attention(
            gpu,
            Version::V2,
            &q,
            &k,
            &v,
            Some(&kl),
            &opts,
            &mut o.view_mut(),
            None,
        );
        assert!(
            matches!(
                r,
                Err(Error::Shape {
                    what: "key_lens",
                    ..
                })
            ),
            "{r:?}"
        );
        // lse too short
        let mut lse = gpu.zeros::<f32>(&[5]).unwrap();
        let r = attention::flash_attention(
            gpu,
            Version::V2,
            &q,
            &k,
            &v,
            None,
            &opts,
            &mut o.view_mut(),
            Some(lse.data_mut()),
        );
        assert!(matches!(r, Err(Error::Shape { what: "lse", .. })), "{r:?}");
        // f32 is not a v2 dtype
        let t32 = gpu.zeros::<f32>(&[1, 8, 1, 64]).unwrap();
        let mut o32 = gpu.zeros::<f32>(&[1, 8, 1, 64]).unwrap();
        let r = attention::flash_attention(
            gpu,
            Version::V2,
            &t32.view(),
            &t32.view(),
            &t32.view(),
            None,
            &opts,
            &mut o32.view_mut(),
            None,
        );
        assert!(matches!(r, Err(Error::Unsupported(_))), "{r:?}");
        // a view shifted by one element is misaligned for 16-byte loads
        let flat = gpu.zeros::<f16>(&[1 + 8 * 64]).unwrap();
        let shifted = View::new(flat.data(), 1, &[1, 8, 1, 64], &[512, 64, 64, 1]).unwrap();
        let mut o1 = gpu.zeros::<f16>(&[1, 8, 1, 64]).unwrap();
        let r = attention::flash_attention(
            gpu,
            Version::V1,
            &shifted,
            &shifted,
            &shifted,
            None,
            &opts,
            &mut o1.view_mut(),
            None,
        );
        assert!(matches!(r, Err(Error::Misaligned { .. })), "{r:?}");
        // a view past the end of its buffer cannot be made
        assert!(View::new(flat.data(), 8, &[1, 8, 1, 64], &[512, 64, 64, 1]).is_err());
    });
}

// ---- error paths that need no GPU: the same checks the launch runs first ----

fn layout(shape: [usize; 4]) -> Layout {
    Layout {
        offset: 0,
        shape: shape.to_vec(),
        strides: flashclip::tensor::contiguous_strides(&shape),
    }
}

fn flash_check(
    q: [usize; 4],
    kv: [usize; 4],
    o: [usize; 4],
    d: DType,
    ver: Version,
    causal: bool,
) -> flashclip::Result<attention::Shape> {
    let (q, kv, o) = (layout(q), layout(kv), layout(o));
    check_flash(
        ver,
        d,
        &q,
        &kv,
        &kv,
        &o,
        &Options {
            softmax_scale: None,
            causal,
        },
    )
}

#[test]
fn accepts_clip_shapes() {
    let s = flash_check(
        [16, 577, 16, 64],
        [16, 577, 16, 64],
        [16, 577, 16, 64],
        DType::F16,
        Version::V2,
        false,
    )
    .unwrap();
    assert_eq!(s.flops(false), 4.0 * 16.0 * 16.0 * 577.0 * 577.0 * 64.0);
    assert!(flash_check(
        [2, 77, 12, 64],
        [2, 77, 12, 64],
        [2, 77, 12, 64],
        DType::BF16,
        Version::V2,
        true
    )
    .is_ok());
    assert!(flash_check(
        [2, 5, 8, 128],
        [2, 9, 2, 128],
        [2, 5, 8, 128],
        DType::F32,
        Version::V1,
        false
    )
    .is_ok());
}

#[test]
fn rejects_mismatched_shapes() {
    let r = flash_check(
        [2, 77, 12, 64],
        [2, 77, 12, 80],
        [2, 77, 12, 64],
        DType::F16,
        Version::V2,
        false,
    );
    assert!(matches!(r, Err(Error::Shape { what: "k", .. })), "{r:?}");
    let r = flash_check(
        [2, 77, 12, 64],
        [2, 77, 12, 64],
        [2, 76, 12, 64],
        DType::F16,
        Version::V2,
        false,
    );
    assert!(matches!(r, Err(Error::Shape { what: "o", .. })), "{r:?}");
    let r = flash_check(
        [2, 77, 12, 64],
        [2, 77, 5, 64],
        [2, 77, 12, 64],
        DType::F16,
        Version::V2,
        false,
    );
    assert!(
        matches!(r, Err(Error::InvalidArgument { what: "heads", .. })),
        "{r:?}"
    );
    let r = flash_check(
        [2, 10, 2, 64],
        [2, 12, 2, 64],
        [2, 10, 2, 64],
        DType::F16,
        Version::V2,
        true,
    );
    assert!(
        matches!(r, Err(Error::InvalidArgument { what: "causal", .. })),
        "{r:?}"
    );
}

#[test]
fn rejects_unsupported_head_dims_and_dtypes() {
    for d in [88, 256, 65] {
        let r = flash_check(
            [1, 8, 1, d],
            [1, 8, 1, d],
            [1, 8, 1, d],
            DType::F16,
            Version::V2,
            false,
        );
        assert!(
            matches!(r, Err(Error::Unsupported(_))),
            "head_dim {d}: {r:?}"
        );
    }
    let r = flash_check(
        [1, 8, 1, 64],
        [1, 8, 1, 64],
        [1, 8, 1, 64],
        DType::F32,
        Version::V2,
        false,
    );
    assert!(matches!(r, Err(Error::Unsupported(_))), "{r:?}");
    let r = flash_check(
        [1, 8, 1, 136],
        [1, 8, 1, 136],
        [1, 8, 1, 136],
        DType::F16,
        Version::V1,
        false,
    );
    assert!(matches!(r, Err(Error::Unsupported(_))), "{r:?}");
}

#[test]
fn rejects_zero_lengths() {
    for shape in [[0, 8, 1, 64], [1, 0, 1, 64], [1, 8, 0, 64]] {
        let r = flash_check(shape, shape, shape, DType::F16, Version::V2, false);
        assert!(matches!(r, Err(Error::Empty { .. })), "{shape:?}: {r:?}");
    }
}

#[test]
fn rejects_misaligned_and_non_unit_strides() {
    let mut q = layout([1, 8, 1, 64]);
    let kv = layout([1, 8, 1, 64]);
    q.strides = vec![8 * 68, 68, 68, 1]; // rows of 68 halves: 136 bytes, not a multiple of 16
    let r = check_flash(
        Version::V2,
        DType::F16,
        &q,
        &kv,
        &kv,
        &kv,
        &Options::default(),
    );
    assert!(
        matches!(r, Err(Error::Misaligned { what: "q", .. })),
        "{r:?}"
    );
    q = layout([1, 8, 1, 64]);
    q.offset = 4;
    let r = check_flash(
        Version::V2,
        DType::F16,
        &q,
        &kv,
        &kv,
        &kv,
        &Options::default(),
    );
    assert!(
        matches!(r, Err(Error::Misaligned { what: "q", .. })),
        "{r:?}"
    );
    q = layout([1, 8, 1, 64]);
    q.strides = vec![8 * 128, 128, 128, 2];
    let r = check_flash(
        Version::V2,
        DType::F16,
        &q,
        &kv,
        &kv,
        &kv,
        &Options::default(),
    );
    assert!(matches!(r, Err(Error::Layout { what: "q", .. })), "{r:?}");
    for bad_scale in [f32::NAN, 0.0, -0.125] {
        let r = check_flash(
            Version::V2,
            DType::F16,
            &kv,
            &kv,
            &kv,
            &kv,
            &Options {
                softmax_scale: Some(bad_scale),
                causal: false,
            },
        );
        assert!(
            matches!(
                r,
                Err(Error::InvalidArgument {
                    what: "softmax_scale",
                    ..
                })
            ),
            "{bad_scale}: {r:?}"
        );
    }
}

#[test]
fn reference_matches_hand_computed_case() {
    // One query, two keys, d = 1: scores 1*1 and 1*3 (scale 1), softmax [1/(1+e^2), e^2/(1+e^2)].
    let q = Array4::from_shape_vec((1, 1, 1, 1), vec![1.0]).unwrap();
    let k = Array4::from_shape_vec((1, 2, 1, 1), vec![1.0, 3.0]).unwrap();
    let v = Array4::from_shape_vec((1, 2, 1, 1), vec![10.0, 20.0]).unwrap();
    let r = reference::attention(&q, &k, &v, None, 1.0, false);
    let e2 = 2f64.exp();
    let want = 10.0 / (1.0 + e2) + 20.0 * e2 / (1.0 + e2);
    approx::assert_abs_diff_eq!(r.o[[0, 0, 0, 0]], want, epsilon = 1e-12);
    approx::assert_abs_diff_eq!(
        r.lse[[0, 0, 0]],
        (1f64.exp() + 3f64.exp()).ln(),
        epsilon = 1e-12
    );
    // Causal hides key 1 from query 0; key length 0 hides everything.
    let q2 = Array4::from_shape_vec((1, 2, 1, 1), vec![1.0, 1.0]).unwrap();
    let r = reference::attention(&q2, &k, &v, None, 1.0, true);
    approx::assert_abs_diff_eq!(r.o[[0, 0, 0, 0]], 10.0, epsilon = 1e-12);
    let r = reference::attention(&q2, &k, &v, Some(&[0]), 1.0, false);
    assert_eq!(r.o[[0, 1, 0, 0]], 0.0);
    assert_eq!(r.lse[[0, 0, 1]], f64::NEG_INFINITY);
}

#[test]
fn fastest_follows_the_measured_choice() {
    let shape = |batch, heads, seq, head_dim| attention::Shape {
        batch,
        seq_q: seq,
        seq_k: seq,
        heads_q: heads,
        heads_kv: heads,
        head_dim,
    };
    let h100 = |dtype, s: &attention::Shape, causal| Version::fastest_on((9, 0), dtype, s, causal);
    // ViT-L/14-336 vision at batch 16, 256 and 1, ViT-L/14 and ViT-H/14: v4.
    assert_eq!(
        h100(DType::F16, &shape(16, 16, 577, 64), false),
        Version::V4
    );
    assert_eq!(
        h100(DType::BF16, &shape(256, 16, 577, 64), false),
        Version::V4
    );
    assert_eq!(h100(DType::F16, &shape(1, 16, 577, 64), false), Version::V4);
    assert_eq!(
        h100(DType::F16, &shape(16, 16, 257, 64), false),
        Version::V4
    );
    assert_eq!(
        h100(DType::F16, &shape(16, 16, 257, 80), false),
        Version::V4
    );
    // Causal text stays on v3; causal at head dims 96-128 takes v4, as every shape there.
    assert_eq!(h100(DType::F16, &shape(16, 12, 77, 64), true), Version::V3);
    assert_eq!(h100(DType::F16, &shape(1, 8, 77, 128), true), Version::V4);
    for d in [96, 104, 112, 128] {
        assert_eq!(
            h100(DType::BF16, &shape(16, 16, 577, d), false),
            Version::V4
        );
    }
    // f32 and head dims the tensor-core versions lack: v1; no Hopper: v2.
    assert_eq!(
        h100(DType::F32, &shape(16, 16, 577, 64), false),
        Version::V1
    );
    assert_eq!(
        h100(DType::F16, &shape(16, 16, 577, 88), false),
        Version::V1
    );
    // SigLIP so400m's head dim 72 at N 729: v4 (computed as 80).
    assert_eq!(
        h100(DType::BF16, &shape(16, 16, 729, 72), false),
        Version::V4
    );
    let a100 = Version::fastest_on((8, 0), DType::F16, &shape(1, 16, 577, 64), false);
    assert_eq!(a100, Version::V2);
    // Whatever it picks supports the problem.
    for (dtype, d) in [
        (DType::F16, 64),
        (DType::F32, 128),
        (DType::BF16, 80),
        (DType::F16, 8),
    ] {
        for cc in [(8, 0), (8, 9), (9, 0), (10, 0)] {
            let v = Version::fastest_on(cc, dtype, &shape(2, 4, 100, d), false);
            assert!(
                v.supports(dtype, d) && v.runs_on_capability(cc),
                "{cc:?} {dtype} {d}: {v:?}"
            );
        }
    }
}
