//! The socket side that `aq serve` and `aq-sync` share: accept connections up to a cap
//! (over it, a 503 with `Retry-After`, then close), run an optional handshake (TLS, given by
//! the caller), serve HTTP/1.1 with keep-alive and hyper's header-read timeout (which needs
//! hyper's timer: without one the timeout never applies and a slow client holds a connection
//! for ever), and on shutdown stop accepting and let in-flight requests finish, up to a
//! drain timeout.
//!
//! Requests in flight can be capped; a refused request's body is read and dropped (up to a
//! bound, [`discard`]) before its 503 goes out, so the client reads the 503 instead of a reset
//! in the middle of its upload. [`overload`] tells a standing overload from a burst, for
//! servers with a queue of their own; [`priority`] runs the HTTP threads below the threads that
//! do the work.
//!
//! No routes and no TLS of its own: the caller passes the request handler and the handshake.

pub mod overload;
pub mod priority;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

/// What one server allows its clients.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Connections served at once; one more gets a 503 and is closed.
    pub max_connections: usize,
    /// How long a client may take to send a request's headers (and, on a kept-alive
    /// connection, to start the next request) before the connection is closed.
    pub header_read_timeout: Duration,
    /// The most a connection reads from the socket at once (hyper's default when `None`).
    pub max_buf_size: Option<usize>,
    /// Requests handled at once over all connections; one more is answered 503 with
    /// `Retry-After` at once, without reaching the handler (`None`: no limit here).
    pub max_in_flight: Option<usize>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 1024,
            header_read_timeout: Duration::from_secs(30),
            max_buf_size: None,
            max_in_flight: None,
        }
    }
}

/// Counters a server can export: connections open now and refused so far.
#[derive(Debug, Default)]
pub struct Connections {
    open: AtomicU64,
    refused: AtomicU64,
    shed: AtomicU64,
}

impl Connections {
    pub fn open(&self) -> u64 {
        self.open.load(Ordering::Relaxed)
    }

    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// Requests answered 503 because `max_in_flight` were being handled.
    pub fn shed(&self) -> u64 {
        self.shed.load(Ordering::Relaxed)
    }
}

/// Decrements the open count when a served connection ends, however it ends.
struct Open(Arc<Connections>);

impl Drop for Open {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The cap on requests in flight.
struct InFlight {
    limit: usize,
    count: AtomicUsize,
}

/// One admitted request; gives its place back when dropped.
struct Slot(Arc<InFlight>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.count.fetch_sub(1, Ordering::AcqRel);
    }
}

impl InFlight {
    /// A place for one more request, or the limit that refuses it.
    fn admit(self: &Arc<Self>) -> Result<Slot, usize> {
        let cap = self.limit;
        self.count
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < cap).then_some(n + 1)
            })
            .map(|_| Slot(self.clone()))
            .map_err(|_| cap)
    }
}

/// The most of a refused request's body [`discard`] reads before giving up on it.
pub const DISCARD_BYTES: u64 = 8 << 20;

/// How long [`discard`] reads a refused request's body at most.
pub const DISCARD_TIME: Duration = Duration::from_secs(2);

/// Reads and drops a refused request's body (at most [`DISCARD_BYTES`], for at most
/// [`DISCARD_TIME`]) before the refusal is sent; true when it was read to its end.
///
/// An answer sent while the request's body is still arriving makes hyper close the
/// connection with the rest unread; the kernel then resets it, and a client still writing
/// sees the reset, not the answer. Reading the body first (nginx's lingering close does the
/// same after the answer) lets the client read a refusal and act on its `Retry-After`. Costs a
/// copy of the bytes, not their parsing or the work they ask for. A client that sent
/// `Expect: 100-continue` has not sent its body and never will once refused: nothing is
/// read, so the refusal costs it and the server no upload at all.
pub async fn discard<B>(request: Request<B>) -> bool
where
    B: hyper::body::Body,
{
    use http_body_util::BodyExt;
    let expects_continue = request
        .headers()
        .get(hyper::header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    if expects_continue {
        return true;
    }
    let read = async move {
        let mut body = std::pin::pin!(request.into_body());
        let mut seen = 0u64;
        while let Some(frame) = body.frame().await {
            let Ok(frame) = frame else {
                return false;
            };
            if let Some(data) = frame.data_ref() {
                seen += bytes::Buf::remaining(data) as u64;
                if seen > DISCARD_BYTES {
                    return false;
                }
            }
        }
        true
    };
    tokio::time::timeout(DISCARD_TIME, read)
        .await
        .unwrap_or(false)
}

/// The answer to a connection over the cap.
fn overloaded(limit: usize) -> Response<Full<Bytes>> {
    let mut response = refusal(&format!(
        "the server is serving its limit of {limit} connections; retry later"
    ));
    response.headers_mut().insert(
        hyper::header::CONNECTION,
        hyper::header::HeaderValue::from_static("close"),
    );
    response
}

/// The answer to a request over `max_in_flight` (the connection stays open).
fn busy(limit: usize) -> Response<Full<Bytes>> {
    refusal(&format!(
        "the server is handling its limit of {limit} requests; retry later"
    ))
}

/// A 503 with a JSON error body and `Retry-After: 1`.
fn refusal(message: &str) -> Response<Full<Bytes>> {
    let body = format!("{{\"error\":{{\"code\":\"overloaded\",\"message\":\"{message}\"}}}}");
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
    let headers = response.headers_mut();
    headers.insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    headers.insert(
        hyper::header::RETRY_AFTER,
        hyper::header::HeaderValue::from_static("1"),
    );
    response
}

/// Serves `listener` until `shutdown` completes; then stops accepting, calls `draining`, and
/// waits for in-flight requests (at most `drain`).
///
/// `handshake` turns an accepted TCP stream into the stream HTTP runs on (TLS, or the stream
/// itself), or `None` to drop it; it should bound its own time. `handle` answers one request.
#[allow(clippy::too_many_arguments)]
pub async fn serve<H, HF, Io, F, FF>(
    listener: TcpListener,
    limits: Limits,
    connections: Arc<Connections>,
    handshake: H,
    handle: F,
    shutdown: impl Future<Output = ()>,
    draining: impl FnOnce(),
    drain: Duration,
) where
    H: Fn(TcpStream, SocketAddr) -> HF + Clone + Send + Sync + 'static,
    HF: Future<Output = Option<Io>> + Send + 'static,
    Io: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    F: Fn(Request<Incoming>) -> FF + Clone + Send + Sync + 'static,
    FF: Future<Output = Response<Full<Bytes>>> + Send + 'static,
{
    let max = limits.max_connections.max(1);
    let permits = Arc::new(Semaphore::new(max));
    // Connections over the cap are answered (503) by at most this many tasks at once; past
    // that they are closed unanswered.
    let refusals = Arc::new(Semaphore::new(max.div_ceil(8).max(1)));
    let in_flight = limits.max_in_flight.map(|n| {
        Arc::new(InFlight {
            limit: n.max(1),
            count: AtomicUsize::new(0),
        })
    });
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
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let mut builder = http1::Builder::new();
                builder
                    .timer(TokioTimer::new())
                    .header_read_timeout(limits.header_read_timeout)
                    .keep_alive(true);
                if let Some(size) = limits.max_buf_size {
                    builder.max_buf_size(size);
                }
                let watcher = graceful.watcher();
                let handshake = handshake.clone();
                match permits.clone().try_acquire_owned() {
                    Ok(permit) => {
                        connections.open.fetch_add(1, Ordering::Relaxed);
                        let open = Open(connections.clone());
                        let handle = handle.clone();
                        let in_flight = in_flight.clone();
                        let counters = connections.clone();
                        tokio::spawn(async move {
                            let _held = (permit, open);
                            let Some(io) = handshake(stream, peer).await else {
                                return;
                            };
                            let service = service_fn(move |request| {
                                let slot = match &in_flight {
                                    None => Ok(None),
                                    Some(limits) => limits.admit().map(Some),
                                };
                                let answer = match slot {
                                    Ok(slot) => Ok((slot, handle(request))),
                                    Err(limit) => Err((limit, request)),
                                };
                                let counters = counters.clone();
                                async move {
                                    match answer {
                                        Ok((slot, answer)) => {
                                            let response = answer.await;
                                            drop(slot);
                                            Ok::<_, Infallible>(response)
                                        }
                                        Err((limit, request)) => {
                                            counters.shed.fetch_add(1, Ordering::Relaxed);
                                            discard(request).await;
                                            Ok(busy(limit))
                                        }
                                    }
                                }
                            });
                            let connection = builder.serve_connection(TokioIo::new(io), service);
                            if let Err(e) = watcher.watch(connection).await {
                                tracing::debug!(%peer, error = %e, "connection ended with an error");
                            }
                        });
                    }
                    Err(_) => {
                        connections.refused.fetch_add(1, Ordering::Relaxed);
                        let Ok(refusal) = refusals.clone().try_acquire_owned() else {
                            tracing::debug!(%peer, "over the connection limit: closed");
                            continue;
                        };
                        tracing::debug!(%peer, limit = max, "over the connection limit: 503");
                        builder.keep_alive(false);
                        tokio::spawn(async move {
                            let _held = refusal;
                            let Some(io) = handshake(stream, peer).await else {
                                return;
                            };
                            let service = service_fn(move |_request: Request<Incoming>| async move {
                                Ok::<_, Infallible>(overloaded(max))
                            });
                            let connection = builder.serve_connection(TokioIo::new(io), service);
                            let _ = watcher.watch(connection).await;
                        });
                    }
                }
            }
            () = &mut shutdown => break,
        }
    }
    drop(listener);
    draining();
    tracing::info!("shutting down: draining in-flight requests");
    tokio::select! {
        () = graceful.shutdown() => tracing::info!("all connections closed"),
        () = tokio::time::sleep(drain) => {
            tracing::warn!(timeout = ?drain, "drain timeout passed; closing with requests in flight");
        }
    }
}

/// The handshake of a plain-HTTP server: the TCP stream itself.
pub async fn plain(stream: TcpStream, _peer: SocketAddr) -> Option<TcpStream> {
    Some(stream)
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
