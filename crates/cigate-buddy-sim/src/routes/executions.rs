//! Executions (runs) and action executions with their logs.

use axum::extract::{Path, State};
use axum::response::Response;
use axum::Json;
use serde_json::{json, Value};

use crate::clock::parse_iso;
use crate::error::{ApiResult, SimError};
use crate::render;
use crate::routes::{created, Q};
use crate::sim::{execution_of, RunRequest, Sim};
use crate::transport::{Caller, Page};

type PlPath = Path<(String, String, String)>;
type ExPath = Path<(String, String, String, String)>;

fn ids(pipeline: &str, execution: Option<&str>) -> ApiResult<(u64, u64)> {
    let pl = pipeline
        .parse()
        .map_err(|_| SimError::not_found("Pipeline"))?;
    let ex = match execution {
        Some(e) => e.parse().map_err(|_| SimError::not_found("Execution"))?,
        None => 0,
    };
    Ok((pl, ex))
}

fn read_access(sim: &Sim, caller: &Caller, ws: &str) -> ApiResult<()> {
    caller.require("EXECUTION_INFO")?;
    caller.workspace_access(sim, ws)
}

/// Newest first; only the items on the requested page are derived.
pub async fn list(
    State(sim): State<Sim>,
    caller: Caller,
    Path((ws, project, pipeline)): PlPath,
    q: Q,
) -> ApiResult<Json<Value>> {
    read_access(&sim, &caller, &ws)?;
    let (pid, _) = ids(&pipeline, None)?;
    let page = Page::from_query(
        q.get("page").map(String::as_str),
        q.get("per_page").map(String::as_str),
    );
    sim.read(|s, urls| {
        let (w, p, pl) = s.find_pipeline(&ws, &project, pid)?;
        let total = pl.last_id;
        let range = page.range(total);
        let items: Vec<Value> = range
            .map(|offset| total - offset)
            .filter_map(|id| execution_of(s, w, p, pl, id))
            .map(|e| render::execution(urls, w, p, pl, &e))
            .collect();
        let (api, html) = urls.pipeline(&ws, &project, pid);
        Ok(Json(json!({
            "url": format!("{api}/executions"),
            "html_url": html,
            "page": page.page,
            "page_size": page.per_page,
            "total_page_count": total.div_ceil(page.per_page),
            "element_count": items.len(),
            "total_element_count": total,
            "executions": items,
        })))
    })
}

pub async fn get_one(
    State(sim): State<Sim>,
    caller: Caller,
    Path((ws, project, pipeline, execution)): ExPath,
) -> ApiResult<Json<Value>> {
    read_access(&sim, &caller, &ws)?;
    let (pid, eid) = ids(&pipeline, Some(&execution))?;
    execution_json(&sim, &ws, &project, pid, eid).map(Json)
}

fn execution_json(sim: &Sim, ws: &str, project: &str, pid: u64, eid: u64) -> ApiResult<Value> {
    sim.read(|s, urls| {
        let (w, p, pl) = s.find_pipeline(ws, project, pid)?;
        let e = execution_of(s, w, p, pl, eid).ok_or_else(|| SimError::not_found("Execution"))?;
        Ok(render::execution(urls, w, p, pl, &e))
    })
}

fn name_of(body: &Value, key: &str) -> Option<String> {
    body.get(key)
        .and_then(|v| v.get("name"))
        .and_then(Value::as_str)
        .map(str::to_string)
}

fn variables_of(body: &Value) -> ApiResult<Vec<(String, String)>> {
    match body.get("variables") {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| {
                let key = v
                    .get("key")
                    .and_then(Value::as_str)
                    .ok_or_else(|| SimError::Validation("variables[].key is required.".into()))?;
                let value = match v.get("value") {
                    Some(Value::String(s)) => s.clone(),
                    Some(Value::Null) | None => String::new(),
                    Some(other) => other.to_string(),
                };
                Ok((key.to_string(), value))
            })
            .collect(),
        Some(_) => Err(SimError::Validation("variables must be an array.".into())),
    }
}

pub async fn run(
    State(sim): State<Sim>,
    caller: Caller,
    Path((ws, project, pipeline)): PlPath,
    body: Option<Json<Value>>,
) -> ApiResult<Response> {
    caller.require("EXECUTION_RUN")?;
    caller.workspace_access(&sim, &ws)?;
    let (pid, _) = ids(&pipeline, None)?;
    let body = body.map(|Json(b)| b).unwrap_or(Value::Null);
    let delay_until =
        match body.get("delay_until").and_then(Value::as_str) {
            Some(d) => Some(parse_iso(d).ok_or_else(|| {
                SimError::Validation("delay_until must be an ISO-8601 date.".into())
            })?),
            None => None,
        };
    let priority = body
        .get("priority")
        .and_then(Value::as_str)
        .map(str::to_string);
    if priority
        .as_deref()
        .is_some_and(|p| !matches!(p, "LOW" | "NORMAL" | "HIGH"))
    {
        return Err(SimError::Validation(
            "priority must be LOW, NORMAL or HIGH.".into(),
        ));
    }
    let req = RunRequest {
        branch: name_of(&body, "branch"),
        tag: name_of(&body, "tag"),
        pull_request: name_of(&body, "pull_request"),
        revision: body
            .get("to_revision")
            .and_then(|r| r.get("revision"))
            .and_then(Value::as_str)
            .map(str::to_string),
        from_revision: body
            .get("from_revision")
            .and_then(|r| r.get("revision"))
            .and_then(Value::as_str)
            .map(str::to_string),
        comment: body
            .get("comment")
            .and_then(Value::as_str)
            .map(str::to_string),
        refresh: body
            .get("refresh")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        clear_cache: body
            .get("clear_cache")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        priority,
        variables: variables_of(&body)?,
        delay_until,
        actions_to_run: body
            .get("actions_to_run")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_u64().or_else(|| v.get("id").and_then(Value::as_u64)))
                    .collect()
            })
            .unwrap_or_default(),
        triggered_on: None,
    };
    let id = sim.run(&ws, &project, pid, req)?;
    Ok(created(execution_json(&sim, &ws, &project, pid, id)?))
}

pub async fn operate(
    State(sim): State<Sim>,
    caller: Caller,
    Path((ws, project, pipeline, execution)): ExPath,
    Json(body): Json<Value>,
) -> ApiResult<Json<Value>> {
    caller.require("EXECUTION_RUN")?;
    caller.workspace_access(&sim, &ws)?;
    let (pid, eid) = ids(&pipeline, Some(&execution))?;
    let operation = body
        .get("operation")
        .and_then(Value::as_str)
        .ok_or_else(|| SimError::Validation("operation is required.".into()))?;
    sim.operate(&ws, &project, pid, eid, operation, variables_of(&body)?)?;
    execution_json(&sim, &ws, &project, pid, eid).map(Json)
}

fn action_execution_json(
    sim: &Sim,
    ws: &str,
    project: &str,
    pid: u64,
    eid: u64,
    matches: impl Fn(&crate::state::ActionExecution) -> bool,
) -> ApiResult<Value> {
    sim.read(|s, urls| {
        let (w, p, pl) = s.find_pipeline(ws, project, pid)?;
        let e = execution_of(s, w, p, pl, eid).ok_or_else(|| SimError::not_found("Execution"))?;
        let ae = e
            .actions
            .iter()
            .find(|a| matches(a))
            .ok_or_else(|| SimError::not_found("Action execution"))?;
        Ok(render::action_execution(
            urls, ws, project, pl, &e, ae, true,
        ))
    })
}

pub async fn action_execution(
    State(sim): State<Sim>,
    caller: Caller,
    Path((ws, project, pipeline, execution, hex)): Path<(String, String, String, String, String)>,
) -> ApiResult<Json<Value>> {
    read_access(&sim, &caller, &ws)?;
    let (pid, eid) = ids(&pipeline, Some(&execution))?;
    action_execution_json(&sim, &ws, &project, pid, eid, |a| a.hex == hex).map(Json)
}

pub async fn legacy_action(
    State(sim): State<Sim>,
    caller: Caller,
    Path((ws, project, pipeline, execution, action)): Path<(
        String,
        String,
        String,
        String,
        String,
    )>,
) -> ApiResult<Json<Value>> {
    read_access(&sim, &caller, &ws)?;
    let (pid, eid) = ids(&pipeline, Some(&execution))?;
    let action: u64 = action.parse().map_err(|_| SimError::not_found("Action"))?;
    action_execution_json(&sim, &ws, &project, pid, eid, |a| a.action_id == action).map(Json)
}
