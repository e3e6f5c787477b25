//! `/unified/ci-cd/<resource>`: normalised reads through the account's provider.

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::routing::get;
use axum::{Extension, Json, Router};
use serde_json::Value;

use cigate_core::cursor::CursorBinding;
use cigate_core::{ListQuery, Resource};

use crate::auth::Caller;
use crate::envelope::ListEnvelope;
use crate::error::{ApiError, ApiResult};
use crate::extract::QueryPairs;
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

#[utoipa::path(get, path = "/unified/ci-cd/{resource}", tag = "unified ci-cd", security(("api_token" = [])),
    params(
        ("resource" = String, Path, description = "workspaces, repos, branches, pull-requests, workflow (or workflows), jobs"),
        ("integrated_account_id" = String, Query),
        ("workspace" = Option<String>, Query, description = "Buddy workspace domain; optional when the account has one workspace"),
        ("repo" = Option<String>, Query, description = "Buddy project name (alias `project`)"),
        ("workflow" = Option<String>, Query, description = "pipeline id; jobs without it merge every pipeline"),
        ("limit" = Option<u32>, Query, description = "1–1000, default 100"),
        ("next_cursor" = Option<String>, Query),
        ("status" = Option<String>, Query), ("conclusion" = Option<String>, Query), ("branch" = Option<String>, Query),
        ("created_at[gte]" = Option<String>, Query), ("created_at[lte]" = Option<String>, Query),
        ("truto_ignore_remote_data" = Option<bool>, Query), ("truto_exclude_fields" = Option<String>, Query),
        ("truto_response_format" = Option<String>, Query, description = "`raw` returns Buddy's objects"),
        ("truto_timeout_ms" = Option<u32>, Query, description = "deadline of the call, retries and rate-limit waits included"),
    ),
    responses((status = 200, description = "list envelope"), (status = 400, description = "missing parameter or bad cursor"), (status = 404, description = "unknown resource or account")))]
pub async fn list(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(resource_name): Path<String>,
    query: QueryPairs,
) -> ApiResult<(HeaderMap, Json<ListEnvelope<Value>>)> {
    let resource = resource(&resource_name)?;
    let render = query.render_options()?;
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

#[utoipa::path(get, path = "/unified/ci-cd/{resource}/{id}", tag = "unified ci-cd", security(("api_token" = [])),
    params(
        ("resource" = String, Path), ("id" = String, Path),
        ("integrated_account_id" = String, Query), ("workspace" = Option<String>, Query),
        ("repo" = Option<String>, Query), ("workflow" = Option<String>, Query),
        ("truto_ignore_remote_data" = Option<bool>, Query), ("truto_exclude_fields" = Option<String>, Query),
        ("truto_response_format" = Option<String>, Query),
        ("truto_timeout_ms" = Option<u32>, Query),
    ),
    responses((status = 200, description = "the bare object"), (status = 404, description = "no such object")))]
pub async fn fetch(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path((resource_name, id)): Path<(String, String)>,
    query: QueryPairs,
) -> ApiResult<(HeaderMap, Json<Value>)> {
    let resource = resource(&resource_name)?;
    let render = query.render_options()?;
    let gateway = Gateway::for_query(&state, &caller, &query, API).await?;
    let list_query = query.list_query(&gateway.account().context)?;
    let found = gateway
        .call(|provider| {
            let (id, list_query) = (&id, &list_query);
            async move { provider.get(resource, id, list_query).await }
        })
        .await?;
    Ok((
        gateway::rate_limit_headers(found.rate_limit.as_ref()),
        Json(found.record.render(&render)),
    ))
}
