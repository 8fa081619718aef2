//! Where the job's threads spend their time, summed over the run, so the summary can say which stage limits
//! the throughput: decode workers near 100% busy mean the CPUs are the limit; a model busy near 100% means the GPU
//! (or its copies) is; a model that waits for batches while the decoders are not busy points at the stages between.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Busy and waiting times of the pipeline's stages, in nanoseconds, added to from every thread.
#[derive(Debug, Default)]
pub struct StageTimes {
    decode_busy: AtomicU64,
    batching_waited: AtomicU64,
    model_busy: AtomicU64,
    model_waited: AtomicU64,
}

/// Which counter a measured span goes to.
#[derive(Debug, Clone, Copy)]
pub enum Span {
    /// A decode worker reading, decoding and preprocessing one input.
    DecodeBusy,
    /// The batching stage waiting for the next decoded input.
    BatchingWaited,
    /// A model thread in its model call (upload, forward, download) and the normalization after it.
    ModelBusy,
    /// A model thread waiting for its next batch.
    ModelWaited,
}

impl StageTimes {
    /// Runs `f`, adding its duration to `span`.
    pub fn time<R>(&self, span: Span, f: impl FnOnce() -> R) -> R {
        let start = Instant::now();
        let r = f();
        self.add(span, start.elapsed());
        r
    }

    fn add(&self, span: Span, d: Duration) {
        let counter = match span {
            Span::DecodeBusy => &self.decode_busy,
            Span::BatchingWaited => &self.batching_waited,
            Span::ModelBusy => &self.model_busy,
            Span::ModelWaited => &self.model_waited,
        };
        let nanos = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        counter.fetch_add(nanos, Ordering::Relaxed);
    }

    /// One line for the summary: each stage's share of `threads x wall` time.
    pub fn summary(&self, wall: f64, decode_threads: usize, workers: usize) -> String {
        let seconds = |c: &AtomicU64| c.load(Ordering::Relaxed) as f64 * 1e-9;
        let share = |c: &AtomicU64, threads: usize| {
            100.0 * seconds(c) / (wall * threads.max(1) as f64).max(1e-9)
        };
        let model_busy = seconds(&self.model_busy);
        format!(
            "time: decode workers {:.0}% busy ({decode_threads} threads), batching waited for decoded inputs {:.0}%, \
             model {:.0}% busy and {:.0}% waiting for batches ({workers} model threads, {:.2} s in model calls)",
            share(&self.decode_busy, decode_threads),
            share(&self.batching_waited, 1),
            share(&self.model_busy, workers),
            share(&self.model_waited, workers),
            model_busy,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_are_of_threads_times_wall_time() {
        let t = StageTimes::default();
        t.add(Span::DecodeBusy, Duration::from_secs(6));
        t.add(Span::BatchingWaited, Duration::from_millis(500));
        t.add(Span::ModelBusy, Duration::from_secs(1));
        t.add(Span::ModelWaited, Duration::from_millis(250));
        let line = t.summary(2.0, 4, 1);
        assert!(
            line.contains("decode workers 75% busy (4 threads)"),
            "{line}"
        );
        assert!(
            line.contains("batching waited for decoded inputs 25%"),
            "{line}"
        );
        assert!(line.contains("model 50% busy and 12% waiting"), "{line}");
        assert!(line.contains("1.00 s in model calls"), "{line}");
        assert_eq!(t.time(Span::DecodeBusy, || 7), 7);
    }
}
