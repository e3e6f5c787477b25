//! Pull requests enriched from the executions that ran on them: what is filled in, what
//! stays absent, and what it costs upstream.

use cigate_buddy::base_url::UpstreamPolicy;
use cigate_buddy::client::{BuddyClient, HttpPool};
use cigate_buddy::BuddyProvider;
use cigate_buddy_sim::{SimConfig, SimHandle, TimeMode, TokenSpec};
use cigate_core::{ListQuery, Provider, Resource};
use serde_json::Value;
use url::Url;

async fn start() -> SimHandle {
    cigate_buddy_sim::start(SimConfig {
        rate_limit: "1000000/3600".parse().unwrap(),
        time: TimeMode::Manual,
        ..Default::default()
    })
    .await
    .unwrap()
}

fn provider(handle: &SimHandle, token: String) -> BuddyProvider {
    let pool = HttpPool::new(UpstreamPolicy::ALLOW_PRIVATE).unwrap();
    let client = BuddyClient::new(
        &pool,
        Url::parse(&handle.base_url()).unwrap(),
        cigate_core::Secret::new(token),
    );
    BuddyProvider::new(client)
}

fn query(ws: &str, repo: &str) -> ListQuery {
    ListQuery {
        workspace: Some(ws.to_owned()),
        repo: Some(repo.to_owned()),
        limit: 1000,
        ..Default::default()
    }
}

/// The project with pull requests, and its pipelines that run on them.
async fn project_with_pulls(handle: &SimHandle, p: &BuddyProvider) -> (String, String, Vec<Value>) {
    let s = handle.sim();
    let ws = s.workspace_domains()[0].clone();
    for project in s.project_names(&ws) {
        let q = query(&ws, &project);
        let pulls = p.list(Resource::PullRequests, &q, None).await.unwrap();
        if pulls.items.is_empty() {
            continue;
        }
        let workflows = p.list(Resource::Workflows, &q, None).await.unwrap();
        let pr_pipelines = workflows
            .items
            .into_iter()
            .map(|r| r.raw().unwrap().to_value())
            .filter(|raw| {
                raw["refs"]
                    .as_array()
                    .is_some_and(|refs| refs.iter().any(|r| r == "refs/pull/*"))
            })
            .collect();
        return (ws, project, pr_pipelines);
    }
    panic!("the seed has a project with pull requests");
}

#[tokio::test]
async fn pull_requests_carry_the_newest_execution_that_ran_on_them() {
    let handle = start().await;
    let s = handle.sim();
    let p = provider(&handle, s.issue_token(TokenSpec::all_scopes()));
    let (ws, project, pr_pipelines) = project_with_pulls(&handle, &p).await;
    assert!(!pr_pipelines.is_empty());

    // What the executions say: the newest run on pull/3 across the PR pipelines.
    let mut newest: Option<(String, String)> = None;
    for pipeline in &pr_pipelines {
        let q = ListQuery {
            workflow: Some(pipeline["id"].to_string()),
            ..query(&ws, &project)
        };
        let jobs = p.list(Resource::Jobs, &q, None).await.unwrap();
        for job in jobs.items.iter().map(|r| json_of(&r.unified)) {
            if job["branch"] == "pull/3" {
                let at = job["started_at"].as_str().unwrap().to_owned();
                if newest.as_ref().is_none_or(|(t, _)| at > *t) {
                    newest = Some((at, job["commit"].as_str().unwrap().to_owned()));
                }
            }
        }
    }
    let (started, commit) = newest.expect("the seed runs pull/3");

    s.reset_request_counts();
    let page = p
        .list(Resource::PullRequests, &query(&ws, &project), None)
        .await
        .unwrap();
    // pulls + pipelines + one executions page per PR pipeline.
    assert_eq!(s.total_requests(), 2 + pr_pipelines.len() as u64);
    let executions = format!("/workspaces/{ws}/projects/{project}/pipelines/");
    assert_eq!(
        s.request_count(Some("GET"), &executions),
        pr_pipelines.len() as u64
    );
    let by_number = |n: u64| {
        page.items
            .iter()
            .map(|r| json_of(&r.unified))
            .find(|pr| pr["number"] == n)
            .unwrap()
            .clone()
    };
    let three = by_number(3);
    assert_eq!(three["head_branch"]["last_commit"], commit.as_str());
    assert!(three["head_branch"].get("name").is_none(), "not invented");
    let updated = three["updated_at"].as_str().unwrap();
    assert_eq!(
        chrono::DateTime::parse_from_rfc3339(updated).unwrap(),
        chrono::DateTime::parse_from_rfc3339(&started).unwrap()
    );
    // No execution ran on #5: nothing is filled in.
    let five = by_number(5);
    assert!(five.get("head_branch").is_none(), "{five}");
    assert!(five.get("updated_at").is_none(), "{five}");

    // A single read is enriched the same way, at the same cost.
    s.reset_request_counts();
    let one = p
        .get(Resource::PullRequests, "3", &query(&ws, &project))
        .await
        .unwrap();
    assert_eq!(json_of(&one.record.unified), three);
    assert_eq!(s.total_requests(), 2 + pr_pipelines.len() as u64);
}

#[tokio::test]
async fn without_execution_scope_pull_requests_still_answer_unenriched() {
    let handle = start().await;
    let s = handle.sim();
    let full = provider(&handle, s.issue_token(TokenSpec::all_scopes()));
    let (ws, project, _) = project_with_pulls(&handle, &full).await;
    let p = provider(
        &handle,
        s.issue_token(TokenSpec::with_scopes(&["WORKSPACE", "REPOSITORY_READ"])),
    );
    let page = p
        .list(Resource::PullRequests, &query(&ws, &project), None)
        .await
        .unwrap();
    assert!(!page.items.is_empty());
    for pr in page.items.iter().map(|r| json_of(&r.unified)) {
        assert!(pr.get("head_branch").is_none(), "{pr}");
        assert!(pr["url"].is_string());
    }
}

/// A record's unified object as JSON, as the API shows it.
fn json_of(unified: &cigate_core::Unified) -> serde_json::Value {
    serde_json::to_value(unified).unwrap()
}
