//! The server on the GPU backend: many clients at once, each image batch started on the GPU while the next one
//! forms, every client answered with the rows of its own images (against the CPU reference forward).

mod common;

use common::{config, image_rows, png, serve, Direct};
use flashclip::testing::gpu_or_skip;
use flashclip::DType;
use flashclip_model::backend::{self, Device};
use flashclip_model::Checkpoint;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn gpu_concurrent_image_clients_each_get_their_own_rows() {
    const CLIENTS: u32 = 24;
    let Some(gpu) = gpu_or_skip("gpu_concurrent_image_clients_each_get_their_own_rows") else {
        return;
    };
    drop(gpu);
    let (model_config, checkpoint) = Checkpoint::open_dir(common::tiny_dir()).expect("tiny model");
    let cfg = config();
    let embedder = backend::load(
        Device::Cuda(0),
        DType::F32,
        &model_config,
        &checkpoint,
        cfg.max_batch,
    )
    .expect("GPU backend");
    let mut direct = Direct::new();
    let s = serve(cfg, embedder).await;
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..CLIENTS {
        let imgs = [png(300 + i), png(400 + i)];
        let want = direct.images(&imgs);
        let (client, url) = (s.client.clone(), s.at("/v1/embeddings"));
        tasks.spawn(async move { (i, image_rows(&client, &url, &imgs).await, want) });
    }
    while let Some(done) = tasks.join_next().await {
        let (i, got, want) = done.expect("client task");
        assert_eq!(got.len(), 2, "client {i}");
        for (g, w) in got.iter().zip(&want) {
            // The GPU's f32 forward against the CPU's: close, and far from every other client's rows.
            let worst = g
                .iter()
                .zip(w)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0f32, f32::max);
            assert!(worst < 1e-3, "client {i}: rows differ by {worst}");
        }
    }
    println!("{CLIENTS} clients, 2 images each, answered with their own rows");
}
