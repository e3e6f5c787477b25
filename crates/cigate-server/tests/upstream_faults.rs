//! Buddy failing mid-answer or answering too slowly: a streamed answer that Buddy cuts
//! mid-body ends in an error the caller can see (never a short success), a buffered
//! idempotent call is retried, and a slow Buddy is a 504 within the deadline that
//! leaves the account's slots free.

mod common;

use std::time::{Duration, Instant};

use cigate_buddy_sim::{FaultKind, FaultSpec, SimConfig};
use common::{Backend, Harness};

fn roomy() -> SimConfig {
    SimConfig {
        rate_limit: "1000000/3600".parse().unwrap(),
        ..SimConfig::default()
    }
}

/// The executions path of the first pipeline, 50 a page (a large answer).
async fn first_executions_path(h: &Harness, ws: &str) -> String {
    let projects = h.buddy_json(&format!("/workspaces/{ws}/projects")).await;
    let project = projects["projects"][0]["name"].as_str().unwrap().to_owned();
    let pipelines = h
        .buddy_json(&format!("/workspaces/{ws}/projects/{project}/pipelines"))
        .await;
    let pipeline = &pipelines["pipelines"][0]["id"];
    format!("/workspaces/{ws}/projects/{project}/pipelines/{pipeline}/executions?per_page=50")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_cut_mid_stream_is_an_error_and_a_buffered_get_is_retried() {
    let h = Harness::start_with(Backend::Sqlite, roomy()).await.unwrap();
    let id = h.link().await;
    let ws = h.sim.sim().workspace_domains()[0].clone();
    let path = format!("/workspaces/{ws}/projects");
    let whole = h
        .get(&format!("/custom{path}?integrated_account_id={id}"))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert!(whole.len() > 100);

    // Streamed byte for byte: the caller's body breaks too.
    h.sim
        .sim()
        .inject(FaultSpec::new(FaultKind::ResetMidBody, 1).on_path(&path));
    let response = h
        .get(&format!("/custom{path}?integrated_account_id={id}"))
        .send()
        .await;
    let outcome = match response {
        Err(e) => Err(e.to_string()),
        Ok(r) if !r.status().is_success() => Err(format!("status {}", r.status())),
        Ok(r) => match r.bytes().await {
            Ok(bytes) => Ok(bytes),
            Err(e) => Err(e.to_string()),
        },
    };
    // Either the caller sees the break, or cigate sent the GET again before any byte
    // reached the caller and answered whole; never a short body as a success.
    if let Ok(bytes) = outcome {
        assert_eq!(
            bytes.len(),
            whole.len(),
            "a cut body came back as a success"
        );
        assert_eq!(
            h.sim.sim().request_count(Some("GET"), &path),
            3,
            "not sent again"
        );
    }

    // A large answer cut halfway, through /custom, never arrives whole as a success.
    let executions = first_executions_path(&h, &ws).await;
    let full = h
        .get(&format!("/custom{executions}&integrated_account_id={id}"))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    h.sim.sim().inject(
        FaultSpec::new(FaultKind::ResetMidBody, 1)
            .on_path(&executions[..executions.find('?').unwrap()]),
    );
    let cut = match h
        .get(&format!("/custom{executions}&integrated_account_id={id}"))
        .send()
        .await
    {
        Ok(r) if r.status().is_success() => {
            r.bytes().await.map(|b| b.len()).map_err(|e| e.to_string())
        }
        Ok(r) => Err(format!("status {}", r.status())),
        Err(e) => Err(e.to_string()),
    };
    if let Ok(len) = cut {
        assert_eq!(len, full.len(), "a cut body came back as a success");
    }

    // Buffered (the proxy's envelope): the GET is sent again and answers whole.
    h.sim
        .sim()
        .inject(FaultSpec::new(FaultKind::ResetMidBody, 1).on_path(&path));
    let (status, body) = h
        .get_json(&format!("/proxy{path}?integrated_account_id={id}"))
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body["result"].as_array().is_some_and(|r| !r.is_empty()),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_buddy_is_a_504_within_the_deadline_and_frees_its_slot() {
    let Some(h) = Harness::start_configured(Backend::Sqlite, roomy(), |config| {
        // One call at a time per account: a slot held past the deadline would block
        // the next call.
        config.account_max_in_flight = 1;
    })
    .await
    else {
        return;
    };
    let id = h.link().await;
    h.sim
        .sim()
        .inject(FaultSpec::new(FaultKind::Latency { ms: 5_000 }, 1).on_path("/workspaces"));
    let started = Instant::now();
    let (status, body) = h
        .get_json(&format!(
            "/unified/ci-cd/workspaces?integrated_account_id={id}&truto_timeout_ms=500"
        ))
        .await;
    assert_eq!(status, 504, "{body}");
    assert_eq!(body["type"], "/problems/upstream-timeout");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    // The slot is free again at once.
    let started = Instant::now();
    let (status, _) = h
        .get_json(&format!(
            "/unified/ci-cd/workspaces?integrated_account_id={id}"
        ))
        .await;
    assert_eq!(status, 200);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
}
