//! `noiseda experiment`: the paper's ablation as a command. A set of arms (vanilla, Noise-DA
//! with and without its parts, condition ablations, the unpaired extension, a supervised upper
//! bound) runs on one base job spec with several seeds; every run is evaluated on the real
//! validation pairs (PSNR, de-biased PSNR, SSIM) and `results.md`, `results.json` and
//! `curves.png` summarise them. Finished runs are never rerun; interrupted ones resume.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use rand::SeedableRng;
use serde::{Deserialize, Serialize};

use crate::artifact;
use crate::config::{Degradation, JobSpec};
use crate::data::spec::degrade;
use crate::data::{list_images, load_rgb, save_rgb, Image, PairedFolder};
use crate::quality::{self, Channel};
use crate::train::{self, TrainOptions};
use crate::{Error, Result};

mod baselines;
mod camera;
mod probe;
mod report;

use baselines::baselines;
pub use baselines::{BaselineRow, BaselineSpec};
use camera::prepare_camera;
pub use camera::CameraSetting;
pub use probe::{probe_conditions, ProbeOptions, ProbePoint};
use report::curves;
pub use report::markdown;

/// An experiment file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExperimentSpec {
    pub name: String,
    /// Seeds of every arm (at least 3 give error bars).
    #[serde(default = "default_seeds")]
    pub seeds: Vec<u64>,
    /// Arms to run, by name (standard ones and `[[arm]]`s); empty = every standard arm the
    /// data allows, then the custom arms.
    #[serde(default)]
    pub arms: Vec<String>,
    /// The job spec every arm starts from (any `noiseda train` spec; its method is replaced).
    pub base: toml::Table,
    /// Builds the real domain from clean photos with the camera pipeline (the heavy setting).
    pub camera: Option<CameraSetting>,
    /// Real-domain pairs to train a supervised upper bound on (`supervised` arm).
    pub supervised: Option<crate::config::PairedSpec>,
    /// Extra arms: a name and the spec keys they set on top of `base`.
    #[serde(default, rename = "arm")]
    pub custom: Vec<CustomArm>,
    /// Classical baselines scored on the same validation pairs (`scripts/baselines.py`).
    pub baselines: Option<BaselineSpec>,
}

fn default_seeds() -> Vec<u64> {
    vec![0, 1, 2]
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CustomArm {
    pub name: String,
    /// What the arm is, for the table.
    #[serde(default)]
    pub about: String,
    /// Spec keys merged into `base` (tables merge, values replace).
    pub set: toml::Table,
}

/// One arm: its name, what it is, and the spec keys it sets.
#[derive(Debug, Clone)]
pub struct Arm {
    pub name: String,
    pub about: String,
    pub set: toml::Table,
}

fn table(text: &str) -> toml::Table {
    text.parse()
        .expect("the built-in arm tables parse. This is a bug.")
}

/// The standard arms (paper Table 4 and the list), in table order.
pub fn standard_arms() -> Vec<Arm> {
    let arm = |name: &str, about: &str, set: &str| Arm {
        name: name.into(),
        about: about.into(),
        set: table(set),
    };
    let plain = "method = \"noise-da\"\n[loss]\nshuffle = false\nresidual_swap = false\n";
    vec![
        arm("vanilla", "synthetic pairs only (Charbonnier)", "method = \"vanilla\""),
        arm(
            "da-t1-100",
            "+ diffusion loss, t ∈ [1, 100], no shuffle/swap",
            &format!("{plain}t_range = [1, 100]"),
        ),
        arm(
            "da-t900-999",
            "+ diffusion loss, t ∈ [900, 999], no shuffle/swap",
            &format!("{plain}t_range = [900, 999]"),
        ),
        arm(
            "da-t1-999",
            "+ diffusion loss, t ∈ [1, 999], no shuffle/swap",
            &format!("{plain}t_range = [1, 999]"),
        ),
        arm(
            "da-shuffle",
            "+ channel shuffle",
            "method = \"noise-da\"\n[loss]\nshuffle = true\nresidual_swap = false\nt_range = [1, 999]",
        ),
        arm(
            "da-full",
            "+ residual swap (the full method)",
            "method = \"noise-da\"\n[loss]\nshuffle = true\nresidual_swap = true\nt_range = [1, 999]",
        ),
        arm(
            "da-cond-synthetic",
            "full, conditioned on the synthetic output only",
            "method = \"noise-da\"\n[loss]\nshuffle = true\nresidual_swap = true\nt_range = [1, 999]\nconditions = \"synthetic\"",
        ),
        arm(
            "da-cond-real",
            "full, conditioned on the real output only",
            "method = \"noise-da\"\n[loss]\nshuffle = true\nresidual_swap = true\nt_range = [1, 999]\nconditions = \"real\"",
        ),
        arm(
            "da-unpaired",
            "noise-da-unpaired (diffusion target: unpaired clean photos)",
            "method = \"noise-da-unpaired\"\n[loss]\nshuffle = true\nresidual_swap = true\nt_range = [1, 999]",
        ),
    ]
}

/// Merges `over` into `base`: tables recursively, other values replace.
fn merge(base: &mut toml::Table, over: &toml::Table) {
    for (k, v) in over {
        match (base.get_mut(k), v) {
            // A tagged table of another `kind` (a degradation recipe) replaces the old one.
            (Some(toml::Value::Table(b)), toml::Value::Table(o))
                if o.get("kind").is_none_or(|kind| b.get("kind") == Some(kind)) =>
            {
                merge(b, o)
            }
            _ => {
                base.insert(k.clone(), v.clone());
            }
        }
    }
}

/// What one finished run measured.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunResult {
    pub arm: String,
    pub seed: u64,
    pub psnr: f64,
    pub psnr_debiased: f64,
    pub ssim: f64,
    pub seconds_per_step: f64,
    pub steps: u64,
    /// (step, validation PSNR) during training.
    pub val_curve: Vec<(u64, f64)>,
    /// Validation images whose restored PSNR is below the noisy input's.
    #[serde(default)]
    pub below_input: Vec<String>,
}

/// Mean and sample standard deviation.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Stat {
    pub mean: f64,
    pub std: f64,
}

fn stat(v: &[f64]) -> Stat {
    let n = v.len().max(1) as f64;
    let mean = v.iter().sum::<f64>() / n;
    let var = if v.len() > 1 {
        v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0)
    } else {
        0.0
    };
    Stat {
        mean,
        std: var.sqrt(),
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct ArmSummary {
    pub arm: String,
    pub about: String,
    pub seeds: usize,
    pub psnr: Stat,
    pub psnr_debiased: Stat,
    pub ssim: Stat,
    pub seconds_per_step: f64,
    /// Mean PSNR minus vanilla's mean PSNR.
    pub delta_vs_vanilla: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub name: String,
    pub seeds: Vec<u64>,
    pub steps: u64,
    pub val_images: usize,
    pub input: BTreeMap<String, f64>,
    pub arms: Vec<ArmSummary>,
    /// Classical baselines on the same pairs (the `[baselines]` section).
    pub baselines: Vec<BaselineRow>,
    pub runs: Vec<RunResult>,
    pub minutes: f64,
}

/// PSNR, de-biased PSNR and SSIM (RGB) of `out` against `gt`.
fn scores(out: &Image, gt: &Image) -> Result<[f64; 3]> {
    let e = |e: quality::QualityError| Error::data(e.to_string());
    Ok([
        quality::psnr(out.as_metric(), gt.as_metric(), Channel::Rgb).map_err(e)?,
        quality::psnr_debiased(out.as_metric(), gt.as_metric()).map_err(e)?,
        quality::ssim(out.as_metric(), gt.as_metric(), Channel::Rgb).map_err(e)?,
    ])
}

fn mean3(all: &[[f64; 3]]) -> [f64; 3] {
    let n = all.len().max(1) as f64;
    let mut m = [0.0; 3];
    for s in all {
        for (a, b) in m.iter_mut().zip(s) {
            *a += b / n;
        }
    }
    m
}

/// Runs (or finishes) an experiment into `out`.
pub fn run(path: &Path, out: &Path, progress: bool) -> Result<Report> {
    let t0 = std::time::Instant::now();
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let exp: ExperimentSpec = toml::from_str(&text)
        .map_err(|e| Error::invalid(path.display().to_string(), e.to_string()))?;
    if exp.seeds.is_empty() {
        return Err(Error::invalid("seeds", "give at least one seed"));
    }
    let base_dir = path.parent().unwrap_or(Path::new(".")).to_path_buf();
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    // The folders made under `out` (camera setting, baselines) go into specs whose relative
    // paths resolve from the experiment file, so `out` is made absolute first.
    let out = &std::path::absolute(out).map_err(|e| Error::io(out, e))?;

    // 1. The base spec, with the camera setting's folders when there is one.
    let (base, supervised) = base_spec(&exp, &base_dir, out)?;
    // 2. Arms: the standard ones the data allows, the supervised bound, the custom ones.
    let arms = select_arms(&exp, supervised.as_ref())?;
    // 3. Every arm × seed spec, built and validated before anything runs.
    let specs = build_specs(&exp, &base, &arms, &base_dir)?;
    // 4. The validation pairs, the input's scores and the baselines.
    let val_spec =
        specs[0].2.data.val.clone().ok_or_else(|| {
            Error::invalid("base.data.val", "the experiment needs validation pairs")
        })?;
    let val = PairedFolder::load_spec(&val_spec, quality::SSIM_WINDOW)?;
    let val_images: Vec<(Image, Image)> = val
        .pairs
        .iter()
        .map(|p| (Image::from_rgb8(&p.lq), Image::from_rgb8(&p.gt)))
        .collect();
    let input_per_image = val_images
        .iter()
        .map(|(lq, gt)| scores(lq, gt))
        .collect::<Result<Vec<_>>>()?;
    let input = mean3(&input_per_image);
    let baseline_rows = match &exp.baselines {
        None => Vec::new(),
        Some(b) => baselines(b, &val, out)?,
    };

    // 5. The runs, one after another; finished ones are read back.
    let mut runs = Vec::new();
    let total = specs.len();
    for (k, (arm, seed, spec)) in specs.iter().enumerate() {
        let dir = out.join(&arm.name).join(format!("seed-{seed}"));
        let label = format!("[{}/{total}] {} seed {seed}", k + 1, arm.name);
        let eval = ValSet {
            pairs: &val,
            images: &val_images,
            input: &input_per_image,
        };
        runs.push(run_one(arm, *seed, spec, &dir, &label, &eval, progress)?);
    }
    // 6. Summary per arm, the tables and the curves.
    let report = summarize(
        &exp,
        &arms,
        runs,
        &specs,
        input,
        val_images.len(),
        baseline_rows,
        t0,
    );
    let md = out.join("results.md");

    std::fs::write(&md, markdown(&report)).map_err(|e| Error::io(&md, e))?;
    let js = out.join("results.json");
    std::fs::write(
        &js,
        serde_json::to_vec_pretty(&report).expect("a report serialises"),
    )
    .map_err(|e| Error::io(&js, e))?;
    curves(&report, &out.join("curves.png"))?;
    Ok(report)
}

/// The base spec as a TOML table, with the camera setting's folders (and its supervised pairs)
/// filled in when the experiment has one.
fn base_spec(
    exp: &ExperimentSpec,
    base_dir: &Path,
    out: &Path,
) -> Result<(toml::Table, Option<crate::config::PairedSpec>)> {
    let mut base = exp.base.clone();
    let mut supervised = exp.supervised.clone();
    if let Some(c) = &exp.camera {
        let mut c = c.clone();
        if c.clean.is_relative() {
            c.clean = base_dir.join(&c.clean);
        }
        let root = out.join("data");
        prepare_camera(&c, &root)?;
        let s = |p: &str| toml::Value::String(root.join(p).display().to_string());
        let data = base
            .entry("data")
            .or_insert_with(|| toml::Value::Table(toml::Table::new()))
            .as_table_mut()
            .ok_or_else(|| Error::invalid("base.data", "must be a table"))?;
        let synthetic = data
            .entry("synthetic")
            .or_insert_with(|| toml::Value::Table(toml::Table::new()))
            .as_table_mut()
            .ok_or_else(|| Error::invalid("base.data.synthetic", "must be a table"))?;
        synthetic.insert("clean".into(), s("train-clean"));
        let mut real = toml::Table::new();
        real.insert("dir".into(), s("real"));
        data.insert("real".into(), toml::Value::Table(real));
        let mut val = toml::Table::new();
        val.insert("lq".into(), s("val/lq"));
        val.insert("gt".into(), s("val/gt"));
        data.insert("val".into(), toml::Value::Table(val));
        supervised.get_or_insert(crate::config::PairedSpec {
            lq: Some(root.join("real-pairs/lq")),
            gt: Some(root.join("real-pairs/gt")),
            root: None,
            max_images: 0,
        });
    }

    Ok((base, supervised))
}

/// The arms to run: the standard ones, the supervised bound (when there are real pairs) and the
/// custom ones, filtered and ordered by `arms` when it is given.
fn select_arms(
    exp: &ExperimentSpec,
    supervised: Option<&crate::config::PairedSpec>,
) -> Result<Vec<Arm>> {
    let mut all: Vec<Arm> = standard_arms();
    if let Some(sv) = supervised {
        let mut set = toml::Table::new();
        set.insert("method".into(), "vanilla".into());
        // The real pairs become the synthetic (paired) domain of a vanilla run.
        let mut pairs = toml::Table::new();
        for (k, p) in [("lq", &sv.lq), ("gt", &sv.gt), ("root", &sv.root)] {
            if let Some(p) = p {
                // Relative paths resolve from the experiment file with the rest of the spec.
                pairs.insert(k.into(), p.display().to_string().into());
            }
        }
        set.insert("__supervised".into(), toml::Value::Table(pairs));
        all.push(Arm {
            name: "supervised".into(),
            about: "upper bound: trained on the real-domain pairs".into(),
            set,
        });
    }
    all.extend(exp.custom.iter().map(|c| Arm {
        name: c.name.clone(),
        about: if c.about.is_empty() {
            "custom".into()
        } else {
            c.about.clone()
        },
        set: c.set.clone(),
    }));
    let arms: Vec<Arm> = if exp.arms.is_empty() {
        all
    } else {
        exp.arms
            .iter()
            .map(|n| {
                all.iter().find(|a| &a.name == n).cloned().ok_or_else(|| {
                    Error::invalid(
                        "arms",
                        format!(
                            "unknown arm `{n}`; known: {}",
                            all.iter()
                                .map(|a| a.name.as_str())
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    )
                })
            })
            .collect::<Result<_>>()?
    };
    if !arms.iter().any(|a| a.name == "vanilla") {
        tracing::warn!("no vanilla arm: the table has no Δ column");
    }

    Ok(arms)
}

/// Every arm × seed job spec, validated. Seed-major order: an interrupted experiment has whole
/// tables for its first seeds.
fn build_specs(
    exp: &ExperimentSpec,
    base: &toml::Table,
    arms: &[Arm],
    base_dir: &Path,
) -> Result<Vec<(Arm, u64, JobSpec)>> {
    let mut specs = Vec::new();
    for &seed in &exp.seeds {
        for arm in arms {
            let mut t = base.clone();
            let mut set = arm.set.clone();
            let supervised_pairs = set.remove("__supervised");
            merge(&mut t, &set);
            if let Some(pairs) = supervised_pairs {
                let data = t
                    .get_mut("data")
                    .and_then(|d| d.as_table_mut())
                    .ok_or_else(|| Error::invalid("base.data", "missing"))?;
                data.insert("synthetic".into(), pairs);
                data.remove("real");
            }
            if arm.name == "da-unpaired" {
                // The extension's unpaired clean photos: the synthetic domain's clean folder.
                let clean = t
                    .get("data")
                    .and_then(|d| d.get("synthetic"))
                    .and_then(|s| s.get("clean"))
                    .cloned()
                    .ok_or_else(|| {
                        Error::invalid("arms", "da-unpaired needs data.synthetic.clean in base")
                    })?;
                let data = t
                    .get_mut("data")
                    .and_then(|d| d.as_table_mut())
                    .expect("checked");
                if !data.contains_key("unpaired") {
                    let mut u = toml::Table::new();
                    u.insert("dir".into(), clean);
                    data.insert("unpaired".into(), toml::Value::Table(u));
                }
            }
            t.insert("name".into(), format!("{}-{}", exp.name, arm.name).into());
            t.insert("seed".into(), toml::Value::Integer(seed as i64));
            let mut spec: JobSpec =
                toml::Value::Table(t)
                    .try_into()
                    .map_err(|e: toml::de::Error| {
                        Error::invalid(format!("arm {}", arm.name), e.message().to_string())
                    })?;
            spec.resolve_paths(base_dir);
            spec.validate()
                .map_err(|e| Error::invalid(format!("arm {}", arm.name), e.to_string()))?;
            specs.push((arm.clone(), seed, spec));
        }
    }
    Ok(specs)
}

/// The validation pairs every run is scored on, and the noisy input's scores per image.
struct ValSet<'a> {
    pairs: &'a PairedFolder,
    images: &'a [(Image, Image)],
    input: &'a [[f64; 3]],
}

/// Trains one arm × seed into `dir` (resuming from its checkpoints) and scores it, or reads back
/// its `result.json` when it finished before.
fn run_one(
    arm: &Arm,
    seed: u64,
    spec: &JobSpec,
    dir: &Path,
    label: &str,
    eval: &ValSet,
    progress: bool,
) -> Result<RunResult> {
    let result_file = dir.join("result.json");
    if let Ok(text) = std::fs::read_to_string(&result_file) {
        if let Ok(r) = serde_json::from_str::<RunResult>(&text) {
            if r.steps == spec.steps {
                eprintln!("{label}: done before");
                return Ok(r);
            }
        }
    }
    eprintln!("{label}: {}", arm.about);
    let resume = train::checkpoint::latest(&dir.join("checkpoints"))?.is_some();
    let summary = train::run(
        spec,
        &TrainOptions {
            out: dir.to_path_buf(),
            resume,
            progress,
            control: None,
            job_id: None,
        },
    )?;
    let model = artifact::load(summary.model_dir()?, &candle::Device::Cpu)?;
    let per_image = eval
        .images
        .iter()
        .map(|(lq, gt)| {
            let restored = crate::infer::restore_image(
                &model.net,
                model.manifest.range,
                lq,
                &model.device,
                None,
            )?;
            scores(&restored, gt)
        })
        .collect::<Result<Vec<_>>>()?;
    let [psnr, psnr_debiased, ssim] = mean3(&per_image);
    let below_input = per_image
        .iter()
        .zip(eval.input)
        .zip(&eval.pairs.pairs)
        .filter(|((o, i), _)| o[0] < i[0])
        .map(|(_, p)| p.name.clone())
        .collect();
    let val_curve = crate::runlog::read_metric_log(&dir.join("metrics.jsonl"))?
        .into_iter()
        .filter(|p| p.split == crate::runlog::Split::Val && p.series == "psnr")
        .map(|p| (p.step, p.value))
        .collect();
    let r = RunResult {
        arm: arm.name.clone(),
        seed,
        psnr,
        psnr_debiased,
        ssim,
        seconds_per_step: summary.seconds_per_step,
        steps: spec.steps,
        val_curve,
        below_input,
    };
    let json = serde_json::to_vec_pretty(&r).expect("a result serialises");
    std::fs::write(&result_file, json).map_err(|e| Error::io(&result_file, e))?;
    eprintln!(
        "    PSNR {psnr:.3} dB, de-biased {psnr_debiased:.3}, SSIM {ssim:.4} ({:.2} s/step)",
        r.seconds_per_step
    );
    Ok(r)
}

/// The report: per-arm means and spreads, Δ against vanilla, every run.
#[allow(clippy::too_many_arguments)]
fn summarize(
    exp: &ExperimentSpec,
    arms: &[Arm],
    runs: Vec<RunResult>,
    specs: &[(Arm, u64, JobSpec)],
    input: [f64; 3],
    val_images: usize,
    baseline_rows: Vec<BaselineRow>,
    t0: std::time::Instant,
) -> Report {
    let vanilla = runs
        .iter()
        .filter(|r| r.arm == "vanilla")
        .map(|r| r.psnr)
        .collect::<Vec<_>>();
    let vanilla_mean = (!vanilla.is_empty()).then(|| stat(&vanilla).mean);
    let summaries: Vec<ArmSummary> = arms
        .iter()
        .map(|arm| {
            let rs: Vec<&RunResult> = runs.iter().filter(|r| r.arm == arm.name).collect();
            let col = |f: fn(&RunResult) -> f64| stat(&rs.iter().map(|r| f(r)).collect::<Vec<_>>());
            let psnr = col(|r| r.psnr);
            ArmSummary {
                arm: arm.name.clone(),
                about: arm.about.clone(),
                seeds: rs.len(),
                psnr,
                psnr_debiased: col(|r| r.psnr_debiased),
                ssim: col(|r| r.ssim),
                seconds_per_step: col(|r| r.seconds_per_step).mean,
                delta_vs_vanilla: vanilla_mean.map(|v| psnr.mean - v),
            }
        })
        .collect();
    Report {
        name: exp.name.clone(),
        seeds: exp.seeds.clone(),
        steps: specs[0].2.steps,
        val_images,
        input: BTreeMap::from([
            ("psnr".to_string(), input[0]),
            ("psnr_debiased".to_string(), input[1]),
            ("ssim".to_string(), input[2]),
        ]),
        arms: summaries,
        baselines: baseline_rows,
        runs,
        minutes: t0.elapsed().as_secs_f64() / 60.0,
    }
}
