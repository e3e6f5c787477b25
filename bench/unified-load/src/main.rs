//! Unified list vs. the one Buddy call it makes, side by side in one run.
//!
//! Three processes, as the proxy bench runs them: the Buddy simulator (`cigate sim`) and
//! this load generator share `--load-core`; the gateway (`cigate serve` with its
//! defaults, SQLite in a temp dir) runs alone on `--gateway-core`. After a warm-up, the
//! run alternates rounds of N requests at concurrency C of (a) `GET
//! …/pipelines/:id/executions?page=1&per_page=50` straight to the simulator and (b) `GET
//! /unified/ci-cd/jobs?…&limit=50` to the gateway, which makes exactly that one upstream
//! call (checked with the simulator's request counters). Latencies are pooled per path
//! over the rounds; the gateway's CPU (utime + stime) per page is read from /proc.
//!
//! ```text
//! cargo build --profile dist -p cigate
//! CARGO_TARGET_DIR=target cargo run --profile dist --manifest-path bench/unified-load/Cargo.toml -- \
//!   [--requests N] [--concurrency C] [--warmup W] [--rounds R] [--bin target/dist/cigate] \
//!   [--load-core 0] [--gateway-core 1] [--page 50]
//! ```

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

struct Args {
    requests: usize,
    concurrency: usize,
    warmup: usize,
    rounds: usize,
    page: usize,
    bin: String,
    load_core: String,
    gateway_core: String,
}

fn args() -> Args {
    let mut out = Args {
        requests: 2000,
        concurrency: 16,
        warmup: 200,
        rounds: 3,
        page: 50,
        bin: "target/dist/cigate".into(),
        load_core: "0".into(),
        gateway_core: "1".into(),
    };
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: --requests N --concurrency C --warmup W --rounds R --page P --bin PATH --load-core K --gateway-core K";
    for pair in argv.chunks(2) {
        let value = pair.get(1).cloned().unwrap_or_else(|| panic!("{usage}"));
        let number = || value.parse::<usize>().unwrap_or_else(|_| panic!("{usage}"));
        match pair[0].as_str() {
            "--requests" => out.requests = number(),
            "--concurrency" => out.concurrency = number(),
            "--warmup" => out.warmup = number(),
            "--rounds" => out.rounds = number(),
            "--page" => out.page = number(),
            "--bin" => out.bin = value,
            "--load-core" => out.load_core = value,
            "--gateway-core" => out.gateway_core = value,
            other => panic!("unknown argument {other}; {usage}"),
        }
    }
    out
}

#[derive(Default)]
struct Run {
    wall: Duration,
    latencies: Vec<Duration>,
    items: usize,
    gateway_cpu: Duration,
    sim_cpu: Duration,
}

impl Run {
    fn add(&mut self, other: Run) {
        self.wall += other.wall;
        self.latencies.extend(other.latencies);
        self.items += other.items;
        self.gateway_cpu += other.gateway_cpu;
        self.sim_cpu += other.sim_cpu;
    }
    fn rps(&self) -> f64 {
        self.latencies.len() as f64 / self.wall.as_secs_f64()
    }
    fn pct(&self, p: f64) -> Duration {
        let mut l = self.latencies.clone();
        l.sort();
        l[((l.len() as f64 * p).ceil() as usize).clamp(1, l.len()) - 1]
    }
    fn per_page(&self, cpu: Duration) -> f64 {
        ms(cpu) / self.latencies.len() as f64
    }
}

/// utime + stime of a process (all its threads).
fn cpu_of(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("a live process");
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = &stat[stat.rfind(')').expect("stat format") + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    Duration::from_secs_f64(ticks as f64 / clock_ticks() as f64)
}

/// Clock ticks per second of /proc's CPU times (`getconf CLK_TCK`).
fn clock_ticks() -> u64 {
    static TICKS: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        let out = Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .expect("getconf");
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .expect("CLK_TCK")
    })
}

/// `n` GETs of `url` from `c` workers sharing one client; every answer must be 200 with
/// `items_key` holding a full page.
#[allow(clippy::too_many_arguments)]
async fn load(
    client: &reqwest::Client,
    url: &str,
    bearer: &str,
    items_key: &str,
    page: usize,
    n: usize,
    c: usize,
    pids: (u32, u32),
) -> Run {
    let next = Arc::new(AtomicUsize::new(0));
    let (gateway_before, sim_before) = (cpu_of(pids.0), cpu_of(pids.1));
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
                    assert_eq!(count, page, "a full page");
                    items += count;
                }
                (lat, items)
            })
        })
        .collect();
    let mut run = Run::default();
    for w in workers {
        let (l, i) = w.await.unwrap();
        run.latencies.extend(l);
        run.items += i;
    }
    run.wall = start.elapsed();
    run.gateway_cpu = cpu_of(pids.0) - gateway_before;
    run.sim_cpu = cpu_of(pids.1) - sim_before;
    run
}

/// Sends `request` and reads its answer as JSON (a set-up call: any failure ends the run).
async fn json_of(request: reqwest::RequestBuilder) -> Value {
    request.send().await.unwrap().json().await.unwrap()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Kills the child processes when the run ends, however it ends.
struct Children(Vec<Child>);

impl Drop for Children {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Starts `program` pinned to `core` and waits for the line of its output (stdout or
/// stderr) that says where it listens; returns the child and that URL.
fn spawn_pinned(
    core: &str,
    program: &str,
    args: &[&str],
    envs: &[(&str, String)],
) -> (Child, String) {
    let mut command = Command::new("taskset");
    command
        .arg("-c")
        .arg(core)
        .arg(program)
        .args(args)
        .envs(envs.iter().map(|(k, v)| (*k, v.as_str())))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {program}: {e}"));
    let (tx, rx) = std::sync::mpsc::channel();
    for stream in [
        Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
        Box::new(child.stderr.take().unwrap()),
    ] {
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines().map_while(Result::ok) {
                if let Some(at) = line.find("http://").filter(|_| line.contains("listening")) {
                    let url: String = line[at..]
                        .chars()
                        .take_while(|c| !c.is_whitespace() && *c != '"')
                        .collect();
                    let _ = tx.send(url);
                }
            }
        });
    }
    let url = rx
        .recv_timeout(Duration::from_secs(30))
        .unwrap_or_else(|_| panic!("{program} printed no URL"));
    (child, url)
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let a = args();
    // This process (the load) shares its core with the simulator.
    let pinned = Command::new("taskset")
        .args([
            "-a",
            "-p",
            "-c",
            &a.load_core,
            &std::process::id().to_string(),
        ])
        .stdout(Stdio::null())
        .status()
        .expect("taskset");
    assert!(pinned.success(), "cannot pin the load generator");
    let dir = tempfile::tempdir().unwrap();
    let buddy_token = format!("bench-{}", std::process::id());
    let executions = (a.page * 4).to_string();
    let (sim, sim_url) = spawn_pinned(
        &a.load_core,
        &a.bin,
        &[
            "sim",
            "--listen",
            "127.0.0.1:0",
            "--seed",
            &format!("workspaces=1,projects=1,pipelines=1,executions={executions}"),
            "--rate-limit",
            "1000000000/3600",
            "--time",
            "manual",
            "--token",
            &buddy_token,
        ],
        &[],
    );
    let mut children = Children(vec![sim]);
    let envs = [
        (
            "CIGATE_DATABASE_URL",
            format!(
                "sqlite://{}?mode=rwc",
                dir.path().join("cigate.db").display()
            ),
        ),
        (
            "CIGATE_KEY_FILE",
            dir.path().join("cigate.key").display().to_string(),
        ),
    ];
    let token = Command::new(&a.bin)
        .args(["api-token", "create"])
        .envs(envs.iter().map(|(k, v)| (*k, v.as_str())))
        .stderr(Stdio::null())
        .output()
        .expect("api-token create");
    let api_token = String::from_utf8(token.stdout).unwrap().trim().to_owned();
    assert!(!api_token.is_empty(), "no API token");
    let (gateway, gateway_url) = spawn_pinned(
        &a.gateway_core,
        &a.bin,
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--allow-private-upstreams",
        ],
        &envs,
    );
    let pids = (gateway.id(), children.0[0].id());
    children.0.push(gateway);

    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(a.concurrency * 2)
        .build()
        .unwrap();
    let linked = json_of(
        client
            .post(format!("{gateway_url}/integrated-account"))
            .bearer_auth(&api_token)
            .json(&json!({"tenant_id": "bench", "integration": "buddy",
                "context": {"api_key": buddy_token, "base_url": sim_url}})),
    )
    .await;
    let account = linked["id"].as_str().expect("account linked").to_owned();

    let buddy = |path: &str| {
        json_of(
            client
                .get(format!("{sim_url}{path}"))
                .bearer_auth(&buddy_token),
        )
    };
    let ws = buddy("/workspaces").await["workspaces"][0]["domain"]
        .as_str()
        .unwrap()
        .to_owned();
    let project = buddy(&format!("/workspaces/{ws}/projects")).await["projects"][0]["name"]
        .as_str()
        .unwrap()
        .to_owned();
    let pipeline = buddy(&format!("/workspaces/{ws}/projects/{project}/pipelines")).await
        ["pipelines"][0]["id"]
        .as_u64()
        .unwrap();
    let upstream_path =
        format!("/workspaces/{ws}/projects/{project}/pipelines/{pipeline}/executions");
    let raw_url = format!("{sim_url}{upstream_path}?page=1&per_page={}", a.page);
    let unified_url = format!(
        "{gateway_url}/unified/ci-cd/jobs?integrated_account_id={account}&workspace={ws}&repo={project}&workflow={pipeline}&limit={}",
        a.page
    );
    let counts = |reset: bool| {
        let (client, url) = (
            client.clone(),
            format!("{sim_url}/__sim/requests?method=GET&path={upstream_path}"),
        );
        async move {
            let body = json_of(client.get(&url)).await;
            if reset {
                client.delete(&url).send().await.unwrap();
            }
            (
                body["count"].as_u64().unwrap(),
                body["total"].as_u64().unwrap(),
            )
        }
    };

    let raw_load = |n| {
        load(
            &client,
            &raw_url,
            &buddy_token,
            "executions",
            a.page,
            n,
            a.concurrency,
            pids,
        )
    };
    let unified_load = |n| {
        load(
            &client,
            &unified_url,
            &api_token,
            "result",
            a.page,
            n,
            a.concurrency,
            pids,
        )
    };
    // Warm-up (connections, caches).
    raw_load(a.warmup).await;
    unified_load(a.warmup).await;
    let (mut raw, mut unified) = (Run::default(), Run::default());
    let (mut raw_calls, mut unified_calls, mut other_calls) = (0, 0, 0);
    for _ in 0..a.rounds {
        counts(true).await;
        raw.add(raw_load(a.requests).await);
        raw_calls += counts(true).await.0;
        unified.add(unified_load(a.requests).await);
        let (count, total) = counts(true).await;
        unified_calls += count;
        other_calls += total - count;
    }

    println!(
        "requests={} × {} rounds, concurrency={} warmup={} page={} jobs; simulator and load on core {}, gateway on core {}",
        a.requests, a.rounds, a.concurrency, a.warmup, a.page, a.load_core, a.gateway_core
    );
    println!(
        "{:<10} {:>8} {:>8} {:>8} {:>10} {:>15} {:>17} {:>16}",
        "",
        "req/s",
        "p50 ms",
        "p99 ms",
        "items/s",
        "upstream calls",
        "gateway CPU ms/page",
        "sim CPU ms/page"
    );
    for (name, run, calls) in [
        ("raw", &raw, raw_calls),
        ("unified", &unified, unified_calls),
    ] {
        println!(
            "{:<10} {:>8.0} {:>8.2} {:>8.2} {:>10.0} {:>15} {:>17.3} {:>16.3}",
            name,
            run.rps(),
            ms(run.pct(0.50)),
            ms(run.pct(0.99)),
            run.items as f64 / run.wall.as_secs_f64(),
            calls,
            run.per_page(run.gateway_cpu),
            run.per_page(run.sim_cpu),
        );
    }
    println!(
        "unified / raw: p50 {:.2}×, p99 {:.2}×, throughput {:.2}× (target: p50 and p99 ≤ 1.2×)",
        ms(unified.pct(0.50)) / ms(raw.pct(0.50)),
        ms(unified.pct(0.99)) / ms(raw.pct(0.99)),
        unified.rps() / raw.rps()
    );
    println!(
        "upstream calls per unified page: {:.3} ({unified_calls} for {} pages; {other_calls} other calls)",
        unified_calls as f64 / unified.latencies.len() as f64,
        unified.latencies.len()
    );
    assert_eq!(
        unified_calls as usize,
        unified.latencies.len(),
        "one upstream call per page"
    );
    drop(children);
}
