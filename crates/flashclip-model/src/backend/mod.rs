//! One interface over where a model runs: [`Embedder`] turns preprocessed images and tokenized texts into
//! projected embeddings, on the GPU ([`GpuBackend`], flashclip's kernels) or on the CPU ([`CpuBackend`], the
//! float32 reference forward: slow, but it runs the embedding job and the server anywhere, CI included).
//!
//! [`load`] picks the family's backends from the [`ModelConfig`] (see [`crate::family`] for adding one). Front
//! ends (the embedding job, the server) hold a `Box<dyn Embedder>` and never see the element type or the
//! device; [`Device`] names the choice a user makes on a command line.

mod cpu;
mod gpu;
pub(crate) mod graphs;

use std::fmt;
use std::str::FromStr;

use flashclip::DType;
use ndarray::{Array2, ArrayView4};

pub use cpu::{CpuBackend, CpuModel};
pub(crate) use gpu::gpu_embedder_methods;
pub use gpu::GpuBackend;
use gpu::GpuFamily;
pub use graphs::GRAPH_MAX_BATCH;

use flashclip::Element;

use crate::checkpoint::Checkpoint;
use crate::chinese_clip::backend::ChineseClipGpuFamily;
use crate::error::{ModelError, Result};
use crate::family::ModelConfig;
use crate::siglip::backend::SiglipGpuFamily;

/// A CLIP model that embeds batches of at most [`Embedder::max_batch`] images or texts.
///
/// Embeddings are the projected, unnormalized outputs of the towers (normalize them for cosine similarity).
pub trait Embedder: Send {
    /// The model's config (any family).
    fn config(&self) -> &ModelConfig;

    /// The most images or texts one call takes.
    fn max_batch(&self) -> usize;

    /// `exp(logit_scale)`, the temperature of image-text logits.
    fn logit_scale(&self) -> f32;

    /// How zero-shot label probabilities come from this model's logits: a softmax over the labels (CLIP,
    /// Chinese-CLIP) unless the family says otherwise (SigLIP: a sigmoid per label).
    fn zero_shot(&self) -> ZeroShot {
        ZeroShot::Softmax {
            scale: self.logit_scale(),
        }
    }

    /// A short label for logs and progress lines, e.g. `cuda:0 f16` or `cpu f32 (reference, slow)`.
    fn describe(&self) -> String;

    /// Embeds `pixels`, `n` preprocessed images laid out `[n, 3, size, size]` (CLIP-normalized f32), with
    /// `1 <= n <= max_batch`; returns `[n, projection_dim]`.
    fn embed_images(&mut self, pixels: &[f32]) -> Result<Array2<f32>>;

    /// [`Embedder::embed_images`] of images given in parts (each `[n_i, 3, size, size]`, together at most
    /// `max_batch`), embedded as one batch in order: for callers holding each request's or file's pixels apart.
    /// The GPU backends convert the parts straight into their upload buffer; by default they are gathered first.
    fn embed_image_parts(&mut self, parts: &[&[f32]]) -> Result<Array2<f32>> {
        match parts {
            [one] => self.embed_images(one),
            _ => self.embed_images(&parts.concat()),
        }
    }

    /// Starts [`Embedder::embed_image_parts`]: a GPU backend converts and uploads the images and enqueues the
    /// forward and the copy of its rows back, and returns without waiting for them, so that the caller can
    /// prepare the next batch (and start it: its conversion overlaps this forward) before it takes these rows
    /// from [`Embedder::finish_images`]. At most [`MAX_STARTED`] batches may be started and not finished; finish
    /// them in the order they were started. By default the images are embedded at once.
    fn start_image_parts(&mut self, parts: &[&[f32]]) -> Result<StartedImages> {
        Ok(StartedImages(Started::Done(self.embed_image_parts(parts)?)))
    }

    /// The rows of images started by [`Embedder::start_image_parts`] on this embedder (waits for them).
    fn finish_images(&mut self, started: StartedImages) -> Result<Array2<f32>> {
        match started.0 {
            Started::Done(rows) => Ok(rows),
            Started::OnDevice { .. } | Started::External { .. } => Err(ModelError::Input(
                "images started on one embedder finished on another".into(),
            )),
        }
    }

    /// Embeds token id sequences (each with start and end tokens, at most the context length), at most
    /// `max_batch` of them; returns `[texts.len(), projection_dim]`.
    fn embed_texts(&mut self, texts: &[Vec<u32>]) -> Result<Array2<f32>>;

    /// The largest batch this embedder runs as a CUDA graph captured on its first use (0: none). A server warms
    /// each size up to it before taking requests, so that no request pays for a capture.
    fn graph_max_batch(&self) -> usize {
        0
    }

    /// Another embedder on the same weights that can run at the same time as this one, from another thread: on
    /// the GPU, a stream and workspace of its own, so one replica's upload overlaps another's forward. `None`
    /// where running two at once gains nothing (the CPU reference, which uses every core already).
    fn replica(&self) -> Result<Option<Box<dyn Embedder>>> {
        Ok(None)
    }
}

/// How many batches of images may be started ([`Embedder::start_image_parts`]) and not yet finished.
pub const MAX_STARTED: usize = 2;

/// Images whose embedding [`Embedder::start_image_parts`] started; [`Embedder::finish_images`] gives their rows.
#[must_use = "finish started images to get their rows"]
pub struct StartedImages(pub(crate) Started);

pub(crate) enum Started {
    /// Embedded at once (backends that do not overlap).
    Done(Array2<f32>),
    /// Started by an embedder outside this crate, which knows it by `ticket` ([`StartedImages::pending`]).
    External { ticket: u64, rows: usize },
    /// `rows` rows being copied back into readback slot `slot`, by the start numbered `ticket` (unique in the process).
    OnDevice {
        slot: usize,
        ticket: u64,
        rows: usize,
    },
}

impl StartedImages {
    /// For an [`Embedder`] implemented elsewhere that overlaps its batches: `rows` images it started and will
    /// recognize by `ticket` in its [`Embedder::finish_images`] ([`StartedImages::ticket`]).
    pub fn pending(ticket: u64, rows: usize) -> Self {
        Self(Started::External { ticket, rows })
    }

    /// The ticket of [`StartedImages::pending`] images (`None` for this crate's backends' own).
    pub fn ticket(&self) -> Option<u64> {
        match self.0 {
            Started::External { ticket, .. } => Some(ticket),
            _ => None,
        }
    }

    /// How many images were started.
    pub fn len(&self) -> usize {
        match &self.0 {
            Started::Done(rows) => rows.nrows(),
            Started::OnDevice { rows, .. } | Started::External { rows, .. } => *rows,
        }
    }

    /// Whether no image was started (never: a start takes at least one).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether the rows are on the host already (a backend that embeds at once): finishing them waits for nothing.
    pub fn is_ready(&self) -> bool {
        matches!(self.0, Started::Done(_))
    }
}

/// Where a model runs, as a command line names it: `cpu`, `cuda` (GPU 0) or `cuda:N`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Device {
    /// The float32 reference forward on the CPU.
    Cpu,
    /// flashclip's kernels on the GPU with this ordinal.
    Cuda(usize),
}

impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Device::Cpu => f.write_str("cpu"),
            Device::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

impl FromStr for Device {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let bad = || format!("unknown device {s:?}: expected cpu, cuda or cuda:N");
        match s {
            "cpu" => Ok(Device::Cpu),
            "cuda" | "gpu" => Ok(Device::Cuda(0)),
            _ => {
                let n = s
                    .strip_prefix("cuda:")
                    .or_else(|| s.strip_prefix("gpu:"))
                    .ok_or_else(bad)?;
                n.parse().map(Device::Cuda).map_err(|_| bad())
            }
        }
    }
}

/// Loads `checkpoint` for `config` (any family) on `device` with batches of up to `max_batch` (at least 1). On the
/// GPU the weights and activations are `dtype`; the CPU computes in f32 whatever `dtype` says.
pub fn load(
    device: Device,
    dtype: DType,
    config: impl Into<ModelConfig>,
    checkpoint: &Checkpoint,
    max_batch: usize,
) -> Result<Box<dyn Embedder>> {
    if max_batch == 0 {
        return Err(ModelError::Input(
            "the batch size must be at least 1".into(),
        ));
    }
    match &config.into() {
        ModelConfig::Clip(c) => {
            load_family::<CpuBackend, GpuFamily, _>(device, dtype, c, checkpoint, max_batch)
        }
        ModelConfig::ChineseClip(c) => load_family::<CpuBackend<_>, ChineseClipGpuFamily, _>(
            device, dtype, c, checkpoint, max_batch,
        ),
        ModelConfig::Siglip(c) => load_family::<CpuBackend<_>, SiglipGpuFamily, _>(
            device, dtype, c, checkpoint, max_batch,
        ),
    }
}

/// How a family's backends load: the CPU reference, and the GPU model in each element type.
pub(crate) trait LoadCpu<C>: Embedder + Sized + 'static {
    fn load_cpu(config: &C, checkpoint: &Checkpoint, max_batch: usize) -> Result<Self>;
}

/// A family's GPU backend, generic over the element type.
pub(crate) trait LoadGpu<C> {
    fn load_gpu<T: Element>(
        ordinal: usize,
        config: &C,
        checkpoint: &Checkpoint,
        max_batch: usize,
    ) -> Result<Box<dyn Embedder>>;
}

fn load_family<Cpu: LoadCpu<C>, Gpu: LoadGpu<C>, C>(
    device: Device,
    dtype: DType,
    config: &C,
    checkpoint: &Checkpoint,
    max_batch: usize,
) -> Result<Box<dyn Embedder>> {
    Ok(match device {
        Device::Cpu => Box::new(Cpu::load_cpu(config, checkpoint, max_batch)?),
        Device::Cuda(ordinal) => match dtype {
            DType::F16 => Gpu::load_gpu::<half::f16>(ordinal, config, checkpoint, max_batch)?,
            DType::BF16 => Gpu::load_gpu::<half::bf16>(ordinal, config, checkpoint, max_batch)?,
            DType::F32 => Gpu::load_gpu::<f32>(ordinal, config, checkpoint, max_batch)?,
        },
    })
}

/// How a model turns image-text cosines into zero-shot label probabilities.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ZeroShot {
    /// `softmax(scale · cos)` over the labels, summing to 1 (CLIP's and Chinese-CLIP's training objective).
    Softmax {
        /// `exp(logit_scale)`.
        scale: f32,
    },
    /// `sigmoid(scale · cos + bias)`, each label judged on its own (SigLIP's pairwise sigmoid loss).
    Sigmoid {
        /// `exp(logit_scale)`.
        scale: f32,
        /// `logit_bias`.
        bias: f32,
    },
}

impl ZeroShot {
    /// The probability of each text for one image, from L2-normalized embeddings, in the texts' order (f64).
    pub fn probabilities<'a>(
        self,
        image: &[f32],
        texts: impl IntoIterator<Item = &'a [f32]>,
    ) -> Vec<f64> {
        match self {
            ZeroShot::Softmax { scale } => zero_shot_probabilities(image, texts, scale),
            ZeroShot::Sigmoid { scale, bias } => texts
                .into_iter()
                .map(|t| {
                    let logit = f64::from(scale) * dot(t, image) + f64::from(bias);
                    1.0 / (1.0 + (-logit).exp())
                })
                .collect(),
        }
    }

    /// What the probabilities are, for help texts and logs.
    pub fn describe(self) -> &'static str {
        match self {
            ZeroShot::Softmax { .. } => "softmax over the labels",
            ZeroShot::Sigmoid { .. } => "sigmoid per label (independent, not summing to 1)",
        }
    }
}

fn dot(a: &[f32], b: &[f32]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(&x, &y)| f64::from(x) * f64::from(y))
        .sum()
}

/// Zero-shot label probabilities: `softmax(scale · image·text)` over L2-normalized embeddings (so `image·text` is
/// their cosine), in f64, one per text, in the texts' order.
pub fn zero_shot_probabilities<'a>(
    image: &[f32],
    texts: impl IntoIterator<Item = &'a [f32]>,
    scale: f32,
) -> Vec<f64> {
    let logits: Vec<f64> = texts
        .into_iter()
        .map(|t| f64::from(scale) * dot(t, image))
        .collect();
    let max = logits.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let exps: Vec<f64> = logits.iter().map(|l| (l - max).exp()).collect();
    let sum: f64 = exps.iter().sum();
    exps.iter().map(|e| e / sum).collect()
}

/// Checks a batch against the limit every backend shares.
pub(crate) fn check_batch(what: &str, n: usize, max_batch: usize) -> Result<()> {
    if n == 0 || n > max_batch {
        return Err(ModelError::Input(format!(
            "{n} {what} in one call: expected 1..={max_batch}"
        )));
    }
    Ok(())
}

/// The number of `(channels, size)` images in `parts` together, each part checked to be whole images.
pub(crate) fn image_parts_count(
    (channels, size): (usize, usize),
    parts: &[&[f32]],
) -> Result<usize> {
    parts
        .iter()
        .try_fold(0, |n, part| Ok(n + count_images(channels, size, part)?))
}

/// The number of `channels` x `size` x `size` images in `pixels`.
fn count_images(channels: usize, size: usize, pixels: &[f32]) -> Result<usize> {
    let per_image = channels * size * size;
    if per_image == 0 || pixels.len() % per_image != 0 {
        return Err(ModelError::Input(format!(
            "{} pixel values are not a whole number of {channels}x{size}x{size} images",
            pixels.len()
        )));
    }
    Ok(pixels.len() / per_image)
}

/// `pixels` as `[n, channels, size, size]` images, checked against the image size and `1..=max_batch` (what the
/// CPU reference forwards take).
pub(crate) fn image_batch(
    channels: usize,
    size: usize,
    pixels: &[f32],
    max_batch: usize,
) -> Result<ArrayView4<'_, f32>> {
    let n = count_images(channels, size, pixels)?;
    check_batch("images", n, max_batch)?;
    ArrayView4::from_shape((n, channels, size, size), pixels)
        .map_err(|e| ModelError::Input(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_shot_probabilities_are_a_softmax_of_scaled_cosines() {
        let texts = [[1.0f32, 0.0], [0.0, 1.0]];
        let p = zero_shot_probabilities(&[1.0, 0.0], texts.iter().map(|t| &t[..]), 2.0);
        let e2 = 2.0f64.exp();
        assert!((p[0] - e2 / (e2 + 1.0)).abs() < 1e-12);
        assert!((p[1] - 1.0 / (e2 + 1.0)).abs() < 1e-12);
        let even = [[0.0f32, 1.0], [0.0, -1.0]];
        let p = zero_shot_probabilities(&[1.0, 0.0], even.iter().map(|t| &t[..]), 100.0);
        assert!((p[0] - 0.5).abs() < 1e-12);
    }

    #[test]
    fn sigmoid_zero_shot_judges_each_label_alone() {
        let texts = [[1.0f32, 0.0], [0.0, 1.0], [0.6, 0.8]];
        let rule = ZeroShot::Sigmoid {
            scale: 10.0,
            bias: -5.0,
        };
        let p = rule.probabilities(&[1.0, 0.0], texts.iter().map(|t| &t[..]));
        let sigmoid = |z: f64| 1.0 / (1.0 + (-z).exp());
        // 0.6 as an f32 is 0.6 to 1e-8.
        for (got, cos) in p.iter().zip([1.0f64, 0.0, 0.6]) {
            assert!(
                (got - sigmoid(10.0 * cos - 5.0)).abs() < 1e-7,
                "{got} at cos {cos}"
            );
        }
        let softmax = ZeroShot::Softmax { scale: 10.0 };
        let q = softmax.probabilities(&[1.0, 0.0], texts.iter().map(|t| &t[..]));
        assert!((q.iter().sum::<f64>() - 1.0).abs() < 1e-12);
    }
}
