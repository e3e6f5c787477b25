//! Job events end to end, over real HTTP: a job changing state in the simulator
//! reaches a subscriber, found by polling (no public URL) or through the Buddy webhook
//! cigate registers by itself (public URL), and nothing else gets through.

mod common;

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::Request;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::post;
use cigate_buddy_sim::{RateLimitSpec, RunRequest, SimConfig};
use common::{Backend, Harness};
use serde_json::{json, Value};
use tokio::sync::mpsc;

/// A subscriber on port 0: every event it was sent, parsed.
struct Subscriber {
    url: String,
    arrivals: mpsc::UnboundedReceiver<Value>,
}

impl Subscriber {
    async fn start() -> Subscriber {
        let (tx, arrivals) = mpsc::unbounded_channel();
        let app = axum::Router::new().route(
            "/hook",
            post(move |body: Bytes| {
                let tx = tx.clone();
                async move {
                    let _ = tx.send(serde_json::from_slice(&body).unwrap_or(Value::Null));
                    StatusCode::NO_CONTENT
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        Subscriber {
            url: format!("http://{addr}/hook"),
            arrivals,
        }
    }

    /// Events until one satisfies `done` (which is returned last), within `within`.
    async fn until(&mut self, within: Duration, done: impl Fn(&Value) -> bool) -> Vec<Value> {
        let mut seen = Vec::new();
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let next = tokio::time::timeout_at(deadline, self.arrivals.recv()).await;
            let event = next
                .unwrap_or_else(|_| panic!("no matching event within {within:?}; got {seen:#?}"))
                .expect("subscriber running");
            let stop = done(&event);
            seen.push(event);
            if stop {
                return seen;
            }
        }
    }

    /// What arrives within `within` (for asserting that nothing does).
    async fn drain(&mut self, within: Duration) -> Vec<Value> {
        let mut seen = Vec::new();
        let deadline = tokio::time::Instant::now() + within;
        while let Ok(Some(event)) = tokio::time::timeout_at(deadline, self.arrivals.recv()).await {
            seen.push(event);
        }
        seen
    }
}

/// A public front door on port 0 that forwards to the gateway once it is up: the
/// gateway's `CIGATE_PUBLIC_URL` must be known before it binds its own port.
struct FrontDoor {
    url: String,
    target: Arc<OnceLock<String>>,
}

impl FrontDoor {
    async fn start() -> FrontDoor {
        let target: Arc<OnceLock<String>> = Arc::default();
        let to = target.clone();
        let client = reqwest::Client::new();
        let app = axum::Router::new().fallback(move |request: Request| {
            let (to, client) = (to.clone(), client.clone());
            async move {
                let Some(base) = to.get() else {
                    return StatusCode::SERVICE_UNAVAILABLE.into_response();
                };
                let (parts, body) = request.into_parts();
                let body = axum::body::to_bytes(body, 1 << 20)
                    .await
                    .unwrap_or_default();
                let url = format!("{base}{}", parts.uri);
                let mut forwarded = client.request(parts.method, url).body(body);
                for (name, value) in &parts.headers {
                    if name != "host" && name != "content-length" {
                        forwarded = forwarded.header(name, value);
                    }
                }
                match forwarded.send().await {
                    Ok(answer) => {
                        let status = answer.status();
                        (status, answer.bytes().await.unwrap_or_default()).into_response()
                    }
                    Err(_) => StatusCode::BAD_GATEWAY.into_response(),
                }
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        FrontDoor {
            url: format!("http://{addr}"),
            target,
        }
    }
}

/// Jobs that take seconds, and a rate budget for polling several times a second.
fn fast_sim() -> SimConfig {
    SimConfig {
        queue_seconds: 0,
        action_seconds: 1,
        rate_limit: RateLimitSpec {
            budget: 1_000_000,
            window_seconds: 3600,
        },
        ..SimConfig::default()
    }
}

async fn subscribe(h: &Harness, url: &str, types: &[&str]) {
    let response = h
        .post("/webhook")
        .json(&json!({ "target_url": url, "event_types": types }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
}

/// Waits until the gateway's metrics show `series` at `at_least`.
async fn metric_at_least(h: &Harness, series: &str, at_least: f64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let text = h.metrics().await;
        let value: f64 = text
            .lines()
            .filter(|l| l.starts_with(series))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum();
        if value >= at_least {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{series} stayed below {at_least}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The first pipeline of the first project: `(workspace, project, pipeline)`.
fn first_pipeline(h: &Harness) -> (String, String, u64) {
    let sim = h.sim.sim();
    let ws = sim.workspace_domains()[0].clone();
    let project = sim.project_names(&ws)[0].clone();
    let pipeline = sim.pipeline_ids(&ws, &project)[0];
    (ws, project, pipeline)
}

fn failing_run(h: &Harness, (ws, project, pipeline): &(String, String, u64)) -> String {
    let sim = h.sim.sim();
    sim.fail_next_runs(ws, project, *pipeline, 1).unwrap();
    sim.run(ws, project, *pipeline, RunRequest::default())
        .unwrap()
        .to_string()
}

fn completed_failed(job: &str) -> impl Fn(&Value) -> bool + '_ {
    move |event: &Value| {
        event["event"] == "job:completed"
            && event["payload"]["id"] == job
            && event["payload"]["conclusion"] == "failed"
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polling_finds_a_failed_job_sqlite() {
    polling_finds_a_failed_job(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polling_finds_a_failed_job_postgres() {
    polling_finds_a_failed_job(Backend::Postgres).await;
}

async fn polling_finds_a_failed_job(backend: Backend) {
    let Some(h) = Harness::start_configured(backend, fast_sim(), |config| {
        config.event_poll_interval = Duration::from_millis(200);
    })
    .await
    else {
        return;
    };
    let mut rx = Subscriber::start().await;
    subscribe(&h, &rx.url, &["job:*", "record:*"]).await;
    let mut cd = Subscriber::start().await;
    let response = h
        .post("/webhook")
        .json(&json!({ "target_url": cd.url, "event_types": ["job:*"], "format": "cdevents" }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let account = h.link().await;
    // The first sweep is the baseline: the account's history is not news.
    metric_at_least(&h, "cigate_event_polls_total", 2.0).await;
    assert!(
        rx.drain(Duration::from_millis(300)).await.is_empty(),
        "history replayed"
    );

    let pipeline = first_pipeline(&h);
    let job = failing_run(&h, &pipeline);
    let seen = rx
        .until(Duration::from_secs(15), completed_failed(&job))
        .await;
    let of_job: Vec<&Value> = seen
        .iter()
        .filter(|e| {
            e["payload"]["id"] == job.as_str() || e["payload"]["record"]["id"] == job.as_str()
        })
        .collect();
    let kinds: Vec<&str> = of_job.iter().filter_map(|e| e["event"].as_str()).collect();
    assert_eq!(kinds.first(), Some(&"record:created"), "{kinds:?}");
    let started = kinds
        .iter()
        .position(|k| *k == "job:started")
        .expect("job:started");
    assert!(
        started < kinds.len() - 1,
        "started before completed: {kinds:?}"
    );
    assert_eq!(
        kinds.iter().filter(|k| **k == "job:completed").count(),
        1,
        "{kinds:?}"
    );
    let completed = of_job.last().unwrap();
    assert_eq!(completed["payload"]["workflow"], pipeline.2.to_string());
    assert!(completed["payload"].get("remote_data").is_none());
    assert!(
        seen.iter().any(|e| e["event"] == "job:step_started"
            && e["payload"]["job"]["id"] == job.as_str()
            && e["payload"]["step"]["id"].is_string()),
        "{seen:#?}"
    );
    // The same changes as CDEvents: steps as taskruns, the job as a pipelinerun.
    let cloud = cd
        .until(Duration::from_secs(10), |e| {
            e["type"] == "dev.cdevents.pipelinerun.finished.0.3.0"
        })
        .await;
    assert!(cloud
        .iter()
        .any(|e| e["type"] == "dev.cdevents.taskrun.started.0.3.0"));
    let finished = cloud.last().unwrap();
    assert_eq!(finished["specversion"], "1.0");
    assert_eq!(finished["data"]["subject"]["content"]["outcome"], "failure");
    let record = of_job[0];
    assert_eq!(record["payload"]["resource"], "ci-cd/jobs");
    assert_eq!(record["payload"]["integrated_account_id"], account.as_str());
    assert_eq!(record["payload"]["tenant_id"], "acme");

    // Polling again finds nothing new: no event is sent twice.
    metric_at_least(&h, "cigate_event_polls_total", 12.0).await;
    let again = rx.drain(Duration::from_millis(300)).await;
    assert!(
        again.iter().all(|e| e["event"] != "job:completed"),
        "{again:#?}"
    );
    let (_, log) = h
        .get_json(&format!(
            "/events?integrated_account_id={account}&event_type=job:completed"
        ))
        .await;
    assert_eq!(log["result"].as_array().map(Vec::len), Some(1), "{log}");
}

/// Buddy's webhooks of the workspace that post to `prefix…`.
async fn hooks_to(h: &Harness, ws: &str, prefix: &str) -> Vec<Value> {
    let listed = h.buddy_json(&format!("/workspaces/{ws}/webhooks")).await;
    listed["webhooks"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|hook| {
            hook["target_url"]
                .as_str()
                .is_some_and(|u| u.starts_with(prefix))
        })
        .collect()
}

async fn eventually_hooks(h: &Harness, ws: &str, prefix: &str, count: usize) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let hooks = hooks_to(h, ws, prefix).await;
        if hooks.len() == count {
            return hooks;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "expected {count} webhook(s), Buddy has {hooks:#?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_registered_buddy_webhook_delivers_sqlite() {
    registered_webhook(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_registered_buddy_webhook_delivers_postgres() {
    registered_webhook(Backend::Postgres).await;
}

async fn registered_webhook(backend: Backend) {
    let door = FrontDoor::start().await;
    let public = door.url.clone();
    let Some(h) = Harness::start_configured(backend, fast_sim(), |config| {
        config.public_url = Some(public);
        // Only the webhook can be fast here.
        config.event_poll_interval = Duration::from_secs(3600);
    })
    .await
    else {
        return;
    };
    let _ = door.target.set(h.server.base_url());
    let mut rx = Subscriber::start().await;
    subscribe(&h, &rx.url, &["job:completed"]).await;
    let account = h.link().await;
    let pipeline = first_pipeline(&h);
    let ws = pipeline.0.clone();
    let prefix = format!("{}/integrated-account-webhook/{account}/", door.url);
    let hooks = eventually_hooks(&h, &ws, &prefix, 1).await;
    let mut events: Vec<&str> = hooks[0]["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    events.sort_unstable();
    assert_eq!(
        events,
        [
            "EXECUTION_FAILED",
            "EXECUTION_FINISHED",
            "EXECUTION_STARTED",
            "EXECUTION_SUCCESSFUL"
        ]
    );
    let target = hooks[0]["target_url"].as_str().unwrap().to_owned();
    let secret = hooks[0]["secret_key"].as_str().unwrap().to_owned();
    assert!(secret.len() >= 32);
    // Registration settles (the baseline sweep too) before the job runs.
    metric_at_least(&h, "cigate_event_polls_total", 1.0).await;

    let job = failing_run(&h, &pipeline);
    let seen = rx
        .until(Duration::from_secs(5), completed_failed(&job))
        .await;
    assert_eq!(seen.len(), 1, "{seen:#?}");

    // Forged deliveries: a wrong secret is refused, a wrong path token is unknown, and
    // neither produces anything.
    let forged = json!({
        "workspace": {"domain": ws}, "project": {"name": pipeline.1},
        "execution": {"id": job.parse::<u64>().unwrap(), "status": "SUCCESSFUL",
                      "pipeline": {"id": pipeline.2}},
        "secret_key": "not-the-secret"
    });
    let http = reqwest::Client::new();
    let answer = http.post(&target).json(&forged).send().await.unwrap();
    assert_eq!(answer.status(), 401);
    let problem: Value = answer.json().await.unwrap();
    assert!(problem["type"].is_string());
    let wrong_token = format!("{prefix}not-the-token");
    let mut signed = forged.clone();
    signed["secret_key"] = json!(secret);
    let answer = http.post(&wrong_token).json(&signed).send().await.unwrap();
    assert_eq!(answer.status(), 404);
    let unknown = format!("{}/integrated-account-webhook/no-such-account/x", door.url);
    assert_eq!(
        http.post(&unknown)
            .json(&signed)
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    // The right secret with a false claim: the job is read again, and it did fail.
    let answer = http.post(&target).json(&signed).send().await.unwrap();
    assert_eq!(answer.status(), 200);
    assert!(rx.drain(Duration::from_millis(500)).await.is_empty());

    // Registering again finds cigate's own webhook; one Buddy lost is made again.
    let state = h.server.state.clone();
    let stored = state.store.account_by_id(&account).await.unwrap().unwrap();
    cigate_server::watch::hooks::ensure(&state, &stored).await;
    let again = eventually_hooks(&h, &ws, &prefix, 1).await;
    assert_eq!(again[0]["id"], hooks[0]["id"]);
    let id = hooks[0]["id"].as_u64().unwrap();
    let deleted = h
        .http
        .delete(format!(
            "{}/workspaces/{ws}/webhooks/{id}",
            h.sim.base_url()
        ))
        .bearer_auth(&h.buddy_token)
        .send()
        .await
        .unwrap();
    assert!(deleted.status().is_success());
    cigate_server::watch::hooks::ensure(&state, &stored).await;
    eventually_hooks(&h, &ws, &prefix, 1).await;

    // Deleting the account removes its Buddy webhook.
    let removed = h
        .http
        .delete(h.url(&format!("/integrated-account/{account}")))
        .bearer_auth(&h.api_token)
        .send()
        .await
        .unwrap();
    assert_eq!(removed.status(), 200);
    assert!(hooks_to(&h, &ws, &prefix).await.is_empty());
    let (_, log) = h
        .get_json("/events?event_type=integrated_account:deleted")
        .await;
    assert_eq!(log["result"][0]["integrated_account_id"], account.as_str());
    // Its webhook URL is gone with it.
    assert_eq!(
        http.post(&target)
            .json(&signed)
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
}

/// Reads the stream until a message naming `event` arrives; returns its `id` line.
async fn stream_until(response: &mut reqwest::Response, event: &str) -> (String, String) {
    let mut text = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let chunk = tokio::time::timeout_at(deadline, response.chunk())
            .await
            .unwrap_or_else(|_| panic!("no `{event}` on the stream; got {text}"))
            .unwrap()
            .expect("stream open");
        text.push_str(&String::from_utf8_lossy(&chunk));
        for message in text.split("\n\n") {
            if message.lines().any(|l| l == format!("event: {event}")) {
                let id = message
                    .lines()
                    .find_map(|l| l.strip_prefix("id: "))
                    .expect("an id")
                    .to_owned();
                return (id, message.to_owned());
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_event_stream_follows_and_resumes() {
    let Some(h) = Harness::start_configured(Backend::Sqlite, fast_sim(), |_| {}).await else {
        return;
    };
    let mut live = h
        .get("/events/stream?event_type=integrated_account:*")
        .send()
        .await
        .unwrap();
    assert_eq!(live.status(), 200);
    assert!(live.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let account = h.link().await;
    let (created, message) = stream_until(&mut live, "integrated_account:created").await;
    assert!(message.contains(&account), "{message}");
    let (active, _) = stream_until(&mut live, "integrated_account:active").await;

    // Resuming after the first message starts with the second.
    let mut resumed = h
        .get("/events/stream")
        .header("last-event-id", &created)
        .send()
        .await
        .unwrap();
    let (first, _) = stream_until(&mut resumed, "integrated_account:active").await;
    assert_eq!(first, active);

    let bad = h.get("/events/stream?after=nonsense").send().await.unwrap();
    assert_eq!(bad.status(), 400);
    let bad = h
        .get("/events/stream?event_type=job:")
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
}

/// What a slow subscriber saw: `(webhook-id, event id, repo/workflow/job)` per arrival.
type Seen = Arc<std::sync::Mutex<Vec<(String, String, String)>>>;

async fn slow_subscriber(delay: Duration) -> (String, Seen) {
    let seen: Seen = Arc::default();
    let log = seen.clone();
    let app = axum::Router::new().route(
        "/hook",
        post(move |headers: axum::http::HeaderMap, body: Bytes| {
            let log = log.clone();
            async move {
                tokio::time::sleep(delay).await;
                let event: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                let webhook_id = headers
                    .get("webhook-id")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_owned();
                let job = &event["payload"];
                let key = format!(
                    "{}/{}/{}",
                    job["repo"].as_str().unwrap_or_default(),
                    job["workflow"].as_str().unwrap_or_default(),
                    job["id"].as_str().unwrap_or_default()
                );
                log.lock().unwrap().push((
                    webhook_id,
                    event["id"].as_str().unwrap_or_default().to_owned(),
                    key,
                ));
                StatusCode::NO_CONTENT
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}/hook"), seen)
}

/// Two instances on one PostgreSQL database, 30 jobs running, a slow subscriber, and
/// one instance stopped dead mid-delivery (its tasks dropped, its leases left behind):
/// every job's completion arrives once, and an event sent twice keeps its `webhook-id`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_lose_nothing_when_one_dies_mid_delivery() {
    let sim = SimConfig {
        seed: "workspaces=1,projects=3,pipelines=10,executions=2,seed=5"
            .parse()
            .unwrap(),
        ..fast_sim()
    };
    let Some(h) = Harness::start_configured(Backend::Postgres, sim, |config| {
        config.event_poll_interval = Duration::from_millis(300);
        config.webhook_delivery_lease = Duration::from_secs(1);
    })
    .await
    else {
        return;
    };
    let store = cigate_server::store::open(&h.config).await.unwrap();
    let state = cigate_server::build_state(h.config.clone(), store)
        .await
        .unwrap();
    let mut second = cigate_server::start(state).await.unwrap();
    let (url, seen) = slow_subscriber(Duration::from_millis(150)).await;
    subscribe(&h, &url, &["job:completed"]).await;
    h.link().await;
    metric_at_least(&h, "cigate_event_polls_total", 2.0).await;

    let sim = h.sim.sim();
    let ws = sim.workspace_domains()[0].clone();
    let mut jobs = std::collections::BTreeSet::new();
    for project in sim.project_names(&ws) {
        for pipeline in sim.pipeline_ids(&ws, &project) {
            let id = sim
                .run(&ws, &project, pipeline, RunRequest::default())
                .unwrap();
            jobs.insert(format!("{project}/{pipeline}/{id}"));
        }
    }
    assert_eq!(jobs.len(), 30);
    // Stop one instance dead once deliveries are under way.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while seen.lock().unwrap().len() < 5 {
        assert!(tokio::time::Instant::now() < deadline, "no deliveries");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    h.server.abort();
    // The survivor finds every completion and finishes what the dead one held. (Some
    // seeded pipelines wait for an approval: those jobs do not complete.)
    let finished = |sim: &cigate_buddy_sim::Sim| -> std::collections::BTreeSet<String> {
        jobs.iter()
            .filter(|job| {
                let parts: Vec<&str> = job.split('/').collect();
                let status = sim.execution_status(
                    &ws,
                    parts[0],
                    parts[1].parse().unwrap(),
                    parts[2].parse().unwrap(),
                );
                matches!(
                    status.as_deref(),
                    Some("SUCCESSFUL" | "FAILED" | "TERMINATED")
                )
            })
            .cloned()
            .collect()
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let done = finished(&sim);
        let delivered: std::collections::BTreeSet<String> = seen
            .lock()
            .unwrap()
            .iter()
            .map(|(_, _, job)| job.clone())
            .collect();
        if done.len() >= 20 && done.is_subset(&delivered) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} jobs finished, completions arrived for {}",
            done.len(),
            delivered.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let arrivals = seen.lock().unwrap().clone();
    let mut by_event: std::collections::BTreeMap<String, std::collections::BTreeSet<String>> =
        Default::default();
    let mut by_job: std::collections::BTreeMap<String, std::collections::BTreeSet<String>> =
        Default::default();
    for (webhook_id, event, job) in &arrivals {
        by_event
            .entry(event.clone())
            .or_default()
            .insert(webhook_id.clone());
        by_job.entry(job.clone()).or_default().insert(event.clone());
    }
    assert!(
        by_job.values().all(|events| events.len() == 1),
        "one completion event per job: {by_job:#?}"
    );
    assert!(
        by_event.values().all(|ids| ids.len() == 1),
        "a resent event keeps its webhook-id: {by_event:#?}"
    );
    second.shutdown().await.unwrap();
}

/// A registered Buddy webhook whose deliveries never reach cigate: the safety-net poll
/// still finds the job, and the account goes back to polling at the normal interval.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_buddy_webhook_is_caught_by_polling() {
    // A front door that never forwards: Buddy's deliveries go nowhere.
    let door = FrontDoor::start().await;
    let public = door.url.clone();
    let Some(h) = Harness::start_configured(Backend::Sqlite, fast_sim(), |config| {
        config.public_url = Some(public);
        config.event_poll_interval = Duration::from_millis(100);
    })
    .await
    else {
        return;
    };
    let mut rx = Subscriber::start().await;
    subscribe(&h, &rx.url, &["job:completed"]).await;
    let account = h.link().await;
    let pipeline = first_pipeline(&h);
    let prefix = format!("{}/integrated-account-webhook/{account}/", door.url);
    eventually_hooks(&h, &pipeline.0, &prefix, 1).await;
    let store = &h.server.state.store;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while store
        .event_source(&account)
        .await
        .unwrap()
        .is_none_or(|s| s.polled_at.is_none() || s.hooks.as_array().is_none_or(Vec::is_empty))
    {
        assert!(tokio::time::Instant::now() < deadline, "no baseline");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let job = failing_run(&h, &pipeline);
    rx.until(Duration::from_secs(15), completed_failed(&job))
        .await;
    // The sweep that found it records the silence when it ends.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let source = loop {
        let source = store.event_source(&account).await.unwrap().unwrap();
        if source.hooks_error.is_some() {
            break source;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the silence went unnoticed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        source
            .hooks_error
            .as_deref()
            .is_some_and(|e| e.contains("silent")),
        "{:?}",
        source.hooks_error
    );
    assert!(source.hook_seen_at.is_none());
}

/// A first sweep that fails is no baseline: the sweep after it is, so the account's
/// history is still not replayed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_first_sweep_replays_no_history() {
    let Some(h) = Harness::start_configured(Backend::Sqlite, fast_sim(), |config| {
        config.event_poll_interval = Duration::from_millis(100);
    })
    .await
    else {
        return;
    };
    let mut rx = Subscriber::start().await;
    subscribe(&h, &rx.url, &["job:*", "record:*"]).await;
    // Buddy refuses the first executions reads (a 403 is not retried).
    h.sim.sim().inject(cigate_buddy_sim::FaultSpec {
        path: Some("/executions".into()),
        ..cigate_buddy_sim::FaultSpec::new(cigate_buddy_sim::FaultKind::Status { status: 403 }, 2)
    });
    h.link().await;
    metric_at_least(&h, "cigate_event_polls_total{outcome=\"failed\"}", 1.0).await;
    metric_at_least(&h, "cigate_event_polls_total{outcome=\"idle\"}", 3.0).await;
    let replayed = rx.drain(Duration::from_millis(300)).await;
    assert!(replayed.is_empty(), "history replayed: {replayed:#?}");
}
