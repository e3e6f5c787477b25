//! The Buddy client over real HTTP, against a small axum server on an ephemeral port
//! that answers with Buddy's documented samples, error bodies and rate-limit headers.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::Query;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, delete, get, post};
use axum::{Json, Router};
use cigate_buddy::base_url::{BaseUrlError, UpstreamPolicy};
use cigate_buddy::client::{BuddyClient, HttpPool, RawRequest, USER_AGENT};
use cigate_buddy::error::BuddyError;
use cigate_core::Secret;
use http::Method;
use serde_json::{json, Value};
use url::Url;

const GOOD: &str = "732e9e20-50ba-4047-8a7b-c9b17259a2a2";
const NO_TOKEN_INFO: &str = "11111111-2222-4333-8444-555555555555";

fn rate_headers(remaining: u64) -> [(&'static str, String); 3] {
    [
        ("X-Rate-Limit-Limit", "1".to_string()),
        ("X-Rate-Limit-Remaining", remaining.to_string()),
        ("X-Rate-Limit-Reset", "1700000000".to_string()),
    ]
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get("authorization")?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
}

fn unauthorized() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        rate_headers(999),
        Json(json!({"errors": [{"message": "Invalid or expired token"}]})),
    )
        .into_response()
}

async fn user_token(headers: HeaderMap) -> Response {
    match bearer(&headers) {
        Some(GOOD) => (
            rate_headers(999),
            Json(json!({
                "url": "https://api.buddy.works/user/token",
                "html_url": "https://app.buddy.works/my-id/tokens/abc",
                "id": "abc", "name": "cigate", "token": null,
                "expires_at": "2030-01-02T03:04:05.123Z",
                "scopes": ["WORKSPACE", "EXECUTION_INFO", "TOKEN_INFO"],
                "ip_restrictions": [], "workspace_restrictions": null
            })),
        )
            .into_response(),
        Some(NO_TOKEN_INFO) => (
            StatusCode::FORBIDDEN,
            rate_headers(998),
            Json(json!({"errors": [{"message": "Token does not have scope TOKEN_INFO"}]})),
        )
            .into_response(),
        _ => unauthorized(),
    }
}

async fn workspaces(headers: HeaderMap) -> Response {
    match bearer(&headers) {
        Some(GOOD | NO_TOKEN_INFO) => (
            rate_headers(997),
            Json(json!({
                "url": "https://api.buddy.works/workspaces",
                "html_url": "https://app.buddy.works",
                "workspaces": [
                    {"url": "https://api.buddy.works/workspaces/buddy", "html_url": "https://app.buddy.works/buddy", "id": 1, "name": "buddy", "domain": "buddy"},
                    {"url": "https://api.buddy.works/workspaces/acme", "html_url": "https://app.buddy.works/acme", "id": 2, "name": "Acme", "domain": "acme"}
                ]
            })),
        )
            .into_response(),
        _ => unauthorized(),
    }
}

async fn echo(
    headers: HeaderMap,
    Query(q): Query<Vec<(String, String)>>,
    axum::extract::OriginalUri(uri): axum::extract::OriginalUri,
) -> Json<Value> {
    let h = |n: &str| {
        headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    Json(json!({
        "path": uri.path(),
        "query": q,
        "authorization": h("authorization"),
        "accept": h("accept"),
        "user_agent": h("user-agent"),
        "content_type": h("content-type"),
        "x_custom": h("x-custom"),
        "x_drop": h("x-drop"),
    }))
}

async fn echo_body(headers: HeaderMap, body: Bytes) -> Response {
    let ct = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let parsed: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    (
        StatusCode::CREATED,
        Json(json!({"received": parsed, "content_type": ct})),
    )
        .into_response()
}

async fn start() -> SocketAddr {
    let api = Router::new()
        .route("/user/token", get(user_token))
        .route("/workspaces", get(workspaces))
        .route("/echo", get(echo))
        .route("/echo-body", post(echo_body))
        .route("/raw", any(echo))
        .route("/not-found", get(|| async {
            (StatusCode::NOT_FOUND, Json(json!({"message": "Not found"})))
        }))
        .route("/rate-limited", get(|| async {
            (
                StatusCode::TOO_MANY_REQUESTS,
                rate_headers(0),
                Json(json!({"errors": [{"message": "Rate limit exceeded."}]})),
            )
        }))
        .route("/rate-limited-403", get(|| async {
            (
                StatusCode::FORBIDDEN,
                rate_headers(0),
                Json(json!({"errors": [{"message": "Rate limit exceeded."}]})),
            )
        }))
        .route("/disabled", get(|| async {
            (
                StatusCode::FORBIDDEN,
                Json(json!({"errors": ["API is disabled in this workspace."]})),
            )
        }))
        .route("/bad-json", get(|| async { (StatusCode::OK, "{not json") }))
        .route("/html-error", get(|| async {
            (StatusCode::BAD_GATEWAY, "<html><body>Bad Gateway</body></html>")
        }))
        .route("/echoes-token", get(|| async {
            (
                StatusCode::BAD_REQUEST,
                Json(json!({"errors": [{"message": format!("token {GOOD} is not allowed here")}]})),
            )
        }))
        .route("/thing", delete(|| async { StatusCode::NO_CONTENT }))
        .route("/accepted", post(|| async { StatusCode::ACCEPTED }))
        .route("/hang", get(std::future::pending::<&'static str>))
;
    let app = Router::new().nest("/api", api);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    addr
}

fn client_for(addr: SocketAddr, token: &str) -> BuddyClient {
    let pool = HttpPool::new(UpstreamPolicy::ALLOW_PRIVATE).unwrap();
    let base = Url::parse(&format!("http://{addr}/api")).unwrap();
    BuddyClient::new(&pool, base, Secret::new(token))
}

fn q(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[tokio::test]
async fn get_json_injects_headers_keeps_base_path_and_reads_rate_limits() {
    let addr = start().await;
    let c = client_for(addr, GOOD);
    let up = c
        .get_json("/echo", &q(&[("page", "2"), ("q", "a b&c")]))
        .await
        .unwrap();
    assert_eq!(up.status, 200);
    assert_eq!(up.body["path"], "/api/echo");
    assert_eq!(up.body["query"], json!([["page", "2"], ["q", "a b&c"]]));
    assert_eq!(up.body["authorization"], format!("Bearer {GOOD}"));
    assert_eq!(up.body["accept"], "application/json");
    assert_eq!(up.body["user_agent"], USER_AGENT);
    assert!(USER_AGENT.starts_with("cigate/"));

    let up = c.get_json("/workspaces", &[]).await.unwrap();
    assert_eq!(up.rate_limit.limit, Some(1));
    assert_eq!(up.rate_limit.remaining, Some(997));
    assert_eq!(up.rate_limit.reset, Some(1_700_000_000));
    assert!(up.headers.contains_key("x-rate-limit-remaining"));
}

#[tokio::test]
async fn send_json_posts_a_body_and_handles_empty_answers() {
    let addr = start().await;
    let c = client_for(addr, GOOD);
    let body = json!({"branch": {"name": "main"}, "comment": "hi"});
    let up = c
        .send_json(Method::POST, "/echo-body", &[], Some(&body))
        .await
        .unwrap();
    assert_eq!(up.status, 201);
    assert_eq!(up.body["received"], body);
    assert_eq!(up.body["content_type"], "application/json");

    let up = c
        .send_json(Method::DELETE, "/thing", &[], None)
        .await
        .unwrap();
    assert_eq!((up.status, up.body), (204, Value::Null));
    let up = c
        .send_json(Method::POST, "/accepted", &[], None)
        .await
        .unwrap();
    assert_eq!((up.status, up.body), (202, Value::Null));
}

#[tokio::test]
async fn buddy_errors_become_typed() {
    let addr = start().await;
    let c = client_for(addr, GOOD);

    let e = c.get_json("/not-found", &[]).await.unwrap_err();
    assert!(matches!(&e, BuddyError::Api { status: 404, message, .. } if message == "Not found"));

    // Rate limits are waited out and retried; past the deadline they are typed. These
    // answers carry a reset in the past, so the governor waits its 1 s margin: longer
    // than this client's budget, hence an immediate answer.
    let short = c.with_timeout(Duration::from_millis(500));
    let started = std::time::Instant::now();
    let e = short.get_json("/rate-limited", &[]).await.unwrap_err();
    assert!(matches!(e, BuddyError::RateLimited { .. }), "{e:?}");
    assert!(e.is_rate_limited() && e.is_transient());
    let short = client_for(addr, GOOD).with_timeout(Duration::from_millis(500));
    let e = short.get_json("/rate-limited-403", &[]).await.unwrap_err();
    assert!(matches!(e, BuddyError::RateLimited { .. }), "{e:?}");
    assert!(started.elapsed() < Duration::from_millis(900));
    let e = c.get_json("/disabled", &[]).await.unwrap_err();
    assert!(!e.is_rate_limited());
    assert_eq!(
        e.upstream_message(),
        Some("API is disabled in this workspace.")
    );

    // A 502 is retried (GET) until the budget runs out, then Buddy's last answer.
    let short = client_for(addr, GOOD).with_timeout(Duration::from_millis(500));
    let e = short.get_json("/html-error", &[]).await.unwrap_err();
    match e {
        BuddyError::Api { status, body, .. } => {
            assert_eq!(status, 502);
            assert_eq!(body, json!("<html><body>Bad Gateway</body></html>"));
        }
        other => panic!("{other:?}"),
    }

    let e = c.get_json("/bad-json", &[]).await.unwrap_err();
    assert!(matches!(e, BuddyError::Decode(_)), "{e:?}");

    let bad = client_for(addr, "not-a-real-token");
    let e = bad.get_json("/workspaces", &[]).await.unwrap_err();
    assert!(e.is_unauthorized());
    assert!(!e.to_string().contains("not-a-real-token"));
}

#[tokio::test]
async fn a_token_echoed_by_buddy_is_scrubbed() {
    let addr = start().await;
    let c = client_for(addr, GOOD);
    let e = c.get_json("/echoes-token", &[]).await.unwrap_err();
    assert!(!e.to_string().contains(GOOD), "{e}");
    assert!(!format!("{e:?}").contains(GOOD));
    assert!(e.to_string().contains("[redacted]"));
}

#[tokio::test]
async fn per_call_timeout_gives_timeout() {
    let addr = start().await;
    let c = client_for(addr, GOOD).with_timeout(Duration::from_millis(200));
    let e = c.get_json("/hang", &[]).await.unwrap_err();
    assert!(matches!(e, BuddyError::Timeout), "{e:?}");
}

#[tokio::test]
async fn refuses_traversal_before_any_request() {
    let addr = start().await;
    let c = client_for(addr, GOOD);
    for bad in [
        "/../echo",
        "/a%2f..%2fecho",
        "//evil.example/x",
        "http://evil.example/",
    ] {
        let e = c.get_json(bad, &[]).await.unwrap_err();
        assert!(matches!(e, BuddyError::InvalidPath(_)), "{bad}: {e:?}");
    }
}

#[tokio::test]
async fn default_policy_refuses_loopback_at_request_and_connect_time() {
    let addr = start().await;
    let pool = HttpPool::new(UpstreamPolicy::default()).unwrap();

    // http is refused outright.
    let c = BuddyClient::new(
        &pool,
        Url::parse(&format!("http://{addr}/api")).unwrap(),
        Secret::new(GOOD),
    );
    let e = c.get_json("/echo", &[]).await.unwrap_err();
    assert!(
        matches!(e, BuddyError::Forbidden(BaseUrlError::Scheme(_))),
        "{e:?}"
    );

    // An IP literal never reaches the resolver, so it is checked per request.
    let c = BuddyClient::new(
        &pool,
        Url::parse(&format!("https://127.0.0.1:{}/api", addr.port())).unwrap(),
        Secret::new(GOOD),
    );
    let e = c.get_json("/echo", &[]).await.unwrap_err();
    assert!(
        matches!(
            e,
            BuddyError::Forbidden(BaseUrlError::PrivateAddress { .. })
        ),
        "{e:?}"
    );

    // A name that resolves to loopback (as after DNS rebinding) is refused by the
    // pool's resolver when connecting.
    let c = BuddyClient::new(
        &pool,
        Url::parse(&format!("https://localhost:{}/api", addr.port())).unwrap(),
        Secret::new(GOOD),
    );
    let e = c.get_json("/echo", &[]).await.unwrap_err();
    assert!(
        matches!(e, BuddyError::Forbidden(BaseUrlError::NoPublicAddress(_))),
        "{e:?}"
    );
}

#[tokio::test]
async fn verify_token_reads_scopes_expiry_and_workspaces() {
    let addr = start().await;
    let info = client_for(addr, GOOD).verify_token().await.unwrap();
    assert_eq!(
        info.scopes,
        Some(vec![
            "WORKSPACE".to_string(),
            "EXECUTION_INFO".into(),
            "TOKEN_INFO".into()
        ])
    );
    assert_eq!(
        info.expires_at.map(|d| d.to_rfc3339()),
        Some("2030-01-02T03:04:05.123+00:00".into())
    );
    assert_eq!(info.workspaces, vec!["buddy", "acme"]);

    let info = client_for(addr, NO_TOKEN_INFO)
        .verify_token()
        .await
        .unwrap();
    assert_eq!(info.scopes, None);
    assert_eq!(info.workspaces, vec!["buddy", "acme"]);

    let e = client_for(addr, "bad").verify_token().await.unwrap_err();
    assert!(e.is_unauthorized(), "{e:?}");
    assert_eq!(e.upstream_message(), Some("Invalid or expired token"));
}

#[tokio::test]
async fn send_raw_forwards_and_replaces_credentials() {
    let addr = start().await;
    let c = client_for(addr, GOOD);
    let mut req = RawRequest::new(Method::GET, "/raw");
    req.query = q(&[("access_token", "caller-token"), ("x", "1")]);
    req.headers
        .insert("authorization", "Bearer caller-token".parse().unwrap());
    req.headers.insert("x-custom", "yes".parse().unwrap());
    req.headers.insert("connection", "x-drop".parse().unwrap());
    req.headers.insert("x-drop", "1".parse().unwrap());
    let resp = c.send_raw(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["authorization"], format!("Bearer {GOOD}"));
    assert_eq!(body["query"], json!([["x", "1"]]));
    assert_eq!(body["x_custom"], "yes");
    assert_eq!(body["x_drop"], Value::Null);

    // Non-2xx answers come back as responses, not errors, for passthrough.
    let resp = c
        .send_raw(RawRequest::new(Method::GET, "/not-found"))
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    let e = c
        .send_raw(RawRequest::new(Method::GET, "/a/../b"))
        .await
        .unwrap_err();
    assert!(matches!(e, BuddyError::InvalidPath(_)));
}

/// Collects everything `tracing` writes during a test.
#[derive(Clone, Default)]
struct Captured(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "current_thread")]
async fn traces_carry_method_host_and_path_but_no_token_or_query() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_span_events(tracing_subscriber::fmt::format::FmtSpan::CLOSE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let addr = start().await;
    let c = client_for(addr, GOOD);
    c.get_json("/echo", &q(&[("access_token", "query-secret-value")]))
        .await
        .unwrap();
    let _ = c.get_json("/not-found", &[]).await;
    let mut raw = RawRequest::new(Method::GET, "/raw");
    raw.query = q(&[("access_token", "query-secret-value")]);
    c.send_raw(raw).await.unwrap().bytes().await.unwrap();
    let run = "/workspaces/acme/projects/p/pipelines/7/executions/42/action_executions/9/logs";
    c.send_raw(RawRequest::new(Method::GET, run)).await.unwrap();

    let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert!(text.contains("cicd.pipeline.run.id=\"42\""), "{text}");
    assert!(text.contains("cicd.pipeline.task.run.id=\"9\""), "{text}");
    assert!(text.contains("buddy.request"), "{text}");
    assert!(text.contains("http.request.method=GET"), "{text}");
    assert!(text.contains("server.address=\"127.0.0.1\""), "{text}");
    assert!(text.contains("url.path=\"/api/echo\""), "{text}");
    assert!(text.contains("http.response.status_code=404"), "{text}");
    assert!(!text.contains(GOOD), "token in traces: {text}");
    assert!(
        !text.contains("query-secret-value"),
        "query in traces: {text}"
    );
}

mod against_the_simulator {
    use super::*;
    use cigate_buddy_sim::{SimConfig, TokenSpec};

    async fn sim(base_path: &str) -> cigate_buddy_sim::SimHandle {
        cigate_buddy_sim::start(SimConfig {
            base_path: base_path.into(),
            ..Default::default()
        })
        .await
        .unwrap()
    }

    fn client(handle: &cigate_buddy_sim::SimHandle, token: &str) -> BuddyClient {
        let pool = HttpPool::new(UpstreamPolicy::ALLOW_PRIVATE).unwrap();
        BuddyClient::new(
            &pool,
            Url::parse(&handle.base_url()).unwrap(),
            Secret::new(token),
        )
    }

    #[tokio::test]
    async fn verify_token_with_a_good_token() {
        let handle = sim("/api").await;
        let token = handle.sim().issue_token(TokenSpec {
            expires_in: Some(3600),
            ..TokenSpec::with_scopes(&["WORKSPACE", "EXECUTION_INFO", "TOKEN_INFO"])
        });
        let info = client(&handle, &token).verify_token().await.unwrap();
        let scopes = info.scopes.unwrap();
        assert!(scopes.contains(&"EXECUTION_INFO".to_string()), "{scopes:?}");
        assert!(info.expires_at.is_some());
        assert_eq!(info.workspaces, handle.sim().workspace_domains());
        assert!(!info.workspaces.is_empty());
        handle.shutdown().await;
    }

    #[tokio::test]
    async fn verify_token_without_token_info_scope() {
        let handle = sim("").await;
        let token = handle
            .sim()
            .issue_token(TokenSpec::with_scopes(&["WORKSPACE"]));
        let info = client(&handle, &token).verify_token().await.unwrap();
        // Whether `/user/token` needs TOKEN_INFO is not settled (the simulator may
        // answer it); either way linking succeeds. The 403 path is covered above.
        assert!(
            info.scopes.is_none() || info.scopes == Some(vec!["WORKSPACE".to_string()]),
            "{:?}",
            info.scopes
        );
        assert_eq!(info.workspaces, handle.sim().workspace_domains());
        handle.shutdown().await;
    }

    #[tokio::test]
    async fn verify_token_with_a_bad_token() {
        let handle = sim("").await;
        let e = client(&handle, "00000000-0000-4000-8000-000000000000")
            .verify_token()
            .await
            .unwrap_err();
        assert!(e.is_unauthorized(), "{e:?}");
        assert!(!e
            .to_string()
            .contains("00000000-0000-4000-8000-000000000000"));
        handle.shutdown().await;
    }
}

#[tokio::test]
async fn an_unresolvable_host_is_a_connect_error() {
    let pool = HttpPool::new(UpstreamPolicy::default()).unwrap();
    let c = BuddyClient::new(
        &pool,
        Url::parse("https://does-not-exist.invalid/api").unwrap(),
        Secret::new(GOOD),
    );
    let e = c.get_json("/workspaces", &[]).await.unwrap_err();
    assert!(matches!(e, BuddyError::Connect(_)), "{e:?}");
    assert!(e.is_transient());
}
