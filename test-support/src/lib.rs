//! Helpers shared by the tests and benchmarks of every crate (a dev-dependency only): where
//! the repository's fixtures and Python venv are, one seeded generator, a free loopback port,
//! polling until a condition holds, and a plain HTTP/1.1 client over loopback.
// Test code: a failed setup is a failed test, so panicking with the reason is the point.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The repository's root directory.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("test-support sits in the repository root")
        .to_owned()
}

/// A fetched or committed fixture model, `fixtures/models/NAME`.
pub fn fixture(name: &str) -> PathBuf {
    let p = repo().join("fixtures/models").join(name);
    assert!(
        p.exists(),
        "missing fixture {}: run fixtures/fetch.sh",
        p.display()
    );
    p
}

/// Runs a setup script of `tests/python/` (which prints the interpreter it made) and returns
/// that interpreter.
pub fn setup_script(script: &str) -> PathBuf {
    let path = repo().join("tests/python").join(script);
    let out = Command::new("bash").arg(&path).output().unwrap();
    assert!(
        out.status.success(),
        "tests/python/{script} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

/// The Python with the reference runtimes: `$AQ_PYTHON`, else the venv `tests/python/setup.sh`
/// makes (once per machine).
pub fn python() -> PathBuf {
    match std::env::var_os("AQ_PYTHON") {
        Some(p) => PathBuf::from(p),
        None => setup_script("setup.sh"),
    }
}

/// A script of `tests/python/`.
pub fn python_script(name: &str) -> PathBuf {
    repo().join("tests/python").join(name)
}

/// Marsaglia's xorshift64: deterministic from its seed, for test data and randomised test
/// schedules that can be replayed from the seed a failure prints.
#[derive(Debug, Clone)]
pub struct XorShift(u64);

impl XorShift {
    /// Any seed (zero is made non-zero).
    pub fn new(seed: u64) -> XorShift {
        XorShift(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    /// A seed from the clock, for a schedule that differs per run (print it).
    pub fn seed_from_clock() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1)
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// Uniform in `0..n` (`n` > 0; the bias of a modulo is irrelevant here).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }

    /// Uniform in [-1, 1).
    pub fn signed_unit(&mut self) -> f32 {
        self.unit() * 2.0 - 1.0
    }

    /// `len` bytes that zstd cannot shrink.
    pub fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| (self.next_u64() >> 24) as u8).collect()
    }
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Polls `check` every 100 ms until it returns `Some`, or fails the test after `secs` seconds.
pub fn wait_for<T>(what: &str, secs: u64, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A server process that printed its start-up line, `listening on URL ...`.
pub struct Listening {
    pub child: Child,
    /// The URL of the line (`http://127.0.0.1:PORT`, `https://...`).
    pub url: String,
    /// The whole line, for what else it says.
    pub line: String,
}

impl Listening {
    /// The URL's `HOST:PORT`.
    pub fn addr(&self) -> &str {
        self.url
            .rsplit_once("//")
            .map_or(self.url.as_str(), |(_, a)| a)
    }
}

/// Starts `command` with stdout piped (stderr inherited) and reads its first line, which must
/// be `listening on URL ...` (what `aq serve`, `aq agent run` and `aq-sync serve` print once
/// they accept connections).
pub fn spawn_listening(command: &mut Command) -> Listening {
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {command:?}: {e}"));
    let mut line = String::new();
    if let Some(stdout) = child.stdout.take() {
        let _ = BufReader::new(stdout).read_line(&mut line);
    }
    let url = line
        .strip_prefix("listening on ")
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("{command:?} did not start: first line {line:?}"))
        .to_owned();
    Listening { child, url, line }
}

/// A response read by [`http`]: status, header lines and body.
#[derive(Debug, Default)]
pub struct RawResponse {
    /// 0 when nothing (or no status line) came back.
    pub status: u16,
    pub head: String,
    pub body: Vec<u8>,
}

impl RawResponse {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The value of header `name` (case-insensitive), if present.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    }

    /// Every header line as (name, value).
    pub fn headers(&self) -> impl Iterator<Item = (&str, &str)> {
        self.head
            .lines()
            .skip(1)
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim(), v.trim()))
    }
}

/// One plain HTTP/1.1 request over loopback with `Connection: close` and the body's
/// `Content-Length`, plus `headers`. Unreachable servers and cut connections give status 0, so
/// callers can poll with it; a server that answers before reading the whole body (413) is
/// read all the same.
pub fn http(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> RawResponse {
    let Ok(mut stream) = std::net::TcpStream::connect(addr) else {
        return RawResponse::default();
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(60)));
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    if stream.write_all(head.as_bytes()).is_err() {
        return RawResponse::default();
    }
    // A reset while the body is written is fine: the answer may already be there.
    let _ = stream.write_all(body);
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    let Some(split) = response.windows(4).position(|w| w == b"\r\n\r\n") else {
        return RawResponse::default();
    };
    let head = String::from_utf8_lossy(&response[..split]).into_owned();
    let body = response[split + 4..].to_vec();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    RawResponse { status, head, body }
}

/// A JSON POST with [`http`]; returns status and body text.
pub fn http_post(addr: &str, path: &str, json: &str) -> (u16, String) {
    let r = http(
        addr,
        "POST",
        path,
        &[("Content-Type", "application/json")],
        json.as_bytes(),
    );
    (r.status, r.text())
}

/// The name and nice value of every thread of process `pid` (Linux: `/proc/PID/task`), the
/// main thread first. Names are the kernel's, cut at 15 bytes.
#[cfg(target_os = "linux")]
pub fn thread_priorities(pid: u32) -> Vec<(String, i32)> {
    let mut threads = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let task = task.unwrap();
        let main = task.file_name() == *pid.to_string();
        let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
            continue; // the thread ended
        };
        // PID (COMM) STATE ... : the name may hold spaces and parentheses, so split at the
        // last ')'. Nice is field 19, the 17th after the name.
        let (head, rest) = stat.rsplit_once(')').unwrap();
        let name = head.split_once('(').unwrap().1.to_owned();
        let nice = rest.split_whitespace().nth(16).unwrap().parse().unwrap();
        if main {
            threads.insert(0, (name, nice));
        } else {
            threads.push((name, nice));
        }
    }
    threads
}

/// The nice values of the threads whose names start with `prefix`.
pub fn nices_of(threads: &[(String, i32)], prefix: &str) -> Vec<i32> {
    threads
        .iter()
        .filter(|(name, _)| name.starts_with(prefix))
        .map(|(_, nice)| *nice)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xorshift_replays_from_its_seed_and_spreads() {
        let a: Vec<u64> = {
            let mut r = XorShift::new(42);
            (0..100).map(|_| r.next_u64()).collect()
        };
        let mut r = XorShift::new(42);
        assert!(a.iter().all(|v| *v == r.next_u64()));
        assert_ne!(a, {
            let mut r = XorShift::new(43);
            (0..100).map(|_| r.next_u64()).collect::<Vec<_>>()
        });
        let mut r = XorShift::new(0);
        let u: Vec<f32> = (0..1000).map(|_| r.signed_unit()).collect();
        assert!(u.iter().all(|v| (-1.0..1.0).contains(v)));
        assert!(u.iter().any(|v| *v < -0.5) && u.iter().any(|v| *v > 0.5));
        assert!((0..1000).all(|_| r.below(7) < 7));
    }

    #[test]
    fn http_reads_status_headers_and_body_and_gives_zero_when_unreachable() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let server = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            // The client may write the head and the body separately: read up to the end
            // of the head, then as many bytes as its Content-Length says.
            let mut got = Vec::new();
            let mut buf = [0u8; 1024];
            let complete = |got: &[u8]| {
                let text = String::from_utf8_lossy(got);
                let Some(end) = text.find("\r\n\r\n") else {
                    return false;
                };
                let length = text[..end]
                    .lines()
                    .find_map(|l| l.strip_prefix("Content-Length: "))
                    .and_then(|v| v.trim().parse::<usize>().ok())
                    .unwrap_or(0);
                got.len() >= end + 4 + length
            };
            while !complete(&got) {
                let n = s.read(&mut buf).unwrap();
                if n == 0 {
                    break;
                }
                got.extend_from_slice(&buf[..n]);
            }
            let request = String::from_utf8_lossy(&got).into_owned();
            s.write_all(b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\n\r\n{\"x\":1}")
                .unwrap();
            request
        });
        let r = http(
            &addr,
            "POST",
            "/p",
            &[("Content-Type", "application/json")],
            b"{}",
        );
        let request = server.join().unwrap();
        assert!(request.starts_with("POST /p HTTP/1.1\r\n"), "{request}");
        assert!(
            request.contains("\r\nContent-Type: application/json\r\n"),
            "{request}"
        );
        assert!(request.ends_with("\r\n\r\n{}"), "{request}");
        assert_eq!(r.status, 503);
        assert_eq!(r.header("retry-after"), Some("1"));
        assert_eq!(r.text(), "{\"x\":1}");
        let port = free_port();
        assert_eq!(
            http(&format!("127.0.0.1:{port}"), "GET", "/", &[], b"").status,
            0
        );
    }
}
