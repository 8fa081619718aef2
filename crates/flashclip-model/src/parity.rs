//! Layer-by-layer snapshots of the residual stream, for parity checks against Hugging Face's `hidden_states`:
//! the same forward as [`ClipModel::run_vision`] / [`ClipModel::run_uploaded_texts`], with a download after the
//! embeddings and after every layer (so it syncs, and is refused while the stream is captured into a graph).

use flashclip::{Element, Gpu};

use crate::error::{ModelError, Result};
use crate::graph::capturing;
use crate::model::ClipModel;
use crate::nn::{Encoder, EncoderSpec, LayerNorm};
use crate::workspace::{TowerBuffers, Workspace};

fn refuse_capture(gpu: &Gpu) -> Result<()> {
    if capturing(gpu)? {
        return Err(ModelError::Input(
            "hidden-state snapshots copy to the host and cannot be captured into a CUDA graph"
                .into(),
        ));
    }
    Ok(())
}

/// The first `tokens` rows of the residual stream, as f32.
fn snapshot<T: Element>(
    gpu: &Gpu,
    b: &TowerBuffers<T>,
    tokens: usize,
    dim: usize,
) -> Result<Vec<f32>> {
    let all = gpu.download(b.residual.data())?;
    Ok(all.iter().take(tokens * dim).map(|x| x.to_f32()).collect())
}

/// Runs `encoder` layer by layer over `b`, snapshotting the residual before the first layer and after each.
fn layers<T: Element>(
    gpu: &Gpu,
    encoder: &Encoder<flashclip::Tensor<T>>,
    b: &mut TowerBuffers<T>,
    spec: &EncoderSpec,
    shape: (usize, usize),
    final_norm: &LayerNorm<flashclip::Tensor<T>>,
    attention: crate::nn::AttentionImpl,
) -> Result<Vec<Vec<f32>>> {
    let tokens = shape.0 * shape.1;
    let mut states = vec![snapshot(gpu, b, tokens, spec.dim)?];
    encoder.begin(gpu, b, spec, tokens, final_norm)?;
    for i in 0..encoder.layers.len() {
        encoder.layer(i, gpu, b, spec, shape, final_norm, attention)?;
        states.push(snapshot(gpu, b, tokens, spec.dim)?);
    }
    Ok(states)
}

impl<T: Element> ClipModel<T> {
    /// [`ClipModel::run_vision`] on the first `batch` images in the workspace, returning the residual stream
    /// `[batch · seq_len, dim]` after the pre-norm and after each layer.
    pub fn vision_hidden_states(
        &self,
        gpu: &Gpu,
        ws: &mut Workspace<T>,
        batch: usize,
    ) -> Result<Vec<Vec<f32>>> {
        refuse_capture(gpu)?;
        let v = &self.config().vision;
        let tower = &self.weights().vision_model;
        tower.embed(gpu, v, ws, batch)?;
        let spec = EncoderSpec::vision(v);
        let states = layers(
            gpu,
            &tower.encoder,
            &mut ws.vision,
            &spec,
            (batch, v.seq_len()),
            &tower.post_layernorm,
            self.attention(),
        )?;
        self.project_images(gpu, ws, batch)?;
        Ok(states)
    }

    /// [`ClipModel::run_uploaded_texts`], returning the residual stream `[batch · len, dim]` after the embeddings
    /// and after each layer.
    pub fn text_hidden_states(&self, gpu: &Gpu, ws: &mut Workspace<T>) -> Result<Vec<Vec<f32>>> {
        refuse_capture(gpu)?;
        let t = &self.config().text;
        let tower = &self.weights().text_model;
        let shape = tower.embed(gpu, ws)?;
        let spec = EncoderSpec::text(t);
        let states = layers(
            gpu,
            &tower.encoder,
            &mut ws.text,
            &spec,
            (shape.batch, shape.len),
            &tower.final_layer_norm,
            self.attention(),
        )?;
        tower.pool(gpu, ws, shape)?;
        self.project_texts(gpu, ws, shape.batch)?;
        Ok(states)
    }
}
