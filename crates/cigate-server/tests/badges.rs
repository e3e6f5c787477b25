//! Status badges over real HTTP against the Buddy simulator (manual clock, so a job
//! finishes exactly when the test says): what a badge reads as its branch's jobs come
//! and go, the public forms without a token, the management forms with one, `ETag`s,
//! the answer when Buddy fails, and concurrent views sharing one Buddy call.

mod common;

use std::time::{Duration, Instant};

use cigate_buddy_sim::{FaultKind, FaultSpec, RunRequest, SeedSpec, SimConfig, TimeMode};
use common::{Backend, Harness};
use serde_json::{json, Value};

const BRANCH: &str = "badges";

async fn start(backend: Backend, ttl: Duration) -> Option<Harness> {
    let seed: SeedSpec = "workspaces=1,projects=1,pipelines=2,executions=3,commits=10"
        .parse()
        .unwrap();
    Harness::start_configured(
        backend,
        SimConfig {
            time: TimeMode::Manual,
            seed,
            ..Default::default()
        },
        |config| {
            config.badge_cache_ttl = ttl;
            // A failing Buddy gives up within the test's patience.
            config.upstream_timeout_ms = 1500;
        },
    )
    .await
}

struct Scene {
    account: String,
    ws: String,
    project: String,
    pipeline: u64,
}

async fn scene(h: &Harness) -> Scene {
    let account = h.link().await;
    let sim = h.sim.sim();
    let ws = sim.workspace_domains()[0].clone();
    let project = sim.project_names(&ws)[0].clone();
    let pipeline = sim.pipeline_ids(&ws, &project)[0];
    Scene {
        account,
        ws,
        project,
        pipeline,
    }
}

impl Scene {
    /// Runs the pipeline on the badge's branch; returns once Buddy has the job queued.
    fn run(&self, h: &Harness) {
        let sim = h.sim.sim();
        // A step of the clock first: the new job is the newest one by its creation time.
        sim.advance(chrono::Duration::seconds(1));
        sim.run(
            &self.ws,
            &self.project,
            self.pipeline,
            RunRequest {
                branch: Some(BRANCH.into()),
                ..RunRequest::default()
            },
        )
        .expect("run");
    }

    fn executions_path(&self) -> String {
        format!(
            "/workspaces/{}/projects/{}/pipelines/{}/executions",
            self.ws, self.project, self.pipeline
        )
    }
}

/// Creates a badge; returns its body.
async fn create(h: &Harness, body: Value) -> Value {
    let response = h.post("/badge").json(&body).send().await.unwrap();
    let status = response.status();
    let body: Value = response.json().await.unwrap();
    assert_eq!(status, 201, "{body}");
    body
}

fn badge_body(s: &Scene, workflow: bool) -> Value {
    let mut body = json!({
        "integrated_account_id": s.account,
        "workspace": s.ws,
        "repo": s.project,
        "branch": BRANCH,
        "label": "ci",
    });
    if workflow {
        body["workflow"] = json!(s.pipeline.to_string());
    }
    body
}

/// A public view: no token.
async fn view(h: &Harness, url: &str) -> reqwest::Response {
    h.http.get(url).send().await.expect("request")
}

/// What the SVG says: the text after the label in its `aria-label`.
async fn svg_message(h: &Harness, url: &str) -> String {
    let response = view(h, url).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "image/svg+xml");
    let svg = response.text().await.unwrap();
    let label = svg
        .split("aria-label=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap_or_else(|| panic!("no aria-label in {svg}"));
    label
        .split_once(": ")
        .map(|(_, message)| message.to_owned())
        .unwrap_or_else(|| panic!("aria-label {label:?}"))
}

/// Polls the SVG until it says `expected` (the kept answer expires meanwhile).
async fn until_message(h: &Harness, url: &str, expected: &str, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let message = svg_message(h, url).await;
        if message == expected {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the badge still says {message:?}, not {expected:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

mod follows_the_branch {
    use super::*;

    async fn body(h: Harness) {
        let s = scene(&h).await;
        let badge = create(&h, badge_body(&s, true)).await;
        let id = badge["id"].as_str().unwrap();
        assert!(id.starts_with("bdg_") && id.len() >= 4 + 43, "{id}");
        let url = badge["url"].as_str().unwrap().to_owned();
        let json_url = badge["json_url"].as_str().unwrap().to_owned();
        assert_eq!(url, h.url(&format!("/badge/{id}.svg")));
        assert_eq!(json_url, h.url(&format!("/badge/{id}.json")));
        assert_eq!(badge["branch"], BRANCH);
        assert_eq!(badge["workflow"], s.pipeline.to_string());
        assert_eq!(badge["integrated_account_id"], s.account.as_str());

        // The branch does not exist yet: no runs.
        assert_eq!(svg_message(&h, &url).await, "no runs");
        h.sim
            .sim()
            .push_commit(&s.ws, &s.project, BRANCH, "start badges")
            .unwrap();
        s.run(&h);
        until_message(&h, &url, "running", Duration::from_secs(10)).await;
        h.sim.sim().advance(chrono::Duration::hours(1));
        until_message(&h, &url, "passing", Duration::from_secs(10)).await;

        let response = view(&h, &json_url).await;
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["content-type"], "application/json");
        assert_eq!(response.headers()["cache-control"], "public, max-age=0");
        let shields: Value = response.json().await.unwrap();
        assert_eq!(
            shields,
            json!({"schemaVersion": 1, "label": "ci", "message": "passing", "color": "brightgreen"})
        );

        // The next job on the branch fails in Buddy: the badge says so within the TTL.
        h.sim
            .sim()
            .fail_next_runs(&s.ws, &s.project, s.pipeline, 1)
            .unwrap();
        s.run(&h);
        h.sim.sim().advance(chrono::Duration::hours(1));
        let failed_at = Instant::now();
        until_message(&h, &url, "failing", Duration::from_secs(10)).await;
        assert!(failed_at.elapsed() < Duration::from_secs(30));
        let shields: Value = view(&h, &json_url).await.json().await.unwrap();
        assert_eq!(
            shields,
            json!({"schemaVersion": 1, "label": "ci", "message": "failing", "color": "red"})
        );

        // The same answer again, even after the kept one expired: the client's copy holds.
        let first = view(&h, &url).await;
        let etag = first.headers()["etag"].to_str().unwrap().to_owned();
        assert!(etag.starts_with('"') && etag.ends_with('"'), "{etag}");
        let svg = first.text().await.unwrap();
        assert!(svg.contains("#e05d44") && svg.contains("<title>ci: failing</title>"));
        tokio::time::sleep(Duration::from_millis(300)).await;
        let again = h
            .http
            .get(&url)
            .header("if-none-match", &etag)
            .send()
            .await
            .unwrap();
        assert_eq!(again.status(), 304);
        assert_eq!(again.headers()["etag"], etag.as_str());
        assert!(again.bytes().await.unwrap().is_empty());
        let other = h
            .http
            .get(&url)
            .header("if-none-match", "\"something-else\"")
            .send()
            .await
            .unwrap();
        assert_eq!(other.status(), 200);
    }

    #[tokio::test]
    async fn sqlite() {
        if let Some(h) = start(Backend::Sqlite, Duration::from_millis(200)).await {
            body(h).await;
        }
    }

    #[tokio::test]
    async fn postgres() {
        if let Some(h) = start(Backend::Postgres, Duration::from_millis(200)).await {
            body(h).await;
        }
    }
}

#[tokio::test]
async fn views_need_no_token_and_management_does() {
    let h = start(Backend::Sqlite, Duration::from_millis(200))
        .await
        .unwrap();
    let s = scene(&h).await;
    let badge = create(&h, badge_body(&s, false)).await;
    let id = badge["id"].as_str().unwrap();
    assert_eq!(badge["workflow"], Value::Null);

    let path = format!("/badge/{id}");
    assert_eq!(view(&h, &h.url(&format!("{path}.svg"))).await.status(), 200);
    assert_eq!(
        view(&h, &h.url(&format!("{path}.json"))).await.status(),
        200
    );
    // The bare id is management: a token, and then the badge as created.
    assert_eq!(view(&h, &h.url(&path)).await.status(), 401);
    let (status, fetched) = h.get_json(&path).await;
    assert_eq!(status, 200, "{fetched}");
    assert_eq!(fetched, badge);

    // A guessed id, in every form.
    let guessed = format!("bdg_{}", "A".repeat(43));
    for form in [".svg", ".json"] {
        let response = view(&h, &h.url(&format!("/badge/{guessed}{form}"))).await;
        assert_eq!(response.status(), 404);
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json"
        );
    }
    assert_eq!(h.get_json(&format!("/badge/{guessed}")).await.0, 404);

    // Public forms are read-only; only the bare id can be deleted, with a token.
    let delete = |path: String, token: bool| {
        let request = h.http.delete(h.url(&path));
        if token {
            request.bearer_auth(&h.api_token)
        } else {
            request
        }
    };
    let refused = delete(format!("{path}.svg"), true).send().await.unwrap();
    assert_eq!(refused.status(), 405);
    assert_eq!(refused.headers()["allow"], "GET, HEAD");
    let refused = h.http.put(h.url(&path)).send().await.unwrap();
    assert_eq!(refused.status(), 405);
    assert_eq!(refused.headers()["allow"], "GET, HEAD, DELETE");
    assert_eq!(
        delete(path.clone(), false).send().await.unwrap().status(),
        401
    );
    let deleted = delete(path.clone(), true).send().await.unwrap();
    assert_eq!(deleted.status(), 200);
    assert_eq!(deleted.json::<Value>().await.unwrap(), json!({ "id": id }));
    assert_eq!(view(&h, &h.url(&format!("{path}.svg"))).await.status(), 404);
    assert_eq!(
        delete(path.clone(), true).send().await.unwrap().status(),
        404
    );
}

#[tokio::test]
async fn a_badge_is_checked_when_created() {
    let h = start(Backend::Sqlite, Duration::from_millis(200))
        .await
        .unwrap();
    let s = scene(&h).await;
    let good = badge_body(&s, true);
    let send = |body: Value| {
        let request = h.post("/badge").json(&body);
        async move {
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            (
                status,
                response.json::<Value>().await.unwrap_or(Value::Null),
            )
        }
    };
    for (field, value) in [
        ("workspace", json!("")),
        ("workspace", json!("a/b")),
        ("repo", json!("..")),
        ("workflow", json!("1?x")),
        ("branch", json!("")),
        ("branch", json!("main\n")),
        ("label", json!("")),
        ("branch", Value::Null),
        ("unknown_field", json!(1)),
    ] {
        let mut body = good.clone();
        body[field] = value.clone();
        let (status, problem) = send(body).await;
        assert_eq!(status, 422, "{field}={value}: {problem}");
        assert_eq!(problem["status"], 422);
    }
    let mut body = good.clone();
    body.as_object_mut().unwrap().remove("branch");
    assert_eq!(send(body).await.0, 422);
    let mut body = good.clone();
    body["integrated_account_id"] = json!("no-such-account");
    let (status, problem) = send(body).await;
    assert_eq!(status, 404, "{problem}");
    let not_json = h
        .post("/badge")
        .header("content-type", "application/json")
        .body("{")
        .send()
        .await
        .unwrap();
    assert_eq!(not_json.status(), 400);
    let no_token = h
        .http
        .post(h.url("/badge"))
        .json(&good)
        .send()
        .await
        .unwrap();
    assert_eq!(no_token.status(), 401);
    // `project` is `repo`'s alias here as everywhere.
    let mut body = good.clone();
    let repo = body.as_object_mut().unwrap().remove("repo").unwrap();
    body["project"] = repo;
    assert_eq!(create(&h, body).await["repo"], s.project.as_str());
}

#[tokio::test]
async fn a_failing_buddy_draws_unknown_and_nothing_is_kept() {
    let h = start(Backend::Sqlite, Duration::from_secs(60))
        .await
        .unwrap();
    let s = scene(&h).await;
    let badge = create(&h, badge_body(&s, true)).await;
    let (url, json_url) = (
        badge["url"].as_str().unwrap(),
        badge["json_url"].as_str().unwrap(),
    );
    h.sim.sim().inject(
        FaultSpec::new(FaultKind::Status { status: 503 }, 1000).on_path(&s.executions_path()),
    );
    let response = view(&h, url).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["cache-control"], "no-cache");
    let svg = response.text().await.unwrap();
    assert!(svg.contains("<title>ci: unknown</title>"), "{svg}");
    let response = view(&h, json_url).await;
    assert_eq!(response.headers()["cache-control"], "no-cache");
    let shields: Value = response.json().await.unwrap();
    assert_eq!(
        shields,
        json!({"schemaVersion": 1, "label": "ci", "message": "unknown", "color": "lightgrey", "isError": true})
    );
    // Buddy is back: the failure was not kept, the next view asks again.
    h.sim.sim().clear_faults();
    assert_eq!(svg_message(&h, url).await, "no runs");
    let kept = view(&h, url).await;
    // What is left of the answer's 60 s here, never more.
    let max_age: u64 = kept.headers()["cache-control"]
        .to_str()
        .unwrap()
        .strip_prefix("public, max-age=")
        .and_then(|secs| secs.parse().ok())
        .unwrap();
    assert!((50..60).contains(&max_age), "{max_age}");
}

#[tokio::test]
async fn concurrent_views_share_one_buddy_call() {
    let h = start(Backend::Sqlite, Duration::from_secs(60))
        .await
        .unwrap();
    let s = scene(&h).await;
    let sim = h.sim.sim();
    let many = |url: String| {
        let http = h.http.clone();
        futures::future::join_all((0..50).map(move |_| {
            let (http, url) = (http.clone(), url.clone());
            async move { http.get(&url).send().await.unwrap().status().as_u16() }
        }))
    };

    // One pipeline: one list of its executions for fifty views.
    let badge = create(&h, badge_body(&s, true)).await;
    sim.reset_request_counts();
    let statuses = many(badge["url"].as_str().unwrap().to_owned()).await;
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    assert_eq!(sim.request_count(Some("GET"), &s.executions_path()), 1);
    assert_eq!(sim.total_requests(), 1);

    // Every pipeline of the repo: what one view costs, fifty views cost.
    let single = create(&h, badge_body(&s, false)).await;
    sim.reset_request_counts();
    assert_eq!(
        view(&h, single["url"].as_str().unwrap()).await.status(),
        200
    );
    let one_view = sim.total_requests();
    assert!(one_view >= 1);
    let shared = create(&h, badge_body(&s, false)).await;
    sim.reset_request_counts();
    let statuses = many(shared["json_url"].as_str().unwrap().to_owned()).await;
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    assert_eq!(sim.total_requests(), one_view);
}
