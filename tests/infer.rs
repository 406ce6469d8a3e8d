//! Inference on real files: artifacts verified on load, tiled vs whole-image agreement,
//! the CLI's restore/eval/arch commands and their errors.

mod common;

use std::path::{Path, PathBuf};

use candle::Device;
use noiseda::artifact;
use noiseda::data::Image;
use noiseda::infer::{restore_image, restore_image_x8, Tiling};
use noiseda::quality::{psnr, Channel};
use noiseda::train::{self, TrainOptions};

/// Trains the tiny U-Net for a few steps and returns its artifact directory.
fn trained_model(root: &Path) -> PathBuf {
    let clean = common::write_photos(&root.join("clean"), 4, 64, 64);
    let out = root.join("run");
    let summary = train::run(
        &common::tiny_spec(&clean, 30, 0),
        &TrainOptions {
            out,
            resume: false,
            progress: false,
            control: None,
            job_id: None,
        },
    )
    .unwrap();
    summary.artifact.unwrap()
}

use common::noiseda;

#[test]
fn artifact_round_trip_and_tamper_detection() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = trained_model(tmp.path());
    let model = artifact::load(&dir, &Device::Cpu).unwrap();
    assert_eq!(model.manifest.parameters, 32_875); // width 8, depth 3
    assert_eq!(model.manifest.step, 30);

    // Changed weights: the hash no longer matches.
    let copy = tmp.path().join("tampered");
    std::fs::create_dir(&copy).unwrap();
    for f in [artifact::WEIGHTS_FILE, artifact::MANIFEST_FILE] {
        std::fs::copy(dir.join(f), copy.join(f)).unwrap();
    }
    let mut bytes = std::fs::read(copy.join(artifact::WEIGHTS_FILE)).unwrap();
    let n = bytes.len();
    bytes[n - 3] ^= 0x55;
    std::fs::write(copy.join(artifact::WEIGHTS_FILE), bytes).unwrap();
    let err = artifact::load(&copy, &Device::Cpu)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("sha256"), "{err}");

    // A manifest claiming another architecture: the weights do not fit it.
    std::fs::copy(
        dir.join(artifact::WEIGHTS_FILE),
        copy.join(artifact::WEIGHTS_FILE),
    )
    .unwrap();
    let text = std::fs::read_to_string(copy.join(artifact::MANIFEST_FILE)).unwrap();
    let mut m: serde_json::Value = serde_json::from_str(&text).unwrap();
    m["arch"]["width"] = serde_json::json!(16);
    std::fs::write(copy.join(artifact::MANIFEST_FILE), m.to_string()).unwrap();
    let err = artifact::load(&copy, &Device::Cpu)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("shape") && err.contains("width: 16"), "{err}");

    // Not an artifact at all.
    let err = artifact::load(tmp.path(), &Device::Cpu)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("manifest.json"), "{err}");
}

/// `img` under symmetry `k` of the square (bit 4: transpose, 2: flip rows, 1: flip columns,
/// applied in that order), and for each output pixel the source pixel it came from.
fn symmetry(img: &Image, k: u8) -> (Image, Vec<usize>) {
    let (h, w) = (img.height, img.width);
    let (oh, ow) = if k & 4 != 0 { (w, h) } else { (h, w) };
    let mut data = Vec::with_capacity(img.data.len());
    let mut source = Vec::with_capacity(oh * ow);
    for i in 0..oh {
        for j in 0..ow {
            let i0 = if k & 2 != 0 { oh - 1 - i } else { i };
            let j0 = if k & 1 != 0 { ow - 1 - j } else { j };
            let (sy, sx) = if k & 4 != 0 { (j0, i0) } else { (i0, j0) };
            let p = sy * w + sx;
            data.extend_from_slice(&img.data[3 * p..3 * p + 3]);
            source.push(p);
        }
    }
    (
        Image {
            width: ow,
            height: oh,
            data,
        },
        source,
    )
}

/// Self-ensemble on a trained model equals the mean of eight passes over images flipped and
/// transposed here pixel by pixel (an independent implementation), differs from one pass (the
/// net is not flip-equivariant), and agrees tiled and whole.
#[test]
fn self_ensemble_averages_eight_passes() {
    let tmp = tempfile::tempdir().unwrap();
    let model = artifact::load(&trained_model(tmp.path()), &Device::Cpu).unwrap();
    let clean = Image::from_rgb8(&common::photo(3, 67, 45));
    let mut img = clean.clone();
    let mut rng = noiseda::data::loader::step_rng(2, 1);
    noiseda::data::draw::add_gaussian(&mut rng, &mut img, 20.0 / 255.0);
    let range = model.manifest.range;
    let x8 = restore_image_x8(&model.net, range, &img, &Device::Cpu, None).unwrap();
    assert_eq!((x8.width, x8.height), (67, 45));
    let mut mean = vec![0f32; img.data.len()];
    let mut passes = Vec::new();
    for k in 0..8 {
        let (t, source) = symmetry(&img, k);
        let out = restore_image(&model.net, range, &t, &Device::Cpu, None).unwrap();
        let mut back = vec![0f32; img.data.len()];
        for (q, &p) in source.iter().enumerate() {
            back[3 * p..3 * p + 3].copy_from_slice(&out.data[3 * q..3 * q + 3]);
        }
        for (m, v) in mean.iter_mut().zip(&back) {
            *m += v / 8.0;
        }
        passes.push(Image {
            width: img.width,
            height: img.height,
            data: back,
        });
    }
    let score = |a: &Image| psnr(a.as_metric(), clean.as_metric(), Channel::Rgb).unwrap();
    let mean = Image {
        width: img.width,
        height: img.height,
        data: mean,
    };
    // Each pass is clamped to [0, 1] before this mean, the ensemble only after its mean: the
    // two are compared where no pass was clamped.
    let inside = |i: usize| passes.iter().all(|p| p.data[i] > 0.0 && p.data[i] < 1.0);
    let compared = (0..mean.data.len()).filter(|&i| inside(i)).count();
    assert!(
        compared > mean.data.len() / 2,
        "{compared} values unclamped"
    );
    let max_diff = (0..mean.data.len())
        .filter(|&i| inside(i))
        .map(|i| (mean.data[i] - x8.data[i]).abs())
        .fold(0f32, f32::max);
    let singles: Vec<f64> = passes.iter().map(score).collect();
    eprintln!(
        "input {:.2} dB, passes {singles:.2?}, self-ensemble {:.2}, max |x8 - mean of passes| {max_diff:.2e}",
        score(&img),
        score(&x8)
    );
    assert!(max_diff < 1e-5, "{max_diff}");
    assert!(
        passes[0].data != x8.data,
        "the eight passes were not averaged"
    );
    let tiled =
        restore_image_x8(&model.net, range, &img, &Device::Cpu, Some(Tiling::new(32))).unwrap();
    let agree = psnr(tiled.as_metric(), x8.as_metric(), Channel::Rgb).unwrap();
    assert!(agree > 45.0, "tiled vs whole self-ensemble: {agree:.1} dB");
}

#[test]
fn tiled_and_whole_image_restoration_agree() {
    let tmp = tempfile::tempdir().unwrap();
    let model = artifact::load(&trained_model(tmp.path()), &Device::Cpu).unwrap();
    // Odd size: exercises padding to the multiple of 4 and a ragged last tile.
    let mut img = Image::from_rgb8(&common::photo(9, 101, 77));
    let mut rng = noiseda::data::loader::step_rng(1, 1);
    noiseda::data::draw::add_gaussian(&mut rng, &mut img, 20.0 / 255.0);
    let whole = restore_image(&model.net, model.manifest.range, &img, &Device::Cpu, None).unwrap();
    let tiled = restore_image(
        &model.net,
        model.manifest.range,
        &img,
        &Device::Cpu,
        Some(Tiling::new(48)),
    )
    .unwrap();
    assert_eq!((tiled.width, tiled.height), (101, 77));
    let agree = psnr(tiled.as_metric(), whole.as_metric(), Channel::Rgb).unwrap();
    let max_diff = tiled
        .data
        .iter()
        .zip(&whole.data)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    eprintln!("tiled vs whole: {agree:.2} dB, max |diff| {max_diff:.4}");
    // Measured 55 dB / 0.015 with tile 48, overlap 16 (seams blended, borders padded alike).
    assert!(
        agree > 45.0 && max_diff < 0.05,
        "tiled vs whole only {agree:.2} dB, {max_diff}"
    );
    // And the restorer does something: its output is not the input.
    let moved = psnr(whole.as_metric(), img.as_metric(), Channel::Rgb).unwrap();
    assert!(moved < 60.0, "output equals input ({moved:.1} dB)");
}

#[test]
fn cli_restore_eval_and_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let model = trained_model(tmp.path());
    let m = model.to_str().unwrap();

    // restore a folder
    let inputs = common::write_photos(&tmp.path().join("in"), 3, 45, 37);
    let outdir = tmp.path().join("restored");
    let out = noiseda(&[
        "restore",
        "--model",
        m,
        inputs.to_str().unwrap(),
        outdir.to_str().unwrap(),
        "--tile",
        "32",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for name in ["img00.png", "img01.jpg", "img02.webp"] {
        let img = image::open(outdir.join(name)).unwrap();
        assert_eq!((img.width(), img.height()), (45, 37));
    }

    // restoring a folder into itself is refused and leaves the originals alone
    let before = std::fs::read(inputs.join("img00.png")).unwrap();
    let out = noiseda(&[
        "restore",
        "--model",
        m,
        inputs.to_str().unwrap(),
        inputs.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("overwrite"));
    assert_eq!(std::fs::read(inputs.join("img00.png")).unwrap(), before);

    // eval --json on clean photos with AWGN (and `extra` flags)
    let eval_awgn = |extra: &[&str]| -> serde_json::Value {
        let mut args = vec![
            "eval",
            "--model",
            m,
            "--clean",
            inputs.to_str().unwrap(),
            "--degrade",
            "awgn:25",
            "--json",
        ];
        args.extend_from_slice(extra);
        let out = noiseda(&args);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let report = eval_awgn(&[]);
    assert_eq!(report["images"], 3);
    for key in ["psnr", "ssim", "input_psnr", "input_ssim"] {
        assert!(report[key].as_f64().unwrap().is_finite(), "{key}");
    }
    // σ = 25 noise on [0,1] images: input PSNR ≈ 20.2 dB.
    let input_psnr = report["input_psnr"].as_f64().unwrap();
    assert!((19.5..21.5).contains(&input_psnr), "{input_psnr}");

    // the same with the self-ensemble: said in the report, a different score
    let x8 = eval_awgn(&["--self-ensemble"]);
    assert_eq!(
        (&report["self_ensemble"], &x8["self_ensemble"]),
        (&false.into(), &true.into())
    );
    assert_ne!(x8["psnr"], report["psnr"]);
    assert_eq!(x8["input_psnr"], report["input_psnr"]);

    // the camera-noise pipeline as the evaluation degradation
    let out = noiseda(&[
        "eval",
        "--model",
        m,
        "--clean",
        inputs.to_str().unwrap(),
        "--degrade",
        "camera",
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let input_psnr = report["input_psnr"].as_f64().unwrap();
    assert!(
        (15.0..45.0).contains(&input_psnr),
        "camera input PSNR {input_psnr}"
    );

    // bad inputs: a corrupt image, a bad degradation, a missing model
    let bad = tmp.path().join("bad.png");
    std::fs::write(&bad, b"garbage").unwrap();
    let out = noiseda(&[
        "restore",
        "--model",
        m,
        bad.to_str().unwrap(),
        tmp.path().join("o.png").to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("bad.png"));
    let out = noiseda(&[
        "eval",
        "--model",
        m,
        "--clean",
        inputs.to_str().unwrap(),
        "--degrade",
        "gauss:3",
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("awgn:SIGMA"));
    let out = noiseda(&[
        "eval",
        "--model",
        "/nonexistent",
        "--clean",
        inputs.to_str().unwrap(),
        "--degrade",
        "awgn:5",
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("manifest.json"));
}

#[test]
fn a_missing_model_path_is_named_as_given() {
    let err = noiseda::artifact::read_manifest(std::path::Path::new("/nope/model")).unwrap_err();
    assert!(matches!(err, noiseda::Error::NotFound(_)), "{err}");
    assert!(
        err.to_string().contains("/nope/model does not exist"),
        "{err}"
    );
    let clean = tempfile::tempdir().unwrap();
    let out = noiseda(&[
        "eval",
        "--model",
        "/nope",
        "--clean",
        clean.path().to_str().unwrap(),
        "--degrade",
        "awgn:5",
    ]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("/nope does not exist"), "{stderr}");
}

#[test]
fn cli_arch_reports_exact_preset_counts() {
    let out = noiseda(&["arch", "--json"]);
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let count = |p: &str| {
        v["restorers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["preset"] == p)
            .unwrap()["parameters"]
            .as_u64()
            .unwrap()
    };
    assert_eq!(count("unet-t"), 2_141_475);
    assert_eq!(count("unet-s"), 8_559_171);
    assert_eq!(count("unet-b"), 12_068_271);
    let diffusion_b = v["diffusion"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["preset"] == "diffusion-b")
        .unwrap()["parameters"]
        .as_u64()
        .unwrap();
    assert_eq!(diffusion_b, 62_643_075);
}

#[test]
fn eval_on_real_polyu_pairs() {
    let Some(data) = common::shared_data() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let model = artifact::load(&trained_model(tmp.path()), &Device::Cpu).unwrap();
    let report = noiseda::eval::run(
        &model,
        &noiseda::eval::EvalData::Paired {
            lq: data.join("polyu/val/noisy"),
            gt: data.join("polyu/val/gt"),
        },
        &noiseda::eval::EvalOptions {
            channel: Channel::Rgb,
            tiling: None,
            self_ensemble: false,
            seed: 0,
            max_images: 2,
            progress: false,
        },
    )
    .unwrap();
    assert_eq!(report.images, 2);
    // PolyU noisy inputs are about 36 dB (31–41) against their ground truth.
    assert!(
        (30.0..42.0).contains(&report.input_psnr),
        "{}",
        report.input_psnr
    );
}

#[test]
fn demo_runs_end_to_end() {
    // The README's main command, shortened to 2 steps per method.
    let tmp = tempfile::tempdir().unwrap();
    let out = noiseda(&[
        "demo",
        "--out",
        tmp.path().to_str().unwrap(),
        "--steps",
        "2",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for row in ["noisy input", "demo-vanilla", "demo-noise-da"] {
        assert!(stdout.contains(row), "{row} missing from:\n{stdout}");
    }
    for run in ["demo-vanilla", "demo-noise-da"] {
        artifact::load(&tmp.path().join(run).join("model"), &Device::Cpu).unwrap();
    }
    // Unpacked data: 3 synthetic photos, 1 real, 2 validation pairs.
    let count = |d: &str| {
        std::fs::read_dir(tmp.path().join("data").join(d))
            .unwrap()
            .count()
    };
    assert_eq!(
        (
            count("synthetic"),
            count("real"),
            count("val/lq"),
            count("val/gt")
        ),
        (3, 1, 2, 2)
    );
    // The crop strip: noisy | vanilla | noise-da | ground truth, 128x128 crops at 2x.
    let strip = image::open(tmp.path().join("crops.png")).unwrap();
    assert_eq!((strip.width(), strip.height()), (4 * 256 + 3 * 6, 256 + 28));
    assert!(stdout.contains("crops.png"), "{stdout}");
    assert!(stdout.contains("over the noisy input"), "{stdout}");
}
