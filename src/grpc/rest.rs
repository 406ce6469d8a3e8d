//! The Open Inference Protocol's HTTP/REST binding (KServe v2, with Triton's binary-data,
//! model-configuration and statistics extensions) on axum. Every route is turned into the
//! `inference.GRPCInferenceService` call it mirrors and answered by the same [`InferenceService`]
//! — the same checks, the same Restore path, the same API-key scope — then written as JSON
//! (and raw bytes after the JSON header when the binary-data extension is asked for).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{json, Map, Value};
use tonic::Request;

use super::auth::ApiKeys;
use super::inference::InferenceService;
use crate::pb::inference as kserve;
use crate::pb::inference::grpc_inference_service_server::GrpcInferenceService as _;
use crate::{Error, Result};

/// The header that splits a binary-data body into its JSON header and the raw tensors.
const HEADER_LENGTH: &str = "inference-header-content-length";

#[derive(Clone)]
struct Rest {
    svc: InferenceService,
    keys: Option<Arc<ApiKeys>>,
}

/// An error as the protocol answers it: an HTTP status and `{"error": "..."}`.
#[derive(Debug)]
struct RestError(StatusCode, String);

impl From<tonic::Status> for RestError {
    fn from(s: tonic::Status) -> Self {
        let code = StatusCode::from_u16(super::status::http_status(s.code()))
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        Self(code, s.message().to_string())
    }
}

impl From<Error> for RestError {
    fn from(e: Error) -> Self {
        tonic::Status::from(e).into()
    }
}

impl IntoResponse for RestError {
    fn into_response(self) -> Response {
        (self.0, json_body(&json!({ "error": self.1 }))).into_response()
    }
}

type Answer = std::result::Result<Response, RestError>;

fn json_body(v: &Value) -> ([(header::HeaderName, HeaderValue); 1], String) {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        v.to_string(),
    )
}

fn ok_json(v: Value) -> Answer {
    Ok(json_body(&v).into_response())
}

/// `/v2/models/{model}[/versions/{version}]/…`
#[derive(Debug, Deserialize)]
struct ModelPath {
    model: String,
    version: Option<String>,
}

impl ModelPath {
    fn version(&self) -> String {
        self.version.clone().unwrap_or_default()
    }
}

/// The REST routes over `svc`; request bodies up to `body_limit` bytes.
pub fn router(
    svc: InferenceService,
    keys: Option<Arc<ApiKeys>>,
    body_limit: usize,
) -> axum::Router {
    let per_model = |r: axum::Router<Rest>, prefix: &str| {
        r.route(prefix, get(model_metadata))
            .route(&format!("{prefix}/ready"), get(model_ready))
            .route(&format!("{prefix}/config"), get(model_config))
            .route(&format!("{prefix}/stats"), get(model_stats))
            .route(&format!("{prefix}/infer"), post(infer))
    };
    let r = axum::Router::new()
        .route("/v2", get(server_metadata))
        .route("/v2/health/live", get(live))
        .route("/v2/health/ready", get(ready))
        .route("/v2/models/stats", get(all_stats));
    let r = per_model(r, "/v2/models/{model}");
    let r = per_model(r, "/v2/models/{model}/versions/{version}");
    r.layer(DefaultBodyLimit::max(body_limit))
        .with_state(Rest { svc, keys })
}

/// Serves `router` on `listener` until `shutdown`; returns the bound address and the future.
pub fn bind(
    listener: tokio::net::TcpListener,
    router: axum::Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(std::net::SocketAddr, impl std::future::Future<Output = ()>)> {
    let bound = listener
        .local_addr()
        .map_err(|e| Error::io("http address", e))?;
    let fut = async move {
        if let Err(e) = axum::serve(listener, router)
            .with_graceful_shutdown(shutdown)
            .await
        {
            tracing::error!(error = %e, "REST endpoint failed");
        }
    };
    Ok((bound, fut))
}

impl Rest {
    /// The API-key check of the gRPC method a route mirrors (same scopes).
    fn auth(&self, headers: &HeaderMap, method: &str) -> std::result::Result<(), RestError> {
        let Some(keys) = &self.keys else {
            return Ok(());
        };
        let path = format!("/inference.GRPCInferenceService/{method}");
        let auth = headers.get(header::AUTHORIZATION).map(|v| v.as_bytes());
        keys.check(&path, auth).map(|_| ()).map_err(|e| {
            tracing::warn!(method = %path, reason = %e, "REST call refused");
            RestError::from(e)
        })
    }
}

/// 200 when `yes`, else 503 (what tritonclient's `is_*_ready` and a probe read).
fn status_only(yes: bool) -> Answer {
    Ok(if yes {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    }
    .into_response())
}

async fn live(State(r): State<Rest>) -> Answer {
    let live = r
        .svc
        .server_live(Request::new(kserve::ServerLiveRequest {}))
        .await?;
    status_only(live.into_inner().live)
}

async fn ready(State(r): State<Rest>) -> Answer {
    let ready = r
        .svc
        .server_ready(Request::new(kserve::ServerReadyRequest {}))
        .await?;
    status_only(ready.into_inner().ready)
}

async fn server_metadata(State(r): State<Rest>, headers: HeaderMap) -> Answer {
    r.auth(&headers, "ServerMetadata")?;
    let m = r
        .svc
        .server_metadata(Request::new(kserve::ServerMetadataRequest {}))
        .await?
        .into_inner();
    ok_json(json!({ "name": m.name, "version": m.version, "extensions": m.extensions }))
}

async fn model_ready(
    State(r): State<Rest>,
    Path(p): Path<ModelPath>,
    headers: HeaderMap,
) -> Answer {
    r.auth(&headers, "ModelReady")?;
    let ready = r
        .svc
        .model_ready(Request::new(kserve::ModelReadyRequest {
            name: p.model.clone(),
            version: p.version(),
        }))
        .await?
        .into_inner()
        .ready;
    if !ready {
        // Unknown: NOT_FOUND with the registry's message; known but not ready: 503.
        r.svc.model_metadata(metadata_request(&p)).await?;
    }
    status_only(ready)
}

fn metadata_request(p: &ModelPath) -> Request<kserve::ModelMetadataRequest> {
    Request::new(kserve::ModelMetadataRequest {
        name: p.model.clone(),
        version: p.version(),
    })
}

async fn model_metadata(
    State(r): State<Rest>,
    Path(p): Path<ModelPath>,
    headers: HeaderMap,
) -> Answer {
    r.auth(&headers, "ModelMetadata")?;
    let m = r
        .svc
        .model_metadata(metadata_request(&p))
        .await?
        .into_inner();
    let tensors = |ts: &[kserve::model_metadata_response::TensorMetadata]| {
        ts.iter()
            .map(|t| json!({ "name": t.name, "datatype": t.datatype, "shape": t.shape }))
            .collect::<Vec<_>>()
    };
    ok_json(json!({
        "name": m.name,
        "versions": m.versions,
        "platform": m.platform,
        "inputs": tensors(&m.inputs),
        "outputs": tensors(&m.outputs),
    }))
}

async fn model_config(
    State(r): State<Rest>,
    Path(p): Path<ModelPath>,
    headers: HeaderMap,
) -> Answer {
    r.auth(&headers, "ModelConfig")?;
    let c = r
        .svc
        .model_config(Request::new(kserve::ModelConfigRequest {
            name: p.model.clone(),
            version: p.version(),
        }))
        .await?
        .into_inner()
        .config
        .unwrap_or_default();
    ok_json(config_json(&c))
}

/// A model configuration as Triton writes it in JSON (proto field names, enum names).
fn config_json(c: &kserve::ModelConfig) -> Value {
    let dtype = |d: i32| {
        kserve::DataType::try_from(d)
            .unwrap_or(kserve::DataType::TypeInvalid)
            .as_str_name()
    };
    let format = |f: i32| {
        kserve::model_input::Format::try_from(f)
            .unwrap_or(kserve::model_input::Format::None)
            .as_str_name()
    };
    let mut v = json!({
        "name": c.name,
        "platform": c.platform,
        "backend": c.backend,
        "max_batch_size": c.max_batch_size,
        "input": c.input.iter().map(|i| json!({
            "name": i.name, "data_type": dtype(i.data_type), "format": format(i.format),
            "dims": i.dims,
        })).collect::<Vec<_>>(),
        "output": c.output.iter().map(|o| json!({
            "name": o.name, "data_type": dtype(o.data_type), "dims": o.dims,
        })).collect::<Vec<_>>(),
    });
    if let Some(b) = &c.dynamic_batching {
        v["dynamic_batching"] = json!({
            "preferred_batch_size": b.preferred_batch_size,
            "max_queue_delay_microseconds": b.max_queue_delay_microseconds,
        });
    }
    v
}

async fn all_stats(State(r): State<Rest>, headers: HeaderMap) -> Answer {
    stats(r, headers, String::new(), String::new()).await
}

async fn model_stats(
    State(r): State<Rest>,
    Path(p): Path<ModelPath>,
    headers: HeaderMap,
) -> Answer {
    let version = p.version();
    stats(r, headers, p.model, version).await
}

async fn stats(r: Rest, headers: HeaderMap, name: String, version: String) -> Answer {
    r.auth(&headers, "ModelStatistics")?;
    let s = r
        .svc
        .model_statistics(Request::new(kserve::ModelStatisticsRequest {
            name,
            version,
        }))
        .await?
        .into_inner();
    let d = |t: &Option<kserve::StatisticDuration>| {
        let t = t.unwrap_or_default();
        json!({ "count": t.count, "ns": t.ns })
    };
    let models = s
        .model_stats
        .iter()
        .map(|m| {
            let i = m.inference_stats.unwrap_or_default();
            json!({
                "name": m.name,
                "version": m.version,
                "last_inference": m.last_inference,
                "inference_count": m.inference_count,
                "execution_count": m.execution_count,
                "inference_stats": {
                    "success": d(&i.success), "fail": d(&i.fail), "queue": d(&i.queue),
                    "compute_input": d(&i.compute_input), "compute_infer": d(&i.compute_infer),
                    "compute_output": d(&i.compute_output), "cache_hit": d(&i.cache_hit),
                    "cache_miss": d(&i.cache_miss),
                },
                "batch_stats": m.batch_stats.iter().map(|b| json!({
                    "batch_size": b.batch_size,
                    "compute_input": d(&b.compute_input),
                    "compute_infer": d(&b.compute_infer),
                    "compute_output": d(&b.compute_output),
                })).collect::<Vec<_>>(),
            })
        })
        .collect::<Vec<_>>();
    ok_json(json!({ "model_stats": models }))
}

/// The JSON header of an infer request.
#[derive(Debug, Deserialize)]
struct InferJson {
    #[serde(default)]
    id: String,
    #[serde(default)]
    parameters: Map<String, Value>,
    inputs: Vec<InputJson>,
    #[serde(default)]
    outputs: Vec<OutputJson>,
}

#[derive(Debug, Deserialize)]
struct InputJson {
    name: String,
    shape: Vec<i64>,
    datatype: String,
    #[serde(default)]
    parameters: Map<String, Value>,
    data: Option<Value>,
}

#[derive(Debug, Deserialize)]
struct OutputJson {
    name: String,
    #[serde(default)]
    parameters: Map<String, Value>,
}

/// An infer request in its gRPC form, whether the answer goes as raw bytes, and the
/// client's `timeout` parameter (microseconds).
struct Parsed {
    req: kserve::ModelInferRequest,
    binary_output: bool,
    timeout_us: Option<u64>,
}

async fn infer(
    State(r): State<Rest>,
    Path(p): Path<ModelPath>,
    headers: HeaderMap,
    body: Bytes,
) -> Answer {
    r.auth(&headers, "ModelInfer")?;
    if let Some(enc) = headers.get(header::CONTENT_ENCODING) {
        if enc.as_bytes() != b"identity" {
            return Err(RestError(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!(
                    "Content-Encoding `{}` is not supported: send the request uncompressed",
                    String::from_utf8_lossy(enc.as_bytes())
                ),
            ));
        }
    }
    let header_len = match headers.get(HEADER_LENGTH) {
        None => None,
        Some(v) => Some(
            v.to_str()
                .ok()
                .and_then(|s| s.trim().parse::<usize>().ok())
                .ok_or_else(|| {
                    Error::invalid("Inference-Header-Content-Length", "must be a byte count")
                })?,
        ),
    };
    // Parsing (and later writing) JSON tensors touches every value: off the async runtime.
    let parsed = tokio::task::spawn_blocking(move || parse_infer(&p, &body, header_len))
        .await
        .map_err(|e| Error::internal(format!("request parsing failed: {e}")))??;
    let mut request = Request::new(parsed.req);
    if let Some(us) = parsed.timeout_us.filter(|&us| us > 0) {
        // The deadline travels as gRPC's own timeout header, read by the Restore path.
        if let Ok(v) = format!("{us}u").parse() {
            request.metadata_mut().insert("grpc-timeout", v);
        }
    }
    let resp = r.svc.model_infer(request).await?.into_inner();
    let binary = parsed.binary_output;
    tokio::task::spawn_blocking(move || infer_answer(resp, binary))
        .await
        .map_err(|e| Error::internal(format!("response writing failed: {e}")))?
}

fn bool_param(params: &Map<String, Value>, key: &str) -> bool {
    params.get(key).and_then(Value::as_bool).unwrap_or(false)
}

/// Elements of a tensor of `shape`, when every dimension is positive and the product fits.
fn elements(shape: &[i64]) -> Option<usize> {
    shape.iter().try_fold(1usize, |acc, &d| {
        usize::try_from(d)
            .ok()
            .filter(|&d| d > 0)
            .and_then(|d| acc.checked_mul(d))
    })
}

fn datatype_bytes(datatype: &str) -> Option<usize> {
    match datatype {
        "UINT8" | "INT8" | "BOOL" => Some(1),
        "UINT16" | "INT16" | "FP16" | "BF16" => Some(2),
        "UINT32" | "INT32" | "FP32" => Some(4),
        "UINT64" | "INT64" | "FP64" => Some(8),
        _ => None,
    }
}

fn parse_infer(p: &ModelPath, body: &[u8], header_len: Option<usize>) -> Result<Parsed> {
    let (head, mut binary) = match header_len {
        Some(n) if n > body.len() => {
            return Err(Error::invalid(
                "Inference-Header-Content-Length",
                format!("{n} bytes, but the body has only {}", body.len()),
            ))
        }
        Some(n) => body.split_at(n),
        None => (body, &[][..]),
    };
    let j: InferJson = serde_json::from_slice(head)
        .map_err(|e| Error::invalid("request body", format!("not a KServe v2 request: {e}")))?;
    let mut inputs = Vec::with_capacity(j.inputs.len());
    let mut raw = Vec::with_capacity(j.inputs.len());
    for (k, input) in j.inputs.into_iter().enumerate() {
        let bytes = input_raw(k, &input, &mut binary)?;
        raw.push(bytes);
        inputs.push(kserve::model_infer_request::InferInputTensor {
            name: input.name,
            datatype: input.datatype,
            shape: input.shape,
            ..Default::default()
        });
    }
    if !binary.is_empty() {
        return Err(Error::invalid(
            "binary data",
            format!(
                "{} bytes follow the JSON header beyond the inputs' binary_data_size",
                binary.len()
            ),
        ));
    }
    let binary_output = if j.outputs.is_empty() {
        bool_param(&j.parameters, "binary_data_output")
    } else {
        j.outputs
            .iter()
            .any(|o| bool_param(&o.parameters, "binary_data"))
    };
    let mut parameters = std::collections::HashMap::new();
    for key in ["tile_size", "tile_overlap"] {
        if let Some(v) = j.parameters.get(key) {
            let n = v
                .as_i64()
                .ok_or_else(|| Error::invalid(format!("parameters.{key}"), "must be an integer"))?;
            parameters.insert(
                key.to_string(),
                kserve::InferParameter {
                    parameter_choice: Some(kserve::infer_parameter::ParameterChoice::Int64Param(n)),
                },
            );
        }
    }
    let timeout_us = match j.parameters.get("timeout") {
        None => None,
        Some(v) => Some(v.as_u64().ok_or_else(|| {
            Error::invalid("parameters.timeout", "must be microseconds (an integer)")
        })?),
    };
    Ok(Parsed {
        req: kserve::ModelInferRequest {
            model_name: p.model.clone(),
            model_version: p.version(),
            id: j.id,
            parameters,
            inputs,
            outputs: j
                .outputs
                .into_iter()
                .map(
                    |o| kserve::model_infer_request::InferRequestedOutputTensor {
                        name: o.name,
                        ..Default::default()
                    },
                )
                .collect(),
            raw_input_contents: raw,
        },
        binary_output,
        timeout_us,
    })
}

/// Input `k`'s bytes (little-endian): its `binary_data_size` bytes taken from the front of
/// `binary`, or its JSON `data` (flat or nested, row-major) converted.
fn input_raw(k: usize, input: &InputJson, binary: &mut &[u8]) -> Result<Vec<u8>> {
    let need = elements(&input.shape)
        .and_then(|n| Some((n, n.checked_mul(datatype_bytes(&input.datatype)?)?)));
    if let Some(size) = input.parameters.get("binary_data_size") {
        let field = format!("inputs[{k}].parameters.binary_data_size");
        let size = size
            .as_u64()
            .and_then(|s| usize::try_from(s).ok())
            .ok_or_else(|| Error::invalid(&field, "must be a byte count"))?;
        if size > binary.len() {
            return Err(Error::invalid(
                &field,
                format!(
                    "{size} bytes, but only {} follow the JSON header",
                    binary.len()
                ),
            ));
        }
        if let Some((_, want)) = need.filter(|&(_, want)| want != size) {
            return Err(Error::invalid(
                &field,
                format!(
                    "{size} bytes, but shape {:?} of {} needs {want}",
                    input.shape, input.datatype
                ),
            ));
        }
        let (mine, rest) = binary.split_at(size);
        *binary = rest;
        return Ok(mine.to_vec());
    }
    let field = format!("inputs[{k}].data");
    let Some(data) = &input.data else {
        return Err(Error::invalid(
            &field,
            "give the tensor's values, or binary_data_size and the bytes after the JSON header",
        ));
    };
    let mut values = Vec::new();
    flatten(data, &mut values, &field)?;
    if let Some((n, _)) = need.filter(|&(n, _)| n != values.len()) {
        return Err(Error::invalid(
            &field,
            format!(
                "{} values, but shape {:?} needs {n}",
                values.len(),
                input.shape
            ),
        ));
    }
    match input.datatype.as_str() {
        "UINT8" => values
            .iter()
            .map(|v| {
                v.as_u64()
                    .and_then(|x| u8::try_from(x).ok())
                    .ok_or_else(|| Error::invalid(&field, format!("{v} is not a UINT8 value")))
            })
            .collect(),
        "FP32" => values
            .iter()
            .map(|v| {
                v.as_f64()
                    .map(|x| (x as f32).to_le_bytes())
                    .ok_or_else(|| Error::invalid(&field, format!("{v} is not an FP32 value")))
            })
            .collect::<Result<Vec<_>>>()
            .map(|v| v.concat()),
        // Other datatypes are refused, naming the datatype, by the shared path.
        _ => Ok(Vec::new()),
    }
}

/// The scalars of a (possibly nested) JSON array, in row-major order.
fn flatten<'a>(v: &'a Value, out: &mut Vec<&'a Value>, field: &str) -> Result<()> {
    match v {
        Value::Array(items) => {
            for item in items {
                flatten(item, out, field)?;
            }
            Ok(())
        }
        Value::Number(_) => {
            out.push(v);
            Ok(())
        }
        other => Err(Error::invalid(
            field,
            format!("{other} is not a number or an array of numbers"),
        )),
    }
}

/// The answer to an infer request: JSON, with the output's values in `data` or (binary) its
/// bytes after the JSON header.
fn infer_answer(resp: kserve::ModelInferResponse, binary: bool) -> Answer {
    let raw = resp
        .raw_output_contents
        .into_iter()
        .next()
        .unwrap_or_default();
    let outputs = resp
        .outputs
        .iter()
        .map(|o| {
            let mut t = json!({ "name": o.name, "datatype": o.datatype, "shape": o.shape });
            if binary {
                t["parameters"] = json!({ "binary_data_size": raw.len() });
            } else if o.datatype == "FP32" {
                let v: Vec<f32> = raw
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                    .collect();
                t["data"] = json!(v);
            } else {
                t["data"] = json!(raw);
            }
            t
        })
        .collect::<Vec<_>>();
    let head = json!({
        "id": resp.id,
        "model_name": resp.model_name,
        "model_version": resp.model_version,
        "outputs": outputs,
    });
    if !binary {
        return ok_json(head);
    }
    let head = head.to_string();
    let len = head.len();
    let mut body = head.into_bytes();
    body.extend_from_slice(&raw);
    Ok((
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            ),
            (
                header::HeaderName::from_static(HEADER_LENGTH),
                HeaderValue::from(len),
            ),
        ],
        body,
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path() -> ModelPath {
        ModelPath {
            model: "m".into(),
            version: None,
        }
    }

    #[test]
    fn json_and_binary_inputs_become_the_same_raw_tensor() {
        let json_body =
            br#"{"inputs":[{"name":"INPUT","shape":[1,1,2,3],"datatype":"UINT8","data":[[[[1,2,3],[4,5,6]]]]}]}"#;
        let a = parse_infer(&path(), json_body, None).unwrap();
        let head = br#"{"inputs":[{"name":"INPUT","shape":[1,1,2,3],"datatype":"UINT8","parameters":{"binary_data_size":6}}],"parameters":{"binary_data_output":true}}"#;
        let mut body = head.to_vec();
        body.extend_from_slice(&[1, 2, 3, 4, 5, 6]);
        let b = parse_infer(&path(), &body, Some(head.len())).unwrap();
        assert_eq!(a.req.raw_input_contents, vec![vec![1u8, 2, 3, 4, 5, 6]]);
        assert_eq!(a.req.raw_input_contents, b.req.raw_input_contents);
        assert!(!a.binary_output && b.binary_output);
    }

    #[test]
    fn bad_tensors_name_their_field() {
        let cases: [(&[u8], Option<usize>, &str); 5] = [
            (
                br#"{"inputs":[{"name":"INPUT","shape":[1,1,2,3],"datatype":"UINT8","data":[1,2,3]}]}"#,
                None,
                "inputs[0].data",
            ),
            (
                br#"{"inputs":[{"name":"INPUT","shape":[1,1,1,3],"datatype":"UINT8","data":[1,2,300]}]}"#,
                None,
                "inputs[0].data",
            ),
            (
                br#"{"inputs":[{"name":"INPUT","shape":[1,1,1,3],"datatype":"UINT8","parameters":{"binary_data_size":3}}]}"#,
                Some(102),
                "binary_data_size",
            ),
            (br#"{"inputs": 5}"#, None, "request body"),
            (b"{}", Some(10), "Inference-Header-Content-Length"),
        ];
        for (body, header_len, field) in cases {
            let e = parse_infer(&path(), body, header_len)
                .err()
                .unwrap()
                .to_string();
            assert!(e.contains(field), "{field}: {e}");
        }
    }
}
