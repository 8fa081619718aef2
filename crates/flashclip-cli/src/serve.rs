//! `flashclip serve`: the embedding server (crate `flashclip-server`) on a model directory.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use flashclip::DType;
use flashclip_model::backend::Device;
use flashclip_server::{load_model_dir, Server, ServerConfig};

use crate::error::{CliError, Result};

/// `flashclip serve` arguments.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Model directory (config.json + model.safetensors, optional tokenizer files).
    #[arg(long)]
    model: PathBuf,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    host: IpAddr,
    /// Port to listen on; 0 picks a free one (printed once ready).
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// Most images or texts per model call.
    #[arg(long, default_value_t = 32)]
    max_batch: usize,
    /// Extra wait for more requests before running a partial batch, in milliseconds. 0 runs whatever is queued
    /// as soon as the model is free (requests arriving meanwhile form the next batch).
    #[arg(long, default_value_t = 0)]
    max_wait_ms: u64,
    /// Requests that may wait for the model; past it requests get 503 with Retry-After.
    #[arg(long, default_value_t = 256)]
    queue_size: usize,
    /// Element type of the weights and activations on the GPU (the CPU computes in f32).
    #[arg(long, value_enum, default_value_t = DType::F16)]
    dtype: DType,
    /// Where the model runs: cpu (slow, anywhere), cuda (GPU 0) or cuda:N.
    #[arg(long, default_value = "cuda")]
    device: Device,
    /// Largest request body in bytes; larger ones get 413.
    #[arg(long, default_value_t = 16 << 20)]
    max_body_bytes: usize,
    /// Per-request timeout in milliseconds; slower requests get 504.
    #[arg(long, default_value_t = 30_000)]
    timeout_ms: u64,
    /// Most texts or images in one request.
    #[arg(long, default_value_t = 256)]
    max_inputs: usize,
    /// Model threads on the GPU, each with a replica of the model (its own stream and workspace, the weights
    /// shared), taking batches from the same queue so that one's preparation and upload overlap another's forward.
    /// The CPU runs one.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=8))]
    replicas: u32,
}

/// `flashclip serve`: runs until SIGTERM or Ctrl-C, then answers the requests in flight and exits.
pub fn run(args: &ServeArgs) -> Result<()> {
    let config = ServerConfig {
        addr: SocketAddr::new(args.host, args.port),
        model_name: args
            .model
            .file_name()
            .map_or_else(|| "clip".into(), |n| n.to_string_lossy().into_owned()),
        max_batch: args.max_batch,
        max_wait: Duration::from_millis(args.max_wait_ms),
        queue_size: args.queue_size,
        max_body_bytes: args.max_body_bytes,
        timeout: Duration::from_millis(args.timeout_ms),
        max_inputs: args.max_inputs,
        replicas: args.replicas as usize,
    };
    let (dir, device, dtype, max_batch) =
        (args.model.clone(), args.device, args.dtype, args.max_batch);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::Output(format!("cannot start the async runtime: {e}")))?;
    runtime.block_on(async move {
        let load = Box::new(move || load_model_dir(&dir, device, dtype, max_batch));
        let mut server = Server::start(config, load, shutdown_signal()).await.map_err(serve_error)?;
        let addr = server.local_addr();
        eprintln!("flashclip serve: loading the model on {device}; listening on http://{addr} (health is 503 until ready)");
        server.ready().await.map_err(serve_error)?;
        println!("flashclip serve: ready on http://{addr}");
        server.wait().await.map_err(serve_error)?;
        eprintln!("flashclip serve: stopped");
        Ok(())
    })
}

fn serve_error(e: flashclip_server::ServerError) -> CliError {
    CliError::Usage(e.to_string())
}

/// Completes on Ctrl-C or, on Unix, SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            // Without a SIGTERM handler, Ctrl-C still stops the server.
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
    eprintln!("flashclip serve: shutting down, answering the requests in flight");
}
