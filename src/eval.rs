//! Evaluation of a restorer over paired folders or over clean photos degraded on the fly:
//! PSNR/SSIM of the outputs and of the degraded inputs themselves.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::artifact::LoadedModel;
use crate::config::Degradation;
use crate::data::draw::add_gaussian;
use crate::data::loader::step_rng;
use crate::data::{CleanFolder, Image, PairedFolder};
use crate::infer::{restore_image, restore_image_x8, Tiling};
use crate::quality::{self, Channel};
use crate::{Error, Result};

/// What to evaluate on.
#[derive(Debug, Clone)]
pub enum EvalData {
    /// Degraded/target folders matched by file name.
    Paired { lq: PathBuf, gt: PathBuf },
    /// A dataset root with paired folders in a known layout (Rain13K/SPA `input`+`target`,
    /// GoPro `blur`+`sharp`, RealBlur `blur`+`gt`, nested per scene or flat).
    Root { root: PathBuf },
    /// Clean photos with a synthetic degradation applied per image (seeded).
    Synthetic { clean: PathBuf, degrade: Degrade },
}

/// A fixed evaluation degradation, parsed from `awgn:SIGMA` (σ in 0–255 units, unclipped),
/// `camera`, `isp`, `rain` or `blur`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Degrade {
    Awgn(f32),
    /// The camera-noise pipeline with its default ranges.
    Camera,
    /// The unprocess/process camera pipeline (`data::isp`) with its default ranges.
    Isp,
    /// Rain streaks with the default recipe.
    Rain,
    /// Motion or defocus blur with the default recipe.
    Blur,
}

impl std::str::FromStr for Degrade {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let bad = || {
            Error::invalid_input(format!(
                "bad degradation `{s}`; expected awgn:SIGMA with SIGMA in 0..=255 (e.g. awgn:25), camera, isp, rain or blur"
            ))
        };
        match s {
            "camera" => return Ok(Self::Camera),
            "isp" => return Ok(Self::Isp),
            "rain" => return Ok(Self::Rain),
            "blur" => return Ok(Self::Blur),
            _ => {}
        }
        let (kind, arg) = s.split_once(':').ok_or_else(bad)?;
        match kind {
            "awgn" => {
                let sigma: f32 = arg.parse().map_err(|_| bad())?;
                if !(0.0..=255.0).contains(&sigma) {
                    return Err(bad());
                }
                Ok(Self::Awgn(sigma))
            }
            _ => Err(bad()),
        }
    }
}

impl Degrade {
    /// The training recipe this fixed degradation draws from (AWGN: a one-value σ range).
    pub fn recipe(self) -> Degradation {
        match self {
            Degrade::Awgn(sigma) => Degradation::Awgn {
                sigma: [sigma, sigma],
            },
            Degrade::Camera => Degradation::Camera(Default::default()),
            Degrade::Isp => Degradation::Isp(Default::default()),
            Degrade::Rain => Degradation::Rain(Default::default()),
            Degrade::Blur => Degradation::Blur(Default::default()),
        }
    }

    /// Degrades `img` in place with draws from `rng`.
    pub fn apply(self, rng: &mut impl rand::Rng, img: &mut Image) {
        match self {
            Degrade::Awgn(sigma) => add_gaussian(rng, img, sigma / 255.0),
            Degrade::Camera => *img = crate::data::camera::CameraNoise::default().apply(rng, img),
            Degrade::Isp => *img = crate::data::isp::IspNoise::default().apply(rng, img),
            Degrade::Rain => *img = crate::data::rain::RainStreaks::default().apply(rng, img),
            Degrade::Blur => *img = crate::data::blur::BlurKernels::default().apply(rng, img),
        }
    }
}

#[derive(Debug, Clone)]
pub struct EvalOptions {
    pub channel: Channel,
    pub tiling: Option<Tiling>,
    /// Average the eight flips/transposes of each image ([`restore_image_x8`]).
    pub self_ensemble: bool,
    /// Seed of the synthetic degradation (image i uses stream i).
    pub seed: u64,
    /// Use at most this many images (sorted by name); 0 = all.
    pub max_images: usize,
    pub progress: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct ImageScore {
    pub name: String,
    pub psnr: f64,
    pub ssim: f64,
    pub input_psnr: f64,
    pub input_ssim: f64,
    /// PSNR after removing the output's mean error per channel (the colour cast).
    pub psnr_debiased: f64,
    /// Mean error (output − target) per RGB channel, 0–255 units.
    pub bias: [f64; 3],
    /// Mean error (input − target) per RGB channel, 0–255 units.
    pub input_bias: [f64; 3],
}

/// Means over all images; `input_*` score the degraded inputs against the targets.
#[derive(Debug, Clone, Serialize)]
pub struct EvalReport {
    pub model: String,
    pub images: usize,
    pub channel: Channel,
    pub self_ensemble: bool,
    pub psnr: f64,
    pub ssim: f64,
    pub input_psnr: f64,
    pub input_ssim: f64,
    pub psnr_debiased: f64,
    pub input_psnr_debiased: f64,
    /// Mean over images and channels of |output − target mean error| (0–255 units).
    pub abs_bias: f64,
    /// The same for the inputs: a cast the degraded images already carry.
    pub input_abs_bias: f64,
    /// Mean over images and channels of |output bias − input bias|: the cast the restorer
    /// itself adds (0 for a restorer that keeps every image's mean colour).
    pub added_abs_bias: f64,
    pub seconds: f64,
    pub per_image: Vec<ImageScore>,
}

/// (name, degraded, target) triples for `data`.
fn load(data: &EvalData, seed: u64, max: usize) -> Result<Vec<(String, Image, Image)>> {
    Ok(match data {
        EvalData::Paired { lq, gt } => PairedFolder::load(lq, gt, quality::SSIM_WINDOW, max)?
            .pairs
            .into_iter()
            .map(|p| (p.name, Image::from_rgb8(&p.lq), Image::from_rgb8(&p.gt)))
            .collect(),
        EvalData::Root { root } => PairedFolder::load_root(root, quality::SSIM_WINDOW, max)?
            .pairs
            .into_iter()
            .map(|p| (p.name, Image::from_rgb8(&p.lq), Image::from_rgb8(&p.gt)))
            .collect(),
        EvalData::Synthetic { clean, degrade } => {
            let mut folder = CleanFolder::load(clean, quality::SSIM_WINDOW)?;
            if max > 0 {
                folder.images.truncate(max);
            }
            folder
                .images
                .iter()
                .enumerate()
                .map(|(i, (path, img))| {
                    let gt = Image::from_rgb8(img);
                    let mut lq = gt.clone();
                    let mut rng = step_rng(seed, i as u64);
                    degrade.apply(&mut rng, &mut lq);
                    let name = file_name(path);
                    (name, lq, gt)
                })
                .collect()
        }
    })
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn score(a: &Image, b: &Image, channel: Channel, name: &str) -> Result<(f64, f64)> {
    let e = |e: quality::QualityError| Error::data(format!("{name}: {e}"));
    Ok((
        quality::psnr(a.as_metric(), b.as_metric(), channel).map_err(e)?,
        quality::ssim(a.as_metric(), b.as_metric(), channel).map_err(e)?,
    ))
}

/// Evaluates a loaded model (runs on the calling thread).
pub fn run(model: &LoadedModel, data: &EvalData, opts: &EvalOptions) -> Result<EvalReport> {
    let started = std::time::Instant::now();
    let items = load(data, opts.seed, opts.max_images)?;
    let bar = if opts.progress {
        indicatif::ProgressBar::new(items.len() as u64)
    } else {
        indicatif::ProgressBar::hidden()
    };
    let mut per_image = Vec::with_capacity(items.len());
    for (name, lq, gt) in &items {
        let restore = if opts.self_ensemble {
            restore_image_x8
        } else {
            restore_image
        };
        let out = restore(
            &model.net,
            model.manifest.range,
            lq,
            &model.device,
            opts.tiling,
        )?;
        let (psnr, ssim) = score(&out, gt, opts.channel, name)?;
        let (input_psnr, input_ssim) = score(lq, gt, opts.channel, name)?;
        let e = |e: quality::QualityError| Error::data(format!("{name}: {e}"));
        per_image.push(ImageScore {
            name: name.clone(),
            psnr,
            ssim,
            input_psnr,
            input_ssim,
            psnr_debiased: quality::psnr_debiased(out.as_metric(), gt.as_metric()).map_err(e)?,
            bias: quality::mean_error(out.as_metric(), gt.as_metric()).map_err(e)?,
            input_bias: quality::mean_error(lq.as_metric(), gt.as_metric()).map_err(e)?,
        });
        bar.inc(1);
    }
    bar.finish_and_clear();
    let n = per_image.len() as f64;
    let mean = |f: fn(&ImageScore) -> f64| per_image.iter().map(f).sum::<f64>() / n;
    Ok(EvalReport {
        model: model.dir.display().to_string(),
        images: per_image.len(),
        channel: opts.channel,
        self_ensemble: opts.self_ensemble,
        psnr: mean(|s| s.psnr),
        ssim: mean(|s| s.ssim),
        input_psnr: mean(|s| s.input_psnr),
        input_ssim: mean(|s| s.input_ssim),
        psnr_debiased: mean(|s| s.psnr_debiased),
        input_psnr_debiased: {
            let mut sum = 0.0;
            for (name, lq, gt) in &items {
                sum += quality::psnr_debiased(lq.as_metric(), gt.as_metric())
                    .map_err(|e| Error::data(format!("{name}: {e}")))?;
            }
            sum / n
        },
        abs_bias: mean(|s| s.bias.iter().map(|v| v.abs()).sum::<f64>() / 3.0),
        input_abs_bias: mean(|s| s.input_bias.iter().map(|v| v.abs()).sum::<f64>() / 3.0),
        added_abs_bias: mean(|s| {
            s.bias
                .iter()
                .zip(&s.input_bias)
                .map(|(a, b)| (a - b).abs())
                .sum::<f64>()
                / 3.0
        }),
        seconds: started.elapsed().as_secs_f64(),
        per_image,
    })
}
