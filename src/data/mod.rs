//! Training and evaluation data: image I/O, folder datasets, degradations, crops and
//! augmentation, and the loader thread that assembles seeded batches.

pub mod augment;
pub mod blur;
pub mod camera;
pub mod dataset;
pub mod draw;
pub mod io;
pub mod isp;
pub mod loader;
pub mod preview;
pub mod rain;
pub mod spec;

pub use dataset::{CleanFolder, Pair, PairedFolder, TrainData, UnlabeledFolder};
pub use io::{decode_rgb_named, list_images, load_rgb, save_rgb, Image};
pub use loader::{Batch, Loader};
