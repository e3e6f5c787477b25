//! The upstream pipeline (rate governor + retries) against the Buddy simulator over real
//! HTTP: budgets kept without 429s, faults absorbed for GETs, POSTs never replayed,
//! deadlines answered with `RateLimited` instead of hanging.

use std::sync::Arc;
use std::time::{Duration, Instant};

use cigate_buddy::base_url::UpstreamPolicy;
use cigate_buddy::client::{stream_body, BuddyClient, HttpPool, RawBody, RawRequest};
use cigate_buddy::error::BuddyError;
use cigate_buddy::governor::SharedBudget;
use cigate_buddy_sim::{
    FaultKind, FaultSpec, RateLimitPolicy, RateLimitStatus, ResetFormat, SimConfig, SimHandle,
    TimeMode, TokenSpec, WindowStart,
};
use cigate_core::Secret;
use http::Method;
use url::Url;

/// GETs in the fault test (the issue's acceptance run uses 1,000).
const FAULTY_GETS: usize = 200;

async fn sim(rate_limit: &str) -> (SimHandle, String) {
    sim_with(RateLimitPolicy {
        spec: rate_limit.parse().unwrap(),
        ..RateLimitPolicy::default()
    })
    .await
}

async fn sim_with(policy: RateLimitPolicy) -> (SimHandle, String) {
    let handle = cigate_buddy_sim::start(SimConfig {
        time: TimeMode::Real,
        ..Default::default()
    })
    .await
    .unwrap();
    handle.sim().set_rate_limit_policy(policy);
    let token = handle.sim().issue_token(TokenSpec::all_scopes());
    (handle, token)
}

fn pool() -> HttpPool {
    HttpPool::new(UpstreamPolicy::ALLOW_PRIVATE).unwrap()
}

fn client(pool: &HttpPool, handle: &SimHandle, token: &str) -> BuddyClient {
    BuddyClient::new(
        pool,
        Url::parse(&handle.base_url()).unwrap(),
        Secret::new(token),
    )
}

/// `calls` GETs from `clients` concurrent tasks, each with its own `BuddyClient` of the
/// same account. Returns the elapsed time, the slowest call and the failures.
async fn load(
    handle: &SimHandle,
    token: &str,
    pool: &HttpPool,
    calls: usize,
    clients: usize,
) -> (Duration, Duration, Vec<String>) {
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let c = client(pool, handle, token);
        let next = Arc::clone(&next);
        tasks.push(tokio::spawn(async move {
            let (mut slowest, mut failures) = (Duration::ZERO, Vec::new());
            while next.fetch_add(1, std::sync::atomic::Ordering::SeqCst) < calls {
                let t = Instant::now();
                if let Err(e) = c.get_json("/workspaces", &[]).await {
                    failures.push(format!("at {:?}: {e:?}", started.elapsed()));
                }
                slowest = slowest.max(t.elapsed());
            }
            (slowest, failures)
        }));
    }
    let (mut slowest, mut failures) = (Duration::ZERO, Vec::new());
    for t in tasks {
        let (s, f) = t.await.unwrap();
        slowest = slowest.max(s);
        failures.extend(f);
    }
    (started.elapsed(), slowest, failures)
}

/// Checks a load run against a budget of `budget` calls per `window` seconds.
async fn assert_budget_kept(rate_limit: &str, calls: usize, clients: usize, tolerance: f64) {
    let (handle, token) = sim(rate_limit).await;
    let spec: cigate_buddy_sim::RateLimitSpec = rate_limit.parse().unwrap();
    let pool = pool();
    let (elapsed, slowest, failures) = load(&handle, &token, &pool, calls, clients).await;
    let stats = pool.stats();
    let budget_rate = spec.budget as f64 / spec.window_seconds as f64;
    let achieved = calls as f64 / elapsed.as_secs_f64();
    eprintln!(
        "{rate_limit}: {calls} calls from {clients} clients in {elapsed:?} (slowest \
         {slowest:?}): {achieved:.3}/s vs budget {budget_rate:.3}/s ({:.1} %); {stats:?}",
        100.0 * achieved / budget_rate
    );
    assert!(
        failures.is_empty(),
        "{} failed: {failures:#?}",
        failures.len()
    );
    assert_eq!(
        stats.rate_limited_received, 0,
        "Buddy answered 429: {stats:?}"
    );
    assert_eq!(stats.calls_2xx, calls as u64, "{stats:?}");
    assert_eq!(handle.sim().total_requests(), calls as u64);
    assert!(
        (achieved / budget_rate - 1.0).abs() <= tolerance,
        "achieved {achieved:.3}/s vs budget {budget_rate:.3}/s"
    );
    handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keeps_a_small_budget_without_429s() {
    // 20 per 4 s window: three windows' worth from 10 concurrent clients.
    assert_budget_kept("20/4", 60, 10, 0.10).await;
}

/// The issue's acceptance run: 60 per minute, 300 calls from 20 clients, within 5 %.
/// About five minutes: `cargo test -p cigate-buddy --test governor -- --ignored`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "takes about five minutes"]
async fn acceptance_60_per_minute_300_calls_20_clients() {
    assert_budget_kept("60/60", 300, 20, 0.05).await;
}

/// One run of the variant matrix: what Buddy saw and what the callers got.
struct VariantRun {
    name: String,
    throttled: u64,
    failures: Vec<String>,
    elapsed: Duration,
    /// Achieved calls per second over the budget's rate.
    utilisation: f64,
}

/// 60 GETs from 20 clients on 20 per 10 s against one reading of Buddy's rate limit,
/// with Buddy's clock `skew` seconds off ours.
async fn variant_run(policy: RateLimitPolicy, skew: i64) -> VariantRun {
    const CALLS: usize = 60;
    let name = format!(
        "{:?}/{:?}/{}/{}{}",
        policy.window,
        policy.reset,
        if policy.count_throttled {
            "counted"
        } else {
            "not counted"
        },
        policy.status.code(),
        if skew == 0 {
            String::new()
        } else {
            format!(" clock {skew:+} s")
        }
    );
    let (handle, token) = sim_with(policy).await;
    handle.sim().advance(chrono::Duration::seconds(skew));
    let pool = pool();
    let (elapsed, _, failures) = load(&handle, &token, &pool, CALLS, 20).await;
    let rate = policy.spec.budget as f64 / policy.spec.window_seconds as f64;
    let run = VariantRun {
        name,
        throttled: handle.sim().throttled_count(),
        failures,
        elapsed,
        utilisation: CALLS as f64 / elapsed.as_secs_f64() / rate,
    };
    handle.shutdown().await;
    run
}

/// Every reading of Buddy's docs the simulator offers, run at once (about 35 s): at most
/// 2 calls throttled by Buddy per run, at least 90 % of the budget used, every call
/// answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn holds_against_every_reading_of_buddys_rate_limit() {
    let mut variants = Vec::new();
    for window in [WindowStart::FirstRequest, WindowStart::Clock] {
        for reset in [
            ResetFormat::Floor,
            ResetFormat::Round,
            ResetFormat::Ceil,
            ResetFormat::Exact,
        ] {
            for count_throttled in [false, true] {
                for status in [RateLimitStatus::TooManyRequests, RateLimitStatus::Forbidden] {
                    variants.push(RateLimitPolicy {
                        spec: "20/10".parse().unwrap(),
                        window,
                        reset,
                        count_throttled,
                        status,
                    });
                }
            }
        }
    }
    let mut runs: Vec<_> = variants.iter().map(|p| variant_run(*p, 0)).collect();
    // Buddy's clock off ours (its `Date` tells by how much).
    for skew in [-30, 30] {
        for window in [WindowStart::FirstRequest, WindowStart::Clock] {
            runs.push(variant_run(
                RateLimitPolicy {
                    spec: "20/10".parse().unwrap(),
                    window,
                    ..RateLimitPolicy::default()
                },
                skew,
            ));
        }
    }
    let runs = futures::future::join_all(runs).await;
    let mut bad = Vec::new();
    for run in &runs {
        eprintln!(
            "{:<52} throttled {:>2}  failed {:>2}  {:>5.1} s  {:>5.1} % of the budget",
            run.name,
            run.throttled,
            run.failures.len(),
            run.elapsed.as_secs_f64(),
            100.0 * run.utilisation
        );
        // A reset rounded up (no reading of Buddy's docs, checked for safety) puts the
        // margin's renewal up to 2 s after the window's end: 88-92 % here.
        let floor = if run.name.contains("Ceil") { 0.85 } else { 0.9 };
        if run.throttled > 2 || !run.failures.is_empty() || run.utilisation < floor {
            bad.push(&run.name);
        }
    }
    assert!(bad.is_empty(), "outside the targets: {bad:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gets_survive_503s_and_connection_resets() {
    let (handle, token) = sim("1000000/3600").await;
    let s = handle.sim();
    let pool = pool();
    let c = client(&pool, &handle, &token);
    // Rounds of 10 concurrent GETs; in each, the first two to arrive get a 503 and a
    // reset: 20 % of first attempts fail.
    for _ in 0..FAULTY_GETS / 10 {
        s.inject(FaultSpec::new(FaultKind::Status { status: 503 }, 1));
        s.inject(FaultSpec::new(FaultKind::Reset, 1));
        let calls = (0..10).map(|_| {
            let c = c.clone();
            tokio::spawn(async move { c.get_json("/workspaces", &[]).await })
        });
        for call in futures::future::join_all(calls).await {
            call.unwrap().unwrap();
        }
    }
    let faults = (FAULTY_GETS / 5) as u64;
    let stats = pool.stats();
    assert_eq!(stats.retries, faults, "{stats:?}");
    assert_eq!(stats.calls_2xx, FAULTY_GETS as u64, "{stats:?}");
    assert_eq!(stats.calls_5xx, faults / 2, "{stats:?}");
    assert_eq!(stats.transport_errors, faults / 2, "{stats:?}");
    assert_eq!(s.total_requests(), FAULTY_GETS as u64 + faults);
    handle.shutdown().await;
}

/// A GET is retried on a 500 (a transient fault); a write is not (Buddy may have acted).
#[tokio::test]
async fn a_get_is_retried_on_a_500_and_a_write_is_not() {
    let (handle, token) = sim("1000/3600").await;
    let s = handle.sim();
    let pool = pool();
    let c = client(&pool, &handle, &token);
    s.inject(FaultSpec::new(FaultKind::Status { status: 500 }, 1));
    c.get_json("/workspaces", &[]).await.unwrap();
    assert_eq!(s.request_count(Some("GET"), "/workspaces"), 2);
    assert_eq!(pool.stats().retries, 1);
    let path = run_path(&handle);
    for method in [Method::POST, Method::DELETE] {
        s.inject(FaultSpec::new(FaultKind::Status { status: 500 }, 1));
        s.reset_request_counts();
        let e = c
            .send_json(method.clone(), &path, &[], Some(&serde_json::json!({})))
            .await
            .unwrap_err();
        assert_eq!(e.status(), Some(500), "{method}: {e:?}");
        assert_eq!(s.request_count(Some(method.as_str()), &path), 1, "{method}");
    }
    assert_eq!(pool.stats().retries, 1);
    handle.shutdown().await;
}

fn run_path(handle: &SimHandle) -> String {
    let s = handle.sim();
    let ws = s.workspace_domains()[0].clone();
    let project = s.project_names(&ws)[0].clone();
    let pipeline = s.pipeline_ids(&ws, &project)[0];
    format!("/workspaces/{ws}/projects/{project}/pipelines/{pipeline}/executions")
}

#[tokio::test]
async fn a_post_is_not_retried_after_a_503() {
    let (handle, token) = sim("1000/3600").await;
    let s = handle.sim();
    let path = run_path(&handle);
    let pool = pool();
    let c = client(&pool, &handle, &token);
    s.inject(FaultSpec::new(FaultKind::Status { status: 503 }, 1).on_path(&path));
    s.reset_request_counts();
    let e = c
        .send_json(Method::POST, &path, &[], Some(&serde_json::json!({})))
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(503), "{e:?}");
    assert_eq!(s.request_count(Some("POST"), &path), 1);
    assert_eq!(pool.stats().retries, 0);
    // A streamed body cannot be replayed, even for an idempotent method.
    s.inject(FaultSpec::new(FaultKind::Status { status: 503 }, 1));
    let mut raw = RawRequest::new(Method::PUT, "/workspaces");
    let chunks: Vec<Result<bytes::Bytes, std::io::Error>> = vec![Ok("{}".into())];
    raw.body = Some(RawBody::Streamed(stream_body(futures::stream::iter(
        chunks,
    ))));
    let resp = c.send_raw(raw).await.unwrap();
    assert_eq!(resp.status(), 503);
    assert_eq!(s.request_count(Some("PUT"), "/workspaces"), 1);
    handle.shutdown().await;
}

#[tokio::test]
async fn a_rate_limited_post_is_retried_after_the_reset_and_runs_once() {
    // Buddy refuses a rate-limited call before acting on it, so a POST may be resent.
    let (handle, token) = sim("1000/2").await;
    let s = handle.sim();
    let path = run_path(&handle);
    let (ws, project) = {
        let ws = s.workspace_domains()[0].clone();
        let project = s.project_names(&ws)[0].clone();
        (ws, project)
    };
    let pipeline = s.pipeline_ids(&ws, &project)[0];
    let before = s.execution_count(&ws, &project, pipeline);
    let pool = pool();
    let c = client(&pool, &handle, &token).with_timeout(Duration::from_secs(8));
    // Open the token's window, so the injected 429 reports its reset (≤ 2 s away).
    c.get_json("/workspaces", &[]).await.unwrap();
    s.inject(FaultSpec::new(FaultKind::RateLimit, 1).on_path(&path));
    s.reset_request_counts();
    let up = c
        .send_json(Method::POST, &path, &[], Some(&serde_json::json!({})))
        .await
        .unwrap();
    assert!(up.is_success());
    assert_eq!(s.request_count(Some("POST"), &path), 2);
    assert_eq!(s.execution_count(&ws, &project, pipeline), before + 1);
    let stats = pool.stats();
    assert_eq!(
        (stats.rate_limited_received, stats.retries),
        (1, 1),
        "{stats:?}"
    );
    handle.shutdown().await;
}

#[tokio::test]
async fn a_deadline_shorter_than_the_reset_is_rate_limited_promptly() {
    let (handle, token) = sim("2/30").await;
    let s = handle.sim();
    let pool = pool();
    let c = client(&pool, &handle, &token).with_timeout(Duration::from_secs(2));
    c.get_json("/workspaces", &[]).await.unwrap();
    c.get_json("/workspaces", &[]).await.unwrap();
    // Our governor knows the budget is spent: refused without reaching Buddy.
    let started = Instant::now();
    let e = c.get_json("/workspaces", &[]).await.unwrap_err();
    assert!(
        started.elapsed() < Duration::from_millis(200),
        "{:?}",
        started.elapsed()
    );
    match e {
        BuddyError::RateLimited { retry_after } => assert!(
            (Duration::from_secs(28)..=Duration::from_secs(32)).contains(&retry_after),
            "{retry_after:?}"
        ),
        other => panic!("{other:?}"),
    }
    assert_eq!(s.total_requests(), 2);
    assert_eq!(pool.stats().governor_refused, 1);

    // Another process sharing the token knows nothing: Buddy answers 429 with a reset
    // ~30 s away, which is past the deadline, so it gives up at once.
    let other = pool_for_another_instance();
    let c2 = client(&other, &handle, &token).with_timeout(Duration::from_secs(2));
    let started = Instant::now();
    let e = c2.get_json("/workspaces", &[]).await.unwrap_err();
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "{:?}",
        started.elapsed()
    );
    assert!(
        matches!(e, BuddyError::RateLimited { retry_after } if retry_after >= Duration::from_secs(25)),
        "{e:?}"
    );
    assert_eq!(other.stats().rate_limited_received, 1);
    assert_eq!(s.total_requests(), 3);
    handle.shutdown().await;
}

fn pool_for_another_instance() -> HttpPool {
    pool()
}

/// The store's shared count in memory (`cigate_store`'s `rate_units` table does this
/// for processes on one database).
#[derive(Debug, Default)]
struct MemoryBudget(std::sync::Mutex<std::collections::HashMap<(String, i64), u64>>);

#[async_trait::async_trait]
impl SharedBudget for MemoryBudget {
    async fn take(&self, account: &str, reset: i64, limit: u64) -> Option<u64> {
        let mut map = self.0.lock().unwrap();
        let taken = map.entry((account.to_owned(), reset)).or_default();
        (*taken < limit).then(|| {
            *taken += 1;
            *taken
        })
    }

    async fn count(&self, account: &str, reset: i64) {
        *self
            .0
            .lock()
            .unwrap()
            .entry((account.to_owned(), reset))
            .or_default() += 1;
    }
}

struct InstancesRun {
    throttled: u64,
    failures: Vec<String>,
    line: String,
}

/// `calls` GETs from 20 clients spread round-robin over `instances` pools (one governor
/// each, as in separate processes) sharing one token, 20 per 10 s; with `shared`, every
/// pool takes its units from one shared budget.
async fn instances_run(instances: usize, calls: usize, shared: bool) -> InstancesRun {
    let (handle, token) = sim("20/10").await;
    let budget: Arc<dyn SharedBudget> = Arc::new(MemoryBudget::default());
    let pools: Vec<HttpPool> = (0..instances)
        .map(|_| {
            let pool = pool_for_another_instance();
            if shared {
                pool.sharing_budget(Arc::clone(&budget))
            } else {
                pool
            }
        })
        .collect();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..20 {
        let c = client(&pools[i % instances], &handle, &token);
        let next = Arc::clone(&next);
        tasks.push(tokio::spawn(async move {
            let mut failures = Vec::new();
            while next.fetch_add(1, std::sync::atomic::Ordering::SeqCst) < calls {
                if let Err(e) = c.get_json("/workspaces", &[]).await {
                    failures.push(format!("{e:?}"));
                }
            }
            failures
        }));
    }
    let mut failures = Vec::new();
    for t in tasks {
        failures.extend(t.await.unwrap());
    }
    let elapsed = started.elapsed();
    let throttled = handle.sim().throttled_count();
    let line = format!(
        "{instances} instance(s), {}: {calls} calls in {:.1} s ({:.1} % of the budget), \
         {throttled} throttled by Buddy, {} failed",
        if shared {
            "shared budget"
        } else {
            "per-process"
        },
        elapsed.as_secs_f64(),
        100.0 * calls as f64 / elapsed.as_secs_f64() / 2.0,
        failures.len()
    );
    handle.shutdown().await;
    InstancesRun {
        throttled,
        failures,
        line,
    }
}

/// Three instances taking their units from one shared budget stay within it together.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_sharing_a_budget_are_not_throttled() {
    let run = instances_run(3, 40, true).await;
    eprintln!("{}", run.line);
    assert!(run.failures.is_empty(), "{:?}", run.failures);
    assert!(run.throttled <= 2, "{}", run.line);
}

/// One, two and three instances sharing one account's budget, per process and shared:
/// 60 GETs from 20 clients, against the default reading.
/// About 30 s each: `cargo test -p cigate-buddy --test governor instances -- --ignored
/// --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement, about 30 s per run"]
async fn instances_sharing_one_budget() {
    const CALLS: usize = 60;
    let mut report = Vec::new();
    for shared in [false, true] {
        for instances in [1usize, 2, 3] {
            let run = instances_run(instances, CALLS, shared).await;
            eprintln!("{}", run.line);
            report.push((shared, run));
        }
    }
    // Every call succeeds at any count (the retry layer absorbs Buddy's refusals); the
    // throttle target holds for one instance, and for any count with a shared budget.
    for (shared, run) in &report {
        assert!(run.failures.is_empty(), "{:?}", run.failures);
        if *shared {
            assert!(run.throttled <= 2, "{}", run.line);
        }
    }
    assert!(report[0].1.throttled <= 2, "{}", report[0].1.line);
}
