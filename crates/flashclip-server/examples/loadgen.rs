//! A bounded load generator for `flashclip serve`, for loopback servers only: a fixed number of requests (and a
//! cap on the time they may take) from `--concurrency` clients, texts or 640x480 JPEG images. Prints one markdown
//! table row (`--header` adds the header): throughput and p50/p99 latency of the successful requests.
//!
//! ```text
//! cargo run --release -p flashclip-server --example loadgen -- --url http://127.0.0.1:8080 --kind image \
//!     --concurrency 16 --requests 512 --header
//! ```

use std::io::Cursor;
use std::net::{IpAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use reqwest::{Client, Url};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Kind {
    /// `POST /embed/text` with `--inputs` texts per request.
    Text,
    /// `POST /embed/image` with one 640x480 JPEG per request.
    Image,
}

#[derive(Debug, Parser)]
#[command(about = "Bounded load against a loopback flashclip server")]
struct Args {
    /// The server's base URL; only loopback addresses are accepted.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: String,
    #[arg(long, value_enum, default_value_t = Kind::Text)]
    kind: Kind,
    /// Clients sending at once.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Requests in all.
    #[arg(long, default_value_t = 256)]
    requests: usize,
    /// Texts per text request.
    #[arg(long, default_value_t = 1)]
    inputs: usize,
    /// Stop sending new requests after this many seconds.
    #[arg(long, default_value_t = 60)]
    max_seconds: u64,
    /// Print the table header before the row.
    #[arg(long)]
    header: bool,
}

const MAX_REQUESTS: usize = 1_000_000;
const MAX_CONCURRENCY: usize = 4096;

#[tokio::main]
async fn main() -> Result<(), String> {
    let args = Args::parse();
    if args.requests == 0 || args.requests > MAX_REQUESTS {
        return Err(format!("--requests must be 1..={MAX_REQUESTS}"));
    }
    if args.concurrency == 0 || args.concurrency > MAX_CONCURRENCY {
        return Err(format!("--concurrency must be 1..={MAX_CONCURRENCY}"));
    }
    let base = loopback_url(&args.url)?;
    let client = Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(120))
        .pool_max_idle_per_host(args.concurrency)
        .build()
        .map_err(|e| e.to_string())?;
    let (url, body, content_type) = match args.kind {
        Kind::Text => {
            let texts: Vec<String> = (0..args.inputs.max(1))
                .map(|i| {
                    format!(
                        "a photo of a {} dog on a beach",
                        ["small", "big", "happy"][i % 3]
                    )
                })
                .collect();
            let body = serde_json::to_vec(&serde_json::json!({ "texts": texts }))
                .map_err(|e| e.to_string())?;
            (base.join("embed/text"), body, "application/json")
        }
        Kind::Image => (base.join("embed/image"), jpeg_640x480()?, "image/jpeg"),
    };
    let url = url.map_err(|e| e.to_string())?;
    let inputs_per_request = if args.kind == Kind::Text {
        args.inputs.max(1)
    } else {
        1
    };

    let next = Arc::new(AtomicUsize::new(0));
    let deadline = Instant::now() + Duration::from_secs(args.max_seconds);
    let start = Instant::now();
    let mut clients = tokio::task::JoinSet::new();
    for _ in 0..args.concurrency {
        let (client, url, body, next) = (client.clone(), url.clone(), body.clone(), next.clone());
        let total = args.requests;
        clients.spawn(async move {
            let (mut ok, mut errors) = (Vec::new(), 0usize);
            while next.fetch_add(1, Ordering::Relaxed) < total && Instant::now() < deadline {
                let sent = Instant::now();
                let response = client
                    .post(url.clone())
                    .header("content-type", content_type)
                    .body(body.clone())
                    .send()
                    .await;
                let answered = match response {
                    Ok(r) if r.status().is_success() => r.bytes().await.is_ok(),
                    _ => false,
                };
                if answered {
                    ok.push(sent.elapsed());
                } else {
                    errors += 1;
                }
            }
            (ok, errors)
        });
    }
    let (mut latencies, mut errors) = (Vec::new(), 0);
    while let Some(done) = clients.join_next().await {
        let (ok, err) = done.map_err(|e| e.to_string())?;
        latencies.extend(ok);
        errors += err;
    }
    let seconds = start.elapsed().as_secs_f64();
    latencies.sort();
    let ms = |q: f64| {
        if latencies.is_empty() {
            f64::NAN
        } else {
            let i = ((latencies.len() - 1) as f64 * q).round() as usize;
            latencies[i].as_secs_f64() * 1e3
        }
    };
    let ok = latencies.len();
    if args.header {
        println!("| kind | concurrency | requests ok | errors | seconds | requests/s | inputs/s | p50 ms | p99 ms |");
        println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    }
    println!(
        "| {:?} x{} | {} | {} | {} | {:.2} | {:.1} | {:.1} | {:.1} | {:.1} |",
        args.kind,
        inputs_per_request,
        args.concurrency,
        ok,
        errors,
        seconds,
        ok as f64 / seconds,
        (ok * inputs_per_request) as f64 / seconds,
        ms(0.5),
        ms(0.99)
    );
    Ok(())
}

/// Parses `url` and refuses any host that is not (or does not resolve only to) a loopback address.
fn loopback_url(url: &str) -> Result<Url, String> {
    let mut parsed = Url::parse(url).map_err(|e| format!("--url {url}: {e}"))?;
    if parsed.scheme() != "http" {
        return Err(format!("--url {url}: only http:// is supported"));
    }
    let host = parsed
        .host_str()
        .ok_or_else(|| format!("--url {url} has no host"))?
        .trim_matches(['[', ']'])
        .to_owned();
    let port = parsed.port_or_known_default().unwrap_or(80);
    let addrs: Vec<IpAddr> = match host.parse::<IpAddr>() {
        Ok(ip) => vec![ip],
        Err(_) => (host.as_str(), port)
            .to_socket_addrs()
            .map_err(|e| format!("--url {url}: cannot resolve {host}: {e}"))?
            .map(|a| a.ip())
            .collect(),
    };
    if addrs.is_empty() || !addrs.iter().all(IpAddr::is_loopback) {
        return Err(format!(
            "--url {url}: the load generator only targets loopback addresses (127.0.0.0/8, ::1, localhost)"
        ));
    }
    if !parsed.path().ends_with('/') {
        let path = format!("{}/", parsed.path());
        parsed.set_path(&path);
    }
    Ok(parsed)
}

/// A 640x480 JPEG (a smooth gradient with some texture) made in memory.
fn jpeg_640x480() -> Result<Vec<u8>, String> {
    let img = image::RgbImage::from_fn(640, 480, |x, y| {
        image::Rgb([
            (x * 255 / 640) as u8,
            (y * 255 / 480) as u8,
            ((x ^ y) % 256) as u8,
        ])
    });
    let mut out = Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Jpeg)
        .map_err(|e| e.to_string())?;
    Ok(out.into_inner())
}
