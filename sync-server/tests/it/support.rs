//! Helpers: start `aq-sync`, run `aq` against it, and raw HTTPS calls for what the CLI never
//! sends (hostile bodies, other roles).

use std::io::{BufRead, BufReader};
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

pub fn fixture(name: &str) -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fixtures/models")
        .join(name);
    assert!(
        p.exists(),
        "missing fixture {}: run fixtures/fetch.sh",
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

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

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
        let mut child = Command::new(AQ_SYNC)
            .arg("--data-dir")
            .arg(data)
            .arg("serve")
            .args(&args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).unwrap();
        let url = line
            .strip_prefix("listening on ")
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap_or_else(|| panic!("unexpected start-up line {line:?}"))
            .to_owned();
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
        Command::new(aq_bin())
            .arg("--data-dir")
            .arg(data)
            .args(args)
            .env("AQ_SERVER", &self.url)
            .env("AQ_SERVER_CA", &self.ca)
            .env("AQ_TOKEN", token)
            .env_remove("AQ_DATA_DIR")
            .output()
            .unwrap()
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

    /// One raw HTTPS request; returns status, content type and body.
    pub fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        content_type: Option<&str>,
        body: Vec<u8>,
    ) -> Response {
        let roots = {
            let mut roots = rustls::RootCertStore::empty();
            for c in CertificateDer::pem_file_iter(&self.ca).unwrap() {
                roots.add(c.unwrap()).unwrap();
            }
            roots
        };
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        let addr = self.addr();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
            let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
                .connect(ServerName::try_from("127.0.0.1").unwrap(), tcp)
                .await
                .unwrap();
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
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
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
        let mut child = Command::new(aq_bin())
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
            .env_remove("AQ_TOKEN")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).unwrap();
        let addr = line
            .strip_prefix("listening on http://")
            .and_then(|r| r.split_whitespace().next())
            .unwrap_or_else(|| panic!("unexpected agent start-up line {line:?}"))
            .to_owned();
        let device = line
            .split("device ")
            .nth(1)
            .and_then(|r| r.split(',').next())
            .unwrap_or_default()
            .to_owned();
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

/// A plain HTTP/1.1 POST over loopback; returns status and body ((0, "") when unreachable).
pub fn http_post(addr: &str, path: &str, json: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::net::TcpStream::connect(addr) else {
        return (0, String::new());
    };
    let _ = stream.set_read_timeout(Some(std::time::Duration::from_secs(10)));
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{json}",
        json.len()
    );
    if stream.write_all(request.as_bytes()).is_err() {
        return (0, String::new());
    }
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// Polls `check` until it returns `Some`, or fails the test after `secs` seconds.
pub fn wait_for<T>(what: &str, secs: u64, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}
