//! Chinese-CLIP (Hugging Face `ChineseCLIPModel`, `model_type` `"chinese_clip"`): CLIP's ViT for images and a
//! BERT (RoBERTa-wwm-ext) text tower, read at its `[CLS]` token, with a WordPiece tokenizer and a 52-token context.
//!
//! - [`config`]: `config.json` parsing and the published presets
//! - [`weights`]: the checkpoint's submodules ([`ChineseClipWeights`], field names = checkpoint keys)
//! - [`reference`](mod@reference): a float32 CPU forward of the whole model
//! - [`tokenizer`]: the WordPiece tokenizer
//! - [`backend`]: both behind [`crate::Embedder`]
//! - [`ChineseClipModel`]: both towers on the GPU (the text tower's kernels: `text_gpu.rs`)

pub mod backend;
pub mod config;
mod model;
mod presets;
pub mod reference;
mod text_gpu;
pub mod tokenizer;
pub mod weights;

pub use backend::ChineseClipGpu;
pub use config::{BertConfig, ChineseClipConfig, DEFAULT_CONTEXT_LENGTH, MODEL_TYPE};
pub use model::ChineseClipModel;
pub use reference::{BertOutput, ChineseClipReference};
pub use tokenizer::{BertOptions, BertTokenizer};
pub use weights::ChineseClipWeights;
