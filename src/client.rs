//! The gRPC client behind `noiseda jobs …` and `noiseda plot --job`: submit, follow with a
//! progress bar (reconnecting from the last seq when the stream drops), list, get, cancel,
//! metrics, export and plot.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use sha2::{Digest, Sha256};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

use crate::grpc::auth::{KeyInterceptor, Remote};

use crate::config::JobSpec;
use crate::grpc::convert;
use crate::jobs::JobState;
use crate::pb;
use crate::pb::training_client::TrainingClient;
use crate::runlog::MetricPoint;
use crate::{Error, Result};

/// How long `--follow` keeps trying to reconnect before giving up.
const RECONNECT_FOR: Duration = Duration::from_secs(120);
/// Largest message the client accepts (exported artifacts come back in one message).
const MAX_MESSAGE: usize = 1 << 30;

/// A connected Training client.
pub struct Client {
    inner: TrainingClient<InterceptedService<Channel, KeyInterceptor>>,
    server: String,
}

fn status(server: &str, s: tonic::Status) -> Error {
    let msg = format!("{}: {}", server, s.message());
    match s.code() {
        tonic::Code::InvalidArgument => Error::invalid_input(msg),
        tonic::Code::NotFound => Error::NotFound(msg),
        tonic::Code::FailedPrecondition => Error::precondition(msg),
        tonic::Code::AlreadyExists => Error::Conflict(msg),
        tonic::Code::Unauthenticated => Error::Unauthenticated(msg),
        tonic::Code::PermissionDenied => Error::Denied(msg),
        tonic::Code::ResourceExhausted => Error::Overloaded(msg),
        _ => Error::unavailable(format!("{msg} ({:?})", s.code())),
    }
}

impl Client {
    pub async fn connect(remote: &Remote) -> Result<Self> {
        let channel = remote.channel().await?;
        Ok(Self {
            inner: TrainingClient::with_interceptor(channel, remote.interceptor()?)
                .max_decoding_message_size(MAX_MESSAGE)
                .max_encoding_message_size(MAX_MESSAGE),
            server: remote.url(),
        })
    }

    fn err(&self, s: tonic::Status) -> Error {
        status(&self.server, s)
    }

    /// Submits a spec file; relative data paths are made absolute against the file's folder
    /// (as `noiseda train` reads them).
    pub async fn submit(&mut self, file: &Path, request_id: &str) -> Result<pb::Job> {
        let text = std::fs::read_to_string(file).map_err(|e| Error::io(file, e))?;
        let mut spec: JobSpec = if file.extension().is_some_and(|e| e == "json") {
            serde_json::from_str(&text)
                .map_err(|e| Error::invalid(file.display().to_string(), e.to_string()))?
        } else {
            JobSpec::from_toml(&text)
                .map_err(|e| Error::invalid(file.display().to_string(), e.to_string()))?
        };
        let base = file
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        let base = std::fs::canonicalize(&base).map_err(|e| Error::io(&base, e))?;
        spec.resolve_paths(&base);
        let req = pb::StartJobRequest {
            spec: Some(pb::JobSpec {
                document: Some(pb::job_spec::Document::Toml(spec.to_toml())),
            }),
            request_id: request_id.to_string(),
        };
        let r = self.inner.start_job(req).await;
        Ok(r.map_err(|s| self.err(s))?.into_inner())
    }

    pub async fn get(&mut self, id: &str) -> Result<pb::Job> {
        let r = self
            .inner
            .get_job(pb::GetJobRequest {
                job_id: id.to_string(),
            })
            .await;
        Ok(r.map_err(|s| self.err(s))?.into_inner())
    }

    /// Every job (all pages), newest first.
    pub async fn list(&mut self, state: pb::JobState) -> Result<Vec<pb::Job>> {
        let mut all = Vec::new();
        let mut token = String::new();
        loop {
            let r = self
                .inner
                .list_jobs(pb::ListJobsRequest {
                    state: state as i32,
                    page_size: 200,
                    page_token: token.clone(),
                })
                .await
                .map_err(|s| self.err(s))?
                .into_inner();
            all.extend(r.jobs);
            if r.next_page_token.is_empty() {
                return Ok(all);
            }
            token = r.next_page_token;
        }
    }

    pub async fn cancel(&mut self, id: &str) -> Result<pb::Job> {
        let r = self
            .inner
            .cancel_job(pb::CancelJobRequest {
                job_id: id.to_string(),
            })
            .await;
        Ok(r.map_err(|s| self.err(s))?.into_inner())
    }

    /// Every metric point logged so far, from `from_seq`.
    pub async fn history(&mut self, id: &str, from_seq: u64) -> Result<Vec<MetricPoint>> {
        let mut stream = self
            .inner
            .stream_metrics(pb::StreamMetricsRequest {
                job_id: id.to_string(),
                from_seq,
                history_only: true,
            })
            .await
            .map_err(|s| self.err(s))?
            .into_inner();
        let mut out = Vec::new();
        while let Some(p) = stream.message().await.map_err(|s| self.err(s))? {
            out.push(convert::metric_point_from_pb(p));
        }
        Ok(out)
    }

    pub async fn checkpoints(&mut self, id: &str) -> Result<Vec<pb::Checkpoint>> {
        let r = self
            .inner
            .list_checkpoints(pb::ListCheckpointsRequest {
                job_id: id.to_string(),
            })
            .await;
        Ok(r.map_err(|s| self.err(s))?.into_inner().checkpoints)
    }

    /// Exports a checkpoint's restorer on the server and writes the artifact into `out`
    /// (checked against the manifest's sha256).
    pub async fn export(
        &mut self,
        id: &str,
        checkpoint: &str,
        weights: pb::Weights,
        name: &str,
        out: &Path,
    ) -> Result<pb::ExportModelResponse> {
        let r = self
            .inner
            .export_model(pb::ExportModelRequest {
                job_id: id.to_string(),
                checkpoint: checkpoint.to_string(),
                weights: weights as i32,
                name: name.to_string(),
                include_files: true,
            })
            .await
            .map_err(|s| self.err(s))?
            .into_inner();
        let sha = r
            .model
            .as_ref()
            .map(|m| m.sha256.clone())
            .unwrap_or_default();
        let weights_file = r
            .files
            .iter()
            .find(|f| f.name == crate::artifact::WEIGHTS_FILE)
            .ok_or_else(|| Error::artifact("the server sent no weights file"))?;
        let got = format!("{:x}", Sha256::digest(&weights_file.data));
        if got != sha {
            return Err(Error::artifact(format!(
                "weights arrived with sha256 {got}, the manifest says {sha}"
            )));
        }
        std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
        for f in &r.files {
            if f.name.contains('/') || f.name.contains("..") {
                return Err(Error::artifact(format!(
                    "bad file name `{}` from the server",
                    f.name
                )));
            }
            let path = out.join(&f.name);
            std::fs::write(&path, &f.data).map_err(|e| Error::io(&path, e))?;
        }
        Ok(r)
    }
}

/// The name of a job state off the wire ("unspecified" for one this client does not know).
pub fn state_name(state: i32) -> &'static str {
    JobState::from_i32(state).map_or("unspecified", JobState::as_str)
}

/// `queued`, `running`, … (or `all`) to the proto enum.
pub fn parse_state(s: &str) -> Result<pb::JobState> {
    let s = s.to_ascii_lowercase();
    if s == "all" {
        return Ok(pb::JobState::Unspecified);
    }
    JobState::parse(&s).map(convert::job_state).ok_or_else(|| {
        Error::invalid_input(format!(
            "state `{s}`: expected all, queued, running, cancelling, completed, failed or cancelled"
        ))
    })
}

pub fn is_terminal(state: i32) -> bool {
    JobState::from_i32(state).is_some_and(JobState::is_terminal)
}

/// Follows a job until it ends: a progress bar with the latest losses, reconnecting from the
/// last seq when the stream or the server goes away. Returns the finished job.
pub async fn follow(remote: &Remote, id: &str, progress: bool) -> Result<pb::Job> {
    let mut client = Client::connect(remote).await?;
    let job = client.get(id).await?;
    let total = job.progress.as_ref().map_or(0, |p| p.total_steps);
    let bar = if progress {
        indicatif::ProgressBar::new(total)
    } else {
        indicatif::ProgressBar::hidden()
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} {per_sec} ETA {eta} {msg}",
        )
        .expect("valid template. This is a bug."),
    );
    bar.set_position(job.progress.as_ref().map_or(0, |p| p.step));
    let mut next = 1;
    let mut latest = BTreeMap::<String, f64>::new();
    let mut lost_since: Option<std::time::Instant> = None;
    loop {
        let attempt = async {
            let mut c = Client::connect(remote).await?;
            let mut stream = c
                .inner
                .stream_metrics(pb::StreamMetricsRequest {
                    job_id: id.to_string(),
                    from_seq: next,
                    history_only: false,
                })
                .await
                .map_err(|s| c.err(s))?
                .into_inner();
            lost_since = None;
            while let Some(p) = stream.message().await.map_err(|s| c.err(s))? {
                next = p.seq + 1;
                bar.set_position(p.step);
                let key = if p.split == pb::Split::Val as i32 {
                    format!("val {}", p.series)
                } else {
                    p.series.clone()
                };
                let shown = key == "loss" || key.starts_with("val ") || key == "l_noise";
                latest.insert(key, p.value);
                if shown {
                    let msg = latest
                        .iter()
                        .filter(|(k, _)| *k == "loss" || k.starts_with("val ") || *k == "l_noise")
                        .map(|(k, v)| format!("{k} {v:.4}"))
                        .collect::<Vec<_>>()
                        .join("  ");
                    bar.set_message(msg);
                }
            }
            c.get(id).await
        };
        match attempt.await {
            Ok(job) if is_terminal(job.state) => {
                bar.finish_and_clear();
                return Ok(job);
            }
            Ok(_) => {}
            Err(e @ (Error::NotFound(_) | Error::Invalid { .. })) => return Err(e),
            Err(e) => {
                let since = *lost_since.get_or_insert_with(std::time::Instant::now);
                if since.elapsed() > RECONNECT_FOR {
                    bar.abandon();
                    return Err(Error::unavailable(format!(
                        "lost job {id} at seq {next} for {} s: {e}; `noiseda jobs submit` is \
                         idempotent with --request-id, and `noiseda jobs get {id}` shows the job",
                        RECONNECT_FOR.as_secs()
                    )));
                }
                let msg = format!("stream lost ({e}); reconnecting from seq {next}");
                if bar.is_hidden() {
                    eprintln!("{msg}");
                } else {
                    bar.println(msg);
                }
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// The output format a file name asks for (by extension).
fn format_for(path: &Path) -> Result<pb::OutputFormat> {
    let ext = path
        .extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    match ext.as_str() {
        "png" => Ok(pb::OutputFormat::Png),
        "jpg" | "jpeg" => Ok(pb::OutputFormat::Jpeg),
        "webp" => Ok(pb::OutputFormat::Webp),
        _ => Err(Error::invalid_input(format!(
            "output {} needs a png, jpg or webp extension",
            path.display()
        ))),
    }
}

/// A Restore client without credentials (the message limits of [`restore_remote`]).
pub type RestoreClient = pb::restore_client::RestoreClient<tonic::transport::Channel>;

/// Connects a [`RestoreClient`] to `url` (e.g. `http://127.0.0.1:50051`).
pub async fn restore_client(url: &str) -> Result<RestoreClient> {
    let channel = tonic::transport::Channel::from_shared(url.to_string())
        .map_err(|e| Error::invalid_input(format!("server address {url}: {e}")))?
        .connect()
        .await
        .map_err(|e| Error::unavailable(format!("{url}: {e}")))?;
    Ok(pb::restore_client::RestoreClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE)
        .max_encoding_message_size(MAX_MESSAGE))
}

/// A client of the Open Inference Protocol's gRPC service (`inference.GRPCInferenceService`).
pub type InferenceClient = pb::inference::grpc_inference_service_client::GrpcInferenceServiceClient<
    tonic::transport::Channel,
>;

/// Connects an [`InferenceClient`] to `url`.
pub async fn inference_client(url: &str) -> Result<InferenceClient> {
    let channel = tonic::transport::Channel::from_shared(url.to_string())
        .map_err(|e| Error::invalid_input(format!("server address {url}: {e}")))?
        .connect()
        .await
        .map_err(|e| Error::unavailable(format!("{url}: {e}")))?;
    Ok(InferenceClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE)
        .max_encoding_message_size(MAX_MESSAGE))
}

/// Restores a file or a folder through a server's Restore service, `concurrency` requests at a
/// time; returns the files written.
pub async fn restore_remote(
    remote: &Remote,
    model: &str,
    input: &Path,
    output: &Path,
    concurrency: usize,
    tile: Option<usize>,
    progress: bool,
) -> Result<Vec<PathBuf>> {
    let plan = crate::infer::restore_plan(input, output)?;
    for (_, dst) in &plan {
        format_for(dst)?;
    }
    let url = remote.url();
    let channel = remote.channel().await?;
    let client =
        pb::restore_client::RestoreClient::with_interceptor(channel, remote.interceptor()?)
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE);
    let bar = if progress && plan.len() > 1 {
        indicatif::ProgressBar::new(plan.len() as u64)
    } else {
        indicatif::ProgressBar::hidden()
    };
    let permits = std::sync::Arc::new(tokio::sync::Semaphore::new(concurrency.max(1)));
    let mut tasks = tokio::task::JoinSet::new();
    let mut written = Vec::new();
    for (src, dst) in plan {
        let permit = permits
            .clone()
            .acquire_owned()
            .await
            .expect("the semaphore is never closed");
        let mut client = client.clone();
        let (model, url) = (model.to_string(), url.clone());
        tasks.spawn(async move {
            let _permit = permit;
            let data = std::fs::read(&src).map_err(|e| Error::io(&src, e))?;
            let req = pb::RestoreRequest {
                images: vec![pb::ImageInput {
                    image: Some(pb::image_input::Image::Encoded(pb::EncodedImage { data })),
                }],
                model,
                output_format: format_for(&dst)? as i32,
                tile_size: tile.unwrap_or(0) as u32,
                ..Default::default()
            };
            let resp = client
                .restore(req)
                .await
                .map_err(|s| status(&url, s))
                .map_err(|e| Error::invalid_input(format!("{}: {e}", src.display())))?
                .into_inner();
            let img = resp.images.into_iter().next().ok_or_else(|| {
                Error::unavailable(format!("{}: the server returned no image", src.display()))
            })?;
            crate::fsio::write_atomic(&dst, &img.data)?;
            Ok::<_, Error>(dst)
        });
        while let Some(done) = tasks.try_join_next() {
            written
                .push(done.map_err(|e| Error::unavailable(format!("restore task failed: {e}")))??);
            bar.inc(1);
        }
    }
    while let Some(done) = tasks.join_next().await {
        written.push(done.map_err(|e| Error::unavailable(format!("restore task failed: {e}")))??);
        bar.inc(1);
    }
    bar.finish_and_clear();
    Ok(written)
}
