//! Training end to end on real files: exact resume, checkpoints, export, bad data.

mod common;

use std::path::Path;

use noiseda::train::{self, checkpoint, TrainOptions};

fn opts(out: &Path, resume: bool) -> TrainOptions {
    TrainOptions {
        out: out.to_path_buf(),
        resume,
        progress: false,
        control: None,
        job_id: None,
    }
}

fn read(p: &Path) -> Vec<u8> {
    std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

#[test]
fn resume_is_exact() {
    let tmp = tempfile::tempdir().unwrap();
    let clean = common::write_photos(&tmp.path().join("clean"), 4, 48, 40);

    // 2N steps straight.
    let straight = tmp.path().join("straight");
    train::run(&common::tiny_spec(&clean, 6, 3), &opts(&straight, false)).unwrap();

    // N steps, then resume for N more (a new process would do the same: all state is on disk).
    let split = tmp.path().join("split");
    train::run(&common::tiny_spec(&clean, 3, 3), &opts(&split, false)).unwrap();
    // A run that died after logging step 4 (but before its next checkpoint), mid-way through
    // writing a line: the complete point stays (the log is append-only), the torn line goes,
    // and the resumed run does not log step 4 twice.
    let mut log = std::fs::OpenOptions::new()
        .append(true)
        .open(split.join("metrics.jsonl"))
        .unwrap();
    std::io::Write::write_all(
        &mut log,
        b"{\"seq\":4,\"step\":4,\"wall\":1.0,\"series\":\"charbonnier\",\"split\":\"train\",\"value\":9.0}\n{\"seq\":5,\"st",
    )
    .unwrap();
    let summary = train::run(&common::tiny_spec(&clean, 6, 3), &opts(&split, true)).unwrap();
    assert_eq!(summary.start_step, 3);

    let a = straight.join("checkpoints/step-00000006");
    let b = split.join("checkpoints/step-00000006");
    for file in [
        checkpoint::MODEL_FILE,
        checkpoint::EMA_FILE,
        checkpoint::OPTIM_FILE,
    ] {
        assert!(
            read(&a.join(file)) == read(&b.join(file)),
            "{file} differs after resume"
        );
    }
    assert_eq!(
        read(&straight.join("model/model.safetensors")),
        read(&split.join("model/model.safetensors"))
    );
    // The straight run kept both checkpoints (keep_last = 0) and logged every step.
    let steps: Vec<u64> = checkpoint::list(&straight.join("checkpoints"))
        .unwrap()
        .into_iter()
        .map(|(s, _)| s)
        .collect();
    assert_eq!(steps, vec![3, 6]);
    let values = |dir: &Path| -> Vec<(u64, f64)> {
        std::fs::read_to_string(dir.join("metrics.jsonl"))
            .unwrap()
            .lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                (v["step"].as_u64().unwrap(), v["value"].as_f64().unwrap())
            })
            .collect()
    };
    assert_eq!(values(&straight).len(), 6);
    let mut expected = values(&straight);
    expected[3].1 = 9.0;
    assert_eq!(values(&split), expected);
    let seqs: Vec<u64> = noiseda::runlog::read_metric_log(&split.join("metrics.jsonl"))
        .unwrap()
        .iter()
        .map(|p| p.seq)
        .collect();
    assert_eq!(seqs, (1..=6).collect::<Vec<u64>>());
}

#[test]
fn resume_without_checkpoint_fails_and_rerun_refuses_to_overwrite() {
    let tmp = tempfile::tempdir().unwrap();
    let clean = common::write_photos(&tmp.path().join("clean"), 2, 40, 40);
    let out = tmp.path().join("run");
    let err = train::run(&common::tiny_spec(&clean, 2, 1), &opts(&out, true))
        .unwrap_err()
        .to_string();
    assert!(err.contains("no checkpoint"), "{err}");
    train::run(&common::tiny_spec(&clean, 2, 1), &opts(&out, false)).unwrap();
    let err = train::run(&common::tiny_spec(&clean, 2, 1), &opts(&out, false))
        .unwrap_err()
        .to_string();
    assert!(err.contains("--resume"), "{err}");

    // Resuming with a spec that would change the run, or past the requested steps, is refused.
    let mut other = common::tiny_spec(&clean, 4, 1);
    other.seed += 1;
    let err = train::run(&other, &opts(&out, true))
        .unwrap_err()
        .to_string();
    assert!(err.contains("`seed`"), "{err}");
    let mut other = common::tiny_spec(&clean, 4, 1);
    other.data.patch = 40;
    let err = train::run(&other, &opts(&out, true))
        .unwrap_err()
        .to_string();
    assert!(err.contains("`data.patch`"), "{err}");
    let err = train::run(&common::tiny_spec(&clean, 1, 1), &opts(&out, true))
        .unwrap_err()
        .to_string();
    assert!(err.contains("past the spec's steps = 1"), "{err}");
    // More steps with the same spec continue, keeping the earlier metrics in the artifact.
    let summary = train::run(&common::tiny_spec(&clean, 3, 1), &opts(&out, true)).unwrap();
    assert_eq!(summary.start_step, 2);
    assert!(summary.metrics.contains_key("train/loss"));
}

#[test]
fn keep_last_prunes_old_checkpoints() {
    let tmp = tempfile::tempdir().unwrap();
    let clean = common::write_photos(&tmp.path().join("clean"), 2, 40, 40);
    let out = tmp.path().join("run");
    let mut spec = common::tiny_spec(&clean, 5, 1);
    spec.checkpoint.keep_last = 2;
    train::run(&spec, &opts(&out, false)).unwrap();
    let steps: Vec<u64> = checkpoint::list(&out.join("checkpoints"))
        .unwrap()
        .into_iter()
        .map(|(s, _)| s)
        .collect();
    assert_eq!(steps, vec![4, 5]);
    let meta = checkpoint::read_meta(&out.join("checkpoints/step-00000005")).unwrap();
    assert_eq!(meta.step, 5);
    assert_eq!(meta.spec, spec);
}

#[test]
fn training_lowers_the_loss() {
    let tmp = tempfile::tempdir().unwrap();
    let clean = common::write_photos(&tmp.path().join("clean"), 4, 64, 64);
    let out = tmp.path().join("run");
    train::run(&common::tiny_spec(&clean, 40, 0), &opts(&out, false)).unwrap();
    let log = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    let losses: Vec<f64> = log
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["value"]
                .as_f64()
                .unwrap()
        })
        .collect();
    let first: f64 = losses[..5].iter().sum::<f64>() / 5.0;
    let last: f64 = losses[losses.len() - 5..].iter().sum::<f64>() / 5.0;
    assert!(last < 0.6 * first, "loss {first} -> {last}");
}

#[test]
fn bad_training_data_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let clean = common::write_photos(&tmp.path().join("clean"), 2, 40, 40);
    std::fs::write(clean.join("zz_corrupt.png"), b"not a png at all").unwrap();
    let err = train::run(
        &common::tiny_spec(&clean, 2, 1),
        &opts(&tmp.path().join("a"), false),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("zz_corrupt.png"), "{err}");

    let small = common::write_photos(&tmp.path().join("small"), 1, 20, 40);
    let err = train::run(
        &common::tiny_spec(&small, 2, 1),
        &opts(&tmp.path().join("b"), false),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("img00.png") && err.contains("32×32"), "{err}");

    let empty = tmp.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let err = train::run(
        &common::tiny_spec(&empty, 2, 1),
        &opts(&tmp.path().join("c"), false),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("no images"), "{err}");
}

#[test]
fn dncnn_trains_exports_and_restores() {
    let tmp = tempfile::tempdir().unwrap();
    let clean = common::write_photos(&tmp.path().join("clean"), 2, 40, 40);
    let mut spec = common::tiny_spec(&clean, 3, 0);
    spec.restorer = noiseda::config::RestorerSpec {
        arch: Some("dncnn".into()),
        layers: Some(4),
        features: Some(8),
        ..Default::default()
    };
    spec.export.weights = noiseda::config::Weights::Ema;
    let out = tmp.path().join("run");
    let summary = train::run(&spec, &opts(&out, false)).unwrap();
    let model =
        noiseda::artifact::load(summary.model_dir().unwrap(), &candle::Device::Cpu).unwrap();
    // 3·8·9 + 2·(8·8·9 + 2·8) + 8·3·9 learned; batch-norm running statistics ride along.
    assert_eq!(model.manifest.parameters, 216 + 2 * (576 + 16) + 216);
    let tensors = candle::safetensors::load(
        summary.model_dir().unwrap().join("model.safetensors"),
        &candle::Device::Cpu,
    )
    .unwrap();
    let running = &tensors["dncnn.3.running_var"];
    assert!(
        running.to_vec1::<f32>().unwrap().iter().any(|&v| v != 1.0),
        "BN statistics never updated"
    );
    let img = noiseda::data::Image::from_rgb8(&common::photo(3, 30, 21));
    let out = noiseda::infer::restore_image(
        &model.net,
        model.manifest.range,
        &img,
        &candle::Device::Cpu,
        None,
    )
    .unwrap();
    assert_eq!((out.width, out.height), (30, 21));
}

/// The recipe switches of the long-budget recipes: zeroed head, cosine lr with warm-up and the
/// per-image camera pipeline, on top of the tiny spec.
fn recipe_spec(clean: &Path, steps: u64) -> noiseda::config::JobSpec {
    use noiseda::config::{Degradation, LrSchedule, RestorerInit};
    let mut spec = common::tiny_spec(clean, steps, 3);
    spec.restorer.init = RestorerInit::Identity;
    spec.data.synthetic.degradation = Some(
        Degradation::from_inline_toml(
            r#"{ kind = "isp", shot = [1e-4, 4e-3], read = [1e-3, 1e-2], noise_blur = [0, 1], jpeg = [80, 95] }"#,
        )
        .unwrap(),
    );
    spec.optimizer.schedule = LrSchedule::Cosine;
    spec.optimizer.warmup_steps = 2;
    spec.optimizer.min_lr = 0.1;
    spec.validate().unwrap();
    spec
}

#[test]
fn identity_init_cosine_and_isp_train_deterministically_and_resume_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    let clean = common::write_photos(&tmp.path().join("clean"), 4, 48, 40);
    // The zeroed head: before any step the restorer is the identity.
    let spec = recipe_spec(&clean, 6);
    let model = train::Model::new(
        &spec.restorer.resolve().unwrap(),
        None,
        7,
        &candle::Device::Cpu,
    )
    .unwrap();
    let x = candle::Tensor::rand(0f32, 1f32, (1, 3, 16, 16), &candle::Device::Cpu).unwrap();
    let before = model.nets().restorer.restore(&x, false).unwrap();
    let off = (&before - &x).unwrap().abs().unwrap().max_all().unwrap();
    assert!(
        off.to_scalar::<f32>().unwrap() > 1e-3,
        "kaiming head is not the identity"
    );
    model.zero_restorer_head().unwrap();
    let after = model.nets().restorer.restore(&x, false).unwrap();
    let off = (&after - &x).unwrap().abs().unwrap().max_all().unwrap();
    assert_eq!(off.to_scalar::<f32>().unwrap(), 0.0);

    // Same spec and seed: byte-identical weights. A run that lost everything after its
    // step-3 checkpoint resumes to the same weights (the schedule is a function of the step).
    let a = tmp.path().join("a");
    let b = tmp.path().join("b");
    train::run(&spec, &opts(&a, false)).unwrap();
    train::run(&spec, &opts(&b, false)).unwrap();
    let weights = |d: &Path| read(&d.join("model/model.safetensors"));
    assert!(
        weights(&a) == weights(&b),
        "same spec and seed, different weights"
    );
    std::fs::remove_dir_all(b.join("checkpoints/step-00000006")).unwrap();
    std::fs::remove_dir_all(b.join("model")).unwrap();
    let summary = train::run(&spec, &opts(&b, true)).unwrap();
    assert_eq!(summary.start_step, 3);
    assert!(
        weights(&a) == weights(&b),
        "resume across the lr schedule is not exact"
    );
    // The switches change the maths: the default spec trains to other weights.
    let plain = tmp.path().join("plain");
    train::run(&common::tiny_spec(&clean, 6, 3), &opts(&plain, false)).unwrap();
    assert!(weights(&a) != weights(&plain));
}

/// TensorBoard's own reader (`EventAccumulator`, pip `tensorboard`) finds in the run's
/// `tensorboard/` every point of `metrics.jsonl` once, with its step and value (as float32),
/// also after a crash that left a point in the log and a resume.
#[test]
fn tensorboard_reads_every_point_once_across_a_crash_and_resume() {
    let python = std::env::var("NOISEDA_PYTHON").unwrap_or_else(|_| "python3".into());
    let probe = std::process::Command::new(&python)
        .args(["-c", "import tensorboard"])
        .output();
    if !probe.as_ref().is_ok_and(|o| o.status.success()) {
        eprintln!(
            "SKIP tensorboard_reads_every_point_once_across_a_crash_and_resume: `{python}` \
             cannot import tensorboard (pip install tensorboard; .ci/run does)"
        );
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let clean = common::write_photos(&tmp.path().join("clean"), 4, 48, 40);
    let val_gt = common::write_photos(&tmp.path().join("val/gt"), 2, 40, 32);
    let val_lq = common::write_photos(&tmp.path().join("val/lq"), 2, 40, 32);
    let spec = |steps| {
        let mut s = common::tiny_spec(&clean, steps, 3);
        s.data.val = Some(noiseda::config::PairedSpec {
            lq: Some(val_lq.clone()),
            gt: Some(val_gt.clone()),
            root: None,
            max_images: 0,
        });
        s.validation.every = 2;
        s.validation.crops = 2;
        s
    };
    let run = tmp.path().join("run");
    train::run(&spec(3), &opts(&run, false)).unwrap();
    // Died after logging step 4 to the metric log, before its event reached TensorBoard's file.
    let mut log = std::fs::OpenOptions::new()
        .append(true)
        .open(run.join("metrics.jsonl"))
        .unwrap();
    std::io::Write::write_all(
        &mut log,
        b"{\"seq\":4,\"step\":4,\"wall\":1.0,\"series\":\"charbonnier\",\"split\":\"train\",\"value\":9.0}\n",
    )
    .unwrap();
    train::run(&spec(6), &opts(&run, true)).unwrap();

    let out = std::process::Command::new(&python)
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/python/tensorboard_scalars.py"
        ))
        .arg(run.join("tensorboard"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    type Tags<T> = std::collections::BTreeMap<String, Vec<T>>;
    #[derive(serde::Deserialize)]
    struct Read {
        scalars: Tags<(u64, f64)>,
        images: Tags<(u64, u32, u32, String)>,
    }
    let read: Read = serde_json::from_slice(&out.stdout).unwrap();
    // Event files hold f32: compare at that precision (JSON's decimal text is not exact).
    let tb: Tags<(u64, f32)> = read
        .scalars
        .into_iter()
        .map(|(t, v)| (t, v.into_iter().map(|(s, x)| (s, x as f32)).collect()))
        .collect();
    let points = noiseda::runlog::read_metric_log(&run.join("metrics.jsonl")).unwrap();
    let mut want: Tags<(u64, f32)> = Default::default();
    for p in &points {
        want.entry(noiseda::runlog::tensorboard_tag(p.split, &p.series))
            .or_default()
            .push((p.step, p.value as f32));
    }
    assert_eq!(tb, want);
    assert_eq!(want["train/charbonnier"].len(), 6, "{want:?}");
    assert!(want["train/charbonnier"].contains(&(4, 9.0)));
    assert_eq!(
        want["val/psnr"].len(),
        4,
        "validations at 2, 3, 4, 6: {want:?}"
    );

    // Every validation's crops, once each, with the bytes of the saved PNGs.
    let mut want_images: Tags<(u64, u32, u32, String)> = Default::default();
    for (step, index, path) in noiseda::runlog::list_crops(&run).unwrap() {
        let bytes = std::fs::read(&path).unwrap();
        let (w, h) = image::load_from_memory(&bytes)
            .unwrap()
            .to_rgb8()
            .dimensions();
        let sha = format!("{:x}", <sha2::Sha256 as sha2::Digest>::digest(&bytes));
        want_images
            .entry(noiseda::runlog::crop_tag(index))
            .or_default()
            .push((step, w, h, sha));
    }
    assert_eq!(read.images, want_images);
    let steps: Vec<u64> = want_images["val/crop/1"].iter().map(|i| i.0).collect();
    assert_eq!(steps, [2, 3, 4, 6]);
    assert_eq!(want_images.len(), 2, "crops = 2");
}

#[test]
fn tensorboard_off_writes_no_event_files_and_keeps_the_crops() {
    let tmp = tempfile::tempdir().unwrap();
    let clean = common::write_photos(&tmp.path().join("clean"), 3, 48, 40);
    let val = common::write_photos(&tmp.path().join("val"), 1, 40, 32);
    let mut spec = common::tiny_spec(&clean, 2, 0);
    spec.data.val = Some(noiseda::config::PairedSpec {
        lq: Some(val.clone()),
        gt: Some(val),
        root: None,
        max_images: 0,
    });
    spec.tracking.tensorboard = false;
    let run = tmp.path().join("run");
    train::run(&spec, &opts(&run, false)).unwrap();
    assert!(!run.join("tensorboard").exists());
    let crops = noiseda::runlog::list_crops(&run).unwrap();
    assert_eq!(crops.len(), 1, "one pair, one validation: {crops:?}");
    let img = image::open(&crops[0].2).unwrap();
    // noisy | restored | ground truth, each the 32×32 centre at 2× under a 28 px label.
    assert_eq!((img.width(), img.height()), (3 * 64 + 2 * 6, 64 + 28));

    spec.validation.crops = noiseda::config::MAX_VAL_CROPS + 1;
    let e = spec.validate().unwrap_err().to_string();
    assert!(e.contains("validation.crops"), "{e}");
}
