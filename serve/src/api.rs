//! The HTTP API, as a function from a request to a response: routing, body limits, decoding,
//! queueing, and encoding. No sockets here ([`crate::server`] owns those), so every route can
//! be driven in tests without a listener.
//!
//! | route | what |
//! |---|---|
//! | `POST /v1/serve/{model}/predict` | v1 JSON or `application/x-aq-tensors` in and out |
//! | `GET /v1/serve/{model}/health` | the model's state, version and signature |
//! | `GET /v1/serve/{model}/metrics` | Prometheus text for one model |
//! | `GET /v1/models` | every served model |
//! | `GET /metrics` | Prometheus text for everything |
//! | `GET /v2`, `/v2/health/live`, `/v2/health/ready` | OIP server metadata and health |
//! | `GET /v2/models/{m}[/versions/{v}]`, `.../ready`, `.../config` | OIP model metadata, readiness, Triton-style config |
//! | `POST /v2/models/{m}[/versions/{v}]/infer` | OIP inference, JSON and binary-data extension |

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use aq_pack::manifest::ModelFormat;
use aq_runtime::{Axis, IoSpec, Tensor};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Body;
use hyper::header::{CONTENT_LENGTH, CONTENT_TYPE, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::json;

use crate::codec::{binary, json as v1json, v2};
use crate::config::ServerSettings;
use crate::error::ApiError;
use crate::metrics::{self, ServerMetrics};
use crate::models::{Loaded, ModelSet, Slot};

/// Everything a request can reach.
pub struct State {
    pub models: ModelSet,
    pub metrics: ServerMetrics,
    pub settings: ServerSettings,
    /// Set when shutdown begins: readiness turns false so load balancers stop sending.
    pub draining: AtomicBool,
}

impl State {
    /// Fails only when the worker spawner thread cannot start. Model workers run at the
    /// calling thread's priority ([`crate::spawner`]).
    pub fn new(settings: ServerSettings) -> std::io::Result<State> {
        Ok(State {
            models: ModelSet::new()?,
            metrics: ServerMetrics::default(),
            settings,
            draining: AtomicBool::new(false),
        })
    }
}

type Answer = Response<Full<Bytes>>;

fn respond(status: u16, content_type: &'static str, body: impl Into<Bytes>) -> Answer {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() =
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

fn json_answer(status: u16, value: &serde_json::Value) -> Answer {
    respond(status, "application/json", value.to_string())
}

fn error_answer(error: &ApiError, v2: bool) -> Answer {
    let mut response = json_answer(error.status, &error.body(v2));
    if error.status == 503 {
        response
            .headers_mut()
            .insert("retry-after", HeaderValue::from_static("1"));
    }
    response
}

/// Which protocol a prediction came in on (a metrics label).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Protocol {
    V1,
    V2,
}

impl Protocol {
    fn label(self) -> &'static str {
        match self {
            Protocol::V1 => "v1",
            Protocol::V2 => "v2",
        }
    }
}

/// Answers one request.
pub async fn handle<B>(state: &State, request: Request<B>) -> Answer
where
    B: Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let path = request.uri().path().to_owned();
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let method = request.method().clone();
    let v2 = segments.first() == Some(&"v2");
    let get = method == Method::GET || method == Method::HEAD;
    let post = method == Method::POST;
    let routed = match segments.as_slice() {
        ["metrics"] if get => Ok(metrics_answer(state, None)),
        ["v1", "models"] if get => Ok(list_models(state)),
        ["v1", "serve", model, "predict"] if post => {
            return predict(state, model, None, request, Protocol::V1).await;
        }
        ["v1", "serve", model, "health"] if get => with_slot(state, model, None, |slot, loaded| {
            json_answer(200, &health(slot, loaded))
        }),
        ["v1", "serve", model, "metrics"] if get => state
            .models
            .get(model)
            .map(|slot| metrics_answer(state, Some(&slot)))
            .ok_or_else(|| ApiError::unknown_model(model)),
        ["v2"] if get => Ok(json_answer(
            200,
            &json!({
                "name": "aquilia-edge",
                "version": env!("CARGO_PKG_VERSION"),
                "extensions": ["binary_tensor_data", "model_configuration"],
            }),
        )),
        ["v2", "health", "live"] if get => Ok(respond(200, "application/json", "{\"live\":true}")),
        ["v2", "health", "ready"] if get => {
            if state.draining.load(Ordering::Relaxed) {
                Err(ApiError::unavailable("the server is shutting down"))
            } else {
                Ok(respond(200, "application/json", "{\"ready\":true}"))
            }
        }
        ["v2", "models", model] | ["v2", "models", model, "versions", _] if get => {
            let version = segments.get(4).copied();
            with_slot(state, model, version, |slot, loaded| {
                json_answer(200, &v2_metadata(slot, loaded))
            })
        }
        ["v2", "models", model, "ready"] | ["v2", "models", model, "versions", _, "ready"]
            if get =>
        {
            let version = segments.get(4).filter(|_| segments.len() == 6).copied();
            let draining = state.draining.load(Ordering::Relaxed);
            with_slot(state, model, version, |slot, loaded| {
                let status = if draining { 503 } else { 200 };
                json_answer(
                    status,
                    &json!({ "name": slot.name, "version": loaded.version, "ready": !draining }),
                )
            })
        }
        ["v2", "models", model, "config"] | ["v2", "models", model, "versions", _, "config"]
            if get =>
        {
            let version = segments.get(4).filter(|_| segments.len() == 6).copied();
            with_slot(state, model, version, |slot, loaded| {
                json_answer(200, &triton_config(slot, loaded))
            })
        }
        ["v2", "models", model, "infer"] | ["v2", "models", model, "versions", _, "infer"]
            if post =>
        {
            let version = segments.get(4).filter(|_| segments.len() == 6).copied();
            return predict(state, model, version, request, Protocol::V2).await;
        }
        _ => Err(unrouted(&segments, &method)),
    };
    match routed {
        Ok(answer) => answer,
        Err(error) => {
            state.metrics.count_unrouted(error.status);
            error_answer(&error, v2)
        }
    }
}

/// The error for a path no route takes: 405 when the path exists for another method.
fn unrouted(segments: &[&str], method: &Method) -> ApiError {
    let post_routes = matches!(segments, ["v1", "serve", _, "predict"])
        || matches!(segments.last(), Some(&"infer")) && segments.first() == Some(&"v2");
    let get_routes = matches!(segments, ["metrics"] | ["v1", "models"] | ["v2"])
        || matches!(segments, ["v1", "serve", _, "health" | "metrics"])
        || matches!(segments, ["v2", "health", "live" | "ready"])
        || matches!(segments, ["v2", "models", ..]) && !post_routes;
    if post_routes && method != Method::POST {
        ApiError::new(
            405,
            "method_not_allowed",
            format!("{method} is not allowed here; use POST"),
        )
    } else if get_routes && method != Method::GET {
        ApiError::new(
            405,
            "method_not_allowed",
            format!("{method} is not allowed here; use GET"),
        )
    } else {
        ApiError::new(
            404,
            "not_found",
            format!("no route for /{}", segments.join("/")),
        )
    }
}

fn with_slot(
    state: &State,
    model: &str,
    version: Option<&str>,
    f: impl FnOnce(&Slot, &Loaded) -> Answer,
) -> Result<Answer, ApiError> {
    let slot = state
        .models
        .get(model)
        .ok_or_else(|| ApiError::unknown_model(model))?;
    let loaded = slot.current();
    check_version(&slot.name, &loaded, version)?;
    Ok(f(&slot, &loaded))
}

/// A 404 when the request names a version other than the one in service.
fn check_version(model: &str, loaded: &Loaded, version: Option<&str>) -> Result<(), ApiError> {
    match version {
        Some(v) if v != loaded.version => Err(ApiError::new(
            404,
            "version_not_found",
            format!(
                "model {model:?} serves version {}, not {v:?}",
                loaded.version
            ),
        )),
        _ => Ok(()),
    }
}

fn io_json(spec: &IoSpec) -> serde_json::Value {
    json!({
        "name": spec.name,
        "dtype": spec.dtype.name(),
        "shape": spec.shape.iter().map(|a| match a {
            Axis::Fixed(n) => json!(n),
            Axis::Batch => json!("batch"),
            Axis::Free(s) => json!(s),
        }).collect::<Vec<_>>(),
    })
}

fn format_name(format: ModelFormat) -> &'static str {
    match format {
        ModelFormat::Onnx => "onnx",
        ModelFormat::Tflite => "tflite",
    }
}

/// Which engine runs a model and how (health and v2 metadata carry it).
fn engine_json(loaded: &Loaded) -> serde_json::Value {
    let info = loaded.engine.info();
    json!({
        "name": info.engine,
        "path": info.path,
        "kernels": info.kernels,
        "threads": loaded.settings.threads_per_run(),
        "stateful": info.stateful,
    })
}

fn health(slot: &Slot, loaded: &Loaded) -> serde_json::Value {
    let signature = loaded.engine.signature();
    json!({
        "model": slot.name,
        "status": "ready",
        "version": loaded.version,
        "origin": loaded.origin,
        "format": format_name(loaded.format),
        "backend": loaded.engine.backend(),
        "engine": engine_json(loaded),
        "loaded_at": humantime::format_rfc3339_seconds(loaded.loaded_at).to_string(),
        "batching": {
            "batchable": signature.batchable(),
            "max_batch": if signature.batchable() { loaded.settings.max_batch } else { 1 },
            "batch_sizes": loaded.engine.batch_sizes(),
            "warm": loaded.warm.load(Ordering::Acquire),
            "max_delay_us": loaded.settings.max_delay.as_micros() as u64,
            "queue_capacity": loaded.settings.queue_capacity,
            "max_queue_delay": loaded.settings.max_queue_delay.to_string(),
            "workers": loaded.settings.workers,
        },
        "queue_depth": slot.metrics.queue_depth.load(Ordering::Relaxed).max(0),
        "inputs": signature.inputs.iter().map(io_json).collect::<Vec<_>>(),
        "outputs": signature.outputs.iter().map(io_json).collect::<Vec<_>>(),
    })
}

fn list_models(state: &State) -> Answer {
    let models: Vec<serde_json::Value> = state
        .models
        .all()
        .iter()
        .map(|slot| health(slot, &slot.current()))
        .collect();
    json_answer(200, &json!({ "models": models }))
}

fn v2_io(spec: &IoSpec) -> serde_json::Value {
    json!({ "name": spec.name, "datatype": spec.dtype.v2_name(), "shape": spec.v2_shape() })
}

fn v2_metadata(slot: &Slot, loaded: &Loaded) -> serde_json::Value {
    let signature = loaded.engine.signature();
    json!({
        "name": slot.name,
        "versions": [loaded.version],
        "platform": format!("{}_{}", loaded.engine.backend(), format_name(loaded.format)),
        "engine": engine_json(loaded),
        "inputs": signature.inputs.iter().map(v2_io).collect::<Vec<_>>(),
        "outputs": signature.outputs.iter().map(v2_io).collect::<Vec<_>>(),
    })
}

/// A Triton-style model configuration (JSON form of config.pbtxt); for batchable models
/// `max_batch_size` is set and dims leave out the batch axis, as Triton does.
fn triton_config(slot: &Slot, loaded: &Loaded) -> serde_json::Value {
    let signature = loaded.engine.signature();
    let batchable = signature.batchable();
    let io = |spec: &IoSpec| {
        let dims = spec.v2_shape();
        let dims = if batchable { dims[1..].to_vec() } else { dims };
        json!({ "name": spec.name, "data_type": format!("TYPE_{}", spec.dtype.v2_name()), "dims": dims })
    };
    json!({
        "name": slot.name,
        "platform": format!("{}_{}", loaded.engine.backend(), format_name(loaded.format)),
        "backend": loaded.engine.backend(),
        "max_batch_size": if batchable { loaded.settings.max_batch } else { 0 },
        "input": signature.inputs.iter().map(io).collect::<Vec<_>>(),
        "output": signature.outputs.iter().map(io).collect::<Vec<_>>(),
        "dynamic_batching": if batchable {
            json!({ "max_queue_delay_microseconds": loaded.settings.max_delay.as_micros() as u64 })
        } else {
            json!(null)
        },
    })
}

fn metrics_answer(state: &State, only: Option<&Arc<Slot>>) -> Answer {
    let slots: Vec<Arc<Slot>> = match only {
        Some(slot) => vec![slot.clone()],
        None => state.models.all(),
    };
    let loaded: Vec<Arc<Loaded>> = slots.iter().map(|s| s.current()).collect();
    let rendered: Vec<metrics::Rendered<'_>> = slots
        .iter()
        .zip(&loaded)
        .map(|(slot, loaded)| metrics::Rendered {
            name: &slot.name,
            version: &loaded.version,
            metrics: &slot.metrics,
        })
        .collect();
    let server = if only.is_none() {
        Some(&state.metrics)
    } else {
        None
    };
    respond(
        200,
        "text/plain; version=0.0.4; charset=utf-8",
        metrics::render(&rendered, server),
    )
}

/// Reads the whole body, refusing one over the limit before reading it when it says its size.
async fn read_body<B>(
    request: Request<B>,
    limit: usize,
) -> Result<(hyper::http::request::Parts, Bytes), ApiError>
where
    B: Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let too_large = || {
        ApiError::new(
            413,
            "body_too_large",
            format!("the body is larger than the limit of {limit} bytes"),
        )
    };
    let (parts, body) = request.into_parts();
    if let Some(length) = parts.headers.get(CONTENT_LENGTH)
        && let Some(length) = length.to_str().ok().and_then(|s| s.parse::<u64>().ok())
        && length > limit as u64
    {
        return Err(too_large());
    }
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok((parts, collected.to_bytes())),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(too_large()),
        Err(e) => Err(ApiError::bad_request(format!(
            "failed to read the body: {e}"
        ))),
    }
}

fn header<'a>(parts: &'a hyper::http::request::Parts, name: &str) -> Option<&'a str> {
    parts.headers.get(name).and_then(|v| v.to_str().ok())
}

/// A prediction on either protocol: decode, check, queue, wait, encode. Counts the request in
/// the model's metrics by its final status.
async fn predict<B>(
    state: &State,
    model: &str,
    version: Option<&str>,
    request: Request<B>,
    protocol: Protocol,
) -> Answer
where
    B: Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let started = Instant::now();
    let v2 = protocol == Protocol::V2;
    let Some(slot) = state.models.get(model) else {
        state.metrics.count_unrouted(404);
        return error_answer(&ApiError::unknown_model(model), v2);
    };
    let answer = match predict_on(state, &slot, version, request, protocol).await {
        Ok(answer) => answer,
        Err(error) => {
            if error.status == 500 {
                tracing::warn!(model = %slot.name, code = error.code, error = %error.message, "prediction failed");
            } else {
                tracing::debug!(model = %slot.name, code = error.code, error = %error.message, "prediction refused");
            }
            error_answer(&error, v2)
        }
    };
    let status = answer.status().as_u16();
    slot.metrics.count_request(protocol.label(), status);
    if status == 200 {
        slot.metrics
            .request_seconds
            .observe_duration(started.elapsed());
    }
    answer
}

async fn predict_on<B>(
    state: &State,
    slot: &Slot,
    version: Option<&str>,
    request: Request<B>,
    protocol: Protocol,
) -> Result<Answer, ApiError>
where
    B: Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let loaded = slot.current();
    check_version(&slot.name, &loaded, version)?;
    // Refused under overload or with the queue full without decoding the body: shedding
    // must cost less than serving. The body is still read (and dropped), so the client gets
    // the 503 rather than a reset in the middle of its upload.
    let admission = match loaded.batcher.admit() {
        Ok(admission) => admission,
        Err(error) => {
            aq_http_server::discard(request).await;
            return Err(error);
        }
    };
    let (parts, body) = read_body(request, state.settings.max_body_bytes).await?;
    let signature = loaded.engine.signature();
    let content_type = header(&parts, "content-type").unwrap_or("application/json");
    let binary_in = content_type.starts_with(binary::CONTENT_TYPE);
    let media = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    // v1 takes JSON or binary tensors; OIP clients send JSON, or octet-stream with the
    // binary-data extension (tritonclient), or nothing at all.
    let accepted = match protocol {
        Protocol::V1 => media == "application/json" || binary_in,
        Protocol::V2 => media == "application/json" || media == "application/octet-stream",
    };
    if !accepted {
        return Err(ApiError::new(
            415,
            "unsupported_media_type",
            format!(
                "content type {content_type:?} is not accepted here: send application/json{}",
                match protocol {
                    Protocol::V1 => format!(" or {}", binary::CONTENT_TYPE),
                    Protocol::V2 =>
                        " (or application/octet-stream with the binary-data extension)".to_owned(),
                }
            ),
        ));
    }
    enum Decoded {
        V1 {
            outputs: Option<Vec<String>>,
            binary: bool,
        },
        V2(v2::InferRequest),
    }
    let (named, decoded) = match protocol {
        Protocol::V1 if binary_in => {
            let named = binary::decode(&body)
                .map_err(|e| ApiError::new(400, "bad_binary_body", e.to_string()))?;
            (
                named,
                Decoded::V1 {
                    outputs: None,
                    binary: true,
                },
            )
        }
        Protocol::V1 => {
            let r = v1json::decode(&body, signature)?;
            let wants_binary =
                header(&parts, "accept").is_some_and(|a| a.starts_with(binary::CONTENT_TYPE));
            (
                r.inputs,
                Decoded::V1 {
                    outputs: r.outputs,
                    binary: wants_binary,
                },
            )
        }
        Protocol::V2 => {
            let header_length = match header(&parts, v2::HEADER_LENGTH) {
                None => None,
                Some(text) => Some(text.trim().parse::<usize>().map_err(|_| {
                    ApiError::new(
                        400,
                        "bad_binary_body",
                        format!("{} is not a number: {text:?}", v2::HEADER_LENGTH),
                    )
                })?),
            };
            let mut r = v2::decode(&body, header_length, signature)?;
            let named = std::mem::take(&mut r.inputs);
            (named, Decoded::V2(r))
        }
    };
    drop(body);
    let inputs: Vec<Tensor> = signature.order_inputs(named)?;
    let rows = signature.check(&inputs)?;
    let timeout = loaded.settings.timeout;
    let deadline = Instant::now() + timeout;
    let answer = loaded.batcher.submit(admission, inputs, rows, deadline)?;
    let outputs = match tokio::time::timeout_at(deadline.into(), answer).await {
        Ok(Ok(reply)) => reply?,
        // The worker dropped the request (its deadline passed) or the wait itself timed out.
        Ok(Err(_)) | Err(_) => return Err(ApiError::timeout(&slot.name, timeout)),
    };
    let answer = match decoded {
        Decoded::V1 {
            outputs: requested,
            binary: true,
        } => {
            let chosen = crate::codec::select(signature, &outputs, requested.as_deref())
                .map_err(|e| ApiError::new(400, "unknown_output", e))?;
            let body = binary::encode(chosen.iter().map(|(n, t)| (n.as_str(), *t)));
            respond(200, binary::CONTENT_TYPE, body)
        }
        Decoded::V1 {
            outputs: requested,
            binary: false,
        } => {
            let body = v1json::encode(
                &slot.name,
                &loaded.version,
                signature,
                &outputs,
                requested.as_deref(),
            )?;
            respond(200, "application/json", body)
        }
        Decoded::V2(request) => {
            let encoded = v2::encode(&slot.name, &loaded.version, signature, &outputs, &request)?;
            match encoded.header_length {
                Some(n) => {
                    let mut response = respond(200, "application/octet-stream", encoded.body);
                    response.headers_mut().insert(
                        v2::HEADER_LENGTH,
                        HeaderValue::from_str(&n.to_string())
                            .unwrap_or(HeaderValue::from_static("0")),
                    );
                    response
                }
                None => respond(200, "application/json", encoded.body),
            }
        }
    };
    Ok(answer)
}

#[cfg(test)]
mod tests;
