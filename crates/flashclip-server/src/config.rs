//! The server's settings, with the defaults the command line shows.

use std::net::SocketAddr;
use std::time::Duration;

use crate::errors::ServerError;

/// How the server listens, batches and limits requests.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Address to bind; port 0 picks a free port ([`crate::Server::local_addr`] tells which).
    pub addr: SocketAddr,
    /// The name responses carry in their `model` field.
    pub model_name: String,
    /// Most images or texts the model runs in one batch.
    pub max_batch: usize,
    /// How long the batcher waits for more requests once it has one, before running a partial batch.
    pub max_wait: Duration,
    /// Requests waiting for the model beyond the one running; one more is refused with 503.
    pub queue_size: usize,
    /// Largest request body; a larger one is refused with 413.
    pub max_body_bytes: usize,
    /// Time from a request's arrival to its answer; past it the answer is 504.
    pub timeout: Duration,
    /// Most texts or images in one request.
    pub max_inputs: usize,
    /// Model threads sharing the queue, each with its own replica of the model (on a GPU: a stream and workspace of
    /// its own, the weights shared), so that one's batch preparation and upload overlap another's forward. A model
    /// without replicas (the CPU reference) runs one.
    pub replicas: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            model_name: "clip".into(),
            max_batch: 32,
            max_wait: Duration::ZERO,
            queue_size: 256,
            max_body_bytes: 16 << 20,
            timeout: Duration::from_secs(30),
            max_inputs: 256,
            replicas: 1,
        }
    }
}

impl ServerConfig {
    /// Refuses settings under which no request could be served.
    pub fn validate(&self) -> Result<(), ServerError> {
        let positive = [
            ("max batch", self.max_batch),
            ("queue size", self.queue_size),
            ("max body bytes", self.max_body_bytes),
            ("max inputs", self.max_inputs),
            ("replica count", self.replicas),
        ];
        for (what, value) in positive {
            if value == 0 {
                return Err(ServerError::Config(format!(
                    "the {what} must be at least 1"
                )));
            }
        }
        if self.timeout.is_zero() {
            return Err(ServerError::Config("the timeout must be positive".into()));
        }
        Ok(())
    }
}
