//! Helpers: start `aq-sync`, run `aq` against it, and raw HTTPS calls for what the CLI never
//! sends (hostile bodies, other roles).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};

pub const AQ_SYNC: &str = env!("CARGO_BIN_EXE_aq-sync");

/// The `aq` binary, built beside `aq-sync` by `cargo test --workspace`.
pub fn aq_bin() -> PathBuf {
    let p = Path::new(AQ_SYNC).with_file_name("aq");
    assert!(
        p.exists(),
        "{} is missing: build it first (cargo build -p aq-agent, or cargo test --workspace)",
        p.display()
    );
    p
}

pub struct Server {
    pub child: Child,
    pub url: String,
    pub data: PathBuf,
    pub ca: PathBuf,
    pub admin: String,
    /// The arguments after `serve`, for a restart on the same ports.
    pub args: Vec<String>,
}

pub use aq_test_support::{fixture, free_port, http_post, wait_for};

impl Server {
    /// Starts `aq-sync serve` on a free loopback port with a generated TLS identity.
    pub fn start(data: &Path) -> Server {
        Self::start_on(data, "127.0.0.1:0", &[])
    }

    pub fn start_on(data: &Path, addr: &str, extra: &[&str]) -> Server {
        let mut args: Vec<String> = vec![
            "--addr".into(),
            addr.into(),
            "--log-level".into(),
            "warn".into(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        if !extra.contains(&"--mqtt-url") && !extra.contains(&"--mqtt-listen") {
            args.push("--mqtt-listen".into());
            args.push(format!("127.0.0.1:{}", free_port()));
        }
        Self::spawn(data, args)
    }

    fn spawn(data: &Path, args: Vec<String>) -> Server {
        let started = aq_test_support::spawn_listening(
            Command::new(AQ_SYNC)
                .arg("--data-dir")
                .arg(data)
                .arg("serve")
                .args(&args),
        );
        let (child, url) = (started.child, started.url);
        let admin = std::fs::read_to_string(data.join("admin.token"))
            .unwrap()
            .trim()
            .to_owned();
        let mut args = args;
        // A restart keeps the HTTP port too.
        if let Some(i) = args.iter().position(|a| a == "--addr") {
            args[i + 1] = url.rsplit_once("//").unwrap().1.to_owned();
        }
        Server {
            child,
            url,
            data: data.to_owned(),
            ca: data.join("tls/ca.pem"),
            admin,
            args,
        }
    }

    /// SIGKILL, then start again on the same data directory and ports.
    pub fn restart(&mut self) {
        self.kill();
        let fresh = Self::spawn(&self.data, self.args.clone());
        // The old process is dead already; dropping its handle only reaps it.
        drop(std::mem::replace(self, fresh));
    }

    pub fn addr(&self) -> String {
        self.url.rsplit_once("//").unwrap().1.to_owned()
    }

    /// SIGKILL, as a crash would.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Runs `aq --data-dir DATA ARGS` against this server with `token`.
    pub fn aq(&self, data: &Path, token: &str, args: &[&str]) -> Output {
        self.aq_command(data, token, args).output().unwrap()
    }

    /// The command `aq --data-dir DATA ARGS` against this server with `token`, not started.
    pub fn aq_command(&self, data: &Path, token: &str, args: &[&str]) -> Command {
        let mut cmd = Command::new(aq_bin());
        cmd.arg("--data-dir")
            .arg(data)
            .args(args)
            .env("AQ_SERVER", &self.url)
            .env("AQ_SERVER_CA", &self.ca)
            .env("AQ_TOKEN", token)
            .env_remove("AQ_DATA_DIR");
        cmd
    }

    /// Runs `aq` and expects success; returns stdout parsed as JSON (`--json` is added).
    pub fn aq_json(&self, data: &Path, token: &str, args: &[&str]) -> serde_json::Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let out = self.aq(data, token, &all);
        assert!(
            out.status.success(),
            "aq {args:?} failed ({:?}):\n{}",
            out.status.code(),
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// Runs `aq` and expects exit code `code` with a clear error; returns stderr.
    pub fn aq_fails(&self, data: &Path, token: &str, args: &[&str], code: i32) -> String {
        let out = self.aq(data, token, args);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(code), "aq {args:?}: {stderr}");
        assert!(
            stderr.starts_with("error: "),
            "no clear error for {args:?}: {stderr}"
        );
        assert!(
            !stderr.contains("panicked"),
            "aq panicked for {args:?}: {stderr}"
        );
        stderr
    }

    /// A TLS client configuration that trusts this server's CA.
    fn tls_config(&self) -> rustls::ClientConfig {
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_file_iter(&self.ca).unwrap() {
            roots.add(c.unwrap()).unwrap();
        }
        rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth()
    }

    /// Keeps one request in the server's handler for `hold`: an upload that sends its body
    /// a byte at a time, then gives up. Returns once the request is under way.
    pub fn hold_a_request(
        &self,
        token: &str,
        hold: std::time::Duration,
    ) -> std::thread::JoinHandle<()> {
        use tokio::io::AsyncWriteExt;
        let (config, addr, token) = (self.tls_config(), self.addr(), token.to_owned());
        let (started, begun) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let mut tls = connect_tls(config, &addr).await;
                let head = format!(
                    "POST /v1/chunks HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n\
                     Content-Type: application/json\r\nContent-Length: 1000000\r\n\r\n"
                );
                tls.write_all(head.as_bytes()).await.unwrap();
                tls.write_all(b"{").await.unwrap();
                tls.flush().await.unwrap();
                started.send(()).unwrap();
                let until = std::time::Instant::now() + hold;
                while std::time::Instant::now() < until {
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    if tls.write_all(b" ").await.is_err() || tls.flush().await.is_err() {
                        break;
                    }
                }
            });
        });
        begun.recv().unwrap();
        thread
    }

    /// One raw HTTPS request; returns status, content type and body.
    pub fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        content_type: Option<&str>,
        body: Vec<u8>,
    ) -> Response {
        let config = self.tls_config();
        let addr = self.addr();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let tls = connect_tls(config, &addr).await;
            let (mut sender, conn) =
                hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
                    .await
                    .unwrap();
            tokio::spawn(conn);
            let mut req = hyper::Request::builder()
                .method(method)
                .uri(path)
                .header("host", addr.as_str());
            if let Some(t) = token {
                req = req.header("authorization", format!("Bearer {t}"));
            }
            if let Some(ct) = content_type {
                req = req.header("content-type", ct);
            }
            let resp = sender
                .send_request(req.body(Full::new(Bytes::from(body))).unwrap())
                .await
                .unwrap();
            let status = resp.status().as_u16();
            let headers = resp.headers().clone();
            let body = resp
                .into_body()
                .collect()
                .await
                .unwrap()
                .to_bytes()
                .to_vec();
            Response {
                status,
                headers,
                body,
            }
        })
    }

    /// A JSON request with the admin token, expecting `status`.
    pub fn admin_json(
        &self,
        method: &str,
        path: &str,
        body: serde_json::Value,
        status: u16,
    ) -> serde_json::Value {
        let r = self.call(
            method,
            path,
            Some(&self.admin),
            Some("application/json"),
            body.to_string().into_bytes(),
        );
        assert_eq!(r.status, status, "{method} {path}: {}", r.text());
        r.json()
    }

    /// Makes a token with this role over the API.
    pub fn token(&self, name: &str, role: &str) -> String {
        let v = self.admin_json(
            "POST",
            "/v1/tokens",
            serde_json::json!({ "name": name, "role": role }),
            201,
        );
        v["token"].as_str().unwrap().to_owned()
    }
}

/// A TLS connection to `addr` as 127.0.0.1.
async fn connect_tls(
    config: rustls::ClientConfig,
    addr: &str,
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("127.0.0.1").unwrap(), tcp)
        .await
        .unwrap()
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

pub struct Response {
    pub status: u16,
    pub headers: hyper::HeaderMap,
    pub body: Vec<u8>,
}

impl Response {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }

    /// Asserts a refusal: this status, a JSON error body with this code.
    pub fn refused(&self, status: u16, code: &str) {
        assert_eq!(self.status, status, "{}", self.text());
        let v = self.json();
        assert_eq!(v["error"]["code"], code, "{}", self.text());
        assert!(!v["error"]["message"].as_str().unwrap().is_empty());
    }
}

/// Makes a signing key in `dir` and trusts it in the server's policy and in `clients`' data
/// dirs. Returns the secret key path.
pub fn shared_key(dir: &Path, server: &Server, clients: &[&Path]) -> PathBuf {
    let key = dir.join("signer.key");
    let run = |args: &[&str]| {
        let out = Command::new(aq_bin()).args(args).output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(&["key", "gen", "--out", key.to_str().unwrap()]);
    let policy = server.data.join("trust.toml");
    run(&[
        "key",
        "trust",
        key.to_str().unwrap(),
        "--packs",
        "*",
        "--policy",
        policy.to_str().unwrap(),
    ]);
    for c in clients {
        let policy = c.join("trust.toml");
        std::fs::create_dir_all(c).unwrap();
        run(&[
            "key",
            "trust",
            key.to_str().unwrap(),
            "--packs",
            "*",
            "--policy",
            policy.to_str().unwrap(),
        ]);
    }
    key
}

/// `aq pack save` with a key; returns the JSON report.
pub fn save(
    data: &Path,
    model: &Path,
    name: &str,
    version: &str,
    key: &Path,
    extra: &[&str],
) -> serde_json::Value {
    let mut cmd = Command::new(aq_bin());
    cmd.arg("--data-dir")
        .arg(data)
        .args(["--json", "pack", "save"])
        .arg(model)
        .args(["--name", name, "--version", version, "--key"])
        .arg(key)
        .args(extra);
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Bytes that zstd cannot shrink, deterministic from `seed`.
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    aq_test_support::XorShift::new(seed).bytes(len)
}

/// An `aq agent run` process.
pub struct Agent {
    pub child: Child,
    /// Where it serves models, `127.0.0.1:PORT`.
    pub addr: String,
    pub device: String,
}

impl Agent {
    /// Enrolls a device in `data` with `token` and labels (`k=v`).
    pub fn enroll(server: &Server, data: &Path, token: &str, labels: &[&str]) -> String {
        let mut args = vec!["--json", "agent", "enroll"];
        for l in labels {
            args.push("--label");
            args.push(l);
        }
        let out = server.aq(data, token, &args);
        assert!(
            out.status.success(),
            "enroll: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        v["device"].as_str().unwrap().to_owned()
    }

    pub fn start(data: &Path) -> Agent {
        let started = aq_test_support::spawn_listening(
            Command::new(aq_bin())
                .arg("--data-dir")
                .arg(data)
                .args([
                    "agent",
                    "run",
                    "--addr",
                    "127.0.0.1:0",
                    "--heartbeat",
                    "300ms",
                    "--log-level",
                    "warn",
                ])
                .env_remove("AQ_SERVER")
                .env_remove("AQ_TOKEN"),
        );
        let addr = started.addr().to_owned();
        let device = started
            .line
            .split("device ")
            .nth(1)
            .and_then(|r| r.split(',').next())
            .unwrap_or_default()
            .to_owned();
        let child = started.child;
        Agent {
            child,
            addr,
            device,
        }
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The version of `model` this device serves, or `None` when it serves none.
    pub fn serving(&self, model: &str, input: &serde_json::Value) -> Option<String> {
        let (status, body) = http_post(
            &self.addr,
            &format!("/v1/serve/{model}/predict"),
            &input.to_string(),
        );
        if status != 200 {
            return None;
        }
        let v: serde_json::Value = serde_json::from_str(&body).ok()?;
        v["version"].as_str().map(str::to_owned)
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.kill();
    }
}

/// mosquitto on a free loopback port, with persistence off (a restart loses every retained
/// message); killed on drop.
pub struct Mosquitto {
    child: Child,
    pub port: u16,
    conf: PathBuf,
}

impl Mosquitto {
    pub fn start(dir: &Path) -> Mosquitto {
        let port = free_port();
        let conf = dir.join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!("listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"),
        )
        .unwrap();
        let child = Self::spawn(&conf, port);
        Mosquitto { child, port, conf }
    }

    fn spawn(conf: &Path, port: u16) -> Child {
        let child = Command::new("mosquitto")
            .arg("-c")
            .arg(conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("mosquitto is not installed: tests/run-all.sh installs it (apt-get install mosquitto)");
        wait_for("mosquitto to listen", 10, || {
            std::net::TcpStream::connect(("127.0.0.1", port)).ok()
        });
        child
    }

    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }

    /// SIGKILL, then a new broker on the same port: every session and retained message is
    /// gone.
    pub fn restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.child = Self::spawn(&self.conf, self.port);
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A TCP relay on a loopback port to `upstream`, whose link can go down: while down, no byte
/// crosses in either direction and new connections wait, as in a network partition (TCP
/// holds what was sent; a peer that gives up closes its end).
pub struct Proxy {
    pub port: u16,
    down: Arc<std::sync::atomic::AtomicBool>,
}

impl Proxy {
    pub fn start(upstream: &str) -> Proxy {
        use std::sync::atomic::AtomicBool;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let down = Arc::new(AtomicBool::new(false));
        let upstream = upstream.to_owned();
        let flag = down.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                let (flag, upstream) = (flag.clone(), upstream.clone());
                std::thread::spawn(move || {
                    wait_up(&flag);
                    let Ok(server) = std::net::TcpStream::connect(&upstream) else {
                        return;
                    };
                    let (c2, s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                    let f2 = flag.clone();
                    std::thread::spawn(move || pump(c2, s2, &f2));
                    pump(server, client, &flag);
                });
            }
        });
        Proxy { port, down }
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Takes the link down (`true`) or brings it back.
    pub fn set_down(&self, down: bool) {
        self.down.store(down, std::sync::atomic::Ordering::SeqCst);
    }
}

fn wait_up(down: &std::sync::atomic::AtomicBool) {
    while down.load(std::sync::atomic::Ordering::SeqCst) {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Copies `from` to `to` until either end closes; bytes read while the link is down wait
/// until it is up again.
fn pump(
    mut from: std::net::TcpStream,
    mut to: std::net::TcpStream,
    down: &std::sync::atomic::AtomicBool,
) {
    use std::io::{Read, Write};
    let mut buf = vec![0u8; 64 << 10];
    loop {
        wait_up(down);
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        wait_up(down);
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = from.shutdown(std::net::Shutdown::Both);
    let _ = to.shutdown(std::net::Shutdown::Both);
}
