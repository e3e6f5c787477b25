//! Delivery metrics recomputed from Buddy's own executions (docs/metrics.md, written
//! again here from the rules, not from cigate's code), and the tenant-wide job feed
//! paged at a small limit.

mod common;

use std::collections::{BTreeMap, HashSet};

use chrono::{DateTime, Duration, Utc};
use cigate_buddy_sim::{SimConfig, TokenSpec};
use common::{Backend, Harness};
use serde_json::{json, Value};

fn seeded(spec: &str) -> SimConfig {
    SimConfig {
        seed: spec.parse().unwrap(),
        ..SimConfig::default()
    }
}

fn time(v: &Value) -> Option<DateTime<Utc>> {
    v.as_str()
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.with_timezone(&Utc))
}

/// One of Buddy's executions, as the rules see it.
#[derive(Debug, Clone)]
struct Run {
    pipeline: String,
    status: String,
    started: Option<DateTime<Utc>>,
    finished: DateTime<Utc>,
    commit: Option<DateTime<Utc>>,
}

/// Every finished execution of every pipeline, straight from the simulator, and each
/// pipeline's name.
async fn buddy_runs(h: &Harness) -> (Vec<Run>, BTreeMap<String, String>) {
    let ws = h.buddy_json("/workspaces").await["workspaces"][0]["domain"]
        .as_str()
        .unwrap()
        .to_owned();
    let projects = h.buddy_json(&format!("/workspaces/{ws}/projects")).await;
    let mut runs = Vec::new();
    let mut names = BTreeMap::new();
    for project in projects["projects"].as_array().unwrap() {
        let p = project["name"].as_str().unwrap();
        let pipelines = h
            .buddy_json(&format!(
                "/workspaces/{ws}/projects/{p}/pipelines?per_page=50"
            ))
            .await;
        for pipeline in pipelines["pipelines"].as_array().unwrap() {
            let id = pipeline["id"].to_string();
            names.insert(id.clone(), pipeline["name"].as_str().unwrap().to_owned());
            for page in 1.. {
                let list = h
                    .buddy_json(&format!(
                        "/workspaces/{ws}/projects/{p}/pipelines/{id}/executions?page={page}&per_page=50"
                    ))
                    .await;
                let executions = list["executions"].as_array().unwrap();
                for e in executions {
                    let Some(finished) = time(&e["finish_date"]) else {
                        continue;
                    };
                    runs.push(Run {
                        pipeline: id.clone(),
                        status: e["status"].as_str().unwrap().to_owned(),
                        started: time(&e["start_date"]),
                        finished,
                        commit: time(&e["to_revision"]["commit_date"]),
                    });
                }
                if executions.len() < 50 {
                    break;
                }
            }
        }
    }
    (runs, names)
}

fn rank(mut v: Vec<f64>, p: usize) -> Value {
    if v.is_empty() {
        return Value::Null;
    }
    v.sort_by(f64::total_cmp);
    let r = (p * v.len()).div_ceil(100).max(1);
    json!(v[r - 1])
}

fn ratio(a: usize, b: usize) -> Value {
    if b == 0 {
        Value::Null
    } else {
        json!(a as f64 / b as f64)
    }
}

/// The figures by the documented rules.
fn expected(
    runs: &[Run],
    deploy: &HashSet<String>,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Value {
    let done = [
        "SUCCESSFUL",
        "FAILED",
        "TERMINATED",
        "SKIPPED",
        "NOT_EXECUTED",
    ];
    let window: Vec<&Run> = runs
        .iter()
        .filter(|r| done.contains(&r.status.as_str()) && from <= r.finished && r.finished < to)
        .collect();
    let passed = window.iter().filter(|r| r.status == "SUCCESSFUL").count();
    let failed = window.iter().filter(|r| r.status == "FAILED").count();
    let durations: Vec<f64> = window
        .iter()
        .filter_map(|r| {
            r.started
                .map(|s| (r.finished - s).num_milliseconds() as f64 / 1000.0)
        })
        .collect();
    let deploys: Vec<&&Run> = window
        .iter()
        .filter(|r| deploy.contains(&r.pipeline))
        .collect();
    let d_passed = deploys.iter().filter(|r| r.status == "SUCCESSFUL").count();
    let d_failed = deploys.iter().filter(|r| r.status == "FAILED").count();
    let mut episodes = Vec::new();
    for pipeline in deploy {
        let mut mine: Vec<&&&Run> = deploys
            .iter()
            .filter(|r| {
                &r.pipeline == pipeline && (r.status == "SUCCESSFUL" || r.status == "FAILED")
            })
            .collect();
        mine.sort_by_key(|r| r.finished);
        let mut open = None;
        for r in mine {
            match (r.status.as_str(), open) {
                ("FAILED", None) => open = Some(r.finished),
                ("SUCCESSFUL", Some(start)) => {
                    episodes.push((r.finished - start).num_milliseconds() as f64 / 1000.0);
                    open = None;
                }
                _ => {}
            }
        }
    }
    let mut leads: Vec<f64> = deploys
        .iter()
        .filter(|r| r.status == "SUCCESSFUL")
        .filter_map(|r| {
            r.commit
                .map(|c| (r.finished - c).num_milliseconds() as f64 / 1000.0)
        })
        .filter(|l| *l > 0.0)
        .collect();
    leads.sort_by(f64::total_cmp);
    let lead = match leads.len() {
        0 => Value::Null,
        n if n % 2 == 1 => json!(leads[n / 2]),
        n => json!((leads[n / 2 - 1] + leads[n / 2]) / 2.0),
    };
    let days = (to - from).num_milliseconds() as f64 / 86_400_000.0;
    json!({
        "jobs_total": window.len(),
        "passed": passed,
        "failed": failed,
        "success_rate": ratio(passed, passed + failed),
        "duration_s": {"p50": rank(durations.clone(), 50), "p95": rank(durations, 95)},
        "queued_s": {"p50": null, "p95": null},
        "deployments": d_passed,
        "deployment_frequency_per_day": d_passed as f64 / days,
        "change_failure_rate": ratio(d_failed, d_passed + d_failed),
        "mean_time_to_restore_s": if episodes.is_empty() { Value::Null } else { json!(episodes.iter().sum::<f64>() / episodes.len() as f64) },
        "lead_time_s": lead,
    })
}

fn assert_figures(got: &Value, want: &Value, what: &str) {
    for (field, value) in want.as_object().unwrap() {
        let close = match (&got[field], value) {
            (Value::Number(a), Value::Number(b)) => {
                (a.as_f64().unwrap() - b.as_f64().unwrap()).abs() < 1e-9
            }
            (a, b) => a == b,
        };
        assert!(
            close,
            "{what}: `{field}` is {} but the rules give {value}",
            got[field]
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_follow_the_documented_rules() {
    let Some(h) = Harness::start_with(
        Backend::Sqlite,
        seeded("workspaces=1,projects=2,pipelines=6,executions=200,commits=30,seed=11"),
    )
    .await
    else {
        return;
    };
    let account = h.link().await;
    let (runs, names) = buddy_runs(&h).await;
    let to = Utc::now();
    let from = to - Duration::hours(20);
    let q = |extra: &str| {
        format!(
            "/unified/ci-cd/metrics?integrated_account_id={account}&from={}&to={}{extra}",
            from.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
                .replace('+', "%2B"),
            to.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
                .replace('+', "%2B"),
        )
    };

    // The default deploy rule: names with deploy, release or prod.
    let response = h.get(&q("")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let calls: u64 = response.headers()["x-upstream-calls"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let body: Value = response.json().await.unwrap();
    let deploy: HashSet<String> = names
        .iter()
        .filter(|(_, n)| {
            let n = n.to_lowercase();
            n.contains("deploy") || n.contains("release") || n.contains("prod")
        })
        .map(|(id, _)| id.clone())
        .collect();
    assert!(!deploy.is_empty() && deploy.len() < names.len());
    let used: HashSet<String> = body["deploy_workflows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(used, deploy);
    let want = expected(&runs, &deploy, from, to);
    assert!(want["jobs_total"].as_u64().unwrap() > 20, "{want}");
    assert!(
        want["mean_time_to_restore_s"].is_number(),
        "the seed gives no restore episode: {want}"
    );
    assert_figures(&body, &want, "overall");
    assert_eq!(body["upstream_calls"], json!(calls));
    // Per workflow.
    let workflows = body["workflows"].as_array().unwrap();
    assert_eq!(workflows.len(), names.len());
    for wf in workflows {
        let id = wf["workflow"].as_str().unwrap().to_owned();
        let only: Vec<Run> = runs.iter().filter(|r| r.pipeline == id).cloned().collect();
        let mine: HashSet<String> = deploy.iter().filter(|d| **d == id).cloned().collect();
        assert_figures(
            wf,
            &expected(&only, &mine, from, to),
            &format!("workflow {id}"),
        );
        assert_eq!(wf["name"], json!(names[&id]));
    }

    // Named deploy workflows win over the names.
    let chosen: Vec<String> = names.keys().take(2).cloned().collect();
    let response = h
        .get(&q(&format!(
            "&deploy_workflows[]={}&deploy_workflows[]={}",
            chosen[0], chosen[1]
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    let chosen: HashSet<String> = chosen.into_iter().collect();
    assert_figures(
        &body,
        &expected(&runs, &chosen, from, to),
        "deploy_workflows[]",
    );

    // Only the window's executions are read: the window (20 h, ~26 runs a pipeline)
    // lies in each pipeline's first page, and its second page, wholly older, stops the
    // paging; the history holds four pages a pipeline. Plus a few to list the
    // workspace, its projects and their pipelines.
    let pipelines = names.len() as u64;
    assert!(calls <= 2 * pipelines + 6, "{calls} calls");

    // Bad input.
    for bad in [
        "/unified/ci-cd/metrics",
        &format!("/unified/ci-cd/metrics?integrated_account_id={account}&from=yesterday"),
        &format!("/unified/ci-cd/metrics?integrated_account_id={account}&from=2026-02-01T00:00:00Z&to=2026-01-01T00:00:00Z"),
    ] {
        let (status, body) = h.get_json(bad).await;
        assert_eq!(status, 400, "{bad}: {body}");
        assert!(body["type"].as_str().unwrap().starts_with("/problems/"), "{body}");
    }
}

/// Links the simulator's account with `token` for `tenant`; returns its id.
async fn link(h: &Harness, base_url: &str, token: &str, tenant: &str) -> String {
    let response = h
        .post("/integrated-account")
        .json(&json!({
            "tenant_id": tenant, "integration": "buddy",
            "context": { "api_key": token, "base_url": base_url },
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    response.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// A job's identity: ids are unique per pipeline only.
fn job_key(account: &str, job: &Value) -> String {
    format!(
        "{account}/{}/{}/{}/{}",
        job["workspace"].as_str().unwrap(),
        job["repo"].as_str().unwrap(),
        job["workflow"].as_str().unwrap(),
        job["id"].as_str().unwrap()
    )
}

/// Every job of one account, workspace by workspace, through its own feed.
async fn account_jobs(h: &Harness, account: &str) -> Vec<String> {
    let (_, workspaces) = h
        .get_json(&format!(
            "/unified/ci-cd/workspaces?integrated_account_id={account}"
        ))
        .await;
    let mut jobs = Vec::new();
    for ws in workspaces["result"].as_array().unwrap() {
        let ws = ws["id"].as_str().unwrap();
        let (status, body) = h
            .get_json(&format!(
                "/unified/ci-cd/jobs?integrated_account_id={account}&workspace={ws}&limit=1000"
            ))
            .await;
        assert_eq!(status, 200, "{body}");
        assert!(body["next_cursor"].is_null());
        jobs.extend(
            body["result"]
                .as_array()
                .unwrap()
                .iter()
                .map(|j| job_key(account, j)),
        );
    }
    jobs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tenant_feed_holds_every_job_of_its_accounts_once_newest_first() {
    let Some(h) = Harness::start_with(
        Backend::Sqlite,
        seeded("workspaces=2,projects=2,pipelines=2,executions=6,seed=3"),
    )
    .await
    else {
        return;
    };
    let other_sim = cigate_buddy_sim::start(seeded(
        "workspaces=1,projects=2,pipelines=3,executions=5,seed=8",
    ))
    .await
    .unwrap();
    let other_token = other_sim.sim().issue_token(TokenSpec::all_scopes());
    let a = link(&h, &h.sim.base_url(), &h.buddy_token, "acme").await;
    let b = link(&h, &other_sim.base_url(), &other_token, "acme").await;
    let third_token = h.sim.sim().issue_token(TokenSpec::all_scopes());
    let _elsewhere = link(&h, &h.sim.base_url(), &third_token, "globex").await;
    // An account of the tenant that needs re-authentication.
    let stale_token = other_sim.sim().issue_token(TokenSpec::all_scopes());
    let stale = link(&h, &other_sim.base_url(), &stale_token, "acme").await;
    assert!(other_sim.sim().expire_token(&stale_token));
    let (status, _) = h
        .get_json(&format!(
            "/unified/ci-cd/workspaces?integrated_account_id={stale}"
        ))
        .await;
    assert_eq!(status, 401);

    let mut want: Vec<String> = account_jobs(&h, &a).await;
    want.extend(account_jobs(&h, &b).await);
    assert!(want.len() > 20);

    let mut seen = Vec::new();
    let mut times = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut path = "/unified/ci-cd/jobs?tenant_id=acme&limit=7".to_owned();
        if let Some(c) = &cursor {
            path.push_str(&format!("&next_cursor={c}"));
        }
        let (status, body) = h.get_json(&path).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["skipped_accounts"][0]["id"], json!(stale), "{body}");
        assert_eq!(body["skipped_accounts"][0]["status"], "needs_reauth");
        for job in body["result"].as_array().unwrap() {
            assert_eq!(job["tenant_id"], "acme");
            seen.push(job_key(job["integrated_account_id"].as_str().unwrap(), job));
            times.push(job["created_at"].as_str().map(str::to_owned));
        }
        match body["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    let unique: HashSet<&String> = seen.iter().collect();
    assert_eq!(unique.len(), seen.len(), "a job came twice");
    let mut sorted_want = want.clone();
    sorted_want.sort();
    let mut sorted_seen = seen.clone();
    sorted_seen.sort();
    assert_eq!(sorted_seen, sorted_want);
    let parsed: Vec<i64> = times
        .iter()
        .map(|t| {
            t.as_deref()
                .and_then(|t| time(&json!(t)))
                .map_or(i64::MAX, |t| t.timestamp_millis())
        })
        .collect();
    assert!(parsed.windows(2).all(|w| w[0] >= w[1]), "not newest first");

    // The tenant's metrics: one row per active account, the stale one named, and the
    // totals add up.
    let (status, m) = h.get_json("/unified/ci-cd/metrics?tenant_id=acme").await;
    assert_eq!(status, 200, "{m}");
    let accounts = m["accounts"].as_array().unwrap();
    let ids: HashSet<&str> = accounts
        .iter()
        .map(|x| x["integrated_account_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, HashSet::from([a.as_str(), b.as_str()]));
    assert_eq!(m["skipped_accounts"][0]["id"], json!(stale));
    let sum: u64 = accounts
        .iter()
        .map(|x| x["jobs_total"].as_u64().unwrap())
        .sum();
    assert_eq!(m["jobs_total"].as_u64().unwrap(), sum);
    assert!(m["integrated_account_id"].is_null() && m["tenant_id"] == "acme");

    // A cursor is bound to its tenant.
    let (_, first) = h
        .get_json("/unified/ci-cd/jobs?tenant_id=acme&limit=7")
        .await;
    let c = first["next_cursor"].as_str().unwrap();
    let (status, _) = h
        .get_json(&format!(
            "/unified/ci-cd/jobs?tenant_id=globex&limit=7&next_cursor={c}"
        ))
        .await;
    assert_eq!(status, 400);
    other_sim.shutdown().await;
}

/// The cost of the metrics of a workspace of 50 pipelines × 2,000 executions (47 min
/// apart, so ~920 in 30 days): `cargo test -p cigate-server --test analytics
/// fifty_pipelines -- --ignored --nocapture`. Recorded in docs/benchmarks.md.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement, about a minute"]
async fn fifty_pipelines_of_two_thousand_executions() {
    let sim = SimConfig {
        rate_limit: "100000000/3600".parse().unwrap(),
        ..seeded("workspaces=1,projects=5,pipelines=10,executions=2000,seed=21")
    };
    let Some(h) = Harness::start_with(Backend::Sqlite, sim).await else {
        return;
    };
    let account = h.link().await;
    let history_pages = 50 * 2000u64.div_ceil(50);
    for days in [1, 7, 30] {
        let to = Utc::now();
        let from = to - Duration::days(days);
        let started = std::time::Instant::now();
        let path = format!(
            "/unified/ci-cd/metrics?integrated_account_id={account}&from={}&to={}",
            from.format("%Y-%m-%dT%H:%M:%SZ"),
            to.format("%Y-%m-%dT%H:%M:%SZ")
        );
        let (status, body) = h.get_json(&path).await;
        assert_eq!(status, 200, "{body}");
        eprintln!(
            "{days:>2} days: {} jobs, {} upstream calls ({history_pages} pages of history), {:.2} s",
            body["jobs_total"],
            body["upstream_calls"],
            started.elapsed().as_secs_f64()
        );
        assert!(body["upstream_calls"].as_u64().unwrap() < history_pages);
    }
}
