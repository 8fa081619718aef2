//! Errors: [`ServerError`] stops the server from starting or running; [`ApiError`] answers one request and the
//! server goes on.

use std::net::SocketAddr;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use flashclip_model::tokenizer::TokenizerError;
use flashclip_model::{CheckpointError, ModelError};
use serde_json::json;

/// Why the server could not start, load its model, or keep running.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// Settings under which no request could be served.
    #[error("invalid setting: {0}")]
    Config(String),
    /// The address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// Serving connections failed.
    #[error("server: {0}")]
    Io(#[from] std::io::Error),
    /// The model directory could not be opened.
    #[error("cannot load the model: {0}")]
    Checkpoint(#[from] CheckpointError),
    /// The model failed to load, or its warm-up batch failed.
    #[error("model: {0}")]
    Model(#[from] ModelError),
    /// The tokenizer could not be loaded.
    #[error("tokenizer: {0}")]
    Tokenizer(#[from] TokenizerError),
    /// The model and the tokenizer do not fit each other.
    #[error("{0}")]
    Mismatch(String),
    /// The model did not load, or its warm-up batch failed (the message says why).
    #[error("the model did not load: {0}")]
    LoadFailed(String),
    /// Metrics could not be set up.
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    /// The batcher's thread ended without saying why (it panicked).
    #[error("the model thread stopped unexpectedly")]
    WorkerLost,
}

/// A request that cannot be answered with embeddings; its response is
/// `{"error": {"message": ..., "type": ...}}` with the status of [`ApiError::status`].
#[derive(Debug, thiserror::Error)]
pub(crate) enum ApiError {
    /// Malformed JSON, wrong types, bad base64, bytes that are no image, empty or too many inputs, a text longer
    /// than the model's context.
    #[error("{0}")]
    BadRequest(String),
    /// The body is larger than the server's limit.
    #[error("{0}")]
    TooLarge(String),
    /// The queue in front of the model is full.
    #[error("the server is at capacity ({0} requests queued); retry shortly")]
    Overloaded(usize),
    /// The model is still loading (or failed to load).
    #[error("the model is not ready; retry shortly")]
    NotReady,
    /// The answer took longer than the server's per-request timeout.
    #[error("no answer within the server's timeout of {0} ms")]
    Timeout(u128),
    /// No route for the path.
    #[error("no endpoint {0}")]
    NotFound(String),
    /// The route exists for another method.
    #[error("{0} is not allowed here")]
    MethodNotAllowed(String),
    /// The model failed on a batch, or the server is shutting down.
    #[error("{0}")]
    Internal(String),
}

/// The `type` of an error response, kept on the response so the metrics layer can count errors by type.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ErrorType(pub &'static str);

impl ApiError {
    /// The HTTP status this error answers with.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Overloaded(_) | ApiError::NotReady => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The `type` field of the error response.
    pub fn error_type(&self) -> &'static str {
        match self {
            ApiError::BadRequest(_) => "invalid_request_error",
            ApiError::TooLarge(_) => "request_too_large",
            ApiError::Overloaded(_) => "overloaded",
            ApiError::NotReady => "not_ready",
            ApiError::Timeout(_) => "timeout",
            ApiError::NotFound(_) => "not_found",
            ApiError::MethodNotAllowed(_) => "method_not_allowed",
            ApiError::Internal(_) => "server_error",
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let kind = self.error_type();
        let body = json!({ "error": { "message": self.to_string(), "type": kind } });
        let mut response = (status, Json(body)).into_response();
        if status == StatusCode::SERVICE_UNAVAILABLE {
            // Both causes pass within a batch or a model load: a second is a fair first wait.
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response.extensions_mut().insert(ErrorType(kind));
        response
    }
}
