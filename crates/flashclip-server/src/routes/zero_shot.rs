//! `POST /zero-shot`: one image against prompts made from labels.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::Json;

use super::AppState;
use crate::api::{
    decode_base64_image, parse_json, LabelProbability, ZeroShotRequest, ZeroShotResponse,
};
use crate::errors::ApiError;
use crate::prepare::{self, Named};

/// Label probabilities by the model's rule (`softmax(logit_scale · cos)` over the labels, or SigLIP's
/// `sigmoid(logit_scale · cos + logit_bias)` per label), most likely first.
pub(super) async fn zero_shot(
    State(state): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<ZeroShotResponse>, ApiError> {
    let model = state.model()?;
    let request: ZeroShotRequest = parse_json(&super::body(body)?)?;
    state.check_count(request.labels.len(), "labels")?;
    if !request.template.contains("{}") {
        return Err(ApiError::BadRequest(format!(
            "template must contain {{}} where the label goes, got {:?}",
            request.template
        )));
    }
    let bytes = decode_base64_image(&request.image, "image", state.config.max_body_bytes)?;
    let prompts = request
        .labels
        .iter()
        .enumerate()
        .map(|(i, label)| {
            Named::new(
                format!("labels[{i}]"),
                request.template.replace("{}", label),
            )
        })
        .collect();
    let image = async {
        let inputs =
            prepare::images(model.clone(), vec![Named::new("image", Bytes::from(bytes))]).await?;
        state.embed(inputs).await
    };
    let texts = async {
        let (inputs, _) = prepare::texts(model.clone(), prompts).await?;
        state.embed(inputs).await
    };
    let (image, texts) = tokio::try_join!(image, texts)?;
    let image = image
        .first()
        .ok_or_else(|| ApiError::Internal("the model returned no image embedding".into()))?;
    let probabilities = model
        .zero_shot
        .probabilities(image, texts.iter().map(Vec::as_slice));
    let mut results: Vec<LabelProbability> = request
        .labels
        .into_iter()
        .zip(probabilities)
        .map(|(label, probability)| LabelProbability { label, probability })
        .collect();
    results.sort_by(|a, b| b.probability.total_cmp(&a.probability));
    Ok(Json(ZeroShotResponse {
        model: state.config.model_name.clone(),
        results,
    }))
}
