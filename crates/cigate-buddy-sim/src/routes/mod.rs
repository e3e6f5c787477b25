//! Buddy's REST resources, one module per resource family.

pub mod executions;
pub mod pipelines;
pub mod projects;
pub mod settings;
pub mod workspaces;

use std::collections::HashMap;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::Value;

use crate::sim::Sim;

pub type Q = axum::extract::Query<HashMap<String, String>>;

/// 201 with `Location` pointing at the new object's `url`.
pub fn created(body: Value) -> Response {
    let location = body.get("url").and_then(Value::as_str).map(str::to_string);
    let mut resp = (StatusCode::CREATED, Json(body)).into_response();
    if let Some(v) = location.and_then(|l| HeaderValue::from_str(&l).ok()) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    resp
}

pub fn api_router() -> Router<Sim> {
    use axum::routing::post;
    let ws = "/workspaces/{ws}";
    let proj = "/workspaces/{ws}/projects/{project}";
    let pl = "/workspaces/{ws}/projects/{project}/pipelines/{pipeline}";
    Router::new()
        .route("/user", get(workspaces::user))
        .route("/user/token", get(workspaces::current_token))
        .route(
            "/workspaces",
            get(workspaces::list).post(workspaces::create),
        )
        .route(ws, get(workspaces::get_one))
        .route(&format!("{ws}/members"), get(workspaces::members))
        .route(&format!("{ws}/integrations"), get(workspaces::integrations))
        .route(&format!("{ws}/members/{{id}}"), get(workspaces::member))
        .route(
            &format!("{ws}/projects"),
            get(projects::list).post(projects::create),
        )
        .route(
            proj,
            get(projects::get_one)
                .patch(projects::update)
                .delete(projects::delete),
        )
        .route(
            &format!("{proj}/repository/branches"),
            get(projects::branches),
        )
        .route(
            &format!("{proj}/repository/branches/{{*name}}"),
            get(projects::branch),
        )
        .route(&format!("{proj}/repository/tags"), get(projects::tags))
        .route(
            &format!("{proj}/repository/tags/{{*name}}"),
            get(projects::tag),
        )
        .route(
            &format!("{proj}/repository/commits"),
            get(projects::commits),
        )
        .route(
            &format!("{proj}/repository/commits/{{revision}}"),
            get(projects::commit),
        )
        .route(
            &format!("{proj}/repository/comparison/{{spec}}"),
            get(projects::comparison),
        )
        .route(
            &format!("{proj}/repository/contents"),
            get(projects::contents_root),
        )
        .route(
            &format!("{proj}/repository/contents/{{*path}}"),
            get(projects::contents),
        )
        .route(&format!("{proj}/repository/pulls"), get(projects::pulls))
        .route(
            &format!("{proj}/repository/pulls/{{number}}"),
            get(projects::pull),
        )
        .route(
            &format!("{proj}/pipelines"),
            get(pipelines::list).post(pipelines::create),
        )
        .route(
            pl,
            get(pipelines::get_one)
                .patch(pipelines::update)
                .delete(pipelines::delete),
        )
        .route(
            &format!("{pl}/yaml"),
            get(pipelines::export_yaml).patch(pipelines::update_yaml),
        )
        .route(
            &format!("{proj}/pipelines/yaml"),
            post(pipelines::create_yaml),
        )
        .route(&format!("{pl}/actions"), get(pipelines::actions))
        .route(&format!("{pl}/actions/{{action}}"), get(pipelines::action))
        .route(
            &format!("{pl}/executions"),
            get(executions::list).post(executions::run),
        )
        .route(
            &format!("{pl}/executions/{{execution}}"),
            get(executions::get_one).patch(executions::operate),
        )
        .route(
            &format!("{pl}/executions/{{execution}}/action_executions/{{hex}}"),
            get(executions::action_execution),
        )
        .route(
            &format!("{pl}/executions/{{execution}}/action/{{action}}"),
            get(executions::legacy_action),
        )
        .route(
            &format!("{ws}/variables"),
            get(settings::variables).post(settings::create_variable),
        )
        .route(
            &format!("{ws}/variables/{{id}}"),
            get(settings::variable)
                .patch(settings::update_variable)
                .delete(settings::delete_variable),
        )
        .route(
            &format!("{ws}/webhooks"),
            get(settings::webhooks).post(settings::create_webhook),
        )
        .route(
            &format!("{ws}/webhooks/{{id}}"),
            get(settings::webhook)
                .patch(settings::update_webhook)
                .delete(settings::delete_webhook),
        )
        .route("/user/oidc/tokens", post(workspaces::oidc_token))
}
