//! Prometheus metrics, in a registry of the server's own (two servers in one process count apart).

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use prometheus::{
    exponential_buckets, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, Registry,
    TextEncoder,
};

use crate::errors::ErrorType;

/// Everything `GET /metrics` reports.
pub(crate) struct Metrics {
    registry: Registry,
    /// Answered requests by endpoint and status code.
    requests: IntCounterVec,
    /// Error answers by endpoint and error type.
    errors: IntCounterVec,
    /// Time from a request's arrival to its answer, by endpoint.
    latency: HistogramVec,
    /// Inputs per model call, by kind (text or image).
    pub batch_size: HistogramVec,
    /// Requests accepted by the batcher and not yet taken into a batch.
    pub queue_depth: IntGauge,
    /// Time in the model per batch, by kind.
    pub model_seconds: HistogramVec,
}

impl Metrics {
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(
                "flashclip_requests_total",
                "Requests answered, by endpoint and status",
            ),
            &["endpoint", "status"],
        )?;
        let errors = IntCounterVec::new(
            Opts::new(
                "flashclip_errors_total",
                "Error answers, by endpoint and error type",
            ),
            &["endpoint", "type"],
        )?;
        let latency = HistogramVec::new(
            HistogramOpts::new(
                "flashclip_request_duration_seconds",
                "Time from a request's arrival to its answer",
            )
            .buckets(exponential_buckets(0.001, 2.0, 16)?),
            &["endpoint"],
        )?;
        let batch_size = HistogramVec::new(
            HistogramOpts::new("flashclip_batch_size", "Inputs per model call")
                .buckets(exponential_buckets(1.0, 2.0, 11)?),
            &["kind"],
        )?;
        let queue_depth = IntGauge::new(
            "flashclip_queue_depth",
            "Requests waiting for the model, not yet in a batch",
        )?;
        let model_seconds = HistogramVec::new(
            HistogramOpts::new("flashclip_model_seconds", "Time in the model per batch")
                .buckets(exponential_buckets(0.0005, 2.0, 16)?),
            &["kind"],
        )?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(errors.clone()))?;
        registry.register(Box::new(latency.clone()))?;
        registry.register(Box::new(batch_size.clone()))?;
        registry.register(Box::new(queue_depth.clone()))?;
        registry.register(Box::new(model_seconds.clone()))?;
        Ok(Self {
            registry,
            requests,
            errors,
            latency,
            batch_size,
            queue_depth,
            model_seconds,
        })
    }

    /// The text exposition format.
    pub fn render(&self) -> Result<String, prometheus::Error> {
        TextEncoder::new().encode_to_string(&self.registry.gather())
    }
}

/// Middleware: counts every answer by its route (not its raw path, so labels stay few) and status, errors by
/// type, and the latency.
pub(crate) async fn track(
    State(metrics): State<Arc<Metrics>>,
    req: Request,
    next: Next,
) -> Response {
    let endpoint = req
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", |p| p.as_str())
        .to_owned();
    let start = Instant::now();
    let response = next.run(req).await;
    metrics
        .latency
        .with_label_values(&[endpoint.as_str()])
        .observe(start.elapsed().as_secs_f64());
    metrics
        .requests
        .with_label_values(&[endpoint.as_str(), response.status().as_str()])
        .inc();
    if let Some(ErrorType(kind)) = response.extensions().get::<ErrorType>() {
        metrics
            .errors
            .with_label_values(&[endpoint.as_str(), kind])
            .inc();
    }
    response
}
