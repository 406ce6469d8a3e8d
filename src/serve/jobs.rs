//! The job manager: validates and queues training jobs, gives each a device when one is free,
//! runs it on its own OS thread, records what it reports (through a bounded channel) in the
//! store and the metrics, cancels, recovers jobs after a restart and exports their restorers.
//! Every method blocks; the gRPC layer calls them through `spawn_blocking`.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::prom::Prom;
use super::store::{CheckpointRecord, JobRecord, ProgressUpdate, State, Store};
use crate::artifact::{self, Manifest};
use crate::config::{JobSpec, Weights};
use crate::train::{self, checkpoint, Control, Event, StopReason, TrainOptions, TrainSummary};
use crate::{Error, Result};

/// Events a running job may queue before its thread waits for the recorder.
const EVENT_CAPACITY: usize = 256;
/// Progress is written to the store at most this often (and at every checkpoint and the end).
const PROGRESS_EVERY: Duration = Duration::from_secs(1);

/// What the job manager is configured with.
#[derive(Debug, Clone)]
pub struct ManagerOptions {
    /// Jobs live in `<data_dir>/jobs/<id>/`; the database is `<data_dir>/noiseda.db`.
    pub data_dir: PathBuf,
    /// Exported models go to `<model_dir>/<name>/`.
    pub model_dir: PathBuf,
    /// Devices jobs may use: `cpu`, `cuda:N`.
    pub devices: Vec<String>,
    /// Jobs that may run at once on the CPU (GPUs run one each).
    pub cpu_jobs: usize,
    /// Canonical directories job data paths must lie in (empty: anywhere).
    pub data_roots: Vec<PathBuf>,
}

/// What a metric stream follows: the newest seq of a job and whether it has ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Live {
    pub last_seq: u64,
    pub ended: bool,
}

/// A job with a thread.
struct Running {
    device: String,
    stop: Arc<AtomicU8>,
}

#[derive(Default)]
struct Inner {
    running: HashMap<String, Running>,
    /// One per job that has not ended (queued or running), for metric streams.
    live: HashMap<String, watch::Sender<Live>>,
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
                    Error::InvalidArgument(format!(
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
    opts: ManagerOptions,
    store: Store,
    prom: Arc<Prom>,
    inner: Mutex<Inner>,
    /// Signalled whenever a job thread ends.
    ended: Condvar,
    shutting_down: AtomicBool,
}

pub fn checkpoint_id(step: u64) -> String {
    format!("step-{step:08}")
}

impl Manager {
    /// Opens the store under the data dir and recovers jobs a previous server left running:
    /// back to the queue when they have a checkpoint, FAILED with the reason when not.
    pub fn open(opts: ManagerOptions, prom: Arc<Prom>) -> Result<Arc<Self>> {
        for dir in [&opts.data_dir, &opts.model_dir] {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        }
        let probe = opts.data_dir.join(".write-probe");
        std::fs::write(&probe, b"ok").map_err(|e| Error::io(&probe, e))?;
        let _ = std::fs::remove_file(&probe);
        let store = Store::open(&opts.data_dir.join("noiseda.db"))?;
        let mgr = Arc::new(Self {
            opts,
            store,
            prom,
            inner: Mutex::new(Inner::default()),
            ended: Condvar::new(),
            shutting_down: AtomicBool::new(false),
        });
        mgr.recover()?;
        Ok(mgr)
    }

    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn job_dir(&self, id: &str) -> PathBuf {
        self.opts.data_dir.join("jobs").join(id)
    }

    pub fn metric_log(&self, id: &str) -> PathBuf {
        self.job_dir(id).join("metrics.jsonl")
    }

    fn recover(&self) -> Result<()> {
        let mut inner = self.inner();
        for job in self
            .store
            .in_states(&[State::Queued, State::Running, State::Cancelling])?
        {
            let ckpts = self.reindex(&job.id)?;
            train::repair_metric_log(&self.metric_log(&job.id))?;
            let last_seq = train::read_metric_log(&self.metric_log(&job.id))?
                .last()
                .map_or(0, |p| p.seq);
            match (job.state, ckpts.last()) {
                (State::Queued, _) => {}
                (State::Cancelling, _) => {
                    self.store.set_state(&job.id, State::Cancelled, None)?;
                    continue;
                }
                (_, Some(last)) => {
                    let note = format!(
                        "the server restarted while the job ran; resuming from checkpoint {} \
                         (steps after it are recomputed exactly, their metric points kept)",
                        checkpoint_id(last.step)
                    );
                    tracing::warn!(job = %job.id, step = last.step, "recovering a job");
                    self.store.requeue_recovered(&job.id, &note)?;
                }
                (_, None) => {
                    tracing::warn!(job = %job.id, "a running job had no checkpoint");
                    self.store.set_state(
                        &job.id,
                        State::Failed,
                        Some(
                            "the server restarted before the job's first checkpoint; it was not \
                             restarted from step 0 (resubmit it, or lower checkpoint.every)",
                        ),
                    )?;
                    continue;
                }
            }
            inner.live.insert(
                job.id.clone(),
                watch::channel(Live {
                    last_seq,
                    ended: false,
                })
                .0,
            );
        }
        drop(inner);
        self.refresh_gauges();
        Ok(())
    }

    /// Rebuilds a job's checkpoint index from its directory.
    fn reindex(&self, id: &str) -> Result<Vec<CheckpointRecord>> {
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

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Validates a spec document (every problem listed; data paths must exist here) and
    /// queues the job; a repeated request id returns the first job.
    pub fn submit(self: &Arc<Self>, document: SpecDocument, request_id: &str) -> Result<JobRecord> {
        if self.shutting_down.load(Ordering::Acquire) {
            return Err(Error::Unavailable("the server is shutting down".into()));
        }
        if let Some(existing) = self.store.by_request_id(request_id)? {
            return Ok(existing);
        }
        let (text, mut spec) = document.parse()?;
        let base = std::env::current_dir().map_err(|e| Error::io(".", e))?;
        spec.resolve_paths(&base);
        let mut problems = spec.problems();
        if self.opts.data_roots.is_empty() {
            problems.extend(spec.missing_paths());
        } else {
            problems.extend(spec.confine_paths(&self.opts.data_roots));
        }
        if !self.opts.devices.contains(&spec.device) {
            problems.push(Error::config(
                "device",
                format!(
                    "`{}` is not one of this server's devices ({})",
                    spec.device,
                    self.opts.devices.join(", ")
                ),
            ));
        }
        Error::from_problems(problems)?;
        let id = uuid::Uuid::new_v4().simple().to_string();
        let record = JobRecord {
            id: id.clone(),
            request_id: request_id.to_string(),
            name: spec.name.clone(),
            state: State::Queued,
            device: spec.device.clone(),
            submitted_spec: text,
            resolved_spec: spec.to_toml(),
            created_ms: super::store::now_ms(),
            started_ms: None,
            finished_ms: None,
            last_error: String::new(),
            step: 0,
            total_steps: spec.steps,
            steps_per_second: 0.0,
            last_seq: 0,
            restarts: 0,
            metrics: BTreeMap::new(),
        };
        let (job, new) = {
            let mut inner = self.inner();
            let (job, new) = self.store.insert(&record)?;
            if new {
                inner
                    .live
                    .insert(id.clone(), watch::channel(Live::default()).0);
            }
            (job, new)
        };
        if new {
            tracing::info!(job = %job.id, name = %job.name, device = %job.device, "queued");
            self.refresh_gauges();
            self.schedule()?;
        }
        self.store.job(&job.id)
    }

    /// Starts queued jobs, oldest first, on devices with a free slot.
    pub fn schedule(self: &Arc<Self>) -> Result<()> {
        if self.shutting_down.load(Ordering::Acquire) {
            return Ok(());
        }
        let mut inner = self.inner();
        for job in self.store.in_states(&[State::Queued])? {
            let busy = inner
                .running
                .values()
                .filter(|r| r.device == job.device)
                .count();
            let cap = if job.device == "cpu" {
                self.opts.cpu_jobs
            } else {
                1
            };
            if busy < cap {
                let id = job.id.clone();
                if let Err(e) = self.start(&mut inner, job) {
                    tracing::error!(job = %id, error = %e, "could not start");
                    inner.running.remove(&id);
                    self.store.set_state(
                        &id,
                        State::Failed,
                        Some(&format!("could not start: {e}")),
                    )?;
                    if let Some(live) = inner.live.remove(&id) {
                        live.send_replace(Live {
                            last_seq: 0,
                            ended: true,
                        });
                    }
                }
            }
        }
        drop(inner);
        self.refresh_gauges();
        Ok(())
    }

    /// Marks a job RUNNING and spawns its training thread and its recorder thread.
    fn start(self: &Arc<Self>, inner: &mut Inner, job: JobRecord) -> Result<()> {
        let spec = JobSpec::from_toml(&job.resolved_spec)
            .map_err(|e| Error::config("resolved_spec", e.to_string()))?;
        let out = self.job_dir(&job.id);
        let resume = checkpoint::latest(&out.join("checkpoints"))?.is_some();
        let stop = Arc::new(AtomicU8::new(StopReason::None as u8));
        let (tx, rx) = tokio::sync::mpsc::channel(EVENT_CAPACITY);
        let (done_tx, done_rx) = std::sync::mpsc::sync_channel(1);
        let opts = TrainOptions {
            out,
            resume,
            progress: false,
            control: Some(Control {
                stop: stop.clone(),
                events: tx,
            }),
            job_id: Some(job.id.clone()),
        };
        self.store.set_state(&job.id, State::Running, None)?;
        inner.running.insert(
            job.id.clone(),
            Running {
                device: job.device.clone(),
                stop,
            },
        );
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
                    Err(Error::InvalidArgument(format!("training panicked: {msg}")))
                });
                drop(opts);
                let _ = done_tx.send(result);
            });
        if let Err(e) = spawn {
            inner.running.remove(&job.id);
            self.store.set_state(
                &job.id,
                State::Failed,
                Some(&format!("could not start a thread: {e}")),
            )?;
            return Ok(());
        }
        let mgr = self.clone();
        let recorder = std::thread::Builder::new()
            .name(format!("rec-{}", &id[..8.min(id.len())]))
            .spawn(move || mgr.record(job, rx, done_rx));
        if let Err(e) = recorder {
            tracing::error!(error = %e, "could not start a recorder thread");
        }
        Ok(())
    }

    /// The recorder of one job: drains its events into the store, the live streams and the
    /// metrics, then records how it ended and frees its device.
    fn record(
        self: Arc<Self>,
        job: JobRecord,
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
        let live = self.inner().live.get(&id).cloned();
        let report = |r: Result<()>| {
            if let Err(e) = r {
                tracing::error!(job = %id, error = %e, "could not record progress");
            }
        };
        while let Some(event) = events.blocking_recv() {
            match event {
                Event::Started { start_step, total } => {
                    progress.step = start_step;
                    progress.total_steps = total;
                    report(self.store.update_progress(&id, &progress));
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
                    self.prom.step(&id, seconds, &points);
                    for p in &points {
                        progress.last_seq = progress.last_seq.max(p.seq);
                        let key = if p.split == "val" {
                            format!("val/{}", p.series)
                        } else {
                            format!("train/{}", p.series)
                        };
                        progress.metrics.insert(key, p.value);
                    }
                    if let Some(live) = &live {
                        live.send_replace(Live {
                            last_seq: progress.last_seq,
                            ended: false,
                        });
                    }
                    if written.elapsed() >= PROGRESS_EVERY || step == total {
                        report(self.store.update_progress(&id, &progress));
                        written = Instant::now();
                    }
                }
                Event::Checkpoint {
                    step,
                    dir,
                    metrics,
                    pruned,
                } => {
                    self.prom.checkpoint();
                    let rec = CheckpointRecord {
                        step,
                        path: dir,
                        saved_ms: super::store::now_ms(),
                        metrics,
                    };
                    report(self.store.add_checkpoint(&id, &rec, &pruned));
                    report(self.store.update_progress(&id, &progress));
                }
            }
        }
        let result = done.recv().unwrap_or_else(|_| {
            Err(Error::InvalidArgument(
                "the training thread ended without a result".into(),
            ))
        });
        report(self.store.update_progress(&id, &progress));
        let (state, error) = match &result {
            Ok(s) => match s.stopped {
                None | Some(StopReason::None) => (Some(State::Completed), None),
                Some(StopReason::Cancel) => (Some(State::Cancelled), None),
                // Stays RUNNING in the store: the next server start resumes it.
                Some(StopReason::Shutdown) => (None, None),
            },
            Err(e) => (Some(State::Failed), Some(e.to_string())),
        };
        let mut inner = self.inner();
        if let Some(state) = state {
            tracing::info!(job = %id, state = state.as_str(), error = ?error, "job ended");
            drop(inner);
            self.record_end(&id, state, error.as_deref());
            inner = self.inner();
            if let Some(live) = inner.live.remove(&id) {
                live.send_replace(Live {
                    last_seq: progress.last_seq,
                    ended: true,
                });
            }
        } else {
            tracing::info!(job = %id, step = progress.step, "job checkpointed for shutdown");
        }
        inner.running.remove(&id);
        drop(inner);
        self.ended.notify_all();
        self.refresh_gauges();
        report(self.schedule());
    }

    /// Records how a job ended. A write that fails (a full disk fails the job and then, often,
    /// the store's own write) is retried after moving the write-ahead log into the database,
    /// which frees its space, for up to ~15 s; after that the job stays `running` in the store
    /// and the next start recovers it as interrupted.
    fn record_end(&self, id: &str, state: State, error: Option<&str>) {
        let mut wait = Duration::from_secs(1);
        for attempt in 1..=5 {
            match self.store.set_state(id, state, error) {
                Ok(()) => return,
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

    /// Cancels a queued job at once and a running one at its next step boundary.
    pub fn cancel(&self, id: &str) -> Result<JobRecord> {
        let mut inner = self.inner();
        let job = self.store.job(id)?;
        match job.state {
            State::Queued => {
                self.store.set_state(id, State::Cancelled, None)?;
                if let Some(live) = inner.live.remove(id) {
                    live.send_replace(Live {
                        last_seq: job.last_seq,
                        ended: true,
                    });
                }
            }
            State::Running => {
                if let Some(r) = inner.running.get(id) {
                    r.stop.store(StopReason::Cancel as u8, Ordering::Release);
                }
                self.store.set_state(id, State::Cancelling, None)?;
            }
            State::Cancelling => {}
            s => {
                return Err(Error::FailedPrecondition(format!(
                    "job `{id}` is {}; only queued or running jobs can be cancelled",
                    s.as_str()
                )))
            }
        }
        drop(inner);
        self.refresh_gauges();
        self.store.job(id)
    }

    /// A receiver of the job's live state, or None when the job has ended.
    pub fn follow(&self, id: &str) -> Option<watch::Receiver<Live>> {
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
                    Error::FailedPrecondition(format!(
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
            .map_err(|e| Error::config("resolved_spec", e.to_string()))?;
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
        super::registry::check_name(&name)?;
        let dir = self.opts.model_dir.join(&name);
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
            return Err(Error::AlreadyExists(format!(
                "model `{name}` in {} holds other weights; choose another name",
                self.opts.model_dir.display()
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
            Ok(counts) => self.prom.job_states(&counts),
            Err(e) => tracing::error!(error = %e, "could not count jobs"),
        }
    }
}

/// A submitted spec document.
#[derive(Debug, Clone)]
pub enum SpecDocument {
    Toml(String),
    Json(String),
}

impl SpecDocument {
    /// The text as submitted and the parsed (not yet validated) spec.
    pub fn parse(self) -> Result<(String, JobSpec)> {
        match self {
            SpecDocument::Toml(t) => {
                let spec = JobSpec::from_toml(&t)
                    .map_err(|e| Error::config("spec.toml", e.message().to_string()))?;
                Ok((t, spec))
            }
            SpecDocument::Json(t) => {
                let spec = serde_json::from_str(&t)
                    .map_err(|e| Error::config("spec.json", e.to_string()))?;
                Ok((t, spec))
            }
        }
    }
}

/// Follows a job's metric log: each [`MetricTail::read`] returns the complete points
/// appended since the last call, starting at seq `from`.
pub struct MetricTail {
    path: PathBuf,
    offset: u64,
    partial: Vec<u8>,
    next_seq: u64,
}

impl MetricTail {
    pub fn new(path: PathBuf, from_seq: u64) -> Self {
        Self {
            path,
            offset: 0,
            partial: Vec::new(),
            next_seq: from_seq.max(1),
        }
    }

    /// The seq the next returned point will have.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    pub fn read(&mut self) -> Result<Vec<train::MetricPoint>> {
        use std::io::{Read, Seek, SeekFrom};
        let mut file = match std::fs::File::open(&self.path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Error::io(&self.path, e)),
        };
        let len = file.metadata().map_err(|e| Error::io(&self.path, e))?.len();
        if len < self.offset {
            // The log was repaired (a torn tail cut off): read it again, skipping what was sent.
            self.offset = 0;
            self.partial.clear();
        }
        file.seek(SeekFrom::Start(self.offset))
            .map_err(|e| Error::io(&self.path, e))?;
        let mut bytes = std::mem::take(&mut self.partial);
        let n = file
            .read_to_end(&mut bytes)
            .map_err(|e| Error::io(&self.path, e))?;
        self.offset += n as u64;
        let cut = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        self.partial = bytes.split_off(cut);
        let mut out = Vec::new();
        for line in bytes.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            let p: train::MetricPoint = serde_json::from_slice(line)
                .map_err(|e| Error::Data(format!("{}: {e}", self.path.display())))?;
            if p.seq == self.next_seq {
                self.next_seq += 1;
                out.push(p);
            } else if p.seq > self.next_seq {
                return Err(Error::Data(format!(
                    "{}: metric point {} follows {}; the log has a gap",
                    self.path.display(),
                    p.seq,
                    self.next_seq - 1
                )));
            }
        }
        Ok(out)
    }
}
