//! A real `noiseda serve` process on 127.0.0.1:0 with a temp data dir, and a client for it.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use noiseda::pb;
use noiseda::pb::training_client::TrainingClient;
use tonic::transport::Channel;

pub struct Server {
    child: Child,
    pub addr: String,
    pub metrics: String,
    /// `http://ADDR` of the KServe v2 REST binding, when started with `--http-listen`.
    pub http: Option<String>,
    pub log: PathBuf,
}

impl Server {
    /// Starts `noiseda serve` on 127.0.0.1:0 with `data_dir` (stderr goes to a log file
    /// next to it).
    pub fn start(data_dir: &Path, extra: &[&str]) -> Self {
        Self::start_on("127.0.0.1:0", data_dir, extra)
    }

    /// The same on a given address (to restart a server where its clients expect it).
    pub fn start_on(listen: &str, data_dir: &Path, extra: &[&str]) -> Self {
        Self::start_with(listen, data_dir, extra, &[], None)
    }

    /// With extra environment variables and, optionally, a bash prelude run before `exec`
    /// (e.g. `ulimit -f 64` to limit file sizes).
    pub fn start_with(
        listen: &str,
        data_dir: &Path,
        extra: &[&str],
        env: &[(&str, &str)],
        prelude: Option<&str>,
    ) -> Self {
        let log = data_dir.with_extension(format!(
            "{}.log",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        let mut cmd = match prelude {
            Some(p) => {
                let mut c = Command::new("bash");
                c.args([
                    "-c",
                    &format!("{p}; exec \"$0\" \"$@\""),
                    env!("CARGO_BIN_EXE_noiseda"),
                ]);
                c
            }
            None => Command::new(env!("CARGO_BIN_EXE_noiseda")),
        };
        let mut child = cmd
            .args(["serve", "--listen", listen])
            .args(["--metrics-listen", "127.0.0.1:0"])
            .arg("--data-dir")
            .arg(data_dir)
            .args(extra)
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        // "noiseda serve: listening on ADDR, metrics on http://ADDR/metrics[, KServe v2 REST
        // on http://ADDR]"
        let words: Vec<&str> = line.split_whitespace().collect();
        if !matches!(words.len(), 8 | 13) || words[2] != "listening" {
            let _ = child.kill();
            panic!(
                "server did not start: {line:?}\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        Self {
            addr: format!("http://{}", words[4].trim_end_matches(',')),
            metrics: words[7].trim_end_matches(',').to_string(),
            http: words.get(12).map(|w| w.to_string()),
            log,
            child,
        }
    }

    pub async fn client(&self) -> TrainingClient<Channel> {
        TrainingClient::connect(self.addr.clone())
            .await
            .unwrap()
            .max_decoding_message_size(1 << 30)
    }

    /// SIGKILL: no shutdown, no final checkpoint.
    pub fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// SIGTERM, then waits for the exit; returns how long it took.
    pub fn terminate(mut self) -> Duration {
        let t0 = Instant::now();
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        let status = self.child.wait().unwrap();
        assert!(status.success(), "serve exited with {status}");
        t0.elapsed()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for the process to exit (after a signal sent elsewhere); returns how long it took.
    pub fn wait(mut self) -> Duration {
        let t0 = Instant::now();
        let status = self.child.wait().unwrap();
        assert!(status.success(), "serve exited with {status}");
        t0.elapsed()
    }

    /// Waits for the process to exit by itself; returns its status.
    pub fn exit_status(mut self) -> std::process::ExitStatus {
        self.child.wait().unwrap()
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `noiseda serve` on loopback ports with `data_dir` and `extra` flags, expecting it to
/// refuse to start; returns what it printed on stderr.
pub fn serve_refuses(data_dir: &Path, extra: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_noiseda"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "127.0.0.1:0",
        ])
        .arg("--data-dir")
        .arg(data_dir)
        .args(extra)
        .env("RUST_BACKTRACE", "0")
        .output()
        .unwrap();
    let msg = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !out.status.success(),
        "serve {extra:?} exited successfully: {msg}"
    );
    msg
}

/// A TOML job spec for the server: the tiny U-Net on `clean`, with optional validation pairs.
pub fn tiny_toml(
    name: &str,
    clean: &Path,
    steps: u64,
    ckpt_every: u64,
    val: Option<(&Path, &Path)>,
) -> String {
    let mut t = format!(
        r#"
name = "{name}"
seed = 3
steps = {steps}
[restorer]
arch = "unet"
width = 8
depth = 3
[data]
patch = 32
batch = 2
[data.synthetic]
clean = "{}"
degradation = {{ kind = "awgn", sigma = [5, 30] }}
[checkpoint]
every = {ckpt_every}
keep_last = 2
"#,
        clean.display()
    );
    if let Some((lq, gt)) = val {
        t += &format!(
            "[data.val]\nlq = \"{}\"\ngt = \"{}\"\n[validation]\nevery = {ckpt_every}\n",
            lq.display(),
            gt.display()
        );
    }
    t
}

pub fn start_request(toml: &str, request_id: &str) -> pb::StartJobRequest {
    pb::StartJobRequest {
        spec: Some(pb::JobSpec {
            document: Some(pb::job_spec::Document::Toml(toml.to_string())),
        }),
        request_id: request_id.to_string(),
    }
}

pub async fn get(c: &mut TrainingClient<Channel>, id: &str) -> pb::Job {
    c.get_job(pb::GetJobRequest { job_id: id.into() })
        .await
        .unwrap()
        .into_inner()
}

/// Polls until `done(job)` or the timeout.
pub async fn wait_for(
    c: &mut TrainingClient<Channel>,
    id: &str,
    what: &str,
    done: impl Fn(&pb::Job) -> bool,
) -> pb::Job {
    let t0 = Instant::now();
    loop {
        let job = get(c, id).await;
        if done(&job) {
            return job;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "timed out waiting for {what}: {job:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Streams points from `from_seq` (following) until the stream ends, or until `stop_at` seq.
pub async fn stream(
    c: &mut TrainingClient<Channel>,
    id: &str,
    from_seq: u64,
    stop_at: Option<u64>,
) -> Result<Vec<pb::MetricPoint>, tonic::Status> {
    let mut s = c
        .stream_metrics(pb::StreamMetricsRequest {
            job_id: id.into(),
            from_seq,
            history_only: false,
        })
        .await?
        .into_inner();
    let mut out = Vec::new();
    while let Some(p) = s.message().await? {
        let seq = p.seq;
        out.push(p);
        if stop_at.is_some_and(|s| seq >= s) {
            break;
        }
    }
    Ok(out)
}

pub fn state(job: &pb::Job) -> pb::JobState {
    pb::JobState::try_from(job.state).unwrap()
}

/// GET over plain HTTP/1.1 (the metrics endpoint) with tokio alone.
pub async fn http_get(url: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rest = url.strip_prefix("http://").unwrap();
    let (host, path) = rest.split_once('/').unwrap();
    let mut s = tokio::net::TcpStream::connect(host).await.unwrap();
    s.write_all(
        format!("GET /{path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    out
}

/// One plain HTTP/1.1 request with tokio alone: `(status, body)`. `auth` is sent as
/// `Authorization: Bearer …`.
pub async fn http_call(method: &str, url: &str, auth: Option<&str>, body: &[u8]) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rest = url.strip_prefix("http://").unwrap();
    let (host, path) = rest.split_once('/').unwrap();
    let mut s = tokio::net::TcpStream::connect(host).await.unwrap();
    let auth = auth
        .map(|k| format!("Authorization: Bearer {k}\r\n"))
        .unwrap_or_default();
    let head = format!(
        "{method} /{path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n{auth}\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).await.unwrap();
    // The server may answer (and close) before reading a body it refuses.
    let _ = s.write_all(body).await;
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out).await;
    let out = String::from_utf8_lossy(&out).to_string();
    let status = out
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP status in {out:?}"));
    let body = out
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_string();
    (status, body)
}
