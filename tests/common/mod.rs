//! Shared helpers of the integration tests: synthetic photos in temp dirs and tiny job specs.
#![allow(dead_code)]

pub mod inproc;
pub mod server;
pub mod store;

use std::path::{Path, PathBuf};

use image::{Rgb, RgbImage};
use noiseda::config::JobSpec;

/// Runs the `noiseda` binary this test crate was built with.
pub fn noiseda(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_noiseda"))
        .args(args)
        .output()
        .unwrap()
}

/// A smooth, textured test picture (gradients, a disc, stripes) that varies with `k`.
pub fn photo(k: u32, w: u32, h: u32) -> RgbImage {
    RgbImage::from_fn(w, h, |x, y| {
        let (fx, fy) = (x as f32 / w as f32, y as f32 / h as f32);
        let cx = 0.3 + 0.1 * (k % 4) as f32;
        let disc = ((fx - cx).powi(2) + (fy - 0.5).powi(2)).sqrt() < 0.25;
        let stripes = ((x + k * 3) / 6).is_multiple_of(2);
        let r = 40.0 + 150.0 * fx + if disc { 50.0 } else { 0.0 };
        let g = 60.0 + 120.0 * fy + if stripes { 20.0 } else { 0.0 };
        let b = 200.0 - 120.0 * fx * fy + (k * 10 % 40) as f32;
        Rgb([r.min(255.0) as u8, g.min(255.0) as u8, b.min(255.0) as u8])
    })
}

/// Writes `n` photos of `w`×`h` into `dir` (png, with one jpg and one webp when n ≥ 3).
pub fn write_photos(dir: &Path, n: u32, w: u32, h: u32) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    for k in 0..n {
        let ext = match k {
            1 => "jpg",
            2 => "webp",
            _ => "png",
        };
        photo(k, w, h)
            .save(dir.join(format!("img{k:02}.{ext}")))
            .unwrap();
    }
    dir.to_path_buf()
}

/// A tiny vanilla job: U-Net width 8 depth 3, 32×32 patches, batch 2.
pub fn tiny_spec(clean: &Path, steps: u64, ckpt_every: u64) -> JobSpec {
    let text = format!(
        r#"
name = "tiny"
seed = 7
steps = {steps}
[restorer]
arch = "unet"
width = 8
depth = 3
[data]
patch = 32
batch = 2
prefetch = 2
[data.synthetic]
clean = "{}"
degradation = {{ kind = "awgn", sigma = [5, 30] }}
[optimizer]
lr = 1e-3
[checkpoint]
every = {ckpt_every}
keep_last = 0
"#,
        clean.display()
    );
    let spec = JobSpec::from_toml(&text).unwrap();
    spec.validate().unwrap();
    spec
}

/// The shared real-data folder, or None (with a printed reason) when it is absent.
pub fn shared_data() -> Option<PathBuf> {
    let dir = std::env::var_os("NOISEDA_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data"));
    if dir.join("polyu/val/noisy").is_dir() {
        Some(dir)
    } else {
        // Written to the real stderr (not the test harness's captured one) so the skip shows.
        use std::io::Write;
        let _ = writeln!(
            std::io::stderr(),
            "skipping: real test data not found at {} (set NOISEDA_DATA)",
            dir.display()
        );
        None
    }
}

/// A tiny noise-da job on top of `tiny_spec`: diffusion net [8, 16], one res block, no
/// attention; `real` holds unlabeled images.
pub fn tiny_joint_spec(clean: &Path, real: &Path, steps: u64, ckpt_every: u64) -> JobSpec {
    let mut spec = tiny_spec(clean, steps, ckpt_every);
    spec.method = noiseda::config::Method::NoiseDa;
    spec.data.real = Some(noiseda::config::FolderSpec {
        dir: real.to_path_buf(),
    });
    spec.diffusion = noiseda::config::DiffusionSpec {
        channels: Some(vec![8, 16]),
        res_blocks: Some(1),
        attention: Some(false),
        ..Default::default()
    };
    spec.loss.ramp_steps = 2;
    spec.validate().unwrap();
    spec
}
