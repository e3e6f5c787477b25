//! Writes through the unified API over real HTTP against the Buddy simulator: runs
//! (rollback), operations, logs (followed while the job runs), workflows, variables,
//! Idempotency-Key and missing scopes.

mod common;

use std::time::Duration;

use cigate_buddy_sim::{SeedSpec, SimConfig, TimeMode, TokenSpec};
use common::{Backend, Harness};
use serde_json::{json, Value};

/// A manual-clock simulator with one project whose pipelines are "Build & test"
/// (three builds) and "Deploy to production" (build, approval, deploy, notify).
async fn manual() -> Harness {
    manual_on(Backend::Sqlite).await.unwrap()
}

async fn manual_on(backend: Backend) -> Option<Harness> {
    let seed: SeedSpec = "workspaces=1,projects=1,pipelines=2,executions=3,commits=10"
        .parse()
        .unwrap();
    Harness::start_with(
        backend,
        SimConfig {
            time: TimeMode::Manual,
            seed,
            ..Default::default()
        },
    )
    .await
}

struct Ctx {
    account: String,
    ws: String,
    project: String,
    build: u64,
    deploy: u64,
}

impl Ctx {
    fn q(&self, pipeline: u64) -> String {
        format!(
            "integrated_account_id={}&workspace={}&project={}&workflow={pipeline}",
            self.account, self.ws, self.project
        )
    }
}

async fn context(h: &Harness) -> Ctx {
    let account = h.link().await;
    let sim = h.sim.sim();
    let ws = sim.workspace_domains()[0].clone();
    let project = sim.project_names(&ws)[0].clone();
    let (status, workflows) = h
        .get_json(&format!(
            "/unified/ci-cd/workflow?integrated_account_id={account}&workspace={ws}&repo={project}"
        ))
        .await;
    assert_eq!(status, 200, "{workflows}");
    let find = |name: &str| -> u64 {
        workflows["result"]
            .as_array()
            .unwrap()
            .iter()
            .find(|w| w["name"] == name)
            .and_then(|w| w["id"].as_str())
            .and_then(|id| id.parse().ok())
            .unwrap_or_else(|| panic!("no pipeline {name} in {workflows}"))
    };
    Ctx {
        build: find("Build & test"),
        deploy: find("Deploy to production"),
        account,
        ws,
        project,
    }
}

/// Buddy's own view of an execution, straight from the simulator.
async fn buddy_execution(h: &Harness, c: &Ctx, pipeline: u64, id: &str) -> Value {
    h.buddy_json(&format!(
        "/workspaces/{}/projects/{}/pipelines/{pipeline}/executions/{id}",
        c.ws, c.project
    ))
    .await
}

async fn send(req: reqwest::RequestBuilder) -> (u16, reqwest::header::HeaderMap, String) {
    let response = req.send().await.expect("request");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    (status, headers, response.text().await.unwrap_or_default())
}

fn parse(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|_| panic!("not JSON: {body}"))
}

#[tokio::test]
async fn rollback_sends_the_exact_revision_and_branch_once_per_key() {
    let h = manual().await;
    let c = context(&h).await;
    let sim = h.sim.sim();
    let commits: Value = h
        .buddy_json(&format!(
            "/workspaces/{}/projects/{}/repository/commits",
            c.ws, c.project
        ))
        .await;
    // An older commit than the branch head: a rollback target.
    let sha = commits["commits"][3]["revision"]
        .as_str()
        .unwrap()
        .to_owned();
    let branches = h
        .get_json(&format!(
            "/unified/ci-cd/branches?integrated_account_id={}&repo={}",
            c.account, c.project
        ))
        .await
        .1;
    let branch = branches["result"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["is_default"] == true)
        .and_then(|b| b["name"].as_str())
        .unwrap()
        .to_owned();
    assert_ne!(
        branches["result"][0]["last_commit"].as_str(),
        Some(sha.as_str())
    );
    let before = sim.execution_count(&c.ws, &c.project, c.build);
    let body = json!({"branch": branch, "commit": sha, "comment": "roll back"});
    let path = format!("/unified/ci-cd/jobs?{}", c.q(c.build));
    let (status, headers, first) = send(
        h.post(&path)
            .header("Idempotency-Key", "rollback-1")
            .json(&body),
    )
    .await;
    assert_eq!(status, 201, "{first}");
    assert!(headers.get("idempotent-replayed").is_none());
    assert!(headers.contains_key("ratelimit-remaining"), "{headers:?}");
    let job = parse(&first);
    assert_eq!(job["commit"], sha.as_str());
    assert_eq!(job["branch"], branch.as_str());
    let id = job["id"].as_str().unwrap().to_owned();
    let raw = buddy_execution(&h, &c, c.build, &id).await;
    assert_eq!(raw["to_revision"]["revision"], sha.as_str(), "{raw}");
    assert_eq!(raw["branch"]["name"], branch.as_str(), "{raw}");
    assert_eq!(raw["comment"], "roll back");

    // The same key and body: the first answer again, and no second run.
    let posts_before = sim.request_count(Some("POST"), "/workspaces");
    let (status, headers, second) = send(
        h.post(&path)
            .header("Idempotency-Key", "rollback-1")
            .json(&body),
    )
    .await;
    assert_eq!(status, 201);
    assert_eq!(second, first);
    assert_eq!(headers["idempotent-replayed"], "true");
    assert_eq!(sim.request_count(Some("POST"), "/workspaces"), posts_before);
    assert_eq!(sim.execution_count(&c.ws, &c.project, c.build), before + 1);

    // The same key with another body is refused.
    let (status, _, reused) = send(
        h.post(&path)
            .header("Idempotency-Key", "rollback-1")
            .json(&json!({"branch": branch})),
    )
    .await;
    assert_eq!(status, 422, "{reused}");
    assert_eq!(parse(&reused)["type"], "/problems/idempotency-key-reused");
    assert_eq!(sim.execution_count(&c.ws, &c.project, c.build), before + 1);

    // A body cigate refuses releases the key: a corrected retry with it runs.
    let (status, _, bad) = send(
        h.post(&path)
            .header("Idempotency-Key", "fix-me")
            .json(&json!({"commit": "not-a-sha"})),
    )
    .await;
    assert_eq!(status, 422, "{bad}");
    let (status, _, unknown) = send(
        h.post(&path)
            .header("Idempotency-Key", "fix-me-2")
            .json(&json!({"brnch": "main"})),
    )
    .await;
    assert_eq!(status, 422, "{unknown}");
    let (status, _, fixed) = send(
        h.post(&path)
            .header("Idempotency-Key", "fix-me")
            .json(&json!({"commit": sha})),
    )
    .await;
    assert_eq!(status, 201, "{fixed}");
    assert_eq!(sim.execution_count(&c.ws, &c.project, c.build), before + 2);
}

#[tokio::test]
async fn concurrent_duplicates_start_one_execution() {
    concurrent_duplicates(manual().await).await;
}

#[tokio::test]
async fn concurrent_duplicates_start_one_execution_on_postgres() {
    if let Some(h) = manual_on(Backend::Postgres).await {
        concurrent_duplicates(h).await;
    }
}

async fn concurrent_duplicates(h: Harness) {
    let c = context(&h).await;
    let sim = h.sim.sim();
    let before = sim.execution_count(&c.ws, &c.project, c.build);
    let path = format!("/unified/ci-cd/jobs?{}", c.q(c.build));
    let tasks: Vec<_> = (0..4)
        .map(|_| {
            let req = h
                .post(&path)
                .header("Idempotency-Key", "same-click")
                .json(&json!({"comment": "double click"}));
            tokio::spawn(send(req))
        })
        .collect();
    let mut bodies = Vec::new();
    for t in tasks {
        let (status, _, body) = t.await.unwrap();
        assert_eq!(status, 201, "{body}");
        bodies.push(body);
    }
    assert!(bodies.windows(2).all(|w| w[0] == w[1]), "{bodies:?}");
    assert_eq!(sim.execution_count(&c.ws, &c.project, c.build), before + 1);
}

#[tokio::test]
async fn cancel_retry_approve_follow_buddys_state() {
    let h = manual().await;
    let c = context(&h).await;
    let sim = h.sim.sim();
    let q = c.q(c.deploy);
    let (status, _, body) = send(h.post(&format!("/unified/ci-cd/jobs?{q}"))).await;
    assert_eq!(status, 201, "{body}");
    let id = parse(&body)["id"].as_str().unwrap().to_owned();
    let eid: u64 = id.parse().unwrap();

    // Queue (1 s) + the build (3 s): the approval gate is waiting.
    sim.advance(chrono::Duration::seconds(5));
    let (status, job) = h.get_json(&format!("/unified/ci-cd/jobs/{id}?{q}")).await;
    assert_eq!(status, 200, "{job}");
    // Buddy reports the execution INPROGRESS while its approval gate waits.
    assert_eq!(job["remote_data"]["status"], "INPROGRESS");
    assert_eq!(job["status"], "waiting", "{job}");
    let steps = job["steps"].as_array().expect("steps");
    assert_eq!(steps.len(), 4);
    assert_eq!(steps[0]["conclusion"], "passed");
    assert_eq!(steps[1]["status"], "waiting");
    assert!(steps[0]["started_at"].is_string() && steps[0]["completed_at"].is_string());

    let (status, _, approved) = send(
        h.post(&format!("/unified/ci-cd/jobs/{id}/approve?{q}"))
            .json(&json!({})),
    )
    .await;
    assert_eq!(status, 200, "{approved}");
    let approved = parse(&approved);
    assert_eq!(approved["steps"][1]["conclusion"], "passed", "{approved}");
    assert_eq!(approved["status"], "in_progress");
    let raw = buddy_execution(&h, &c, c.deploy, &id).await;
    assert_eq!(raw["action_executions"][1]["status"], "SUCCESSFUL");

    let (status, _, cancelled) =
        send(h.post(&format!("/unified/ci-cd/jobs/{id}/cancel?{q}"))).await;
    assert_eq!(status, 200, "{cancelled}");
    assert_eq!(
        sim.execution_status(&c.ws, &c.project, c.deploy, eid)
            .as_deref(),
        Some("TERMINATING")
    );
    assert_eq!(parse(&cancelled)["remote_data"]["status"], "TERMINATING");
    sim.advance(chrono::Duration::seconds(2));
    let (_, job) = h.get_json(&format!("/unified/ci-cd/jobs/{id}?{q}")).await;
    assert_eq!(job["conclusion"], "cancelled", "{job}");

    // Cancelling a finished job: 409 with Buddy's reason, nothing changes.
    let (status, _, refused) = send(h.post(&format!("/unified/ci-cd/jobs/{id}/cancel?{q}"))).await;
    assert_eq!(status, 409, "{refused}");
    let refused = parse(&refused);
    assert_eq!(refused["type"], "/problems/conflict");
    assert_eq!(refused["remote_status"], 400);
    assert!(
        refused["message"]
            .as_str()
            .unwrap()
            .contains("not allowed for an execution with status TERMINATED"),
        "{refused}"
    );

    let (status, _, retried) = send(h.post(&format!("/unified/ci-cd/jobs/{id}/retry?{q}"))).await;
    assert_eq!(status, 200, "{retried}");
    assert_eq!(parse(&retried)["status"], "in_progress");
    assert_eq!(
        sim.execution_status(&c.ws, &c.project, c.deploy, eid)
            .as_deref(),
        Some("INPROGRESS")
    );

    // Unknown operations and bodies are refused before Buddy.
    let (status, _, _) = send(h.post(&format!("/unified/ci-cd/jobs/{id}/explode?{q}"))).await;
    assert_eq!(status, 404);
    let (status, _, body) = send(
        h.post(&format!("/unified/ci-cd/jobs/{id}/cancel?{q}"))
            .json(&json!({"force": true})),
    )
    .await;
    assert_eq!(status, 422, "{body}");
}

#[tokio::test]
async fn logs_stream_while_the_job_runs_and_end_with_it() {
    let h = manual().await;
    let c = context(&h).await;
    let sim = h.sim.sim();
    let q = c.q(c.build);
    let (status, _, body) = send(h.post(&format!("/unified/ci-cd/jobs?{q}"))).await;
    assert_eq!(status, 201, "{body}");
    let id = parse(&body)["id"].as_str().unwrap().to_owned();
    let eid: u64 = id.parse().unwrap();
    // Started, first step half done.
    sim.advance(chrono::Duration::milliseconds(2500));

    let (status, logs) = h
        .get_json(&format!("/unified/ci-cd/jobs/{id}/logs?{q}"))
        .await;
    assert_eq!(status, 200, "{logs}");
    let steps = logs["result"].as_array().unwrap();
    assert_eq!(steps.len(), 3);
    assert_eq!(steps[0]["status"], "in_progress");
    assert!(!steps[0]["lines"].as_array().unwrap().is_empty());
    assert!(steps[1]["lines"].as_array().unwrap().is_empty());

    let mut response = h
        .get(&format!(
            "/unified/ci-cd/jobs/{id}/logs?{q}&format=text&follow=true&interval_ms=250&timeout_s=60"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"],
        "text/plain; charset=utf-8"
    );
    let mut text = String::new();
    // The first lines arrive while the job still runs.
    while !text.contains("## Step 1/3") {
        let chunk = response.chunk().await.unwrap().expect("stream ended early");
        text.push_str(std::str::from_utf8(&chunk).unwrap());
    }
    assert_eq!(
        sim.execution_status(&c.ws, &c.project, c.build, eid)
            .as_deref(),
        Some("INPROGRESS")
    );
    assert!(!text.contains("Build finished successfully"));
    // Now let the job run to its end, a second at a time.
    let ticker = {
        let sim = sim.clone();
        tokio::spawn(async move {
            for _ in 0..40 {
                tokio::time::sleep(Duration::from_millis(100)).await;
                sim.advance(chrono::Duration::seconds(1));
            }
        })
    };
    while let Some(chunk) = tokio::time::timeout(Duration::from_secs(30), response.chunk())
        .await
        .expect("the stream ends with the job")
        .unwrap()
    {
        text.push_str(std::str::from_utf8(&chunk).unwrap());
    }
    ticker.abort();
    for step in 1..=3 {
        assert_eq!(
            text.matches(&format!("## Step {step}/3")).count(),
            1,
            "{text}"
        );
    }
    assert_eq!(
        text.matches("Build finished successfully").count(),
        3,
        "{text}"
    );
    let last = text.trim_end().lines().last().unwrap();
    assert!(
        last.starts_with(&format!("# Job {id}")) && last.contains(": completed, passed"),
        "{text}"
    );
    // Every line Buddy logged appears once, in order.
    let raw = buddy_execution(&h, &c, c.build, &id).await;
    let first_step = raw["action_executions"][0]["action_execution_id"]
        .as_str()
        .unwrap();
    let detail: Value = h.buddy_json(&format!("/workspaces/{}/projects/{}/pipelines/{}/executions/{id}/action_executions/{first_step}", c.ws,
            c.project,
            c.build)).await;
    let expected: Vec<&str> = detail["log"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap())
        .collect();
    let section = text
        .split("## Step 1/3")
        .nth(1)
        .unwrap()
        .split("## Step 2/3")
        .next()
        .unwrap();
    let got: Vec<&str> = section.lines().skip(1).filter(|l| !l.is_empty()).collect();
    assert_eq!(got, expected);

    // Text without follow: the finished job in one piece.
    let (status, headers, whole) =
        send(h.get(&format!("/unified/ci-cd/jobs/{id}/logs?{q}&format=text"))).await;
    assert_eq!(status, 200);
    assert_eq!(headers["content-type"], "text/plain; charset=utf-8");
    assert!(
        whole.contains("## Step 3/3: Build artifact [completed, passed]"),
        "{whole}"
    );
    let (status, _, _) =
        send(h.get(&format!("/unified/ci-cd/jobs/{id}/logs?{q}&follow=true"))).await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn follow_stops_at_its_timeout() {
    let h = manual().await;
    let c = context(&h).await;
    let q = c.q(c.build);
    let (_, _, body) = send(h.post(&format!("/unified/ci-cd/jobs?{q}"))).await;
    let id = parse(&body)["id"].as_str().unwrap().to_owned();
    let (status, _, text) = send(h.get(&format!(
        "/unified/ci-cd/jobs/{id}/logs?{q}&format=text&follow=true&interval_ms=250&timeout_s=1"
    )))
    .await;
    assert_eq!(status, 200);
    assert!(
        text.contains(&format!(
            "stopped following after 1s; job {id} is still queued"
        )),
        "{text}"
    );
}

#[tokio::test]
async fn encrypted_values_never_come_back() {
    let h = manual().await;
    let c = context(&h).await;
    let secret = "hunter2-plaintext-value";
    let scope = format!(
        "integrated_account_id={}&workspace={}&project={}",
        c.account, c.ws, c.project
    );
    let mut bodies = Vec::new();
    let (status, _, created) = send(
        h.post(&format!("/unified/ci-cd/variables?{scope}"))
            .json(&json!({"key": "CIGATE_TEST_TOKEN", "value": secret, "encrypted": true, "description": "deploy"})),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    bodies.push(created.clone());
    let created = parse(&created);
    let var_id = created["id"].as_str().unwrap().to_owned();
    assert_eq!(created["encrypted"], true);
    assert!(created.get("value").is_none());
    assert_eq!(created["scope"]["type"], "repo");
    assert_eq!(created["scope"]["repo"], c.project.as_str());

    let (status, _, plain) = send(h.post(&format!("/unified/ci-cd/variables?{scope}")).json(
        &json!({"key": "CIGATE_TEST_URL", "value": "https://staging.example.com", "settable": true}),
    ))
    .await;
    assert_eq!(status, 201, "{plain}");
    assert_eq!(parse(&plain)["value"], "https://staging.example.com");
    assert_eq!(parse(&plain)["settable"], true);

    let (status, _, pipeline_var) = send(
        h.post(&format!(
            "/unified/ci-cd/variables?{scope}&workflow={}",
            c.build
        ))
        .json(&json!({"key": "CIGATE_ONLY_HERE", "value": "x"})),
    )
    .await;
    assert_eq!(status, 201, "{pipeline_var}");
    assert_eq!(parse(&pipeline_var)["scope"]["type"], "workflow");

    let (status, _, list) = send(h.get(&format!("/unified/ci-cd/variables?{scope}"))).await;
    assert_eq!(status, 200, "{list}");
    bodies.push(list.clone());
    let keys: Vec<String> = parse(&list)["result"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["key"].as_str().unwrap().to_owned())
        .collect();
    assert!(keys.contains(&"CIGATE_TEST_TOKEN".to_owned()), "{keys:?}");
    assert!(keys.contains(&"CIGATE_TEST_URL".to_owned()), "{keys:?}");
    // Exactly the project's scope: the pipeline's variable is not in it.
    assert!(!keys.contains(&"CIGATE_ONLY_HERE".to_owned()), "{keys:?}");
    let (_, _, list) = send(h.get(&format!(
        "/unified/ci-cd/variables?{scope}&workflow={}",
        c.build
    )))
    .await;
    let in_pipeline = parse(&list)["result"].clone();
    assert!(
        in_pipeline
            .as_array()
            .unwrap()
            .iter()
            .all(|v| v["scope"]["type"] == "workflow"),
        "{in_pipeline}"
    );
    assert!(in_pipeline.to_string().contains("CIGATE_ONLY_HERE"));

    let (status, _, one) = send(h.get(&format!("/unified/ci-cd/variables/{var_id}?{scope}"))).await;
    assert_eq!(status, 200, "{one}");
    bodies.push(one);
    let (_, _, raw) = send(h.get(&format!(
        "/unified/ci-cd/variables/{var_id}?{scope}&truto_response_format=raw"
    )))
    .await;
    bodies.push(raw);
    let (status, _, updated) = send(
        h.http
            .patch(h.url(&format!("/unified/ci-cd/variables/{var_id}?{scope}")))
            .bearer_auth(&h.api_token)
            .json(&json!({"value": format!("{secret}-2"), "description": "rotated"})),
    )
    .await;
    assert_eq!(status, 200, "{updated}");
    assert_eq!(parse(&updated)["description"], "rotated");
    bodies.push(updated);
    for body in &bodies {
        assert!(!body.contains(secret), "value leaked: {body}");
        assert!(!body.contains("secure!"), "ciphertext leaked: {body}");
    }
    // Buddy itself does hold it (encrypted): the simulator answers ciphertext.
    let buddy: Value = h
        .buddy_json(&format!("/workspaces/{}/variables/{var_id}", c.ws))
        .await;
    assert!(buddy["value"].as_str().unwrap().starts_with("secure!"));

    let (status, _, _) = send(
        h.http
            .delete(h.url(&format!("/unified/ci-cd/variables/{var_id}?{scope}")))
            .bearer_auth(&h.api_token),
    )
    .await;
    assert_eq!(status, 204);
    let (status, _) = h
        .get_json(&format!("/unified/ci-cd/variables/{var_id}?{scope}"))
        .await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn workflows_are_created_changed_and_deleted() {
    let h = manual().await;
    let c = context(&h).await;
    let q = format!(
        "integrated_account_id={}&workspace={}&repo={}",
        c.account, c.ws, c.project
    );
    let (status, _, created) = send(
        h.post(&format!("/unified/ci-cd/workflow?{q}"))
            .json(&json!({"name": "Deploy customer 42", "trigger": "push", "branch": "main", "priority": "high"})),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    let created = parse(&created);
    assert_eq!(created["name"], "Deploy customer 42");
    assert_eq!(created["trigger"], "push");
    assert_eq!(created["refs"], json!(["refs/heads/main"]));
    assert_eq!(created["status"], "active");
    assert_eq!(created["remote_data"]["priority"], "HIGH");
    assert_eq!(
        created["remote_data"]["events"],
        json!([{"type": "PUSH", "refs": ["refs/heads/main"]}])
    );
    let id = created["id"].as_str().unwrap().to_owned();

    let (status, _, changed) = send(
        h.http
            .patch(h.url(&format!("/unified/ci-cd/workflows/{id}?{q}")))
            .bearer_auth(&h.api_token)
            .json(&json!({"trigger": "schedule", "cron": "0 3 * * *", "disabled": true})),
    )
    .await;
    assert_eq!(status, 200, "{changed}");
    let changed = parse(&changed);
    assert_eq!(changed["trigger"], "schedule");
    assert_eq!(changed["status"], "disabled");
    assert_eq!(changed["refs"], json!(["refs/heads/main"]));
    assert_eq!(changed["remote_data"]["events"][0]["cron"], "0 3 * * *");

    let (status, _, bad) = send(
        h.post(&format!("/unified/ci-cd/workflow?{q}"))
            .json(&json!({"name": "x", "trigger": "webhook"})),
    )
    .await;
    assert_eq!(status, 422, "{bad}");
    // `branches` are only read: the path has GET, so POST is 405.
    let (status, headers, refused) = send(
        h.post(&format!("/unified/ci-cd/branches?{q}"))
            .json(&json!({})),
    )
    .await;
    assert_eq!(status, 405, "{refused}");
    assert_eq!(parse(&refused)["type"], "/problems/method-not-allowed");
    assert_eq!(headers["allow"], "GET");

    let (status, _, _) = send(
        h.http
            .delete(h.url(&format!("/unified/ci-cd/workflow/{id}?{q}")))
            .bearer_auth(&h.api_token),
    )
    .await;
    assert_eq!(status, 204);
    let (status, gone) = h
        .get_json(&format!("/unified/ci-cd/workflow/{id}?{q}"))
        .await;
    assert_eq!(status, 404, "{gone}");
    // The read routes on the same paths still answer.
    let (status, list) = h.get_json(&format!("/unified/ci-cd/workflow?{q}")).await;
    assert_eq!(status, 200, "{list}");
    let (status, jobs) = h
        .get_json(&format!("/unified/ci-cd/jobs?{}", c.q(c.build)))
        .await;
    assert_eq!(status, 200, "{jobs}");
}

#[tokio::test]
async fn a_token_without_execution_run_gets_403_naming_the_scope() {
    let h = manual().await;
    let sim = h.sim.sim();
    let token = sim.issue_token(TokenSpec::with_scopes(&[
        "WORKSPACE",
        "EXECUTION_INFO",
        "REPOSITORY_READ",
    ]));
    let response = h.link_with(&token).await;
    assert_eq!(response.status(), 201);
    let account = response.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let ws = sim.workspace_domains()[0].clone();
    let project = sim.project_names(&ws)[0].clone();
    let pipeline = sim.pipeline_ids(&ws, &project)[0];
    let before = sim.execution_count(&ws, &project, pipeline);
    let (status, _, body) = send(h.post(&format!(
        "/unified/ci-cd/jobs?integrated_account_id={account}&workspace={ws}&project={project}&workflow={pipeline}"
    )))
    .await;
    assert_eq!(status, 403, "{body}");
    let body = parse(&body);
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("lacks the scope EXECUTION_RUN"),
        "{body}"
    );
    assert_eq!(sim.execution_count(&ws, &project, pipeline), before);
}
