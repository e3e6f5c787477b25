//! Cost of the Unified API's own work per item, for every resource: a Buddy list page as
//! it arrives (bytes) taken through what the provider and the server do with it (parse,
//! map to the unified model, keep Buddy's object as `remote_data`, render the list
//! envelope's bytes), and signing/verifying cursors. Results and the commands are in
//! docs/benchmarks.md.
//!
//! `MAPPING_IR=<resource> MAPPING_IR_PAGES=<n>` runs `n` pages of one resource and exits
//! without criterion, for instruction counts under `valgrind --tool=callgrind` (the
//! difference between two page counts, divided, is the cost per page).

use cigate_buddy::mapping::{records, JobContext};
use cigate_buddy::wire;
use cigate_core::{CursorBinding, CursorCodec, ListQuery, Record, RenderOptions, Rendered};
use criterion::{black_box, Criterion, Throughput};
use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::{json, Value};

/// Buddy's objects as its list pages return them, one realistic item per resource.
mod fixtures {
    use serde_json::{json, Value};

    pub fn workspace(i: u64) -> Value {
        json!({"url": format!("https://api.buddy.works/workspaces/acme-{i}"),
            "html_url": format!("https://app.buddy.works/acme-{i}"),
            "id": i, "owner_id": 1, "name": format!("Acme {i}"), "domain": format!("acme-{i}"),
            "frozen": false, "create_date": "2016-02-29T11:22:40Z"})
    }

    pub fn project(i: u64) -> Value {
        json!({"url": format!("https://api.buddy.works/workspaces/acme/projects/company-website-{i}"),
            "html_url": format!("https://app.buddy.works/acme/company-website-{i}"),
            "name": format!("company-website-{i}"), "display_name": format!("Company Website {i}"),
            "status": "ACTIVE", "create_date": "2016-02-29T11:23:04Z",
            "created_by": {"url": "https://api.buddy.works/workspaces/acme/members/1",
                "html_url": "https://app.buddy.works/acme/-/team/1", "id": 1, "name": "Mike Benson",
                "avatar_url": "https://app.buddy.works/image-server/user/0/0/0/0/0/0/1/d643744fbe5ebf2906a4d075a5b97110/w/32/32/AVATAR.png",
                "title": "Creator", "email": "mike@acme.example", "admin": true, "workspace_owner": true},
            "http_repository": format!("https://app.buddy.works/acme/company-website-{i}"),
            "ssh_repository": format!("buddy@app.buddy.works:acme/company-website-{i}"),
            "default_branch": "main", "access": "PRIVATE", "fetch_submodules": false,
            "allow_pull_requests": true, "without_repository": false})
    }

    pub fn branch(i: u64) -> Value {
        json!({"url": format!("https://api.buddy.works/workspaces/acme/projects/company-website/repository/branches/feature-{i}"),
            "html_url": format!("https://app.buddy.works/acme/company-website/repository/branch/feature-{i}"),
            "name": format!("feature-{i}"), "default": i == 1,
            "commit": {"url": "https://api.buddy.works/workspaces/acme/projects/company-website/repository/commits/506a3963507943d6908154f4bc9646e829128a08",
                "html_url": "https://app.buddy.works/acme/company-website/repository/commit/506a3963507943d6908154f4bc9646e829128a08",
                "revision": "506a3963507943d6908154f4bc9646e829128a08",
                "author_date": "2024-05-02T09:58:00Z", "commit_date": "2024-05-02T09:58:00Z",
                "message": "Fix checkout flow\n\nThe cart kept the old total after a coupon was removed.\n",
                "committer": {"name": "Mike Benson", "email": "mike@acme.example"},
                "author": {"url": "https://api.buddy.works/workspaces/acme/members/1", "id": 1,
                    "name": "Mike Benson", "email": "mike@acme.example"}}})
    }

    pub fn pull_request(i: u64) -> Value {
        json!({"url": format!("https://api.buddy.works/workspaces/acme/projects/company-website/repository/pulls/{i}"),
            "html_url": format!("https://app.buddy.works/acme/company-website/repository/pull/{i}"),
            "name": format!("pull/{i}"),
            "github_html_url": format!("https://github.com/acme/company-website/pull/{i}")})
    }

    pub fn pipeline(i: u64) -> Value {
        json!({"url": format!("https://api.buddy.works/workspaces/acme/projects/company-website/pipelines/{i}"),
            "html_url": format!("https://app.buddy.works/acme/company-website/pipelines/pipeline/{i}"),
            "id": i, "identifier": format!("build-and-test-{i}"), "name": format!("Build & test {i}"),
            "definition_source": "LOCAL", "refs": ["refs/heads/main"],
            "events": [{"type": "PUSH", "refs": ["refs/heads/main"]}],
            "trigger_conditions": [{"trigger_condition": "ON_CHANGE"}],
            "loop": [], "priority": "NORMAL", "last_execution_status": "SUCCESSFUL",
            "last_execution_revision": "506a3963507943d6908154f4bc9646e829128a08",
            "create_date": "2016-02-29T11:23:12Z", "disabled": false, "paused": false,
            "always_from_scratch": false, "fail_on_prepare_env_warning": true,
            "concurrent_pipeline_runs": false, "do_not_create_commit_status": false,
            "project": {"url": "https://api.buddy.works/workspaces/acme/projects/company-website",
                "html_url": "https://app.buddy.works/acme/company-website",
                "name": "company-website", "display_name": "Company Website", "status": "ACTIVE"}})
    }

    /// An execution with five actions run.
    pub fn execution(id: u64) -> Value {
        let actions: Vec<Value> = ["Checkout", "Install", "Lint", "Test", "Deploy to staging"]
            .iter()
            .enumerate()
            .map(|(i, name)| {
                json!({
                    "url": format!("https://api.buddy.works/workspaces/acme/projects/company-website/pipelines/7/executions/{id}/action_executions/{}", 100 + i),
                    "html_url": format!("https://app.buddy.works/acme/company-website/pipelines/pipeline/7/execution/{id}/action/{}", 100 + i),
                    "action_execution_id": format!("{}", 100 + i),
                    "status": "SUCCESSFUL",
                    "progress": 1.0,
                    "start_date": format!("2024-05-02T10:0{i}:00Z"),
                    "finish_date": format!("2024-05-02T10:0{i}:45Z"),
                    "action": {
                        "url": format!("https://api.buddy.works/workspaces/acme/projects/company-website/pipelines/7/actions/{}", 100 + i),
                        "html_url": format!("https://app.buddy.works/acme/company-website/pipelines/pipeline/7/action/{}/edit", 100 + i),
                        "id": 100 + i,
                        "name": name,
                        "type": "BUILD",
                        "trigger_time": "ON_EVERY_EXECUTION",
                    }
                })
            })
            .collect();
        json!({
            "url": format!("https://api.buddy.works/workspaces/acme/projects/company-website/pipelines/7/executions/{id}"),
            "html_url": format!("https://app.buddy.works/acme/company-website/pipelines/pipeline/7/execution/{id}"),
            "id": id,
            "start_date": "2024-05-02T10:00:00Z",
            "finish_date": "2024-05-02T10:04:45Z",
            "triggered_on": "EVENT",
            "refresh": false,
            "clear_cache": false,
            "priority": "NORMAL",
            "status": "SUCCESSFUL",
            "comment": "",
            "branch": {"url": "https://api.buddy.works/workspaces/acme/projects/company-website/repository/branches/main", "name": "main", "default": true},
            "to_revision": {"url": "https://api.buddy.works/workspaces/acme/projects/company-website/repository/commits/506a3963507943d6908154f4bc9646e829128a08",
                "revision": "506a3963507943d6908154f4bc9646e829128a08", "author_date": "2024-05-02T09:58:00Z",
                "message": "Fix checkout flow", "author": {"name": "Mike Benson", "email": "mike@acme.example"}},
            "from_revision": {"revision": "2d0b1f3c4e5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c"},
            "creator": {"url": "https://api.buddy.works/workspaces/acme/members/1", "id": 1, "name": "Mike Benson",
                "avatar_url": "https://app.buddy.works/image-server/user/0/0/0/0/0/0/1/d643744fbe5ebf2906a4d075a5b97110/w/32/32/AVATAR.png",
                "title": "Creator", "email": "mike@acme.example", "admin": true, "workspace_owner": true},
            "pipeline": {"url": "https://api.buddy.works/workspaces/acme/projects/company-website/pipelines/7", "id": 7,
                "name": "Build & test", "on": "EVENT", "refs": ["refs/heads/*"], "priority": "NORMAL",
                "last_execution_status": "SUCCESSFUL", "last_execution_revision": "506a3963507943d6908154f4bc9646e829128a08"},
            "action_executions": actions,
        })
    }
}

/// Items per page in the page benchmarks.
const PAGE: u64 = 50;

#[derive(Clone, Copy)]
enum Kind {
    Workspaces,
    Repos,
    Branches,
    PullRequests,
    Workflows,
    Jobs,
}

impl Kind {
    const ALL: [Kind; 6] = [
        Kind::Workspaces,
        Kind::Repos,
        Kind::Branches,
        Kind::PullRequests,
        Kind::Workflows,
        Kind::Jobs,
    ];

    fn name(self) -> &'static str {
        match self {
            Kind::Workspaces => "workspaces",
            Kind::Repos => "repos",
            Kind::Branches => "branches",
            Kind::PullRequests => "pull-requests",
            Kind::Workflows => "workflows",
            Kind::Jobs => "jobs",
        }
    }

    /// The key of Buddy's list envelope.
    fn key(self) -> &'static str {
        match self {
            Kind::Workspaces => "workspaces",
            Kind::Repos => "projects",
            Kind::Branches => "branches",
            Kind::PullRequests => "pull_requests",
            Kind::Workflows => "pipelines",
            Kind::Jobs => "executions",
        }
    }

    fn item(self, i: u64) -> Value {
        match self {
            Kind::Workspaces => fixtures::workspace(i),
            Kind::Repos => fixtures::project(i),
            Kind::Branches => fixtures::branch(i),
            Kind::PullRequests => fixtures::pull_request(i),
            Kind::Workflows => fixtures::pipeline(i),
            Kind::Jobs => fixtures::execution(4200 + i),
        }
    }

    /// A Buddy list page of `n` items, as bytes on the wire.
    fn page(self, n: u64) -> Vec<u8> {
        let items: Vec<Value> = (1..=n).map(|i| self.item(i)).collect();
        let mut page = json!({ self.key(): items });
        if let Kind::Jobs = self {
            page["page"] = json!(1);
            page["page_size"] = json!(n);
            page["total_page_count"] = json!(1);
            page["element_count"] = json!(n);
            page["total_element_count"] = json!(n);
        }
        serde_json::to_vec(&page).expect("a page serialises")
    }
}

fn context() -> JobContext {
    JobContext {
        workspace: Some("acme".into()),
        repo: Some("company-website".into()),
        workflow: Some("7".into()),
        workflow_name: None,
    }
}

/// The list envelope the server answers with.
#[derive(Serialize)]
struct Envelope<T> {
    result: Vec<T>,
    next_cursor: Option<String>,
    prev_cursor: Option<String>,
    result_count: usize,
}

/// One item as the provider maps it.
fn record(kind: Kind, raw: Box<RawValue>, ctx: &JobContext) -> Record {
    let ws = ctx.workspace.as_deref();
    let repo = ctx.repo.as_deref();
    match kind {
        Kind::Workspaces => records::workspace(raw),
        Kind::Repos => records::repo(raw, ws),
        Kind::Branches => records::branch(raw, repo),
        Kind::PullRequests => Record::new(records::pull_request(raw)),
        Kind::Workflows => records::workflow(raw, ws, repo),
        Kind::Jobs => records::job(raw, ctx),
    }
}

/// A Buddy page's bytes to the unified list envelope's bytes: what the client, the
/// provider and the server do for one page (no I/O).
fn unified_page(kind: Kind, bytes: &[u8], ctx: &JobContext, render: &RenderOptions) -> Vec<u8> {
    let page = wire::RawPage::parse(bytes, kind.key()).expect("Buddy's page is JSON");
    let result: Vec<Rendered> = page
        .items
        .into_iter()
        .map(|raw| record(kind, raw, ctx).render(render))
        .collect();
    let envelope = Envelope {
        result_count: result.len(),
        result,
        next_cursor: None,
        prev_cursor: None,
    };
    serde_json::to_vec(&envelope).expect("the envelope serialises")
}

/// The options callers pass that change the work: none, `truto_ignore_remote_data`,
/// `truto_exclude_fields`.
fn render_variants() -> [(&'static str, RenderOptions); 3] {
    [
        ("", RenderOptions::default()),
        (
            "/ignore_remote_data",
            RenderOptions {
                ignore_remote_data: true,
                ..RenderOptions::default()
            },
        ),
        (
            "/exclude_fields",
            RenderOptions {
                exclude_fields: vec!["steps".into(), "url".into()],
                ..RenderOptions::default()
            },
        ),
    ]
}

fn mapping_benches(c: &mut Criterion) {
    let ctx = context();
    let one = Kind::Jobs.page(1);
    c.bench_function("map_job/execution_with_5_actions", |b| {
        b.iter(|| {
            black_box(unified_page(
                Kind::Jobs,
                black_box(&one),
                &ctx,
                &RenderOptions::default(),
            ))
        })
    });
    let mut group = c.benchmark_group("page");
    group.throughput(Throughput::Elements(PAGE));
    for kind in Kind::ALL {
        let page = kind.page(PAGE);
        for (suffix, render) in render_variants() {
            if !suffix.is_empty() && !matches!(kind, Kind::Jobs) {
                continue;
            }
            group.bench_function(format!("{}{suffix}", kind.name()), |b| {
                b.iter(|| black_box(unified_page(kind, black_box(&page), &ctx, &render)))
            });
        }
    }
    group.finish();
}

fn cursor_benches(c: &mut Criterion) {
    let codec = CursorCodec::new(&[7u8; 32]);
    let query = ListQuery {
        workspace: Some("acme".into()),
        repo: Some("company-website".into()),
        workflow: Some("7".into()),
        limit: 37,
        ..ListQuery::default()
    };
    let binding = CursorBinding {
        environment_id: "0d6f2c1e-5b8a-4c1e-9a7d-3f2b1c0e9d8a".into(),
        account_id: "766cc1ee-6637-4aa1-a73e-a0c89ccc867c".into(),
        resource: "jobs".into(),
        filters: query.canonical(),
    };
    // One pipeline's offset, and a merged feed over eight pipelines.
    let offset = json!({"o": 4107});
    let merged = json!({"m": {"s": (0..8).map(|i| json!({"p": format!("company-website/{i}"), "o": 37 * i, "h": 4950 - i})).collect::<Vec<_>>()}});
    for (name, position) in [("offset", &offset), ("merged_8_pipelines", &merged)] {
        let cursor = codec.encode(&binding, position);
        c.bench_function(&format!("cursor/encode/{name}"), |b| {
            b.iter(|| black_box(codec.encode(&binding, black_box(position))))
        });
        c.bench_function(&format!("cursor/decode/{name}"), |b| {
            b.iter(|| black_box(codec.decode(&binding, black_box(&cursor))))
        });
    }
}

/// `MAPPING_IR`: `MAPPING_IR_PAGES` pages of one resource, nothing else.
fn instruction_count_run(resource: &str) {
    let kind = Kind::ALL
        .into_iter()
        .find(|k| k.name() == resource)
        .expect("MAPPING_IR names a resource");
    let pages: u64 = std::env::var("MAPPING_IR_PAGES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(100);
    let render = match std::env::var("MAPPING_IR_RENDER").as_deref() {
        Ok("ignore_remote_data") => render_variants()[1].1.clone(),
        Ok("exclude_fields") => render_variants()[2].1.clone(),
        _ => RenderOptions::default(),
    };
    let ctx = context();
    let page = kind.page(PAGE);
    for _ in 0..pages {
        black_box(unified_page(kind, black_box(&page), &ctx, &render));
    }
}

fn main() {
    if let Ok(resource) = std::env::var("MAPPING_IR") {
        instruction_count_run(&resource);
        return;
    }
    let mut c = Criterion::default().configure_from_args();
    mapping_benches(&mut c);
    cursor_benches(&mut c);
    c.final_summary();
}
