//! The layers both towers are made of, one struct per checkpoint submodule with field names equal to the
//! checkpoint's keys, the way Hugging Face's `CLIPModel` nests them.
//!
//! Each struct is generic over its tensor type `A`: [`HostTensor`](crate::checkpoint::HostTensor) for the CPU
//! reference, [`flashclip::Tensor`] on the GPU, `()` for the tensor table ([`crate::checkpoint::Plan`]). Each has
//! a `load` that names its tensors (the one place a key is spelled) and `for_each_tensor`, which visits them in
//! the same order. The GPU forward of each (`forward` on the device instantiation) runs on the named buffers of a
//! [`TowerBuffers`](crate::workspace::TowerBuffers).

mod attention;
mod encoder;
mod layer_norm;
mod linear;
mod mlp;

pub(crate) use attention::self_attention;
pub use attention::{Attention, AttentionImpl};
pub(crate) use encoder::kernel_activation;
pub use encoder::{Encoder, EncoderLayer, EncoderSpec};
pub use layer_norm::LayerNorm;
pub use linear::Linear;
pub use mlp::Mlp;
