//! Webhooks cigate sends, over real HTTP: a receiver on port 0 that checks every
//! signature and can be told to fail.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use cigate_core::events::WebhookSecret;
use cigate_server::config::RetrySchedule;
use cigate_store::NewEvent;
use common::{Backend, Harness};
use serde_json::{json, Value};
use tokio::sync::mpsc;

/// What one request to the receiver carried.
#[derive(Debug)]
struct Received {
    headers: HeaderMap,
    body: Bytes,
}

impl Received {
    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("JSON body")
    }

    /// The Standard Webhooks signature made with `secret` is among those sent.
    fn signed_by(&self, secret: &WebhookSecret) -> bool {
        let id = self.header("webhook-id");
        let ts: i64 = self.header("webhook-timestamp").parse().expect("timestamp");
        let expected = secret.sign(id, ts, &self.body);
        self.header("webhook-signature")
            .split(' ')
            .any(|sig| sig == expected)
            && self
                .header("x-truto-signature")
                .starts_with("format=sha256,v=")
    }
}

struct Receiver {
    url: String,
    /// Requests left to hold open without ever answering.
    hangs: Arc<AtomicUsize>,
    failures: Arc<AtomicUsize>,
    fail_status: Arc<AtomicUsize>,
    arrivals: mpsc::UnboundedReceiver<Received>,
}

impl Receiver {
    async fn start() -> Receiver {
        let (tx, arrivals) = mpsc::unbounded_channel();
        let failures = Arc::new(AtomicUsize::new(0));
        let fail_status = Arc::new(AtomicUsize::new(500));
        let hangs = Arc::new(AtomicUsize::new(0));
        let (f, s, hang) = (failures.clone(), fail_status.clone(), hangs.clone());
        let app = axum::Router::new().route(
            "/hook",
            post(move |headers: HeaderMap, body: Bytes| {
                let (tx, f, s, hang) = (tx.clone(), f.clone(), s.clone(), hang.clone());
                async move {
                    let take = |n: &AtomicUsize| {
                        n.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                            .is_ok()
                    };
                    if take(&hang) {
                        let _ = tx.send(Received { headers, body });
                        return std::future::pending().await;
                    }
                    let failing = take(&f);
                    let _ = tx.send(Received { headers, body });
                    if failing {
                        let code = u16::try_from(s.load(Ordering::SeqCst)).unwrap();
                        StatusCode::from_u16(code).unwrap()
                    } else {
                        StatusCode::NO_CONTENT
                    }
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        Receiver {
            url: format!("http://{addr}/hook"),
            hangs,
            failures,
            fail_status,
            arrivals,
        }
    }

    fn fail_next(&self, n: usize, status: u16) {
        self.fail_status
            .store(usize::from(status), Ordering::SeqCst);
        self.failures.store(n, Ordering::SeqCst);
    }

    async fn next(&mut self) -> Received {
        tokio::time::timeout(Duration::from_secs(10), self.arrivals.recv())
            .await
            .expect("a delivery arrives within 10 s")
            .expect("receiver running")
    }
}

/// A gateway whose retry schedule is two short waits (three attempts in all).
async fn start(backend: Backend) -> Option<Harness> {
    Harness::start_configured(backend, Default::default(), |config| {
        config.webhook_retry_schedule =
            RetrySchedule(vec![Duration::from_millis(50), Duration::from_millis(50)]);
    })
    .await
}

async fn create(h: &Harness, body: Value) -> (u16, Value) {
    let response = h.post("/webhook").json(&body).send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

/// Polls the API until `done` holds for the answer (the store is written after the
/// receiver answered, so there is no signal to wait on from here).
async fn eventually(h: &Harness, path: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (status, body) = h.get_json(path).await;
        assert_eq!(status, 200, "{body}");
        if done(&body) {
            return body;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out: {body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_test_event_arrives_signed_after_two_failures_sqlite() {
    signed_retried_redelivered(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_test_event_arrives_signed_after_two_failures_postgres() {
    signed_retried_redelivered(Backend::Postgres).await;
}

async fn signed_retried_redelivered(backend: Backend) {
    let Some(h) = start(backend).await else {
        return;
    };
    let mut rx = Receiver::start().await;
    let (status, hook) = create(&h, json!({ "target_url": rx.url, "event_types": ["test"] })).await;
    assert_eq!(status, 201, "{hook}");
    let secret = WebhookSecret::parse(hook["secret"].as_str().unwrap()).unwrap();
    let id = hook["id"].as_str().unwrap().to_owned();

    let (_, listed) = h.get_json("/webhook").await;
    assert_eq!(listed["result"][0]["id"], id.as_str());
    assert!(listed["result"][0].get("secret").is_none());
    let (_, fetched) = h.get_json(&format!("/webhook/{id}")).await;
    assert!(fetched.get("secret").is_none());
    assert_eq!(fetched["format"], "cigate");

    rx.fail_next(2, 500);
    let sent = h
        .post("/webhook/test")
        .json(&json!({ "id": id }))
        .send()
        .await
        .unwrap();
    assert_eq!(sent.status(), 202);
    let event: Value = sent.json().await.unwrap();
    let attempts = [rx.next().await, rx.next().await, rx.next().await];
    let webhook_id = attempts[0].header("webhook-id").to_owned();
    for got in &attempts {
        assert!(got.signed_by(&secret), "signature verifies");
        assert_eq!(got.header("webhook-id"), webhook_id, "retries keep the id");
        let body = got.json();
        assert_eq!(body["event"], "test");
        assert_eq!(body["id"], event["id"]);
        assert_eq!(body["webhook_id"], id.as_str());
        assert!(body["environment_id"].is_string() && body["created_at"].is_string());
    }

    let path = format!("/webhook/{id}/deliveries");
    let deliveries = eventually(&h, &path, |b| b["result"][0]["status"] == "delivered").await;
    let delivery = &deliveries["result"][0];
    assert_eq!(delivery["id"], webhook_id.as_str());
    let statuses: Vec<&Value> = delivery["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| &a["response_status"])
        .collect();
    assert_eq!(statuses, [&json!(500), &json!(500), &json!(204)]);
    assert!(delivery["attempts"][0]["latency_ms"].is_u64());
    assert!(delivery["attempts"][0]["at"].is_string());

    let again = h
        .post(&format!("{path}/{webhook_id}/redeliver"))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 202);
    let redelivered = rx.next().await;
    assert_eq!(redelivered.header("webhook-id"), webhook_id);
    assert!(redelivered.signed_by(&secret));
    let missing = h
        .post(&format!("{path}/nope/redeliver"))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);

    // After a rotation both secrets sign.
    let rotated: Value = h
        .post(&format!("/webhook/{id}/rotate-secret"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let new_secret = WebhookSecret::parse(rotated["secret"].as_str().unwrap()).unwrap();
    assert_ne!(new_secret, secret);
    h.post("/webhook/test")
        .json(&json!({ "id": id }))
        .send()
        .await
        .unwrap();
    let rotated_delivery = rx.next().await;
    assert!(rotated_delivery.signed_by(&new_secret) && rotated_delivery.signed_by(&secret));

    let (_, events) = h.get_json("/events?event_type=test").await;
    assert_eq!(events["result_count"], 2);
    assert_eq!(events["result"][0]["id"], event["id"]);
    let (_, page) = h.get_json("/events?limit=1").await;
    let cursor = page["next_cursor"].as_str().unwrap().to_owned();
    let (_, rest) = h
        .get_json(&format!("/events?limit=1&next_cursor={cursor}"))
        .await;
    assert_ne!(rest["result"][0]["id"], page["result"][0]["id"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exhausted_fails_gone_deactivates_and_cdevents_go_out_as_cloudevents() {
    let h = start(Backend::Sqlite).await.expect("sqlite harness");
    let mut rx = Receiver::start().await;
    let mut watcher = Receiver::start().await;
    create(
        &h,
        json!({ "target_url": watcher.url, "event_types": ["webhook:*"] }),
    )
    .await;
    let (_, failing) = create(
        &h,
        json!({ "target_url": rx.url, "event_types": ["test", "webhook:delivery_exhausted"] }),
    )
    .await;
    let failing_id = failing["id"].as_str().unwrap().to_owned();
    rx.fail_next(3, 503);
    h.post("/webhook/test")
        .json(&json!({ "id": failing_id }))
        .send()
        .await
        .unwrap();
    for _ in 0..3 {
        rx.next().await;
    }
    let deliveries = eventually(&h, &format!("/webhook/{failing_id}/deliveries"), |b| {
        b["result"][0]["status"] == "failed"
    })
    .await;
    assert_eq!(deliveries["result"][0]["attempt_count"], 3);
    assert!(deliveries["result"][0]["last_error"]
        .as_str()
        .unwrap()
        .contains("503"));
    let (_, still) = h.get_json(&format!("/webhook/{failing_id}")).await;
    assert_eq!(
        still["is_active"], true,
        "exhaustion alone does not deactivate"
    );
    assert!(still["failing_since"].is_string());
    // An operator hears of it; the failing subscription itself is not sent its own news.
    let told = watcher.next().await.json();
    assert_eq!(told["event"], "webhook:delivery_exhausted");
    assert_eq!(told["payload"]["webhook_id"], failing_id.as_str());
    assert_eq!(told["payload"]["event_type"], "test");
    assert_eq!(told["payload"]["last_response_status"], 503);
    let (_, own) = h
        .get_json(&format!("/webhook/{failing_id}/deliveries"))
        .await;
    assert_eq!(own["result"].as_array().map(Vec::len), Some(1), "{own}");

    let (_, gone) = create(&h, json!({ "target_url": rx.url, "event_types": ["test"] })).await;
    let gone_id = gone["id"].as_str().unwrap().to_owned();
    rx.fail_next(1, 410);
    h.post("/webhook/test")
        .json(&json!({ "id": gone_id }))
        .send()
        .await
        .unwrap();
    rx.next().await;
    eventually(&h, &format!("/webhook/{gone_id}"), |b| {
        b["is_active"] == false
    })
    .await;
    let told = watcher.next().await.json();
    assert_eq!(told["event"], "webhook:disabled");
    assert_eq!(told["payload"]["webhook_id"], gone_id.as_str());
    let deliveries = eventually(&h, &format!("/webhook/{gone_id}/deliveries"), |b| {
        b["result"][0]["status"] == "failed"
    })
    .await;
    assert_eq!(deliveries["result"][0]["attempt_count"], 1);
    let refused = h
        .post("/webhook/test")
        .json(&json!({ "id": gone_id }))
        .send()
        .await
        .unwrap();
    assert_eq!(
        refused.status(),
        422,
        "an inactive webhook gets no test event"
    );

    let (status, cd) = create(
        &h,
        json!({ "target_url": rx.url, "event_types": ["job:*", "test"], "format": "cdevents" }),
    )
    .await;
    assert_eq!(status, 201, "{cd}");
    let secret = WebhookSecret::parse(cd["secret"].as_str().unwrap()).unwrap();
    let cd_id = cd["id"].as_str().unwrap().to_owned();
    // A test event has no CDEvents form: done without a request.
    h.post("/webhook/test")
        .json(&json!({ "id": cd_id }))
        .send()
        .await
        .unwrap();
    let env = h
        .server
        .state
        .store
        .ensure_environment("default")
        .await
        .unwrap();
    let job =
        json!({ "id": "exec-7", "name": "deploy", "status": "completed", "conclusion": "failed" });
    cigate_server::delivery::record(
        &h.server.state,
        NewEvent {
            environment_id: env.id.clone(),
            event_type: "job:completed".into(),
            integrated_account_id: Some("acc-1".into()),
            tenant_id: None,
            workflow: None,
            payload: job,
            only_webhook: None,
            except_webhook: None,
            order_key: None,
        },
    )
    .await
    .unwrap();
    let got = rx.next().await;
    assert_eq!(got.header("content-type"), "application/cloudevents+json");
    assert!(got.signed_by(&secret));
    let ce = got.json();
    assert_eq!(ce["specversion"], "1.0");
    assert_eq!(
        ce["id"],
        got.header("webhook-id"),
        "CloudEvents id = webhook-id"
    );
    assert_eq!(ce["type"], "dev.cdevents.pipelinerun.finished.0.3.0");
    assert_eq!(ce["data"]["subject"]["content"]["outcome"], "failure");
    let deliveries = eventually(&h, &format!("/webhook/{cd_id}/deliveries"), |b| {
        b["result_count"] == 2 && b["result"][1]["status"] == "delivered"
    })
    .await;
    assert_eq!(deliveries["result"][0]["status"], "delivered");
    assert_eq!(
        deliveries["result"][0]["attempts"][0]["response_status"],
        Value::Null
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_subscriptions_are_refused_with_problems() {
    let h = Harness::start_configured(Backend::Sqlite, Default::default(), |config| {
        config.allow_private_upstreams = false;
    })
    .await
    .expect("sqlite harness");
    for (body, what) in [
        (
            json!({ "target_url": "http://127.0.0.1:9/hook" }),
            "target_url",
        ),
        (
            json!({ "target_url": "https://10.0.0.1/hook" }),
            "target_url",
        ),
        (
            json!({ "target_url": "https://localhost/hook" }),
            "target_url",
        ),
        (
            json!({ "target_url": "https://hooks.example.com/in", "event_types": ["job:finished"] }),
            "event_types",
        ),
        (
            json!({ "target_url": "https://hooks.example.com/in", "format": "xml" }),
            "format",
        ),
    ] {
        let response = h.post("/webhook").json(&body).send().await.unwrap();
        assert_eq!(response.status(), 422, "{body}");
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json"
        );
        let problem: Value = response.json().await.unwrap();
        assert_eq!(problem["type"], "/problems/validation-failed");
        assert!(
            problem["detail"].as_str().unwrap().contains(what),
            "{problem}"
        );
    }
    assert_eq!(h.get_json("/webhook").await.1["result_count"], 0);
    assert_eq!(h.get("/webhook/nope").send().await.unwrap().status(), 404);
    let test = h
        .post("/webhook/test")
        .json(&json!({ "id": "nope" }))
        .send()
        .await
        .unwrap();
    assert_eq!(test.status(), 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn account_lifecycle_events_reach_subscribers() {
    let h = start(Backend::Sqlite).await.expect("sqlite harness");
    let mut rx = Receiver::start().await;
    let (_, hook) = create(
        &h,
        json!({ "target_url": rx.url, "event_types": ["integrated_account:*"] }),
    )
    .await;
    let secret = WebhookSecret::parse(hook["secret"].as_str().unwrap()).unwrap();
    let account_id = h.link().await;
    let got = rx.next().await;
    assert!(got.signed_by(&secret));
    let body = got.json();
    assert_eq!(body["event"], "integrated_account:created");
    assert_eq!(body["payload"]["id"], account_id.as_str());
    assert!(!String::from_utf8_lossy(&got.body).contains(&h.buddy_token));
    let (_, events) = h
        .get_json(&format!("/events?integrated_account_id={account_id}"))
        .await;
    assert_eq!(events["result"][0]["event"], "integrated_account:created");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_whose_worker_died_is_sent_again_under_the_same_id() {
    let short_lease = |config: &mut cigate_server::ServerConfig| {
        config.webhook_delivery_lease = Duration::from_secs(1);
    };
    let mut h = Harness::start_configured(Backend::Sqlite, Default::default(), short_lease)
        .await
        .expect("sqlite harness");
    let mut rx = Receiver::start().await;
    let (_, hook) = create(&h, json!({ "target_url": rx.url, "event_types": ["test"] })).await;
    let secret = WebhookSecret::parse(hook["secret"].as_str().unwrap()).unwrap();
    let id = hook["id"].as_str().unwrap().to_owned();
    rx.hangs.store(1, Ordering::SeqCst);
    h.post("/webhook/test")
        .json(&json!({ "id": id }))
        .send()
        .await
        .unwrap();
    let first = rx.next().await;
    // The instance dies mid-delivery; another one on the same database takes over.
    h.server.abort();
    let mut config = h.config.clone();
    short_lease(&mut config);
    let store = cigate_server::store::open(&config).await.unwrap();
    let state = cigate_server::build_state(config, store).await.unwrap();
    let mut other = cigate_server::start(state).await.unwrap();
    let second = rx.next().await;
    assert_eq!(second.header("webhook-id"), first.header("webhook-id"));
    assert!(second.signed_by(&secret));
    let deliveries: Value = h
        .http
        .get(format!("{}/webhook/{id}/deliveries", other.base_url()))
        .bearer_auth(&h.api_token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(deliveries["result_count"], 1, "one delivery, sent twice");
    other.shutdown().await.unwrap();
    h.server.shutdown().await.ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_failing_too_long_is_deactivated_with_an_event() {
    let h = Harness::start_configured(Backend::Sqlite, Default::default(), |config| {
        config.webhook_retry_schedule =
            RetrySchedule(vec![Duration::from_millis(50), Duration::from_millis(50)]);
        config.webhook_disable_after = Duration::from_millis(1);
    })
    .await
    .expect("sqlite harness");
    let mut rx = Receiver::start().await;
    let mut watcher = Receiver::start().await;
    create(
        &h,
        json!({ "target_url": watcher.url, "event_types": ["webhook:disabled"] }),
    )
    .await;
    let (_, failing) = create(&h, json!({ "target_url": rx.url, "event_types": ["test"] })).await;
    let id = failing["id"].as_str().unwrap().to_owned();
    rx.fail_next(3, 500);
    h.post("/webhook/test")
        .json(&json!({ "id": id }))
        .send()
        .await
        .unwrap();
    // The first failure starts the clock; the second finds it run out.
    rx.next().await;
    rx.next().await;
    let told = watcher.next().await.json();
    assert_eq!(told["event"], "webhook:disabled");
    assert_eq!(told["payload"]["webhook_id"], id.as_str());
    assert!(told["payload"]["failing_since"].is_string());
    let (_, hook) = h.get_json(&format!("/webhook/{id}")).await;
    assert_eq!(hook["is_active"], false);
}
