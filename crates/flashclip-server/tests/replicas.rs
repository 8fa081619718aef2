//! Model replicas: with `replicas` > 1 and a model that has them, several threads take batches from the one queue,
//! so a request is answered while another replica is still busy; a model without replicas runs one thread.

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use flashclip_model::backend::Embedder;
use flashclip_server::ServerConfig;
use ndarray::Array2;

use common::{
    assert_rows_close, config, cpu_model, delegate_accessors, serve, text_rows, Direct, Gate,
};

/// What the replicas of one test share: which replica ran each call, and a gate that holds the first call made
/// once armed (warm-up calls pass).
#[derive(Default)]
struct Shared {
    next_id: AtomicUsize,
    calls: Mutex<Vec<usize>>,
    armed: AtomicBool,
    gate: Gate,
}

/// The tiny CPU model, with replicas (each another copy of it) as a GPU model has.
struct Replicated {
    inner: Box<dyn Embedder>,
    id: usize,
    shared: Arc<Shared>,
}

impl Replicated {
    fn new(shared: Arc<Shared>) -> Self {
        let id = shared.next_id.fetch_add(1, Ordering::SeqCst);
        Self {
            inner: cpu_model(8),
            id,
            shared,
        }
    }

    fn enter(&self) {
        self.shared.calls.lock().expect("calls").push(self.id);
        if self.shared.armed.swap(false, Ordering::SeqCst) {
            self.shared.gate.close();
            self.shared.gate.pass();
        }
    }
}

impl Embedder for Replicated {
    delegate_accessors!(inner);
    fn embed_images(&mut self, pixels: &[f32]) -> flashclip_model::Result<Array2<f32>> {
        self.enter();
        self.inner.embed_images(pixels)
    }
    fn embed_texts(&mut self, texts: &[Vec<u32>]) -> flashclip_model::Result<Array2<f32>> {
        self.enter();
        self.inner.embed_texts(texts)
    }
    fn replica(&self) -> flashclip_model::Result<Option<Box<dyn Embedder>>> {
        Ok(Some(Box::new(Replicated::new(self.shared.clone()))))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_second_replica_answers_while_the_first_is_busy() {
    let shared = Arc::new(Shared::default());
    let model = Box::new(Replicated::new(shared.clone()));
    let s = serve(
        ServerConfig {
            replicas: 2,
            ..config()
        },
        model,
    )
    .await;
    // Both replicas were made and warmed before the server said it was ready.
    let warmed: Vec<usize> = shared.calls.lock().expect("calls").clone();
    assert!(warmed.contains(&0) && warmed.contains(&1), "{warmed:?}");

    let mut direct = Direct::new();
    let (held, free) = (direct.texts(&["a cat"]), direct.texts(&["a dog"]));
    shared.armed.store(true, Ordering::SeqCst);
    let (client, url) = (s.client.clone(), s.at("/embed/text"));
    let first = tokio::spawn(async move { text_rows(&client, &url, &["a cat"]).await });
    shared.gate.wait_entered(1).await;
    // One replica is held mid-batch: the other answers.
    let answer = tokio::time::timeout(
        Duration::from_secs(20),
        text_rows(&s.client, &s.at("/embed/text"), &["a dog"]),
    )
    .await
    .expect("the free replica answers while the other is held");
    assert_rows_close(&answer, &free);

    shared.gate.open();
    assert_rows_close(&first.await.unwrap(), &held);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_without_replicas_serves_on_one_thread() {
    // The CPU reference has no replicas: asking for three runs one, and answers as always.
    let s = serve(
        ServerConfig {
            replicas: 3,
            ..config()
        },
        cpu_model(8),
    )
    .await;
    let want = Direct::new().texts(&["a cat", "a dog"]);
    let got = text_rows(&s.client, &s.at("/embed/text"), &["a cat", "a dog"]).await;
    assert_rows_close(&got, &want);
}
