//! Buddy's JSON shapes. Every object carries `url` and `html_url`; empty fields are `null`.

use serde_json::{json, Value};

use crate::clock::iso;
use crate::state::{
    Action, ActionExecution, Branch, Commit, Execution, Member, Pipeline, Project, Variable,
    Webhook, Workspace,
};

/// Base URLs for API (`url`) and web UI (`html_url`) links.
#[derive(Debug, Clone, Default)]
pub struct Urls {
    pub api: String,
    pub html: String,
}

impl Urls {
    pub fn workspace(&self, ws: &str) -> (String, String) {
        (
            format!("{}/workspaces/{ws}", self.api),
            format!("{}/{ws}", self.html),
        )
    }

    pub fn project(&self, ws: &str, p: &str) -> (String, String) {
        (
            format!("{}/workspaces/{ws}/projects/{p}", self.api),
            format!("{}/{ws}/{p}", self.html),
        )
    }

    pub fn pipeline(&self, ws: &str, p: &str, id: u64) -> (String, String) {
        let (api, html) = self.project(ws, p);
        (
            format!("{api}/pipelines/{id}"),
            format!("{html}/pipelines/pipeline/{id}"),
        )
    }

    pub fn execution(&self, ws: &str, p: &str, pid: u64, e: &Execution) -> (String, String) {
        let (api, html) = self.pipeline(ws, p, pid);
        (
            format!("{api}/executions/{}", e.id),
            format!("{html}/execution/{}", e.hex),
        )
    }
}

fn enc(segment: &str) -> String {
    url::form_urlencoded::byte_serialize(segment.as_bytes()).collect()
}

pub fn member_ref(urls: &Urls, ws: &str, m: &Member, with_email: bool) -> Value {
    json!({
        "url": format!("{}/workspaces/{ws}/member/{}", urls.api, m.id),
        "html_url": format!("{}/{ws}/profile/{}", urls.html, m.id),
        "id": m.id,
        "name": m.name,
        "avatar_url": format!("{}/image-server/user/0/0/0/0/0/0/{}/w/32/32/AVATAR.png", urls.html, m.id),
        "title": m.title,
        "email": if with_email { Value::from(m.email.clone()) } else { Value::Null },
    })
}

pub fn member_detail(urls: &Urls, ws: &str, m: &Member, with_email: bool) -> Value {
    let mut v = member_ref(urls, ws, m, with_email);
    if let Some(o) = v.as_object_mut() {
        o.insert("admin".into(), m.admin.into());
        o.insert("workspace_owner".into(), m.owner.into());
        o.insert("status".into(), "ACTIVE".into());
        o.insert("auto_assign_to_new_projects".into(), false.into());
        o.insert("auto_assign_permission_set_id".into(), Value::Null);
    }
    v
}

fn member_or_null(urls: &Urls, ws: &Workspace, id: u64) -> Value {
    ws.member(id)
        .map(|m| member_ref(urls, &ws.domain, m, false))
        .unwrap_or(Value::Null)
}

pub fn workspace_short(urls: &Urls, ws: &Workspace) -> Value {
    let (url, html) = urls.workspace(&ws.domain);
    json!({ "url": url, "html_url": html, "id": ws.id, "name": ws.name, "domain": ws.domain })
}

pub fn workspace_detail(urls: &Urls, ws: &Workspace) -> Value {
    let (url, html) = urls.workspace(&ws.domain);
    json!({
        "url": url, "html_url": html, "id": ws.id,
        "owner_id": ws.owner().map(|m| m.id),
        "name": ws.name, "domain": ws.domain, "frozen": false,
        "create_date": iso(ws.create_date),
        "default_pipeline_resource": "DEFAULT",
        "sso_enabled": false,
        "public_pipelines_disabled": false,
    })
}

pub fn project_short(urls: &Urls, ws: &str, p: &Project) -> Value {
    let (url, html) = urls.project(ws, &p.name);
    json!({ "url": url, "html_url": html, "name": p.name, "display_name": p.display_name, "status": p.status })
}

pub fn project_detail(urls: &Urls, ws: &Workspace, p: &Project) -> Value {
    let (url, html) = urls.project(&ws.domain, &p.name);
    let http_repository = match &p.github_repo {
        Some(repo) => format!("https://github.com/{repo}.git"),
        None => format!("{}/{}/{}", urls.html, ws.domain, p.name),
    };
    let ssh_repository = match &p.github_repo {
        Some(repo) => format!("git@github.com:{repo}.git"),
        None => format!("buddy@{}:{}/{}", host_of(&urls.html), ws.domain, p.name),
    };
    json!({
        "url": url, "html_url": html, "name": p.name, "display_name": p.display_name,
        "status": p.status, "create_date": iso(p.create_date),
        "created_by": member_or_null(urls, ws, p.created_by),
        "http_repository": if p.without_repository { Value::Null } else { http_repository.into() },
        "ssh_repository": if p.without_repository { Value::Null } else { ssh_repository.into() },
        "default_branch": if p.without_repository { Value::Null } else { p.default_branch.clone().into() },
        "access": p.access,
        "fetch_submodules": p.fetch_submodules,
        "fetch_submodules_env_key": p.fetch_submodules_env_key,
        "allow_pull_requests": p.allow_pull_requests,
        "update_default_branch_from_external": p.update_default_branch_from_external,
        "without_repository": p.without_repository,
    })
}

fn host_of(base: &str) -> String {
    url::Url::parse(base)
        .ok()
        .and_then(|u| u.host_str().map(str::to_string))
        .unwrap_or_else(|| "localhost".into())
}

pub fn commit(urls: &Urls, ws: &Workspace, p: &Project, c: &Commit) -> Value {
    let (api, html) = urls.project(&ws.domain, &p.name);
    let person = member_or_null(urls, ws, c.author);
    json!({
        "url": format!("{api}/repository/commits/{}", c.revision),
        "html_url": format!("{html}/repository/commit/{}", c.revision),
        "revision": c.revision,
        "author_date": iso(c.date),
        "commit_date": iso(c.date),
        "message": c.message,
        "committer": person.clone(),
        "author": person,
    })
}

pub fn branch_short(urls: &Urls, ws: &str, p: &Project, b: &Branch) -> Value {
    let (api, html) = urls.project(ws, &p.name);
    json!({
        "url": format!("{api}/repository/branches/{}", enc(&b.name)),
        "html_url": format!("{html}/repository/branch/{}", enc(&b.name)),
        "name": b.name,
        "default": b.name == p.default_branch,
    })
}

pub fn branch_detail(urls: &Urls, ws: &Workspace, p: &Project, b: &Branch) -> Value {
    let mut v = branch_short(urls, &ws.domain, p, b);
    let head = b
        .commits
        .last()
        .and_then(|i| p.commits.get(*i))
        .map(|c| commit(urls, ws, p, c))
        .unwrap_or(Value::Null);
    if let Some(o) = v.as_object_mut() {
        o.insert("commit".into(), head);
    }
    v
}

pub fn pull_request(urls: &Urls, ws: &str, p: &Project, n: u64) -> Value {
    let (api, _) = urls.project(ws, &p.name);
    let repo = p.github_repo.clone().unwrap_or_default();
    json!({
        "url": format!("{api}/repository/pulls/{n}"),
        "name": format!("pull/{n}"),
        "github_html_url": format!("https://github.com/{repo}/pull/{n}"),
    })
}

pub fn action(
    urls: &Urls,
    ws: &str,
    p: &str,
    pl: &Pipeline,
    a: &Action,
    last_status: &str,
) -> Value {
    let (api, html) = urls.pipeline(ws, p, pl.id);
    json!({
        "url": format!("{api}/actions/{}", a.id),
        "html_url": format!("{html}/action/{}/edit", a.id),
        "id": a.id, "name": a.name, "type": a.action_type,
        "trigger_time": a.trigger_time,
        "current_revision": Value::Null,
        "trigger_conditions": [],
        "run_next": "WAIT_ON_SUCCESS",
        "last_execution_status": last_status,
        "disabled": a.disabled,
        "variables": [],
    })
}

pub struct PipelineView<'a> {
    pub last_status: &'a str,
    pub last_revision: Option<String>,
    pub v1_1: bool,
}

pub fn pipeline(
    urls: &Urls,
    ws: &Workspace,
    p: &Project,
    pl: &Pipeline,
    view: &PipelineView,
) -> Value {
    let (url, html) = urls.pipeline(&ws.domain, &p.name, pl.id);
    let mut v = json!({
        "url": url, "html_url": html, "id": pl.id, "identifier": pl.identifier, "name": pl.name,
        "refs": pl.refs, "events": pl.events, "trigger_conditions": pl.trigger_conditions,
        "priority": pl.priority,
        "last_execution_status": view.last_status,
        "last_execution_revision": view.last_revision,
        "create_date": iso(pl.create_date),
        "execution_message_template": pl.execution_message_template,
        "always_from_scratch": false, "auto_clear_cache": false, "no_skip_to_most_recent": false,
        "do_not_create_commit_status": false, "ignore_fail_on_project_status": false,
        "fail_on_prepare_env_warning": false, "fetch_all_refs": false,
        "concurrent_pipeline_runs": pl.concurrent_pipeline_runs, "description_required": false,
        "paused": pl.paused, "disabled": pl.disabled, "disabled_reason": Value::Null,
        "manage_variables_by_yaml": false, "manage_permissions_by_yaml": false,
        "clone_depth": 0, "cpu": "X64", "worker": Value::Null, "tags": [],
        "target_site_url": Value::Null, "git_config_ref": "NONE", "git_config": Value::Null,
        "definition_source": "LOCAL", "remote_path": Value::Null, "remote_ref": Value::Null,
        "remote_project_name": Value::Null, "remote_parameters": [],
        "filesystem_changeset_base": "DATE_MODIFIED", "git_changeset_base": "LATEST_RUN",
        "pause_on_repeated_failures": 1, "loop": [],
        "permissions": { "others": "DEFAULT", "users": [], "groups": [] },
        "project": project_short(urls, &ws.domain, p),
        "creator": member_or_null(urls, ws, pl.creator),
    });
    if let Some(o) = v.as_object_mut() {
        // The YAML a pipeline was defined with is exported, not part of the object.
        for (k, val) in pl.extra.iter().filter(|(k, _)| k.as_str() != "yaml") {
            o.insert(k.clone(), val.clone());
        }
        if view.v1_1 {
            o.insert("on".into(), pl.on().into());
        }
    }
    v
}

pub fn action_execution(
    urls: &Urls,
    ws: &str,
    p: &str,
    pl: &Pipeline,
    e: &Execution,
    ae: &ActionExecution,
    with_log: bool,
) -> Value {
    let (api, html) = urls.execution(ws, p, pl.id, e);
    let action_json = pl
        .actions
        .iter()
        .find(|a| a.id == ae.action_id)
        .map(|a| {
            let mut v = action(urls, ws, p, pl, a, &ae.status);
            if let Some(o) = v.as_object_mut() {
                o.retain(|k, _| {
                    matches!(
                        k.as_str(),
                        "url"
                            | "html_url"
                            | "id"
                            | "name"
                            | "type"
                            | "trigger_time"
                            | "last_execution_status"
                            | "disabled"
                    )
                });
            }
            v
        })
        .unwrap_or(Value::Null);
    let progress = match ae.status.as_str() {
        "SUCCESSFUL" | "FAILED" | "TERMINATED" => 100,
        "INPROGRESS" | "TERMINATING" => 50,
        _ => 0,
    };
    let mut v = json!({
        "url": format!("{api}/action_executions/{}", ae.hex),
        "html_url": format!("{html}/?actionExecutionId={}", ae.hex),
        "action_execution_id": ae.hex,
        "status": ae.status,
        "progress": progress,
        "start_date": ae.start_date.map(iso),
        "finish_date": ae.finish_date.map(iso),
        "error_message": ae.error_message,
        "action": action_json,
    });
    if with_log {
        if let Some(o) = v.as_object_mut() {
            o.insert("log".into(), ae.log.clone().into());
            o.insert("outputted_variables".into(), json!([]));
        }
    }
    v
}

pub fn execution(urls: &Urls, ws: &Workspace, p: &Project, pl: &Pipeline, e: &Execution) -> Value {
    let (url, html) = urls.execution(&ws.domain, &p.name, pl.id, e);
    let (papi, phtml) = urls.project(&ws.domain, &p.name);
    let revision = |rev: &Option<String>| match rev {
        Some(r) => match p.commit(r) {
            Some(c) => commit(urls, ws, p, c),
            None => {
                json!({ "url": format!("{papi}/repository/commits/{r}"), "html_url": format!("{phtml}/repository/commit/{r}"), "revision": r })
            }
        },
        None => Value::Null,
    };
    let branch = match &e.branch {
        Some(name) => json!({
            "url": format!("{papi}/repository/branches/{}", enc(name)),
            "html_url": format!("{phtml}/repository/branch/{}", enc(name)),
            "name": name,
            "default": *name == p.default_branch,
        }),
        None => Value::Null,
    };
    let named = |n: &Option<String>, kind: &str| match n {
        Some(name) => {
            json!({ "url": format!("{papi}/repository/{kind}/{}", enc(name)), "name": name })
        }
        None => Value::Null,
    };
    json!({
        "url": url, "html_url": html, "id": e.id,
        "start_date": e.start_date.map(iso),
        "finish_date": e.finish_date.map(iso),
        "delay_until": e.delay_until.map(iso),
        "triggeredOn": e.triggered_on,
        "priority": e.priority,
        "refresh": e.refresh,
        "clear_cache": e.clear_cache,
        "status": e.status,
        "comment": e.comment,
        "branch": branch,
        "tag": named(&e.tag, "tags"),
        "pull_request": match &e.pull_request {
            Some(name) => json!({ "url": format!("{papi}/repository/pulls/{}", name.trim_start_matches("pull/")), "name": name }),
            None => Value::Null,
        },
        "to_revision": revision(&e.to_revision),
        "from_revision": revision(&e.from_revision),
        "creator": member_or_null(urls, ws, e.creator),
        "variables": e.variables.iter().map(|(k, v)| json!({"key": k, "value": v})).collect::<Vec<_>>(),
        "pipeline": {
            "url": urls.pipeline(&ws.domain, &p.name, pl.id).0,
            "html_url": urls.pipeline(&ws.domain, &p.name, pl.id).1,
            "id": pl.id, "name": pl.name,
        },
        "action_executions": e.actions.iter()
            .map(|ae| action_execution(urls, &ws.domain, &p.name, pl, e, ae, false))
            .collect::<Vec<_>>(),
    })
}

/// Encrypted variables are shown as Buddy's opaque `secure!` ciphertext.
pub fn secure_value(ws: &Workspace, v: &Variable) -> String {
    use base64::Engine;
    use sha2::Digest;
    let digest = sha2::Sha256::digest(format!("{}:{}:{}", ws.domain, v.key, v.value).as_bytes());
    let engine = base64::engine::general_purpose::STANDARD;
    format!(
        "secure!{}.{}",
        engine.encode(&digest[..18]),
        engine.encode(&digest[18..])
    )
}

pub fn variable(urls: &Urls, ws: &Workspace, v: &Variable) -> Value {
    let (api, html) = urls.workspace(&ws.domain);
    json!({
        "url": format!("{api}/variables/{}", v.id),
        "html_url": format!("{html}/-/variables/{}", v.id),
        "id": v.id, "key": v.key,
        "value": if v.encrypted { secure_value(ws, v) } else { v.value.clone() },
        "type": v.var_type, "encrypted": v.encrypted, "settable": v.settable,
        "description": v.description,
        "file_path": Value::Null, "file_chmod": Value::Null, "file_place": Value::Null,
        "file_name": Value::Null, "public_value": Value::Null, "key_fingerprint": Value::Null,
        "checksum": Value::Null,
        "project": v.project.as_ref().map(|n| json!({"name": n})),
        "pipeline": v.pipeline.map(|id| json!({"id": id})),
        "action": v.action.map(|id| json!({"id": id})),
        "environment": v.environment.as_ref().map(|id| json!({"id": id})),
    })
}

pub fn webhook(urls: &Urls, ws: &Workspace, w: &Webhook) -> Value {
    let (api, html) = urls.workspace(&ws.domain);
    json!({
        "url": format!("{api}/webhooks/{}", w.id),
        "html_url": format!("{html}/webhook/{}", w.id),
        "id": w.id,
        "target_url": w.target_url,
        "secret_key": w.secret_key,
        "projects": w.projects,
        "events": w.events,
        "requests": w.requests.iter().map(|r| json!({
            "post_date": iso(r.post_date),
            "response_status": r.response_status,
            "body": r.body,
        })).collect::<Vec<_>>(),
    })
}
