//! `noiseda experiment` end to end at toy size (the tables are produced, not their numbers):
//! the camera setting builds its folders, every standard arm plus the supervised bound and a
//! custom arm run with two seeds, a rerun reuses finished runs; and the conditions probe.

mod common;

use std::process::Command;

#[test]
fn smoke_experiment_writes_tables_and_resumes() {
    let tmp = tempfile::tempdir().unwrap();
    let clean = common::write_photos(&tmp.path().join("clean"), 6, 48, 48);
    let exp = tmp.path().join("exp.toml");
    std::fs::write(
        &exp,
        format!(
            r#"
name = "smoke"
seeds = [0, 1]

[camera]
clean = "{}"
val_every = 3
copies = 1
noise = {{ shot = [0.008, 0.008], read = [0.008, 0.008], jpeg = [90, 90] }}

[base]
steps = 4
[base.restorer]
arch = "unet"
width = 8
depth = 3
[base.diffusion]
channels = [8, 16]
res_blocks = 1
attention = false
dropout = 0.0
[base.data]
patch = 32
batch = 2
[base.data.synthetic]
degradation = {{ kind = "awgn", sigma = [0, 50] }}
[base.loss]
ramp_steps = 2
[base.validation]
every = 2
[base.checkpoint]
every = 2

[[arm]]
name = "full-small-lambda"
about = "full method, λ_max 0.05"
set = {{ method = "noise-da", loss = {{ diffusion_weight = 0.05 }} }}
"#,
            clean.display()
        ),
    )
    .unwrap();
    let out = tmp.path().join("out");
    let run = || {
        Command::new(env!("CARGO_BIN_EXE_noiseda"))
            .args(["experiment", "--config"])
            .arg(&exp)
            .arg("--out")
            .arg(&out)
            .output()
            .unwrap()
    };
    let first = run();
    let stderr = String::from_utf8_lossy(&first.stderr);
    assert!(first.status.success(), "{stderr}");
    // 9 standard arms + supervised + 1 custom, 2 seeds each.
    assert!(stderr.contains("[22/22]"), "{stderr}");
    let md = std::fs::read_to_string(out.join("results.md")).unwrap();
    for arm in [
        "noisy input",
        "vanilla",
        "da-t1-100",
        "da-t900-999",
        "da-t1-999",
        "da-shuffle",
        "da-full",
        "da-cond-synthetic",
        "da-cond-real",
        "da-unpaired",
        "supervised",
        "full-small-lambda",
    ] {
        assert!(md.contains(&format!("| {arm} |")), "{arm} missing:\n{md}");
    }
    assert!(md.contains(" ± "), "{md}");
    // Paired by seed: one row per arm but vanilla, a column per seed.
    assert!(md.contains("Paired by seed"), "{md}");
    assert!(md.contains("| da-full | "), "{md}");
    assert!(md.contains("Below the noisy input"), "{md}");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("results.json")).unwrap()).unwrap();
    assert_eq!(report["runs"].as_array().unwrap().len(), 22);
    assert_eq!(report["val_images"], 2);
    for r in report["runs"].as_array().unwrap() {
        assert!(r["psnr"].as_f64().unwrap().is_finite(), "{r}");
        assert!(r["psnr_debiased"].as_f64().unwrap() >= r["psnr"].as_f64().unwrap() - 1e-9);
        assert_eq!(r["val_curve"].as_array().unwrap().len(), 2, "{r}");
    }
    let vanilla = &report["arms"][0];
    assert_eq!(vanilla["arm"], "vanilla");
    assert_eq!(vanilla["delta_vs_vanilla"].as_f64().unwrap(), 0.0);
    assert!(image::open(out.join("curves.png")).unwrap().width() > 400);
    // The camera setting's folders: 4 train photos (one real copy each), 2 held out.
    assert_eq!(std::fs::read_dir(out.join("data/real")).unwrap().count(), 4);
    assert_eq!(
        std::fs::read_dir(out.join("data/val/lq")).unwrap().count(),
        2
    );

    // A second run reuses every finished run.
    let second = run();
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(second.status.success(), "{stderr}");
    assert_eq!(stderr.matches("done before").count(), 22, "{stderr}");
    assert_eq!(std::fs::read_to_string(out.join("results.md")).unwrap(), md);

    // An unknown arm is named.
    std::fs::write(
        &exp,
        std::fs::read_to_string(&exp).unwrap().replace(
            "seeds = [0, 1]",
            "seeds = [0, 1]\narms = [\"vanilla\", \"nope\"]",
        ),
    )
    .unwrap();
    let bad = run();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("unknown arm `nope`"));
}

#[test]
fn conditions_probe_prints_a_rising_curve() {
    let tmp = tempfile::tempdir().unwrap();
    let clean = common::write_photos(&tmp.path().join("clean"), 3, 48, 48);
    let png = tmp.path().join("probe.png");
    let out = Command::new(env!("CARGO_BIN_EXE_noiseda"))
        .args(["experiment", "probe-conditions", "--clean"])
        .arg(&clean)
        .args([
            "--steps", "20", "--patch", "32", "--batch", "4", "--json", "--out",
        ])
        .arg(&png)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let points: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    let sigmas: Vec<f64> = points
        .iter()
        .map(|p| p["sigma"].as_f64().unwrap())
        .collect();
    assert_eq!(
        sigmas,
        [0.0, 10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0, 80.0]
    );
    let mse: Vec<f64> = points.iter().map(|p| p["mse"].as_f64().unwrap()).collect();
    assert!(mse.iter().all(|m| m.is_finite() && *m > 0.0), "{mse:?}");
    // Corrupting the condition never helps the net (0 vs 80; the paper's curve rises).
    assert!(mse[8] > mse[0], "{mse:?}");
    assert!(image::open(&png).is_ok());
}
