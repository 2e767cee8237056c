//! The API without sockets: body limits, chunked bodies, refusals as answers.

use std::pin::Pin;
use std::task::{Context, Poll};

use hyper::body::Frame;

use super::*;

#[test]
fn work_refused_for_load_is_a_503_with_retry_after() {
    let r = error_response(&crate::work::WorkError::Busy.into());
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(r.headers()[header::RETRY_AFTER], "1");
    let lost = error_response(&crate::work::WorkError::Lost.into());
    assert_eq!(lost.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert!(lost.headers().get(header::RETRY_AFTER).is_none());
}

/// A body of `frames` chunks of `size` bytes with no declared length (as chunked transfer
/// encoding arrives).
struct Chunked {
    frames: usize,
    size: usize,
}

impl hyper::body::Body for Chunked {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        if self.frames == 0 {
            return Poll::Ready(None);
        }
        self.frames -= 1;
        Poll::Ready(Some(Ok(Frame::data(Bytes::from(vec![7u8; self.size])))))
    }
}

fn read(body: Chunked, declared: Option<u64>, limit: usize) -> Result<Bytes, ApiError> {
    let mut request = Request::builder().method("POST").uri("/v1/chunks");
    if let Some(len) = declared {
        request = request.header(header::CONTENT_LENGTH, len);
    }
    let request = request.body(body).unwrap();
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(read_body(request, limit))
}

#[test]
fn a_chunked_body_under_the_limit_arrives_whole_however_large() {
    // 20 MiB in 1 MiB frames under a 24 MiB limit: every byte, none cut.
    let body = read(
        Chunked {
            frames: 20,
            size: 1 << 20,
        },
        None,
        24 << 20,
    )
    .unwrap();
    assert_eq!(body.len(), 20 << 20);
    assert!(body.iter().all(|&b| b == 7));
}

#[test]
fn a_chunked_body_over_the_limit_is_refused_not_truncated() {
    let err = read(
        Chunked {
            frames: 5,
            size: 1 << 20,
        },
        None,
        (4 << 20) + 1,
    )
    .unwrap_err();
    assert_eq!(err.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(err.code, "body_too_large");
    // One byte over is over.
    let err = read(
        Chunked {
            frames: 1,
            size: 1001,
        },
        None,
        1000,
    )
    .unwrap_err();
    assert_eq!(err.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(
        read(
            Chunked {
                frames: 1,
                size: 1000
            },
            None,
            1000
        )
        .unwrap()
        .len(),
        1000
    );
}

#[test]
fn a_declared_length_over_the_limit_is_refused_before_reading() {
    // The body itself would fit; the declaration alone decides, before any byte is read.
    let err = read(
        Chunked {
            frames: 1,
            size: 10,
        },
        Some(2000),
        1000,
    )
    .unwrap_err();
    assert_eq!(err.status, StatusCode::PAYLOAD_TOO_LARGE);
}
