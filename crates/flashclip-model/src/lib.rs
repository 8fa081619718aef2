//! CLIP vision and text encoders on flashclip's CUDA kernels.
//!
//! - [`config`]: model configs (Hugging Face `config.json`, open_clip JSON, presets)
//! - [`checkpoint`]: safetensors checkpoints in Hugging Face's or open_clip's layout, checked against a config
//!   before any data is read, converted once to the target dtype
//! - [`nn`], [`vision`], [`text`], [`weights`]: the model's modules, one struct per checkpoint submodule, each
//!   with the tensors it loads and (on the GPU) its forward
//! - [`ClipModel`] ([`model`]): both towers on the GPU over a preallocated [`Workspace`]; [`graph`] replays a
//!   forward captured once into a CUDA graph (one launch per forward, for small batches)
//! - [`reference`](mod@reference): a float32 CPU forward of the whole model, the ground truth for tests
//! - [`tokenizer`]: CLIP's BPE tokenizer; [`preprocess`]: OpenAI-exact image preprocessing
//! - [`flops`]: FLOP counts of any CLIP config
//! - [`chinese_clip`]: Chinese-CLIP (CLIP's ViT with a BERT text tower): config, weights, CPU reference, tokenizer
//! - [`family`]: the model families ([`ModelConfig`], [`AnyTokenizer`], [`open_model_dir`]) front ends work with
//! - [`siglip`]: SigLIP (Hugging Face `SiglipModel`): config, weights, CPU reference, tokenizer
//! - [`backend`]: [`Embedder`], one interface over the GPU model and the CPU reference, for front ends

pub mod backend;
pub mod checkpoint;
pub mod chinese_clip;
pub mod config;
mod error;
pub mod family;
pub mod flops;
pub mod graph;
pub mod model;
pub mod nn;
mod parity;
mod pixels;
pub mod preprocess;
pub mod reference;
pub mod siglip;
pub mod text;
pub mod tokenizer;
pub mod vision;
pub mod weights;
pub mod workspace;

pub use backend::{Device, Embedder};
pub use checkpoint::{Checkpoint, CheckpointError};
pub use error::{ModelError, Result};
pub use family::{open_model_dir, AnyTokenizer, Family, Fitted, ModelConfig};
pub use graph::{ForwardGraph, GraphShape};
pub use model::ClipModel;
pub use nn::AttentionImpl;
pub use text::TextBatch;
pub use weights::ClipWeights;
pub use workspace::Workspace;
