//! The `noiseda` command line: parses arguments and calls the library.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use noiseda::config::{JobSpec, Weights};
use noiseda::eval::{Degrade, EvalData, EvalOptions};
use noiseda::infer::Tiling;
use noiseda::metrics::Channel;
use noiseda::model::{ArchConfig, DiffusionConfig};
use noiseda::train::{self, TrainOptions};
use noiseda::{artifact, bench, demo, Result};

#[derive(Parser)]
#[command(
    name = "noiseda",
    version,
    about = "Denoising as Adaptation: train, evaluate and run image restorers"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Train a Unet-T on the built-in CC0 photos and evaluate it (no downloads, CPU).
    Demo {
        /// Output directory (re-running continues from its checkpoints).
        #[arg(long, default_value = "runs/demo")]
        out: PathBuf,
        /// Override the number of training steps.
        #[arg(long)]
        steps: Option<u64>,
    },
    /// Train a restorer from a job spec (TOML or JSON).
    Train {
        #[arg(long)]
        config: PathBuf,
        /// Output directory (default: runs/<name>).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Continue from the newest checkpoint in the output directory.
        #[arg(long)]
        resume: bool,
        /// Override the spec's number of steps.
        #[arg(long)]
        steps: Option<u64>,
        /// Print the summary as JSON.
        #[arg(long)]
        json: bool,
    },
    /// PSNR/SSIM of a model over paired folders or over degraded clean photos.
    Eval {
        /// Model artifact directory (as written by train or export).
        #[arg(long)]
        model: PathBuf,
        /// Degraded images (paired with --gt by file name).
        #[arg(long, requires = "gt", conflicts_with_all = ["clean", "degrade", "pairs"])]
        noisy: Option<PathBuf>,
        #[arg(long, requires = "noisy")]
        gt: Option<PathBuf>,
        /// A paired dataset root: Rain13K/SPA `input`+`target`, GoPro `blur`+`sharp`, RealBlur
        /// `blur`+`gt` (flat or one folder per scene).
        #[arg(long, conflicts_with_all = ["clean", "degrade"])]
        pairs: Option<PathBuf>,
        /// Clean photos, degraded on the fly with --degrade.
        #[arg(long, requires = "degrade")]
        clean: Option<PathBuf>,
        /// Degradation for --clean: awgn:SIGMA (0–255 units, e.g. awgn:25), camera, rain or blur.
        #[arg(long, requires = "clean")]
        degrade: Option<Degrade>,
        /// Score the BT.601 luma channel instead of RGB.
        #[arg(long)]
        y_channel: bool,
        /// Tiled inference with this tile size.
        #[arg(long)]
        tile: Option<usize>,
        /// Seed of the synthetic degradation.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Use at most this many images (0 = all).
        #[arg(long, default_value_t = 0)]
        max_images: usize,
        #[arg(long)]
        json: bool,
    },
    /// Restore an image file, or every image of a folder into an output folder.
    Restore {
        #[arg(long)]
        model: PathBuf,
        input: PathBuf,
        output: PathBuf,
        /// Tiled inference with this tile size (bounded memory on large images).
        #[arg(long)]
        tile: Option<usize>,
        /// Overlap between tiles in pixels (default tile/4).
        #[arg(long, requires = "tile")]
        overlap: Option<usize>,
    },
    /// Degrade a clean image with a built-in recipe (preview a training degradation, or make
    /// synthetic test pairs). The output is 8-bit, so AWGN is clipped there.
    Degrade {
        input: PathBuf,
        output: PathBuf,
        /// awgn:SIGMA (0–255 units), camera, rain or blur (default recipes).
        #[arg(long)]
        kind: Degrade,
        #[arg(long, default_value_t = 0)]
        seed: u64,
    },
    /// Draw the training curves (loss, diffusion MSEs, validation PSNR) of one or more run
    /// directories into one PNG.
    Plot {
        /// Run directories (each with a metrics.jsonl), labelled by their folder names.
        #[arg(required = true)]
        runs: Vec<PathBuf>,
        #[arg(long, default_value = "curves.png")]
        out: PathBuf,
    },
    /// Time the speed cases (train steps, restore forwards), each in its own process; with
    /// --compare the same cases in PyTorch (bench/reference.py) in the same run.
    Bench {
        /// Cases to run (default: all): train-vanilla, train-joint, restore-512, restore-8x256.
        #[arg(long, value_delimiter = ',')]
        cases: Vec<String>,
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
    },
    /// Export the restorer of a checkpoint directory as a model artifact.
    Export {
        #[arg(long)]
        checkpoint: PathBuf,
        #[arg(long)]
        out: PathBuf,
        #[arg(long, value_enum, default_value = "raw")]
        weights: WeightsArg,
    },
    /// Restorer presets with parameter counts and GMACs at 128×128 (paper table A1.3).
    /// Also the diffusion presets with their parameter counts.
    Arch {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum WeightsArg {
    Raw,
    Ema,
}

fn tiling(tile: Option<usize>, overlap: Option<usize>) -> Result<Option<Tiling>> {
    tile.map(|t| {
        let mut tiling = Tiling::new(t);
        if let Some(o) = overlap {
            tiling.overlap = o;
        }
        tiling.validate().map(|_| tiling)
    })
    .transpose()
}

fn print_json<T: serde::Serialize>(v: &T) {
    println!(
        "{}",
        serde_json::to_string_pretty(v).expect("report serialises")
    );
}

fn run(cli: Cli) -> Result<()> {
    let progress = std::io::IsTerminal::is_terminal(&std::io::stderr());
    match cli.command {
        Command::Demo { out, steps } => {
            let rows = demo::run(&out, steps, progress)?;
            println!("\nreal-like camera noise, 2 held-out photos (PSNR dB / SSIM):");
            println!(
                "{:<16} {:>9} {:>8} {:>8}  artifact",
                "", "PSNR", "SSIM", "s/step"
            );
            for r in &rows {
                let sps = r
                    .seconds_per_step
                    .map(|s| format!("{s:.2}"))
                    .unwrap_or_else(|| "-".into());
                let art = r
                    .artifact
                    .as_ref()
                    .map(|a| a.display().to_string())
                    .unwrap_or_default();
                println!(
                    "{:<16} {:>9.3} {:>8.4} {:>8}  {}",
                    r.name, r.psnr, r.ssim, sps, art
                );
            }
            println!("curves: {}", out.join("curves.png").display());
        }
        Command::Train {
            config,
            out,
            resume,
            steps,
            json,
        } => {
            let mut spec = JobSpec::from_file(&config)?;
            if let Some(s) = steps {
                spec.steps = s;
                spec.validate()?;
            }
            let out = out.unwrap_or_else(|| PathBuf::from("runs").join(&spec.name));
            let summary = train::run(
                &spec,
                &TrainOptions {
                    out,
                    resume,
                    progress,
                },
            )?;
            if json {
                print_json(&summary);
            } else {
                println!(
                    "trained {} steps (from {}), final loss {:.5}, {:.3} s/step, model {}",
                    summary.steps,
                    summary.start_step,
                    summary.final_loss,
                    summary.seconds_per_step,
                    summary.artifact.display()
                );
                for (k, v) in &summary.metrics {
                    println!("  {k} = {v:.4}");
                }
            }
        }
        Command::Eval {
            model,
            noisy,
            gt,
            pairs,
            clean,
            degrade,
            y_channel,
            tile,
            seed,
            max_images,
            json,
        } => {
            let data = match (noisy, gt, pairs, clean, degrade) {
                (Some(lq), Some(gt), None, None, None) => EvalData::Paired { lq, gt },
                (None, None, Some(root), None, None) => EvalData::Root { root },
                (None, None, None, Some(clean), Some(degrade)) => {
                    EvalData::Synthetic { clean, degrade }
                }
                _ => {
                    return Err(noiseda::Error::InvalidArgument(
                        "give --noisy DIR --gt DIR, --pairs ROOT, or --clean DIR --degrade awgn:SIGMA|camera|rain|blur".into(),
                    ))
                }
            };
            let model = artifact::load(&model, &candle::Device::Cpu)?;
            let opts = EvalOptions {
                channel: if y_channel { Channel::Y } else { Channel::Rgb },
                tiling: tiling(tile, None)?,
                seed,
                max_images,
                progress,
            };
            let report = noiseda::eval::run(&model, &data, &opts)?;
            if json {
                print_json(&report);
            } else {
                for s in &report.per_image {
                    println!(
                        "{:<48} {:7.3} dB {:.4}   (input {:7.3} dB {:.4})",
                        s.name, s.psnr, s.ssim, s.input_psnr, s.input_ssim
                    );
                }
                println!(
                    "mean over {} images: PSNR {:.3} dB, SSIM {:.4} (input {:.3} dB, {:.4})",
                    report.images, report.psnr, report.ssim, report.input_psnr, report.input_ssim
                );
            }
        }
        Command::Restore {
            model,
            input,
            output,
            tile,
            overlap,
        } => {
            let model = artifact::load(&model, &candle::Device::Cpu)?;
            let written = noiseda::infer::restore_path(
                &model,
                &input,
                &output,
                tiling(tile, overlap)?,
                progress,
            )?;
            eprintln!(
                "restored {} image(s) into {}",
                written.len(),
                output.display()
            );
        }
        Command::Degrade {
            input,
            output,
            kind,
            seed,
        } => {
            let mut img = noiseda::data::Image::from_rgb8(&noiseda::data::load_rgb(&input)?);
            kind.apply(&mut noiseda::data::loader::step_rng(seed, 0), &mut img);
            noiseda::data::save_rgb(&output, &img.to_rgb8())?;
            eprintln!("wrote {}", output.display());
        }
        Command::Plot { runs, out } => {
            let runs = runs
                .iter()
                .map(|dir| {
                    let label = dir
                        .file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_else(|| dir.display().to_string());
                    noiseda::plot::Run::load(label, dir)
                })
                .collect::<Result<Vec<_>>>()?;
            noiseda::plot::training_curves(&runs, None, &out)?;
            eprintln!("wrote {}", out.display());
        }
        Command::Bench {
            cases,
            warmup,
            runs,
            threads,
            compare,
            python,
            reference,
            json,
            child,
        } => {
            let threads = threads
                .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
            let opts = bench::BenchOptions {
                warmup,
                runs: runs.max(1),
                threads,
            };
            if let Some(case) = child {
                let t = bench::run_case(bench::Case::parse(&case)?, &opts)?;
                println!("{}", serde_json::to_string(&t).expect("timings serialise"));
                return Ok(());
            }
            let cases = if cases.is_empty() {
                bench::Case::ALL.to_vec()
            } else {
                cases
                    .iter()
                    .map(|c| bench::Case::parse(c))
                    .collect::<Result<Vec<_>>>()?
            };
            let reference = compare.then_some(bench::Reference {
                python,
                script: reference,
            });
            if let Some(r) = &reference {
                let v = r.ensure_torch(true)?;
                eprintln!("PyTorch {v}");
            }
            let report = bench::run(&cases, &opts, reference.as_ref())?;
            if json {
                print_json(&report);
            } else {
                print!("{}", bench::table(&report));
            }
        }
        Command::Export {
            checkpoint,
            out,
            weights,
        } => {
            let w = match weights {
                WeightsArg::Raw => Weights::Raw,
                WeightsArg::Ema => Weights::Ema,
            };
            let m = train::export_checkpoint(&checkpoint, &out, w)?;
            println!(
                "exported {} ({} parameters, sha256 {}) to {}",
                m.name,
                m.parameters,
                m.sha256,
                out.display()
            );
        }
        Command::Arch { json } => {
            let rows = ArchConfig::PRESETS
                .iter()
                .map(|p| {
                    let arch = ArchConfig::preset(p).expect("listed presets exist");
                    let params = noiseda::model::parameter_count(&arch)?;
                    let gmacs = arch.macs(128, 128) as f64 / 1e9;
                    Ok(serde_json::json!({ "preset": p, "arch": arch, "parameters": params, "gmacs_128": gmacs }))
                })
                .collect::<Result<Vec<_>>>()?;
            let diffusion = DiffusionConfig::PRESETS
                .iter()
                .map(|p| {
                    let cfg = DiffusionConfig::preset(p).expect("listed presets exist");
                    let params = noiseda::model::diffusion::parameter_count(&cfg)?;
                    Ok(serde_json::json!({ "preset": p, "config": cfg, "parameters": params }))
                })
                .collect::<Result<Vec<_>>>()?;
            if json {
                print_json(&serde_json::json!({ "restorers": rows, "diffusion": diffusion }));
            } else {
                println!(
                    "{:<12} {:>12} {:>14}",
                    "restorer", "parameters", "GMACs@128²"
                );
                for r in &rows {
                    println!(
                        "{:<12} {:>12} {:>14.2}",
                        r["preset"].as_str().unwrap_or_default(),
                        r["parameters"],
                        r["gmacs_128"].as_f64().unwrap_or_default()
                    );
                }
                println!(
                    "\n{:<12} {:>12}  channels (2 res blocks, middle attention, dropout 0.2)",
                    "diffusion", "parameters"
                );
                for d in &diffusion {
                    println!(
                        "{:<12} {:>12}  {}",
                        d["preset"].as_str().unwrap_or_default(),
                        d["parameters"],
                        d["config"]["channels"]
                    );
                }
            }
        }
    }
    Ok(())
}

fn main() -> std::process::ExitCode {
    noiseda::device::tune_allocator();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,noiseda=info")),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(Cli::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
