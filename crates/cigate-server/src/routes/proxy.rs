//! `/proxy/<Buddy path>` and `/custom/<Buddy path>`: any Buddy call, with the account's
//! credential injected and the shared upstream pipeline (governor, retries) around it.
//!
//! `/proxy` answers in cigate's conventions: a paged Buddy list comes back in the list
//! envelope (Buddy's array kept byte for byte, `next_cursor` wrapping Buddy's `page`), a
//! single object exactly as Buddy sent it, an error as problem+json. `/custom` streams
//! Buddy's status, headers and body through untouched, so large logs never sit in memory.
//!
//! The path is taken from the raw request URI (axum's `Path` would percent-decode it)
//! and refused before any lookup or upstream call when it could leave the account's
//! Buddy base URL.

use axum::body::Body;
use axum::extract::{Request, State};
use axum::handler::Handler;
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{post, MethodRouter};
use axum::{Extension, Router};
use cigate_buddy::client::{
    has_encoded, strip_hop_by_hop, validate_path, RateLimitHeaders, RawBody, RawRequest,
    RawResponse,
};
use cigate_core::cursor::CursorBinding;
use cigate_core::RateLimit;
use futures::StreamExt;
use serde_json::value::RawValue;
use serde_json::Value;

use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::extract::{QueryPairs, TIMEOUT_PARAM};
use crate::gateway::{self, read_limited, Gateway, Sent};
use crate::limits::Slot;
use crate::state::AppState;

/// POST and PATCH honour `Idempotency-Key` through the same layer as unified writes;
/// the other methods skip that layer (it would only pass them through, at a cost on
/// the hot path). Methods outside the list reach the handler, which refuses them.
pub fn routes(state: AppState) -> Router<AppState> {
    fn methods<H, T>(state: &AppState, handler: H) -> MethodRouter<AppState>
    where
        H: Handler<T, AppState>,
        T: 'static,
    {
        post(handler.clone())
            .patch(handler.clone())
            .route_layer(axum::middleware::from_fn_with_state(
                state.clone(),
                crate::idempotency::layer,
            ))
            .get(handler.clone())
            .put(handler.clone())
            .delete(handler.clone())
            .options(handler.clone())
            .fallback(handler)
    }
    Router::new()
        .route("/proxy/{*path}", methods(&state, proxy))
        .route("/custom/{*path}", methods(&state, custom))
}

/// Largest Buddy body `/proxy` reads to wrap or return (`/custom` streams, unbounded).
const MAX_PROXY_BODY: usize = 64 * 1024 * 1024;

/// Buddy's page size when the caller sends no `per_page`, and its ceiling.
const BUDDY_DEFAULT_PER_PAGE: u64 = 20;
const BUDDY_MAX_PER_PAGE: u64 = 50;

/// Keys a Buddy collection object may carry besides its one array.
const COLLECTION_KEYS: &[&str] = &[
    "url",
    "html_url",
    "page",
    "page_size",
    "total_page_count",
    "element_count",
    "total_element_count",
];

/// Query parameters that are cigate's, never Buddy's.
const OWN_PARAMS: &[&str] = &["integrated_account_id", TIMEOUT_PARAM, "next_cursor"];

/// What the caller sends that must never reach Buddy: its own credentials and cookies.
/// Hop-by-hop headers, `Host` and `Content-Length` are dropped by the client.
const CALLER_ONLY_HEADERS: [HeaderName; 3] = [
    header::COOKIE,
    HeaderName::from_static(crate::idempotency::HEADER),
    header::FORWARDED,
];

#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    Proxy,
    Custom,
}

impl Mode {
    fn prefix(self) -> &'static str {
        match self {
            Mode::Proxy => "/proxy",
            Mode::Custom => "/custom",
        }
    }
}

#[utoipa::path(get, path = "/proxy/{path}", tag = crate::openapi::TAG_PROXY, security(("api_token" = [])),
    summary = "Call any Buddy endpoint",
    description = "Sends the request to the account's Buddy with its credential, under the account's rate governor and retries. Any method is accepted (GET is shown). A paged Buddy list comes back in the list envelope, Buddy's array byte for byte and `next_cursor` wrapping Buddy's `page`; a single object exactly as Buddy sent it; an error as problem+json with Buddy's status and body.",
    params(
        ("path" = String, Path, description = "Buddy API path, e.g. `workspaces/acme/projects`", example = "workspaces"),
        ("integrated_account_id" = String, Query, description = "the linked account"),
        ("next_cursor" = Option<String>, Query, description = "from a previous list page"),
        ("truto_timeout_ms" = Option<u32>, Query, minimum = 1, maximum = 300000, description = "deadline of the call, retries and rate-limit waits included"),
    ),
    responses(
        (status = 200, description = "Buddy's object as sent, or its list in the list envelope",
            example = json!({"result": [{"url": "https://api.buddy.works/workspaces/acme", "domain": "acme", "name": "Acme"}],
                "next_cursor": null, "prev_cursor": null, "result_count": 1})),
        (status = 400, description = "a path that could leave the Buddy host, a missing account id, or a bad cursor"),
        (status = 403, description = "Buddy refused the call"),
        (status = 404, description = "no such account, or Buddy has no such path"),
        (status = 502, description = "Buddy failed, could not be reached, or sent a body it labelled JSON that is not"),
        (status = 504, description = "Buddy did not answer within the deadline"),
        (status = "default", description = "any other error status Buddy answered, with Buddy's body in `raw_response`",
            body = crate::openapi::Problem, content_type = "application/problem+json"),
    ))]
pub async fn proxy(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    request: Request,
) -> ApiResult<Response> {
    passthrough(state, caller, request, Mode::Proxy).await
}

#[utoipa::path(get, path = "/custom/{path}", tag = crate::openapi::TAG_PROXY, security(("api_token" = [])),
    summary = "Call any Buddy endpoint, answer untouched",
    description = "Like `/proxy`, but Buddy's status, headers (less hop-by-hop ones and cookies) and body stream through unchanged, so large logs never sit in memory. Any method is accepted (GET is shown).",
    params(
        ("path" = String, Path, description = "Buddy API path", example = "workspaces"),
        ("integrated_account_id" = String, Query, description = "the linked account"),
        ("truto_timeout_ms" = Option<u32>, Query, minimum = 1, maximum = 300000, description = "deadline until Buddy's response head"),
    ),
    responses(
        (status = 200, description = "Buddy's answer: status, headers and body, streamed"),
        (status = 400, description = "a path that could leave the Buddy host, or a missing account id"),
        (status = 502, description = "Buddy could not be reached"),
        (status = 504, description = "Buddy did not answer within the deadline"),
        (status = "default", description = "any other status: Buddy's answer passed through untouched (cigate's own refusals, such as an unknown account, are problem+json)"),
    ))]
pub async fn custom(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    request: Request,
) -> ApiResult<Response> {
    passthrough(state, caller, request, Mode::Custom).await
}

/// Refuses, before anything else happens, a path that could reach anything but the
/// account's Buddy API: `..`, encoded separators, `//`, schemes, control characters and
/// userinfo (`@`). Returns the Buddy path with a leading `/`.
pub(crate) fn buddy_path(raw: &str, mode: Mode) -> ApiResult<String> {
    let rest = raw
        .strip_prefix(mode.prefix())
        .filter(|rest| rest.starts_with('/'))
        .ok_or_else(|| ApiError::InvalidPath("no Buddy path after the prefix".into()))?;
    if rest.contains('@') || has_encoded(rest, &[b"40"]) {
        return Err(ApiError::InvalidPath("`@` in the path".into()));
    }
    validate_path(rest).map_err(|err| ApiError::InvalidPath(err.to_string()))
}

/// The methods `/proxy` and `/custom` forward (the `Allow` of a 405).
const PROXIED_METHODS: &str = "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS";

fn allowed_method(method: &Method) -> ApiResult<()> {
    match *method {
        Method::GET
        | Method::HEAD
        | Method::POST
        | Method::PUT
        | Method::PATCH
        | Method::DELETE
        | Method::OPTIONS => Ok(()),
        _ => Err(ApiError::MethodNotAllowed {
            method: method.to_string(),
            allow: Some(PROXIED_METHODS),
        }),
    }
}

async fn passthrough(
    state: AppState,
    caller: Caller,
    request: Request,
    mode: Mode,
) -> ApiResult<Response> {
    let (parts, body) = request.into_parts();
    let path = buddy_path(parts.uri.path(), mode)?;
    allowed_method(&parts.method)?;
    let query = parse_query(parts.uri.query());
    let account_id = query.account_id("the proxy API")?;
    let timeout = query.timeout(state.default_timeout())?;
    let mut forward: Vec<(String, String)> = query
        .0
        .iter()
        .filter(|(key, _)| !OWN_PARAMS.contains(&key.as_str()))
        .cloned()
        .collect();
    let paging = match mode {
        Mode::Proxy => Some(Paging::new(
            &state,
            &caller,
            account_id,
            &path,
            &query,
            &mut forward,
        )?),
        Mode::Custom => None,
    };
    let body = axum::body::to_bytes(body, state.config.body_limit)
        .await
        .map_err(|_| ApiError::PayloadTooLarge)?;

    let gateway = Gateway::open(&state, &caller, account_id, timeout).await?;

    let mut headers = parts.headers;
    for name in CALLER_ONLY_HEADERS {
        headers.remove(name);
    }
    if mode == Mode::Proxy {
        // `/proxy` reads the body, so it must arrive uncompressed.
        headers.remove(header::ACCEPT_ENCODING);
    }
    let raw = RawRequest {
        method: parts.method,
        path,
        query: forward,
        headers,
        // A buffered body can be replayed, so rate-limited writes are retried too.
        body: (!body.is_empty()).then_some(RawBody::Buffered(body)),
        timeout: Some(timeout),
    };
    match Box::pin(gateway.send(raw)).await? {
        Sent::Refused {
            status,
            headers,
            body,
            error,
        } => match mode {
            // `/custom` answers as Buddy did; `/proxy` in cigate's conventions.
            Mode::Custom => Ok(passed_through(status, headers, Body::from(body))),
            Mode::Proxy => Err(error),
        },
        Sent::Answered { response, slot } => match mode {
            Mode::Custom => Ok(stream_through(response, slot)),
            Mode::Proxy => Box::pin(wrap(&state, &gateway, response, paging)).await,
        },
    }
}

/// The query as `application/x-www-form-urlencoded` pairs, in order (invalid UTF-8 in
/// an escape becomes U+FFFD, as browsers do).
fn parse_query(raw: Option<&str>) -> QueryPairs {
    QueryPairs(
        url::form_urlencoded::parse(raw.unwrap_or("").as_bytes())
            .into_owned()
            .collect(),
    )
}

/// `ratelimit-*` for a proxied answer, from Buddy's `X-Rate-Limit-*`.
fn rate_limit(headers: &HeaderMap) -> Option<RateLimit> {
    let rate = RateLimitHeaders::from_headers(headers);
    (!rate.is_empty()).then_some(RateLimit {
        limit: rate.limit,
        remaining: rate.remaining,
        reset: rate.reset,
    })
}

/// Buddy's response as is, body streamed. Only hop-by-hop headers and cookies (Buddy's
/// session cookies mean nothing to the caller and must not leak) are dropped.
fn stream_through(mut response: RawResponse, slot: Slot) -> Response {
    let status = response.status();
    let headers = std::mem::take(response.headers_mut());
    // The slot is held until the body is through: the connection is busy till then.
    let body = Body::from_stream(response.into_stream().map(move |chunk| {
        let _held = &slot;
        chunk
    }));
    passed_through(status, headers, body)
}

/// `status`, Buddy's headers (less hop-by-hop and cookies, plus `ratelimit-*`) and `body`.
fn passed_through(status: StatusCode, mut headers: HeaderMap, body: Body) -> Response {
    let rate = rate_limit(&headers);
    strip_response_headers(&mut headers);
    if let Some(rate) = &rate {
        gateway::insert_rate_limit_headers(&mut headers, rate);
    }
    let mut out = Response::new(body);
    *out.status_mut() = status;
    *out.headers_mut() = headers;
    out
}

fn strip_response_headers(headers: &mut HeaderMap) {
    strip_hop_by_hop(headers);
    for name in [header::SET_COOKIE, HeaderName::from_static("set-cookie2")] {
        headers.remove(name);
    }
}

/// `page` handling of a `/proxy` call: the cursor the caller passed (decoded into Buddy's
/// `page`) and what the next and previous cursors are bound to.
struct Paging {
    binding: CursorBinding,
    page: u64,
    per_page: u64,
}

impl Paging {
    fn new(
        state: &AppState,
        caller: &Caller,
        account_id: &str,
        path: &str,
        query: &QueryPairs,
        forward: &mut Vec<(String, String)>,
    ) -> ApiResult<Self> {
        let filters: Vec<&(String, String)> =
            forward.iter().filter(|(key, _)| key != "page").collect();
        let binding = CursorBinding {
            environment_id: caller.environment_id.clone(),
            account_id: account_id.to_owned(),
            resource: format!("proxy:{path}"),
            filters: serde_urlencoded::to_string(&filters).unwrap_or_default(),
        };
        let per_page = forward
            .iter()
            .rev()
            .find(|(key, _)| key == "per_page")
            .and_then(|(_, value)| value.trim().parse::<u64>().ok())
            .filter(|n| *n >= 1)
            .map_or(BUDDY_DEFAULT_PER_PAGE, |n| n.min(BUDDY_MAX_PER_PAGE));
        let mut page = forward
            .iter()
            .rev()
            .find(|(key, _)| key == "page")
            .and_then(|(_, value)| value.trim().parse::<u64>().ok())
            .filter(|n| *n >= 1)
            .unwrap_or(1);
        if let Some(cursor) = query.get("next_cursor") {
            let position = state
                .cursors
                .decode(&binding, cursor)
                .map_err(|err| ApiError::InvalidCursor(err.to_string()))?;
            page = position
                .get("page")
                .and_then(Value::as_u64)
                .filter(|n| *n >= 1)
                .ok_or_else(|| ApiError::InvalidCursor("it does not hold a page".into()))?;
            forward.retain(|(key, _)| key != "page");
            forward.push(("page".into(), page.to_string()));
        }
        Ok(Self {
            binding,
            page,
            per_page,
        })
    }

    fn cursor(&self, state: &AppState, page: u64) -> String {
        state
            .cursors
            .encode(&self.binding, &serde_json::json!({ "page": page }))
    }
}

/// A Buddy collection: only envelope keys besides exactly one array.
type Fields<'a> = Vec<(String, &'a RawValue)>;

fn collection(body: &[u8]) -> Option<(Fields<'_>, &RawValue)> {
    if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return None;
    }
    let shape: Shape<'_> = serde_json::from_slice(body).ok()?;
    Some((shape.fields, shape.array?))
}

/// A JSON object read only as far as needed to tell a collection from a single object:
/// the first key that is neither an envelope key nor the one array stops the parse, so
/// a single object costs a few keys, not the whole body.
struct Shape<'a> {
    fields: Fields<'a>,
    array: Option<&'a RawValue>,
}

impl<'de> serde::Deserialize<'de> for Shape<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = Shape<'de>;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a Buddy collection")
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Shape<'de>, A::Error> {
                use serde::de::Error;
                let mut shape = Shape {
                    fields: Vec::new(),
                    array: None,
                };
                while let Some(key) = map.next_key::<String>()? {
                    let value: &'de RawValue = map.next_value()?;
                    if value.get().starts_with('[') {
                        if shape.array.replace(value).is_some() {
                            return Err(A::Error::custom("more than one array"));
                        }
                    } else if !COLLECTION_KEYS.contains(&key.as_str()) {
                        return Err(A::Error::custom("not a collection"));
                    }
                    shape.fields.push((key, value));
                }
                Ok(shape)
            }
        }
        deserializer.deserialize_map(Visit)
    }
}

async fn wrap(
    state: &AppState,
    gateway: &Gateway,
    mut response: RawResponse,
    paging: Option<Paging>,
) -> ApiResult<Response> {
    let status = response.status();
    let headers = std::mem::take(response.headers_mut());
    let rate = rate_limit(&headers);
    let bytes = read_limited(response, MAX_PROXY_BODY).await?;
    if !status.is_success() {
        let err = ApiError::from(gateway.remote_error(status.as_u16(), &bytes));
        let mut out = err.into_response();
        // A 405's `Allow` is what the caller needs to correct the request.
        if let Some(allow) = headers.get(header::ALLOW) {
            out.headers_mut().insert(header::ALLOW, allow.clone());
        }
        return Ok(out);
    }
    let listed = paging.as_ref().and_then(|paging| {
        let (fields, array) = collection(&bytes)?;
        Some(envelope(state, paging, &fields, array))
    });
    let mut out = match listed {
        Some(Ok(body)) => {
            let mut out = Response::new(Body::from(body));
            out.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            out
        }
        Some(Err(err)) => return Err(err),
        None => {
            check_json(&headers, &bytes)?;
            let mut out = Response::new(Body::from(bytes));
            *out.status_mut() = status;
            if let Some(kind) = headers.get(header::CONTENT_TYPE) {
                out.headers_mut().insert(header::CONTENT_TYPE, kind.clone());
            }
            out
        }
    };
    if let Some(rate) = &rate {
        gateway::insert_rate_limit_headers(out.headers_mut(), rate);
    }
    Ok(out)
}

/// A body Buddy labels JSON must parse, as the unified API requires: otherwise 502
/// (`/custom` passes bodies through unread). An empty body is no document at all.
fn check_json(headers: &HeaderMap, bytes: &[u8]) -> ApiResult<()> {
    if !says_json(headers) || bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(());
    }
    serde_json::from_slice::<serde::de::IgnoredAny>(bytes)
        .map(drop)
        .map_err(|err| ApiError::UpstreamUnreachable(format!("invalid JSON from Buddy: {err}")))
}

/// `application/json` or any `+json` media type.
fn says_json(headers: &HeaderMap) -> bool {
    let Some(kind) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let essence = kind
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence == "application/json" || essence.ends_with("+json")
}

/// `{"result": <Buddy's array, byte for byte>, "next_cursor", "prev_cursor",
/// "result_count"}`. Next when Buddy's counters say more pages exist, or, without
/// counters, when the page came back full.
fn envelope(
    state: &AppState,
    paging: &Paging,
    fields: &[(String, &RawValue)],
    array: &RawValue,
) -> ApiResult<Vec<u8>> {
    let items: Vec<&RawValue> = serde_json::from_str(array.get()).map_err(|err| {
        ApiError::UpstreamUnreachable(format!("unreadable list from Buddy: {err}"))
    })?;
    let counter = |name: &str| {
        fields
            .iter()
            .find(|(key, _)| key == name)
            .and_then(|(_, value)| value.get().parse::<u64>().ok())
    };
    let page = counter("page").unwrap_or(paging.page);
    let more = match counter("total_page_count") {
        Some(total) => page < total,
        None => {
            let size = counter("page_size").unwrap_or(paging.per_page);
            !items.is_empty() && items.len() as u64 >= size
        }
    };
    let next = more.then(|| paging.cursor(state, page + 1));
    let prev = (page > 1).then(|| paging.cursor(state, page - 1));
    let json_or_null = |cursor: Option<String>| match cursor {
        Some(c) => Value::String(c).to_string(),
        None => "null".to_owned(),
    };
    let mut out = Vec::with_capacity(array.get().len() + 256);
    out.extend_from_slice(b"{\"result\":");
    out.extend_from_slice(array.get().as_bytes());
    out.extend_from_slice(b",\"next_cursor\":");
    out.extend_from_slice(json_or_null(next).as_bytes());
    out.extend_from_slice(b",\"prev_cursor\":");
    out.extend_from_slice(json_or_null(prev).as_bytes());
    out.extend_from_slice(format!(",\"result_count\":{}}}", items.len()).as_bytes());
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_paths_that_leave_buddy() {
        for bad in [
            "/proxy/workspaces/../admin",
            "/proxy/..",
            "/proxy/a%2fb",
            "/proxy/a%2Fb",
            "/proxy/a%5Cb",
            "/proxy/a%5cb",
            "/proxy//evil.example/x",
            "/proxy/a//b",
            "/proxy/http://evil.example/x",
            "/proxy/http:/evil",
            "/proxy/user@evil.example/x",
            "/proxy/a%40b",
            "/proxy/a\r\nb",
            "/proxy/a%00",
            "/proxy/workspaces/buddy%0d%0aX-Injected:1",
            "/proxy/workspaces/buddy%0D%0A",
            "/proxy/%2e%2e/x",
            "/proxy",
            "/proxyx/user",
        ] {
            assert!(
                matches!(buddy_path(bad, Mode::Proxy), Err(ApiError::InvalidPath(_))),
                "{bad:?} must be refused"
            );
        }
        assert_eq!(
            buddy_path("/custom/workspaces/acme/projects", Mode::Custom).unwrap(),
            "/workspaces/acme/projects"
        );
    }

    #[test]
    fn json_bodies_must_parse() {
        let mut json = HeaderMap::new();
        json.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json; charset=utf-8"),
        );
        assert!(check_json(&json, br#"{"a":1}"#).is_ok());
        assert!(check_json(&json, b"  ").is_ok());
        assert!(matches!(
            check_json(&json, br#"{"a":"#),
            Err(ApiError::UpstreamUnreachable(_))
        ));
        let mut problem = HeaderMap::new();
        problem.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        assert!(check_json(&problem, b"{").is_err());
        let mut text = HeaderMap::new();
        text.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        assert!(check_json(&text, b"{").is_ok());
        assert!(check_json(&HeaderMap::new(), b"{").is_ok());
    }

    #[test]
    fn recognises_collections_only() {
        let list = br#"{"url":"u","html_url":"h","projects":[{"name":"a"},{"name":"b"}]}"#;
        let (_, array) = collection(list).unwrap();
        assert_eq!(array.get(), r#"[{"name":"a"},{"name":"b"}]"#);
        let paged = br#"{"page":1,"page_size":20,"total_page_count":3,"element_count":1,"total_element_count":41,"executions":[{}]}"#;
        assert!(collection(paged).is_some());
        for single in [
            &br#"{"url":"u","name":"p","refs":["main"]}"#[..],
            br#"{"url":"u","a":[],"b":[]}"#,
            br#"[1,2]"#,
            br#""text""#,
            b"",
            br#"{"url":"u"}"#,
        ] {
            assert!(
                collection(single).is_none(),
                "{}",
                String::from_utf8_lossy(single)
            );
        }
    }
}
