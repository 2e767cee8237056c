//! Prometheus metrics: per-model counters, gauges and histograms kept in atomics, and their
//! text exposition (format 0.0.4). Label values come from our own model names and fixed
//! strings, never from request paths, so a client cannot blow up the series count.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

/// Latency buckets in seconds: 100 µs to 10 s.
const LATENCY_BUCKETS: [f64; 16] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25,
    0.5, 1.0, 10.0,
];
const BATCH_BUCKETS: [f64; 9] = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0];

/// A histogram with fixed upper bounds.
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    counts: Vec<AtomicU64>,
    /// Sum of observations in millionths of the unit.
    sum_micros: AtomicU64,
    count: AtomicU64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Histogram {
        Histogram {
            bounds,
            counts: bounds.iter().map(|_| AtomicU64::new(0)).collect(),
            sum_micros: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }
    }

    pub fn observe(&self, value: f64) {
        if let Some(i) = self.bounds.iter().position(|b| value <= *b) {
            self.counts[i].fetch_add(1, Ordering::Relaxed);
        }
        self.sum_micros
            .fetch_add((value * 1e6).max(0.0) as u64, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    pub fn observe_duration(&self, d: Duration) {
        self.observe(d.as_secs_f64());
    }

    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// The upper bound of the bucket that holds the `q` quantile (`None` before any
    /// observation, or when it lies above the last bound).
    pub fn quantile_bound(&self, q: f64) -> Option<f64> {
        let total = self.count();
        if total == 0 {
            return None;
        }
        let rank = (q.clamp(0.0, 1.0) * total as f64).ceil().max(1.0) as u64;
        let mut cumulative = 0;
        for (bound, count) in self.bounds.iter().zip(&self.counts) {
            cumulative += count.load(Ordering::Relaxed);
            if cumulative >= rank {
                return Some(*bound);
            }
        }
        None
    }

    fn write(&self, out: &mut String, name: &str, labels: &str) {
        let mut cumulative = 0;
        for (bound, count) in self.bounds.iter().zip(&self.counts) {
            cumulative += count.load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{bound}\"}} {cumulative}");
        }
        let total = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {total}");
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum{{{labels}}} {sum}");
        let _ = writeln!(out, "{name}_count{{{labels}}} {total}");
    }
}

/// Metrics of one served model; they live as long as the model's name is served, across
/// reloads.
#[derive(Debug)]
pub struct ModelMetrics {
    /// (protocol, HTTP status) -> count.
    requests: Mutex<BTreeMap<(&'static str, u16), u64>>,
    pub request_seconds: Histogram,
    pub inference_seconds: Histogram,
    pub queue_seconds: Histogram,
    pub batch_size: Histogram,
    pub queue_depth: AtomicI64,
    /// Requests refused at the queue (full, or an expected wait over `max_queue_delay`).
    pub shed: AtomicU64,
    pub reloads_ok: AtomicU64,
    pub reloads_failed: AtomicU64,
}

impl Default for ModelMetrics {
    fn default() -> Self {
        ModelMetrics {
            requests: Mutex::new(BTreeMap::new()),
            request_seconds: Histogram::new(&LATENCY_BUCKETS),
            inference_seconds: Histogram::new(&LATENCY_BUCKETS),
            queue_seconds: Histogram::new(&LATENCY_BUCKETS),
            batch_size: Histogram::new(&BATCH_BUCKETS),
            queue_depth: AtomicI64::new(0),
            shed: AtomicU64::new(0),
            reloads_ok: AtomicU64::new(0),
            reloads_failed: AtomicU64::new(0),
        }
    }
}

impl ModelMetrics {
    pub fn count_request(&self, protocol: &'static str, status: u16) {
        let mut map = self.requests.lock().unwrap_or_else(|e| e.into_inner());
        *map.entry((protocol, status)).or_insert(0) += 1;
    }

    /// Requests answered with a status in `range` (e.g. `500..600`).
    pub fn requests_in(&self, range: std::ops::Range<u16>) -> u64 {
        let map = self.requests.lock().unwrap_or_else(|e| e.into_inner());
        map.iter()
            .filter(|((_, s), _)| range.contains(s))
            .map(|(_, n)| n)
            .sum()
    }

    pub fn requests(&self, status: u16) -> u64 {
        let map = self.requests.lock().unwrap_or_else(|e| e.into_inner());
        map.iter()
            .filter(|((_, s), _)| *s == status)
            .map(|(_, n)| n)
            .sum()
    }
}

/// Escapes a label value for the text format.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// One model's identity and metrics, for rendering.
pub struct Rendered<'a> {
    pub name: &'a str,
    pub version: &'a str,
    pub metrics: &'a ModelMetrics,
}

/// Counts of requests that matched no model (bad paths, unknown models), by status.
#[derive(Debug, Default)]
pub struct ServerMetrics {
    unrouted: Mutex<BTreeMap<u16, u64>>,
    /// Open and refused connections, counted by the socket side.
    pub connections: std::sync::Arc<aq_http_server::Connections>,
}

impl ServerMetrics {
    pub fn count_unrouted(&self, status: u16) {
        let mut map = self.unrouted.lock().unwrap_or_else(|e| e.into_inner());
        *map.entry(status).or_insert(0) += 1;
    }
}

/// Picks one histogram out of a model's metrics.
type HistogramOf = fn(&ModelMetrics) -> &Histogram;

/// Renders the exposition for `models` (and the server-wide series when `server` is given).
pub fn render(models: &[Rendered<'_>], server: Option<&ServerMetrics>) -> String {
    let mut out = String::new();
    let family = |out: &mut String, name: &str, kind: &str, help: &str| {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
    };
    family(
        &mut out,
        "aq_model_info",
        "gauge",
        "Served models and their versions (always 1).",
    );
    for m in models {
        let _ = writeln!(
            out,
            "aq_model_info{{model=\"{}\",version=\"{}\"}} 1",
            escape(m.name),
            escape(m.version)
        );
    }
    family(
        &mut out,
        "aq_requests_total",
        "counter",
        "Prediction requests by protocol and HTTP status.",
    );
    for m in models {
        let map = m.metrics.requests.lock().unwrap_or_else(|e| e.into_inner());
        for ((protocol, status), n) in map.iter() {
            let _ = writeln!(
                out,
                "aq_requests_total{{model=\"{}\",protocol=\"{protocol}\",code=\"{status}\"}} {n}",
                escape(m.name)
            );
        }
    }
    let histograms: [(&str, &str, HistogramOf); 4] = [
        (
            "aq_request_duration_seconds",
            "Time from a prediction request's arrival to its answer, for answered requests.",
            |m| &m.request_seconds,
        ),
        (
            "aq_inference_duration_seconds",
            "Time the engine spent on one batch.",
            |m| &m.inference_seconds,
        ),
        (
            "aq_queue_wait_seconds",
            "Time a request waited in the queue before its batch ran.",
            |m| &m.queue_seconds,
        ),
        ("aq_batch_size", "Rows per engine run.", |m| &m.batch_size),
    ];
    for (name, help, get) in histograms {
        family(&mut out, name, "histogram", help);
        for m in models {
            get(m.metrics).write(&mut out, name, &format!("model=\"{}\"", escape(m.name)));
        }
    }
    family(
        &mut out,
        "aq_queue_depth",
        "gauge",
        "Requests waiting for a worker.",
    );
    for m in models {
        let _ = writeln!(
            out,
            "aq_queue_depth{{model=\"{}\"}} {}",
            escape(m.name),
            m.metrics.queue_depth.load(Ordering::Relaxed).max(0)
        );
    }
    family(
        &mut out,
        "aq_requests_shed_total",
        "counter",
        "Requests refused with 503 at the queue: full, or expected to wait longer than max_queue_delay.",
    );
    for m in models {
        let _ = writeln!(
            out,
            "aq_requests_shed_total{{model=\"{}\"}} {}",
            escape(m.name),
            m.metrics.shed.load(Ordering::Relaxed)
        );
    }
    family(
        &mut out,
        "aq_model_reloads_total",
        "counter",
        "Hot reloads by result.",
    );
    for m in models {
        for (result, n) in [
            ("ok", &m.metrics.reloads_ok),
            ("failed", &m.metrics.reloads_failed),
        ] {
            let _ = writeln!(
                out,
                "aq_model_reloads_total{{model=\"{}\",result=\"{result}\"}} {}",
                escape(m.name),
                n.load(Ordering::Relaxed)
            );
        }
    }
    if let Some(server) = server {
        family(
            &mut out,
            "aq_unrouted_requests_total",
            "counter",
            "Requests that named no served model or route, by HTTP status.",
        );
        let map = server.unrouted.lock().unwrap_or_else(|e| e.into_inner());
        for (status, n) in map.iter() {
            let _ = writeln!(out, "aq_unrouted_requests_total{{code=\"{status}\"}} {n}");
        }
        family(
            &mut out,
            "aq_http_connections",
            "gauge",
            "HTTP connections open now.",
        );
        let _ = writeln!(out, "aq_http_connections {}", server.connections.open());
        family(
            &mut out,
            "aq_http_connections_refused_total",
            "counter",
            "Connections refused with 503 (or closed) because the server was at max_connections.",
        );
        let _ = writeln!(
            out,
            "aq_http_connections_refused_total {}",
            server.connections.refused()
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative() {
        let m = ModelMetrics::default();
        m.batch_size.observe(1.0);
        m.batch_size.observe(3.0);
        m.batch_size.observe(1000.0);
        m.count_request("v1", 200);
        let text = render(
            &[Rendered {
                name: "a\"b",
                version: "1.0.0",
                metrics: &m,
            }],
            None,
        );
        assert!(
            text.contains("aq_batch_size_bucket{model=\"a\\\"b\",le=\"1\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("aq_batch_size_bucket{model=\"a\\\"b\",le=\"4\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("aq_batch_size_bucket{model=\"a\\\"b\",le=\"+Inf\"} 3"),
            "{text}"
        );
        assert!(
            text.contains("aq_batch_size_sum{model=\"a\\\"b\"} 1004"),
            "{text}"
        );
        assert!(
            text.contains("aq_requests_total{model=\"a\\\"b\",protocol=\"v1\",code=\"200\"} 1")
        );
    }
}
