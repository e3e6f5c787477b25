//! Truto's own client library (tests/truto-sdk, installed by its setup.sh), unmodified and
//! pointed at cigate's base URL, lists, pages and gets every resource; its values are
//! compared with the simulator's data read straight from the simulator.

mod common;

use std::collections::BTreeSet;
use std::path::PathBuf;

use cigate_buddy_sim::SimConfig;
use common::{Backend, Harness};
use serde_json::Value;

fn sdk_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/truto-sdk")
}

/// The venv's Python, or `None` (after saying why) when the SDK is not installed here.
/// Under CI a missing SDK is a failure: `.ci/run` installs it.
fn sdk_python() -> Option<PathBuf> {
    let python = sdk_dir().join(".venv/bin/python");
    if python.exists() {
        return Some(python);
    }
    let why = format!(
        "Truto's SDK is not installed ({} missing): run tests/truto-sdk/setup.sh",
        python.display()
    );
    if std::env::var_os("CI").is_some() {
        panic!("{why}");
    }
    eprintln!("skipping: {why}");
    None
}

/// GET straight from the simulator with the account's Buddy token.
async fn buddy(h: &Harness, path: &str) -> Value {
    let response = h
        .http
        .get(format!("{}{path}", h.sim.base_url()))
        .bearer_auth(&h.buddy_token)
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success(), "{path}");
    response.json().await.unwrap()
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|s| match s {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        })
        .collect()
}

#[tokio::test]
async fn truto_sdk_lists_pages_and_gets_every_resource() {
    let Some(python) = sdk_python() else { return };
    let config = SimConfig {
        // The SDK run makes a few hundred calls; the rate governor need not pace them.
        rate_limit: "1000000/3600".parse().unwrap(),
        ..SimConfig::default()
    };
    let h = Harness::start_with(Backend::Sqlite, config).await.unwrap();
    let account = h.link().await;
    let output = tokio::process::Command::new(&python)
        .arg(sdk_dir().join("unified_ci_cd.py"))
        .env("CIGATE_URL", h.server.base_url())
        .env("CIGATE_TOKEN", &h.api_token)
        .env("ACCOUNT_ID", &account)
        .output()
        .await
        .expect("python runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "the SDK script failed:\n{stderr}");
    let out: Value = serde_json::from_slice(&output.stdout).expect("JSON from the SDK script");

    let s = h.sim.sim();
    let ws = s.workspace_domains()[0].clone();
    assert_eq!(strings(&out["workspaces"]), s.workspace_domains());
    assert_eq!(out["workspace_get"]["id"], ws.as_str());

    let sim_projects: BTreeSet<String> = s.project_names(&ws).into_iter().collect();
    let sdk_repos: Vec<String> = strings(&out["repos"]);
    assert_eq!(sdk_repos.len(), sim_projects.len(), "each repo once");
    assert_eq!(
        sdk_repos.iter().cloned().collect::<BTreeSet<_>>(),
        sim_projects
    );
    assert_eq!(out["repo_get"]["id"], sdk_repos[0].as_str());

    for project in &sim_projects {
        let p = &out["projects"][project];
        let base = format!("/workspaces/{ws}/projects/{project}");
        let branches = buddy(&h, &format!("{base}/repository/branches")).await;
        let names: Vec<String> = branches["branches"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b["name"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(strings(&p["branches"]), names, "{project} branches");

        let pulls = buddy(&h, &format!("{base}/repository/pulls")).await;
        let numbers: Vec<String> = pulls["pull_requests"]
            .as_array()
            .unwrap()
            .iter()
            .map(|pr| {
                pr["name"]
                    .as_str()
                    .unwrap()
                    .trim_start_matches("pull/")
                    .to_owned()
            })
            .collect();
        let sdk_numbers: Vec<String> = p["pull_requests"]
            .as_array()
            .unwrap()
            .iter()
            .map(|pr| pr["id"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(sdk_numbers, numbers, "{project} pull requests");

        let pipelines: Vec<String> = s
            .pipeline_ids(&ws, project)
            .iter()
            .map(u64::to_string)
            .collect();
        assert_eq!(strings(&p["workflows"]), pipelines, "{project} workflows");
        let mut total = 0;
        for pipeline in s.pipeline_ids(&ws, project) {
            let n = s.execution_count(&ws, project, pipeline);
            total += n;
            let expected: Vec<String> = (1..=n).rev().map(|i| i.to_string()).collect();
            assert_eq!(
                strings(&p["jobs"][pipeline.to_string()]),
                expected,
                "{project}/{pipeline} jobs, each once, newest first"
            );
        }
        let merged = strings(&p["jobs_merged"]);
        assert_eq!(merged.len() as u64, total, "{project} merged jobs");
        assert_eq!(
            merged.iter().collect::<BTreeSet<_>>().len(),
            merged.len(),
            "no job twice in the merged feed"
        );
    }

    let gets = &out["gets"];
    assert_eq!(gets["branch_main"]["name"], "main");
    assert!(gets["branch_main"]["last_commit"].is_string());
    // A branch name with `/` cannot be sent as is (the SDK does not encode path ids)...
    assert_eq!(gets["branch_slash_raw"]["error_status"], 404);
    // ...and works once the caller percent-encodes it.
    assert_eq!(gets["branch_slash_encoded"]["name"], "feature/new-checkout");
    let pr = &gets["pull_request"];
    assert!(pr["number"].is_u64(), "{pr}");
    assert!(pr["url"].as_str().unwrap().contains("/pull/"));
    let repo = &sdk_repos[0];
    let first_pipeline = s.pipeline_ids(&ws, repo)[0];
    assert_eq!(gets["workflow"]["id"], first_pipeline.to_string());
    assert_eq!(gets["workflow"]["repo"], repo.as_str());
    let newest = s.execution_count(&ws, repo, first_pipeline).to_string();
    assert_eq!(gets["job"]["id"], newest.as_str());
    assert!(gets["job"]["steps"].is_array());
    assert_eq!(gets["job_missing"]["error_status"], 404);
}
