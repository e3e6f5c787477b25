//! The HTTP client every call to Buddy goes through: one connection pool per process
//! ([`HttpPool`], see [`crate::transport`]), one cheap [`BuddyClient`] per account
//! carrying its base URL and token.
//!
//! Every request, JSON or raw, passes through [`BuddyClient::dispatch`], the one place
//! where the per-account rate governor and the retry policy wrap the transport.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, NaiveDateTime, Utc};
use cigate_core::Secret;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Uri};
use serde_json::Value;
use tracing::Instrument;
use url::Url;

use crate::base_url::{check_target, UpstreamPolicy};
use crate::error::{message_from_value, parse_error_body, BuddyError};
use crate::governor::{Governor, GovernorConfig, GovernorRegistry, SharedBudget};
pub use crate::retry::RawBody;
use crate::retry::{Counters, Outgoing, Pipeline, RetryPolicy, UpstreamStats};
use crate::transport::Transport;
pub use crate::transport::{stream_body, RawResponse};

/// Sent on every call so Buddy (and operators reading its logs) can tell us apart.
pub const USER_AGENT: &str = concat!("cigate/", env!("CARGO_PKG_VERSION"));

/// Tunables of the shared pool; defaults suit Buddy's cloud.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpPoolConfig {
    /// TCP + TLS connect budget (5 s).
    pub connect_timeout: Duration,
    /// Default budget of one JSON call, body included, and of the response head of a
    /// raw call (30 s). Per call: [`BuddyClient::with_timeout`], [`RawRequest::timeout`].
    pub request_timeout: Duration,
    /// Longest silence while reading a body; bounds streamed raw bodies, which have no
    /// total budget (large logs).
    pub read_timeout: Duration,
    /// Largest JSON body read into memory.
    pub max_body_bytes: usize,
    /// Spacing of calls per account by Buddy's rate-limit headers.
    pub governor: GovernorConfig,
    /// Retries of idempotent calls (and of rate-limited ones) inside the call's budget.
    pub retry: RetryPolicy,
}

impl Default for HttpPoolConfig {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(30),
            read_timeout: Duration::from_secs(30),
            max_body_bytes: 64 * 1024 * 1024,
            governor: GovernorConfig::default(),
            retry: RetryPolicy::default(),
        }
    }
}

/// The process-wide connection pool to every Buddy host, built once by the server so
/// all accounts share connections, TLS sessions and the connect-time SSRF resolver. It
/// also holds one rate governor per account, so every [`BuddyClient`] of an account
/// (unified, proxy and custom calls alike) draws on the same budget.
#[derive(Debug, Clone)]
pub struct HttpPool {
    http: Transport,
    policy: UpstreamPolicy,
    config: HttpPoolConfig,
    governors: Arc<GovernorRegistry>,
    counters: Arc<Counters>,
}

impl HttpPool {
    pub fn new(policy: UpstreamPolicy) -> Result<Self, BuddyError> {
        Self::with_config(policy, HttpPoolConfig::default())
    }

    pub fn with_config(policy: UpstreamPolicy, config: HttpPoolConfig) -> Result<Self, BuddyError> {
        // Redirects are never followed (one could point at an IP literal, which skips
        // the resolver, and Buddy's API does not redirect) and no environment proxy is
        // used (it would resolve the host itself, past the resolver).
        let http = Transport::new(policy, config.connect_timeout, config.read_timeout)?;
        Ok(Self {
            http,
            policy,
            config,
            governors: Arc::new(GovernorRegistry::new(config.governor)),
            counters: Arc::default(),
        })
    }

    /// The same pool whose governors also take every unit of an account's budget from
    /// `shared`, so several processes using one account stay within it together. Call
    /// before the first client is made (earlier governors are dropped).
    pub fn sharing_budget(mut self, shared: Arc<dyn SharedBudget>) -> Self {
        self.governors = Arc::new(GovernorRegistry::with_shared(
            self.config.governor,
            Some(shared),
        ));
        self
    }

    pub fn policy(&self) -> UpstreamPolicy {
        self.policy
    }

    pub fn config(&self) -> HttpPoolConfig {
        self.config
    }

    /// Counters of every upstream call made through this pool, for `/metrics`.
    pub fn stats(&self) -> UpstreamStats {
        self.counters.snapshot()
    }
}

/// Buddy's `X-Rate-Limit-*` headers. `limit` is reported but untrustworthy (Buddy's
/// samples send 1); `remaining` and `reset` (Unix seconds) drive the governor.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RateLimitHeaders {
    pub limit: Option<u64>,
    pub remaining: Option<u64>,
    pub reset: Option<i64>,
    /// Buddy's clock when it answered (`Date`, Unix seconds): tells the governor when
    /// Buddy's clock is not ours, so the reset is placed on our clock correctly.
    pub date: Option<i64>,
}

impl RateLimitHeaders {
    pub fn from_headers(headers: &HeaderMap) -> Self {
        const LIMIT: HeaderName = HeaderName::from_static("x-rate-limit-limit");
        const REMAINING: HeaderName = HeaderName::from_static("x-rate-limit-remaining");
        const RESET: HeaderName = HeaderName::from_static("x-rate-limit-reset");
        fn get<T: std::str::FromStr>(headers: &HeaderMap, name: HeaderName) -> Option<T> {
            headers.get(name)?.to_str().ok()?.trim().parse().ok()
        }
        Self {
            limit: get(headers, LIMIT),
            remaining: get(headers, REMAINING),
            reset: headers
                .get(RESET)
                .and_then(|v| v.to_str().ok())
                .and_then(reset_seconds),
            date: headers
                .get(http::header::DATE)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| chrono::DateTime::parse_from_rfc2822(v).ok())
                .map(|d| d.timestamp()),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.limit.is_none() && self.remaining.is_none() && self.reset.is_none()
    }
}

/// `X-Rate-Limit-Reset` as whole Unix seconds: `1700000010`, or with decimals
/// (`1700000010.250`) truncated, which the governor's reset margin covers.
fn reset_seconds(value: &str) -> Option<i64> {
    let (whole, fraction) = value.trim().split_once('.').unwrap_or((value.trim(), ""));
    if !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    whole.parse().ok()
}

/// One answer from Buddy, body parsed: JSON for 2xx (`Null` for 204 or an empty body),
/// Buddy's error body (parsed if JSON, else a string) otherwise.
#[derive(Debug, Clone)]
pub struct Upstream {
    pub status: u16,
    pub body: Value,
    pub rate_limit: RateLimitHeaders,
    pub headers: HeaderMap,
}

impl Upstream {
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// Turns a non-2xx answer into [`BuddyError::Api`].
    pub fn error_for_status(self) -> Result<Upstream, BuddyError> {
        if self.is_success() {
            return Ok(self);
        }
        Err(BuddyError::Api {
            status: self.status,
            message: message_from_value(&self.body),
            body: self.body,
        })
    }
}

/// One 2xx answer from Buddy with its body as sent, for callers that read it into their
/// own types in one pass instead of through a JSON tree.
#[derive(Debug, Clone)]
pub struct UpstreamBytes {
    pub body: Vec<u8>,
    pub rate_limit: RateLimitHeaders,
}

/// An answer as read off the wire, before its body is decoded.
struct Answer {
    status: u16,
    headers: HeaderMap,
    rate_limit: RateLimitHeaders,
    bytes: Vec<u8>,
}

impl Answer {
    fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

/// What the token can do, learned when an account is linked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenInfo {
    /// Granted scopes; `None` when the token may not read itself (no `TOKEN_INFO`).
    pub scopes: Option<Vec<String>>,
    pub expires_at: Option<DateTime<Utc>>,
    /// Domains of the workspaces the token can see.
    pub workspaces: Vec<String>,
}

/// A passthrough request for the proxy: forwarded as given, except that hop-by-hop
/// headers, `Host`, the caller's `Authorization` and any `access_token` query parameter
/// are dropped and the account's bearer token is injected.
#[derive(Debug)]
pub struct RawRequest {
    pub method: Method,
    pub path: String,
    pub query: Vec<(String, String)>,
    pub headers: HeaderMap,
    pub body: Option<RawBody>,
    /// Budget until the response head arrives; the body streams without a total
    /// budget (only the pool's read timeout between chunks).
    pub timeout: Option<Duration>,
}

impl RawRequest {
    /// The same request to send again; `None` when its body is a stream (sent once).
    pub fn try_clone(&self) -> Option<Self> {
        let body = match &self.body {
            None => None,
            Some(RawBody::Buffered(bytes)) => Some(RawBody::Buffered(bytes.clone())),
            Some(RawBody::Streamed(_)) => return None,
        };
        Some(Self {
            method: self.method.clone(),
            path: self.path.clone(),
            query: self.query.clone(),
            headers: self.headers.clone(),
            body,
            timeout: self.timeout,
        })
    }

    pub fn new(method: Method, path: impl Into<String>) -> Self {
        Self {
            method,
            path: path.into(),
            query: Vec::new(),
            headers: HeaderMap::new(),
            body: None,
            timeout: None,
        }
    }
}

/// One account's view of Buddy: base URL + token over the shared pool. Cheap to clone.
#[derive(Debug, Clone)]
pub struct BuddyClient {
    http: Transport,
    policy: UpstreamPolicy,
    base_url: Arc<Url>,
    token: Arc<Secret>,
    /// `Bearer <token>`, built once; `None` when the token cannot be a header value.
    bearer: Option<HeaderValue>,
    timeout: Duration,
    max_body_bytes: usize,
    governor: Arc<Governor>,
    counters: Arc<Counters>,
    retry: RetryPolicy,
}

impl BuddyClient {
    /// `base_url` should have passed [`crate::base_url::validate_base_url`]; the policy
    /// is enforced again on every request and connection regardless.
    pub fn new(pool: &HttpPool, base_url: Url, token: Secret) -> Self {
        let governor = pool.governors.governor(base_url.as_str(), token.expose());
        let bearer = HeaderValue::from_str(&format!("Bearer {}", token.expose()))
            .ok()
            .map(|mut value| {
                value.set_sensitive(true);
                value
            });
        Self {
            http: pool.http.clone(),
            policy: pool.policy,
            base_url: Arc::new(base_url),
            bearer,
            token: Arc::new(token),
            timeout: pool.config.request_timeout,
            max_body_bytes: pool.config.max_body_bytes,
            governor,
            counters: Arc::clone(&pool.counters),
            retry: pool.config.retry,
        }
    }

    /// The same client with another per-call budget (e.g. the caller's `truto_timeout_ms`).
    pub fn with_timeout(&self, timeout: Duration) -> Self {
        Self {
            timeout,
            ..self.clone()
        }
    }

    pub fn base_url(&self) -> &Url {
        &self.base_url
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The account's rate governor (shared with every client of the account).
    pub fn governor(&self) -> &Arc<Governor> {
        &self.governor
    }

    /// `GET path?query`, 2xx parsed as JSON, anything else as [`BuddyError::Api`].
    pub async fn get_json(
        &self,
        path: &str,
        query: &[(String, String)],
    ) -> Result<Upstream, BuddyError> {
        self.send_json(Method::GET, path, query, None).await
    }

    /// Any method with an optional JSON body; non-2xx becomes [`BuddyError::Api`].
    pub async fn send_json(
        &self,
        method: Method,
        path: &str,
        query: &[(String, String)],
        body: Option<&Value>,
    ) -> Result<Upstream, BuddyError> {
        self.execute_json(method, path, query, body)
            .await?
            .error_for_status()
    }

    /// Like [`Self::send_json`] but returns non-2xx answers as [`Upstream`] too, for
    /// callers that pass Buddy's status through or inspect its rate-limit headers.
    pub async fn execute_json(
        &self,
        method: Method,
        path: &str,
        query: &[(String, String)],
        body: Option<&Value>,
    ) -> Result<Upstream, BuddyError> {
        let answer = self.execute(method, path, query, body).await?;
        self.decode(answer)
    }

    /// `GET path?query`, a 2xx body as Buddy sent it, anything else as
    /// [`BuddyError::Api`].
    pub async fn get_bytes(
        &self,
        path: &str,
        query: &[(String, String)],
    ) -> Result<UpstreamBytes, BuddyError> {
        let answer = self.execute(Method::GET, path, query, None).await?;
        if answer.is_success() {
            return Ok(UpstreamBytes {
                body: answer.bytes,
                rate_limit: answer.rate_limit,
            });
        }
        // Not a success, so this is Buddy's error as every other call reports it.
        self.decode(answer)?
            .error_for_status()
            .map(|up| UpstreamBytes {
                body: Vec::new(),
                rate_limit: up.rate_limit,
            })
    }

    async fn execute(
        &self,
        method: Method,
        path: &str,
        query: &[(String, String)],
        body: Option<&Value>,
    ) -> Result<Answer, BuddyError> {
        let url = self.endpoint_url(path, query)?;
        let span = upstream_span(&method, &url);
        async {
            let mut headers = HeaderMap::with_capacity(4);
            headers.insert(header::ACCEPT, HeaderValue::from_static("application/json"));
            let body = match body {
                Some(body) => {
                    headers.insert(
                        header::CONTENT_TYPE,
                        HeaderValue::from_static("application/json"),
                    );
                    let bytes = serde_json::to_vec(body)
                        .map_err(|e| BuddyError::Decode(format!("unencodable body: {e}")))?;
                    Some(RawBody::Buffered(bytes.into()))
                }
                None => None,
            };
            let request = self.outgoing(method, &url, headers, body)?;
            let deadline = tokio::time::Instant::now() + self.timeout;
            let upstream = tokio::time::timeout_at(deadline, async {
                let response = self.dispatch(request, deadline).await?;
                self.read_answer(response).await
            })
            .await
            .map_err(|_| BuddyError::Timeout)??;
            tracing::Span::current().record("http.response.status_code", upstream.status);
            Ok(upstream)
        }
        .instrument(span)
        .await
    }

    /// Forwards a raw request and returns Buddy's response unbuffered, whatever its
    /// status, so the proxy can stream status, headers and body through.
    pub async fn send_raw(&self, req: RawRequest) -> Result<RawResponse, BuddyError> {
        let query: Vec<(String, String)> = req
            .query
            .into_iter()
            .filter(|(k, _)| k != "access_token")
            .collect();
        let url = self.endpoint_url(&req.path, &query)?;
        let span = upstream_span(&req.method, &url);
        let timeout = req.timeout.unwrap_or(self.timeout);
        async {
            let headers = forwardable_headers(req.headers);
            let request = self.outgoing(req.method, &url, headers, req.body)?;
            let deadline = tokio::time::Instant::now() + timeout;
            let response = tokio::time::timeout_at(deadline, self.dispatch(request, deadline))
                .await
                .map_err(|_| BuddyError::Timeout)??;
            tracing::Span::current()
                .record("http.response.status_code", response.status().as_u16());
            Ok(response)
        }
        .instrument(span)
        .await
    }

    /// Checks a token when an account is linked: `GET /user/token` for scopes and
    /// expiry (optional: a token without `TOKEN_INFO` gets 403 there), then
    /// `GET /workspaces`, which must work.
    pub async fn verify_token(&self) -> Result<TokenInfo, BuddyError> {
        let (scopes, expires_at) = match self.get_json("/user/token", &[]).await {
            Ok(up) => (
                up.body.get("scopes").and_then(Value::as_array).map(|a| {
                    a.iter()
                        .filter_map(Value::as_str)
                        .map(str::to_owned)
                        .collect()
                }),
                up.body
                    .get("expires_at")
                    .and_then(Value::as_str)
                    .and_then(parse_buddy_datetime),
            ),
            // 403: no TOKEN_INFO scope; 404: an older self-hosted Buddy without the endpoint.
            Err(e) if matches!(e.status(), Some(403 | 404)) && !e.is_rate_limited() => (None, None),
            Err(e) => return Err(e),
        };
        let ws = self.get_json("/workspaces", &[]).await?;
        let workspaces = ws
            .body
            .get("workspaces")
            .and_then(Value::as_array)
            .map(|items| {
                items
                    .iter()
                    .filter_map(|w| w.get("domain").and_then(Value::as_str))
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default();
        Ok(TokenInfo {
            scopes,
            expires_at,
            workspaces,
        })
    }

    /// The full URL for `path` under the base URL (whose own path, e.g. `/api`, is kept).
    pub fn endpoint_url(&self, path: &str, query: &[(String, String)]) -> Result<Url, BuddyError> {
        join_url(&self.base_url, path, query)
    }

    /// The single exit to the network. Re-checks the URL (IP literals bypass the
    /// connect-time resolver), then sends through the account's rate governor with
    /// retries until `deadline` (see [`crate::retry`]).
    async fn dispatch(
        &self,
        request: Outgoing,
        deadline: tokio::time::Instant,
    ) -> Result<RawResponse, BuddyError> {
        Pipeline {
            http: &self.http,
            governor: &self.governor,
            counters: &self.counters,
            policy: self.retry,
        }
        .send(request, deadline)
        .await
    }

    /// The request every attempt of a call sends: `url` re-checked against the policy
    /// (IP literals bypass the connect-time resolver), the account's bearer token and
    /// our User-Agent added.
    fn outgoing(
        &self,
        method: Method,
        url: &Url,
        mut headers: HeaderMap,
        body: Option<RawBody>,
    ) -> Result<Outgoing, BuddyError> {
        check_target(url, self.policy).map_err(BuddyError::Forbidden)?;
        let uri = Uri::try_from(url.as_str())
            .map_err(|e| BuddyError::InvalidPath(format!("not a request target: {e}")))?;
        let bearer = self.bearer.clone().ok_or(BuddyError::InvalidCredential)?;
        headers.insert(header::AUTHORIZATION, bearer);
        headers.insert(header::USER_AGENT, HeaderValue::from_static(USER_AGENT));
        Ok(Outgoing {
            method,
            uri,
            headers,
            body,
        })
    }

    async fn read_answer(&self, mut response: RawResponse) -> Result<Answer, BuddyError> {
        let status = response.status().as_u16();
        let headers = std::mem::take(response.headers_mut());
        let rate_limit = RateLimitHeaders::from_headers(&headers);
        let success = (200..300).contains(&status);
        // Error bodies only feed a message and `raw_response`; HTML error pages can be large.
        let limit = if success {
            self.max_body_bytes
        } else {
            self.max_body_bytes.min(256 * 1024)
        };
        let bytes = read_body(response, limit, success).await?;
        Ok(Answer {
            status,
            headers,
            rate_limit,
            bytes,
        })
    }

    /// JSON for 2xx (`Null` for 204 or an empty body), Buddy's error body (parsed if
    /// JSON, else a string, the token scrubbed) otherwise.
    fn decode(&self, answer: Answer) -> Result<Upstream, BuddyError> {
        let body = if answer.is_success() {
            decode_json(answer.status, &answer.bytes)?
        } else {
            self.scrub(parse_error_body(&answer.bytes).1)
        };
        Ok(Upstream {
            status: answer.status,
            body,
            rate_limit: answer.rate_limit,
            headers: answer.headers,
        })
    }

    /// Removes the account's token from an error body, should Buddy ever echo it.
    pub fn scrub(&self, body: Value) -> Value {
        let token = self.token.expose();
        if token.len() < 4 {
            return body;
        }
        let text = body.to_string();
        if !text.contains(token) {
            return body;
        }
        let cleaned = text.replace(token, "[redacted]");
        serde_json::from_str(&cleaned).unwrap_or(Value::String("[redacted]".into()))
    }
}

/// A 2xx body as JSON: `Null` for 204 or an empty body.
pub fn decode_json(status: u16, bytes: &[u8]) -> Result<Value, BuddyError> {
    if status == 204 || bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(Value::Null);
    }
    serde_json::from_slice(bytes)
        .map_err(|e| BuddyError::Decode(format!("invalid JSON from Buddy: {e}")))
}

/// Reads at most `limit` bytes; a longer success body is an error, a longer error body
/// is cut (its message is all we need).
async fn read_body(
    mut response: RawResponse,
    limit: usize,
    fail_when_too_long: bool,
) -> Result<Vec<u8>, BuddyError> {
    let mut buf = Vec::with_capacity(
        response
            .content_length()
            .map_or(0, |n| n.min(limit as u64) as usize),
    );
    while let Some(chunk) = response.chunk().await? {
        if buf.len() + chunk.len() > limit {
            if fail_when_too_long {
                return Err(BuddyError::Decode(format!(
                    "body larger than {limit} bytes"
                )));
            }
            buf.extend_from_slice(&chunk[..limit - buf.len()]);
            break;
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf)
}

/// Joins `path` onto `base` without losing the base's own path, refusing anything that
/// could step outside it or smuggle another target.
pub fn join_url(base: &Url, path: &str, query: &[(String, String)]) -> Result<Url, BuddyError> {
    let path = validate_path(path)?;
    let prefix = base.path().trim_end_matches('/');
    let mut url = base.clone();
    url.set_fragment(None);
    url.set_query(None);
    url.set_path(&format!("{prefix}{path}"));
    if !url.path().starts_with(prefix) {
        return Err(BuddyError::InvalidPath(
            "the path leaves the base URL".into(),
        ));
    }
    if !query.is_empty() {
        url.query_pairs_mut()
            .extend_pairs(query.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    }
    Ok(url)
}

/// Accepts `/a/b` or `a/b` (returned with a leading `/`); refuses `..`/`.` segments,
/// `//`, backslashes, encoded separators and dots, `%25` (double encoding), `;` path
/// parameters, `?`/`#`, control characters (CR/LF), raw or encoded, and schemes.
pub fn validate_path(path: &str) -> Result<String, BuddyError> {
    let refuse = |why: &str| Err(BuddyError::InvalidPath(why.to_owned()));
    if path.is_empty() {
        return refuse("empty path");
    }
    if path.chars().any(char::is_control) {
        return refuse("control characters");
    }
    if path.contains(['\\', '?', '#', ';']) {
        return refuse("backslash, `?`, `#` or `;` in the path");
    }
    if has_encoded(path, &[b"2f", b"5c", b"2e", b"25", b"3f", b"23"]) {
        return refuse("encoded separator or dot");
    }
    if has_encoded_control(path) {
        return refuse("encoded control characters (CR/LF, NUL)");
    }
    let first = path.trim_start_matches('/').split('/').next().unwrap_or("");
    if first.contains(':') || path.starts_with("//") {
        return refuse("absolute URL or scheme");
    }
    let path = if path.starts_with('/') {
        path.to_owned()
    } else {
        format!("/{path}")
    };
    if path.contains("//") {
        return refuse("empty segment");
    }
    if path.split('/').any(|seg| seg == "." || seg == "..") {
        return refuse("dot segment");
    }
    Ok(path)
}

/// Whether `text` holds `%XY` for any of `codes` (lower-case hex digits), in either case.
pub fn has_encoded(text: &str, codes: &[&[u8; 2]]) -> bool {
    text.as_bytes().windows(3).any(|w| {
        w[0] == b'%'
            && codes
                .iter()
                .any(|c| w[1].to_ascii_lowercase() == c[0] && w[2].to_ascii_lowercase() == c[1])
    })
}

/// Whether `text` holds an escape of a control character (`%00`–`%1F`, `%7F`): decoded
/// by whatever reads the path next, CR/LF could split a request or a log line.
pub fn has_encoded_control(text: &str) -> bool {
    text.as_bytes().windows(3).any(|w| {
        let hex = |b: u8| (b as char).to_digit(16);
        match (w[0], hex(w[1]), hex(w[2])) {
            (b'%', Some(high), Some(low)) => {
                let byte = high * 16 + low;
                byte < 0x20 || byte == 0x7f
            }
            _ => false,
        }
    })
}

/// Headers never forwarded: hop-by-hop ones, `Host` (ours), credentials (ours), and
/// `Content-Length` (recomputed from the body).
fn forwardable_headers(mut headers: HeaderMap) -> HeaderMap {
    strip_hop_by_hop(&mut headers);
    for name in [
        header::AUTHORIZATION,
        header::PROXY_AUTHORIZATION,
        header::HOST,
        header::CONTENT_LENGTH,
    ] {
        headers.remove(name);
    }
    headers
}

/// Removes the hop-by-hop headers (RFC 9110 §7.6.1) of a message a proxy passes on:
/// those the `Connection` header names, and the standard ones.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named_by_connection: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named_by_connection {
        headers.remove(name);
    }
    for name in [
        header::CONNECTION,
        header::TE,
        header::TRAILER,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
        header::PROXY_AUTHENTICATE,
        KEEP_ALIVE,
        PROXY_CONNECTION,
    ] {
        headers.remove(name);
    }
}

/// Hop-by-hop headers that `http` has no constant for.
const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// The span of one upstream call, with OpenTelemetry attribute names: HTTP client
/// ones, and the CI/CD run and task run ids when the Buddy path names them (Buddy's
/// paths carry pipeline ids, not names, so `cicd.pipeline.name` is left to callers
/// that know it). The query string is left out (it may carry `access_token`), and so
/// are all headers. At `debug`: at the default `info` the span would be built and its
/// fields formatted for every proxied call, with nothing inside it ever printed.
fn upstream_span(method: &Method, url: &Url) -> tracing::Span {
    tracing::debug_span!(
        "buddy.request",
        otel.kind = "client",
        http.request.method = %method,
        server.address = url.host_str().unwrap_or_default(),
        url.path = url.path(),
        cicd.pipeline.run.id = id_after(url.path(), "executions"),
        cicd.pipeline.task.run.id = id_after(url.path(), "action_executions"),
        http.response.status_code = tracing::field::Empty,
        retry.count = tracing::field::Empty,
        governor.wait_ms = tracing::field::Empty,
    )
}

/// The segment after `collection` in a Buddy path (`…/executions/42` → `42`).
fn id_after<'a>(path: &'a str, collection: &str) -> Option<&'a str> {
    let mut segments = path.split('/');
    segments.find(|segment| *segment == collection)?;
    segments.next().filter(|id| !id.is_empty())
}

/// Buddy's dates: RFC 3339 with 0–3 fractional digits, occasionally without a zone
/// (taken as UTC).
fn parse_buddy_datetime(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s.trim())
        .map(|d| d.with_timezone(&Utc))
        .ok()
        .or_else(|| {
            NaiveDateTime::parse_from_str(s.trim(), "%Y-%m-%dT%H:%M:%S%.f")
                .ok()
                .map(|n| n.and_utc())
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base(s: &str) -> Url {
        Url::parse(s).unwrap()
    }

    #[test]
    fn joins_under_the_base_path() {
        let b = base("https://buddy.example.com/api");
        let u = join_url(&b, "/workspaces", &[]).unwrap();
        assert_eq!(u.as_str(), "https://buddy.example.com/api/workspaces");
        let b = base("https://buddy.example.com/api/");
        let u = join_url(
            &b,
            "workspaces/acme/projects",
            &[("page".into(), "2".into())],
        )
        .unwrap();
        assert_eq!(
            u.as_str(),
            "https://buddy.example.com/api/workspaces/acme/projects?page=2"
        );
        let b = base("https://api.buddy.works");
        let q = vec![("a b".to_string(), "c&d=e".to_string())];
        let u = join_url(&b, "/user", &q).unwrap();
        assert_eq!(u.as_str(), "https://api.buddy.works/user?a+b=c%26d%3De");
    }

    #[test]
    fn refuses_paths_that_escape() {
        let b = base("https://buddy.example.com/api");
        for bad in [
            "",
            "/../admin",
            "/workspaces/../../x",
            "/a/./b",
            "..",
            "//evil.example/x",
            "/a//b",
            "/a%2fb",
            "/a%2Fb",
            "/a%5cb",
            "/%2e%2e/x",
            "/a%252fb",
            "/a\\b",
            "/a\r\nHost: x",
            "/a\nb",
            "https://evil.example/x",
            "http:/evil",
            "javascript:alert(1)",
            "/a?x=1",
            "/a#f",
            "/..;/x",
            "/a%00",
            "/workspaces/buddy%0d%0aX-Injected:1",
            "/a%0Ab",
            "/a%09b",
            "/a%7f",
            "/a%1F",
        ] {
            assert!(
                matches!(join_url(&b, bad, &[]), Err(BuddyError::InvalidPath(_))),
                "{bad:?} must be refused"
            );
        }
        assert!(join_url(&b, "/workspaces/acme/projects/p-1/pipelines/7", &[]).is_ok());
        assert!(join_url(&b, "/workspaces/a%20b/x%C3%BC%7e", &[]).is_ok());
    }

    #[test]
    fn parses_rate_limit_headers() {
        let mut h = HeaderMap::new();
        h.insert("X-Rate-Limit-Limit", HeaderValue::from_static("1"));
        h.insert("x-rate-limit-remaining", HeaderValue::from_static(" 999 "));
        h.insert("X-Rate-Limit-Reset", HeaderValue::from_static("1700000000"));
        assert_eq!(
            RateLimitHeaders::from_headers(&h),
            RateLimitHeaders {
                limit: Some(1),
                remaining: Some(999),
                reset: Some(1_700_000_000),
                date: None,
            }
        );
        h.insert(
            "Date",
            HeaderValue::from_static("Tue, 14 Nov 2023 22:13:20 GMT"),
        );
        assert_eq!(RateLimitHeaders::from_headers(&h).date, Some(1_700_000_000));
        h.insert(
            "X-Rate-Limit-Reset",
            HeaderValue::from_static("1700000000.750"),
        );
        assert_eq!(
            RateLimitHeaders::from_headers(&h).reset,
            Some(1_700_000_000)
        );
        for bad in ["soon", "17.x", "1.2.3", ""] {
            h.insert("X-Rate-Limit-Reset", HeaderValue::from_static(bad));
            assert_eq!(RateLimitHeaders::from_headers(&h).reset, None, "{bad}");
        }
        assert!(RateLimitHeaders::from_headers(&HeaderMap::new()).is_empty());
    }

    #[test]
    fn drops_hop_by_hop_and_credentials() {
        let mut h = HeaderMap::new();
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer caller"),
        );
        h.insert(header::HOST, HeaderValue::from_static("cigate.local"));
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("close, x-drop-me"),
        );
        h.insert("x-drop-me", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        h.insert(
            "x-buddy-media-type",
            HeaderValue::from_static("buddy.v1.1.0"),
        );
        let out = forwardable_headers(h);
        let names: Vec<&str> = out.keys().map(|k| k.as_str()).collect();
        assert_eq!(names.len(), 2, "{names:?}");
        assert!(out.contains_key(header::CONTENT_TYPE));
        assert!(out.contains_key("x-buddy-media-type"));
    }

    #[test]
    fn bearer_is_sensitive_and_debug_hides_the_token() {
        let pool = HttpPool::new(UpstreamPolicy::default()).unwrap();
        let c = BuddyClient::new(
            &pool,
            base("https://api.buddy.works"),
            Secret::new("tok-plaintext-123"),
        );
        let v = c.bearer.clone().unwrap();
        assert!(v.is_sensitive());
        assert!(!format!("{v:?}").contains("plaintext"));
        assert!(!format!("{c:?}").contains("plaintext"));
        let bad = BuddyClient::new(&pool, base("https://api.buddy.works"), Secret::new("a\nb"));
        let url = base("https://api.buddy.works/workspaces");
        assert!(matches!(
            bad.outgoing(Method::GET, &url, HeaderMap::new(), None),
            Err(BuddyError::InvalidCredential)
        ));
    }

    #[test]
    fn parses_buddy_dates() {
        for s in [
            "2016-02-29T11:23:04Z",
            "2016-03-29T08:05:30.33Z",
            "2016-11-18T12:38:16.000Z",
            "2016-11-18T12:38:16",
        ] {
            assert!(parse_buddy_datetime(s).is_some(), "{s}");
        }
        assert!(parse_buddy_datetime("yesterday").is_none());
    }
}
