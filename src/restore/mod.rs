//! Restoring images with exported models: the [`registry::Registry`] of loaded models (each
//! with its [`batcher::Batcher`] of queued images), and the [`codec`] that decodes inputs within
//! the limits and encodes results. Nothing here names gRPC types; `grpc/restore.rs` adapts it.

pub mod batcher;
pub mod codec;
pub mod config;
pub mod registry;
pub mod stats;

use std::time::Duration;

/// Where the batchers report what they count (in the server, its Prometheus registry).
pub trait Telemetry: Send + Sync {
    /// An image waited `waited` in its queue before its batch ran.
    fn queued(&self, waited: Duration);
    /// A forward pass of `images` images (`pixels` padded pixels) that took `took`.
    fn batch(&self, images: usize, pixels: usize, took: Duration);
    /// An image whose caller had gone was dropped from its queue.
    fn expired(&self);
}
