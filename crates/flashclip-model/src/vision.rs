//! The vision tower (Hugging Face's `CLIPVisionTransformer`): patch, class and position embeddings, a pre-norm,
//! the encoder, and the post-norm read at each image's class token.

use flashclip::ops::embedding::{patchify, vision_embed};
use flashclip::ops::gemm::linear;
use flashclip::{Element, Gpu, Tensor, View};

use crate::checkpoint::{key, Source};
use crate::config::VisionConfig;
use crate::error::{ModelError, Result};
use crate::nn::{AttentionImpl, Encoder, EncoderSpec, LayerNorm};
use crate::workspace::Workspace;

/// Patch, class and position embeddings.
#[derive(Debug, Clone, PartialEq)]
pub struct VisionEmbeddings<A> {
    /// The class token, `[D]`.
    pub class_embedding: A,
    /// Patch-embedding convolution kernel (no bias), `[D, C, P, P]`.
    pub patch_embedding: A,
    /// Learned positions, `[num_patches + 1, D]`; row 0 is the class token's.
    pub position_embedding: A,
}

/// The vision tower.
#[derive(Debug, Clone, PartialEq)]
pub struct VisionTransformer<A> {
    /// Embeddings.
    pub embeddings: VisionEmbeddings<A>,
    /// LayerNorm before the encoder (open_clip `ln_pre`; Hugging Face's spelling kept).
    pub pre_layrnorm: LayerNorm<A>,
    /// Encoder layers.
    pub encoder: Encoder<A>,
    /// LayerNorm of the class token (open_clip `ln_post`).
    pub post_layernorm: LayerNorm<A>,
}

impl<A> VisionTransformer<A> {
    /// Loads the tower at `vision_model`.
    pub fn load<S: Source<Tensor = A>>(s: &mut S, v: &VisionConfig) -> Result<Self, S::Error> {
        let (p, d) = ("vision_model", v.hidden_size);
        let e = key(p, "embeddings");
        Ok(VisionTransformer {
            embeddings: VisionEmbeddings {
                class_embedding: s.tensor(&key(&e, "class_embedding"), &[d])?,
                patch_embedding: s.tensor(
                    &key(&e, "patch_embedding.weight"),
                    &[d, v.num_channels, v.patch_size, v.patch_size],
                )?,
                position_embedding: s
                    .tensor(&key(&e, "position_embedding.weight"), &[v.seq_len(), d])?,
            },
            pre_layrnorm: LayerNorm::load(s, &key(p, "pre_layrnorm"), d)?,
            encoder: Encoder::load(
                s,
                &key(p, "encoder"),
                v.num_hidden_layers,
                d,
                v.intermediate_size,
            )?,
            post_layernorm: LayerNorm::load(s, &key(p, "post_layernorm"), d)?,
        })
    }

    /// Visits the tensors in `load` order.
    pub fn for_each_tensor<'a>(&'a self, f: &mut dyn FnMut(&'a A)) {
        let e = &self.embeddings;
        [
            &e.class_embedding,
            &e.patch_embedding,
            &e.position_embedding,
        ]
        .into_iter()
        .for_each(&mut *f);
        self.pre_layrnorm.for_each_tensor(f);
        self.encoder.for_each_tensor(f);
        self.post_layernorm.for_each_tensor(f);
    }
}

impl<T: Element> VisionTransformer<Tensor<T>> {
    /// `residual = pre_layrnorm(class/patch tokens + positions)` for the first `batch` images in the workspace.
    pub fn embed(
        &self,
        gpu: &Gpu,
        v: &VisionConfig,
        ws: &mut Workspace<T>,
        batch: usize,
    ) -> Result<()> {
        let (n, d) = (v.seq_len(), v.hidden_size);
        let (tokens, patches) = (batch * n, batch * v.num_patches());
        if batch > ws.vision.max_batch {
            return Err(ModelError::Input(format!(
                "{batch} images exceed the workspace's {}",
                ws.vision.max_batch
            )));
        }
        patchify(
            gpu,
            &ws.pixels.device,
            batch,
            v.num_channels,
            v.image_size,
            v.patch_size,
            &mut ws.patches.view_mut().narrow(0, 0, patches)?,
        )?;
        let kernel = self
            .embeddings
            .patch_embedding
            .view()
            .reshape(&[d, v.patch_dim()])?;
        linear(
            gpu,
            &ws.patches.view().narrow(0, 0, patches)?,
            &kernel,
            &mut ws.patch_out.view_mut().narrow(0, 0, patches)?,
            0.0,
        )?;
        // The embeddings' sum goes through `normed`, free until the encoder's first norm.
        let b = &mut ws.vision;
        vision_embed(
            gpu,
            &ws.patch_out.view().narrow(0, 0, patches)?,
            &self.embeddings.class_embedding.view(),
            &self.embeddings.position_embedding.view(),
            &mut b
                .normed
                .view_mut()
                .narrow(0, 0, tokens)?
                .reshape(&[batch, n, d])?,
        )?;
        self.pre_layrnorm.forward(
            gpu,
            &b.normed.view().narrow(0, 0, tokens)?,
            v.layer_norm_eps as f32,
            &mut b.residual.view_mut().narrow(0, 0, tokens)?,
        )
    }

    /// The tower on the first `batch` images in the workspace; on return `normed` holds `post_layernorm` of every
    /// token (fused into the last layer's residual step), of which [`class_tokens`] are the tower's output.
    pub fn forward(
        &self,
        gpu: &Gpu,
        v: &VisionConfig,
        ws: &mut Workspace<T>,
        batch: usize,
        attention: AttentionImpl,
    ) -> Result<()> {
        self.embed(gpu, v, ws, batch)?;
        let spec = EncoderSpec::vision(v);
        self.encoder.forward(
            gpu,
            &mut ws.vision,
            &spec,
            (batch, v.seq_len()),
            &self.post_layernorm,
            attention,
        )
    }
}

/// Each image's class token after the post-norm: rows 0, n, 2n, ... of `normed`, read in place with a row stride.
pub(crate) fn class_tokens<'a, T: Element>(
    v: &VisionConfig,
    normed: &'a Tensor<T>,
    batch: usize,
) -> Result<View<'a, T>> {
    let (n, d) = (v.seq_len(), v.hidden_size);
    Ok(View::new(normed.data(), 0, &[batch, d], &[n * d, 1])?)
}
