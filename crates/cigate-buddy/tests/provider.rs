//! `BuddyProvider` over real HTTP against the Buddy simulator: paging costs, merged feeds,
//! filters, scoping errors and single-object reads.

use std::collections::HashSet;

use cigate_buddy::base_url::UpstreamPolicy;
use cigate_buddy::client::{BuddyClient, HttpPool};
use cigate_buddy::BuddyProvider;
use cigate_buddy_sim::{SeedSpec, SimConfig, SimHandle, TimeMode};
use cigate_core::{JobFilters, ListQuery, Provider, ProviderError, Resource};
use serde_json::Value;
use url::Url;

const TOKEN: &str = "732e9e20-50ba-4047-8a7b-c9b17259a2a2";

async fn sim(seed: SeedSpec) -> (SimHandle, BuddyProvider) {
    let handle = cigate_buddy_sim::start(SimConfig {
        seed,
        tokens: vec![TOKEN.into()],
        rate_limit: "1000000/3600".parse().unwrap(),
        time: TimeMode::Manual,
        ..Default::default()
    })
    .await
    .unwrap();
    let pool = HttpPool::new(UpstreamPolicy::ALLOW_PRIVATE).unwrap();
    let client = BuddyClient::new(
        &pool,
        Url::parse(&handle.base_url()).unwrap(),
        cigate_core::Secret::new(TOKEN),
    );
    (handle, BuddyProvider::new(client))
}

fn seed(projects: u32, pipelines: u32, executions: u64) -> SeedSpec {
    SeedSpec {
        workspaces: 1,
        projects,
        pipelines,
        executions,
        ..SeedSpec::default()
    }
}

/// Pages through a list, returning every unified item and the number of pages.
async fn drain(
    provider: &BuddyProvider,
    resource: Resource,
    query: &ListQuery,
) -> (Vec<Value>, usize) {
    let mut items = Vec::new();
    let mut position = None;
    let mut pages = 0;
    loop {
        let page = provider.list(resource, query, position).await.unwrap();
        pages += 1;
        assert!(page.items.len() <= query.limit as usize);
        items.extend(page.items.into_iter().map(|r| json_of(&r.unified)));
        match page.next {
            Some(next) => {
                // The server signs it into a cursor: it must survive a JSON round trip.
                position = Some(serde_json::from_str(&next.to_string()).unwrap());
            }
            None => break,
        }
        assert!(pages < 10_000, "runaway paging");
    }
    (items, pages)
}

fn job_ids(items: &[Value]) -> Vec<String> {
    items
        .iter()
        .map(|j| {
            format!(
                "{}/{}/{}",
                j["repo"].as_str().unwrap(),
                j["workflow"].as_str().unwrap(),
                j["id"].as_str().unwrap()
            )
        })
        .collect()
}

#[tokio::test]
async fn five_thousand_jobs_with_limit_37_cost_the_minimum() {
    let (handle, provider) = sim(seed(1, 1, 5000)).await;
    let s = handle.sim();
    let ws = s.workspace_domains()[0].clone();
    let project = s.project_names(&ws)[0].clone();
    let pipeline = s.pipeline_ids(&ws, &project)[0];
    let query = ListQuery {
        workspace: Some(ws.clone()),
        repo: Some(project.clone()),
        workflow: Some(pipeline.to_string()),
        limit: 37,
        ..Default::default()
    };
    let executions = format!("/workspaces/{ws}/projects/{project}/pipelines/{pipeline}/executions");
    s.reset_request_counts();
    let (items, pages) = drain(&provider, Resource::Jobs, &query).await;
    assert_eq!(pages, 136);
    assert_eq!(s.request_count(Some("GET"), &executions), 136);
    assert_eq!(s.total_requests(), 136);
    // Each job exactly once, newest first (Buddy's order: ids descending).
    let ids: Vec<u64> = items
        .iter()
        .map(|j| j["id"].as_str().unwrap().parse().unwrap())
        .collect();
    assert_eq!(ids, (1..=5000).rev().collect::<Vec<u64>>());
    assert_eq!(items[0]["workflow"], pipeline.to_string());
    assert_eq!(items[0]["repo"], project);
    assert_eq!(items[0]["workspace"], ws);
    assert!(items[0]["remote_data"].is_object());
}

#[tokio::test]
async fn limits_above_fifty_tile_pages_exactly() {
    let (handle, provider) = sim(seed(1, 1, 300)).await;
    let s = handle.sim();
    let ws = s.workspace_domains()[0].clone();
    let project = s.project_names(&ws)[0].clone();
    let pipeline = s.pipeline_ids(&ws, &project)[0];
    let query = ListQuery {
        workspace: Some(ws),
        repo: Some(project),
        workflow: Some(pipeline.to_string()),
        limit: 120,
        ..Default::default()
    };
    s.reset_request_counts();
    let (items, pages) = drain(&provider, Resource::Jobs, &query).await;
    assert_eq!(pages, 3);
    // [0,120): 50+50+20; [120,240): 40+40+40; [240,300): 48+48 (the total says stop).
    assert_eq!(s.total_requests(), 8);
    let ids: HashSet<String> = job_ids(&items).into_iter().collect();
    assert_eq!(ids.len(), 300);
}

#[tokio::test]
async fn merged_feeds_lose_and_repeat_nothing() {
    let (handle, provider) = sim(seed(3, 3, 40)).await;
    let s = handle.sim();
    let ws = s.workspace_domains()[0].clone();
    let projects = s.project_names(&ws);
    let total: u64 = projects
        .iter()
        .flat_map(|p| {
            s.pipeline_ids(&ws, p)
                .into_iter()
                .map(|id| s.execution_count(&ws, p, id))
                .collect::<Vec<_>>()
        })
        .sum();
    // Whole workspace, no `repo`, an awkward limit.
    let query = ListQuery {
        workspace: Some(ws.clone()),
        limit: 7,
        ..Default::default()
    };
    s.reset_request_counts();
    let (items, pages) = drain(&provider, Resource::Jobs, &query).await;
    eprintln!(
        "merged: {total} jobs, {pages} pages, {} upstream calls",
        s.total_requests()
    );
    let ids = job_ids(&items);
    let unique: HashSet<&String> = ids.iter().collect();
    assert_eq!(ids.len() as u64, total);
    assert_eq!(unique.len(), ids.len());
    // Newest first across pipelines.
    let starts: Vec<&str> = items
        .iter()
        .map(|j| j["started_at"].as_str().unwrap_or("9999"))
        .collect();
    for pair in starts.windows(2) {
        let a = chrono::DateTime::parse_from_rfc3339(pair[0]).ok();
        let b = chrono::DateTime::parse_from_rfc3339(pair[1]).ok();
        if let (Some(a), Some(b)) = (a, b) {
            assert!(a >= b, "{a} before {b}");
        }
    }
    // One project, limit above a Buddy page.
    let one = ListQuery {
        workspace: Some(ws.clone()),
        repo: Some(projects[0].clone()),
        limit: 55,
        ..Default::default()
    };
    let (items, _) = drain(&provider, Resource::Jobs, &one).await;
    let ids = job_ids(&items);
    assert_eq!(ids.iter().collect::<HashSet<_>>().len(), ids.len());
    let expected: u64 = s
        .pipeline_ids(&ws, &projects[0])
        .into_iter()
        .map(|id| s.execution_count(&ws, &projects[0], id))
        .sum();
    assert_eq!(ids.len() as u64, expected);
}

#[tokio::test]
async fn filters_fill_pages_and_match_everything_once() {
    let (handle, provider) = sim(seed(2, 2, 60)).await;
    let s = handle.sim();
    let ws = s.workspace_domains()[0].clone();
    let all_query = ListQuery {
        workspace: Some(ws.clone()),
        limit: 1000,
        ..Default::default()
    };
    let (all, _) = drain(&provider, Resource::Jobs, &all_query).await;
    let failed: Vec<String> = job_ids(
        &all.iter()
            .filter(|j| j["conclusion"] == "failed")
            .cloned()
            .collect::<Vec<_>>(),
    );
    assert!(!failed.is_empty() && failed.len() < all.len());
    let query = ListQuery {
        workspace: Some(ws.clone()),
        limit: 3,
        filters: JobFilters {
            status: Some("completed".into()),
            conclusion: Some("failed".into()),
            ..Default::default()
        },
        ..Default::default()
    };
    let mut position = None;
    let mut got = Vec::new();
    loop {
        let page = provider
            .list(Resource::Jobs, &query, position)
            .await
            .unwrap();
        let n = page.items.len();
        got.extend(page.items.into_iter().map(|r| json_of(&r.unified)));
        match page.next {
            Some(next) => {
                // Full pages while more matches exist.
                assert!(n == 3 || got.len() == failed.len(), "short page {n}");
                position = Some(next);
            }
            None => break,
        }
    }
    assert_eq!(job_ids(&got), failed);

    // created_at window: everything from the middle of the feed on.
    let pivot = all[all.len() / 2]["started_at"]
        .as_str()
        .unwrap()
        .to_owned();
    let since: chrono::DateTime<chrono::Utc> = pivot.parse().unwrap();
    let recent_query = ListQuery {
        workspace: Some(ws),
        limit: 10,
        filters: JobFilters {
            created_after: Some(since),
            ..Default::default()
        },
        ..Default::default()
    };
    let (recent, _) = drain(&provider, Resource::Jobs, &recent_query).await;
    let expected = all
        .iter()
        .filter(|j| {
            j["started_at"]
                .as_str()
                .and_then(|d| d.parse::<chrono::DateTime<chrono::Utc>>().ok())
                .is_some_and(|d| d >= since)
        })
        .count();
    assert_eq!(recent.len(), expected);
}

#[tokio::test]
async fn every_resource_lists_and_gets() {
    let (handle, provider) = sim(seed(2, 2, 5)).await;
    let s = handle.sim();
    let ws = s.workspace_domains()[0].clone();
    let project = s.project_names(&ws)[0].clone();
    let pipeline = s.pipeline_ids(&ws, &project)[0].to_string();

    // `workspace` defaults: the account has exactly one.
    let (workspaces, _) = drain(&provider, Resource::Workspaces, &ListQuery::default()).await;
    assert_eq!(workspaces.len(), 1);
    assert_eq!(workspaces[0]["id"], ws);
    let (repos, _) = drain(&provider, Resource::Repos, &ListQuery::default()).await;
    assert_eq!(repos.len(), 2);
    assert!(repos.iter().any(|r| r["id"] == project));

    let scoped = ListQuery {
        workspace: Some(ws.clone()),
        repo: Some(project.clone()),
        limit: 1,
        ..Default::default()
    };
    let (branches, _) = drain(&provider, Resource::Branches, &scoped).await;
    assert!(!branches.is_empty());
    let (workflows, _) = drain(&provider, Resource::Workflows, &scoped).await;
    assert_eq!(workflows.len(), 2);
    let (_prs, _) = drain(&provider, Resource::PullRequests, &scoped).await;

    let get = |r, id: &str, q: &ListQuery| {
        let id = id.to_owned();
        let q = q.clone();
        let provider = &provider;
        async move { provider.get(r, &id, &q).await }
    };
    let w = get(Resource::Workspaces, &ws, &scoped).await.unwrap();
    assert_eq!(json_of(&w.record.unified)["id"], ws);
    let r = get(Resource::Repos, &project, &scoped).await.unwrap();
    assert_eq!(json_of(&r.record.unified)["id"], project);
    assert!(r.rate_limit.is_some_and(|l| l.remaining.is_some()));
    let branch = branches[0]["id"].as_str().unwrap();
    let b = get(Resource::Branches, branch, &scoped).await.unwrap();
    assert_eq!(json_of(&b.record.unified)["name"], branch);
    let wf = get(Resource::Workflows, &pipeline, &scoped).await.unwrap();
    assert_eq!(json_of(&wf.record.unified)["id"], pipeline);

    let job_query = ListQuery {
        workflow: Some(pipeline.clone()),
        ..scoped.clone()
    };
    let job = get(Resource::Jobs, "1", &job_query).await.unwrap();
    assert_eq!(json_of(&job.record.unified)["id"], "1");
    assert_eq!(json_of(&job.record.unified)["workflow"], pipeline);
    assert!(
        json_of(&job.record.unified)["steps"].is_array(),
        "{}",
        json_of(&job.record.unified)
    );
    assert_eq!(job.record.raw().unwrap().to_value()["id"], 1);

    // Missing scoping, impossible ids, and Buddy's own 404.
    match get(Resource::Jobs, "1", &scoped).await {
        Err(ProviderError::MissingParameter(p)) => assert_eq!(p, vec!["workflow"]),
        other => panic!("{other:?}"),
    }
    let no_repo = ListQuery {
        workspace: Some(ws.clone()),
        ..Default::default()
    };
    match provider.list(Resource::Branches, &no_repo, None).await {
        Err(ProviderError::MissingParameter(p)) => assert_eq!(p, vec!["repo"]),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        get(Resource::Jobs, "abc", &job_query).await,
        Err(ProviderError::NotFound(_))
    ));
    match get(Resource::Jobs, "999999", &job_query).await {
        Err(ProviderError::Upstream { status, .. }) => assert_eq!(status, 404),
        other => panic!("{other:?}"),
    }
    // A position from elsewhere is refused, not misread.
    assert!(matches!(
        provider
            .list(Resource::Repos, &scoped, Some(serde_json::json!({"m": 1})))
            .await,
        Err(ProviderError::InvalidPosition)
    ));
}

#[tokio::test]
async fn workspace_is_required_when_ambiguous() {
    let (_handle, provider) = sim(SeedSpec {
        workspaces: 2,
        ..seed(1, 1, 1)
    })
    .await;
    match provider
        .list(Resource::Repos, &ListQuery::default(), None)
        .await
    {
        Err(ProviderError::MissingParameter(p)) => assert_eq!(p, vec!["workspace"]),
        other => panic!("{other:?}"),
    }
    match provider
        .list(Resource::Branches, &ListQuery::default(), None)
        .await
    {
        Err(ProviderError::MissingParameter(p)) => assert_eq!(p, vec!["workspace", "repo"]),
        other => panic!("{other:?}"),
    }
}

/// A Buddy that ignores `page` and always answers a full page of projects: the job feed's
/// discovery stops after `MAX_PAGES` pages with a clear error instead of paging forever.
#[tokio::test]
async fn a_list_that_never_runs_dry_is_refused_after_max_pages() {
    use axum::extract::State;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;

    let pages = Arc::new(AtomicU64::new(0));
    let full_page = |State(pages): State<Arc<AtomicU64>>| async move {
        pages.fetch_add(1, Ordering::SeqCst);
        let projects: Vec<Value> = (0..cigate_buddy::provider::MAX_PER_PAGE)
            .map(|i| serde_json::json!({"name": format!("p{i}"), "display_name": "P"}))
            .collect();
        axum::Json(serde_json::json!({"url": "u", "html_url": "h", "projects": projects}))
    };
    let app = axum::Router::new()
        .route("/workspaces/acme/projects", axum::routing::get(full_page))
        .with_state(Arc::clone(&pages));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let pool = HttpPool::new(UpstreamPolicy::ALLOW_PRIVATE).unwrap();
    let provider = BuddyProvider::new(BuddyClient::new(
        &pool,
        Url::parse(&format!("http://{addr}")).unwrap(),
        cigate_core::Secret::new(TOKEN),
    ));
    let query = ListQuery {
        workspace: Some("acme".into()),
        limit: 10,
        ..ListQuery::default()
    };
    match provider.list(Resource::Jobs, &query, None).await {
        Err(ProviderError::Transport(message)) => {
            assert!(message.contains("full pages after 1000 pages"), "{message}")
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        pages.load(Ordering::SeqCst),
        cigate_buddy::provider::MAX_PAGES
    );
}

/// Buddy's cloud creates workspaces in its web app only: the provider says so without
/// calling Buddy (the URL here could not be reached).
#[tokio::test]
async fn buddys_cloud_does_not_create_workspaces_through_the_api() {
    let pool = HttpPool::new(UpstreamPolicy::default()).unwrap();
    for cloud in ["https://api.buddy.works", "https://api.eu.buddy.works"] {
        let client = BuddyClient::new(
            &pool,
            Url::parse(cloud).unwrap(),
            cigate_core::Secret::new("token"),
        );
        let provider = BuddyProvider::new(client);
        let input = cigate_core::WorkspaceInput {
            domain: "acme-eu".into(),
            name: None,
        };
        let err = provider
            .writes()
            .unwrap()
            .create_workspace(&input)
            .await
            .unwrap_err();
        assert!(
            matches!(&err, ProviderError::NotAllowed(why) if why.contains("app.buddy.works")),
            "{err:?}"
        );
    }
}

/// A record's unified object as JSON, as the API shows it.
fn json_of(unified: &cigate_core::Unified) -> serde_json::Value {
    serde_json::to_value(unified).unwrap()
}
