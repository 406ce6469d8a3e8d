//! The `noiseda.v1.Restore` and `noiseda.v1.Models` gRPC services: requests are checked,
//! decoded off the runtime (`restore::codec`), admitted into the bounded queue of their
//! model's batcher, and the results encoded off the runtime; models are listed, loaded,
//! swapped and unloaded through the registry. Also the Restore service's health (readiness).

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot, watch, OwnedSemaphorePermit};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::config::LimitsConfig;
use super::convert;
use super::prometheus::Prom;
use crate::pb;
use crate::restore::batcher::{Done, Pending};
use crate::restore::codec;
use crate::restore::registry::{Registry, Served};
use crate::restore::stats::RequestTimes;
use crate::{Error, Result};

/// Requests of one RestoreStream being worked on at once (responses stay in order).
const STREAM_IN_FLIGHT: usize = 8;

struct Inner {
    registry: Arc<Registry>,
    limits: LimitsConfig,
    prom: Arc<Prom>,
}

#[derive(Clone)]
pub struct RestoreService {
    inner: Arc<Inner>,
    shutdown: watch::Receiver<bool>,
}

impl RestoreService {
    pub fn new(
        registry: Arc<Registry>,
        limits: LimitsConfig,
        prom: Arc<Prom>,
        shutdown: watch::Receiver<bool>,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                registry,
                limits,
                prom,
            }),
            shutdown,
        }
    }
}

impl RestoreService {
    /// One request through the Restore path as a unary call (`method` labels its Prometheus
    /// series): refused while draining, else admitted now or RESOURCE_EXHAUSTED.
    pub(super) async fn restore_once(
        &self,
        req: pb::RestoreRequest,
        meta: &tonic::metadata::MetadataMap,
        method: &str,
    ) -> Result<pb::RestoreResponse> {
        let deadline = deadline(meta);
        let r = if *self.shutdown.borrow() {
            Err(Error::unavailable("the server is shutting down"))
        } else {
            self.inner.handle(req, deadline, Admission::Now).await
        };
        self.inner.prom.request(method, code_of(&r));
        r
    }

    /// One request of a stream through the Restore path: waits for room in the queue.
    pub(super) async fn restore_waiting(
        &self,
        req: pb::RestoreRequest,
        method: &str,
    ) -> Result<pb::RestoreResponse> {
        let r = self.inner.handle(req, None, Admission::Wait).await;
        self.inner.prom.request(method, code_of(&r));
        r
    }

    pub(super) fn shutdown(&self) -> watch::Receiver<bool> {
        self.shutdown.clone()
    }

    pub(super) fn registry(&self) -> &Arc<Registry> {
        &self.inner.registry
    }

    pub(super) fn draining(&self) -> bool {
        *self.shutdown.borrow()
    }
}

/// How a request waits for room in the queue.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Admission {
    /// Fail with RESOURCE_EXHAUSTED when full (unary calls).
    Now,
    /// Wait for room (streams).
    Wait,
}

/// How much earlier than the client's deadline a request gives up, so that the client gets this
/// service's DEADLINE_EXCEEDED rather than the transport's CANCELLED ("Timeout expired"), which
/// tonic sends when the `grpc-timeout` itself runs out.
const DEADLINE_MARGIN: Duration = Duration::from_millis(5);

/// The deadline a client set with `grpc-timeout` (less [`DEADLINE_MARGIN`]), if any.
fn deadline(meta: &tonic::metadata::MetadataMap) -> Option<Instant> {
    let v = meta.get("grpc-timeout")?.to_str().ok()?;
    let (num, unit) = v.split_at(v.len().checked_sub(1)?);
    let n: u64 = num.parse().ok()?;
    let d = match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    };
    Some(Instant::now() + d.saturating_sub(DEADLINE_MARGIN))
}

impl Inner {
    /// Admission: one permit per image from the server-wide queue bound.
    async fn admit(&self, n: usize, admission: Admission) -> Result<Vec<OwnedSemaphorePermit>> {
        let mut permits: Vec<OwnedSemaphorePermit> = Vec::with_capacity(n);
        for _ in 0..n {
            let p = match admission {
                Admission::Now => {
                    self.registry
                        .permits
                        .clone()
                        .try_acquire_owned()
                        .map_err(|_| {
                            Error::Overloaded(format!(
                                "the queue is full ({} images); retry later",
                                self.registry.batch_options().max_queue
                            ))
                        })?
                }
                Admission::Wait => self
                    .registry
                    .permits
                    .clone()
                    .acquire_owned()
                    .await
                    .map_err(|_| Error::unavailable("the server is shutting down"))?,
            };
            permits.push(p);
        }
        Ok(permits)
    }

    /// Serves one request end to end: check, then [`Inner::pipeline`]; the model's statistics
    /// count the request as succeeded or failed.
    async fn handle(
        self: &Arc<Self>,
        req: pb::RestoreRequest,
        deadline: Option<Instant>,
        admission: Admission,
    ) -> Result<pb::RestoreResponse> {
        let t0 = Instant::now();
        let n = req.images.len();
        if n == 0 {
            return Err(Error::invalid_input("images: give at least one image"));
        }
        if n > self.limits.max_images_per_request {
            return Err(Error::invalid_input(format!(
                "images: {n} exceeds max_images_per_request = {}",
                self.limits.max_images_per_request
            )));
        }
        let format = convert::output_format(req.output_format)?;
        if req.jpeg_quality > 100 {
            return Err(Error::invalid_input(format!(
                "jpeg_quality: {} is not in 1-100",
                req.jpeg_quality
            )));
        }
        let served = self.registry.get(&req.model, &req.version)?;
        let r = self
            .pipeline(&served, req, format, deadline, admission, t0)
            .await;
        if r.is_err() {
            served.stats.failed(t0.elapsed());
        }
        r
    }

    /// Decode (off the runtime), admit, queue, wait, encode (off the runtime), answer. ~90
    /// lines: one pipeline whose steps share the request, the deadline and the timings.
    async fn pipeline(
        self: &Arc<Self>,
        served: &Arc<Served>,
        req: pb::RestoreRequest,
        format: codec::OutputFormat,
        deadline: Option<Instant>,
        admission: Admission,
        t0: Instant,
    ) -> Result<pb::RestoreResponse> {
        let n = req.images.len();
        // Tile sides round up to 8, the U-Net presets' multiple (DnCNN takes any size).
        let multiple = 8;
        let me = self.clone();
        let req = Arc::new(req);
        let decoded = {
            let req = req.clone();
            tokio::task::spawn_blocking(move || {
                req.images
                    .iter()
                    .enumerate()
                    .map(|(k, input)| convert::decode_input(&me.limits, k, input, &req, multiple))
                    .collect::<Result<Vec<_>>>()
            })
            .await
            .map_err(|e| Error::unavailable(format!("decoding failed: {e}")))??
        };
        for d in &decoded {
            self.prom.image(d.image.width * d.image.height);
        }

        let permits = self.admit(n, admission).await?;
        let mut replies = Vec::with_capacity(n);
        let mut decode_times = Vec::with_capacity(n);
        for (d, permit) in decoded.into_iter().zip(permits) {
            let (tx, rx) = oneshot::channel();
            decode_times.push(d.decode);
            served.batcher.submit(Pending {
                image: d.image,
                tiling: d.tiling,
                enqueued: Instant::now(),
                deadline,
                reply: tx,
                permit,
            })?;
            replies.push(rx);
        }
        let mut done: Vec<Done> = Vec::with_capacity(n);
        for rx in replies {
            let reply = match deadline {
                Some(d) => tokio::time::timeout_at(d.into(), rx).await.map_err(|_| {
                    Error::Deadline(format!(
                        "the deadline passed after {} ms (queued or running)",
                        t0.elapsed().as_millis()
                    ))
                })?,
                None => rx.await,
            };
            done.push(reply.map_err(|_| Error::unavailable("the model went away"))??);
        }

        let quality = if req.jpeg_quality == 0 {
            95
        } else {
            req.jpeg_quality as u8
        };
        let encoded = tokio::task::spawn_blocking(move || {
            done.into_iter()
                .map(|d| {
                    let t = Instant::now();
                    let data = codec::encode(&d.image, format, quality)?;
                    Ok((d, data, t.elapsed()))
                })
                .collect::<Result<Vec<_>>>()
        })
        .await
        .map_err(|e| Error::unavailable(format!("encoding failed: {e}")))??;
        let total = t0.elapsed();
        served
            .stats
            .succeeded(request_times(&encoded, &decode_times, total));
        let images = encoded
            .into_iter()
            .zip(decode_times)
            .map(|((d, data, enc), dec)| {
                convert::restored_image(&d, data, format, [dec, d.queue, d.inference, enc, total])
            })
            .collect();
        Ok(convert::restore_response(served, images, req.id))
    }
}

/// A request's timings for the model's statistics: queue and forward pass as the means over
/// its images, decoding and encoding summed.
fn request_times(
    encoded: &[(Done, Vec<u8>, Duration)],
    decode: &[Duration],
    total: Duration,
) -> RequestTimes {
    let n = encoded.len().max(1) as u32;
    RequestTimes {
        total,
        decode: decode.iter().sum(),
        queue: encoded.iter().map(|(d, _, _)| d.queue).sum::<Duration>() / n,
        infer: encoded
            .iter()
            .map(|(d, _, _)| d.inference)
            .sum::<Duration>()
            / n,
        encode: encoded.iter().map(|(_, _, e)| *e).sum(),
    }
}

fn code_of(r: &Result<pb::RestoreResponse>) -> tonic::Code {
    r.as_ref().map_or_else(Error::code, |_| tonic::Code::Ok)
}

type ResponseStream =
    std::pin::Pin<Box<dyn tokio_stream::Stream<Item = Result<pb::RestoreResponse, Status>> + Send>>;

#[tonic::async_trait]
impl pb::restore_server::Restore for RestoreService {
    async fn restore(
        &self,
        req: Request<pb::RestoreRequest>,
    ) -> Result<Response<pb::RestoreResponse>, Status> {
        // Draining: calls that arrive on open connections are refused; those already
        // admitted finish within the grace period.
        let meta = req.metadata().clone();
        let r = self.restore_once(req.into_inner(), &meta, "Restore").await;
        Ok(Response::new(r?))
    }

    type RestoreStreamStream = ResponseStream;

    async fn restore_stream(
        &self,
        req: Request<tonic::Streaming<pb::RestoreRequest>>,
    ) -> Result<Response<Self::RestoreStreamStream>, Status> {
        if *self.shutdown.borrow() {
            return Err(Error::unavailable("the server is shutting down").into());
        }
        let inner = self.inner.clone();
        let out = ordered_stream(
            req.into_inner(),
            self.shutdown.clone(),
            move |req: pb::RestoreRequest| {
                let inner = inner.clone();
                async move {
                    let id = req.id;
                    let r = inner.handle(req, None, Admission::Wait).await;
                    inner.prom.request("RestoreStream", code_of(&r));
                    r.unwrap_or_else(|e| convert::restore_error(id, &e))
                }
            },
            |e| convert::restore_error(0, &e),
        );
        Ok(Response::new(Box::pin(out)))
    }
}

/// A stream's requests answered in order: each request starts `handle` as it arrives (at most
/// [`STREAM_IN_FLIGHT`] at once, waiting for room in the queue), the answers go out in request
/// order; it ends with the inbound stream or at shutdown. `failed` answers a request whose task
/// failed.
pub(super) fn ordered_stream<Req, Resp, F, Fut>(
    mut inbound: tonic::Streaming<Req>,
    mut shutdown: watch::Receiver<bool>,
    handle: F,
    failed: fn(Error) -> Resp,
) -> ReceiverStream<Result<Resp, Status>>
where
    Req: Send + 'static,
    Resp: Send + 'static,
    F: Fn(Req) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Resp> + Send + 'static,
{
    let (out_tx, out_rx) = mpsc::channel(STREAM_IN_FLIGHT);
    let (order_tx, mut order_rx) = mpsc::channel::<tokio::task::JoinHandle<Resp>>(STREAM_IN_FLIGHT);
    // Reader: starts each request as it arrives.
    tokio::spawn(async move {
        loop {
            let msg = tokio::select! {
                m = inbound.message() => m,
                _ = async { let _ = shutdown.wait_for(|s| *s).await; } => break,
            };
            let req = match msg {
                Ok(Some(r)) => r,
                Ok(None) | Err(_) => break,
            };
            if order_tx.send(tokio::spawn(handle(req))).await.is_err() {
                break;
            }
        }
    });
    // Writer: answers in request order.
    tokio::spawn(async move {
        while let Some(task) = order_rx.recv().await {
            let resp = task
                .await
                .unwrap_or_else(|e| failed(Error::internal(format!("request task failed: {e}"))));
            if out_tx.send(Ok(resp)).await.is_err() {
                break;
            }
        }
    });
    ReceiverStream::new(out_rx)
}

/// Sets the Restore service's readiness: SERVING while a default model is loaded and the server
/// is not draining. Called at start and before a model change is answered, so a health check
/// right after LoadModel / UnloadModel sees the new state.
pub async fn publish_readiness(
    health: &tonic_health::server::HealthReporter,
    registry: &Registry,
    shutdown: &watch::Receiver<bool>,
) {
    let status = if registry.default_name().is_some() && !*shutdown.borrow() {
        tonic_health::ServingStatus::Serving
    } else {
        tonic_health::ServingStatus::NotServing
    };
    health
        .set_service_status(super::RESTORE_SERVICE, status)
        .await;
}

/// The `noiseda.v1.Models` service.
pub struct ModelsService {
    registry: Arc<Registry>,
    info: pb::ServerInfoResponse,
    health: tonic_health::server::HealthReporter,
    shutdown: watch::Receiver<bool>,
}

impl ModelsService {
    pub fn new(
        registry: Arc<Registry>,
        info: pb::ServerInfoResponse,
        health: tonic_health::server::HealthReporter,
        shutdown: watch::Receiver<bool>,
    ) -> Self {
        Self {
            registry,
            info,
            health,
            shutdown,
        }
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Registry) -> Result<T> + Send + 'static,
    ) -> Result<T, Status> {
        let r = self.registry.clone();
        super::blocking("model registry", move || f(&r)).await
    }
}

#[tonic::async_trait]
impl pb::models_server::Models for ModelsService {
    async fn list_models(
        &self,
        _req: Request<pb::ListModelsRequest>,
    ) -> Result<Response<pb::ListModelsResponse>, Status> {
        let models = self
            .registry
            .list()
            .iter()
            .map(|(s, d)| convert::loaded_model(s, *d))
            .collect();
        Ok(Response::new(pb::ListModelsResponse { models }))
    }

    async fn load_model(
        &self,
        req: Request<pb::LoadModelRequest>,
    ) -> Result<Response<pb::LoadedModel>, Status> {
        let req = req.into_inner();
        let s = self
            .blocking(move |r| {
                let dir = r.resolve(&req.path)?;
                let name = if req.name.is_empty() {
                    dir.file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_default()
                } else {
                    req.name.clone()
                };
                r.load(&dir, &name, &req.version, req.make_default)
            })
            .await?;
        publish_readiness(&self.health, &self.registry, &self.shutdown).await;
        let is_default = self.registry.default_name().as_deref() == Some(s.name.as_str());
        Ok(Response::new(convert::loaded_model(&s, is_default)))
    }

    async fn unload_model(
        &self,
        req: Request<pb::UnloadModelRequest>,
    ) -> Result<Response<pb::UnloadModelResponse>, Status> {
        let name = req.into_inner().name;
        self.blocking(move |r| r.unload(&name)).await?;
        publish_readiness(&self.health, &self.registry, &self.shutdown).await;
        Ok(Response::new(pb::UnloadModelResponse {}))
    }

    async fn set_default(
        &self,
        req: Request<pb::SetDefaultRequest>,
    ) -> Result<Response<pb::LoadedModel>, Status> {
        let name = req.into_inner().name;
        let s = self.blocking(move |r| r.set_default(&name)).await?;
        publish_readiness(&self.health, &self.registry, &self.shutdown).await;
        Ok(Response::new(convert::loaded_model(&s, true)))
    }

    async fn server_info(
        &self,
        _req: Request<pb::ServerInfoRequest>,
    ) -> Result<Response<pb::ServerInfoResponse>, Status> {
        let mut info = self.info.clone();
        info.default_model = self.registry.default_name().unwrap_or_default();
        Ok(Response::new(info))
    }
}
