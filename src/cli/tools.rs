//! The tool commands: `demo` (the built-in tour), `experiment` (arms × seeds, and the
//! condition probe) and `bench` (speed cases, the Restore load test, GPU parity); their flags
//! and what each runs.

use std::path::PathBuf;

use clap::Subcommand;
use noiseda::{bench, demo, Error, Result};

use super::print;

#[derive(clap::Args)]
pub struct DemoArgs {
    /// Output directory (re-running continues from its checkpoints).
    #[arg(long, default_value = "runs/demo")]
    out: PathBuf,
    /// Override the number of training steps.
    #[arg(long)]
    steps: Option<u64>,
}

#[derive(clap::Args)]
pub struct ExperimentArgs {
    #[command(subcommand)]
    probe: Option<ExperimentCommand>,
    /// Experiment file (TOML).
    #[arg(long, required = true)]
    config: Option<PathBuf>,
    /// Output directory (default: runs/experiments/<file stem>).
    #[arg(long)]
    out: Option<PathBuf>,
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand)]
enum ExperimentCommand {
    /// The paper's Fig. 1(a): ε-MSE of a conditional diffusion net trained on clean
    /// conditions as the condition is corrupted by AWGN σ = 0, 10, …, 80.
    ProbeConditions {
        /// Clean photos.
        #[arg(long)]
        clean: PathBuf,
        #[arg(long, default_value_t = 300)]
        steps: u64,
        #[arg(long, default_value_t = 64)]
        patch: usize,
        #[arg(long, default_value_t = 8)]
        batch: usize,
        #[arg(long, default_value = "diffusion-t")]
        preset: String,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Curve picture.
        #[arg(long, default_value = "probe-conditions.png")]
        out: PathBuf,
        #[arg(long)]
        json: bool,
    },
}

#[derive(clap::Args)]
pub struct BenchArgs {
    #[command(subcommand)]
    load: Option<BenchCommand>,
    /// Cases to run (default: the first four): train-vanilla, train-joint, restore-512,
    /// restore-8x256; the GPU-sized train-joint-paper (Unet-S + Diffusion-B, batch 8,
    /// 128×128) and restore-8x512 run when named.
    #[arg(long, value_delimiter = ',')]
    cases: Vec<String>,
    /// Device of the cases (and of PyTorch's): cpu or cuda:N.
    #[arg(long, default_value = "cpu")]
    device: String,
    #[arg(long, default_value_t = 2)]
    warmup: usize,
    #[arg(long, default_value_t = 7)]
    runs: usize,
    /// Threads for candle and PyTorch (default: the number of CPUs).
    #[arg(long)]
    threads: Option<usize>,
    /// Also run bench/reference.py (installs PyTorch with pip when it is missing).
    #[arg(long)]
    compare: bool,
    /// Python interpreter of the reference.
    #[arg(long, env = "NOISEDA_PYTHON", default_value = "python3")]
    python: PathBuf,
    #[arg(long, default_value = "bench/reference.py")]
    reference: PathBuf,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    json: bool,
    /// Internal: run one case in this process and print its timing as JSON.
    #[arg(long, hide = true)]
    child: Option<String>,
}

#[derive(Subcommand)]
enum BenchCommand {
    /// Concurrent clients against a local Restore server for a bounded time, batched and
    /// unbatched, next to the raw model time of the same network in the same run.
    RestoreLoad {
        #[command(flatten)]
        opts: noiseda::loadtest::LoadOptions,
        #[arg(long)]
        json: bool,
    },
    /// One joint Denoising-as-Adaptation step (forward and backward of both nets, same
    /// weights, batch and draws) on the CPU and on --device: the worst relative difference of
    /// the restorer's output, each loss term and each gradient. Exits non-zero above --tolerance.
    Parity {
        /// The device to check against the CPU.
        #[arg(long, default_value = "cuda:0")]
        device: String,
        #[arg(long, default_value = "unet-s")]
        restorer: String,
        #[arg(long, default_value = "diffusion-b")]
        diffusion: String,
        #[arg(long, default_value_t = 2)]
        batch: usize,
        /// Square patch side.
        #[arg(long, default_value_t = 64)]
        size: usize,
        /// Largest relative difference accepted.
        #[arg(long, default_value_t = 1e-3)]
        tolerance: f64,
        #[arg(long)]
        json: bool,
    },
}

pub fn demo(a: DemoArgs, progress: bool) -> Result<()> {
    let rows = demo::run(&a.out, a.steps, progress)?;
    print::demo_table(&rows, &a.out);
    Ok(())
}

pub fn experiment(a: ExperimentArgs, progress: bool) -> Result<()> {
    match (a.probe, a.config) {
        (
            Some(ExperimentCommand::ProbeConditions {
                clean,
                steps,
                patch,
                batch,
                preset,
                seed,
                out,
                json,
            }),
            _,
        ) => {
            let points = noiseda::experiment::probe_conditions(
                &noiseda::experiment::ProbeOptions {
                    clean,
                    steps,
                    patch,
                    batch,
                    seed,
                    preset,
                    sigmas: (0..=8).map(|k| k as f32 * 10.0).collect(),
                },
                progress,
            )?;
            let xy: Vec<(f64, f64)> = points.iter().map(|p| (p.sigma as f64, p.mse)).collect();
            noiseda::runlog::curves::xy_curve(
                "diffusion ε-MSE vs condition noise",
                "condition AWGN σ (0–255)",
                "ε-MSE",
                &xy,
                &out,
            )?;
            if json {
                print::json(&points);
            } else {
                print::probe_table(&points);
                eprintln!("wrote {}", out.display());
            }
        }
        (None, Some(config)) => {
            let out = a.out.unwrap_or_else(|| {
                PathBuf::from("runs/experiments").join(
                    config
                        .file_stem()
                        .map(|s| s.to_string_lossy().into_owned())
                        .unwrap_or_else(|| "experiment".into()),
                )
            });
            let report = noiseda::experiment::run(&config, &out, progress)?;
            if a.json {
                print::json(&report);
            } else {
                print!("{}", noiseda::experiment::markdown(&report));
                eprintln!(
                    "wrote {} (results.md, results.json, curves.png) in {:.1} min",
                    out.display(),
                    report.minutes
                );
            }
        }
        (None, None) => unreachable!("clap requires --config or a subcommand"),
    }
    Ok(())
}

pub fn bench(a: BenchArgs) -> Result<()> {
    match a.load {
        Some(BenchCommand::RestoreLoad { opts, json }) => {
            let report = noiseda::loadtest::run(&opts)?;
            if json {
                print::json(&report);
            } else {
                print!("{}", noiseda::loadtest::table(&report));
            }
            Ok(())
        }
        Some(BenchCommand::Parity {
            device,
            restorer,
            diffusion,
            batch,
            size,
            tolerance,
            json,
        }) => {
            let rows = bench::parity(&device, &restorer, &diffusion, batch, size)?;
            let worst = rows.iter().map(|r| r.rel).fold(0.0, f64::max);
            if json {
                print::json(&serde_json::json!({
                    "device": device, "restorer": restorer, "diffusion": diffusion,
                    "batch": batch, "size": size, "tolerance": tolerance,
                    "worst_rel": worst, "rows": rows,
                }));
            } else {
                print::parity_table(&device, &restorer, &diffusion, batch, size, &rows);
            }
            if worst > tolerance {
                return Err(Error::precondition(format!(
                    "parity: {device} differs from the CPU by {worst:.3e} relative (tolerance {tolerance:.0e})"
                )));
            }
            Ok(())
        }
        None => speed(a),
    }
}

/// `bench` without a subcommand: the speed cases (or, with the hidden --child, one of them).
fn speed(a: BenchArgs) -> Result<()> {
    let threads = a
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let opts = bench::BenchOptions {
        warmup: a.warmup,
        runs: a.runs.max(1),
        threads,
        device: a.device,
    };
    if let Some(case) = a.child {
        let t = bench::run_case(bench::Case::parse(&case)?, &opts)?;
        println!("{}", serde_json::to_string(&t).expect("timings serialise"));
        return Ok(());
    }
    let cases = if a.cases.is_empty() {
        bench::Case::ALL.to_vec()
    } else {
        a.cases
            .iter()
            .map(|c| bench::Case::parse(c))
            .collect::<Result<Vec<_>>>()?
    };
    let reference = a.compare.then_some(bench::Reference {
        python: a.python,
        script: a.reference,
    });
    if let Some(r) = &reference {
        let v = r.ensure_torch(true)?;
        eprintln!("PyTorch {v}");
    }
    let report = bench::run(&cases, &opts, reference.as_ref())?;
    if a.json {
        print::json(&report);
    } else {
        print!("{}", bench::table(&report));
    }
    Ok(())
}
