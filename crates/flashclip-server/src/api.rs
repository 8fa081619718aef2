//! Request and response bodies, and the parsing of the OpenAI-style `input` field.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::errors::ApiError;

/// One input of `POST /v1/embeddings`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Item {
    /// A text to tokenize and embed.
    Text(String),
    /// An image as base64 or a `data:` URL, not decoded yet.
    Image(String),
}

/// How `POST /v1/embeddings` returns each vector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EncodingFormat {
    /// A JSON array of numbers.
    Float,
    /// Base64 of the little-endian f32 bytes, as OpenAI's clients ask for by default.
    Base64,
}

/// `POST /v1/embeddings`, parsed.
#[derive(Debug)]
pub(crate) struct EmbeddingsRequest {
    pub items: Vec<Item>,
    pub format: EncodingFormat,
}

/// Parses an OpenAI embeddings request. `input` is a string, an image object
/// (`{"type": "image", "image": "<base64 or data URL>"}`), or a list of strings, text objects
/// (`{"type": "text", "text": "..."}`) and image objects. Errors name the offending field.
pub(crate) fn parse_embeddings_request(body: &[u8]) -> Result<EmbeddingsRequest, ApiError> {
    let root: Value = parse_json(body)?;
    let Value::Object(mut fields) = root else {
        return Err(bad(
            "the body must be a JSON object with an \"input\" field",
        ));
    };
    let format = match fields.remove("encoding_format") {
        None | Some(Value::Null) => EncodingFormat::Float,
        Some(Value::String(f)) if f == "float" => EncodingFormat::Float,
        Some(Value::String(f)) if f == "base64" => EncodingFormat::Base64,
        Some(other) => {
            return Err(bad(format!(
                "encoding_format must be \"float\" or \"base64\", got {other}"
            )))
        }
    };
    let items = match fields.remove("input") {
        None | Some(Value::Null) => return Err(bad("missing field \"input\"")),
        Some(Value::String(s)) => vec![Item::Text(s)],
        Some(obj @ Value::Object(_)) => vec![parse_item(obj, "input")?],
        Some(Value::Array(list)) => {
            if list.iter().all(Value::is_number) && !list.is_empty() {
                return Err(bad(
                    "token id arrays are not supported: send texts as strings",
                ));
            }
            list.into_iter()
                .enumerate()
                .map(|(i, v)| parse_item(v, &format!("input[{i}]")))
                .collect::<Result<_, _>>()?
        }
        Some(other) => {
            return Err(bad(format!(
                "input must be a string, an image object or a list of them, got {}",
                type_name(&other)
            )))
        }
    };
    Ok(EmbeddingsRequest { items, format })
}

fn parse_item(value: Value, field: &str) -> Result<Item, ApiError> {
    let shape = || {
        bad(format!(
            "{field} must be a string, {{\"type\": \"text\", \"text\": \"...\"}} or \
             {{\"type\": \"image\", \"image\": \"<base64 or data URL>\"}}"
        ))
    };
    match value {
        Value::String(s) => Ok(Item::Text(s)),
        Value::Object(mut obj) => {
            let kind = obj.remove("type");
            match kind.as_ref().and_then(Value::as_str) {
                Some("text") => match obj.remove("text") {
                    Some(Value::String(s)) => Ok(Item::Text(s)),
                    _ => Err(bad(format!("{field}.text must be a string"))),
                },
                Some("image") => match obj.remove("image") {
                    Some(Value::String(s)) => Ok(Item::Image(s)),
                    _ => Err(bad(format!(
                        "{field}.image must be a base64 string or a data URL"
                    ))),
                },
                _ => Err(shape()),
            }
        }
        _ => Err(shape()),
    }
}

/// `POST /embed/text`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TextRequest {
    pub texts: Vec<String>,
}

/// `POST /zero-shot`: one image against prompts made from labels.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ZeroShotRequest {
    /// Base64 or a `data:` URL.
    pub image: String,
    pub labels: Vec<String>,
    /// `{}` is replaced by each label.
    #[serde(default = "default_template")]
    pub template: String,
}

fn default_template() -> String {
    "a photo of {}".into()
}

/// The answer of `/embed/text` and `/embed/image`: one L2-normalized row per input, in input order.
#[derive(Debug, Serialize)]
pub(crate) struct EmbedResponse {
    pub model: String,
    pub embeddings: Vec<Vec<f32>>,
}

/// The answer of `POST /v1/embeddings`, in OpenAI's shape.
#[derive(Debug, Serialize)]
pub(crate) struct EmbeddingsResponse {
    pub object: &'static str,
    pub data: Vec<EmbeddingObject>,
    pub model: String,
    pub usage: Usage,
}

#[derive(Debug, Serialize)]
pub(crate) struct EmbeddingObject {
    pub object: &'static str,
    pub index: usize,
    pub embedding: EmbeddingValue,
}

#[derive(Debug, Serialize)]
#[serde(untagged)]
pub(crate) enum EmbeddingValue {
    Float(Vec<f32>),
    Base64(String),
}

impl EmbeddingValue {
    pub fn new(row: Vec<f32>, format: EncodingFormat) -> Self {
        match format {
            EncodingFormat::Float => EmbeddingValue::Float(row),
            EncodingFormat::Base64 => {
                let bytes: Vec<u8> = row.iter().flat_map(|v| v.to_le_bytes()).collect();
                EmbeddingValue::Base64(STANDARD.encode(bytes))
            }
        }
    }
}

/// Text tokens (start and end tokens included); images count none.
#[derive(Debug, Serialize)]
pub(crate) struct Usage {
    pub prompt_tokens: usize,
    pub total_tokens: usize,
}

/// The answer of `POST /zero-shot`: every label's probability, most likely first.
#[derive(Debug, Serialize)]
pub(crate) struct ZeroShotResponse {
    pub model: String,
    pub results: Vec<LabelProbability>,
}

#[derive(Debug, Serialize)]
pub(crate) struct LabelProbability {
    pub label: String,
    pub probability: f64,
}

/// Parses a JSON body into `T`, with serde's message (which names the line, column and expected type).
pub(crate) fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    if body.is_empty() {
        return Err(bad("the body is empty: expected JSON"));
    }
    serde_json::from_slice(body).map_err(|e| bad(format!("invalid JSON body: {e}")))
}

/// Decodes an image sent as base64 or as a `data:<mime>;base64,<data>` URL, refusing more than `max_bytes` of
/// decoded data before allocating it.
pub(crate) fn decode_base64_image(
    text: &str,
    field: &str,
    max_bytes: usize,
) -> Result<Vec<u8>, ApiError> {
    let data = match text.strip_prefix("data:") {
        Some(rest) => {
            let (meta, data) = rest
                .split_once(',')
                .ok_or_else(|| bad(format!("{field}: a data URL needs a comma before its data")))?;
            if !meta.ends_with(";base64") {
                return Err(bad(format!("{field}: only base64 data URLs are supported")));
            }
            data
        }
        None => text,
    };
    let data = data.trim();
    if data.is_empty() {
        return Err(bad(format!("{field}: the image is empty")));
    }
    if base64::decoded_len_estimate(data.len()) > max_bytes {
        return Err(ApiError::TooLarge(format!(
            "{field}: the image is larger than {max_bytes} bytes"
        )));
    }
    STANDARD
        .decode(data)
        .map_err(|e| bad(format!("{field}: invalid base64: {e}")))
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

fn bad(message: impl Into<String>) -> ApiError {
    ApiError::BadRequest(message.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn input_shapes() {
        let r = parse_embeddings_request(br#"{"input": "a cat", "model": "x"}"#).unwrap();
        assert_eq!(r.items, vec![Item::Text("a cat".into())]);
        assert_eq!(r.format, EncodingFormat::Float);
        let r = parse_embeddings_request(
            br#"{"input": ["a", {"type": "text", "text": "b"}, {"type": "image", "image": "AAAA"}],
                 "encoding_format": "base64"}"#,
        )
        .unwrap();
        assert_eq!(
            r.items,
            vec![
                Item::Text("a".into()),
                Item::Text("b".into()),
                Item::Image("AAAA".into())
            ]
        );
        assert_eq!(r.format, EncodingFormat::Base64);
    }

    #[test]
    fn input_errors_name_the_field() {
        let msg = |body: &[u8]| parse_embeddings_request(body).unwrap_err().to_string();
        assert!(msg(br#"{"input": ["a", 3]}"#).contains("input[1]"));
        assert!(msg(br#"{"input": [1, 2]}"#).contains("token id arrays"));
        assert!(msg(br#"{"input": 3}"#).contains("got a number"));
        assert!(msg(br#"{"inputs": "a"}"#).contains("missing field \"input\""));
        assert!(msg(br#"{"input": "a", "encoding_format": "int8"}"#).contains("encoding_format"));
        assert!(msg(b"{").contains("invalid JSON"));
    }

    #[test]
    fn base64_images() {
        assert_eq!(
            decode_base64_image("data:image/png;base64,AQID", "x", 16).unwrap(),
            vec![1, 2, 3]
        );
        assert_eq!(decode_base64_image("AQID", "x", 16).unwrap(), vec![1, 2, 3]);
        let err = decode_base64_image("AQ!D", "x", 16).unwrap_err();
        assert!(err.to_string().contains("invalid base64"), "{err}");
        let err = decode_base64_image("AQIDAQIDAQIDAQID", "x", 4).unwrap_err();
        assert_eq!(err.status(), 413);
        let err = decode_base64_image("data:image/png,AQID", "x", 16).unwrap_err();
        assert!(err.to_string().contains("only base64"), "{err}");
    }

    #[test]
    fn base64_embeddings_are_little_endian_f32() {
        let EmbeddingValue::Base64(s) =
            EmbeddingValue::new(vec![1.0, -2.5], EncodingFormat::Base64)
        else {
            panic!("expected base64")
        };
        let bytes = STANDARD.decode(s).unwrap();
        assert_eq!(
            bytes,
            [1.0f32.to_le_bytes(), (-2.5f32).to_le_bytes()].concat()
        );
    }
}
