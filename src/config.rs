//! The training job spec (TOML or JSON): typed sections with defaults, validated once with errors
//! that name the offending key.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use crate::data::spec::{
    DataRange, DataSpec, Degradation, FolderSpec, PairedSpec, SyntheticSpec,
};
pub use crate::method::spec::{Conditions, Hinge, LossSpec, Method};
pub use crate::model::spec::{DiffusionSpec, RestorerInit, RestorerSpec};

use crate::check::range_ok;
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
    /// Where the run's points go besides `metrics.jsonl`.
    #[serde(default)]
    pub tracking: TrackingSpec,
}

/// `[tracking]`: the exporters of a run's metric log.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TrackingSpec {
    /// Mirror the points and validation crops as TensorBoard event files in `tensorboard/`.
    #[serde(default = "yes")]
    pub tensorboard: bool,
    /// An MLflow tracking server (`http://host:5000`): one MLflow run per noiseda run.
    #[serde(default)]
    pub mlflow_uri: Option<String>,
    /// The MLflow experiment (created when missing).
    #[serde(default = "default_experiment")]
    pub experiment: String,
    /// The MLflow run's name; default the spec's `name`.
    #[serde(default)]
    pub run_name: Option<String>,
}

fn default_experiment() -> String {
    "noiseda".into()
}

fn yes() -> bool {
    true
}

impl Default for TrackingSpec {
    fn default() -> Self {
        Self {
            tensorboard: true,
            mlflow_uri: None,
            experiment: default_experiment(),
            run_name: None,
        }
    }
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

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ValidationSpec {
    /// Validate on `data.val` every N steps (and at the end); 0 = only at the end.
    #[serde(default)]
    pub every: u64,
    /// Tile size for validation inference (0 = whole image).
    #[serde(default)]
    pub tile: usize,
    /// How many validation pairs (the first, by name) get a crop picture at each validation:
    /// noisy | restored | ground truth, in `val-crops/` and TensorBoard. 0 = none.
    #[serde(default = "default_val_crops")]
    pub crops: usize,
}

fn default_val_crops() -> usize {
    3
}

/// The most validation crops a spec may ask for.
pub const MAX_VAL_CROPS: usize = 16;

impl Default for ValidationSpec {
    fn default() -> Self {
        Self {
            every: 0,
            tile: 0,
            crops: default_val_crops(),
        }
    }
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
                .map_err(|e| Error::invalid(path.display().to_string(), e.to_string()))?
        } else {
            Self::from_toml(&text)
                .map_err(|e| Error::invalid(path.display().to_string(), e.to_string()))?
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

    /// Data paths of the spec that do not exist, each an [`Error::Invalid`] naming its key.
    pub fn missing_paths(&self) -> Vec<Error> {
        self.clone()
            .data_paths_mut()
            .into_iter()
            .filter(|(_, p)| !p.exists())
            .map(|(key, p)| {
                Error::invalid(
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
            Error::invalid(
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
                problems.push(Error::invalid(key, "must not contain `..`"));
                continue;
            }
            match p.canonicalize() {
                Ok(real) if roots.iter().any(|r| real.starts_with(r)) => *p = real,
                Ok(_) => problems.push(outside(key, p)),
                Err(_) if roots.iter().any(|r| p.starts_with(r)) => problems.push(Error::invalid(
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

    /// Every invalid value, each as an [`Error::Invalid`] naming its key.
    pub fn problems(&self) -> Vec<Error> {
        let mut bad = Vec::new();
        if self.name.trim().is_empty() {
            bad.push(Error::invalid("name", "must not be empty"));
        }
        if self.steps == 0 {
            bad.push(Error::invalid("steps", "must be at least 1"));
        }
        if let Err(e) = crate::device::parse(&self.device) {
            bad.push(Error::invalid("device", e.to_string()));
        }
        if let Err(e) = self.restorer.resolve() {
            bad.push(e);
        }
        self.data_problems(&mut bad);
        if self.method.uses_diffusion() {
            self.diffusion_problems(&mut bad);
        }
        self.optimizer_problems(&mut bad);
        if !(0.0..1.0).contains(&self.ema.decay) {
            bad.push(Error::invalid(
                "ema.decay",
                format!("must be in [0, 1), got {}", self.ema.decay),
            ));
        }
        if !self.loss.charbonnier_eps.is_finite() || self.loss.charbonnier_eps <= 0.0 {
            bad.push(Error::invalid("loss.charbonnier_eps", "must be > 0"));
        }
        if self.validation.tile != 0
            && (self.validation.tile < 16 || !self.validation.tile.is_multiple_of(8))
        {
            bad.push(Error::invalid(
                "validation.tile",
                "must be 0 (whole image) or a multiple of 8 of at least 16",
            ));
        }
        if self.validation.crops > MAX_VAL_CROPS {
            bad.push(Error::invalid(
                "validation.crops",
                format!(
                    "must be at most {MAX_VAL_CROPS}, got {}",
                    self.validation.crops
                ),
            ));
        }
        bad
    }

    /// `data.*`: patch, batch, prefetch, the synthetic domain and the validation pairs.
    fn data_problems(&self, bad: &mut Vec<Error>) {
        let d = &self.data;
        if d.patch < 8 || !d.patch.is_multiple_of(8) {
            bad.push(Error::invalid(
                "data.patch",
                format!("must be a positive multiple of 8, got {}", d.patch),
            ));
        }
        if d.batch == 0 {
            bad.push(Error::invalid("data.batch", "must be at least 1"));
        }
        if d.prefetch == 0 {
            bad.push(Error::invalid("data.prefetch", "must be at least 1"));
        }
        let s = &d.synthetic;
        match (&s.clean, &s.lq, &s.gt, &s.root) {
            (Some(_), None, None, None) => match &s.degradation {
                None => bad.push(Error::invalid(
                    "data.synthetic.degradation",
                    "a clean folder needs a degradation, e.g. { kind = \"awgn\", sigma = [0, 50] }",
                )),
                Some(Degradation::Awgn { sigma: [lo, hi] }) => {
                    if !(lo.is_finite() && hi.is_finite()) || *lo < 0.0 || lo > hi {
                        bad.push(Error::invalid(
                            "data.synthetic.degradation.sigma",
                            format!("must be [low, high] with 0 <= low <= high, got [{lo}, {hi}]"),
                        ));
                    }
                }
                Some(Degradation::Camera(c)) => {
                    if !range_ok(c.shot) || !range_ok(c.read) {
                        bad.push(Error::invalid(
                            "data.synthetic.degradation",
                            "camera `shot` and `read` must be [low, high] with 0 <= low <= high",
                        ));
                    }
                    if c.jpeg[0] == 0 || c.jpeg[0] > c.jpeg[1] || c.jpeg[1] > 100 {
                        bad.push(Error::invalid(
                            "data.synthetic.degradation.jpeg",
                            "must be [low, high] qualities with 1 <= low <= high <= 100",
                        ));
                    }
                }
                Some(Degradation::Isp(i)) => {
                    if let Err((k, m)) = i.validate() {
                        bad.push(Error::invalid(format!("data.synthetic.degradation.{k}"), m));
                    }
                }
                Some(Degradation::Rain(r)) => {
                    if let Err((k, m)) = r.validate() {
                        bad.push(Error::invalid(format!("data.synthetic.degradation.{k}"), m));
                    }
                }
                Some(Degradation::Blur(b)) => {
                    if let Err((k, m)) = b.validate() {
                        bad.push(Error::invalid(format!("data.synthetic.degradation.{k}"), m));
                    }
                }
            },
            (None, Some(_), Some(_), None) | (None, None, None, Some(_)) => {
                if s.degradation.is_some() {
                    bad.push(Error::invalid(
                        "data.synthetic.degradation",
                        "only applies to `clean`; paired folders are already degraded",
                    ));
                }
            }
            _ => {
                bad.push(Error::invalid(
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
                bad.push(Error::invalid(
                    "data.val",
                    "give both `lq` and `gt`, or a paired dataset `root`",
                ));
            }
        }
    }

    /// The diffusion net, the real (and unpaired) domains and the diffusion loss terms, for
    /// the methods that use them.
    fn diffusion_problems(&self, bad: &mut Vec<Error>) {
        let d = &self.data;
        let cfg = match self.diffusion.resolve() {
            Ok(cfg) => Some(cfg),
            Err(e) => {
                bad.push(e);
                None
            }
        };
        if d.real.is_none() {
            bad.push(Error::invalid(
                "data.real",
                "the adaptation methods need unlabeled real images: [data.real] dir = ...",
            ));
        }
        if self.method == Method::NoiseDaUnpaired && d.unpaired.is_none() {
            bad.push(Error::invalid(
                "data.unpaired",
                "noise-da-unpaired needs a folder of unpaired clean images: [data.unpaired] dir = ...",
            ));
        }
        if let Some(cfg) = cfg.filter(|c| !d.patch.is_multiple_of(c.multiple())) {
            bad.push(Error::invalid(
                "data.patch",
                format!(
                    "must be a multiple of {} for this diffusion net",
                    cfg.multiple()
                ),
            ));
        }
        let ds = &self.diffusion;
        if ds.timesteps < 2 {
            bad.push(Error::invalid("diffusion.timesteps", "must be at least 2"));
        }
        let [b0, b1] = ds.beta;
        if !(b0.is_finite() && b1.is_finite() && 0.0 < b0 && b0 <= b1 && b1 < 1.0) {
            bad.push(Error::invalid(
                "diffusion.beta",
                format!("must satisfy 0 < lo <= hi < 1, got [{b0}, {b1}]"),
            ));
        }
        let l = &self.loss;
        let [t0, t1] = l.t_range;
        if !(1 <= t0 && t0 <= t1 && t1 < ds.timesteps) {
            bad.push(Error::invalid(
                "loss.t_range",
                format!(
                    "must satisfy 1 <= lo <= hi < diffusion.timesteps ({}), got [{t0}, {t1}]",
                    ds.timesteps
                ),
            ));
        }
        if !l.diffusion_weight.is_finite() || l.diffusion_weight < 0.0 {
            bad.push(Error::invalid("loss.diffusion_weight", "must be >= 0"));
        }
        if !l.margin.is_finite() || l.margin < 0.0 {
            bad.push(Error::invalid("loss.margin", "must be >= 0"));
        }
        if let Some(lr) = self.optimizer.diffusion_lr {
            if !lr.is_finite() || lr <= 0.0 {
                bad.push(Error::invalid("optimizer.diffusion_lr", "must be > 0"));
            }
        }
    }

    /// `optimizer.*`.
    fn optimizer_problems(&self, bad: &mut Vec<Error>) {
        let o = &self.optimizer;
        if !o.lr.is_finite() || o.lr <= 0.0 {
            bad.push(Error::invalid(
                "optimizer.lr",
                format!("must be > 0, got {}", o.lr),
            ));
        }
        for (i, b) in o.betas.iter().enumerate() {
            if !(0.0..1.0).contains(b) {
                bad.push(Error::invalid(
                    format!("optimizer.betas[{i}]"),
                    format!("must be in [0, 1), got {b}"),
                ));
            }
        }
        if !o.eps.is_finite() || o.eps <= 0.0 {
            bad.push(Error::invalid("optimizer.eps", "must be > 0"));
        }
        if !(0.0..=1.0).contains(&o.min_lr) {
            bad.push(Error::invalid(
                "optimizer.min_lr",
                format!("must be a fraction of lr in [0, 1], got {}", o.min_lr),
            ));
        }
        if o.warmup_steps >= self.steps.max(1) {
            bad.push(Error::invalid(
                "optimizer.warmup_steps",
                format!(
                    "must be below steps ({}), got {}",
                    self.steps, o.warmup_steps
                ),
            ));
        }
        if !o.weight_decay.is_finite() || o.weight_decay < 0.0 {
            bad.push(Error::invalid("optimizer.weight_decay", "must be >= 0"));
        }
        if o.kind == OptimizerKind::Adam && o.weight_decay != 0.0 {
            bad.push(Error::invalid(
                "optimizer.weight_decay",
                "plain adam has no decoupled weight decay; use kind = \"adamw\"",
            ));
        }
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
