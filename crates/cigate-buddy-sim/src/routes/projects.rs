//! Projects and their repository (branches, tags, commits, contents, pull requests).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::Json;
use base64::Engine;
use serde_json::{json, Value};

use crate::clock::parse_iso;
use crate::error::{ApiResult, SimError};
use crate::render;
use crate::routes::{created, Q};
use crate::sim::Sim;
use crate::state::{Branch, Project, Workspace};
use crate::transport::{Caller, Page};

fn page_of(q: &Q) -> Page {
    Page::from_query(
        q.get("page").map(String::as_str),
        q.get("per_page").map(String::as_str),
    )
}

fn with_project<T>(
    sim: &Sim,
    ws: &str,
    project: &str,
    f: impl FnOnce(&Workspace, &Project, &render::Urls) -> ApiResult<T>,
) -> ApiResult<T> {
    sim.read(|s, urls| {
        let (w, p) = s.find_project(ws, project)?;
        f(w, p, urls)
    })
}

pub async fn list(
    State(sim): State<Sim>,
    caller: Caller,
    Path(ws): Path<String>,
    q: Q,
) -> ApiResult<Json<Value>> {
    caller.require_any(&["WORKSPACE", "PROJECT_READ"])?;
    caller.workspace_access(&sim, &ws)?;
    let page = page_of(&q);
    sim.read(|s, urls| {
        let w = s.workspace(&ws).ok_or_else(|| SimError::not_found("Workspace"))?;
        let mut items: Vec<&Project> = w
            .projects
            .iter()
            .filter(|p| q.get("status").is_none_or(|st| st.eq_ignore_ascii_case(&p.status)))
            .collect();
        match q.get("sort_by").map(String::as_str) {
            Some("create_date") => items.sort_by(|a, b| a.create_date.cmp(&b.create_date).then(a.name.cmp(&b.name))),
            Some("repository_size") => items.sort_by(|a, b| a.repository_size.cmp(&b.repository_size).then(a.name.cmp(&b.name))),
            _ => items.sort_by(|a, b| a.name.cmp(&b.name)),
        }
        if q.get("sort_direction").is_some_and(|d| d.eq_ignore_ascii_case("DESC")) {
            items.reverse();
        }
        let list: Vec<Value> = page.slice(&items).iter().map(|p| render::project_short(urls, &ws, p)).collect();
        let (url, html) = urls.workspace(&ws);
        Ok(Json(json!({ "url": format!("{url}/projects"), "html_url": format!("{html}/projects"), "projects": list })))
    })
}

pub async fn get_one(
    State(sim): State<Sim>,
    caller: Caller,
    Path((ws, project)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    caller.require_any(&["WORKSPACE", "PROJECT_READ"])?;
    caller.workspace_access(&sim, &ws)?;
    with_project(&sim, &ws, &project, |w, p, urls| {
        Ok(Json(render::project_detail(urls, w, p)))
    })
}

fn apply_project_fields(p: &mut Project, body: &Value) -> ApiResult<()> {
    let o = body
        .as_object()
        .ok_or_else(|| SimError::Validation("Body must be a JSON object.".into()))?;
    if let Some(v) = o.get("display_name").and_then(Value::as_str) {
        p.display_name = v.to_string();
    }
    if let Some(v) = o.get("access").and_then(Value::as_str) {
        if v != "PUBLIC" && v != "PRIVATE" {
            return Err(SimError::Validation(
                "access must be PUBLIC or PRIVATE.".into(),
            ));
        }
        p.access = v.to_string();
    }
    if let Some(v) = o.get("status").and_then(Value::as_str) {
        if v != "ACTIVE" && v != "CLOSED" {
            return Err(SimError::Validation(
                "status must be ACTIVE or CLOSED.".into(),
            ));
        }
        p.status = v.to_string();
    }
    if let Some(v) = o.get("allow_pull_requests").and_then(Value::as_bool) {
        p.allow_pull_requests = v;
    }
    if let Some(v) = o.get("default_branch").and_then(Value::as_str) {
        if !p.branches.iter().any(|b| b.name == v) {
            return Err(SimError::Validation(format!("Branch {v} does not exist.")));
        }
        p.default_branch = v.to_string();
    }
    if let Some(v) = o.get("fetch_submodules").and_then(Value::as_bool) {
        p.fetch_submodules = v;
    }
    if let Some(v) = o.get("fetch_submodules_env_key") {
        p.fetch_submodules_env_key = v.as_str().map(str::to_string);
    }
    if let Some(v) = o
        .get("update_default_branch_from_external")
        .and_then(Value::as_bool)
    {
        p.update_default_branch_from_external = v;
    }
    Ok(())
}

pub async fn create(
    State(sim): State<Sim>,
    caller: Caller,
    Path(ws): Path<String>,
    Json(body): Json<Value>,
) -> ApiResult<Response> {
    caller.require("WORKSPACE")?;
    caller.workspace_access(&sim, &ws)?;
    let now = sim.now();
    let display = body
        .get("display_name")
        .and_then(Value::as_str)
        .filter(|s| !s.trim().is_empty())
        .ok_or_else(|| SimError::Validation("display_name is required.".into()))?
        .to_string();
    let name = body
        .get("name")
        .and_then(Value::as_str)
        .map(str::to_string)
        .unwrap_or_else(|| crate::seed::slug(&display));
    if name.is_empty() {
        return Err(SimError::Validation("name is invalid.".into()));
    }
    let github = body
        .get("external_project_id")
        .and_then(Value::as_str)
        .map(str::to_string);
    // A mirrored project names a Git integration of the workspace.
    if let Some(hash) = body
        .get("integration")
        .map(|i| i.get("hash_id").and_then(Value::as_str))
    {
        let known = hash.is_some_and(|h| {
            crate::routes::workspaces::integrations_of(&ws)
                .iter()
                .any(|i| i["hash_id"] == h && i["type"] == "GIT_HUB")
        });
        if !known {
            return Err(SimError::Validation("Integration not found.".into()));
        }
        if github.is_none() {
            return Err(SimError::Validation(
                "external_project_id is required.".into(),
            ));
        }
    }
    if let Some(url) = body.get("custom_repo_url") {
        if url.as_str().is_none_or(|u| {
            !(u.starts_with("https://") || u.starts_with("ssh://") || u.starts_with("git@"))
        }) {
            return Err(SimError::Validation("custom_repo_url is invalid.".into()));
        }
    }
    let without_repository = body
        .get("without_repository")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let json = sim.write(|s, urls| {
        let index = 1_000_000 + s.next_pipeline_id;
        let w = s
            .workspace_mut(&ws)
            .ok_or_else(|| SimError::not_found("Workspace"))?;
        if w.project(&name).is_some() {
            return Err(SimError::Validation(format!(
                "Project with name {name} already exists."
            )));
        }
        let owner = w.owner().map(|m| m.id).unwrap_or(1);
        let mut p = Project {
            index,
            name: name.clone(),
            display_name: display,
            status: "ACTIVE".into(),
            create_date: now,
            created_by: owner,
            github_repo: github,
            default_branch: "main".into(),
            access: "PRIVATE".into(),
            allow_pull_requests: false,
            fetch_submodules: false,
            fetch_submodules_env_key: None,
            update_default_branch_from_external: false,
            without_repository,
            repository_size: 0,
            commits: Vec::new(),
            branches: vec![Branch {
                name: "main".into(),
                commits: Vec::new(),
            }],
            tags: Vec::new(),
            pulls: Vec::new(),
            pipelines: Vec::new(),
        };
        apply_project_fields(&mut p, &body)?;
        w.projects.push(p);
        let (w, p) = s.find_project(&ws, &name)?;
        Ok(render::project_detail(urls, w, p))
    })?;
    Ok(created(json))
}

pub async fn update(
    State(sim): State<Sim>,
    caller: Caller,
    Path((ws, project)): Path<(String, String)>,
    Json(body): Json<Value>,
) -> ApiResult<Json<Value>> {
    caller.require("WORKSPACE")?;
    caller.workspace_access(&sim, &ws)?;
    sim.write(|s, urls| {
        let w = s
            .workspace_mut(&ws)
            .ok_or_else(|| SimError::not_found("Workspace"))?;
        let new_name = body.get("name").and_then(Value::as_str).map(str::to_string);
        if let Some(n) = &new_name {
            if *n != project && w.project(n).is_some() {
                return Err(SimError::Validation(format!(
                    "Project with name {n} already exists."
                )));
            }
        }
        let p = w
            .project_mut(&project)
            .ok_or_else(|| SimError::not_found("Project"))?;
        apply_project_fields(p, &body)?;
        if let Some(n) = new_name {
            p.name = n;
        }
        let name = p.name.clone();
        let (w, p) = s.find_project(&ws, &name)?;
        Ok(Json(render::project_detail(urls, w, p)))
    })
}

pub async fn delete(
    State(sim): State<Sim>,
    caller: Caller,
    Path((ws, project)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    caller.require("PROJECT_DELETE")?;
    caller.workspace_access(&sim, &ws)?;
    sim.write(|s, _| {
        let w = s
            .workspace_mut(&ws)
            .ok_or_else(|| SimError::not_found("Workspace"))?;
        let before = w.projects.len();
        w.projects.retain(|p| p.name != project);
        if w.projects.len() == before {
            return Err(SimError::not_found("Project"));
        }
        s.active
            .retain(|k| !(k.workspace == ws && k.project == project));
        Ok(StatusCode::NO_CONTENT)
    })
}

fn repo_access(sim: &Sim, caller: &Caller, ws: &str) -> ApiResult<()> {
    caller.require("REPOSITORY_READ")?;
    caller.workspace_access(sim, ws)
}

pub async fn branches(
    State(sim): State<Sim>,
    caller: Caller,
    Path((ws, project)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    repo_access(&sim, &caller, &ws)?;
    with_project(&sim, &ws, &project, |_, p, urls| {
        let (api, html) = urls.project(&ws, &p.name);
        let items: Vec<Value> = p
            .branches
            .iter()
            .map(|b| render::branch_short(urls, &ws, p, b))
            .collect();
        Ok(Json(
            json!({ "url": format!("{api}/repository/branches"), "html_url": format!("{html}/repository/branches"), "branches": items }),
        ))
    })
}

pub async fn branch(
    State(sim): State<Sim>,
    caller: Caller,
    Path((ws, project, name)): Path<(String, String, String)>,
) -> ApiResult<Json<Value>> {
    repo_access(&sim, &caller, &ws)?;
    with_project(&sim, &ws, &project, |w, p, urls| {
        let b = p
            .branch(&name)
            .ok_or_else(|| SimError::not_found("Branch"))?;
        Ok(Json(render::branch_detail(urls, w, p, b)))
    })
}

fn tag_json(urls: &render::Urls, w: &Workspace, p: &Project, t: &crate::state::Tag) -> Value {
    let (api, html) = urls.project(&w.domain, &p.name);
    json!({
        "url": format!("{api}/repository/tags/{}", t.name),
        "html_url": format!("{html}/repository/tag/{}", t.name),
        "name": t.name,
        "commit": p.commits.get(t.commit).map(|c| render::commit(urls, w, p, c)),
    })
}

pub async fn tags(
    State(sim): State<Sim>,
    caller: Caller,
    Path((ws, project)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    repo_access(&sim, &caller, &ws)?;
    with_project(&sim, &ws, &project, |w, p, urls| {
        let (api, html) = urls.project(&ws, &p.name);
        let items: Vec<Value> = p.tags.iter().map(|t| tag_json(urls, w, p, t)).collect();
        Ok(Json(
            json!({ "url": format!("{api}/repository/tags"), "html_url": format!("{html}/repository/tags"), "tags": items }),
        ))
    })
}

pub async fn tag(
    State(sim): State<Sim>,
    caller: Caller,
    Path((ws, project, name)): Path<(String, String, String)>,
) -> ApiResult<Json<Value>> {
    repo_access(&sim, &caller, &ws)?;
    with_project(&sim, &ws, &project, |w, p, urls| {
        let t = p
            .tags
            .iter()
            .find(|t| t.name == name)
            .ok_or_else(|| SimError::not_found("Tag"))?;
        Ok(Json(tag_json(urls, w, p, t)))
    })
}

pub async fn commits(
    State(sim): State<Sim>,
    caller: Caller,
    Path((ws, project)): Path<(String, String)>,
    q: Q,
) -> ApiResult<Json<Value>> {
    repo_access(&sim, &caller, &ws)?;
    let page = page_of(&q);
    let since = q.get("since").and_then(|s| parse_iso(s));
    let until = q.get("until").and_then(|s| parse_iso(s));
    with_project(&sim, &ws, &project, |w, p, urls| {
        let branch = q
            .get("branch")
            .cloned()
            .unwrap_or_else(|| p.default_branch.clone());
        let b = p
            .branch(&branch)
            .ok_or_else(|| SimError::not_found("Branch"))?;
        let newest_first: Vec<usize> = b
            .commits
            .iter()
            .rev()
            .copied()
            .filter(|i| {
                p.commits.get(*i).is_some_and(|c| {
                    since.is_none_or(|s| c.date >= s) && until.is_none_or(|u| c.date <= u)
                })
            })
            .collect();
        let items: Vec<Value> = page
            .slice(&newest_first)
            .iter()
            .filter_map(|i| p.commits.get(*i))
            .map(|c| render::commit(urls, w, p, c))
            .collect();
        let (api, html) = urls.project(&ws, &p.name);
        Ok(Json(
            json!({ "url": format!("{api}/repository/commits"), "html_url": format!("{html}/repository/commits"), "commits": items }),
        ))
    })
}

pub async fn commit(
    State(sim): State<Sim>,
    caller: Caller,
    Path((ws, project, rev)): Path<(String, String, String)>,
) -> ApiResult<Json<Value>> {
    repo_access(&sim, &caller, &ws)?;
    with_project(&sim, &ws, &project, |w, p, urls| {
        let c = p
            .commits
            .iter()
            .find(|c| c.revision.starts_with(&rev) && rev.len() >= 7)
            .ok_or_else(|| SimError::not_found("Commit"))?;
        Ok(Json(render::commit(urls, w, p, c)))
    })
}

fn resolve_rev(p: &Project, r: &str) -> Option<usize> {
    p.branch(r)
        .and_then(|b| b.commits.last().copied())
        .or_else(|| p.tags.iter().find(|t| t.name == r).map(|t| t.commit))
        .or_else(|| {
            p.commits
                .iter()
                .position(|c| c.revision.starts_with(r) && r.len() >= 7)
        })
}

pub async fn comparison(
    State(sim): State<Sim>,
    caller: Caller,
    Path((ws, project, spec)): Path<(String, String, String)>,
) -> ApiResult<Json<Value>> {
    repo_access(&sim, &caller, &ws)?;
    with_project(&sim, &ws, &project, |w, p, urls| {
        let (base, head) = spec
            .split_once("...")
            .ok_or_else(|| SimError::Validation("Use base...head.".into()))?;
        let b = resolve_rev(p, base).ok_or_else(|| SimError::not_found("Revision"))?;
        let h = resolve_rev(p, head).ok_or_else(|| SimError::not_found("Revision"))?;
        let commits: Vec<Value> = p
            .commits
            .iter()
            .enumerate()
            .filter(|(i, _)| *i > b && *i <= h)
            .map(|(_, c)| render::commit(urls, w, p, c))
            .collect();
        let (api, html) = urls.project(&ws, &p.name);
        Ok(Json(json!({
            "url": format!("{api}/repository/comparison/{spec}"),
            "html_url": format!("{html}/repository/compare/{spec}"),
            "base_commit": p.commits.get(b).map(|c| render::commit(urls, w, p, c)),
            "commits": commits,
        })))
    })
}

const FILES: &[(&str, &str)] = &[
    ("README.md", "# Service\n\nBuilt and deployed with Buddy.\n"),
    ("buddy.yml", "- pipeline: \"Build & test\"\n  events:\n    - type: PUSH\n      refs: [\"refs/heads/*\"]\n"),
    ("src/main.rs", "fn main() {\n    println!(\"hello\");\n}\n"),
];

fn content_item(urls: &render::Urls, ws: &str, p: &Project, path: &str, kind: &str) -> Value {
    let (api, html) = urls.project(ws, &p.name);
    json!({
        "url": format!("{api}/repository/contents/{path}"),
        "html_url": format!("{html}/repository/contents/{path}"),
        "content_type": kind,
        "name": path.rsplit('/').next().unwrap_or(path),
        "path": path,
    })
}

fn contents_at(sim: &Sim, ws: &str, project: &str, path: &str) -> ApiResult<Json<Value>> {
    with_project(sim, ws, project, |_, p, urls| {
        let path = path.trim_matches('/');
        if let Some((_, body)) = FILES.iter().find(|(f, _)| *f == path) {
            let mut v = content_item(urls, ws, p, path, "FILE");
            if let Some(o) = v.as_object_mut() {
                o.insert("encoding".into(), "base64".into());
                o.insert("size".into(), body.len().into());
                o.insert(
                    "content".into(),
                    base64::engine::general_purpose::STANDARD
                        .encode(body)
                        .into(),
                );
            }
            return Ok(Json(v));
        }
        let prefix = if path.is_empty() {
            String::new()
        } else {
            format!("{path}/")
        };
        let mut entries: Vec<(String, &str)> = Vec::new();
        for (f, _) in FILES {
            if let Some(rest) = f.strip_prefix(&prefix) {
                let (name, kind) = match rest.split_once('/') {
                    Some((dir, _)) => (format!("{prefix}{dir}"), "DIR"),
                    None => (format!("{prefix}{rest}"), "FILE"),
                };
                if !entries.iter().any(|(n, _)| *n == name) {
                    entries.push((name, kind));
                }
            }
        }
        if entries.is_empty() {
            return Err(SimError::not_found("Path"));
        }
        let (api, html) = urls.project(ws, &p.name);
        let contents: Vec<Value> = entries
            .iter()
            .map(|(n, k)| content_item(urls, ws, p, n, k))
            .collect();
        Ok(Json(json!({
            "url": format!("{api}/repository/contents/{path}"),
            "html_url": format!("{html}/repository/contents/{path}"),
            "contents": contents,
        })))
    })
}

pub async fn contents_root(
    State(sim): State<Sim>,
    caller: Caller,
    Path((ws, project)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    repo_access(&sim, &caller, &ws)?;
    contents_at(&sim, &ws, &project, "")
}

pub async fn contents(
    State(sim): State<Sim>,
    caller: Caller,
    Path((ws, project, path)): Path<(String, String, String)>,
) -> ApiResult<Json<Value>> {
    repo_access(&sim, &caller, &ws)?;
    contents_at(&sim, &ws, &project, &path)
}

pub async fn pulls(
    State(sim): State<Sim>,
    caller: Caller,
    Path((ws, project)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    caller.require("WORKSPACE")?;
    repo_access(&sim, &caller, &ws)?;
    with_project(&sim, &ws, &project, |_, p, urls| {
        let (api, _) = urls.project(&ws, &p.name);
        let items: Vec<Value> = p
            .pulls
            .iter()
            .map(|n| render::pull_request(urls, &ws, p, *n))
            .collect();
        Ok(Json(
            json!({ "url": format!("{api}/repository/pulls"), "pull_requests": items }),
        ))
    })
}

pub async fn pull(
    State(sim): State<Sim>,
    caller: Caller,
    Path((ws, project, number)): Path<(String, String, String)>,
) -> ApiResult<Json<Value>> {
    caller.require("WORKSPACE")?;
    repo_access(&sim, &caller, &ws)?;
    with_project(&sim, &ws, &project, |_, p, urls| {
        let n: u64 = number
            .parse()
            .map_err(|_| SimError::not_found("Pull request"))?;
        if !p.pulls.contains(&n) {
            return Err(SimError::not_found("Pull request"));
        }
        Ok(Json(render::pull_request(urls, &ws, p, n)))
    })
}
