//! Users call the services from other languages: Python grpcio clients (stubs generated from
//! proto/ by grpcio-tools) submit a training job and read its metric stream, and restore
//! images. `.ci/run` installs grpcio; without it the tests print why they skip.

mod common;

use std::process::Command;

/// The Python interpreter, or None (with a printed reason) when grpcio is missing.
fn python(test: &str) -> Option<String> {
    let python = std::env::var("NOISEDA_PYTHON").unwrap_or_else(|_| "python3".into());
    let probe = Command::new(&python)
        .args(["-c", "import grpc, grpc_tools"])
        .output();
    if probe.as_ref().is_ok_and(|o| o.status.success()) {
        return Some(python);
    }
    use std::io::Write;
    let _ = writeln!(
        std::io::stderr(),
        "SKIP {test}: `{python}` cannot import grpc and grpc_tools (pip install grpcio \
         grpcio-tools; .ci/run does)"
    );
    None
}

#[test]
fn python_grpc_client_restores() {
    let Some(python) = python("python_grpc_client_restores") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let clean = common::write_photos(&tmp.path().join("clean"), 3, 48, 48);
    let summary = noiseda::train::run(
        &common::tiny_spec(&clean, 2, 0),
        &noiseda::train::TrainOptions {
            out: tmp.path().join("run"),
            resume: false,
            progress: false,
            control: None,
            job_id: None,
        },
    )
    .unwrap();
    let models = tmp.path().join("models");
    std::fs::create_dir_all(models.join("tiny")).unwrap();
    for f in ["model.safetensors", "manifest.json"] {
        std::fs::copy(
            summary.model_dir().unwrap().join(f),
            models.join("tiny").join(f),
        )
        .unwrap();
    }
    let image = tmp.path().join("in.png");
    common::photo(1, 40, 36).save(&image).unwrap();
    let server = common::server::Server::start(
        &tmp.path().join("data"),
        &["--role", "restore", "--model-dir", models.to_str().unwrap()],
    );
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new(&python)
        .arg(root.join("tests/python/restore_client.py"))
        .arg(root.join("proto"))
        .arg(server.addr.trim_start_matches("http://"))
        .arg(&image)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.starts_with("ok tiny "),
        "python client failed:\n{stdout}\n{}\nserver log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        server.log_text()
    );
}

#[test]
fn python_grpc_client_submits_and_streams() {
    let Some(python) = python("python_grpc_client_submits_and_streams") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let clean = common::write_photos(&tmp.path().join("clean"), 3, 48, 48);
    let server = common::server::Server::start(&tmp.path().join("data"), &[]);
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new(&python)
        .arg(root.join("tests/python/train_client.py"))
        .arg(root.join("proto"))
        .arg(server.addr.trim_start_matches("http://"))
        .arg(&clean)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.starts_with("ok 12"),
        "python client failed:\n{stdout}\n{}\nserver log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        server.log_text()
    );
}

/// Clients that still speak reflection v1alpha (grpcio-reflection's Python client, older
/// grpcurl) list every service and resolve a symbol.
#[test]
fn python_reflection_v1alpha_lists_every_service() {
    let Some(python) = python("python_reflection_v1alpha_lists_every_service") else {
        return;
    };
    let probe = Command::new(&python)
        .args(["-c", "import grpc_reflection.v1alpha.reflection_pb2_grpc"])
        .output();
    if !probe.as_ref().is_ok_and(|o| o.status.success()) {
        eprintln!(
            "SKIP python_reflection_v1alpha_lists_every_service: `{python}` cannot import \
             grpc_reflection (pip install grpcio-reflection; .ci/run does)"
        );
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let models = tmp.path().join("models");
    std::fs::create_dir_all(&models).unwrap();
    let server = common::server::Server::start(
        &tmp.path().join("data"),
        &["--model-dir", models.to_str().unwrap()],
    );
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new(&python)
        .arg(root.join("tests/python/reflection_v1alpha.py"))
        .arg(server.addr.trim_start_matches("http://"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "reflection v1alpha failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Each reflection version lists itself (tonic's services do; v1 is checked in service.rs).
    for service in [
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
        "noiseda.v1.Models",
        "noiseda.v1.Restore",
        "noiseda.v1.Training",
    ] {
        assert!(stdout.contains(service), "{service} not listed: {stdout}");
    }
}
