//! The deraining and deblurring tasks end to end: dataset layouts (Rain13K/SPA, GoPro,
//! RealBlur), synthetic rain and blur on real files, the [-1, 1] data range through training,
//! export, evaluation and inference.

mod common;

use std::path::Path;

use candle::Device;
use noiseda::config::{DataRange, JobSpec, Task};
use noiseda::data::dataset::discover_pairs;
use noiseda::data::loader::make_batch;
use noiseda::data::{Image, PairedFolder, TrainData};
use noiseda::eval::{EvalData, EvalOptions};
use noiseda::quality::Channel;
use noiseda::train::{self, TrainOptions};

/// Writes photo `k` to `dir/name` and a degraded copy (a brightened band) to `lq/name`.
fn write_pair(lq: &Path, gt: &Path, k: u32, lq_name: &str, gt_name: &str) {
    std::fs::create_dir_all(lq).unwrap();
    std::fs::create_dir_all(gt).unwrap();
    let clean = common::photo(k, 40, 40);
    let mut bad = clean.clone();
    for (x, _, p) in bad.enumerate_pixels_mut() {
        if x % 7 == 0 {
            p.0 = p.0.map(|v| v.saturating_add(60));
        }
    }
    clean.save(gt.join(gt_name)).unwrap();
    bad.save(lq.join(lq_name)).unwrap();
}

#[test]
fn dataset_layouts_are_discovered() {
    let t = tempfile::tempdir().unwrap();
    // GoPro: one folder per sequence with blur/ and sharp/, same file names across sequences.
    let gopro = t.path().join("GoPro/train");
    for seq in ["GOPR0372_07_00", "GOPR0374_11_00"] {
        for k in 0..2 {
            let name = format!("{:06}.png", 47 + k);
            write_pair(
                &gopro.join(seq).join("blur"),
                &gopro.join(seq).join("sharp"),
                k,
                &name,
                &name,
            );
        }
    }
    let dirs = discover_pairs(&gopro).unwrap();
    assert_eq!(dirs.len(), 2, "{dirs:?}");
    let folder = PairedFolder::load_root(&gopro, 32, 0).unwrap();
    assert_eq!(folder.pairs.len(), 4);
    let names: Vec<_> = folder.pairs.iter().map(|p| p.name.as_str()).collect();
    assert!(names.contains(&"GOPR0372_07_00/000047.png"), "{names:?}");

    // RealBlur: scene/blur/blur_1.png with scene/gt/gt_1.png.
    let realblur = t.path().join("RealBlur-J");
    write_pair(
        &realblur.join("scene001/blur"),
        &realblur.join("scene001/gt"),
        3,
        "blur_1.png",
        "gt_1.png",
    );
    let folder = PairedFolder::load_root(&realblur, 32, 0).unwrap();
    assert_eq!(folder.pairs.len(), 1);

    // Rain13K / SPA: flat input/ and target/.
    let rain = t.path().join("Rain13K");
    write_pair(
        &rain.join("input"),
        &rain.join("target"),
        4,
        "1.jpg",
        "1.jpg",
    );
    write_pair(
        &rain.join("input"),
        &rain.join("target"),
        5,
        "2.png",
        "2.png",
    );
    assert_eq!(
        PairedFolder::load_root(&rain, 32, 0).unwrap().pairs.len(),
        2
    );

    // Nothing recognisable: the error names the folder names it looks for.
    let err = discover_pairs(&t.path().join("RealBlur-J/scene001/gt"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("no paired folders") && err.contains("sharp"),
        "{err}"
    );
    // Two degraded folders next to one target folder: ambiguous, named.
    let amb = t.path().join("amb");
    write_pair(&amb.join("input"), &amb.join("target"), 1, "a.png", "a.png");
    write_pair(&amb.join("blur"), &amb.join("target"), 1, "a.png", "a.png");
    let err = discover_pairs(&amb).unwrap_err().to_string();
    assert!(err.contains("ambiguous"), "{err}");
}

/// The tiny vanilla job as a deraining job: rain on the clean photos, a dataset root as the
/// validation set.
fn derain_spec(clean: &Path, val: &Path, steps: u64) -> JobSpec {
    let mut spec = common::tiny_spec(clean, steps, 0);
    spec.name = "tiny-derain".into();
    spec.task = Task::Derain;
    spec.data.synthetic.degradation = Some(
        toml::from_str::<toml::Value>("kind = \"rain\"\ndensity = [0.01, 0.02]")
            .unwrap()
            .try_into()
            .unwrap(),
    );
    spec.data.val = Some(noiseda::config::PairedSpec {
        lq: None,
        gt: None,
        root: Some(val.to_path_buf()),
        max_images: 0,
    });
    spec.validate().unwrap();
    spec
}

#[test]
fn derain_job_trains_in_the_signed_range_and_round_trips_through_export() {
    let t = tempfile::tempdir().unwrap();
    let clean = common::write_photos(&t.path().join("clean"), 3, 48, 48);
    let val = t.path().join("SPA-test");
    write_pair(&val.join("input"), &val.join("target"), 7, "a.png", "a.png");
    let spec = derain_spec(&clean, &val, 3);
    assert_eq!(spec.task, Task::Derain);
    assert_eq!(spec.range(), DataRange::Signed);

    // Batches are in [-1, 1]: dark pixels map below zero, rain stays at or below 1.
    let data = TrainData::load(&spec.data, spec.range()).unwrap();
    let batch = make_batch(&data, spec.seed, 1, 2).unwrap();
    let (lo, hi) = (
        batch.gt.min_all().unwrap().to_scalar::<f32>().unwrap(),
        batch.gt.max_all().unwrap().to_scalar::<f32>().unwrap(),
    );
    assert!(lo < 0.0 && hi <= 1.0 && lo >= -1.0, "gt range [{lo}, {hi}]");
    // Rain only brightens.
    let diff = (&batch.lq - &batch.gt).unwrap().min_all().unwrap();
    assert!(diff.to_scalar::<f32>().unwrap() >= -1e-5);

    let out = t.path().join("run");
    let summary = train::run(
        &spec,
        &TrainOptions {
            out: out.clone(),
            resume: false,
            progress: false,
            control: None,
            job_id: None,
        },
    )
    .unwrap();
    let model = noiseda::artifact::load(summary.model_dir().unwrap(), &Device::Cpu).unwrap();
    assert_eq!(model.manifest.range, DataRange::Signed);
    let text = std::fs::read_to_string(summary.model_dir().unwrap().join("manifest.json")).unwrap();
    assert!(text.contains("\"range\": \"signed\""), "{text}");

    // Inference maps [0, 1] → [-1, 1] → net → [0, 1]; the validation PSNR the trainer logged
    // is the one eval computes on the same root.
    let report = noiseda::eval::run(
        &model,
        &EvalData::Root { root: val.clone() },
        &EvalOptions {
            channel: Channel::Rgb,
            tiling: None,
            self_ensemble: false,
            seed: 0,
            max_images: 0,
            progress: false,
        },
    )
    .unwrap();
    assert_eq!(report.images, 1);
    let logged = model.manifest.metrics["val/psnr"];
    assert!(
        (report.psnr - logged).abs() < 1e-3,
        "eval {} vs logged {logged}",
        report.psnr
    );
    let img = Image::from_rgb8(&common::photo(2, 40, 40));
    let signed =
        noiseda::infer::restore_image(&model.net, DataRange::Signed, &img, &Device::Cpu, None)
            .unwrap();
    let manual = {
        let xs = img.to_tensor(&Device::Cpu).unwrap();
        let xs = xs.affine(2.0, -1.0).unwrap().unsqueeze(0).unwrap();
        let ys = model.net.restore(&xs, false).unwrap().squeeze(0).unwrap();
        Image::from_tensor(&ys.affine(0.5, 0.5).unwrap().clamp(0f32, 1f32).unwrap()).unwrap()
    };
    let max_diff = signed
        .data
        .iter()
        .zip(&manual.data)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(max_diff < 1e-6, "{max_diff}");
}

#[test]
fn blur_recipe_and_task_specs_parse_and_bad_values_are_named() {
    let t = tempfile::tempdir().unwrap();
    let clean = common::write_photos(&t.path().join("clean"), 2, 96, 96);
    let mut spec = common::tiny_spec(&clean, 1, 0);
    spec.task = Task::Deblur;
    spec.data.synthetic.degradation = Some(
        toml::from_str::<toml::Value>("kind = \"blur\"\nlength = [9, 15]")
            .unwrap()
            .try_into()
            .unwrap(),
    );
    spec.validate().unwrap();
    // The loader crops context for the kernel and trims it: patches are the configured size
    // and the blurred input is smoother than its target.
    let data = TrainData::load(&spec.data, spec.range()).unwrap();
    let batch = make_batch(&data, 1, 1, 2).unwrap();
    assert_eq!(batch.lq.dims(), &[2, 3, 32, 32]);
    let tv = |x: &candle::Tensor| {
        let dx = (x.narrow(3, 1, 31).unwrap() - x.narrow(3, 0, 31).unwrap()).unwrap();
        dx.abs()
            .unwrap()
            .mean_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
    };
    assert!(
        tv(&batch.lq) < tv(&batch.gt),
        "{} vs {}",
        tv(&batch.lq),
        tv(&batch.gt)
    );

    spec.data.synthetic.degradation = Some(
        toml::from_str::<toml::Value>("kind = \"blur\"\nradius = [4, 2]")
            .unwrap()
            .try_into()
            .unwrap(),
    );
    let err = spec.validate().unwrap_err().to_string();
    assert!(err.contains("data.synthetic.degradation.radius"), "{err}");
    spec.data.synthetic.degradation = Some(
        toml::from_str::<toml::Value>("kind = \"rain\"\nangle = [-100, 0]")
            .unwrap()
            .try_into()
            .unwrap(),
    );
    let err = spec.validate().unwrap_err().to_string();
    assert!(err.contains("data.synthetic.degradation.angle"), "{err}");

    // Every example spec for the three tasks parses and validates (paths need not exist).
    for name in [
        "unet-t-awgn.toml",
        "derain.toml",
        "deblur.toml",
        "noise-da-polyu.toml",
    ] {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("examples")
            .join(name);
        let text = std::fs::read_to_string(&path).unwrap();
        let spec = JobSpec::from_toml(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
        spec.validate().unwrap_or_else(|e| panic!("{name}: {e}"));
    }
}
