//! Request bodies are read within a deadline and a size limit, whoever reads them, and
//! every refusal is problem+json: a declared `Content-Length` over the limit is answered
//! 413 before a byte of the body is read, a body still arriving after
//! `CIGATE_BODY_READ_TIMEOUT` is answered 408, and both close the connection (the rest
//! of the body is never read). Handlers keep reading bodies their own way (`Bytes`,
//! JSON, `to_bytes`); this layer sees what happened to the body and answers for it, so
//! no extractor's plain-text rejection reaches a caller.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use hyper::body::{Body as HttpBody, Frame, SizeHint};

use crate::error::ApiError;
use crate::state::AppState;

/// What became of a guarded body.
const READ: u8 = 0;
const TIMED_OUT: u8 = 1;
const TOO_LARGE: u8 = 2;

/// The middleware; see the module documentation.
pub async fn guard(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let limit = state.config.body_limit;
    if declared_length(request.headers()).is_some_and(|len| len > limit as u64) {
        return closing(ApiError::PayloadTooLarge);
    }
    if request.body().is_end_stream() {
        return next.run(request).await;
    }
    let outcome = Arc::new(AtomicU8::new(READ));
    let request = request.map(|inner| {
        Body::new(Guarded {
            inner,
            deadline: Box::pin(tokio::time::sleep(state.config.body_read_timeout)),
            timeout: state.config.body_read_timeout,
            read: 0,
            limit,
            outcome: Arc::clone(&outcome),
        })
    });
    let response = next.run(request).await;
    match outcome.load(Ordering::Acquire) {
        TIMED_OUT => closing(ApiError::RequestTimeout),
        TOO_LARGE => closing(ApiError::PayloadTooLarge),
        _ if response.status() == StatusCode::PAYLOAD_TOO_LARGE && !is_problem(&response) => {
            ApiError::PayloadTooLarge.into_response()
        }
        _ => response,
    }
}

/// The declared `Content-Length`, if there is a valid one (hyper refuses invalid ones).
fn declared_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

fn is_problem(response: &Response) -> bool {
    response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/problem+json"))
}

/// The error's answer with `Connection: close`: the body's rest is left unread, so the
/// connection cannot carry another request.
fn closing(error: ApiError) -> Response {
    let mut response = error.into_response();
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

#[derive(Debug, thiserror::Error)]
enum BodyError {
    #[error("the request body did not arrive within {0:?}")]
    TimedOut(Duration),
    #[error("the request body is larger than {0} bytes")]
    TooLarge(usize),
    #[error(transparent)]
    Inner(#[from] axum::Error),
}

/// A request body that fails once its deadline passes or its size exceeds the limit,
/// and says which in `outcome`.
struct Guarded {
    inner: Body,
    deadline: Pin<Box<tokio::time::Sleep>>,
    timeout: Duration,
    read: usize,
    limit: usize,
    outcome: Arc<AtomicU8>,
}

impl HttpBody for Guarded {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.read = this.read.saturating_add(data.len());
                    if this.read > this.limit {
                        this.outcome.store(TOO_LARGE, Ordering::Release);
                        return Poll::Ready(Some(Err(BodyError::TooLarge(this.limit))));
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(err))) => Poll::Ready(Some(Err(err.into()))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => match this.deadline.as_mut().poll(cx) {
                Poll::Ready(()) => {
                    this.outcome.store(TIMED_OUT, Ordering::Release);
                    Poll::Ready(Some(Err(BodyError::TimedOut(this.timeout))))
                }
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
