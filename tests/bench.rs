//! `noiseda bench` end to end: the parent spawns one child process per case and prints the
//! JSON report scripts read; unknown cases are refused by name.

use std::process::Command;

#[test]
fn bench_json_report_has_the_documented_fields() {
    let out = Command::new(env!("CARGO_BIN_EXE_noiseda"))
        .args([
            "bench",
            "--cases",
            "train-vanilla",
            "--warmup",
            "0",
            "--runs",
            "2",
            "--threads",
            "2",
            "--json",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["matmul_peak_gflops"].as_f64().unwrap() > 1.0);
    let cases = v["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 1);
    let c = &cases[0];
    assert_eq!(c["name"], "train-vanilla");
    assert!(c["noiseda_ms"].as_f64().unwrap() > 0.0);
    assert!(c["peak_rss_mb"].as_f64().unwrap() > 10.0, "{c}");
    // Without --compare there is no reference: the keys are there, null.
    assert!(c["reference_ms"].is_null() && c["ratio"].is_null(), "{c}");

    let out = Command::new(env!("CARGO_BIN_EXE_noiseda"))
        .args(["bench", "--cases", "train-fastest"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("train-fastest") && err.contains("restore-8x256"),
        "{err}"
    );
}

#[test]
fn parity_compares_every_loss_term_and_gradient_and_names_a_missing_device() {
    let parity = |device: &str| {
        Command::new(env!("CARGO_BIN_EXE_noiseda"))
            .args([
                "bench",
                "parity",
                "--device",
                device,
                "--restorer",
                "unet-t",
            ])
            .args(["--diffusion", "diffusion-t", "--size", "32", "--json"])
            .env("RUST_BACKTRACE", "0")
            .output()
            .unwrap()
    };
    // The CPU against itself: every row present, identical.
    let out = parity("cpu");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let rows = v["rows"].as_array().unwrap();
    let what: Vec<&str> = rows.iter().map(|r| r["what"].as_str().unwrap()).collect();
    for want in [
        "restorer forward",
        "loss term loss",
        "loss term l_noise",
        "loss term hinge",
        "restorer gradients",
        "diffusion gradients",
    ] {
        assert!(what.contains(&want), "{what:?}");
    }
    let grads = rows
        .iter()
        .find(|r| r["what"] == "diffusion gradients")
        .unwrap();
    assert!(grads["tensors"].as_u64().unwrap() > 100, "{grads}");
    assert_eq!(v["worst_rel"].as_f64().unwrap(), 0.0);
    // A device this binary cannot open is named, not replaced by the CPU.
    let out = parity("cuda:0");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cuda:0"), "{err}");
}

/// `bench --compare --json` where PyTorch is missing installs it with pip; pip's own output
/// must not reach stdout, which carries only the JSON. Here pip is pointed at an empty local
/// index, so it prints "Looking in links: …" (on stdout, by default) and fails fast.
#[test]
fn pip_output_stays_off_stdout_when_bench_installs_torch() {
    let has_torch = Command::new("python3")
        .args(["-c", "import torch"])
        .status()
        .map(|s| s.success());
    match has_torch {
        Ok(false) => {}
        Ok(true) => {
            eprintln!("skipped: python3 already imports torch, so bench would not run pip");
            return;
        }
        Err(e) => {
            eprintln!("skipped: no python3 ({e})");
            return;
        }
    }
    let links = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_noiseda"))
        .args(["bench", "--cases", "train-vanilla", "--compare", "--json"])
        .args(["--python", "python3"])
        .env("PIP_NO_INDEX", "1")
        .env("PIP_FIND_LINKS", links.path())
        .env("PIP_BREAK_SYSTEM_PACKAGES", "1")
        .env("PIP_DISABLE_PIP_VERSION_CHECK", "1")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "pip could not install torch: {stderr}"
    );
    assert!(
        out.stdout.is_empty(),
        "stdout: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(stderr.contains("Looking in links"), "{stderr}");
    assert!(stderr.contains("could not install PyTorch"), "{stderr}");
}
