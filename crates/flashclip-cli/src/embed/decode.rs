//! The decode stage: reading, decoding and preprocessing images, tokenizing texts. Runs on a pool of worker
//! threads; a bad input becomes an error for its own row only.

use std::panic::AssertUnwindSafe;
use std::path::Path;

use flashclip_model::preprocess::Preprocessor;
use flashclip_model::AnyTokenizer;

use super::inputs::{Input, Kind, Payload, MAX_INPUT_BYTES};

/// An input on its way to a decode worker, with its index among this process's inputs.
#[derive(Debug)]
pub struct Job {
    pub local: u64,
    pub input: Input,
}

/// What a row of the metadata says about an input.
#[derive(Debug, Clone)]
pub struct Meta {
    pub local: u64,
    pub index: u64,
    pub source: String,
    pub kind: Kind,
    /// Size of the image file or member, or of the text in UTF-8; `None` when it could not be read.
    pub bytes: Option<u64>,
    pub text: Option<String>,
    /// Why the input was not embedded.
    pub error: Option<String>,
}

/// A decoded input: preprocessed pixels or token ids.
#[derive(Debug)]
pub enum Data {
    Pixels(Vec<f32>),
    Tokens(Vec<u32>),
}

/// A decode worker's result.
#[derive(Debug)]
pub struct Decoded {
    pub meta: Meta,
    pub data: Option<Data>,
}

/// What the workers share.
pub struct Decoder {
    pub pre: Preprocessor,
    pub tokenizer: Option<AnyTokenizer>,
    pub max_len: usize,
    pub vocab: usize,
}

impl Decoder {
    pub fn decode(&self, job: Job) -> Decoded {
        let Input {
            index,
            source,
            kind,
            payload,
        } = job.input;
        let mut meta = Meta {
            local: job.local,
            index,
            source,
            kind,
            bytes: None,
            text: None,
            error: None,
        };
        // A decoder bug on one malformed file must cost that row, not the job.
        let result = std::panic::catch_unwind(AssertUnwindSafe(|| match payload {
            Payload::File(path) => self.file(&path, &mut meta),
            Payload::Bytes(bytes) => {
                meta.bytes = Some(bytes.len() as u64);
                self.image(&bytes, &meta.source)
            }
            Payload::Text(text) => {
                meta.bytes = Some(text.len() as u64);
                let ids = self.tokens(&text);
                meta.text = Some(text);
                ids
            }
            Payload::Invalid(why) => Err(why),
            Payload::Unread => Err("not read".into()),
        }))
        .unwrap_or_else(|_| Err("the decoder panicked on this input".into()));
        match result {
            Ok(data) => Decoded {
                meta,
                data: Some(data),
            },
            Err(e) => {
                meta.error = Some(e);
                Decoded { meta, data: None }
            }
        }
    }

    fn file(&self, path: &Path, meta: &mut Meta) -> Result<Data, String> {
        let size = std::fs::metadata(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?
            .len();
        meta.bytes = Some(size);
        if size > MAX_INPUT_BYTES {
            return Err(format!(
                "{} is {size} bytes, over the {MAX_INPUT_BYTES}-byte limit",
                path.display()
            ));
        }
        let bytes =
            std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        self.image(&bytes, &path.display().to_string())
    }

    fn image(&self, bytes: &[u8], name: &str) -> Result<Data, String> {
        // The decoder's default limits refuse images whose pixels would need more than 512 MiB, so a small
        // file claiming a huge size is an error, not an allocation.
        self.pre
            .preprocess_bytes(bytes, name)
            .map(Data::Pixels)
            .map_err(|e| e.to_string())
    }

    fn tokens(&self, text: &str) -> Result<Data, String> {
        let tokenizer = self
            .tokenizer
            .as_ref()
            .ok_or_else(|| "no tokenizer".to_string())?;
        let ids = tokenizer
            .encode_batch(&[text], self.max_len)
            .map_err(|e| e.to_string())?
            .pop()
            .ok_or_else(|| "the tokenizer returned nothing".to_string())?;
        if let Some(bad) = ids.iter().find(|&&id| id as usize >= self.vocab) {
            return Err(format!(
                "token id {bad} is outside the model's vocabulary of {}",
                self.vocab
            ));
        }
        Ok(Data::Tokens(ids))
    }
}
