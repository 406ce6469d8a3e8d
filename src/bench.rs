//! `noiseda bench`: the speed cases of the project (train steps, restore forwards) timed with
//! warm-up, median and spread, peak RSS (each case in its own process), effective GFLOP/s
//! against the machine's measured matmul peak; and the same cases in PyTorch
//! (`bench/reference.py`) run in the same invocation for the ratio table.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use candle::{DType, Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::config::{Conditions, Hinge, OptimizerSpec};
use crate::data::Batch;
use crate::method::schedule::Schedule;
use crate::method::{Joint, Objective, StepOutput};
use crate::model::{ArchConfig, DiffusionConfig};
use crate::train::optim::Adam;
use crate::train::Model;
use crate::{Error, Result};

/// A benchmark case: the paper's nets at the shapes the issue tracker fixed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Case {
    /// Unet-T, batch 8 of 3×64×64: Charbonnier, backward, Adam step.
    TrainVanilla,
    /// Unet-T + Diffusion-T (2 res blocks, attention, dropout 0.2), batch 8 of 64×64: the
    /// Denoising-as-Adaptation step, backward, one Adam over both nets.
    TrainJoint,
    /// Unet-S forward on 1×3×512×512.
    Restore512,
    /// Unet-S forward on 8×3×256×256.
    Restore8x256,
    /// The paper's setting: Unet-S + Diffusion-B (2 res blocks, attention, dropout 0.2),
    /// batch 8 of 128×128, the joint step, backward, Adam (a GPU case).
    TrainJointPaper,
    /// Unet-S forward on 8×3×512×512 (a GPU case).
    Restore8x512,
}

impl Case {
    pub const ALL: [Case; 4] = [
        Case::TrainVanilla,
        Case::TrainJoint,
        Case::Restore512,
        Case::Restore8x256,
    ];

    /// Every case: [`Case::ALL`] and the GPU-sized ones.
    pub const EVERY: [Case; 6] = [
        Case::TrainVanilla,
        Case::TrainJoint,
        Case::Restore512,
        Case::Restore8x256,
        Case::TrainJointPaper,
        Case::Restore8x512,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Case::TrainVanilla => "train-vanilla",
            Case::TrainJoint => "train-joint",
            Case::Restore512 => "restore-512",
            Case::Restore8x256 => "restore-8x256",
            Case::TrainJointPaper => "train-joint-paper",
            Case::Restore8x512 => "restore-8x512",
        }
    }

    pub fn parse(name: &str) -> Result<Self> {
        Self::EVERY
            .into_iter()
            .find(|c| c.name() == name)
            .ok_or_else(|| {
                Error::invalid_input(format!(
                    "unknown bench case `{name}`; cases: {}",
                    Self::EVERY.map(|c| c.name()).join(", ")
                ))
            })
    }

    /// Convolution FLOPs (2 × MACs) of one timed iteration; a training step counts as three
    /// forwards (forward, input gradient, weight gradient).
    pub fn gflop(self) -> f64 {
        let unet_t = ArchConfig::preset("unet-t").expect("preset exists");
        let unet_s = ArchConfig::preset("unet-s").expect("preset exists");
        let diffusion = DiffusionConfig::preset("diffusion-t").expect("preset exists");
        let diffusion_b = DiffusionConfig::preset("diffusion-b").expect("preset exists");
        let macs = match self {
            Case::TrainVanilla => 3 * 8 * unet_t.macs(64, 64),
            // Restorer on the synthetic and the real batch, diffusion net twice (pos, neg).
            Case::TrainJoint => 3 * 8 * (2 * unet_t.macs(64, 64) + 2 * diffusion.macs(64, 64)),
            Case::Restore512 => unet_s.macs(512, 512),
            Case::Restore8x256 => 8 * unet_s.macs(256, 256),
            Case::TrainJointPaper => {
                3 * 8 * (2 * unet_s.macs(128, 128) + 2 * diffusion_b.macs(128, 128))
            }
            Case::Restore8x512 => 8 * unet_s.macs(512, 512),
        };
        2.0 * macs as f64 / 1e9
    }
}

/// Timing settings.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    pub warmup: usize,
    pub runs: usize,
    /// Threads of candle's CPU ops and of PyTorch (rayon pool size).
    pub threads: usize,
    /// Where the cases run: `cpu` or `cuda:N` (PyTorch gets the same device).
    pub device: String,
}

/// One case's timings in one implementation.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CaseTiming {
    pub case: String,
    pub median_ms: f64,
    pub min_ms: f64,
    pub max_ms: f64,
    pub runs_ms: Vec<f64>,
    pub peak_rss_mb: f64,
    /// Resident set after the warm-up and after the last run: equal when nothing grows over
    /// steps (run many steps with `--runs` to check).
    #[serde(default)]
    pub rss_after_warmup_mb: f64,
    #[serde(default)]
    pub rss_end_mb: f64,
}

/// Current resident set size of this process, MB (Linux /proc; NaN elsewhere).
pub fn current_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<f64>().ok())
        .map(|pages| {
            // SAFETY: sysconf has no preconditions.
            let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as f64;
            pages * page / (1024.0 * 1024.0)
        })
        .unwrap_or(f64::NAN)
}

/// Peak resident set size of this process so far, MB.
pub fn peak_rss_mb() -> f64 {
    // SAFETY: getrusage only writes into the struct we pass.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    if rc == 0 {
        usage.ru_maxrss as f64 / 1024.0
    } else {
        f64::NAN
    }
}

/// Per-run milliseconds (each run waits for `dev` to finish its queued work), and the RSS
/// after the warm-up and at the end.
fn time_it(
    opts: &BenchOptions,
    dev: &Device,
    mut f: impl FnMut() -> candle::Result<()>,
) -> Result<(Vec<f64>, f64, f64)> {
    for _ in 0..opts.warmup {
        f()?;
        dev.synchronize()?;
    }
    let rss0 = current_rss_mb();
    let times = (0..opts.runs)
        .map(|_| {
            let t0 = Instant::now();
            f()?;
            dev.synchronize()?;
            Ok(t0.elapsed().as_secs_f64() * 1e3)
        })
        .collect::<Result<Vec<_>>>()?;
    Ok((times, rss0, current_rss_mb()))
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    }
}

fn rand(shape: (usize, usize, usize, usize), dev: &Device) -> candle::Result<Tensor> {
    Tensor::rand(0f32, 1f32, shape, dev)
}

/// Runs one case in this process.
pub fn run_case(case: Case, opts: &BenchOptions) -> Result<CaseTiming> {
    let dev = crate::device::open(&opts.device)?;
    let adam = OptimizerSpec {
        lr: 1e-4,
        ..OptimizerSpec::default()
    };
    let (runs, rss0, rss1) = match case {
        Case::TrainVanilla | Case::TrainJoint | Case::TrainJointPaper => {
            let joint = case != Case::TrainVanilla;
            let paper = case == Case::TrainJointPaper;
            let arch =
                ArchConfig::preset(if paper { "unet-s" } else { "unet-t" }).expect("preset exists");
            let dcfg = DiffusionConfig::preset(if paper { "diffusion-b" } else { "diffusion-t" })
                .expect("preset exists");
            let model = Model::new(&arch, joint.then_some(&dcfg), 0, &dev)?;
            let mut opt = Adam::new(model.trainable(), adam)?;
            let objective = if joint {
                Objective::Joint(Box::new(paper_joint()))
            } else {
                Objective::Vanilla {
                    charbonnier_eps: 1e-3,
                }
            };
            let side = if paper { 128 } else { 64 };
            let shape = (8, 3, side, side);
            let batch = Batch {
                step: 1,
                lq: rand(shape, &dev)?,
                gt: rand(shape, &dev)?,
                real: joint.then(|| rand(shape, &dev)).transpose()?,
                unpaired: None,
            };
            let mut rng = crate::data::loader::step_rng(0, 0);
            let mut step_err = None;
            let timed = time_it(opts, &dev, || {
                let out = objective.step(model.nets(), &batch, &mut rng)?;
                let grads = out.loss.backward()?;
                if let Err(e) = opt.step(&grads) {
                    step_err = Some(e);
                }
                Ok(())
            })?;
            if let Some(e) = step_err {
                return Err(e);
            }
            timed
        }
        Case::Restore512 | Case::Restore8x256 | Case::Restore8x512 => {
            let arch = ArchConfig::preset("unet-s").expect("preset exists");
            let model = Model::new(&arch, None, 0, &dev)?;
            let xs = match case {
                Case::Restore512 => rand((1, 3, 512, 512), &dev)?,
                Case::Restore8x256 => rand((8, 3, 256, 256), &dev)?,
                _ => rand((8, 3, 512, 512), &dev)?,
            };
            time_it(opts, &dev, || {
                model.restorer.restore(&xs, false)?.to_dtype(DType::F32)?;
                Ok(())
            })?
        }
    };
    Ok(CaseTiming {
        case: case.name().to_string(),
        median_ms: median(&runs),
        min_ms: runs.iter().copied().fold(f64::INFINITY, f64::min),
        max_ms: runs.iter().copied().fold(0.0, f64::max),
        runs_ms: runs,
        peak_rss_mb: peak_rss_mb(),
        rss_after_warmup_mb: rss0,
        rss_end_mb: rss1,
    })
}

/// The joint objective of the benchmark cases: the full method with the paper's constants.
fn paper_joint() -> Joint {
    Joint {
        unpaired: false,
        charbonnier_eps: 1e-3,
        weight: 0.2,
        ramp_steps: 0,
        hold_steps: 0,
        margin: 0.1,
        hinge: Hinge::Batch,
        shuffle: true,
        residual_swap: true,
        conditions: Conditions::Both,
        t_range: [1, 999],
        schedule: Schedule::linear(1000, 1e-6, 1e-2),
    }
}

/// f32 matmul throughput of candle on `device` (2048³, median of 5), GFLOP/s.
pub fn matmul_peak_gflops(device: &str) -> Result<f64> {
    let dev = crate::device::open(device)?;
    let m = Tensor::rand(0f32, 1f32, (2048, 2048), &dev)?;
    let opts = BenchOptions {
        warmup: 2,
        runs: 5,
        threads: 0,
        device: device.to_string(),
    };
    let (times, _, _) = time_it(&opts, &dev, || m.matmul(&m).map(|_| ()))?;
    Ok(2.0 * 2048f64.powi(3) / (median(&times) / 1e3) / 1e9)
}

/// One comparison of [`parity`]: over a group of tensors, the worst per-tensor difference
/// between the CPU and the device relative to that tensor's largest CPU magnitude.
#[derive(Debug, Clone, Serialize)]
pub struct ParityRow {
    pub what: String,
    pub tensors: usize,
    /// Largest |cpu − device| over the group.
    pub max_abs_diff: f64,
    /// Largest |cpu| over the group.
    pub max_abs: f64,
    /// max over tensors of max|cpu − device| / max|cpu|.
    pub rel: f64,
}

fn compare(what: &str, pairs: &[(Tensor, Tensor)]) -> Result<ParityRow> {
    let (mut max_abs_diff, mut max_abs, mut rel) = (0f64, 0f64, 0f64);
    for (a, b) in pairs {
        let a = a.to_device(&Device::Cpu)?.to_dtype(DType::F64)?;
        let b = b.to_device(&Device::Cpu)?.to_dtype(DType::F64)?;
        let diff = (&a - &b)?.abs()?.max_all()?.to_scalar::<f64>()?;
        let mag = a.abs()?.max_all()?.to_scalar::<f64>()?;
        max_abs_diff = max_abs_diff.max(diff);
        max_abs = max_abs.max(mag);
        if mag > 0.0 {
            rel = rel.max(diff / mag);
        } else if diff > 0.0 {
            rel = f64::INFINITY;
        }
    }
    Ok(ParityRow {
        what: what.to_string(),
        tensors: pairs.len(),
        max_abs_diff,
        max_abs,
        rel,
    })
}

/// Runs one joint Denoising-as-Adaptation step (the restorer on both domains, the diffusion
/// net's positive and negative passes, the loss and its backward) on the CPU and on `device`
/// with the same weights, batch and draws, and compares the restorer's forward output, every
/// loss term and every gradient of both nets.
pub fn parity(
    device: &str,
    restorer: &str,
    diffusion: &str,
    batch: usize,
    side: usize,
) -> Result<Vec<ParityRow>> {
    let dev = crate::device::open(device)?;
    let arch = ArchConfig::preset(restorer)
        .ok_or_else(|| Error::invalid_input(format!("unknown restorer preset `{restorer}`")))?;
    let dcfg = DiffusionConfig::preset(diffusion)
        .ok_or_else(|| Error::invalid_input(format!("unknown diffusion preset `{diffusion}`")))?;
    let cpu = Model::new(&arch, Some(&dcfg), 0, &Device::Cpu)?;
    let other = Model::new(&arch, Some(&dcfg), 0, &dev)?;
    other.load_tensors(
        cpu.tensors()
            .into_iter()
            .map(|(n, t)| Ok((n, t.to_device(&dev)?)))
            .collect::<candle::Result<_>>()?,
    )?;
    let shape = (batch, 3, side, side);
    let (lq, gt, real) = (
        rand(shape, &Device::Cpu)?,
        rand(shape, &Device::Cpu)?,
        rand(shape, &Device::Cpu)?,
    );
    let objective = Objective::Joint(Box::new(paper_joint()));
    let run = |m: &Model| -> Result<(Tensor, StepOutput, candle::backprop::GradStore)> {
        let d = &m.device;
        let restored = m.restorer.restore(&lq.to_device(d)?, false)?;
        let b = Batch {
            step: 1,
            lq: lq.to_device(d)?,
            gt: gt.to_device(d)?,
            real: Some(real.to_device(d)?),
            unpaired: None,
        };
        let out = objective.step(m.nets(), &b, &mut crate::data::loader::step_rng(0, 1))?;
        let grads = out.loss.backward()?;
        Ok((restored, out, grads))
    };
    let (r_cpu, s_cpu, g_cpu) = run(&cpu)?;
    let (r_dev, s_dev, g_dev) = run(&other)?;
    let mut rows = vec![compare("restorer forward", &[(r_cpu, r_dev)])?];
    for ((name, a), (_, b)) in s_cpu.scalars.iter().zip(&s_dev.scalars) {
        rows.push(compare(
            &format!("loss term {name}"),
            &[(a.clone(), b.clone())],
        )?);
    }
    for (prefix, what) in [
        ("restorer.", "restorer gradients"),
        ("diffusion.", "diffusion gradients"),
    ] {
        let pairs = cpu
            .trainable()
            .into_iter()
            .zip(other.trainable())
            .filter(|((n, _), _)| n.starts_with(prefix))
            .filter_map(|((_, a), (_, b))| {
                Some((
                    g_cpu.get(a.as_tensor())?.clone(),
                    g_dev.get(b.as_tensor())?.clone(),
                ))
            })
            .collect::<Vec<_>>();
        rows.push(compare(what, &pairs)?);
    }
    Ok(rows)
}

/// Runs `case` in a child process of this binary (`noiseda bench --child CASE`), so its peak
/// RSS is its own.
pub fn run_case_isolated(case: Case, opts: &BenchOptions) -> Result<CaseTiming> {
    let exe = std::env::current_exe().map_err(|e| Error::io(Path::new("current_exe"), e))?;
    let out = Command::new(&exe)
        .args([
            "bench",
            "--child",
            case.name(),
            "--warmup",
            &opts.warmup.to_string(),
            "--runs",
            &opts.runs.to_string(),
            "--threads",
            &opts.threads.to_string(),
            "--device",
            &opts.device,
        ])
        .env("RAYON_NUM_THREADS", opts.threads.to_string())
        .output()
        .map_err(|e| Error::io(&exe, e))?;
    parse_child(&out, &format!("noiseda case {}", case.name()))
}

fn parse_child<T: for<'de> Deserialize<'de>>(out: &std::process::Output, what: &str) -> Result<T> {
    if !out.status.success() {
        return Err(Error::data(format!(
            "{what} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(line)
        .map_err(|e| Error::data(format!("{what} printed no result ({e}): {stdout}")))
}

/// How to run the PyTorch reference.
#[derive(Debug, Clone)]
pub struct Reference {
    pub python: PathBuf,
    pub script: PathBuf,
}

#[derive(Debug, Deserialize)]
struct RefPeak {
    gflops: f64,
    torch: String,
}

impl Reference {
    /// Checks that PyTorch imports; installs it with pip when it does not (`install`).
    pub fn ensure_torch(&self, install: bool) -> Result<String> {
        let probe = || {
            Command::new(&self.python)
                .args(["-c", "import torch; print(torch.__version__)"])
                .output()
        };
        let out = probe().map_err(|e| Error::io(&self.python, e))?;
        if out.status.success() {
            return Ok(String::from_utf8_lossy(&out.stdout).trim().to_string());
        }
        if !install {
            return Err(Error::invalid_input(format!(
                "PyTorch does not import in {} (run `{} -m pip install torch`)",
                self.python.display(),
                self.python.display()
            )));
        }
        eprintln!(
            "PyTorch missing: {} -m pip install torch",
            self.python.display()
        );
        // pip's progress goes to stderr: stdout carries only the report (`--json`).
        let status = Command::new(&self.python)
            .args(["-m", "pip", "install", "torch", "numpy"])
            .stdout(std::io::stderr())
            .status()
            .map_err(|e| Error::io(&self.python, e))?;
        let out = probe().map_err(|e| Error::io(&self.python, e))?;
        if !status.success() || !out.status.success() {
            return Err(Error::data(format!(
                "could not install PyTorch with {} -m pip install torch",
                self.python.display()
            )));
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    fn run(&self, case: &str, opts: &BenchOptions) -> Result<std::process::Output> {
        if !self.script.is_file() {
            return Err(Error::invalid_input(format!(
                "reference script {} not found (run from the repository root or pass --reference)",
                self.script.display()
            )));
        }
        Command::new(&self.python)
            .arg(&self.script)
            .args([
                "--case",
                case,
                "--threads",
                &opts.threads.to_string(),
                "--warmup",
                &opts.warmup.to_string(),
                "--runs",
                &opts.runs.to_string(),
                "--device",
                &opts.device,
            ])
            .output()
            .map_err(|e| Error::io(&self.python, e))
    }

    pub fn case(&self, case: Case, opts: &BenchOptions) -> Result<CaseTiming> {
        let out = self.run(case.name(), opts)?;
        parse_child(&out, &format!("PyTorch case {}", case.name()))
    }

    /// PyTorch's matmul throughput (GFLOP/s) and version.
    pub fn matmul_peak(&self, opts: &BenchOptions) -> Result<(f64, String)> {
        let out = self.run("matmul-peak", opts)?;
        let p: RefPeak = parse_child(&out, "PyTorch matmul-peak")?;
        Ok((p.gflops, p.torch))
    }
}

/// One row of the report.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub name: String,
    pub noiseda_ms: f64,
    pub noiseda_min_ms: f64,
    pub noiseda_max_ms: f64,
    pub reference_ms: Option<f64>,
    pub ratio: Option<f64>,
    pub peak_rss_mb: f64,
    pub rss_after_warmup_mb: f64,
    pub rss_end_mb: f64,
    pub reference_peak_rss_mb: Option<f64>,
    pub gflop: f64,
    pub gflops: f64,
    /// Fraction of the machine's matmul peak (candle's 2048³ f32 matmul).
    pub peak_fraction: f64,
}

/// The whole report (`--json` prints it).
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub device: String,
    pub threads: usize,
    pub matmul_peak_gflops: f64,
    pub reference_matmul_peak_gflops: Option<f64>,
    pub torch: Option<String>,
    pub cases: Vec<Row>,
}

/// Runs `cases` (each in its own process) and, with `reference`, the PyTorch cases right after.
pub fn run(cases: &[Case], opts: &BenchOptions, reference: Option<&Reference>) -> Result<Report> {
    let peak = matmul_peak_gflops(&opts.device)?;
    let (ref_peak, torch) = match reference {
        Some(r) => {
            let (g, v) = r.matmul_peak(opts)?;
            (Some(g), Some(v))
        }
        None => (None, None),
    };
    let mut rows = Vec::with_capacity(cases.len());
    for &case in cases {
        eprintln!("bench {} ...", case.name());
        let ours = run_case_isolated(case, opts)?;
        let theirs = reference.map(|r| r.case(case, opts)).transpose()?;
        let gflop = case.gflop();
        let gflops = gflop / (ours.median_ms / 1e3);
        rows.push(Row {
            name: case.name().to_string(),
            noiseda_ms: ours.median_ms,
            noiseda_min_ms: ours.min_ms,
            noiseda_max_ms: ours.max_ms,
            reference_ms: theirs.as_ref().map(|t| t.median_ms),
            ratio: theirs.as_ref().map(|t| ours.median_ms / t.median_ms),
            peak_rss_mb: ours.peak_rss_mb,
            rss_after_warmup_mb: ours.rss_after_warmup_mb,
            rss_end_mb: ours.rss_end_mb,
            reference_peak_rss_mb: theirs.as_ref().map(|t| t.peak_rss_mb),
            gflop,
            gflops,
            peak_fraction: gflops / peak,
        });
    }
    Ok(Report {
        device: opts.device.clone(),
        threads: opts.threads,
        matmul_peak_gflops: peak,
        reference_matmul_peak_gflops: ref_peak,
        torch,
        cases: rows,
    })
}

/// The report as a text table.
pub fn table(r: &Report) -> String {
    let mut s = format!(
        "device {}, threads {}; matmul peak (2048³ f32): candle {:.0} GFLOP/s{}\n",
        r.device,
        r.threads,
        r.matmul_peak_gflops,
        r.reference_matmul_peak_gflops
            .map(|g| format!(", PyTorch {g:.0} GFLOP/s"))
            .unwrap_or_default()
    );
    s += &format!(
        "{:<15} {:>12} {:>17} {:>11} {:>7} {:>9} {:>8} {:>9} {:>10} {:>10}\n",
        "case",
        "noiseda ms",
        "(min-max)",
        "PyTorch ms",
        "ratio",
        "GFLOP/s",
        "of peak",
        "RSS MB",
        "torch RSS",
        "RSS grew"
    );
    for c in &r.cases {
        s += &format!(
            "{:<15} {:>12.1} {:>17} {:>11} {:>7} {:>9.1} {:>7.1}% {:>9.0} {:>10} {:>10.1}\n",
            c.name,
            c.noiseda_ms,
            format!("({:.0}-{:.0})", c.noiseda_min_ms, c.noiseda_max_ms),
            c.reference_ms
                .map(|v| format!("{v:.1}"))
                .unwrap_or_else(|| "-".into()),
            c.ratio
                .map(|v| format!("{v:.2}x"))
                .unwrap_or_else(|| "-".into()),
            c.gflops,
            100.0 * c.peak_fraction,
            c.peak_rss_mb,
            c.reference_peak_rss_mb
                .map(|v| format!("{v:.0}"))
                .unwrap_or_else(|| "-".into()),
            c.rss_end_mb - c.rss_after_warmup_mb
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diffusion_macs_match_a_pytorch_hook_count() {
        // Conv2d/Conv1d MACs counted with forward hooks on scripts/torch_nets.py's DiffusionUNet,
        // plus the two attention products (2·c·px² at the middle).
        let t = DiffusionConfig::preset("diffusion-t").unwrap();
        assert_eq!(t.macs(64, 64), 1_030_488_064);
        let b = DiffusionConfig::preset("diffusion-b").unwrap();
        assert_eq!(b.macs(128, 128), 51_485_081_600);
    }

    #[test]
    fn cases_parse_and_unknown_names_are_listed() {
        for c in Case::EVERY {
            assert_eq!(Case::parse(c.name()).unwrap(), c);
            assert!(c.gflop() > 1.0, "{}", c.name());
        }
        let err = Case::parse("train-fast").unwrap_err().to_string();
        assert!(
            err.contains("train-fast") && err.contains("restore-512"),
            "{err}"
        );
    }

    #[test]
    fn a_case_runs_and_reports_its_timings() {
        let t = run_case(
            Case::TrainVanilla,
            &BenchOptions {
                warmup: 0,
                runs: 1,
                threads: 1,
                device: "cpu".into(),
            },
        )
        .unwrap();
        assert_eq!(t.case, "train-vanilla");
        assert_eq!(t.runs_ms.len(), 1);
        assert!(t.median_ms > 0.0 && t.peak_rss_mb > 10.0, "{t:?}");
    }
}
