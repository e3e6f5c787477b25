//! Health, environments and API tokens.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{delete, get};
use axum::{Extension, Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::auth::Caller;
use crate::envelope::ListEnvelope;
use crate::error::{ApiError, ApiResult};
use crate::extract::{optional_json, ApiPath};
use crate::state::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/environment", get(list_environments))
        .route("/environment/{id}", get(get_environment))
        .route("/api-token", get(list_api_tokens).post(create_api_token))
        .route("/api-token/{id}", delete(delete_api_token))
}

/// The process is up.
#[utoipa::path(get, path = "/healthz", tag = crate::openapi::TAG_OPERATIONS,
    summary = "Liveness",
    responses((status = 200, description = "the process is up", example = json!({"status": "ok"}))))]
pub async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

/// The store is reachable and migrated.
#[utoipa::path(get, path = "/readyz", tag = crate::openapi::TAG_OPERATIONS,
    summary = "Readiness",
    responses((status = 200, description = "the store is reachable and migrated", example = json!({"status": "ready"})),
        (status = 503, description = "the store is unavailable", example = json!({"status": "unavailable"}))))]
pub async fn readyz(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    match state.store.ready().await {
        Ok(()) => (StatusCode::OK, Json(json!({ "status": "ready" }))),
        Err(err) => {
            tracing::warn!(error = %err, "not ready");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({ "status": "unavailable" })),
            )
        }
    }
}

pub async fn not_found() -> ApiError {
    ApiError::NotFound("no such route".into())
}

/// A route that exists without the request's method (axum adds `Allow`).
pub async fn method_not_allowed(method: axum::http::Method) -> ApiError {
    ApiError::MethodNotAllowed {
        method: method.to_string(),
        allow: None,
    }
}

/// The caller's environment (a token sees only its own).
#[utoipa::path(get, path = "/environment", tag = crate::openapi::TAG_ENVIRONMENTS, security(("api_token" = [])),
    summary = "List environments",
    description = "The caller's environment: a token sees only its own.",
    responses((status = 200, description = "the list envelope holding the token's environment")))]
pub async fn list_environments(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> ApiResult<Json<ListEnvelope<cigate_store::Environment>>> {
    let env = state
        .store
        .get_environment(&caller.environment_id)
        .await?
        .ok_or_else(|| ApiError::NotFound("environment not found".into()))?;
    Ok(Json(ListEnvelope::new(vec![env], None)))
}

#[utoipa::path(get, path = "/environment/{id}", tag = crate::openapi::TAG_ENVIRONMENTS, security(("api_token" = [])),
    summary = "Get an environment",
    params(("id" = String, Path, description = "the environment's id")),
    responses((status = 200, description = "the environment"),
        (status = 400, description = "an id that is not UTF-8"),
        (status = 404, description = "not this token's environment")))]
pub async fn get_environment(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<cigate_store::Environment>> {
    if id != caller.environment_id {
        return Err(ApiError::NotFound("environment not found".into()));
    }
    state
        .store
        .get_environment(&id)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::NotFound("environment not found".into()))
}

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewApiToken {
    /// A label for the token.
    pub name: Option<String>,
}

/// Create an API token in the caller's environment; the plaintext is shown only here.
#[utoipa::path(post, path = "/api-token", tag = crate::openapi::TAG_TOKENS, security(("api_token" = [])),
    summary = "Create an API token",
    description = "A new token of the caller's environment; its plaintext `token` is shown only in this answer.",
    request_body(content = Option<NewApiToken>, description = "optional: a label"),
    responses((status = 201, description = "the token, with `token` shown once"),
        (status = 400, description = "a body that is not JSON"),
        (status = 422, description = "an invalid body")))]
pub async fn create_api_token(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    body: Bytes,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let name = optional_json::<NewApiToken>(&body)?.and_then(|b| b.name);
    let (token, plaintext) = state
        .store
        .create_api_token(&caller.environment_id, name.as_deref())
        .await?;
    let mut value = serde_json::to_value(&token).map_err(|e| ApiError::Internal(e.to_string()))?;
    value["token"] = Value::String(plaintext.expose().to_owned());
    Ok((StatusCode::CREATED, Json(value)))
}

#[utoipa::path(get, path = "/api-token", tag = crate::openapi::TAG_TOKENS, security(("api_token" = [])),
    summary = "List API tokens",
    responses((status = 200, description = "the list envelope of the environment's tokens (never their values)")))]
pub async fn list_api_tokens(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> ApiResult<Json<ListEnvelope<cigate_store::ApiToken>>> {
    let tokens = state.store.list_api_tokens(&caller.environment_id).await?;
    Ok(Json(ListEnvelope::new(tokens, None)))
}

#[utoipa::path(delete, path = "/api-token/{id}", tag = crate::openapi::TAG_TOKENS, security(("api_token" = [])),
    summary = "Revoke an API token",
    params(("id" = String, Path, description = "the token's id")),
    responses((status = 200, description = "`{ id }`"),
        (status = 400, description = "an id that is not UTF-8"),
        (status = 404, description = "no such token")))]
pub async fn delete_api_token(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<Value>> {
    if state
        .store
        .delete_api_token(&caller.environment_id, &id)
        .await?
    {
        state.cache.forget_token_id(&id);
        Ok(Json(json!({ "id": id })))
    } else {
        Err(ApiError::NotFound("API token not found".into()))
    }
}
