//! Checkpoints: safetensors files in Hugging Face's or open_clip's layout, checked against a config before any
//! tensor data is touched, then converted once from the file's dtype straight to the target's (host f32 for the
//! CPU reference, the GPU dtype for the model).
//!
//! The modules (`nn`, `vision`, `text`, [`crate::ClipWeights`]) name their tensors once, by canonical (Hugging
//! Face) key, in their `load` functions; [`CheckpointFormat::stored`] maps each key to the file's layout. Run
//! with a [`Plan`], the loads give the table of every tensor and shape a config implies, from which the shape,
//! dtype, missing and unexpected checks derive ([`Checkpoint::check`]).

mod error;
mod format;
mod source;

use std::collections::BTreeSet;
use std::fs::File;
use std::path::{Path, PathBuf};

pub use error::{CheckpointError, CheckpointMismatch, DtypeMismatch, ShapeMismatch};
pub use format::{is_ignorable, CheckpointFormat, Stored, Tower};
pub use source::{key, Host, HostTensor, Plan, Source, Spec, Target};
pub(crate) use source::{FileRaw, FnRaw, Loader};

use crate::config::ClipConfig;
use crate::weights::ClipWeights;
use safetensors::{Dtype, SafeTensors};

/// The bytes of a checkpoint: a read-only map of the file, or a caller's buffer.
enum Bytes {
    Map(memmap2::Mmap),
    Owned(Vec<u8>),
}

impl std::ops::Deref for Bytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Bytes::Map(m) => m,
            Bytes::Owned(v) => v,
        }
    }
}

/// An opened safetensors checkpoint whose header has been read and whose layout is known.
pub struct Checkpoint {
    bytes: Bytes,
    origin: String,
    format: CheckpointFormat,
    names: Vec<String>,
    note: Option<String>,
}

impl std::fmt::Debug for Checkpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Checkpoint")
            .field("origin", &self.origin)
            .field("format", &self.format)
            .field("tensors", &self.names.len())
            .finish()
    }
}

/// File names looked for in a model directory, in order.
pub(crate) const CONFIG_FILES: [&str; 2] = ["config.json", "open_clip_config.json"];
pub(crate) const CHECKPOINT_FILES: [&str; 2] = ["model.safetensors", "open_clip_model.safetensors"];

/// The first of `names` that is a file in `dir` (`what` names it in the error).
pub(crate) fn find_in_dir(
    dir: &Path,
    what: &'static str,
    names: [&'static str; 2],
) -> Result<PathBuf, CheckpointError> {
    names
        .iter()
        .map(|n| dir.join(n))
        .find(|p| p.is_file())
        .ok_or_else(|| CheckpointError::NotFoundInDir {
            what,
            dir: dir.to_path_buf(),
            tried: names.to_vec(),
        })
}

impl Checkpoint {
    /// Memory-maps a `.safetensors` file and reads its header.
    pub fn open(path: impl AsRef<Path>) -> Result<Checkpoint, CheckpointError> {
        let path = path.as_ref();
        let io_err = |source: std::io::Error| {
            if source.kind() == std::io::ErrorKind::NotFound {
                CheckpointError::NotFound {
                    path: path.to_path_buf(),
                }
            } else {
                CheckpointError::Io {
                    path: path.to_path_buf(),
                    source,
                }
            }
        };
        let file = File::open(path).map_err(io_err)?;
        let bytes = if file.metadata().map_err(io_err)?.len() == 0 {
            // mmap of an empty file fails with an unhelpful EINVAL; let the parser say why.
            Bytes::Owned(Vec::new())
        } else {
            // SAFETY: the map is read-only. As with any mmap, a concurrent writer truncating the file could fault;
            // checkpoints are not expected to change while they are open.
            Bytes::Map(unsafe { memmap2::Mmap::map(&file) }.map_err(io_err)?)
        };
        Self::new(bytes, path.display().to_string())
    }

    /// A checkpoint from the bytes of a `.safetensors` file.
    pub fn from_bytes(bytes: Vec<u8>) -> Result<Checkpoint, CheckpointError> {
        Self::new(Bytes::Owned(bytes), "buffer".into())
    }

    fn new(bytes: Bytes, origin: String) -> Result<Checkpoint, CheckpointError> {
        let st = parse(&bytes, &origin)?;
        let mut names: Vec<String> = st.names().into_iter().map(str::to_string).collect();
        names.sort_unstable();
        let format =
            CheckpointFormat::detect(&names).ok_or_else(|| CheckpointError::UnknownFormat {
                origin: origin.clone(),
                sample: names.iter().take(8).cloned().collect(),
            })?;
        drop(st);
        Ok(Checkpoint {
            bytes,
            origin,
            format,
            names,
            note: None,
        })
    }

    /// Opens a model directory: the config from `config.json` (Hugging Face) or `open_clip_config.json`, the
    /// checkpoint from `model.safetensors` or `open_clip_model.safetensors` (the first that exists of each), and
    /// checks them against each other ([`Checkpoint::check`]) before returning.
    pub fn open_dir(dir: impl AsRef<Path>) -> Result<(ClipConfig, Checkpoint), CheckpointError> {
        let dir = dir.as_ref();
        let config_path = find_in_dir(dir, "config", CONFIG_FILES)?;
        let checkpoint_path = find_in_dir(dir, "checkpoint", CHECKPOINT_FILES)?;
        let config = ClipConfig::from_json_file(&config_path)?;
        let checkpoint = Checkpoint::open(&checkpoint_path)?;
        checkpoint.check(&config)?;
        Ok((config, checkpoint))
    }

    /// The detected key naming.
    pub fn format(&self) -> CheckpointFormat {
        self.format
    }

    /// The file's tensor names, sorted.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// The checkpoint's path, or "buffer".
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// Checks the file against the config without converting any data: first the layer counts (a config asking
    /// for more layers than the file holds is reported as such, before anything is sized by it), then every
    /// tensor of the config's table for presence, shape and dtype, and the file for tensors the table lacks.
    /// Returns the table.
    pub fn check(&self, config: &ClipConfig) -> Result<Vec<Spec>, CheckpointError> {
        let layers = [
            (Tower::Vision, config.vision.num_hidden_layers),
            (Tower::Text, config.text.num_hidden_layers),
        ]
        .map(|(tower, n)| LayerStack {
            tower: tower.name(),
            layers: n,
            prefix: self.format.layers_prefix(tower),
        });
        let plan = ClipWeights::plan(config);
        self.check_table(&plan, &layers, |_| false)?;
        Ok(plan)
    }

    /// Checks the file against any model's tensor table (canonical keys, mapped through the file's layout): the
    /// layer counts of `stacks` first, then every entry for presence, shape and dtype, and the file for tensors
    /// the table lacks, other than [`is_ignorable`] ones and those `ignorable` names.
    pub(crate) fn check_table(
        &self,
        plan: &[Spec],
        stacks: &[LayerStack],
        ignorable: impl Fn(&str) -> bool,
    ) -> Result<(), CheckpointError> {
        for stack in stacks {
            let found = layers_with_prefix(stack.prefix, &self.names);
            if stack.layers > found {
                return Err(CheckpointError::LayerCount {
                    tower: stack.tower,
                    config: stack.layers,
                    found,
                    prefix: stack.prefix,
                    origin: self.origin.clone(),
                    note: self.note.clone(),
                });
            }
        }
        let st = parse(&self.bytes, &self.origin)?;
        let mut problems = CheckpointMismatch {
            format: Some(self.format),
            ..CheckpointMismatch::default()
        };
        let mut used = BTreeSet::new();
        for spec in plan {
            for (part, shape) in self.format.stored(&spec.key).parts(&spec.shape) {
                used.insert(part.to_string());
                let Ok(view) = st.tensor(part) else {
                    problems.missing.push(part.to_string());
                    continue;
                };
                let scalar_ok = spec.scalar && view.shape() == [1];
                if view.shape() != shape && !scalar_ok {
                    problems.wrong_shape.push(ShapeMismatch {
                        name: part.to_string(),
                        expected: shape,
                        found: view.shape().to_vec(),
                    });
                }
                if !matches!(view.dtype(), Dtype::F32 | Dtype::F16 | Dtype::BF16) {
                    problems.unsupported_dtype.push(DtypeMismatch {
                        name: part.to_string(),
                        dtype: view.dtype().to_string(),
                    });
                }
            }
        }
        problems.unexpected = self
            .names
            .iter()
            .filter(|n| !used.contains(*n) && !is_ignorable(n) && !ignorable(n))
            .cloned()
            .collect();
        if problems.is_empty() {
            Ok(())
        } else {
            problems.note = self.note.clone();
            Err(CheckpointError::Mismatch(Box::new(problems)))
        }
    }

    /// Checks the file against the config, then loads every tensor into `target`, each converted once from the
    /// file's dtype to the target's element type.
    pub fn load<G: Target>(
        &self,
        config: &ClipConfig,
        target: G,
    ) -> Result<ClipWeights<G::Tensor>, CheckpointError> {
        self.check(config)?;
        let format = self.format;
        self.load_with(target, |loader| {
            ClipWeights::from_source(loader, config, format)
        })
    }

    /// Runs `build` (a model's `from_source`) over a [`Source`] reading this file into `target`. Check the file
    /// against the model's table first ([`Checkpoint::check_table`]): this pass stops at the first problem.
    pub(crate) fn load_with<G: Target, W>(
        &self,
        target: G,
        build: impl FnOnce(&mut Loader<FileRaw<'_, '_>, G>) -> Result<W, CheckpointError>,
    ) -> Result<W, CheckpointError> {
        let st = parse(&self.bytes, &self.origin)?;
        let mut loader = Loader {
            raw: FileRaw {
                st: &st,
                format: self.format,
            },
            format: self.format,
            target,
        };
        build(&mut loader)
    }
}

/// One tower's stack of layers, for the layer-count check: the file must hold at least `layers` of them under
/// `prefix` (`<prefix><i>.`, as stored).
#[derive(Debug, Clone, Copy)]
pub(crate) struct LayerStack {
    pub tower: &'static str,
    pub layers: usize,
    pub prefix: &'static str,
}

/// How many layers a file with these tensor names holds under `prefix`: one past the largest layer index.
pub(crate) fn layers_with_prefix<S: AsRef<str>>(prefix: &str, names: &[S]) -> usize {
    names
        .iter()
        .filter_map(|n| {
            n.as_ref()
                .strip_prefix(prefix)?
                .split('.')
                .next()?
                .parse::<usize>()
                .ok()
        })
        .map(|i| i.saturating_add(1))
        .max()
        .unwrap_or(0)
}

fn parse<'a>(bytes: &'a [u8], origin: &str) -> Result<SafeTensors<'a>, CheckpointError> {
    SafeTensors::deserialize(bytes).map_err(|source| CheckpointError::Corrupt {
        origin: origin.to_string(),
        source,
    })
}
