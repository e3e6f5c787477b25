//! Job events under load, with `cigate serve`'s defaults unless a flag says otherwise.
//!
//! `outbox`: N events recorded into the outbox with S subscriptions to a local receiver;
//! prints deliveries per second and the latency from an event's commit to its arrival.
//! `--rate R` paces the events at R per second instead of as fast as the store takes
//! them (the latency run); `--instances 2` runs two gateways on one database, each with
//! its own delivery worker; `--postgres URL` uses PostgreSQL instead of SQLite.
//!
//! `polling`: A accounts linked to a simulator running in a child process (so this
//! process is the gateway alone), polled at the default interval; prints the gateway's
//! CPU share and RSS over the measured window and the simulator calls per account per
//! polling cycle.
//!
//! `hooks`: the webhook path end to end: the simulator runs jobs and posts its webhooks
//! to the gateway, which re-reads each job and delivers its events; prints the events
//! per second and the latency from detection (the event's commit) to arrival.
//!
//! `cargo run --profile dist --manifest-path bench/events-load/Cargo.toml -- outbox
//! [--events N] [--subscriptions S] [--rate R] [--instances I] [--postgres URL]`
//! `… -- polling [--accounts A] [--seconds T] [--interval SECS]`
//! `… -- hooks [--jobs-per-second J] [--seconds T]`

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::StatusCode;
use axum::routing::post;
use cigate_buddy_sim::{SimConfig, TokenSpec};
use cigate_server::ServerConfig;
use cigate_store::NewEvent;
use serde_json::{json, Value};

fn flags() -> (String, HashMap<String, String>) {
    let mut argv = std::env::args().skip(1);
    let mode = argv.next().unwrap_or_else(|| "outbox".into());
    let rest: Vec<String> = argv.collect();
    let mut out = HashMap::new();
    for pair in rest.chunks(2) {
        let key = pair[0].trim_start_matches("--").to_owned();
        let value = pair.get(1).cloned().unwrap_or_else(|| panic!("--{key} needs a value"));
        out.insert(key, value);
    }
    (mode, out)
}

fn flag<T: std::str::FromStr>(flags: &HashMap<String, String>, name: &str, default: T) -> T {
    flags
        .get(name)
        .map(|v| v.parse().unwrap_or_else(|_| panic!("bad --{name}")))
        .unwrap_or(default)
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1]
}

/// A receiver on port 0 that counts deliveries and the latency of each from the
/// event's `created_at`.
struct Receiver {
    url: String,
    count: Arc<AtomicUsize>,
    latencies_ms: Arc<Mutex<Vec<f64>>>,
}

async fn receiver() -> Receiver {
    let count = Arc::new(AtomicUsize::new(0));
    let latencies_ms: Arc<Mutex<Vec<f64>>> = Arc::default();
    let (c, l) = (count.clone(), latencies_ms.clone());
    let app = axum::Router::new().route(
        "/hook",
        post(move |body: Bytes| {
            let (c, l) = (c.clone(), l.clone());
            async move {
                let now = chrono::Utc::now();
                if let Ok(event) = serde_json::from_slice::<Value>(&body) {
                    if let Some(at) = event["created_at"]
                        .as_str()
                        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                    {
                        let ms = (now - at.with_timezone(&chrono::Utc)).num_microseconds();
                        l.lock().unwrap().push(ms.unwrap_or(0) as f64 / 1000.0);
                    }
                }
                c.fetch_add(1, Ordering::SeqCst);
                StatusCode::NO_CONTENT
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    Receiver {
        url: format!("http://{addr}/hook"),
        count,
        latencies_ms,
    }
}

fn config_for(flags: &HashMap<String, String>, dir: &std::path::Path) -> ServerConfig {
    let mut config = match flags.get("postgres") {
        Some(url) => {
            let mut c = ServerConfig::for_database(url.clone());
            c.database_schema = Some(format!("bench_events_{}", std::process::id()));
            c.key_file = Some(dir.join("cigate.key"));
            c
        }
        None => ServerConfig::for_database(format!(
            "sqlite://{}?mode=rwc",
            dir.join("cigate.db").display()
        )),
    };
    config.allow_private_upstreams = true;
    config
}

async fn outbox(flags: HashMap<String, String>) {
    let events: usize = flag(&flags, "events", 2000);
    let subscriptions: usize = flag(&flags, "subscriptions", 8);
    let rate: f64 = flag(&flags, "rate", 0.0);
    let instances: usize = flag(&flags, "instances", 1);
    let dir = tempfile::tempdir().unwrap();
    let config = config_for(&flags, dir.path());
    let store = cigate_server::store::open(&config).await.unwrap();
    let env = store.ensure_environment("default").await.unwrap();
    let mut servers = Vec::new();
    for _ in 0..instances {
        let store = cigate_server::store::open(&config).await.unwrap();
        let state = cigate_server::build_state(config.clone(), store).await.unwrap();
        servers.push(cigate_server::start(state).await.unwrap());
    }
    let rx = receiver().await;
    for _ in 0..subscriptions {
        store
            .create_webhook(cigate_store::NewWebhook {
                environment_id: env.id.clone(),
                target_url: rx.url.clone(),
                event_types: vec!["job:*".into()],
                format: cigate_store::WebhookFormat::Cigate,
                tenant_id: None,
                integrated_account_id: None,
                workflow: None,
                is_active: true,
            })
            .await
            .unwrap();
    }
    let expected = events * subscriptions;
    let started = Instant::now();
    for i in 0..events {
        if rate > 0.0 {
            let due = started + Duration::from_secs_f64(i as f64 / rate);
            tokio::time::sleep_until(due.into()).await;
        }
        // Spread over the instances, as requests to several gateways would be.
        let state = &servers[i % servers.len()].state;
        cigate_server::delivery::record(
            state,
            NewEvent {
                environment_id: env.id.clone(),
                event_type: "job:completed".into(),
                integrated_account_id: Some("bench".into()),
                tenant_id: None,
                workflow: None,
                payload: json!({ "id": i.to_string(), "status": "completed", "conclusion": "passed" }),
                only_webhook: None,
                except_webhook: None,
                // A job's three events share a key, as the change detector keys them.
                order_key: Some(format!("job:bench:{}", i / 3)),
            },
        )
        .await
        .unwrap();
    }
    let recorded = started.elapsed();
    let deadline = Instant::now() + Duration::from_secs(600);
    while rx.count.load(Ordering::SeqCst) < expected {
        assert!(Instant::now() < deadline, "deliveries stalled");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let wall = started.elapsed();
    let mut l = rx.latencies_ms.lock().unwrap().clone();
    l.sort_by(|a, b| a.total_cmp(b));
    let backend = if flags.contains_key("postgres") { "postgres" } else { "sqlite" };
    println!(
        "outbox backend={backend} instances={instances} events={events} subscriptions={subscriptions} rate={}",
        if rate > 0.0 { format!("{rate}/s") } else { "max".into() }
    );
    println!(
        "  recorded in {:.2}s ({:.0} events/s); {} deliveries in {:.2}s = {:.0} deliveries/s",
        recorded.as_secs_f64(),
        events as f64 / recorded.as_secs_f64(),
        expected,
        wall.as_secs_f64(),
        expected as f64 / wall.as_secs_f64()
    );
    println!(
        "  commit-to-arrival latency: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        pct(&l, 0.5),
        pct(&l, 0.99),
        l.last().copied().unwrap_or(f64::NAN)
    );
}

/// CPU seconds (user + system) this process has used, and its resident set in MiB.
fn usage() -> (f64, f64) {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    let after_name = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = after_name.split(' ').collect();
    // utime and stime are fields 14 and 15 of the whole line (11 and 12 after the name).
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let rss_kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap();
    (ticks / 100.0, rss_kib / 1024.0)
}

async fn serve_sim() {
    let sim = cigate_buddy_sim::start(SimConfig {
        rate_limit: "1000000000/3600".parse().unwrap(),
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let token = sim.sim().issue_token(TokenSpec::all_scopes());
    println!("{} {token}", sim.base_url());
    // Serves until the parent kills it; counts on request.
    let counts = sim.sim();
    loop {
        let stdin = tokio::task::spawn_blocking(move || {
            let mut l = String::new();
            std::io::stdin().read_line(&mut l).map(|_| l)
        });
        match stdin.await {
            Ok(Ok(read)) if !read.is_empty() => {
                println!("{}", counts.total_requests());
            }
            _ => return,
        }
    }
}

async fn polling(flags: HashMap<String, String>) {
    use std::io::{BufRead, Write};
    let accounts: usize = flag(&flags, "accounts", 1000);
    let seconds: u64 = flag(&flags, "seconds", 90);
    let interval: u64 = flag(&flags, "interval", 30);
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .arg("serve-sim")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut to_sim = child.stdin.take().unwrap();
    let mut from_sim = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    from_sim.read_line(&mut first).unwrap();
    let (sim_url, token) = first.trim().split_once(' ').unwrap();
    let mut sim_requests = move || {
        writeln!(to_sim, "count").unwrap();
        let mut l = String::new();
        from_sim.read_line(&mut l).unwrap();
        l.trim().parse::<u64>().unwrap()
    };

    let dir = tempfile::tempdir().unwrap();
    let mut config = config_for(&flags, dir.path());
    config.event_poll_interval = Duration::from_secs(interval);
    let store = cigate_server::store::open(&config).await.unwrap();
    let env = store.ensure_environment("default").await.unwrap();
    let (_, api_token) = store.create_api_token(&env.id, Some("bench")).await.unwrap();
    let state = cigate_server::build_state(config, store).await.unwrap();
    let server = cigate_server::start(state).await.unwrap();
    let client = reqwest::Client::new();
    let link_started = Instant::now();
    for i in 0..accounts {
        let response = client
            .post(format!("{}/integrated-account", server.base_url()))
            .bearer_auth(api_token.expose())
            .json(&json!({"tenant_id": format!("t{i}"), "integration": "buddy",
                "context": {"api_key": token, "base_url": sim_url}}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201);
    }
    println!(
        "linked {accounts} accounts in {:.1}s",
        link_started.elapsed().as_secs_f64()
    );
    // The first sweep of every account (its baseline) is start-up work: wait it out.
    let metrics = |c: reqwest::Client, url: String| async move {
        c.get(url).send().await.unwrap().text().await.unwrap()
    };
    let polls = |text: &str| -> f64 {
        text.lines()
            .filter(|l| l.starts_with("cigate_event_polls_total"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    let url = format!("{}/metrics", server.base_url());
    while polls(&metrics(client.clone(), url.clone()).await) < accounts as f64 {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!("baseline sweeps done after {:.1}s", link_started.elapsed().as_secs_f64());
    let (cpu0, _) = usage();
    let calls0 = sim_requests();
    let polls0 = polls(&metrics(client.clone(), url.clone()).await);
    let t0 = Instant::now();
    let mut peak_rss: f64 = 0.0;
    while t0.elapsed() < Duration::from_secs(seconds) {
        tokio::time::sleep(Duration::from_secs(1)).await;
        peak_rss = peak_rss.max(usage().1);
    }
    let wall = t0.elapsed().as_secs_f64();
    let (cpu1, rss) = usage();
    let calls = sim_requests() - calls0;
    let swept = polls(&metrics(client.clone(), url.clone()).await) - polls0;
    println!(
        "polling accounts={accounts} interval={interval}s window={wall:.0}s (gateway process only)"
    );
    println!(
        "  CPU {:.1}% of one core; RSS {rss:.0} MiB (peak {peak_rss:.0} MiB)",
        100.0 * (cpu1 - cpu0) / wall
    );
    println!(
        "  {swept:.0} sweeps, {calls} simulator calls: {:.2} calls per account per cycle",
        calls as f64 / swept.max(1.0)
    );
    let _ = child.kill();
}

/// The webhook path end to end: the simulator posts its execution webhooks to the
/// gateway (registered by the gateway itself), which reads each job again and records
/// its events; `--jobs-per-second J` jobs are started for `--seconds T`.
async fn hooks(flags: HashMap<String, String>) {
    let jobs_per_second: f64 = flag(&flags, "jobs-per-second", 12.0);
    let seconds: f64 = flag(&flags, "seconds", 20.0);
    let sim = cigate_buddy_sim::start(SimConfig {
        seed: "workspaces=1,projects=10,pipelines=10,executions=2,seed=3"
            .parse()
            .unwrap(),
        rate_limit: "1000000000/3600".parse().unwrap(),
        queue_seconds: 0,
        action_seconds: 1,
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let s = sim.sim();
    let token = s.issue_token(TokenSpec::all_scopes());
    // The public URL must be known before the gateway binds: take a free port first.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = tempfile::tempdir().unwrap();
    let mut config = config_for(&flags, dir.path());
    config.listen = ([127, 0, 0, 1], port).into();
    config.public_url = Some(format!("http://127.0.0.1:{port}"));
    config.event_poll_interval = Duration::from_secs(3600);
    let store = cigate_server::store::open(&config).await.unwrap();
    let env = store.ensure_environment("default").await.unwrap();
    let (_, api_token) = store.create_api_token(&env.id, Some("bench")).await.unwrap();
    let state = cigate_server::build_state(config, store).await.unwrap();
    let server = cigate_server::start(state).await.unwrap();
    let rx = receiver().await;
    let client = reqwest::Client::new();
    let created = client
        .post(format!("{}/webhook", server.base_url()))
        .bearer_auth(api_token.expose())
        .json(&json!({ "target_url": rx.url, "event_types": ["job:*", "record:*"] }))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let linked = client
        .post(format!("{}/integrated-account", server.base_url()))
        .bearer_auth(api_token.expose())
        .json(&json!({"tenant_id": "bench", "integration": "buddy",
            "context": {"api_key": token, "base_url": sim.base_url()}}))
        .send()
        .await
        .unwrap();
    assert_eq!(linked.status(), 201);
    let ws = s.workspace_domains()[0].clone();
    let metrics_url = format!("{}/metrics", server.base_url());
    loop {
        let hooks: Value = client
            .get(format!("{}/workspaces/{ws}/webhooks", sim.base_url()))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let text = client.get(&metrics_url).send().await.unwrap().text().await.unwrap();
        let baseline_done = text.lines().any(|l| l.starts_with("cigate_event_polls_total"));
        if hooks["webhooks"].as_array().is_some_and(|h| !h.is_empty()) && baseline_done {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let pipelines: Vec<(String, u64)> = s
        .project_names(&ws)
        .into_iter()
        .flat_map(|p| {
            s.pipeline_ids(&ws, &p)
                .into_iter()
                .map(move |id| (p.clone(), id))
        })
        .collect();
    let started = Instant::now();
    let total = (jobs_per_second * seconds) as usize;
    for i in 0..total {
        tokio::time::sleep_until((started + Duration::from_secs_f64(i as f64 / jobs_per_second)).into())
            .await;
        let (project, pipeline) = &pipelines[i % pipelines.len()];
        s.run(&ws, project, *pipeline, cigate_buddy_sim::RunRequest::default())
            .unwrap();
    }
    // Let the last jobs finish and their events arrive.
    let mut last = rx.count.load(Ordering::SeqCst);
    loop {
        tokio::time::sleep(Duration::from_secs(5)).await;
        let now = rx.count.load(Ordering::SeqCst);
        if now == last {
            break;
        }
        last = now;
    }
    let mut l = rx.latencies_ms.lock().unwrap().clone();
    l.sort_by(|a, b| a.total_cmp(b));
    println!("hooks jobs={total} over {seconds}s ({jobs_per_second}/s)");
    println!(
        "  {} events delivered, {:.0} events/s while jobs ran",
        l.len(),
        l.len() as f64 / seconds
    );
    println!(
        "  detection-to-delivery latency: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        pct(&l, 0.5),
        pct(&l, 0.99),
        l.last().copied().unwrap_or(f64::NAN)
    );
}

#[tokio::main]
async fn main() {
    let (mode, flags) = flags();
    match mode.as_str() {
        "outbox" => outbox(flags).await,
        "polling" => polling(flags).await,
        "hooks" => hooks(flags).await,
        "serve-sim" => serve_sim().await,
        other => panic!("unknown mode {other}: outbox or polling"),
    }
}
