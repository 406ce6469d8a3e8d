//! The data section of a job spec (owned here): where images come from, the synthetic
//! degradation recipes, and the value range images have inside the networks.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::draw::{add_gaussian, draw};
use super::Image;
use crate::{Error, Result};

/// The value range images have inside the networks. Files and metrics are always [0, 1].
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum DataRange {
    /// [0, 1].
    #[default]
    Unit,
    /// [-1, 1] (x·2 − 1).
    Signed,
}

impl DataRange {
    /// Maps [0, 1] pixels into the network range.
    pub fn to_net(self, xs: &candle::Tensor) -> candle::Result<candle::Tensor> {
        match self {
            DataRange::Unit => Ok(xs.clone()),
            DataRange::Signed => xs.affine(2.0, -1.0),
        }
    }

    /// Maps network outputs back to [0, 1] pixels (not clamped).
    pub fn from_net(self, xs: &candle::Tensor) -> candle::Result<candle::Tensor> {
        match self {
            DataRange::Unit => Ok(xs.clone()),
            DataRange::Signed => xs.affine(0.5, 0.5),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            DataRange::Unit => "unit",
            DataRange::Signed => "signed",
        }
    }
}

/// Where training and validation images come from.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DataSpec {
    /// Square training patch side in pixels (multiple of 8).
    #[serde(default = "default_patch")]
    pub patch: usize,
    /// Synthetic pairs per batch.
    #[serde(default = "default_batch")]
    pub batch: usize,
    /// Batches prepared ahead by the loader thread (bounded queue).
    #[serde(default = "default_prefetch")]
    pub prefetch: usize,
    /// Labelled (synthetic-domain) training pairs.
    pub synthetic: SyntheticSpec,
    /// Unlabeled real-domain degraded images (used by the adaptation methods).
    pub real: Option<FolderSpec>,
    /// Unpaired clean images: the diffusion target of `noise-da-unpaired`.
    pub unpaired: Option<FolderSpec>,
    /// Paired validation folders.
    pub val: Option<PairedSpec>,
    /// Network value range; default from `task` (`unit` = [0, 1], `signed` = [-1, 1]).
    pub range: Option<DataRange>,
}

fn default_patch() -> usize {
    64
}
fn default_batch() -> usize {
    8
}
fn default_prefetch() -> usize {
    4
}

/// Synthetic pairs: a clean folder plus a degradation, or already-paired folders.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SyntheticSpec {
    /// Folder of clean photos, degraded on the fly by `degradation`.
    pub clean: Option<PathBuf>,
    /// Degradation applied to crops of `clean`.
    pub degradation: Option<Degradation>,
    /// Degraded inputs of pre-made pairs (matched to `gt` by file name).
    pub lq: Option<PathBuf>,
    /// Targets of pre-made pairs.
    pub gt: Option<PathBuf>,
    /// A dataset root holding paired folders in a known layout (`input`/`target` as Rain13K
    /// and SPA, `blur`/`sharp` as GoPro, `blur`/`gt` as RealBlur; nested per scene or flat).
    pub root: Option<PathBuf>,
}

/// A synthetic degradation recipe.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Degradation {
    /// Additive white Gaussian noise, σ drawn per image uniformly from `sigma` (0–255 units),
    /// not clipped (as the official code).
    Awgn { sigma: [f32; 2] },
    /// Realistic camera noise: Poisson–Gaussian raw noise, Bayer demosaic, gamma, JPEG
    /// (`shot`, `read`, `jpeg` ranges; see `data::camera`).
    Camera(crate::data::camera::CameraNoise),
    /// A camera pipeline with its parameters drawn per image: unprocess to raw, shot and read
    /// noise, demosaic, white balance, colour correction, tone curve, JPEG (see `data::isp`).
    Isp(crate::data::isp::IspNoise),
    /// Rain streaks of random angle, length, density, blur and brightness (see `data::rain`).
    Rain(crate::data::rain::RainStreaks),
    /// Motion blur along random trajectories or defocus discs, plus mild noise (see
    /// `data::blur`).
    Blur(crate::data::blur::BlurKernels),
}

impl Degradation {
    /// Parses a recipe written as an inline TOML table (`{ kind = "isp", jpeg = [80, 95] }`)
    /// and checks its ranges.
    pub fn from_inline_toml(text: &str) -> Result<Self> {
        #[derive(Deserialize)]
        struct Holder {
            degradation: Degradation,
        }
        let holder: Holder = toml::from_str(&format!("degradation = {text}"))
            .map_err(|e| Error::invalid("degradation", e.message().to_string()))?;
        holder.degradation.validate("degradation")?;
        Ok(holder.degradation)
    }

    /// Checks the recipe's ranges; errors name the bad key under `prefix`.
    pub fn validate(&self, prefix: &str) -> Result<()> {
        let check = |r: std::result::Result<(), (&'static str, String)>| {
            r.map_err(|(k, m)| Error::invalid(format!("{prefix}.{k}"), m))
        };
        match self {
            Degradation::Isp(i) => check(i.validate()),
            Degradation::Rain(r) => check(r.validate()),
            Degradation::Blur(b) => check(b.validate()),
            _ => Ok(()),
        }
    }

    /// Pixels of context a degradation reads beyond each side of the patch (blur kernels);
    /// the loader crops that much more and trims it after degrading.
    pub fn margin(&self) -> usize {
        match self {
            Degradation::Blur(b) => b.max_radius(),
            _ => 0,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FolderSpec {
    pub dir: PathBuf,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PairedSpec {
    /// Degraded images (matched to `gt` by file name).
    pub lq: Option<PathBuf>,
    pub gt: Option<PathBuf>,
    /// Or a dataset root in a known layout (see `data.synthetic.root`).
    pub root: Option<PathBuf>,
    /// Use at most this many pairs (sorted by name); 0 = all.
    #[serde(default)]
    pub max_images: usize,
}

/// Applies a degradation in place (AWGN: σ ~ U(range)/255 per image, not clipped).
pub fn degrade(rng: &mut impl rand::Rng, img: &mut Image, how: &Degradation) {
    match how {
        Degradation::Awgn { sigma } => {
            let sigma = draw(rng, *sigma);
            add_gaussian(rng, img, sigma / 255.0);
        }
        Degradation::Camera(cam) => *img = cam.apply(rng, img),
        Degradation::Isp(isp) => *img = isp.apply(rng, img),
        Degradation::Rain(rain) => *img = rain.apply(rng, img),
        Degradation::Blur(blur) => *img = blur.apply(rng, img),
    }
}
