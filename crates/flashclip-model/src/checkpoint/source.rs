//! Where the modules' `load` functions get their tensors from, and where the tensors go.
//!
//! A module asks a [`Source`] for each of its tensors by canonical key and the shape its config implies. The
//! sources are a [`Plan`] (records the keys and shapes: the table every check derives from) and a [`Loader`],
//! which reads the stored parts through the checkpoint's layout, converts them once from the file's dtype to the
//! target's element type, assembles them (stacked Q/K/V rows, transposed projections) and hands them to a
//! [`Target`]: host f32 arrays ([`Host`]) or device tensors (the GPU model's target).

use flashclip::Element;
use ndarray::{ArrayD, IxDyn};
use rayon::prelude::*;
use safetensors::{Dtype, SafeTensors};

use super::error::{CheckpointError, CheckpointMismatch, ShapeMismatch};
use super::format::{CheckpointFormat, Stored};

/// What a module's `load` pulls its tensors from.
pub trait Source {
    /// What a loaded tensor is.
    type Tensor;
    /// Why a tensor could not be had.
    type Error;
    /// The tensor of canonical key `key`, of the shape the config implies.
    fn tensor(&mut self, key: &str, shape: &[usize]) -> Result<Self::Tensor, Self::Error>;
    /// A scalar stored as a tensor of shape `[]` or `[1]` (the logit scale).
    fn scalar(&mut self, key: &str) -> Result<f32, Self::Error>;
}

/// `prefix.name`, the key of a submodule's tensor.
pub fn key(prefix: &str, name: &str) -> String {
    format!("{prefix}.{name}")
}

/// One entry of a model's tensor table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spec {
    /// Canonical key.
    pub key: String,
    /// Shape the config implies (`[]` for a scalar).
    pub shape: Vec<usize>,
    /// Whether it is a scalar (stored as `[]` or `[1]`, kept as a plain number).
    pub scalar: bool,
}

/// Records what a module loads: its tensor table, in load order, without touching data.
#[derive(Debug, Default)]
pub struct Plan {
    /// The table so far.
    pub specs: Vec<Spec>,
}

impl Source for Plan {
    type Tensor = ();
    type Error = std::convert::Infallible;

    fn tensor(&mut self, key: &str, shape: &[usize]) -> Result<(), Self::Error> {
        self.specs.push(Spec {
            key: key.to_string(),
            shape: shape.to_vec(),
            scalar: false,
        });
        Ok(())
    }

    fn scalar(&mut self, key: &str) -> Result<f32, Self::Error> {
        self.specs.push(Spec {
            key: key.to_string(),
            shape: Vec::new(),
            scalar: true,
        });
        Ok(0.0)
    }
}

/// Where loaded tensors go: `make` receives the row-major data of one canonical tensor in `Elem`.
pub trait Target {
    /// The element type data is converted to (once, straight from the file's dtype).
    type Elem: Element;
    /// What a loaded tensor is.
    type Tensor;
    /// Why a tensor could not be placed.
    type Error: std::error::Error + Send + Sync + 'static;
    /// Wraps (or uploads) `data` of `shape`.
    fn make(&mut self, data: Vec<Self::Elem>, shape: &[usize])
        -> Result<Self::Tensor, Self::Error>;
}

/// Host f32 arrays of dynamic rank: the CPU reference's weights.
pub type HostTensor = ArrayD<f32>;

/// The [`Target`] of host f32 arrays.
#[derive(Debug, Default, Clone, Copy)]
pub struct Host;

impl Target for Host {
    type Elem = f32;
    type Tensor = HostTensor;
    type Error = ndarray::ShapeError;

    fn make(&mut self, data: Vec<f32>, shape: &[usize]) -> Result<HostTensor, Self::Error> {
        ArrayD::from_shape_vec(IxDyn(shape), data)
    }
}

/// Raw tensors by stored key, each checked against the shape expected of it.
pub(crate) trait Raw {
    fn read<E: Element>(&mut self, key: &str, shape: &[usize]) -> Result<Vec<E>, CheckpointError>;
}

/// One problem as an error (the loading pass stops at the first; the checks before it report all).
fn single(
    format: Option<CheckpointFormat>,
    problem: impl FnOnce(&mut CheckpointMismatch),
) -> CheckpointError {
    let mut m = CheckpointMismatch {
        format,
        ..CheckpointMismatch::default()
    };
    problem(&mut m);
    CheckpointError::Mismatch(Box::new(m))
}

/// A safetensors file's tensors.
pub(crate) struct FileRaw<'a, 'data> {
    pub st: &'a SafeTensors<'data>,
    pub format: CheckpointFormat,
}

impl Raw for FileRaw<'_, '_> {
    fn read<E: Element>(&mut self, key: &str, shape: &[usize]) -> Result<Vec<E>, CheckpointError> {
        let format = Some(self.format);
        let view = self
            .st
            .tensor(key)
            .map_err(|_| single(format, |m| m.missing.push(key.into())))?;
        if view.shape() != shape && !(shape.is_empty() && view.shape() == [1]) {
            let found = view.shape().to_vec();
            return Err(single(format, |m| {
                m.wrong_shape.push(ShapeMismatch {
                    name: key.into(),
                    expected: shape.to_vec(),
                    found,
                })
            }));
        }
        decode(view.dtype(), view.data()).ok_or_else(|| {
            single(format, |m| {
                m.unsupported_dtype.push(super::error::DtypeMismatch {
                    name: key.into(),
                    dtype: view.dtype().to_string(),
                })
            })
        })
    }
}

/// Tensors from a function of (Hugging Face key, shape) ([`crate::ClipWeights::from_fn`]).
pub(crate) struct FnRaw<F>(pub F);

impl<F: FnMut(&str, &[usize]) -> Vec<f32>> Raw for FnRaw<F> {
    fn read<E: Element>(&mut self, key: &str, shape: &[usize]) -> Result<Vec<E>, CheckpointError> {
        let data = (self.0)(key, shape);
        if data.len() != shape.iter().product::<usize>() {
            let found = vec![data.len()];
            return Err(single(None, |m| {
                m.wrong_shape.push(ShapeMismatch {
                    name: key.into(),
                    expected: shape.to_vec(),
                    found,
                })
            }));
        }
        Ok(data.into_iter().map(E::from_f32).collect())
    }
}

/// Reads canonical tensors through a layout from a [`Raw`] provider into a [`Target`].
pub(crate) struct Loader<R, G> {
    pub raw: R,
    pub format: CheckpointFormat,
    pub target: G,
}

impl<R: Raw, G: Target> Source for Loader<R, G> {
    type Tensor = G::Tensor;
    type Error = CheckpointError;

    fn tensor(&mut self, key: &str, shape: &[usize]) -> Result<G::Tensor, CheckpointError> {
        let stored = self.format.stored(key);
        let mut data: Vec<G::Elem> = Vec::new();
        for (part, part_shape) in stored.parts(shape) {
            data.extend(self.raw.read::<G::Elem>(part, &part_shape)?);
        }
        if let Stored::Transposed(_) = stored {
            data = transpose(&data, shape[1], shape[0]);
        }
        self.target
            .make(data, shape)
            .map_err(|e| CheckpointError::Target {
                key: key.to_string(),
                source: Box::new(e),
            })
    }

    fn scalar(&mut self, key: &str) -> Result<f32, CheckpointError> {
        let stored = self.format.stored(key);
        let part = stored
            .parts(&[])
            .first()
            .map_or(key, |(k, _)| k)
            .to_string();
        Ok(self
            .raw
            .read::<f32>(&part, &[])?
            .first()
            .copied()
            .unwrap_or(0.0))
    }
}

/// `[rows, cols]` row-major data transposed to `[cols, rows]`.
fn transpose<E: Copy>(data: &[E], rows: usize, cols: usize) -> Vec<E> {
    (0..cols)
        .flat_map(|c| (0..rows).map(move |r| data[r * cols + c]))
        .collect()
}

/// Little-endian F32/F16/BF16 bytes converted to `E` (rounded once; `None` for other dtypes). Byte-wise, as a
/// mapped file gives no alignment guarantee.
pub(crate) fn decode<E: Element>(dtype: Dtype, bytes: &[u8]) -> Option<Vec<E>> {
    // Below this, rayon's overhead outweighs the conversion.
    const PAR_MIN: usize = 1 << 16;
    fn convert<E: Element>(bytes: &[u8], width: usize, f: impl Fn(&[u8]) -> f32 + Sync) -> Vec<E> {
        if bytes.len() >= PAR_MIN {
            bytes
                .par_chunks_exact(width)
                .map(|c| E::from_f32(f(c)))
                .collect()
        } else {
            bytes
                .chunks_exact(width)
                .map(|c| E::from_f32(f(c)))
                .collect()
        }
    }
    Some(match dtype {
        Dtype::F32 => convert(bytes, 4, |c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])),
        Dtype::F16 => convert(bytes, 2, |c| {
            half::f16::from_le_bytes([c[0], c[1]]).to_f32()
        }),
        Dtype::BF16 => convert(bytes, 2, |c| {
            half::bf16::from_le_bytes([c[0], c[1]]).to_f32()
        }),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use half::f16;

    #[test]
    fn decode_rounds_once_to_the_target() {
        let bytes: Vec<u8> = [1.0f32, 1.0 + 1e-4, -2.5]
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect();
        let halves: Vec<f16> = decode(Dtype::F32, &bytes).unwrap();
        assert_eq!(halves, [1.0f32, 1.0 + 1e-4, -2.5].map(f16::from_f32));
        let back: Vec<u8> = halves.iter().flat_map(|h| h.to_le_bytes()).collect();
        assert_eq!(decode::<f16>(Dtype::F16, &back).unwrap(), halves);
        assert!(decode::<f32>(Dtype::I64, &[0; 8]).is_none());
    }

    #[test]
    fn transposes_row_major() {
        assert_eq!(transpose(&[1, 2, 3, 4, 5, 6], 2, 3), vec![1, 4, 2, 5, 3, 6]);
    }
}
