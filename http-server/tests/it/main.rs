//! The shared socket side over real loopback connections: the header-read timeout closes a
//! slow client, the connection cap answers 503 with Retry-After and frees its slot when a
//! connection closes, and shutdown lets an in-flight request finish.
// Tests may unwrap, expect and print (denied workspace-wide elsewhere).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::print_stderr
)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use aq_http_server::{Connections, Limits, plain, serve};
use bytes::Bytes;
use http_body_util::Full;
use hyper::Response;

/// A server on a free loopback port in its own runtime; answers "ok" after `delay`.
struct Running {
    addr: SocketAddr,
    connections: Arc<Connections>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    drained: Arc<AtomicBool>,
    /// Requests the handler has begun answering.
    begun: Arc<AtomicUsize>,
    thread: Option<std::thread::JoinHandle<()>>,
}

fn start(limits: Limits, delay: Duration) -> Running {
    start_with(limits, move |_| delay)
}

/// A server whose handler takes `delay(n)` with `n` requests in the handler (itself
/// included), as CPU-bound requests slow down with how many share the cores.
fn start_with(
    limits: Limits,
    delay: impl Fn(usize) -> Duration + Send + Sync + 'static,
) -> Running {
    let delay = Arc::new(delay);
    let inside = Arc::new(AtomicUsize::new(0));
    let connections = Arc::new(Connections::default());
    let drained = Arc::new(AtomicBool::new(false));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    let begun = Arc::new(AtomicUsize::new(0));
    let (c, d, b) = (connections.clone(), drained.clone(), begun.clone());
    let thread = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            addr_tx.send(listener.local_addr().unwrap()).unwrap();
            serve(
                listener,
                limits,
                c,
                plain,
                move |_request| {
                    b.fetch_add(1, Ordering::SeqCst);
                    let n = inside.fetch_add(1, Ordering::SeqCst) + 1;
                    let (delay, inside) = (delay(n), inside.clone());
                    async move {
                        tokio::time::sleep(delay).await;
                        inside.fetch_sub(1, Ordering::SeqCst);
                        Response::new(Full::new(Bytes::from_static(b"ok")))
                    }
                },
                async {
                    let _ = stopped.await;
                },
                move || d.store(true, Ordering::SeqCst),
                Duration::from_secs(5),
            )
            .await;
        });
    });
    Running {
        addr: addr_rx.recv().unwrap(),
        connections,
        stop: Some(stop),
        drained,
        begun,
        thread: Some(thread),
    }
}

impl Running {
    fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop();
    }
}

fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}

/// Sends one GET and reads the whole answer (the server closes or answers `close`).
fn get(stream: &mut TcpStream) -> String {
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut out = String::new();
    stream.read_to_string(&mut out).unwrap();
    out
}

fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn a_client_that_never_finishes_its_headers_is_closed_after_the_timeout() {
    let limits = Limits {
        header_read_timeout: Duration::from_millis(300),
        ..Limits::default()
    };
    let server = start(limits, Duration::ZERO);
    let mut slow = connect(server.addr);
    slow.write_all(b"GET / HTTP/1.1\r\nHost: t\r\n").unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 256];
    // The server closes (EOF, or a reset); a read timeout (10 s) fails the test.
    match slow.read(&mut buf) {
        Ok(_) => {}
        Err(e) => assert!(
            !matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ),
            "the connection stayed open: {e}"
        ),
    }
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(250) && waited < Duration::from_secs(5),
        "closed after {waited:?}, the timeout is 300 ms"
    );
    wait_until("the slot to be freed", || server.connections.open() == 0);
    // A prompt client is served.
    assert!(get(&mut connect(server.addr)).ends_with("ok"));
}

#[test]
fn over_the_connection_cap_a_client_gets_503_and_the_slot_frees_when_one_closes() {
    let limits = Limits {
        max_connections: 2,
        ..Limits::default()
    };
    let server = start(limits, Duration::ZERO);
    let first = connect(server.addr);
    let _second = connect(server.addr);
    wait_until("two open connections", || server.connections.open() == 2);
    let answer = get(&mut connect(server.addr));
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    let lower = answer.to_ascii_lowercase();
    assert!(lower.contains("retry-after: 1"), "{answer}");
    assert!(answer.contains("\"code\":\"overloaded\""), "{answer}");
    assert_eq!(server.connections.refused(), 1);
    assert_eq!(
        server.connections.open(),
        2,
        "a refused connection holds no slot"
    );
    drop(first);
    wait_until("the slot to be freed", || server.connections.open() == 1);
    let answer = get(&mut connect(server.addr));
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

#[test]
fn shutdown_stops_accepting_and_lets_the_request_in_flight_finish() {
    let mut server = start(Limits::default(), Duration::from_millis(400));
    let addr = server.addr;
    let client = std::thread::spawn(move || get(&mut connect(addr)));
    // Stopped while the handler is answering (it takes 400 ms).
    wait_until("the handler to begin", || {
        server.begun.load(Ordering::SeqCst) == 1
    });
    server.stop();
    assert!(server.drained.load(Ordering::SeqCst));
    let answer = client.join().unwrap();
    assert!(
        answer.starts_with("HTTP/1.1 200") && answer.ends_with("ok"),
        "{answer}"
    );
    assert!(
        TcpStream::connect(addr).is_err(),
        "still accepting after shutdown"
    );
}

#[test]
fn over_the_request_limit_a_request_gets_503_without_reaching_the_handler() {
    let limits = Limits {
        max_in_flight: Some(1),
        ..Limits::default()
    };
    let server = start(limits, Duration::from_millis(500));
    let addr = server.addr;
    let first = std::thread::spawn(move || get(&mut connect(addr)));
    wait_until("the first request to be handled", || {
        server.begun.load(Ordering::SeqCst) == 1
    });
    let answer = get(&mut connect(server.addr));
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(
        answer.to_ascii_lowercase().contains("retry-after: 1"),
        "{answer}"
    );
    assert!(answer.contains("\"code\":\"overloaded\""), "{answer}");
    // Refused before the handler: it has still begun only the first request.
    assert_eq!(server.begun.load(Ordering::SeqCst), 1);
    assert_eq!(server.connections.shed(), 1);
    assert!(first.join().unwrap().starts_with("HTTP/1.1 200"));
    // The slot is free again once the first request was answered.
    let answer = get(&mut connect(server.addr));
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert_eq!(server.begun.load(Ordering::SeqCst), 2);
}

#[test]
fn a_refused_upload_gets_its_503_instead_of_a_reset() {
    let limits = Limits {
        max_in_flight: Some(1),
        ..Limits::default()
    };
    let server = start(limits, Duration::from_secs(2));
    let addr = server.addr;
    let first = std::thread::spawn(move || get(&mut connect(addr)));
    wait_until("the first request to be handled", || {
        server.begun.load(Ordering::SeqCst) == 1
    });
    // A 4 MiB upload while the one slot is taken: answered without reaching the handler,
    // and the client can write all of it and then read the refusal (were the body left
    // unread, the closed connection would reset the upload instead).
    let body = vec![7u8; 4 << 20];
    let mut stream = connect(addr);
    let head = format!(
        "POST /chunks HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).unwrap();
    stream
        .write_all(&body)
        .expect("the upload was reset before it was written");
    let mut answer = Vec::new();
    stream
        .read_to_end(&mut answer)
        .expect("the connection was reset before the answer was read");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(
        answer.to_ascii_lowercase().contains("retry-after: 1"),
        "{answer}"
    );
    // A client that waits for "100 Continue" before its upload is refused without sending it.
    let mut stream = connect(addr);
    let head = format!(
        "POST /chunks HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).unwrap();
    let mut answer = [0u8; 12];
    stream.read_exact(&mut answer).unwrap();
    assert_eq!(
        &answer,
        b"HTTP/1.1 503",
        "{}",
        String::from_utf8_lossy(&answer)
    );
    assert_eq!(server.begun.load(Ordering::SeqCst), 1);
    assert!(first.join().unwrap().starts_with("HTTP/1.1 200"));
}
