//! `noiseda bench restore-load`: drives concurrent clients against a local Restore server for a
//! bounded time, with and without batching, and sets throughput and latency next to the raw
//! model time of the same network measured in the same run; a mixed mode sends half the
//! clients through the Open Inference Protocol's ModelInfer and half through
//! `noiseda.v1.Restore` into the same batches, so the two latencies differ only by protocol.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use candle::Device;
use serde::Serialize;

use crate::config::{DataRange, Weights};
use crate::data::Image;
use crate::grpc::config::{BatchConfig, LimitsConfig};
use crate::grpc::{self, Role, ServerConfig};
use crate::model::ArchConfig;
use crate::pb;
use crate::{Error, Result};

/// What `bench restore-load` runs (its command-line flags).
#[derive(Debug, Clone, clap::Args)]
pub struct LoadOptions {
    /// Restorer preset (random weights).
    #[arg(long, default_value = "unet-t")]
    pub preset: String,
    /// Square image side.
    #[arg(long, default_value_t = 256)]
    pub size: usize,
    /// Concurrent clients, one request (one image) in flight each.
    #[arg(long, default_value_t = 16)]
    pub clients: usize,
    /// Measured seconds per mode (after a warm-up of one request per client).
    #[arg(long, default_value_t = 15.0)]
    pub seconds: f64,
    /// Batch size of the batched mode (the unbatched mode uses 1).
    #[arg(long, default_value_t = 8)]
    pub batch: usize,
    /// PNG in and out (default: raw RGB u8 both ways).
    #[arg(long)]
    pub png: bool,
}

/// One mode of the run.
#[derive(Debug, Clone, Serialize)]
pub struct ModeReport {
    pub mode: String,
    pub max_batch_size: usize,
    pub requests: u64,
    pub errors: BTreeMap<String, u64>,
    pub images_per_second: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub mean_batch: f64,
    /// Raw forward time per image at this batch size (fastest of 7 passes).
    pub raw_ms_per_image: f64,
    /// Served time per image (1 / throughput).
    pub served_ms_per_image: f64,
    /// (served − raw) / raw.
    pub overhead: f64,
    /// Mean latency (ms) of each API's requests in this mode (`restore`, `model_infer`).
    pub mean_ms_by_api: BTreeMap<String, f64>,
}

/// Which API a client calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Api {
    /// `noiseda.v1.Restore/Restore`.
    Native,
    /// `inference.GRPCInferenceService/ModelInfer` (UINT8 NHWC raw tensors).
    Oip,
}

#[derive(Debug, Clone, Serialize)]
pub struct LoadReport {
    pub preset: String,
    pub size: usize,
    pub clients: usize,
    pub seconds: f64,
    pub threads: usize,
    pub input: String,
    pub modes: Vec<ModeReport>,
    /// Mean latency of ModelInfer over that of Restore, minus one, in the mixed mode (the
    /// same server, batches and moments; absent with PNG input: the protocol carries raw
    /// tensors).
    pub protocol_overhead: Option<f64>,
}

/// Fastest wall time of `f` over `runs` runs after one warm-up: the raw time the service is
/// compared with is the model's best case, so the overhead reported is an upper bound.
fn fastest_time(runs: usize, mut f: impl FnMut() -> Result<()>) -> Result<Duration> {
    f()?;
    let t: Vec<Duration> = (0..runs)
        .map(|_| {
            let t0 = Instant::now();
            f().map(|_| t0.elapsed())
        })
        .collect::<Result<_>>()?;
    Ok(t.into_iter().min().expect("at least one run"))
}

fn test_image(size: usize, k: usize) -> Image {
    let data = (0..size * size * 3)
        .map(|i| {
            let (p, c) = (i / 3, i % 3);
            let (y, x) = (p / size, p % size);
            (((x * (c + 1) + y * 3 + k * 17) % 255) as f32 / 255.0 * 0.8 + 0.1).min(1.0)
        })
        .collect();
    Image {
        width: size,
        height: size,
        data,
    }
}

/// Writes a randomly initialised restorer of `preset` as an artifact under `dir`.
fn random_artifact(preset: &str, dir: &Path) -> Result<()> {
    let arch = ArchConfig::preset(preset)
        .ok_or_else(|| Error::invalid_input(format!("unknown preset `{preset}`")))?;
    let model = crate::train::Model::new(&arch, None, 0, &Device::Cpu)?;
    crate::artifact::export(
        dir,
        &model.restorer_tensors(None),
        crate::artifact::ExportInfo {
            name: format!("load-{preset}"),
            arch,
            weights: Weights::Raw,
            range: DataRange::Unit,
            step: 0,
            metrics: BTreeMap::new(),
            source_spec: None,
            source_job: None,
        },
    )?;
    Ok(())
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[i]
}

/// Runs the whole benchmark (blocking; it starts its own runtime).
pub fn run(opts: &LoadOptions) -> Result<LoadReport> {
    let tmp = std::env::temp_dir().join(format!("noiseda-load-{}", std::process::id()));
    let models = tmp.join("models");
    random_artifact(&opts.preset, &models.join("load"))?;

    // Raw model time per image at batch 1 and at the batch size, same images.
    let model = crate::artifact::load(&models.join("load"), &Device::Cpu)?;
    let images: Vec<Image> = (0..opts.batch.max(1))
        .map(|k| test_image(opts.size, k))
        .collect();
    let raw = |n: usize| -> Result<f64> {
        let batch: Vec<&Image> = images.iter().take(n).collect();
        let t = fastest_time(7, || {
            crate::infer::restore_batch(&model.net, model.manifest.range, &batch, &Device::Cpu)
                .map(|_| ())
        })?;
        Ok(t.as_secs_f64() * 1e3 / n as f64)
    };
    let raw_batched = raw(opts.batch)?;
    let raw_single = raw(1)?;
    drop(model);

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::io("tokio runtime", e))?;
    let mut modes = Vec::new();
    let mut plan = vec![("batched", opts.batch, raw_batched, &[Api::Native][..])];
    if !opts.png {
        plan.push(("mixed", opts.batch, raw_batched, &[Api::Native, Api::Oip]));
    }
    plan.push(("unbatched", 1, raw_single, &[Api::Native]));
    for (mode, max_batch, raw_ms, apis) in plan {
        let report = rt.block_on(one_mode(opts, &tmp, mode, max_batch, raw_ms, apis))?;
        eprintln!(
            "{mode:<10} {:.1} img/s, p50 {:.1} ms, p99 {:.1} ms, mean batch {:.2}, overhead {:+.1} %",
            report.images_per_second,
            report.p50_ms,
            report.p99_ms,
            report.mean_batch,
            report.overhead * 100.0
        );
        modes.push(report);
    }
    let _ = std::fs::remove_dir_all(&tmp);
    let protocol_overhead = modes.iter().find(|m| m.mode == "mixed").and_then(|m| {
        let (oip, native) = (
            m.mean_ms_by_api.get("model_infer")?,
            m.mean_ms_by_api.get("restore")?,
        );
        Some(oip / native - 1.0)
    });
    Ok(LoadReport {
        preset: opts.preset.clone(),
        size: opts.size,
        clients: opts.clients,
        seconds: opts.seconds,
        threads: rayon::current_num_threads(),
        input: if opts.png { "png" } else { "raw-u8" }.into(),
        modes,
        protocol_overhead,
    })
}

/// A restore-only server on 127.0.0.1:0 for one mode: batches of up to `max_batch`, a queue of
/// two requests per client, single-image requests of the benchmark's size.
fn server_config(opts: &LoadOptions, tmp: &Path, mode: &str, max_batch: usize) -> ServerConfig {
    let mut cfg = ServerConfig::default();
    cfg.network.listen = "127.0.0.1:0".parse().expect("valid address");
    cfg.network.metrics_listen = "127.0.0.1:0".parse().expect("valid address");
    cfg.network.role = Role::Restore;
    cfg.network.shutdown_grace = 5;
    cfg.network.drain_delay_ms = 0;
    cfg.storage.data_dir = tmp.join(format!("data-{mode}"));
    cfg.storage.model_dir = Some(tmp.join("models"));
    cfg.jobs.replica_id = Some("loadtest".into());
    cfg.restore.model_poll_ms = 0;
    cfg.restore.batch = BatchConfig {
        max_batch_size: max_batch,
        max_batch_pixels: usize::MAX >> 1,
        max_batch_wait_us: 0,
        max_queue: opts.clients * 2,
    };
    cfg.restore.limits = LimitsConfig {
        max_image_pixels: opts.size * opts.size,
        max_input_pixels: opts.size * opts.size,
        max_images_per_request: 1,
        tile_size: 0,
        tile_overlap: 0,
    };
    cfg
}

/// Client `k`'s request: its own test image, PNG or raw u8 in and out.
fn request(opts: &LoadOptions, k: usize) -> pb::RestoreRequest {
    let img = test_image(opts.size, k).to_rgb8();
    let (image, format) = if opts.png {
        let mut data = Vec::new();
        let _ = img.write_to(
            &mut std::io::Cursor::new(&mut data),
            image::ImageFormat::Png,
        );
        (
            pb::image_input::Image::Encoded(pb::EncodedImage { data }),
            pb::OutputFormat::Png,
        )
    } else {
        (
            pb::image_input::Image::Raw(pb::RawImage {
                data: img.into_raw(),
                height: opts.size as u32,
                width: opts.size as u32,
                channels: 3,
                pixel_type: pb::PixelType::U8 as i32,
            }),
            pb::OutputFormat::RawU8,
        )
    };
    pb::RestoreRequest {
        images: vec![pb::ImageInput { image: Some(image) }],
        output_format: format as i32,
        ..Default::default()
    }
}

/// What the clients saw: latencies (ms), all and by API, errors by code, and
/// when the last client finished.
#[derive(Default)]
struct Seen {
    latencies: Vec<f64>,
    by_api: BTreeMap<Api, Vec<f64>>,
    errors: BTreeMap<String, u64>,
}

/// Client `k`'s ModelInfer request: the same image as [`request`], a UINT8 `[1, H, W, 3]`
/// tensor in `raw_input_contents`.
fn infer_request(opts: &LoadOptions, k: usize) -> pb::inference::ModelInferRequest {
    use pb::inference::model_infer_request::InferInputTensor;
    let side = opts.size as i64;
    pb::inference::ModelInferRequest {
        model_name: "load".into(),
        inputs: vec![InferInputTensor {
            name: "INPUT".into(),
            datatype: "UINT8".into(),
            shape: vec![1, side, side, 3],
            ..Default::default()
        }],
        raw_input_contents: vec![test_image(opts.size, k).to_rgb8().into_raw()],
        ..Default::default()
    }
}

/// A load client: one API, one request it sends again and again.
#[derive(Clone)]
enum Caller {
    Native(crate::client::RestoreClient, pb::RestoreRequest),
    Oip(
        crate::client::InferenceClient,
        pb::inference::ModelInferRequest,
    ),
}

impl Caller {
    async fn call(&mut self) -> std::result::Result<(), tonic::Status> {
        match self {
            Caller::Native(c, req) => c.restore(req.clone()).await.map(|_| ()),
            Caller::Oip(c, req) => c.model_infer(req.clone()).await.map(|_| ()),
        }
    }

    fn api(&self) -> Api {
        match self {
            Caller::Native(..) => Api::Native,
            Caller::Oip(..) => Api::Oip,
        }
    }
}

/// One client: a warm-up request, the shared start, then requests back to back until
/// `seconds` after the first client started measuring.
async fn client_loop(
    mut client: Caller,
    start: Arc<tokio::sync::Barrier>,
    measure_from: Arc<std::sync::OnceLock<Instant>>,
    seconds: f64,
) -> (Seen, Instant) {
    let _ = client.call().await;
    start.wait().await;
    let t0 = *measure_from.get_or_init(Instant::now);
    let end = t0 + Duration::from_secs_f64(seconds);
    let mut seen = Seen::default();
    while Instant::now() < end {
        let t = Instant::now();
        match client.call().await {
            Ok(()) => {
                let ms = t.elapsed().as_secs_f64() * 1e3;
                seen.latencies.push(ms);
                seen.by_api.entry(client.api()).or_default().push(ms);
            }
            Err(s) => *seen.errors.entry(format!("{:?}", s.code())).or_default() += 1,
        }
    }
    (seen, Instant::now())
}

/// One mode: its own server, `opts.clients` clients for `opts.seconds`, the report.
async fn one_mode(
    opts: &LoadOptions,
    tmp: &Path,
    mode: &str,
    max_batch: usize,
    raw_ms: f64,
    apis: &[Api],
) -> Result<ModeReport> {
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let (addr_tx, addr_rx) = tokio::sync::oneshot::channel::<SocketAddr>();
    let server = tokio::spawn(grpc::serve(
        server_config(opts, tmp, mode, max_batch),
        async move {
            let _ = stop_rx.await;
        },
        move |b| {
            let _ = addr_tx.send(b.grpc);
        },
    ));
    let addr = addr_rx
        .await
        .map_err(|_| Error::unavailable("the load-test server did not start"))?;
    let url = format!("http://{addr}");
    let native = crate::client::restore_client(&url).await?;
    let oip = crate::client::inference_client(&url).await?;

    // Warm-up: one request per client, all at once; then all measure together.
    let start = Arc::new(tokio::sync::Barrier::new(opts.clients));
    let measure_from = Arc::new(std::sync::OnceLock::<Instant>::new());
    let tasks: Vec<_> = (0..opts.clients)
        .map(|k| {
            let caller = match apis[k % apis.len()] {
                Api::Oip => Caller::Oip(oip.clone(), infer_request(opts, k)),
                Api::Native => Caller::Native(native.clone(), request(opts, k)),
            };
            tokio::spawn(client_loop(
                caller,
                start.clone(),
                measure_from.clone(),
                opts.seconds,
            ))
        })
        .collect();
    let (seen, last) = gather(tasks).await?;
    let mean_batch = mean_batch(oip).await?;
    let _ = stop_tx.send(());
    server
        .await
        .map_err(|e| Error::unavailable(format!("load-test server: {e}")))??;
    let elapsed = measure_from
        .get()
        .map_or(opts.seconds, |t0| last.duration_since(*t0).as_secs_f64());
    let Seen {
        mut latencies,
        by_api,
        errors,
    } = seen;
    latencies.sort_by(f64::total_cmp);
    let images_per_second = latencies.len() as f64 / elapsed;
    let served = 1e3 / images_per_second;
    Ok(ModeReport {
        mode: mode.to_string(),
        max_batch_size: max_batch,
        requests: latencies.len() as u64,
        errors,
        images_per_second,
        p50_ms: percentile(&latencies, 0.5),
        p99_ms: percentile(&latencies, 0.99),
        mean_batch,
        raw_ms_per_image: raw_ms,
        served_ms_per_image: served,
        overhead: (served - raw_ms) / raw_ms,
        mean_ms_by_api: by_api
            .into_iter()
            .map(|(api, v)| {
                let name = match api {
                    Api::Native => "restore",
                    Api::Oip => "model_infer",
                };
                (
                    name.to_string(),
                    v.iter().sum::<f64>() / v.len().max(1) as f64,
                )
            })
            .collect(),
    })
}

/// Every client's observations together, and when the last one finished.
async fn gather(tasks: Vec<tokio::task::JoinHandle<(Seen, Instant)>>) -> Result<(Seen, Instant)> {
    let mut seen = Seen::default();
    let mut last = Instant::now();
    for t in tasks {
        let (s, done) = t
            .await
            .map_err(|e| Error::unavailable(format!("load client failed: {e}")))?;
        seen.latencies.extend(s.latencies);
        for (api, v) in s.by_api {
            seen.by_api.entry(api).or_default().extend(v);
        }
        for (k, v) in s.errors {
            *seen.errors.entry(k).or_default() += v;
        }
        last = last.max(done);
    }
    Ok((seen, last))
}

/// The mean batch of the `load` model, from the server's statistics (images over forward
/// passes, the warm-up requests included).
async fn mean_batch(mut c: crate::client::InferenceClient) -> Result<f64> {
    let stats = c
        .model_statistics(pb::inference::ModelStatisticsRequest {
            name: "load".into(),
            version: String::new(),
        })
        .await
        .map_err(|e| Error::unavailable(format!("ModelStatistics: {}", e.message())))?
        .into_inner();
    Ok(stats.model_stats.first().map_or(f64::NAN, |m| {
        m.inference_count as f64 / m.execution_count.max(1) as f64
    }))
}

/// The report as a table.
pub fn table(r: &LoadReport) -> String {
    let mut out = format!(
        "restore-load: {} {}×{}, {} clients, {:.0} s per mode, {} threads, {} in/out\n\
         {:<10} {:>5} {:>8} {:>8} {:>8} {:>8} {:>10} {:>12} {:>9}  errors\n",
        r.preset,
        r.size,
        r.size,
        r.clients,
        r.seconds,
        r.threads,
        r.input,
        "mode",
        "batch",
        "img/s",
        "p50 ms",
        "p99 ms",
        "mean b",
        "raw ms/img",
        "served ms/img",
        "overhead"
    );
    for m in &r.modes {
        out += &format!(
            "{:<10} {:>5} {:>8.2} {:>8.1} {:>8.1} {:>8.2} {:>10.1} {:>12.1} {:>8.1}%  {:?}\n",
            m.mode,
            m.max_batch_size,
            m.images_per_second,
            m.p50_ms,
            m.p99_ms,
            m.mean_batch,
            m.raw_ms_per_image,
            m.served_ms_per_image,
            m.overhead * 100.0,
            m.errors
        );
    }
    if let Some(p) = r.protocol_overhead {
        out += &format!(
            "Open Inference Protocol: ModelInfer's mean latency vs noiseda.v1.Restore's in the \
             mixed mode (same batches): {:+.1} %\n",
            p * 100.0
        );
    }
    out
}
