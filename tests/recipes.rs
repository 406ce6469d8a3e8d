//! The realistic-degradation recipe as a user previews it (`noiseda degrade`) and the classical
//! baselines script (`scripts/baselines.py`) scored with noiseda's own metrics.

mod common;

use std::path::Path;
use std::process::Command;

use common::noiseda;

#[test]
fn degrade_previews_the_isp_recipe_with_its_drawn_parameters() {
    let tmp = tempfile::tempdir().unwrap();
    let clean = common::write_photos(&tmp.path().join("clean"), 3, 64, 48);
    let out = tmp.path().join("out");
    let recipe = r#"{ kind = "isp", shot = [1e-3, 4e-3], read = [2e-3, 5e-3], noise_blur = [0.5, 1.0], jpeg = [85, 90] }"#;
    let run = |dir: &Path| {
        noiseda(&[
            "degrade",
            clean.to_str().unwrap(),
            dir.to_str().unwrap(),
            "--recipe",
            recipe,
            "--copies",
            "2",
            "--seed",
            "5",
            "--json",
        ])
    };
    let o = run(&out);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let written: Vec<serde_json::Value> = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(written.len(), 6, "3 photos x 2 copies");
    for w in &written {
        let p = &w["params"];
        let within = |k: &str, lo: f64, hi: f64| {
            let v = p[k].as_f64().unwrap();
            assert!((lo..=hi).contains(&v), "{k} = {v} outside [{lo}, {hi}]");
        };
        within("shot", 1e-3, 4e-3);
        within("read", 2e-3, 5e-3);
        within("noise_blur", 0.5, 1.0);
        within("jpeg", 85.0, 90.0);
        within("red_gain", 1.9, 2.4); // the defaults of the fields not given
        let psnr = w["psnr"].as_f64().unwrap();
        assert!((20.0..50.0).contains(&psnr), "{psnr}");
        let img = image::open(w["output"].as_str().unwrap()).unwrap();
        assert_eq!((img.width(), img.height()), (64, 48));
    }
    // Each copy draws its own parameters; the same seed writes the same files.
    assert_ne!(written[0]["params"], written[1]["params"]);
    let again = tmp.path().join("again");
    assert!(run(&again).status.success());
    for name in ["img00-0.png", "img02-1.png"] {
        assert_eq!(
            std::fs::read(out.join(name)).unwrap(),
            std::fs::read(again.join(name)).unwrap(),
            "{name} differs between two runs with the same seed"
        );
    }
    // A job spec's recipe and a default recipe by name.
    let spec = tmp.path().join("job.toml");
    std::fs::write(
        &spec,
        format!(
            "name = \"x\"\nsteps = 1\n[restorer]\npreset = \"unet-t\"\n[data.synthetic]\nclean = \"{}\"\n\
             degradation = {recipe}\n",
            clean.display()
        ),
    )
    .unwrap();
    let one = tmp.path().join("one.png");
    let photo = clean.join("img00.png");
    let o = noiseda(&[
        "degrade",
        photo.to_str().unwrap(),
        one.to_str().unwrap(),
        "--spec",
        spec.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(one.is_file());
    let o = noiseda(&[
        "degrade",
        photo.to_str().unwrap(),
        one.to_str().unwrap(),
        "--kind",
        "isp",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // Bad recipes are refused with the key that is wrong.
    for (bad, key) in [
        (
            r#"{ kind = "isp", shot = [4e-3, 1e-3] }"#,
            "degradation.shot",
        ),
        (r#"{ kind = "isp", jpeg = [0, 90] }"#, "degradation.jpeg"),
        (r#"{ kind = "isp", shoot = [1e-3, 2e-3] }"#, "shoot"),
    ] {
        let o = noiseda(&[
            "degrade",
            photo.to_str().unwrap(),
            one.to_str().unwrap(),
            "--recipe",
            bad,
        ]);
        assert!(!o.status.success(), "{bad} was accepted");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains(key), "{bad}: {err}");
    }
}

/// Two small clean/noisy PNG pairs under `root` (`gt/`, `noisy/`; AWGN σ 15, seeded per image),
/// the pairs the baseline tests score. PNG on both sides: JPEG decoders differ by a level here
/// and there (PIL's libjpeg vs the image crate), which is why `noiseda experiment` hands the
/// script PNGs it decoded itself.
fn noisy_pairs(root: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let photos = common::write_photos(&root.join("photos"), 2, 40, 36);
    let (gt, noisy) = (root.join("gt"), root.join("noisy"));
    std::fs::create_dir_all(&gt).unwrap();
    std::fs::create_dir_all(&noisy).unwrap();
    for (k, p) in noiseda::data::list_images(&photos)
        .unwrap()
        .iter()
        .enumerate()
    {
        let name = p.file_stem().unwrap().to_string_lossy().into_owned() + ".png";
        let rgb = noiseda::data::load_rgb(p).unwrap();
        rgb.save(gt.join(&name)).unwrap();
        let mut lq = noiseda::data::Image::from_rgb8(&rgb);
        let mut rng = noiseda::data::loader::step_rng(3, k as u64);
        noiseda::data::draw::add_gaussian(&mut rng, &mut lq, 15.0 / 255.0);
        lq.to_rgb8()
            .save_with_format(noisy.join(&name), image::ImageFormat::Png)
            .unwrap();
    }
    (gt, noisy)
}

/// python3 with the baseline packages, or None (with a printed reason).
fn python_with_baselines() -> Option<String> {
    let python = std::env::var("NOISEDA_PYTHON").unwrap_or_else(|_| "python3".into());
    let probe = Command::new(&python)
        .args(["-c", "import bm3d, skimage, cv2"])
        .output();
    if probe.as_ref().is_ok_and(|o| o.status.success()) {
        return Some(python);
    }
    use std::io::Write;
    let _ = writeln!(
        std::io::stderr(),
        "SKIP baselines_script_scores_like_noiseda_eval: `{python}` cannot import bm3d, skimage \
         and cv2 (pip install bm3d scikit-image opencv-python-headless; .ci/run does)"
    );
    None
}

#[test]
fn baselines_script_scores_like_noiseda_eval() {
    let Some(python) = python_with_baselines() else {
        return;
    };
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let script = root.join("scripts/baselines.py");
    // 1. Its metrics are the fixture's (the one noiseda's metrics are pinned to).
    let o = Command::new(&python)
        .arg(&script)
        .arg("--check-fixture")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    // 2. Two small noisy/clean pairs; parameters by 2-fold cross-fitting.
    let tmp = tempfile::tempdir().unwrap();
    let (gt, noisy) = noisy_pairs(tmp.path());
    let mut rows_expected = Vec::new();
    for entry in noiseda::data::list_images(&gt).unwrap() {
        let read = |p: &Path| noiseda::data::Image::from_rgb8(&noiseda::data::load_rgb(p).unwrap());
        let (lq, gt8) = (read(&noisy.join(entry.file_name().unwrap())), read(&entry));
        rows_expected.push(
            noiseda::quality::psnr(
                lq.as_metric(),
                gt8.as_metric(),
                noiseda::quality::Channel::Rgb,
            )
            .unwrap(),
        );
    }
    let o = Command::new(&python)
        .arg(&script)
        .args([
            "--noisy",
            noisy.to_str().unwrap(),
            "--gt",
            gt.to_str().unwrap(),
        ])
        .args(["--methods", "input,cbm3d,tv,nlm", "--folds", "2", "--json"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let rows = report["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 4);
    // The input row is noiseda's PSNR of the same pairs, to rounding.
    let input = &rows[0];
    assert_eq!(input["method"], "input");
    let mean = rows_expected.iter().sum::<f64>() / rows_expected.len() as f64;
    let got = input["psnr"].as_f64().unwrap();
    // (noiseda holds pixels as f32, the script as f64: they agree to ~1e-7 dB.)
    assert!((got - mean).abs() < 1e-6, "script {got} vs noiseda {mean}");
    // Every classical denoiser beats σ = 15 noise, with a parameter from its grid per fold.
    for r in &rows[1..] {
        let p = r["psnr"].as_f64().unwrap();
        assert!(p > got, "{}: {p} vs input {got}", r["method"]);
        assert_eq!(r["params"].as_array().unwrap().len(), 2, "{r}");
        assert!(r["selection"].as_str().unwrap().contains("cross-fitting"));
    }
    // A bad folder is named.
    let o = Command::new(&python)
        .arg(&script)
        .args(["--noisy", "/nonexistent-dir", "--gt", gt.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("/nonexistent-dir"));
}

#[test]
fn baselines_script_runs_ffdnet_in_numpy() {
    use std::io::Write;
    let python = std::env::var("NOISEDA_PYTHON").unwrap_or_else(|_| "python3".into());
    let probe = Command::new(&python)
        .args(["-c", "import numpy, PIL, skimage"])
        .output();
    if !probe.as_ref().is_ok_and(|o| o.status.success()) {
        let _ = writeln!(
            std::io::stderr(),
            "SKIP baselines_script_runs_ffdnet_in_numpy: `{python}` cannot import numpy, PIL \
             and skimage"
        );
        return;
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/baselines.py");
    // 1. No network: the legacy-torch reader and the forward pass against a slow reference.
    let o = Command::new(&python)
        .arg(&script)
        .arg("--self-test")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // 2. The pretrained weights (fetched once into ~/.cache/noiseda/ffdnet) on two σ = 15 pairs.
    let tmp = tempfile::tempdir().unwrap();
    let (gt, noisy) = noisy_pairs(tmp.path());
    let o = Command::new(&python)
        .arg(&script)
        .args([
            "--noisy",
            noisy.to_str().unwrap(),
            "--gt",
            gt.to_str().unwrap(),
        ])
        .args(["--methods", "input,ffdnet", "--folds", "2", "--json"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    if !o.status.success() && err.contains("FFDNet weights unavailable") {
        let _ = writeln!(
            std::io::stderr(),
            "SKIP baselines_script_runs_ffdnet_in_numpy (pretrained part): {}",
            err.trim()
        );
        return;
    }
    assert!(o.status.success(), "{err}");
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let rows = report["rows"].as_array().unwrap();
    let (input, ffdnet) = (&rows[0], &rows[1]);
    assert_eq!(ffdnet["method"], "ffdnet");
    let (a, b) = (
        input["psnr"].as_f64().unwrap(),
        ffdnet["psnr"].as_f64().unwrap(),
    );
    assert!(b > a + 2.0, "FFDNet {b} dB vs input {a} dB");
    assert_eq!(ffdnet["params"].as_array().unwrap().len(), 2, "{ffdnet}");
}

#[test]
fn experiment_tables_carry_the_baseline_rows() {
    let Some(python) = python_with_baselines() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let clean = common::write_photos(&tmp.path().join("clean"), 4, 48, 48);
    let exp = tmp.path().join("exp.toml");
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    std::fs::write(
        &exp,
        format!(
            r#"
name = "baselines"
seeds = [0]
arms = ["vanilla"]

[camera]
clean = "{}"
val_every = 2
copies = 1
noise = {{ shot = [0.008, 0.008], read = [0.008, 0.008], jpeg = [90, 90] }}

[baselines]
methods = ["tv", "nlm"]
script = "{}"
python = "{python}"
folds = 0

[base]
steps = 2
[base.restorer]
arch = "unet"
width = 8
depth = 3
[base.data]
patch = 32
batch = 2
[base.data.synthetic]
degradation = {{ kind = "isp", jpeg = [90, 95] }}
"#,
            clean.display(),
            root.join("scripts/baselines.py").display()
        ),
    )
    .unwrap();
    let out = tmp.path().join("out");
    let o = noiseda(&[
        "experiment",
        "--config",
        exp.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let md = std::fs::read_to_string(out.join("results.md")).unwrap();
    assert!(
        md.contains("| tv | baseline {\"weight\":0.015} (fixed)"),
        "{md}"
    );
    assert!(md.contains("| nlm | baseline"), "{md}");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("results.json")).unwrap()).unwrap();
    let rows = report["baselines"].as_array().unwrap();
    assert_eq!(rows.len(), 2);
    // The PNG copies the script scored hold noiseda's decoded validation pairs.
    assert_eq!(
        std::fs::read_dir(out.join("baselines/lq")).unwrap().count(),
        2
    );
    for r in rows {
        assert!(r["psnr"].as_f64().unwrap().is_finite(), "{r}");
    }
}

#[test]
fn experiment_resolves_relative_out_and_supervised_paths() {
    // A relative --out and relative [supervised] paths: the camera setting's folders land
    // under --out as given, the supervised pairs resolve once from the experiment file, and
    // the setting takes an isp recipe instead of the camera pipeline.
    let tmp = tempfile::tempdir().unwrap();
    common::write_photos(&tmp.path().join("photos"), 4, 48, 48);
    let pairs = common::write_photos(&tmp.path().join("pairs/gt"), 2, 48, 48);
    let lq = tmp.path().join("pairs/lq");
    std::fs::create_dir_all(&lq).unwrap();
    for p in noiseda::data::list_images(&pairs).unwrap() {
        std::fs::copy(&p, lq.join(p.file_name().unwrap())).unwrap();
    }
    std::fs::create_dir_all(tmp.path().join("conf")).unwrap();
    std::fs::write(
        tmp.path().join("conf/exp.toml"),
        r#"
name = "relative"
seeds = [0]
arms = ["vanilla", "supervised"]

[camera]
clean = "../photos"
val_every = 2
copies = 1
degradation = { kind = "isp", noise_blur = [1.0, 1.5], jpeg = [80, 90] }

[supervised]
lq = "../pairs/lq"
gt = "../pairs/gt"

[base]
steps = 2
[base.restorer]
arch = "unet"
width = 8
depth = 3
[base.data]
patch = 32
batch = 2
[base.data.synthetic]
degradation = { kind = "awgn", sigma = [0, 50] }
"#,
    )
    .unwrap();
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_noiseda"))
        .current_dir(tmp.path())
        .args(["experiment", "--config", "conf/exp.toml", "--out", "out"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let out = tmp.path().join("out");
    assert_eq!(
        std::fs::read_dir(out.join("data/val/lq")).unwrap().count(),
        2
    );
    let spec: toml::Table =
        toml::from_str(&std::fs::read_to_string(out.join("supervised/seed-0/spec.toml")).unwrap())
            .unwrap();
    let lq_used = Path::new(spec["data"]["synthetic"]["lq"].as_str().unwrap());
    assert_eq!(
        std::fs::canonicalize(tmp.path().join(lq_used)).unwrap(),
        std::fs::canonicalize(&lq).unwrap(),
        "supervised pairs resolve once, from the experiment file"
    );
    let md = std::fs::read_to_string(out.join("results.md")).unwrap();
    assert!(md.contains("| supervised |"), "{md}");
}
