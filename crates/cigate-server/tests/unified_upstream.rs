//! What the Unified API costs and says upstream: the fewest Buddy calls when paging
//! through HTTP and cursors, and Buddy's scope refusals named for the caller.

mod common;

use cigate_buddy_sim::{SimConfig, TokenSpec};
use common::{Backend, Harness};
use serde_json::Value;

#[tokio::test]
async fn five_thousand_jobs_with_limit_37_through_http_cost_the_minimum() {
    let config = SimConfig {
        seed: "workspaces=1,projects=1,pipelines=1,executions=5000"
            .parse()
            .unwrap(),
        // A budget the rate governor need not pace 136 calls against.
        rate_limit: "1000000/3600".parse().unwrap(),
        ..SimConfig::default()
    };
    let h = Harness::start_with(Backend::Sqlite, config).await.unwrap();
    let account = h.link().await;
    let s = h.sim.sim();
    let ws = s.workspace_domains()[0].clone();
    let project = s.project_names(&ws)[0].clone();
    let pipeline = s.pipeline_ids(&ws, &project)[0];
    assert_eq!(s.execution_count(&ws, &project, pipeline), 5000);
    let executions = format!("/workspaces/{ws}/projects/{project}/pipelines/{pipeline}/executions");
    s.reset_request_counts();

    let base = format!(
        "/unified/ci-cd/jobs?integrated_account_id={account}&workspace={ws}&repo={project}\
         &workflow={pipeline}&limit=37&truto_ignore_remote_data=true"
    );
    let mut ids: Vec<u64> = Vec::new();
    let mut pages = 0u64;
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("{base}&next_cursor={c}"),
            None => base.clone(),
        };
        let (status, page) = h.get_json(&path).await;
        assert_eq!(status, 200, "{page}");
        pages += 1;
        let items = page["result"].as_array().unwrap();
        assert!(items.len() <= 37);
        assert_eq!(page["result_count"], items.len());
        ids.extend(
            items
                .iter()
                .map(|j| j["id"].as_str().unwrap().parse::<u64>().unwrap()),
        );
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    // Each job exactly once, in Buddy's order (newest first, ids descending).
    assert_eq!(ids, (1..=5000).rev().collect::<Vec<u64>>());
    assert_eq!(pages, 5000u64.div_ceil(37));
    assert_eq!(s.request_count(Some("GET"), &executions), 136);
    assert_eq!(
        s.total_requests(),
        136,
        "no call besides the executions pages"
    );
}

#[tokio::test]
async fn a_missing_scope_is_named_and_recorded() {
    let h = Harness::start(Backend::Sqlite).await.unwrap();
    let token = h
        .sim
        .sim()
        .issue_token(TokenSpec::with_scopes(&["WORKSPACE", "REPOSITORY_READ"]));
    let response = h.link_with(&token).await;
    assert_eq!(response.status(), 201, "{:?}", response.text().await);
    let account: Value = response.json().await.unwrap();
    let id = account["id"].as_str().unwrap().to_owned();
    assert!(account["last_forbidden_error"].is_null());

    let s = h.sim.sim();
    let ws = s.workspace_domains()[0].clone();
    let project = s.project_names(&ws)[0].clone();
    let (status, body) = h
        .get_json(&format!(
            "/unified/ci-cd/jobs?integrated_account_id={id}&repo={project}"
        ))
        .await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["type"], "/problems/remote-error");
    assert_eq!(body["truto_is_remote_error"], true);
    let detail = body["detail"].as_str().unwrap();
    let scopes = body["details"]["missing_scopes"].as_array().unwrap();
    assert!(
        scopes
            .iter()
            .any(|s| s == "EXECUTION_INFO" || s == "PIPELINE_READ"),
        "{body}"
    );
    for scope in scopes {
        assert!(detail.contains(scope.as_str().unwrap()), "{detail}");
    }

    let (status, account) = h.get_json(&format!("/integrated-account/{id}")).await;
    assert_eq!(status, 200);
    let recorded = account["last_forbidden_error"].as_str().unwrap_or_default();
    assert!(!recorded.is_empty(), "{account}");

    // What the token may read still answers.
    let (status, body) = h
        .get_json(&format!("/unified/ci-cd/repos?integrated_account_id={id}"))
        .await;
    assert_eq!(status, 200, "{body}");
}
