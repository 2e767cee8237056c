//! The socket side: loads the models, binds, and serves through `aq-http-server` (HTTP/1.1
//! with keep-alive, a connection cap, the header-read timeout), handing each request to
//! [`crate::api::handle`]; on shutdown: stop accepting, mark not-ready, let in-flight
//! requests finish (up to the drain timeout), then stop.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use aq_http_server::Limits;
use tokio::net::TcpListener;

use crate::api::{self, State};
use crate::config::ServerSettings;
use crate::models::{ModelSource, ServeModelError};

/// The most a connection reads from the socket at once: large tensor bodies arrive in few
/// reads instead of hyper's default of growing from 8 KiB.
const READ_BUFFER: usize = 1 << 20;

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(transparent)]
    Model(#[from] ServeModelError),
    #[error("failed to listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to start the thread that starts model workers: {0}")]
    Spawner(#[source] std::io::Error),
}

/// A server with its models loaded and its socket bound, not yet accepting.
pub struct Server {
    state: Arc<State>,
    listener: TcpListener,
}

/// A handle for changing a running server's models (hot reload).
#[derive(Clone)]
pub struct ServerHandle {
    state: Arc<State>,
}

impl ServerHandle {
    /// Loads `source` and swaps it in for the served model of the same name; on error the old
    /// model keeps serving.
    pub async fn reload(&self, source: &ModelSource) -> Result<(), ServeModelError> {
        self.state.models.reload(source).await
    }

    /// Serves `source`, replacing the model of the same name if there is one.
    pub async fn put(&self, source: &ModelSource) -> Result<(), ServeModelError> {
        self.state.models.put(source).await
    }

    /// Stops serving `name`.
    pub fn remove(&self, name: &str) -> bool {
        self.state.models.remove(name)
    }

    /// The names being served.
    pub fn served(&self) -> Vec<String> {
        self.state
            .models
            .all()
            .iter()
            .map(|s| s.name.clone())
            .collect()
    }

    /// Request counts and latency over every served model since start.
    pub fn health(&self) -> ServingHealth {
        let mut h = ServingHealth::default();
        let mut p95: Option<f64> = None;
        for slot in self.state.models.all() {
            let m = &slot.metrics;
            h.requests += m.request_seconds.count();
            h.errors += m.requests_in(500..600);
            h.load_errors += m.reloads_failed.load(Ordering::Relaxed);
            if let Some(q) = m.request_seconds.quantile_bound(0.95) {
                p95 = Some(p95.map_or(q, |p| p.max(q)));
            }
        }
        h.p95_seconds = p95;
        h
    }
}

/// What [`ServerHandle::health`] reports.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ServingHealth {
    pub requests: u64,
    /// Requests answered 5xx.
    pub errors: u64,
    /// Upper bound of the latency bucket holding the 95th percentile, worst model.
    pub p95_seconds: Option<f64>,
    pub load_errors: u64,
}

impl Server {
    /// Loads every model, then binds. Must run inside a tokio runtime. With no sources the
    /// server starts empty (the agent adds models as its desired state arrives).
    pub async fn start(
        settings: ServerSettings,
        sources: &[ModelSource],
    ) -> Result<Server, ServerError> {
        let state = Arc::new(State::new(settings.clone()).map_err(ServerError::Spawner)?);
        for source in sources {
            state.models.add(source).await?;
        }
        let listener =
            TcpListener::bind(settings.addr)
                .await
                .map_err(|source| ServerError::Bind {
                    addr: settings.addr,
                    source,
                })?;
        Ok(Server { state, listener })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    pub fn handle(&self) -> ServerHandle {
        ServerHandle {
            state: self.state.clone(),
        }
    }

    /// Serves until `shutdown` completes, then drains (the shared socket side,
    /// `aq-http-server`: connection cap, header-read timeout, graceful drain).
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let Server { state, listener } = self;
        let limits = Limits {
            max_connections: state.settings.max_connections,
            header_read_timeout: state.settings.header_read_timeout,
            max_buf_size: Some(READ_BUFFER),
            // Each model's queue sheds by expected wait (`max_queue_delay`); the connection
            // cap bounds the rest.
            max_in_flight: None,
        };
        let drain = state.settings.drain_timeout;
        let handler_state = state.clone();
        let handle = move |request| {
            let state = handler_state.clone();
            async move { api::handle(&state, request).await }
        };
        let draining = {
            let state = state.clone();
            move || state.draining.store(true, Ordering::Relaxed)
        };
        aq_http_server::serve(
            listener,
            limits,
            state.metrics.connections.clone(),
            aq_http_server::plain,
            handle,
            shutdown,
            draining,
            drain,
        )
        .await;
    }
}

/// Completes on SIGINT or SIGTERM.
pub use aq_http_server::shutdown_signal;
