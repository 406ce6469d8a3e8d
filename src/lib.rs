//! noiseda: train image-restoration networks with Denoising as Adaptation (Liao et al.,
//! ICLR 2025) on candle, evaluate them, and restore images with the exported models.

pub mod artifact;
pub mod bench;
pub mod check;
pub mod client;
pub mod clock;
pub mod config;
pub mod data;
pub mod demo;
pub mod device;
pub mod error;
pub mod eval;
pub mod experiment;
pub mod fsio;
pub mod grpc;
pub mod infer;
pub mod jobs;
pub mod loadtest;
pub mod method;
pub mod model;
pub mod pb;
pub mod quality;
pub mod restore;
pub mod runlog;
pub mod train;

pub use error::{Error, Result};
