//! State machine, rate limiting, OAuth, outgoing webhooks and injected faults.

mod common;

use std::time::Duration as StdDuration;

use axum::routing::post;
use base64::Engine;
use chrono::Duration;
use cigate_buddy_sim::{FaultKind, FaultSpec, SimHandle};
use common::{first_message, sim, sim_with, Api};
use reqwest::Method;
use serde_json::{json, Value};
use sha2::Digest;

const WS: &str = "/workspaces/acme";

async fn pipeline_named(api: &Api, h: &SimHandle, name: &str) -> (String, u64) {
    let sim = h.sim();
    for project in sim.project_names("acme") {
        let list = api
            .json(&format!("{WS}/projects/{project}/pipelines"))
            .await;
        for pl in list["pipelines"].as_array().unwrap() {
            if pl["name"] == name {
                return (project, pl["id"].as_u64().unwrap());
            }
        }
    }
    panic!("no pipeline {name}");
}

async fn run(api: &Api, project: &str, pid: u64, body: Value) -> Value {
    let resp = api
        .send(
            Method::POST,
            &format!("{WS}/projects/{project}/pipelines/{pid}/executions"),
            body,
        )
        .await;
    assert_eq!(resp.status(), 201);
    assert!(resp.headers().contains_key("location"));
    resp.json().await.unwrap()
}

async fn patch(api: &Api, project: &str, pid: u64, id: u64, body: Value) -> reqwest::Response {
    api.send(
        Method::PATCH,
        &format!("{WS}/projects/{project}/pipelines/{pid}/executions/{id}"),
        body,
    )
    .await
}

async fn get_exec(api: &Api, project: &str, pid: u64, id: u64) -> Value {
    api.json(&format!(
        "{WS}/projects/{project}/pipelines/{pid}/executions/{id}"
    ))
    .await
}

#[tokio::test]
async fn run_progresses_with_growing_logs_and_syncs_pipeline() {
    let h = sim_with(|c| {
        c.queue_seconds = 1;
        c.action_seconds = 10;
    })
    .await;
    let api = Api::new(&h);
    let (project, pid) = pipeline_named(&api, &h, "Build & test").await;
    let e = run(&api, &project, pid, json!({"to_revision": {"revision": "HEAD"}, "branch": {"name": "main"}, "comment": "api run"})).await;
    assert_eq!(e["id"], 51, "next id after the seeded ones");
    assert_eq!(e["status"], "ENQUEUED");
    assert_eq!(e["triggeredOn"], "CLICK");
    assert!(e["finish_date"].is_null());
    let sim = h.sim();
    sim.advance(Duration::seconds(1));
    let e = get_exec(&api, &project, pid, 51).await;
    assert_eq!(e["status"], "INPROGRESS");
    assert_eq!(e["action_executions"][0]["status"], "INPROGRESS");
    let hex = e["action_executions"][0]["action_execution_id"]
        .as_str()
        .unwrap()
        .to_string();
    let log_path =
        format!("{WS}/projects/{project}/pipelines/{pid}/executions/51/action_executions/{hex}");
    let first = api.json(&log_path).await["log"].as_array().unwrap().len();
    sim.advance(Duration::seconds(6));
    let later = api.json(&log_path).await["log"].as_array().unwrap().len();
    assert!(later > first, "log grows: {first} -> {later}");
    let pl = api
        .json(&format!("{WS}/projects/{project}/pipelines/{pid}"))
        .await;
    assert_eq!(pl["last_execution_status"], "INPROGRESS");
    sim.advance(Duration::seconds(60));
    let e = get_exec(&api, &project, pid, 51).await;
    assert_eq!(e["status"], "SUCCESSFUL");
    assert!(e["finish_date"].is_string());
    let pl = api
        .json(&format!("{WS}/projects/{project}/pipelines/{pid}"))
        .await;
    assert_eq!(pl["last_execution_status"], "SUCCESSFUL");
    assert_eq!(pl["last_execution_revision"], e["to_revision"]["revision"]);
    let list = api
        .json(&format!(
            "{WS}/projects/{project}/pipelines/{pid}/executions?per_page=1"
        ))
        .await;
    assert_eq!(list["executions"][0]["id"], 51);
    assert_eq!(list["total_element_count"], 51);
    h.shutdown().await;
}

#[tokio::test]
async fn cancel_retry_apply_apply_variables_run_delayed() {
    let h = sim_with(|c| {
        c.queue_seconds = 0;
        c.action_seconds = 5;
        c.terminate_seconds = 1;
    })
    .await;
    let api = Api::new(&h);
    let sim = h.sim();

    // CANCEL → TERMINATING → TERMINATED, then RETRY → INPROGRESS → SUCCESSFUL.
    let (project, pid) = pipeline_named(&api, &h, "Build & test").await;
    let id = run(&api, &project, pid, json!({})).await["id"]
        .as_u64()
        .unwrap();
    let e = patch(&api, &project, pid, id, json!({"operation": "CANCEL"}))
        .await
        .json::<Value>()
        .await
        .unwrap();
    assert_eq!(e["status"], "TERMINATING");
    sim.advance(Duration::seconds(1));
    assert_eq!(
        get_exec(&api, &project, pid, id).await["status"],
        "TERMINATED"
    );
    let bad = patch(&api, &project, pid, id, json!({"operation": "CANCEL"})).await;
    assert_eq!(bad.status(), 400);
    let e = patch(&api, &project, pid, id, json!({"operation": "RETRY"}))
        .await
        .json::<Value>()
        .await
        .unwrap();
    assert_eq!(e["status"], "INPROGRESS");
    sim.advance(Duration::seconds(60));
    assert_eq!(
        get_exec(&api, &project, pid, id).await["status"],
        "SUCCESSFUL"
    );

    // A scripted failure, then RETRY succeeds.
    sim.fail_next_runs("acme", &project, pid, 1).unwrap();
    let id = run(&api, &project, pid, json!({})).await["id"]
        .as_u64()
        .unwrap();
    sim.advance(Duration::seconds(60));
    let e = get_exec(&api, &project, pid, id).await;
    assert_eq!(e["status"], "FAILED");
    assert!(e["action_executions"]
        .as_array()
        .unwrap()
        .iter()
        .any(|a| a["status"] == "FAILED"));
    patch(&api, &project, pid, id, json!({"operation": "RETRY"})).await;
    sim.advance(Duration::seconds(60));
    assert_eq!(
        get_exec(&api, &project, pid, id).await["status"],
        "SUCCESSFUL"
    );

    // Approval gate.
    let (project, pid) = pipeline_named(&api, &h, "Deploy to production").await;
    let id = run(&api, &project, pid, json!({})).await["id"]
        .as_u64()
        .unwrap();
    sim.advance(Duration::seconds(60));
    let e = get_exec(&api, &project, pid, id).await;
    assert_eq!(e["status"], "INPROGRESS");
    assert_eq!(e["action_executions"][1]["status"], "WAITING_FOR_APPLY");
    let e = patch(&api, &project, pid, id, json!({"operation": "APPLY"}))
        .await
        .json::<Value>()
        .await
        .unwrap();
    assert_eq!(e["action_executions"][1]["status"], "SUCCESSFUL");
    sim.advance(Duration::seconds(60));
    assert_eq!(
        get_exec(&api, &project, pid, id).await["status"],
        "SUCCESSFUL"
    );

    // Delayed run waits until RUN_DELAYED.
    let later = (chrono::Utc::now() + Duration::days(2))
        .format("%Y-%m-%dT%H:%M:%S%.3fZ")
        .to_string();
    let id = run(&api, &project, pid, json!({"delay_until": later})).await["id"]
        .as_u64()
        .unwrap();
    sim.advance(Duration::seconds(60));
    assert_eq!(
        get_exec(&api, &project, pid, id).await["status"],
        "ENQUEUED"
    );
    patch(&api, &project, pid, id, json!({"operation": "RUN_DELAYED"})).await;
    sim.advance(Duration::seconds(1));
    assert_eq!(
        get_exec(&api, &project, pid, id).await["status"],
        "INPROGRESS"
    );
    h.shutdown().await;

    // Settable-variables gate (the Release pipeline asks for arguments first).
    let h = sim_with(|c| {
        c.queue_seconds = 0;
        c.action_seconds = 5;
        c.seed = "projects=1,pipelines=6,executions=3".parse().unwrap();
    })
    .await;
    let api = Api::new(&h);
    let (project, pid) = pipeline_named(&api, &h, "Release").await;
    let id = run(&api, &project, pid, json!({"tag": {"name": "v1.2.0"}})).await["id"]
        .as_u64()
        .unwrap();
    h.sim().advance(Duration::seconds(1));
    let e = get_exec(&api, &project, pid, id).await;
    assert_eq!(e["action_executions"][0]["status"], "WAITING_FOR_VARIABLES");
    assert_eq!(e["tag"]["name"], "v1.2.0");
    let e = patch(&api, &project, pid, id, json!({"operation": "APPLY_VARIABLES", "variables": [{"key": "VERSION", "value": "1.3.0"}]}))
        .await
        .json::<Value>()
        .await
        .unwrap();
    assert_eq!(e["variables"][0]["key"], "VERSION");
    h.sim().advance(Duration::seconds(60));
    assert_eq!(
        get_exec(&api, &project, pid, id).await["status"],
        "SUCCESSFUL"
    );
    h.shutdown().await;
}

#[tokio::test]
async fn rate_limit_counts_down_and_resets() {
    let h = sim_with(|c| c.rate_limit = "3/60".parse().unwrap()).await;
    let api = Api::new(&h);
    let start = h.sim().now().timestamp();
    let mut remaining = Vec::new();
    for _ in 0..3 {
        let r = api.get("/workspaces").await;
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["x-rate-limit-limit"], "3");
        assert_eq!(
            r.headers()["x-rate-limit-reset"],
            (start + 60).to_string().as_str()
        );
        remaining.push(
            r.headers()["x-rate-limit-remaining"]
                .to_str()
                .unwrap()
                .to_string(),
        );
    }
    assert_eq!(remaining, ["2", "1", "0"]);
    let limited = api.get("/workspaces").await;
    assert_eq!(limited.status(), 429);
    assert_eq!(limited.headers()["retry-after"], "60");
    assert_eq!(limited.headers()["x-rate-limit-remaining"], "0");
    assert_eq!(
        first_message(&limited.json().await.unwrap()),
        "Rate limit exceeded."
    );
    h.sim().advance(Duration::seconds(59));
    assert_eq!(api.get("/workspaces").await.headers()["retry-after"], "1");
    h.sim().advance(Duration::seconds(1));
    let again = api.get("/workspaces").await;
    assert_eq!(again.status(), 200);
    assert_eq!(again.headers()["x-rate-limit-remaining"], "2");
    h.shutdown().await;

    let h = sim_with(|c| {
        c.rate_limit = "1/60".parse().unwrap();
        c.rate_limit_status = cigate_buddy_sim::RateLimitStatus::Forbidden;
    })
    .await;
    let api = Api::new(&h);
    api.get("/workspaces").await;
    let limited = api.get("/workspaces").await;
    assert_eq!(limited.status(), 403);
    assert_eq!(
        first_message(&limited.json().await.unwrap()),
        "Rate limit exceeded."
    );
    h.shutdown().await;
}

/// The window semantics set through `/__sim/rate-limit`: a clock-aligned window, the
/// reset with decimals, a 403 without `Retry-After`, and the refusals counted.
#[tokio::test]
async fn rate_limit_semantics_are_set_through_the_control_api() {
    let h = sim().await;
    let api = Api::new(&h);
    let control = |body: Value| {
        let client = api.client.clone();
        let url = format!("{}/__sim/rate-limit", h.base_url());
        async move { client.post(url).json(&body).send().await.unwrap() }
    };
    // Manual time starts on a whole second; move 300 ms into it.
    h.sim().advance(Duration::milliseconds(300));
    let now_ms = h.sim().now().timestamp_millis();
    let set =
        control(json!({"spec": "2/10", "window": "clock", "reset": "exact", "status": 403})).await;
    assert_eq!(set.status(), 200);
    let settings: Value = set.json().await.unwrap();
    assert_eq!(settings["window"], "clock");
    assert_eq!(settings["reset"], "exact");
    assert_eq!(settings["status"], 403);
    let end_ms = (now_ms.div_euclid(10_000) + 1) * 10_000;
    let first = api.get("/workspaces").await;
    assert_eq!(
        first.headers()["x-rate-limit-reset"],
        format!("{}.000", end_ms / 1000).as_str()
    );
    api.get("/workspaces").await;
    let limited = api.get("/workspaces").await;
    assert_eq!(limited.status(), 403);
    assert!(limited.headers().get("retry-after").is_none());
    assert_eq!(
        first_message(&limited.json().await.unwrap()),
        "Rate limit exceeded."
    );
    let read: Value = api
        .client
        .get(format!("{}/__sim/rate-limit", h.base_url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(read["throttled"], 1);
    assert_eq!(read["spec"], "2/10");
    // Only what is sent changes; bad values are refused.
    let set = control(json!({"window": "first-request", "status": 429})).await;
    let settings: Value = set.json().await.unwrap();
    assert_eq!(
        (&settings["window"], &settings["reset"], &settings["spec"]),
        (&json!("first-request"), &json!("exact"), &json!("2/10"))
    );
    for bad in [
        json!({"status": 500}),
        json!({"reset": "sometimes"}),
        json!({"spec": "2"}),
    ] {
        let r = control(bad.clone()).await;
        assert!(r.status().is_client_error(), "{bad}: {}", r.status());
    }
    // A window opened by the first request ends a window after it, to the millisecond.
    let opened = h.sim().now().timestamp_millis() + 10_000;
    api.get("/workspaces").await;
    api.get("/workspaces").await;
    let limited = api.get("/workspaces").await;
    assert_eq!(limited.status(), 429);
    assert_eq!(
        limited.headers()["x-rate-limit-reset"],
        format!("{}.{:03}", opened / 1000, opened % 1000).as_str()
    );
    assert_eq!(limited.headers()["retry-after"], "10");
    h.shutdown().await;
}

fn pkce(verifier: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(sha2::Sha256::digest(verifier.as_bytes()))
}

async fn authorize(h: &SimHandle, challenge: &str) -> String {
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let resp = client
        .get(format!("{}/oauth2/authorize", h.base_url()))
        .query(&[
            ("type", "web_server"),
            ("response_type", "code"),
            ("client_id", "app"),
            ("redirect_uri", "http://localhost/cb"),
            ("scope", "WORKSPACE EXECUTION_INFO"),
            ("state", "xyz"),
            ("code_challenge", challenge),
            ("code_challenge_method", "S256"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 302);
    let location = url::Url::parse(resp.headers()["location"].to_str().unwrap()).unwrap();
    let q: std::collections::HashMap<_, _> = location.query_pairs().into_owned().collect();
    assert_eq!(q["state"], "xyz");
    q["code"].clone()
}

#[tokio::test]
async fn oauth_code_pkce_refresh_and_client_credentials() {
    let h = sim_with(|c| c.oauth_expires_in = 3600).await;
    h.sim()
        .register_oauth_client("app", "secret", &["http://localhost/cb"]);
    let client = reqwest::Client::new();
    let token_url = format!("{}/oauth2/token", h.base_url());
    let verifier = "a-long-random-verifier-string-of-at-least-43-characters-xx";
    let code = authorize(&h, &pkce(verifier)).await;
    let form = [
        ("grant_type", "authorization_code"),
        ("client_id", "app"),
        ("client_secret", "secret"),
        ("code", code.as_str()),
        ("redirect_uri", "http://localhost/cb"),
        ("code_verifier", verifier),
    ];
    let resp = client.post(&token_url).form(&form).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let tok: Value = resp.json().await.unwrap();
    assert_eq!(tok["token_type"], "Bearer");
    assert_eq!(tok["expires_in"], 3600);
    assert!(tok["refresh_token_expires_in"].is_u64());
    let access = tok["access_token"].as_str().unwrap();
    let api = Api::with_token(&h, access);
    assert_eq!(api.get("/workspaces").await.status(), 200);
    assert_eq!(
        api.get("/user").await.status(),
        403,
        "USER_INFO not granted"
    );

    // Single use.
    let again = client.post(&token_url).form(&form).send().await.unwrap();
    assert_eq!(again.status(), 400);
    let err: Value = again.json().await.unwrap();
    assert_eq!(err["error"], "invalid_grant");
    assert!(!first_message(&err).is_empty());

    // PKCE mismatch (JSON body this time).
    let code = authorize(&h, &pkce(verifier)).await;
    let bad = client
        .post(&token_url)
        .json(&json!({"grant_type": "authorization_code", "client_id": "app", "client_secret": "secret", "code": code, "code_verifier": "wrong-verifier-wrong-verifier-wrong-verifier-x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);

    // Refresh rotation: the old refresh token is spent.
    let refresh = tok["refresh_token"].as_str().unwrap();
    let body = json!({"grant_type": "refresh_token", "client_id": "app", "client_secret": "secret", "refresh_token": refresh});
    let rotated: Value = client
        .post(&token_url)
        .json(&body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_ne!(rotated["refresh_token"], tok["refresh_token"]);
    assert_ne!(rotated["access_token"], tok["access_token"]);
    assert_eq!(
        client
            .post(&token_url)
            .json(&body)
            .send()
            .await
            .unwrap()
            .status(),
        400
    );

    // Access tokens expire.
    h.sim().advance(Duration::seconds(3601));
    assert_eq!(
        Api::with_token(&h, rotated["access_token"].as_str().unwrap())
            .get("/workspaces")
            .await
            .status(),
        401
    );

    let cc = client
        .post(&token_url)
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", "app"),
            ("client_secret", "secret"),
            ("scope", "WORKSPACE"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(cc.status(), 200);
    let no_scope = client
        .post(&token_url)
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", "app"),
            ("client_secret", "secret"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(no_scope.status(), 400);
    assert_eq!(h.sim().oauth_token_calls(), 7);
    h.shutdown().await;
}

async fn receiver() -> (
    String,
    tokio::sync::mpsc::UnboundedReceiver<(Option<String>, Value)>,
) {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let app = axum::Router::new().route(
        "/hook",
        post(
            move |headers: axum::http::HeaderMap, axum::Json(body): axum::Json<Value>| {
                let tx = tx.clone();
                async move {
                    let secret = headers
                        .get("x-buddy-webhook-secret")
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_string);
                    let _ = tx.send((secret, body));
                    "ok"
                }
            },
        ),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    (format!("http://{addr}/hook"), rx)
}

async fn next_delivery(
    rx: &mut tokio::sync::mpsc::UnboundedReceiver<(Option<String>, Value)>,
) -> (Option<String>, Value) {
    tokio::time::timeout(StdDuration::from_secs(10), rx.recv())
        .await
        .expect("delivery in time")
        .expect("channel open")
}

#[tokio::test]
async fn webhooks_crud_and_outgoing_deliveries() {
    let h = sim_with(|c| {
        c.queue_seconds = 0;
        c.action_seconds = 2;
    })
    .await;
    let api = Api::new(&h);
    let (target, mut rx) = receiver().await;
    let (project, pid) = pipeline_named(&api, &h, "Build & test").await;
    let created = api
        .send(
            Method::POST,
            &format!("{WS}/webhooks"),
            json!({"events": ["PUSH", "EXECUTION_STARTED", "EXECUTION_SUCCESSFUL"], "target_url": target, "projects": [project], "secret_key": "s3cret"}),
        )
        .await;
    assert_eq!(created.status(), 201);
    let hook: Value = created.json().await.unwrap();
    let hid = hook["id"].as_u64().unwrap();
    assert_eq!(hook["secret_key"], "s3cret");
    assert_eq!(hook["requests"], json!([]));

    let revision = h
        .sim()
        .push_commit("acme", &project, "main", "Fix checkout rounding")
        .unwrap();
    let (secret, push) = next_delivery(&mut rx).await;
    assert_eq!(secret.as_deref(), Some("s3cret"));
    assert_eq!(push["secret_key"], "s3cret");
    assert_eq!(push["commits"][0]["revision"], revision);
    let (_, started) = next_delivery(&mut rx).await;
    assert_eq!(started["execution"]["status"], "INPROGRESS");
    assert_eq!(started["execution"]["triggeredOn"], "EVENT");
    let newest = h.sim().execution_count("acme", &project, pid);
    assert_eq!(
        h.sim()
            .execution_status("acme", &project, pid, newest)
            .as_deref(),
        Some("INPROGRESS")
    );

    h.sim().advance(Duration::seconds(30));
    let (_, done) = next_delivery(&mut rx).await;
    assert_eq!(done["execution"]["status"], "SUCCESSFUL");

    let hook = api.json(&format!("{WS}/webhooks/{hid}")).await;
    let requests = hook["requests"].as_array().unwrap();
    assert_eq!(requests.len(), 3);
    assert!(requests[0]["body"].is_string() && requests[0]["post_date"].is_string());

    let patched = api
        .send(
            Method::PATCH,
            &format!("{WS}/webhooks/{hid}"),
            json!({"events": ["EXECUTION_FINISHED"]}),
        )
        .await;
    assert_eq!(
        patched.json::<Value>().await.unwrap()["events"],
        json!(["EXECUTION_FINISHED"])
    );
    assert_eq!(
        api.send(
            Method::POST,
            &format!("{WS}/webhooks"),
            json!({"target_url": target})
        )
        .await
        .status(),
        400
    );
    assert_eq!(
        api.send(Method::DELETE, &format!("{WS}/webhooks/{hid}"), json!({}))
            .await
            .status(),
        204
    );
    h.shutdown().await;
}

#[tokio::test]
async fn variables_with_secure_values() {
    let h = sim().await;
    let api = Api::new(&h);
    let list = api.json(&format!("{WS}/variables")).await;
    let vars = list["variables"].as_array().unwrap();
    let secret = vars.iter().find(|v| v["encrypted"] == true).unwrap();
    assert!(secret["value"].as_str().unwrap().starts_with("secure!"));
    let project = h.sim().project_names("acme")[0].clone();
    let scoped = api
        .json(&format!("{WS}/variables?projectName={project}"))
        .await;
    assert!(scoped["variables"]
        .as_array()
        .unwrap()
        .iter()
        .all(|v| v["project"]["name"] == project.as_str()));
    let created = api
        .send(Method::POST, &format!("{WS}/variables"), json!({"key": "TOKEN", "value": "abc", "encrypted": true, "project": {"name": project}}))
        .await;
    assert_eq!(created.status(), 201);
    let v: Value = created.json().await.unwrap();
    assert!(v["value"].as_str().unwrap().starts_with("secure!"));
    assert!(v["pipeline"].is_null());
    let id = v["id"].as_u64().unwrap();
    let patched = api
        .send(
            Method::PATCH,
            &format!("{WS}/variables/{id}"),
            json!({"encrypted": false, "value": "plain"}),
        )
        .await;
    assert_eq!(patched.json::<Value>().await.unwrap()["value"], "plain");
    assert_eq!(
        api.send(Method::DELETE, &format!("{WS}/variables/{id}"), json!({}))
            .await
            .status(),
        204
    );
    assert_eq!(api.get(&format!("{WS}/variables/{id}")).await.status(), 404);
    h.shutdown().await;
}

#[tokio::test]
async fn injected_faults_and_request_counts() {
    let h = sim().await;
    let api = Api::new(&h);
    let sim = h.sim();
    sim.inject(FaultSpec::new(FaultKind::Status { status: 503 }, 2).on_path("/workspaces"));
    assert_eq!(api.get("/workspaces").await.status(), 503);
    assert_eq!(api.get("/workspaces").await.status(), 503);
    assert_eq!(api.get("/workspaces").await.status(), 200);

    sim.inject(FaultSpec::new(FaultKind::MalformedJson, 1));
    let text = api.get("/workspaces").await.text().await.unwrap();
    assert!(serde_json::from_str::<Value>(&text).is_err());

    sim.inject(FaultSpec::new(FaultKind::RateLimit, 1));
    let storm = api.get("/workspaces").await;
    assert_eq!(storm.status(), 429);
    assert!(storm.headers().contains_key("retry-after"));

    sim.inject(FaultSpec::new(FaultKind::Reset, 1));
    let reset = api
        .client
        .get(format!("{}/workspaces", api.base))
        .bearer_auth(common::TOKEN)
        .send()
        .await;
    assert!(reset.is_err(), "connection dropped without a response");
    assert_eq!(api.get("/workspaces").await.status(), 200);

    sim.inject(FaultSpec::new(FaultKind::Latency { ms: 50 }, 1));
    let t = std::time::Instant::now();
    assert_eq!(api.get("/workspaces").await.status(), 200);
    assert!(t.elapsed() >= StdDuration::from_millis(50));

    assert_eq!(sim.request_count(Some("GET"), "/workspaces"), 8);
    assert_eq!(sim.request_count_exact("GET", "/workspaces"), 8);
    assert_eq!(sim.request_count(Some("POST"), "/workspaces"), 0);

    // The same controls over HTTP.
    let ctl = reqwest::Client::new();
    let origin = format!("http://{}", h.addr());
    let r = ctl
        .post(format!("{origin}/__sim/faults"))
        .json(&json!({"kind": "status", "status": 500, "count": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    assert_eq!(api.get("/user").await.status(), 500);
    let counts: Value = ctl
        .get(format!("{origin}/__sim/requests?method=GET&path=/user"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(counts["count"], 1);
    let tok: Value = ctl
        .post(format!("{origin}/__sim/tokens"))
        .json(&json!({"scopes": ["WORKSPACE"]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let limited = Api::with_token(&h, tok["token"].as_str().unwrap());
    assert_eq!(limited.get("/workspaces").await.status(), 200);
    assert_eq!(limited.get("/user").await.status(), 403);
    let push: Value = ctl
        .post(format!(
            "{origin}/__sim/workspaces/acme/projects/{}/push",
            sim.project_names("acme")[0]
        ))
        .json(&json!({"branch": "main", "message": "hello"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(push["revision"].as_str().unwrap().len(), 40);
    let before = sim.now();
    ctl.post(format!("{origin}/__sim/advance"))
        .json(&json!({"seconds": 90}))
        .send()
        .await
        .unwrap();
    assert_eq!(sim.now() - before, Duration::seconds(90));
    h.shutdown().await;
}

#[tokio::test]
async fn github_projects_have_pull_request_runs() {
    let h = sim_with(|c| c.seed = "projects=1,pipelines=1,executions=200".parse().unwrap()).await;
    let api = Api::new(&h);
    let project = h.sim().project_names("acme")[0].clone();
    let pid = h.sim().pipeline_ids("acme", &project)[0];
    let mut found = false;
    for page in 1..=4 {
        let list = api
            .json(&format!(
                "{WS}/projects/{project}/pipelines/{pid}/executions?page={page}&per_page=50"
            ))
            .await;
        for e in list["executions"].as_array().unwrap() {
            if e["branch"]["name"] == "pull/3" {
                assert_eq!(e["pull_request"]["name"], "pull/3");
                found = true;
            }
            assert!(matches!(
                e["status"].as_str().unwrap(),
                "SUCCESSFUL" | "FAILED" | "TERMINATED"
            ));
        }
    }
    assert!(found);
    h.shutdown().await;
}
