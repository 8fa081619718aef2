//! Preprocessed images on their way into a workspace. The host converts them to the model's element type in pinned
//! memory, and the copy to the device is asynchronous: for a 16-bit model half the bytes of f32, copied by DMA
//! instead of through the driver's pageable bounce buffer (ViT-L/14-336 at 128 images: 87 MB instead of 173). The
//! patch unfolding rounded f32 pixels to the element type anyway, so the forward is bitwise what it was.

use std::thread;

use cudarc::driver::CudaSlice;
use flashclip::{Element, Gpu};

use crate::error::{ModelError, Result};
use crate::workspace::Staging;

/// Below this many values per thread one thread converts alone: starting threads would cost more than they save.
const PER_THREAD: usize = 1 << 20;
/// At most this many threads convert one batch; by then they share the host's memory bandwidth.
const MAX_THREADS: usize = 8;

/// Room for up to `max_images` images of `[C, S, S]` on the device, and their pinned staging buffer.
pub(crate) struct Pixels<T: Element> {
    /// `[max_images, C, S, S]`: what the last [`Pixels::upload`] enqueued, at the front.
    pub(crate) device: CudaSlice<T>,
    staging: Staging<T>,
    channels: usize,
    size: usize,
    max_images: usize,
}

impl<T: Element> Pixels<T> {
    pub(crate) fn new(gpu: &Gpu, max_images: usize, channels: usize, size: usize) -> Result<Self> {
        let len = [max_images, channels, size, size]
            .iter()
            .try_fold(1usize, |a, &d| a.checked_mul(d))
            .ok_or_else(|| {
                ModelError::Input(format!(
                    "{max_images} images of {channels}x{size}x{size} pixels overflow"
                ))
            })?;
        Ok(Self {
            device: gpu
                .stream()
                .alloc_zeros::<T>(len)
                .map_err(flashclip::Error::from)?,
            staging: Staging::new(gpu, len)?,
            channels,
            size,
            max_images,
        })
    }

    /// Checks `parts` (each a whole number of `[C, S, S]` f32 images, together 1 to the maximum) and the model's
    /// image shape `(C, S)` against what this buffer was sized for, converts them in order into the staging buffer
    /// and enqueues its copy to [`Pixels::device`] on `gpu`'s stream; returns the number of images. Waits only for
    /// the previous upload's copy.
    pub(crate) fn upload(
        &mut self,
        gpu: &Gpu,
        (channels, size): (usize, usize),
        parts: &[&[f32]],
    ) -> Result<usize> {
        let (c, s) = (self.channels, self.size);
        if (channels, size) != (c, s) {
            return Err(ModelError::Input(format!(
                "the workspace holds {c}x{s}x{s} images, the model takes {channels}x{size}x{size}"
            )));
        }
        let per = c * s * s;
        let mut total = 0;
        for part in parts {
            if part.is_empty() || part.len() % per != 0 {
                return Err(ModelError::Input(format!(
                    "pixels: {} floats is not a positive multiple of {per} (one {c}x{s}x{s} image)",
                    part.len()
                )));
            }
            total += part.len();
        }
        let batch = total / per;
        if batch == 0 || batch > self.max_images {
            return Err(ModelError::Input(format!(
                "{batch} images: the workspace takes 1 to {}",
                self.max_images
            )));
        }
        let host = &mut self.staging.writable()?[..total];
        convert(host, parts)?;
        let stream = gpu.stream();
        let copied = stream.memcpy_htod(&host[..], &mut self.device.slice_mut(..total));
        self.staging.enqueued(stream, copied)?;
        Ok(batch)
    }
}

/// Converts `parts`, laid end to end, into `dst` (exactly as long), on up to [`MAX_THREADS`] threads.
fn convert<T: Element>(dst: &mut [T], parts: &[&[f32]]) -> Result<()> {
    let threads = (dst.len() / PER_THREAD).clamp(1, MAX_THREADS);
    let share = dst.len().div_ceil(threads).max(1);
    thread::scope(|scope| {
        let mut shares = dst.chunks_mut(share).enumerate();
        // This thread converts the first share itself.
        let first = shares.next();
        for (i, chunk) in shares {
            thread::Builder::new()
                .spawn_scoped(scope, move || fill(chunk, parts, i * share))
                .map_err(|e| {
                    ModelError::Input(format!("cannot start a pixel conversion thread: {e}"))
                })?;
        }
        if let Some((_, chunk)) = first {
            fill(chunk, parts, 0);
        }
        Ok(())
    })
}

/// Fills `dst` with the values of `parts` (laid end to end) from offset `skip` on.
fn fill<T: Element>(mut dst: &mut [T], parts: &[&[f32]], mut skip: usize) {
    for part in parts {
        if dst.is_empty() {
            return;
        }
        let Some(src) = part.get(skip..) else {
            skip -= part.len();
            continue;
        };
        skip = 0;
        let n = src.len().min(dst.len());
        let (head, tail) = std::mem::take(&mut dst).split_at_mut(n);
        T::convert_from_f32_slice(head, &src[..n]);
        dst = tail;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use half::f16;

    #[test]
    fn conversion_follows_the_parts_across_every_thread_share() {
        // Parts of uneven lengths, over enough values for several threads, each share starting mid-part.
        let lens = [3, PER_THREAD + 5, 1, 2 * PER_THREAD + 7, 11];
        let mut next = 0.0f32;
        let parts: Vec<Vec<f32>> = lens
            .iter()
            .map(|&n| {
                (0..n)
                    .map(|_| {
                        next += 0.37;
                        (next % 97.0) - 48.0
                    })
                    .collect()
            })
            .collect();
        let views: Vec<&[f32]> = parts.iter().map(Vec::as_slice).collect();
        let flat: Vec<f32> = parts.concat();
        let mut dst = vec![f16::ZERO; flat.len()];
        convert(&mut dst, &views).unwrap();
        let want: Vec<f16> = flat.iter().map(|&x| f16::from_f32(x)).collect();
        assert_eq!(dst, want);
        let mut single = vec![0.0f32; flat.len()];
        convert(&mut single, &views).unwrap();
        assert_eq!(single, flat);
    }
}
