//! `noiseda degrade`: applies a training degradation recipe to an image or a folder, so a user
//! can see what the restorer will be trained on, with the parameters each image drew.

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::loader::step_rng;
use super::spec::degrade;
use super::spec::Degradation;
use super::{list_images, load_rgb, save_rgb, Image};
use crate::{Error, Result};

/// One degraded image written.
#[derive(Debug, Clone, Serialize)]
pub struct Degraded {
    pub input: PathBuf,
    pub output: PathBuf,
    /// The parameters this image drew (the `isp` recipe reports them; others report none).
    pub params: Option<serde_json::Value>,
    /// RGB PSNR of the degraded image against the clean one (dB).
    pub psnr: f64,
}

/// Degrades `input` (a file, or every image of a folder) `copies` times into `output` (a
/// file for one file and one copy, else a folder: `<stem>.png` or `<stem>-<k>.png`).
/// Image i's copy k draws from stream `i·copies + k` of `seed`, so a run is reproducible.
pub fn degrade_files(
    input: &Path,
    output: &Path,
    recipe: &Degradation,
    seed: u64,
    copies: usize,
) -> Result<Vec<Degraded>> {
    if copies == 0 {
        return Err(Error::invalid_input("--copies must be at least 1"));
    }
    let (files, single) = if input.is_dir() {
        (list_images(input)?, false)
    } else {
        (vec![input.to_path_buf()], copies == 1)
    };
    if files.is_empty() {
        return Err(Error::data(format!("{} holds no images", input.display())));
    }
    let mut written = Vec::with_capacity(files.len() * copies);
    for (i, file) in files.iter().enumerate() {
        let clean = Image::from_rgb8(&load_rgb(file)?);
        let stem = file
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| format!("image-{i}"));
        for k in 0..copies {
            let mut rng = step_rng(seed, (i * copies + k) as u64);
            let (img, params) = match recipe {
                Degradation::Isp(isp) => {
                    let p = isp.draw(&mut rng);
                    let img = isp.apply_with(&mut rng, &clean, &p);
                    (img, serde_json::to_value(&p).ok())
                }
                other => {
                    let mut img = clean.clone();
                    degrade(&mut rng, &mut img, other);
                    (img, None)
                }
            };
            let out_path = if single {
                output.to_path_buf()
            } else if copies == 1 {
                output.join(format!("{stem}.png"))
            } else {
                output.join(format!("{stem}-{k}.png"))
            };
            let rgb = img.to_rgb8();
            let psnr = crate::quality::psnr(
                Image::from_rgb8(&rgb).as_metric(),
                clean.as_metric(),
                crate::quality::Channel::Rgb,
            )
            .map_err(|e| Error::data(format!("{}: {e}", file.display())))?;
            save_rgb(&out_path, &rgb)?;
            written.push(Degraded {
                input: file.clone(),
                output: out_path,
                params,
                psnr,
            });
        }
    }
    Ok(written)
}
