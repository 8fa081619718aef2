//! Shared by the attention test files: the paths that compute attention, the sweep of cases, the GPU run and
//! its comparison against the float64 reference.
// Each test binary that includes this module uses a different part of it.
#![allow(dead_code)]

use cudarc::driver::CudaSlice;
use flashclip::ops::attention::{self, MaterializedWorkspace, Options, Tiles, Version};
use flashclip::reference::{self, max_abs_diff, round};
use flashclip::testing::{poison, uniform};
use flashclip::{DType, Element, Error, Gpu, View};
use ndarray::{s, Array4};
use rand::rngs::StdRng;

/// What computes the attention: a flash version, v3 at an explicit tile shape, or the materialized path.
#[derive(Debug, Clone, Copy)]
pub enum Path {
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
pub struct Case {
    pub batch: usize,
    pub seq_q: usize,
    pub seq_k: usize,
    pub heads_q: usize,
    pub heads_kv: usize,
    pub head_dim: usize,
    pub causal: bool,
    pub key_lens: bool,
    /// Q/K/V read in place from one [batch, seq, 3, heads, head_dim] tensor.
    pub packed: bool,
}

pub const fn case(batch: usize, seq: usize, heads: usize, head_dim: usize) -> Case {
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
pub fn cases(head_dims: &[usize]) -> Vec<Case> {
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
        // Head dim 72 (SigLIP so400m, computed as 80 with zeroed padding columns): v4's three consumers (more
        // 192-row blocks than SMs) with key lengths, and a sequence of 27² patches.
        Case {
            key_lens: true,
            ..case(6, 195, 12, 72)
        },
        case(1, 729, 2, 72),
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

pub struct Inputs {
    pub q: Array4<f64>,
    pub k: Array4<f64>,
    pub v: Array4<f64>,
    pub key_lens: Option<Vec<i32>>,
}

pub fn inputs<T: Element>(rng: &mut StdRng, c: &Case, poison_hidden_keys: bool) -> Inputs {
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

pub fn to_host<T: Element>(a: &Array4<f64>) -> Vec<T> {
    a.iter().map(|&x| T::from_f32(x as f32)).collect()
}

/// Runs one case on the GPU and returns (o, lse) as f64.
pub fn run_gpu<T: Element>(
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
pub fn launch_tiny<T: Element>(gpu: &Gpu, path: Path) -> Result<(), Error> {
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
pub fn atol<T: Element>() -> f64 {
    match T::DTYPE {
        DType::F16 => 2.5e-4,
        DType::BF16 => 2e-3,
        DType::F32 => 1e-5,
    }
}

/// Small odd shapes covering every code path (tails, causal, key lengths, GQA, each head dim), cheap enough for
/// compute-sanitizer.
pub fn small_cases() -> Vec<Case> {
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

pub fn check_version<T: Element>(gpu: &Gpu, rng: &mut StdRng, version: Option<Version>) {
    let head_dims: &[usize] = version.map_or(&flashclip::FLASH_HEAD_DIMS, |v| match v {
        Version::V1 => &[64, 80, 104, 128],
        _ => v.head_dims(),
    });
    let path = version.map_or(Path::Materialized, Path::Flash);
    check_cases::<T>(gpu, rng, path, cases(head_dims));
}

pub fn check_cases<T: Element>(gpu: &Gpu, rng: &mut StdRng, path: Path, cases: Vec<Case>) {
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
