//! Pipelines and their actions.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::Json;
use serde_json::{json, Value};

use crate::error::{ApiResult, SimError};
use crate::render::{self, PipelineView};
use crate::routes::{created, Q};
use crate::sim::{last_execution, Sim};
use crate::state::{Pipeline, Project, State as SimState, Workspace};
use crate::transport::{Caller, Page};

fn read_access(sim: &Sim, caller: &Caller, ws: &str) -> ApiResult<()> {
    caller.require("EXECUTION_INFO")?;
    caller.workspace_access(sim, ws)
}

fn manage_access(sim: &Sim, caller: &Caller, ws: &str) -> ApiResult<()> {
    caller.require("EXECUTION_MANAGE")?;
    caller.workspace_access(sim, ws)
}

pub(crate) fn pipeline_json(
    s: &SimState,
    urls: &render::Urls,
    w: &Workspace,
    p: &Project,
    pl: &Pipeline,
    v1_1: bool,
) -> Value {
    let (status, revision) = last_execution(s, w, p, pl);
    render::pipeline(
        urls,
        w,
        p,
        pl,
        &PipelineView {
            last_status: &status,
            last_revision: revision,
            v1_1,
        },
    )
}

pub async fn list(
    State(sim): State<Sim>,
    caller: Caller,
    Path((ws, project)): Path<(String, String)>,
    q: Q,
) -> ApiResult<Json<Value>> {
    read_access(&sim, &caller, &ws)?;
    let page = Page::from_query(
        q.get("page").map(String::as_str),
        q.get("per_page").map(String::as_str),
    );
    sim.read(|s, urls| {
        let (w, p) = s.find_project(&ws, &project)?;
        let mut items: Vec<&Pipeline> = p.pipelines.iter().collect();
        match q.get("sort_by").map(String::as_str) {
            Some("name") => items.sort_by(|a, b| a.name.cmp(&b.name).then(a.id.cmp(&b.id))),
            _ => items.sort_by_key(|pl| pl.id),
        }
        if q.get("sort_direction").is_some_and(|d| d.eq_ignore_ascii_case("DESC")) {
            items.reverse();
        }
        let list: Vec<Value> = page.slice(&items).iter().map(|pl| pipeline_json(s, urls, w, p, pl, caller.wants_v1_1())).collect();
        let (api, html) = urls.project(&ws, &project);
        Ok(Json(json!({ "url": format!("{api}/pipelines"), "html_url": format!("{html}/pipelines"), "pipelines": list })))
    })
}

pub async fn get_one(
    State(sim): State<Sim>,
    caller: Caller,
    Path((ws, project, id)): Path<(String, String, String)>,
) -> ApiResult<Json<Value>> {
    read_access(&sim, &caller, &ws)?;
    let id: u64 = id.parse().map_err(|_| SimError::not_found("Pipeline"))?;
    sim.read(|s, urls| {
        let (w, p, pl) = s.find_pipeline(&ws, &project, id)?;
        Ok(Json(pipeline_json(s, urls, w, p, pl, caller.wants_v1_1())))
    })
}

/// Applies create/update fields; unknown fields are stored verbatim.
fn apply_fields(pl: &mut Pipeline, body: &Value) -> ApiResult<()> {
    let o = body
        .as_object()
        .ok_or_else(|| SimError::Validation("Body must be a JSON object.".into()))?;
    for (k, v) in o {
        match k.as_str() {
            "name" => {
                pl.name = v
                    .as_str()
                    .filter(|s| !s.trim().is_empty())
                    .ok_or_else(|| SimError::Validation("name must be a non-empty string.".into()))?
                    .to_string()
            }
            "identifier" => pl.identifier = v.as_str().unwrap_or_default().to_string(),
            "refs" => {
                pl.refs = v
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(Value::as_str)
                            .map(str::to_string)
                            .collect()
                    })
                    .ok_or_else(|| SimError::Validation("refs must be an array.".into()))?
            }
            "events" => {
                if !v.is_array() {
                    return Err(SimError::Validation("events must be an array.".into()));
                }
                pl.events = v.clone();
            }
            "trigger_conditions" => pl.trigger_conditions = v.clone(),
            "priority" => {
                let p = v.as_str().unwrap_or_default();
                if !matches!(p, "LOW" | "NORMAL" | "HIGH") {
                    return Err(SimError::Validation(
                        "priority must be LOW, NORMAL or HIGH.".into(),
                    ));
                }
                pl.priority = p.to_string();
            }
            "disabled" => pl.disabled = v.as_bool().unwrap_or(false),
            "paused" => pl.paused = v.as_bool().unwrap_or(false),
            "concurrent_pipeline_runs" => {
                pl.concurrent_pipeline_runs = v.as_bool().unwrap_or(false)
            }
            "execution_message_template" => {
                pl.execution_message_template = v.as_str().unwrap_or_default().to_string()
            }
            "on" => {
                // v1.1 clients send `on`; translate CLICK to "no events".
                if v.as_str() == Some("CLICK") {
                    pl.events = json!([]);
                }
            }
            "url"
            | "html_url"
            | "id"
            | "last_execution_status"
            | "last_execution_revision"
            | "create_date"
            | "project"
            | "creator" => {}
            _ => {
                pl.extra.insert(k.clone(), v.clone());
            }
        }
    }
    Ok(())
}

pub async fn create(
    State(sim): State<Sim>,
    caller: Caller,
    Path((ws, project)): Path<(String, String)>,
    Json(body): Json<Value>,
) -> ApiResult<Response> {
    manage_access(&sim, &caller, &ws)?;
    if body
        .get("name")
        .and_then(Value::as_str)
        .is_none_or(|n| n.trim().is_empty())
    {
        return Err(SimError::Validation("name is required.".into()));
    }
    let json = add_pipeline(&sim, &ws, &project, caller.wants_v1_1(), |pl, p| {
        pl.refs = vec![format!("refs/heads/{}", p.default_branch)];
        apply_fields(pl, &body)?;
        if body.get("identifier").is_none() {
            pl.identifier = crate::seed::slug(&pl.name);
        }
        Ok(())
    })?;
    Ok(created(json))
}

/// A new pipeline in the project, shaped by `shape` (given the project), answered as
/// Buddy renders it.
fn add_pipeline(
    sim: &Sim,
    ws: &str,
    project: &str,
    v1_1: bool,
    shape: impl FnOnce(&mut crate::state::Pipeline, &crate::state::Project) -> ApiResult<()>,
) -> ApiResult<Value> {
    let now = sim.now();
    sim.write(|s, urls| {
        let p = s
            .workspace(ws)
            .and_then(|w| w.project(project))
            .cloned()
            .ok_or_else(|| SimError::not_found("Project"))?;
        let mut pl = crate::seed::build_pipeline(s, &p, 1_000_000 + s.next_pipeline_id, 0);
        pl.create_date = now;
        pl.events = json!([]);
        pl.trigger_conditions = json!([]);
        shape(&mut pl, &p)?;
        let id = pl.id;
        let pr = s
            .workspace_mut(ws)
            .and_then(|w| w.project_mut(project))
            .ok_or_else(|| SimError::not_found("Project"))?;
        pr.pipelines.push(pl);
        let (w, p, pl) = s.find_pipeline(ws, project, id)?;
        Ok(pipeline_json(s, urls, w, p, pl, v1_1))
    })
}

pub async fn update(
    State(sim): State<Sim>,
    caller: Caller,
    Path((ws, project, id)): Path<(String, String, String)>,
    Json(body): Json<Value>,
) -> ApiResult<Json<Value>> {
    manage_access(&sim, &caller, &ws)?;
    let id: u64 = id.parse().map_err(|_| SimError::not_found("Pipeline"))?;
    sim.with_pipeline_mut(&ws, &project, id, |pl| apply_fields(pl, &body))?;
    get_json(&sim, &ws, &project, id, caller.wants_v1_1())
}

fn get_json(sim: &Sim, ws: &str, project: &str, id: u64, v1_1: bool) -> ApiResult<Json<Value>> {
    sim.read(|s, urls| {
        let (w, p, pl) = s.find_pipeline(ws, project, id)?;
        Ok(Json(pipeline_json(s, urls, w, p, pl, v1_1)))
    })
}

/// The YAML of a `{"yaml"}` body: base64 as Buddy documents it, or the text itself.
fn yaml_of(body: &Value) -> ApiResult<String> {
    use base64::Engine;
    let text = body
        .get("yaml")
        .and_then(Value::as_str)
        .ok_or_else(|| SimError::Validation("yaml is required.".into()))?;
    Ok(base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .unwrap_or_else(|| text.to_owned()))
}

/// The one pipeline a YAML definition describes: a list holding one mapping with a
/// `pipeline` id, optional `name` and `refs`, and `actions`. Anything else is refused
/// with Buddy's kind of message.
fn parse_pipeline_yaml(yaml: &str) -> ApiResult<(String, Option<Vec<String>>)> {
    let doc: Value = serde_norway::from_str(yaml)
        .map_err(|e| SimError::Validation(format!("Invalid YAML: {e}")))?;
    let list = doc.as_array().ok_or_else(|| {
        SimError::Validation("Invalid YAML: expected a list of pipelines.".into())
    })?;
    let [pipeline] = list.as_slice() else {
        return Err(SimError::Validation(
            "Invalid YAML: exactly one pipeline expected.".into(),
        ));
    };
    let id = pipeline
        .get("pipeline")
        .and_then(Value::as_str)
        .filter(|p| !p.trim().is_empty())
        .ok_or_else(|| SimError::Validation("Invalid YAML: `pipeline` is required.".into()))?;
    if !pipeline.get("actions").is_some_and(Value::is_array) {
        return Err(SimError::Validation(
            "Invalid YAML: `actions` must be a list.".into(),
        ));
    }
    let name = pipeline
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or(id)
        .to_owned();
    let refs = pipeline.get("refs").and_then(Value::as_array).map(|refs| {
        refs.iter()
            .filter_map(Value::as_str)
            .map(|r| {
                if r.starts_with("refs/") {
                    r.to_owned()
                } else {
                    format!("refs/heads/{r}")
                }
            })
            .collect()
    });
    Ok((name, refs))
}

/// `POST …/pipelines/yaml`: a pipeline from its YAML definition.
pub async fn create_yaml(
    State(sim): State<Sim>,
    caller: Caller,
    Path((ws, project)): Path<(String, String)>,
    Json(body): Json<Value>,
) -> ApiResult<Response> {
    manage_access(&sim, &caller, &ws)?;
    let yaml = yaml_of(&body)?;
    let (name, refs) = parse_pipeline_yaml(&yaml)?;
    let json = add_pipeline(&sim, &ws, &project, caller.wants_v1_1(), |pl, p| {
        pl.refs = refs.unwrap_or_else(|| vec![format!("refs/heads/{}", p.default_branch)]);
        apply_fields(pl, &json!({ "name": name }))?;
        pl.identifier = crate::seed::slug(&pl.name);
        pl.extra.insert("yaml".into(), Value::String(yaml));
        Ok(())
    })?;
    Ok(created(json))
}

/// `PATCH …/pipelines/:id/yaml`: the pipeline replaced by its YAML definition.
pub async fn update_yaml(
    State(sim): State<Sim>,
    caller: Caller,
    Path((ws, project, id)): Path<(String, String, String)>,
    Json(body): Json<Value>,
) -> ApiResult<Json<Value>> {
    manage_access(&sim, &caller, &ws)?;
    let id: u64 = id.parse().map_err(|_| SimError::not_found("Pipeline"))?;
    let yaml = yaml_of(&body)?;
    let (name, refs) = parse_pipeline_yaml(&yaml)?;
    sim.with_pipeline_mut(&ws, &project, id, |pl| {
        apply_fields(pl, &json!({ "name": name }))?;
        if let Some(refs) = refs {
            pl.refs = refs;
        }
        pl.extra.insert("yaml".into(), Value::String(yaml));
        Ok(())
    })?;
    get_json(&sim, &ws, &project, id, caller.wants_v1_1())
}

/// `GET …/pipelines/:id/yaml`: the definition, base64 in `{"yaml"}` (the YAML it was
/// given, else one written from the pipeline's fields).
pub async fn export_yaml(
    State(sim): State<Sim>,
    caller: Caller,
    Path((ws, project, id)): Path<(String, String, String)>,
) -> ApiResult<Json<Value>> {
    use base64::Engine;
    caller.require_any(&["EXECUTION_INFO", "PIPELINE_READ"])?;
    caller.workspace_access(&sim, &ws)?;
    let id: u64 = id.parse().map_err(|_| SimError::not_found("Pipeline"))?;
    sim.read(|s, urls| {
        let (w, p, pl) = s.find_pipeline(&ws, &project, id)?;
        let yaml = match pl.extra.get("yaml").and_then(Value::as_str) {
            Some(yaml) => yaml.to_owned(),
            None => {
                let refs: Vec<String> = pl.refs.iter().map(|r| format!("  - {r:?}\n")).collect();
                format!(
                    "- pipeline: {:?}\n  name: {:?}\n  refs:\n{}  actions: []\n",
                    pl.identifier,
                    pl.name,
                    refs.concat()
                )
            }
        };
        let (url, html) = urls.pipeline(&w.domain, &p.name, pl.id);
        Ok(Json(json!({
            "url": url,
            "html_url": html,
            "yaml": base64::engine::general_purpose::STANDARD.encode(yaml),
        })))
    })
}

pub async fn delete(
    State(sim): State<Sim>,
    caller: Caller,
    Path((ws, project, id)): Path<(String, String, String)>,
) -> ApiResult<StatusCode> {
    manage_access(&sim, &caller, &ws)?;
    let id: u64 = id.parse().map_err(|_| SimError::not_found("Pipeline"))?;
    sim.write(|s, _| {
        let p = s
            .workspace_mut(&ws)
            .and_then(|w| w.project_mut(&project))
            .ok_or_else(|| SimError::not_found("Project"))?;
        let before = p.pipelines.len();
        p.pipelines.retain(|pl| pl.id != id);
        if before == p.pipelines.len() {
            return Err(SimError::not_found("Pipeline"));
        }
        s.active.retain(|k| k.pipeline_id != id);
        Ok(StatusCode::NO_CONTENT)
    })
}

pub async fn actions(
    State(sim): State<Sim>,
    caller: Caller,
    Path((ws, project, id)): Path<(String, String, String)>,
) -> ApiResult<Json<Value>> {
    read_access(&sim, &caller, &ws)?;
    let id: u64 = id.parse().map_err(|_| SimError::not_found("Pipeline"))?;
    sim.read(|s, urls| {
        let (w, p, pl) = s.find_pipeline(&ws, &project, id)?;
        let (status, _) = last_execution(s, w, p, pl);
        let items: Vec<Value> = pl
            .actions
            .iter()
            .map(|a| render::action(urls, &ws, &project, pl, a, &status))
            .collect();
        let (api, html) = urls.pipeline(&ws, &project, id);
        Ok(Json(
            json!({ "url": format!("{api}/actions"), "html_url": html, "actions": items }),
        ))
    })
}

pub async fn action(
    State(sim): State<Sim>,
    caller: Caller,
    Path((ws, project, id, action)): Path<(String, String, String, String)>,
) -> ApiResult<Json<Value>> {
    read_access(&sim, &caller, &ws)?;
    let id: u64 = id.parse().map_err(|_| SimError::not_found("Pipeline"))?;
    let action: u64 = action.parse().map_err(|_| SimError::not_found("Action"))?;
    sim.read(|s, urls| {
        let (w, p, pl) = s.find_pipeline(&ws, &project, id)?;
        let a = pl
            .actions
            .iter()
            .find(|a| a.id == action)
            .ok_or_else(|| SimError::not_found("Action"))?;
        let (status, _) = last_execution(s, w, p, pl);
        Ok(Json(render::action(urls, &ws, &project, pl, a, &status)))
    })
}
