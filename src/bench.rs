//! Timing for benchmarks: CUDA-event timing (device time with the host's launch cost kept out, or end-to-end),
//! median statistics, markdown summaries, and the device copy-bandwidth ceiling.

use std::io::Write;
use std::path::PathBuf;

use crate::error::{check_launch, Result};
use crate::ffi;
use crate::gpu::Gpu;

/// Queues `ns` nanoseconds of GPU waiting on the gpu's stream (see `fc_gpu_spin`).
fn spin(gpu: &Gpu, ns: u64) -> Result<()> {
    // SAFETY: the kernel takes no pointers; it is ordered on the gpu's stream.
    let code = unsafe { ffi::fc_gpu_spin(ns, ffi::stream(gpu.stream())) };
    check_launch("gpu_spin", code)
}

/// GPU wait to queue in front of `runs` timed runs whose host-side launch cost is `host_per_run`: twice what
/// enqueuing them takes, at least 50 µs and at most 200 ms.
fn spin_for(host_per_run: std::time::Duration, runs: usize) -> u64 {
    let ns = 2 * host_per_run.as_nanos() as u64 * runs as u64;
    ns.clamp(50_000, 200_000_000)
}

/// Time per run (microseconds) of `samples` groups of `inner` back-to-back runs of `f`, each group between two
/// CUDA events, after `warmup` untimed runs. Nothing synchronizes until the end; where the host enqueues runs more
/// slowly than the GPU executes them, the host's time is what this measures (the end-to-end ladder wants that: it
/// is what a caller of the forward sees).
pub fn time_samples_us(
    gpu: &Gpu,
    warmup: usize,
    samples: usize,
    inner: usize,
    f: impl FnMut() -> Result<()>,
) -> Result<Vec<f64>> {
    time_samples(gpu, warmup, samples, inner, false, f)
}

/// Device time per run (microseconds), as [`time_samples_us`] but with the samples queued behind a GPU wait
/// longer than the host needs to enqueue them (its cost per run measured on the warm-up runs), so the host's
/// launch cost never enters the numbers, even for a kernel shorter than its launch. What the kernel benchmarks
/// report; benches/peers/sdpa.py times PyTorch the same way.
pub fn time_device_us(
    gpu: &Gpu,
    warmup: usize,
    samples: usize,
    inner: usize,
    f: impl FnMut() -> Result<()>,
) -> Result<Vec<f64>> {
    time_samples(gpu, warmup, samples, inner, true, f)
}

fn time_samples(
    gpu: &Gpu,
    warmup: usize,
    samples: usize,
    inner: usize,
    queue_ahead: bool,
    mut f: impl FnMut() -> Result<()>,
) -> Result<Vec<f64>> {
    let inner = inner.max(1);
    let host = std::time::Instant::now();
    for _ in 0..warmup {
        f()?;
    }
    if queue_ahead {
        let host_per_run = match warmup {
            0 => std::time::Duration::from_micros(20),
            n => host.elapsed() / n as u32,
        };
        gpu.synchronize()?;
        spin(gpu, spin_for(host_per_run, samples * inner))?;
    }
    let mut events = Vec::with_capacity(samples);
    for _ in 0..samples {
        let (start, end) = (gpu.timing_event()?, gpu.timing_event()?);
        start.record(gpu.stream())?;
        for _ in 0..inner {
            f()?;
        }
        end.record(gpu.stream())?;
        events.push((start, end));
    }
    gpu.synchronize()?;
    events
        .iter()
        .map(|(s, e)| Ok(s.elapsed_ms(e)? as f64 * 1e3 / inner as f64))
        .collect()
}

/// Median of a non-empty sample (0 for an empty one).
pub fn median(samples: &[f64]) -> f64 {
    if samples.is_empty() {
        return 0.0;
    }
    let mut s = samples.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let n = s.len();
    if n % 2 == 1 {
        s[n / 2]
    } else {
        0.5 * (s[n / 2 - 1] + s[n / 2])
    }
}

/// Device time of `iters` back-to-back runs of `f` between two CUDA events (for criterion's `iter_custom`). No
/// GPU wait in front (criterion calls this many times; the wall time would double): where a run is shorter than
/// its launch, this includes host time, and [`time_samples_us`] is the number to report.
pub fn time_iters(
    gpu: &Gpu,
    iters: u64,
    mut f: impl FnMut() -> Result<()>,
) -> Result<std::time::Duration> {
    let (start, end) = (gpu.timing_event()?, gpu.timing_event()?);
    start.record(gpu.stream())?;
    for _ in 0..iters {
        f()?;
    }
    end.record(gpu.stream())?;
    end.synchronize()?;
    Ok(std::time::Duration::from_secs_f64(
        start.elapsed_ms(&end)? as f64 * 1e-3,
    ))
}

/// Rows of a benchmark summary, printed as one markdown table at the end of a bench binary and written to the
/// file named by `FLASHCLIP_BENCH_OUT` when set (the record of a GPU run). The file gets each row as it is added,
/// so a bench stopped by a time limit still leaves the rows it finished.
#[derive(Default)]
pub struct Summary {
    title: String,
    header: Vec<String>,
    rows: Vec<Vec<String>>,
    out: Option<PathBuf>,
}

impl Summary {
    /// A table with these column names.
    pub fn new(title: &str, header: &[&str]) -> Self {
        Self {
            title: title.into(),
            header: header.iter().map(|s| s.to_string()).collect(),
            rows: Vec::new(),
            out: std::env::var_os("FLASHCLIP_BENCH_OUT").map(PathBuf::from),
        }
    }

    /// Adds a row (one cell per column); the first row also writes the title and header to the file.
    pub fn row(&mut self, cells: Vec<String>) {
        let mut text = if self.rows.is_empty() {
            self.head()
        } else {
            String::new()
        };
        text += &Self::line(&cells);
        self.append(&text);
        self.rows.push(cells);
    }

    fn head(&self) -> String {
        format!(
            "\n### {}\n\n| {} |\n|{}\n",
            self.title,
            self.header.join(" | "),
            "---|".repeat(self.header.len())
        )
    }

    fn line(cells: &[String]) -> String {
        format!("| {} |\n", cells.join(" | "))
    }

    fn append(&self, text: &str) {
        let Some(path) = &self.out else { return };
        let written = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .and_then(|mut f| f.write_all(text.as_bytes()));
        if let Err(e) = written {
            eprintln!("could not append to {}: {e}", path.display());
        }
    }

    /// The table as markdown.
    pub fn markdown(&self) -> String {
        self.rows
            .iter()
            .fold(self.head(), |s, r| s + &Self::line(r))
    }

    /// Prints the table (the file already holds its rows).
    pub fn emit(&self) {
        println!("{}", self.markdown());
    }
}

/// Median time (us) of a device-to-device copy of `bytes` bytes (read + write = 2 * bytes moved), measured in the
/// caller's run as the bandwidth ceiling; returns (median us, GB/s counting bytes read plus written).
pub fn copy_ceiling(gpu: &Gpu, bytes: usize) -> Result<(f64, f64)> {
    let n = bytes.div_ceil(4);
    let src = gpu.stream().clone_htod(&vec![1.0f32; n])?;
    let mut dst = gpu.stream().alloc_zeros::<f32>(n)?;
    let samples = time_device_us(gpu, 5, 30, 5, || {
        Ok(gpu.stream().memcpy_dtod(&src, &mut dst)?)
    })?;
    let us = median(&samples);
    Ok((us, 2.0 * (n * 4) as f64 / us / 1e3))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_writes_each_row_as_it_comes() {
        let path =
            std::env::temp_dir().join(format!("flashclip-summary-{}.md", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let mut summary = Summary {
            out: Some(path.clone()),
            ..Summary::new("t", &["a", "b"])
        };
        summary.row(vec!["1".into(), "2".into()]);
        let after_one = std::fs::read_to_string(&path).unwrap();
        assert_eq!(after_one, "\n### t\n\n| a | b |\n|---|---|\n| 1 | 2 |\n");
        summary.row(vec!["3".into(), "4".into()]);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), summary.markdown());
        std::fs::remove_file(&path).unwrap();
    }
}
