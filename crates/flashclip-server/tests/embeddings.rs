//! The server's answers equal the model's own embeddings, for every endpoint and for many clients at once.

mod common;

use std::sync::mpsc;
use std::sync::Arc;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use common::{
    assert_rows_close, config, data_url, image_rows, png, rows, serve, start, text_rows, Direct,
    Gate, Overlapping,
};
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_is_503_until_the_model_is_loaded_and_warm() {
    let (release, wait) = mpsc::channel::<()>();
    let mut s = start(config(), move || {
        let _ = wait.recv();
        common::cpu_model(8)
    })
    .await;
    let health = s.client.get(s.at("/health")).send().await.unwrap();
    assert_eq!(health.status(), 503);
    assert!(health.headers().contains_key("retry-after"));
    let body: Value = health.json().await.unwrap();
    assert_eq!(body["status"], "loading");
    let early = s
        .post_json("/embed/text", &json!({"texts": ["a cat"]}))
        .await;
    assert_eq!(early.status(), 503);
    let body: Value = early.json().await.unwrap();
    assert_eq!(body["error"]["type"], "not_ready");

    release.send(()).unwrap();
    s.server.ready().await.unwrap();
    let health = s.client.get(s.at("/health")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    let body: Value = health.json().await.unwrap();
    assert_eq!(body["status"], "ready");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_endpoint_answers_the_models_normalized_embeddings() {
    let mut direct = Direct::new();
    let s = serve(config(), common::cpu_model(8)).await;
    let texts = ["a photo of a cat", "a red car on a beach", "zebra"];
    let images = [
        png(1),
        png(2),
        common::image(3, 64, 48, image::ImageFormat::Jpeg),
    ];
    let want_texts = direct.texts(&texts);
    let want_images = direct.images(&images);
    let dim = direct.config().projection_dim();

    let r: Value = s
        .post_json("/embed/text", &json!({ "texts": texts }))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(r["model"], "tiny");
    assert_rows_close(&rows(&r["embeddings"]), &want_texts);
    assert_eq!(rows(&r["embeddings"])[0].len(), dim);

    // One image as the raw body.
    let r: Value = s
        .client
        .post(s.at("/embed/image"))
        .header("content-type", "image/png")
        .body(images[0].clone())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_rows_close(&rows(&r["embeddings"]), &want_images[..1]);

    // Several as multipart parts, answered in part order.
    let mut form = reqwest::multipart::Form::new();
    for (i, img) in images.iter().enumerate() {
        form = form.part(
            "file",
            reqwest::multipart::Part::bytes(img.clone()).file_name(format!("{i}.img")),
        );
    }
    let r: Value = s
        .client
        .post(s.at("/embed/image"))
        .multipart(form)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_rows_close(&rows(&r["embeddings"]), &want_images);

    // OpenAI's shape, texts and images mixed; every row at its own index.
    let body = json!({
        "model": "anything",
        "input": [texts[0], {"type": "image", "image": data_url(&images[1])},
                  {"type": "text", "text": texts[1]}, {"type": "image", "image": STANDARD.encode(&images[2])}],
    });
    let r: Value = s
        .post_json("/v1/embeddings", &body)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(r["object"], "list");
    assert_eq!(r["model"], "tiny");
    let data = r["data"].as_array().unwrap();
    assert_eq!(data.len(), 4);
    for (i, d) in data.iter().enumerate() {
        assert_eq!(d["object"], "embedding");
        assert_eq!(d["index"], i);
    }
    let got: Vec<Value> = data.iter().map(|d| d["embedding"].clone()).collect();
    let want = [
        want_texts[0].clone(),
        want_images[1].clone(),
        want_texts[1].clone(),
        want_images[2].clone(),
    ];
    assert_rows_close(&rows(&Value::Array(got)), &want);
    // "a photo of a cat" and "a red car on a beach": 5 and 6 words, each with start and end tokens.
    assert_eq!(r["usage"]["prompt_tokens"], 7 + 8);
    assert_eq!(r["usage"]["total_tokens"], 7 + 8);

    // A single string, as little-endian f32 in base64.
    let r: Value = s
        .post_json(
            "/v1/embeddings",
            &json!({"input": texts[2], "encoding_format": "base64"}),
        )
        .await
        .json()
        .await
        .unwrap();
    let bytes = STANDARD
        .decode(r["data"][0]["embedding"].as_str().unwrap())
        .unwrap();
    let row: Vec<f32> = bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    assert_rows_close(&[row], &want_texts[2..]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zero_shot_is_a_softmax_of_scaled_cosines_most_likely_first() {
    let mut direct = Direct::new();
    let s = serve(config(), common::cpu_model(8)).await;
    let labels = ["cat", "dog", "red car", "tree"];
    let prompts: Vec<String> = labels.iter().map(|l| format!("a drawing of {l}")).collect();
    let prompts: Vec<&str> = prompts.iter().map(String::as_str).collect();
    let img = png(7);
    let image = direct.images(std::slice::from_ref(&img)).remove(0);
    let texts = direct.texts(&prompts);
    let logits: Vec<f64> = texts
        .iter()
        .map(|t| {
            f64::from(direct.logit_scale())
                * t.iter()
                    .zip(&image)
                    .map(|(a, b)| f64::from(a * b))
                    .sum::<f64>()
        })
        .collect();
    let z: f64 = logits.iter().map(|l| l.exp()).sum();

    let r: Value = s
        .post_json(
            "/zero-shot",
            &json!({"image": data_url(&img), "labels": labels, "template": "a drawing of {}"}),
        )
        .await
        .json()
        .await
        .unwrap();
    let results = r["results"].as_array().unwrap();
    assert_eq!(results.len(), labels.len());
    let mut previous = f64::INFINITY;
    let mut total = 0.0;
    for result in results {
        let label = result["label"].as_str().unwrap();
        let p = result["probability"].as_f64().unwrap();
        let i = labels.iter().position(|l| *l == label).unwrap();
        assert!((p - logits[i].exp() / z).abs() < 1e-5, "{label}: {p}");
        assert!(p <= previous, "not sorted");
        previous = p;
        total += p;
    }
    assert!((total - 1.0).abs() < 1e-9);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_clients_each_get_the_rows_of_their_own_inputs() {
    const CLIENTS: u32 = 32;
    let mut direct = Direct::new();
    let mut cfg = config();
    cfg.max_wait = std::time::Duration::from_millis(20);
    let s = serve(cfg, common::cpu_model(8)).await;
    let colors = [
        "red", "blue", "green", "yellow", "black", "white", "big", "small",
    ];
    let things = ["cat", "dog", "bird", "fish"];
    // Client i sends two texts, or two images, that no other client sends.
    let text_pairs: Vec<[String; 2]> = (0..CLIENTS as usize)
        .map(|i| {
            let (c, t) = (colors[i % 8], things[i / 8]);
            [format!("a {c} {t}"), format!("the {t} {c}")]
        })
        .collect();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..CLIENTS {
        let client = s.client.clone();
        if i % 2 == 0 {
            let texts = text_pairs[i as usize].clone();
            let want = direct.texts(&[&texts[0], &texts[1]]);
            let url = s.at("/embed/text");
            tasks.spawn(async move { (text_rows(&client, &url, &texts).await, want) });
        } else {
            let imgs = [png(100 + i), png(200 + i)];
            let want = direct.images(&imgs);
            let url = s.at("/v1/embeddings");
            tasks.spawn(async move { (image_rows(&client, &url, &imgs).await, want) });
        }
    }
    let mut answered = 0;
    while let Some(joined) = tasks.join_next().await {
        let (got, want) = joined.unwrap();
        assert_rows_close(&got, &want);
        answered += 1;
    }
    assert_eq!(answered, CLIENTS);

    // Every input went through the model once, however the batches fell.
    let metrics = s
        .client
        .get(s.at("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let sum = |kind: &str| -> f64 {
        let prefix = format!("flashclip_batch_size_sum{{kind=\"{kind}\"}} ");
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .unwrap_or_else(|| panic!("no {prefix} in {metrics}"))
            .parse()
            .unwrap()
    };
    assert_eq!(sum("text"), f64::from(CLIENTS));
    assert_eq!(sum("image"), f64::from(CLIENTS));
    assert!(
        metrics.contains("flashclip_requests_total{endpoint=\"/embed/text\",status=\"200\"} 16")
    );
    assert!(metrics.contains("flashclip_queue_depth 0"));
}

/// With a model that starts image batches and finishes them later (as the GPU backends do), the server keeps one
/// batch in flight while it starts the next, and every client still gets the rows of its own images.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_in_flight_answer_each_client_with_its_own_rows() {
    const CLIENTS: u32 = 16;
    let mut direct = Direct::new();
    let mut cfg = config();
    cfg.max_batch = 4;
    cfg.max_wait = std::time::Duration::ZERO;
    let gate = Arc::new(Gate::default());
    let model = Overlapping::new(common::cpu_model(cfg.max_batch), gate.clone());
    let most_in_flight = model.most_in_flight.clone();
    let s = serve(cfg, Box::new(model)).await;
    // Hold the model in its first start until every client is queued, so the next batches are waiting.
    gate.close();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..CLIENTS {
        let imgs = [png(500 + i), png(600 + i)];
        let want = direct.images(&imgs);
        let (client, url) = (s.client.clone(), s.at("/v1/embeddings"));
        tasks.spawn(async move { (image_rows(&client, &url, &imgs).await, want) });
    }
    gate.wait_entered(1).await;
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    gate.open();
    while let Some(done) = tasks.join_next().await {
        let (got, want) = done.unwrap();
        assert_rows_close(&got, &want);
    }
    assert_eq!(most_in_flight.load(std::sync::atomic::Ordering::SeqCst), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_larger_than_a_batch_runs_in_several_and_keeps_its_order() {
    let mut direct = Direct::new();
    let mut cfg = config();
    cfg.max_batch = 3;
    let s = serve(cfg, common::cpu_model(3)).await;
    let colors = ["red", "blue", "green", "yellow", "black", "white", "big"];
    let texts: Vec<String> = colors.iter().map(|c| format!("a {c} boat")).collect();
    let want = direct.texts(&texts.iter().map(String::as_str).collect::<Vec<_>>());
    let r: Value = s
        .post_json("/embed/text", &json!({ "texts": texts }))
        .await
        .json()
        .await
        .unwrap();
    assert_rows_close(&rows(&r["embeddings"]), &want);
}
