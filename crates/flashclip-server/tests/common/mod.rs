//! What the server tests share: the tiny model on the CPU, its tokenizer, a gate to hold the model mid-batch, and
//! a server on a free loopback port.

#![allow(dead_code)] // each test file uses its own part

use std::io::Cursor;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use flashclip::DType;
use flashclip_model::backend::{self, Device, StartedImages, MAX_STARTED};
use flashclip_model::preprocess::Preprocessor;
use flashclip_model::tokenizer::ClipTokenizer;
use flashclip_model::{AnyTokenizer, Checkpoint, Embedder, ModelConfig, ModelError};
use flashclip_server::{Model, Server, ServerConfig, ServerError};
use ndarray::Array2;
use tokio::sync::oneshot;

/// The tiny Hugging Face checkpoint of flashclip-model's tests (32-pixel images, 16-token context).
pub fn tiny_dir() -> PathBuf {
    crate_dir().join("../flashclip-model/tests/fixtures/tiny")
}

fn crate_dir() -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")))
}

/// A word-level tokenizer whose ids fit the tiny model's vocabulary.
pub fn tokenizer() -> ClipTokenizer {
    ClipTokenizer::from_tokenizer_json(crate_dir().join("tests/fixtures/tokenizer.json"))
        .expect("test tokenizer")
}

/// The tiny model on the CPU (the f32 reference forward).
pub fn cpu_model(max_batch: usize) -> Box<dyn Embedder> {
    let (config, checkpoint) = Checkpoint::open_dir(tiny_dir()).expect("tiny model");
    backend::load(Device::Cpu, DType::F32, &config, &checkpoint, max_batch).expect("cpu backend")
}

/// The model the tests compare the server against: the same CPU forward, called directly.
pub struct Direct {
    model: Box<dyn Embedder>,
    tokenizer: ClipTokenizer,
    pre: Preprocessor,
}

impl Direct {
    pub fn new() -> Self {
        let model = cpu_model(64);
        let pre = Preprocessor::new(model.config().image_size() as u32);
        Self {
            model,
            tokenizer: tokenizer(),
            pre,
        }
    }

    pub fn config(&self) -> &ModelConfig {
        self.model.config()
    }

    pub fn logit_scale(&self) -> f32 {
        self.model.logit_scale()
    }

    /// L2-normalized text embeddings.
    pub fn texts(&mut self, texts: &[&str]) -> Vec<Vec<f32>> {
        let ids: Vec<Vec<u32>> = texts
            .iter()
            .map(|t| self.tokenizer.encode(t).expect("tokenize"))
            .collect();
        normalize(self.model.embed_texts(&ids).expect("embed texts"))
    }

    /// L2-normalized image embeddings of encoded images.
    pub fn images(&mut self, images: &[Vec<u8>]) -> Vec<Vec<f32>> {
        let pixels: Vec<f32> = images
            .iter()
            .flat_map(|b| self.pre.preprocess_bytes(b, "test").expect("preprocess"))
            .collect();
        normalize(self.model.embed_images(&pixels).expect("embed images"))
    }
}

fn normalize(rows: Array2<f32>) -> Vec<Vec<f32>> {
    rows.outer_iter()
        .map(|r| {
            let norm = r.iter().map(|v| v * v).sum::<f32>().sqrt();
            r.iter().map(|v| v / norm).collect()
        })
        .collect()
}

/// The rows of a `/v1/embeddings` answer (`data[i].embedding`).
pub fn data_rows(v: &serde_json::Value) -> Vec<Vec<f32>> {
    let data = v["data"].as_array().expect("a data list");
    let embeddings = data.iter().map(|d| d["embedding"].clone()).collect();
    rows(&serde_json::Value::Array(embeddings))
}

/// A JSON list of embeddings (an answer's `embeddings`) as rows.
pub fn rows(v: &serde_json::Value) -> Vec<Vec<f32>> {
    v.as_array()
        .expect("a list of rows")
        .iter()
        .map(|r| {
            r.as_array()
                .expect("a row")
                .iter()
                .map(|x| x.as_f64().expect("a number") as f32)
                .collect()
        })
        .collect()
}

/// POSTs `body` as JSON to `url` and returns the JSON answer.
async fn post_for_json(
    client: &reqwest::Client,
    url: &str,
    body: serde_json::Value,
) -> serde_json::Value {
    let sent = client.post(url).json(&body).send().await.expect("send");
    sent.json().await.expect("a JSON answer")
}

/// POSTs `texts` to `/embed/text` at `url` (the endpoint's full address) and returns the embeddings' rows.
pub async fn text_rows<S: serde::Serialize>(
    client: &reqwest::Client,
    url: &str,
    texts: &[S],
) -> Vec<Vec<f32>> {
    let r = post_for_json(client, url, serde_json::json!({ "texts": texts })).await;
    rows(&r["embeddings"])
}

/// POSTs encoded images to `url` (`/v1/embeddings`) as data URLs and returns the answer's rows.
pub async fn image_rows(client: &reqwest::Client, url: &str, images: &[Vec<u8>]) -> Vec<Vec<f32>> {
    let input: Vec<serde_json::Value> = images
        .iter()
        .map(|b| serde_json::json!({"type": "image", "image": data_url(b)}))
        .collect();
    data_rows(&post_for_json(client, url, serde_json::json!({ "input": input })).await)
}

/// Asserts two sets of rows agree within `1e-5`.
pub fn assert_rows_close(got: &[Vec<f32>], want: &[Vec<f32>]) {
    assert_eq!(got.len(), want.len(), "row count");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert_eq!(g.len(), w.len(), "row {i} length");
        let worst = g
            .iter()
            .zip(w)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        assert!(worst < 1e-5, "row {i} differs by {worst}");
    }
}

/// A `w`×`h` image in `format` whose pixels depend on `seed`, so that every seed embeds differently.
pub fn image(seed: u32, w: u32, h: u32, format: image::ImageFormat) -> Vec<u8> {
    let img = image::RgbImage::from_fn(w, h, |x, y| {
        let v = |k: u32| ((x * (seed % 7 + 1) + y * k + seed * 37) % 256) as u8;
        image::Rgb([v(3), v(5 + seed % 3), v(11)])
    });
    let mut out = Cursor::new(Vec::new());
    img.write_to(&mut out, format).expect("encode image");
    out.into_inner()
}

/// `bytes` as a PNG data URL, as JSON requests carry images.
pub fn data_url(bytes: &[u8]) -> String {
    use base64::Engine;
    format!(
        "data:image/png;base64,{}",
        base64::engine::general_purpose::STANDARD.encode(bytes)
    )
}

/// A PNG test image.
pub fn png(seed: u32) -> Vec<u8> {
    image(seed, 40, 30, image::ImageFormat::Png)
}

/// Holds the model mid-call while closed, so tests can keep it busy for exactly as long as they need.
#[derive(Default)]
pub struct Gate {
    closed: Mutex<bool>,
    opened: Condvar,
    entered: AtomicUsize,
}

impl Gate {
    pub fn close(&self) {
        *self.closed.lock().expect("gate") = true;
    }

    pub fn open(&self) {
        *self.closed.lock().expect("gate") = false;
        self.opened.notify_all();
    }

    /// Waits (up to 20 s) until `n` model calls have been held at the closed gate.
    pub async fn wait_entered(&self, n: usize) {
        for _ in 0..2000 {
            if self.entered.load(Ordering::SeqCst) >= n {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the model was never called");
    }

    pub fn pass(&self) {
        let mut closed = self.closed.lock().expect("gate");
        if *closed {
            self.entered.fetch_add(1, Ordering::SeqCst);
        }
        while *closed {
            closed = self.opened.wait(closed).expect("gate");
        }
    }
}

/// The accessors of an [`Embedder`] that wraps another in field `$inner`, passed through.
macro_rules! delegate_accessors {
    ($inner:tt) => {
        fn config(&self) -> &flashclip_model::ModelConfig {
            self.$inner.config()
        }
        fn max_batch(&self) -> usize {
            self.$inner.max_batch()
        }
        fn logit_scale(&self) -> f32 {
            self.$inner.logit_scale()
        }
        fn describe(&self) -> String {
            self.$inner.describe()
        }
    };
}
#[allow(unused_imports)] // only some test files wrap an embedder
pub(crate) use delegate_accessors;

/// An [`Embedder`] that passes through a [`Gate`] before each call.
pub struct Gated {
    pub inner: Box<dyn Embedder>,
    pub gate: Arc<Gate>,
}

impl Embedder for Gated {
    delegate_accessors!(inner);
    fn embed_images(&mut self, pixels: &[f32]) -> flashclip_model::Result<Array2<f32>> {
        self.gate.pass();
        self.inner.embed_images(pixels)
    }
    fn embed_texts(&mut self, texts: &[Vec<u32>]) -> flashclip_model::Result<Array2<f32>> {
        self.gate.pass();
        self.inner.embed_texts(texts)
    }
}

/// An [`Embedder`] that starts batches of images as a GPU backend does, seen from the server: `start_image_parts`
/// (after the gate) computes the rows but holds them, at most [`MAX_STARTED`] batches, until `finish_images` takes
/// them by ticket; `most_in_flight` records the most it held at once.
pub struct Overlapping {
    pub inner: Box<dyn Embedder>,
    pub gate: Arc<Gate>,
    pub most_in_flight: Arc<AtomicUsize>,
    held: Vec<(u64, Array2<f32>)>,
    tickets: u64,
}

impl Overlapping {
    pub fn new(inner: Box<dyn Embedder>, gate: Arc<Gate>) -> Self {
        Self {
            inner,
            gate,
            most_in_flight: Arc::default(),
            held: Vec::new(),
            tickets: 0,
        }
    }
}

impl Embedder for Overlapping {
    delegate_accessors!(inner);
    fn embed_images(&mut self, pixels: &[f32]) -> flashclip_model::Result<Array2<f32>> {
        self.inner.embed_images(pixels)
    }
    fn embed_texts(&mut self, texts: &[Vec<u32>]) -> flashclip_model::Result<Array2<f32>> {
        self.inner.embed_texts(texts)
    }
    fn start_image_parts(&mut self, parts: &[&[f32]]) -> flashclip_model::Result<StartedImages> {
        if self.held.len() >= MAX_STARTED {
            return Err(ModelError::Input("too many batches started".into()));
        }
        self.gate.pass();
        let rows = self.inner.embed_image_parts(parts)?;
        self.tickets += 1;
        let started = StartedImages::pending(self.tickets, rows.nrows());
        self.held.push((self.tickets, rows));
        self.most_in_flight
            .fetch_max(self.held.len(), Ordering::SeqCst);
        Ok(started)
    }
    fn finish_images(&mut self, started: StartedImages) -> flashclip_model::Result<Array2<f32>> {
        let held = started
            .ticket()
            .and_then(|t| self.held.iter().position(|(h, _)| *h == t))
            .ok_or_else(|| ModelError::Input("finished images that were not started".into()))?;
        Ok(self.held.remove(held).1)
    }
}

/// An [`Embedder`] that panics on any text with an unknown word (token id 0), as a model bug would.
pub struct Faulty(pub Box<dyn Embedder>);

impl Embedder for Faulty {
    delegate_accessors!(0);
    fn embed_images(&mut self, pixels: &[f32]) -> flashclip_model::Result<Array2<f32>> {
        self.0.embed_images(pixels)
    }
    fn embed_texts(&mut self, texts: &[Vec<u32>]) -> flashclip_model::Result<Array2<f32>> {
        assert!(!texts.iter().flatten().any(|&id| id == 0), "test fault");
        self.0.embed_texts(texts)
    }
}

/// Settings for tests: loopback, a free port, small limits.
pub fn config() -> ServerConfig {
    ServerConfig {
        addr: "127.0.0.1:0".parse().expect("address"),
        model_name: "tiny".into(),
        max_batch: 8,
        max_wait: Duration::from_millis(5),
        queue_size: 64,
        max_body_bytes: 256 << 10,
        timeout: Duration::from_secs(30),
        max_inputs: 16,
        replicas: 1,
    }
}

/// A running test server and what stops it.
pub struct Running {
    pub server: Server,
    pub url: String,
    pub client: reqwest::Client,
    shutdown: Option<oneshot::Sender<()>>,
}

impl Running {
    /// Starts shutting down; in-flight requests still get their answers.
    pub fn shutdown(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }

    pub fn at(&self, path: &str) -> String {
        format!("{}{path}", self.url)
    }

    /// POSTs `body` as JSON to `path` and returns the response (any status).
    pub async fn post_json(&self, path: &str, body: &serde_json::Value) -> reqwest::Response {
        self.client
            .post(self.at(path))
            .json(body)
            .send()
            .await
            .expect("request sent")
    }
}

/// Starts a server on `embedder` with the test tokenizer and waits until it is ready.
pub async fn serve(config: ServerConfig, embedder: Box<dyn Embedder>) -> Running {
    let mut running = start(config, move || embedder).await;
    running.server.ready().await.expect("server ready");
    running
}

/// Starts a server whose model comes from `load` (run on the batcher's thread) with the test tokenizer; does not
/// wait for it.
pub async fn start(
    config: ServerConfig,
    load: impl FnOnce() -> Box<dyn Embedder> + Send + 'static,
) -> Running {
    start_model(config, move || {
        let embedder = load();
        let preprocessor = Preprocessor::new(embedder.config().image_size() as u32);
        Ok(Model {
            embedder,
            tokenizer: AnyTokenizer::Clip(tokenizer()),
            preprocessor,
        })
    })
    .await
}

/// Starts a server whose whole model (embedder, tokenizer, preprocessor) comes from `load`; does not wait for it.
pub async fn start_model(
    config: ServerConfig,
    load: impl FnOnce() -> Result<Model, ServerError> + Send + 'static,
) -> Running {
    let (tx, rx) = oneshot::channel::<()>();
    let loader = Box::new(load);
    let server = Server::start(config, loader, async {
        let _ = rx.await;
    })
    .await
    .expect("start server");
    let url = format!("http://{}", server.local_addr());
    let client = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("http client");
    Running {
        server,
        url,
        client,
        shutdown: Some(tx),
    }
}
