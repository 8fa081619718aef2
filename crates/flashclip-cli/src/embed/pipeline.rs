//! The job's threads and the bounded queues between them:
//!
//! listing -> decode workers -> batching (back in order) -> one model per device -> writer (back in order).
//!
//! Every queue is bounded and the listing needs a credit per input that the batching stage returns, so the
//! inputs in flight, and the memory, do not grow with the job. A stage that fails drops its queues; the stages
//! around it then stop, and the first failure along the pipeline is the one reported.

use std::ops::ControlFlow;
use std::thread::ScopedJoinHandle;
use std::time::Instant;

use crossbeam_channel::{bounded, unbounded, Receiver, Sender, TryRecvError};
use flashclip::DType;
use flashclip_model::backend::{self, Device, StartedImages};
use flashclip_model::{Checkpoint, ModelConfig, ModelError};
use ndarray::Array2;

use super::batch::{self, Batch, BatchData};
use super::decode::{Decoder, Job, Meta};
use super::inputs::{Inputs, Listing};
use super::manifest::Manifest;
use super::shard::Plan;
use super::stages::{Span, StageTimes};
use super::writer::{Embedded, Report, Writer};
use crate::error::{CliError, Result};
use crate::output::l2_normalize;

/// Everything the threads share.
pub struct Setup<'a> {
    pub inputs: &'a Inputs,
    pub listing: &'a Listing,
    pub plan: &'a Plan,
    pub decoder: Decoder,
    pub config: &'a ModelConfig,
    pub checkpoint: &'a Checkpoint,
    pub devices: &'a [Device],
    pub dtype: DType,
    pub max_batch: usize,
    pub threads: usize,
    /// Model replicas per device (1 on the CPU).
    pub streams_per_device: usize,
}

/// How a job went.
pub struct Outcome {
    pub report: Report,
    pub manifest: Manifest,
    /// From the first input to the last write, model loading excluded.
    pub seconds: f64,
    pub stages: StageTimes,
    /// Model threads that ran (replicas over all devices).
    pub model_workers: usize,
}

/// Loads a model per device, then calls `start` with their descriptions (it prepares the output and returns the
/// writer) and runs the job. Nothing is decoded before every model has loaded, so a missing GPU fails fast.
pub fn run<'a>(
    setup: Setup<'a>,
    start: impl FnOnce(&[String]) -> Result<Writer<'a>>,
) -> Result<Outcome> {
    let Setup {
        inputs,
        listing,
        plan,
        decoder,
        config,
        checkpoint,
        devices,
        dtype,
        max_batch,
        threads,
        streams_per_device,
    } = setup;
    let per_device = streams_per_device.max(1);
    let stage_times = StageTimes::default();
    let stages = &stage_times;
    let outcome: Result<_> = std::thread::scope(|s| {
        let (ready_tx, ready_rx) = unbounded();
        let workers = devices.len() * per_device;
        let (embedded_tx, embedded_rx) = bounded::<Embedded>(2 * workers);
        let mut to_devices = Vec::new();
        let mut device_threads = Vec::new();
        for (n, &device) in devices.iter().enumerate() {
            // Batches are dealt round-robin over every replica of every device.
            let mut inboxes = Vec::new();
            for _ in 0..per_device {
                let (tx, rx) = bounded::<Batch>(2);
                to_devices.push(tx);
                inboxes.push(rx);
            }
            let (ready, out) = (ready_tx.clone(), embedded_tx.clone());
            device_threads.push(s.spawn(move || {
                let loaded = backend::load(device, dtype, config, checkpoint, max_batch)
                    .map(|model| replicas(device, model, per_device))
                    .map_err(|e| load_error(device, e));
                let models = match loaded {
                    Ok(models) => {
                        let _ = ready.send((n, Ok(models[0].describe())));
                        models
                    }
                    Err(e) => {
                        let _ = ready.send((n, Err(e)));
                        return Ok(());
                    }
                };
                let dim = config.projection_dim();
                let mut helpers = Vec::new();
                let mut pairs = models.into_iter().zip(inboxes);
                let first = pairs.next();
                for (model, rx) in pairs {
                    let out = out.clone();
                    helpers.push(s.spawn(move || embed_loop(model, dim, rx, out, stages)));
                }
                let mut result = first.map_or(Ok(()), |(model, rx)| {
                    embed_loop(model, dim, rx, out, stages)
                });
                for h in helpers {
                    let joined = join(h);
                    result = result.and(joined);
                }
                result
            }));
        }
        drop((ready_tx, embedded_tx));
        let mut described = vec![String::new(); devices.len()];
        for (n, result) in ready_rx.iter().take(devices.len()) {
            described[n] = result?;
        }
        let writer = start(&described)?;
        let started = Instant::now();

        // In flight between the listing and the batches: enough to keep every worker and a batch busy.
        let window = 2 * (threads + max_batch);
        let (credit_tx, credit_rx) = bounded(window);
        for _ in 0..window {
            let _ = credit_tx.send(());
        }
        let (job_tx, job_rx) = bounded::<Job>(2 * threads);
        let (decoded_tx, decoded_rx) = bounded(2 * threads);
        let lister = s.spawn(move || list(inputs, listing, plan, credit_rx, job_tx));
        let decoder = &decoder;
        for _ in 0..threads {
            let (jobs, out) = (job_rx.clone(), decoded_tx.clone());
            s.spawn(move || {
                for job in jobs {
                    let decoded = stages.time(Span::DecodeBusy, || decoder.decode(job));
                    if out.send(decoded).is_err() {
                        break;
                    }
                }
            });
        }
        drop((job_rx, decoded_tx));
        s.spawn(move || batch::run(decoded_rx, credit_tx, plan, max_batch, &to_devices, stages));

        let written = writer.run(embedded_rx);
        join(lister)?;
        for t in device_threads {
            join(t)?;
        }
        let (report, manifest) = written?;
        Ok((report, manifest, started.elapsed().as_secs_f64()))
    });
    let (report, manifest, seconds) = outcome?;
    Ok(Outcome {
        report,
        manifest,
        seconds,
        stages: stage_times,
        model_workers: devices.len() * per_device,
    })
}

/// `model` and up to `count - 1` replicas of it: fewer where it has none, or where one cannot be made (a GPU
/// without room for another workspace), which is said and not fatal.
fn replicas(
    device: Device,
    model: Box<dyn backend::Embedder>,
    count: usize,
) -> Vec<Box<dyn backend::Embedder>> {
    let mut models = Vec::with_capacity(count);
    for _ in 1..count {
        match model.replica() {
            Ok(Some(r)) => models.push(r),
            Ok(None) => break,
            Err(e) => {
                eprintln!(
                    "{device}: running {} model thread(s), not {count}: another replica failed: {e}",
                    models.len() + 1
                );
                break;
            }
        }
    }
    models.insert(0, model);
    models
}

fn join(handle: ScopedJoinHandle<'_, Result<()>>) -> Result<()> {
    handle
        .join()
        .unwrap_or_else(|_| Err(CliError::Output("a worker thread panicked".into())))
}

/// A model that cannot load; a missing GPU says how to run without one.
fn load_error(device: Device, e: ModelError) -> CliError {
    match e {
        ModelError::Gpu(flashclip::Error::NoDevice(why)) => CliError::NoDevice(format!(
            "{device}: {why} (--device cpu runs without a GPU, slowly)"
        )),
        other => CliError::Model(other),
    }
}

/// One device's model: embeds batches until the batching stage is done or the writer has stopped. A batch of
/// images is started on the model and its rows taken once the next batch is started (or none is waiting), so a GPU
/// model converts and uploads the next images while it runs the last ones.
fn embed_loop(
    mut model: Box<dyn backend::Embedder>,
    dim: usize,
    batches: Receiver<Batch>,
    out: Sender<Embedded>,
    stages: &StageTimes,
) -> Result<()> {
    let mut in_flight: Option<InFlight> = None;
    loop {
        // Wait for the next batch only when nothing is in flight to finish meanwhile.
        let next = match &in_flight {
            Some(_) => match batches.try_recv() {
                Ok(batch) => Some(batch),
                Err(TryRecvError::Empty) => {
                    let running = in_flight.take();
                    if !finish(&mut *model, running, dim, &out, stages)? {
                        return Ok(());
                    }
                    continue;
                }
                Err(TryRecvError::Disconnected) => None,
            },
            None => stages.time(Span::ModelWaited, || batches.recv()).ok(),
        };
        let Some(batch) = next else {
            finish(&mut *model, in_flight.take(), dim, &out, stages)?;
            return Ok(());
        };
        let started = stages.time(Span::ModelBusy, || start(&mut *model, batch, dim))?;
        if !finish(&mut *model, in_flight.take(), dim, &out, stages)? {
            return Ok(());
        }
        in_flight = match started {
            Started::Images(running) => Some(running),
            Started::Done(done) => {
                if out.send(done).is_err() {
                    return Ok(());
                }
                None
            }
        };
    }
}

/// A batch of images started on the model.
struct InFlight {
    seq: u64,
    items: Vec<Meta>,
    started: StartedImages,
}

enum Started {
    Images(InFlight),
    Done(Embedded),
}

/// Starts a batch of images on the model; embeds anything else (texts, an empty batch) at once.
fn start(model: &mut dyn backend::Embedder, batch: Batch, dim: usize) -> Result<Started> {
    let Batch { seq, items, data } = batch;
    let embeds = match &data {
        BatchData::Pixels(images) if !images.is_empty() => {
            let parts: Vec<&[f32]> = images.iter().map(Vec::as_slice).collect();
            let started = model.start_image_parts(&parts)?;
            if !started.is_ready() {
                return Ok(Started::Images(InFlight {
                    seq,
                    items,
                    started,
                }));
            }
            Some(model.finish_images(started)?)
        }
        BatchData::Tokens(t) if !t.is_empty() => Some(embed_by_length(model, t)?),
        _ => None,
    };
    Ok(Started::Done(Embedded {
        seq,
        items,
        rows: normalized_rows(embeds, dim),
    }))
}

/// Takes the rows of the batch in flight, if any, and sends them on; `false` once the writer has stopped.
fn finish(
    model: &mut dyn backend::Embedder,
    in_flight: Option<InFlight>,
    dim: usize,
    out: &Sender<Embedded>,
    stages: &StageTimes,
) -> Result<bool> {
    let Some(InFlight {
        seq,
        items,
        started,
    }) = in_flight
    else {
        return Ok(true);
    };
    let embeds = stages.time(Span::ModelBusy, || model.finish_images(started))?;
    let done = Embedded {
        seq,
        items,
        rows: normalized_rows(Some(embeds), dim),
    };
    Ok(out.send(done).is_ok())
}

/// The embeddings' rows, L2-normalized, flat (none for no embeddings).
fn normalized_rows(embeds: Option<Array2<f32>>, dim: usize) -> Vec<f32> {
    let mut rows: Vec<f32> = embeds.map_or_else(Vec::new, |e| e.iter().copied().collect());
    l2_normalize(&mut rows, dim);
    rows
}

/// Embeds `texts` in model calls of at most the model's batch, the texts taken in order of length so that each call
/// pads little; the rows come back in the texts' order.
fn embed_by_length(
    model: &mut dyn backend::Embedder,
    texts: &[Vec<u32>],
) -> std::result::Result<Array2<f32>, ModelError> {
    let mut order: Vec<usize> = (0..texts.len()).collect();
    order.sort_by_key(|&i| texts[i].len());
    let mut rows = Array2::zeros((texts.len(), model.config().projection_dim()));
    for call in order.chunks(model.max_batch().max(1)) {
        let batch: Vec<Vec<u32>> = call.iter().map(|&i| texts[i].clone()).collect();
        let embeds = model.embed_texts(&batch)?;
        for (row, &i) in embeds.outer_iter().zip(call) {
            rows.row_mut(i).assign(&row);
        }
    }
    Ok(rows)
}

/// The listing stage: this process's inputs of shards still to write, each after a credit. Checks that the
/// inputs are those the counting pass saw.
fn list(
    inputs: &Inputs,
    listing: &Listing,
    plan: &Plan,
    credits: Receiver<()>,
    jobs: Sender<Job>,
) -> Result<()> {
    let mut seen = super::inputs::Fingerprint::default();
    let mut stopped = false;
    inputs.stream(&mut |input| {
        seen.add(&input);
        if input.index >= listing.count {
            return Err(changed());
        }
        let Some(local) = plan.local(input.index) else {
            return Ok(ControlFlow::Continue(()));
        };
        if plan.is_finished(plan.shard_of(local)) {
            return Ok(ControlFlow::Continue(()));
        }
        if credits.recv().is_err() || jobs.send(Job { local, input }).is_err() {
            stopped = true;
            return Ok(ControlFlow::Break(()));
        }
        Ok(ControlFlow::Continue(()))
    })?;
    if !stopped && seen.finish() != *listing {
        return Err(changed());
    }
    Ok(())
}

fn changed() -> CliError {
    CliError::Usage("the inputs changed while the job ran (files added, removed or renamed)".into())
}
