//! Every conversion between the wire types (`pb`) and the domain's: job records, states,
//! checkpoints and metric points of the Training service; manifests, loaded models, images and
//! results of the Restore and Models services; the server's info. The client (`crate::client`)
//! uses the ones it needs in the other direction.

use std::time::{Duration, UNIX_EPOCH};

use super::config::{LimitsConfig, ServerConfig};
use crate::artifact::Manifest;
use crate::config::Weights;
use crate::jobs::store::{CheckpointRecord, JobRecord};
use crate::jobs::{checkpoint_id, JobState, SpecDocument};
use crate::model::ArchConfig;
use crate::pb;
use crate::restore::batcher::Done;
use crate::restore::codec::{Decoded, Input, OutputFormat, PixelType, RawInput, TileRequest};
use crate::restore::registry::Served;
use crate::runlog::{MetricPoint, Split};
use crate::{Error, Result};

// ---- Training ---------------------------------------------------------------------------

pub fn timestamp(ms: Option<i64>) -> Option<prost_types::Timestamp> {
    ms.map(|ms| prost_types::Timestamp {
        seconds: ms.div_euclid(1000),
        nanos: (ms.rem_euclid(1000) * 1_000_000) as i32,
    })
}

impl From<JobRecord> for pb::Job {
    fn from(j: JobRecord) -> Self {
        let left = j.total_steps.saturating_sub(j.step) as f64;
        let eta = if j.steps_per_second > 0.0 && !j.state.is_terminal() {
            left / j.steps_per_second
        } else {
            0.0
        };
        pb::Job {
            id: j.id,
            name: j.name,
            state: job_state(j.state) as i32,
            request_id: j.request_id,
            device: j.device,
            submitted_spec: j.submitted_spec,
            resolved_spec: j.resolved_spec,
            created_at: timestamp(Some(j.created_ms)),
            started_at: timestamp(j.started_ms),
            finished_at: timestamp(j.finished_ms),
            last_error: j.last_error,
            progress: Some(pb::Progress {
                step: j.step,
                total_steps: j.total_steps,
                steps_per_second: j.steps_per_second,
                eta_seconds: eta,
                last_seq: j.last_seq,
            }),
            restarts: j.restarts,
            metrics: j.metrics.into_iter().collect(),
        }
    }
}

pub fn job_state(s: JobState) -> pb::JobState {
    match s {
        JobState::Queued => pb::JobState::Queued,
        JobState::Running => pb::JobState::Running,
        JobState::Cancelling => pb::JobState::Cancelling,
        JobState::Completed => pb::JobState::Completed,
        JobState::Failed => pb::JobState::Failed,
        JobState::Cancelled => pb::JobState::Cancelled,
    }
}

pub fn checkpoint(c: &CheckpointRecord, best: Option<u64>) -> pb::Checkpoint {
    let size_bytes = std::fs::read_dir(&c.path)
        .map(|d| {
            d.filter_map(|e| e.ok()?.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0);
    pb::Checkpoint {
        id: checkpoint_id(c.step),
        step: c.step,
        saved_at: timestamp(Some(c.saved_ms)),
        metrics: c.metrics.clone().into_iter().collect(),
        is_best: best == Some(c.step),
        size_bytes,
    }
}

pub fn metric_point(p: MetricPoint) -> pb::MetricPoint {
    let split = match p.split {
        Split::Train => pb::Split::Train,
        Split::Val => pb::Split::Val,
    };
    pb::MetricPoint {
        seq: p.seq,
        step: p.step,
        wall_time: p.wall,
        series: p.series,
        value: p.value,
        split: split as i32,
    }
}

/// A metric point off the wire (an unknown split reads as train).
pub fn metric_point_from_pb(p: pb::MetricPoint) -> MetricPoint {
    let split = match pb::Split::try_from(p.split) {
        Ok(pb::Split::Val) => Split::Val,
        _ => Split::Train,
    };
    MetricPoint {
        seq: p.seq,
        step: p.step,
        wall: p.wall_time,
        series: p.series,
        split,
        value: p.value,
    }
}

/// A ListJobs state filter: 0 = any.
pub fn state_filter(state: i32) -> Result<Option<JobState>> {
    match state {
        0 => Ok(None),
        s => JobState::from_i32(s)
            .map(Some)
            .ok_or_else(|| Error::invalid_input(format!("state: unknown job state {s}"))),
    }
}

/// The spec document of a StartJob request.
pub fn spec_document(spec: Option<pb::JobSpec>) -> Result<SpecDocument> {
    match spec.and_then(|s| s.document) {
        Some(pb::job_spec::Document::Toml(t)) => Ok(SpecDocument::Toml(t)),
        Some(pb::job_spec::Document::Json(t)) => Ok(SpecDocument::Json(t)),
        None => Err(Error::invalid_input(
            "spec: give the job spec as `toml` or `json` text",
        )),
    }
}

/// The weights an export asks for (None: the job spec's).
pub fn weights(w: i32) -> Result<Option<Weights>> {
    match pb::Weights::try_from(w) {
        Ok(pb::Weights::Unspecified) => Ok(None),
        Ok(pb::Weights::Ema) => Ok(Some(Weights::Ema)),
        Ok(pb::Weights::Raw) => Ok(Some(Weights::Raw)),
        Err(_) => Err(Error::invalid_input(format!("weights: unknown value {w}"))),
    }
}

// ---- Models -----------------------------------------------------------------------------

impl From<&ArchConfig> for pb::ArchConfig {
    fn from(a: &ArchConfig) -> Self {
        let arch = match a {
            ArchConfig::UNet(c) => pb::arch_config::Arch::Unet(pb::UNetConfig {
                width: c.width as u32,
                depth: c.depth as u32,
                slope: c.slope as f32,
            }),
            ArchConfig::DnCnn(c) => pb::arch_config::Arch::Dncnn(pb::DnCnnConfig {
                layers: c.layers as u32,
                features: c.features as u32,
            }),
        };
        Self { arch: Some(arch) }
    }
}

impl From<&Manifest> for pb::ModelInfo {
    fn from(m: &Manifest) -> Self {
        Self {
            name: m.name.clone(),
            arch: Some((&m.arch).into()),
            parameters: m.parameters,
            sha256: m.sha256.clone(),
            weights: m.weights.as_str().to_string(),
            data_range: m.range.as_str().to_string(),
            step: m.step,
            metrics: m.metrics.iter().map(|(k, v)| (k.clone(), *v)).collect(),
        }
    }
}

pub fn loaded_model(s: &Served, is_default: bool) -> pb::LoadedModel {
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

/// What ServerInfo answers (its default model is filled in per call).
pub fn server_info(cfg: &ServerConfig) -> pb::ServerInfoResponse {
    let o = &cfg.restore;
    let limit = cfg.network.payload_limit;
    let (b, l) = (&o.batch, &o.limits);
    pb::ServerInfoResponse {
        version: env!("CARGO_PKG_VERSION").to_string(),
        device: o.restore_device.clone(),
        roles: [("training", cfg.network.role.training()), ("restore", true)]
            .into_iter()
            .filter(|(_, on)| *on)
            .map(|(n, _)| n.to_string())
            .collect(),
        payload_limit: limit as u64,
        max_batch_size: b.max_batch_size as u32,
        max_batch_pixels: b.max_batch_pixels as u64,
        max_batch_wait_us: b.max_batch_wait_us,
        max_queue: b.max_queue as u32,
        max_image_pixels: l.max_image_pixels as u64,
        max_input_pixels: l.max_input_pixels as u64,
        tile_size: l.tile_size as u32,
        tile_overlap: l.tile_overlap as u32,
        max_images_per_request: l.max_images_per_request as u32,
        default_model: String::new(),
    }
}

// ---- Restore ----------------------------------------------------------------------------

/// The tiling fields of a Restore request.
pub fn tile_request(req: &pb::RestoreRequest) -> TileRequest {
    TileRequest {
        tile_size: req.tile_size,
        tile_overlap: req.tile_overlap,
    }
}

/// Input `k` of a request, as the codec takes it.
pub fn image_input(k: usize, input: &pb::ImageInput) -> Result<Input<'_>> {
    match &input.image {
        Some(pb::image_input::Image::Encoded(e)) => Ok(Input::Encoded(&e.data)),
        Some(pb::image_input::Image::Raw(r)) => Ok(Input::Raw(RawInput {
            width: r.width,
            height: r.height,
            channels: r.channels,
            pixel: match pb::PixelType::try_from(r.pixel_type) {
                Ok(pb::PixelType::U8) => Some(PixelType::U8),
                Ok(pb::PixelType::F32) => Some(PixelType::F32),
                _ => None,
            },
            data: &r.data,
        })),
        None => Err(Error::invalid_input(format!(
            "image {k}: give `encoded` or `raw`"
        ))),
    }
}

/// Decodes input `k` of `req` within `limits` ([`LimitsConfig::decode`]).
pub fn decode_input(
    limits: &LimitsConfig,
    k: usize,
    input: &pb::ImageInput,
    req: &pb::RestoreRequest,
    multiple: usize,
) -> Result<Decoded> {
    limits.decode(k, &image_input(k, input)?, &tile_request(req), multiple)
}

/// The output format a request asks for (unspecified: PNG).
pub fn output_format(f: i32) -> Result<OutputFormat> {
    match pb::OutputFormat::try_from(f) {
        Ok(pb::OutputFormat::Unspecified | pb::OutputFormat::Png) => Ok(OutputFormat::Png),
        Ok(pb::OutputFormat::Jpeg) => Ok(OutputFormat::Jpeg),
        Ok(pb::OutputFormat::Webp) => Ok(OutputFormat::Webp),
        Ok(pb::OutputFormat::RawU8) => Ok(OutputFormat::RawU8),
        Ok(pb::OutputFormat::RawF32) => Ok(OutputFormat::RawF32),
        Err(_) => Err(Error::invalid_input(format!(
            "output_format: unknown value {f}"
        ))),
    }
}

fn pb_format(f: OutputFormat) -> pb::OutputFormat {
    match f {
        OutputFormat::Png => pb::OutputFormat::Png,
        OutputFormat::Jpeg => pb::OutputFormat::Jpeg,
        OutputFormat::Webp => pb::OutputFormat::Webp,
        OutputFormat::RawU8 => pb::OutputFormat::RawU8,
        OutputFormat::RawF32 => pb::OutputFormat::RawF32,
    }
}

fn us(d: Duration) -> u64 {
    d.as_micros() as u64
}

/// One restored image with its timing: `[decode, queue, inference, encode, total]`.
pub fn restored_image(
    d: &Done,
    data: Vec<u8>,
    format: OutputFormat,
    [decode, queue, inference, encode, total]: [Duration; 5],
) -> pb::RestoredImage {
    pb::RestoredImage {
        data,
        height: d.image.height as u32,
        width: d.image.width as u32,
        format: pb_format(format) as i32,
        timing: Some(pb::Timing {
            decode_us: us(decode),
            queue_us: us(queue),
            inference_us: us(inference),
            encode_us: us(encode),
            total_us: us(total),
        }),
        batch_size: d.batch as u32,
        tiled: d.tiled,
    }
}

/// The answer to request `id`, restored by `served`.
pub fn restore_response(
    served: &Served,
    images: Vec<pb::RestoredImage>,
    id: u64,
) -> pb::RestoreResponse {
    pb::RestoreResponse {
        images,
        model: served.name.clone(),
        version: served.version.clone(),
        weights_sha256: served.manifest.sha256.clone(),
        id,
        error: None,
    }
}

/// The in-stream answer to request `id` that failed with `e` (code and message as
/// [`super::status`] gives them).
pub fn restore_error(id: u64, e: &Error) -> pb::RestoreResponse {
    let (code, message) = super::status::code_and_message(e);
    pb::RestoreResponse {
        id,
        error: Some(pb::RestoreError {
            code: code as i32,
            message,
        }),
        ..Default::default()
    }
}

/// A model's statistics in Triton's form.
pub fn model_statistics(
    served: &crate::restore::registry::Served,
) -> pb::inference::ModelStatistics {
    use crate::restore::stats::Tally;
    use pb::inference as k;
    let d = |t: Tally| {
        Some(k::StatisticDuration {
            count: t.count,
            ns: t.ns,
        })
    };
    let s = served.stats.snapshot();
    k::ModelStatistics {
        name: served.name.clone(),
        version: protocol_version(&served.version),
        last_inference: s.last_inference_ms,
        inference_count: s.inference_count,
        execution_count: s.execution_count,
        inference_stats: Some(k::InferStatistics {
            success: d(s.success),
            fail: d(s.fail),
            queue: d(s.queue),
            compute_input: d(s.compute_input),
            compute_infer: d(s.compute_infer),
            compute_output: d(s.compute_output),
            cache_hit: d(Tally::default()),
            cache_miss: d(Tally::default()),
        }),
        batch_stats: s
            .batches
            .iter()
            .map(|(&batch_size, &t)| k::InferBatchStatistics {
                batch_size,
                compute_input: d(Tally::default()),
                compute_infer: d(t),
                compute_output: d(Tally::default()),
            })
            .collect(),
    }
}

/// A model version as the protocol shows it. Triton's versions are integers, and its tools
/// (perf_analyzer) parse them as such, so the default version — 12 hex digits of the
/// artifact's sha256 — appears as its decimal value; any other version (given at LoadModel)
/// as it is.
pub fn protocol_version(version: &str) -> String {
    match u64::from_str_radix(version, 16) {
        Ok(v) if version.len() == 12 => v.to_string(),
        _ => version.to_string(),
    }
}
