//! The socket side: binds, accepts connections (TLS when configured), and serves HTTP/1.1
//! through `aq-http-server` (keep-alive, a connection cap answered with 503, the
//! header-read timeout, graceful drain), handing each request to [`crate::api::handle`].

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use aq_http_server::{Connections, Limits};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

use crate::api::{self, State};

/// How long a client may take to finish the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Either kind of connection: TLS, or plain TCP behind a TLS-terminating proxy.
trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}
type Stream = Box<dyn Io>;

async fn handshake(
    tls: Option<TlsAcceptor>,
    stream: TcpStream,
    peer: SocketAddr,
) -> Option<Stream> {
    let Some(acceptor) = tls else {
        return Some(Box::new(stream));
    };
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
        Ok(Ok(s)) => Some(Box::new(s) as Stream),
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "TLS handshake failed");
            None
        }
        Err(_) => {
            tracing::debug!(%peer, "TLS handshake timed out");
            None
        }
    }
}

/// Serves until `shutdown` completes, then lets in-flight requests finish (up to `drain`).
pub async fn serve(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    state: Arc<State>,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
    drain: Duration,
) {
    let connections = Arc::new(Connections::default());
    let accept = move |stream: TcpStream, peer: SocketAddr| handshake(tls.clone(), stream, peer);
    let handle = move |request| {
        let state = state.clone();
        async move { api::handle(&state, request).await }
    };
    aq_http_server::serve(
        listener,
        limits,
        connections,
        accept,
        handle,
        shutdown,
        || {},
        drain,
    )
    .await;
}

/// The address a listener is bound to, for the start-up line.
pub fn bound(listener: &TcpListener) -> std::io::Result<SocketAddr> {
    listener.local_addr()
}

/// Completes on SIGINT or SIGTERM.
pub use aq_http_server::shutdown_signal;
