//! `POST /v1/embeddings` in OpenAI's shape, with images as extra input objects.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::Json;

use super::AppState;
use crate::api::{
    decode_base64_image, parse_embeddings_request, EmbeddingObject, EmbeddingValue,
    EmbeddingsResponse, Item, Usage,
};
use crate::errors::ApiError;
use crate::prepare::{self, Named};

/// Texts and images of one request go to the batcher as two requests, side by side; the answer lists every
/// input's embedding at its own index.
pub(super) async fn embeddings(
    State(state): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<EmbeddingsResponse>, ApiError> {
    let model = state.model()?;
    let request = parse_embeddings_request(&super::body(body)?)?;
    state.check_count(request.items.len(), "inputs")?;
    let (mut text_at, mut texts, mut image_at, mut images) = (vec![], vec![], vec![], vec![]);
    for (i, item) in request.items.into_iter().enumerate() {
        let name = format!("input[{i}]");
        match item {
            Item::Text(text) => {
                text_at.push(i);
                texts.push(Named::new(name, text));
            }
            Item::Image(data) => {
                let bytes = decode_base64_image(&data, &name, state.config.max_body_bytes)?;
                image_at.push(i);
                images.push(Named::new(name, Bytes::from(bytes)));
            }
        }
    }
    let text_rows = async {
        if texts.is_empty() {
            return Ok((Vec::new(), 0));
        }
        let (inputs, tokens) = prepare::texts(model.clone(), texts).await?;
        Ok::<_, ApiError>((state.embed(inputs).await?, tokens))
    };
    let image_rows = async {
        if images.is_empty() {
            return Ok(Vec::new());
        }
        let inputs = prepare::images(model.clone(), images).await?;
        state.embed(inputs).await
    };
    let ((text_rows, tokens), image_rows) = tokio::try_join!(text_rows, image_rows)?;
    let mut data: Vec<EmbeddingObject> = text_at
        .into_iter()
        .zip(text_rows)
        .chain(image_at.into_iter().zip(image_rows))
        .map(|(index, row)| EmbeddingObject {
            object: "embedding",
            index,
            embedding: EmbeddingValue::new(row, request.format),
        })
        .collect();
    data.sort_by_key(|d| d.index);
    Ok(Json(EmbeddingsResponse {
        object: "list",
        data,
        model: state.config.model_name.clone(),
        usage: Usage {
            prompt_tokens: tokens,
            total_tokens: tokens,
        },
    }))
}
