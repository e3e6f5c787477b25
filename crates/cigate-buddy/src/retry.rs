//! The retry policy wrapped around every upstream call, and the pipeline's counters.
//!
//! What is retried, always inside the call's deadline (the client's timeout is the
//! whole budget, waits included) and at most [`RetryPolicy::max_retries`] times:
//! - idempotent methods (GET, HEAD, OPTIONS, PUT, DELETE) on 502/503/504 and on
//!   transport failures (refused, reset, cut off), with exponential backoff and full
//!   jitter: a random pause in `[0, min(cap, base·2^n)]`;
//! - reads (GET, HEAD, OPTIONS) on 500 too: a transient fault to a caller who asked
//!   cigate to absorb them. A 500 on a write (PUT and DELETE included) is returned as
//!   is: Buddy may have acted before failing, and some of its 500s are permanent
//!   answers (deleting a missing member);
//! - every method, POST and PATCH included, on a rate-limit answer (429, or 403
//!   "Rate limit exceeded."): Buddy refuses such a request before acting on it, so
//!   sending it again cannot run anything twice. The wait is the governor's: it holds
//!   every call of the account until the reset (+ margin and jitter);
//! - every method on a connect failure (hyper's `is_connect`): the connection
//!   was never established, so no byte of the request reached Buddy. Any other failure
//!   of a POST/PATCH (reset after sending, timeout) may have reached Buddy and is
//!   returned as is; callers get safe retries through `Idempotency-Key`. A host name
//!   that does not resolve is not retried (it will not resolve a moment later).
//!
//! A request whose body cannot be replayed (a streamed proxy body) is sent once, and
//! Buddy's answer, whatever it is, is returned as is.
//!
//! Giving up: a rate limit that outlasts the deadline is
//! [`BuddyError::RateLimited`] (decided before waiting, never after hanging); a 5xx
//! is returned as Buddy's last answer, a transport failure as its error.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderMap, CONTENT_LENGTH, RETRY_AFTER};
use http::{Method, Request, Uri};
use rand::Rng;
use tokio::time::Instant;

use crate::client::RateLimitHeaders;
use crate::error::{parse_error_body, BuddyError};
use crate::governor::{Clock, Governor, SystemClock};
use crate::transport::{
    full_body, is_unresolvable, map_error, RawResponse, RequestBody, Transport,
};

/// Backoff and bounds of retries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// First backoff ceiling (100 ms); doubles per retry.
    pub base: Duration,
    /// Largest backoff ceiling (5 s).
    pub cap: Duration,
    /// Retries after the first attempt (10); the deadline usually ends them first.
    pub max_retries: u32,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            base: Duration::from_millis(100),
            cap: Duration::from_secs(5),
            max_retries: 10,
        }
    }
}

impl RetryPolicy {
    /// Ceiling of the pause before retry number `retry + 1`: `min(cap, base·2^retry)`.
    pub fn backoff_ceiling(&self, retry: u32) -> Duration {
        let factor = 1u32.checked_shl(retry.min(31)).unwrap_or(u32::MAX);
        self.base.saturating_mul(factor).min(self.cap)
    }

    /// Full jitter: uniform in `[0, ceiling]`, which spreads retrying clients best.
    pub fn backoff(&self, retry: u32) -> Duration {
        let ceiling = self.backoff_ceiling(retry).as_micros() as u64;
        Duration::from_micros(rand::thread_rng().gen_range(0..=ceiling))
    }
}

/// Methods that only read (RFC 9110 §9.2.1 "safe").
pub fn is_read(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// Methods that may be sent twice without changing the outcome (RFC 9110 §9.2.2).
pub fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE
    )
}

/// Process-wide counters of upstream calls (every account), for `/metrics`.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    by_class: [AtomicU64; 5],
    transport_errors: AtomicU64,
    retries: AtomicU64,
    rate_limited_received: AtomicU64,
    governor_wait_us: AtomicU64,
    governor_refused: AtomicU64,
}

impl Counters {
    fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> UpstreamStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        UpstreamStats {
            calls_1xx: get(&self.by_class[0]),
            calls_2xx: get(&self.by_class[1]),
            calls_3xx: get(&self.by_class[2]),
            calls_4xx: get(&self.by_class[3]),
            calls_5xx: get(&self.by_class[4]),
            transport_errors: get(&self.transport_errors),
            retries: get(&self.retries),
            rate_limited_received: get(&self.rate_limited_received),
            governor_wait_ms_total: get(&self.governor_wait_us) / 1000,
            governor_refused: get(&self.governor_refused),
        }
    }
}

/// A snapshot of the upstream counters since the pool was built (monotonic).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UpstreamStats {
    /// Answers from Buddy by status class (every attempt, retries included).
    pub calls_1xx: u64,
    pub calls_2xx: u64,
    pub calls_3xx: u64,
    pub calls_4xx: u64,
    pub calls_5xx: u64,
    /// Attempts that got no answer (connect failure, reset, timeout).
    pub transport_errors: u64,
    /// Attempts after the first one of a call.
    pub retries: u64,
    /// Rate-limit answers from Buddy (429, or 403 "Rate limit exceeded.").
    pub rate_limited_received: u64,
    /// Time calls spent waiting for the governor, summed.
    pub governor_wait_ms_total: u64,
    /// Calls answered `RateLimited` by the governor because their turn came after
    /// their deadline.
    pub governor_refused: u64,
}

impl UpstreamStats {
    pub fn calls_total(&self) -> u64 {
        self.calls_1xx + self.calls_2xx + self.calls_3xx + self.calls_4xx + self.calls_5xx
    }
}

/// What one call spent, for its span.
#[derive(Debug, Default)]
struct Tally {
    attempts: u32,
    retries: u32,
    waited: Duration,
}

/// A request body: a buffered one can be sent again, so its call may be retried; a
/// stream is sent once.
#[derive(Debug)]
pub enum RawBody {
    Buffered(Bytes),
    Streamed(RequestBody),
}

/// What one call sends, kept so that every attempt sends the same.
#[derive(Debug)]
pub(crate) struct Outgoing {
    pub method: Method,
    pub uri: Uri,
    pub headers: HeaderMap,
    pub body: Option<RawBody>,
}

impl Outgoing {
    fn replayable(&self) -> bool {
        !matches!(self.body, Some(RawBody::Streamed(_)))
    }

    /// The request of the next attempt (a streamed body goes with the first).
    fn attempt(&mut self) -> Request<RequestBody> {
        let body = match self.body.take() {
            None => full_body(Bytes::new()),
            Some(RawBody::Buffered(bytes)) => {
                let body = full_body(bytes.clone());
                self.body = Some(RawBody::Buffered(bytes));
                body
            }
            Some(RawBody::Streamed(stream)) => stream,
        };
        let mut request = Request::new(body);
        *request.method_mut() = self.method.clone();
        *request.uri_mut() = self.uri.clone();
        *request.headers_mut() = self.headers.clone();
        request
    }
}

/// The pieces a call goes through: governor, retries, transport.
pub(crate) struct Pipeline<'a> {
    pub http: &'a Transport,
    pub governor: &'a Arc<Governor>,
    pub counters: &'a Counters,
    pub policy: RetryPolicy,
}

/// An attempt that may be retried.
enum Failure {
    Answer {
        response: RawResponse,
        rate_limited: bool,
        retry_after: Option<Duration>,
        reset: Option<i64>,
    },
    Error(BuddyError),
}

/// Error bodies read to tell a rate-limit 403 from a permission 403.
const MAX_PEEK_BYTES: usize = 256 * 1024;

impl Pipeline<'_> {
    /// Sends `request` through the governor with retries until `deadline`, recording
    /// `retry.count` and `governor.wait_ms` on the current span.
    pub(crate) async fn send(
        &self,
        request: Outgoing,
        deadline: Instant,
    ) -> Result<RawResponse, BuddyError> {
        let mut tally = Tally::default();
        let result = self.attempts(request, deadline, &mut tally).await;
        let span = tracing::Span::current();
        span.record("retry.count", tally.retries);
        span.record("governor.wait_ms", tally.waited.as_millis() as u64);
        result
    }

    async fn attempts(
        &self,
        mut request: Outgoing,
        deadline: Instant,
        tally: &mut Tally,
    ) -> Result<RawResponse, BuddyError> {
        let idempotent = is_idempotent(&request.method);
        let replayable = request.replayable();
        loop {
            let started = Instant::now();
            let permit = self.governor.acquire(deadline).await;
            let waited = started.elapsed();
            tally.waited += waited;
            Counters::add(&self.counters.governor_wait_us, waited.as_micros() as u64);
            let mut permit = permit.inspect_err(|_| {
                Counters::add(&self.counters.governor_refused, 1);
            })?;
            if tally.attempts > 0 {
                tally.retries += 1;
                Counters::add(&self.counters.retries, 1);
            }
            tally.attempts += 1;
            permit.mark_sent();
            let sent_at = Instant::now();
            let failure = match self.http.send(request.attempt()).await {
                Ok(response) => {
                    let status = response.status().as_u16();
                    let class = usize::from((status / 100).clamp(1, 5) - 1);
                    Counters::add(&self.counters.by_class[class], 1);
                    let (response, rate_limited) = classify(response).await;
                    let limits = RateLimitHeaders::from_headers(response.headers());
                    let retry_after = retry_after(response.headers());
                    self.governor
                        .observe(permit, &limits, rate_limited, retry_after);
                    if rate_limited {
                        Counters::add(&self.counters.rate_limited_received, 1);
                    }
                    let transient = match status {
                        500 => is_read(&request.method),
                        502..=504 => idempotent,
                        _ => false,
                    };
                    if !(rate_limited || transient) {
                        return Ok(response);
                    }
                    Failure::Answer {
                        response,
                        rate_limited,
                        retry_after,
                        reset: limits.reset,
                    }
                }
                Err(err) => {
                    Counters::add(&self.counters.transport_errors, 1);
                    // A connect failure happens before any byte is written.
                    let never_sent = err.is_connect();
                    let unresolvable = is_unresolvable(&err);
                    if never_sent {
                        permit.mark_unsent();
                    }
                    drop(permit);
                    let error = map_error(&err);
                    let transient = matches!(
                        error,
                        BuddyError::Connect(_) | BuddyError::Transport(_) | BuddyError::Timeout
                    );
                    if !transient || unresolvable || !(idempotent || never_sent) {
                        return Err(error);
                    }
                    Failure::Error(error)
                }
            };
            if !replayable {
                // The body was a stream: Buddy's answer goes back as it is.
                return failure.into_result();
            }
            if tally.retries >= self.policy.max_retries {
                return failure.give_up(self.governor.config().reset_margin);
            }
            // For a rate limit the governor does the waiting (and refuses at once if
            // the reset is past the deadline).
            let pause = match &failure {
                Failure::Answer {
                    rate_limited: true, ..
                } => Duration::ZERO,
                _ => self.policy.backoff(tally.retries),
            };
            // A retry that would not finish before the deadline (taking as long as this
            // attempt did) would turn Buddy's answer into a timeout: give that answer.
            if Instant::now() + pause + sent_at.elapsed() >= deadline {
                return failure.give_up(self.governor.config().reset_margin);
            }
            drop(failure);
            tokio::time::sleep(pause).await;
        }
    }
}

impl Failure {
    /// Sent once, not retryable: Buddy's answer or the error, as they are.
    fn into_result(self) -> Result<RawResponse, BuddyError> {
        match self {
            Failure::Answer { response, .. } => Ok(response),
            Failure::Error(e) => Err(e),
        }
    }

    /// Out of retries or time: a rate limit becomes [`BuddyError::RateLimited`].
    fn give_up(self, margin: Duration) -> Result<RawResponse, BuddyError> {
        match self {
            Failure::Answer {
                rate_limited: true,
                retry_after,
                reset,
                ..
            } => {
                let until_reset = reset.map(|r| {
                    let secs = (r as f64 - SystemClock.unix_now()).max(0.0);
                    Duration::from_secs_f64(secs) + margin
                });
                Err(BuddyError::RateLimited {
                    retry_after: retry_after.or(until_reset).unwrap_or(margin),
                })
            }
            other => other.into_result(),
        }
    }
}

/// Whether Buddy refused for the rate limit: 429, or a 403 whose body says "Rate limit
/// exceeded." (read, then put back so the caller still gets the whole answer).
async fn classify(mut response: RawResponse) -> (RawResponse, bool) {
    match response.status().as_u16() {
        429 => (response, true),
        403 => {
            let mut headers = response.headers().clone();
            let (bytes, complete) = peek_body(&mut response).await;
            let message = parse_error_body(&bytes).0;
            let limited = BuddyError::Api {
                status: 403,
                message,
                body: serde_json::Value::Null,
            }
            .is_rate_limited();
            if !complete {
                headers.remove(CONTENT_LENGTH);
            }
            (response.rebuilt(headers, bytes), limited)
        }
        _ => (response, false),
    }
}

/// Up to [`MAX_PEEK_BYTES`] of the body; `false` when it was cut or broke off.
async fn peek_body(response: &mut RawResponse) -> (Bytes, bool) {
    let mut buf = Vec::new();
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                let room = MAX_PEEK_BYTES - buf.len();
                if chunk.len() > room {
                    buf.extend_from_slice(&chunk[..room]);
                    return (buf.into(), false);
                }
                buf.extend_from_slice(&chunk);
            }
            Ok(None) => return (buf.into(), true),
            Err(_) => return (buf.into(), false),
        }
    }
}

/// `Retry-After` in seconds (Buddy's form; an HTTP date is ignored).
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let secs: u64 = headers
        .get(RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    Some(Duration::from_secs(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_is_full_jitter_under_an_exponential_cap() {
        let p = RetryPolicy::default();
        let ceilings: Vec<u128> = (0..8).map(|n| p.backoff_ceiling(n).as_millis()).collect();
        assert_eq!(ceilings, vec![100, 200, 400, 800, 1600, 3200, 5000, 5000]);
        assert_eq!(p.backoff_ceiling(u32::MAX), Duration::from_secs(5));
        let samples: Vec<Duration> = (0..2000).map(|_| p.backoff(3)).collect();
        assert!(samples.iter().all(|d| *d <= Duration::from_millis(800)));
        // Full jitter: spread over the whole range, not clustered near the ceiling.
        assert!(samples.iter().any(|d| *d < Duration::from_millis(100)));
        assert!(samples.iter().any(|d| *d > Duration::from_millis(700)));
    }

    #[test]
    fn only_idempotent_methods_are_idempotent() {
        for m in [
            Method::GET,
            Method::HEAD,
            Method::OPTIONS,
            Method::PUT,
            Method::DELETE,
        ] {
            assert!(is_idempotent(&m), "{m}");
        }
        for m in [Method::POST, Method::PATCH] {
            assert!(!is_idempotent(&m), "{m}");
        }
    }

    #[test]
    fn reads_retry_after_seconds() {
        let mut h = HeaderMap::new();
        assert_eq!(retry_after(&h), None);
        h.insert(RETRY_AFTER, http::HeaderValue::from_static(" 7 "));
        assert_eq!(retry_after(&h), Some(Duration::from_secs(7)));
        h.insert(
            RETRY_AFTER,
            http::HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"),
        );
        assert_eq!(retry_after(&h), None);
    }

    #[tokio::test]
    async fn a_rate_limit_403_is_told_apart_and_its_body_kept() {
        let body = r#"{"errors":[{"message":"Rate limit exceeded."}]}"#;
        let forbidden = |body: &'static str| {
            RawResponse::buffered(
                http::StatusCode::FORBIDDEN,
                Bytes::from_static(body.as_bytes()),
            )
        };
        let (resp, limited) = classify(forbidden(body)).await;
        assert!(limited);
        assert_eq!(resp.status(), 403);
        assert_eq!(resp.bytes().await.unwrap(), body.as_bytes());

        let no_scope = forbidden(r#"{"errors":[{"message":"No scope"}]}"#);
        assert!(!classify(no_scope).await.1);
    }
}
