//! Device scratch for forwards, allocated once per maximum batch and reused by every forward: a forward neither
//! allocates on the device nor synchronizes the host (its only sync is the final read of the embeddings).

use std::sync::atomic::{AtomicU64, Ordering};

use cudarc::driver::{
    CudaEvent, CudaStream, DeviceRepr, DriverError, PinnedHostSlice, ValidAsZeroBits,
};
use flashclip::ops::attention::MaterializedWorkspace;
use flashclip::{Element, Gpu, Tensor};

use crate::config::{ClipConfig, VisionConfig};
use crate::error::{ModelError, Result};
use crate::nn::{AttentionImpl, EncoderSpec};
use crate::pixels::Pixels;
use crate::text::TextInputs;

/// One tower's buffers for up to `max_tokens` tokens (batch × sequence), named by role.
pub struct TowerBuffers<T: Element> {
    /// The residual stream, `[tokens, dim]`.
    pub(crate) residual: Tensor<T>,
    /// A LayerNorm's output, `[tokens, dim]`: the input of the QKV projection and of the MLP; after the last
    /// layer, the tower's final norm of the residual.
    pub(crate) normed: Tensor<T>,
    /// Packed Q, K, V, `[tokens, 3 dim]`.
    pub(crate) qkv: Tensor<T>,
    /// The attention out-projection's or fc2's output before its bias and the residual add, `[tokens, dim]`.
    pub(crate) branch: Tensor<T>,
    /// The MLP's hidden activations, `[tokens, mlp]`. While attention runs (before the MLP needs it) its head
    /// holds the attention output, which saves a `[tokens, dim]` buffer.
    pub(crate) mlp: Tensor<T>,
    /// Each sequence's pooled row, `[batch, dim]`.
    pub(crate) pooled: Tensor<T>,
    /// The projected embeddings, `[batch, projection_dim]`.
    pub(crate) projected: Tensor<T>,
    /// Scores and probabilities of the materialized attention path (only when that path is used).
    pub(crate) materialized: Option<MaterializedWorkspace<T>>,
    pub(crate) max_tokens: usize,
    pub(crate) max_batch: usize,
}

fn product(what: &str, dims: &[usize]) -> Result<usize> {
    dims.iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or_else(|| ModelError::Input(format!("the workspace's {what} ({dims:?}) overflows")))
}

impl<T: Element> TowerBuffers<T> {
    pub(crate) fn new(
        gpu: &Gpu,
        s: &EncoderSpec,
        (max_batch, max_seq): (usize, usize),
        proj: usize,
        attention: AttentionImpl,
    ) -> Result<Self> {
        let t = product("token count", &[max_batch, max_seq])?;
        product("widest buffer", &[t, 3 * s.dim.max(s.mlp)])?;
        Ok(Self {
            residual: gpu.zeros(&[t, s.dim])?,
            normed: gpu.zeros(&[t, s.dim])?,
            qkv: gpu.zeros(&[t, 3 * s.dim])?,
            branch: gpu.zeros(&[t, s.dim])?,
            mlp: gpu.zeros(&[t, s.mlp.max(s.dim)])?,
            pooled: gpu.zeros(&[max_batch, s.dim])?,
            projected: gpu.zeros(&[max_batch, proj])?,
            materialized: match attention {
                AttentionImpl::Materialized => Some(MaterializedWorkspace::new(
                    gpu, max_batch, s.heads, max_seq, max_seq,
                )?),
                AttentionImpl::Flash(_) | AttentionImpl::Fastest => None,
            },
            max_tokens: t,
            max_batch,
        })
    }
}

/// Pinned host memory that inputs are written to before their asynchronous copy to the device, and an event
/// recorded after that copy: the host waits on it before writing the buffer again.
pub(crate) struct Staging<E> {
    pub(crate) host: PinnedHostSlice<E>,
    pub(crate) copied: CudaEvent,
}

impl<E> Drop for Staging<E> {
    fn drop(&mut self) {
        // The pinned buffer is freed right after this; a copy still reading it must finish first. An error here
        // cannot be reported from drop (the context records it).
        let _ = self.copied.synchronize();
    }
}

impl<E: ValidAsZeroBits> Staging<E> {
    /// The host buffer, once the copies out of it enqueued last have finished (it must not change under them).
    pub(crate) fn writable(&mut self) -> Result<&mut [E]> {
        self.copied.synchronize().map_err(flashclip::Error::from)?;
        Ok(self.host.as_mut_slice().map_err(flashclip::Error::from)?)
    }

    /// Records the copies just enqueued on `stream` out of the buffer, and returns their result. Recorded even
    /// after a failed copy, so the next [`Staging::writable`] waits for whatever was enqueued.
    pub(crate) fn enqueued(
        &self,
        stream: &CudaStream,
        copied: std::result::Result<(), DriverError>,
    ) -> Result<()> {
        let recorded = self.copied.record(stream);
        Ok(copied.and(recorded).map_err(flashclip::Error::from)?)
    }
}

impl<E: DeviceRepr + ValidAsZeroBits> Staging<E> {
    pub(crate) fn new(gpu: &Gpu, len: usize) -> Result<Self> {
        let ctx = gpu.context();
        // SAFETY: the buffer starts uninitialized and is zeroed below before anything reads it.
        let mut host = unsafe { ctx.alloc_pinned::<E>(len) }.map_err(flashclip::Error::from)?;
        let ptr = host.as_mut_ptr().map_err(flashclip::Error::from)?;
        // SAFETY: `ptr` addresses the `len` elements just allocated, owned by `host`, and nothing else uses them
        // yet; all-zero bytes are a valid `E` (ValidAsZeroBits).
        unsafe { std::ptr::write_bytes(ptr, 0, len) };
        Ok(Self {
            host,
            copied: ctx.new_event(None).map_err(flashclip::Error::from)?,
        })
    }
}

/// The towers a [`Workspace`] is sized for: CLIP's vision tower, a text tower's layers and context length, and
/// the shared projection width.
pub(crate) struct Towers<'a> {
    pub vision: &'a VisionConfig,
    pub text: (EncoderSpec, usize),
    pub projection_dim: usize,
}

static NEXT_ID: AtomicU64 = AtomicU64::new(0);

/// A number no other workspace of the process has: CUDA graphs captured on a workspace check it before they
/// launch.
pub(crate) fn next_workspace_id() -> u64 {
    NEXT_ID.fetch_add(1, Ordering::Relaxed)
}

/// Device scratch for forwards of up to `max_images` images and `max_texts` texts of up to the model's context
/// length ([`crate::ClipModel::workspace`]).
pub struct Workspace<T: Element> {
    pub(crate) vision: TowerBuffers<T>,
    pub(crate) text: TowerBuffers<T>,
    /// Preprocessed images, `[batch, C, S, S]` in `T`, and their pinned staging buffer.
    pub(crate) pixels: Pixels<T>,
    /// The images unfolded into patch rows, `[batch · patches, C·P·P]`.
    pub(crate) patches: Tensor<T>,
    /// The patch embedding's output, `[batch · patches, dim]`.
    pub(crate) patch_out: Tensor<T>,
    /// The text tower's token ids and what it reads beside them.
    pub(crate) tokens: TextInputs,
    /// Unique in the process: CUDA graphs captured on this workspace check it before they launch.
    id: u64,
}

impl<T: Element> Workspace<T> {
    pub(crate) fn new(
        gpu: &Gpu,
        config: &ClipConfig,
        attention: AttentionImpl,
        max_images: usize,
        max_texts: usize,
    ) -> Result<Self> {
        let text = (EncoderSpec::text(&config.text), config.text.max_len());
        let towers = Towers {
            vision: &config.vision,
            text,
            projection_dim: config.projection_dim,
        };
        Self::for_towers(gpu, &towers, attention, max_images, max_texts)
    }

    /// A workspace for any model with CLIP's vision tower and a text tower of `towers.text` (its layers and
    /// context length).
    pub(crate) fn for_towers(
        gpu: &Gpu,
        towers: &Towers<'_>,
        attention: AttentionImpl,
        max_images: usize,
        max_texts: usize,
    ) -> Result<Self> {
        let v = towers.vision;
        let (text_spec, max_len) = towers.text;
        let (max_images, max_texts) = (max_images.max(1), max_texts.max(1));
        let patches = product("patch rows", &[max_images, v.num_patches()])?;
        let ids = product("token ids", &[max_texts, max_len])?;
        Ok(Workspace {
            vision: TowerBuffers::new(
                gpu,
                &EncoderSpec::vision(v),
                (max_images, v.seq_len()),
                towers.projection_dim,
                attention,
            )?,
            text: TowerBuffers::new(
                gpu,
                &text_spec,
                (max_texts, max_len),
                towers.projection_dim,
                attention,
            )?,
            pixels: Pixels::new(gpu, max_images, v.num_channels, v.image_size)?,
            patches: gpu.zeros(&[patches, v.patch_dim()])?,
            patch_out: gpu.zeros(&[patches, v.hidden_size])?,
            tokens: TextInputs::new(gpu, max_texts, ids)?,
            id: next_workspace_id(),
        })
    }

    pub(crate) fn id(&self) -> u64 {
        self.id
    }

    /// The most images a forward on this workspace takes.
    pub fn max_images(&self) -> usize {
        self.vision.max_batch
    }

    /// The most texts a forward on this workspace takes.
    pub fn max_texts(&self) -> usize {
        self.text.max_batch
    }
}
