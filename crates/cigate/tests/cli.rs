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

impl Served {
    /// Waits for the process to exit on its own (after a signal) within `within`.
    fn exit_within(&mut self, within: Duration) -> std::process::ExitStatus {
        let deadline = std::time::Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "still running {within:?} after the signal"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// What one `POST /unified/ci-cd/jobs` with an Idempotency-Key got back.
#[derive(Debug, Clone)]
enum Answer {
    /// Status, body, whether it was a replay, how long it took.
    Http(u16, Value, bool, Duration),
    /// No answer (the connection was refused or closed before one).
    Failed(String),
}

/// Sends `keys` as runs of one pipeline, `at_once` at a time, each with its key as the
/// Idempotency-Key and the run's comment. `after_each(done)` is called as answers come.
async fn burst(
    http: &reqwest::Client,
    url: &str,
    token: &str,
    query: &str,
    keys: &[String],
    at_once: usize,
    after_each: impl Fn(usize) + Send + Sync + 'static,
) -> std::collections::BTreeMap<String, Answer> {
    let gate = std::sync::Arc::new(tokio::sync::Semaphore::new(at_once));
    let done = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let after_each = std::sync::Arc::new(after_each);
    let mut tasks = tokio::task::JoinSet::new();
    for key in keys {
        let permit = gate.clone().acquire_owned().await.unwrap();
        let request = http
            .post(format!("{url}/unified/ci-cd/jobs?{query}"))
            .bearer_auth(token)
            .header("Idempotency-Key", key)
            .json(&json!({ "comment": key }));
        let (key, done, after_each) = (key.clone(), done.clone(), after_each.clone());
        tasks.spawn(async move {
            let started = std::time::Instant::now();
            let sent = tokio::time::timeout(Duration::from_secs(60), request.send())
                .await
                .unwrap_or_else(|_| panic!("{key} hung"));
            let answer = match sent {
                Ok(response) => {
                    let status = response.status().as_u16();
                    let replayed = response.headers().contains_key("idempotent-replayed");
                    let retry_after = response.headers().get("retry-after").cloned();
                    let body: Value = response.json().await.unwrap_or(Value::Null);
                    assert!(
                        retry_after.is_none()
                            || status != 409
                            || body["type"] != "/problems/idempotency-outcome-unknown",
                        "{key}: outcome unknown with Retry-After"
                    );
                    Answer::Http(status, body, replayed, started.elapsed())
                }
                Err(err) => Answer::Failed(err.to_string()),
            };
            drop(permit);
            after_each(done.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1);
            (key, answer)
        });
    }
    let mut out = std::collections::BTreeMap::new();
    while let Some(joined) = tasks.join_next().await {
        let (key, answer) = joined.unwrap();
        out.insert(key, answer);
    }
    out
}

/// Every run of the pipeline in the simulator: execution id by comment (the key), and
/// how many runs carry each comment.
async fn runs_by_comment(
    http: &reqwest::Client,
    buddy_url: &str,
    buddy_token: &str,
    pipeline_path: &str,
) -> std::collections::BTreeMap<String, Vec<String>> {
    let mut out: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for page in 1.. {
        let body: Value = http
            .get(format!(
                "{buddy_url}{pipeline_path}/executions?page={page}&per_page=50"
            ))
            .bearer_auth(buddy_token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let runs = body["executions"].as_array().unwrap();
        if runs.is_empty() {
            break;
        }
        for run in runs {
            let comment = run["comment"].as_str().unwrap_or("").to_owned();
            out.entry(comment).or_default().push(run["id"].to_string());
        }
    }
    out
}

/// A burst of runs, one Idempotency-Key each, stopped by `signal` mid-burst and resent
/// to a restarted server on the same database. Checks that nothing is stranded: every
/// resend answers (the stored answer, a fresh run for a key the first server never
/// took, or a clear "outcome unknown" 409), no key ran twice at Buddy, and (for the
/// graceful signals) every run Buddy received had its answer delivered. Returns the
/// number of keys answered "outcome unknown" and the slowest resend.
async fn restart_mid_burst(signal: &'static str) -> (usize, Duration) {
    const KEYS: usize = 200;
    const AT_ONCE: usize = 12;
    let seed: cigate_buddy_sim::SeedSpec =
        "workspaces=1,projects=1,pipelines=1,executions=1,commits=3"
            .parse()
            .unwrap();
    let sim = cigate_buddy_sim::start(SimConfig {
        time: cigate_buddy_sim::TimeMode::Manual,
        seed,
        ..Default::default()
    })
    .await
    .unwrap();
    let buddy_token = sim.sim().issue_token(TokenSpec::all_scopes());
    let ws = sim.sim().workspace_domains()[0].clone();
    let project = sim.sim().project_names(&ws)[0].clone();
    let pipeline = sim.sim().pipeline_ids(&ws, &project)[0];
    let pipeline_path = format!("/workspaces/{ws}/projects/{project}/pipelines/{pipeline}");
    // Each run takes a while at Buddy, so runs are in flight when the signal lands.
    sim.sim().inject(cigate_buddy_sim::FaultSpec {
        method: Some("POST".into()),
        ..cigate_buddy_sim::FaultSpec::new(
            cigate_buddy_sim::FaultKind::Latency { ms: 150 },
            100_000,
        )
        .on_path("/executions")
    });
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite_url(dir.path());
    let token = api_token(&url, &[]);
    let env = [
        ("CIGATE_SHUTDOWN_GRACE", "20s"),
        ("CIGATE_IDEMPOTENCY_LEASE", "2s"),
    ];
    let served = Served::start(&url, &env);
    let http = reqwest::Client::new();
    let account = link(&http, &served.url, &token, &sim.base_url(), &buddy_token).await;
    let query = format!(
        "integrated_account_id={account}&workspace={ws}&project={project}&workflow={pipeline}"
    );
    let keys: Vec<String> = (0..KEYS).map(|i| format!("burst-{i:04}")).collect();
    let before = runs_by_comment(&http, &sim.base_url(), &buddy_token, &pipeline_path).await;

    let pid = served.child.id().to_string();
    let first = burst(
        &http,
        &served.url,
        &token,
        &query,
        &keys,
        AT_ONCE,
        move |done| {
            if done == KEYS / 4 {
                let status = Command::new("kill")
                    .args([format!("-{signal}"), pid.clone()])
                    .status()
                    .expect("kill runs");
                assert!(status.success());
            }
        },
    )
    .await;
    let mut served = served;
    let exit = served.exit_within(Duration::from_secs(30));
    let logs = served.stop();
    if signal == "KILL" {
        assert!(!exit.success());
    } else {
        assert!(exit.success(), "{signal}: exit {exit:?}; logs:\n{logs}");
        assert!(logs.contains("shutting down"), "{logs}");
    }
    let at_restart = runs_by_comment(&http, &sim.base_url(), &buddy_token, &pipeline_path).await;

    let restarted = Served::start(&url, &env);
    let resent = burst(
        &http,
        &restarted.url,
        &token,
        &query,
        &keys,
        AT_ONCE,
        |_| {},
    )
    .await;
    drop(restarted);
    let after = runs_by_comment(&http, &sim.base_url(), &buddy_token, &pipeline_path).await;

    let answered_first = first
        .values()
        .filter(|a| matches!(a, Answer::Http(201, ..)))
        .count();
    assert!(answered_first >= KEYS / 4, "the signal came mid-burst");
    assert!(answered_first < KEYS, "{signal} stopped the burst");
    let mut unknown = 0;
    let mut slowest = Duration::ZERO;
    for key in &keys {
        let runs = after.get(key).map(Vec::as_slice).unwrap_or_default();
        assert!(runs.len() <= 1, "{key} ran {} times at Buddy", runs.len());
        let Answer::Http(status, body, replayed, took) = &resent[key] else {
            panic!("{key}: the resend got no answer: {:?}", resent[key]);
        };
        slowest = slowest.max(*took);
        match status {
            201 => {
                assert_eq!(runs.len(), 1, "{key}");
                assert_eq!(
                    body["id"].to_string(),
                    format!("\"{}\"", runs[0].trim_matches('"'))
                );
                if let Answer::Http(201, first_body, ..) = &first[key] {
                    assert!(replayed, "{key}: answered before, so replayed");
                    assert_eq!(&body["id"], &first_body["id"], "{key}");
                }
            }
            409 => {
                assert_eq!(
                    body["type"], "/problems/idempotency-outcome-unknown",
                    "{key}: {body}"
                );
                assert!(
                    !matches!(first[key], Answer::Http(201, ..)),
                    "{key}: its answer was delivered, so it must be stored"
                );
                unknown += 1;
            }
            other => panic!("{key}: resend answered {other}: {body}"),
        }
        if signal != "KILL" && at_restart.contains_key(key) {
            assert!(
                matches!(first[key], Answer::Http(201, ..)),
                "{signal}: {key} ran at Buddy before the restart, so its answer must have \
                 arrived: {:?}",
                first[key]
            );
        }
    }
    let new_runs: usize =
        after.values().map(Vec::len).sum::<usize>() - before.values().map(Vec::len).sum::<usize>();
    let keys_run = keys.iter().filter(|k| after.contains_key(*k)).count();
    assert_eq!(new_runs, keys_run, "one run per key at most");
    if signal != "KILL" {
        assert_eq!(unknown, 0, "{signal}: a graceful stop strands no key");
    }
    let failed: Vec<&String> = first
        .values()
        .filter_map(|a| match a {
            Answer::Failed(why) => Some(why),
            Answer::Http(..) => None,
        })
        .collect();
    eprintln!(
        "{signal}: {answered_first} answered before the stop, {} refused ({:?}), {} ran at \
         Buddy by the restart, {unknown} outcome unknown, slowest resend {slowest:?}",
        failed.len(),
        failed.first(),
        keys.iter().filter(|k| at_restart.contains_key(*k)).count(),
    );
    (unknown, slowest)
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_mid_burst_finishes_what_is_in_flight_and_strands_no_key() {
    restart_mid_burst("TERM").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sigint_mid_burst_finishes_what_is_in_flight_and_strands_no_key() {
    restart_mid_burst("INT").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sigkill_mid_burst_leaves_keys_answered_outcome_unknown_promptly() {
    let (_, slowest) = restart_mid_burst("KILL").await;
    // The old behaviour waited ~35 s per stuck key; with a 2 s lease a stuck key is
    // known at once after its lease lapsed.
    assert!(
        slowest < Duration::from_secs(15),
        "slowest resend {slowest:?}"
    );
}
