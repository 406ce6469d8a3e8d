//! The trainer: builds the networks from a job spec, runs the step loop on the calling thread
//! (batches come from the loader thread), validates, checkpoints, resumes exactly and exports
//! the restorer-only model artifact.

pub mod checkpoint;
mod control;
pub mod ema;
pub mod optim;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use candle::{DType, Device, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};
use serde::Serialize;

use crate::artifact;
use crate::config::{DataRange, JobSpec, RestorerInit, Weights};
use crate::data::{Batch, Loader, PairedFolder, TrainData};
use crate::infer::{self, Tiling};
use crate::method::Nets;
use crate::method::Objective;
use crate::model::{self, ArchConfig, DiffusionConfig, DiffusionUNet, Restorer};
use crate::quality::{self, Channel};
use crate::runlog::{MetricLog, MetricPoint, Split};
use crate::{Error, Result};

pub use control::{Control, Event, StopReason};
pub use ema::Ema;
pub use optim::Adam;

/// Prefix of the restorer's variables inside the training VarMap.
pub const RESTORER: &str = "restorer";
/// Prefix of the diffusion network's variables inside the training VarMap.
pub const DIFFUSION: &str = "diffusion";

/// Mixed into the job seed for the per-step diffusion draws (t, ᾱ, ε, masks, dropout).
const DIFFUSION_SEED_SALT: u64 = 0x9e37_79b9_7f4a_7c15;

/// How a run is driven (beyond its spec).
#[derive(Debug, Clone)]
pub struct TrainOptions {
    /// Output directory: checkpoints/, metrics.jsonl, spec.toml, model/.
    pub out: PathBuf,
    /// Continue from the newest checkpoint in `out`; fails if there is none.
    pub resume: bool,
    /// Show a progress bar on stderr.
    pub progress: bool,
    /// Stop flag and event channel when a job manager drives the run.
    pub control: Option<Control>,
    /// The job this run belongs to (recorded in the exported manifest).
    pub job_id: Option<String>,
}

/// What a finished run reports.
#[derive(Debug, Clone, Serialize)]
pub struct TrainSummary {
    pub steps: u64,
    pub start_step: u64,
    pub final_loss: f64,
    /// Mean wall seconds per optimizer step in this invocation: data wait, forward, backward,
    /// update, EMA and metric logging; validation and checkpointing excluded.
    pub seconds_per_step: f64,
    /// Last validation metrics (empty without `data.val`).
    pub metrics: BTreeMap<String, f64>,
    /// The exported model (None when the run stopped early).
    pub artifact: Option<PathBuf>,
    /// Set when [`Control::stop`] ended the run before `steps` (after a checkpoint).
    pub stopped: Option<StopReason>,
}

impl TrainSummary {
    /// The exported model directory; an error when the run was stopped before the end.
    pub fn model_dir(&self) -> Result<&Path> {
        self.artifact.as_deref().ok_or_else(|| {
            Error::checkpoint(format!(
                "the run stopped ({:?}) before step {} and exported no model",
                self.stopped, self.steps
            ))
        })
    }
}

/// The networks and optimizer state of a run.
pub struct Model {
    pub varmap: VarMap,
    pub restorer: Restorer,
    /// The diffusion network of the adaptation methods (trained with, never exported).
    pub diffusion: Option<DiffusionUNet>,
    pub arch: ArchConfig,
    pub device: Device,
}

impl Model {
    /// Builds the restorer under `restorer.` (and the diffusion net under `diffusion.`) and
    /// applies the seeded official init; the restorer's init does not depend on the other net.
    pub fn new(
        arch: &ArchConfig,
        diffusion: Option<&DiffusionConfig>,
        seed: u64,
        device: &Device,
    ) -> Result<Self> {
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, device);
        let restorer = Restorer::new(vb.pp(RESTORER), arch)?;
        let diffusion = diffusion
            .map(|cfg| DiffusionUNet::new(vb.pp(DIFFUSION), cfg))
            .transpose()?;
        model::init_weights(&varmap, &format!("{RESTORER}."), seed, 0)?;
        model::init_weights(&varmap, &format!("{DIFFUSION}."), seed, 1)?;
        Ok(Self {
            varmap,
            restorer,
            diffusion,
            arch: arch.clone(),
            device: device.clone(),
        })
    }

    /// Zeroes the restorer's head (weights and bias), so it starts as the identity `y = x`
    /// (`restorer.init = "identity"`).
    pub fn zero_restorer_head(&self) -> Result<()> {
        let head = format!("{RESTORER}.{}.", Restorer::head(&self.arch));
        let data = self
            .varmap
            .data()
            .lock()
            .expect("varmap lock. This is a bug.");
        let mut zeroed = 0;
        for (name, var) in data.iter().filter(|(n, _)| n.starts_with(&head)) {
            var.set(&var.zeros_like()?)?;
            tracing::debug!(%name, "zero-initialised");
            zeroed += 1;
        }
        if zeroed == 0 {
            return Err(Error::invalid(
                "restorer.init",
                format!("this architecture has no head variables under `{head}`"),
            ));
        }
        Ok(())
    }

    pub fn nets(&self) -> Nets<'_> {
        Nets {
            restorer: &self.restorer,
            diffusion: self.diffusion.as_ref(),
        }
    }

    /// Trainable variables sorted by name.
    pub fn trainable(&self) -> Vec<(String, Var)> {
        let data = self
            .varmap
            .data()
            .lock()
            .expect("varmap lock. This is a bug.");
        let mut v: Vec<_> = data
            .iter()
            .filter(|(n, _)| model::is_trainable(n))
            .map(|(n, v)| (n.clone(), v.clone()))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    /// Every variable (including norm statistics) as tensors.
    pub fn tensors(&self) -> HashMap<String, Tensor> {
        let data = self
            .varmap
            .data()
            .lock()
            .expect("varmap lock. This is a bug.");
        data.iter()
            .map(|(n, v)| (n.clone(), v.as_tensor().clone()))
            .collect()
    }

    /// Overwrites variables from saved tensors; names and shapes must match exactly.
    pub fn load_tensors(&self, mut saved: HashMap<String, Tensor>) -> Result<()> {
        let data = self
            .varmap
            .data()
            .lock()
            .expect("varmap lock. This is a bug.");
        for (name, var) in data.iter() {
            var.set(&checkpoint::take_like(&mut saved, name, var, "weights")?)?;
        }
        checkpoint::no_leftovers(&saved, "weights")
    }

    /// The restorer's tensors without the prefix, with trainable ones from `ema` if given.
    pub fn restorer_tensors(&self, ema: Option<&Ema>) -> HashMap<String, Tensor> {
        let mut all = self.tensors();
        if let Some(ema) = ema {
            all.extend(ema.tensors());
        }
        let prefix = format!("{RESTORER}.");
        all.into_iter()
            .filter_map(|(n, t)| n.strip_prefix(&prefix).map(|s| (s.to_string(), t)))
            .collect()
    }
}

pub use crate::clock::unix_ms;

/// Means over validation pairs of the restorer's RGB PSNR and SSIM, its de-biased PSNR
/// (`psnr_debiased`: each image's mean per-channel error removed) and `cast`: the mean
/// |per-channel mean error of the output − that of the input| in 0–255 units, i.e. the
/// colour/brightness shift the restorer itself adds.
pub fn validate(
    net: &Restorer,
    range: DataRange,
    val: &PairedFolder,
    device: &Device,
    tiling: Option<Tiling>,
) -> Result<BTreeMap<String, f64>> {
    Ok(validate_with_crops(net, range, val, device, tiling, 0)?.0)
}

/// The side of a validation crop's window and its magnification in the picture.
const CROP_SIDE: u32 = 96;
const CROP_ZOOM: u32 = 2;

/// [`validate`], and for the first `crops` pairs the centre window of each as a picture:
/// noisy | restored | ground truth.
pub fn validate_with_crops(
    net: &Restorer,
    range: DataRange,
    val: &PairedFolder,
    device: &Device,
    tiling: Option<Tiling>,
    crops: usize,
) -> Result<(BTreeMap<String, f64>, Vec<image::RgbImage>)> {
    let (mut psnr, mut ssim, mut debiased, mut cast) = (0.0, 0.0, 0.0, 0.0);
    let mut pictures = Vec::new();
    for (i, pair) in val.pairs.iter().enumerate() {
        let lq = crate::data::Image::from_rgb8(&pair.lq);
        let gt = crate::data::Image::from_rgb8(&pair.gt);
        let out = infer::restore_image(net, range, &lq, device, tiling)?;
        if i < crops {
            pictures.push(crop_picture(
                &pair.name,
                &pair.lq,
                &out.to_rgb8(),
                &pair.gt,
            )?);
        }
        let e = |e: quality::QualityError| Error::data(format!("{}: {e}", pair.name));
        psnr += quality::psnr(out.as_metric(), gt.as_metric(), Channel::Rgb).map_err(e)?;
        ssim += quality::ssim(out.as_metric(), gt.as_metric(), Channel::Rgb).map_err(e)?;
        debiased += quality::psnr_debiased(out.as_metric(), gt.as_metric()).map_err(e)?;
        let bo = quality::mean_error(out.as_metric(), gt.as_metric()).map_err(e)?;
        let bi = quality::mean_error(lq.as_metric(), gt.as_metric()).map_err(e)?;
        cast += bo.iter().zip(&bi).map(|(o, i)| (o - i).abs()).sum::<f64>() / 3.0;
    }
    let n = val.pairs.len() as f64;
    let metrics = BTreeMap::from([
        ("psnr".to_string(), psnr / n),
        ("ssim".to_string(), ssim / n),
        ("psnr_debiased".to_string(), debiased / n),
        ("cast".to_string(), cast / n),
    ]);
    Ok((metrics, pictures))
}

/// The centre window of one validation pair: noisy | restored | ground truth.
fn crop_picture(
    name: &str,
    lq: &image::RgbImage,
    out: &image::RgbImage,
    gt: &image::RgbImage,
) -> Result<image::RgbImage> {
    let side = CROP_SIDE.min(lq.width()).min(lq.height());
    let at = ((lq.width() - side) / 2, (lq.height() - side) / 2);
    let tiles = [
        (format!("noisy {name}"), lq),
        ("restored".to_string(), out),
        ("ground truth".to_string(), gt),
    ];
    crate::runlog::curves::crop_strip_image(&tiles, at, side, CROP_ZOOM)
        .map_err(|e| Error::data(format!("validation crop of {name}: {e}")))
}

fn to_device(batch: Batch, dev: &Device) -> Result<Batch> {
    Ok(Batch {
        step: batch.step,
        lq: batch.lq.to_device(dev)?,
        gt: batch.gt.to_device(dev)?,
        real: batch.real.map(|r| r.to_device(dev)).transpose()?,
        unpaired: batch.unpaired.map(|r| r.to_device(dev)).transpose()?,
    })
}

/// The first spec key (dotted path) whose change would break an exact resume, if any.
/// `steps`, `name`, `checkpoint`, `validation`, `export` and `tracking` may change between
/// runs.
fn resume_mismatch(saved: &JobSpec, now: &JobSpec) -> Option<String> {
    fn normalise(s: &JobSpec) -> serde_json::Value {
        let mut v = serde_json::to_value(s).expect("JobSpec serialises. This is a bug.");
        let obj = v.as_object_mut().expect("JobSpec is an object");
        for k in [
            "steps",
            "name",
            "checkpoint",
            "validation",
            "export",
            "tracking",
        ] {
            obj.remove(k);
        }
        if let Some(d) = obj.get_mut("data").and_then(|d| d.as_object_mut()) {
            d.remove("val");
            d.remove("prefetch");
        }
        v
    }
    fn first_diff(a: &serde_json::Value, b: &serde_json::Value, path: &str) -> Option<String> {
        match (a, b) {
            (serde_json::Value::Object(x), serde_json::Value::Object(y)) => {
                let mut keys: Vec<&String> = x.keys().chain(y.keys()).collect();
                keys.sort();
                keys.dedup();
                keys.into_iter().find_map(|k| {
                    let p = if path.is_empty() {
                        k.clone()
                    } else {
                        format!("{path}.{k}")
                    };
                    let null = serde_json::Value::Null;
                    first_diff(x.get(k).unwrap_or(&null), y.get(k).unwrap_or(&null), &p)
                })
            }
            _ => (a != b).then(|| path.to_string()),
        }
    }
    first_diff(&normalise(saved), &normalise(now), "")
}

/// Writes checkpoints of one run and reports them.
struct Saver<'a> {
    root: &'a Path,
    spec: &'a JobSpec,
    control: Option<&'a Control>,
}

impl Saver<'_> {
    fn save(
        &self,
        step: u64,
        metrics: &BTreeMap<String, f64>,
        model: &Model,
        ema: &Ema,
        opt: &Adam,
    ) -> Result<()> {
        let meta = checkpoint::Meta {
            step,
            spec: self.spec.clone(),
            metrics: metrics.clone(),
            saved_unix: crate::clock::unix_secs(),
        };
        let saved = checkpoint::save(
            self.root,
            &meta,
            &model.tensors(),
            &ema.tensors(),
            &opt.state(),
            self.spec.checkpoint.keep_last,
        )?;
        if let Some(c) = self.control {
            c.send(Event::Checkpoint {
                step,
                dir: saved.dir,
                metrics: metrics.clone(),
                pruned: saved.pruned,
            });
        }
        Ok(())
    }
}

/// Runs a whole training job on the calling thread (never call it on an async runtime),
/// with its points sent to MLflow alongside when the spec names a tracking server.
pub fn run(spec: &JobSpec, opts: &TrainOptions) -> Result<TrainSummary> {
    spec.validate()?;
    let Some(uri) = &spec.tracking.mlflow_uri else {
        return run_steps(spec, opts);
    };
    std::fs::create_dir_all(&opts.out).map_err(|e| Error::io(&opts.out, e))?;
    if !opts.resume {
        // A fresh run is a new MLflow run: an earlier attempt's cursor does not belong to it.
        let cursor = opts.out.join("mlflow.json");
        if cursor.exists() {
            std::fs::remove_file(&cursor).map_err(|e| Error::io(&cursor, e))?;
        }
    }
    let spec_json = serde_json::to_value(spec).expect("JobSpec serialises. This is a bug.");
    // The tag that finds the MLflow run again when its cursor is lost: the job, or this
    // directory and the time its run started afresh.
    let key = match &opts.job_id {
        Some(id) => id.clone(),
        None => format!(
            "{}@{}",
            std::fs::canonicalize(&opts.out)
                .unwrap_or_else(|_| opts.out.clone())
                .display(),
            crate::clock::unix_ms()
        ),
    };
    let exporter = crate::runlog::mlflow::Exporter::start(crate::runlog::mlflow::Owned {
        run_dir: opts.out.clone(),
        key,
        uri: uri.clone(),
        experiment: spec.tracking.experiment.clone(),
        run_name: spec.tracking.run_name.clone().unwrap_or(spec.name.clone()),
        params: crate::runlog::mlflow::flatten_params(&spec_json),
    });
    let result = run_steps(spec, opts);
    use crate::runlog::mlflow::RunStatus;
    let end = match &result {
        Err(_) => Some(RunStatus::Failed),
        Ok(s) => match s.stopped {
            None => Some(RunStatus::Finished),
            Some(StopReason::Cancel) => Some(RunStatus::Killed),
            Some(_) => None,
        },
    };
    exporter.finish(end);
    result
}

fn run_steps(spec: &JobSpec, opts: &TrainOptions) -> Result<TrainSummary> {
    let device = crate::device::open(&spec.device)?;
    let arch = spec.restorer.resolve()?;
    let out = &opts.out;
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    let ckpt_root = out.join("checkpoints");

    // 1. Networks, optimizer, EMA (fresh, or from the newest checkpoint).
    let state = State::fresh_or_resumed(spec, &arch, &device, &ckpt_root, opts.resume)?;
    let spec_path = out.join("spec.toml");
    std::fs::write(&spec_path, spec.to_toml()).map_err(|e| Error::io(&spec_path, e))?;

    // 2. Data: training folders feed the loader thread; validation pairs stay here.
    let data = Arc::new(TrainData::load(&spec.data, spec.range())?);
    let val = spec
        .data
        .val
        .as_ref()
        .map(|v| PairedFolder::load_spec(v, crate::quality::SSIM_WINDOW))
        .transpose()?;
    let start_step = state.start_step;
    let loader = Loader::spawn(
        data,
        spec.seed,
        start_step + 1..spec.steps + 1,
        spec.data.batch,
        spec.data.prefetch,
    );
    let control = opts.control.as_ref();
    if let Some(c) = control {
        c.send(Event::Started {
            start_step,
            total: spec.steps,
        });
    }
    let mut steps = Steps {
        spec,
        device: &device,
        objective: Objective::from_spec(spec.method, &spec.loss, &spec.diffusion)?,
        loader,
        log: MetricLog::open(
            out.join("metrics.jsonl"),
            opts.resume,
            spec.tracking.tensorboard,
        )?,
        val,
        tiling: (spec.validation.tile > 0).then(|| Tiling::new(spec.validation.tile)),
        control,
        saver: Saver {
            root: &ckpt_root,
            spec,
            control,
        },
        bar: progress_bar(spec.steps, start_step, opts.progress),
        final_loss: f64::NAN,
        step_time: std::time::Duration::ZERO,
        saved_step: start_step,
        ran: 0,
        state,
    };

    // 3. The step loop.
    let mut stopped = None;
    for step in start_step + 1..=spec.steps {
        if let Some(reason) = steps.step(step)? {
            stopped = Some(reason);
            break;
        }
    }
    steps.bar.finish_and_clear();
    if Control::lost(control) {
        stopped = Some(StopReason::Lost); // no export either
    }
    let summary = |artifact| TrainSummary {
        steps: spec.steps,
        start_step,
        final_loss: steps.final_loss,
        seconds_per_step: steps.step_time.as_secs_f64() / steps.ran.max(1) as f64,
        metrics: steps.state.metrics.clone(),
        artifact,
        stopped,
    };
    if stopped.is_some() {
        return Ok(summary(None));
    }

    // 4. Export the restorer alone; 5. draw the curves.
    let dir = export_run(spec, opts, &arch, &steps.state)?;
    Ok(summary(Some(dir)))
}

/// The networks, their optimizer and EMA, where the run starts, and the latest metrics.
struct State {
    model: Model,
    opt: Adam,
    ema: Ema,
    start_step: u64,
    metrics: BTreeMap<String, f64>,
}

impl State {
    /// Fresh networks, or with `resume` the newest checkpoint under `ckpt_root` (which must
    /// exist and come from the same spec). A fresh run refuses a folder that holds checkpoints.
    fn fresh_or_resumed(
        spec: &JobSpec,
        arch: &ArchConfig,
        device: &Device,
        ckpt_root: &Path,
        resume: bool,
    ) -> Result<Self> {
        let diffusion_cfg = spec
            .method
            .uses_diffusion()
            .then(|| spec.diffusion.resolve())
            .transpose()?;
        let model = Model::new(arch, diffusion_cfg.as_ref(), spec.seed, device)?;
        if spec.restorer.init == RestorerInit::Identity {
            model.zero_restorer_head()?;
        }
        let mut opt = Adam::new(model.trainable(), spec.optimizer.clone())?;
        if let Some(lr) = spec.optimizer.diffusion_lr {
            opt = opt.with_lr(&format!("{DIFFUSION}."), lr);
        }
        let ema = Ema::new(opt.params(), spec.ema.decay)?;
        let mut state = Self {
            model,
            opt,
            ema,
            start_step: 0,
            metrics: BTreeMap::new(),
        };
        if resume {
            state.resume(spec, device, ckpt_root)?;
        } else if checkpoint::latest(ckpt_root)?.is_some() {
            return Err(Error::checkpoint(format!(
                "{} already holds checkpoints; pass --resume to continue or choose another --out",
                ckpt_root.display()
            )));
        }
        Ok(state)
    }

    fn resume(&mut self, spec: &JobSpec, device: &Device, ckpt_root: &Path) -> Result<()> {
        let dir = checkpoint::latest(ckpt_root)?.ok_or_else(|| {
            Error::checkpoint(format!(
                "--resume given but {} holds no checkpoint",
                ckpt_root.display()
            ))
        })?;
        let loaded = checkpoint::load(&dir, device)?;
        if let Some(key) = resume_mismatch(&loaded.meta.spec, spec) {
            return Err(Error::checkpoint(format!(
                "{} was trained with a different `{key}`; resuming needs the same spec (only \
                 steps, checkpoint, validation, export and tracking may change)",
                dir.display()
            )));
        }
        if loaded.meta.step > spec.steps {
            return Err(Error::checkpoint(format!(
                "{} is at step {}, past the spec's steps = {}",
                dir.display(),
                loaded.meta.step,
                spec.steps
            )));
        }
        let in_ckpt = |e: Error| Error::checkpoint(format!("{}: {e}", dir.display()));
        self.model.load_tensors(loaded.model).map_err(in_ckpt)?;
        self.opt
            .load_state(loaded.optim, loaded.meta.step)
            .map_err(in_ckpt)?;
        self.ema.load(loaded.ema).map_err(in_ckpt)?;
        self.metrics = loaded.meta.metrics;
        self.start_step = loaded.meta.step;
        tracing::info!(checkpoint = %dir.display(), step = self.start_step, "resuming");
        Ok(())
    }
}

/// A progress bar at `start` of `total` steps on stderr, or a hidden one.
fn progress_bar(total: u64, start: u64, show: bool) -> indicatif::ProgressBar {
    if !show {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(total);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} {per_sec} ETA {eta} {msg}",
        )
        .expect("valid template. This is a bug."),
    );
    bar.set_position(start);
    bar.reset_eta();
    bar
}

/// The step loop's context and running totals.
struct Steps<'a> {
    spec: &'a JobSpec,
    device: &'a Device,
    objective: Objective,
    loader: Loader,
    log: MetricLog,
    val: Option<PairedFolder>,
    tiling: Option<Tiling>,
    control: Option<&'a Control>,
    saver: Saver<'a>,
    bar: indicatif::ProgressBar,
    state: State,
    final_loss: f64,
    /// Time in optimizer steps (validation and checkpoints excluded) and how many ran.
    step_time: std::time::Duration,
    ran: u64,
    saved_step: u64,
}

impl Steps<'_> {
    /// Runs step `step`: the stop check at its boundary, the optimizer step, its metric
    /// points, validation and the checkpoint when due. `Some(reason)` ends the run.
    fn step(&mut self, step: u64) -> Result<Option<StopReason>> {
        let (spec, control) = (self.spec, self.control);
        // Step boundary: a stop request checkpoints what is done and ends the run.
        let reason = control.map_or(StopReason::None, Control::stop_reason);
        if reason == StopReason::Lost {
            tracing::warn!(
                step = step - 1,
                "the job's lease ended; stopping without writing"
            );
            return Ok(Some(reason));
        }
        if reason != StopReason::None {
            if self.saved_step != step - 1 || checkpoint::latest(self.saver.root)?.is_none() {
                self.save(step - 1)?;
            }
            tracing::info!(step = step - 1, ?reason, "stopping at a step boundary");
            return Ok(Some(reason));
        }
        let t0 = Instant::now();
        let scalars = self.optimize(step)?;
        if Control::lost(control) {
            // The lease ended during the step: its result is not ours to log.
            tracing::warn!(
                step,
                "the job's lease ended; stopping without logging the step"
            );
            return Ok(Some(StopReason::Lost));
        }
        let mut points = Vec::new();
        for (name, v) in &scalars {
            points.extend(self.log.push(step, name, Split::Train, *v)?);
        }
        let seconds = t0.elapsed();
        self.step_time += seconds;
        self.ran += 1;
        self.state
            .metrics
            .insert("train/loss".to_string(), self.final_loss);
        self.bar.set_message(format!("loss {:.5}", self.final_loss));
        self.bar.inc(1);

        let last = step == spec.steps;
        let every = |n: u64| n > 0 && step.is_multiple_of(n);
        if self.val.is_some() && (last || every(spec.validation.every)) {
            points.extend(self.validate(step)?);
            if Control::lost(control) {
                return Ok(Some(StopReason::Lost));
            }
        }
        if let Some(c) = control {
            c.send(Event::Step {
                step,
                total: spec.steps,
                seconds: seconds.as_secs_f64(),
                seconds_per_step: self.step_time.as_secs_f64() / self.ran as f64,
                points,
            });
        }
        if Control::lost(control) {
            tracing::warn!(step, "the job's lease ended; stopping without a checkpoint");
            return Ok(Some(StopReason::Lost));
        }
        if last || every(spec.checkpoint.every) {
            self.save(step)?;
            self.saved_step = step;
        }
        Ok(None)
    }

    /// Forward, backward, Adam and EMA on the step's batch; the step's scalars by name.
    fn optimize(&mut self, step: u64) -> Result<Vec<(String, f64)>> {
        let spec = self.spec;
        let batch = to_device(self.loader.next_batch()?, self.device)?;
        debug_assert_eq!(batch.step, step);
        // The diffusion draws of a step come from their own stream, so resume stays exact.
        let mut rng = crate::data::loader::step_rng(spec.seed ^ DIFFUSION_SEED_SALT, step);
        let State {
            model, opt, ema, ..
        } = &mut self.state;
        let outp = self.objective.step(model.nets(), &batch, &mut rng)?;
        let grads = outp.loss.backward()?;
        opt.set_lr_scale(spec.optimizer.lr_factor(step, spec.steps));
        opt.step(&grads)?;
        ema.update(opt.params(), step)?;
        self.final_loss = outp.loss.to_dtype(DType::F64)?.to_scalar::<f64>()?;
        if !self.final_loss.is_finite() {
            return Err(Error::invalid_input(format!(
                "loss became {} at step {step}; lower optimizer.lr",
                self.final_loss
            )));
        }
        outp.scalars
            .iter()
            .map(|(name, v)| {
                Ok((
                    name.to_string(),
                    v.to_dtype(DType::F64)?.to_scalar::<f64>()?,
                ))
            })
            .collect()
    }

    /// Validates the restorer, logs the metrics (points returned) and prints one line.
    fn validate(&mut self, step: u64) -> Result<Vec<MetricPoint>> {
        let val = self.val.as_ref().expect("validate is called with data.val");
        let (m, crops) = validate_with_crops(
            &self.state.model.restorer,
            self.spec.range(),
            val,
            self.device,
            self.tiling,
            self.spec.validation.crops,
        )?;
        let mut points = Vec::new();
        if Control::lost(self.control) {
            return Ok(points);
        }
        for (k, v) in &m {
            points.extend(self.log.push(step, k, Split::Val, *v)?);
            self.state.metrics.insert(format!("val/{k}"), *v);
        }
        self.log.push_crops(step, &crops)?;
        self.bar.println(format!(
            "step {step}: val psnr {:.3} dB, ssim {:.4}, de-biased {:.3} dB, cast {:.2}/255",
            m["psnr"], m["ssim"], m["psnr_debiased"], m["cast"]
        ));
        Ok(points)
    }

    fn save(&self, step: u64) -> Result<()> {
        let s = &self.state;
        self.saver.save(step, &s.metrics, &s.model, &s.ema, &s.opt)
    }
}

/// Exports the restorer of a finished run as `out/model` and draws `out/curves.png` (a
/// drawing failure is logged and never fails a finished run).
fn export_run(
    spec: &JobSpec,
    opts: &TrainOptions,
    arch: &ArchConfig,
    state: &State,
) -> Result<PathBuf> {
    let out = &opts.out;
    let weights = state
        .model
        .restorer_tensors((spec.export.weights == Weights::Ema).then_some(&state.ema));
    let dir = out.join("model");
    artifact::export(
        &dir,
        &weights,
        artifact::ExportInfo {
            name: spec.name.clone(),
            arch: arch.clone(),
            weights: spec.export.weights,
            range: spec.range(),
            step: spec.steps,
            metrics: state.metrics.clone(),
            source_spec: Some(spec.clone()),
            source_job: opts.job_id.clone(),
        },
    )?;
    let curves = out.join("curves.png");
    if let Err(e) = crate::runlog::curves::Run::load(&spec.name, out)
        .and_then(|run| crate::runlog::curves::training_curves(&[run], None, &curves))
    {
        tracing::warn!("could not draw {}: {e}", curves.display());
    }
    Ok(dir)
}

/// Exports the restorer of a checkpoint directory as a model artifact.
pub fn export_checkpoint(
    ckpt: &Path,
    out: &Path,
    weights: Weights,
    source_job: Option<String>,
) -> Result<artifact::Manifest> {
    let loaded = checkpoint::load(ckpt, &Device::Cpu)?;
    let arch = loaded.meta.spec.restorer.resolve()?;
    let spec = &loaded.meta.spec;
    let diffusion_cfg = spec
        .method
        .uses_diffusion()
        .then(|| spec.diffusion.resolve())
        .transpose()?;
    let model = Model::new(&arch, diffusion_cfg.as_ref(), 0, &Device::Cpu)?;
    model.load_tensors(loaded.model)?;
    let mut ema = Ema::new(&model.trainable(), loaded.meta.spec.ema.decay)?;
    ema.load(loaded.ema)?;
    let tensors = model.restorer_tensors((weights == Weights::Ema).then_some(&ema));
    artifact::export(
        out,
        &tensors,
        artifact::ExportInfo {
            name: loaded.meta.spec.name.clone(),
            arch,
            weights,
            range: loaded.meta.spec.range(),
            step: loaded.meta.step,
            metrics: loaded.meta.metrics.clone(),
            source_spec: Some(loaded.meta.spec),
            source_job,
        },
    )
}
