//! The job manager: validates and queues training jobs, claims queued ones under a renewed
//! lease when a device is free, runs each on its own OS thread, records what it reports
//! (through a bounded channel) in the store and the metrics, cancels, and exports their
//! restorers; it is also what the gRPC layer reads jobs, checkpoints and metric points through
//! (handlers never touch the store). The leases and take-overs are in `lease.rs`.
//! Blocking; call from job threads or `spawn_blocking`.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU8, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::artifact::{self, Manifest};
use crate::config::{JobSpec, Weights};
use crate::jobs::config::{JobsConfig, StorageConfig};
use crate::jobs::store::{now_ms, CheckpointRecord, JobRecord, ProgressUpdate, Store};
use crate::jobs::Telemetry;
use crate::jobs::{JobState, SpecDocument};
use crate::runlog::MetricPoint;
use crate::train::{self, checkpoint, Control, Event, StopReason, TrainOptions, TrainSummary};
use crate::{Error, Result};

mod lease;

/// Events a running job may queue before its thread waits for the recorder.
const EVENT_CAPACITY: usize = 256;
/// Progress is written to the store at most this often (and at every checkpoint and the end).
const PROGRESS_EVERY: Duration = Duration::from_secs(1);
/// Metric points are written to the store in batches at most this often (and before every
/// progress write, checkpoint and the end): the delay a metric stream may see.
const POINTS_EVERY: Duration = Duration::from_millis(200);

/// A job with a thread.
pub(super) struct Running {
    device: String,
    pub(super) stop: Arc<AtomicU8>,
    /// Its lease went to another replica: stop without recording anything more.
    pub(super) lost: Arc<AtomicBool>,
    /// The run's write fence ([`Control::fence_ms`]), moved forward at each renewal.
    pub(super) fence: Arc<AtomicI64>,
}

#[derive(Default)]
pub(super) struct Inner {
    pub(super) running: HashMap<String, Running>,
    /// One per job running here: signalled when new metric points are stored, dropped when
    /// the job stops here, to wake this server's metric streams at once (streams of jobs on
    /// other replicas poll the store).
    live: HashMap<String, watch::Sender<()>>,
}

/// Which checkpoint an export takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pick {
    Latest,
    Best,
    Step(u64),
}

impl Pick {
    /// "" or "latest", "best", "step-00000100" or "100".
    pub fn parse(s: &str) -> Result<Self> {
        let s = s.trim();
        match s {
            "" | "latest" => Ok(Pick::Latest),
            "best" => Ok(Pick::Best),
            _ => s
                .strip_prefix("step-")
                .unwrap_or(s)
                .parse()
                .map(Pick::Step)
                .map_err(|_| {
                    Error::invalid_input(format!(
                        "checkpoint `{s}`: expected latest, best, a checkpoint id (step-00000100) or a step"
                    ))
                }),
        }
    }
}

/// An export: the artifact's manifest and its directory.
#[derive(Debug, Clone)]
pub struct Exported {
    pub manifest: Manifest,
    pub dir: PathBuf,
    pub checkpoint_id: String,
}

pub struct Manager {
    /// Where jobs live: `<data_dir>/jobs/<id>/` (shared by every replica of a shared store).
    storage: StorageConfig,
    /// Devices, CPU slots and the lease.
    pub(super) jobs: JobsConfig,
    /// This server's name in job leases ([`JobsConfig::replica_id`], resolved once): a server
    /// restarted under the same name takes its jobs back at once instead of waiting for their
    /// leases to run out.
    pub(super) replica_id: String,
    /// Exported models go to `<model_dir>/<name>/`.
    model_dir: PathBuf,
    /// Canonical directories job data paths must lie in (empty: anywhere).
    data_roots: Vec<PathBuf>,
    pub(super) store: Store,
    telemetry: Arc<dyn Telemetry>,
    inner: Mutex<Inner>,
    /// Signalled whenever a job thread ends.
    ended: Condvar,
    shutting_down: AtomicBool,
}

pub fn checkpoint_id(step: u64) -> String {
    format!("step-{step:08}")
}

impl Manager {
    /// Opens the store, takes back the jobs this server's previous run held (all running
    /// jobs, with SQLite) — back to the queue when they have a checkpoint, FAILED with the
    /// reason when not — and starts the thread that renews leases and claims work.
    /// The sections have been validated ([`crate::grpc::ServerConfig::validate`]).
    pub fn open(
        storage: &StorageConfig,
        jobs: &JobsConfig,
        telemetry: Arc<dyn Telemetry>,
    ) -> Result<Arc<Self>> {
        let (storage, jobs) = (storage.clone(), jobs.clone());
        let url = storage.store_url()?;
        let replica_id = jobs.replica_id();
        tracing::info!(store = %url.redacted(), replica = %replica_id, "job store");
        let data_roots = jobs.canonical_data_roots()?;
        let model_dir = storage.model_dir();
        for dir in [&storage.data_dir, &model_dir] {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        }
        let probe = storage.data_dir.join(".write-probe");
        std::fs::write(&probe, b"ok").map_err(|e| Error::io(&probe, e))?;
        let _ = std::fs::remove_file(&probe);
        let store = Store::connect(&url)?;
        let mgr = Arc::new(Self {
            storage,
            jobs,
            replica_id,
            model_dir,
            data_roots,
            store,
            telemetry,
            inner: Mutex::new(Inner::default()),
            ended: Condvar::new(),
            shutting_down: AtomicBool::new(false),
        });
        let mine = if mgr.store.is_shared() {
            Some(mgr.replica_id.as_str())
        } else {
            None // one server per SQLite file: every lease in it was this server's
        };
        mgr.store.expire_leases(mine)?;
        mgr.take_over_expired()?;
        mgr.refresh_gauges();
        let weak = Arc::downgrade(&mgr);
        let tick = (mgr.jobs.lease() / 4).clamp(Duration::from_millis(50), Duration::from_secs(1));
        std::thread::Builder::new()
            .name("jobs-lease".into())
            .spawn(move || lease::coordinate(weak, tick))
            .map_err(|e| Error::unavailable(format!("could not start the lease thread: {e}")))?;
        Ok(mgr)
    }

    pub(super) fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn job_dir(&self, id: &str) -> PathBuf {
        self.storage.data_dir.join("jobs").join(id)
    }

    pub fn metric_log(&self, id: &str) -> PathBuf {
        self.job_dir(id).join("metrics.jsonl")
    }

    /// Copies the job's metric log into the store (points already there are kept): the log
    /// is written first, so after a crash it may hold points the store missed.
    pub fn backfill_points(&self, id: &str) -> Result<()> {
        let points = crate::runlog::read_metric_log(&self.metric_log(id))?;
        if points.last().map_or(0, |p| p.seq) > self.store.last_point(id)? {
            for chunk in points.chunks(500) {
                self.store.add_points(id, chunk)?;
            }
        }
        Ok(())
    }

    /// Rebuilds a job's checkpoint index from its directory.
    pub(super) fn reindex(&self, id: &str) -> Result<Vec<CheckpointRecord>> {
        let all = checkpoint::list(&self.job_dir(id).join("checkpoints"))?
            .into_iter()
            .filter_map(|(step, dir)| {
                let meta = checkpoint::read_meta(&dir).ok()?;
                Some(CheckpointRecord {
                    step,
                    path: dir,
                    saved_ms: meta.saved_unix as i64 * 1000,
                    metrics: meta.metrics,
                })
            })
            .collect::<Vec<_>>();
        self.store.reindex_checkpoints(id, &all)?;
        Ok(all)
    }

    /// A job that must exist.
    pub fn job(&self, id: &str) -> Result<JobRecord> {
        self.store.job(id)
    }

    /// Newest first: up to `limit` jobs (optionally in one state) older than the page key
    /// `before`; returns them with the key to continue from when more may follow.
    pub fn list(
        &self,
        state: Option<JobState>,
        limit: usize,
        before: Option<i64>,
    ) -> Result<(Vec<JobRecord>, Option<i64>)> {
        self.store.list(state, limit, before)
    }

    /// A job's checkpoints, oldest first, and the step of the best one (by
    /// [`checkpoint::BEST_METRIC`]), if any has it.
    pub fn checkpoints(&self, id: &str) -> Result<(Vec<CheckpointRecord>, Option<u64>)> {
        self.store.job(id)?;
        let all = self.store.checkpoints(id)?;
        let paths: Vec<_> = all.iter().map(|c| (c.step, c.path.clone())).collect();
        let best = checkpoint::best(&paths);
        Ok((all, best))
    }

    /// A job about to be streamed: points its log has and the store missed (a crash, a store
    /// from before metric points were stored) are copied in first.
    pub fn job_for_stream(&self, id: &str) -> Result<JobRecord> {
        let job = self.store.job(id)?;
        if job.last_seq > self.store.last_point(id)? {
            self.backfill_points(id)?;
        }
        Ok(job)
    }

    /// Whether the job has ended, and up to `limit` of its metric points from seq `from`:
    /// read in that order, so a job seen ended has all its points in the answer's reach.
    pub fn points(&self, id: &str, from: u64, limit: usize) -> Result<(bool, Vec<MetricPoint>)> {
        let ended = self.store.job(id)?.state.is_terminal();
        Ok((ended, self.store.points(id, from, limit)?))
    }

    /// Validates a spec document (every problem listed; data paths must exist here) and
    /// queues the job; a repeated request id returns the first job.
    pub fn submit(self: &Arc<Self>, document: SpecDocument, request_id: &str) -> Result<JobRecord> {
        if self.shutting_down.load(Ordering::Acquire) {
            return Err(Error::unavailable("the server is shutting down"));
        }
        if let Some(existing) = self.store.by_request_id(request_id)? {
            return Ok(existing);
        }
        let (text, mut spec) = document.parse()?;
        let base = std::env::current_dir().map_err(|e| Error::io(".", e))?;
        spec.resolve_paths(&base);
        if spec.tracking.mlflow_uri.is_none() {
            spec.tracking.mlflow_uri = self.jobs.mlflow_uri.clone();
        }
        let mut problems = spec.problems();
        if self.data_roots.is_empty() {
            problems.extend(spec.missing_paths());
        } else {
            problems.extend(spec.confine_paths(&self.data_roots));
        }
        if !self.jobs.devices.contains(&spec.device) {
            problems.push(Error::invalid(
                "device",
                format!(
                    "`{}` is not one of this server's devices ({})",
                    spec.device,
                    self.jobs.devices.join(", ")
                ),
            ));
        }
        Error::from_problems(problems)?;
        let id = uuid::Uuid::new_v4().simple().to_string();
        let record = JobRecord {
            id: id.clone(),
            request_id: request_id.to_string(),
            name: spec.name.clone(),
            state: JobState::Queued,
            device: spec.device.clone(),
            submitted_spec: text,
            resolved_spec: spec.to_toml(),
            created_ms: now_ms(),
            started_ms: None,
            finished_ms: None,
            last_error: String::new(),
            step: 0,
            total_steps: spec.steps,
            steps_per_second: 0.0,
            last_seq: 0,
            restarts: 0,
            metrics: BTreeMap::new(),
            owner: String::new(),
            lease_until_ms: 0,
        };
        let (job, new) = self.store.insert(&record)?;
        if new {
            tracing::info!(job = %job.id, name = %job.name, device = %job.device, "queued");
            self.refresh_gauges();
            self.schedule()?;
        }
        self.store.job(&job.id)
    }

    /// Takes over jobs whose lease ran out, then claims queued jobs (oldest first, from any
    /// replica's submissions) while this server has a free slot on their device.
    pub fn schedule(self: &Arc<Self>) -> Result<()> {
        if self.shutting_down.load(Ordering::Acquire) {
            return Ok(());
        }
        self.take_over_expired()?;
        loop {
            let mut inner = self.inner();
            if self.shutting_down.load(Ordering::Acquire) {
                break;
            }
            let free: Vec<String> = self
                .jobs
                .devices
                .iter()
                .filter(|d| {
                    let busy = inner.running.values().filter(|r| &r.device == *d).count();
                    busy < if d.as_str() == "cpu" {
                        self.jobs.cpu_jobs
                    } else {
                        1
                    }
                })
                .cloned()
                .collect();
            let Some(job) = self
                .store
                .claim(&self.replica_id, &free, self.lease_end())?
            else {
                break;
            };
            let id = job.id.clone();
            if let Err(e) = self.start(&mut inner, job) {
                tracing::error!(job = %id, error = %e, "could not start");
                inner.running.remove(&id);
                inner.live.remove(&id);
                self.store.finish(
                    &id,
                    &self.replica_id,
                    JobState::Failed,
                    Some(&format!("could not start: {e}")),
                )?;
            }
        }
        self.refresh_gauges();
        Ok(())
    }

    /// Marks a job RUNNING and spawns its training thread and its recorder thread.
    fn start(self: &Arc<Self>, inner: &mut Inner, job: JobRecord) -> Result<()> {
        let spec = JobSpec::from_toml(&job.resolved_spec)
            .map_err(|e| Error::invalid("resolved_spec", e.to_string()))?;
        let out = self.job_dir(&job.id);
        let resume = checkpoint::latest(&out.join("checkpoints"))?.is_some();
        if resume {
            self.backfill_points(&job.id)?;
        }
        let stop = Arc::new(AtomicU8::new(StopReason::None as u8));
        let fence = Arc::new(AtomicI64::new(self.fence(job.lease_until_ms)));
        let (tx, rx) = tokio::sync::mpsc::channel(EVENT_CAPACITY);
        let (done_tx, done_rx) = std::sync::mpsc::sync_channel(1);
        let opts = TrainOptions {
            out,
            resume,
            progress: false,
            control: Some(Control {
                stop: stop.clone(),
                events: tx,
                fence_ms: fence.clone(),
            }),
            job_id: Some(job.id.clone()),
        };
        let lost = Arc::new(AtomicBool::new(false));
        inner.running.insert(
            job.id.clone(),
            Running {
                device: job.device.clone(),
                stop,
                lost: lost.clone(),
                fence,
            },
        );
        inner.live.insert(job.id.clone(), watch::channel(()).0);
        tracing::info!(job = %job.id, resume, "starting");
        let id = job.id.clone();
        let spawn = std::thread::Builder::new()
            .name(format!("job-{}", &id[..8.min(id.len())]))
            .spawn(move || {
                let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    train::run(&spec, &opts)
                }))
                .unwrap_or_else(|panic| {
                    let msg = panic
                        .downcast_ref::<String>()
                        .cloned()
                        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                        .unwrap_or_else(|| "unknown panic".into());
                    Err(Error::internal(format!("training panicked: {msg}")))
                });
                drop(opts);
                let _ = done_tx.send(result);
            });
        if let Err(e) = spawn {
            return Err(Error::unavailable(format!("could not start a thread: {e}")));
        }
        let mgr = self.clone();
        let recorder = std::thread::Builder::new()
            .name(format!("rec-{}", &id[..8.min(id.len())]))
            .spawn(move || mgr.record(job, lost, rx, done_rx));
        if let Err(e) = recorder {
            tracing::error!(error = %e, "could not start a recorder thread");
        }
        Ok(())
    }

    /// The recorder of one job: drains its events into the store, the live streams and the
    /// metrics, then records how it ended and frees its device. One function of ~150 lines on
    /// purpose: the event loop's closures share the pending points, the progress and the
    /// `lost` flag, and the end must see exactly what the loop left.
    fn record(
        self: Arc<Self>,
        job: JobRecord,
        lost: Arc<AtomicBool>,
        mut events: tokio::sync::mpsc::Receiver<Event>,
        done: std::sync::mpsc::Receiver<Result<TrainSummary>>,
    ) {
        let id = job.id.clone();
        let mut progress = ProgressUpdate {
            step: job.step,
            total_steps: job.total_steps,
            steps_per_second: 0.0,
            last_seq: job.last_seq,
            metrics: job.metrics.clone(),
        };
        let mut written = Instant::now();
        let mut pending: Vec<crate::runlog::MetricPoint> = Vec::new();
        let mut flushed = Instant::now();
        let live = self.inner().live.get(&id).cloned();
        let owner = self.replica_id.clone();
        let report = |r: Result<()>| {
            if let Err(e) = r {
                tracing::error!(job = %id, error = %e, "could not record progress");
            }
        };
        // Progress is written only while this replica holds the job.
        let progress_of = |p: &ProgressUpdate| -> Result<()> {
            if !lost.load(Ordering::Acquire) {
                self.store.update_progress(&id, &owner, p)?;
            }
            Ok(())
        };
        // Stores the pending points (kept for the next flush if the store refuses them, so the
        // stored seqs have no holes), then wakes this server's streams of the job.
        let flush = |pending: &mut Vec<crate::runlog::MetricPoint>| {
            if pending.is_empty() || lost.load(Ordering::Acquire) {
                pending.clear();
                return;
            }
            match self.store.add_points(&id, pending) {
                Ok(()) => pending.clear(),
                Err(e) => report(Err(e)),
            }
            if let Some(live) = &live {
                live.send_replace(());
            }
        };
        while let Some(event) = events.blocking_recv() {
            match event {
                Event::Started { start_step, total } => {
                    progress.step = start_step;
                    progress.total_steps = total;
                    report(progress_of(&progress));
                }
                Event::Step {
                    step,
                    total,
                    seconds,
                    seconds_per_step,
                    points,
                } => {
                    progress.step = step;
                    progress.total_steps = total;
                    progress.steps_per_second = if seconds_per_step > 0.0 {
                        1.0 / seconds_per_step
                    } else {
                        0.0
                    };
                    self.telemetry.step(&id, seconds, &points);
                    for p in &points {
                        progress.last_seq = progress.last_seq.max(p.seq);
                        let key = format!("{}/{}", p.split, p.series);
                        progress.metrics.insert(key, p.value);
                    }
                    pending.extend(points);
                    let write_progress = written.elapsed() >= PROGRESS_EVERY || step == total;
                    if write_progress || flushed.elapsed() >= POINTS_EVERY {
                        flush(&mut pending);
                        flushed = Instant::now();
                    }
                    if write_progress {
                        report(progress_of(&progress));
                        written = Instant::now();
                    }
                }
                Event::Checkpoint {
                    step,
                    dir,
                    metrics,
                    pruned,
                } => {
                    self.telemetry.checkpoint();
                    flush(&mut pending);
                    let rec = CheckpointRecord {
                        step,
                        path: dir,
                        saved_ms: now_ms(),
                        metrics,
                    };
                    if !lost.load(Ordering::Acquire) {
                        report(self.store.add_checkpoint(&id, &rec, &pruned));
                    }
                    report(progress_of(&progress));
                }
            }
        }
        flush(&mut pending);
        let result = done.recv().unwrap_or_else(|_| {
            Err(Error::internal(
                "the training thread ended without a result",
            ))
        });
        report(progress_of(&progress));
        if matches!(&result, Ok(s) if s.stopped == Some(StopReason::Lost)) {
            lost.store(true, Ordering::Release);
        }
        let (state, error) = match &result {
            _ if lost.load(Ordering::Acquire) => (None, None),
            Ok(s) => match s.stopped {
                None | Some(StopReason::None) => (Some(JobState::Completed), None),
                Some(StopReason::Cancel) => (Some(JobState::Cancelled), None),
                // Stays RUNNING in the store: the next server start resumes it.
                Some(StopReason::Shutdown) => (None, None),
                Some(StopReason::Lost) => (None, None),
            },
            Err(e) => (Some(JobState::Failed), Some(e.to_string())),
        };
        let mut inner = self.inner();
        if let Some(state) = state {
            tracing::info!(job = %id, state = state.as_str(), error = ?error, "job ended");
            drop(inner);
            self.record_end(&id, state, error.as_deref());
            inner = self.inner();
        } else if lost.load(Ordering::Acquire) {
            tracing::warn!(job = %id, step = progress.step, "stopped a job whose lease ran out or was taken");
        } else {
            tracing::info!(job = %id, step = progress.step, "job checkpointed for shutdown");
            // Another replica (or this server's next run) may resume it at once.
            report(self.store.release(&id, &owner));
        }
        inner.running.remove(&id);
        // Dropping the sender wakes the streams, which then read how the job ended.
        inner.live.remove(&id);
        drop(inner);
        self.ended.notify_all();
        self.refresh_gauges();
        report(self.schedule());
    }

    /// Records how a job ended. A write that fails (a full disk fails the job and then, often,
    /// the store's own write) is retried after moving the write-ahead log into the database,
    /// which frees its space, for up to ~15 s; after that the job stays `running` in the store
    /// and the next start recovers it as interrupted.
    fn record_end(&self, id: &str, state: JobState, error: Option<&str>) {
        let mut wait = Duration::from_secs(1);
        for attempt in 1..=5 {
            match self.store.finish(id, &self.replica_id, state, error) {
                Ok(true) => return,
                Ok(false) => {
                    tracing::error!(job = %id, "the job's lease went to another replica before its end was recorded");
                    return;
                }
                Err(e) if attempt < 5 => {
                    tracing::warn!(job = %id, error = %e, attempt, "could not record the end; retrying");
                    if let Err(e) = self.store.checkpoint_wal() {
                        tracing::warn!(error = %e, "could not checkpoint the job store");
                    }
                    std::thread::sleep(wait);
                    wait *= 2;
                }
                Err(e) => tracing::error!(
                    job = %id, state = state.as_str(), error = %e,
                    "could not record how the job ended; the next start recovers it as interrupted"
                ),
            }
        }
    }

    /// Cancels a queued job at once and a running one at its next step boundary — here, or on
    /// the replica that runs it when that renews its lease.
    pub fn cancel(&self, id: &str) -> Result<JobRecord> {
        loop {
            let job = self.store.job(id)?;
            let done = match job.state {
                JobState::Queued => {
                    self.store
                        .transition(id, JobState::Queued, JobState::Cancelled)?
                }
                JobState::Running => {
                    let moved =
                        self.store
                            .transition(id, JobState::Running, JobState::Cancelling)?;
                    if moved {
                        if let Some(r) = self.inner().running.get(id) {
                            r.stop.store(StopReason::Cancel as u8, Ordering::Release);
                        }
                    }
                    moved
                }
                JobState::Cancelling => true,
                s => {
                    return Err(Error::precondition(format!(
                        "job `{id}` is {}; only queued or running jobs can be cancelled",
                        s.as_str()
                    )))
                }
            };
            // Not done: the job changed state under us (claimed, finished); look again.
            if done {
                break;
            }
        }
        self.refresh_gauges();
        self.store.job(id)
    }

    /// A receiver of the live state of a job running on this server.
    pub fn follow(&self, id: &str) -> Option<watch::Receiver<()>> {
        self.inner().live.get(id).map(|s| s.subscribe())
    }

    /// Stops starting jobs and asks running ones to checkpoint and stop at their next step
    /// boundary. They stay RUNNING in the store and resume on the next start.
    pub fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::Release);
        for r in self.inner().running.values() {
            // A job already cancelling finishes its cancel instead.
            let _ = r.stop.compare_exchange(
                StopReason::None as u8,
                StopReason::Shutdown as u8,
                Ordering::AcqRel,
                Ordering::Acquire,
            );
        }
    }

    /// [`Manager::begin_shutdown`], then waits up to `grace` for the job threads; returns how
    /// many were still running.
    pub fn shutdown(&self, grace: Duration) -> usize {
        self.begin_shutdown();
        let mut inner = self.inner();
        let deadline = Instant::now() + grace;
        while !inner.running.is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            inner = self
                .ended
                .wait_timeout(inner, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        let left = inner.running.len();
        if left > 0 {
            tracing::warn!(
                jobs = left,
                "grace period over; jobs resume from their last checkpoint"
            );
        }
        left
    }

    /// Writes the restorer of one of the job's checkpoints into the model directory.
    pub fn export(
        &self,
        id: &str,
        pick: Pick,
        weights: Option<Weights>,
        name: &str,
    ) -> Result<Exported> {
        let job = self.store.job(id)?;
        let ckpts = self.store.checkpoints(id)?;
        let chosen = match &pick {
            Pick::Latest => ckpts.last(),
            Pick::Best => {
                let all: Vec<(u64, PathBuf)> =
                    ckpts.iter().map(|c| (c.step, c.path.clone())).collect();
                let best = checkpoint::best(&all).ok_or_else(|| {
                    Error::precondition(format!(
                        "no checkpoint of job `{id}` has {}; export latest or a step instead",
                        checkpoint::BEST_METRIC
                    ))
                })?;
                ckpts.iter().find(|c| c.step == best)
            }
            Pick::Step(s) => ckpts.iter().find(|c| c.step == *s),
        };
        let chosen = chosen.ok_or_else(|| {
            let have: Vec<String> = ckpts.iter().map(|c| checkpoint_id(c.step)).collect();
            Error::NotFound(format!(
                "checkpoint {:?} of job `{id}` (it has: {})",
                pick,
                if have.is_empty() {
                    "none yet".to_string()
                } else {
                    have.join(", ")
                }
            ))
        })?;
        let spec = JobSpec::from_toml(&job.resolved_spec)
            .map_err(|e| Error::invalid("resolved_spec", e.to_string()))?;
        let weights = weights.unwrap_or(spec.export.weights);
        let name = if name.is_empty() {
            format!(
                "{}-{}-{}-{}",
                job.name,
                &id[..8.min(id.len())],
                chosen.step,
                weights.as_str()
            )
        } else {
            name.to_string()
        };
        crate::restore::registry::check_name(&name)?;
        let dir = self.model_dir.join(&name);
        if dir.join(artifact::MANIFEST_FILE).exists() {
            let (_, m) = artifact::read_manifest(&dir)?;
            if m.source_job.as_deref() == Some(id) && m.step == chosen.step && m.weights == weights
            {
                return Ok(Exported {
                    manifest: m,
                    dir,
                    checkpoint_id: checkpoint_id(chosen.step),
                });
            }
            return Err(Error::Conflict(format!(
                "model `{name}` in {} holds other weights; choose another name",
                self.model_dir.display()
            )));
        }
        let manifest = train::export_checkpoint(&chosen.path, &dir, weights, Some(id.to_string()))?;
        tracing::info!(job = %id, step = chosen.step, model = %name, "exported");
        Ok(Exported {
            manifest,
            dir,
            checkpoint_id: checkpoint_id(chosen.step),
        })
    }

    /// Sets the jobs-by-state gauges from the store.
    fn refresh_gauges(&self) {
        match self.store.counts() {
            Ok(counts) => self.telemetry.job_states(&counts),
            Err(e) => tracing::error!(error = %e, "could not count jobs"),
        }
    }
}
