//! MLflow tracking against a real `mlflow server` (SQLite backend) on 127.0.0.1, read back
//! with MLflow's own Python client.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use noiseda::runlog::mlflow::{self, RunStatus, Target};
use noiseda::train::{self, TrainOptions};

/// The `mlflow` program: `NOISEDA_MLFLOW`, else the virtualenv `.ci/run` makes, else PATH.
fn mlflow_bin() -> Option<PathBuf> {
    let venv = std::env::var_os("HOME")
        .map(|h| PathBuf::from(h).join(".cache/noiseda/mlflow-venv/bin/mlflow"));
    std::env::var_os("NOISEDA_MLFLOW")
        .map(PathBuf::from)
        .into_iter()
        .chain(venv)
        .chain(Some(PathBuf::from("mlflow")))
        .find(|p| {
            Command::new(p)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        })
}

struct Server {
    child: Child,
    uri: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_mlflow(bin: &Path, dir: &Path) -> Server {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(bin)
        .args(["server", "--host", "127.0.0.1", "--port", &port.to_string()])
        .arg("--backend-store-uri")
        .arg(format!("sqlite:///{}", dir.join("mlflow.db").display()))
        .arg("--default-artifact-root")
        .arg(dir.join("artifacts"))
        .args(["--workers", "1"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let uri = format!("http://127.0.0.1:{port}");
    let server = Server { child, uri };
    let t0 = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "mlflow server did not start"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    server
}

fn train_options(out: &Path, resume: bool, job_id: Option<&str>) -> TrainOptions {
    TrainOptions {
        out: out.to_path_buf(),
        resume,
        progress: false,
        control: None,
        job_id: job_id.map(str::to_string),
    }
}

#[derive(serde::Deserialize)]
struct History {
    status: String,
    params: std::collections::BTreeMap<String, String>,
    metrics: std::collections::BTreeMap<String, Vec<(u64, i64, f64)>>,
}

fn history(bin: &Path, uri: &str, run_id: &str) -> History {
    let python = bin.with_file_name("python");
    let python = if python.exists() {
        python
    } else {
        "python3".into()
    };
    let out = Command::new(python)
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/python/mlflow_history.py"
        ))
        .args([uri, run_id])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn a_crashed_and_resumed_run_reaches_mlflow_once_with_its_status() {
    let Some(bin) = mlflow_bin() else {
        eprintln!(
            "SKIP a_crashed_and_resumed_run_reaches_mlflow_once_with_its_status: no `mlflow` \
             (NOISEDA_MLFLOW, ~/.cache/noiseda/mlflow-venv, or PATH; .ci/run installs it)"
        );
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let server = start_mlflow(&bin, tmp.path());
    let clean = common::write_photos(&tmp.path().join("clean"), 3, 48, 40);
    let run = tmp.path().join("run");
    let opts = |resume| train_options(&run, resume, None);
    let spec3 = common::tiny_spec(&clean, 3, 3);
    let params = mlflow::flatten_params(&serde_json::to_value(&spec3).unwrap());
    let target = Target {
        uri: &server.uri,
        experiment: "noiseda-test",
        run_name: "tiny",
        params,
    };
    train::run(&spec3, &opts(false)).unwrap();
    let first = mlflow::sync(&run, "run-1", &target, None).unwrap();
    assert_eq!(first.sent, 3);
    // A crash after the batch reached MLflow and before the cursor moved: everything again.
    let mut c = mlflow::read_cursor(&run).unwrap().unwrap();
    c.sent_seq = 0;
    std::fs::write(run.join("mlflow.json"), serde_json::to_vec(&c).unwrap()).unwrap();
    train::run(&common::tiny_spec(&clean, 6, 3), &opts(true)).unwrap();
    let again = mlflow::sync(&run, "run-1", &target, Some(RunStatus::Finished)).unwrap();
    assert_eq!(
        (again.run_id.as_str(), again.sent),
        (first.run_id.as_str(), 6)
    );
    // And a sync after the end sends nothing and ends nothing twice.
    let last = mlflow::sync(&run, "run-1", &target, Some(RunStatus::Finished)).unwrap();
    assert_eq!(last.sent, 0);
    // With the cursor file gone altogether, the run is found again by its tag (no second run).
    std::fs::remove_file(run.join("mlflow.json")).unwrap();
    let found = mlflow::sync(&run, "run-1", &target, None).unwrap();
    assert_eq!(
        (found.run_id.as_str(), found.sent),
        (first.run_id.as_str(), 6)
    );

    let h = history(&bin, &server.uri, &first.run_id);
    assert_eq!(h.status, "FINISHED");
    assert_eq!(h.params["steps"], "3", "params as the run was created");
    assert_eq!(h.params["restorer.arch"], "unet");
    let points = noiseda::runlog::read_metric_log(&run.join("metrics.jsonl")).unwrap();
    let want: Vec<(u64, i64, f64)> = points
        .iter()
        .map(|p| (p.step, (p.wall * 1000.0).round() as i64, p.value))
        .collect();
    assert_eq!(h.metrics.keys().collect::<Vec<_>>(), ["train/charbonnier"]);
    let got = &h.metrics["train/charbonnier"];
    assert_eq!(got.len(), 6, "no duplicates, none missing: {got:?}");
    for (g, w) in got.iter().zip(&want) {
        assert_eq!((g.0, g.1), (w.0, w.1));
        assert!(
            (g.2 - w.2).abs() <= 1e-12 * w.2.abs().max(1.0),
            "{g:?} vs {w:?}"
        );
    }
}

#[test]
fn a_run_trains_through_a_dead_tracking_server_and_its_backlog_arrives_on_resume() {
    let Some(bin) = mlflow_bin() else {
        eprintln!("SKIP a_run_trains_through_a_dead_tracking_server…: no `mlflow` (see above)");
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let clean = common::write_photos(&tmp.path().join("clean"), 3, 48, 40);
    let run = tmp.path().join("run");
    let opts = |resume| train_options(&run, resume, Some("job-42"));
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_uri = format!("http://{}", dead.local_addr().unwrap());
    drop(dead);
    let mut spec = common::tiny_spec(&clean, 3, 3);
    spec.tracking.mlflow_uri = Some(dead_uri);
    spec.tracking.experiment = "noiseda-backlog".into();
    let t0 = Instant::now();
    let s = train::run(&spec, &opts(false)).unwrap();
    assert_eq!(
        s.steps, 3,
        "training completes with the tracking server down"
    );
    assert!(t0.elapsed() < Duration::from_secs(30), "{:?}", t0.elapsed());
    assert!(mlflow::read_cursor(&run).unwrap().is_none());

    let server = start_mlflow(&bin, tmp.path());
    spec.steps = 6;
    spec.tracking.mlflow_uri = Some(server.uri.clone());
    train::run(&spec, &opts(true)).unwrap();
    let c = mlflow::read_cursor(&run).unwrap().unwrap();
    assert_eq!((c.sent_seq, c.ended), (6, Some(RunStatus::Finished)));
    let h = history(&bin, &server.uri, &c.run_id);
    assert_eq!(h.status, "FINISHED");
    let steps: Vec<u64> = h.metrics["train/charbonnier"].iter().map(|m| m.0).collect();
    assert_eq!(steps, [1, 2, 3, 4, 5, 6]);
    assert_eq!(h.params["tracking.experiment"], "noiseda-backlog");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_served_job_killed_and_resumed_ends_in_mlflow_with_every_point_once() {
    use common::server::{start_request, state, tiny_toml, wait_for, Server};
    use noiseda::pb;
    let Some(bin) = mlflow_bin() else {
        eprintln!("SKIP a_served_job_killed_and_resumed…: no `mlflow` (see above)");
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let mlflow_server = start_mlflow(&bin, tmp.path());
    let clean = common::write_photos(&tmp.path().join("clean"), 3, 48, 40);
    let data = tmp.path().join("data");
    let flags = ["--mlflow-uri", mlflow_server.uri.as_str()];
    let mut server = Server::start(&data, &flags);
    let mut c = server.client().await;
    let toml = tiny_toml("served", &clean, 400, 50, None);
    let job = c
        .start_job(start_request(&toml, ""))
        .await
        .unwrap()
        .into_inner();
    wait_for(&mut c, &job.id, "step 120", |j| {
        j.progress.as_ref().is_some_and(|p| p.step >= 120)
    })
    .await;
    server.kill();
    server = Server::start(&data, &flags);
    c = server.client().await;
    let done = wait_for(&mut c, &job.id, "completion", |j| {
        state(j) == pb::JobState::Completed
    })
    .await;
    assert_eq!(state(&done), pb::JobState::Completed);
    // The exporter's last sync runs before the job's thread ends; the record may lead it.
    let job_dir = data.join("jobs").join(&job.id);
    let t0 = Instant::now();
    let cursor = loop {
        let c = mlflow::read_cursor(&job_dir).unwrap();
        if let Some(c) = c.filter(|c| c.ended.is_some()) {
            break c;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "MLflow run never ended"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    drop(server);
    let h = history(&bin, &mlflow_server.uri, &cursor.run_id);
    assert_eq!(h.status, "FINISHED");
    let points = noiseda::runlog::read_metric_log(&job_dir.join("metrics.jsonl")).unwrap();
    assert_eq!(points.len(), 400);
    let got: Vec<(u64, i64)> = h.metrics["train/charbonnier"]
        .iter()
        .map(|m| (m.0, m.1))
        .collect();
    let want: Vec<(u64, i64)> = points
        .iter()
        .map(|p| (p.step, (p.wall * 1000.0).round() as i64))
        .collect();
    assert_eq!(got, want, "every point once, none missing");
}
