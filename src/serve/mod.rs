//! `noiseda serve`: the gRPC server (Training service, grpc.health.v1, reflection), its
//! Prometheus endpoint and graceful shutdown; plus the client used by `noiseda jobs`.

pub mod client;
pub mod jobs;
pub mod prom;
pub mod store;
pub mod training;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio_stream::wrappers::TcpListenerStream;
use tonic_health::ServingStatus;

use crate::pb;
use crate::{Error, Result};
use jobs::{Manager, ManagerOptions};

/// Health service name of the training service (readiness).
pub const TRAINING_SERVICE: &str = "noiseda.v1.Training";

/// Server settings (the `noiseda serve` flags).
#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub listen: SocketAddr,
    /// Prometheus `GET /metrics` address.
    pub metrics_listen: SocketAddr,
    pub data_dir: PathBuf,
    pub model_dir: PathBuf,
    pub devices: Vec<String>,
    pub cpu_jobs: usize,
    /// Largest gRPC message accepted or sent, in bytes.
    pub payload_limit: usize,
    /// How long running jobs get to checkpoint after SIGTERM.
    pub shutdown_grace: Duration,
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
    let prom = Arc::new(prom::Prom::new());
    let manager = {
        let (mopts, prom) = (
            ManagerOptions {
                data_dir: opts.data_dir.clone(),
                model_dir: opts.model_dir.clone(),
                devices: opts.devices.clone(),
                cpu_jobs: opts.cpu_jobs,
            },
            prom.clone(),
        );
        tokio::task::spawn_blocking(move || Manager::open(mopts, prom))
            .await
            .map_err(|e| Error::Unavailable(format!("job manager did not start: {e}")))??
    };

    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    health_reporter
        .set_service_status("", ServingStatus::Serving)
        .await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| Error::InvalidArgument(format!("reflection: {e}")))?;

    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let training = pb::training_server::TrainingServer::new(training::TrainingService::new(
        manager.clone(),
        shutdown_rx.clone(),
    ))
    .max_decoding_message_size(opts.payload_limit)
    .max_encoding_message_size(opts.payload_limit);

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

    {
        let m = manager.clone();
        tokio::task::spawn_blocking(move || m.schedule())
            .await
            .map_err(|e| Error::Unavailable(format!("scheduler did not start: {e}")))??;
    }
    health_reporter
        .set_service_status(TRAINING_SERVICE, ServingStatus::Serving)
        .await;
    tracing::info!(%addr, %metrics_addr, data_dir = %opts.data_dir.display(), "serving");
    ready(addr, metrics_addr);

    let drain = {
        let health = health_reporter.clone();
        let m = manager.clone();
        async move {
            stop.await;
            tracing::info!("shutting down: readiness off, streams ending, jobs checkpointing");
            health
                .set_service_status(TRAINING_SERVICE, ServingStatus::NotServing)
                .await;
            let _ = tokio::task::spawn_blocking(move || m.begin_shutdown()).await;
            let _ = shutdown_tx.send(true);
        }
    };
    tonic::transport::Server::builder()
        .trace_fn(|req| tracing::info_span!("grpc", method = %req.uri().path()))
        .add_service(health_service)
        .add_service(reflection)
        .add_service(training)
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), drain)
        .await
        .map_err(|e| Error::Unavailable(format!("gRPC server: {e}")))?;

    let grace = opts.shutdown_grace;
    let left = tokio::task::spawn_blocking(move || manager.shutdown(grace))
        .await
        .unwrap_or(0);
    let _ = metrics_task.await;
    tracing::info!(jobs_left_running = left, "stopped");
    Ok(())
}
