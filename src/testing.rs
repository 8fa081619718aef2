//! Helpers for flashclip's tests (feature `testing`): GPU-or-skip, seeded random inputs, NaN poisoning.
//!
//! GPU tests call [`gpu_or_skip`]. Without a GPU they return early and append their name to the file named by
//! `FLASHCLIP_SKIP_LOG` (the test script counts those into one line); with `FLASHCLIP_REQUIRE_GPU=1` a missing
//! GPU fails the test instead.

use std::io::Write;

use cudarc::driver::{CudaSlice, DevicePtrMut, DeviceRepr};
use rand::{rngs::StdRng, Rng, SeedableRng};

use crate::error::Result;
use crate::gpu::Gpu;

/// The GPU, or `None` after recording a skip. Panics (failing the test) when `FLASHCLIP_REQUIRE_GPU=1` and no GPU
/// can be opened.
pub fn gpu_or_skip(test: &str) -> Option<Gpu> {
    match Gpu::new(0) {
        Ok(gpu) => Some(gpu),
        Err(e) => {
            if std::env::var("FLASHCLIP_REQUIRE_GPU").is_ok_and(|v| v == "1") {
                panic!("{test}: FLASHCLIP_REQUIRE_GPU=1 but no GPU: {e}");
            }
            if let Some(path) = std::env::var_os("FLASHCLIP_SKIP_LOG") {
                if let Ok(mut f) = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                {
                    // A lost line only makes the skip count low; the test itself still skips.
                    let _ = writeln!(f, "{test}\t{e}");
                }
            }
            eprintln!("skipped {test}: {e}");
            None
        }
    }
}

/// Runs `f` with the GPU and a seeded generator, or records a skip (see [`gpu_or_skip`]).
pub fn gpu_test(test: &str, f: impl FnOnce(&Gpu, &mut StdRng)) {
    let Some(gpu) = gpu_or_skip(test) else { return };
    f(&gpu, &mut rng(test));
}

/// A seeded generator: the seed comes from `FLASHCLIP_SEED` when set, else from the clock, and is printed so a
/// failure can be replayed.
pub fn rng(test: &str) -> StdRng {
    let seed = std::env::var("FLASHCLIP_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64)
        });
    println!("{test}: seed {seed} (FLASHCLIP_SEED={seed} replays)");
    StdRng::seed_from_u64(seed)
}

/// `n` values uniform in `[-scale, scale)`.
pub fn uniform(rng: &mut StdRng, n: usize, scale: f64) -> Vec<f64> {
    (0..n).map(|_| rng.random_range(-scale..scale)).collect()
}

/// Fills a device buffer with NaN (all-ones bytes are NaN in f16, bf16 and f32), so an element a kernel fails to
/// write shows up in the comparison.
pub fn poison<T: DeviceRepr>(gpu: &Gpu, buf: &mut CudaSlice<T>) -> Result<()> {
    let bytes = buf.len() * std::mem::size_of::<T>();
    let stream = gpu.stream().clone();
    let (ptr, _sync) = buf.device_ptr_mut(&stream);
    // SAFETY: ptr addresses `bytes` bytes of the buffer, mutably borrowed; the memset is ordered on the stream.
    unsafe { cudarc::driver::result::memset_d8_async(ptr, 0xFF, bytes, stream.cu_stream())? };
    Ok(())
}
