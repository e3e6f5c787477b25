//! Stopping and the edges of a request over real HTTP: a graceful shutdown finishes the
//! writes in flight and cuts long streams when its grace ends; an `Idempotency-Key`
//! whose holder died is answered "outcome unknown" at once, never with a `Retry-After`
//! that cannot come true; request bodies are read within a deadline and a limit, and
//! refused as problem+json.

mod common;

use std::time::Duration;

use cigate_buddy_sim::{FaultKind, FaultSpec, SeedSpec, SimConfig, TimeMode};
use cigate_store::{Begin, IdempotencyKey, StoredResponse};
use common::{Backend, Harness};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Longest any single exchange may take before the test calls it hung.
const HANG: Duration = Duration::from_secs(30);

fn manual_sim() -> SimConfig {
    SimConfig {
        time: TimeMode::Manual,
        seed: "workspaces=1,projects=1,pipelines=1,executions=1,commits=3"
            .parse::<SeedSpec>()
            .unwrap(),
        ..Default::default()
    }
}

async fn harness(configure: impl FnOnce(&mut cigate_server::ServerConfig)) -> Harness {
    Harness::start_configured(Backend::Sqlite, manual_sim(), configure)
        .await
        .unwrap()
}

/// The linked account and the query that names the simulator's one pipeline.
async fn pipeline_query(h: &Harness) -> (String, String) {
    let account = h.link().await;
    let sim = h.sim.sim();
    let ws = sim.workspace_domains()[0].clone();
    let project = sim.project_names(&ws)[0].clone();
    let pipeline = sim.pipeline_ids(&ws, &project)[0];
    let q = format!(
        "integrated_account_id={account}&workspace={ws}&project={project}&workflow={pipeline}"
    );
    (account, q)
}

fn executions(h: &Harness) -> u64 {
    let sim = h.sim.sim();
    let ws = sim.workspace_domains()[0].clone();
    let project = sim.project_names(&ws)[0].clone();
    let pipeline = sim.pipeline_ids(&ws, &project)[0];
    sim.execution_count(&ws, &project, pipeline)
}

/// Waits until the simulator has received `n` runs (the readiness signal that a write is
/// in flight at Buddy).
async fn until_runs_arrive(h: &Harness, n: u64) {
    let sim = h.sim.sim();
    tokio::time::timeout(HANG, async {
        while sim.request_count(Some("POST"), "/workspaces") < n {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the write reaches Buddy");
}

async fn send(req: reqwest::RequestBuilder) -> (u16, reqwest::header::HeaderMap, String) {
    let response = tokio::time::timeout(HANG, req.send())
        .await
        .expect("no hang")
        .expect("request");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    (status, headers, response.text().await.unwrap_or_default())
}

fn parse(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|_| panic!("not JSON: {body}"))
}

#[tokio::test]
async fn shutdown_finishes_a_write_in_flight_and_a_restart_replays_it() {
    let mut h = harness(|c| c.shutdown_grace = Duration::from_secs(20)).await;
    let (_, q) = pipeline_query(&h).await;
    let before = executions(&h);
    h.sim
        .sim()
        .inject(FaultSpec::new(FaultKind::Latency { ms: 1500 }, 1).on_path("/executions"));
    let write = tokio::spawn(send(
        h.post(&format!("/unified/ci-cd/jobs?{q}"))
            .header("Idempotency-Key", "in-flight")
            .json(&json!({"comment": "in flight at shutdown"})),
    ));
    until_runs_arrive(&h, 1).await;
    let addr = h.server.addr;
    h.server.shutdown().await.unwrap();
    // The server returned only after the write's answer was out.
    assert!(write.is_finished());
    let (status, _, first) = write.await.unwrap();
    assert_eq!(status, 201, "{first}");
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "a stopped server accepts no connection"
    );
    assert_eq!(executions(&h), before + 1);

    // Restarted on the same database, the key replays the recorded answer.
    let store = cigate_server::store::open(&h.config).await.unwrap();
    let state = cigate_server::build_state(h.config.clone(), store)
        .await
        .unwrap();
    let again = cigate_server::start(state).await.unwrap();
    let (status, headers, replayed) = send(
        h.http
            .post(format!("{}/unified/ci-cd/jobs?{q}", again.base_url()))
            .bearer_auth(&h.api_token)
            .header("Idempotency-Key", "in-flight")
            .json(&json!({"comment": "in flight at shutdown"})),
    )
    .await;
    again.abort();
    assert_eq!(status, 201, "{replayed}");
    assert_eq!(headers["idempotent-replayed"], "true");
    assert_eq!(parse(&replayed)["id"], parse(&first)["id"]);
    assert_eq!(executions(&h), before + 1);
}

/// With several serving threads (`workers`), each listening on the shared port: the
/// kernel spreads connections over them, a graceful shutdown waits for the requests in
/// flight on every thread, and afterwards no thread accepts a connection.
#[tokio::test]
async fn serving_threads_share_the_port_and_stop_together() {
    let mut h = harness(|c| {
        c.workers = 3;
        c.shutdown_grace = Duration::from_secs(20);
    })
    .await;
    let account = h.link().await;
    let sim = h.sim.sim();
    let before = sim.request_count(Some("GET"), "/workspaces");
    const CALLS: u64 = 12;
    sim.inject(
        FaultSpec::new(FaultKind::Latency { ms: 1000 }, CALLS as u32).on_path("/workspaces"),
    );
    // A client each: a connection each, so they land on the threads' sockets by hash
    // (all twelve on one of three sockets: 3 × 3⁻¹² ≈ 6 in a million).
    let calls: Vec<_> = (0..CALLS)
        .map(|_| {
            let request = reqwest::Client::new()
                .get(h.url(&format!(
                    "/unified/ci-cd/workspaces?integrated_account_id={account}"
                )))
                .bearer_auth(&h.api_token);
            tokio::spawn(send(request))
        })
        .collect();
    tokio::time::timeout(HANG, async {
        while sim.request_count(Some("GET"), "/workspaces") < before + CALLS {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("every call reaches Buddy");
    let addr = h.server.addr;
    h.server.shutdown().await.unwrap();
    for call in calls {
        assert!(call.is_finished(), "shutdown returned before an answer");
        let (status, _, body) = call.await.unwrap();
        assert_eq!(status, 200, "{body}");
    }
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "a stopped server accepts no connection on any thread's socket"
    );
}

#[tokio::test]
async fn a_followed_log_is_cut_when_the_grace_period_ends() {
    let mut h = harness(|c| c.shutdown_grace = Duration::from_millis(500)).await;
    let (_, q) = pipeline_query(&h).await;
    let (status, _, body) = send(h.post(&format!("/unified/ci-cd/jobs?{q}"))).await;
    assert_eq!(status, 201, "{body}");
    let id = parse(&body)["id"].as_str().unwrap().to_owned();
    // The job stays queued (manual clock), so the follow would run for its full minute.
    let mut stream = h
        .get(&format!(
            "/unified/ci-cd/jobs/{id}/logs?{q}&format=text&follow=true&interval_ms=250&timeout_s=60"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    let reading = tokio::spawn(async move {
        let mut chunks = 0;
        while let Ok(Some(_)) = stream.chunk().await {
            chunks += 1;
        }
        chunks
    });
    tokio::time::timeout(HANG, h.server.shutdown())
        .await
        .expect("shutdown ends when the grace period does")
        .unwrap();
    let chunks = tokio::time::timeout(HANG, reading)
        .await
        .expect("the stream is cut")
        .unwrap();
    assert!(chunks >= 1, "the stream had started");
}

/// The key the server derives for a write, held directly in the store.
async fn held_key(
    h: &Harness,
    account: &str,
    key: &str,
    q: &str,
    body: &Value,
) -> (IdempotencyKey, String) {
    let store = &h.server.state.store;
    let env = store.ensure_environment("default").await.unwrap();
    let id = IdempotencyKey {
        environment_id: env.id,
        account_id: Some(account.to_owned()),
        method: "POST".into(),
        path: "/unified/ci-cd/jobs".into(),
        key: key.into(),
    };
    let hash = cigate_server::idempotency::request_hash(
        "POST",
        "/unified/ci-cd/jobs",
        q,
        &serde_json::to_vec(body).unwrap(),
    );
    (id, hash)
}

#[tokio::test]
async fn a_key_whose_holder_died_is_answered_outcome_unknown_at_once() {
    let h = harness(|c| c.idempotency_lease = Duration::from_secs(1)).await;
    let (account, q) = pipeline_query(&h).await;
    let body = json!({"comment": "first attempt"});
    let (id, hash) = held_key(&h, &account, "orphan", &q, &body).await;
    let store = &h.server.state.store;
    // A holder that took the key and died: its short lease is never renewed.
    let day = Duration::from_secs(86_400);
    let lease = Duration::from_millis(300);
    assert_eq!(
        store
            .begin_idempotent(&id, &hash, day, lease)
            .await
            .unwrap(),
        Begin::Started
    );
    tokio::time::sleep(lease * 2).await;
    let before = executions(&h);
    for _ in 0..2 {
        let started = std::time::Instant::now();
        let (status, headers, text) = send(
            h.post(&format!("/unified/ci-cd/jobs?{q}"))
                .header("Idempotency-Key", "orphan")
                .json(&body),
        )
        .await;
        assert_eq!(status, 409, "{text}");
        assert_eq!(
            headers["content-type"], "application/problem+json",
            "{headers:?}"
        );
        assert!(headers.get("retry-after").is_none(), "{headers:?}");
        let problem = parse(&text);
        assert_eq!(problem["type"], "/problems/idempotency-outcome-unknown");
        let message = problem["message"].as_str().unwrap();
        assert!(message.contains("unknown"), "{message}");
        assert!(message.contains("GET /unified/ci-cd/jobs"), "{message}");
        // Answered from the record, without waiting for a holder that is gone.
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
    }
    assert_eq!(executions(&h), before, "an orphaned key never runs again");
}

#[tokio::test]
async fn a_live_holder_is_waited_for_and_a_lapsed_one_is_recognised_while_waiting() {
    let h = harness(|c| c.idempotency_lease = Duration::from_secs(1)).await;
    let (account, q) = pipeline_query(&h).await;
    let body = json!({"comment": "first attempt"});
    let store = h.server.state.store.clone();
    let day = Duration::from_secs(86_400);

    // A holder that finishes while the resend waits: the resend replays its answer.
    let (id, hash) = held_key(&h, &account, "live", &q, &body).await;
    assert_eq!(
        store
            .begin_idempotent(&id, &hash, day, Duration::from_secs(60))
            .await
            .unwrap(),
        Begin::Started
    );
    let resend = tokio::spawn(send(
        h.post(&format!("/unified/ci-cd/jobs?{q}"))
            .header("Idempotency-Key", "live")
            .json(&body),
    ));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !resend.is_finished(),
        "the resend waits for the live holder"
    );
    let answer = StoredResponse {
        status: 201,
        headers: vec![("content-type".into(), "application/json".into())],
        body: br#"{"id":"77"}"#.to_vec(),
    };
    assert!(store.finish_idempotent(&id, &answer).await.unwrap());
    let (status, headers, text) = resend.await.unwrap();
    assert_eq!(status, 201, "{text}");
    assert_eq!(headers["idempotent-replayed"], "true");
    assert_eq!(text, r#"{"id":"77"}"#);

    // A holder that dies while the resend waits: the resend learns it when the lease
    // lapses, not at the end of its wait.
    let (id, hash) = held_key(&h, &account, "dies", &q, &body).await;
    let lease = Duration::from_millis(600);
    assert_eq!(
        store
            .begin_idempotent(&id, &hash, day, lease)
            .await
            .unwrap(),
        Begin::Started
    );
    let started = std::time::Instant::now();
    let (status, _, text) = send(
        h.post(&format!("/unified/ci-cd/jobs?{q}"))
            .header("Idempotency-Key", "dies")
            .json(&body),
    )
    .await;
    assert_eq!(status, 409, "{text}");
    assert_eq!(
        parse(&text)["type"],
        "/problems/idempotency-outcome-unknown"
    );
    // The wait for a live holder is the upstream deadline (30 s); this ended with the lease.
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_holder_still_running_after_the_wait_gets_an_honest_retry_after() {
    let h = harness(|c| {
        c.idempotency_lease = Duration::from_secs(2);
        c.upstream_timeout_ms = 200;
    })
    .await;
    let (account, q) = pipeline_query(&h).await;
    let body = json!({"comment": "first attempt"});
    let store = h.server.state.store.clone();
    let (id, hash) = held_key(&h, &account, "slow", &q, &body).await;
    assert_eq!(
        store
            .begin_idempotent(
                &id,
                &hash,
                Duration::from_secs(86_400),
                Duration::from_secs(120)
            )
            .await
            .unwrap(),
        Begin::Started
    );
    let (status, headers, text) = send(
        h.post(&format!("/unified/ci-cd/jobs?{q}"))
            .header("Idempotency-Key", "slow")
            .json(&body),
    )
    .await;
    assert_eq!(status, 409, "{text}");
    assert_eq!(
        parse(&text)["type"],
        "/problems/idempotency-key-in-progress"
    );
    // One lease: by then the holder has renewed it, finished, or is known to be gone.
    assert_eq!(headers["retry-after"], "2");
}

/// One raw HTTP/1.1 exchange: writes `head` (and `body`), reads until the server closes.
async fn raw_exchange(addr: std::net::SocketAddr, head: &str, body: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(head.as_bytes()).await.unwrap();
    // The server may answer (and close) before the body is through.
    let _ = stream.write_all(body).await;
    let mut out = Vec::new();
    tokio::time::timeout(HANG, stream.read_to_end(&mut out))
        .await
        .expect("the server answers and closes")
        .ok();
    String::from_utf8_lossy(&out).into_owned()
}

fn status_of(response: &str) -> u16 {
    response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line: {response:?}"))
}

fn assert_problem(response: &str, status: u16, kind: &str) {
    assert_eq!(status_of(response), status, "{response}");
    let lower = response.to_ascii_lowercase();
    assert!(
        lower.contains("content-type: application/problem+json"),
        "{response}"
    );
    assert!(
        response.contains(&format!("\"type\":\"{kind}\"")),
        "{response}"
    );
}

/// The routes whose 413 used to be axum's text/plain.
fn body_routes(q: &str) -> Vec<String> {
    vec![
        format!("/unified/ci-cd/jobs?{q}"),
        format!("/unified/ci-cd/workflow?{q}"),
        format!("/unified/ci-cd/jobs/1/cancel?{q}"),
        "/api-token".into(),
        "/connect/token".into(),
    ]
}

#[tokio::test]
async fn an_oversized_declared_body_is_refused_before_it_is_read() {
    let h = harness(|_| {}).await;
    let (_, q) = pipeline_query(&h).await;
    for path in body_routes(&q) {
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\
             Content-Type: application/json\r\nContent-Length: 1000000000000\r\n\r\n",
            h.api_token
        );
        // No body is sent: the answer must not wait for it.
        let response = raw_exchange(h.server.addr, &head, b"").await;
        assert_problem(&response, 413, "/problems/payload-too-large");
        assert!(
            response.to_ascii_lowercase().contains("connection: close"),
            "{response}"
        );
    }
}

#[tokio::test]
async fn a_chunked_body_over_the_limit_is_413_problem_json_on_every_route() {
    let h = harness(|c| c.body_limit = 1024).await;
    let (_, q) = pipeline_query(&h).await;
    let chunk = format!("{:x}\r\n{}\r\n0\r\n\r\n", 4096, "x".repeat(4096));
    for path in body_routes(&q) {
        for key in ["", "Idempotency-Key: big\r\n"] {
            let head = format!(
                "POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n{key}\
                 Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\
                 Connection: close\r\n\r\n",
                h.api_token
            );
            let response = raw_exchange(h.server.addr, &head, chunk.as_bytes()).await;
            assert_problem(&response, 413, "/problems/payload-too-large");
        }
    }
    // Within the limit, the same route still works.
    let (status, _, text) =
        send(h.post(&format!("/unified/ci-cd/jobs?{q}")).json(&json!({}))).await;
    assert_eq!(status, 201, "{text}");
}

#[tokio::test]
async fn bodies_that_never_arrive_are_answered_408_and_closed() {
    let h = harness(|c| c.body_read_timeout = Duration::from_secs(1)).await;
    let (_, q) = pipeline_query(&h).await;
    let before = executions(&h);
    let head = format!(
        "POST /unified/ci-cd/jobs?{q} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: 100\r\n\r\n",
        h.api_token
    );
    // 300 connections that declare a body and send none of it.
    let silent: Vec<_> = (0..300)
        .map(|_| {
            let head = head.clone();
            let addr = h.server.addr;
            tokio::spawn(async move { raw_exchange(addr, &head, b"").await })
        })
        .collect();
    for task in silent {
        let response = task.await.unwrap();
        assert_problem(&response, 408, "/problems/request-timeout");
    }
    // A body trickled a byte at a time is bounded by the whole deadline, not per byte.
    let mut stream = TcpStream::connect(h.server.addr).await.unwrap();
    stream.write_all(head.as_bytes()).await.unwrap();
    let trickle = async {
        loop {
            if stream.write_all(b" ").await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
            let mut probe = [0u8; 1];
            if let Ok(Ok(n)) =
                tokio::time::timeout(Duration::from_millis(1), stream.peek(&mut probe)).await
            {
                if n > 0 {
                    break;
                }
            }
        }
        let mut out = Vec::new();
        let _ = stream.read_to_end(&mut out).await;
        String::from_utf8_lossy(&out).into_owned()
    };
    let response = tokio::time::timeout(HANG, trickle).await.expect("answered");
    assert_problem(&response, 408, "/problems/request-timeout");
    assert_eq!(
        executions(&h),
        before,
        "no run was started by a body that never came"
    );
}
