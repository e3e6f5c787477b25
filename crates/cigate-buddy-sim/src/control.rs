//! The simulator's own control API under `/__sim`, outside Buddy's namespace.

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::Duration;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::auth::TokenSpec;
use crate::clock::iso;
use crate::config::{
    RateLimitPolicy, RateLimitSpec, RateLimitStatus, ResetFormat, SeedSpec, WindowStart,
};
use crate::error::{ApiResult, SimError};
use crate::faults::FaultSpec;
use crate::sim::Sim;

pub fn router() -> Router<Sim> {
    Router::new()
        .route("/__sim/health", get(|| async { Json(json!({"ok": true})) }))
        .route("/__sim/seed", post(seed))
        .route("/__sim/tokens", post(issue_token))
        .route("/__sim/tokens/{token}/expire", post(expire_token))
        .route("/__sim/time", get(time))
        .route("/__sim/advance", post(advance))
        .route(
            "/__sim/faults",
            get(faults).post(inject).delete(clear_faults),
        )
        .route("/__sim/requests", get(requests).delete(reset_requests))
        .route("/__sim/oauth/clients", post(register_client))
        .route("/__sim/oauth/token-calls", get(token_calls))
        .route(
            "/__sim/rate-limit",
            get(rate_limit_settings).post(rate_limit),
        )
        .route("/__sim/workspaces/{ws}/api", post(api_enabled))
        .route("/__sim/workspaces/{ws}/projects/{project}/push", post(push))
        .route(
            "/__sim/workspaces/{ws}/projects/{project}/pipelines/{pipeline}/fail-next",
            post(fail_next),
        )
}

#[derive(Deserialize)]
struct SeedBody {
    spec: String,
}

async fn seed(State(sim): State<Sim>, Json(body): Json<SeedBody>) -> ApiResult<Json<Value>> {
    let spec: SeedSpec = body
        .spec
        .parse()
        .map_err(|e: crate::config::SpecError| SimError::Validation(e.0))?;
    sim.reseed(spec);
    Ok(Json(
        json!({ "spec": spec.to_string(), "workspaces": sim.workspace_domains() }),
    ))
}

async fn issue_token(
    State(sim): State<Sim>,
    body: Option<Json<TokenSpec>>,
) -> (StatusCode, Json<Value>) {
    let spec = body.map(|Json(s)| s).unwrap_or_default();
    let token = sim.issue_token(spec);
    let info = sim.token(&token);
    (
        StatusCode::CREATED,
        Json(json!({
            "token": token,
            "scopes": info.as_ref().map(|t| t.scopes.clone()),
            "expires_at": info.and_then(|t| t.expires_at).map(iso),
        })),
    )
}

async fn expire_token(State(sim): State<Sim>, Path(token): Path<String>) -> ApiResult<StatusCode> {
    if sim.expire_token(&token) {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(SimError::not_found("Token"))
    }
}

async fn time(State(sim): State<Sim>) -> Json<Value> {
    Json(json!({ "now": iso(sim.now()), "epoch": sim.now().timestamp() }))
}

#[derive(Deserialize)]
struct AdvanceBody {
    #[serde(default)]
    seconds: i64,
    #[serde(default)]
    millis: i64,
}

async fn advance(State(sim): State<Sim>, Json(body): Json<AdvanceBody>) -> Json<Value> {
    sim.advance(Duration::seconds(body.seconds) + Duration::milliseconds(body.millis));
    Json(json!({ "now": iso(sim.now()) }))
}

async fn faults(State(sim): State<Sim>) -> Json<Value> {
    Json(json!({ "faults": sim.pending_faults() }))
}

async fn inject(State(sim): State<Sim>, Json(fault): Json<FaultSpec>) -> StatusCode {
    sim.inject(fault);
    StatusCode::CREATED
}

async fn clear_faults(State(sim): State<Sim>) -> StatusCode {
    sim.clear_faults();
    StatusCode::NO_CONTENT
}

async fn requests(State(sim): State<Sim>, Query(q): Query<HashMap<String, String>>) -> Json<Value> {
    let method = q.get("method").map(String::as_str);
    let path = q.get("path").map(String::as_str).unwrap_or("");
    Json(json!({
        "count": sim.request_count(method, path),
        "total": sim.total_requests(),
        "oauth_token_calls": sim.oauth_token_calls(),
        "throttled": sim.throttled_count(),
    }))
}

async fn reset_requests(State(sim): State<Sim>) -> StatusCode {
    sim.reset_request_counts();
    StatusCode::NO_CONTENT
}

#[derive(Deserialize)]
struct ClientBody {
    client_id: String,
    client_secret: String,
    #[serde(default)]
    redirect_uris: Vec<String>,
}

async fn register_client(State(sim): State<Sim>, Json(body): Json<ClientBody>) -> StatusCode {
    let uris: Vec<&str> = body.redirect_uris.iter().map(String::as_str).collect();
    sim.register_oauth_client(&body.client_id, &body.client_secret, &uris);
    StatusCode::CREATED
}

async fn token_calls(State(sim): State<Sim>) -> Json<Value> {
    Json(json!({ "count": sim.oauth_token_calls() }))
}

/// Rate-limit settings to change; what is left out stays as it is.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RateBody {
    spec: Option<String>,
    window: Option<WindowStart>,
    reset: Option<ResetFormat>,
    count_throttled: Option<bool>,
    status: Option<u16>,
}

fn settings(policy: &RateLimitPolicy, throttled: u64) -> Value {
    json!({
        "spec": policy.spec.to_string(),
        "window": policy.window,
        "reset": policy.reset,
        "count_throttled": policy.count_throttled,
        "status": policy.status.code(),
        "throttled": throttled,
    })
}

async fn rate_limit_settings(State(sim): State<Sim>) -> Json<Value> {
    Json(settings(&sim.rate_limit_policy(), sim.throttled_count()))
}

async fn rate_limit(State(sim): State<Sim>, Json(body): Json<RateBody>) -> ApiResult<Json<Value>> {
    let mut policy = sim.rate_limit_policy();
    if let Some(spec) = body.spec {
        policy.spec = spec
            .parse::<RateLimitSpec>()
            .map_err(|e| SimError::Validation(e.0))?;
    }
    if let Some(status) = body.status {
        policy.status = RateLimitStatus::from_code(status)
            .ok_or_else(|| SimError::Validation("status must be 429 or 403".into()))?;
    }
    policy.window = body.window.unwrap_or(policy.window);
    policy.reset = body.reset.unwrap_or(policy.reset);
    policy.count_throttled = body.count_throttled.unwrap_or(policy.count_throttled);
    sim.set_rate_limit_policy(policy);
    Ok(Json(settings(&policy, sim.throttled_count())))
}

#[derive(Deserialize)]
struct ApiBody {
    enabled: bool,
}

async fn api_enabled(
    State(sim): State<Sim>,
    Path(ws): Path<String>,
    Json(body): Json<ApiBody>,
) -> ApiResult<StatusCode> {
    if sim.set_api_enabled(&ws, body.enabled) {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(SimError::not_found("Workspace"))
    }
}

#[derive(Deserialize)]
struct PushBody {
    branch: Option<String>,
    message: Option<String>,
}

async fn push(
    State(sim): State<Sim>,
    Path((ws, project)): Path<(String, String)>,
    Json(body): Json<PushBody>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let branch = body.branch.unwrap_or_else(|| "main".into());
    let message = body
        .message
        .unwrap_or_else(|| "Update from the simulator".into());
    let revision = sim.push_commit(&ws, &project, &branch, &message)?;
    Ok((
        StatusCode::CREATED,
        Json(json!({ "revision": revision, "branch": branch })),
    ))
}

#[derive(Deserialize)]
struct FailBody {
    #[serde(default = "one")]
    count: u32,
}

fn one() -> u32 {
    1
}

async fn fail_next(
    State(sim): State<Sim>,
    Path((ws, project, pipeline)): Path<(String, String, u64)>,
    Json(body): Json<FailBody>,
) -> ApiResult<StatusCode> {
    sim.fail_next_runs(&ws, &project, pipeline, body.count)?;
    Ok(StatusCode::NO_CONTENT)
}
