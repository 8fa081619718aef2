//! `/zero-shot` on a SigLIP model (the tiny fixture on the CPU, loaded from its directory as `flashclip serve`
//! does): a sigmoid per label with the checkpoint's scale and bias, not a softmax over the labels.

mod common;

use std::path::PathBuf;

use common::{config, data_url, png, start_model};
use flashclip::DType;
use flashclip_model::backend::{self, Device};
use flashclip_model::siglip::SiglipWeights;
use flashclip_model::{open_model_dir, AnyTokenizer};
use flashclip_server::load_model_dir;
use serde_json::{json, Value};

fn siglip_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../flashclip-model/tests/fixtures/tiny-siglip")
}

fn normalized(v: &[f32]) -> Vec<f64> {
    let norm = v.iter().map(|&x| f64::from(x).powi(2)).sum::<f64>().sqrt();
    v.iter().map(|&x| f64::from(x) / norm).collect()
}

/// The labels' probabilities computed here: the CPU model called directly, the sigmoid written out.
fn expected(image: &[u8], prompts: &[String]) -> Vec<f64> {
    let dir = siglip_dir();
    let (model_config, checkpoint) = open_model_dir(&dir).unwrap();
    let mut model = backend::load(Device::Cpu, DType::F32, &model_config, &checkpoint, 8).unwrap();
    let pre = model_config.preprocessor(Some(&dir)).unwrap();
    let pixels = pre.preprocess_bytes(image, "image").unwrap();
    let (tokenizer, _) = AnyTokenizer::for_model_dir(&dir, &model_config).unwrap();
    let ids = tokenizer
        .encode_batch(prompts, model_config.context_length())
        .unwrap();
    let image = normalized(model.embed_images(&pixels).unwrap().as_slice().unwrap());
    let texts = model.embed_texts(&ids).unwrap();
    let (_, weights) = SiglipWeights::load_dir(&dir).unwrap();
    let (scale, bias) = (
        f64::from(weights.logit_scale).exp(),
        f64::from(weights.logit_bias),
    );
    texts
        .rows()
        .into_iter()
        .map(|row| {
            let t = normalized(row.as_slice().unwrap());
            let cos: f64 = t.iter().zip(&image).map(|(a, b)| a * b).sum();
            1.0 / (1.0 + (-(scale * cos + bias)).exp())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zero_shot_on_siglip_is_a_sigmoid_per_label() {
    // Short prompts: the fixture's 90-piece vocabulary spells unseen words letter by letter.
    let labels = ["cat", "dog", "red sofa", "fox"];
    let prompts: Vec<String> = labels.iter().map(|l| format!("a {l}")).collect();
    let img = png(3);
    let want = expected(&img, &prompts);
    let mut s = start_model(config(), || {
        load_model_dir(&siglip_dir(), Device::Cpu, DType::F32, 8)
    })
    .await;
    s.server.ready().await.expect("server ready");
    let r: Value = s
        .post_json(
            "/zero-shot",
            &json!({"image": data_url(&img), "labels": labels, "template": "a {}"}),
        )
        .await
        .json()
        .await
        .unwrap();
    let results = r["results"].as_array().unwrap_or_else(|| panic!("{r}"));
    assert_eq!(results.len(), labels.len());
    let mut previous = f64::INFINITY;
    let mut total = 0.0;
    for result in results {
        let label = result["label"].as_str().unwrap();
        let p = result["probability"].as_f64().unwrap();
        let i = labels.iter().position(|l| *l == label).unwrap();
        assert!((p - want[i]).abs() < 1e-5, "{label}: {p} vs {}", want[i]);
        assert!(p <= previous, "not sorted");
        previous = p;
        total += p;
    }
    // Each label judged alone: four sigmoids, not a distribution over the labels.
    assert!((total - 1.0).abs() > 1e-3, "probabilities sum to {total}");

    // A text the tokenizer would cut to the 16-token context is refused, as for the other families.
    let long = "the quick brown fox jumps over the lazy dog and keeps running far away";
    let r = s
        .post_json("/embed/text", &json!({"texts": ["a cat", long]}))
        .await;
    assert_eq!(r.status(), 400);
    let body = r.text().await.unwrap();
    assert!(
        body.contains("texts[1] is longer than the model's context of 16 tokens"),
        "{body}"
    );
}
