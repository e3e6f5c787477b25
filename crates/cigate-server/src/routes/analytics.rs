//! `GET /unified/ci-cd/metrics`: delivery figures (DORA-style) computed from a live read
//! of the provider's jobs, nothing stored. The definitions are
//! [`cigate_core::metrics`]'s and `docs/metrics.md`'s.
//!
//! What is read: the scope's workflows (their names pick the deploy workflows), then each
//! workflow's jobs newest first, page by page, until a page holds nothing at or after
//! `from`: a window of the last days costs a few pages per workflow, whatever the
//! history's length. Workflows are read a few at a time. The answer says how many
//! provider calls it took (`upstream_calls`, and the `X-Upstream-Calls` header).

use std::collections::HashSet;
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue};
use axum::routing::get;
use axum::{Extension, Json, Router};
use chrono::{DateTime, Utc};
use futures::stream::{self, StreamExt, TryStreamExt};
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use cigate_core::metrics::{figures, is_deploy_name, Figures, Sample, Window, WorkflowSamples};
use cigate_core::{ListQuery, Resource};
use cigate_store::Account;

use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::extract::QueryPairs;
use crate::gateway::{self, AccountScope, Gateway, SkippedAccount};
use crate::state::AppState;

/// Named in the 400 when neither account nor tenant is given.
const API: &str = "metrics";
/// Jobs per provider page: Buddy's largest page, so each page is one call and paging
/// stops at the first page wholly before `from`.
const PAGE: u32 = 50;
/// Workflows read at once per account.
const CONCURRENCY: usize = 4;
/// The window when `from` is not given: the last 30 days.
const DEFAULT_DAYS: i64 = 30;

pub fn routes() -> Router<AppState> {
    Router::new().route("/unified/ci-cd/metrics", get(metrics))
}

/// The figures of one workflow.
#[derive(Debug, Serialize, ToSchema)]
pub struct WorkflowFigures {
    pub integrated_account_id: String,
    pub workspace: String,
    pub repo: String,
    pub workflow: String,
    pub name: Option<String>,
    /// Counted as a deploy workflow.
    pub deploy: bool,
    #[serde(flatten)]
    pub figures: Figures,
}

/// The figures of one account (tenant requests).
#[derive(Debug, Serialize, ToSchema)]
pub struct AccountFigures {
    pub integrated_account_id: String,
    #[serde(flatten)]
    pub figures: Figures,
}

/// The answer of `GET /unified/ci-cd/metrics`.
#[derive(Debug, Serialize, ToSchema)]
pub struct MetricsAnswer {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub integrated_account_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tenant_id: Option<String>,
    /// The deploy workflows used: the ones named in `deploy_workflows[]`, else every
    /// workflow whose name contains `deploy`, `release` or `prod`.
    pub deploy_workflows: Vec<String>,
    #[serde(flatten)]
    pub figures: Figures,
    pub workflows: Vec<WorkflowFigures>,
    /// Per account, when `tenant_id` was asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub accounts: Option<Vec<AccountFigures>>,
    /// Accounts of the tenant left out (not active), never silently.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub skipped_accounts: Vec<SkippedAccount>,
    /// Provider calls this answer took.
    pub upstream_calls: u64,
}

/// One workflow in scope, before its jobs are read.
struct Target {
    workspace: String,
    repo: String,
    workflow: String,
    name: Option<String>,
    deploy: bool,
}

/// A workflow with its samples.
struct Read {
    target: Target,
    samples: WorkflowSamples,
}

/// The window from `from`/`to` (RFC 3339); by default the last 30 days.
fn window(query: &QueryPairs) -> ApiResult<Window> {
    let to = query.timestamp("to")?.unwrap_or_else(Utc::now);
    let from = match query.timestamp("from")? {
        Some(from) => from,
        None => to - chrono::Duration::days(DEFAULT_DAYS),
    };
    if from >= to {
        return Err(ApiError::bad_request(
            "/problems/invalid-parameter",
            format!("`from` ({from}) must be before `to` ({to})"),
        ));
    }
    Ok(Window { from, to })
}

/// The workflows the request covers on one account.
async fn targets(
    gateway: &Gateway,
    scope: &ListQuery,
    deploy_ids: &HashSet<String>,
) -> ApiResult<(Vec<Target>, u64)> {
    let mut calls = 0;
    let workspaces = match &scope.workspace {
        Some(ws) => vec![ws.clone()],
        None => {
            let (all, n) =
                gateway::every(gateway, Resource::Workspaces, &ListQuery::default()).await?;
            calls += n;
            gateway::record_ids(&all)
        }
    };
    let mut pairs = Vec::new();
    for workspace in workspaces {
        let repos = match &scope.repo {
            Some(repo) => vec![repo.clone()],
            None => {
                let q = ListQuery {
                    workspace: Some(workspace.clone()),
                    ..ListQuery::default()
                };
                let (all, n) = gateway::every(gateway, Resource::Repos, &q).await?;
                calls += n;
                gateway::record_ids(&all)
            }
        };
        pairs.extend(repos.into_iter().map(|repo| (workspace.clone(), repo)));
    }
    let listed: Vec<(Vec<Target>, u64)> = stream::iter(pairs)
        .map(|(workspace, repo)| async move {
            let q = ListQuery {
                workspace: Some(workspace.clone()),
                repo: Some(repo.clone()),
                ..ListQuery::default()
            };
            let (all, n) = gateway::every(gateway, Resource::Workflows, &q).await?;
            let targets = all
                .iter()
                .filter_map(|wf| {
                    let id = wf.get("id")?.as_str()?.to_owned();
                    if scope.workflow.as_ref().is_some_and(|only| *only != id) {
                        return None;
                    }
                    let name = wf.get("name").and_then(Value::as_str).map(str::to_owned);
                    let deploy = if deploy_ids.is_empty() {
                        name.as_deref().is_some_and(is_deploy_name)
                    } else {
                        deploy_ids.contains(&id)
                    };
                    Some(Target {
                        workspace: workspace.clone(),
                        repo: repo.clone(),
                        workflow: id,
                        name,
                        deploy,
                    })
                })
                .collect();
            Ok::<_, ApiError>((targets, n))
        })
        .buffer_unordered(CONCURRENCY)
        .try_collect()
        .await?;
    let mut targets = Vec::new();
    for (found, n) in listed {
        calls += n;
        targets.extend(found);
    }
    Ok((targets, calls))
}

/// The jobs of one workflow completed in the window, newest first until a page lies
/// wholly before `from`.
async fn samples(
    gateway: &Gateway,
    target: &Target,
    window: &Window,
) -> ApiResult<(Vec<Sample>, u64)> {
    let q = ListQuery {
        workspace: Some(target.workspace.clone()),
        repo: Some(target.repo.clone()),
        workflow: Some(target.workflow.clone()),
        limit: PAGE,
        ..ListQuery::default()
    };
    let (mut samples, mut calls, mut position) = (Vec::new(), 0u64, None);
    loop {
        let page = gateway
            .call(|provider| {
                let (q, position) = (&q, position.clone());
                async move { provider.list(Resource::Jobs, q, position).await }
            })
            .await?;
        calls += u64::from(page.upstream_calls);
        let mut reaches_window = false;
        for record in &page.items {
            let Some(job) = record.unified.as_job() else {
                continue;
            };
            let latest = job.completed_at.or(job.started_at).or(job.created_at);
            reaches_window |= latest.is_none_or(|at| at >= window.from);
            samples.extend(Sample::of(job, window));
        }
        match page.next {
            Some(next) if reaches_window => position = Some(next),
            _ => return Ok((samples, calls)),
        }
    }
}

/// Every workflow of one account read, and the calls it took.
async fn read_account(
    state: &AppState,
    caller: &Caller,
    account: &Account,
    query: &QueryPairs,
    window: &Window,
    deploy_ids: &HashSet<String>,
    timeout: Duration,
) -> ApiResult<(Vec<Read>, u64)> {
    let gateway = Gateway::open(state, caller, &account.id, timeout).await?;
    let scope = query.list_query(&account.context)?;
    let (targets, mut calls) = targets(&gateway, &scope, deploy_ids).await?;
    let gateway = &gateway;
    let reads: Vec<(Read, u64)> = stream::iter(targets)
        .map(|target| async move {
            let (samples, n) = samples(gateway, &target, window).await?;
            let samples = WorkflowSamples {
                workflow: target.workflow.clone(),
                deploy: target.deploy,
                samples,
            };
            Ok::<_, ApiError>((Read { target, samples }, n))
        })
        .buffer_unordered(CONCURRENCY)
        .try_collect()
        .await?;
    let mut out = Vec::with_capacity(reads.len());
    for (read, n) in reads {
        calls += n;
        out.push(read);
    }
    out.sort_by(|a, b| {
        (&a.target.workspace, &a.target.repo, &a.target.workflow).cmp(&(
            &b.target.workspace,
            &b.target.repo,
            &b.target.workflow,
        ))
    });
    Ok((out, calls))
}

/// What a metrics read gathered: the window, and each account's workflows with the
/// samples of their jobs in it.
pub struct Reading {
    pub window: Window,
    accounts: Vec<(String, Vec<Read>)>,
    skipped: Vec<SkippedAccount>,
    pub calls: u64,
}

/// Reads the jobs of every workflow in `scope` (narrowed by `workspace`, `repo`,
/// `workflow`) over the window of `from`/`to`. One account is read whatever its status
/// (its errors are the answer); a tenant's or the environment's inactive accounts are
/// skipped and named.
pub async fn read(
    state: &AppState,
    caller: &Caller,
    scope: AccountScope<'_>,
    query: &QueryPairs,
) -> ApiResult<Reading> {
    let window = window(query)?;
    let timeout = query.timeout(state.default_timeout())?;
    let deploy_ids: HashSet<String> = query.list("deploy_workflows").into_iter().collect();
    let (accounts, skipped) = match scope {
        AccountScope::Account(id) => (vec![gateway::load(state, caller, id).await?], Vec::new()),
        _ => gateway::scoped_accounts(state, caller, scope).await?,
    };
    let mut calls = 0;
    let mut per_account = Vec::new();
    for account in &accounts {
        let (reads, n) =
            read_account(state, caller, account, query, &window, &deploy_ids, timeout).await?;
        calls += n;
        per_account.push((account.id.clone(), reads));
    }
    Ok(Reading {
        window,
        accounts: per_account,
        skipped,
        calls,
    })
}

impl Reading {
    fn all(&self) -> impl Iterator<Item = &WorkflowSamples> {
        self.accounts
            .iter()
            .flat_map(|(_, reads)| reads.iter().map(|r| &r.samples))
    }

    /// The figures of everything read, one per `step` from the window's start (the last
    /// one may be shorter): the series a chart draws.
    pub fn series(&self, step: chrono::Duration) -> Vec<(Window, Figures)> {
        cigate_core::metrics::series(self.all(), &self.window, step)
    }

    /// The answer of `GET /unified/ci-cd/metrics` for `scope`.
    pub fn answer(self, scope: AccountScope<'_>) -> MetricsAnswer {
        let total = figures(self.all(), &self.window);
        let window = self.window;
        let per_account = self.accounts;
        MetricsAnswer {
            from: window.from,
            to: window.to,
            integrated_account_id: match scope {
                AccountScope::Account(id) => Some(id.to_owned()),
                _ => None,
            },
            tenant_id: match scope {
                AccountScope::Tenant(tenant) => Some(tenant.to_owned()),
                _ => None,
            },
            deploy_workflows: per_account
                .iter()
                .flat_map(|(_, reads)| reads.iter())
                .filter(|r| r.target.deploy)
                .map(|r| r.target.workflow.clone())
                .collect(),
            figures: total,
            accounts: (!matches!(scope, AccountScope::Account(_))).then(|| {
                per_account
                    .iter()
                    .map(|(id, reads)| AccountFigures {
                        integrated_account_id: id.clone(),
                        figures: figures(reads.iter().map(|r| &r.samples), &window),
                    })
                    .collect()
            }),
            workflows: per_account
                .iter()
                .flat_map(|(id, reads)| {
                    reads.iter().map(|r| WorkflowFigures {
                        integrated_account_id: id.clone(),
                        workspace: r.target.workspace.clone(),
                        repo: r.target.repo.clone(),
                        workflow: r.target.workflow.clone(),
                        name: r.target.name.clone(),
                        deploy: r.target.deploy,
                        figures: figures([&r.samples], &window),
                    })
                })
                .collect(),
            skipped_accounts: self.skipped,
            upstream_calls: self.calls,
        }
    }
}

#[utoipa::path(get, path = "/unified/ci-cd/metrics", tag = crate::openapi::TAG_UNIFIED, security(("api_token" = [])),
    summary = "Delivery metrics",
    description = "DORA-style figures over a window, computed from a live read of the account's (or every active account of a tenant's) jobs: jobs completed in `[from, to)`, success rate, duration and queue-time percentiles (nearest rank), deployments and their frequency, change failure rate, mean time to restore and lead time, overall, per workflow and per account. Definitions: docs/metrics.md. Only jobs inside the window are read (newest first, stopping at the first page wholly before `from`); `upstream_calls` says how many provider calls it took.",
    params(
        ("integrated_account_id" = Option<String>, Query, description = "the account; or `tenant_id`"),
        ("tenant_id" = Option<String>, Query, description = "every active account of this tenant"),
        ("workspace" = Option<String>, Query, description = "Buddy workspace; without it, every workspace of each account"),
        ("repo" = Option<String>, Query, description = "Buddy project (alias `project`); without it, every project"),
        ("project" = Option<String>, Query, description = "alias of `repo`"),
        ("workflow" = Option<String>, Query, description = "one pipeline id"),
        ("from" = Option<String>, Query, description = "RFC 3339 start of the window, inclusive (default: 30 days before `to`)"),
        ("to" = Option<String>, Query, description = "RFC 3339 end of the window, exclusive (default: now)"),
        ("deploy_workflows[]" = Option<Vec<String>>, Query, description = "pipeline ids that deploy; by default those whose name contains deploy, release or prod"),
        ("truto_timeout_ms" = Option<u32>, Query, minimum = 1, maximum = 300000, description = "deadline of each provider call, retries and rate-limit waits included"),
    ),
    responses(
        (status = 200, description = "the figures", body = MetricsAnswer,
            example = json!({"from": "2026-11-01T00:00:00Z", "to": "2026-12-01T00:00:00Z", "integrated_account_id": "acc_1",
                "deploy_workflows": ["7"], "jobs_total": 120, "passed": 100, "failed": 15, "success_rate": 0.8696,
                "duration_s": {"p50": 184.0, "p95": 611.0}, "queued_s": {"p50": null, "p95": null},
                "deployments": 28, "deployment_frequency_per_day": 0.9333, "change_failure_rate": 0.125,
                "mean_time_to_restore_s": 5400.0, "lead_time_s": 7260.0, "workflows": [], "upstream_calls": 9})),
        (status = 400, description = "neither `integrated_account_id` nor `tenant_id`, a malformed `from`/`to`, or `from` not before `to`"),
        (status = 401, description = "missing or invalid API token"),
        (status = 404, description = "unknown account, or no such workspace, project or pipeline at Buddy"),
        (status = 429, description = "Buddy's rate limit left no room within the deadline"),
        (status = 502, description = "Buddy failed or could not be reached"),
        (status = 504, description = "Buddy did not answer within the deadline"),
    ))]
pub async fn metrics(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    query: QueryPairs,
) -> ApiResult<(HeaderMap, Json<MetricsAnswer>)> {
    let tenant_id = query.get("tenant_id").map(str::to_owned);
    let scope = match (query.get("integrated_account_id"), &tenant_id) {
        (Some(id), _) => AccountScope::Account(id),
        (None, Some(tenant)) => AccountScope::Tenant(tenant),
        (None, None) => {
            return Err(ApiError::missing(
                vec!["integrated_account_id".into(), "tenant_id".into()],
                API,
            ))
        }
    };
    let reading = read(&state, &caller, scope, &query).await?;
    let calls = reading.calls;
    let answer = reading.answer(scope);
    let mut headers = HeaderMap::new();
    headers.insert("x-upstream-calls", HeaderValue::from(calls));
    Ok((headers, Json(answer)))
}
