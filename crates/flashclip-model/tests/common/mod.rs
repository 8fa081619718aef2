//! Helpers the model's test files share: fixture paths, reading safetensors fixtures, and comparisons against
//! Hugging Face's outputs (CPU: relative to the largest magnitude; GPU: row cosines and the largest difference).

// Every test file is its own crate and uses only some of these.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

use flashclip::ops::attention::Version;
use flashclip::Gpu;
use flashclip_model::AttentionImpl;
use ndarray::{Array2, ArrayD, ArrayViewD, IxDyn};
use rand::{rngs::StdRng, Rng, SeedableRng};
use safetensors::{Dtype, SafeTensors};

/// `tests/fixtures/<name>` of this crate.
pub fn fixture_dir(name: &str) -> PathBuf {
    // The crate root at run time where the runner says it (a test executable moved to another machine, as the
    // GPU bundle's are), else where it was built.
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from)
        .join("tests/fixtures")
        .join(name)
}

/// The tensors of one safetensors fixture file.
pub struct Tensors {
    bytes: Vec<u8>,
}

impl Tensors {
    pub fn open(path: impl AsRef<Path>) -> Self {
        let path = path.as_ref();
        Tensors {
            bytes: std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
        }
    }

    fn data(&self, key: &str, dtype: Dtype) -> (Vec<usize>, Vec<u8>) {
        let st = SafeTensors::deserialize(&self.bytes).unwrap();
        let t = st.tensor(key).unwrap_or_else(|_| panic!("no tensor {key}"));
        assert_eq!(t.dtype(), dtype, "{key}");
        (t.shape().to_vec(), t.data().to_vec())
    }

    pub fn f32(&self, key: &str) -> ArrayD<f32> {
        let (shape, bytes) = self.data(key, Dtype::F32);
        let data = bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        ArrayD::from_shape_vec(IxDyn(&shape), data).unwrap()
    }

    pub fn i64(&self, key: &str) -> ArrayD<i64> {
        let (shape, bytes) = self.data(key, Dtype::I64);
        let data = bytes
            .chunks_exact(8)
            .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
            .collect();
        ArrayD::from_shape_vec(IxDyn(&shape), data).unwrap()
    }

    /// A 2-D i64 tensor as rows.
    pub fn i64_rows(&self, key: &str) -> Vec<Vec<i64>> {
        self.i64(key)
            .outer_iter()
            .map(|row| row.iter().copied().collect())
            .collect()
    }
}

/// The fixture's texts as the model ran them: `input_ids` rows cut to `lengths`.
pub fn input_texts(inputs: &Tensors) -> Vec<Vec<u32>> {
    let ids = inputs.i64("input_ids");
    let lengths = inputs.i64("lengths");
    lengths
        .iter()
        .enumerate()
        .map(|(b, &n)| (0..n as usize).map(|i| ids[[b, i]] as u32).collect())
        .collect()
}

/// Max |a - b| and that divided by max |b|.
pub fn errors(a: ArrayViewD<f32>, b: ArrayViewD<f32>) -> (f32, f32) {
    assert_eq!(a.shape(), b.shape());
    let max_abs = a
        .iter()
        .zip(b.iter())
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max);
    let scale = b.iter().map(|v| v.abs()).fold(0.0, f32::max);
    (max_abs, max_abs / scale)
}

/// Asserts `ours` matches HF's `expected` to `rel_tol` of its largest magnitude; returns the relative error.
pub fn check(what: &str, ours: ArrayViewD<f32>, expected: ArrayViewD<f32>, rel_tol: f32) -> f32 {
    assert_eq!(ours.shape(), expected.shape(), "{what}");
    let shape = expected.shape().to_vec();
    let (abs, rel) = errors(ours, expected);
    println!("{what:<28} {shape:?}: max abs err {abs:.3e}, relative {rel:.3e}");
    assert!(
        rel < rel_tol,
        "{what}: relative error {rel:.3e} exceeds {rel_tol:.1e} (max abs err {abs:.3e})"
    );
    rel
}

/// One tensor of safetensors bytes, f32 or i64, as f64 values with its shape.
pub fn tensor(bytes: &[u8], key: &str) -> (Vec<usize>, Vec<f64>) {
    let st = SafeTensors::deserialize(bytes).unwrap();
    let t = st.tensor(key).unwrap_or_else(|_| panic!("no tensor {key}"));
    let data = match t.dtype() {
        Dtype::F32 => t
            .data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()) as f64)
            .collect(),
        Dtype::I64 => t
            .data()
            .chunks_exact(8)
            .map(|c| i64::from_le_bytes(c.try_into().unwrap()) as f64)
            .collect(),
        d => panic!("{key}: unexpected dtype {d:?}"),
    };
    (t.shape().to_vec(), data)
}

/// The images (batch size, pixels) and texts (`input_ids` rows cut to `lengths`) of `dir/inputs.safetensors`.
pub fn fixture_inputs(dir: &Path) -> (usize, Vec<f32>, Vec<Vec<u32>>) {
    let inputs = std::fs::read(dir.join("inputs.safetensors")).unwrap();
    let (pshape, pixels) = tensor(&inputs, "pixel_values");
    let (ishape, ids) = tensor(&inputs, "input_ids");
    let (_, lengths) = tensor(&inputs, "lengths");
    let texts = (0..ishape[0])
        .map(|b| {
            ids[b * ishape[1]..b * ishape[1] + lengths[b] as usize]
                .iter()
                .map(|&x| x as u32)
                .collect()
        })
        .collect();
    (pshape[0], pixels.iter().map(|&x| x as f32).collect(), texts)
}

pub fn cosine(a: &[f64], b: &[f64]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    dot / (a.iter().map(|x| x * x).sum::<f64>().sqrt()
        * b.iter().map(|x| x * x).sum::<f64>().sqrt())
}

/// Largest |a - b|; NaN if any difference is NaN.
pub fn max_abs(a: &[f64], b: &[f64]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, |m, d| if d.is_nan() { f64::NAN } else { m.max(d) })
}

/// Rows of `n` values: min cosine over rows, max abs difference (NaN if any value is NaN).
pub fn compare(got: &[f64], want: &[f64], n: usize) -> (f64, f64) {
    assert_eq!(got.len(), want.len());
    let min_cos = got
        .chunks(n)
        .zip(want.chunks(n))
        .map(|(g, w)| cosine(g, w))
        .fold(1.0f64, f64::min);
    (min_cos, max_abs(got, want))
}

/// Asserts embeddings (`[rows, dim]`) against HF fp32's `what` in `expected`: with HF's own half-precision outputs
/// (`hf_half`), at least as close as those (cosine >= 0.999 or HF's; max abs within twice HF's plus 1e-3); in fp32,
/// max abs within 1e-4.
pub fn assert_embeddings(
    tag: &str,
    what: &str,
    got: &[f64],
    expected: &[u8],
    hf_half: Option<&[u8]>,
    dim: usize,
) {
    let (_, want) = tensor(expected, what);
    let (cos, err) = compare(got, &want, dim);
    let bar = match hf_half {
        Some(h) => {
            let (_, theirs) = tensor(h, what);
            let (hcos, herr) = compare(&theirs, &want, dim);
            println!("{tag} {what}: min cosine {cos:.6} (HF {hcos:.6}), max abs {err:.3e} (HF {herr:.3e})");
            assert!(
                cos >= 0.999 || cos >= hcos,
                "{tag} {what}: cosine {cos} below 0.999 and HF's {hcos}"
            );
            2.0 * herr + 1e-3
        }
        None => {
            println!("{tag} {what}: min cosine {cos:.8}, max abs {err:.3e}");
            1e-4
        }
    };
    assert!(err <= bar, "{tag} {what}: max abs {err:.3e} > {bar:.3e}");
}

/// The attention implementations a GPU test sweeps: the flash `versions` this GPU runs, in that order, then `others`.
pub fn attention_sweep(
    gpu: &Gpu,
    versions: &[Version],
    others: &[AttentionImpl],
) -> Vec<AttentionImpl> {
    versions
        .iter()
        .filter(|version| version.runs_on(gpu))
        .map(|&version| AttentionImpl::Flash(version))
        .chain(others.iter().copied())
        .collect()
}

/// A stream capture is invalidated when another thread synchronizes the device meanwhile, and a test that ends
/// does: dropping its Gpu destroys its cuBLAS handle, which synchronizes the device. The tests that hold a Gpu share
/// this lock (taken before the Gpu, so released after it is dropped); the capture test holds it alone.
static DEVICE: RwLock<()> = RwLock::new(());

pub fn shared_device() -> RwLockReadGuard<'static, ()> {
    DEVICE
        .read()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

pub fn exclusive_device() -> RwLockWriteGuard<'static, ()> {
    DEVICE
        .write()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The bit patterns of `a`'s values, for bitwise comparisons.
pub fn bits(a: &Array2<f32>) -> Vec<u32> {
    a.iter().map(|x| x.to_bits()).collect()
}

/// For each batch size in `sizes`, twice, with fresh pixels from `seed` (`per_image` values an image, in [-2, 2)):
/// `got`'s embeddings must be bitwise `want`'s.
pub fn assert_bitwise_on_random_images(
    seed: u64,
    per_image: usize,
    sizes: &[usize],
    mut got: impl FnMut(&[f32]) -> Array2<f32>,
    mut want: impl FnMut(&[f32]) -> Array2<f32>,
) {
    let mut rng = StdRng::seed_from_u64(seed);
    for &n in sizes {
        for round in 0..2 {
            let pixels: Vec<f32> = (0..n * per_image)
                .map(|_| rng.random_range(-2.0f32..2.0))
                .collect();
            assert_eq!(
                bits(&got(&pixels)),
                bits(&want(&pixels)),
                "{n} images, round {round}"
            );
        }
    }
}
