//! `noiseda demo`: on the CC0 photos built into the binary (no downloads), trains `vanilla` and
//! `noise-da` restorers with the same budget and compares them on a real-like domain.
//!
//! Split of the six photos: three are the synthetic domain (clean, degraded on the fly by the
//! job spec's recipe); one, degraded by the camera-noise pipeline (`data::camera`) at a high-ISO
//! level, is the unlabeled real domain; two held-out photos, degraded the same way, are the
//! labelled validation pairs, their ground truth the same pipeline's rendering without noise.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::artifact::LoadedModel;
use crate::config::{JobSpec, Method};
use crate::data::camera::CameraNoise;
use crate::data::loader::step_rng;
use crate::data::{decode_rgb_named, save_rgb, Image};
use crate::eval::{EvalData, EvalOptions};
use crate::quality::Channel;
use crate::train::{self, TrainOptions};
use crate::{artifact, Error, Result};

/// The bundled CC0 scikit-image photos (data/demo), compiled into the binary.
pub const PHOTOS: [(&str, &[u8]); 6] = [
    (
        "skimage_astronaut.png",
        include_bytes!("../data/demo/skimage_astronaut_9cea59d54e.png"),
    ),
    (
        "skimage_chelsea.png",
        include_bytes!("../data/demo/skimage_chelsea_5fc145ab54.png"),
    ),
    (
        "skimage_coffee.png",
        include_bytes!("../data/demo/skimage_coffee_4124caf9c7.png"),
    ),
    (
        "skimage_motorcycle_left.png",
        include_bytes!("../data/demo/skimage_motorcycle_left_0d16b18285.png"),
    ),
    (
        "skimage_motorcycle_right.png",
        include_bytes!("../data/demo/skimage_motorcycle_right_c072d4564a.png"),
    ),
    (
        "skimage_rocket.png",
        include_bytes!("../data/demo/skimage_rocket_81d3b8a166.png"),
    ),
];

const SYNTHETIC: [usize; 3] = [0, 2, 5];
const REAL: [usize; 1] = [1];
const VAL: [usize; 2] = [3, 4];

/// The "real" camera of the demo: a high-ISO setting of the camera pipeline (the default
/// recipe's shot and read noise ×4 and ×2; inputs about 27 dB against the noiseless rendering).
pub const REAL_NOISE: CameraNoise = CameraNoise {
    shot: [2e-3, 8e-3],
    read: [5e-3, 2e-2],
    jpeg: [75, 95],
};

/// The demo's job spec (vanilla); paths are filled in by `prepare`.
pub const SPEC: &str = include_str!("../examples/demo.toml");

/// Folders the demo writes under its output directory.
pub struct DemoData {
    pub synthetic: PathBuf,
    pub real: PathBuf,
    pub val_lq: PathBuf,
    pub val_gt: PathBuf,
}

/// Unpacks the photos into the demo's folders (camera-degraded with fixed seeds).
pub fn prepare(out: &Path) -> Result<DemoData> {
    let root = out.join("data");
    let d = DemoData {
        synthetic: root.join("synthetic"),
        real: root.join("real"),
        val_lq: root.join("val").join("lq"),
        val_gt: root.join("val").join("gt"),
    };
    let camera = REAL_NOISE;
    let noiseless = CameraNoise {
        shot: [0.0, 0.0],
        read: [0.0, 0.0],
        jpeg: [100, 100],
    };
    for (i, (name, bytes)) in PHOTOS.iter().enumerate() {
        let img = decode_rgb_named(bytes, name)?;
        let degraded = || {
            let clean = Image::from_rgb8(&img);
            camera
                .apply(&mut step_rng(0xca4e, i as u64), &clean)
                .to_rgb8()
        };
        if SYNTHETIC.contains(&i) {
            save_rgb(&d.synthetic.join(name), &img)?;
        } else if REAL.contains(&i) {
            save_rgb(&d.real.join(name), &degraded())?;
        } else if VAL.contains(&i) {
            // The ground truth is what the same camera renders without noise (demosaiced, no
            // JPEG), as in real paired sets (PolyU's is the mean of many shots of one camera):
            // the restorers are scored on the noise they remove, not on undoing the demosaic.
            let clean = Image::from_rgb8(&img);
            let truth = noiseless.apply(&mut step_rng(0xca4e, i as u64), &clean);
            save_rgb(&d.val_gt.join(name), &truth.to_rgb8())?;
            save_rgb(&d.val_lq.join(name), &degraded())?;
        }
    }
    Ok(d)
}

/// The demo's spec for `method`, pointing at the unpacked folders.
pub fn spec(data: &DemoData, method: Method, steps: Option<u64>) -> Result<JobSpec> {
    let mut spec = JobSpec::from_toml(SPEC)
        .map_err(|e| Error::invalid("examples/demo.toml", e.to_string()))?;
    spec.method = method;
    spec.name = format!(
        "demo-{}",
        serde_json::to_value(method)
            .unwrap_or_default()
            .as_str()
            .unwrap_or("run")
    );
    spec.data.synthetic.clean = Some(data.synthetic.clone());
    if let Some(r) = &mut spec.data.real {
        r.dir = data.real.clone();
    }
    if let Some(v) = &mut spec.data.val {
        v.lq = Some(data.val_lq.clone());
        v.gt = Some(data.val_gt.clone());
    }
    if let Some(s) = steps {
        spec.steps = s;
        // A shorter run keeps the warm-up's share of it (18 of 180 steps).
        spec.optimizer.warmup_steps = spec.optimizer.warmup_steps.min(s / 10);
    }
    spec.loss.ramp_steps = (spec.steps / 2).max(1);
    spec.validate()?;
    Ok(spec)
}

/// One row of the demo's table.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub name: String,
    pub psnr: f64,
    pub ssim: f64,
    pub seconds_per_step: Option<f64>,
    pub artifact: Option<PathBuf>,
}

/// Trains both methods (continuing from their checkpoints if present) and evaluates them.
pub fn run(out: &Path, steps: Option<u64>, progress: bool) -> Result<Vec<Row>> {
    let data = prepare(out)?;
    let mut rows = Vec::new();
    let mut input = None;
    let mut runs = Vec::new();
    let mut models = Vec::new();
    for method in [Method::Vanilla, Method::NoiseDa] {
        let spec = spec(&data, method, steps)?;
        let run_dir = out.join(&spec.name);
        let resume = train::checkpoint::latest(&run_dir.join("checkpoints"))?.is_some();
        eprintln!(
            "training {} for {} steps -> {}",
            spec.name,
            spec.steps,
            run_dir.display()
        );
        let summary = train::run(
            &spec,
            &TrainOptions {
                out: run_dir.clone(),
                resume,
                progress,
                control: None,
                job_id: None,
            },
        )?;
        runs.push(crate::runlog::curves::Run::load(&spec.name, &run_dir)?);
        let model = artifact::load(summary.model_dir()?, &candle::Device::Cpu)?;
        let report = crate::eval::run(
            &model,
            &EvalData::Paired {
                lq: data.val_lq.clone(),
                gt: data.val_gt.clone(),
            },
            &EvalOptions {
                channel: Channel::Rgb,
                tiling: None,
                self_ensemble: false,
                seed: 0,
                max_images: 0,
                progress,
            },
        )?;
        input.get_or_insert(Row {
            name: "noisy input".into(),
            psnr: report.input_psnr,
            ssim: report.input_ssim,
            seconds_per_step: None,
            artifact: None,
        });
        rows.push(Row {
            name: spec.name.clone(),
            psnr: report.psnr,
            ssim: report.ssim,
            seconds_per_step: (summary.start_step < summary.steps)
                .then_some(summary.seconds_per_step),
            artifact: summary.artifact.clone(),
        });
        models.push((spec.name.clone(), model));
    }
    let input = input.expect("two methods ran");
    crate::runlog::curves::training_curves(
        &runs,
        Some(("noisy input", input.psnr)),
        &out.join("curves.png"),
    )?;
    crop_strip(&data, &models, &out.join("crops.png"))?;
    rows.insert(0, input);
    Ok(rows)
}

/// The first validation photo's centre, 128×128 at 2×: noisy | each restorer | ground truth.
fn crop_strip(data: &DemoData, models: &[(String, LoadedModel)], out: &Path) -> Result<()> {
    let first = crate::data::list_images(&data.val_lq)?
        .into_iter()
        .next()
        .ok_or_else(|| Error::data(format!("{} is empty", data.val_lq.display())))?;
    let name = first.file_name().unwrap_or_default();
    let lq = crate::data::load_rgb(&first)?;
    let gt = crate::data::load_rgb(&data.val_gt.join(name))?;
    let mut restored = Vec::new();
    for (label, m) in models {
        let img = crate::infer::restore_image(
            &m.net,
            m.manifest.range,
            &Image::from_rgb8(&lq),
            &m.device,
            None,
        )?;
        restored.push((label.clone(), img.to_rgb8()));
    }
    let side = 128.min(lq.width()).min(lq.height());
    let at = ((lq.width() - side) / 2, (lq.height() - side) / 2);
    let mut tiles = vec![("noisy input".to_string(), &lq)];
    tiles.extend(restored.iter().map(|(l, i)| (l.clone(), i)));
    tiles.push(("ground truth".to_string(), &gt));
    crate::runlog::curves::crop_strip(&tiles, at, side, 2, out)?;
    Ok(())
}
