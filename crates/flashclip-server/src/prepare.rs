//! Turning request inputs into model inputs, on tokio's blocking pool so that decoding and resizing images (and
//! tokenizing many texts) never stall the async runtime.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock};

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

/// Images being decoded and preprocessed right now, by every request of the process.
static PREPARING: AtomicUsize = AtomicUsize::new(0);

/// While at most this many images are being prepared, each spreads its resize over rayon's pool: a lone request
/// (concurrency 1) gets its pixels sooner. Under load one image per thread is faster, and the cores are busy anyway.
static SPREAD_LIMIT: LazyLock<usize> =
    LazyLock::new(|| std::thread::available_parallelism().map_or(1, |n| (n.get() / 4).max(1)));

/// Counts an image as being prepared for as long as it lives.
struct Preparing;

impl Preparing {
    /// Starts counting; returns the guard and how many images are being prepared, this one included.
    fn start() -> (Self, usize) {
        (Self, PREPARING.fetch_add(1, Ordering::Relaxed) + 1)
    }
}

impl Drop for Preparing {
    fn drop(&mut self) {
        PREPARING.fetch_sub(1, Ordering::Relaxed);
    }
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
            let (_counted, preparing) = Preparing::start();
            let pre = &model.preprocessor;
            let p = if preparing <= *SPREAD_LIMIT {
                pre.preprocess_bytes_spread(&image.value, &image.name)
            } else {
                pre.preprocess_bytes(&image.value, &image.name)
            }
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
