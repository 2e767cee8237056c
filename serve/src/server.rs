//! The socket side: binds, accepts HTTP/1.1 connections (keep-alive), hands each request to
//! [`crate::api::handle`], and shuts down gracefully: stop accepting, mark not-ready, let
//! in-flight requests finish (up to the drain timeout), then stop.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
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
        let state = Arc::new(State::new(settings.clone()));
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

    /// Serves until `shutdown` completes, then drains.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let Server { state, listener } = self;
        let graceful = GracefulShutdown::new();
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    let (stream, peer) = match accepted {
                        Ok(pair) => pair,
                        Err(e) => {
                            // Out of file descriptors and the like: back off rather than spin.
                            tracing::warn!(error = %e, "accept failed");
                            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                            continue;
                        }
                    };
                    let _ = stream.set_nodelay(true);
                    let state = state.clone();
                    let service = service_fn(move |request| {
                        let state = state.clone();
                        async move { Ok::<_, Infallible>(api::handle(&state, request).await) }
                    });
                    let connection = http1::Builder::new()
                        .keep_alive(true)
                        .max_buf_size(READ_BUFFER)
                        .serve_connection(TokioIo::new(stream), service);
                    let watched = graceful.watch(connection);
                    tokio::spawn(async move {
                        if let Err(e) = watched.await {
                            tracing::debug!(%peer, error = %e, "connection ended with an error");
                        }
                    });
                }
                () = &mut shutdown => break,
            }
        }
        drop(listener);
        state.draining.store(true, Ordering::Relaxed);
        tracing::info!("shutting down: draining in-flight requests");
        let drain_timeout = state.settings.drain_timeout;
        tokio::select! {
            () = graceful.shutdown() => tracing::info!("all connections closed"),
            () = tokio::time::sleep(drain_timeout) => {
                tracing::warn!(timeout = ?drain_timeout, "drain timeout passed; closing with requests in flight");
            }
        }
    }
}

/// Completes on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut terminate) => {
                tokio::select! {
                    _ = interrupt => {}
                    _ = terminate.recv() => {}
                }
            }
            Err(_) => {
                let _ = interrupt.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = interrupt.await;
    }
}
