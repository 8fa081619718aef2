//! Bad requests, overload, timeouts and shutdown: each answers its status and message, and the server goes on.

mod common;

use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use common::{config, png, serve, Gate, Gated};
use serde_json::{json, Value};

/// A request that must succeed: the server still serves.
async fn good(s: &common::Running) {
    let r = s
        .post_json("/embed/text", &json!({"texts": ["a small dog"]}))
        .await;
    assert_eq!(r.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_answer_their_status_and_message_and_the_server_goes_on() {
    let s = serve(config(), common::cpu_model(8)).await;
    let jpeg = common::image(5, 48, 40, image::ImageFormat::Jpeg);
    let long_text = vec!["cat"; 15].join(" "); // 17 tokens with start and end: the context is 16
    let cases: Vec<(&str, &str, Vec<u8>, u16, &str)> = vec![
        ("/embed/text", "application/json", b"{\"texts\": [".to_vec(), 400, "invalid JSON"),
        ("/embed/text", "application/json", b"".to_vec(), 400, "body is empty"),
        ("/embed/text", "application/json", br#"{"texts": "a cat"}"#.to_vec(), 400, "invalid type"),
        ("/embed/text", "application/json", br#"{"text": ["a cat"]}"#.to_vec(), 400, "unknown field"),
        ("/embed/text", "application/json", br#"{"texts": []}"#.to_vec(), 400, "no texts"),
        ("/embed/text", "application/json", json!({"texts": vec!["a"; 17]}).to_string().into_bytes(), 400, "at most 16"),
        ("/embed/text", "application/json", json!({"texts": ["a cat", long_text]}).to_string().into_bytes(), 400, "texts[1] is 17 tokens long"),
        ("/v1/embeddings", "application/json", br#"{"input": 3}"#.to_vec(), 400, "input must be"),
        ("/v1/embeddings", "application/json", br#"{"input": []}"#.to_vec(), 400, "no inputs"),
        ("/v1/embeddings", "application/json", br#"{"input": [{"type": "image", "image": "@@@"}]}"#.to_vec(), 400, "input[0]: invalid base64"),
        ("/v1/embeddings", "application/json", json!({"input": [{"type": "image", "image": STANDARD.encode(b"not an image at all")}]}).to_string().into_bytes(), 400, "failed to decode image input[0]"),
        ("/v1/embeddings", "application/json", json!({"input": ["a", {"type": "image", "image": STANDARD.encode(&jpeg[..jpeg.len() / 2])}]}).to_string().into_bytes(), 400, "input[1] is truncated"),
        ("/embed/image", "image/png", b"GIF89a not really".to_vec(), 400, "failed to decode image body"),
        ("/embed/image", "image/png", Vec::new(), 400, "the body is empty"),
        ("/embed/image", "image/png", vec![0u8; 300 << 10], 413, "larger than the server's limit"),
        ("/zero-shot", "application/json", json!({"image": STANDARD.encode(png(1)), "labels": ["cat"], "template": "cat"}).to_string().into_bytes(), 400, "template must contain {}"),
        ("/zero-shot", "application/json", json!({"image": STANDARD.encode(png(1)), "labels": []}).to_string().into_bytes(), 400, "no labels"),
        ("/no/such/thing", "application/json", b"{}".to_vec(), 404, "no endpoint /no/such/thing"),
    ];
    for (path, content_type, body, status, message) in cases {
        let r = s
            .client
            .post(s.at(path))
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), status, "{path} {message}");
        let body: Value = r.json().await.unwrap();
        let got = body["error"]["message"].as_str().unwrap_or_default();
        assert!(got.contains(message), "{path}: {got:?} lacks {message:?}");
        assert!(body["error"]["type"].is_string());
        good(&s).await;
    }

    let r = s.client.get(s.at("/embed/text")).send().await.unwrap();
    assert_eq!(r.status(), 405);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["type"], "method_not_allowed");

    // Too many multipart parts.
    let mut form = reqwest::multipart::Form::new();
    for i in 0..17 {
        form = form.part(
            "file",
            reqwest::multipart::Part::bytes(png(i)).file_name("x.png"),
        );
    }
    let r = s
        .client
        .post(s.at("/embed/image"))
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    good(&s).await;

    let metrics = s
        .client
        .get(s.at("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains(
        "flashclip_errors_total{endpoint=\"/embed/image\",type=\"request_too_large\"} 1"
    ));
    assert!(metrics.contains("flashclip_requests_total{endpoint=\"/embed/text\",status=\"400\"} 7"));
    assert!(metrics.contains("flashclip_requests_total{endpoint=\"unmatched\",status=\"404\"} 1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_failure_answers_500_and_the_server_goes_on() {
    let s = serve(config(), Box::new(common::Faulty(common::cpu_model(8)))).await;
    let r = s
        .post_json("/embed/text", &json!({"texts": ["a zebra"]}))
        .await;
    assert_eq!(r.status(), 500);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["type"], "server_error");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("the model panicked"));
    good(&s).await;
}

/// A server whose model calls wait at `gate` when it is closed.
async fn gated(cfg: flashclip_server::ServerConfig) -> (common::Running, Arc<Gate>) {
    let gate = Arc::new(Gate::default());
    let model = Box::new(Gated {
        inner: common::cpu_model(8),
        gate: gate.clone(),
    });
    (serve(cfg, model).await, gate)
}

fn post_text(s: &common::Running, text: &str) -> tokio::task::JoinHandle<reqwest::Response> {
    let request = s
        .client
        .post(s.at("/embed/text"))
        .json(&json!({ "texts": [text] }));
    tokio::spawn(async move { request.send().await.unwrap() })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_answers_503_with_retry_after_and_the_server_lives() {
    let mut cfg = config();
    cfg.queue_size = 1;
    cfg.max_batch = 1;
    let (s, gate) = gated(cfg).await;
    gate.close();
    let busy = post_text(&s, "a cat");
    gate.wait_entered(1).await; // the model holds the first request; the queue is empty
    let mut others = tokio::task::JoinSet::new();
    for text in ["a dog", "a bird", "a fish"] {
        let request = s
            .client
            .post(s.at("/embed/text"))
            .json(&json!({ "texts": [text] }));
        others.spawn(async move { request.send().await.unwrap() });
    }
    // One of the three fits the queue and waits; the other two are refused at once.
    for _ in 0..2 {
        let r = others.join_next().await.unwrap().unwrap();
        assert_eq!(r.status(), 503);
        assert_eq!(r.headers()["retry-after"], "1");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["error"]["type"], "overloaded");
        assert!(body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("at capacity"));
    }
    gate.open();
    assert_eq!(busy.await.unwrap().status(), 200);
    assert_eq!(others.join_next().await.unwrap().unwrap().status(), 200);
    good(&s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_past_the_timeout_answers_504() {
    let mut cfg = config();
    cfg.timeout = Duration::from_millis(300);
    let (s, gate) = gated(cfg).await;
    gate.close();
    let r = post_text(&s, "a cat").await.unwrap();
    assert_eq!(r.status(), 504);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["type"], "timeout");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("300 ms"));
    gate.open();
    good(&s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_drains_requests_in_flight() {
    let (mut s, gate) = gated(config()).await;
    gate.close();
    let in_flight = post_text(&s, "a cat");
    gate.wait_entered(1).await;
    s.shutdown();
    gate.open();
    let r = in_flight.await.unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["embeddings"].as_array().unwrap().len(), 1);
    let common::Running { server, .. } = s;
    server.wait().await.unwrap();
}

/// The value of a metric line such as `flashclip_queue_depth 3`.
async fn metric(s: &common::Running, line_start: &str) -> Option<f64> {
    let text = s
        .client
        .get(s.at("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(line_start))
        .and_then(|v| v.trim().parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_wait_a_lone_request_runs_at_once_and_requests_queued_meanwhile_form_one_batch() {
    let mut cfg = config();
    cfg.max_wait = Duration::ZERO;
    let (s, gate) = gated(cfg).await;
    gate.close();
    let first = post_text(&s, "a cat");
    // The first request reaches the model although nothing else arrives and no wait is configured.
    gate.wait_entered(1).await;
    let queued: Vec<_> = ["a dog", "a bird", "a fish"]
        .into_iter()
        .map(|t| post_text(&s, t))
        .collect();
    for _ in 0..2000 {
        if metric(&s, "flashclip_queue_depth ").await == Some(3.0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(metric(&s, "flashclip_queue_depth ").await, Some(3.0));
    gate.open();
    assert_eq!(first.await.unwrap().status(), 200);
    for r in queued {
        assert_eq!(r.await.unwrap().status(), 200);
    }
    let batches = "flashclip_batch_size_count{kind=\"text\"} ";
    let inputs = "flashclip_batch_size_sum{kind=\"text\"} ";
    assert_eq!(metric(&s, batches).await, Some(2.0));
    assert_eq!(metric(&s, inputs).await, Some(4.0));
}
