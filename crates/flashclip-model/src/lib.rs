//! CLIP vision and text encoders on flashclip's CUDA kernels.
//!
//! - [`config`]: model configs (Hugging Face `config.json`, open_clip JSON, presets)
//! - [`weights`]: checkpoint loading (safetensors, HF and open_clip key names) with shape checks
//! - [`reference`](mod@reference): a float32 CPU forward of the whole model, the ground truth for tests
//! - [`tokenizer`]: CLIP's BPE tokenizer
//! - [`preprocess`]: OpenAI-exact image preprocessing
//! - [`flops`]: FLOP counts of any CLIP config
//! - [`gpu`]: both towers on flashclip's kernels and cuBLAS; [`gpu::ForwardGraph`] replays a forward captured
//!   once into a CUDA graph (one launch per forward, for small batches)

pub mod config;
pub mod flops;
pub mod gpu;
pub mod preprocess;
pub mod reference;
pub mod tokenizer;
pub mod weights;
