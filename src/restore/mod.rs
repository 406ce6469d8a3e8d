//! Restoring images with exported models: the [`registry::Registry`] of loaded models (each
//! with its [`batcher::Batcher`] of queued images), and the [`codec`] that decodes inputs within
//! the limits and encodes results. Nothing here names gRPC types; `grpc/restore.rs` adapts it.

pub mod batcher;
pub mod codec;
pub mod registry;
