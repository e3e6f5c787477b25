//! Cost of the Unified API's own work per item: mapping a Buddy execution (with five
//! action executions) into a unified Job, and signing/verifying cursors. Results and the
//! command are in docs/benchmarks.md.

use cigate_buddy::mapping::{self, JobContext};
use cigate_buddy::wire;
use cigate_core::{CursorBinding, CursorCodec, ListQuery, Record};
use criterion::{black_box, criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use serde_json::{json, Value};

/// An execution as Buddy returns it in a list page, five actions run.
fn execution(id: u64) -> Value {
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

fn context() -> JobContext {
    JobContext {
        workspace: Some("acme".into()),
        repo: Some("company-website".into()),
        workflow: Some("7".into()),
        workflow_name: None,
    }
}

/// What the provider does per job on a list page: parse, map, serialise, keep the raw.
fn map_one(raw: Value, ctx: &JobContext) -> Record {
    Record::new(&mapping::job(&wire::parse(&raw), ctx, &raw), raw)
}

fn mapping_benches(c: &mut Criterion) {
    let ctx = context();
    let one = execution(4242);
    c.bench_function("map_job/execution_with_5_actions", |b| {
        b.iter_batched(
            || one.clone(),
            |raw| black_box(map_one(raw, &ctx)),
            BatchSize::SmallInput,
        )
    });
    let page: Vec<Value> = (1..=50).map(execution).collect();
    let mut group = c.benchmark_group("map_job_page");
    group.throughput(Throughput::Elements(page.len() as u64));
    group.bench_function("50_executions", |b| {
        b.iter_batched(
            || page.clone(),
            |raws| {
                black_box(
                    raws.into_iter()
                        .map(|raw| map_one(raw, &ctx))
                        .collect::<Vec<_>>(),
                )
            },
            BatchSize::SmallInput,
        )
    });
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

criterion_group!(benches, mapping_benches, cursor_benches);
criterion_main!(benches);
