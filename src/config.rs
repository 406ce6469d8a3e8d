//! The training job spec (TOML or JSON): typed sections with defaults, validated once with errors
//! that name the offending key.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::model::ArchConfig;
use crate::{Error, Result};

/// A whole training job. Same fields as the gRPC `JobSpec`; unknown keys are an error.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct JobSpec {
    /// Human-readable run name.
    pub name: String,
    /// Restoration task; decides the default data range (denoise: [0, 1]; derain, deblur:
    /// [-1, 1]).
    #[serde(default)]
    pub task: Task,
    /// Training method. `vanilla` = Charbonnier on synthetic pairs only.
    #[serde(default)]
    pub method: Method,
    /// Seed of every random draw (init, crops, augmentation, noise).
    #[serde(default)]
    pub seed: u64,
    /// `cpu` or `cuda:N`.
    #[serde(default = "default_device")]
    pub device: String,
    /// Number of optimizer steps.
    pub steps: u64,
    pub restorer: RestorerSpec,
    /// The diffusion network and schedule (adaptation methods only).
    #[serde(default)]
    pub diffusion: DiffusionSpec,
    pub data: DataSpec,
    #[serde(default)]
    pub loss: LossSpec,
    #[serde(default)]
    pub optimizer: OptimizerSpec,
    #[serde(default)]
    pub ema: EmaSpec,
    #[serde(default)]
    pub checkpoint: CheckpointSpec,
    #[serde(default)]
    pub validation: ValidationSpec,
    #[serde(default)]
    pub export: ExportSpec,
}

fn default_device() -> String {
    "cpu".into()
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Task {
    #[default]
    Denoise,
    Derain,
    Deblur,
}

impl Task {
    /// The normalisation the official code uses for the task (method.md §6.2): [0, 1] for
    /// denoising ("norm0"), [-1, 1] for deraining and deblurring ("norm1").
    pub fn default_range(self) -> DataRange {
        match self {
            Task::Denoise => DataRange::Unit,
            Task::Derain | Task::Deblur => DataRange::Signed,
        }
    }
}

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

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Method {
    /// Charbonnier on the synthetic pairs only.
    #[default]
    Vanilla,
    /// Denoising as Adaptation: + λ·diffusion loss conditioned on the restored synthetic and
    /// real images, with channel shuffle and the residual-swap hinge.
    NoiseDa,
    /// The paper's extension ("Ours-Ex"): the diffusion target is an unpaired clean image, no
    /// contrastive term.
    NoiseDaUnpaired,
}

impl Method {
    pub fn uses_diffusion(self) -> bool {
        !matches!(self, Method::Vanilla)
    }
}

/// What the residual-swap hinge compares.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Hinge {
    /// `relu(mean MSE_pos − mean MSE_neg + δ)` over the batch (the official code).
    #[default]
    Batch,
    /// `mean_i relu(MSE_pos,i − MSE_neg,i + δ)`: stays active while any sample violates it.
    Sample,
}

/// Which restored images fill the diffusion network's two condition slots.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Conditions {
    /// Synthetic and real (the method).
    #[default]
    Both,
    /// Only the synthetic output, in both slots (ablation).
    Synthetic,
    /// Only the real output, in both slots (ablation).
    Real,
}

/// The diffusion network: a preset or explicit sizes, and the noise schedule.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DiffusionSpec {
    /// `diffusion-t`, `diffusion-s` or `diffusion-b` (channels [32,32,64,64] / [32,64,128,128] /
    /// [64,128,256,512]); explicit fields below override it.
    #[serde(default = "default_diffusion_preset")]
    pub preset: String,
    pub channels: Option<Vec<usize>>,
    pub res_blocks: Option<usize>,
    pub attention: Option<bool>,
    pub dropout: Option<f64>,
    /// Steps of the linear β schedule.
    #[serde(default = "default_timesteps")]
    pub timesteps: usize,
    /// β at the first and the last step.
    #[serde(default = "default_beta")]
    pub beta: [f64; 2],
}

fn default_diffusion_preset() -> String {
    "diffusion-t".into()
}
fn default_timesteps() -> usize {
    1000
}
fn default_beta() -> [f64; 2] {
    [1e-6, 1e-2]
}

impl Default for DiffusionSpec {
    fn default() -> Self {
        Self {
            preset: default_diffusion_preset(),
            channels: None,
            res_blocks: None,
            attention: None,
            dropout: None,
            timesteps: default_timesteps(),
            beta: default_beta(),
        }
    }
}

impl DiffusionSpec {
    pub fn resolve(&self) -> Result<crate::model::DiffusionConfig> {
        let mut cfg = crate::model::DiffusionConfig::preset(&self.preset).ok_or_else(|| {
            Error::config(
                "diffusion.preset",
                format!(
                    "unknown preset `{}`; expected one of {}",
                    self.preset,
                    crate::model::DiffusionConfig::PRESETS.join(", ")
                ),
            )
        })?;
        if let Some(c) = &self.channels {
            cfg.channels = c.clone();
        }
        if let Some(r) = self.res_blocks {
            cfg.res_blocks = r;
        }
        if let Some(a) = self.attention {
            cfg.attention = a;
        }
        if let Some(d) = self.dropout {
            cfg.dropout = d;
        }
        cfg.validate().map_err(|e| Error::config("diffusion", e))?;
        Ok(cfg)
    }
}

/// The restorer: a preset name, or an explicit architecture.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RestorerSpec {
    /// `unet-t`, `unet-s`, `unet-b` or `dncnn`.
    pub preset: Option<String>,
    /// `unet` or `dncnn` (instead of a preset).
    pub arch: Option<String>,
    /// U-Net base width (channels of the first level).
    pub width: Option<usize>,
    /// U-Net depth (levels, including the bottleneck).
    pub depth: Option<usize>,
    /// DnCNN number of conv layers.
    pub layers: Option<usize>,
    /// DnCNN feature channels.
    pub features: Option<usize>,
    /// `kaiming` (the official init, the default) or `identity`: the same init with the last
    /// conv zeroed, so the residual restorer starts as the identity `y = x`.
    #[serde(default, skip_serializing_if = "RestorerInit::is_default")]
    pub init: RestorerInit,
}

/// How the restorer's weights start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RestorerInit {
    /// Kaiming-normal on every conv, zero biases (official `core/base_network.py`).
    #[default]
    Kaiming,
    /// Kaiming, then the head (last conv) zeroed: R(x) = 0 at step 0.
    Identity,
}

impl RestorerInit {
    fn is_default(&self) -> bool {
        *self == Self::default()
    }
}

impl RestorerSpec {
    /// Resolves the preset or explicit fields into an architecture.
    pub fn resolve(&self) -> Result<ArchConfig> {
        match (&self.preset, &self.arch) {
            (Some(_), Some(_)) => Err(Error::config(
                "restorer",
                "give either `preset` or `arch`, not both",
            )),
            (Some(p), None) => {
                if self.width.is_some()
                    || self.depth.is_some()
                    || self.layers.is_some()
                    || self.features.is_some()
                {
                    return Err(Error::config(
                        "restorer",
                        "size fields (width, depth, layers, features) need `arch`, not `preset`",
                    ));
                }
                ArchConfig::preset(p).ok_or_else(|| {
                    Error::config(
                        "restorer.preset",
                        format!(
                            "unknown preset `{p}`; expected one of {}",
                            ArchConfig::PRESETS.join(", ")
                        ),
                    )
                })
            }
            (None, Some(a)) => {
                let arch = match a.as_str() {
                    "unet" => {
                        if self.layers.is_some() || self.features.is_some() {
                            return Err(Error::config(
                                "restorer",
                                "`layers`/`features` belong to dncnn; unet takes width and depth",
                            ));
                        }
                        let base = crate::model::UNetConfig::default();
                        ArchConfig::UNet(crate::model::UNetConfig {
                            width: self.width.unwrap_or(base.width),
                            depth: self.depth.unwrap_or(base.depth),
                            slope: base.slope,
                        })
                    }
                    "dncnn" => {
                        if self.width.is_some() || self.depth.is_some() {
                            return Err(Error::config(
                                "restorer",
                                "`width`/`depth` belong to unet; dncnn takes layers and features",
                            ));
                        }
                        let base = crate::model::DnCnnConfig::default();
                        ArchConfig::DnCnn(crate::model::DnCnnConfig {
                            layers: self.layers.unwrap_or(base.layers),
                            features: self.features.unwrap_or(base.features),
                        })
                    }
                    other => {
                        return Err(Error::config(
                            "restorer.arch",
                            format!("unknown arch `{other}`; expected `unet` or `dncnn`"),
                        ))
                    }
                };
                arch.validate()?;
                Ok(arch)
            }
            (None, None) => Err(Error::config(
                "restorer",
                "missing `preset` (e.g. \"unet-t\") or `arch`",
            )),
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
            .map_err(|e| Error::config("degradation", e.message().to_string()))?;
        holder.degradation.validate("degradation")?;
        Ok(holder.degradation)
    }

    /// Checks the recipe's ranges; errors name the bad key under `prefix`.
    pub fn validate(&self, prefix: &str) -> Result<()> {
        let check = |r: std::result::Result<(), (&'static str, String)>| {
            r.map_err(|(k, m)| Error::config(format!("{prefix}.{k}"), m))
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

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LossSpec {
    /// Charbonnier ε (the square is added inside the root).
    #[serde(default = "default_charbonnier_eps")]
    pub charbonnier_eps: f64,
    /// λ_max of the diffusion loss: λ = diffusion_weight·tanh(2.5·p).
    #[serde(default = "default_diffusion_weight")]
    pub diffusion_weight: f64,
    /// Steps over which p ramps from 0 to 1 (the official code: 300 epochs).
    #[serde(default = "default_ramp_steps")]
    pub ramp_steps: u64,
    /// Steps with λ = 0 before the ramp starts (the diffusion net trains alone first).
    #[serde(default)]
    pub hold_steps: u64,
    /// Margin δ of the residual-swap hinge.
    #[serde(default = "default_margin")]
    pub margin: f64,
    /// Whether the hinge compares batch-mean MSEs (the official code) or each sample's.
    #[serde(default)]
    pub hinge: Hinge,
    /// Per-sample swap of the two condition slots ("channel shuffle").
    #[serde(default = "yes")]
    pub shuffle: bool,
    /// The residual-swap contrastive term (noise-da only).
    #[serde(default = "yes")]
    pub residual_swap: bool,
    /// Which restored images condition the diffusion network.
    #[serde(default)]
    pub conditions: Conditions,
    /// Integer timestep range [lo, hi] drawn per sample (1 ≤ lo ≤ hi < diffusion.timesteps).
    #[serde(default = "default_t_range")]
    pub t_range: [usize; 2],
}

fn yes() -> bool {
    true
}
fn default_diffusion_weight() -> f64 {
    0.2
}
fn default_ramp_steps() -> u64 {
    1000
}
fn default_margin() -> f64 {
    0.1
}
fn default_t_range() -> [usize; 2] {
    [1, 999]
}

fn default_charbonnier_eps() -> f64 {
    1e-3
}

impl Default for LossSpec {
    fn default() -> Self {
        Self {
            charbonnier_eps: default_charbonnier_eps(),
            diffusion_weight: default_diffusion_weight(),
            ramp_steps: default_ramp_steps(),
            hold_steps: 0,
            margin: default_margin(),
            hinge: Hinge::default(),
            shuffle: true,
            residual_swap: true,
            conditions: Conditions::default(),
            t_range: default_t_range(),
        }
    }
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum OptimizerKind {
    #[default]
    Adam,
    AdamW,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct OptimizerSpec {
    #[serde(default)]
    pub kind: OptimizerKind,
    #[serde(default = "default_lr")]
    pub lr: f64,
    #[serde(default = "default_betas")]
    pub betas: [f64; 2],
    #[serde(default = "default_adam_eps")]
    pub eps: f64,
    #[serde(default)]
    pub weight_decay: f64,
    /// Learning rate of the diffusion network (default: `lr`).
    pub diffusion_lr: Option<f64>,
    /// `constant` (the official code: no scheduler) or `cosine` (half-cosine decay from the
    /// lr to `min_lr` × lr at the last step). Applies to both networks' rates.
    #[serde(default, skip_serializing_if = "LrSchedule::is_default")]
    pub schedule: LrSchedule,
    /// Steps of linear warm-up from lr/warmup to the lr (0 = none), before the schedule.
    #[serde(default, skip_serializing_if = "is_zero_u64")]
    pub warmup_steps: u64,
    /// Final learning rate of the cosine schedule, as a fraction of `lr`.
    #[serde(default, skip_serializing_if = "is_zero_f64")]
    pub min_lr: f64,
}

/// The learning-rate schedule over a run's `steps`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LrSchedule {
    #[default]
    Constant,
    Cosine,
}

impl LrSchedule {
    fn is_default(&self) -> bool {
        *self == Self::default()
    }
}

fn is_zero_u64(v: &u64) -> bool {
    *v == 0
}
fn is_zero_f64(v: &f64) -> bool {
    *v == 0.0
}

impl OptimizerSpec {
    /// The factor on the learning rates at (1-based) `step` of a `total`-step run.
    pub fn lr_factor(&self, step: u64, total: u64) -> f64 {
        if step <= self.warmup_steps {
            return step as f64 / self.warmup_steps as f64;
        }
        match self.schedule {
            LrSchedule::Constant => 1.0,
            LrSchedule::Cosine => {
                let span = total.saturating_sub(self.warmup_steps).max(1) as f64;
                let p = ((step - self.warmup_steps) as f64 / span).min(1.0);
                self.min_lr + (1.0 - self.min_lr) * 0.5 * (1.0 + (std::f64::consts::PI * p).cos())
            }
        }
    }
}

fn default_lr() -> f64 {
    1e-4
}
fn default_betas() -> [f64; 2] {
    [0.9, 0.999]
}
fn default_adam_eps() -> f64 {
    1e-8
}

impl Default for OptimizerSpec {
    fn default() -> Self {
        Self {
            kind: OptimizerKind::Adam,
            lr: default_lr(),
            betas: default_betas(),
            eps: default_adam_eps(),
            weight_decay: 0.0,
            diffusion_lr: None,
            schedule: LrSchedule::Constant,
            warmup_steps: 0,
            min_lr: 0.0,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct EmaSpec {
    /// EMA decay; the effective decay warms up as min(decay, (1+step)/(10+step)).
    #[serde(default = "default_ema_decay")]
    pub decay: f64,
}

fn default_ema_decay() -> f64 {
    0.999
}

impl Default for EmaSpec {
    fn default() -> Self {
        Self {
            decay: default_ema_decay(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CheckpointSpec {
    /// Save every N steps (and always at the end); 0 = only at the end.
    #[serde(default = "default_ckpt_every")]
    pub every: u64,
    /// Keep the newest N checkpoints; 0 = keep all.
    #[serde(default = "default_keep_last")]
    pub keep_last: usize,
}

fn default_ckpt_every() -> u64 {
    500
}
fn default_keep_last() -> usize {
    3
}

impl Default for CheckpointSpec {
    fn default() -> Self {
        Self {
            every: default_ckpt_every(),
            keep_last: default_keep_last(),
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ValidationSpec {
    /// Validate on `data.val` every N steps (and at the end); 0 = only at the end.
    #[serde(default)]
    pub every: u64,
    /// Tile size for validation inference (0 = whole image).
    #[serde(default)]
    pub tile: usize,
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Weights {
    /// The optimizer's weights (what the paper evaluates).
    #[default]
    Raw,
    /// The exponential moving average of the weights.
    Ema,
}

impl Weights {
    pub fn as_str(self) -> &'static str {
        match self {
            Weights::Raw => "raw",
            Weights::Ema => "ema",
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ExportSpec {
    /// Which weights the final model artifact holds.
    #[serde(default)]
    pub weights: Weights,
}

/// True for a finite range [low, high] with 0 <= low <= high.
pub(crate) fn range_ok([lo, hi]: [f32; 2]) -> bool {
    lo.is_finite() && hi.is_finite() && 0.0 <= lo && lo <= hi
}

impl JobSpec {
    /// The network value range: `data.range`, else the task's.
    pub fn range(&self) -> DataRange {
        self.data.range.unwrap_or(self.task.default_range())
    }

    /// Parses a spec from TOML, or JSON when the file ends in `.json`, and validates it.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let spec = if path.extension().is_some_and(|e| e == "json") {
            serde_json::from_str(&text)
                .map_err(|e| Error::config(path.display().to_string(), e.to_string()))?
        } else {
            Self::from_toml(&text)
                .map_err(|e| Error::config(path.display().to_string(), e.to_string()))?
        };
        let mut spec: JobSpec = spec;
        spec.resolve_paths(path.parent().unwrap_or(Path::new(".")));
        spec.validate()?;
        Ok(spec)
    }

    /// Parses TOML without validating or resolving paths.
    pub fn from_toml(text: &str) -> std::result::Result<Self, toml::de::Error> {
        toml::from_str(text)
    }

    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).expect("a JobSpec always serialises. This is a bug.")
    }

    /// The data paths of the spec with their keys.
    fn data_paths_mut(&mut self) -> Vec<(&'static str, &mut PathBuf)> {
        let d = &mut self.data;
        let s = &mut d.synthetic;
        let mut paths = vec![
            ("data.synthetic.clean", s.clean.as_mut()),
            ("data.synthetic.lq", s.lq.as_mut()),
            ("data.synthetic.gt", s.gt.as_mut()),
            ("data.synthetic.root", s.root.as_mut()),
            ("data.real.dir", d.real.as_mut().map(|r| &mut r.dir)),
            ("data.unpaired.dir", d.unpaired.as_mut().map(|r| &mut r.dir)),
        ];
        if let Some(v) = d.val.as_mut() {
            paths.push(("data.val.lq", v.lq.as_mut()));
            paths.push(("data.val.gt", v.gt.as_mut()));
            paths.push(("data.val.root", v.root.as_mut()));
        }
        paths
            .into_iter()
            .filter_map(|(k, p)| p.map(|p| (k, p)))
            .collect()
    }

    /// Data paths of the spec that do not exist, each an [`Error::Config`] naming its key.
    pub fn missing_paths(&self) -> Vec<Error> {
        self.clone()
            .data_paths_mut()
            .into_iter()
            .filter(|(_, p)| !p.exists())
            .map(|(key, p)| {
                Error::config(
                    key,
                    format!("{} does not exist on this machine", p.display()),
                )
            })
            .collect()
    }

    /// Confines the (absolute) data paths to `roots` (canonical directories): a path with a
    /// `..` component, or one whose real location (symlinks resolved) is outside every root,
    /// is a problem; the others are replaced by their real location, so the job reads what
    /// was checked. A path outside the roots is reported without saying whether it exists.
    pub fn confine_paths(&mut self, roots: &[PathBuf]) -> Vec<Error> {
        let mut problems = Vec::new();
        let outside = |key: &str, p: &Path| {
            Error::config(
                key,
                format!(
                    "{} is outside the server's data roots ({})",
                    p.display(),
                    roots
                        .iter()
                        .map(|r| r.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            )
        };
        for (key, p) in self.data_paths_mut() {
            if p.components().any(|c| c == std::path::Component::ParentDir) {
                problems.push(Error::config(key, "must not contain `..`"));
                continue;
            }
            match p.canonicalize() {
                Ok(real) if roots.iter().any(|r| real.starts_with(r)) => *p = real,
                Ok(_) => problems.push(outside(key, p)),
                Err(_) if roots.iter().any(|r| p.starts_with(r)) => problems.push(Error::config(
                    key,
                    format!("{} does not exist on this machine", p.display()),
                )),
                Err(_) => problems.push(outside(key, p)),
            }
        }
        problems
    }

    /// Makes relative data paths relative to `base` (the spec file's folder).
    pub fn resolve_paths(&mut self, base: &Path) {
        let fix = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        let s = &mut self.data.synthetic;
        for p in [&mut s.clean, &mut s.lq, &mut s.gt, &mut s.root]
            .into_iter()
            .flatten()
        {
            fix(p);
        }
        for r in [&mut self.data.real, &mut self.data.unpaired]
            .into_iter()
            .flatten()
        {
            fix(&mut r.dir);
        }
        if let Some(v) = &mut self.data.val {
            for p in [&mut v.lq, &mut v.gt, &mut v.root].into_iter().flatten() {
                fix(p);
            }
        }
    }

    /// Checks every value once; the error names the key (or, when several values are
    /// wrong, lists every one of them).
    pub fn validate(&self) -> Result<()> {
        Error::from_problems(self.problems())
    }

    /// Every invalid value, each as an [`Error::Config`] naming its key.
    pub fn problems(&self) -> Vec<Error> {
        let mut bad = Vec::new();
        if self.name.trim().is_empty() {
            bad.push(Error::config("name", "must not be empty"));
        }
        if self.steps == 0 {
            bad.push(Error::config("steps", "must be at least 1"));
        }
        if let Err(e) = crate::device::parse(&self.device) {
            bad.push(Error::config("device", e.to_string()));
        }
        if let Err(e) = self.restorer.resolve() {
            bad.push(e);
        }
        let d = &self.data;
        if d.patch < 8 || !d.patch.is_multiple_of(8) {
            bad.push(Error::config(
                "data.patch",
                format!("must be a positive multiple of 8, got {}", d.patch),
            ));
        }
        if d.batch == 0 {
            bad.push(Error::config("data.batch", "must be at least 1"));
        }
        if d.prefetch == 0 {
            bad.push(Error::config("data.prefetch", "must be at least 1"));
        }
        let s = &d.synthetic;
        match (&s.clean, &s.lq, &s.gt, &s.root) {
            (Some(_), None, None, None) => match &s.degradation {
                None => bad.push(Error::config(
                    "data.synthetic.degradation",
                    "a clean folder needs a degradation, e.g. { kind = \"awgn\", sigma = [0, 50] }",
                )),
                Some(Degradation::Awgn { sigma: [lo, hi] }) => {
                    if !(lo.is_finite() && hi.is_finite()) || *lo < 0.0 || lo > hi {
                        bad.push(Error::config(
                            "data.synthetic.degradation.sigma",
                            format!("must be [low, high] with 0 <= low <= high, got [{lo}, {hi}]"),
                        ));
                    }
                }
                Some(Degradation::Camera(c)) => {
                    if !range_ok(c.shot) || !range_ok(c.read) {
                        bad.push(Error::config(
                            "data.synthetic.degradation",
                            "camera `shot` and `read` must be [low, high] with 0 <= low <= high",
                        ));
                    }
                    if c.jpeg[0] == 0 || c.jpeg[0] > c.jpeg[1] || c.jpeg[1] > 100 {
                        bad.push(Error::config(
                            "data.synthetic.degradation.jpeg",
                            "must be [low, high] qualities with 1 <= low <= high <= 100",
                        ));
                    }
                }
                Some(Degradation::Isp(i)) => {
                    if let Err((k, m)) = i.validate() {
                        bad.push(Error::config(format!("data.synthetic.degradation.{k}"), m));
                    }
                }
                Some(Degradation::Rain(r)) => {
                    if let Err((k, m)) = r.validate() {
                        bad.push(Error::config(format!("data.synthetic.degradation.{k}"), m));
                    }
                }
                Some(Degradation::Blur(b)) => {
                    if let Err((k, m)) = b.validate() {
                        bad.push(Error::config(format!("data.synthetic.degradation.{k}"), m));
                    }
                }
            },
            (None, Some(_), Some(_), None) | (None, None, None, Some(_)) => {
                if s.degradation.is_some() {
                    bad.push(Error::config(
                        "data.synthetic.degradation",
                        "only applies to `clean`; paired folders are already degraded",
                    ));
                }
            }
            _ => {
                bad.push(Error::config(
                    "data.synthetic",
                    "give one of: `clean` (+ `degradation`), both `lq` and `gt`, or a paired dataset `root`",
                ))
            }
        }
        if let Some(v) = &d.val {
            if !matches!(
                (&v.lq, &v.gt, &v.root),
                (Some(_), Some(_), None) | (None, None, Some(_))
            ) {
                bad.push(Error::config(
                    "data.val",
                    "give both `lq` and `gt`, or a paired dataset `root`",
                ));
            }
        }
        if self.method.uses_diffusion() {
            let cfg = match self.diffusion.resolve() {
                Ok(cfg) => Some(cfg),
                Err(e) => {
                    bad.push(e);
                    None
                }
            };
            if d.real.is_none() {
                bad.push(Error::config(
                    "data.real",
                    "the adaptation methods need unlabeled real images: [data.real] dir = ...",
                ));
            }
            if self.method == Method::NoiseDaUnpaired && d.unpaired.is_none() {
                bad.push(Error::config(
                    "data.unpaired",
                    "noise-da-unpaired needs a folder of unpaired clean images: [data.unpaired] dir = ...",
                ));
            }
            if let Some(cfg) = cfg.filter(|c| !d.patch.is_multiple_of(c.multiple())) {
                bad.push(Error::config(
                    "data.patch",
                    format!(
                        "must be a multiple of {} for this diffusion net",
                        cfg.multiple()
                    ),
                ));
            }
            let ds = &self.diffusion;
            if ds.timesteps < 2 {
                bad.push(Error::config("diffusion.timesteps", "must be at least 2"));
            }
            let [b0, b1] = ds.beta;
            if !(b0.is_finite() && b1.is_finite() && 0.0 < b0 && b0 <= b1 && b1 < 1.0) {
                bad.push(Error::config(
                    "diffusion.beta",
                    format!("must satisfy 0 < lo <= hi < 1, got [{b0}, {b1}]"),
                ));
            }
            let l = &self.loss;
            let [t0, t1] = l.t_range;
            if !(1 <= t0 && t0 <= t1 && t1 < ds.timesteps) {
                bad.push(Error::config(
                    "loss.t_range",
                    format!(
                        "must satisfy 1 <= lo <= hi < diffusion.timesteps ({}), got [{t0}, {t1}]",
                        ds.timesteps
                    ),
                ));
            }
            if !l.diffusion_weight.is_finite() || l.diffusion_weight < 0.0 {
                bad.push(Error::config("loss.diffusion_weight", "must be >= 0"));
            }
            if !l.margin.is_finite() || l.margin < 0.0 {
                bad.push(Error::config("loss.margin", "must be >= 0"));
            }
            if let Some(lr) = self.optimizer.diffusion_lr {
                if !lr.is_finite() || lr <= 0.0 {
                    bad.push(Error::config("optimizer.diffusion_lr", "must be > 0"));
                }
            }
        }
        let o = &self.optimizer;
        if !o.lr.is_finite() || o.lr <= 0.0 {
            bad.push(Error::config(
                "optimizer.lr",
                format!("must be > 0, got {}", o.lr),
            ));
        }
        for (i, b) in o.betas.iter().enumerate() {
            if !(0.0..1.0).contains(b) {
                bad.push(Error::config(
                    format!("optimizer.betas[{i}]"),
                    format!("must be in [0, 1), got {b}"),
                ));
            }
        }
        if !o.eps.is_finite() || o.eps <= 0.0 {
            bad.push(Error::config("optimizer.eps", "must be > 0"));
        }
        if !(0.0..=1.0).contains(&o.min_lr) {
            bad.push(Error::config(
                "optimizer.min_lr",
                format!("must be a fraction of lr in [0, 1], got {}", o.min_lr),
            ));
        }
        if o.warmup_steps >= self.steps.max(1) {
            bad.push(Error::config(
                "optimizer.warmup_steps",
                format!(
                    "must be below steps ({}), got {}",
                    self.steps, o.warmup_steps
                ),
            ));
        }
        if !o.weight_decay.is_finite() || o.weight_decay < 0.0 {
            bad.push(Error::config("optimizer.weight_decay", "must be >= 0"));
        }
        if o.kind == OptimizerKind::Adam && o.weight_decay != 0.0 {
            bad.push(Error::config(
                "optimizer.weight_decay",
                "plain adam has no decoupled weight decay; use kind = \"adamw\"",
            ));
        }
        if !(0.0..1.0).contains(&self.ema.decay) {
            bad.push(Error::config(
                "ema.decay",
                format!("must be in [0, 1), got {}", self.ema.decay),
            ));
        }
        if !self.loss.charbonnier_eps.is_finite() || self.loss.charbonnier_eps <= 0.0 {
            bad.push(Error::config("loss.charbonnier_eps", "must be > 0"));
        }
        if self.validation.tile != 0
            && (self.validation.tile < 16 || !self.validation.tile.is_multiple_of(8))
        {
            bad.push(Error::config(
                "validation.tile",
                "must be 0 (whole image) or a multiple of 8 of at least 16",
            ));
        }
        bad
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
name = "t"
steps = 10
[restorer]
preset = "unet-t"
[data.synthetic]
clean = "imgs"
degradation = { kind = "awgn", sigma = [0, 50] }
"#;

    #[test]
    fn minimal_spec_gets_defaults() {
        let spec = JobSpec::from_toml(MINIMAL).unwrap();
        spec.validate().unwrap();
        assert_eq!(spec.data.patch, 64);
        assert_eq!(spec.optimizer.lr, 1e-4);
        assert_eq!(spec.device, "cpu");
        // Round trip through TOML keeps every field.
        assert_eq!(JobSpec::from_toml(&spec.to_toml()).unwrap(), spec);
    }

    #[test]
    fn lr_schedule_warms_up_then_decays() {
        let o = OptimizerSpec {
            schedule: LrSchedule::Cosine,
            warmup_steps: 10,
            min_lr: 0.1,
            ..OptimizerSpec::default()
        };
        assert!((o.lr_factor(1, 110) - 0.1).abs() < 1e-12);
        assert!((o.lr_factor(10, 110) - 1.0).abs() < 1e-12);
        assert!((o.lr_factor(60, 110) - 0.55).abs() < 1e-12); // half-way: (1 + 0.1) / 2
        assert!((o.lr_factor(110, 110) - 0.1).abs() < 1e-12);
        let f: Vec<f64> = (10..=110).map(|s| o.lr_factor(s, 110)).collect();
        assert!(f.windows(2).all(|w| w[1] <= w[0]), "cosine must not rise");
        // The official default: constant, no warm-up, nothing serialised.
        let d = OptimizerSpec::default();
        assert!((1..=50).all(|s| d.lr_factor(s, 50) == 1.0));
        let spec = JobSpec::from_toml(MINIMAL).unwrap();
        let toml = spec.to_toml();
        assert!(
            !toml.contains("schedule") && !toml.contains("init"),
            "defaults must not appear: {toml}"
        );
    }

    #[test]
    fn camera_degradation_parses_from_toml() {
        let text = MINIMAL.replace(
            r#"degradation = { kind = "awgn", sigma = [0, 50] }"#,
            r#"degradation = { kind = "camera", shot = [1e-4, 1e-3], read = [1e-3, 5e-3], jpeg = [80, 90] }"#,
        );
        let spec = JobSpec::from_toml(&text).unwrap();
        spec.validate().unwrap();
        assert!(matches!(
            spec.data.synthetic.degradation,
            Some(Degradation::Camera(_))
        ));
        let bad = text.replace("jpeg = [80, 90]", "jpeg = [90, 80]");
        let err = JobSpec::from_toml(&bad)
            .unwrap()
            .validate()
            .unwrap_err()
            .to_string();
        assert!(err.contains("jpeg"), "{err}");
    }

    #[test]
    fn unknown_key_is_named() {
        let text = MINIMAL.replace("steps = 10", "steps = 10\nstepz = 3");
        let err = JobSpec::from_toml(&text).unwrap_err().to_string();
        assert!(err.contains("stepz"), "{err}");
        let text = MINIMAL.replace("[data.synthetic]", "[data.synthetic]\ncleen = \"x\"");
        let err = JobSpec::from_toml(&text).unwrap_err().to_string();
        assert!(err.contains("cleen"), "{err}");
    }

    #[test]
    fn bad_values_name_the_key() {
        let cases = [
            ("steps = 10", "steps = 0", "steps"),
            (
                "preset = \"unet-t\"",
                "preset = \"unet-x\"",
                "restorer.preset",
            ),
            (
                "sigma = [0, 50]",
                "sigma = [50, 0]",
                "data.synthetic.degradation.sigma",
            ),
            (
                "[data.synthetic]",
                "[data]\npatch = 60\n[data.synthetic]",
                "data.patch",
            ),
            ("steps = 10", "steps = 10\ndevice = \"tpu\"", "device"),
        ];
        for (from, to, key) in cases {
            let spec = JobSpec::from_toml(&MINIMAL.replace(from, to)).unwrap();
            let err = spec.validate().unwrap_err().to_string();
            assert!(err.contains(&format!("`{key}`")), "{key}: {err}");
        }
    }
}
