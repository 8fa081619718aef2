//! Attention kernels against the float64 reference: every version, both half dtypes (and f32 where supported),
//! odd lengths, packed QKV strides, causal, key lengths, GQA, lse; and the error paths.

use cudarc::driver::CudaSlice;
use flashclip::ops::attention::{
    self, check_flash, MaterializedWorkspace, Options, Tiles, Version,
};
use flashclip::reference::{self, max_abs_diff, round};
use flashclip::testing::{gpu_test, poison, uniform};
use flashclip::{DType, Element, Error, Gpu, Layout, View};
use half::{bf16, f16};
use ndarray::{s, Array4};
use rand::rngs::StdRng;

/// What computes the attention: a flash version, v3 at an explicit tile shape, or the materialized path.
#[derive(Debug, Clone, Copy)]
enum Path {
    Flash(Version),
    Tiles(Tiles),
    Materialized,
}

impl Path {
    fn name(self) -> &'static str {
        match self {
            Path::Flash(v) => v.name(),
            Path::Tiles(t) => t.name(),
            Path::Materialized => "materialized",
        }
    }

    fn version(self) -> Option<Version> {
        match self {
            Path::Flash(v) => Some(v),
            Path::Tiles(t) => Some(t.version()),
            Path::Materialized => None,
        }
    }

    fn supports(self, dtype: DType, c: &Case) -> bool {
        match self {
            Path::Flash(v) => v.supports(dtype, c.head_dim),
            Path::Tiles(t) => {
                t.version().supports(dtype, c.head_dim) && t.head_dims().contains(&c.head_dim)
            }
            Path::Materialized => true,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Case {
    batch: usize,
    seq_q: usize,
    seq_k: usize,
    heads_q: usize,
    heads_kv: usize,
    head_dim: usize,
    causal: bool,
    key_lens: bool,
    /// Q/K/V read in place from one [batch, seq, 3, heads, head_dim] tensor.
    packed: bool,
}

const fn case(batch: usize, seq: usize, heads: usize, head_dim: usize) -> Case {
    Case {
        batch,
        seq_q: seq,
        seq_k: seq,
        heads_q: heads,
        heads_kv: heads,
        head_dim,
        causal: false,
        key_lens: false,
        packed: true,
    }
}

/// The sweep: CLIP lengths (77 text, 197/257/577 vision), lengths around tile edges, 1 and 1000, every head dim.
fn cases(head_dims: &[usize]) -> Vec<Case> {
    let mut out = Vec::new();
    for &d in head_dims {
        out.push(case(2, 77, 3, d));
        out.push(Case {
            causal: true,
            key_lens: true,
            ..case(3, 77, 2, d)
        });
        out.push(case(1, 257, 2, d));
    }
    out.extend([
        case(1, 1, 2, 64),
        case(16, 33, 1, 64),
        case(2, 197, 2, 64),
        case(1, 577, 2, 64),
        // More 192-row blocks than an H100 has SMs: v4 takes three consumers, a narrow last key tile (193 = 2 x 96
        // + 1), and the one-row last query block rides on the head's full block (computed by the producer
        // warpgroup's other warps).
        case(6, 193, 12, 64),
        // The same with key lengths and a last query block of three rows; at head dim 80 with grouped K/V heads
        // and another key length.
        Case {
            key_lens: true,
            ..case(6, 195, 12, 64)
        },
        // Two full blocks per head, the rows riding on either (by head), blocks taking one or two items.
        Case {
            key_lens: true,
            ..case(2, 387, 40, 64)
        },
        // The last query block at the riders' limit (8 rows) and one past it (9 rows: the consumers split its keys
        // and multiply 64-row tiles).
        case(6, 200, 12, 64),
        case(6, 201, 12, 64),
        // A few rows and no full block for them to ride on: the consumers split the keys.
        case(16, 5, 9, 64),
        Case {
            packed: false,
            heads_kv: 4,
            seq_k: 150,
            ..case(6, 257, 16, 80)
        },
        case(1, 1000, 1, 64),
        case(4, 128, 2, 80),
        case(1, 129, 1, 128),
        Case {
            causal: true,
            ..case(2, 1000, 1, 64)
        },
        Case {
            causal: true,
            ..case(1, 1, 1, 64)
        },
        Case {
            key_lens: true,
            ..case(5, 64, 2, 64)
        },
        Case {
            packed: false,
            seq_k: 300,
            ..case(2, 45, 4, 64)
        },
        Case {
            packed: false,
            heads_kv: 2,
            ..case(2, 100, 6, 64)
        },
        Case {
            packed: false,
            heads_kv: 1,
            causal: true,
            key_lens: true,
            ..case(2, 77, 4, 80)
        },
        Case {
            packed: false,
            heads_kv: 1,
            seq_k: 17,
            ..case(1, 3, 8, 128)
        },
    ]);
    out
}

struct Inputs {
    q: Array4<f64>,
    k: Array4<f64>,
    v: Array4<f64>,
    key_lens: Option<Vec<i32>>,
}

fn inputs<T: Element>(rng: &mut StdRng, c: &Case, poison_hidden_keys: bool) -> Inputs {
    let mut draw = |n, h| {
        let a = Array4::from_shape_vec(
            (c.batch, n, h, c.head_dim),
            uniform(rng, c.batch * n * h * c.head_dim, 2.0),
        )
        .expect("shape matches length");
        a.mapv(round::<T>)
    };
    let q = draw(c.seq_q, c.heads_q);
    let k = draw(c.seq_k, c.heads_kv);
    let v = draw(c.seq_k, c.heads_kv);
    // Key lengths cover 1 key, every key, a row of only-masked keys (0) and values in between.
    let key_lens: Option<Vec<i32>> = c.key_lens.then(|| {
        (0..c.batch)
            .map(|b| match b % 4 {
                0 => c.seq_k as i32,
                1 => 1,
                2 => 0,
                _ => (c.seq_k as i32 / 2).max(1),
            })
            .collect()
    });
    let (mut k, mut v) = (k, v);
    if let (Some(lens), true) = (&key_lens, poison_hidden_keys) {
        // Keys past a batch's length must never be read into the result: NaN there would show.
        for (b, &len) in lens.iter().enumerate() {
            for j in len as usize..c.seq_k {
                k.slice_mut(s![b, j, .., ..]).fill(f64::NAN);
                v.slice_mut(s![b, j, .., ..]).fill(f64::NAN);
            }
        }
    }
    Inputs { q, k, v, key_lens }
}

fn to_host<T: Element>(a: &Array4<f64>) -> Vec<T> {
    a.iter().map(|&x| T::from_f32(x as f32)).collect()
}

/// Runs one case on the GPU and returns (o, lse) as f64.
fn run_gpu<T: Element>(
    gpu: &Gpu,
    path: Path,
    c: &Case,
    inp: &Inputs,
    opts: &Options,
) -> (Vec<f64>, Vec<f64>) {
    let (b, d) = (c.batch, c.head_dim);
    let mut o = gpu.empty::<T>(&[b, c.seq_q, c.heads_q, d]).unwrap();
    let mut lse_t = gpu.empty::<f32>(&[b * c.heads_q * c.seq_q]).unwrap();
    let lse: &mut CudaSlice<f32> = lse_t.data_mut();
    poison(gpu, o.data_mut()).unwrap();
    poison(gpu, lse).unwrap();
    let key_lens = inp
        .key_lens
        .as_ref()
        .map(|kl| gpu.upload_slice(kl).unwrap());
    let key_lens = key_lens.as_ref();

    let packed_buf;
    let (qt, kt, vt);
    let (q, k, v): (View<T>, View<T>, View<T>) = if c.packed {
        // [b, n, 3, h, d] built on the host, then viewed in place.
        let n = c.seq_q;
        let mut host = vec![T::default(); b * n * 3 * c.heads_q * d];
        for (part, src) in [&inp.q, &inp.k, &inp.v].into_iter().enumerate() {
            for ((bi, i, h, x), val) in src.indexed_iter() {
                host[(((bi * n + i) * 3 + part) * c.heads_q + h) * d + x] =
                    T::from_f32(*val as f32);
            }
        }
        packed_buf = gpu.upload(&host, &[b, n, 3, c.heads_q, d]).unwrap();
        let all = packed_buf.view();
        (
            all.select(2, 0).unwrap(),
            all.select(2, 1).unwrap(),
            all.select(2, 2).unwrap(),
        )
    } else {
        qt = gpu
            .upload(&to_host::<T>(&inp.q), &[b, c.seq_q, c.heads_q, d])
            .unwrap();
        kt = gpu
            .upload(&to_host::<T>(&inp.k), &[b, c.seq_k, c.heads_kv, d])
            .unwrap();
        vt = gpu
            .upload(&to_host::<T>(&inp.v), &[b, c.seq_k, c.heads_kv, d])
            .unwrap();
        (qt.view(), kt.view(), vt.view())
    };
    match path {
        Path::Flash(ver) => attention::flash_attention(
            gpu,
            ver,
            &q,
            &k,
            &v,
            key_lens,
            opts,
            &mut o.view_mut(),
            Some(&mut *lse),
        )
        .unwrap(),
        Path::Tiles(tiles) => attention::flash_attention_tiles(
            gpu,
            tiles,
            &q,
            &k,
            &v,
            key_lens,
            opts,
            &mut o.view_mut(),
            Some(&mut *lse),
        )
        .unwrap(),
        Path::Materialized => {
            let mut ws =
                MaterializedWorkspace::<T>::new(gpu, b, c.heads_q, c.seq_q, c.seq_k).unwrap();
            attention::materialized_attention(
                gpu,
                &q,
                &k,
                &v,
                key_lens,
                opts,
                &mut o.view_mut(),
                Some(&mut *lse),
                &mut ws,
            )
            .unwrap()
        }
    }
    let o_host = gpu.download(o.data()).unwrap();
    let lse_host = gpu.download(lse).unwrap();
    (
        o_host.iter().map(|x| x.to_f32() as f64).collect(),
        lse_host.iter().map(|&x| x as f64).collect(),
    )
}

/// One launch of `path` on a [1, 8, 1, 64] problem, for the error paths.
fn launch_tiny<T: Element>(gpu: &Gpu, path: Path) -> Result<(), Error> {
    let qkv = gpu.zeros::<T>(&[1, 8, 1, 64]).unwrap();
    let mut o = gpu.zeros::<T>(&[1, 8, 1, 64]).unwrap();
    let x = qkv.view();
    let opts = Options::default();
    match path {
        Path::Flash(v) => {
            attention::flash_attention(gpu, v, &x, &x, &x, None, &opts, &mut o.view_mut(), None)
        }
        Path::Tiles(t) => attention::flash_attention_tiles(
            gpu,
            t,
            &x,
            &x,
            &x,
            None,
            &opts,
            &mut o.view_mut(),
            None,
        ),
        Path::Materialized => Ok(()),
    }
}

/// Absolute slack on top of the 2x-naive bound: about a quarter of the dtype's unit roundoff at magnitude 1.
fn atol<T: Element>() -> f64 {
    match T::DTYPE {
        DType::F16 => 2.5e-4,
        DType::BF16 => 2e-3,
        DType::F32 => 1e-5,
    }
}

/// Small odd shapes covering every code path (tails, causal, key lengths, GQA, each head dim), cheap enough for
/// compute-sanitizer.
fn small_cases() -> Vec<Case> {
    let mut out: Vec<Case> = flashclip::FLASH_HEAD_DIMS
        .iter()
        .map(|&d| Case {
            causal: true,
            key_lens: true,
            ..case(3, 37, 2, d)
        })
        .collect();
    out.push(Case {
        packed: false,
        heads_kv: 1,
        seq_k: 70,
        ..case(2, 5, 2, 64)
    });
    out.push(Case {
        packed: false,
        heads_kv: 1,
        key_lens: true,
        causal: true,
        ..case(1, 67, 3, 80)
    });
    // v4's riders: more 192-row blocks than SMs, the one-row last query block of each head computed alongside a
    // full one.
    out.push(case(6, 193, 12, 64));
    // v4's narrow last key tile (97 = 96 + 1, 129 = 128 + 1) with the keys split among the consumers of a query
    // block of at most 64 rows.
    out.push(Case {
        packed: false,
        seq_k: 97,
        ..case(2, 33, 2, 64)
    });
    out.push(Case {
        packed: false,
        seq_k: 129,
        ..case(1, 20, 2, 80)
    });
    // Key lengths without causal masking (cut tiles in the middle of the pipeline, every row seeing them).
    for d in [64, 80] {
        out.push(Case {
            packed: false,
            key_lens: true,
            seq_k: 250,
            ..case(4, 20, 2, d)
        });
    }
    out
}

fn check_version<T: Element>(gpu: &Gpu, rng: &mut StdRng, version: Option<Version>) {
    let head_dims: &[usize] = version.map_or(&flashclip::FLASH_HEAD_DIMS, |v| match v {
        Version::V1 => &[64, 80, 104, 128],
        _ => v.head_dims(),
    });
    let path = version.map_or(Path::Materialized, Path::Flash);
    check_cases::<T>(gpu, rng, path, cases(head_dims));
}

fn check_cases<T: Element>(gpu: &Gpu, rng: &mut StdRng, path: Path, cases: Vec<Case>) {
    let name = path.name();
    let version = path.version();
    if version.is_some_and(|v| !v.runs_on(gpu)) {
        // Not this GPU's version: it must refuse with a clear error, not launch.
        let r = launch_tiny::<T>(gpu, path);
        assert!(matches!(r, Err(Error::Unsupported(_))), "{name}: {r:?}");
        println!(
            "{name}: not for this GPU (compute capability {:?}), refused",
            gpu.compute_capability()
        );
        return;
    }
    for c in cases {
        if !path.supports(T::DTYPE, &c) {
            continue;
        }
        // The flash kernels promise to ignore hidden keys whatever they hold; the materialized path multiplies
        // them by zero, so it gets finite values there.
        let inp = inputs::<T>(rng, &c, !matches!(path, Path::Materialized));
        let opts = Options {
            softmax_scale: None,
            causal: c.causal,
        };
        let scale = 1.0 / (c.head_dim as f64).sqrt();
        let truth = reference::attention(
            &inp.q,
            &inp.k,
            &inp.v,
            inp.key_lens.as_deref(),
            scale,
            c.causal,
        );
        let naive = reference::attention_naive::<T>(
            &inp.q,
            &inp.k,
            &inp.v,
            inp.key_lens.as_deref(),
            scale,
            c.causal,
        );
        let (o, lse) = run_gpu::<T>(gpu, path, &c, &inp, &opts);

        let truth_o: Vec<f64> = truth.o.iter().copied().collect();
        let naive_o: Vec<f64> = naive.o.iter().copied().collect();
        let err = max_abs_diff(&o, &truth_o);
        let naive_err = max_abs_diff(&naive_o, &truth_o);
        let bound = 2.0 * naive_err + atol::<T>();
        println!(
            "{name} {} {c:?}: max err {err:.3e}, naive {naive_err:.3e}, bound {bound:.3e}",
            T::DTYPE
        );
        assert!(
            err <= bound,
            "{name} {} {c:?}: max err {err:.3e} > bound {bound:.3e}",
            T::DTYPE
        );

        let lse_err = lse
            .iter()
            .zip(truth.lse.iter())
            .fold(0.0f64, |m, (&a, &b)| {
                let d = if a == f64::NEG_INFINITY && b == f64::NEG_INFINITY {
                    0.0
                } else {
                    (a - b).abs()
                };
                if d.is_nan() {
                    f64::NAN
                } else {
                    m.max(d)
                }
            });
        // v4 adds the row sums of the probabilities as rounded for P V (on the tensor cores): its lse may be off by
        // up to the storage type's unit roundoff (2 atol) more, relative error of the sum.
        let lse_tol = if version == Some(Version::V4) {
            1e-3 + 2.0 * atol::<T>()
        } else {
            1e-3
        };
        assert!(
            lse_err <= lse_tol,
            "{name} {} {c:?}: lse err {lse_err:.3e} > {lse_tol:.1e}",
            T::DTYPE
        );
    }
}

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
fn gpu_tile_shapes() {
    gpu_test("gpu_tile_shapes", |g, r| {
        for tiles in Tiles::ALL {
            check_cases::<f16>(g, r, Path::Tiles(tiles), cases(tiles.head_dims()));
            check_cases::<bf16>(g, r, Path::Tiles(tiles), cases(tiles.head_dims()));
        }
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
        // key_lens of the wrong length
        let kl = gpu.upload_slice(&[1i32, 2, 3]).unwrap();
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
    for d in [72, 256, 65] {
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
        h100(DType::F16, &shape(16, 16, 577, 72), false),
        Version::V1
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
