//! All weights of a CLIP model as one tree of the checkpoint's submodules ([`ClipWeights`]), and the host f32
//! copy of it that the CPU reference runs on.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use crate::checkpoint::{
    key, Checkpoint, CheckpointError, CheckpointFormat, CheckpointMismatch, FnRaw, Host,
    HostTensor, Loader, Plan, ShapeMismatch, Source, Spec,
};
use crate::config::ClipConfig;
use crate::text::TextTransformer;
use crate::vision::VisionTransformer;

/// All weights of a CLIP model, field names equal to Hugging Face `CLIPModel`'s checkpoint keys; tensors of type
/// `A` (host f32 arrays by default, device tensors in [`crate::ClipModel`]). open_clip checkpoints load into the
/// same tree ([`CheckpointFormat::stored`] maps the keys), so nothing downstream sees which layout a file had.
///
/// Two departures from the file layouts: Q, K and V are packed into one `qkv_proj` (one GEMM runs all three), and
/// open_clip's `[D, proj]` projections are transposed to Hugging Face's `[proj, D]`.
#[derive(Debug, Clone, PartialEq)]
pub struct ClipWeights<A = HostTensor> {
    /// Image tower.
    pub vision_model: VisionTransformer<A>,
    /// Text tower.
    pub text_model: TextTransformer<A>,
    /// Image projection (no bias), `[projection_dim, vision D]`.
    pub visual_projection: A,
    /// Text projection (no bias), `[projection_dim, text D]`.
    pub text_projection: A,
    /// Log of the logit scale; logits are `logit_scale.exp() · cos`.
    pub logit_scale: f32,
    /// Key naming of the file these weights came from.
    pub format: CheckpointFormat,
}

impl<A> ClipWeights<A> {
    /// Loads every tensor `config` implies from `source`: the model's tensor table, in order.
    pub fn from_source<S: Source<Tensor = A>>(
        s: &mut S,
        config: &ClipConfig,
        format: CheckpointFormat,
    ) -> Result<Self, S::Error> {
        let p = config.projection_dim;
        Ok(ClipWeights {
            vision_model: VisionTransformer::load(s, &config.vision)?,
            text_model: TextTransformer::load(s, &config.text)?,
            visual_projection: s.tensor(
                &key("visual_projection", "weight"),
                &[p, config.vision.hidden_size],
            )?,
            text_projection: s.tensor(
                &key("text_projection", "weight"),
                &[p, config.text.hidden_size],
            )?,
            logit_scale: s.scalar("logit_scale")?,
            format,
        })
    }

    /// Visits the tensors in table order (the logit scale, a plain number, is not visited).
    pub fn for_each_tensor<'a>(&'a self, f: &mut dyn FnMut(&'a A)) {
        self.vision_model.for_each_tensor(f);
        self.text_model.for_each_tensor(f);
        f(&self.visual_projection);
        f(&self.text_projection);
    }

    /// The number of layers of each tower (vision, text).
    fn layers(&self) -> (usize, usize) {
        (
            self.vision_model.encoder.layers.len(),
            self.text_model.encoder.layers.len(),
        )
    }
}

impl ClipWeights<()> {
    /// The tensor table of `config`: every canonical key and shape, in load order (the logit scale last).
    pub fn plan(config: &ClipConfig) -> Vec<Spec> {
        let mut plan = Plan::default();
        match ClipWeights::from_source(&mut plan, config, CheckpointFormat::HuggingFace) {
            Ok(_) => plan.specs,
            Err(never) => match never {},
        }
    }

    /// The number of parameters `config` implies (including `logit_scale`), without building anything.
    pub fn parameter_count(config: &ClipConfig) -> usize {
        ClipWeights::plan(config)
            .iter()
            .map(|s| s.shape.iter().product::<usize>())
            .sum()
    }
}

/// One tensor of a [`ClipWeights`], named by its canonical key.
#[derive(Debug, Clone)]
pub struct NamedTensor<'a> {
    /// Canonical key, e.g. `vision_model.encoder.layers.3.self_attn.qkv_proj.weight`.
    pub name: String,
    /// The data.
    pub tensor: &'a HostTensor,
}

impl ClipWeights {
    /// Memory-maps and loads a `.safetensors` checkpoint (Hugging Face or open_clip keys, detected from the
    /// names), checked against `config` first ([`Checkpoint::check`]: every problem reported at once).
    pub fn load(
        path: impl AsRef<Path>,
        config: &ClipConfig,
    ) -> Result<ClipWeights, CheckpointError> {
        Checkpoint::open(path)?.load(config, Host)
    }

    /// Loads a checkpoint from the bytes of a `.safetensors` file (see [`Self::load`]).
    pub fn from_safetensors_bytes(
        bytes: &[u8],
        config: &ClipConfig,
    ) -> Result<ClipWeights, CheckpointError> {
        Checkpoint::from_bytes(bytes.to_vec())?.load(config, Host)
    }

    /// Loads a model directory ([`Checkpoint::open_dir`]).
    pub fn load_dir(dir: impl AsRef<Path>) -> Result<(ClipConfig, ClipWeights), CheckpointError> {
        let (config, checkpoint) = Checkpoint::open_dir(dir)?;
        let weights = checkpoint.load(&config, Host)?;
        Ok((config, weights))
    }

    /// Builds weights from a function of (Hugging Face checkpoint key, shape) returning the row-major data, e.g.
    /// random weights for tests. Keys are those of a Hugging Face `CLIPModel` file (separate
    /// `q_proj`/`k_proj`/`v_proj`, packed here as at load). A function returning the wrong number of elements is
    /// reported as a shape mismatch (the `found` shape is the element count).
    pub fn from_fn(
        config: &ClipConfig,
        f: impl FnMut(&str, &[usize]) -> Vec<f32>,
    ) -> Result<ClipWeights, CheckpointError> {
        let format = CheckpointFormat::HuggingFace;
        ClipWeights::from_source(
            &mut Loader {
                raw: FnRaw(f),
                format,
                target: Host,
            },
            config,
            format,
        )
    }

    /// Every tensor with its canonical key, in table order (`config` gives the shapes' names; the layer counts
    /// are the weights' own).
    pub fn tensors(&self, config: &ClipConfig) -> Vec<NamedTensor<'_>> {
        let mut shaped = config.clone();
        (
            shaped.vision.num_hidden_layers,
            shaped.text.num_hidden_layers,
        ) = self.layers();
        let names = ClipWeights::plan(&shaped)
            .into_iter()
            .filter(|s| !s.scalar)
            .map(|s| s.key);
        let mut tensors = Vec::new();
        self.for_each_tensor(&mut |t| tensors.push(t));
        names
            .zip(tensors)
            .map(|(name, tensor)| NamedTensor { name, tensor })
            .collect()
    }

    /// Total number of parameters (including `logit_scale`).
    pub fn num_parameters(&self) -> usize {
        let mut n = 1;
        self.for_each_tensor(&mut |t| n += t.len());
        n
    }

    /// Checks that every array has the shape `config` implies (after building or editing weights by hand;
    /// loading already guarantees it). Lists all mismatches by canonical key, and layer-count differences as
    /// missing or unexpected tensors.
    pub fn check_shapes(&self, config: &ClipConfig) -> Result<(), CheckpointError> {
        let expected = ClipWeights::plan(config);
        let actual: BTreeMap<String, &[usize]> = self
            .tensors(config)
            .into_iter()
            .map(|t| (t.name, t.tensor.shape()))
            .collect();
        let expected_names: BTreeSet<&str> = expected.iter().map(|s| s.key.as_str()).collect();
        let mut problems = CheckpointMismatch::default();
        for spec in expected.iter().filter(|s| !s.scalar) {
            match actual.get(&spec.key) {
                None => problems.missing.push(spec.key.clone()),
                Some(found) if *found != spec.shape.as_slice() => {
                    problems.wrong_shape.push(ShapeMismatch {
                        name: spec.key.clone(),
                        expected: spec.shape.clone(),
                        found: found.to_vec(),
                    })
                }
                Some(_) => {}
            }
        }
        problems.unexpected = actual
            .keys()
            .filter(|k| !expected_names.contains(k.as_str()))
            .cloned()
            .collect();
        if problems.is_empty() {
            Ok(())
        } else {
            Err(CheckpointError::Mismatch(Box::new(problems)))
        }
    }
}
