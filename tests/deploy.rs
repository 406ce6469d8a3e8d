//! What deployments rely on: `noiseda health` exit codes (container health checks), the
//! start-up device check (no silent CPU fallback) and out-of-range `serve` limits refused at
//! start, by flag name.

mod common;

use std::process::{Command, Output};

use common::server::{serve_refuses, Server};

fn noiseda(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_noiseda"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn health_exits_zero_only_when_serving() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(&tmp.path().join("data"), &[]);
    let ok = |service: &str| {
        let out = noiseda(&["health", "--server", &server.addr, "--service", service]);
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr),
        )
    };
    let (live, text) = ok("");
    assert!(live, "{text}");
    assert!(text.contains("server: SERVING"), "{text}");
    let (ready, text) = ok("noiseda.v1.Training");
    assert!(ready, "{text}");
    // No model loaded: the Restore service is not ready.
    let (ready, text) = ok("noiseda.v1.Restore");
    assert!(!ready);
    assert!(text.contains("NOT_SERVING"), "{text}");
    let (known, text) = ok("no.such.Service");
    assert!(!known);
    assert!(
        text.contains("no.such.Service") || text.contains("unknown"),
        "{text}"
    );
    // Nothing listening.
    let addr = server.addr.clone();
    server.kill();
    let out = noiseda(&["health", "--server", &addr, "--timeout", "3"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("127.0.0.1"));
}

#[test]
fn a_missing_gpu_stops_the_server_at_start() {
    if cfg!(feature = "cuda") {
        eprintln!("skipped: this build has CUDA; the check is for CPU-only builds");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    for args in [
        vec!["--devices", "cpu,cuda:0"],
        vec!["--role", "restore", "--restore-device", "cuda:1"],
    ] {
        let mut all = vec![
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "127.0.0.1:0",
            "--data-dir",
            data.to_str().unwrap(),
        ];
        all.extend(args);
        let out = noiseda(&all);
        assert!(!out.status.success());
        let msg = String::from_utf8_lossy(&out.stderr);
        assert!(
            msg.contains("cuda:") && msg.contains("without the `cuda` feature"),
            "{msg}"
        );
    }
}

#[test]
fn out_of_range_limits_stop_the_server_at_start_naming_the_flag() {
    let tmp = tempfile::tempdir().unwrap();
    for (k, (flag, value)) in [
        ("--max-batch-size", "0"),
        ("--max-queue", "1000000"),
        ("--tile-size", "8"),
    ]
    .into_iter()
    .enumerate()
    {
        let msg = serve_refuses(&tmp.path().join(format!("data{k}")), &[flag, value]);
        assert!(msg.contains(&format!("invalid config `{flag}`")), "{msg}");
        assert!(!msg.contains("listening"), "{msg}");
    }
    // Several at once: every one is named.
    let msg = serve_refuses(
        &tmp.path().join("data-all"),
        &["--max-batch-size", "0", "--max-images-per-request", "0"],
    );
    assert!(
        msg.contains("--max-batch-size") && msg.contains("--max-images-per-request"),
        "{msg}"
    );
}
