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

/// The `[baselines]` section: which classical denoisers to add to the table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BaselineSpec {
    /// Methods of `scripts/baselines.py` (`cbm3d`, `tv`, `nlm`).
    #[serde(default = "default_baselines")]
    pub methods: Vec<String>,
    /// The script (relative paths resolve from the working directory).
    #[serde(default = "default_baseline_script")]
    pub script: PathBuf,
    /// Python interpreter.
    #[serde(default = "default_python")]
    pub python: String,
    /// Cross-fitting folds for the parameter choice (see the script); 0 = its first grid value.
    #[serde(default = "default_folds")]
    pub folds: usize,
}

fn default_baselines() -> Vec<String> {
    vec!["cbm3d".into(), "tv".into(), "nlm".into()]
}
fn default_baseline_script() -> PathBuf {
    PathBuf::from("scripts/baselines.py")
}
fn default_python() -> String {
    "python3".into()
}
fn default_folds() -> usize {
    2
}

/// One classical baseline's row, as `scripts/baselines.py --json` reports it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BaselineRow {
    pub method: String,
    pub label: String,
    pub psnr: f64,
    pub ssim: f64,
    pub params: Vec<serde_json::Value>,
    pub selection: String,
}

/// Runs the baseline script on the validation pairs once (its rows are kept in
/// `<out>/baselines.json` and reused while the methods stay the same). The script reads PNG
/// copies of the pairs as noiseda decoded them (`<out>/baselines/{lq,gt}/`), so both score
/// the same pixels (JPEG decoders differ by a level here and there).
fn baselines(b: &BaselineSpec, val: &PairedFolder, out: &Path) -> Result<Vec<BaselineRow>> {
    let cache = out.join("baselines.json");
    if let Ok(text) = std::fs::read_to_string(&cache) {
        if let Ok(rows) = serde_json::from_str::<Vec<BaselineRow>>(&text) {
            if rows.iter().map(|r| &r.method).eq(b.methods.iter()) {
                return Ok(rows);
            }
        }
    }
    let (lq, gt) = (
        out.join("baselines").join("lq"),
        out.join("baselines").join("gt"),
    );
    for p in &val.pairs {
        let name = format!("{}.png", p.name.replace(['/', '\\'], "_"));
        save_rgb(&lq.join(&name), &p.lq)?;
        save_rgb(&gt.join(&name), &p.gt)?;
    }
    let (lq, gt) = (lq.as_path(), gt.as_path());
    eprintln!(
        "baselines {} on {} (scripts/baselines.py; CBM3D takes about a minute per 512x512 image)",
        b.methods.join(", "),
        lq.display()
    );
    let mut cmd = std::process::Command::new(&b.python);
    cmd.arg(&b.script)
        .arg("--noisy")
        .arg(lq)
        .arg("--gt")
        .arg(gt)
        .arg("--methods")
        .arg(b.methods.join(","))
        .arg("--json");
    if b.folds == 0 {
        cmd.arg("--fixed");
    } else {
        cmd.arg("--folds").arg(b.folds.to_string());
    }
    let run = cmd.output().map_err(|e| {
        Error::invalid_input(format!(
            "[baselines]: cannot run {} {}: {e}",
            b.python,
            b.script.display()
        ))
    })?;
    if !run.status.success() {
        return Err(Error::invalid_input(format!(
            "[baselines]: {} failed ({}): {}",
            b.script.display(),
            run.status,
            String::from_utf8_lossy(&run.stderr).trim()
        )));
    }
    #[derive(Deserialize)]
    struct ScriptReport {
        rows: Vec<BaselineRow>,
    }
    let report: ScriptReport = serde_json::from_slice(&run.stdout)
        .map_err(|e| Error::invalid_input(format!("[baselines]: unreadable script output: {e}")))?;
    std::fs::write(
        &cache,
        serde_json::to_vec_pretty(&report.rows).expect("rows serialise"),
    )
    .map_err(|e| Error::io(&cache, e))?;
    Ok(report.rows)
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

/// A simulated real domain made from clean photos: sorted photos with index % `val_every` == 0
/// are held out (degraded once, with their clean versions, for validation), the rest are the
/// synthetic domain's clean photos and, degraded `copies` times, the unlabeled real domain (and
/// the pairs of the supervised upper bound). The degradation is the camera pipeline `noise` or
/// any recipe `degradation` (`{ kind = "isp", … }`); exactly one of the two.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CameraSetting {
    pub clean: PathBuf,
    #[serde(default = "default_val_every")]
    pub val_every: usize,
    #[serde(default = "default_copies")]
    pub copies: usize,
    #[serde(default)]
    pub noise: Option<crate::data::camera::CameraNoise>,
    #[serde(default)]
    pub degradation: Option<Degradation>,
}

impl CameraSetting {
    /// The one degradation of the setting, checked.
    fn recipe(&self) -> Result<Degradation> {
        match (&self.noise, &self.degradation) {
            (Some(n), None) => Ok(Degradation::Camera(n.clone())),
            (None, Some(d)) => {
                d.validate("camera.degradation")?;
                Ok(d.clone())
            }
            _ => Err(Error::invalid(
                "camera",
                "give exactly one of `noise` (the camera pipeline) and `degradation`",
            )),
        }
    }
}

fn default_val_every() -> usize {
    5
}
fn default_copies() -> usize {
    2
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

/// Writes the camera setting's folders under `root` (once; reused when present).
fn prepare_camera(c: &CameraSetting, root: &Path) -> Result<()> {
    let recipe = c.recipe()?;
    let done = root.join(".complete");
    if done.exists() {
        return Ok(());
    }
    let photos = list_images(&c.clean)?;
    if photos.len() < 2 {
        return Err(Error::data(format!(
            "{}: the camera setting needs at least 2 photos",
            c.clean.display()
        )));
    }
    for (i, p) in photos.iter().enumerate() {
        let name = p
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| format!("{i}"));
        let img = Image::from_rgb8(&load_rgb(p)?);
        // One seed per photo and copy: the folders do not depend on the order of work.
        let rng = |copy: u64| rand_chacha::ChaCha8Rng::seed_from_u64((i as u64) << 8 | copy);
        if i % c.val_every.max(1) == 0 {
            save_rgb(
                &root.join("val/gt").join(format!("{name}.png")),
                &img.to_rgb8(),
            )?;
            let mut noisy = img.clone();
            degrade(&mut rng(255), &mut noisy, &recipe);
            save_rgb(
                &root.join("val/lq").join(format!("{name}.png")),
                &noisy.to_rgb8(),
            )?;
        } else {
            save_rgb(
                &root.join("train-clean").join(format!("{name}.png")),
                &img.to_rgb8(),
            )?;
            for copy in 0..c.copies {
                let mut noisy = img.clone();
                degrade(&mut rng(copy as u64), &mut noisy, &recipe);
                let file = format!("{name}-{copy}.png");
                save_rgb(&root.join("real").join(&file), &noisy.to_rgb8())?;
                save_rgb(&root.join("real-pairs/lq").join(&file), &noisy.to_rgb8())?;
                save_rgb(&root.join("real-pairs/gt").join(&file), &img.to_rgb8())?;
            }
        }
    }
    std::fs::write(&done, b"").map_err(|e| Error::io(&done, e))
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

    // The base spec, with the camera setting's folders when there is one.
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

    // Arms: the standard ones the data allows, the supervised bound, the custom ones.
    let mut all: Vec<Arm> = standard_arms();
    if let Some(sv) = &supervised {
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

    // Every arm × seed spec, built and validated before anything runs.
    // Seed-major order: an interrupted experiment has whole tables for its first seeds.
    let mut specs = Vec::new();
    for &seed in &exp.seeds {
        for arm in &arms {
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
            spec.resolve_paths(&base_dir);
            spec.validate()
                .map_err(|e| Error::invalid(format!("arm {}", arm.name), e.to_string()))?;
            specs.push((arm.clone(), seed, spec));
        }
    }
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

    // The runs, one after another; finished ones are read back.
    let mut runs = Vec::new();
    let total = specs.len();
    for (k, (arm, seed, spec)) in specs.iter().enumerate() {
        let dir = out.join(&arm.name).join(format!("seed-{seed}"));
        let result_file = dir.join("result.json");
        if let Ok(text) = std::fs::read_to_string(&result_file) {
            if let Ok(r) = serde_json::from_str::<RunResult>(&text) {
                if r.steps == spec.steps {
                    eprintln!("[{}/{total}] {} seed {seed}: done before", k + 1, arm.name);
                    runs.push(r);
                    continue;
                }
            }
        }
        eprintln!(
            "[{}/{total}] {} seed {seed}: {}",
            k + 1,
            arm.name,
            arm.about
        );
        let resume = train::checkpoint::latest(&dir.join("checkpoints"))?.is_some();
        let summary = train::run(
            spec,
            &TrainOptions {
                out: dir.clone(),
                resume,
                progress,
                control: None,
                job_id: None,
            },
        )?;
        let model = artifact::load(summary.model_dir()?, &candle::Device::Cpu)?;
        let per_image = val_images
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
            .zip(&input_per_image)
            .zip(&val.pairs)
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
            seed: *seed,
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
        runs.push(r);
    }

    // Summary per arm, the tables and the curves.
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
    let report = Report {
        name: exp.name.clone(),
        seeds: exp.seeds.clone(),
        steps: specs[0].2.steps,
        val_images: val_images.len(),
        input: BTreeMap::from([
            ("psnr".to_string(), input[0]),
            ("psnr_debiased".to_string(), input[1]),
            ("ssim".to_string(), input[2]),
        ]),
        arms: summaries,
        baselines: baseline_rows,
        runs,
        minutes: t0.elapsed().as_secs_f64() / 60.0,
    };
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

/// The results table (markdown).
pub fn markdown(r: &Report) -> String {
    let pm = |s: Stat, d: usize| format!("{:.*} ± {:.*}", d, s.mean, d, s.std);
    let mut out = format!(
        "# {}: {} steps, seeds {:?}, {} validation pairs\n\n\
         | arm | settings | PSNR (dB) | de-biased PSNR | SSIM | Δ PSNR vs vanilla | seeds | s/step |\n\
         |---|---|---|---|---|---|---|---|\n\
         | noisy input | — | {:.3} | {:.3} | {:.4} | | | |\n",
        r.name, r.steps, r.seeds, r.val_images, r.input["psnr"], r.input["psnr_debiased"], r.input["ssim"]
    );
    for b in &r.baselines {
        let params: Vec<String> = b
            .params
            .iter()
            .filter(|p| !p.is_null())
            .map(|p| p.to_string())
            .collect();
        out += &format!(
            "| {} | baseline{}{} | {:.3} | | {:.4} | {} | | |\n",
            b.method,
            if params.is_empty() {
                String::new()
            } else {
                format!(" {}", params.join("; "))
            },
            if b.selection.is_empty() {
                String::new()
            } else {
                format!(" ({})", b.selection)
            },
            b.psnr,
            b.ssim,
            r.arms
                .iter()
                .find(|a| a.arm == "vanilla")
                .map(|v| format!("{:+.3}", b.psnr - v.psnr.mean))
                .unwrap_or_default(),
        );
    }
    for a in &r.arms {
        out += &format!(
            "| {} | {} | {} | {} | {} | {} | {} | {:.2} |\n",
            a.arm,
            a.about,
            pm(a.psnr, 3),
            pm(a.psnr_debiased, 3),
            pm(a.ssim, 4),
            a.delta_vs_vanilla
                .map(|d| format!("{d:+.3}"))
                .unwrap_or_default(),
            a.seeds,
            a.seconds_per_step
        );
    }
    // Paired by seed: each arm minus vanilla with the same seed.
    let vanilla: BTreeMap<u64, f64> = r
        .runs
        .iter()
        .filter(|x| x.arm == "vanilla")
        .map(|x| (x.seed, x.psnr))
        .collect();
    if !vanilla.is_empty() && r.arms.len() > 1 {
        out += "\nPaired by seed (PSNR minus vanilla's with the same seed):\n\n| arm |";
        for s in &r.seeds {
            out += &format!(" seed {s} |");
        }
        out += " mean ± std |\n|---|";
        out += &"---|".repeat(r.seeds.len() + 1);
        out += "\n";
        for a in r.arms.iter().filter(|a| a.arm != "vanilla") {
            let mut d = Vec::new();
            out += &format!("| {} |", a.arm);
            for s in &r.seeds {
                let run = r.runs.iter().find(|x| x.arm == a.arm && x.seed == *s);
                match (run, vanilla.get(s)) {
                    (Some(x), Some(v)) => {
                        d.push(x.psnr - v);
                        out += &format!(" {:+.3} |", x.psnr - v);
                    }
                    _ => out += " |",
                }
            }
            out += &format!(
                " {} |\n",
                if d.is_empty() {
                    String::new()
                } else {
                    pm(stat(&d), 3)
                }
            );
        }
    }
    // Images where a run is below the noisy input.
    let below: Vec<String> = r
        .runs
        .iter()
        .filter(|x| !x.below_input.is_empty())
        .map(|x| format!("{} seed {}: {}", x.arm, x.seed, x.below_input.join(", ")))
        .collect();
    out += &format!(
        "\nBelow the noisy input (restored PSNR < input PSNR) on: {}\n",
        if below.is_empty() {
            "no image, in any run".to_string()
        } else {
            below.join("; ")
        }
    );
    out += "\nPSNR and SSIM over RGB (per image, then mean); de-biased PSNR removes each restored \
            image's mean per-channel error first, so a global colour cast shows as the gap between \
            the two. ± is the standard deviation over seeds.\n";
    out
}

/// Validation PSNR against step, mean over seeds, one line per arm.
fn curves(r: &Report, out: &Path) -> Result<PathBuf> {
    let runs: Vec<crate::runlog::curves::Run> = r
        .arms
        .iter()
        .map(|a| {
            let mut by_step: BTreeMap<u64, Vec<f64>> = BTreeMap::new();
            for run in r.runs.iter().filter(|x| x.arm == a.arm) {
                for &(s, v) in &run.val_curve {
                    by_step.entry(s).or_default().push(v);
                }
            }
            crate::runlog::curves::Run {
                label: a.arm.clone(),
                points: by_step
                    .into_iter()
                    .map(|(step, v)| crate::runlog::MetricPoint {
                        seq: 0,
                        step,
                        wall: 0.0,
                        series: "psnr".into(),
                        split: crate::runlog::Split::Val,
                        value: v.iter().sum::<f64>() / v.len() as f64,
                    })
                    .collect(),
            }
        })
        .collect();
    crate::runlog::curves::validation_curves(&runs, Some(("noisy input", r.input["psnr"])), out)
}

/// Settings of the paper's Fig. 1(a) probe.
#[derive(Debug, Clone)]
pub struct ProbeOptions {
    /// Clean photos.
    pub clean: PathBuf,
    /// Training steps of the conditional diffusion net.
    pub steps: u64,
    pub patch: usize,
    pub batch: usize,
    pub seed: u64,
    /// Diffusion preset (`diffusion-t`, ...).
    pub preset: String,
    /// Condition noise levels (σ in 0–255 units).
    pub sigmas: Vec<f32>,
}

/// One point of the probe: condition noise σ and the diffusion net's ε-MSE.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct ProbePoint {
    pub sigma: f32,
    pub mse: f64,
}

/// Random `patch`² crops of `photos` as a (b, 3, p, p) tensor in [0, 1].
fn crops(
    photos: &[Image],
    rng: &mut impl rand::Rng,
    b: usize,
    patch: usize,
) -> Result<candle::Tensor> {
    let mut data = Vec::with_capacity(b * 3 * patch * patch);
    for _ in 0..b {
        let img = &photos[rng.gen_range(0..photos.len())];
        let y0 = rng.gen_range(0..=img.height - patch);
        let x0 = rng.gen_range(0..=img.width - patch);
        for c in 0..3 {
            for y in y0..y0 + patch {
                for x in x0..x0 + patch {
                    data.push(img.data[(y * img.width + x) * 3 + c]);
                }
            }
        }
    }
    Ok(candle::Tensor::from_vec(
        data,
        (b, 3, patch, patch),
        &candle::Device::Cpu,
    )?)
}

/// The paper's Fig. 1(a): a conditional diffusion net trained briefly with clean conditions
/// (both slots = the clean target), then its ε-MSE on fixed draws as the condition is corrupted
/// by AWGN of each σ. The paper's curve rises monotonically: the loss "sees" the condition's
/// noise, which is what lets it guide a restorer.
pub fn probe_conditions(opts: &ProbeOptions, progress: bool) -> Result<Vec<ProbePoint>> {
    use candle::{DType, Device, Tensor};
    use candle_nn::{VarBuilder, VarMap};
    let photos: Vec<Image> = list_images(&opts.clean)?
        .iter()
        .map(|p| load_rgb(p).map(|i| Image::from_rgb8(&i)))
        .collect::<Result<Vec<_>>>()?
        .into_iter()
        .filter(|i| i.width >= opts.patch && i.height >= opts.patch)
        .collect();
    if photos.is_empty() {
        return Err(Error::data(format!(
            "{}: no photo of at least {}×{}",
            opts.clean.display(),
            opts.patch,
            opts.patch
        )));
    }
    let mut cfg = crate::model::DiffusionConfig::preset(&opts.preset).ok_or_else(|| {
        Error::invalid_input(format!("unknown diffusion preset `{}`", opts.preset))
    })?;
    cfg.dropout = 0.0;
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    let net = crate::model::DiffusionUNet::new(vb, &cfg)?;
    crate::model::init_weights(&varmap, "", opts.seed, 1)?;
    let mut params: Vec<(String, candle::Var)> = varmap
        .data()
        .lock()
        .expect("the var map lock is not poisoned")
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    params.sort_by(|a, b| a.0.cmp(&b.0));
    let mut opt = train::Adam::new(
        params,
        crate::config::OptimizerSpec {
            lr: 2e-4,
            ..Default::default()
        },
    )?;
    let schedule = crate::method::schedule::Schedule::linear(1000, 1e-6, 1e-2);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(opts.seed);
    let draw = |rng: &mut rand_chacha::ChaCha8Rng,
                b: usize,
                shape: &[usize]|
     -> Result<(Tensor, Tensor)> {
        let gammas: Vec<f32> = (0..b)
            .map(|_| schedule.sample_gamma(rng, [1, 999]) as f32)
            .collect();
        let n: usize = shape.iter().product();
        let eps: Vec<f32> = (0..n)
            .map(|_| rand_distr::Distribution::sample(&rand_distr::StandardNormal, rng))
            .collect();
        Ok((
            Tensor::from_vec(gammas, b, &Device::Cpu)?,
            Tensor::from_vec(eps, shape, &Device::Cpu)?,
        ))
    };
    let noisy_target =
        |y0: &Tensor, g: &Tensor, eps: &Tensor| -> Result<Tensor> {
            let g4 = g.reshape((g.dim(0)?, 1, 1, 1))?;
            Ok((y0.broadcast_mul(&g4.sqrt()?)?
                + eps.broadcast_mul(&g4.affine(-1.0, 1.0)?.sqrt()?)?)?)
        };
    let bar = if progress {
        indicatif::ProgressBar::new(opts.steps)
    } else {
        indicatif::ProgressBar::hidden()
    };
    let shape = [opts.batch, 3, opts.patch, opts.patch];
    for _ in 0..opts.steps {
        let y0 = crops(&photos, &mut rng, opts.batch, opts.patch)?;
        let (g, eps) = draw(&mut rng, opts.batch, &shape)?;
        let y_t = noisy_target(&y0, &g, &eps)?;
        let pred = net.forward(&Tensor::cat(&[&y_t, &y0, &y0], 1)?, &g, None)?;
        let loss = crate::method::loss::mse(&pred, &eps)?;
        opt.step(&loss.backward()?)?;
        bar.inc(1);
    }
    bar.finish_and_clear();
    // Fixed evaluation draws, shared by every σ: crops, ᾱ, ε and the unit condition noise.
    let mut eval_rng = rand_chacha::ChaCha8Rng::seed_from_u64(opts.seed ^ 0xe7a1);
    let batches = (0..4)
        .map(|_| {
            let y0 = crops(&photos, &mut eval_rng, opts.batch, opts.patch)?;
            let (g, eps) = draw(&mut eval_rng, opts.batch, &shape)?;
            let (_, unit) = draw(&mut eval_rng, opts.batch, &shape)?;
            Ok((y0, g, eps, unit))
        })
        .collect::<Result<Vec<_>>>()?;
    opts.sigmas
        .iter()
        .map(|&sigma| {
            let mut sum = 0.0;
            for (y0, g, eps, unit) in &batches {
                let cond = (y0 + (unit * (sigma as f64 / 255.0))?)?;
                let y_t = noisy_target(y0, g, eps)?;
                let pred = net.forward(&Tensor::cat(&[&y_t, &cond, &cond], 1)?, g, None)?;
                sum += crate::method::loss::mse(&pred, eps)?.to_scalar::<f32>()? as f64;
            }
            Ok(ProbePoint {
                sigma,
                mse: sum / batches.len() as f64,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setting(extra: &str) -> Result<Degradation> {
        let c: CameraSetting = toml::from_str(&format!("clean = \"photos\"\n{extra}"))
            .map_err(|e| Error::invalid("camera", e.to_string()))?;
        c.recipe()
    }

    #[test]
    fn camera_setting_takes_the_camera_pipeline_or_any_recipe() {
        let camera =
            setting("noise = { shot = [0.008, 0.008], read = [0.008, 0.008], jpeg = [90, 90] }")
                .expect("camera noise");
        assert!(matches!(camera, Degradation::Camera(_)));
        let isp =
            setting("degradation = { kind = \"isp\", noise_blur = [1.2, 2.0], jpeg = [70, 85] }")
                .expect("isp recipe");
        match isp {
            Degradation::Isp(i) => {
                assert_eq!(i.noise_blur, [1.2, 2.0]);
                assert_eq!(i.jpeg, [70, 85]);
            }
            other => panic!("expected isp, got {other:?}"),
        }
    }

    #[test]
    fn camera_setting_needs_exactly_one_valid_degradation() {
        let both = setting(
            "noise = { shot = [0.008, 0.008], read = [0.008, 0.008], jpeg = [90, 90] }\n\
             degradation = { kind = \"awgn\", sigma = [0, 50] }",
        )
        .expect_err("two degradations");
        assert!(both.to_string().contains("exactly one"), "{both}");
        let none = setting("").expect_err("no degradation");
        assert!(none.to_string().contains("exactly one"), "{none}");
        let bad = setting("degradation = { kind = \"isp\", jpeg = [85, 70] }")
            .expect_err("reversed range");
        assert!(
            bad.to_string().contains("camera.degradation.jpeg"),
            "the error names the key: {bad}"
        );
    }
}
