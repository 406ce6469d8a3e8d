//! The Open Inference Protocol (KServe v2) gRPC service, `inference.GRPCInferenceService`, as
//! tritonclient and KServe call it: every loaded restorer is a model, and ModelInfer is turned
//! into a `noiseda.v1.Restore` request and goes through the same path (limits, admission,
//! batcher, deadlines, API-key scope, Prometheus series) — one path, two protocols.

use tonic::{Request, Response, Status};

use std::sync::Arc;

use super::convert::protocol_version;
use super::restore::{ordered_stream, RestoreService};
use crate::pb;
use crate::pb::inference as kserve;
use crate::restore::registry::Served;
use crate::{Error, Result};

/// The Triton protocol extensions served (ServerMetadata lists them).
pub const EXTENSIONS: &[&str] = &["model_configuration", "statistics"];

/// The one input and the one output tensor of every model.
pub const INPUT: &str = "INPUT";
pub const OUTPUT: &str = "OUTPUT";

/// Pixel types a request may send (and gets back): bytes 0–255, or float32 in [0, 1].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Datatype {
    Uint8,
    Fp32,
}

impl Datatype {
    fn parse(s: &str) -> Result<Self> {
        match s {
            "UINT8" => Ok(Self::Uint8),
            "FP32" => Ok(Self::Fp32),
            other => Err(Error::invalid(
                "inputs[0].datatype",
                format!("`{other}` is not served: give UINT8 (0-255) or FP32 (0-1)"),
            )),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::Uint8 => "UINT8",
            Self::Fp32 => "FP32",
        }
    }

    fn bytes(self) -> usize {
        match self {
            Self::Uint8 => 1,
            Self::Fp32 => 4,
        }
    }
}

/// The service over the Restore service it shares its path with (cheap to clone: the REST
/// binding holds one too).
#[derive(Clone)]
pub struct InferenceService {
    restore: RestoreService,
}

impl InferenceService {
    pub fn new(restore: RestoreService) -> Self {
        Self { restore }
    }

    /// The model a request names, its version given natively or as [`protocol_version`].
    fn served(&self, name: &str, version: &str) -> Result<Arc<Served>> {
        let served = self.restore.registry().get(name, "")?;
        if version.is_empty()
            || version == served.version
            || version == protocol_version(&served.version)
        {
            return Ok(served);
        }
        Err(Error::NotFound(format!(
            "model `{}` version `{version}` (loaded: `{}`)",
            served.name,
            protocol_version(&served.version)
        )))
    }

    /// A Restore request for the model `r` names, its version in the registry's spelling.
    fn native(&self, mut r: pb::RestoreRequest) -> Result<pb::RestoreRequest> {
        if !r.version.is_empty() {
            r.version = self.served(&r.model, &r.version)?.version.clone();
        }
        Ok(r)
    }
}

/// `(N, H, W, 3)` of the request's INPUT tensor, checked (its byte size must fit a `usize`;
/// the image limits are checked later, on the Restore path).
fn image_shape(shape: &[i64], dtype: Datatype) -> Result<[usize; 4]> {
    let bad = || {
        Error::invalid(
            "inputs[0].shape",
            format!("must be [N, H, W, 3] (NHWC RGB) with N, H, W >= 1, got {shape:?}"),
        )
    };
    let &[n, h, w, 3] = shape else {
        return Err(bad());
    };
    let dim = |d: i64| usize::try_from(d).ok().filter(|&d| d > 0);
    let (Some(n), Some(h), Some(w)) = (dim(n), dim(h), dim(w)) else {
        return Err(bad());
    };
    n.checked_mul(h)
        .and_then(|v| v.checked_mul(w))
        .and_then(|v| v.checked_mul(3 * dtype.bytes()))
        .ok_or_else(|| {
            Error::invalid(
                "inputs[0].shape",
                format!("{shape:?} is too large a tensor"),
            )
        })?;
    Ok([n, h, w, 3])
}

/// The INPUT tensor's bytes (little-endian), from `raw_input_contents` (moved out of the
/// request) or the typed contents.
fn input_bytes(
    req: &mut kserve::ModelInferRequest,
    dtype: Datatype,
    len: usize,
) -> Result<Vec<u8>> {
    let want = len * dtype.bytes();
    if let Some(raw) = req.raw_input_contents.first_mut() {
        if raw.len() != want {
            return Err(Error::invalid(
                "raw_input_contents[0]",
                format!(
                    "{} bytes, but shape and datatype {} need {want}",
                    raw.len(),
                    dtype.name()
                ),
            ));
        }
        return Ok(std::mem::take(raw));
    }
    let contents = req.inputs[0].contents.as_ref();
    match dtype {
        Datatype::Uint8 => {
            let v = contents.map_or(&[][..], |c| &c.uint_contents[..]);
            if v.len() != len {
                return Err(Error::invalid(
                    "inputs[0].contents.uint_contents",
                    format!("{} values, but the shape needs {len}", v.len()),
                ));
            }
            v.iter()
                .map(|&x| {
                    u8::try_from(x).map_err(|_| {
                        Error::invalid(
                            "inputs[0].contents.uint_contents",
                            format!("{x} is not a UINT8 value"),
                        )
                    })
                })
                .collect()
        }
        Datatype::Fp32 => {
            let v = contents.map_or(&[][..], |c| &c.fp32_contents[..]);
            if v.len() != len {
                return Err(Error::invalid(
                    "inputs[0].contents.fp32_contents",
                    format!("{} values, but the shape needs {len}", v.len()),
                ));
            }
            Ok(v.iter().flat_map(|x| x.to_le_bytes()).collect())
        }
    }
}

/// A non-negative integer request parameter (`tile_size`, `tile_overlap`), 0 when absent.
fn uint_parameter(req: &kserve::ModelInferRequest, key: &str) -> Result<u32> {
    use kserve::infer_parameter::ParameterChoice;
    let Some(p) = req.parameters.get(key) else {
        return Ok(0);
    };
    let v = match p.parameter_choice {
        Some(ParameterChoice::Int64Param(v)) => u32::try_from(v).ok(),
        Some(ParameterChoice::Uint64Param(v)) => u32::try_from(v).ok(),
        _ => None,
    };
    v.ok_or_else(|| {
        Error::invalid(
            format!("parameters.{key}"),
            "must be a non-negative int64 or uint64 parameter",
        )
    })
}

/// The Restore request a ModelInfer request means: its N images, raw in and raw out in the
/// request's datatype, tiling from its parameters. The raw input is moved out of `req`.
fn restore_request(req: &mut kserve::ModelInferRequest) -> Result<(pb::RestoreRequest, Datatype)> {
    let [input] = &req.inputs[..] else {
        return Err(Error::invalid(
            "inputs",
            format!(
                "give exactly one tensor `{INPUT}`, got {}",
                req.inputs.len()
            ),
        ));
    };
    if input.name != INPUT {
        return Err(Error::invalid(
            "inputs[0].name",
            format!("`{}`: the input tensor is `{INPUT}`", input.name),
        ));
    }
    if let Some(o) = req.outputs.iter().find(|o| o.name != OUTPUT) {
        return Err(Error::invalid(
            "outputs",
            format!("`{}`: the output tensor is `{OUTPUT}`", o.name),
        ));
    }
    let dtype = Datatype::parse(&input.datatype)?;
    let [n, h, w, c] = image_shape(&input.shape, dtype)?;
    let (model, version) = (req.model_name.clone(), req.model_version.clone());
    let per_image = h * w * c * dtype.bytes();
    let bytes = input_bytes(req, dtype, n * h * w * c)?;
    let pixel_type = match dtype {
        Datatype::Uint8 => pb::PixelType::U8,
        Datatype::Fp32 => pb::PixelType::F32,
    };
    let image = |data: Vec<u8>| pb::ImageInput {
        image: Some(pb::image_input::Image::Raw(pb::RawImage {
            data,
            height: h as u32,
            width: w as u32,
            channels: 3,
            pixel_type: pixel_type as i32,
        })),
    };
    // One image keeps the request's buffer; a batch is split into one buffer per image.
    let images = if n == 1 {
        vec![image(bytes)]
    } else {
        bytes
            .chunks_exact(per_image)
            .map(|d| image(d.to_vec()))
            .collect()
    };
    let output_format = match dtype {
        Datatype::Uint8 => pb::OutputFormat::RawU8,
        Datatype::Fp32 => pb::OutputFormat::RawF32,
    };
    Ok((
        pb::RestoreRequest {
            images,
            model,
            version,
            output_format: output_format as i32,
            tile_size: uint_parameter(req, "tile_size")?,
            tile_overlap: uint_parameter(req, "tile_overlap")?,
            ..Default::default()
        },
        dtype,
    ))
}

/// [`restore_request`]; gives the request back with its Restore form. Raw input of one image
/// is moved, not touched, so it is converted here; a batch (split into copies) or typed
/// contents (converted value by value) go off the async runtime. The extra hop costs a
/// scheduling delay on a saturated CPU, which put single-image ModelInfer requests behind
/// Restore's in the batcher's queue.
async fn to_restore(
    mut req: kserve::ModelInferRequest,
) -> Result<(kserve::ModelInferRequest, pb::RestoreRequest, Datatype)> {
    let single_raw = req.raw_input_contents.len() == 1
        && req
            .inputs
            .first()
            .is_some_and(|i| i.shape.first() == Some(&1));
    if single_raw {
        let (restore, dtype) = restore_request(&mut req)?;
        return Ok((req, restore, dtype));
    }
    tokio::task::spawn_blocking(move || {
        let (restore, dtype) = restore_request(&mut req)?;
        Ok((req, restore, dtype))
    })
    .await
    .map_err(|e| Error::internal(format!("request conversion failed: {e}")))?
}

/// The ModelInfer answer: OUTPUT of the request's shape and datatype in one raw buffer.
fn infer_response(
    req: &kserve::ModelInferRequest,
    resp: pb::RestoreResponse,
    dtype: Datatype,
) -> kserve::ModelInferResponse {
    let shape = req.inputs[0].shape.clone();
    let raw: Vec<u8> = if resp.images.len() == 1 {
        resp.images
            .into_iter()
            .next()
            .map(|i| i.data)
            .unwrap_or_default()
    } else {
        resp.images.into_iter().flat_map(|i| i.data).collect()
    };
    kserve::ModelInferResponse {
        model_name: resp.model,
        model_version: protocol_version(&resp.version),
        id: req.id.clone(),
        outputs: vec![kserve::model_infer_response::InferOutputTensor {
            name: OUTPUT.into(),
            datatype: dtype.name().into(),
            shape,
            ..Default::default()
        }],
        raw_output_contents: vec![raw],
        ..Default::default()
    }
}

fn tensor(name: &str) -> kserve::model_metadata_response::TensorMetadata {
    kserve::model_metadata_response::TensorMetadata {
        name: name.into(),
        datatype: Datatype::Uint8.name().into(),
        shape: vec![-1, -1, -1, 3],
    }
}

/// One ModelInfer of a stream: the answer, or the error as the stream's `error_message` (code
/// and message as the unary call would give them).
async fn stream_one(
    svc: InferenceService,
    req: kserve::ModelInferRequest,
) -> kserve::ModelStreamInferResponse {
    let answer = async {
        let (req, r, dtype) = to_restore(req).await?;
        let resp = svc
            .restore
            .restore_waiting(svc.native(r)?, "ModelStreamInfer")
            .await?;
        Ok::<_, Error>(infer_response(&req, resp, dtype))
    };
    match answer.await {
        Ok(r) => kserve::ModelStreamInferResponse {
            error_message: String::new(),
            infer_response: Some(r),
        },
        Err(e) => stream_error(e),
    }
}

fn stream_error(e: Error) -> kserve::ModelStreamInferResponse {
    let (code, message) = super::status::code_and_message(&e);
    kserve::ModelStreamInferResponse {
        error_message: format!("{code:?}: {message}"),
        infer_response: None,
    }
}

type StreamInferStream = std::pin::Pin<
    Box<dyn tokio_stream::Stream<Item = Result<kserve::ModelStreamInferResponse, Status>> + Send>,
>;

#[tonic::async_trait]
impl kserve::grpc_inference_service_server::GrpcInferenceService for InferenceService {
    type ModelStreamInferStream = StreamInferStream;

    async fn model_stream_infer(
        &self,
        req: Request<tonic::Streaming<kserve::ModelInferRequest>>,
    ) -> Result<Response<Self::ModelStreamInferStream>, Status> {
        if self.restore.draining() {
            return Err(Error::unavailable("the server is shutting down").into());
        }
        let svc = self.clone();
        let out = ordered_stream(
            req.into_inner(),
            self.restore.shutdown(),
            move |r| stream_one(svc.clone(), r),
            stream_error,
        );
        Ok(Response::new(Box::pin(out)))
    }

    async fn server_live(
        &self,
        _: Request<kserve::ServerLiveRequest>,
    ) -> Result<Response<kserve::ServerLiveResponse>, Status> {
        Ok(Response::new(kserve::ServerLiveResponse { live: true }))
    }

    async fn server_ready(
        &self,
        _: Request<kserve::ServerReadyRequest>,
    ) -> Result<Response<kserve::ServerReadyResponse>, Status> {
        let ready = !self.restore.draining() && self.restore.registry().default_name().is_some();
        Ok(Response::new(kserve::ServerReadyResponse { ready }))
    }

    async fn model_ready(
        &self,
        req: Request<kserve::ModelReadyRequest>,
    ) -> Result<Response<kserve::ModelReadyResponse>, Status> {
        let r = req.into_inner();
        let ready = !self.restore.draining() && self.served(&r.name, &r.version).is_ok();
        Ok(Response::new(kserve::ModelReadyResponse { ready }))
    }

    async fn server_metadata(
        &self,
        _: Request<kserve::ServerMetadataRequest>,
    ) -> Result<Response<kserve::ServerMetadataResponse>, Status> {
        Ok(Response::new(kserve::ServerMetadataResponse {
            name: "noiseda".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            extensions: EXTENSIONS.iter().map(|e| e.to_string()).collect(),
        }))
    }

    async fn model_metadata(
        &self,
        req: Request<kserve::ModelMetadataRequest>,
    ) -> Result<Response<kserve::ModelMetadataResponse>, Status> {
        let r = req.into_inner();
        let served = self.served(&r.name, &r.version)?;
        Ok(Response::new(kserve::ModelMetadataResponse {
            name: served.name.clone(),
            versions: vec![protocol_version(&served.version)],
            platform: "noiseda".into(),
            inputs: vec![tensor(INPUT)],
            outputs: vec![tensor(OUTPUT)],
        }))
    }

    async fn model_config(
        &self,
        req: Request<kserve::ModelConfigRequest>,
    ) -> Result<Response<kserve::ModelConfigResponse>, Status> {
        let r = req.into_inner();
        let served = self.served(&r.name, &r.version)?;
        let batch = self.restore.registry().batch_options();
        let max = batch.max_batch_size.min(i32::MAX as usize) as i32;
        let dims = vec![-1, -1, 3];
        Ok(Response::new(kserve::ModelConfigResponse {
            config: Some(kserve::ModelConfig {
                name: served.name.clone(),
                platform: "noiseda".into(),
                backend: "noiseda".into(),
                max_batch_size: max,
                input: vec![kserve::ModelInput {
                    name: INPUT.into(),
                    data_type: kserve::DataType::TypeUint8 as i32,
                    format: kserve::model_input::Format::Nhwc as i32,
                    dims: dims.clone(),
                }],
                output: vec![kserve::ModelOutput {
                    name: OUTPUT.into(),
                    data_type: kserve::DataType::TypeUint8 as i32,
                    dims,
                }],
                // The server's batcher: batches of up to max_batch_size, waiting at most
                // --max-batch-wait-us for a batch to fill.
                dynamic_batching: Some(kserve::ModelDynamicBatching {
                    preferred_batch_size: vec![max],
                    max_queue_delay_microseconds: batch.max_batch_wait_us,
                }),
            }),
        }))
    }

    async fn model_statistics(
        &self,
        req: Request<kserve::ModelStatisticsRequest>,
    ) -> Result<Response<kserve::ModelStatisticsResponse>, Status> {
        let r = req.into_inner();
        let registry = self.restore.registry();
        let served = if r.name.is_empty() {
            registry.list().into_iter().map(|(s, _)| s).collect()
        } else {
            vec![self.served(&r.name, &r.version)?]
        };
        Ok(Response::new(kserve::ModelStatisticsResponse {
            model_stats: served
                .iter()
                .map(|s| super::convert::model_statistics(s))
                .collect(),
        }))
    }

    async fn model_infer(
        &self,
        req: Request<kserve::ModelInferRequest>,
    ) -> Result<Response<kserve::ModelInferResponse>, Status> {
        let meta = req.metadata().clone();
        let (req, restore, dtype) = to_restore(req.into_inner()).await?;
        let resp = self
            .restore
            .restore_once(self.native(restore)?, &meta, "ModelInfer")
            .await?;
        Ok(Response::new(infer_response(&req, resp, dtype)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_versions_are_shown_as_integers() {
        assert_eq!(protocol_version("f450b381e48a"), "268627446195338");
        assert_eq!(protocol_version("000000000001"), "1");
        for own in ["v2", "1", "f450b381e48", "release-7"] {
            assert_eq!(protocol_version(own), own);
        }
    }

    #[test]
    fn shapes_are_nhwc_rgb_and_never_overflow() {
        assert_eq!(
            image_shape(&[2, 5, 7, 3], Datatype::Uint8).unwrap(),
            [2, 5, 7, 3]
        );
        for bad in [
            &[1, 5, 7, 4][..],
            &[0, 5, 7, 3],
            &[1, -1, 7, 3],
            &[5, 7, 3],
            &[i64::MAX, i64::MAX, 2, 3],
        ] {
            let e = image_shape(bad, Datatype::Fp32).unwrap_err().to_string();
            assert!(e.contains("inputs[0].shape"), "{bad:?}: {e}");
        }
    }
}
