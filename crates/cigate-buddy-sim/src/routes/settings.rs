//! Workspace settings: environment variables and webhooks.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::Json;
use serde_json::{json, Value};

use crate::error::{ApiResult, SimError};
use crate::render;
use crate::routes::{created, Q};
use crate::sim::Sim;
use crate::state::{Variable, Webhook};
use crate::transport::Caller;

fn access(sim: &Sim, caller: &Caller, ws: &str, scope: &str) -> ApiResult<()> {
    caller.require(scope)?;
    caller.workspace_access(sim, ws)
}

fn param<'a>(q: &'a Q, names: &[&str]) -> Option<&'a str> {
    names.iter().find_map(|n| q.get(*n)).map(String::as_str)
}

pub async fn variables(
    State(sim): State<Sim>,
    caller: Caller,
    Path(ws): Path<String>,
    q: Q,
) -> ApiResult<Json<Value>> {
    access(&sim, &caller, &ws, "VARIABLE_INFO")?;
    let project = param(&q, &["projectName", "project_name"]);
    let pipeline = param(&q, &["pipelineId", "pipeline_id"]).and_then(|p| p.parse::<u64>().ok());
    let action = param(&q, &["actionId", "action_id"]).and_then(|p| p.parse::<u64>().ok());
    let environment = param(&q, &["environment_id", "environmentId"]);
    sim.read(|s, urls| {
        let w = s.workspace(&ws).ok_or_else(|| SimError::not_found("Workspace"))?;
        let items: Vec<Value> = w
            .variables
            .iter()
            .filter(|v| project.is_none_or(|p| v.project.as_deref() == Some(p)))
            .filter(|v| pipeline.is_none_or(|p| v.pipeline == Some(p)))
            .filter(|v| action.is_none_or(|a| v.action == Some(a)))
            .filter(|v| environment.is_none_or(|e| v.environment.as_deref() == Some(e)))
            .map(|v| render::variable(urls, w, v))
            .collect();
        let (api, html) = urls.workspace(&ws);
        Ok(Json(json!({ "url": format!("{api}/variables"), "html_url": format!("{html}/-/variables"), "variables": items })))
    })
}

fn apply_variable(v: &mut Variable, body: &Value) -> ApiResult<()> {
    let o = body
        .as_object()
        .ok_or_else(|| SimError::Validation("Body must be a JSON object.".into()))?;
    if let Some(k) = o.get("key") {
        v.key = k
            .as_str()
            .filter(|k| !k.is_empty())
            .ok_or_else(|| SimError::Validation("key must be a non-empty string.".into()))?
            .to_string();
    }
    if let Some(val) = o.get("value") {
        v.value = val
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| val.to_string());
    }
    if let Some(t) = o.get("type").and_then(Value::as_str) {
        v.var_type = t.to_string();
    }
    if let Some(b) = o.get("encrypted").and_then(Value::as_bool) {
        v.encrypted = b;
    }
    if let Some(b) = o.get("settable").and_then(Value::as_bool) {
        v.settable = b;
    }
    if let Some(d) = o.get("description") {
        v.description = d.as_str().map(str::to_string);
    }
    Ok(())
}

pub async fn create_variable(
    State(sim): State<Sim>,
    caller: Caller,
    Path(ws): Path<String>,
    Json(body): Json<Value>,
) -> ApiResult<Response> {
    access(&sim, &caller, &ws, "VARIABLE_ADD")?;
    if body
        .get("key")
        .and_then(Value::as_str)
        .is_none_or(str::is_empty)
    {
        return Err(SimError::Validation("key is required.".into()));
    }
    let json = sim.write(|s, urls| {
        let id = s.next_variable_id;
        let w = s
            .workspace_mut(&ws)
            .ok_or_else(|| SimError::not_found("Workspace"))?;
        let mut v = Variable {
            id,
            key: String::new(),
            value: String::new(),
            var_type: "VAR".into(),
            encrypted: false,
            settable: false,
            description: None,
            project: body
                .get("project")
                .and_then(|p| p.get("name"))
                .and_then(Value::as_str)
                .map(str::to_string),
            pipeline: body
                .get("pipeline")
                .and_then(|p| p.get("id"))
                .and_then(Value::as_u64),
            action: body
                .get("action")
                .and_then(|p| p.get("id"))
                .and_then(Value::as_u64),
            environment: body
                .get("environment")
                .and_then(|p| p.get("id"))
                .and_then(|i| {
                    i.as_str()
                        .map(str::to_string)
                        .or_else(|| i.as_u64().map(|n| n.to_string()))
                }),
        };
        if let Some(p) = &v.project {
            if w.project(p).is_none() {
                return Err(SimError::Validation(format!("Project {p} not found.")));
            }
        }
        apply_variable(&mut v, &body)?;
        if w.variables.iter().any(|o| {
            o.key == v.key
                && o.project == v.project
                && o.pipeline == v.pipeline
                && o.action == v.action
                && o.environment == v.environment
        }) {
            return Err(SimError::Validation(format!(
                "Variable {} already exists in this scope.",
                v.key
            )));
        }
        let json = render::variable(urls, w, &v);
        w.variables.push(v);
        s.next_variable_id += 1;
        Ok(json)
    })?;
    Ok(created(json))
}

fn parse_id(id: &str, what: &str) -> ApiResult<u64> {
    id.parse().map_err(|_| SimError::not_found(what))
}

pub async fn variable(
    State(sim): State<Sim>,
    caller: Caller,
    Path((ws, id)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    access(&sim, &caller, &ws, "VARIABLE_INFO")?;
    let id = parse_id(&id, "Variable")?;
    sim.read(|s, urls| {
        let w = s
            .workspace(&ws)
            .ok_or_else(|| SimError::not_found("Workspace"))?;
        let v = w
            .variables
            .iter()
            .find(|v| v.id == id)
            .ok_or_else(|| SimError::not_found("Variable"))?;
        Ok(Json(render::variable(urls, w, v)))
    })
}

pub async fn update_variable(
    State(sim): State<Sim>,
    caller: Caller,
    Path((ws, id)): Path<(String, String)>,
    Json(body): Json<Value>,
) -> ApiResult<Json<Value>> {
    access(&sim, &caller, &ws, "VARIABLE_MANAGE")?;
    let id = parse_id(&id, "Variable")?;
    sim.write(|s, urls| {
        let w = s
            .workspace_mut(&ws)
            .ok_or_else(|| SimError::not_found("Workspace"))?;
        let idx = w
            .variables
            .iter()
            .position(|v| v.id == id)
            .ok_or_else(|| SimError::not_found("Variable"))?;
        let mut v = w.variables[idx].clone();
        apply_variable(&mut v, &body)?;
        let json = render::variable(urls, w, &v);
        w.variables[idx] = v;
        Ok(Json(json))
    })
}

pub async fn delete_variable(
    State(sim): State<Sim>,
    caller: Caller,
    Path((ws, id)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    access(&sim, &caller, &ws, "VARIABLE_MANAGE")?;
    let id = parse_id(&id, "Variable")?;
    sim.write(|s, _| {
        let w = s
            .workspace_mut(&ws)
            .ok_or_else(|| SimError::not_found("Workspace"))?;
        let before = w.variables.len();
        w.variables.retain(|v| v.id != id);
        if before == w.variables.len() {
            return Err(SimError::not_found("Variable"));
        }
        Ok(StatusCode::NO_CONTENT)
    })
}

const EVENTS: &[&str] = &[
    "PUSH",
    "EXECUTION_STARTED",
    "EXECUTION_SUCCESSFUL",
    "EXECUTION_FAILED",
    "EXECUTION_FINISHED",
];

fn apply_webhook(h: &mut Webhook, body: &Value, creating: bool) -> ApiResult<()> {
    let o = body
        .as_object()
        .ok_or_else(|| SimError::Validation("Body must be a JSON object.".into()))?;
    match o.get("target_url").and_then(Value::as_str) {
        Some(u) if url::Url::parse(u).is_ok() => h.target_url = u.to_string(),
        Some(_) => {
            return Err(SimError::Validation(
                "target_url must be a valid URL.".into(),
            ))
        }
        None if creating => return Err(SimError::Validation("target_url is required.".into())),
        None => {}
    }
    match o.get("events").and_then(Value::as_array) {
        Some(events) => {
            let events: Vec<String> = events
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect();
            if events.is_empty() || events.iter().any(|e| !EVENTS.contains(&e.as_str())) {
                return Err(SimError::Validation(format!(
                    "events must be a non-empty subset of {}.",
                    EVENTS.join(", ")
                )));
            }
            h.events = events;
        }
        None if creating => return Err(SimError::Validation("events is required.".into())),
        None => {}
    }
    if let Some(projects) = o.get("projects").and_then(Value::as_array) {
        h.projects = projects
            .iter()
            .map(|p| {
                p.as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| p.to_string())
            })
            .collect();
    }
    if let Some(secret) = o.get("secret_key") {
        h.secret_key = secret.as_str().map(str::to_string);
    }
    Ok(())
}

pub async fn webhooks(
    State(sim): State<Sim>,
    caller: Caller,
    Path(ws): Path<String>,
) -> ApiResult<Json<Value>> {
    access(&sim, &caller, &ws, "WEBHOOK_INFO")?;
    sim.read(|s, urls| {
        let w = s.workspace(&ws).ok_or_else(|| SimError::not_found("Workspace"))?;
        let items: Vec<Value> = w.webhooks.iter().map(|h| render::webhook(urls, w, h)).collect();
        let (api, html) = urls.workspace(&ws);
        Ok(Json(json!({ "url": format!("{api}/webhooks"), "html_url": format!("{html}/webhooks"), "webhooks": items })))
    })
}

pub async fn create_webhook(
    State(sim): State<Sim>,
    caller: Caller,
    Path(ws): Path<String>,
    Json(body): Json<Value>,
) -> ApiResult<Response> {
    access(&sim, &caller, &ws, "WEBHOOK_ADD")?;
    let json = sim.write(|s, urls| {
        let id = s.next_webhook_id;
        let w = s
            .workspace_mut(&ws)
            .ok_or_else(|| SimError::not_found("Workspace"))?;
        let mut h = Webhook {
            id,
            target_url: String::new(),
            secret_key: None,
            projects: Vec::new(),
            events: Vec::new(),
            requests: Vec::new(),
        };
        apply_webhook(&mut h, &body, true)?;
        let json = render::webhook(urls, w, &h);
        w.webhooks.push(h);
        s.next_webhook_id += 1;
        Ok(json)
    })?;
    Ok(created(json))
}

pub async fn webhook(
    State(sim): State<Sim>,
    caller: Caller,
    Path((ws, id)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    access(&sim, &caller, &ws, "WEBHOOK_INFO")?;
    let id = parse_id(&id, "Webhook")?;
    sim.read(|s, urls| {
        let w = s
            .workspace(&ws)
            .ok_or_else(|| SimError::not_found("Workspace"))?;
        let h = w
            .webhooks
            .iter()
            .find(|h| h.id == id)
            .ok_or_else(|| SimError::not_found("Webhook"))?;
        Ok(Json(render::webhook(urls, w, h)))
    })
}

pub async fn update_webhook(
    State(sim): State<Sim>,
    caller: Caller,
    Path((ws, id)): Path<(String, String)>,
    Json(body): Json<Value>,
) -> ApiResult<Json<Value>> {
    access(&sim, &caller, &ws, "WEBHOOK_MANAGE")?;
    let id = parse_id(&id, "Webhook")?;
    sim.write(|s, urls| {
        let w = s
            .workspace_mut(&ws)
            .ok_or_else(|| SimError::not_found("Workspace"))?;
        let idx = w
            .webhooks
            .iter()
            .position(|h| h.id == id)
            .ok_or_else(|| SimError::not_found("Webhook"))?;
        let mut h = w.webhooks[idx].clone();
        apply_webhook(&mut h, &body, false)?;
        let json = render::webhook(urls, w, &h);
        w.webhooks[idx] = h;
        Ok(Json(json))
    })
}

pub async fn delete_webhook(
    State(sim): State<Sim>,
    caller: Caller,
    Path((ws, id)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    access(&sim, &caller, &ws, "WEBHOOK_MANAGE")?;
    let id = parse_id(&id, "Webhook")?;
    sim.write(|s, _| {
        let w = s
            .workspace_mut(&ws)
            .ok_or_else(|| SimError::not_found("Workspace"))?;
        let before = w.webhooks.len();
        w.webhooks.retain(|h| h.id != id);
        if before == w.webhooks.len() {
            return Err(SimError::not_found("Webhook"));
        }
        Ok(StatusCode::NO_CONTENT)
    })
}
