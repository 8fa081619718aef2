//! The HTTP routes, their shared state, and the middleware every request passes through.

mod embed;
mod openai;
mod zero_shot;

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, Method, StatusCode, Uri};
use axum::middleware::{from_fn_with_state, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;
use tokio::sync::watch;

use crate::batcher::{Batcher, Inputs, Readiness};
use crate::config::ServerConfig;
use crate::errors::ApiError;
use crate::metrics::{track, Metrics};
use crate::model::ModelInfo;

/// What every handler shares.
pub(crate) struct AppState {
    pub config: ServerConfig,
    pub batcher: Batcher,
    pub metrics: Arc<Metrics>,
    pub ready: watch::Receiver<Readiness>,
}

impl AppState {
    /// The model, once loaded and warmed up.
    fn model(&self) -> Result<Arc<ModelInfo>, ApiError> {
        match &*self.ready.borrow() {
            Readiness::Ready(info) => Ok(info.clone()),
            Readiness::Loading | Readiness::Failed(_) => Err(ApiError::NotReady),
        }
    }

    /// Queues inputs for the batcher and waits for their embeddings.
    async fn embed(&self, inputs: Inputs) -> Result<Vec<Vec<f32>>, ApiError> {
        match self.batcher.submit(inputs)?.await {
            Ok(Ok(rows)) => Ok(rows),
            Ok(Err(message)) => Err(ApiError::Internal(format!("the model failed: {message}"))),
            Err(_) => Err(ApiError::Internal(
                "the model stopped before answering".into(),
            )),
        }
    }

    /// Refuses an empty request or one with more inputs than the server takes, before any work.
    fn check_count(&self, n: usize, what: &str) -> Result<(), ApiError> {
        if n == 0 {
            return Err(ApiError::BadRequest(format!("no {what} to embed")));
        }
        if n > self.config.max_inputs {
            return Err(ApiError::BadRequest(format!(
                "{n} {what} in one request; the server takes at most {}",
                self.config.max_inputs
            )));
        }
        Ok(())
    }
}

/// All routes, with the body limit, the per-request timeout and the metrics around them.
pub(crate) fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/v1/embeddings", post(openai::embeddings))
        .route("/embed/text", post(embed::text))
        .route("/embed/image", post(embed::image))
        .route("/zero-shot", post(zero_shot::zero_shot))
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(state.config.max_body_bytes))
        .layer(from_fn_with_state(state.clone(), deadline))
        .layer(from_fn_with_state(state.metrics.clone(), track))
        .with_state(state)
}

/// A request body, or the error its extraction hit (413 past the body limit).
fn body(body: Result<Bytes, BytesRejection>) -> Result<Bytes, ApiError> {
    body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::TooLarge(format!("the body is larger than the server's limit: {e}"))
        } else {
            ApiError::BadRequest(format!("cannot read the body: {e}"))
        }
    })
}

/// 200 once the model has loaded and run its warm-up batch; 503 before (or if loading failed).
async fn health(State(state): State<Arc<AppState>>) -> Response {
    let readiness = state.ready.borrow().clone();
    match readiness {
        Readiness::Ready(_) => Json(json!({ "status": "ready" })).into_response(),
        Readiness::Loading => (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::RETRY_AFTER, "1")],
            Json(json!({ "status": "loading" })),
        )
            .into_response(),
        Readiness::Failed(error) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "status": "failed", "error": error })),
        )
            .into_response(),
    }
}

async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    match state.metrics.render() {
        Ok(text) => ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response(),
        Err(e) => ApiError::Internal(format!("cannot render metrics: {e}")).into_response(),
    }
}

async fn not_found(uri: Uri) -> ApiError {
    ApiError::NotFound(uri.path().to_owned())
}

async fn method_not_allowed(method: Method) -> ApiError {
    ApiError::MethodNotAllowed(method.to_string())
}

/// Answers 504 when a request takes longer than the timeout; dropping the handler drops its place in the
/// batcher, which then skips its inputs.
async fn deadline(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let timeout = state.config.timeout;
    match tokio::time::timeout(timeout, next.run(req)).await {
        Ok(response) => response,
        Err(_) => ApiError::Timeout(timeout.as_millis()).into_response(),
    }
}
