//! The Denoising-as-Adaptation joint step and its variants, end to end on real files.

mod common;

use std::path::Path;

use candle::{DType, Device, Tensor};
use noiseda::config::{Conditions, Method};
use noiseda::data::loader::{make_batch, step_rng};
use noiseda::data::TrainData;
use noiseda::method::{swap_slots, Objective};
use noiseda::train::{self, checkpoint, Model, TrainOptions};

fn opts(out: &Path, resume: bool) -> TrainOptions {
    TrainOptions {
        out: out.to_path_buf(),
        resume,
        progress: false,
        control: None,
        job_id: None,
    }
}

fn folders(root: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let clean = common::write_photos(&root.join("clean"), 3, 48, 48);
    let real = root.join("real");
    std::fs::create_dir_all(&real).unwrap();
    for k in 0..2 {
        // "real" images: other scenes with a colour cast and noise baked in.
        let mut img = common::photo(k + 5, 40, 44);
        for (i, p) in img.pixels_mut().enumerate() {
            let n = (i * 7919 % 23) as i16 - 11;
            p.0[0] = (p.0[0] as i16 + 12 + n).clamp(0, 255) as u8;
        }
        img.save(real.join(format!("r{k}.png"))).unwrap();
    }
    (clean, real)
}

#[test]
fn restorer_receives_gradient_from_the_diffusion_loss() {
    let tmp = tempfile::tempdir().unwrap();
    let (clean, real) = folders(tmp.path());
    let spec = common::tiny_joint_spec(&clean, &real, 5, 0);
    let data = TrainData::load(&spec.data, spec.range()).unwrap();
    let batch = make_batch(&data, spec.seed, 3, spec.data.batch).unwrap();
    let model = Model::new(
        &spec.restorer.resolve().unwrap(),
        Some(&spec.diffusion.resolve().unwrap()),
        spec.seed,
        &Device::Cpu,
    )
    .unwrap();
    let objective = Objective::from_spec(spec.method, &spec.loss, &spec.diffusion).unwrap();
    let out = objective
        .step(model.nets(), &batch, &mut step_rng(1, 3))
        .unwrap();
    let scalar = |name: &str| {
        out.scalars
            .iter()
            .find(|(n, _)| *n == name)
            .unwrap_or_else(|| panic!("{name}"))
            .1
            .clone()
    };
    // Back-propagate the diffusion term alone: it must reach the restorer's weights.
    let grads = scalar("l_noise").backward().unwrap();
    let mut restorer_norm = 0f64;
    let mut diffusion_norm = 0f64;
    for (name, var) in model.trainable() {
        if let Some(g) = grads.get(var.as_tensor()) {
            let n = g
                .sqr()
                .unwrap()
                .sum_all()
                .unwrap()
                .to_dtype(DType::F64)
                .unwrap()
                .to_scalar::<f64>()
                .unwrap();
            if name.starts_with("restorer.") {
                restorer_norm += n;
            } else {
                diffusion_norm += n;
            }
        }
    }
    assert!(
        restorer_norm > 0.0,
        "no diffusion gradient reached the restorer"
    );
    assert!(diffusion_norm > 0.0);
    // The loss is Charbonnier + λ·L_noise with λ = 0.2·tanh(2.5·min(3/2, 1)).
    let v = |name: &str| {
        scalar(name)
            .to_dtype(DType::F64)
            .unwrap()
            .to_scalar::<f64>()
            .unwrap()
    };
    let lambda = 0.2 * (2.5f64).tanh();
    assert!((v("lambda") - lambda).abs() < 1e-6);
    assert!((v("loss") - (v("charbonnier") + lambda * v("l_noise"))).abs() < 1e-5);
    // L_noise = (d_pos + relu(d_pos − d_neg + 0.1)) / 2
    let hinge = (v("d_pos") - v("d_neg") + 0.1).max(0.0);
    assert!((v("hinge") - hinge).abs() < 1e-5);
    assert!((v("l_noise") - (v("d_pos") + hinge) / 2.0).abs() < 1e-5);
}

#[test]
fn channel_shuffle_swaps_per_sample_and_keeps_gradients() {
    let dev = Device::Cpu;
    let a = Tensor::full(1f32, (2, 3, 2, 2), &dev).unwrap();
    let b = Tensor::full(2f32, (2, 3, 2, 2), &dev).unwrap();
    let m = Tensor::new(&[0f32, 1.0], &dev)
        .unwrap()
        .reshape((2, 1, 1, 1))
        .unwrap();
    let (x, y) = swap_slots(&a, &b, &m).unwrap();
    let x = x
        .flatten_from(1)
        .unwrap()
        .max(1)
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    let y = y
        .flatten_from(1)
        .unwrap()
        .max(1)
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    assert_eq!(x, vec![1.0, 2.0]);
    assert_eq!(y, vec![2.0, 1.0]);
}

#[test]
fn noise_da_resumes_exactly_and_exports_only_the_restorer() {
    let tmp = tempfile::tempdir().unwrap();
    let (clean, real) = folders(tmp.path());
    let straight = tmp.path().join("straight");
    train::run(
        &common::tiny_joint_spec(&clean, &real, 4, 2),
        &opts(&straight, false),
    )
    .unwrap();
    let split = tmp.path().join("split");
    train::run(
        &common::tiny_joint_spec(&clean, &real, 2, 2),
        &opts(&split, false),
    )
    .unwrap();
    train::run(
        &common::tiny_joint_spec(&clean, &real, 4, 2),
        &opts(&split, true),
    )
    .unwrap();
    let (a, b) = (
        straight.join("checkpoints/step-00000004"),
        split.join("checkpoints/step-00000004"),
    );
    for f in [
        checkpoint::MODEL_FILE,
        checkpoint::EMA_FILE,
        checkpoint::OPTIM_FILE,
    ] {
        assert!(
            std::fs::read(a.join(f)).unwrap() == std::fs::read(b.join(f)).unwrap(),
            "{f} differs"
        );
    }
    // Checkpoints hold both networks; the artifact only the restorer.
    let ckpt = candle::safetensors::load(a.join(checkpoint::MODEL_FILE), &Device::Cpu).unwrap();
    assert!(ckpt.keys().any(|k| k.starts_with("diffusion.")));
    let art =
        candle::safetensors::load(straight.join("model/model.safetensors"), &Device::Cpu).unwrap();
    assert!(art
        .keys()
        .all(|k| !k.starts_with("diffusion.") && !k.starts_with("restorer.")));
    noiseda::artifact::load(&straight.join("model"), &Device::Cpu).unwrap();
    // The joint losses are logged.
    let log = std::fs::read_to_string(straight.join("metrics.jsonl")).unwrap();
    for series in ["d_pos", "d_neg", "hinge", "l_noise", "lambda"] {
        assert!(
            log.contains(&format!("\"series\":\"{series}\"")),
            "{series}"
        );
    }
}

#[test]
fn variants_and_ablations_train() {
    let tmp = tempfile::tempdir().unwrap();
    let (clean, real) = folders(tmp.path());
    let unpaired = common::write_photos(&tmp.path().join("unpaired"), 2, 40, 40);
    let mut specs = Vec::new();
    let mut s = common::tiny_joint_spec(&clean, &real, 2, 0);
    s.method = Method::NoiseDaUnpaired;
    s.data.unpaired = Some(noiseda::config::FolderSpec {
        dir: unpaired.clone(),
    });
    specs.push(("unpaired", s));
    let mut s = common::tiny_joint_spec(&clean, &real, 2, 0);
    s.loss.shuffle = false;
    s.loss.residual_swap = false;
    s.loss.t_range = [900, 999];
    specs.push(("plain", s));
    for c in [Conditions::Synthetic, Conditions::Real] {
        let mut s = common::tiny_joint_spec(&clean, &real, 2, 0);
        s.loss.conditions = c;
        s.optimizer.diffusion_lr = Some(5e-4);
        specs.push(("conditions", s));
    }
    for (i, (what, spec)) in specs.into_iter().enumerate() {
        spec.validate().unwrap();
        let out = tmp.path().join(format!("run{i}"));
        let summary =
            train::run(&spec, &opts(&out, false)).unwrap_or_else(|e| panic!("{what}: {e}"));
        assert!(summary.final_loss.is_finite(), "{what}");
        let log = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
        assert_eq!(
            log.contains("\"d_neg\""),
            what != "unpaired" && what != "plain",
            "{what}"
        );
    }
    // The unpaired variant without its folder is a named config error.
    let mut s = common::tiny_joint_spec(&clean, &real, 2, 0);
    s.method = Method::NoiseDaUnpaired;
    let err = s.validate().unwrap_err().to_string();
    assert!(err.contains("data.unpaired"), "{err}");
}

#[test]
fn per_sample_hinge_and_lambda_hold() {
    let tmp = tempfile::tempdir().unwrap();
    let (clean, real) = folders(tmp.path());
    let mut spec = common::tiny_joint_spec(&clean, &real, 5, 0);
    spec.loss.hold_steps = 2;
    spec.loss.ramp_steps = 2;
    let data = TrainData::load(&spec.data, spec.range()).unwrap();
    let model = Model::new(
        &spec.restorer.resolve().unwrap(),
        Some(&spec.diffusion.resolve().unwrap()),
        spec.seed,
        &Device::Cpu,
    )
    .unwrap();
    let value = |objective: &Objective, step: u64, name: &str| {
        let batch = make_batch(&data, spec.seed, step, spec.data.batch).unwrap();
        let out = objective
            .step(model.nets(), &batch, &mut step_rng(1, step))
            .unwrap();
        let t = &out.scalars.iter().find(|(n, _)| *n == name).unwrap().1;
        t.to_dtype(DType::F64).unwrap().to_scalar::<f64>().unwrap()
    };
    let batch_hinge = Objective::from_spec(spec.method, &spec.loss, &spec.diffusion).unwrap();
    // λ is 0 until hold_steps, then ramps over ramp_steps: 0.2·tanh(2.5·(3 − 2)/2) at step 3.
    assert_eq!(value(&batch_hinge, 1, "lambda"), 0.0);
    assert!((value(&batch_hinge, 3, "lambda") - 0.2 * 1.25f64.tanh()).abs() < 1e-6);
    // With a margin large enough that every sample violates it, the per-sample hinge
    // (mean of relu) equals the batch hinge (relu of means); in general it is ≥ (Jensen).
    spec.loss.margin = 10.0;
    let batch_big = Objective::from_spec(spec.method, &spec.loss, &spec.diffusion).unwrap();
    spec.loss.hinge = noiseda::config::Hinge::Sample;
    let sample_big = Objective::from_spec(spec.method, &spec.loss, &spec.diffusion).unwrap();
    let (b, s) = (
        value(&batch_big, 3, "hinge"),
        value(&sample_big, 3, "hinge"),
    );
    assert!(
        b > 9.0 && (b - s).abs() < 1e-5,
        "batch {b} vs per-sample {s}"
    );
    spec.loss.margin = 0.0;
    let sample0 = Objective::from_spec(spec.method, &spec.loss, &spec.diffusion).unwrap();
    spec.loss.hinge = noiseda::config::Hinge::Batch;
    let batch0 = Objective::from_spec(spec.method, &spec.loss, &spec.diffusion).unwrap();
    assert!(value(&sample0, 3, "hinge") >= value(&batch0, 3, "hinge") - 1e-7);
}
