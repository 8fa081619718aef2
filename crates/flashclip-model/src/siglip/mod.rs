//! SigLIP (Hugging Face `SiglipModel`, `model_type` `siglip`): a ViT without a class token pooled by a learned
//! probe's attention, a bidirectional text tower read at its last position, and sigmoid zero-shot scores.
//!
//! SigLIP 2's fixed-resolution checkpoints (google/siglip2-*-patch16-224 and the like) are `SiglipModel`s in the
//! same format and load here; SigLIP 2 NaFlex (`model_type` `siglip2`: a linear patch embedding over
//! variable-resolution patches and resized position embeddings) does not.
//!
//! - [`SiglipConfig`]: `config.json` and presets of the published sizes
//! - [`SiglipConfig::image_flops`], [`SiglipConfig::text_flops`]: matrix-product FLOPs per embedding
//! - [`SiglipWeights`]: the checkpoint tree, field names equal to its keys
//! - [`SiglipReference`]: the float32 CPU forward (ground truth), [`siglip_logits`], [`sigmoid_probabilities`]
//! - [`SiglipGpuModel`]: both towers on the GPU (`embed_images`, `embed_texts`, `zero_shot`)
//! - [`backend`]: both behind [`crate::Embedder`] (sigmoid zero-shot through [`crate::backend::ZeroShot`])
//! - [`SiglipTokenizer`]: `tokenizer.json` with `SiglipTokenizer`'s canonicalization, padded to the context
//! - [`crate::preprocess::Preprocessor::siglip`]: `SiglipImageProcessor`'s resize (straight to the square, no
//!   crop) and normalization, set from `preprocessor_config.json` by [`preprocessor_from_config`]

pub(crate) mod backend;
mod config;
mod device;
mod flops;
mod gpu;
mod preprocess;
mod reference;
mod tokenizer;
mod weights;

pub use backend::SiglipGpu;
pub use config::{SiglipConfig, SiglipTextConfig, SiglipVisionConfig};
pub use gpu::{SiglipGpuModel, SiglipWorkspace};
pub use preprocess::{preprocessor_from_config, preprocessor_from_value};
pub use reference::{
    siglip_logits, sigmoid_probabilities, SiglipReference, SiglipTextOutput, SiglipVisionOutput,
    TextAttention,
};
pub use tokenizer::{
    Canonicalization, SiglipTokenizer, SiglipTokenizerError, SiglipTokens, CONVERT_COMMAND,
};
pub use weights::{
    check_checkpoint, load_file, HasShape, MultiheadAttention, PatchEmbedding, SiglipPoolingHead,
    SiglipTextEmbeddings, SiglipTextTransformer, SiglipVisionEmbeddings, SiglipVisionTransformer,
    SiglipWeights,
};
