//! `/unified/ci-cd/<resource>`: normalised reads through the account's provider.

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Json, Router};
use serde_json::Value;

use cigate_core::cursor::CursorBinding;
use cigate_core::model::{Job, Repo};
use cigate_core::{ListQuery, RenderOptions, Rendered, Resource};

use crate::auth::Caller;
use crate::envelope::ListEnvelope;
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiPath, QueryPairs};
use crate::gateway::{self, Gateway};
use crate::state::AppState;

/// Named in the 400 when `integrated_account_id` is missing.
const API: &str = "the unified API";

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/unified/ci-cd/{resource}", get(list))
        .route("/unified/ci-cd/{resource}/{id}", get(fetch))
}

fn resource(name: &str) -> ApiResult<Resource> {
    Resource::from_path(name).ok_or_else(|| {
        ApiError::NotFound(format!(
            "unknown resource `{name}`; known: workspaces, repos, branches, pull-requests, workflows, jobs"
        ))
    })
}

/// Workspace and repo ids are the names used as path segments upstream, so they obey
/// the scoping parameters' rule; branch and pull-request ids may hold `/` (git refs,
/// `pull/3`) and are looked up, and the other ids are numeric.
fn check_object_id(resource: Resource, id: &str) -> ApiResult<()> {
    if matches!(resource, Resource::Workspaces | Resource::Repos) {
        cigate_core::params::check_identifier("id", id)?;
    }
    Ok(())
}

/// A cursor is bound to everything that shapes the page, so it cannot be replayed
/// against other filters, another account or another environment.
fn binding(caller: &Caller, account_id: &str, resource: Resource, q: &ListQuery) -> CursorBinding {
    CursorBinding {
        environment_id: caller.environment_id.clone(),
        account_id: account_id.to_owned(),
        resource: resource.as_str().to_owned(),
        filters: q.canonical(),
    }
}

#[utoipa::path(get, path = "/unified/ci-cd/{resource}", tag = crate::openapi::TAG_UNIFIED, security(("api_token" = [])),
    summary = "List records of a resource",
    description = "A page of normalised records of one resource of the account. Buddy's scoping parameters are named as Truto names them: `repos` need `workspace`; `branches`, `pull-requests` and `workflow` need `workspace` and `repo`; `jobs` need `workspace` and `project` (without `workflow` the jobs of every pipeline are merged, newest first). `workspace` may be left out when the account has one.",
    params(
        ("resource" = crate::openapi::UnifiedResource, Path, description = "the kind of record", example = "jobs"),
        ("integrated_account_id" = Option<String>, Query, description = "the linked account to read; required unless `tenant_id` is given for jobs"),
        ("tenant_id" = Option<String>, Query, description = "jobs without `integrated_account_id`: every active account of this tenant merged into one feed, newest first; each job carries `integrated_account_id` and `tenant_id`, and accounts left out (not active) are named in `skipped_accounts`"),
        ("workspace" = Option<String>, Query, description = "Buddy workspace domain; optional when the account has one workspace (the tenant feed: every workspace of each account)"),
        ("repo" = Option<String>, Query, description = "Buddy project name (alias `project`)"),
        ("project" = Option<String>, Query, description = "alias of `repo`"),
        ("workflow" = Option<String>, Query, description = "pipeline id; jobs without it merge every pipeline"),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 1000, description = "records per page, 1–1000, default 100"),
        ("next_cursor" = Option<String>, Query, description = "from the previous page; change nothing else"),
        ("status" = Option<String>, Query, description = "jobs: `queued`, `in_progress`, `waiting` or `completed`"),
        ("conclusion" = Option<String>, Query, description = "jobs: `passed`, `failed`, `cancelled`, `timeout`, `skipped` or `partial`"),
        ("branch" = Option<String>, Query, description = "jobs: of this branch"),
        ("created_at[gte]" = Option<String>, Query, description = "jobs: created at or after this RFC 3339 time"),
        ("created_at[lte]" = Option<String>, Query, description = "jobs: created at or before this RFC 3339 time"),
        ("truto_ignore_remote_data" = Option<bool>, Query, description = "drop `remote_data`"),
        ("truto_exclude_fields" = Option<String>, Query, description = "comma-separated fields to drop"),
        ("truto_response_format" = Option<String>, Query, description = "`raw` returns Buddy's objects"),
        ("truto_timeout_ms" = Option<u32>, Query, minimum = 1, maximum = 300000, description = "deadline of the call, retries and rate-limit waits included"),
    ),
    responses(
        (status = 200, description = "the list envelope; `result` holds records of the resource's model (Workspace, Repo, Branch, PullRequest, Workflow or Job)", body = ListEnvelope<Job>,
            example = json!({"result": [{"id": "42", "name": "Build and deploy", "status": "completed", "conclusion": "passed",
                "branch": "master", "commit": "506a3963507943d6908154f4bc9646e829128a08", "workflow": "7", "repo": "company-website",
                "workspace": "acme", "created_at": "2026-11-30T09:12:00Z"}],
                "next_cursor": "eyJ2IjoxLCJwIjp7Im9mZnNldCI6MX19.c2ln", "prev_cursor": null, "result_count": 1})),
        (status = 400, description = "a missing or invalid parameter (`details` names missing ones), or a bad cursor"),
        (status = 403, description = "Buddy refused: the account's token lacks a scope (`details.missing_scopes`)"),
        (status = 404, description = "unknown resource or account, or no such object at Buddy"),
        (status = 502, description = "Buddy failed or could not be reached"),
        (status = 504, description = "Buddy did not answer within the deadline"),
    ))]
pub async fn list(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiPath(resource_name): ApiPath<String>,
    query: QueryPairs,
) -> ApiResult<(HeaderMap, Json<ListEnvelope<Rendered>>)> {
    let resource = resource(&resource_name)?;
    let render = query.render_options()?;
    if let (Resource::Jobs, None, Some(tenant)) = (
        resource,
        query.get("integrated_account_id"),
        query.get("tenant_id"),
    ) {
        return tenant_jobs(&state, &caller, tenant, &query, &render).await;
    }
    let gateway = Gateway::for_query(&state, &caller, &query, API).await?;
    let list_query = query.list_query(&gateway.account().context)?;
    let binding = binding(&caller, query.account_id(API)?, resource, &list_query);
    let position = query
        .get("next_cursor")
        .map(|cursor| {
            state
                .cursors
                .decode(&binding, cursor)
                .map_err(|err| ApiError::InvalidCursor(err.to_string()))
        })
        .transpose()?;
    let page = gateway
        .call(|provider| {
            let (list_query, position) = (&list_query, position.clone());
            async move { provider.list(resource, list_query, position).await }
        })
        .await?;
    let next_cursor = page
        .next
        .as_ref()
        .map(|next| state.cursors.encode(&binding, next));
    let items = page.items.into_iter().map(|r| r.render(&render)).collect();
    Ok((
        gateway::rate_limit_headers(page.rate_limit.as_ref()),
        Json(ListEnvelope::new(items, next_cursor)),
    ))
}

/// The tenant-wide job feed (see [`super::feed`]), in the list envelope with the
/// accounts left out named in `skipped_accounts`.
async fn tenant_jobs(
    state: &AppState,
    caller: &Caller,
    tenant: &str,
    query: &QueryPairs,
    render: &RenderOptions,
) -> ApiResult<(HeaderMap, Json<ListEnvelope<Rendered>>)> {
    // No account's default workspace: without `workspace`, every workspace of each.
    let list_query = query.list_query(&Value::Null)?;
    let timeout = query.timeout(state.default_timeout())?;
    let page = super::feed::page(
        state,
        caller,
        crate::gateway::AccountScope::Tenant(tenant),
        &list_query,
        query.get("next_cursor"),
        render,
        timeout,
    )
    .await?;
    let mut envelope = ListEnvelope::new(page.items, page.next_cursor);
    envelope.skipped_accounts = Some(page.skipped_accounts);
    Ok((HeaderMap::new(), Json(envelope)))
}

#[utoipa::path(get, path = "/unified/ci-cd/{resource}/{id}", tag = crate::openapi::TAG_UNIFIED, security(("api_token" = [])),
    summary = "Get one record",
    description = "One normalised record by its id, scoped like the list (`workspace`, `repo`/`project`, `workflow`).",
    params(
        ("resource" = crate::openapi::UnifiedResource, Path, description = "the kind of record", example = "repos"),
        ("id" = String, Path, description = "the record's `id`", example = "company-website"),
        ("integrated_account_id" = String, Query, description = "the linked account to read"),
        ("workspace" = Option<String>, Query, description = "Buddy workspace domain; optional when the account has one workspace"),
        ("repo" = Option<String>, Query, description = "Buddy project name (alias `project`)"),
        ("project" = Option<String>, Query, description = "alias of `repo`"),
        ("workflow" = Option<String>, Query, description = "pipeline id (jobs)"),
        ("format" = Option<String>, Query, description = "`json` (default), or `yaml` for a workflow: its definition as Buddy's pipeline YAML (`application/yaml`)"),
        ("truto_ignore_remote_data" = Option<bool>, Query, description = "drop `remote_data`"),
        ("truto_exclude_fields" = Option<String>, Query, description = "comma-separated fields to drop"),
        ("truto_response_format" = Option<String>, Query, description = "`raw` returns Buddy's object"),
        ("truto_timeout_ms" = Option<u32>, Query, minimum = 1, maximum = 300000, description = "deadline of the call, retries and rate-limit waits included"),
    ),
    responses(
        (status = 200, description = "the bare record, of the resource's model (Workspace, Repo, Branch, PullRequest, Workflow or Job); with `format=yaml`, a workflow's YAML",
            content((Repo = "application/json"), (String = "application/yaml"))),
        (status = 400, description = "a missing or invalid parameter"),
        (status = 403, description = "Buddy refused: the account's token lacks a scope"),
        (status = 404, description = "unknown resource or account, or no such object"),
        (status = 502, description = "Buddy failed or could not be reached"),
        (status = 504, description = "Buddy did not answer within the deadline"),
    ))]
pub async fn fetch(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiPath((resource_name, id)): ApiPath<(String, String)>,
    query: QueryPairs,
) -> ApiResult<Response> {
    let resource = resource(&resource_name)?;
    check_object_id(resource, &id)?;
    let render = query.render_options()?;
    let gateway = Gateway::for_query(&state, &caller, &query, API).await?;
    let list_query = query.list_query(&gateway.account().context)?;
    match (resource, query.get("format")) {
        (_, None | Some("json")) => {}
        (Resource::Workflows, Some("yaml")) => {
            let yaml = gateway
                .call(|provider| {
                    let (id, list_query) = (&id, &list_query);
                    async move {
                        gateway::writes_of(&*provider)?
                            .workflow_yaml(list_query, id)
                            .await
                    }
                })
                .await?;
            let mut headers = HeaderMap::new();
            headers.insert(
                axum::http::header::CONTENT_TYPE,
                axum::http::HeaderValue::from_static("application/yaml; charset=utf-8"),
            );
            return Ok((headers, yaml).into_response());
        }
        (_, Some(other)) => {
            return Err(ApiError::bad_request(
                "/problems/invalid-parameter",
                format!("`format` must be `json`, or `yaml` for a workflow, not `{other}`"),
            ))
        }
    }
    let found = gateway
        .call(|provider| {
            let (id, list_query) = (&id, &list_query);
            async move { provider.get(resource, id, list_query).await }
        })
        .await?;
    Ok((
        gateway::rate_limit_headers(found.rate_limit.as_ref()),
        Json(found.record.render(&render)),
    )
        .into_response())
}
