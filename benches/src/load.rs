//! A closed-loop HTTP/1.1 load generator for the overload benchmark: N keep-alive
//! connections, each sending one request after another until the time is up, with every
//! answer's status, latency and `Retry-After` recorded (wrk gives one latency for all
//! statuses; overload needs the admitted requests' latency apart from the refused ones').

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};

/// One request, sent again and again.
#[derive(Clone)]
pub struct Request {
    pub method: hyper::Method,
    pub path: String,
    pub headers: Vec<(&'static str, String)>,
    pub body: Bytes,
}

/// What one load phase saw.
#[derive(Debug, Default)]
pub struct Outcome {
    pub elapsed: Duration,
    /// Latencies of 2xx answers, microseconds.
    pub ok_us: Vec<u64>,
    /// 503 and 429 answers, and how many of them said `Retry-After`.
    pub shed: u64,
    pub shed_with_retry_after: u64,
    /// Latencies of the refusals, microseconds.
    pub shed_us: Vec<u64>,
    /// Any other status.
    pub other: BTreeMap<u16, u64>,
    /// Connections that failed (refused, reset, closed mid-answer).
    pub errors: u64,
}

impl Outcome {
    pub fn ok_rps(&self) -> f64 {
        self.ok_us.len() as f64 / self.elapsed.as_secs_f64()
    }

    pub fn shed_rps(&self) -> f64 {
        self.shed as f64 / self.elapsed.as_secs_f64()
    }

    /// The `p`th percentile (0 to 100) of `us`, in milliseconds.
    pub fn percentile_ms(us: &[u64], p: f64) -> f64 {
        if us.is_empty() {
            return f64::NAN;
        }
        let mut v = us.to_vec();
        v.sort_unstable();
        let i = ((p / 100.0) * (v.len() - 1) as f64).round() as usize;
        v[i.min(v.len() - 1)] as f64 / 1000.0
    }

    fn merge(&mut self, other: Outcome) {
        self.ok_us.extend(other.ok_us);
        self.shed += other.shed;
        self.shed_with_retry_after += other.shed_with_retry_after;
        self.shed_us.extend(other.shed_us);
        for (s, n) in other.other {
            *self.other.entry(s).or_default() += n;
        }
        self.errors += other.errors;
    }
}

/// Drives `addr` with `connections` clients for `duration`, on a one-thread runtime (the
/// client's CPU use stays bounded and comparable between runs).
pub fn run(addr: SocketAddr, request: &Request, connections: usize, duration: Duration) -> Outcome {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let total = Arc::new(Mutex::new(Outcome::default()));
    let started = Instant::now();
    let deadline = started + duration;
    runtime.block_on(async {
        let mut tasks = Vec::new();
        for _ in 0..connections {
            let request = request.clone();
            let total = total.clone();
            tasks.push(tokio::spawn(async move {
                let mine = client(addr, &request, deadline).await;
                total.lock().unwrap_or_else(|e| e.into_inner()).merge(mine);
            }));
        }
        for t in tasks {
            let _ = t.await;
        }
    });
    let mut out = std::mem::take(&mut *total.lock().unwrap_or_else(|e| e.into_inner()));
    out.elapsed = started.elapsed();
    out
}

async fn client(addr: SocketAddr, request: &Request, deadline: Instant) -> Outcome {
    let mut out = Outcome::default();
    'connect: while Instant::now() < deadline {
        let Ok(tcp) = tokio::net::TcpStream::connect(addr).await else {
            out.errors += 1;
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let Ok((mut sender, conn)) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp)).await
        else {
            out.errors += 1;
            continue;
        };
        tokio::spawn(conn);
        while Instant::now() < deadline {
            let mut builder = hyper::Request::builder()
                .method(request.method.clone())
                .uri(&request.path)
                .header("host", addr.to_string());
            for (k, v) in &request.headers {
                builder = builder.header(*k, v);
            }
            let Ok(req) = builder.body(Full::new(request.body.clone())) else {
                out.errors += 1;
                return out;
            };
            let sent = Instant::now();
            let Ok(response) = sender.send_request(req).await else {
                out.errors += 1;
                continue 'connect;
            };
            let status = response.status().as_u16();
            let retry_after = response.headers().contains_key("retry-after");
            let closes = response
                .headers()
                .get("connection")
                .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"close"));
            if response.into_body().collect().await.is_err() {
                out.errors += 1;
                continue 'connect;
            }
            let us = sent.elapsed().as_micros() as u64;
            match status {
                200..=299 => out.ok_us.push(us),
                429 | 503 => {
                    out.shed += 1;
                    out.shed_us.push(us);
                    if retry_after {
                        out.shed_with_retry_after += 1;
                    }
                }
                s => *out.other.entry(s).or_default() += 1,
            }
            if closes {
                continue 'connect;
            }
        }
    }
    out
}

/// Samples a process's resident set (VmRSS) every 50 ms until `stop` is set; the peak in MiB.
pub fn rss_sampler(
    pid: u32,
) -> (
    Arc<std::sync::atomic::AtomicBool>,
    std::thread::JoinHandle<f64>,
) {
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = stop.clone();
    let handle = std::thread::spawn(move || {
        let mut peak: f64 = 0.0;
        while !flag.load(std::sync::atomic::Ordering::Relaxed) {
            peak = peak.max(rss_mib(pid));
            std::thread::sleep(Duration::from_millis(50));
        }
        peak.max(rss_mib(pid))
    });
    (stop, handle)
}

/// A process's VmRSS in MiB (0 when it cannot be read).
pub fn rss_mib(pid: u32) -> f64 {
    let path = Path::new("/proc").join(pid.to_string()).join("status");
    std::fs::read_to_string(path)
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<f64>().ok())
        })
        .unwrap_or(0.0)
        / 1024.0
}
