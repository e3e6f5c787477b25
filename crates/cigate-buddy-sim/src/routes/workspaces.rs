//! User, current token, workspaces and members.

use axum::extract::{Path, State};
use axum::Json;
use serde_json::{json, Value};

use crate::clock::iso;
use crate::error::{ApiResult, SimError};
use crate::render;
use crate::routes::Q;
use crate::sim::Sim;
use crate::transport::{Caller, Page};

pub async fn user(State(sim): State<Sim>, caller: Caller) -> ApiResult<Json<Value>> {
    caller.require("USER_INFO")?;
    let with_email = caller.token.has_scope("USER_EMAIL");
    sim.read(|s, urls| {
        let m = s.workspaces.first().and_then(|w| w.owner().cloned());
        let name = m.as_ref().map(|m| m.name.clone()).unwrap_or_else(|| "Mike Benson".into());
        let email = m.as_ref().map(|m| m.email.clone());
        Ok(Json(json!({
            "url": format!("{}/user", urls.api),
            "html_url": format!("{}/my-id", urls.html),
            "id": 1,
            "name": name,
            "avatar_url": format!("{}/image-server/user/0/0/0/0/0/0/1/w/32/32/AVATAR.png", urls.html),
            "workspaces_url": format!("{}/workspaces", urls.api),
            "email": if with_email { email } else { None },
        })))
    })
}

pub async fn current_token(State(sim): State<Sim>, caller: Caller) -> ApiResult<Json<Value>> {
    let urls = sim.urls();
    let t = &caller.token;
    Ok(Json(json!({
        "url": format!("{}/user/tokens/{}", urls.api, t.id),
        "html_url": format!("{}/my-id/tokens/{}", urls.html, t.id),
        "id": t.id,
        "name": t.name,
        "token": Value::Null,
        "expires_at": t.expires_at.map(iso),
        "scopes": t.scopes,
        "ip_restrictions": t.ip_restrictions,
        "workspace_restrictions": t.workspace_restrictions,
    })))
}

pub async fn oidc_token(State(sim): State<Sim>, caller: Caller) -> ApiResult<Json<Value>> {
    let value = sim.issue_token(crate::auth::TokenSpec {
        scopes: caller.token.scopes.clone(),
        expires_in: Some(3600),
        ..Default::default()
    });
    Ok(Json(Value::String(value)))
}

pub async fn list(State(sim): State<Sim>, caller: Caller) -> ApiResult<Json<Value>> {
    caller.require("WORKSPACE")?;
    sim.read(|s, urls| {
        let items: Vec<Value> = s
            .workspaces
            .iter()
            .filter(|w| caller.token.may_access_workspace(&w.domain))
            .map(|w| render::workspace_short(urls, w))
            .collect();
        Ok(Json(json!({
            "url": format!("{}/workspaces", urls.api),
            "html_url": urls.html,
            "workspaces": items,
        })))
    })
}

pub async fn get_one(
    State(sim): State<Sim>,
    caller: Caller,
    Path(ws): Path<String>,
) -> ApiResult<Json<Value>> {
    caller.require("WORKSPACE")?;
    caller.workspace_access(&sim, &ws)?;
    sim.read(|s, urls| {
        let w = s
            .workspace(&ws)
            .ok_or_else(|| SimError::not_found("Workspace"))?;
        Ok(Json(render::workspace_detail(urls, w)))
    })
}

pub async fn members(
    State(sim): State<Sim>,
    caller: Caller,
    Path(ws): Path<String>,
    q: Q,
) -> ApiResult<Json<Value>> {
    caller.require("WORKSPACE")?;
    caller.workspace_access(&sim, &ws)?;
    let with_email = caller.token.has_scope("MEMBER_EMAIL");
    let page = Page::from_query(
        q.get("page").map(String::as_str),
        q.get("per_page").map(String::as_str),
    );
    sim.read(|s, urls| {
        let w = s.workspace(&ws).ok_or_else(|| SimError::not_found("Workspace"))?;
        let mut members = w.members.clone();
        match q.get("sort_by").map(String::as_str) {
            Some("id") => members.sort_by_key(|m| m.id),
            _ => members.sort_by(|a, b| a.name.cmp(&b.name).then(a.id.cmp(&b.id))),
        }
        if q.get("sort_direction").is_some_and(|d| d.eq_ignore_ascii_case("DESC")) {
            members.reverse();
        }
        let items: Vec<Value> = page
            .slice(&members)
            .iter()
            .map(|m| render::member_detail(urls, &ws, m, with_email))
            .collect();
        let (url, html) = urls.workspace(&ws);
        Ok(Json(json!({ "url": format!("{url}/members"), "html_url": format!("{html}/people"), "members": items })))
    })
}

pub async fn member(
    State(sim): State<Sim>,
    caller: Caller,
    Path((ws, id)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    caller.require("WORKSPACE")?;
    caller.workspace_access(&sim, &ws)?;
    let with_email = caller.token.has_scope("MEMBER_EMAIL");
    let id: u64 = id.parse().map_err(|_| SimError::not_found("Member"))?;
    sim.read(|s, urls| {
        let w = s
            .workspace(&ws)
            .ok_or_else(|| SimError::not_found("Workspace"))?;
        let m = w.member(id).ok_or_else(|| SimError::not_found("Member"))?;
        Ok(Json(render::member_detail(urls, &ws, m, with_email)))
    })
}

/// A workspace's integrations: one GitHub account projects can mirror, and a Slack one
/// (not a Git host). Derived from the domain, so they need no state.
pub fn integrations_of(ws: &str) -> Vec<Value> {
    [("GIT_HUB", "GitHub", "gh"), ("SLACK", "Slack", "sl")]
        .iter()
        .map(|(kind, name, prefix)| {
            json!({
                "hash_id": format!("{prefix}{:x}", crate::prng::hs(ws)),
                "name": format!("{name} ({ws})"),
                "type": kind,
                "auth_type": "TOKEN",
                "scope": "WORKSPACE",
                "all_pipelines_allowed": true,
            })
        })
        .collect()
}

/// `GET /workspaces/:ws/integrations`.
pub async fn integrations(
    State(sim): State<Sim>,
    caller: Caller,
    Path(ws): Path<String>,
) -> ApiResult<Json<Value>> {
    caller.require("INTEGRATION_INFO")?;
    caller.workspace_access(&sim, &ws)?;
    sim.read(|s, urls| {
        s.workspace(&ws)
            .ok_or_else(|| SimError::not_found("Workspace"))?;
        let list: Vec<Value> = integrations_of(&ws)
            .into_iter()
            .map(|mut i| {
                let id = i["hash_id"].as_str().unwrap_or_default().to_owned();
                i["url"] = json!(format!("{}/workspaces/{ws}/integrations/{id}", urls.api));
                i["html_url"] = json!(format!("{}/{ws}/integrations/{id}", urls.html));
                i
            })
            .collect();
        Ok(Json(json!({
            "url": format!("{}/workspaces/{ws}/integrations", urls.api),
            "integrations": list,
        })))
    })
}

/// `POST /workspaces` (self-hosted Buddy): a new, empty workspace owned by the first
/// workspace's owner.
pub async fn create(
    State(sim): State<Sim>,
    caller: Caller,
    Json(body): Json<Value>,
) -> ApiResult<axum::response::Response> {
    caller.require("WORKSPACE")?;
    let domain = body
        .get("domain")
        .and_then(Value::as_str)
        .filter(|d| {
            !d.is_empty()
                && d.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
                && !d.starts_with('-')
                && !d.ends_with('-')
        })
        .ok_or_else(|| SimError::Validation("domain is invalid.".into()))?
        .to_owned();
    let name = body
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or(&domain)
        .to_owned();
    let now = sim.now();
    let json = sim.write(|s, urls| {
        if s.workspace(&domain).is_some() {
            return Err(SimError::Validation(format!(
                "Workspace with domain {domain} already exists."
            )));
        }
        let id = s.workspaces.iter().map(|w| w.id).max().unwrap_or(0) + 1;
        let members = s
            .workspaces
            .first()
            .and_then(|w| w.owner().cloned())
            .into_iter()
            .collect();
        s.workspaces.push(crate::state::Workspace {
            id,
            index: 1_000_000 + id,
            domain: domain.clone(),
            name,
            create_date: now,
            api_enabled: true,
            members,
            projects: Vec::new(),
            variables: Vec::new(),
            webhooks: Vec::new(),
        });
        let w = s
            .workspace(&domain)
            .ok_or_else(|| SimError::not_found("Workspace"))?;
        Ok(render::workspace_detail(urls, w))
    })?;
    Ok(crate::routes::created(json))
}
