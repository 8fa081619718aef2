//! Turning request inputs into model inputs, on tokio's blocking pool so that decoding and resizing images (and
//! tokenizing many texts) never stall the async runtime.

use std::sync::Arc;

use axum::body::Bytes;

use flashclip_model::Fitted;

use crate::batcher::Inputs;
use crate::errors::ApiError;
use crate::model::ModelInfo;

/// An input and the name its errors carry (`input[2]`, `cat.jpg`).
pub(crate) struct Named<T> {
    pub name: String,
    pub value: T,
}

impl<T> Named<T> {
    pub fn new(name: impl Into<String>, value: T) -> Self {
        Self {
            name: name.into(),
            value,
        }
    }
}

/// Tokenizes texts, refusing any longer than the model's context (rather than cutting it silently). Returns the
/// ids (SigLIP's padded to the context, as it takes them) and the number of tokens in all (padding not counted).
pub(crate) async fn texts(
    model: Arc<ModelInfo>,
    texts: Vec<Named<String>>,
) -> Result<(Inputs, usize), ApiError> {
    blocking(move || {
        let mut ids = Vec::with_capacity(texts.len());
        let mut tokens = 0;
        for text in &texts {
            let name = &text.name;
            let encoded = model
                .tokenizer
                .encode_within(&text.value, model.context_length)
                .map_err(|e| ApiError::BadRequest(format!("{name}: {e}")))?;
            let (seq, len) = match encoded {
                Fitted::Fits { ids, tokens } => (ids, tokens),
                Fitted::TooLong { tokens } => {
                    let length = tokens.map_or_else(
                        || "longer than".into(),
                        |n| format!("{n} tokens long, more than"),
                    );
                    return Err(ApiError::BadRequest(format!(
                        "{name} is {length} the model's context of {} tokens \
                         (start and end tokens included)",
                        model.context_length
                    )));
                }
            };
            tokens += len;
            ids.push(seq);
        }
        Ok((Inputs::Texts(ids), tokens))
    })
    .await
}

/// Decodes and preprocesses images (JPEG, PNG or WebP) into one `[n, 3, S, S]` array.
pub(crate) async fn images(
    model: Arc<ModelInfo>,
    images: Vec<Named<Bytes>>,
) -> Result<Inputs, ApiError> {
    blocking(move || {
        let count = images.len();
        let mut pixels = Vec::with_capacity(count * model.preprocessor.output_len());
        for image in &images {
            let p = model
                .preprocessor
                .preprocess_bytes(&image.value, &image.name)
                .map_err(|e| ApiError::BadRequest(e.to_string()))?;
            pixels.extend(p);
        }
        Ok(Inputs::Images { pixels, count })
    })
    .await
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(work)
        .await
        .unwrap_or_else(|e| Err(ApiError::Internal(format!("input preparation failed: {e}"))))
}
