//! Status badges over HTTP. `POST /badge` and `GET`/`DELETE /badge/{id}` take the API
//! token; `/badge/{id}.svg` and `/badge/{id}.json` take none, since badges are embedded
//! in `<img>` tags and fetched by shields.io: the unguessable id is their credential.
//!
//! The router cannot match a suffix after a parameter, so one route `/badge/{id}`
//! serves all three `GET` forms and tells them apart by the suffix, checking the token
//! itself for the bare id.

use axum::extract::State;
use axum::http::header::{
    ACCESS_CONTROL_ALLOW_ORIGIN, CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, ETAG,
    IF_NONE_MATCH, X_CONTENT_TYPE_OPTIONS,
};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use cigate_core::params;
use cigate_store::{Badge, NewBadge, StoreError};

use crate::auth::{self, Caller};
use crate::badge::{label_of, Drawn, Outcome};
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, ApiPath};
use crate::routes::link::public_origin;
use crate::state::AppState;

/// Longest `branch` accepted: a bound on stored input, far beyond real branch names.
const MAX_BRANCH_LEN: usize = 255;
/// Longest `label`: a badge is a few words wide.
const MAX_LABEL_LEN: usize = 64;

/// `POST /badge`, behind the API token like every management route.
pub fn routes() -> Router<AppState> {
    Router::new().route("/badge", post(create))
}

/// `/badge/{id}` in all its forms; each handler checks the token where it needs one.
pub fn public_routes() -> Router<AppState> {
    Router::new().route(
        "/badge/{id}",
        get(view).delete(remove).fallback(wrong_method),
    )
}

/// `{id}.svg` or `{id}.json`: the forms anyone may `GET`, and nothing else.
fn public_form(file: &str) -> Option<(&str, Form)> {
    file.strip_suffix(".svg")
        .map(|id| (id, Form::Svg))
        .or_else(|| file.strip_suffix(".json").map(|id| (id, Form::Json)))
}

/// The `Allow` of each form: the public ones are read-only.
fn wrong_method_for(file: &str, method: &Method) -> ApiError {
    ApiError::MethodNotAllowed {
        method: method.to_string(),
        allow: Some(if public_form(file).is_some() {
            "GET, HEAD"
        } else {
            "GET, HEAD, DELETE"
        }),
    }
}

async fn wrong_method(method: Method, ApiPath(file): ApiPath<String>) -> ApiError {
    wrong_method_for(&file, &method)
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateBadge {
    /// The account whose jobs the badge shows.
    pub integrated_account_id: String,
    /// Buddy workspace domain.
    pub workspace: String,
    /// Buddy project name (alias `project`).
    #[serde(alias = "project")]
    pub repo: String,
    /// One pipeline id; without it, the latest job of any pipeline of the repo.
    pub workflow: Option<String>,
    /// The branch whose latest job is drawn.
    pub branch: String,
    /// Left-hand text; `build` when omitted.
    pub label: Option<String>,
}

/// The checks without I/O: scoping names as the unified API checks them (one path
/// segment each), `branch` and `label` as plain text.
fn checked(caller: &Caller, body: CreateBadge) -> ApiResult<NewBadge> {
    let identifier = |name: &str, value: &str| {
        params::check_identifier(name, value).map_err(|err| match err {
            cigate_core::ProviderError::InvalidParameter { name, message } => {
                ApiError::Validation(format!("`{name}` {message}"))
            }
            other => other.into(),
        })
    };
    identifier("integrated_account_id", &body.integrated_account_id)?;
    identifier("workspace", &body.workspace)?;
    identifier("repo", &body.repo)?;
    if let Some(workflow) = &body.workflow {
        identifier("workflow", workflow)?;
    }
    text("branch", &body.branch, MAX_BRANCH_LEN)?;
    if let Some(label) = &body.label {
        text("label", label, MAX_LABEL_LEN)?;
    }
    Ok(NewBadge {
        environment_id: caller.environment_id.clone(),
        account_id: body.integrated_account_id,
        workspace: body.workspace,
        repo: body.repo,
        workflow: body.workflow,
        branch: body.branch,
        label: body.label,
    })
}

fn text(name: &str, value: &str, max_chars: usize) -> ApiResult<()> {
    if value.trim().is_empty() {
        return Err(ApiError::Validation(format!("`{name}` must not be empty")));
    }
    if value.chars().count() > max_chars {
        return Err(ApiError::Validation(format!(
            "`{name}` is longer than {max_chars} characters"
        )));
    }
    if value.chars().any(char::is_control) {
        return Err(ApiError::Validation(format!(
            "`{name}` must not contain control characters"
        )));
    }
    Ok(())
}

/// The management form of a badge, with the absolute URLs to embed.
fn badge_view(badge: &Badge, origin: &str) -> Value {
    json!({
        "id": badge.id,
        "url": format!("{origin}/badge/{}.svg", badge.id),
        "json_url": format!("{origin}/badge/{}.json", badge.id),
        "integrated_account_id": badge.account_id,
        "workspace": badge.workspace,
        "repo": badge.repo,
        "workflow": badge.workflow,
        "branch": badge.branch,
        "label": badge.label,
        "created_at": badge.created_at,
    })
}

fn no_badge(id: &str) -> ApiError {
    ApiError::NotFound(format!("no badge `{id}`"))
}

#[utoipa::path(post, path = "/badge", tag = crate::openapi::TAG_BADGES, security(("api_token" = [])),
    summary = "Create a status badge",
    description = "A badge of the latest job of one branch. Embed `url` (SVG) in an `<img>`, or give `json_url` to shields.io's endpoint badge; neither needs a token.",
    request_body = CreateBadge,
    responses(
        (status = 201, description = "the badge: `id`, `url`, `json_url` and what it shows",
            example = json!({"id": "bdg_q3v0Jq1tQ2x8l7mYx6b0n1c2d3e4f5g6h7i8j9k0l1m", "url": "https://cigate.example.com/badge/bdg_q3v0Jq1tQ2x8l7mYx6b0n1c2d3e4f5g6h7i8j9k0l1m.svg",
            "json_url": "https://cigate.example.com/badge/bdg_q3v0Jq1tQ2x8l7mYx6b0n1c2d3e4f5g6h7i8j9k0l1m.json", "integrated_account_id": "0b7e8c4e-5a55-4b8e-9a57-3f0f6f1f2a10",
            "workspace": "acme", "repo": "website", "workflow": null, "branch": "main", "label": null, "created_at": "2026-05-01T12:00:00Z"})),
        (status = 400, description = "a body that is not JSON"),
        (status = 404, description = "no such integrated account in this environment"),
        (status = 422, description = "a missing, empty or invalid field"),
    ))]
pub async fn create(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<CreateBadge>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let new = checked(&caller, body)?;
    let account = crate::gateway::load(&state, &caller, &new.account_id).await?;
    let badge = state
        .store
        .create_badge(new)
        .await
        .map_err(|err| match err {
            // Deleted between the two queries.
            StoreError::NotFound => {
                ApiError::NotFound(format!("integrated account `{}` not found", account.id))
            }
            other => other.into(),
        })?;
    Ok((
        StatusCode::CREATED,
        Json(badge_view(&badge, &public_origin(&state, &headers))),
    ))
}

/// Every `GET /badge/…`: `{id}.svg` and `{id}.json` publicly, the bare id with a token.
async fn view(
    State(state): State<AppState>,
    ApiPath(file): ApiPath<String>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    match public_form(&file) {
        Some((id, Form::Svg)) => svg(&state, id, &headers).await,
        Some((id, Form::Json)) => shields(&state, id, &headers).await,
        None => fetch(&state, &file, &headers).await,
    }
}

#[utoipa::path(get, path = "/badge/{id}", tag = crate::openapi::TAG_BADGES, security(("api_token" = [])),
    summary = "Get a status badge",
    params(("id" = String, Path)),
    responses((status = 200, description = "the badge, as created"), (status = 404, description = "not found in this environment")))]
pub async fn fetch(state: &AppState, id: &str, headers: &HeaderMap) -> ApiResult<Response> {
    let caller = auth::authenticate(state, headers).await?;
    let badge = state
        .store
        .badge_in(&caller.environment_id, id)
        .await?
        .ok_or_else(|| no_badge(id))?;
    Ok(Json(badge_view(&badge, &public_origin(state, headers))).into_response())
}

#[utoipa::path(delete, path = "/badge/{id}", tag = crate::openapi::TAG_BADGES, security(("api_token" = [])),
    summary = "Delete a status badge",
    params(("id" = String, Path)),
    responses((status = 200, description = "`{ id }` of the deleted badge; its URLs answer 404 from now on"), (status = 404, description = "not found in this environment")))]
pub async fn remove(
    State(state): State<AppState>,
    method: Method,
    ApiPath(id): ApiPath<String>,
    headers: HeaderMap,
) -> ApiResult<Json<Value>> {
    if public_form(&id).is_some() {
        return Err(wrong_method_for(&id, &method));
    }
    let caller = auth::authenticate(&state, &headers).await?;
    if !state
        .store
        .delete_badge(&caller.environment_id, &id)
        .await?
    {
        return Err(no_badge(&id));
    }
    state.badges.forget(&id).await;
    Ok(Json(json!({ "id": id })))
}

#[utoipa::path(get, path = "/badge/{id}.svg", tag = crate::openapi::TAG_BADGES,
    summary = "Draw a status badge",
    description = "A shields-style SVG of the latest job of the badge's branch: `passing`, `failing`, `running`, `cancelled` or `no runs` (`unknown`, not kept, when Buddy cannot be asked). No token. Kept for `CIGATE_BADGE_CACHE_TTL` (15 s); concurrent views share one Buddy call. Honours `If-None-Match`.",
    params(("id" = String, Path, description = "the badge's id")),
    responses(
        (status = 200, description = "the badge", content_type = "image/svg+xml", body = String),
        (status = 304, description = "the client's copy (its `ETag`) is current"),
        (status = 404, description = "no such badge"),
    ))]
pub async fn svg(state: &AppState, id: &str, headers: &HeaderMap) -> ApiResult<Response> {
    answer(state, id, headers, Form::Svg).await
}

#[utoipa::path(get, path = "/badge/{id}.json", tag = crate::openapi::TAG_BADGES,
    summary = "Describe a status badge for shields.io",
    description = "shields.io's endpoint schema: `{ schemaVersion: 1, label, message, color }`, with `isError: true` when Buddy cannot be asked. No token; kept and coalesced like the SVG.",
    params(("id" = String, Path, description = "the badge's id")),
    responses(
        (status = 200, description = "the endpoint-schema document",
            example = json!({"schemaVersion": 1, "label": "build", "message": "passing", "color": "brightgreen"})),
        (status = 304, description = "the client's copy (its `ETag`) is current"),
        (status = 404, description = "no such badge"),
    ))]
pub async fn shields(state: &AppState, id: &str, headers: &HeaderMap) -> ApiResult<Response> {
    answer(state, id, headers, Form::Json).await
}

#[derive(Clone, Copy)]
enum Form {
    Svg,
    Json,
}

/// A public view: the badge looked up by id alone (no environment: there is no
/// token), then its kept answer, or a fresh one.
async fn answer(
    state: &AppState,
    id: &str,
    headers: &HeaderMap,
    form: Form,
) -> ApiResult<Response> {
    let badge = state.store.badge(id).await?.ok_or_else(|| no_badge(id))?;
    match state.badges.answer(state, &badge).await {
        Ok(drawn) => {
            let max_age = state.badges.seconds_left(&drawn);
            Ok(respond(
                &drawn,
                form,
                headers,
                &format!("public, max-age={max_age}"),
            ))
        }
        Err(err) => {
            tracing::warn!(badge = %badge.id, error = %err, "badge status unavailable");
            // An image that says so beats a broken one; not to be kept anywhere.
            let drawn = Drawn::new(label_of(&badge), Outcome::Unknown, true);
            Ok(respond(&drawn, form, headers, "no-cache"))
        }
    }
}

fn respond(drawn: &Drawn, form: Form, headers: &HeaderMap, cache_control: &str) -> Response {
    let (body, etag, content_type) = match form {
        Form::Svg => (&drawn.svg, &drawn.svg_etag, "image/svg+xml"),
        Form::Json => (&drawn.json, &drawn.json_etag, "application/json"),
    };
    let mut response = if client_has(headers, etag) {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        let mut response = body.clone().into_response();
        response
            .headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
        response
    };
    let out = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(etag) {
        out.insert(ETAG, value);
    }
    if let Ok(value) = HeaderValue::from_str(cache_control) {
        out.insert(CACHE_CONTROL, value);
    }
    out.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    match form {
        // Opened on its own rather than in an `<img>`, the SVG may run nothing.
        Form::Svg => out.insert(
            CONTENT_SECURITY_POLICY,
            HeaderValue::from_static("default-src 'none'"),
        ),
        // Read by pages and dashboards on any origin.
        Form::Json => out.insert(ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*")),
    };
    response
}

/// `If-None-Match` names `etag` (weakly compared, as RFC 9110 asks for this header) or
/// is `*`.
fn client_has(headers: &HeaderMap, etag: &str) -> bool {
    headers
        .get_all(IF_NONE_MATCH)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(str::trim)
        .any(|tag| tag == "*" || tag.strip_prefix("W/").unwrap_or(tag) == etag)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(IF_NONE_MATCH, HeaderValue::from_str(value).unwrap());
        headers
    }

    #[test]
    fn if_none_match_compares_weakly_and_takes_lists() {
        let tag = "\"abc\"";
        assert!(client_has(&with("\"abc\""), tag));
        assert!(client_has(&with("W/\"abc\""), tag));
        assert!(client_has(&with("\"x\", \"abc\""), tag));
        assert!(client_has(&with("*"), tag));
        assert!(!client_has(&with("\"abd\""), tag));
        assert!(!client_has(&HeaderMap::new(), tag));
    }

    #[test]
    fn fields_are_checked_before_any_lookup() {
        let caller = Caller {
            environment_id: "env".into(),
            token_id: "t".into(),
        };
        let body = |workspace: &str, branch: &str, label: Option<&str>| CreateBadge {
            integrated_account_id: "acct".into(),
            workspace: workspace.into(),
            repo: "site".into(),
            workflow: None,
            branch: branch.into(),
            label: label.map(str::to_owned),
        };
        assert!(checked(&caller, body("acme", "feature/x", Some("ci"))).is_ok());
        for (workspace, branch, label) in [
            ("", "main", None),
            ("a/b", "main", None),
            ("..", "main", None),
            ("acme", "", None),
            ("acme", " ", None),
            ("acme", "ma\nin", None),
            ("acme", "main", Some("")),
            ("acme", "main", Some(&*"x".repeat(65))),
        ] {
            let err = checked(&caller, body(workspace, branch, label)).unwrap_err();
            assert!(
                matches!(err, ApiError::Validation(_)),
                "{workspace:?} {branch:?} {label:?}: {err:?}"
            );
        }
    }
}
