//! The API driven as a function, without sockets: every route, both protocols, and the
//! refusals a client can provoke, each a JSON body with its status.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use aq_pack::manifest::ModelFormat;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request};
use serde_json::{Value, json};

use super::{State, handle};
use crate::config::{ModelSettings, ServerSettings};
use crate::models::ModelSource;

/// A server state serving the sigmoid fixture (`x`: f32 [3, 4, 5] in, `y` out) as `sig`
/// 1.0.0, with request bodies capped at `max_body` bytes.
async fn state(max_body: usize) -> State {
    let bytes = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../fixtures/models/sigmoid.onnx"
    ))
    .unwrap();
    let state = State::new(ServerSettings {
        max_body_bytes: max_body,
        ..ServerSettings::default()
    })
    .unwrap();
    state
        .models
        .add(&ModelSource {
            name: "sig".into(),
            version: "1.0.0".into(),
            format: ModelFormat::Onnx,
            bytes: Arc::new(bytes),
            origin: "fixtures/models/sigmoid.onnx".into(),
            settings: ModelSettings::default(),
        })
        .await
        .unwrap();
    state
}

struct Reply {
    status: u16,
    headers: hyper::HeaderMap,
    body: Bytes,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// A refusal: this status, a JSON error body (v1: `error.code`; v2: `error` text).
    fn refused(&self, status: u16) -> Value {
        assert_eq!(self.status, status, "{}", self.text());
        assert_eq!(
            self.headers["content-type"],
            "application/json",
            "{}",
            self.text()
        );
        let v = self.json();
        assert!(v["error"].is_object() || v["error"].is_string(), "{v}");
        v
    }
}

async fn call(state: &State, method: Method, path: &str, ct: &str, body: Vec<u8>) -> Reply {
    let mut request = Request::builder().method(method).uri(path);
    if !ct.is_empty() {
        request = request.header("content-type", ct);
    }
    let answer = handle(state, request.body(Full::new(Bytes::from(body))).unwrap()).await;
    let status = answer.status().as_u16();
    let headers = answer.headers().clone();
    let body = answer.into_body().collect().await.unwrap().to_bytes();
    Reply {
        status,
        headers,
        body,
    }
}

async fn get(state: &State, path: &str) -> Reply {
    call(state, Method::GET, path, "", vec![]).await
}

fn input(value: f32) -> Value {
    json!({ "inputs": { "x": { "shape": [3, 4, 5], "data": vec![value; 60] } } })
}

#[tokio::test]
async fn every_read_route_answers_and_describes_the_model() {
    let state = state(1 << 20).await;
    let models = get(&state, "/v1/models").await;
    assert_eq!(models.status, 200, "{}", models.text());
    assert!(models.text().contains("\"sig\""), "{}", models.text());

    let health = get(&state, "/v1/serve/sig/health").await;
    assert_eq!(health.status, 200);
    assert_eq!(health.json()["version"], "1.0.0", "{}", health.text());

    let server = get(&state, "/v2").await;
    assert_eq!(server.json()["name"], "aquilia-edge");
    assert_eq!(get(&state, "/v2/health/live").await.json()["live"], true);
    assert_eq!(get(&state, "/v2/health/ready").await.json()["ready"], true);
    let meta = get(&state, "/v2/models/sig").await.json();
    assert_eq!(meta["name"], "sig", "{meta}");
    assert_eq!(meta["inputs"][0]["name"], "x", "{meta}");
    assert_eq!(meta["inputs"][0]["datatype"], "FP32", "{meta}");
    assert_eq!(meta["inputs"][0]["shape"], json!([3, 4, 5]), "{meta}");
    let versioned = get(&state, "/v2/models/sig/versions/1.0.0").await;
    assert_eq!(versioned.status, 200, "{}", versioned.text());
    let ready = get(&state, "/v2/models/sig/ready").await.json();
    assert_eq!(ready["ready"], true, "{ready}");
    let config = get(&state, "/v2/models/sig/config").await;
    assert_eq!(config.status, 200, "{}", config.text());
    assert_eq!(config.json()["name"], "sig");

    let metrics = get(&state, "/metrics").await;
    assert_eq!(metrics.status, 200);
    assert!(
        metrics.text().contains("aq_model_info{"),
        "{}",
        metrics.text()
    );
    let one = get(&state, "/v1/serve/sig/metrics").await;
    assert_eq!(one.status, 200);
    assert!(one.text().contains("model=\"sig\""), "{}", one.text());

    // Draining: readiness turns false (503 with Retry-After), liveness stays.
    state.draining.store(true, Ordering::Relaxed);
    let draining = get(&state, "/v2/health/ready").await;
    draining.refused(503);
    assert_eq!(draining.headers["retry-after"], "1");
    assert_eq!(get(&state, "/v2/models/sig/ready").await.status, 503);
    assert_eq!(get(&state, "/v2/health/live").await.status, 200);
}

#[tokio::test]
async fn predictions_over_both_protocols_give_the_sigmoid() {
    let state = state(1 << 20).await;
    let v1 = call(
        &state,
        Method::POST,
        "/v1/serve/sig/predict",
        "application/json",
        input(0.0).to_string().into_bytes(),
    )
    .await;
    assert_eq!(v1.status, 200, "{}", v1.text());
    let v = v1.json();
    assert_eq!(v["version"], "1.0.0", "{v}");
    let (_, y) = v["outputs"].as_object().unwrap().iter().next().unwrap();
    let data = y["data"].as_array().unwrap();
    assert_eq!(data.len(), 60);
    assert!(
        data.iter()
            .all(|d| (d.as_f64().unwrap() - 0.5).abs() < 1e-6),
        "{y}"
    );

    let v2 = call(
        &state,
        Method::POST,
        "/v2/models/sig/infer",
        "application/json",
        json!({ "inputs": [{ "name": "x", "shape": [3, 4, 5], "datatype": "FP32", "data": vec![100.0f32; 60] }] })
            .to_string()
            .into_bytes(),
    )
    .await;
    assert_eq!(v2.status, 200, "{}", v2.text());
    let out = &v2.json()["outputs"][0];
    assert_eq!(out["datatype"], "FP32", "{out}");
    assert!(
        out["data"]
            .as_array()
            .unwrap()
            .iter()
            .all(|d| (d.as_f64().unwrap() - 1.0).abs() < 1e-6),
        "{out}"
    );
    // Counted by protocol.
    let metrics = get(&state, "/metrics").await.text();
    assert!(metrics.contains("protocol=\"v1\""), "{metrics}");
    assert!(metrics.contains("protocol=\"v2\""), "{metrics}");
}

#[tokio::test]
async fn bad_requests_get_json_refusals_with_their_status() {
    let state = state(4096).await;
    let post = |path: &'static str, ct: &'static str, body: Vec<u8>| {
        let state = &state;
        async move { call(state, Method::POST, path, ct, body).await }
    };
    // No such model, path or method.
    get(&state, "/v1/serve/nope/health").await.refused(404);
    get(&state, "/v2/models/nope").await.refused(404);
    get(&state, "/v2/models/sig/versions/9.9.9")
        .await
        .refused(404);
    get(&state, "/v1/nothing").await.refused(404);
    let wrong_method = get(&state, "/v1/serve/sig/predict").await;
    wrong_method.refused(405);
    call(&state, Method::DELETE, "/v1/models", "", vec![])
        .await
        .refused(405);
    // Bodies: not JSON, the wrong shape, the wrong input name, an unknown content type, and
    // one over the limit.
    let path = "/v1/serve/sig/predict";
    post(path, "application/json", b"{not json".to_vec())
        .await
        .refused(400);
    post(
        path,
        "application/json",
        json!({ "inputs": { "x": { "shape": [2, 2], "data": [1.0, 2.0, 3.0, 4.0] } } })
            .to_string()
            .into_bytes(),
    )
    .await
    .refused(400);
    post(
        path,
        "application/json",
        json!({ "inputs": { "z": { "shape": [3, 4, 5], "data": vec![0.0; 60] } } })
            .to_string()
            .into_bytes(),
    )
    .await
    .refused(400);
    post(path, "text/csv", b"1,2,3".to_vec()).await.refused(415);
    post(path, "application/json", vec![b' '; 8192])
        .await
        .refused(413);
    post("/v2/models/sig/infer", "application/json", b"[]".to_vec())
        .await
        .refused(400);
    // None of them reached the model.
    let metrics = get(&state, "/metrics").await.text();
    assert!(
        !metrics.lines().any(|l| l.starts_with("aq_requests_total{")
            && l.contains("code=\"200\"")
            && !l.ends_with(" 0")),
        "{metrics}"
    );
}
