//! `noiseda serve`: the gRPC server (Training service, grpc.health.v1, reflection), its
//! Prometheus endpoint and graceful shutdown; plus the client used by `noiseda jobs`.

pub mod auth;
pub mod batcher;
pub mod client;
pub mod jobs;
pub mod prom;
pub mod registry;
pub mod restore;
pub mod store;
pub mod training;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio_stream::wrappers::TcpListenerStream;
use tonic_health::ServingStatus;

use crate::pb;
use crate::{Error, Result};
use jobs::{Manager, ManagerOptions};

/// Health service name of the training service (readiness).
pub const TRAINING_SERVICE: &str = "noiseda.v1.Training";
/// Health service name of the restore service (ready once a default model is loaded).
pub const RESTORE_SERVICE: &str = "noiseda.v1.Restore";

/// Which services a process serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Role {
    /// Training and Restore (+ Models).
    All,
    Training,
    Restore,
}

impl Role {
    fn training(self) -> bool {
        matches!(self, Role::All | Role::Training)
    }
    fn restore(self) -> bool {
        matches!(self, Role::All | Role::Restore)
    }
}

/// Settings of the Restore side.
#[derive(Debug, Clone)]
pub struct RestoreOptions {
    pub device: String,
    pub batch: batcher::BatchOptions,
    pub limits: restore::Limits,
    /// Model to make the default at start (else the first loaded, by name).
    pub default_model: Option<String>,
}

/// Server settings (the `noiseda serve` flags).
#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub listen: SocketAddr,
    /// Prometheus `GET /metrics` address.
    pub metrics_listen: SocketAddr,
    pub role: Role,
    pub data_dir: PathBuf,
    /// The job store: `sqlite` (`<data_dir>/noiseda.db`), `sqlite:PATH` or `postgres://…`.
    pub store: String,
    /// This server's name in job leases (unique among the replicas of a shared store).
    pub replica_id: String,
    /// How long a job's lease lasts without renewal.
    pub lease: Duration,
    /// How often the Restore side looks for new artifacts in the model directory (zero: never).
    pub model_poll: Duration,
    pub model_dir: PathBuf,
    pub devices: Vec<String>,
    pub cpu_jobs: usize,
    /// Directories that job data paths must lie in (empty: anywhere on the machine).
    pub data_roots: Vec<PathBuf>,
    /// Largest gRPC message accepted or sent, in bytes.
    pub payload_limit: usize,
    /// How long running jobs get to checkpoint after SIGTERM.
    pub shutdown_grace: Duration,
    /// After SIGTERM, how long the server keeps its connections open answering new calls
    /// UNAVAILABLE (readiness already off) before it stops accepting them, so clients and load
    /// balancers see the refusal rather than a dropped connection.
    pub drain_delay: Duration,
    pub restore: RestoreOptions,
    /// Key file (TOML `[[key]]` entries); without it every call is accepted.
    pub api_keys: Option<PathBuf>,
    /// Certificate and key to serve TLS with (and a client CA for mTLS).
    pub tls: Option<auth::TlsFiles>,
}

impl ServeOptions {
    fn check(&self) -> Result<()> {
        let mut bad = Vec::new();
        if self.devices.is_empty() {
            bad.push(Error::config("--devices", "give at least one device"));
        }
        for d in &self.devices {
            if let Err(e) = crate::device::parse(d) {
                bad.push(Error::config("--devices", e.to_string()));
            }
        }
        if self.lease < Duration::from_millis(300) {
            bad.push(Error::config("--lease-ms", "must be at least 300 ms"));
        }
        if self.cpu_jobs == 0 {
            bad.push(Error::config("--cpu-jobs", "must be at least 1"));
        }
        if self.payload_limit < 1024 {
            bad.push(Error::config(
                "--payload-limit",
                "must be at least 1024 bytes",
            ));
        }
        Error::from_problems(bad)
    }
}

/// Runs `f` on the blocking pool (store, registry, file and model work never runs on the
/// async runtime) and maps its error to a gRPC status.
pub(crate) async fn blocking<T: Send + 'static>(
    what: &str,
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T, tonic::Status> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| tonic::Status::internal(format!("{what} task failed: {e}")))?
        .map_err(tonic::Status::from)
}

/// Resolves when SIGTERM or Ctrl-C arrives.
pub async fn termination() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}

/// Runs the server until `stop` resolves, then drains: readiness goes NOT_SERVING, metric
/// streams end (clients reconnect with their last seq), running jobs checkpoint within the
/// grace period. `ready` receives the bound (gRPC, metrics) addresses once serving.
pub async fn serve(
    opts: ServeOptions,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
    ready: impl FnOnce(SocketAddr, SocketAddr),
) -> Result<()> {
    opts.check()?;
    let (keys, tls) = (opts.api_keys.clone(), opts.tls.clone());
    let (keys, tls) = tokio::task::spawn_blocking(move || -> Result<_> {
        Ok((
            keys.as_deref().map(auth::ApiKeys::load).transpose()?,
            tls.as_ref()
                .map(auth::TlsFiles::server_config)
                .transpose()?,
        ))
    })
    .await
    .map_err(|e| Error::Unavailable(format!("reading the key and TLS files failed: {e}")))??;
    if keys.is_none() {
        tracing::warn!("no --api-keys: every call is accepted");
    }
    // Every device this process may use opens now (a GPU that is not there stops the start).
    let mut names: Vec<String> = Vec::new();
    if opts.role.training() {
        names.extend(opts.devices.iter().cloned());
    }
    if opts.role.restore() && !names.contains(&opts.restore.device) {
        names.push(opts.restore.device.clone());
    }
    for d in tokio::task::spawn_blocking(move || {
        names
            .iter()
            .map(|n| crate::device::describe(n))
            .collect::<Result<Vec<_>>>()
    })
    .await
    .map_err(|e| Error::Unavailable(format!("opening the devices failed: {e}")))??
    {
        tracing::info!(device = %d, "device");
    }
    let prom = Arc::new(prom::Prom::new());
    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    health_reporter
        .set_service_status("", ServingStatus::Serving)
        .await;
    let (shutdown_tx, shutdown_rx) = watch::channel(false);

    let manager = if opts.role.training() {
        let store = store::StoreUrl::parse(&opts.store, &opts.data_dir)?;
        tracing::info!(store = %store.redacted(), replica = %opts.replica_id, "job store");
        let (mopts, prom) = (
            ManagerOptions {
                data_dir: opts.data_dir.clone(),
                store,
                replica_id: opts.replica_id.clone(),
                lease: opts.lease,
                model_dir: opts.model_dir.clone(),
                devices: opts.devices.clone(),
                cpu_jobs: opts.cpu_jobs,
                data_roots: opts
                    .data_roots
                    .iter()
                    .map(|r| match r.canonicalize() {
                        Ok(c) if c.is_dir() => Ok(c),
                        Ok(_) => Err(Error::config(
                            "--data-roots",
                            format!("{} is not a directory", r.display()),
                        )),
                        Err(e) => Err(Error::config(
                            "--data-roots",
                            format!("{}: {e}", r.display()),
                        )),
                    })
                    .collect::<Result<Vec<_>>>()?,
            },
            prom.clone(),
        );
        Some(
            tokio::task::spawn_blocking(move || Manager::open(mopts, prom))
                .await
                .map_err(|e| Error::Unavailable(format!("job manager did not start: {e}")))??,
        )
    } else {
        None
    };
    let registry = if opts.role.restore() {
        let device = crate::device::open(&opts.restore.device)?;
        std::fs::create_dir_all(&opts.model_dir).map_err(|e| Error::io(&opts.model_dir, e))?;
        let registry = Arc::new(registry::Registry::new(
            opts.model_dir.clone(),
            device,
            opts.restore.batch,
            prom.clone(),
        ));
        let (r, default) = (registry.clone(), opts.restore.default_model.clone());
        let names = tokio::task::spawn_blocking(move || r.load_all(default.as_deref()))
            .await
            .map_err(|e| Error::Unavailable(format!("model registry did not start: {e}")))??;
        tracing::info!(models = ?names, "restore models loaded");
        if opts.restore.default_model.is_none() {
            let r = registry.clone();
            tokio::task::spawn_blocking(move || r.follow_default_file())
                .await
                .map_err(|e| Error::Unavailable(format!("model registry did not start: {e}")))??;
        }
        if !opts.model_poll.is_zero() {
            tokio::spawn(registry::watch(
                registry.clone(),
                opts.model_poll,
                shutdown_rx.clone(),
            ));
        }
        restore::publish_readiness(&health_reporter, &registry, &shutdown_rx).await;
        Some(registry)
    } else {
        None
    };

    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| Error::InvalidArgument(format!("reflection: {e}")))?;
    let limit = opts.payload_limit;
    let training = manager.as_ref().map(|m| {
        pb::training_server::TrainingServer::new(training::TrainingService::new(
            m.clone(),
            shutdown_rx.clone(),
        ))
        .max_decoding_message_size(limit)
        .max_encoding_message_size(limit)
    });
    let (restore_svc, models_svc) = match &registry {
        Some(r) => {
            let o = &opts.restore;
            let info = pb::ServerInfoResponse {
                version: env!("CARGO_PKG_VERSION").to_string(),
                device: o.device.clone(),
                roles: [("training", opts.role.training()), ("restore", true)]
                    .into_iter()
                    .filter(|(_, on)| *on)
                    .map(|(n, _)| n.to_string())
                    .collect(),
                payload_limit: limit as u64,
                max_batch_size: o.batch.max_batch_size as u32,
                max_batch_pixels: o.batch.max_batch_pixels as u64,
                max_batch_wait_us: o.batch.max_batch_wait.as_micros() as u64,
                max_queue: o.batch.max_queue as u32,
                max_image_pixels: o.limits.max_image_pixels as u64,
                max_input_pixels: o.limits.max_input_pixels as u64,
                tile_size: o.limits.tile_size as u32,
                tile_overlap: o.limits.tile_overlap as u32,
                max_images_per_request: o.limits.max_images_per_request as u32,
                default_model: String::new(),
            };
            (
                Some(
                    pb::restore_server::RestoreServer::new(restore::RestoreService::new(
                        r.clone(),
                        o.limits,
                        prom.clone(),
                        shutdown_rx.clone(),
                    ))
                    .max_decoding_message_size(limit)
                    .max_encoding_message_size(limit),
                ),
                Some(
                    pb::models_server::ModelsServer::new(restore::ModelsService::new(
                        r.clone(),
                        info,
                        health_reporter.clone(),
                        shutdown_rx.clone(),
                    ))
                    .max_decoding_message_size(limit)
                    .max_encoding_message_size(limit),
                ),
            )
        }
        None => (None, None),
    };

    let listener = tokio::net::TcpListener::bind(opts.listen)
        .await
        .map_err(|e| Error::io(format!("listen address {}", opts.listen), e))?;
    let addr = listener
        .local_addr()
        .map_err(|e| Error::io(format!("listen address {}", opts.listen), e))?;
    let mut metrics_stop = shutdown_rx.clone();
    let (metrics_addr, metrics_server) = prom::bind(opts.metrics_listen, prom, async move {
        let _ = metrics_stop.wait_for(|s| *s).await;
    })
    .await?;
    let metrics_task = tokio::spawn(metrics_server);

    if let Some(m) = &manager {
        let m = m.clone();
        tokio::task::spawn_blocking(move || m.schedule())
            .await
            .map_err(|e| Error::Unavailable(format!("scheduler did not start: {e}")))??;
        health_reporter
            .set_service_status(TRAINING_SERVICE, ServingStatus::Serving)
            .await;
    }
    tracing::info!(%addr, %metrics_addr, role = ?opts.role, data_dir = %opts.data_dir.display(), "serving");
    ready(addr, metrics_addr);

    let (draining_tx, draining_rx) = tokio::sync::oneshot::channel::<Instant>();
    let drain_delay = opts.drain_delay.min(opts.shutdown_grace);
    let drain = {
        let health = health_reporter.clone();
        let m = manager.clone();
        async move {
            stop.await;
            let _ = draining_tx.send(Instant::now());
            tracing::info!("shutting down: readiness off, streams ending, jobs checkpointing");
            // Draining first, so a model change racing with the drain cannot report ready.
            let _ = shutdown_tx.send(true);
            for service in [TRAINING_SERVICE, RESTORE_SERVICE] {
                health
                    .set_service_status(service, ServingStatus::NotServing)
                    .await;
            }
            if let Some(m) = m {
                let _ = tokio::task::spawn_blocking(move || m.begin_shutdown()).await;
            }
            tokio::time::sleep(drain_delay).await;
        }
    };
    let mut builder = tonic::transport::Server::builder();
    if let Some(tls) = tls {
        builder = builder
            .tls_config(tls)
            .map_err(|e| Error::config("--tls-cert", e.to_string()))?;
    }
    let server = builder
        .trace_fn(|req| tracing::info_span!("grpc", method = %req.uri().path()))
        .layer(auth::AuthLayer::new(keys))
        .add_service(health_service)
        .add_service(reflection)
        .add_optional_service(training)
        .add_optional_service(restore_svc)
        .add_optional_service(models_svc)
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), drain);
    // In-flight calls get the grace period to finish; calls that never end by themselves
    // (health Watch streams, idle RestoreStreams of clients that do not hang up) do not hold the
    // process beyond it.
    let grace = opts.shutdown_grace;
    let started_draining = tokio::select! {
        r = server => {
            r.map_err(|e| Error::Unavailable(format!("gRPC server: {e}")))?;
            None
        }
        at = async {
            let at = draining_rx.await.unwrap_or_else(|_| Instant::now());
            tokio::time::sleep_until((at + grace).into()).await;
            at
        } => {
            tracing::warn!("calls still open after the grace period; closing them");
            Some(at)
        }
    };
    let grace = started_draining.map_or(grace, |at| grace.saturating_sub(at.elapsed()));
    let left = match manager {
        Some(m) => tokio::task::spawn_blocking(move || m.shutdown(grace))
            .await
            .unwrap_or(0),
        None => 0,
    };
    let _ = metrics_task.await;
    tracing::info!(jobs_left_running = left, "stopped");
    Ok(())
}
