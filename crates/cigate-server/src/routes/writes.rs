//! Writes through the unified API: run, cancel, retry and approve jobs; job logs
//! (JSON, plain text, followed); create, change and delete workflows; variables.
//!
//! Routing: `GET /unified/ci-cd/{resource}[/{id}]` belong to the read routes, so the
//! writes on those shapes are added as other methods on the same paths and dispatch on
//! `resource` here. Every POST/PATCH goes through [`crate::idempotency::layer`].

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{middleware, Extension, Json, Router};
use serde::Deserialize;
use serde_json::json;

use cigate_core::model::job_status;
use cigate_core::{
    JobLog, JobLogs, JobOperation, JobRun, ListQuery, Provider, ProviderError, RepoInput, Resource,
    RunVariable, VariableInput, WorkflowInput, WorkspaceInput,
};

use crate::auth::Caller;
use crate::envelope::ListEnvelope;
use crate::error::{ApiError, ApiResult};
use crate::extract::{optional_json, required_json, ApiJson, ApiPath, QueryPairs};
use crate::gateway::{self, writes_of, Gateway};
use crate::state::AppState;

pub fn routes(state: AppState) -> Router<AppState> {
    Router::new()
        .route("/unified/ci-cd/{resource}", post(create))
        .route(
            "/unified/ci-cd/{resource}/{id}",
            axum::routing::patch(update).delete(remove),
        )
        .route(
            "/unified/ci-cd/{resource}/{id}/{action}",
            get(job_subresource).post(job_action),
        )
        .route(
            "/unified/ci-cd/variables",
            get(list_variables).post(create_variable),
        )
        .route("/unified/ci-cd/integrations", get(list_integrations))
        .route(
            "/unified/ci-cd/variables/{id}",
            get(get_variable)
                .patch(update_variable)
                .delete(delete_variable),
        )
        .route_layer(middleware::from_fn_with_state(
            state,
            crate::idempotency::layer,
        ))
}

/// Named in the 400 when `integrated_account_id` is missing.
const API: &str = "the unified API";

/// One write request's way to the account and the scope it names.
struct Target {
    gateway: Gateway,
    scope: ListQuery,
}

impl Target {
    async fn load(state: &AppState, caller: &Caller, query: &QueryPairs) -> ApiResult<Target> {
        let gateway = Gateway::for_query(state, caller, query, API).await?;
        let scope = query.list_query(&gateway.account().context)?;
        Ok(Target { gateway, scope })
    }

    /// Runs one operation of the account's provider through the gateway.
    async fn write<'a, T, F, Fut>(&'a self, f: F) -> ApiResult<T>
    where
        F: Fn(Arc<dyn Provider>, &'a ListQuery) -> Fut,
        Fut: Future<Output = Result<T, ProviderError>>,
    {
        self.gateway.call(|provider| f(provider, &self.scope)).await
    }
}

fn invalid(message: String) -> ApiError {
    ApiError::Validation(message)
}

fn record_response(
    status: StatusCode,
    found: cigate_core::GetResult,
    query: &QueryPairs,
) -> ApiResult<Response> {
    let render = query.render_options()?;
    Ok((
        status,
        gateway::rate_limit_headers(found.rate_limit.as_ref()),
        Json(found.record.render(&render)),
    )
        .into_response())
}

/// Like [`writable`] for the methods that share a path with the reads (`POST
/// /unified/ci-cd/{resource}`, `PATCH`/`DELETE /unified/ci-cd/{resource}/{id}`): a
/// resource that is only read answers 405, its `Allow` naming `GET`.
fn writable_by(method: &str, resource: &str, allowed: &[Resource]) -> ApiResult<Resource> {
    match writable(resource, allowed) {
        Err(ApiError::NotFound(_)) if Resource::from_path(resource).is_some() => {
            Err(ApiError::MethodNotAllowed {
                method: method.to_owned(),
                allow: Some("GET"),
            })
        }
        other => other,
    }
}

fn writable(resource: &str, allowed: &[Resource]) -> ApiResult<Resource> {
    match Resource::from_path(resource) {
        Some(r) if allowed.contains(&r) => Ok(r),
        Some(r) => Err(ApiError::NotFound(format!(
            "`{r}` cannot be written through the unified API"
        ))),
        None => Err(ApiError::NotFound(format!("unknown resource `{resource}`"))),
    }
}

// ----- jobs ---------------------------------------------------------------------------

/// `POST /unified/ci-cd/{resource}`: runs a workflow (`jobs`) or creates one (`workflow`).
async fn create(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiPath(resource): ApiPath<String>,
    query: QueryPairs,
    body: Bytes,
) -> ApiResult<Response> {
    match writable_by(
        "POST",
        &resource,
        &[
            Resource::Jobs,
            Resource::Workflows,
            Resource::Repos,
            Resource::Workspaces,
        ],
    )? {
        Resource::Jobs => run_job(state, caller, query, body).await,
        Resource::Workspaces => create_workspace(state, caller, query, required_json(&body)?).await,
        Resource::Repos => create_repo(state, caller, query, required_json(&body)?).await,
        _ => {
            let input: WorkflowInput = optional_json(&body)?.unwrap_or_default();
            create_workflow(state, caller, query, input).await
        }
    }
}

#[utoipa::path(post, path = "/unified/ci-cd/jobs", tag = crate::openapi::TAG_WRITES, security(("api_token" = [])),
    summary = "Run a workflow",
    description = "Starts a job of the pipeline, on its default branch or on the given branch, tag, pull request or exact `commit` (a rollback). With an `Idempotency-Key`, a resend returns the first answer and starts no second run.",
    params(
        ("integrated_account_id" = String, Query, description = "the linked account"),
        ("workspace" = Option<String>, Query, description = "Buddy workspace domain; optional when the account has one workspace"),
        ("project" = String, Query, description = "Buddy project name (alias `repo`)"),
        ("workflow" = String, Query, description = "pipeline id"),
        ("Idempotency-Key" = Option<String>, Header, description = "the same key returns the first answer and reaches Buddy once"),
    ),
    request_body(content = Option<JobRun>, description = "all optional; `commit` pins an exact revision (rollback)"),
    responses(
        (status = 201, description = "the new job", body = cigate_core::model::Job, example = json!({"id": "43", "name": "Build and deploy", "status": "queued", "branch": "main",
                "commit": "506a3963507943d6908154f4bc9646e829128a08", "workflow": "7", "repo": "company-website", "workspace": "acme",
                "created_at": "2026-11-30T09:12:00Z"})),
        (status = 400, description = "a missing or invalid parameter"),
        (status = 403, description = "Buddy refused: the account's token lacks a scope (`details.missing_scopes`)"),
        (status = 404, description = "no such account or object"),
        (status = 409, description = "Buddy refused the change in the object's state, or a request with this Idempotency-Key is still in progress"),
        (status = 422, description = "an invalid body, or the Idempotency-Key was used with another request"),
        (status = 502, description = "Buddy failed or could not be reached"),
        (status = 504, description = "Buddy did not answer within the deadline"),
    ))]
pub async fn run_job(
    state: AppState,
    caller: Caller,
    query: QueryPairs,
    body: Bytes,
) -> ApiResult<Response> {
    let run: JobRun = optional_json(&body)?.unwrap_or_default();
    run.validate().map_err(invalid)?;
    let target = Target::load(&state, &caller, &query).await?;
    let found = target
        .write(|p, scope| {
            let run = &run;
            async move { writes_of(&*p)?.run_job(scope, run).await }
        })
        .await?;
    record_response(StatusCode::CREATED, found, &query)
}

/// `{ "result": [...] }` of `GET /unified/ci-cd/jobs/{id}/logs`, for the document.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)] // a schema only: the handler builds the JSON
pub struct JobLogsEnvelope {
    result: Vec<JobLog>,
}

/// `{ "variables"?: [...] }` of an approval.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ApproveBody {
    /// Supplies the variables a job waits for (Buddy's APPLY_VARIABLES).
    #[serde(default)]
    pub variables: Vec<RunVariable>,
}

/// An empty body or `{}`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct NoBody {}

async fn job_action(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiPath((resource, id, action)): ApiPath<(String, String, String)>,
    query: QueryPairs,
    body: Bytes,
) -> ApiResult<Response> {
    writable(&resource, &[Resource::Jobs])?;
    let operation = match action.as_str() {
        "cancel" | "retry" => {
            optional_json::<NoBody>(&body)?;
            if action == "cancel" {
                JobOperation::Cancel
            } else {
                JobOperation::Retry
            }
        }
        "approve" => {
            let body: ApproveBody = optional_json(&body)?.unwrap_or_default();
            for v in &body.variables {
                if v.key.trim().is_empty() {
                    return Err(invalid("variables[].key must not be empty".into()));
                }
            }
            JobOperation::Approve {
                variables: body.variables,
            }
        }
        other => {
            return Err(ApiError::NotFound(format!(
                "unknown job operation `{other}`; known: cancel, retry, approve"
            )))
        }
    };
    operate(state, caller, query, id, operation).await
}

#[utoipa::path(post, path = "/unified/ci-cd/jobs/{id}/{operation}", tag = crate::openapi::TAG_WRITES, security(("api_token" = [])),
    summary = "Cancel, retry or approve a job",
    params(("id" = String, Path, description = "the job's id", example = "42"),
        ("operation" = String, Path, description = "`cancel`, `retry` or `approve`", example = "cancel"),
        ("integrated_account_id" = String, Query, description = "the linked account"),
        ("workspace" = Option<String>, Query, description = "Buddy workspace domain; optional when the account has one workspace"),
        ("project" = String, Query, description = "Buddy project name (alias `repo`)"),
        ("workflow" = String, Query, description = "pipeline id"),
        ("Idempotency-Key" = Option<String>, Header, description = "the same key returns the first answer and reaches Buddy once")),
    request_body(content = Option<ApproveBody>, description = "approve only: variables the job waits for"),
    responses(
        (status = 200, description = "the job after the change", body = cigate_core::model::Job),
        (status = 400, description = "a missing or invalid parameter"),
        (status = 403, description = "Buddy refused: the account's token lacks a scope (`details.missing_scopes`)"),
        (status = 404, description = "no such account or object"),
        (status = 409, description = "Buddy refused the change in the object's state, or a request with this Idempotency-Key is still in progress"),
        (status = 422, description = "an invalid body, or the Idempotency-Key was used with another request"),
        (status = 502, description = "Buddy failed or could not be reached"),
        (status = 504, description = "Buddy did not answer within the deadline"),
    ))]
pub async fn operate(
    state: AppState,
    caller: Caller,
    query: QueryPairs,
    id: String,
    operation: JobOperation,
) -> ApiResult<Response> {
    let target = Target::load(&state, &caller, &query).await?;
    let found = target
        .write(|p, scope| {
            let (id, operation) = (&id, &operation);
            async move { writes_of(&*p)?.operate_job(scope, id, operation).await }
        })
        .await?;
    record_response(StatusCode::OK, found, &query)
}

async fn job_subresource(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiPath((resource, id, action)): ApiPath<(String, String, String)>,
    query: QueryPairs,
) -> ApiResult<Response> {
    writable(&resource, &[Resource::Jobs])?;
    if action != "logs" {
        return Err(ApiError::NotFound(format!(
            "unknown job resource `{action}`"
        )));
    }
    logs(state, caller, query, id).await
}

/// Bounds of `?follow=true`.
const DEFAULT_FOLLOW_S: u32 = 300;
const MAX_FOLLOW_S: u32 = 3600;
/// Polling interval while following; each poll costs one call plus one per running step.
const DEFAULT_POLL_MS: u32 = 2000;

#[utoipa::path(get, path = "/unified/ci-cd/jobs/{id}/logs", tag = crate::openapi::TAG_WRITES, security(("api_token" = [])),
    summary = "Read a job's logs",
    description = "Every step's log lines as JSON, or as plain text with a header line per step (for people, terminals and language models); `follow=true` streams a running job's new lines until it ends.",
    params(("id" = String, Path, description = "the job's id", example = "42"),
        ("integrated_account_id" = String, Query, description = "the linked account"),
        ("workspace" = Option<String>, Query, description = "Buddy workspace domain; optional when the account has one workspace"),
        ("project" = String, Query, description = "Buddy project name (alias `repo`)"),
        ("workflow" = String, Query, description = "pipeline id"),
        ("format" = Option<String>, Query, description = "`json` (default) or `text`: plain text, a header line per step"),
        ("follow" = Option<bool>, Query, description = "with format=text: stream new lines until the job ends"),
        ("timeout_s" = Option<u32>, Query, minimum = 1, maximum = 3600, description = "follow at most this long (default 300)"),
        ("interval_ms" = Option<u32>, Query, minimum = 250, maximum = 60000, description = "polling interval while following (default 2000)")),
    responses(
        (status = 200, description = "`{ \"result\": [ { step, status, lines } ] }`, or text/plain", body = JobLogsEnvelope,
            example = json!({"result": [{"step": "Run tests", "step_id": "5e9b7c1f", "status": "completed", "conclusion": "passed", "lines": ["npm test", "42 passing"]}]})),
        (status = 400, description = "a missing or invalid parameter"),
        (status = 403, description = "Buddy refused: the account's token lacks a scope (`details.missing_scopes`)"),
        (status = 404, description = "no such account or object"),
        (status = 502, description = "Buddy failed or could not be reached"),
        (status = 504, description = "Buddy did not answer within the deadline"),
    ))]
pub async fn logs(
    state: AppState,
    caller: Caller,
    query: QueryPairs,
    id: String,
) -> ApiResult<Response> {
    let text = match query.get("format") {
        None | Some("json") => false,
        Some("text") => true,
        Some(other) => {
            return Err(ApiError::bad_request(
                "/problems/invalid-parameter",
                format!("`format` must be `json` or `text`, not `{other}`"),
            ))
        }
    };
    let follow = query.flag("follow")?;
    if follow && !text {
        return Err(ApiError::bad_request(
            "/problems/invalid-parameter",
            "`follow=true` needs `format=text`",
        ));
    }
    let timeout_s = query.int_in("timeout_s", DEFAULT_FOLLOW_S, 1, MAX_FOLLOW_S)?;
    let interval_ms = query.int_in("interval_ms", DEFAULT_POLL_MS, 250, 60_000)?;
    let target = Target::load(&state, &caller, &query).await?;
    let first = target
        .write(|p, scope| {
            let id = &id;
            async move { writes_of(&*p)?.job_logs(scope, id, &[]).await }
        })
        .await?;
    if !text {
        return Ok(Json(json!({ "result": first.steps })).into_response());
    }
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if !follow {
        return Ok((headers, render_text(&id, &first)).into_response());
    }
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    let (tx, rx) = tokio::sync::mpsc::channel::<String>(16);
    let follower = Follower {
        target,
        id,
        deadline: tokio::time::Instant::now() + Duration::from_secs(u64::from(timeout_s)),
        interval: Duration::from_millis(u64::from(interval_ms)),
        timeout_s,
    };
    tokio::spawn(follower.run(first, tx));
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|chunk| (Ok::<_, std::convert::Infallible>(Bytes::from(chunk)), rx))
    });
    Ok((headers, Body::from_stream(stream)).into_response())
}

fn is_done(status: Option<&str>) -> bool {
    status == Some(job_status::COMPLETED)
}

fn step_header(index: usize, total: usize, log: &JobLog, with_status: bool) -> String {
    let mut line = format!("## Step {}/{}: {}", index + 1, total, log.step);
    if with_status {
        let status = log.status.as_deref().unwrap_or("unknown");
        match &log.conclusion {
            Some(c) => line.push_str(&format!(" [{status}, {c}]")),
            None => line.push_str(&format!(" [{status}]")),
        }
    }
    line.push('\n');
    line
}

fn job_line(id: &str, logs: &JobLogs) -> String {
    let job = &logs.job;
    let status = job.status.as_deref().unwrap_or("unknown");
    let mut line = format!("# Job {id}");
    if let Some(name) = &job.name {
        line.push_str(&format!(" ({name})"));
    }
    line.push_str(&format!(": {status}"));
    if let Some(c) = &job.conclusion {
        line.push_str(&format!(", {c}"));
    }
    for (label, value) in [
        ("branch", &job.branch),
        ("commit", &job.commit),
        ("workflow", &job.workflow),
    ] {
        if let Some(v) = value {
            line.push_str(&format!(" {label}={v}"));
        }
    }
    line.push('\n');
    line
}

fn push_line(out: &mut String, line: &str) {
    out.push_str(line.trim_end_matches(['\r', '\n']));
    out.push('\n');
}

/// Every step, a header line each, for a language model or a terminal.
pub fn render_text(id: &str, logs: &JobLogs) -> String {
    let mut out = job_line(id, logs);
    let total = logs.steps.len();
    for (i, step) in logs.steps.iter().enumerate() {
        out.push('\n');
        out.push_str(&step_header(i, total, step, true));
        for line in &step.lines {
            push_line(&mut out, line);
        }
    }
    out
}

/// Streams a running job's new log lines until it ends or the deadline passes.
struct Follower {
    target: Target,
    id: String,
    deadline: tokio::time::Instant,
    interval: Duration,
    timeout_s: u32,
}

/// What has been written for one step.
#[derive(Default, Clone)]
struct Shown {
    header: bool,
    lines: usize,
    /// Completed and fully written: not fetched again.
    done: bool,
}

impl Follower {
    async fn run(self, first: JobLogs, tx: tokio::sync::mpsc::Sender<String>) {
        let mut shown: Vec<(String, Shown)> = Vec::new();
        let mut logs = first;
        if tx.send(job_line(&self.id, &logs)).await.is_err() {
            return;
        }
        loop {
            let chunk = Self::delta(&logs, &mut shown);
            if !chunk.is_empty() && tx.send(chunk).await.is_err() {
                return;
            }
            if is_done(logs.job.status.as_deref()) {
                let mut end = String::from("\n");
                end.push_str(&job_line(&self.id, &logs));
                let _ = tx.send(end).await;
                return;
            }
            if tokio::time::Instant::now() + self.interval > self.deadline {
                let status = logs.job.status.as_deref().unwrap_or("unknown");
                let _ = tx
                    .send(format!(
                        "\n# stopped following after {}s; job {} is still {status}\n",
                        self.timeout_s, self.id
                    ))
                    .await;
                return;
            }
            tokio::select! {
                _ = tokio::time::sleep(self.interval) => {}
                _ = tx.closed() => return,
            }
            let skip: Vec<String> = shown
                .iter()
                .filter(|(_, s)| s.done)
                .map(|(id, _)| id.clone())
                .collect();
            let next = self
                .target
                .write(|p, scope| {
                    let (id, skip) = (&self.id, &skip);
                    async move { writes_of(&*p)?.job_logs(scope, id, skip).await }
                })
                .await;
            match next {
                Ok(next) => logs = next,
                Err(err) => {
                    let _ = tx.send(format!("\n# error while following: {err}\n")).await;
                    return;
                }
            }
        }
    }

    /// New text since the last poll; headers appear when a step starts.
    fn delta(logs: &JobLogs, shown: &mut Vec<(String, Shown)>) -> String {
        let mut out = String::new();
        let total = logs.steps.len();
        let job_done = is_done(logs.job.status.as_deref());
        for (i, step) in logs.steps.iter().enumerate() {
            let pos = match shown.iter().position(|(id, _)| *id == step.step_id) {
                Some(p) => p,
                None => {
                    shown.push((step.step_id.clone(), Shown::default()));
                    shown.len() - 1
                }
            };
            let state = &mut shown[pos].1;
            if state.done {
                continue;
            }
            let started = step.status.as_deref() != Some(job_status::QUEUED);
            let step_done = is_done(step.status.as_deref());
            if !state.header && (started && (!step.lines.is_empty() || step_done) || job_done) {
                out.push('\n');
                out.push_str(&step_header(i, total, step, step_done || job_done));
                state.header = true;
            }
            if state.header {
                for line in step.lines.iter().skip(state.lines) {
                    push_line(&mut out, line);
                }
                state.lines = state.lines.max(step.lines.len());
            }
            // Lines fetched after a step was seen completed are final.
            state.done = step_done && state.header;
        }
        out
    }
}

// ----- workflows ----------------------------------------------------------------------

#[utoipa::path(post, path = "/unified/ci-cd/workflow", tag = crate::openapi::TAG_WRITES, security(("api_token" = [])),
    summary = "Create a workflow",
    params(("integrated_account_id" = String, Query, description = "the linked account"),
        ("workspace" = Option<String>, Query, description = "Buddy workspace domain; optional when the account has one workspace"),
        ("repo" = String, Query, description = "Buddy project name (alias `project`)"),
        ("Idempotency-Key" = Option<String>, Header, description = "the same key returns the first answer and reaches Buddy once")),
    request_body = WorkflowInput,
    responses(
        (status = 201, description = "the new workflow", body = cigate_core::model::Workflow),
        (status = 400, description = "a missing or invalid parameter"),
        (status = 403, description = "Buddy refused: the account's token lacks a scope (`details.missing_scopes`)"),
        (status = 404, description = "no such account or object"),
        (status = 409, description = "Buddy refused the change in the object's state, or a request with this Idempotency-Key is still in progress"),
        (status = 422, description = "an invalid body, or the Idempotency-Key was used with another request"),
        (status = 502, description = "Buddy failed or could not be reached"),
        (status = 504, description = "Buddy did not answer within the deadline"),
    ))]
pub async fn create_workflow(
    state: AppState,
    caller: Caller,
    query: QueryPairs,
    input: WorkflowInput,
) -> ApiResult<Response> {
    input.validate(true).map_err(invalid)?;
    let target = Target::load(&state, &caller, &query).await?;
    let found = target
        .write(|p, scope| {
            let input = &input;
            async move { writes_of(&*p)?.create_workflow(scope, input).await }
        })
        .await?;
    record_response(StatusCode::CREATED, found, &query)
}

#[utoipa::path(patch, path = "/unified/ci-cd/workflow/{id}", tag = crate::openapi::TAG_WRITES, security(("api_token" = [])),
    summary = "Change a workflow",
    params(("id" = String, Path, description = "the workflow's (pipeline's) id", example = "7"),
        ("integrated_account_id" = String, Query, description = "the linked account"),
        ("workspace" = Option<String>, Query, description = "Buddy workspace domain; optional when the account has one workspace"),
        ("repo" = String, Query, description = "Buddy project name (alias `project`)"),
        ("Idempotency-Key" = Option<String>, Header, description = "the same key returns the first answer and reaches Buddy once")),
    request_body = WorkflowInput,
    responses(
        (status = 200, description = "the workflow after the change", body = cigate_core::model::Workflow),
        (status = 400, description = "a missing or invalid parameter"),
        (status = 403, description = "Buddy refused: the account's token lacks a scope (`details.missing_scopes`)"),
        (status = 404, description = "no such account or object"),
        (status = 409, description = "Buddy refused the change in the object's state, or a request with this Idempotency-Key is still in progress"),
        (status = 422, description = "an invalid body, or the Idempotency-Key was used with another request"),
        (status = 502, description = "Buddy failed or could not be reached"),
        (status = 504, description = "Buddy did not answer within the deadline"),
    ))]
pub async fn update(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiPath((resource, id)): ApiPath<(String, String)>,
    query: QueryPairs,
    body: Bytes,
) -> ApiResult<Response> {
    if writable_by("PATCH", &resource, &[Resource::Workflows, Resource::Repos])? == Resource::Repos
    {
        return update_repo(state, caller, query, id, required_json(&body)?).await;
    }
    let input: WorkflowInput = required_json(&body)?;
    input.validate(false).map_err(invalid)?;
    let target = Target::load(&state, &caller, &query).await?;
    let found = target
        .write(|p, scope| {
            let (id, input) = (&id, &input);
            async move { writes_of(&*p)?.update_workflow(scope, id, input).await }
        })
        .await?;
    record_response(StatusCode::OK, found, &query)
}

#[utoipa::path(delete, path = "/unified/ci-cd/workflow/{id}", tag = crate::openapi::TAG_WRITES, security(("api_token" = [])),
    summary = "Delete a workflow",
    params(("id" = String, Path, description = "the workflow's (pipeline's) id", example = "7"),
        ("integrated_account_id" = String, Query, description = "the linked account"),
        ("workspace" = Option<String>, Query, description = "Buddy workspace domain; optional when the account has one workspace"),
        ("repo" = String, Query, description = "Buddy project name (alias `project`)")),
    responses(
        (status = 204, description = "deleted"),
        (status = 400, description = "a missing or invalid parameter"),
        (status = 403, description = "Buddy refused: the account's token lacks a scope (`details.missing_scopes`)"),
        (status = 404, description = "no such account or object"),
        (status = 409, description = "Buddy refused the deletion in the workflow's state"),
        (status = 502, description = "Buddy failed or could not be reached"),
        (status = 504, description = "Buddy did not answer within the deadline"),
    ))]
pub async fn remove(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiPath((resource, id)): ApiPath<(String, String)>,
    query: QueryPairs,
) -> ApiResult<StatusCode> {
    if writable_by("DELETE", &resource, &[Resource::Workflows, Resource::Repos])? == Resource::Repos
    {
        return delete_repo(state, caller, query, id).await;
    }
    let target = Target::load(&state, &caller, &query).await?;
    target
        .write(|p, scope| {
            let id = &id;
            async move { writes_of(&*p)?.delete_workflow(scope, id).await }
        })
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

// ----- workspaces and repos ----------------------------------------------------------------

#[utoipa::path(post, path = "/unified/ci-cd/workspaces", tag = crate::openapi::TAG_WRITES, security(("api_token" = [])),
    summary = "Create a workspace",
    description = "Self-hosted Buddy creates workspaces through its API; on Buddy's cloud this answers 422 saying to create it in Buddy's web app.",
    params(("integrated_account_id" = String, Query, description = "the linked account"),
        ("Idempotency-Key" = Option<String>, Header, description = "the same key returns the first answer and reaches Buddy once")),
    request_body = WorkspaceInput,
    responses(
        (status = 201, description = "the new workspace", body = cigate_core::model::Workspace),
        (status = 400, description = "a missing or invalid parameter, or Buddy refused the workspace (its reason in `detail`)"),
        (status = 403, description = "Buddy refused: the account's token lacks a scope (`details.missing_scopes`)"),
        (status = 404, description = "no such account"),
        (status = 409, description = "a request with this Idempotency-Key is still in progress"),
        (status = 422, description = "an invalid body, an account on Buddy's cloud (workspaces are created in Buddy's web app there), or the Idempotency-Key was used with another request"),
        (status = 502, description = "Buddy failed or could not be reached"),
        (status = 504, description = "Buddy did not answer within the deadline"),
    ))]
pub async fn create_workspace(
    state: AppState,
    caller: Caller,
    query: QueryPairs,
    input: WorkspaceInput,
) -> ApiResult<Response> {
    input.validate().map_err(invalid)?;
    let target = Target::load(&state, &caller, &query).await?;
    let found = target
        .write(|p, _| {
            let input = &input;
            async move { writes_of(&*p)?.create_workspace(input).await }
        })
        .await?;
    record_response(StatusCode::CREATED, found, &query)
}

#[utoipa::path(post, path = "/unified/ci-cd/repos", tag = crate::openapi::TAG_WRITES, security(("api_token" = [])),
    summary = "Create a repo",
    description = "Creates a Buddy project: Buddy-hosted Git (no source given), mirrored from a Git integration of the workspace (`integration` from `GET /unified/ci-cd/integrations`, and `external_repo` such as `owner/repo`), or any Git URL (`git_url`, with `git_username` and the write-only `git_password`).",
    params(("integrated_account_id" = String, Query, description = "the linked account"),
        ("workspace" = Option<String>, Query, description = "Buddy workspace domain; optional when the account has one workspace"),
        ("Idempotency-Key" = Option<String>, Header, description = "the same key returns the first answer and reaches Buddy once")),
    request_body = RepoInput,
    responses(
        (status = 201, description = "the new repo", body = cigate_core::model::Repo),
        (status = 400, description = "a missing or invalid parameter, or Buddy refused the repo (`type` `/problems/remote-error`, Buddy's reason in `detail`: a name taken, an unknown integration)"),
        (status = 403, description = "Buddy refused: the account's token lacks a scope (`details.missing_scopes`)"),
        (status = 404, description = "no such account or workspace"),
        (status = 409, description = "a request with this Idempotency-Key is still in progress"),
        (status = 422, description = "an invalid body, or the Idempotency-Key was used with another request"),
        (status = 502, description = "Buddy failed or could not be reached"),
        (status = 504, description = "Buddy did not answer within the deadline"),
    ))]
pub async fn create_repo(
    state: AppState,
    caller: Caller,
    query: QueryPairs,
    input: RepoInput,
) -> ApiResult<Response> {
    input.validate(true).map_err(invalid)?;
    let target = Target::load(&state, &caller, &query).await?;
    let found = target
        .write(|p, scope| {
            let input = &input;
            async move { writes_of(&*p)?.create_repo(scope, input).await }
        })
        .await?;
    record_response(StatusCode::CREATED, found, &query)
}

#[utoipa::path(patch, path = "/unified/ci-cd/repos/{id}", tag = crate::openapi::TAG_WRITES, security(("api_token" = [])),
    summary = "Change a repo",
    description = "Renames a repo (`name`, `display_name`) or changes its default branch, access or pull-request support; its Git source stays.",
    params(("id" = String, Path, description = "the repo's id (Buddy project name)", example = "shop-api"),
        ("integrated_account_id" = String, Query, description = "the linked account"),
        ("workspace" = Option<String>, Query, description = "Buddy workspace domain; optional when the account has one workspace"),
        ("Idempotency-Key" = Option<String>, Header, description = "the same key returns the first answer and reaches Buddy once")),
    request_body = RepoInput,
    responses(
        (status = 200, description = "the repo after the change", body = cigate_core::model::Repo),
        (status = 400, description = "a missing or invalid parameter, or Buddy refused the change (its reason in `detail`)"),
        (status = 403, description = "Buddy refused: the account's token lacks a scope (`details.missing_scopes`)"),
        (status = 404, description = "no such account or repo"),
        (status = 409, description = "a request with this Idempotency-Key is still in progress"),
        (status = 422, description = "an invalid body, or the Idempotency-Key was used with another request"),
        (status = 502, description = "Buddy failed or could not be reached"),
        (status = 504, description = "Buddy did not answer within the deadline"),
    ))]
pub async fn update_repo(
    state: AppState,
    caller: Caller,
    query: QueryPairs,
    id: String,
    input: RepoInput,
) -> ApiResult<Response> {
    cigate_core::params::check_identifier("id", &id)?;
    input.validate(false).map_err(invalid)?;
    let target = Target::load(&state, &caller, &query).await?;
    let found = target
        .write(|p, scope| {
            let (id, input) = (&id, &input);
            async move { writes_of(&*p)?.update_repo(scope, id, input).await }
        })
        .await?;
    record_response(StatusCode::OK, found, &query)
}

#[utoipa::path(delete, path = "/unified/ci-cd/repos/{id}", tag = crate::openapi::TAG_WRITES, security(("api_token" = [])),
    summary = "Delete a repo",
    description = "Deletes the Buddy project with its pipelines and history (Buddy's `PROJECT_DELETE` scope).",
    params(("id" = String, Path, description = "the repo's id (Buddy project name)", example = "shop-api"),
        ("integrated_account_id" = String, Query, description = "the linked account"),
        ("workspace" = Option<String>, Query, description = "Buddy workspace domain; optional when the account has one workspace")),
    responses(
        (status = 204, description = "deleted"),
        (status = 400, description = "a missing or invalid parameter"),
        (status = 403, description = "Buddy refused: the account's token lacks a scope (`details.missing_scopes`)"),
        (status = 404, description = "no such account or repo"),
        (status = 502, description = "Buddy failed or could not be reached"),
        (status = 504, description = "Buddy did not answer within the deadline"),
    ))]
pub async fn delete_repo(
    state: AppState,
    caller: Caller,
    query: QueryPairs,
    id: String,
) -> ApiResult<StatusCode> {
    cigate_core::params::check_identifier("id", &id)?;
    let target = Target::load(&state, &caller, &query).await?;
    target
        .write(|p, scope| {
            let id = &id;
            async move { writes_of(&*p)?.delete_repo(scope, id).await }
        })
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(get, path = "/unified/ci-cd/integrations", tag = crate::openapi::TAG_WRITES, security(("api_token" = [])),
    summary = "List Git integrations",
    description = "The workspace's Git integrations (GitHub, GitLab, Bitbucket) a repo can be created from: pass an `id` as `integration` to `POST /unified/ci-cd/repos`.",
    params(("integrated_account_id" = String, Query, description = "the linked account"),
        ("workspace" = Option<String>, Query, description = "Buddy workspace domain; optional when the account has one workspace")),
    responses(
        (status = 200, description = "the list envelope of integrations", body = ListEnvelope<cigate_core::model::Integration>),
        (status = 400, description = "a missing or invalid parameter"),
        (status = 403, description = "Buddy refused: the account's token lacks a scope (`details.missing_scopes`)"),
        (status = 404, description = "no such account or workspace"),
        (status = 502, description = "Buddy failed or could not be reached"),
        (status = 504, description = "Buddy did not answer within the deadline"),
    ))]
pub async fn list_integrations(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    query: QueryPairs,
) -> ApiResult<Json<ListEnvelope<cigate_core::Rendered>>> {
    let render = query.render_options()?;
    let target = Target::load(&state, &caller, &query).await?;
    let records = target
        .write(|p, scope| async move { writes_of(&*p)?.list_integrations(scope).await })
        .await?;
    let items = records.into_iter().map(|r| r.render(&render)).collect();
    Ok(Json(ListEnvelope::new(items, None)))
}

// ----- variables ----------------------------------------------------------------------

#[utoipa::path(get, path = "/unified/ci-cd/variables", tag = crate::openapi::TAG_WRITES, security(("api_token" = [])),
    summary = "List variables",
    description = "The variables of exactly one scope: the workspace, a project (`project`) or a pipeline (`project` and `workflow`). Encrypted values are never returned.",
    params(("integrated_account_id" = String, Query, description = "the linked account"),
        ("workspace" = Option<String>, Query, description = "Buddy workspace domain; optional when the account has one workspace"),
        ("project" = Option<String>, Query, description = "project scope (alias `repo`)"),
        ("workflow" = Option<String>, Query, description = "pipeline scope (needs `project`)")),
    responses(
        (status = 200, description = "the list envelope of variables", body = ListEnvelope<cigate_core::model::Variable>),
        (status = 400, description = "a missing or invalid parameter"),
        (status = 403, description = "Buddy refused: the account's token lacks a scope (`details.missing_scopes`)"),
        (status = 404, description = "no such account or object"),
        (status = 502, description = "Buddy failed or could not be reached"),
        (status = 504, description = "Buddy did not answer within the deadline"),
    ))]
pub async fn list_variables(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    query: QueryPairs,
) -> ApiResult<Json<ListEnvelope<cigate_core::Rendered>>> {
    let render = query.render_options()?;
    let target = Target::load(&state, &caller, &query).await?;
    let records = target
        .write(|p, scope| async move { writes_of(&*p)?.list_variables(scope).await })
        .await?;
    Ok(Json(ListEnvelope::new(
        records.into_iter().map(|r| r.render(&render)).collect(),
        None,
    )))
}

#[utoipa::path(get, path = "/unified/ci-cd/variables/{id}", tag = crate::openapi::TAG_WRITES, security(("api_token" = [])),
    summary = "Get a variable",
    params(("id" = String, Path, description = "the variable's id", example = "12"),
        ("integrated_account_id" = String, Query, description = "the linked account"),
        ("workspace" = Option<String>, Query, description = "Buddy workspace domain; optional when the account has one workspace")),
    responses(
        (status = 200, description = "the variable (no value when encrypted)", body = cigate_core::model::Variable),
        (status = 400, description = "a missing or invalid parameter"),
        (status = 403, description = "Buddy refused: the account's token lacks a scope (`details.missing_scopes`)"),
        (status = 404, description = "no such account or object"),
        (status = 502, description = "Buddy failed or could not be reached"),
        (status = 504, description = "Buddy did not answer within the deadline"),
    ))]
pub async fn get_variable(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiPath(id): ApiPath<String>,
    query: QueryPairs,
) -> ApiResult<Response> {
    let target = Target::load(&state, &caller, &query).await?;
    let found = target
        .write(|p, scope| {
            let id = &id;
            async move { writes_of(&*p)?.get_variable(scope, id).await }
        })
        .await?;
    record_response(StatusCode::OK, found, &query)
}

#[utoipa::path(post, path = "/unified/ci-cd/variables", tag = crate::openapi::TAG_WRITES, security(("api_token" = [])),
    summary = "Create a variable",
    params(("integrated_account_id" = String, Query, description = "the linked account"),
        ("workspace" = Option<String>, Query, description = "Buddy workspace domain; optional when the account has one workspace"),
        ("project" = Option<String>, Query, description = "project scope (alias `repo`)"),
        ("workflow" = Option<String>, Query, description = "pipeline scope (needs `project`)"),
        ("Idempotency-Key" = Option<String>, Header, description = "the same key returns the first answer and reaches Buddy once")),
    request_body = VariableInput,
    responses(
        (status = 201, description = "the new variable (no value when encrypted)", body = cigate_core::model::Variable),
        (status = 400, description = "a missing or invalid parameter"),
        (status = 403, description = "Buddy refused: the account's token lacks a scope (`details.missing_scopes`)"),
        (status = 404, description = "no such account or object"),
        (status = 409, description = "Buddy refused the change in the object's state, or a request with this Idempotency-Key is still in progress"),
        (status = 422, description = "an invalid body, or the Idempotency-Key was used with another request"),
        (status = 502, description = "Buddy failed or could not be reached"),
        (status = 504, description = "Buddy did not answer within the deadline"),
    ))]
pub async fn create_variable(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    query: QueryPairs,
    ApiJson(input): ApiJson<VariableInput>,
) -> ApiResult<Response> {
    input.validate(true).map_err(invalid)?;
    let target = Target::load(&state, &caller, &query).await?;
    let found = target
        .write(|p, scope| {
            let input = &input;
            async move { writes_of(&*p)?.create_variable(scope, input).await }
        })
        .await?;
    record_response(StatusCode::CREATED, found, &query)
}

#[utoipa::path(patch, path = "/unified/ci-cd/variables/{id}", tag = crate::openapi::TAG_WRITES, security(("api_token" = [])),
    summary = "Change a variable",
    params(("id" = String, Path, description = "the variable's id", example = "12"),
        ("integrated_account_id" = String, Query, description = "the linked account"),
        ("workspace" = Option<String>, Query, description = "Buddy workspace domain; optional when the account has one workspace"),
        ("Idempotency-Key" = Option<String>, Header, description = "the same key returns the first answer and reaches Buddy once")),
    request_body = VariableInput,
    responses(
        (status = 200, description = "the variable after the change", body = cigate_core::model::Variable),
        (status = 400, description = "a missing or invalid parameter"),
        (status = 403, description = "Buddy refused: the account's token lacks a scope (`details.missing_scopes`)"),
        (status = 404, description = "no such account or object"),
        (status = 409, description = "Buddy refused the change in the object's state, or a request with this Idempotency-Key is still in progress"),
        (status = 422, description = "an invalid body, or the Idempotency-Key was used with another request"),
        (status = 502, description = "Buddy failed or could not be reached"),
        (status = 504, description = "Buddy did not answer within the deadline"),
    ))]
pub async fn update_variable(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiPath(id): ApiPath<String>,
    query: QueryPairs,
    ApiJson(input): ApiJson<VariableInput>,
) -> ApiResult<Response> {
    input.validate(false).map_err(invalid)?;
    let target = Target::load(&state, &caller, &query).await?;
    let found = target
        .write(|p, scope| {
            let (id, input) = (&id, &input);
            async move { writes_of(&*p)?.update_variable(scope, id, input).await }
        })
        .await?;
    record_response(StatusCode::OK, found, &query)
}

#[utoipa::path(delete, path = "/unified/ci-cd/variables/{id}", tag = crate::openapi::TAG_WRITES, security(("api_token" = [])),
    summary = "Delete a variable",
    params(("id" = String, Path, description = "the variable's id", example = "12"),
        ("integrated_account_id" = String, Query, description = "the linked account"),
        ("workspace" = Option<String>, Query, description = "Buddy workspace domain; optional when the account has one workspace")),
    responses(
        (status = 204, description = "deleted"),
        (status = 400, description = "a missing or invalid parameter"),
        (status = 403, description = "Buddy refused: the account's token lacks a scope (`details.missing_scopes`)"),
        (status = 404, description = "no such account or object"),
        (status = 502, description = "Buddy failed or could not be reached"),
        (status = 504, description = "Buddy did not answer within the deadline"),
    ))]
pub async fn delete_variable(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiPath(id): ApiPath<String>,
    query: QueryPairs,
) -> ApiResult<StatusCode> {
    let target = Target::load(&state, &caller, &query).await?;
    target
        .write(|p, scope| {
            let id = &id;
            async move { writes_of(&*p)?.delete_variable(scope, id).await }
        })
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;
    use cigate_core::model::Job;

    fn step(id: &str, status: &str, lines: &[&str]) -> JobLog {
        JobLog {
            step: format!("step {id}"),
            step_id: id.into(),
            status: Some(status.into()),
            conclusion: (status == "completed").then(|| "passed".into()),
            lines: lines.iter().map(|l| (*l).to_owned()).collect(),
        }
    }

    fn logs(status: &str, steps: Vec<JobLog>) -> JobLogs {
        JobLogs {
            job: Job {
                id: "7".into(),
                status: Some(status.into()),
                ..Default::default()
            },
            steps,
        }
    }

    #[test]
    fn text_has_a_header_per_step() {
        let text = render_text(
            "7",
            &logs(
                "completed",
                vec![
                    step("a", "completed", &["one", "two\n"]),
                    step("b", "completed", &[]),
                ],
            ),
        );
        assert!(text.starts_with("# Job 7: completed\n"), "{text}");
        assert!(text.contains("## Step 1/2: step a [completed, passed]\none\ntwo\n"));
        assert!(text.contains("## Step 2/2: step b [completed, passed]\n"));
    }

    #[test]
    fn follow_writes_only_new_lines_and_headers_once() {
        let mut shown = Vec::new();
        let first = Follower::delta(
            &logs(
                "in_progress",
                vec![step("a", "in_progress", &["one"]), step("b", "queued", &[])],
            ),
            &mut shown,
        );
        assert_eq!(first, "\n## Step 1/2: step a\none\n");
        let second = Follower::delta(
            &logs(
                "in_progress",
                vec![
                    step("a", "completed", &["one", "two"]),
                    step("b", "in_progress", &["x"]),
                ],
            ),
            &mut shown,
        );
        assert_eq!(second, "two\n\n## Step 2/2: step b\nx\n");
        assert!(shown[0].1.done);
        // A skipped (unfetched) finished step is not repeated.
        let third = Follower::delta(
            &logs(
                "completed",
                vec![
                    step("a", "completed", &[]),
                    step("b", "completed", &["x", "y"]),
                ],
            ),
            &mut shown,
        );
        assert_eq!(third, "y\n");
    }
}
