//! `POST /embed/text` and `POST /embed/image`: embeddings and nothing else.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::multipart::Multipart;
use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequest, Request, State};
use axum::http::{header, StatusCode};
use axum::Json;

use super::AppState;
use crate::api::{parse_json, EmbedResponse, TextRequest};
use crate::errors::ApiError;
use crate::prepare::{self, Named};

/// `{"texts": [...]}` → `{"model": ..., "embeddings": [[...], ...]}`.
pub(super) async fn text(
    State(state): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<EmbedResponse>, ApiError> {
    let model = state.model()?;
    let request: TextRequest = parse_json(&super::body(body)?)?;
    state.check_count(request.texts.len(), "texts")?;
    let texts = request
        .texts
        .into_iter()
        .enumerate()
        .map(|(i, t)| Named::new(format!("texts[{i}]"), t))
        .collect();
    let (inputs, _) = prepare::texts(model, texts).await?;
    let embeddings = state.embed(inputs).await?;
    Ok(Json(EmbedResponse {
        model: state.config.model_name.clone(),
        embeddings,
    }))
}

/// One image as the raw body, or `multipart/form-data` with one image per part (rows in part order).
pub(super) async fn image(
    State(state): State<Arc<AppState>>,
    request: Request,
) -> Result<Json<EmbedResponse>, ApiError> {
    let model = state.model()?;
    let multipart = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("multipart/form-data"));
    let images = if multipart {
        let form = Multipart::from_request(request, &state)
            .await
            .map_err(|e| ApiError::BadRequest(format!("invalid multipart body: {e}")))?;
        read_parts(form, state.config.max_inputs).await?
    } else {
        let bytes = super::body(Bytes::from_request(request, &state).await)?;
        if bytes.is_empty() {
            return Err(ApiError::BadRequest(
                "the body is empty: send an image's bytes, or multipart/form-data with image files"
                    .into(),
            ));
        }
        vec![Named::new("body", bytes)]
    };
    state.check_count(images.len(), "images")?;
    let inputs = prepare::images(model, images).await?;
    let embeddings = state.embed(inputs).await?;
    Ok(Json(EmbedResponse {
        model: state.config.model_name.clone(),
        embeddings,
    }))
}

/// Every part of a form, named by its file name (else its field name), stopping past `max` parts.
async fn read_parts(mut form: Multipart, max: usize) -> Result<Vec<Named<Bytes>>, ApiError> {
    let mut parts = Vec::new();
    loop {
        let field = form.next_field().await.map_err(multipart_error)?;
        let Some(field) = field else {
            return Ok(parts);
        };
        if parts.len() == max {
            return Err(ApiError::BadRequest(format!(
                "more than {max} images in one request; the server takes at most {max}"
            )));
        }
        let name = field
            .file_name()
            .or(field.name())
            .map_or_else(|| format!("part {}", parts.len()), str::to_owned);
        let bytes = field.bytes().await.map_err(multipart_error)?;
        parts.push(Named::new(name, bytes));
    }
}

fn multipart_error(e: axum::extract::multipart::MultipartError) -> ApiError {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::TooLarge(format!("the body is larger than the server's limit: {e}"))
    } else {
        ApiError::BadRequest(format!("invalid multipart body: {e}"))
    }
}
