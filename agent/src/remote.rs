//! The HTTPS client for a sync-server: URL and TLS set-up, one keep-alive connection per
//! worker, bearer tokens, and JSON error bodies turned into typed errors.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use aq_sync_proto::api::ErrorBody;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// A request that makes no progress for this long is abandoned.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(300);
/// How many times a request refused for load (503 or 429 with `Retry-After`) is sent again.
const BUSY_RETRIES: u32 = 4;
/// The longest wait for a `Retry-After`, whatever the server asks.
const BUSY_WAIT_CAP: Duration = Duration::from_secs(5);

/// Why a call to the server failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RemoteError {
    #[error("invalid server URL {url:?}: {reason}")]
    Url { url: String, reason: String },
    #[error("failed to read the CA file {path}: {message}")]
    CaFile { path: PathBuf, message: String },
    #[error("cannot reach {url}: {message}")]
    Unreachable { url: String, message: String },
    #[error("{method} {path}: the server answered {status} ({code}): {message}")]
    Refused {
        method: Method,
        path: String,
        status: StatusCode,
        code: String,
        message: String,
    },
    #[error("{method} {path}: the server's answer does not decode: {message}")]
    BadAnswer {
        method: Method,
        path: String,
        message: String,
    },
}

impl RemoteError {
    /// The HTTP status of a refusal.
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            RemoteError::Refused { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// Whether trying again later may succeed: the server unreachable, overloaded (429) or
    /// failing (5xx).
    pub fn is_transient(&self) -> bool {
        match self {
            RemoteError::Unreachable { .. } => true,
            RemoteError::Refused { status, .. } => {
                status.is_server_error() || *status == StatusCode::TOO_MANY_REQUESTS
            }
            _ => false,
        }
    }

    /// The server's error code (`unauthorized`, `untrusted`, `missing_chunks`, ...).
    pub fn code(&self) -> Option<&str> {
        match self {
            RemoteError::Refused { code, .. } => Some(code),
            _ => None,
        }
    }
}

/// Where the server is and how to talk to it.
#[derive(Debug, Clone)]
pub struct RemoteOptions {
    pub url: String,
    pub token: Option<String>,
    /// A PEM file of the CA(s) to trust instead of the system's.
    pub ca: Option<PathBuf>,
}

/// A sync-server endpoint, ready to open connections.
pub struct Remote {
    url: String,
    host: String,
    port: u16,
    authority: HeaderValue,
    token: Option<HeaderValue>,
    tls: Option<(TlsConnector, ServerName<'static>)>,
}

impl std::fmt::Debug for Remote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Remote").field("url", &self.url).finish()
    }
}

/// Splits `http[s]://host[:port][/]` into its parts.
fn parse_url(url: &str) -> Result<(bool, String, u16), String> {
    let (https, rest) = if let Some(r) = url.strip_prefix("https://") {
        (true, r)
    } else if let Some(r) = url.strip_prefix("http://") {
        (false, r)
    } else {
        return Err("it must start with https:// (or http://)".into());
    };
    let authority = rest.trim_end_matches('/');
    if authority.is_empty() || authority.contains(['/', '?', '#', '@']) {
        return Err("give only scheme, host and port, e.g. https://sync.example:8443".into());
    }
    let default_port = if https { 443 } else { 80 };
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (host, after) = v6.split_once(']').ok_or("unclosed [ in an IPv6 host")?;
        let port = match after.strip_prefix(':') {
            Some(p) => p.parse().map_err(|_| format!("bad port {p:?}"))?,
            None if after.is_empty() => default_port,
            None => return Err(format!("unexpected {after:?} after the host")),
        };
        (host.to_owned(), port)
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (
                h.to_owned(),
                p.parse().map_err(|_| format!("bad port {p:?}"))?,
            ),
            None => (authority.to_owned(), default_port),
        }
    };
    if host.is_empty() {
        return Err("no host".into());
    }
    Ok((https, host, port))
}

fn root_store(ca: Option<&Path>) -> Result<rustls::RootCertStore, RemoteError> {
    let mut roots = rustls::RootCertStore::empty();
    match ca {
        Some(path) => {
            let err = |message: String| RemoteError::CaFile {
                path: path.to_owned(),
                message,
            };
            let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
                .map_err(|e| err(e.to_string()))?
                .collect::<Result<_, _>>()
                .map_err(|e| err(e.to_string()))?;
            if certs.is_empty() {
                return Err(err("no PEM certificate in it".into()));
            }
            for c in certs {
                roots.add(c).map_err(|e| err(e.to_string()))?;
            }
        }
        None => {
            // Certificates the system cannot parse are skipped, as browsers do.
            for c in rustls_native_certs::load_native_certs().certs {
                let _ = roots.add(c);
            }
        }
    }
    Ok(roots)
}

impl Remote {
    pub fn new(options: &RemoteOptions) -> Result<Arc<Remote>, RemoteError> {
        let url = options.url.trim_end_matches('/').to_owned();
        let bad = |reason: String| RemoteError::Url {
            url: options.url.clone(),
            reason,
        };
        let (https, host, port) = parse_url(&url).map_err(bad)?;
        let authority = HeaderValue::from_str(url.split_once("://").map_or("", |(_, a)| a))
            .map_err(|e| bad(e.to_string()))?;
        let token = options
            .token
            .as_deref()
            .map(|t| HeaderValue::from_str(&format!("Bearer {}", t.trim())))
            .transpose()
            .map_err(|_| bad("the token has characters a header cannot carry".into()))?;
        let tls = if https {
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let config = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .map_err(|e| bad(e.to_string()))?
                .with_root_certificates(root_store(options.ca.as_deref())?)
                .with_no_client_auth();
            let name = ServerName::try_from(host.clone()).map_err(|e| bad(e.to_string()))?;
            Some((TlsConnector::from(Arc::new(config)), name))
        } else {
            None
        };
        Ok(Arc::new(Remote {
            url,
            host,
            port,
            authority,
            token,
            tls,
        }))
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    fn unreachable(&self, message: impl std::fmt::Display) -> RemoteError {
        RemoteError::Unreachable {
            url: self.url.clone(),
            message: message.to_string(),
        }
    }

    /// Opens one HTTP/1.1 connection (over TLS for https).
    async fn connect(&self) -> Result<SendRequest<Full<Bytes>>, RemoteError> {
        let tcp = tokio::time::timeout(
            CONNECT_TIMEOUT,
            TcpStream::connect((self.host.as_str(), self.port)),
        )
        .await
        .map_err(|_| self.unreachable("connection timed out"))?
        .map_err(|e| self.unreachable(e))?;
        let _ = tcp.set_nodelay(true);
        match &self.tls {
            Some((connector, name)) => {
                let stream =
                    tokio::time::timeout(CONNECT_TIMEOUT, connector.connect(name.clone(), tcp))
                        .await
                        .map_err(|_| self.unreachable("TLS handshake timed out"))?
                        .map_err(|e| self.unreachable(format!("TLS: {e}")))?;
                self.handshake(TokioIo::new(stream)).await
            }
            None => self.handshake(TokioIo::new(tcp)).await,
        }
    }

    async fn handshake<I>(&self, io: I) -> Result<SendRequest<Full<Bytes>>, RemoteError>
    where
        I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    {
        let (sender, connection) = hyper::client::conn::http1::handshake(io)
            .await
            .map_err(|e| self.unreachable(e))?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(sender)
    }
}

/// One connection to the server, reopened when the server closed it.
pub struct Client {
    remote: Arc<Remote>,
    sender: Option<SendRequest<Full<Bytes>>>,
}

/// A successful answer.
pub struct Answer {
    pub content_type: Option<String>,
    pub body: Bytes,
}

impl Client {
    pub fn new(remote: Arc<Remote>) -> Client {
        Client {
            remote,
            sender: None,
        }
    }

    async fn sender(&mut self) -> Result<&mut SendRequest<Full<Bytes>>, RemoteError> {
        let reusable = match self.sender.as_mut() {
            Some(s) => !s.is_closed() && s.ready().await.is_ok(),
            None => false,
        };
        if !reusable {
            self.sender = Some(self.remote.connect().await?);
        }
        self.sender
            .as_mut()
            .ok_or_else(|| self.remote.unreachable("no connection"))
    }

    /// Sends one request; a non-2xx answer becomes [`RemoteError::Refused`]. A server that
    /// sheds load (503 or 429 with `Retry-After`: the request was not handled) is asked
    /// again after the time it names (at most [`BUSY_WAIT_CAP`]), up to [`BUSY_RETRIES`]
    /// times.
    pub async fn send(
        &mut self,
        method: Method,
        path: &str,
        content_type: Option<&'static str>,
        body: Bytes,
    ) -> Result<Answer, RemoteError> {
        let mut retries = 0;
        loop {
            match self
                .send_once(method.clone(), path, content_type, body.clone())
                .await
            {
                Ok(answer) => return Ok(answer),
                Err((error, Some(wait))) if retries < BUSY_RETRIES => {
                    retries += 1;
                    tracing::debug!(%error, ?wait, retries, "server busy; asking again");
                    tokio::time::sleep(wait.min(BUSY_WAIT_CAP)).await;
                }
                Err((error, _)) => return Err(error),
            }
        }
    }

    /// One exchange; a refusal comes with the wait it asks for when it is a load-shedding one
    /// (503 or 429 with `Retry-After` in seconds).
    async fn send_once(
        &mut self,
        method: Method,
        path: &str,
        content_type: Option<&'static str>,
        body: Bytes,
    ) -> Result<Answer, (RemoteError, Option<Duration>)> {
        let mut builder = Request::builder()
            .method(method.clone())
            .uri(path)
            .header(header::HOST, self.remote.authority.clone());
        if let Some(t) = &self.remote.token {
            builder = builder.header(header::AUTHORIZATION, t.clone());
        }
        if let Some(ct) = content_type {
            builder = builder.header(header::CONTENT_TYPE, ct);
        }
        let request = builder
            .body(Full::new(body))
            .map_err(|e| (self.remote.unreachable(e), None))?;
        let remote = self.remote.clone();
        let sender = self.sender().await.map_err(|e| (e, None))?;
        let exchange = async {
            let response = sender
                .send_request(request)
                .await
                .map_err(|e| remote.unreachable(e))?;
            let status = response.status();
            let retry_after = response
                .headers()
                .get(header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(Duration::from_secs);
            let content_type = response
                .headers()
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let body = response
                .into_body()
                .collect()
                .await
                .map_err(|e| remote.unreachable(e))?
                .to_bytes();
            Ok::<_, RemoteError>((status, retry_after, content_type, body))
        };
        let (status, retry_after, content_type, body) =
            tokio::time::timeout(REQUEST_TIMEOUT, exchange)
                .await
                .map_err(|_| (self.remote.unreachable("the request timed out"), None))?
                .map_err(|e| (e, None))?;
        if !status.is_success() {
            let (code, message) = match serde_json::from_slice::<ErrorBody>(&body) {
                Ok(e) => (e.error.code, e.error.message),
                Err(_) => (
                    "unknown".to_owned(),
                    String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned(),
                ),
            };
            let shed = matches!(status.as_u16(), 429 | 503);
            return Err((
                RemoteError::Refused {
                    method,
                    path: path.to_owned(),
                    status,
                    code,
                    message,
                },
                retry_after.filter(|_| shed),
            ));
        }
        Ok(Answer { content_type, body })
    }

    /// Sends JSON (or nothing) and decodes a JSON answer.
    pub async fn json<T: DeserializeOwned>(
        &mut self,
        method: Method,
        path: &str,
        body: Option<&impl Serialize>,
    ) -> Result<T, RemoteError> {
        let bad = |message: String| RemoteError::BadAnswer {
            method: method.clone(),
            path: path.to_owned(),
            message,
        };
        let (content_type, bytes) = match body {
            Some(b) => (
                Some("application/json"),
                Bytes::from(serde_json::to_vec(b).map_err(|e| bad(e.to_string()))?),
            ),
            None => (None, Bytes::new()),
        };
        let answer = self.send(method.clone(), path, content_type, bytes).await?;
        serde_json::from_slice(&answer.body).map_err(|e| bad(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::{Method, RemoteError, StatusCode, parse_url};

    #[test]
    fn unreachable_overloaded_and_failing_servers_are_transient_refusals_are_not() {
        let refused = |status: u16| RemoteError::Refused {
            method: Method::GET,
            path: "/v1/packs/x".into(),
            status: StatusCode::from_u16(status).unwrap(),
            code: "c".into(),
            message: "m".into(),
        };
        let unreachable = RemoteError::Unreachable {
            url: "https://127.0.0.1:1".into(),
            message: "refused".into(),
        };
        assert!(unreachable.is_transient());
        for status in [500, 502, 503, 429] {
            assert!(refused(status).is_transient(), "{status}");
        }
        for status in [400, 401, 403, 404, 409, 422] {
            assert!(!refused(status).is_transient(), "{status}");
        }
        let bad = RemoteError::BadAnswer {
            method: Method::GET,
            path: "/".into(),
            message: "m".into(),
        };
        assert!(!bad.is_transient());
    }

    #[test]
    fn urls() {
        assert_eq!(
            parse_url("https://h:8443").unwrap(),
            (true, "h".into(), 8443)
        );
        assert_eq!(parse_url("https://h/").unwrap(), (true, "h".into(), 443));
        assert_eq!(
            parse_url("http://[::1]:80").unwrap(),
            (false, "::1".into(), 80)
        );
        assert_eq!(
            parse_url("https://[::1]").unwrap(),
            (true, "::1".into(), 443)
        );
        for bad in [
            "h:1",
            "ftp://h",
            "https://",
            "https://h:x",
            "https://u@h",
            "https://h/path",
            "https://[::1",
        ] {
            assert!(parse_url(bad).is_err(), "{bad}");
        }
    }
}
