//! PostgreSQL unreachable behind a TCP proxy that cuts every connection: requests that
//! need the store answer 503 problem+json with `Retry-After` (not 500, not a hang),
//! `/readyz` fails, and everything recovers without a restart.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{postgres_url, Backend, Harness};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// Forwards to PostgreSQL until cut; while cut, new connections are closed at once.
struct Proxy {
    port: u16,
    open: Arc<AtomicBool>,
    cut: watch::Sender<u64>,
}

impl Proxy {
    async fn start(upstream: String) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let open = Arc::new(AtomicBool::new(true));
        let (cut, _) = watch::channel(0u64);
        let (flag, cuts) = (Arc::clone(&open), cut.clone());
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                if !flag.load(Ordering::SeqCst) {
                    continue; // dropped: the client sees the connection closed
                }
                let upstream = upstream.clone();
                let mut cut = cuts.subscribe();
                tokio::spawn(async move {
                    let Ok(mut server) = TcpStream::connect(&upstream).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = cut.changed() => {}
                    }
                });
            }
        });
        Proxy { port, open, cut }
    }

    fn cut(&self) {
        self.open.store(false, Ordering::SeqCst);
        self.cut.send_modify(|n| *n += 1);
    }

    fn restore(&self) {
        self.open.store(true, Ordering::SeqCst);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_database_is_a_503_and_recovers_without_a_restart() {
    let Some(url) = postgres_url() else {
        eprintln!("skipping: CIGATE_TEST_POSTGRES_URL is not set");
        return;
    };
    let parsed = url::Url::parse(&url).unwrap();
    let upstream = format!(
        "{}:{}",
        parsed.host_str().unwrap(),
        parsed.port().unwrap_or(5432)
    );
    let proxy = Proxy::start(upstream).await;
    let mut through = parsed.clone();
    through.set_port(Some(proxy.port)).unwrap();
    let Some(h) = Harness::start_configured(
        Backend::Postgres,
        cigate_buddy_sim::SimConfig::default(),
        |config| {
            config.database_url = through.to_string();
            config.database_acquire_timeout = Duration::from_secs(1);
            // Every request goes to the store (no kept token or account).
            config.hot_cache_ms = 0;
        },
    )
    .await
    else {
        return;
    };
    let account = h.link().await;
    let (status, _) = h.get_json(&format!("/integrated-account/{account}")).await;
    assert_eq!(status, 200);
    let mut scope = format!("integrated_account_id={account}");
    for resource in ["workspaces", "repos", "workflows"] {
        let (_, body) = h
            .get_json(&format!("/unified/ci-cd/{resource}?{scope}"))
            .await;
        let id = body["result"][0]["id"].as_str().unwrap().to_owned();
        let name = match resource {
            "workspaces" => "workspace",
            "repos" => "project",
            _ => "workflow",
        };
        scope.push_str(&format!("&{name}={id}"));
    }
    let run = format!("/unified/ci-cd/jobs?{scope}");
    let runs_at_buddy = || h.sim.sim().request_count(Some("POST"), "/workspaces");

    proxy.cut();
    // A write with an Idempotency-Key while its key cannot be recorded: 503 before
    // Buddy is asked, so nothing runs that a resend could run again.
    let response = h
        .post(&run)
        .header("idempotency-key", "outage-run-1")
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
    assert_eq!(runs_at_buddy(), 0, "Buddy was asked during the outage");
    for path in [
        format!("/integrated-account/{account}"),
        "/integrated-account".to_owned(),
        format!("/unified/ci-cd/workspaces?integrated_account_id={account}"),
    ] {
        let started = Instant::now();
        let response = h.get(&path).send().await.unwrap();
        let status = response.status();
        if status != 503 {
            panic!("{path}: {status} {}", response.text().await.unwrap());
        }
        assert_eq!(response.headers()["retry-after"], "5");
        assert!(started.elapsed() < Duration::from_secs(10), "{path} hung");
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!(body["type"], "/problems/store-unavailable", "{body}");
    }
    let ready = h.http.get(h.url("/readyz")).send().await.unwrap();
    assert_ne!(ready.status(), 200);

    proxy.restore();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, body) = h.get_json(&format!("/integrated-account/{account}")).await;
        if status == 200 {
            assert_eq!(body["id"], serde_json::json!(account));
            break;
        }
        assert!(Instant::now() < deadline, "no recovery: {status} {body}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let ready = h.http.get(h.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200);

    // The same key after the outage runs the job once; its resend answers the same job.
    let mut jobs = Vec::new();
    for _ in 0..2 {
        let response = h
            .post(&run)
            .header("idempotency-key", "outage-run-1")
            .json(&serde_json::json!({}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201);
        let body: serde_json::Value = response.json().await.unwrap();
        jobs.push(body["id"].clone());
    }
    assert_eq!(jobs[0], jobs[1]);
    assert_eq!(runs_at_buddy(), 1);
}

/// Events queued before the database went away are all delivered once it is back: the
/// delivery worker survives the outage and the outbox loses nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_outbox_resumes_after_an_outage_and_loses_nothing() {
    use std::collections::HashSet;
    use std::sync::Mutex;

    use axum::http::{HeaderMap, StatusCode};

    let Some(url) = postgres_url() else {
        eprintln!("skipping: CIGATE_TEST_POSTGRES_URL is not set");
        return;
    };
    let parsed = url::Url::parse(&url).unwrap();
    let proxy = Proxy::start(format!(
        "{}:{}",
        parsed.host_str().unwrap(),
        parsed.port().unwrap_or(5432)
    ))
    .await;
    let mut through = parsed.clone();
    through.set_port(Some(proxy.port)).unwrap();

    // A receiver that refuses while `failing`, and keeps the ids it accepted.
    let failing = Arc::new(AtomicBool::new(true));
    let accepted: Arc<Mutex<HashSet<String>>> = Arc::default();
    let (f, a) = (Arc::clone(&failing), Arc::clone(&accepted));
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: HeaderMap| {
            let (f, a) = (Arc::clone(&f), Arc::clone(&a));
            async move {
                if f.load(Ordering::SeqCst) {
                    return StatusCode::SERVICE_UNAVAILABLE;
                }
                let id = headers
                    .get("webhook-id")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_owned();
                a.lock().unwrap().insert(id);
                StatusCode::NO_CONTENT
            }
        }),
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let receiver = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });

    let Some(h) = Harness::start_configured(
        Backend::Postgres,
        cigate_buddy_sim::SimConfig::default(),
        |config| {
            config.database_url = through.to_string();
            config.database_acquire_timeout = Duration::from_secs(1);
            config.hot_cache_ms = 0;
            // Retries a while apart, long enough to outlast the outage.
            config.webhook_retry_schedule =
                cigate_server::config::RetrySchedule(vec![Duration::from_millis(200); 100]);
        },
    )
    .await
    else {
        return;
    };
    let response = h
        .post("/webhook")
        .json(&serde_json::json!({ "target_url": receiver }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let hook: serde_json::Value = response.json().await.unwrap();
    let mut sent = HashSet::new();
    for _ in 0..5 {
        let response = h
            .post("/webhook/test")
            .json(&serde_json::json!({ "id": hook["id"] }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 202);
        let event: serde_json::Value = response.json().await.unwrap();
        sent.insert(event["id"].as_str().unwrap().to_owned());
    }

    // The outage lasts a while: the worker's attempts meet a missing database.
    proxy.cut();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    proxy.restore();
    failing.store(false, Ordering::SeqCst);

    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let got = accepted.lock().unwrap().len();
        if got >= sent.len() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{got} of {} events delivered",
            sent.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(accepted.lock().unwrap().len(), sent.len());
}
