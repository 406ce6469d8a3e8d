//! The `noiseda.v1.Restore` and `noiseda.v1.Models` gRPC services: requests are checked,
//! decoded off the runtime, admitted into the bounded queue of their model's batcher, and the
//! results encoded off the runtime; models are listed, loaded, swapped and unloaded.

use std::io::Cursor;
use std::sync::Arc;
use std::time::{Duration, Instant, UNIX_EPOCH};

use image::{ImageFormat, ImageReader, RgbImage};
use tokio::sync::{mpsc, oneshot, watch, OwnedSemaphorePermit};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::batcher::{Done, Job};
use super::config::LimitsConfig;
use super::prom::Prom;
use super::registry::{Registry, Served};
use crate::data::Image;
use crate::infer::Tiling;
use crate::pb;
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

fn us(d: Duration) -> u64 {
    d.as_micros() as u64
}

/// A decoded input and how long decoding took.
pub struct Decoded {
    pub image: Image,
    pub tiling: Option<Tiling>,
    pub decode: Duration,
}

impl LimitsConfig {
    /// Pixel checks for a `width`×`height` input; the tiling it needs, if any.
    pub fn admit_size(
        &self,
        k: usize,
        width: u64,
        height: u64,
        req: &pb::RestoreRequest,
        multiple: usize,
    ) -> Result<Option<Tiling>> {
        let l = self;
        let pixels = width.saturating_mul(height);
        if width == 0 || height == 0 {
            return Err(Error::InvalidArgument(format!(
                "image {k}: zero size ({width}×{height})"
            )));
        }
        if pixels > l.max_input_pixels as u64 {
            return Err(Error::InvalidArgument(format!(
                "image {k}: {width}×{height} = {pixels} pixels exceeds max_input_pixels = {}",
                l.max_input_pixels
            )));
        }
        if pixels <= l.max_image_pixels as u64 {
            return Ok(None);
        }
        let tile = if req.tile_size > 0 {
            req.tile_size as usize
        } else {
            l.tile_size
        };
        if tile == 0 {
            return Err(Error::InvalidArgument(format!(
                "image {k}: {width}×{height} = {pixels} pixels exceeds max_image_pixels = {} and \
                 tiling is off (set tile_size in the request)",
                l.max_image_pixels
            )));
        }
        let tile = tile.div_ceil(multiple) * multiple;
        let mut t = Tiling::new(tile);
        if req.tile_overlap > 0 {
            t.overlap = req.tile_overlap as usize;
        } else if l.tile_overlap > 0 {
            t.overlap = l.tile_overlap;
        }
        t.validate()
            .map_err(|e| Error::InvalidArgument(format!("image {k}: {e}")))?;
        Ok(Some(t))
    }

    /// Decodes input `k` of a request within the limits: encoded images are sized from their
    /// header before any pixel is decoded; raw images must match their stated size exactly.
    /// `multiple` is the model's size multiple (tiles are rounded up to it).
    pub fn decode(
        &self,
        k: usize,
        input: &pb::ImageInput,
        req: &pb::RestoreRequest,
        multiple: usize,
    ) -> Result<Decoded> {
        let t0 = Instant::now();
        let (image, tiling) = match &input.image {
            Some(pb::image_input::Image::Encoded(e)) => {
                let reader = ImageReader::new(Cursor::new(&e.data))
                    .with_guessed_format()
                    .map_err(|e| Error::InvalidArgument(format!("image {k}: {e}")))?;
                match reader.format() {
                    Some(ImageFormat::Png | ImageFormat::Jpeg | ImageFormat::WebP) => {}
                    other => {
                        return Err(Error::InvalidArgument(format!(
                            "image {k}: not a PNG, JPEG or WebP image ({} bytes{})",
                            e.data.len(),
                            other
                                .map(|f| format!(", looks like {f:?}"))
                                .unwrap_or_default()
                        )))
                    }
                }
                let (w, h) = reader
                    .into_dimensions()
                    .map_err(|e| Error::InvalidArgument(format!("image {k}: {e}")))?;
                let tiling = self.admit_size(k, w as u64, h as u64, req, multiple)?;
                let mut reader = ImageReader::new(Cursor::new(&e.data))
                    .with_guessed_format()
                    .map_err(|e| Error::InvalidArgument(format!("image {k}: {e}")))?;
                let mut limits = image::Limits::default();
                limits.max_image_width = Some(w);
                limits.max_image_height = Some(h);
                reader.limits(limits);
                let img = reader.decode().map_err(|e| {
                    Error::InvalidArgument(format!("image {k}: cannot decode: {e}"))
                })?;
                (Image::from_rgb8(&img.to_rgb8()), tiling)
            }
            Some(pb::image_input::Image::Raw(r)) => {
                let channels = if r.channels == 0 { 3 } else { r.channels };
                if channels != 3 {
                    return Err(Error::InvalidArgument(format!(
                        "image {k}: raw images must have 3 channels (RGB), got {channels}"
                    )));
                }
                let tiling = self.admit_size(k, r.width as u64, r.height as u64, req, multiple)?;
                let n = r.width as usize * r.height as usize * 3;
                let data = match pb::PixelType::try_from(r.pixel_type) {
                    Ok(pb::PixelType::U8) => {
                        if r.data.len() != n {
                            return Err(Error::InvalidArgument(format!(
                                "image {k}: raw u8 {}×{}×3 needs {n} bytes, got {}",
                                r.width,
                                r.height,
                                r.data.len()
                            )));
                        }
                        r.data.iter().map(|&v| v as f32 / 255.0).collect()
                    }
                    Ok(pb::PixelType::F32) => {
                        if r.data.len() != n * 4 {
                            return Err(Error::InvalidArgument(format!(
                                "image {k}: raw f32 {}×{}×3 needs {} bytes, got {}",
                                r.width,
                                r.height,
                                n * 4,
                                r.data.len()
                            )));
                        }
                        let v: Vec<f32> = r
                            .data
                            .chunks_exact(4)
                            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                            .collect();
                        if let Some(bad) = v.iter().position(|x| !x.is_finite()) {
                            return Err(Error::InvalidArgument(format!(
                                "image {k}: raw f32 value {} at index {bad} is not finite",
                                v[bad]
                            )));
                        }
                        v
                    }
                    _ => {
                        return Err(Error::InvalidArgument(format!(
                            "image {k}: raw pixel_type must be PIXEL_TYPE_U8 or PIXEL_TYPE_F32"
                        )))
                    }
                };
                (
                    Image {
                        width: r.width as usize,
                        height: r.height as usize,
                        data,
                    },
                    tiling,
                )
            }
            None => {
                return Err(Error::InvalidArgument(format!(
                    "image {k}: give `encoded` or `raw`"
                )))
            }
        };
        Ok(Decoded {
            image,
            tiling,
            decode: t0.elapsed(),
        })
    }
}

impl Inner {
    /// Serves one request end to end.
    async fn handle(
        self: &Arc<Self>,
        req: pb::RestoreRequest,
        deadline: Option<Instant>,
        admission: Admission,
    ) -> Result<pb::RestoreResponse> {
        let t0 = Instant::now();
        let n = req.images.len();
        if n == 0 {
            return Err(Error::InvalidArgument(
                "images: give at least one image".into(),
            ));
        }
        if n > self.limits.max_images_per_request {
            return Err(Error::InvalidArgument(format!(
                "images: {n} exceeds max_images_per_request = {}",
                self.limits.max_images_per_request
            )));
        }
        let format = pb::OutputFormat::try_from(req.output_format).map_err(|_| {
            Error::InvalidArgument(format!(
                "output_format: unknown value {}",
                req.output_format
            ))
        })?;
        if req.jpeg_quality > 100 {
            return Err(Error::InvalidArgument(format!(
                "jpeg_quality: {} is not in 1-100",
                req.jpeg_quality
            )));
        }
        let served = self.registry.get(&req.model, &req.version)?;
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
                    .map(|(k, input)| me.limits.decode(k, input, &req, multiple))
                    .collect::<Result<Vec<_>>>()
            })
            .await
            .map_err(|e| Error::Unavailable(format!("decoding failed: {e}")))??
        };
        for d in &decoded {
            self.prom.image(d.image.width * d.image.height);
        }

        // Admission: one permit per image from the server-wide queue bound.
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
                    .map_err(|_| Error::Unavailable("the server is shutting down".into()))?,
            };
            permits.push(p);
        }
        let mut replies = Vec::with_capacity(n);
        let mut decode_times = Vec::with_capacity(n);
        for (d, permit) in decoded.into_iter().zip(permits) {
            let (tx, rx) = oneshot::channel();
            decode_times.push(d.decode);
            served.batcher.submit(Job {
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
                    Error::DeadlineExceeded(format!(
                        "the deadline passed after {} ms (queued or running)",
                        t0.elapsed().as_millis()
                    ))
                })?,
                None => rx.await,
            };
            done.push(reply.map_err(|_| Error::Unavailable("the model went away".into()))??);
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
                    let data = encode(&d.image, format, quality)?;
                    Ok((d, data, t.elapsed()))
                })
                .collect::<Result<Vec<_>>>()
        })
        .await
        .map_err(|e| Error::Unavailable(format!("encoding failed: {e}")))??;
        let total = us(t0.elapsed());
        let images = encoded
            .into_iter()
            .zip(decode_times)
            .map(|((d, data, enc), dec)| pb::RestoredImage {
                data,
                height: d.image.height as u32,
                width: d.image.width as u32,
                format: match format {
                    pb::OutputFormat::Unspecified => pb::OutputFormat::Png,
                    f => f,
                } as i32,
                timing: Some(pb::Timing {
                    decode_us: us(dec),
                    queue_us: us(d.queue),
                    inference_us: us(d.inference),
                    encode_us: us(enc),
                    total_us: total,
                }),
                batch_size: d.batch as u32,
                tiled: d.tiled,
            })
            .collect();
        Ok(response(&served, images, req.id))
    }
}

fn response(served: &Served, images: Vec<pb::RestoredImage>, id: u64) -> pb::RestoreResponse {
    pb::RestoreResponse {
        images,
        model: served.name.clone(),
        version: served.version.clone(),
        weights_sha256: served.manifest.sha256.clone(),
        id,
        error: None,
    }
}

/// Encodes a restored image in the requested format.
pub fn encode(img: &Image, format: pb::OutputFormat, jpeg_quality: u8) -> Result<Vec<u8>> {
    let rgb: RgbImage = img.to_rgb8();
    let mut out = Vec::new();
    let err = |e: image::ImageError| Error::InvalidArgument(format!("encoding the result: {e}"));
    match format {
        pb::OutputFormat::Unspecified | pb::OutputFormat::Png => {
            rgb.write_to(&mut Cursor::new(&mut out), ImageFormat::Png)
                .map_err(err)?;
        }
        pb::OutputFormat::Jpeg => {
            image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, jpeg_quality)
                .encode_image(&rgb)
                .map_err(err)?;
        }
        pb::OutputFormat::Webp => {
            image::codecs::webp::WebPEncoder::new_lossless(&mut out)
                .encode(
                    rgb.as_raw(),
                    rgb.width(),
                    rgb.height(),
                    image::ExtendedColorType::Rgb8,
                )
                .map_err(err)?;
        }
        pb::OutputFormat::RawU8 => out = rgb.into_raw(),
        pb::OutputFormat::RawF32 => {
            out.reserve(img.data.len() * 4);
            for v in &img.data {
                out.extend_from_slice(&v.clamp(0.0, 1.0).to_le_bytes());
            }
        }
    }
    Ok(out)
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
        let deadline = deadline(req.metadata());
        // Draining: calls that arrive on open connections are refused; those already
        // admitted finish within the grace period.
        let r = if *self.shutdown.borrow() {
            Err(Error::Unavailable("the server is shutting down".into()))
        } else {
            self.inner
                .handle(req.into_inner(), deadline, Admission::Now)
                .await
        };
        self.inner.prom.request("Restore", code_of(&r));
        Ok(Response::new(r?))
    }

    type RestoreStreamStream = ResponseStream;

    async fn restore_stream(
        &self,
        req: Request<tonic::Streaming<pb::RestoreRequest>>,
    ) -> Result<Response<Self::RestoreStreamStream>, Status> {
        if *self.shutdown.borrow() {
            return Err(Error::Unavailable("the server is shutting down".into()).into());
        }
        let mut inbound = req.into_inner();
        let (out_tx, out_rx) = mpsc::channel(STREAM_IN_FLIGHT);
        let (order_tx, mut order_rx) =
            mpsc::channel::<tokio::task::JoinHandle<pb::RestoreResponse>>(STREAM_IN_FLIGHT);
        let inner = self.inner.clone();
        let mut shutdown = self.shutdown.clone();
        // Reader: starts each request as it arrives (at most STREAM_IN_FLIGHT at once).
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
                let inner = inner.clone();
                let task = tokio::spawn(async move {
                    let id = req.id;
                    let r = inner.handle(req, None, Admission::Wait).await;
                    inner.prom.request("RestoreStream", code_of(&r));
                    r.unwrap_or_else(|e| pb::RestoreResponse {
                        id,
                        error: Some(pb::RestoreError {
                            code: e.code() as i32,
                            message: e.to_string(),
                        }),
                        ..Default::default()
                    })
                });
                if order_tx.send(task).await.is_err() {
                    break;
                }
            }
        });
        // Writer: answers in request order.
        tokio::spawn(async move {
            while let Some(task) = order_rx.recv().await {
                let resp = task.await.unwrap_or_else(|e| pb::RestoreResponse {
                    error: Some(pb::RestoreError {
                        code: tonic::Code::Internal as i32,
                        message: format!("request task failed: {e}"),
                    }),
                    ..Default::default()
                });
                if out_tx.send(Ok(resp)).await.is_err() {
                    break;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(out_rx))))
    }
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

fn loaded(s: &Served, is_default: bool) -> pb::LoadedModel {
    let at = s.loaded_at.duration_since(UNIX_EPOCH).unwrap_or_default();
    pb::LoadedModel {
        name: s.name.clone(),
        version: s.version.clone(),
        is_default,
        info: Some((&s.manifest).into()),
        path: s.dir.display().to_string(),
        loaded_at: Some(prost_types::Timestamp {
            seconds: at.as_secs() as i64,
            nanos: at.subsec_nanos() as i32,
        }),
        queued: s.batcher.queued() as u32,
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
            .map(|(s, d)| loaded(s, *d))
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
        Ok(Response::new(loaded(&s, is_default)))
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
        Ok(Response::new(loaded(&s, true)))
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
