//! The binary as an operator uses it: separate processes, real ports, real files.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use cigate_buddy_sim::{SimConfig, TokenSpec};
use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_cigate");

fn cigate(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let mut command = Command::new(BIN);
    command.args(args).env_remove("CIGATE_MASTER_KEY");
    for (k, v) in env {
        command.env(k, v);
    }
    command.output().expect("cigate runs")
}

/// A `cigate serve` child whose stderr (the logs) is collected for inspection.
struct Served {
    child: Child,
    url: String,
    logs: mpsc::Receiver<String>,
    early: Vec<String>,
}

impl Served {
    fn start(database_url: &str, env: &[(&str, &str)]) -> Served {
        let mut command = Command::new(BIN);
        command
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--database-url",
                database_url,
            ])
            .args(["--allow-private-upstreams"])
            .env("CIGATE_LOG", "debug")
            .env_remove("CIGATE_MASTER_KEY")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in env {
            command.env(k, v);
        }
        let mut child = command.spawn().expect("serve starts");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut seen = Vec::new();
        let url = loop {
            let line = rx
                .recv_timeout(Duration::from_secs(30))
                .unwrap_or_else(|_| panic!("no listening line; logs: {seen:#?}"));
            let url = line
                .split("url=")
                .nth(1)
                .map(|rest| rest.split_whitespace().next().unwrap().to_owned());
            seen.push(line);
            if let Some(url) = url {
                break url;
            }
        };
        Served {
            child,
            url,
            logs: rx,
            early: seen,
        }
    }

    /// Stops the process and returns everything it logged.
    fn stop(mut self) -> String {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let mut lines = std::mem::take(&mut self.early);
        lines.extend(self.logs.try_iter());
        lines.join("\n")
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
    }
}

fn sqlite_url(dir: &std::path::Path) -> String {
    format!("sqlite://{}?mode=rwc", dir.join("cigate.db").display())
}

fn api_token(database_url: &str, env: &[(&str, &str)]) -> String {
    let out = cigate(
        &["api-token", "create", "--database-url", database_url],
        env,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

async fn link(
    http: &reqwest::Client,
    url: &str,
    token: &str,
    buddy_url: &str,
    buddy_token: &str,
) -> String {
    let response = http
        .post(format!("{url}/integrated-account"))
        .bearer_auth(token)
        .json(&json!({"integration": "buddy", "context": {"api_key": buddy_token, "base_url": buddy_url}}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let body: Value = response.json().await.unwrap();
    body["id"].as_str().unwrap().to_owned()
}

async fn workspaces_status(http: &reqwest::Client, url: &str, token: &str, account: &str) -> u16 {
    http.get(format!(
        "{url}/unified/ci-cd/workspaces?integrated_account_id={account}"
    ))
    .bearer_auth(token)
    .send()
    .await
    .unwrap()
    .status()
    .as_u16()
}

#[test]
fn api_token_create_prints_the_token_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite_url(dir.path());
    let out = cigate(
        &[
            "api-token",
            "create",
            "--environment",
            "staging",
            "--database-url",
            &url,
        ],
        &[],
    );
    assert!(out.status.success());
    let stdout = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 1, "{stdout:?}");
    assert!(
        lines[0].starts_with("cgt_") && lines[0].len() > 40,
        "{stdout:?}"
    );
}

#[test]
fn a_wrong_master_key_is_a_clear_startup_error() {
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite_url(dir.path());
    let key_a = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
    let key_b = "BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBA=";
    api_token(&url, &[("CIGATE_MASTER_KEY", key_a)]);
    let out = cigate(
        &["migrate", "--database-url", &url],
        &[("CIGATE_MASTER_KEY", key_b)],
    );
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.to_lowercase().contains("key"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread")]
async fn logs_and_database_never_hold_the_buddy_token() {
    let sim = cigate_buddy_sim::start(SimConfig::default()).await.unwrap();
    let buddy_token = sim.sim().issue_token(TokenSpec::all_scopes());
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite_url(dir.path());
    let token = api_token(&url, &[]);
    let served = Served::start(&url, &[]);
    let http = reqwest::Client::new();
    let account = link(&http, &served.url, &token, &sim.base_url(), &buddy_token).await;
    assert_eq!(
        workspaces_status(&http, &served.url, &token, &account).await,
        200
    );
    let logs = served.stop();
    assert!(logs.contains("cigate listening"), "logs were captured");
    assert!(
        logs.contains("/integrated-account"),
        "request logs were captured: {logs}"
    );
    assert!(
        !logs.contains(&buddy_token),
        "the Buddy token is in the logs"
    );
    assert!(!logs.contains(&token), "the API token is in the logs");
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        assert!(!bytes
            .windows(buddy_token.len())
            .any(|w| w == buddy_token.as_bytes()));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn keys_rotate_while_serving_leaves_every_account_usable() {
    let sim = cigate_buddy_sim::start(SimConfig::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite_url(dir.path());
    let token = api_token(&url, &[]);
    let served = Served::start(&url, &[]);
    let http = reqwest::Client::new();
    let mut accounts = Vec::new();
    for _ in 0..5 {
        let buddy_token = sim.sim().issue_token(TokenSpec::all_scopes());
        accounts.push(link(&http, &served.url, &token, &sim.base_url(), &buddy_token).await);
    }
    let key_before = std::fs::read_to_string(dir.path().join("cigate.key")).unwrap();
    let out = cigate(&["keys", "rotate", "--database-url", &url], &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["reencrypted"], 5);
    assert_ne!(
        std::fs::read_to_string(dir.path().join("cigate.key")).unwrap(),
        key_before
    );
    for account in &accounts {
        assert_eq!(
            workspaces_status(&http, &served.url, &token, account).await,
            200,
            "running server after rotation"
        );
    }
    served.stop();
    let restarted = Served::start(&url, &[]);
    for account in &accounts {
        assert_eq!(
            workspaces_status(&http, &restarted.url, &token, account).await,
            200,
            "restarted server"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn two_servers_on_one_postgres_see_the_same_accounts() {
    let Ok(pg) = std::env::var("CIGATE_TEST_POSTGRES_URL") else {
        eprintln!("skipping: CIGATE_TEST_POSTGRES_URL is not set");
        return;
    };
    let schema = format!("cigate_cli_{}", std::process::id());
    let key = "eHh4eHh4eHh4eHh4eHh4eHh4eHh4eHh4eHh4eHh4eHg=";
    let env = [
        ("CIGATE_MASTER_KEY", key),
        ("CIGATE_DATABASE_SCHEMA", schema.as_str()),
    ];
    let token = api_token(&pg, &env);
    let a = Served::start(&pg, &env);
    let b = Served::start(&pg, &env);
    let sim = cigate_buddy_sim::start(SimConfig::default()).await.unwrap();
    let buddy_token = sim.sim().issue_token(TokenSpec::all_scopes());
    let http = reqwest::Client::new();
    let account = link(&http, &a.url, &token, &sim.base_url(), &buddy_token).await;
    let seen: Value = http
        .get(format!("{}/integrated-account/{account}", b.url))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(seen["id"], account.as_str());
    assert_eq!(
        workspaces_status(&http, &b.url, &token, &account).await,
        200
    );
    // Cursors signed by one instance are accepted by the other.
    let page: Value = http
        .get(format!(
            "{}/unified/ci-cd/repos?integrated_account_id={account}&limit=1",
            a.url
        ))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let cursor = page["next_cursor"].as_str().unwrap();
    let next = http
        .get(format!(
            "{}/unified/ci-cd/repos?integrated_account_id={account}&limit=1&next_cursor={cursor}",
            b.url
        ))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(next.status(), 200);
    a.stop();
    b.stop();
    let _ = Command::new("psql")
        .arg(&pg)
        .args(["-c", &format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE")])
        .output();
}
