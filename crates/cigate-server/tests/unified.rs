//! The Unified CI/CD API over real HTTP against the Buddy simulator.

mod common;

use std::collections::HashSet;

use common::{Backend, Harness};
use serde_json::Value;

async fn linked() -> (Harness, String) {
    let h = Harness::start(Backend::Sqlite).await.unwrap();
    let id = h.link().await;
    (h, id)
}

fn ids(page: &Value) -> Vec<String> {
    page["result"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| match &item["id"] {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        })
        .collect()
}

#[tokio::test]
async fn every_resource_lists_and_gets() {
    let (h, id) = linked().await;
    let q = format!("integrated_account_id={id}");

    let (status, workspaces) = h.get_json(&format!("/unified/ci-cd/workspaces?{q}")).await;
    assert_eq!(status, 200, "{workspaces}");
    let workspace = ids(&workspaces)[0].clone();
    assert!(workspaces["result"][0]["remote_data"].is_object());
    for key in ["result", "next_cursor", "prev_cursor", "result_count"] {
        assert!(workspaces.get(key).is_some(), "envelope lacks {key}");
    }

    let (status, repos) = h
        .get_json(&format!("/unified/ci-cd/repos?{q}&workspace={workspace}"))
        .await;
    assert_eq!(status, 200, "{repos}");
    let repo = ids(&repos)[0].clone();
    let (status, one) = h
        .get_json(&format!("/unified/ci-cd/repos/{repo}?{q}"))
        .await;
    assert_eq!(status, 200);
    assert_eq!(one["id"], repo.as_str());

    let (status, branches) = h
        .get_json(&format!("/unified/ci-cd/branches?{q}&repo={repo}"))
        .await;
    assert_eq!(status, 200, "{branches}");
    let branch = ids(&branches)[0].clone();
    let (status, one) = h
        .get_json(&format!(
            "/unified/ci-cd/branches/{branch}?{q}&project={repo}"
        ))
        .await;
    assert_eq!(status, 200, "{one}");
    assert_eq!(one["name"], branch.as_str());

    let (status, prs) = h
        .get_json(&format!("/unified/ci-cd/pull-requests?{q}&repo={repo}"))
        .await;
    assert_eq!(status, 200, "{prs}");

    for alias in ["workflow", "workflows"] {
        let (status, wf) = h
            .get_json(&format!("/unified/ci-cd/{alias}?{q}&repo={repo}"))
            .await;
        assert_eq!(status, 200, "{wf}");
    }
    let (_, workflows) = h
        .get_json(&format!("/unified/ci-cd/workflows?{q}&repo={repo}"))
        .await;
    let workflow = ids(&workflows)[0].clone();
    let (status, one) = h
        .get_json(&format!(
            "/unified/ci-cd/workflow/{workflow}?{q}&repo={repo}"
        ))
        .await;
    assert_eq!(status, 200, "{one}");

    let jobs_path = format!("/unified/ci-cd/jobs?{q}&repo={repo}&workflow={workflow}&limit=5");
    let response = h.get(&jobs_path).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.headers().contains_key("ratelimit-remaining"));
    let jobs: Value = response.json().await.unwrap();
    assert_eq!(jobs["result_count"], 5);
    let job = ids(&jobs)[0].clone();
    let (status, one) = h
        .get_json(&format!(
            "/unified/ci-cd/jobs/{job}?{q}&repo={repo}&workflow={workflow}"
        ))
        .await;
    assert_eq!(status, 200, "{one}");
    assert!(one["steps"].is_array(), "a job read by id has steps: {one}");
}

#[tokio::test]
async fn errors_are_documented_problems() {
    let (h, id) = linked().await;
    let q = format!("integrated_account_id={id}");

    let (status, body) = h.get_json("/unified/ci-cd/workspaces").await;
    assert_eq!(status, 400);
    assert_eq!(body["type"], "/problems/missing-parameter");
    assert_eq!(
        body["details"]["missing_required_query_parameters"],
        serde_json::json!(["integrated_account_id"])
    );

    let (status, body) = h.get_json(&format!("/unified/ci-cd/branches?{q}")).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["type"], "/problems/missing-parameter");
    assert!(body["details"]["missing_required_query_parameters"]
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p == "repo"));

    let (status, body) = h.get_json(&format!("/unified/ci-cd/deployments?{q}")).await;
    assert_eq!(status, 404);
    assert!(body["detail"].as_str().unwrap().contains("deployments"));

    let (status, body) = h
        .get_json(&format!("/unified/ci-cd/repos?{q}&next_cursor=garbage"))
        .await;
    assert_eq!(status, 400);
    assert_eq!(body["type"], "/problems/invalid-cursor");

    let (status, body) = h
        .get_json(&format!("/unified/ci-cd/repos/no-such-project?{q}"))
        .await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["truto_is_remote_error"], true);

    let (status, _) = h
        .get_json("/unified/ci-cd/repos?integrated_account_id=no-such-account")
        .await;
    assert_eq!(status, 404);

    let (status, _) = h
        .get_json(&format!("/unified/ci-cd/repos?{q}&limit=5000"))
        .await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn cursors_are_bound_to_their_query() {
    let (h, id) = linked().await;
    let q = format!("integrated_account_id={id}");
    let (_, first) = h
        .get_json(&format!("/unified/ci-cd/repos?{q}&limit=1"))
        .await;
    let cursor = first["next_cursor"]
        .as_str()
        .expect("more than one repo")
        .to_owned();
    let (status, second) = h
        .get_json(&format!(
            "/unified/ci-cd/repos?{q}&limit=1&next_cursor={cursor}"
        ))
        .await;
    assert_eq!(status, 200);
    assert_ne!(ids(&first), ids(&second));
    // Same cursor, different filters (limit): refused.
    let (status, _) = h
        .get_json(&format!(
            "/unified/ci-cd/repos?{q}&limit=2&next_cursor={cursor}"
        ))
        .await;
    assert_eq!(status, 400);
    // Tampered: refused.
    let mut tampered = cursor.clone().into_bytes();
    let last = tampered.len() - 1;
    tampered[last] = if tampered[last] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).unwrap();
    let (status, _) = h
        .get_json(&format!(
            "/unified/ci-cd/repos?{q}&limit=1&next_cursor={tampered}"
        ))
        .await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn merged_jobs_page_without_loss_or_repeats() {
    let (h, id) = linked().await;
    let q = format!("integrated_account_id={id}");
    let (_, repos) = h.get_json(&format!("/unified/ci-cd/repos?{q}")).await;
    let repo = ids(&repos)[0].clone();
    let mut seen = HashSet::new();
    let mut total = 0;
    let mut cursor: Option<String> = None;
    let mut last_created: Option<String> = None;
    loop {
        let mut path =
            format!("/unified/ci-cd/jobs?{q}&repo={repo}&limit=7&truto_ignore_remote_data=true");
        if let Some(c) = &cursor {
            path.push_str(&format!("&next_cursor={c}"));
        }
        let (status, page) = h.get_json(&path).await;
        assert_eq!(status, 200, "{page}");
        for job in page["result"].as_array().unwrap() {
            assert!(job.get("remote_data").is_none());
            let key = format!("{}/{}", job["workflow"], job["id"]);
            assert!(seen.insert(key.clone()), "repeated {key}");
            total += 1;
            if let (Some(prev), Some(created)) = (&last_created, job["created_at"].as_str()) {
                assert!(prev.as_str() >= created, "not newest first");
            }
            last_created = job["created_at"].as_str().map(str::to_owned);
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    let (_, workflows) = h
        .get_json(&format!("/unified/ci-cd/workflows?{q}&repo={repo}"))
        .await;
    let mut expected = 0;
    for wf in ids(&workflows) {
        let mut cursor: Option<String> = None;
        loop {
            let mut path = format!("/unified/ci-cd/jobs?{q}&repo={repo}&workflow={wf}&limit=1000");
            if let Some(c) = &cursor {
                path.push_str(&format!("&next_cursor={c}"));
            }
            let (_, page) = h.get_json(&path).await;
            expected += page["result_count"].as_u64().unwrap();
            match page["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_owned()),
                None => break,
            }
        }
    }
    assert_eq!(total as u64, expected);
}

#[tokio::test]
async fn response_shaping_parameters() {
    let (h, id) = linked().await;
    let q = format!("integrated_account_id={id}");
    let (_, page) = h
        .get_json(&format!(
            "/unified/ci-cd/repos?{q}&truto_exclude_fields[]=description&truto_exclude_fields=vcs_url,url"
        ))
        .await;
    let repo = &page["result"][0];
    assert!(repo.get("vcs_url").is_none() && repo.get("url").is_none());
    assert!(repo.get("id").is_some());
    let (_, raw) = h
        .get_json(&format!(
            "/unified/ci-cd/repos?{q}&truto_response_format=raw"
        ))
        .await;
    assert!(
        raw["result"][0].get("display_name").is_some(),
        "raw Buddy project: {raw}"
    );
}
