//! The dynamic batcher: requests wait in a bounded queue; a thread that owns the model (or each of a few threads
//! owning a replica of it) takes every queued request of one kind (texts or images) up to a full batch, optionally
//! waits up to `max_wait` for more, runs the batch, and answers each request with its own rows, L2-normalized. One
//! thread at a time forms a batch; the others meanwhile run theirs.
//!
//! Batches form on their own under load: requests that arrive while the model runs are queued and make up the
//! next batch. So by default nothing waits (`max_wait` 0): a lone request runs at once, which is what its latency
//! needs, and a busy server still runs full batches.
//!
//! The model is not async (a GPU stream or rayon's pool), so it lives on a plain thread; requests reach it over
//! a `std` channel whose capacity is the queue size, and their answers come back over `tokio` oneshots.

use std::collections::VecDeque;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::mpsc::{self, Receiver, SyncSender, TryRecvError, TrySendError};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use flashclip_model::backend::StartedImages;
use flashclip_model::{Embedder, ModelError};
use tokio::sync::{oneshot, watch};

use crate::errors::{ApiError, ServerError};
use crate::metrics::Metrics;
use crate::model::{Loader, ModelInfo};

/// What one request asks the model to embed.
pub(crate) enum Inputs {
    /// Token ids, one sequence per text.
    Texts(Vec<Vec<u32>>),
    /// `count` preprocessed images, `[count, 3, S, S]`.
    Images { pixels: Vec<f32>, count: usize },
}

impl Inputs {
    fn len(&self) -> usize {
        match self {
            Inputs::Texts(t) => t.len(),
            Inputs::Images { count, .. } => *count,
        }
    }

    fn kind(&self) -> Kind {
        match self {
            Inputs::Texts(_) => Kind::Text,
            Inputs::Images { .. } => Kind::Image,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Text,
    Image,
}

impl Kind {
    fn label(self) -> &'static str {
        match self {
            Kind::Text => "text",
            Kind::Image => "image",
        }
    }
}

/// One L2-normalized embedding per input, or why the batch failed.
pub(crate) type Answer = Result<Vec<Vec<f32>>, String>;

struct Job {
    inputs: Inputs,
    reply: oneshot::Sender<Answer>,
}

/// Whether the model is ready; the worker publishes it, `/health` and every handler read it.
#[derive(Clone)]
pub(crate) enum Readiness {
    Loading,
    Ready(Arc<ModelInfo>),
    Failed(String),
}

/// The handlers' side of the queue.
pub(crate) struct Batcher {
    tx: SyncSender<Job>,
    queue_size: usize,
    metrics: Arc<Metrics>,
}

impl Batcher {
    /// Queues `inputs`, or refuses at once when the queue is full.
    pub fn submit(&self, inputs: Inputs) -> Result<oneshot::Receiver<Answer>, ApiError> {
        let (reply, answer) = oneshot::channel();
        // Counted before sending, so the worker's decrement never runs first.
        self.metrics.queue_depth.inc();
        match self.tx.try_send(Job { inputs, reply }) {
            Ok(()) => Ok(answer),
            Err(e) => {
                self.metrics.queue_depth.dec();
                Err(match e {
                    TrySendError::Full(_) => ApiError::Overloaded(self.queue_size),
                    TrySendError::Disconnected(_) => {
                        ApiError::Internal("the model is not running".into())
                    }
                })
            }
        }
    }
}

/// How the worker forms batches.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BatchPolicy {
    pub max_batch: usize,
    pub max_wait: Duration,
    pub queue_size: usize,
    /// Model threads wanted (see [`crate::ServerConfig::replicas`]).
    pub replicas: usize,
}

/// Starts the worker thread: it loads the model, warms it with one batch of each kind, publishes readiness, then
/// serves the queue until every [`Batcher`] is dropped and the queue is empty.
pub(crate) fn spawn(
    load: Loader,
    policy: BatchPolicy,
    metrics: Arc<Metrics>,
    ready: watch::Sender<Readiness>,
) -> Result<(Batcher, JoinHandle<()>), ServerError> {
    let (tx, rx) = mpsc::sync_channel(policy.queue_size);
    let worker_metrics = metrics.clone();
    let handle = std::thread::Builder::new()
        .name("flashclip-model".into())
        .spawn(move || {
            let loaded = load().and_then(|model| ModelInfo::warm_up(model, policy.max_batch));
            match loaded {
                Ok((embedder, info)) => {
                    let models = replicas(embedder, &info, policy);
                    ready.send_replace(Readiness::Ready(Arc::new(info)));
                    let queue = Mutex::new(rx);
                    let (queue, metrics) = (&queue, &worker_metrics);
                    std::thread::scope(|s| {
                        let mut models = models.into_iter();
                        let first = models.next();
                        for mut model in models {
                            s.spawn(move || serve(model.as_mut(), queue, policy, metrics));
                        }
                        if let Some(mut model) = first {
                            serve(model.as_mut(), queue, policy, metrics);
                        }
                    });
                }
                Err(e) => {
                    ready.send_replace(Readiness::Failed(e.to_string()));
                }
            }
        })?;
    let batcher = Batcher {
        tx,
        queue_size: policy.queue_size,
        metrics,
    };
    Ok((batcher, handle))
}

/// `embedder` and up to `policy.replicas - 1` warmed replicas of it: fewer where it has none or one cannot be made
/// or warmed (said, not fatal: the server runs with what it has).
fn replicas(
    embedder: Box<dyn Embedder>,
    info: &ModelInfo,
    policy: BatchPolicy,
) -> Vec<Box<dyn Embedder>> {
    let mut models = vec![embedder];
    while models.len() < policy.replicas {
        let made = models[0]
            .replica()
            .map_err(ServerError::from)
            .and_then(|replica| {
                replica
                    .map(|mut r| info.warm(r.as_mut(), policy.max_batch).map(|()| r))
                    .transpose()
            });
        match made {
            Ok(Some(replica)) => models.push(replica),
            Ok(None) => break,
            Err(e) => {
                eprintln!(
                    "flashclip serve: running {} model thread(s), not {}: another replica failed: {e}",
                    models.len(),
                    policy.replicas
                );
                break;
            }
        }
    }
    models
}

/// A worker's loop. A request of the other kind, or one that would overflow the batch, ends the batch being
/// formed and starts the next one, so at most one request per worker waits outside the channel. The queue is held
/// while a batch forms, not while it runs.
///
/// A batch of images is started on the model and answered only once the next batch has been formed and started
/// (or none was queued): a GPU model converts and uploads the next images while it runs the last ones.
fn serve(
    embedder: &mut dyn Embedder,
    queue: &Mutex<Receiver<Job>>,
    policy: BatchPolicy,
    metrics: &Metrics,
) {
    let mut held: Option<Job> = None;
    let mut in_flight: Option<InFlight> = None;
    loop {
        // Wait for the next request only when the model has nothing in flight to answer meanwhile.
        let batch = form_batch(queue, &mut held, policy, metrics, in_flight.is_none());
        let Some((kind, batch)) = batch else {
            match in_flight.take() {
                Some(running) => {
                    running.answer(embedder, metrics);
                    continue;
                }
                // Every sender is gone (shutdown) and the queue is drained.
                None => return,
            }
        };
        let started = start_batch(embedder, kind, batch, policy.max_batch, metrics);
        if let Some(running) = in_flight.take() {
            running.answer(embedder, metrics);
        }
        in_flight = match started {
            // A model that embeds at once has nothing to overlap: answer now rather than after the next batch.
            Some(done) if done.started.is_ready() => {
                done.answer(embedder, metrics);
                None
            }
            other => other,
        };
    }
}

/// The next batch: the first request (waiting for it if `wait`, else only if one is queued) and whatever else of
/// its kind is queued, up to a full batch (and `max_wait`). `None` when no request came (or on shutdown).
fn form_batch(
    queue: &Mutex<Receiver<Job>>,
    held: &mut Option<Job>,
    policy: BatchPolicy,
    metrics: &Metrics,
    wait: bool,
) -> Option<(Kind, Vec<Job>)> {
    let (max_batch, max_wait) = (policy.max_batch, policy.max_wait);
    let rx = queue.lock().unwrap_or_else(PoisonError::into_inner);
    let first = match held.take() {
        Some(job) => job,
        None => {
            let job = if wait {
                rx.recv().ok()?
            } else {
                rx.try_recv().ok()?
            };
            metrics.queue_depth.dec();
            job
        }
    };
    let kind = first.inputs.kind();
    let mut rows = first.inputs.len();
    let mut batch = vec![first];
    let deadline = Instant::now() + max_wait;
    while rows < max_batch {
        let Some(job) = next_queued(&rx, deadline) else {
            break;
        };
        metrics.queue_depth.dec();
        if job.inputs.kind() == kind && rows + job.inputs.len() <= max_batch {
            rows += job.inputs.len();
            batch.push(job);
        } else {
            *held = Some(job);
            break;
        }
    }
    Some((kind, batch))
}

/// A request already queued, else one arriving before `deadline`; `None` when neither comes (or on shutdown).
fn next_queued(rx: &Receiver<Job>, deadline: Instant) -> Option<Job> {
    match rx.try_recv() {
        Ok(job) => Some(job),
        Err(TryRecvError::Disconnected) => None,
        Err(TryRecvError::Empty) => {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            rx.recv_timeout(left).ok()
        }
    }
}

/// A batch of images started on the model, and the requests it answers.
struct InFlight {
    started: StartedImages,
    replies: Vec<oneshot::Sender<Answer>>,
    counts: Vec<usize>,
    since: Instant,
}

impl InFlight {
    /// Takes the batch's rows from the model and answers each request.
    fn answer(self, embedder: &mut dyn Embedder, metrics: &Metrics) {
        let total = self.started.len();
        let result = catch_unwind(AssertUnwindSafe(|| embedder.finish_images(self.started)))
            .unwrap_or_else(|_| Err(ModelError::Input("the model panicked".into())))
            .map(|out| {
                out.outer_iter()
                    .map(|r| normalized(r.iter().copied()))
                    .collect()
            })
            .map_err(|e| e.to_string());
        observe_model_time(metrics, Kind::Image, self.since);
        reply(Kind::Image, result, total, self.replies, self.counts);
    }
}

/// Starts one batch: images that fit one model call are started and returned in flight; any other batch (texts,
/// or a request larger than `max_batch` images) runs to the end (in chunks of `max_batch`) and is answered here.
fn start_batch(
    embedder: &mut dyn Embedder,
    kind: Kind,
    batch: Vec<Job>,
    max_batch: usize,
    metrics: &Metrics,
) -> Option<InFlight> {
    // A request that timed out or whose client left has dropped its receiver: skip its work.
    let (inputs, replies): (Vec<Inputs>, Vec<_>) = batch
        .into_iter()
        .filter(|job| !job.reply.is_closed())
        .map(|job| (job.inputs, job.reply))
        .unzip();
    if inputs.is_empty() {
        return None;
    }
    let counts: Vec<usize> = inputs.iter().map(Inputs::len).collect();
    let total: usize = counts.iter().sum();
    metrics
        .batch_size
        .with_label_values(&[kind.label()])
        .observe(total as f64);
    let since = Instant::now();
    if kind == Kind::Image && total <= max_batch {
        let parts: Vec<&[f32]> = inputs
            .iter()
            .filter_map(|input| match input {
                Inputs::Images { pixels, .. } => Some(pixels.as_slice()),
                Inputs::Texts(_) => None,
            })
            .collect();
        // A panic in the model fails this batch, not the server.
        match catch_unwind(AssertUnwindSafe(|| embedder.start_image_parts(&parts))) {
            Ok(Ok(started)) => {
                return Some(InFlight {
                    started,
                    replies,
                    counts,
                    since,
                })
            }
            Ok(Err(e)) => {
                observe_model_time(metrics, kind, since);
                reply(kind, Err(e.to_string()), total, replies, counts);
                return None;
            }
            Err(_) => {
                observe_model_time(metrics, kind, since);
                let failed = Err("the model panicked on this batch".into());
                reply(kind, failed, total, replies, counts);
                return None;
            }
        }
    }
    let result = catch_unwind(AssertUnwindSafe(|| embed(embedder, inputs, max_batch)))
        .unwrap_or_else(|_| Err("the model panicked on this batch".into()));
    observe_model_time(metrics, kind, since);
    reply(kind, result, total, replies, counts);
    None
}

fn observe_model_time(metrics: &Metrics, kind: Kind, since: Instant) {
    metrics
        .model_seconds
        .with_label_values(&[kind.label()])
        .observe(since.elapsed().as_secs_f64());
}

/// Answers each request with its `counts[i]` rows of `result` (`total` in all), or every one with the error.
fn reply(
    kind: Kind,
    result: Result<Vec<Vec<f32>>, String>,
    total: usize,
    replies: Vec<oneshot::Sender<Answer>>,
    counts: Vec<usize>,
) {
    let result = result.and_then(|rows| {
        if rows.len() == total {
            Ok(rows)
        } else {
            Err(format!(
                "the model returned {} rows for {total} inputs",
                rows.len()
            ))
        }
    });
    match result {
        Ok(rows) => {
            let mut rows = VecDeque::from(rows);
            for (reply, n) in replies.into_iter().zip(counts) {
                // A client that left meanwhile simply gets nothing.
                let _ = reply.send(Ok(rows.drain(..n).collect()));
            }
        }
        Err(message) => {
            eprintln!(
                "flashclip serve: a batch of {total} {}s failed: {message}",
                kind.label()
            );
            for reply in replies {
                let _ = reply.send(Err(message.clone()));
            }
        }
    }
}

/// Embeds every input in order, `max_batch` at a time, and L2-normalizes each row. The requests' pixels go to the
/// model as they are, one part each (the GPU backends convert them straight into their upload buffer).
fn embed(
    embedder: &mut dyn Embedder,
    inputs: Vec<Inputs>,
    max_batch: usize,
) -> Result<Vec<Vec<f32>>, String> {
    let mut rows = Vec::new();
    let (mut texts, mut images) = (Vec::new(), Vec::new());
    let mut per_image = 0;
    for input in inputs {
        match input {
            Inputs::Texts(t) => texts.extend(t),
            Inputs::Images { pixels, count } => {
                if let Some(per) = pixels.len().checked_div(count).filter(|&p| p > 0) {
                    per_image = per;
                    images.push(pixels);
                }
            }
        }
    }
    let parts: Vec<&[f32]> = images.iter().map(Vec::as_slice).collect();
    for chunk in texts.chunks(max_batch) {
        let out = embedder.embed_texts(chunk).map_err(|e| e.to_string())?;
        rows.extend(out.outer_iter().map(|r| normalized(r.iter().copied())));
    }
    for batch in image_batches(&parts, per_image, max_batch) {
        let out = embedder
            .embed_image_parts(&batch)
            .map_err(|e| e.to_string())?;
        rows.extend(out.outer_iter().map(|r| normalized(r.iter().copied())));
    }
    Ok(rows)
}

/// `parts` (each whole images of `per_image` values) in batches of at most `max_batch` images, a part split at an
/// image boundary where a batch fills up.
fn image_batches<'a>(
    parts: &[&'a [f32]],
    per_image: usize,
    max_batch: usize,
) -> Vec<Vec<&'a [f32]>> {
    let capacity = (per_image * max_batch).max(1);
    let (mut batches, mut current, mut room) = (Vec::new(), Vec::new(), capacity);
    for &part in parts {
        let mut rest = part;
        while !rest.is_empty() {
            let (head, tail) = rest.split_at(rest.len().min(room));
            current.push(head);
            room -= head.len();
            rest = tail;
            if room == 0 {
                batches.push(std::mem::take(&mut current));
                room = capacity;
            }
        }
    }
    if !current.is_empty() {
        batches.push(current);
    }
    batches
}

/// The row divided by its L2 norm (a zero row stays zero).
fn normalized(row: impl Iterator<Item = f32> + Clone) -> Vec<f32> {
    let norm = row.clone().map(|v| v * v).sum::<f32>().sqrt();
    let scale = if norm > 0.0 { 1.0 / norm } else { 0.0 };
    row.map(|v| v * scale).collect()
}

#[cfg(test)]
mod tests {
    use super::image_batches;

    #[test]
    fn image_batches_fill_up_to_the_limit_and_split_parts_between_images() {
        // Images of 2 values; parts of 1, 3 and 2 images; batches of at most 2 images.
        let (a, b, c) = ([1.0f32, 1.0], [2.0f32; 6], [3.0f32, 3.0, 4.0, 4.0]);
        let batches = image_batches(&[&a, &b, &c], 2, 2);
        let shapes: Vec<Vec<usize>> = batches
            .iter()
            .map(|batch| batch.iter().map(|p| p.len()).collect())
            .collect();
        assert_eq!(shapes, vec![vec![2, 2], vec![4], vec![4]]);
        let flat: Vec<f32> = batches.concat().concat();
        assert_eq!(flat, [&a[..], &b, &c].concat());
        assert!(image_batches(&[], 2, 2).is_empty());
    }
}
