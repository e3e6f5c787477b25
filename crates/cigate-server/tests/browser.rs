//! The Link page in a real browser: Debian's headless Chromium, driven by
//! tests/browser/link.mjs (playwright-core), links the simulator's account with a
//! personal access token, through OAuth against the simulator, and through Truto's
//! published Link SDK in popup mode; then, with link tokens that carry the simulator as
//! a self-hosted `context.base_url`, through the SDK and through OAuth without the page
//! asking where the account is. Screenshots of each page land in
//! target/test-artifacts/browser.
//!
//! And the operator dashboard (tests/browser/ui.mjs): signing in after a wrong token,
//! every page through the navigation with axe-core on each, the charts, a job appearing
//! live on the timeline, signing out. Screenshots land in target/test-artifacts/ui.

mod common;

use std::path::{Path, PathBuf};

use common::{Backend, Harness};
use serde_json::{json, Value};

const CHROMIUM: &str = "/usr/bin/chromium";

fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The script's directory, or `None` (after saying why) when Chromium or the Node
/// packages are missing here. Under CI that is a failure: `.ci/run` installs both.
fn browser_dir() -> Option<PathBuf> {
    let dir = workspace_root().join("tests/browser");
    let missing: Vec<String> = [PathBuf::from(CHROMIUM), dir.join("node_modules")]
        .iter()
        .filter(|p| !p.exists())
        .map(|p| p.display().to_string())
        .collect();
    if missing.is_empty() {
        return Some(dir);
    }
    let why = format!(
        "the browser test needs {} (install Debian's chromium, then run tests/browser/setup.sh)",
        missing.join(" and ")
    );
    if std::env::var_os("CI").is_some() {
        panic!("{why}");
    }
    eprintln!("skipping: {why}");
    None
}

/// A fresh link token with this context; returns `(link_token, link_url)`.
async fn new_link(h: &Harness, context: Value) -> (String, String) {
    let response = h
        .post("/link-token")
        .json(&json!({ "tenant_id": "acme", "context": context }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let body: Value = response.json().await.unwrap();
    (
        body["link_token"].as_str().unwrap().to_owned(),
        body["link_url"].as_str().unwrap().to_owned(),
    )
}

/// The account exists in the store, is active, and a unified call through it works.
async fn assert_works(h: &Harness, id: &str, method: &str) {
    let store = &h.server.state.store;
    let env = store.ensure_environment("default").await.unwrap();
    let account = store
        .get_account(&env.id, id)
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("account {id} is not in the store"));
    assert_eq!(account.tenant_id.as_deref(), Some("acme"));
    let (status, body) = h.get_json(&format!("/integrated-account/{id}")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "active", "{body}");
    assert_eq!(body["authentication_method"], method, "{body}");
    let (status, body) = h
        .get_json(&format!(
            "/unified/ci-cd/workspaces?integrated_account_id={id}"
        ))
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(
        !body["result"].as_array().unwrap().is_empty(),
        "workspaces through {id}: {body}"
    );
}

fn artifacts() -> PathBuf {
    artifacts_of("browser")
}

fn artifacts_of(test: &str) -> PathBuf {
    workspace_root()
        .canonicalize()
        .unwrap()
        .join("target/test-artifacts")
        .join(test)
}

async fn run_script(dir: &Path, h: &Harness) -> Value {
    let (_, token_url) = new_link(h, json!({})).await;
    let (_, oauth_url) = new_link(h, json!({})).await;
    let (sdk_token, _) = new_link(h, json!({})).await;
    let named = json!({ "base_url": h.sim.base_url() });
    let (sdk_named_token, _) = new_link(h, named.clone()).await;
    let (_, named_oauth_url) = new_link(h, named).await;
    // Fresh screenshots only: the assertions below look for this run's files.
    let _ = std::fs::remove_dir_all(artifacts());
    let output = tokio::process::Command::new("node")
        .arg(dir.join("link.mjs"))
        .current_dir(dir)
        .env("CIGATE_URL", h.server.base_url())
        .env("BUDDY_URL", h.sim.base_url())
        .env("LINK_URL_TOKEN", token_url)
        .env("LINK_URL_OAUTH", oauth_url)
        .env("BUDDY_TOKEN", &h.buddy_token)
        .env("SDK_LINK_TOKEN", sdk_token)
        .env("SDK_NAMED_LINK_TOKEN", sdk_named_token)
        .env("LINK_URL_NAMED_OAUTH", named_oauth_url)
        .env("ARTIFACTS", artifacts())
        .kill_on_drop(true)
        .output()
        .await
        .expect("node runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the browser script failed (screenshots in {}):\n{stderr}",
        artifacts().display()
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

#[tokio::test]
async fn chromium_links_by_token_by_oauth_and_through_trutos_sdk() {
    let Some(dir) = browser_dir() else { return };
    let h = Harness::start(Backend::Sqlite).await.unwrap();
    h.configure_oauth().await;
    let out = run_script(&dir, &h).await;

    let token = out["token"].as_str().expect("token flow account");
    let oauth = out["oauth"].as_str().expect("OAuth flow account");
    let sdk = out["sdk"].as_str().expect("SDK flow account");
    let named_sdk = out["named_sdk"]
        .as_str()
        .expect("named-Buddy SDK flow account");
    let named_oauth = out["named_oauth"]
        .as_str()
        .expect("named-Buddy OAuth flow account");
    assert_works(&h, token, "api_key").await;
    assert_works(&h, oauth, "oauth2").await;
    assert_works(&h, sdk, "api_key").await;
    assert_works(&h, named_sdk, "api_key").await;
    assert_works(&h, named_oauth, "oauth2").await;
    // The accounts of the named links were linked against the simulator's URL.
    let sim_url = h.sim.base_url();
    for id in [named_sdk, named_oauth] {
        let (_, body) = h.get_json(&format!("/integrated-account/{id}")).await;
        assert_eq!(
            body["context"]["base_url"],
            sim_url.trim_end_matches('/'),
            "{body}"
        );
        assert_eq!(body["context"]["region"], "self_hosted", "{body}");
    }
    assert_eq!(
        h.sim.sim().oauth_token_calls(),
        2,
        "one code exchange for each OAuth link"
    );
    for name in [
        "a3-token-success",
        "b2-oauth-success",
        "c2-sdk-host-resolved",
        "d1-named-sdk-popup",
        "d2-named-sdk-host-resolved",
        "e2-named-oauth-success",
    ] {
        assert!(
            artifacts().join(format!("{name}.png")).exists(),
            "{name} screenshot"
        );
    }
}

/// The first id of a unified list.
async fn first_id(h: &Harness, path: &str) -> String {
    let (status, body) = h.get_json(path).await;
    assert_eq!(status, 200, "{path}: {body}");
    body["result"][0]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("{path}: {body}"))
        .to_owned()
}

#[tokio::test]
async fn chromium_signs_in_to_the_dashboard_and_every_page_passes_axe() {
    let Some(dir) = browser_dir() else { return };
    // Polling on and quick, so a job started during the run reaches the timeline, and a
    // Buddy budget large enough that polling's share of it (10 %) lasts the whole run: at
    // Buddy's default 1,000 calls an hour, a slow run (a busy machine, a cold browser)
    // used up that share before the job started, and polling rightly stood back.
    let sim = cigate_buddy_sim::SimConfig {
        rate_limit: "100000000/3600".parse().unwrap(),
        ..Default::default()
    };
    let h = Harness::start_configured(Backend::Sqlite, sim, |config| {
        config.event_poll_interval = std::time::Duration::from_millis(300);
    })
    .await
    .unwrap();
    let account = h.link().await;
    let response = h
        .post("/webhook")
        .json(&json!({ "target_url": "https://hooks.example.com/ops", "event_types": ["job:*"] }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let scope = format!("integrated_account_id={account}");
    let workspace = first_id(&h, &format!("/unified/ci-cd/workspaces?{scope}")).await;
    let scope = format!("{scope}&workspace={workspace}");
    let repo = first_id(&h, &format!("/unified/ci-cd/repos?{scope}")).await;
    let scope = format!("{scope}&repo={repo}");
    let workflow = first_id(&h, &format!("/unified/ci-cd/workflows?{scope}")).await;
    let run_job = format!("/unified/ci-cd/jobs?{scope}&workflow={workflow}");

    let artifacts = artifacts_of("ui");
    let _ = std::fs::remove_dir_all(&artifacts);
    let output = tokio::process::Command::new("node")
        .arg(dir.join("ui.mjs"))
        .current_dir(&dir)
        .env("CIGATE_URL", h.server.base_url())
        .env("API_TOKEN", &h.api_token)
        .env("RUN_JOB_PATH", run_job)
        .env("ARTIFACTS", &artifacts)
        .kill_on_drop(true)
        .output()
        .await
        .expect("node runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "the dashboard script failed (screenshots in {}):\n{}\n{stdout}",
        artifacts.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    let line = stdout.lines().last().unwrap_or_default();
    let out: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {stdout}"));

    assert!(
        out["wrong_token_message"]
            .as_str()
            .unwrap()
            .contains("not accepted"),
        "{out}"
    );
    assert_eq!(out["cookie"]["httpOnly"], true, "{out}");
    assert_eq!(out["cookie"]["sameSite"], "Strict", "{out}");
    assert_eq!(out["accounts"], 1, "{out}");
    assert_eq!(out["tenant_shown"], 1, "{out}");
    assert!(out["timeline_rows"].as_u64().unwrap() > 0, "{out}");
    assert_eq!(out["live_update"], true, "{out}");
    assert!(out["charts"].as_u64().unwrap() >= 1, "{out}");
    assert_eq!(out["subscriptions"], 1, "{out}");
    assert!(out["deliveries"].as_u64().unwrap() >= 1, "{out}");
    assert_eq!(out["signed_out"], true, "{out}");
    assert_eq!(out["api_without_token"], 401, "{out}");
    let audited: Vec<&str> = out["audits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            assert_eq!(a["serious_or_critical"], 0, "{a}");
            a["page"].as_str().unwrap()
        })
        .collect();
    for page in [
        "sign-in", "overview", "accounts", "timeline", "metrics", "webhooks",
    ] {
        assert!(audited.contains(&page), "{page} audited: {out}");
    }
    for name in ["03-overview", "05-timeline", "07-metrics", "08-webhooks"] {
        assert!(
            artifacts.join(format!("{name}.png")).exists(),
            "{name} screenshot"
        );
    }
}
