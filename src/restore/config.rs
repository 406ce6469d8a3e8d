//! The Restore service's batching and request-limit sections of `noiseda serve`'s flags
//! ([`crate::grpc::ServerConfig`] flattens them).

use std::time::Duration;

use clap::Args;

use crate::check::{at_most_a_day, positive, range};
use crate::Error;

/// Most images that may queue for inference (each model's queue is allocated up front).
pub const MAX_QUEUE: usize = 1 << 16;
/// Smallest non-zero `--tile-size` (what tiled inference accepts).
pub const MIN_TILE: usize = 16;

/// How each model's batcher groups queued images into forward passes.
#[derive(Args, Debug, Clone, Copy)]
pub struct BatchConfig {
    /// Images per forward pass (at least 1).
    #[arg(
        long,
        env = "NOISEDA_MAX_BATCH_SIZE",
        default_value_t = 8,
        display_order = 17
    )]
    pub max_batch_size: usize,
    /// Padded pixels per forward pass (at least 1).
    // The first image of a batch always runs, however large.
    #[arg(long, env = "NOISEDA_MAX_BATCH_PIXELS", default_value_t = 4 << 20, display_order = 18)]
    pub max_batch_pixels: usize,
    /// Microseconds the oldest queued image may wait for others to fill its batch (at most a
    /// day).
    #[arg(
        long,
        env = "NOISEDA_MAX_BATCH_WAIT_US",
        default_value_t = 0,
        display_order = 19
    )]
    pub max_batch_wait_us: u64,
    /// Images queued for inference across all models; beyond it Restore answers
    /// RESOURCE_EXHAUSTED (1 to 65536).
    #[arg(
        long,
        env = "NOISEDA_MAX_QUEUE",
        default_value_t = 64,
        display_order = 20
    )]
    pub max_queue: usize,
}

/// What one Restore request may ask for.
#[derive(Args, Debug, Clone, Copy)]
pub struct LimitsConfig {
    /// Larger images are tiled (with --tile-size) or rejected (at least 1).
    #[arg(long, env = "NOISEDA_MAX_IMAGE_PIXELS", default_value_t = 4 << 20, display_order = 21)]
    pub max_image_pixels: usize,
    /// Larger images are rejected before decoding, tiled or not (at least 1).
    #[arg(long, env = "NOISEDA_MAX_INPUT_PIXELS", default_value_t = 64 << 20, display_order = 22)]
    pub max_input_pixels: usize,
    #[arg(
        long,
        env = "NOISEDA_MAX_IMAGES_PER_REQUEST",
        default_value_t = 32,
        display_order = 23
    )]
    pub max_images_per_request: usize,
    /// Tile side for images over --max-image-pixels (0 = reject them; else at least 16).
    #[arg(
        long,
        env = "NOISEDA_TILE_SIZE",
        default_value_t = 512,
        display_order = 24
    )]
    pub tile_size: usize,
    /// Tile overlap (0 = tile/4, at least 16; else less than --tile-size).
    #[arg(
        long,
        env = "NOISEDA_TILE_OVERLAP",
        default_value_t = 0,
        display_order = 25
    )]
    pub tile_overlap: usize,
}

impl BatchConfig {
    pub fn max_batch_wait(&self) -> Duration {
        Duration::from_micros(self.max_batch_wait_us)
    }

    /// The ranges of the batching settings.
    pub(crate) fn problems(&self) -> Vec<Error> {
        [
            positive("--max-batch-size", self.max_batch_size),
            positive("--max-batch-pixels", self.max_batch_pixels),
            at_most_a_day("--max-batch-wait-us", self.max_batch_wait()),
            range("--max-queue", self.max_queue, 1, MAX_QUEUE),
        ]
        .into_iter()
        .flatten()
        .collect()
    }
}

impl LimitsConfig {
    /// The ranges of the request limits and the tile settings.
    pub(crate) fn problems(&self) -> Vec<Error> {
        let mut bad: Vec<Error> = [
            positive("--max-image-pixels", self.max_image_pixels),
            positive("--max-input-pixels", self.max_input_pixels),
            positive("--max-images-per-request", self.max_images_per_request),
        ]
        .into_iter()
        .flatten()
        .collect();
        if self.tile_size != 0 && self.tile_size < MIN_TILE {
            bad.push(Error::invalid(
                "--tile-size",
                format!(
                    "{} is neither 0 (no tiling) nor at least {MIN_TILE}",
                    self.tile_size
                ),
            ));
        }
        if self.tile_size != 0 && self.tile_overlap >= self.tile_size {
            bad.push(Error::invalid(
                "--tile-overlap",
                format!(
                    "{} must be less than --tile-size {}",
                    self.tile_overlap, self.tile_size
                ),
            ));
        }
        bad
    }
}
