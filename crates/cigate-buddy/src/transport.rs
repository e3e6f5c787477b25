//! The wire under every Buddy call: hyper's pooled client over rustls, resolving names
//! through the connect-time SSRF policy ([`PolicyResolver`]).
//!
//! Why hyper and not reqwest: on the proxy's hot path reqwest re-parsed every URL
//! (twice, with IDNA), cloned its connector and ran redirect and retry layers per
//! request, none of which cigate uses (no redirects, no cookies, no proxies, no
//! decompression; retries are [`crate::retry`]'s). Buddy is spoken to over HTTP/1.1 or
//! HTTP/2 as ALPN decides.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::{Stream, TryStreamExt};
use http::header::HeaderMap;
use http::{Request, Response, StatusCode, Version};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Either, Full, StreamBody};
use hyper::body::{Body as _, Frame, Incoming};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use thread_local::ThreadLocal;

use crate::base_url::{BaseUrlError, PolicyResolver, UpstreamPolicy};
use crate::error::BuddyError;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What a request to Buddy carries: a buffered body (replayable) or a stream.
pub type RequestBody = UnsyncBoxBody<Bytes, BoxError>;

/// Buddy's answer as it arrives, or rebuilt from a body already read (see
/// [`crate::retry`], which reads a 403 to tell a rate limit from a permission error).
type ResponseBody = Either<Incoming, Full<Bytes>>;

/// An idle pooled connection is closed after this long.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);

type Connector = HttpsConnector<HttpConnector<PolicyResolver>>;
type PooledClient = Client<Connector, RequestBody>;

/// The pooled client shared by every account. Cheap to clone.
///
/// Each thread that sends keeps a pool of its own: a connection's task runs on the
/// runtime that opened it, so a request sent from another thread over a shared pool
/// would hand every request and answer across threads (wake-ups, futex calls). With
/// one pool per thread, a server running a single-threaded runtime per core (see
/// `cigate serve`'s workers) sends and receives on the thread that took the request.
#[derive(Clone)]
pub(crate) struct Transport {
    connector: Connector,
    clients: Arc<ThreadLocal<PooledClient>>,
    read_timeout: Duration,
}

impl fmt::Debug for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Transport")
            .field("read_timeout", &self.read_timeout)
            .finish_non_exhaustive()
    }
}

impl Transport {
    pub(crate) fn new(
        policy: UpstreamPolicy,
        connect_timeout: Duration,
        read_timeout: Duration,
    ) -> Result<Self, BuddyError> {
        let mut http = HttpConnector::new_with_resolver(PolicyResolver::new(policy));
        // The TLS layer below takes `https`; plain `http` is refused per request by
        // the policy unless private upstreams (the simulator, tests) are allowed.
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(connect_timeout));
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_webpki_roots(rustls::crypto::ring::default_provider())
            .map_err(|e| BuddyError::Transport(format!("TLS configuration: {e}")))?
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .wrap_connector(http);
        Ok(Self {
            connector,
            clients: Arc::default(),
            read_timeout,
        })
    }

    /// This thread's pool.
    fn client(&self) -> &PooledClient {
        self.clients.get_or(|| {
            Client::builder(TokioExecutor::new())
                .pool_idle_timeout(POOL_IDLE_TIMEOUT)
                .pool_timer(TokioTimer::new())
                .timer(TokioTimer::new())
                .build(self.connector.clone())
        })
    }

    /// One attempt: the response head, or why there is none.
    pub(crate) async fn send(
        &self,
        request: Request<RequestBody>,
    ) -> Result<RawResponse, hyper_util::client::legacy::Error> {
        let response = self.client().request(request).await?;
        Ok(RawResponse {
            inner: response.map(Either::Left),
            read_timeout: self.read_timeout,
        })
    }
}

/// A request body that is sent once and never replayed.
pub fn stream_body<S, E>(stream: S) -> RequestBody
where
    S: Stream<Item = Result<Bytes, E>> + Send + 'static,
    E: Into<BoxError> + 'static,
{
    StreamBody::new(stream.map_ok(Frame::data).map_err(Into::into)).boxed_unsync()
}

/// A buffered request body (empty when `bytes` is).
pub(crate) fn full_body(bytes: Bytes) -> RequestBody {
    Full::new(bytes)
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// Buddy's answer: status and headers at once, the body as it arrives, each chunk
/// within the pool's read timeout (so a stalled stream ends instead of hanging).
#[derive(Debug)]
pub struct RawResponse {
    inner: Response<ResponseBody>,
    read_timeout: Duration,
}

impl RawResponse {
    pub fn status(&self) -> StatusCode {
        self.inner.status()
    }

    pub fn version(&self) -> Version {
        self.inner.version()
    }

    pub fn headers(&self) -> &HeaderMap {
        self.inner.headers()
    }

    pub fn headers_mut(&mut self) -> &mut HeaderMap {
        self.inner.headers_mut()
    }

    /// The body's length when Buddy declared it.
    pub fn content_length(&self) -> Option<u64> {
        self.inner.body().size_hint().exact()
    }

    /// An answer with its body in hand.
    #[cfg(test)]
    pub(crate) fn buffered(status: StatusCode, body: Bytes) -> Self {
        let mut inner = Response::new(Either::Right(Full::new(body)));
        *inner.status_mut() = status;
        Self {
            inner,
            read_timeout: Duration::from_secs(30),
        }
    }

    /// The same head with a body already read.
    pub(crate) fn rebuilt(&self, headers: HeaderMap, body: Bytes) -> Self {
        let mut inner = Response::new(Either::Right(Full::new(body)));
        *inner.status_mut() = self.status();
        *inner.version_mut() = self.version();
        *inner.headers_mut() = headers;
        Self {
            inner,
            read_timeout: self.read_timeout,
        }
    }

    /// The next piece of the body; `None` at its end.
    pub async fn chunk(&mut self) -> Result<Option<Bytes>, BuddyError> {
        loop {
            let frame = tokio::time::timeout(self.read_timeout, self.inner.body_mut().frame())
                .await
                .map_err(|_| BuddyError::Timeout)?;
            match frame {
                None => return Ok(None),
                Some(Err(err)) => return Err(BuddyError::Transport(error_chain(&*err))),
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        if !data.is_empty() {
                            return Ok(Some(data));
                        }
                    }
                }
            }
        }
    }

    /// The whole body (callers bound its size themselves, or trust the source).
    pub async fn bytes(mut self) -> Result<Bytes, BuddyError> {
        let mut buf = Vec::new();
        while let Some(chunk) = self.chunk().await? {
            buf.extend_from_slice(&chunk);
        }
        Ok(buf.into())
    }

    /// The body parsed as JSON.
    pub async fn json<T: serde::de::DeserializeOwned>(self) -> Result<T, BuddyError> {
        let bytes = self.bytes().await?;
        serde_json::from_slice(&bytes)
            .map_err(|e| BuddyError::Decode(format!("invalid JSON from Buddy: {e}")))
    }

    /// The body as a stream that ends after its first error.
    pub fn into_stream(self) -> impl Stream<Item = Result<Bytes, BuddyError>> + Send + 'static {
        futures::stream::unfold(Some(self), |state| async move {
            let mut response = state?;
            match response.chunk().await {
                Ok(Some(bytes)) => Some((Ok(bytes), Some(response))),
                Ok(None) => None,
                Err(err) => Some((Err(err), None)),
            }
        })
    }
}

/// What a failed attempt says: the policy's refusal, a connect failure (nothing was
/// sent), or a failure after sending.
pub(crate) fn map_error(err: &hyper_util::client::legacy::Error) -> BuddyError {
    match find_source::<BaseUrlError>(err) {
        // A name that does not resolve is a connection failure, not a refusal.
        Some(unresolvable @ BaseUrlError::Unresolvable(_)) => {
            return BuddyError::Connect(unresolvable.to_string())
        }
        Some(policy) => return BuddyError::Forbidden(policy.clone()),
        None => {}
    }
    let text = error_chain(err);
    if err.is_connect() {
        BuddyError::Connect(text)
    } else {
        BuddyError::Transport(text)
    }
}

/// A host name that does not resolve: reported as a connect error, but not worth
/// retrying within one call.
pub(crate) fn is_unresolvable(err: &hyper_util::client::legacy::Error) -> bool {
    matches!(
        find_source::<BaseUrlError>(err),
        Some(BaseUrlError::Unresolvable(_))
    )
}

fn find_source<'a, T: std::error::Error + 'static>(
    err: &'a (dyn std::error::Error + 'static),
) -> Option<&'a T> {
    let mut current = Some(err);
    while let Some(e) = current {
        if let Some(found) = e.downcast_ref::<T>() {
            return Some(found);
        }
        current = e.source();
    }
    None
}

pub(crate) fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![err.to_string()];
    let mut current = err.source();
    while let Some(e) = current {
        let text = e.to_string();
        if parts.last() != Some(&text) {
            parts.push(text);
        }
        current = e.source();
    }
    parts.join(": ")
}
