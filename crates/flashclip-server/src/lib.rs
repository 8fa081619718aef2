//! `flashclip serve`: an HTTP server that embeds texts and images with a CLIP model, batching concurrent requests
//! dynamically.
//!
//! # Endpoints
//!
//! Every embedding is L2-normalized (a dot product of two is their cosine similarity).
//!
//! - `POST /v1/embeddings`: OpenAI's embeddings shape. `input` is a string, a list of strings, or image objects
//!   `{"type": "image", "image": "<base64 or data:image/...;base64,... URL>"}` (texts may also be written
//!   `{"type": "text", "text": "..."}`), mixed freely in one list. `encoding_format` is `float` (default) or
//!   `base64` (little-endian f32). The answer is
//!   `{"object": "list", "data": [{"object": "embedding", "index": i, "embedding": [...]}], "model": ...,
//!   "usage": {"prompt_tokens": n, "total_tokens": n}}`, where tokens count text tokens (start and end
//!   included); images count none.
//! - `POST /embed/text`: `{"texts": [...]}` → `{"model": ..., "embeddings": [[...], ...]}`.
//! - `POST /embed/image`: an image's raw bytes as the body, or `multipart/form-data` with one image per part →
//!   the same answer, rows in part order. JPEG, PNG and WebP.
//! - `POST /zero-shot`: `{"image": "<base64 or data URL>", "labels": ["cat", "dog"], "template": "a photo of {}"}`
//!   (`template` optional) → `{"model": ..., "results": [{"label": ..., "probability": ...}]}`, most likely
//!   first: `softmax(logit_scale · cos)` over the labels, or for SigLIP `sigmoid(logit_scale · cos + logit_bias)`
//!   per label (each judged on its own: they need not sum to 1).
//! - `GET /health`: 200 once the model has loaded and run one batch, 503 before.
//! - `GET /metrics`: Prometheus text.
//!
//! Errors answer `{"error": {"message": ..., "type": ...}}`: 400 for a malformed or unsupported request, 413 past
//! the body limit, 503 with `Retry-After` while the queue is full or the model loads, 504 past the timeout.
//!
//! # Design
//!
//! Handlers decode and preprocess inputs on tokio's blocking pool, then queue them for the batcher
//! (module `batcher`), a thread that owns the model and runs texts and images in separate batches of up to
//! `max_batch`: whatever queued while the last batch ran, plus what arrives within `max_wait` (0 by default).

mod api;
mod batcher;
mod config;
mod errors;
mod metrics;
mod model;
mod prepare;
mod routes;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use config::ServerConfig;
pub use errors::ServerError;
pub use model::{load_model_dir, Loader, Model};

use batcher::{BatchPolicy, Readiness};
use metrics::Metrics;
use routes::AppState;

/// A running server.
pub struct Server {
    addr: SocketAddr,
    ready: watch::Receiver<Readiness>,
    task: JoinHandle<Result<(), ServerError>>,
}

impl Server {
    /// Binds `config.addr`, starts answering requests (`/health` says 503 until the model is ready) and loads
    /// the model with `load` on the batcher's thread. When `shutdown` completes, the server stops accepting
    /// connections, answers the requests it has, and the batcher finishes its queue; [`Server::wait`] returns
    /// then. Call within a tokio runtime.
    pub async fn start(
        config: ServerConfig,
        load: Loader,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<Server, ServerError> {
        config.validate()?;
        let listener =
            TcpListener::bind(config.addr)
                .await
                .map_err(|source| ServerError::Bind {
                    addr: config.addr,
                    source,
                })?;
        let addr = listener.local_addr()?;
        let metrics = Arc::new(Metrics::new()?);
        let (ready_tx, ready) = watch::channel(Readiness::Loading);
        let policy = BatchPolicy {
            max_batch: config.max_batch,
            max_wait: config.max_wait,
            queue_size: config.queue_size,
            replicas: config.replicas,
        };
        let (batcher, worker) = batcher::spawn(load, policy, metrics.clone(), ready_tx)?;
        let state = Arc::new(AppState {
            config,
            batcher,
            metrics,
            ready: ready.clone(),
        });
        let app = routes::router(state);
        let task = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(shutdown)
                .await?;
            // The router, and with it the queue's last sender, is gone: the worker drains the queue and ends.
            match tokio::task::spawn_blocking(move || worker.join()).await {
                Ok(Ok(())) => Ok(()),
                _ => Err(ServerError::WorkerLost),
            }
        });
        Ok(Server { addr, ready, task })
    }

    /// The address the server listens on (with the port the OS picked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Waits until the model has loaded and run its warm-up batch, or failed to.
    pub async fn ready(&mut self) -> Result<(), ServerError> {
        let state = self
            .ready
            .wait_for(|r| !matches!(r, Readiness::Loading))
            .await
            .map_err(|_| ServerError::WorkerLost)?
            .clone();
        match state {
            Readiness::Failed(message) => Err(ServerError::LoadFailed(message)),
            Readiness::Ready(_) | Readiness::Loading => Ok(()),
        }
    }

    /// Waits until the server has shut down and the batcher has drained its queue.
    pub async fn wait(self) -> Result<(), ServerError> {
        self.task.await.map_err(|_| ServerError::WorkerLost)?
    }
}
