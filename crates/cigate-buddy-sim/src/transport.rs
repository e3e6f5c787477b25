//! Cross-cutting behaviour of Buddy's API: request counting, injected faults,
//! per-token rate limiting with `X-Rate-Limit-*` headers, the media-type echo,
//! token authentication and scope checks.

use std::time::Duration as StdDuration;

use axum::body::Body;
use axum::extract::{ConnectInfo, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::auth::TokenInfo;
use crate::error::{error_body, SimError};
use crate::faults::FaultKind;
use crate::listener::ConnHandle;
use crate::sim::Sim;

pub const MEDIA_TYPE: &str = "x-buddy-media-type";
const DEFAULT_MEDIA_TYPE: &str = "buddy.v1.0.0";

/// Token presented by the request: Bearer header first, then `?access_token=`.
pub fn presented_token(headers: &HeaderMap, query: Option<&str>) -> Option<String> {
    if let Some(v) = headers.get("authorization").and_then(|v| v.to_str().ok()) {
        let v = v.trim();
        if let Some(t) = v
            .strip_prefix("Bearer ")
            .or_else(|| v.strip_prefix("bearer "))
        {
            return Some(t.trim().to_string());
        }
    }
    query.and_then(|q| {
        url::form_urlencoded::parse(q.as_bytes())
            .find(|(k, _)| k == "access_token")
            .map(|(_, v)| v.into_owned())
    })
}

fn relative_path(sim: &Sim, path: &str) -> String {
    let base = sim.config().normalized_base_path();
    match path.strip_prefix(&base) {
        Some(rest) if !base.is_empty() => rest.to_string(),
        _ => path.to_string(),
    }
}

/// Counts the request, applies injected faults, then runs the request.
pub async fn count_and_fault(State(sim): State<Sim>, req: Request, next: Next) -> Response {
    let method = req.method().as_str().to_string();
    let path = relative_path(&sim, req.uri().path());
    sim.record_request(&method, &path);
    let fault = sim.inner.faults.lock().take(&method, &path);
    match fault {
        None => next.run(req).await,
        Some(FaultKind::Latency { ms }) => {
            tokio::time::sleep(StdDuration::from_millis(ms)).await;
            next.run(req).await
        }
        Some(FaultKind::Status { status }) => {
            let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            (code, axum::Json(error_body("Internal server error"))).into_response()
        }
        Some(FaultKind::RateLimit) => {
            let now = sim.now();
            let token = presented_token(req.headers(), req.uri().query()).unwrap_or_default();
            let (v, policy) = {
                let limiter = sim.inner.limiter.lock();
                (limiter.peek(&token, now), limiter.policy)
            };
            let mut resp = SimError::rate_limited(&policy, &v, now).into_response();
            put_rate_headers(resp.headers_mut(), v.limit, 0, &v.reset_header(&policy));
            resp
        }
        Some(FaultKind::MalformedJson) => (
            StatusCode::OK,
            [("content-type", "application/json")],
            "{\"url\":\"truncated\",\"items\":[{\"id\":1,",
        )
            .into_response(),
        Some(FaultKind::ResetMidBody) => {
            let (mut parts, body) = next.run(req).await.into_parts();
            let bytes = axum::body::to_bytes(body, usize::MAX)
                .await
                .unwrap_or_default();
            let half = bytes.slice(..bytes.len() / 2);
            // Chunked from here: the length would let a client tell the body short
            // without the reset.
            parts.headers.remove(axum::http::header::CONTENT_LENGTH);
            let stream = futures::stream::iter([
                Ok(half),
                Err(std::io::Error::new(
                    std::io::ErrorKind::ConnectionReset,
                    "injected reset mid-body",
                )),
            ]);
            Response::from_parts(parts, Body::from_stream(stream))
        }
        Some(FaultKind::Reset) => {
            if let Some(ConnectInfo(conn)) = req.extensions().get::<ConnectInfo<ConnHandle>>() {
                conn.kill();
            }
            // Without a killable connection the body fails mid-stream instead.
            let stream = futures::stream::once(async {
                Err::<axum::body::Bytes, std::io::Error>(std::io::Error::new(
                    std::io::ErrorKind::ConnectionReset,
                    "injected reset",
                ))
            });
            Response::new(Body::from_stream(stream))
        }
    }
}

fn put_rate_headers(headers: &mut HeaderMap, limit: u64, remaining: u64, reset: &str) {
    for (name, value) in [
        ("x-rate-limit-limit", limit.to_string()),
        ("x-rate-limit-remaining", remaining.to_string()),
        ("x-rate-limit-reset", reset.to_string()),
    ] {
        if let Ok(v) = HeaderValue::from_str(&value) {
            headers.insert(name, v);
        }
    }
}

/// Rate limit per presented token (anonymous requests share one bucket),
/// media-type echo, and due state-machine transitions before the handler runs.
pub async fn rate_limit(State(sim): State<Sim>, req: Request, next: Next) -> Response {
    sim.tick();
    let now = sim.now();
    let key = presented_token(req.headers(), req.uri().query()).unwrap_or_default();
    let media = req
        .headers()
        .get(MEDIA_TYPE)
        .cloned()
        .unwrap_or(HeaderValue::from_static(DEFAULT_MEDIA_TYPE));
    let (verdict, policy) = {
        let mut limiter = sim.inner.limiter.lock();
        (limiter.check(&key, now), limiter.policy)
    };
    let mut resp = if verdict.allowed {
        next.run(req).await
    } else {
        SimError::rate_limited(&policy, &verdict, now).into_response()
    };
    put_rate_headers(
        resp.headers_mut(),
        verdict.limit,
        verdict.remaining,
        &verdict.reset_header(&policy),
    );
    resp.headers_mut().insert(MEDIA_TYPE, media);
    // Buddy's `Date` is Buddy's clock: the simulator's, which tests may move off ours.
    if let Ok(date) = HeaderValue::from_str(&now.format("%a, %d %b %Y %H:%M:%S GMT").to_string()) {
        resp.headers_mut().insert(axum::http::header::DATE, date);
    }
    resp
}

/// The authenticated caller of a Buddy API request.
#[derive(Debug, Clone)]
pub struct Caller {
    pub token: TokenInfo,
    pub media_type: Option<String>,
}

impl Caller {
    /// 403 unless the token holds `scope` (or a scope implying it).
    pub fn require(&self, scope: &str) -> Result<(), SimError> {
        self.require_any(&[scope])
    }

    pub fn require_any(&self, scopes: &[&str]) -> Result<(), SimError> {
        if scopes.iter().any(|s| self.token.has_scope(s)) {
            Ok(())
        } else {
            Err(SimError::Forbidden(format!(
                "Insufficient scope. This method requires {}.",
                scopes.join(" or ")
            )))
        }
    }

    pub fn wants_v1_1(&self) -> bool {
        self.media_type.as_deref() == Some("buddy.v1.1.0")
    }

    /// 403/404 checks every workspace-scoped request goes through.
    pub fn workspace_access(&self, sim: &Sim, domain: &str) -> Result<(), SimError> {
        let enabled = sim.read(|s, _| s.workspace(domain).map(|w| w.api_enabled));
        match enabled {
            None => Err(SimError::not_found("Workspace")),
            Some(_) if !self.token.may_access_workspace(domain) => Err(SimError::Forbidden(
                "Access to this workspace is restricted for this token.".into(),
            )),
            Some(false) => Err(SimError::Status {
                status: sim.config().api_disabled_status,
                message: "API is disabled in this workspace.".into(),
            }),
            Some(true) => Ok(()),
        }
    }
}

impl FromRequestParts<Sim> for Caller {
    type Rejection = SimError;

    async fn from_request_parts(parts: &mut Parts, sim: &Sim) -> Result<Self, Self::Rejection> {
        let raw = presented_token(&parts.headers, parts.uri.query())
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                SimError::Unauthorized(
                    "Authentication required. Provide a valid access token.".into(),
                )
            })?;
        let token = sim
            .token(&raw)
            .ok_or_else(|| SimError::Unauthorized("Invalid access token.".into()))?;
        if token.expired(sim.now()) {
            return Err(SimError::Unauthorized("Access token has expired.".into()));
        }
        let media_type = parts
            .headers
            .get(MEDIA_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        Ok(Self { token, media_type })
    }
}

/// `page`/`per_page` as Buddy reads them: 1-based, default 20, clamped to 50.
#[derive(Debug, Clone, Copy)]
pub struct Page {
    pub page: u64,
    pub per_page: u64,
}

impl Page {
    pub fn from_query(page: Option<&str>, per_page: Option<&str>) -> Self {
        let page = page
            .and_then(|p| p.trim().parse::<u64>().ok())
            .filter(|p| *p >= 1)
            .unwrap_or(1);
        let per_page = per_page
            .and_then(|p| p.trim().parse::<u64>().ok())
            .filter(|p| *p >= 1)
            .unwrap_or(20)
            .min(50);
        Self { page, per_page }
    }

    /// Index range of this page in a list of `total` items.
    pub fn range(&self, total: u64) -> std::ops::Range<u64> {
        let start = (self.page - 1).saturating_mul(self.per_page).min(total);
        let end = start.saturating_add(self.per_page).min(total);
        start..end
    }

    pub fn slice<T: Clone>(&self, items: &[T]) -> Vec<T> {
        let r = self.range(items.len() as u64);
        items[r.start as usize..r.end as usize].to_vec()
    }
}
