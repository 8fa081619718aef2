//! Warm-up: where the model runs small batches as captured CUDA graphs, the server runs each such batch size
//! (images, and short texts of each padding bucket) before it reports ready, so no request pays for a capture.

mod common;

use std::sync::{Arc, Mutex};

use flashclip_model::backend::Embedder;
use ndarray::Array2;

use common::{config, delegate_accessors, serve};

/// One model call: inputs kind, batch size, longest text (0 for images).
type Call = (&'static str, usize, usize);

/// A CPU model that says it captures graphs of up to 3 inputs and records every call's batch shape.
struct Recording {
    inner: Box<dyn Embedder>,
    calls: Arc<Mutex<Vec<Call>>>,
}

impl Embedder for Recording {
    delegate_accessors!(inner);
    fn graph_max_batch(&self) -> usize {
        3
    }
    fn embed_images(&mut self, pixels: &[f32]) -> flashclip_model::Result<Array2<f32>> {
        let out = self.inner.embed_images(pixels)?;
        self.calls
            .lock()
            .expect("calls")
            .push(("images", out.nrows(), 0));
        Ok(out)
    }
    fn embed_texts(&mut self, texts: &[Vec<u32>]) -> flashclip_model::Result<Array2<f32>> {
        let longest = texts.iter().map(Vec::len).max().unwrap_or(0);
        self.calls
            .lock()
            .expect("calls")
            .push(("texts", texts.len(), longest));
        self.inner.embed_texts(texts)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_warms_every_graph_batch_size_before_it_is_ready() {
    let calls = Arc::new(Mutex::new(Vec::new()));
    let model = Box::new(Recording {
        inner: common::cpu_model(8),
        calls: calls.clone(),
    });
    let s = serve(config(), model).await;
    let warmed = calls.lock().expect("calls").clone();
    // The tiny model's context is 16 tokens; an empty text is 2.
    let mut want = vec![
        ("images", 1, 0),
        ("images", 2, 0),
        ("images", 3, 0),
        ("texts", 1, 2),
    ];
    for n in 1..=3 {
        want.extend([("texts", n, 8), ("texts", n, 16)]);
    }
    assert_eq!(warmed, want);
    let r = s
        .post_json("/embed/text", &serde_json::json!({"texts": ["a cat"]}))
        .await;
    assert_eq!(r.status(), 200);
}
