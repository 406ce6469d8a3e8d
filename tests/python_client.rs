//! Users call the Training service from other languages: a Python grpcio client (stubs
//! generated from proto/ by grpcio-tools) submits a job and reads its metric stream.
//! `.ci/run` installs grpcio; without it the test prints why it skips.

mod common;

use std::process::Command;

#[test]
fn python_grpc_client_submits_and_streams() {
    let python = std::env::var("NOISEDA_PYTHON").unwrap_or_else(|_| "python3".into());
    let probe = Command::new(&python)
        .args(["-c", "import grpc, grpc_tools"])
        .output();
    if !probe.as_ref().is_ok_and(|o| o.status.success()) {
        use std::io::Write;
        let _ = writeln!(
            std::io::stderr(),
            "SKIP python_grpc_client_submits_and_streams: `{python}` cannot import grpc and \
             grpc_tools (pip install grpcio grpcio-tools; .ci/run does)"
        );
        return;
    }
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
