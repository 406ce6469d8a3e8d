//! `noiseda serve`: the gRPC layer. [`router`] builds the services (Training, Restore + Models,
//! grpc.health.v1, reflection) behind the API-key layer; [`serve`] starts the job manager and
//! the model registry, binds, serves (and the inference protocol's REST binding, `rest.rs`,
//! when asked), and drains on shutdown. One file per service; every
//! pb <-> domain conversion is in `convert.rs`, the only `Error` -> `Status` mapping in
//! `status.rs`. The domain below is `jobs/` and `restore/`; the client is `crate::client`.

pub mod auth;
pub mod config;
pub mod convert;
pub mod inference;
pub mod prometheus;
pub mod rest;
pub mod restore;
pub mod status;
pub mod training;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::watch;
use tokio_stream::wrappers::TcpListenerStream;
use tonic_health::ServingStatus;

use crate::jobs::Manager;
use crate::pb;
use crate::restore::registry::{self, Registry};
use crate::{Error, Result};
pub use config::ServerConfig;

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
    pub(crate) fn training(self) -> bool {
        matches!(self, Role::All | Role::Training)
    }
    pub(crate) fn restore(self) -> bool {
        matches!(self, Role::All | Role::Restore)
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
        .map_err(|e| Error::internal(format!("{what} task failed: {e}")))
        .and_then(|r| r)
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

/// What `serve` starts before it binds: the job manager and the model registry (each when its
/// role runs), the metrics, health and the shutdown signal.
struct Parts {
    manager: Option<Arc<Manager>>,
    registry: Option<Arc<Registry>>,
    prom: Arc<prometheus::Prom>,
    health: tonic_health::server::HealthReporter,
    shutdown_tx: watch::Sender<bool>,
    shutdown_rx: watch::Receiver<bool>,
}

/// The services of a server and their layers, ready to serve.
pub type Router = tonic::transport::server::Router<
    tower::layer::util::Stack<auth::AuthLayer, tower::layer::util::Identity>,
>;

/// Builds the server's services over what `serve` started: health, reflection, and Training,
/// Restore and Models where their role runs, behind the API-key layer (and TLS when given).
fn router(
    cfg: &ServerConfig,
    parts: &Parts,
    health_service: tonic_health::pb::health_server::HealthServer<
        impl tonic_health::pb::health_server::Health,
    >,
    keys: Option<Arc<auth::ApiKeys>>,
    tls: Option<tonic::transport::ServerTlsConfig>,
) -> Result<(Router, Option<inference::InferenceService>)> {
    // Reflection in both versions: v1, and v1alpha for the clients that still ask for it
    // (grpcio-reflection's Python client, older grpcurl and GUI clients).
    let descriptors = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let reflection_error = |e| Error::invalid_input(format!("reflection: {e}"));
    let reflection = descriptors().build_v1().map_err(reflection_error)?;
    let reflection_v1alpha = descriptors().build_v1alpha().map_err(reflection_error)?;
    let limit = cfg.network.payload_limit;
    let training = parts.manager.as_ref().map(|m| {
        pb::training_server::TrainingServer::new(training::TrainingService::new(
            m.clone(),
            parts.shutdown_rx.clone(),
        ))
        .max_decoding_message_size(limit)
        .max_encoding_message_size(limit)
    });
    let (restore_svc, models_svc, inference_svc, inference) = match &parts.registry {
        Some(r) => {
            let (restore, models, inference) = restore_services(cfg, r, parts);
            let server = InferenceServer::new(inference.clone())
                .max_decoding_message_size(limit)
                .max_encoding_message_size(limit);
            (Some(restore), Some(models), Some(server), Some(inference))
        }
        None => (None, None, None, None),
    };
    let mut builder = tonic::transport::Server::builder();
    if let Some(tls) = tls {
        builder = builder
            .tls_config(tls)
            .map_err(|e| Error::invalid("--tls-cert", e.to_string()))?;
    }
    let router = builder
        .trace_fn(|req| tracing::info_span!("grpc", method = %req.uri().path()))
        .layer(auth::AuthLayer::new(keys))
        .add_service(health_service)
        .add_service(reflection)
        .add_service(reflection_v1alpha)
        .add_optional_service(training)
        .add_optional_service(restore_svc)
        .add_optional_service(models_svc)
        .add_optional_service(inference_svc);
    Ok((router, inference))
}

/// The sockets a server answers on: gRPC, the Prometheus `GET /metrics`, and the inference
/// protocol's REST binding when it is on.
pub struct Listeners {
    pub grpc: tokio::net::TcpListener,
    pub metrics: tokio::net::TcpListener,
    pub http: Option<tokio::net::TcpListener>,
}

/// The addresses a server is answering on, once it serves.
#[derive(Debug, Clone, Copy)]
pub struct Bound {
    pub grpc: SocketAddr,
    pub metrics: SocketAddr,
    /// The KServe v2 REST address (`--http-listen`).
    pub http: Option<SocketAddr>,
}

impl Listeners {
    /// Binds `--listen`, `--metrics-listen` and `--http-listen`.
    pub async fn bind(cfg: &ServerConfig) -> Result<Self> {
        let bind = |what: &'static str, addr: SocketAddr| async move {
            tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|e| Error::io(format!("{what} address {addr}"), e))
        };
        Ok(Self {
            grpc: bind("listen", cfg.network.listen).await?,
            metrics: bind("metrics", cfg.network.metrics_listen).await?,
            http: match cfg.network.http_listen {
                Some(a) => Some(bind("http", a).await?),
                None => None,
            },
        })
    }
}

/// Runs the server until `stop` resolves, then drains: readiness goes NOT_SERVING, metric
/// streams end (clients reconnect with their last seq), running jobs checkpoint within the
/// grace period. `ready` receives the bound addresses once serving. The
/// config is validated first. The listeners are bound here, after the job manager and the
/// registry have started, so that a bound address means a server that answers (the path of
/// `noiseda serve`).
pub async fn serve(
    cfg: ServerConfig,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
    ready: impl FnOnce(Bound),
) -> Result<()> {
    run(cfg, None, stop, ready).await
}

/// [`serve`] on listeners the caller bound beforehand (in-process servers: tests bind
/// `127.0.0.1:0` first, so they know the address without waiting; connections made before the
/// server is up wait in the listen backlog). `--listen`, `--metrics-listen` and
/// `--http-listen` are ignored; REST is served when `listeners.http` is given (and the Restore
/// role runs).
pub async fn serve_on(
    listeners: Listeners,
    cfg: ServerConfig,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<()> {
    run(cfg, Some(listeners), shutdown, |_| {}).await
}

async fn run(
    cfg: ServerConfig,
    listeners: Option<Listeners>,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
    ready: impl FnOnce(Bound),
) -> Result<()> {
    cfg.validate()?;
    let cfg = Arc::new(cfg);
    let (keys, tls) = load_auth(&cfg).await?;
    let keys = keys.map(Arc::new);
    open_devices(&cfg).await?;
    let prom = Arc::new(prometheus::Prom::new());
    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_service_status("", ServingStatus::Serving).await;
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let manager = start_manager(&cfg, &prom).await?;
    let registry = start_registry(&cfg, &prom, &health, &shutdown_rx).await?;
    let parts = Parts {
        manager,
        registry,
        prom,
        health,
        shutdown_tx,
        shutdown_rx,
    };
    let (router, inference) = router(&cfg, &parts, health_service, keys.clone(), tls)?;

    let listeners = match listeners {
        Some(l) => l,
        None => Listeners::bind(&cfg).await?,
    };
    let listener = listeners.grpc;
    let addr = listener
        .local_addr()
        .map_err(|e| Error::io("listen address", e))?;
    let mut metrics_stop = parts.shutdown_rx.clone();
    let (metrics_addr, metrics_server) =
        prometheus::bind(listeners.metrics, parts.prom.clone(), async move {
            let _ = metrics_stop.wait_for(|s| *s).await;
        })?;
    let metrics_task = tokio::spawn(metrics_server);
    // Plain HTTP never runs beside a TLS gRPC port (validate() refuses the flag; this covers
    // listeners handed to serve_on).
    let (http_addr, rest_task) = match (listeners.http, inference) {
        (Some(listener), Some(svc)) if cfg.auth.tls_cert.is_none() => {
            let (a, task) = start_rest(&cfg, listener, svc, keys, &parts.shutdown_rx)?;
            (Some(a), Some(task))
        }
        _ => (None, None),
    };
    start_scheduling(&parts).await?;
    tracing::info!(%addr, %metrics_addr, http = ?http_addr, role = ?cfg.network.role, data_dir = %cfg.storage.data_dir.display(), "serving");
    ready(Bound {
        grpc: addr,
        metrics: metrics_addr,
        http: http_addr,
    });

    let (draining_tx, draining_rx) = tokio::sync::oneshot::channel::<Instant>();
    let manager = parts.manager.clone();
    let drain = drain(&cfg, parts, stop, draining_tx);
    let server = router.serve_with_incoming_shutdown(nodelay(listener), drain);
    // In-flight calls get the grace period to finish; calls that never end by themselves
    // (health Watch streams, idle RestoreStreams of clients that do not hang up) do not hold the
    // process beyond it.
    let grace = cfg.network.shutdown_grace();
    let started_draining = tokio::select! {
        r = server => {
            r.map_err(|e| Error::unavailable(format!("gRPC server: {e}")))?;
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
    if let Some(t) = rest_task {
        let _ = t.await;
    }
    tracing::info!(jobs_left_running = left, "stopped");
    Ok(())
}

/// The connections of `listener`, each with TCP_NODELAY (tonic sets it only on listeners it
/// binds itself): without it a small response waits on the client's delayed ACK, ~30 ms a call.
fn nodelay(
    listener: tokio::net::TcpListener,
) -> impl tokio_stream::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    tokio_stream::StreamExt::map(TcpListenerStream::new(listener), |conn| {
        conn.inspect(|s| {
            if let Err(e) = s.set_nodelay(true) {
                tracing::warn!(error = %e, "cannot set TCP_NODELAY");
            }
        })
    })
}

/// Serves the inference protocol's REST binding on `listener` until shutdown.
fn start_rest(
    cfg: &ServerConfig,
    listener: tokio::net::TcpListener,
    svc: inference::InferenceService,
    keys: Option<Arc<auth::ApiKeys>>,
    shutdown_rx: &watch::Receiver<bool>,
) -> Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let mut stop = shutdown_rx.clone();
    let app = rest::router(svc, keys, cfg.network.payload_limit);
    let (addr, fut) = rest::bind(listener, app, async move {
        let _ = stop.wait_for(|s| *s).await;
    })?;
    Ok((addr, tokio::spawn(fut)))
}

/// Starts claiming jobs (when the Training role runs) and reports the training service ready.
async fn start_scheduling(parts: &Parts) -> Result<()> {
    if let Some(m) = &parts.manager {
        let m = m.clone();
        tokio::task::spawn_blocking(move || m.schedule())
            .await
            .map_err(|e| Error::unavailable(format!("scheduler did not start: {e}")))??;
        parts
            .health
            .set_service_status(TRAINING_SERVICE, ServingStatus::Serving)
            .await;
    }
    Ok(())
}

/// Reads the API key file and the TLS files (off the runtime).
async fn load_auth(
    cfg: &ServerConfig,
) -> Result<(
    Option<auth::ApiKeys>,
    Option<tonic::transport::ServerTlsConfig>,
)> {
    let (keys, tls) = (cfg.auth.api_keys.clone(), cfg.auth.tls());
    let (keys, tls) = tokio::task::spawn_blocking(move || -> Result<_> {
        Ok((
            keys.as_deref().map(auth::ApiKeys::load).transpose()?,
            tls.as_ref()
                .map(auth::TlsFiles::server_config)
                .transpose()?,
        ))
    })
    .await
    .map_err(|e| Error::unavailable(format!("reading the key and TLS files failed: {e}")))??;
    if keys.is_none() {
        tracing::warn!("no --api-keys: every call is accepted");
    }
    Ok((keys, tls))
}

/// Opens every device this process may use now (a GPU that is not there stops the start).
async fn open_devices(cfg: &ServerConfig) -> Result<()> {
    let role = cfg.network.role;
    let mut names: Vec<String> = Vec::new();
    if role.training() {
        names.extend(cfg.jobs.devices.iter().cloned());
    }
    if role.restore() && !names.contains(&cfg.restore.restore_device) {
        names.push(cfg.restore.restore_device.clone());
    }
    for d in tokio::task::spawn_blocking(move || {
        names
            .iter()
            .map(|n| crate::device::describe(n))
            .collect::<Result<Vec<_>>>()
    })
    .await
    .map_err(|e| Error::unavailable(format!("opening the devices failed: {e}")))??
    {
        tracing::info!(device = %d, "device");
    }
    Ok(())
}

/// The job manager, when the Training role runs.
async fn start_manager(
    cfg: &Arc<ServerConfig>,
    prom: &Arc<prometheus::Prom>,
) -> Result<Option<Arc<Manager>>> {
    if !cfg.network.role.training() {
        return Ok(None);
    }
    let (cfg, prom) = (cfg.clone(), prom.clone());
    Ok(Some(
        tokio::task::spawn_blocking(move || Manager::open(&cfg.storage, &cfg.jobs, prom))
            .await
            .map_err(|e| Error::unavailable(format!("job manager did not start: {e}")))??,
    ))
}

/// The model registry with its models loaded and followed, when the Restore role runs.
async fn start_registry(
    cfg: &ServerConfig,
    prom: &Arc<prometheus::Prom>,
    health: &tonic_health::server::HealthReporter,
    shutdown_rx: &watch::Receiver<bool>,
) -> Result<Option<Arc<Registry>>> {
    if !cfg.network.role.restore() {
        return Ok(None);
    }
    let o = &cfg.restore;
    let device = crate::device::open(&o.restore_device)?;
    let model_dir = cfg.storage.model_dir();
    std::fs::create_dir_all(&model_dir).map_err(|e| Error::io(&model_dir, e))?;
    let registry = Arc::new(Registry::new(model_dir, device, o.batch, prom.clone()));
    let not_started = |e| Error::unavailable(format!("model registry did not start: {e}"));
    let (r, default) = (registry.clone(), o.default_model.clone());
    let names = tokio::task::spawn_blocking(move || r.load_all(default.as_deref()))
        .await
        .map_err(not_started)??;
    tracing::info!(models = ?names, "restore models loaded");
    if o.default_model.is_none() {
        let r = registry.clone();
        tokio::task::spawn_blocking(move || r.follow_default_file())
            .await
            .map_err(not_started)??;
    }
    if !o.model_poll().is_zero() {
        tokio::spawn(registry::watch(
            registry.clone(),
            o.model_poll(),
            shutdown_rx.clone(),
        ));
    }
    restore::publish_readiness(health, &registry, shutdown_rx).await;
    Ok(Some(registry))
}

type RestoreServer = pb::restore_server::RestoreServer<restore::RestoreService>;
type ModelsServer = pb::models_server::ModelsServer<restore::ModelsService>;
type InferenceServer = pb::inference::grpc_inference_service_server::GrpcInferenceServiceServer<
    inference::InferenceService,
>;

/// The Restore, Models and Open Inference Protocol gRPC services over `registry`.
fn restore_services(
    cfg: &ServerConfig,
    registry: &Arc<Registry>,
    parts: &Parts,
) -> (RestoreServer, ModelsServer, inference::InferenceService) {
    let limit = cfg.network.payload_limit;
    let info = convert::server_info(cfg);
    let service = restore::RestoreService::new(
        registry.clone(),
        cfg.restore.limits,
        parts.prom.clone(),
        parts.shutdown_rx.clone(),
    );
    let inference = inference::InferenceService::new(service.clone());
    let restore = pb::restore_server::RestoreServer::new(service)
        .max_decoding_message_size(limit)
        .max_encoding_message_size(limit);
    let models = pb::models_server::ModelsServer::new(restore::ModelsService::new(
        registry.clone(),
        info,
        parts.health.clone(),
        parts.shutdown_rx.clone(),
    ))
    .max_decoding_message_size(limit)
    .max_encoding_message_size(limit);
    (restore, models, inference)
}

/// Resolves when `stop` has resolved and the drain is done: readiness off, streams told to
/// end, jobs told to checkpoint, then `--drain-delay-ms` of answering UNAVAILABLE.
fn drain(
    cfg: &ServerConfig,
    parts: Parts,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
    draining_tx: tokio::sync::oneshot::Sender<Instant>,
) -> impl std::future::Future<Output = ()> + Send + 'static {
    let drain_delay = cfg.network.drain_delay().min(cfg.network.shutdown_grace());
    async move {
        stop.await;
        let _ = draining_tx.send(Instant::now());
        tracing::info!("shutting down: readiness off, streams ending, jobs checkpointing");
        // Draining first, so a model change racing with the drain cannot report ready.
        let _ = parts.shutdown_tx.send(true);
        for service in [TRAINING_SERVICE, RESTORE_SERVICE] {
            parts
                .health
                .set_service_status(service, ServingStatus::NotServing)
                .await;
        }
        if let Some(m) = parts.manager {
            let _ = tokio::task::spawn_blocking(move || m.begin_shutdown()).await;
        }
        tokio::time::sleep(drain_delay).await;
    }
}
