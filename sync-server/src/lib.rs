//! `aq-sync`, the optional central registry: signed modelpacks stored by chunk, uploaded and
//! downloaded over HTTPS with token roles. Fleet enrollment and rollouts over MQTT build on it.
//!
//! Layout of a data directory: `registry/` (an `aq-store` registry: redb index and content
//! store), `fleet.redb` (tokens), `trust.toml` (which keys may sign which packs), `tls/`
//! (generated CA and server certificate), `admin.token` (the first admin token, 0600).

/// Lets `?` turn redb's specific error types into an error enum's `Database(redb::Error)`
/// variant.
macro_rules! redb_errors_into {
    ($error:ident) => {
        impl From<redb::TransactionError> for $error {
            fn from(e: redb::TransactionError) -> Self {
                $error::Database(e.into())
            }
        }
        impl From<redb::TableError> for $error {
            fn from(e: redb::TableError) -> Self {
                $error::Database(e.into())
            }
        }
        impl From<redb::StorageError> for $error {
            fn from(e: redb::StorageError) -> Self {
                $error::Database(e.into())
            }
        }
        impl From<redb::CommitError> for $error {
            fn from(e: redb::CommitError) -> Self {
                $error::Database(e.into())
            }
        }
    };
}
pub(crate) use redb_errors_into;

pub mod api;
pub mod broker;
pub mod capability;
pub mod error;
pub mod fleet;
pub mod mqtt;
pub mod outbox;
pub mod routes;
pub mod server;
pub mod tls;
pub mod tokens;
pub mod work;

#[cfg(test)]
mod testing;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use aq_store::Registry;
use aq_sync_proto::Role;

pub use api::State;

/// How the server speaks TLS.
#[derive(Debug, Clone)]
pub enum TlsMode {
    /// Plain HTTP (behind a TLS-terminating proxy, or on loopback only).
    Off,
    /// A private CA and server certificate made on first start (`DATA/tls/`), for these names.
    Generated { names: Vec<String> },
    /// PEM files given by the operator.
    Files { cert: PathBuf, key: PathBuf },
}

/// Which MQTT broker the fleet uses.
#[derive(Debug, Clone)]
pub enum MqttMode {
    /// The broker built into this process, listening here.
    Embedded { listen: SocketAddr },
    /// An external broker (`mqtt://host:port`), e.g. mosquitto.
    External { url: String },
}

#[derive(Debug, Clone)]
pub struct ServerOptions {
    pub data_dir: PathBuf,
    pub addr: SocketAddr,
    pub tls: TlsMode,
    pub allow_unsigned: bool,
    pub max_body: usize,
    pub drain: Duration,
    /// Keep chunks uploaded ahead of their manifest this long before `gc` may take them.
    pub upload_grace: Duration,
    pub mqtt: MqttMode,
    /// The MQTT URL devices are told to use [default: the broker's own address].
    pub mqtt_advertise: Option<String>,
    pub topic_prefix: String,
    /// Threads of the work pool (`work`): store and fleet work, one per core by default.
    pub work_threads: usize,
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    #[error("failed to open the registry in {path}")]
    Registry {
        path: PathBuf,
        #[source]
        source: aq_store::StoreError,
    },
    #[error("failed to start the work pool's threads")]
    Work(#[source] std::io::Error),
    #[error("failed to open the fleet database {path}")]
    Fleet {
        path: PathBuf,
        #[source]
        source: redb::Error,
    },
    #[error(transparent)]
    Tokens(#[from] tokens::TokenError),
    #[error(transparent)]
    FleetStore(#[from] fleet::FleetError),
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error("failed to write {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the server key {path} is not valid")]
    Key {
        path: PathBuf,
        #[source]
        source: aq_pack::keys::KeyError,
    },
    #[error("invalid MQTT settings: {0}")]
    Mqtt(String),
    #[error(transparent)]
    Broker(#[from] broker::BrokerError),
    #[error("failed to listen on {addr}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// Opens the fleet database of a data directory.
pub fn open_fleet(data_dir: &Path) -> Result<redb::Database, StartError> {
    let path = data_dir.join("fleet.redb");
    std::fs::create_dir_all(data_dir).map_err(|source| StartError::Write {
        path: data_dir.to_owned(),
        source,
    })?;
    redb::Database::create(&path).map_err(|e| StartError::Fleet {
        path,
        source: e.into(),
    })
}

/// A server with its stores open and its socket bound.
pub struct Started {
    pub state: Arc<State>,
    pub listener: tokio::net::TcpListener,
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    /// The CA file clients should trust, when the identity was generated.
    pub ca_file: Option<PathBuf>,
    /// Where the first admin token was written, when this start made it.
    pub admin_token_file: Option<PathBuf>,
    /// The broker URL the server (and, unless advertised otherwise, devices) use.
    pub mqtt_url: String,
    /// The embedded broker, when there is one (it runs until the process ends).
    pub broker: Option<broker::Embedded>,
    mqtt: Option<(
        rumqttc::MqttOptions,
        tokio::sync::mpsc::Receiver<fleet::Publish>,
    )>,
}

impl Started {
    /// Starts the MQTT side (publisher, reports, rollout tick) in the background.
    pub fn spawn_fleet(&mut self) {
        if let Some((options, outbox)) = self.mqtt.take() {
            tokio::spawn(mqtt::run(self.state.clone(), options, outbox));
        }
    }
}

/// Loads the key desired states are signed with, making it on first start.
fn server_key(data_dir: &Path) -> Result<aq_pack::keys::SecretKey, StartError> {
    let path = data_dir.join("server.key");
    match std::fs::read_to_string(&path) {
        Ok(text) => aq_pack::keys::SecretKey::from_file_text(&text)
            .map_err(|source| StartError::Key { path, source }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut seed = [0u8; 32];
            getrandom::fill(&mut seed).map_err(|e| StartError::Write {
                path: path.clone(),
                source: std::io::Error::other(e.to_string()),
            })?;
            let key = aq_pack::keys::SecretKey::from_seed(seed);
            tls::write_private(&path, key.to_file_text().as_bytes())
                .map_err(|source| StartError::Write { path, source })?;
            Ok(key)
        }
        Err(source) => Err(StartError::Write { path, source }),
    }
}

/// Opens everything, makes the first admin token if there is no token, and binds.
pub async fn start(options: &ServerOptions) -> Result<Started, StartError> {
    let registry_dir = options.data_dir.join("registry");
    let registry = Registry::open(&registry_dir).map_err(|source| StartError::Registry {
        path: registry_dir.clone(),
        source,
    })?;
    // Chunks uploaded for pushes that never finished, and chunks of deleted packs.
    match registry.gc_with_grace(options.upload_grace, SystemTime::now()) {
        Ok(r) if r.chunks_removed + r.orphan_files_removed > 0 => {
            tracing::info!(
                chunks = r.chunks_removed,
                bytes = r.bytes_freed,
                "gc at start"
            );
        }
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "gc at start failed"),
    }
    let fleet = open_fleet(&options.data_dir)?;
    fleet::Fleet::init(&fleet)?;
    let admin_token_file = bootstrap_admin(&fleet, &options.data_dir)?;
    let (tls, ca_file) = match &options.tls {
        TlsMode::Off => (None, None),
        TlsMode::Generated { names } => {
            let paths = tls::ensure_generated(&options.data_dir, names)?;
            let config = tls::server_config(&paths.cert, &paths.key)?;
            (
                Some(tokio_rustls::TlsAcceptor::from(config)),
                Some(paths.ca),
            )
        }
        TlsMode::Files { cert, key } => {
            let config = tls::server_config(cert, key)?;
            (Some(tokio_rustls::TlsAcceptor::from(config)), None)
        }
    };
    let listener = tokio::net::TcpListener::bind(options.addr)
        .await
        .map_err(|source| StartError::Bind {
            addr: options.addr,
            source,
        })?;
    let fleet_key = server_key(&options.data_dir)?;
    let (broker, mqtt_url) = match &options.mqtt {
        MqttMode::Embedded { listen } => {
            let embedded = broker::Embedded::start(*listen, &options.topic_prefix)?;
            let url = format!("mqtt://{}", embedded.addr());
            (Some(embedded), url)
        }
        MqttMode::External { url } => {
            aq_sync_proto::fleet::parse_mqtt_url(url).map_err(StartError::Mqtt)?;
            (None, url.clone())
        }
    };
    let mqtt_options = mqtt::options("aq-sync", &mqtt_url).map_err(StartError::Mqtt)?;
    let (publish, outbox) = outbox::Outbox::new(outbox::CAPACITY);
    let state = Arc::new(State {
        registry: Arc::new(registry),
        fleet: Arc::new(fleet),
        trust_path: options.data_dir.join("trust.toml"),
        allow_unsigned: options.allow_unsigned,
        max_body: options.max_body,
        fleet_key: Arc::new(fleet_key),
        topic_prefix: options.topic_prefix.clone(),
        mqtt_url: options
            .mqtt_advertise
            .clone()
            .unwrap_or_else(|| mqtt_url.clone()),
        publish,
        work: work::WorkPool::new(options.work_threads).map_err(StartError::Work)?,
    });
    Ok(Started {
        state,
        listener,
        tls,
        ca_file,
        admin_token_file,
        mqtt_url,
        broker,
        mqtt: Some((mqtt_options, outbox)),
    })
}

/// On a server with no token at all, makes an admin token and writes it to
/// `DATA/admin.token` (mode 0600), so the operator can make the others.
fn bootstrap_admin(fleet: &redb::Database, data_dir: &Path) -> Result<Option<PathBuf>, StartError> {
    tokens::Tokens::init(fleet)?;
    let tokens = tokens::Tokens::new(fleet)?;
    if !tokens.is_empty()? {
        return Ok(None);
    }
    let (_, secret) = tokens.create("admin", Role::Admin, SystemTime::now())?;
    let path = data_dir.join("admin.token");
    write_secret(&path, &secret).map_err(|source| StartError::Write {
        path: path.clone(),
        source,
    })?;
    Ok(Some(path))
}

fn write_secret(path: &Path, secret: &str) -> std::io::Result<()> {
    tls::write_private(path, format!("{secret}\n").as_bytes())
}
