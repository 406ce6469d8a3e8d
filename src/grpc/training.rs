//! The `noiseda.v1.Training` gRPC service: thin handlers over the job manager (each call runs
//! on the blocking pool; none touches the store) and the metric stream that replays a job's
//! log and follows it.

use std::pin::Pin;
use std::sync::Arc;

use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use super::convert;
use crate::jobs::{Manager, Pick};
use crate::pb;
use crate::pb::training_server::Training;
use crate::{Error, Result};

/// Points a metric stream may buffer before it waits for the client.
const STREAM_CAPACITY: usize = 256;
/// Metric points read from the store per query.
const POINTS_PAGE: usize = 1000;
/// How often a stream of a job running on another replica looks for new points.
const STREAM_POLL: std::time::Duration = std::time::Duration::from_millis(250);

pub struct TrainingService {
    manager: Arc<Manager>,
    /// Becomes true when the server starts shutting down: open streams end.
    shutdown: watch::Receiver<bool>,
}

impl TrainingService {
    pub fn new(manager: Arc<Manager>, shutdown: watch::Receiver<bool>) -> Self {
        Self { manager, shutdown }
    }

    /// Runs `f` with the manager on the blocking pool.
    async fn call<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Arc<Manager>) -> Result<T> + Send + 'static,
    ) -> Result<T, Status> {
        let m = self.manager.clone();
        super::blocking("job manager", move || f(&m)).await
    }
}

#[tonic::async_trait]
impl Training for TrainingService {
    async fn start_job(
        &self,
        req: Request<pb::StartJobRequest>,
    ) -> Result<Response<pb::Job>, Status> {
        let req = req.into_inner();
        let document = convert::spec_document(req.spec)?;
        let job = self
            .call(move |m| m.submit(document, &req.request_id))
            .await?;
        Ok(Response::new(job.into()))
    }

    async fn get_job(&self, req: Request<pb::GetJobRequest>) -> Result<Response<pb::Job>, Status> {
        let id = req.into_inner().job_id;
        let job = self.call(move |m| m.job(&id)).await?;
        Ok(Response::new(job.into()))
    }

    async fn list_jobs(
        &self,
        req: Request<pb::ListJobsRequest>,
    ) -> Result<Response<pb::ListJobsResponse>, Status> {
        let req = req.into_inner();
        let state = convert::state_filter(req.state)?;
        let size = match req.page_size {
            0 => 50,
            n => n.min(500) as usize,
        };
        let before = match req.page_token.as_str() {
            "" => None,
            t => Some(t.parse::<i64>().map_err(|_| {
                Error::invalid_input(format!("page_token `{t}` was not returned by ListJobs"))
            })?),
        };
        let (jobs, next) = self.call(move |m| m.list(state, size, before)).await?;
        Ok(Response::new(pb::ListJobsResponse {
            jobs: jobs.into_iter().map(Into::into).collect(),
            next_page_token: next.map(|n| n.to_string()).unwrap_or_default(),
        }))
    }

    async fn cancel_job(
        &self,
        req: Request<pb::CancelJobRequest>,
    ) -> Result<Response<pb::Job>, Status> {
        let id = req.into_inner().job_id;
        let job = self.call(move |m| m.cancel(&id)).await?;
        Ok(Response::new(job.into()))
    }

    type StreamMetricsStream = Pin<Box<dyn Stream<Item = Result<pb::MetricPoint, Status>> + Send>>;

    async fn stream_metrics(
        &self,
        req: Request<pb::StreamMetricsRequest>,
    ) -> Result<Response<Self::StreamMetricsStream>, Status> {
        let req = req.into_inner();
        let id = req.job_id.clone();
        let job = self.call(move |m| m.job_for_stream(&id)).await?;
        let (tx, rx) = mpsc::channel(STREAM_CAPACITY);
        tokio::spawn(follow(
            self.manager.clone(),
            job.id,
            req.from_seq.max(1),
            req.history_only,
            self.shutdown.clone(),
            tx,
        ));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn list_checkpoints(
        &self,
        req: Request<pb::ListCheckpointsRequest>,
    ) -> Result<Response<pb::ListCheckpointsResponse>, Status> {
        let id = req.into_inner().job_id;
        let checkpoints = self
            .call(move |m| {
                let (all, best) = m.checkpoints(&id)?;
                Ok(all.iter().map(|c| convert::checkpoint(c, best)).collect())
            })
            .await?;
        Ok(Response::new(pb::ListCheckpointsResponse { checkpoints }))
    }

    async fn export_model(
        &self,
        req: Request<pb::ExportModelRequest>,
    ) -> Result<Response<pb::ExportModelResponse>, Status> {
        let req = req.into_inner();
        let pick = Pick::parse(&req.checkpoint)?;
        let weights = convert::weights(req.weights)?;
        let include = req.include_files;
        let (exported, files) = self
            .call(move |m| {
                let e = m.export(&req.job_id, pick, weights, &req.name)?;
                let files = if include {
                    artifact_files(&e.dir)?
                } else {
                    Vec::new()
                };
                Ok((e, files))
            })
            .await?;
        Ok(Response::new(pb::ExportModelResponse {
            model: Some((&exported.manifest).into()),
            path: exported.dir.display().to_string(),
            checkpoint_id: exported.checkpoint_id,
            files,
        }))
    }
}

/// The files of an artifact directory, for clients on other machines.
fn artifact_files(dir: &std::path::Path) -> Result<Vec<pb::ArtifactFile>> {
    [
        crate::artifact::MANIFEST_FILE,
        crate::artifact::WEIGHTS_FILE,
    ]
    .into_iter()
    .map(|name| {
        let path = dir.join(name);
        let data = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
        Ok(pb::ArtifactFile {
            name: name.to_string(),
            data,
        })
    })
    .collect()
}

/// Sends the job's stored points from seq `next` on, then (unless `history_only`) follows
/// it until it ends, the client goes away or the server shuts down: woken at once by a job
/// running here, polling the store for one running on another replica.
async fn follow(
    manager: Arc<Manager>,
    id: String,
    mut next: u64,
    history_only: bool,
    mut shutdown: watch::Receiver<bool>,
    tx: mpsc::Sender<Result<pb::MetricPoint, Status>>,
) {
    let mut live: Option<watch::Receiver<()>> = None;
    loop {
        let (m, job_id, subscribe) = (manager.clone(), id.clone(), live.is_none());
        let read = tokio::task::spawn_blocking(move || {
            // Subscribe, then read the state, then the points: a job seen ended has all its
            // points stored, and nothing stored after the read is missed by the wake-up.
            let live = if subscribe { m.follow(&job_id) } else { None };
            let (ended, points) = m.points(&job_id, next, POINTS_PAGE)?;
            Ok::<_, Error>((live, ended, points))
        })
        .await
        .unwrap_or_else(|e| Err(Error::unavailable(format!("metric read failed: {e}"))));
        let (fresh, ended, points) = match read {
            Ok(r) => r,
            Err(e) => {
                let _ = tx.send(Err(e.into())).await;
                return;
            }
        };
        if fresh.is_some() {
            live = fresh;
        }
        let full = points.len() == POINTS_PAGE;
        for p in points {
            if p.seq != next {
                if ended {
                    let _ = tx
                        .send(Err(Error::data(format!(
                            "job `{id}`: metric point {} follows {}; the store has a gap",
                            p.seq,
                            next - 1
                        ))
                        .into()))
                        .await;
                    return;
                }
                break; // not stored yet
            }
            if tx.send(Ok(convert::metric_point(p))).await.is_err() {
                return; // the client went away
            }
            next += 1;
        }
        if full {
            continue;
        }
        if history_only || ended {
            return;
        }
        let changed = async {
            match live.as_mut() {
                Some(l) => {
                    if l.changed().await.is_err() {
                        // The job stopped running here; poll from now on.
                        tokio::time::sleep(STREAM_POLL).await;
                    }
                }
                None => tokio::time::sleep(STREAM_POLL).await,
            }
        };
        tokio::select! {
            _ = changed => {}
            _ = async { let _ = shutdown.wait_for(|s| *s).await; } => {
                let _ = tx.send(Err(Status::unavailable(format!(
                    "the server is shutting down; reconnect with from_seq = {next}"
                )))).await;
                return;
            }
            _ = tx.closed() => return,
        }
    }
}
