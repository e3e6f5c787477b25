//! Unified list vs. the one Buddy call it makes, side by side in one run.
//!
//! Starts the Buddy simulator and the gateway in this process (one tokio runtime, loopback,
//! SQLite in a temp dir), links an account, then sends, after a warm-up, N requests at
//! concurrency C of (a) `GET …/pipelines/:id/executions?page=1&per_page=50` straight to the
//! simulator and (b) `GET /unified/ci-cd/jobs?…&limit=50` to the gateway, which makes
//! exactly that one upstream call (checked from the simulator's counters).
//!
//! `cargo run --profile dist --manifest-path bench/unified-load/Cargo.toml -- [--requests N]
//! [--concurrency C] [--warmup W]`

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cigate_buddy_sim::{SimConfig, TimeMode, TokenSpec};
use cigate_server::ServerConfig;
use serde_json::{json, Value};

struct Args {
    requests: usize,
    concurrency: usize,
    warmup: usize,
}

fn args() -> Args {
    let mut out = Args {
        requests: 2000,
        concurrency: 16,
        warmup: 200,
    };
    let argv: Vec<String> = std::env::args().skip(1).collect();
    for pair in argv.chunks(2) {
        let value = pair
            .get(1)
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("usage: --requests N --concurrency C --warmup W"));
        match pair[0].as_str() {
            "--requests" => out.requests = value,
            "--concurrency" => out.concurrency = value,
            "--warmup" => out.warmup = value,
            other => panic!("unknown argument {other}"),
        }
    }
    out
}

struct Run {
    wall: Duration,
    latencies: Vec<Duration>,
    items: usize,
}

impl Run {
    fn rps(&self) -> f64 {
        self.latencies.len() as f64 / self.wall.as_secs_f64()
    }
    fn pct(&self, p: f64) -> Duration {
        let mut l = self.latencies.clone();
        l.sort();
        l[((l.len() as f64 * p).ceil() as usize).clamp(1, l.len()) - 1]
    }
}

/// `n` GETs of `url` from `c` workers sharing one client; every answer must be 200 with
/// `items_key` holding 50 items.
async fn load(
    client: &reqwest::Client,
    url: &str,
    bearer: &str,
    items_key: &str,
    n: usize,
    c: usize,
) -> Run {
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let workers: Vec<_> = (0..c)
        .map(|_| {
            let (client, url, bearer, key, next) = (
                client.clone(),
                url.to_owned(),
                bearer.to_owned(),
                items_key.to_owned(),
                next.clone(),
            );
            tokio::spawn(async move {
                let mut lat = Vec::new();
                let mut items = 0;
                while next.fetch_add(1, Ordering::Relaxed) < n {
                    let t = Instant::now();
                    let response = client.get(&url).bearer_auth(&bearer).send().await.unwrap();
                    let status = response.status();
                    let body: Value = response.json().await.unwrap();
                    lat.push(t.elapsed());
                    assert_eq!(status, 200, "{body}");
                    let count = body[&key].as_array().map_or(0, Vec::len);
                    assert_eq!(count, 50, "a full page");
                    items += count;
                }
                (lat, items)
            })
        })
        .collect();
    let mut latencies = Vec::with_capacity(n);
    let mut items = 0;
    for w in workers {
        let (l, i) = w.await.unwrap();
        latencies.extend(l);
        items += i;
    }
    Run {
        wall: start.elapsed(),
        latencies,
        items,
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[tokio::main]
async fn main() {
    let a = args();
    let dir = tempfile::tempdir().unwrap();
    let sim = cigate_buddy_sim::start(SimConfig {
        seed: "workspaces=1,projects=1,pipelines=1,executions=200"
            .parse()
            .unwrap(),
        rate_limit: "1000000000/3600".parse().unwrap(),
        time: TimeMode::Manual,
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let s = sim.sim();
    let buddy_token = s.issue_token(TokenSpec::all_scopes());
    let mut config = ServerConfig::for_database(format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("cigate.db").display()
    ));
    config.allow_private_upstreams = true;
    let store = cigate_server::store::open(&config).await.unwrap();
    let env = store.ensure_environment("default").await.unwrap();
    let (_, api_token) = store
        .create_api_token(&env.id, Some("bench"))
        .await
        .unwrap();
    let api_token = api_token.expose().to_owned();
    let state = cigate_server::build_state(config, store).await.unwrap();
    let server = cigate_server::start(state).await.unwrap();

    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(a.concurrency * 2)
        .build()
        .unwrap();
    let linked: Value = client
        .post(format!("{}/integrated-account", server.base_url()))
        .bearer_auth(&api_token)
        .json(&json!({"tenant_id": "bench", "integration": "buddy",
            "context": {"api_key": buddy_token, "base_url": sim.base_url()}}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let account = linked["id"].as_str().expect("account linked").to_owned();

    let ws = s.workspace_domains()[0].clone();
    let project = s.project_names(&ws)[0].clone();
    let pipeline = s.pipeline_ids(&ws, &project)[0];
    let upstream_path =
        format!("/workspaces/{ws}/projects/{project}/pipelines/{pipeline}/executions");
    let raw_url = format!("{}{upstream_path}?page=1&per_page=50", sim.base_url());
    let unified_url = format!(
        "{}/unified/ci-cd/jobs?integrated_account_id={account}&workspace={ws}&repo={project}&workflow={pipeline}&limit=50",
        server.base_url()
    );

    // Warm-up (connections, caches), then the check that one unified page = one call.
    load(
        &client,
        &raw_url,
        &buddy_token,
        "executions",
        a.warmup,
        a.concurrency,
    )
    .await;
    load(
        &client,
        &unified_url,
        &api_token,
        "result",
        a.warmup,
        a.concurrency,
    )
    .await;
    s.reset_request_counts();
    let raw = load(
        &client,
        &raw_url,
        &buddy_token,
        "executions",
        a.requests,
        a.concurrency,
    )
    .await;
    let raw_calls = s.request_count(Some("GET"), &upstream_path);
    s.reset_request_counts();
    let unified = load(
        &client,
        &unified_url,
        &api_token,
        "result",
        a.requests,
        a.concurrency,
    )
    .await;
    let unified_calls = s.request_count(Some("GET"), &upstream_path);
    let other_calls = s.total_requests() - unified_calls;

    println!(
        "requests={} concurrency={} warmup={} page=50 jobs",
        a.requests, a.concurrency, a.warmup
    );
    println!(
        "{:<10} {:>10} {:>10} {:>10} {:>12} {:>14}",
        "", "req/s", "p50 ms", "p99 ms", "items/s", "upstream calls"
    );
    for (name, run, calls) in [
        ("raw", &raw, raw_calls),
        ("unified", &unified, unified_calls),
    ] {
        println!(
            "{:<10} {:>10.0} {:>10.2} {:>10.2} {:>12.0} {:>14}",
            name,
            run.rps(),
            ms(run.pct(0.50)),
            ms(run.pct(0.99)),
            run.items as f64 / run.wall.as_secs_f64(),
            calls
        );
    }
    println!(
        "ratio unified/raw: p50 {:.2}x, p99 {:.2}x, throughput {:.2}x; other upstream calls during unified run: {other_calls}",
        ms(unified.pct(0.50)) / ms(raw.pct(0.50)),
        ms(unified.pct(0.99)) / ms(raw.pct(0.99)),
        unified.rps() / raw.rps()
    );
    assert_eq!(
        unified_calls as usize, a.requests,
        "one upstream call per unified page"
    );
}
