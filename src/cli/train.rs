//! The local model commands: `train`, `eval`, `restore` (local or through a server),
//! `degrade`, `export`, `plot` and `arch`; their flags and what each runs.

use std::path::PathBuf;

use noiseda::client::{self, Client};
use noiseda::config::{JobSpec, Weights};
use noiseda::eval::{Degrade, EvalData, EvalOptions};
use noiseda::infer::Tiling;
use noiseda::model::{ArchConfig, DiffusionConfig};
use noiseda::quality::Channel;
use noiseda::train::{self, TrainOptions};
use noiseda::{artifact, Error, Result};

use super::{client_runtime, print, ClientAuth, WeightsArg, DEFAULT_SERVER};

#[derive(clap::Args)]
pub struct TrainArgs {
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
}

#[derive(clap::Args)]
pub struct EvalArgs {
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
    /// Geometric self-ensemble: average the restorations of the eight flips and transposes
    /// of each image (8× the compute).
    #[arg(long)]
    self_ensemble: bool,
    /// Seed of the synthetic degradation.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Use at most this many images (0 = all).
    #[arg(long, default_value_t = 0)]
    max_images: usize,
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
pub struct RestoreArgs {
    /// Model artifact directory (local inference).
    #[arg(long, required_unless_present = "server", conflicts_with = "server")]
    model: Option<PathBuf>,
    /// Restore through a server's Restore service instead (host:port).
    #[arg(long)]
    server: Option<String>,
    /// With --server: the model name (default: the server's default model).
    #[arg(long, requires = "server", default_value = "")]
    model_name: String,
    /// With --server: requests in flight at once.
    #[arg(long, requires = "server", default_value_t = 4)]
    concurrency: usize,
    #[command(flatten)]
    auth: ClientAuth,
    input: PathBuf,
    output: PathBuf,
    /// Tiled inference with this tile size (bounded memory on large images).
    #[arg(long)]
    tile: Option<usize>,
    /// Overlap between tiles in pixels (default tile/4).
    #[arg(long, requires = "tile")]
    overlap: Option<usize>,
    /// Geometric self-ensemble (local inference): average the restorations of the eight
    /// flips and transposes of each image (8× the compute).
    #[arg(long, conflicts_with = "server")]
    self_ensemble: bool,
}

#[derive(clap::Args)]
pub struct DegradeArgs {
    /// A clean image, or a folder of them.
    input: PathBuf,
    /// The degraded image (one input, one copy), else a folder.
    output: PathBuf,
    /// awgn:SIGMA (0–255 units), camera, isp, rain or blur (default recipes).
    #[arg(long, conflicts_with_all = ["spec", "recipe"])]
    kind: Option<Degrade>,
    /// Use the `data.synthetic.degradation` of this job spec (TOML or JSON).
    #[arg(long, conflicts_with = "recipe")]
    spec: Option<PathBuf>,
    /// A recipe as an inline TOML table, e.g. '{ kind = "isp", shot = [1e-4, 2e-3] }'.
    #[arg(long)]
    recipe: Option<String>,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Degraded versions per input image (each draws its own parameters).
    #[arg(long, default_value_t = 1)]
    copies: usize,
    /// Print what was written (and each image's drawn parameters) as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
pub struct PlotArgs {
    /// Run directories (each with a metrics.jsonl), labelled by their folder names.
    #[arg(required_unless_present = "job", conflicts_with = "job")]
    runs: Vec<PathBuf>,
    /// Draw a server job's curves instead (fetched over gRPC from --server).
    #[arg(long)]
    job: Option<String>,
    #[arg(long, env = "NOISEDA_SERVER", default_value = DEFAULT_SERVER)]
    server: String,
    #[command(flatten)]
    auth: ClientAuth,
    #[arg(long, default_value = "curves.png")]
    out: PathBuf,
}

#[derive(clap::Args)]
pub struct ExportArgs {
    #[arg(long)]
    checkpoint: PathBuf,
    #[arg(long)]
    out: PathBuf,
    #[arg(long, value_enum, default_value = "raw")]
    weights: WeightsArg,
}

#[derive(clap::Args)]
pub struct ArchArgs {
    #[arg(long)]
    json: bool,
}

/// `--tile` (and `--overlap`) as a checked tiling.
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

pub fn train(a: TrainArgs, progress: bool) -> Result<()> {
    let mut spec = JobSpec::from_file(&a.config)?;
    if let Some(s) = a.steps {
        spec.steps = s;
        spec.validate()?;
    }
    let out = a
        .out
        .unwrap_or_else(|| PathBuf::from("runs").join(&spec.name));
    let summary = train::run(
        &spec,
        &TrainOptions {
            out,
            resume: a.resume,
            progress,
            control: None,
            job_id: None,
        },
    )?;
    if a.json {
        print::json(&summary);
        Ok(())
    } else {
        print::train_summary(&summary)
    }
}

pub fn eval(a: EvalArgs, progress: bool) -> Result<()> {
    let data = match (a.noisy, a.gt, a.pairs, a.clean, a.degrade) {
        (Some(lq), Some(gt), None, None, None) => EvalData::Paired { lq, gt },
        (None, None, Some(root), None, None) => EvalData::Root { root },
        (None, None, None, Some(clean), Some(degrade)) => EvalData::Synthetic { clean, degrade },
        _ => {
            return Err(Error::invalid_input(
                "give --noisy DIR --gt DIR, --pairs ROOT, or --clean DIR --degrade awgn:SIGMA|camera|rain|blur",
            ))
        }
    };
    let model = artifact::load(&a.model, &candle::Device::Cpu)?;
    let opts = EvalOptions {
        channel: if a.y_channel {
            Channel::Y
        } else {
            Channel::Rgb
        },
        tiling: tiling(a.tile, None)?,
        self_ensemble: a.self_ensemble,
        seed: a.seed,
        max_images: a.max_images,
        progress,
    };
    let report = noiseda::eval::run(&model, &data, &opts)?;
    if a.json {
        print::json(&report);
    } else {
        print::eval_report(&report);
    }
    Ok(())
}

pub fn restore(a: RestoreArgs, progress: bool) -> Result<()> {
    if let Some(server) = &a.server {
        let written = client_runtime()?.block_on(client::restore_remote(
            &a.auth.remote(server),
            &a.model_name,
            &a.input,
            &a.output,
            a.concurrency,
            a.tile,
            progress,
        ))?;
        eprintln!(
            "restored {} image(s) into {} via {server}",
            written.len(),
            a.output.display()
        );
        return Ok(());
    }
    let Some(model) = &a.model else {
        unreachable!("clap requires --model or --server")
    };
    let model = artifact::load(model, &candle::Device::Cpu)?;
    let written = noiseda::infer::restore_path(
        &model,
        &a.input,
        &a.output,
        tiling(a.tile, a.overlap)?,
        a.self_ensemble,
        progress,
    )?;
    eprintln!(
        "restored {} image(s) into {}",
        written.len(),
        a.output.display()
    );
    Ok(())
}

pub fn degrade(a: DegradeArgs) -> Result<()> {
    let recipe = match (a.kind, a.spec, a.recipe) {
        (Some(k), None, None) => k.recipe(),
        (None, Some(path), None) => JobSpec::from_file(&path)?
            .data
            .synthetic
            .degradation
            .ok_or_else(|| {
                Error::invalid(
                    "data.synthetic.degradation",
                    format!("{} has no degradation recipe", path.display()),
                )
            })?,
        (None, None, Some(text)) => noiseda::config::Degradation::from_inline_toml(&text)?,
        _ => {
            return Err(Error::invalid_input(
                "give one of --kind, --spec or --recipe",
            ))
        }
    };
    let written =
        noiseda::data::preview::degrade_files(&a.input, &a.output, &recipe, a.seed, a.copies)?;
    if a.json {
        print::json(&written);
    } else {
        print::degraded(&written);
    }
    Ok(())
}

pub fn plot(a: PlotArgs) -> Result<()> {
    let runs = match &a.job {
        Some(id) => client_runtime()?.block_on(async {
            let mut c = Client::connect(&a.auth.remote(&a.server)).await?;
            let job = c.get(id).await?;
            let points = c.history(id, 1).await?;
            Ok::<_, Error>(vec![noiseda::runlog::curves::Run {
                label: job.name,
                points,
            }])
        })?,
        None => a
            .runs
            .iter()
            .map(|dir| {
                let label = dir
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_else(|| dir.display().to_string());
                noiseda::runlog::curves::Run::load(label, dir)
            })
            .collect::<Result<Vec<_>>>()?,
    };
    noiseda::runlog::curves::training_curves(&runs, None, &a.out)?;
    eprintln!("wrote {}", a.out.display());
    Ok(())
}

pub fn export(a: ExportArgs) -> Result<()> {
    let w = match a.weights {
        WeightsArg::Raw => Weights::Raw,
        WeightsArg::Ema => Weights::Ema,
    };
    let m = train::export_checkpoint(&a.checkpoint, &a.out, w, None)?;
    println!(
        "exported {} ({} parameters, sha256 {}) to {}",
        m.name,
        m.parameters,
        m.sha256,
        a.out.display()
    );
    Ok(())
}

pub fn arch(a: ArchArgs) -> Result<()> {
    let restorers = ArchConfig::PRESETS
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
    if a.json {
        print::json(&serde_json::json!({ "restorers": restorers, "diffusion": diffusion }));
    } else {
        print::arch_table(&restorers, &diffusion);
    }
    Ok(())
}
