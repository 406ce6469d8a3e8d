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

/// A model folder under `root` holding one briefly trained tiny restorer, `tiny`.
fn tiny_models(root: &std::path::Path) -> std::path::PathBuf {
    let clean = common::write_photos(&root.join("clean"), 3, 48, 48);
    let summary = noiseda::train::run(
        &common::tiny_spec(&clean, 2, 0),
        &noiseda::train::TrainOptions {
            out: root.join("run"),
            resume: false,
            progress: false,
            control: None,
            job_id: None,
        },
    )
    .unwrap();
    let models = root.join("models");
    std::fs::create_dir_all(models.join("tiny")).unwrap();
    for f in ["model.safetensors", "manifest.json"] {
        std::fs::copy(
            summary.model_dir().unwrap().join(f),
            models.join("tiny").join(f),
        )
        .unwrap();
    }
    models
}

#[test]
fn python_grpc_client_restores() {
    let Some(python) = python("python_grpc_client_restores") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let models = tiny_models(tmp.path());
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

/// Through tritonclient (NVIDIA's client of the Open Inference Protocol), over gRPC
/// (`inference.GRPCInferenceService`) and over KServe v2 REST (`--http-listen`, binary-data
/// extension and JSON values): health, metadata, the model configuration and statistics, and
/// ModelInfer on UINT8 batches of 1 and 4 equal `noiseda.v1.Restore` with RAW_U8 byte for byte,
/// FP32 within 1e-6; bad requests get INVALID_ARGUMENT / NOT_FOUND (HTTP 400 / 404) naming the
/// field. Each protocol gets its own server, so each script's statistics count its own calls.
#[test]
fn tritonclient_infers_like_the_native_restore() {
    let Some(python) = python("tritonclient_infers_like_the_native_restore") else {
        return;
    };
    let probe = Command::new(&python)
        .args(["-c", "import tritonclient.grpc, tritonclient.http, numpy"])
        .output();
    if !probe.as_ref().is_ok_and(|o| o.status.success()) {
        eprintln!(
            "SKIP tritonclient_infers_like_the_native_restore: `{python}` cannot import \
             tritonclient.grpc and tritonclient.http (pip install 'tritonclient[grpc,http]'; \
             .ci/run does)"
        );
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let models = tiny_models(tmp.path());
    for (protocol, script) in [
        ("grpc", "tests/python/triton_client.py"),
        ("http", "tests/python/triton_http_client.py"),
    ] {
        let server = common::server::Server::start(
            &tmp.path().join(format!("data-{protocol}")),
            &[
                "--role",
                "restore",
                "--model-dir",
                models.to_str().unwrap(),
                "--max-batch-size",
                "4",
                "--http-listen",
                "127.0.0.1:0",
            ],
        );
        let address = match protocol {
            "grpc" => server.addr.clone(),
            _ => server
                .http
                .clone()
                .expect("the server printed its REST address"),
        };
        let out_dir = tmp.path().join(protocol);
        std::fs::create_dir_all(&out_dir).unwrap();
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let out = Command::new(&python)
            .arg(root.join(script))
            .arg(address.trim_start_matches("http://"))
            .arg("tiny")
            .arg(&out_dir)
            .arg("4")
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.starts_with("ok"),
            "tritonclient ({protocol}) failed:\n{stdout}\n{}\nserver log:\n{}",
            String::from_utf8_lossy(&out.stderr),
            server.log_text()
        );
        assert_equals_native(&server, &out_dir, protocol);
    }
}

/// The images tritonclient wrote to `out_dir`, restored again through `noiseda.v1.Restore`
/// (raw in and out, one image per call): UINT8 byte for byte, FP32 within 1e-6.
fn assert_equals_native(
    server: &common::server::Server,
    out_dir: &std::path::Path,
    protocol: &str,
) {
    // The same images through noiseda.v1.Restore, raw in and out.
    let (h, w) = (36usize, 40usize);
    let rt = tokio::runtime::Runtime::new().unwrap();
    // One image per call (the batched tritonclient request is compared image by image).
    let restore =
        |data: &[u8], pixel: noiseda::pb::PixelType, format: noiseda::pb::OutputFormat| {
            let images = vec![noiseda::pb::ImageInput {
                image: Some(noiseda::pb::image_input::Image::Raw(
                    noiseda::pb::RawImage {
                        data: data.to_vec(),
                        height: h as u32,
                        width: w as u32,
                        channels: 3,
                        pixel_type: pixel as i32,
                    },
                )),
            }];
            rt.block_on(async {
                let mut c = noiseda::client::restore_client(&server.addr).await.unwrap();
                c.restore(noiseda::pb::RestoreRequest {
                    images,
                    model: "tiny".into(),
                    output_format: format as i32,
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner()
                .images
                .into_iter()
                .flat_map(|i| i.data)
                .collect::<Vec<u8>>()
            })
        };
    for name in ["u8-1", "u8-4"] {
        let input = std::fs::read(out_dir.join(format!("{name}.in"))).unwrap();
        let triton = std::fs::read(out_dir.join(format!("{name}.out"))).unwrap();
        let native: Vec<u8> = input
            .chunks(h * w * 3)
            .flat_map(|img| {
                restore(
                    img,
                    noiseda::pb::PixelType::U8,
                    noiseda::pb::OutputFormat::RawU8,
                )
            })
            .collect();
        assert_eq!(triton.len(), native.len(), "{name}");
        assert!(
            triton == native,
            "{protocol} {name}: tritonclient's output differs from Restore's"
        );
    }
    let input = std::fs::read(out_dir.join("u8-1.in")).unwrap();
    let f32_in: Vec<u8> = input
        .iter()
        .flat_map(|&v| (v as f32 / 255.0).to_le_bytes())
        .collect();
    let native = restore(
        &f32_in,
        noiseda::pb::PixelType::F32,
        noiseda::pb::OutputFormat::RawF32,
    );
    let triton = std::fs::read(out_dir.join("f32-1.out")).unwrap();
    assert_eq!(triton.len(), native.len());
    let max = triton
        .chunks(4)
        .zip(native.chunks(4))
        .map(|(a, b)| {
            let (a, b) = (
                f32::from_le_bytes(a.try_into().unwrap()),
                f32::from_le_bytes(b.try_into().unwrap()),
            );
            (a - b).abs()
        })
        .fold(0f32, f32::max);
    assert!(max <= 1e-6, "{protocol}: FP32 differs by {max}");
}

/// Triton's own load tool, `perf_analyzer` (run through `scripts/perf-analyzer.sh`, which
/// fetches it and a newer glibc on first use), drives noiseda unchanged over gRPC and over
/// REST: every request answered, throughput and server-side statistics in its CSV.
#[test]
fn perf_analyzer_measures_noiseda_over_grpc_and_rest() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let script = root.join("scripts/perf-analyzer.sh");
    let probe = Command::new(&script).arg("--version").output();
    if !probe.as_ref().is_ok_and(|o| o.status.success()) {
        eprintln!(
            "SKIP perf_analyzer_measures_noiseda_over_grpc_and_rest: scripts/perf-analyzer.sh \
             could not fetch or start perf_analyzer: {}",
            probe.map_or_else(
                |e| e.to_string(),
                |o| String::from_utf8_lossy(&o.stderr).to_string()
            )
        );
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let models = tiny_models(tmp.path());
    let server = common::server::Server::start(
        &tmp.path().join("data"),
        &[
            "--role",
            "restore",
            "--model-dir",
            models.to_str().unwrap(),
            "--http-listen",
            "127.0.0.1:0",
        ],
    );
    for (protocol, url) in [
        ("grpc", server.addr.clone()),
        ("http", server.http.clone().unwrap()),
    ] {
        let csv = tmp.path().join(format!("{protocol}.csv"));
        let out = Command::new(&script)
            .args(["-m", "tiny", "-i", protocol, "-u"])
            .arg(url.trim_start_matches("http://"))
            .args(["--shape", "INPUT:32,32,3", "-b", "1"])
            .args([
                "--concurrency-range",
                "1:2",
                "--measurement-interval",
                "1000",
            ])
            .args(["--stability-percentage", "100", "--max-trials", "3", "-f"])
            .arg(&csv)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "perf_analyzer -i {protocol} failed:\n{stdout}\n{}\nserver log:\n{}",
            String::from_utf8_lossy(&out.stderr),
            server.log_text()
        );
        // Server-side statistics (ModelStatistics) were read: its "Server:" block.
        assert!(
            stdout.contains("Server:") && stdout.contains("Inference count"),
            "{stdout}"
        );
        let text = std::fs::read_to_string(&csv).unwrap();
        let rows: Vec<&str> = text.lines().skip(1).collect();
        assert_eq!(rows.len(), 2, "{text}");
        for row in rows {
            let throughput: f64 = row.split(',').nth(1).unwrap().parse().unwrap();
            assert!(throughput > 0.0, "{protocol}: {row}");
        }
    }
}
