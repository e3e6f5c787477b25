//! Deterministic seeded data. Everything is a pure function of the seed spec and
//! the seeding instant, so equal `--seed` values give equal data, and seeded
//! executions are computed per request instead of being stored.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Duration, Utc};
use serde_json::json;

use crate::config::SeedSpec;
use crate::prng::{below, h, hex_id, pick};
use crate::state::{
    Action, ActionExecution, Branch, Commit, Execution, Member, Pipeline, Project, State, Tag,
    Variable, Workspace,
};

const WORKSPACE_DOMAINS: &[&str] = &[
    "acme", "globex", "initech", "umbrella", "hooli", "stark", "wayne", "tyrell",
];
const PROJECT_AREAS: &[&str] = &[
    "payments",
    "billing",
    "auth",
    "users",
    "search",
    "inventory",
    "checkout",
    "notifications",
    "analytics",
    "orders",
    "catalog",
    "gateway",
    "shipping",
    "reporting",
    "profile",
    "media",
    "pricing",
    "recommendations",
    "ledger",
    "identity",
];
const PROJECT_KINDS: &[&str] = &[
    "api", "service", "web", "worker", "app", "frontend", "mobile", "cli", "sdk", "jobs",
];
const PIPELINE_NAMES: &[&str] = &[
    "Build & test",
    "Deploy to production",
    "Deploy to staging",
    "Lint",
    "Nightly integration tests",
    "Release",
    "Security scan",
    "Preview environment",
    "Database migrations",
    "Docs site",
];
const FIRST_NAMES: &[&str] = &[
    "Mike", "Anna", "Jonas", "Priya", "Kenji", "Fatima", "Lucas", "Sofia", "Omar", "Elena",
    "Tomasz", "Grace",
];
const LAST_NAMES: &[&str] = &[
    "Benson", "Kowalski", "Novak", "Sharma", "Tanaka", "Haddad", "Silva", "Rossi", "Farouk",
    "Petrova", "Nowak", "Hopper",
];
const TITLES: &[&str] = &[
    "Engineer",
    "Tech lead",
    "SRE",
    "Designer",
    "Creative director",
];
const COMMIT_VERBS: &[&str] = &[
    "Fix", "Add", "Refactor", "Update", "Remove", "Improve", "Bump", "Document",
];
const COMMIT_OBJECTS: &[&str] = &[
    "retry logic in the HTTP client",
    "pagination of the orders endpoint",
    "flaky integration test",
    "dependency versions",
    "error handling for expired sessions",
    "README setup steps",
    "database index on created_at",
    "feature flag for the new checkout",
    "logging of webhook deliveries",
    "timeouts on outbound calls",
    "Dockerfile base image",
    "currency rounding",
];

/// Minutes between consecutive seeded runs of one pipeline.
const RUN_SPACING_MINUTES: i64 = 47;

pub fn build(spec: SeedSpec, now: DateTime<Utc>) -> State {
    let mut state = State {
        spec,
        seeded_at: now,
        workspaces: Vec::new(),
        next_pipeline_id: 1,
        next_action_id: 1,
        next_variable_id: 1,
        next_webhook_id: 1,
        runtime_serial: 0,
        active: Vec::new(),
    };
    for w in 0..u64::from(spec.workspaces) {
        let ws = build_workspace(&mut state, w, now);
        state.workspaces.push(ws);
    }
    state
}

fn workspace_domain(w: u64) -> String {
    match WORKSPACE_DOMAINS.get(w as usize) {
        Some(d) => (*d).to_string(),
        None => format!("workspace-{}", w + 1),
    }
}

fn title_case(word: &str) -> String {
    match word {
        "api" | "sdk" | "cli" => word.to_uppercase(),
        _ => {
            let mut chars = word.chars();
            match chars.next() {
                Some(c) => c.to_uppercase().chain(chars).collect(),
                None => String::new(),
            }
        }
    }
}

fn project_names(seed: u64, w: u64, count: u64) -> Vec<(String, String)> {
    let combos = (PROJECT_AREAS.len() * PROJECT_KINDS.len()) as u64;
    // A seeded affine permutation of the area×kind grid keeps names unique and varied.
    let mut step = 1 + below(h(&[seed, w, 1]), combos - 1);
    while gcd(step, combos) != 1 {
        step += 1;
    }
    let offset = below(h(&[seed, w, 2]), combos);
    (0..count)
        .map(|i| {
            let k = (offset + i * step) % combos;
            let area = PROJECT_AREAS[(k / PROJECT_KINDS.len() as u64) as usize];
            let kind = PROJECT_KINDS[(k % PROJECT_KINDS.len() as u64) as usize];
            let round = i / combos;
            let (mut name, mut display) = (
                format!("{area}-{kind}"),
                format!("{} {}", title_case(area), title_case(kind)),
            );
            if round > 0 {
                name.push_str(&format!("-{}", round + 1));
                display.push_str(&format!(" {}", round + 1));
            }
            (name, display)
        })
        .collect()
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

fn build_workspace(state: &mut State, w: u64, now: DateTime<Utc>) -> Workspace {
    let seed = state.spec.seed;
    let domain = workspace_domain(w);
    let members = (0..u64::from(state.spec.members))
        .map(|m| {
            let x = h(&[seed, w, 10, m]);
            let first = pick(x, FIRST_NAMES);
            let last = pick(x >> 20, LAST_NAMES);
            let (first, last) = if m == 0 {
                (&"Mike", &"Benson")
            } else {
                (first, last)
            };
            Member {
                id: m + 1,
                name: format!("{first} {last}"),
                email: format!(
                    "{}.{}@{domain}.example",
                    first.to_lowercase(),
                    last.to_lowercase()
                ),
                title: (*pick(x >> 40, TITLES)).to_string(),
                admin: m < 2,
                owner: m == 0,
            }
        })
        .collect::<Vec<_>>();
    let create_date = now - Duration::days(900 + below(h(&[seed, w, 3]), 400) as i64);
    let mut ws = Workspace {
        id: w + 1,
        index: w,
        domain: domain.clone(),
        name: title_case(&domain),
        create_date,
        api_enabled: true,
        members,
        projects: Vec::new(),
        variables: Vec::new(),
        webhooks: Vec::new(),
    };
    for (p, (name, display)) in project_names(seed, w, u64::from(state.spec.projects))
        .into_iter()
        .enumerate()
    {
        let project = build_project(state, &ws, p as u64, name, display, now);
        ws.projects.push(project);
    }
    seed_variables(state, &mut ws);
    ws
}

fn build_project(
    state: &mut State,
    ws: &Workspace,
    p: u64,
    name: String,
    display_name: String,
    now: DateTime<Utc>,
) -> Project {
    let seed = state.spec.seed;
    let w = ws.index;
    let github = p.is_multiple_of(2);
    let members = ws.members.len().max(1) as u64;
    let commit_count = u64::from(state.spec.commits);
    let first_commit =
        now - Duration::days(120) - Duration::minutes(below(h(&[seed, w, p, 4]), 600) as i64);
    let span = (now - Duration::hours(1) - first_commit)
        .num_seconds()
        .max(1) as u64;
    let commits: Vec<Commit> = (0..commit_count)
        .map(|c| commit_for(seed, w, p, c, members, first_commit, span, commit_count))
        .collect();
    let main: Vec<usize> = (0..commits.len()).collect();
    let mut branches = vec![Branch {
        name: "main".into(),
        commits: main.clone(),
    }];
    let cut = main.len().saturating_sub(3).max(1).min(main.len());
    branches.push(Branch {
        name: "develop".into(),
        commits: main[..cut].to_vec(),
    });
    branches.push(Branch {
        name: "feature/new-checkout".into(),
        commits: main[..cut.saturating_sub(2).max(1).min(main.len())].to_vec(),
    });
    let tags = (0..3usize)
        .filter_map(|t| {
            let idx = main.len().checked_sub(1 + t * 7)?;
            Some(Tag {
                name: format!("v1.{}.0", 2 - t),
                commit: idx,
            })
        })
        .collect();
    let pulls = if github { vec![3, 5] } else { Vec::new() };
    let mut project = Project {
        index: p,
        github_repo: github.then(|| format!("{}/{}", ws.domain, name)),
        name,
        display_name,
        status: "ACTIVE".into(),
        create_date: first_commit - Duration::days(1),
        created_by: 1,
        default_branch: "main".into(),
        access: if p.is_multiple_of(3) {
            "PUBLIC"
        } else {
            "PRIVATE"
        }
        .into(),
        allow_pull_requests: github,
        fetch_submodules: false,
        fetch_submodules_env_key: None,
        update_default_branch_from_external: github,
        without_repository: false,
        repository_size: 1_000_000 + below(h(&[seed, w, p, 5]), 90_000_000),
        commits,
        branches,
        tags,
        pulls,
        pipelines: Vec::new(),
    };
    for i in 0..u64::from(state.spec.pipelines) {
        let pipeline = build_pipeline(state, &project, i, state.spec.executions);
        project.pipelines.push(pipeline);
    }
    project
}

#[allow(clippy::too_many_arguments)]
fn commit_for(
    seed: u64,
    w: u64,
    p: u64,
    c: u64,
    members: u64,
    first: DateTime<Utc>,
    span: u64,
    count: u64,
) -> Commit {
    let x = h(&[seed, w, p, 20, c]);
    let at = first + Duration::seconds((span * c / count.max(1)) as i64);
    Commit {
        revision: hex_id(&[seed, w, p, 21, c], 40),
        message: format!(
            "{} {}\n",
            pick(x, COMMIT_VERBS),
            pick(x >> 16, COMMIT_OBJECTS)
        ),
        author: 1 + below(x >> 32, members),
        date: at,
    }
}

/// Builds a pipeline (seeded or created through the API) with actions that fit its name.
pub fn build_pipeline(state: &mut State, project: &Project, i: u64, executions: u64) -> Pipeline {
    let base = PIPELINE_NAMES[(i % PIPELINE_NAMES.len() as u64) as usize];
    let round = i / PIPELINE_NAMES.len() as u64;
    let name = if round == 0 {
        base.to_string()
    } else {
        format!("{base} #{}", round + 1)
    };
    let id = state.next_pipeline_id;
    state.next_pipeline_id += 1;
    let (refs, events, conditions) = triggers_for(base, project.github_repo.is_some());
    let actions = actions_for(base)
        .iter()
        .map(|(n, t)| {
            let aid = state.next_action_id;
            state.next_action_id += 1;
            Action {
                id: aid,
                name: (*n).to_string(),
                action_type: (*t).to_string(),
                trigger_time: "ON_EVERY_EXECUTION".into(),
                disabled: false,
            }
        })
        .collect();
    Pipeline {
        id,
        index: i,
        identifier: slug(&name),
        name,
        refs,
        events,
        trigger_conditions: conditions,
        priority: "NORMAL".into(),
        create_date: project.create_date + Duration::hours(2 + i as i64),
        creator: 1,
        disabled: false,
        paused: false,
        concurrent_pipeline_runs: false,
        execution_message_template: "$BUDDY_EXECUTION_REVISION_SUBJECT".into(),
        actions,
        seeded_count: executions,
        last_id: executions,
        overlay: HashMap::new(),
        scripted_failures: 0,
        extra: BTreeMap::new(),
    }
}

pub fn slug(name: &str) -> String {
    let mut out = String::new();
    for c in name.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.ends_with('-') && !out.is_empty() {
            out.push('-');
        }
    }
    out.trim_end_matches('-').to_string()
}

fn triggers_for(base: &str, github: bool) -> (Vec<String>, serde_json::Value, serde_json::Value) {
    let always = json!([{ "trigger_condition": "ALWAYS" }]);
    match base {
        "Build & test" => {
            let mut refs = vec!["refs/heads/*".to_string()];
            if github {
                refs.push("refs/pull/*".into());
            }
            (
                refs.clone(),
                json!([{ "type": "PUSH", "refs": refs }]),
                json!([{ "trigger_condition": "ON_CHANGE" }]),
            )
        }
        "Deploy to staging" | "Docs site" => (
            vec!["refs/heads/main".into()],
            json!([{ "type": "PUSH", "refs": ["refs/heads/main"] }]),
            always,
        ),
        "Nightly integration tests" | "Security scan" => (
            vec!["refs/heads/main".into()],
            json!([{ "type": "SCHEDULE", "cron": "0 2 * * *", "timezone": "UTC" }]),
            always,
        ),
        "Release" => (
            vec!["refs/tags/*".into()],
            json!([{ "type": "CREATE_REF", "refs": ["refs/tags/*"] }]),
            always,
        ),
        _ => (vec!["refs/heads/main".into()], json!([]), always),
    }
}

fn actions_for(base: &str) -> &'static [(&'static str, &'static str)] {
    match base {
        "Build & test" => &[
            ("Install dependencies", "BUILD"),
            ("Run tests", "BUILD"),
            ("Build artifact", "BUILD"),
        ],
        "Deploy to production" => &[
            ("Build application", "BUILD"),
            ("Approve deployment", "WAIT_FOR_APPLY"),
            ("Deploy to Kubernetes", "KUBERNETES_APPLY"),
            ("Notify team", "SLACK"),
        ],
        "Deploy to staging" => &[
            ("Build application", "BUILD"),
            ("Deploy to Kubernetes", "KUBERNETES_APPLY"),
            ("Smoke test", "HTTP"),
        ],
        "Lint" => &[("Lint", "BUILD")],
        "Release" => &[
            ("Release version", "PASS_ARGUMENTS"),
            ("Build release", "BUILD"),
            ("Publish package", "PUBLISH_PACKAGE_VERSION"),
        ],
        "Database migrations" => &[
            ("Approve migration", "WAIT_FOR_APPLY"),
            ("Run migrations", "SSH_COMMAND"),
        ],
        _ => &[("Build", "BUILD"), ("Test", "BUILD")],
    }
}

/// Log lines an action prints, in order; growing logs show a prefix of these.
pub fn log_lines(action: &Action, key: u64, failed: bool) -> Vec<String> {
    let mut lines = match action.action_type.as_str() {
        "BUILD" => vec![
            "Pulling image library/node:22...".to_string(),
            "Image pulled".into(),
            format!("$ npm ci # {}", action.name.to_lowercase()),
            format!("added {} packages in {}s", 100 + key % 400, 2 + key % 30),
            "$ npm run build".into(),
            format!("Compiled {} modules", 40 + key % 200),
            "$ npm test".into(),
            format!("Tests: {} passed, {} total", 50 + key % 300, 50 + key % 300),
        ],
        "WAIT_FOR_APPLY" => vec!["Waiting for approval".into(), "Approved".into()],
        "PASS_ARGUMENTS" => vec!["Waiting for arguments".into(), "Arguments passed".into()],
        "KUBERNETES_APPLY" => vec![
            "Connecting to cluster production-eu".into(),
            "deployment.apps/app configured".into(),
            "Waiting for rollout to finish: 1 of 3 updated replicas are available...".into(),
            "deployment \"app\" successfully rolled out".into(),
        ],
        "SLACK" => vec![
            "Sending message to #deployments".into(),
            "Message sent".into(),
        ],
        "HTTP" => vec!["GET /healthz".into(), "HTTP/1.1 200 OK".into()],
        _ => vec![
            format!("Running {}", action.name),
            format!("{} finished", action.name),
        ],
    };
    if failed {
        lines.truncate(lines.len().saturating_sub(1).max(1));
        lines.push("Error: process exited with code 1".into());
    } else if action.action_type == "BUILD" {
        lines.push("Build finished successfully".into());
    }
    lines
}

/// Derives seeded execution `id` (1-based, oldest first) of a pipeline.
pub fn seeded_execution(
    spec: &SeedSpec,
    seeded_at: DateTime<Utc>,
    ws_index: u64,
    project: &Project,
    pipeline: &Pipeline,
    id: u64,
) -> Execution {
    let seed = spec.seed;
    let key = [seed, ws_index, project.index, pipeline.index, id];
    let x = h(&key);
    let n = pipeline.seeded_count;
    let age_runs = n.saturating_sub(id) as i64;
    let duration = 30 + below(x >> 8, 570) as i64;
    let offset = below(h(&[seed, ws_index, project.index, pipeline.index]), 1800) as i64;
    let finish = seeded_at
        - Duration::minutes(age_runs * RUN_SPACING_MINUTES)
        - Duration::seconds(60 + offset + below(x >> 24, 300) as i64);
    let start = finish - Duration::seconds(duration);
    let roll = below(x, 100);
    let status = match roll {
        0..=74 => "SUCCESSFUL",
        75..=91 => "FAILED",
        _ => "TERMINATED",
    };
    let is_pr = project.github_repo.is_some()
        && pipeline.refs.iter().any(|r| r == "refs/pull/*")
        && below(x >> 40, 5) == 0;
    let main = project.branch(&project.default_branch);
    let commit_idx = main.filter(|b| !b.commits.is_empty()).map(|b| {
        b.commits[(((id - 1) * b.commits.len() as u64) / n.max(1)) as usize % b.commits.len()]
    });
    let to_revision = commit_idx
        .and_then(|i| project.commits.get(i))
        .map(|c| c.revision.clone());
    let from_revision = commit_idx
        .and_then(|i| i.checked_sub(1))
        .and_then(|i| project.commits.get(i))
        .map(|c| c.revision.clone());
    let triggered_on = match pipeline.on() {
        "CLICK" => "CLICK",
        "SCHEDULE" => "SCHEDULE",
        _ if below(x >> 48, 4) == 0 => "CLICK",
        _ => "EVENT",
    };
    let members = 1 + below(x >> 52, 3);
    let action_count = pipeline.actions.len();
    let stop_at = if status == "SUCCESSFUL" || action_count == 0 {
        None
    } else {
        Some(below(x >> 12, action_count as u64) as usize)
    };
    let per_action = duration / action_count.max(1) as i64;
    let actions = pipeline
        .actions
        .iter()
        .enumerate()
        .map(|(i, action)| {
            let a_start = start + Duration::seconds(per_action * i as i64);
            let a_finish = a_start + Duration::seconds(per_action);
            let (a_status, ran, failed) = match stop_at {
                Some(s) if i == s => (status, true, status == "FAILED"),
                Some(s) if i > s => ("NOT_EXECUTED", false, false),
                _ => ("SUCCESSFUL", true, false),
            };
            let mut log = if ran {
                log_lines(action, x ^ i as u64, failed)
            } else {
                Vec::new()
            };
            if a_status == "TERMINATED" {
                log.truncate(log.len() / 2);
                log.push("Execution terminated by user".into());
            }
            ActionExecution {
                hex: hex_id(
                    &[
                        seed,
                        ws_index,
                        project.index,
                        pipeline.index,
                        id,
                        30,
                        i as u64,
                    ],
                    24,
                ),
                action_id: action.id,
                status: a_status.to_string(),
                start_date: ran.then_some(a_start),
                finish_date: ran.then_some(a_finish),
                error_message: failed.then(|| "Error: process exited with code 1".to_string()),
                log,
            }
        })
        .collect();
    let branch = if is_pr {
        Some("pull/3".to_string())
    } else {
        Some(project.default_branch.clone())
    };
    Execution {
        id,
        hex: hex_id(&[seed, ws_index, project.index, pipeline.index, id, 31], 24),
        status: status.to_string(),
        triggered_on: triggered_on.to_string(),
        created: start,
        start_date: Some(start),
        finish_date: Some(finish),
        priority: "NORMAL".into(),
        refresh: below(x >> 56, 10) == 0,
        clear_cache: false,
        comment: if triggered_on == "CLICK" {
            "Manual run".to_string()
        } else {
            String::new()
        },
        branch,
        tag: None,
        pull_request: is_pr.then(|| "pull/3".to_string()),
        to_revision,
        from_revision,
        creator: members.min(project_members_hint(spec)),
        variables: Vec::new(),
        delay_until: None,
        fail_at: None,
        terminating_since: None,
        actions,
    }
}

fn project_members_hint(spec: &SeedSpec) -> u64 {
    u64::from(spec.members.max(1))
}

fn seed_variables(state: &mut State, ws: &mut Workspace) {
    let mut push = |state: &mut State, v: Variable| {
        ws.variables.push(Variable {
            id: state.next_variable_id,
            ..v
        });
        state.next_variable_id += 1;
    };
    let base = Variable {
        id: 0,
        key: String::new(),
        value: String::new(),
        var_type: "VAR".into(),
        encrypted: false,
        settable: false,
        description: None,
        project: None,
        pipeline: None,
        action: None,
        environment: None,
    };
    push(
        state,
        Variable {
            key: "REGISTRY_URL".into(),
            value: format!("registry.{}.example", ws.domain),
            description: Some("container registry".into()),
            ..base.clone()
        },
    );
    push(
        state,
        Variable {
            key: "DEPLOY_TOKEN".into(),
            value: format!("tok-{}", hex_id(&[state.spec.seed, ws.index, 40], 16)),
            encrypted: true,
            ..base.clone()
        },
    );
    let first_project = ws.projects.first().map(|p| p.name.clone());
    if let Some(project) = first_project {
        push(
            state,
            Variable {
                key: "API_URL".into(),
                value: "https://staging.example.com".into(),
                settable: true,
                description: Some("target URL".into()),
                project: Some(project.clone()),
                ..base.clone()
            },
        );
        let pipeline = ws
            .projects
            .first()
            .and_then(|p| p.pipelines.first())
            .map(|p| p.id);
        if let Some(pipeline) = pipeline {
            push(
                state,
                Variable {
                    key: "NODE_VERSION".into(),
                    value: "22".into(),
                    settable: true,
                    pipeline: Some(pipeline),
                    ..base
                },
            );
        }
    }
}
