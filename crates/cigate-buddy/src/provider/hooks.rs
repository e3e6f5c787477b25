//! Buddy workspace webhooks pointing back at cigate (buddy-api.md §4.11).
//!
//! Buddy's docs leave open where the shared secret travels and how much of the
//! execution a delivery carries, so the hint reads every place either could be and
//! the server re-reads the execution before believing any of it.

use async_trait::async_trait;
use cigate_core::events::{HookHint, JobRef};
use cigate_core::{ListQuery, ProviderError, ProviderHooks};
use http::Method;
use serde_json::{json, Value};

use super::{ws_path, BuddyProvider, Call, SCOPE_WORKSPACE};
use crate::wire;

/// The execution events cigate listens to.
pub const HOOK_EVENTS: [&str; 4] = [
    "EXECUTION_STARTED",
    "EXECUTION_SUCCESSFUL",
    "EXECUTION_FAILED",
    "EXECUTION_FINISHED",
];
const SCOPE_WEBHOOK_INFO: &str = "WEBHOOK_INFO";
const SCOPE_WEBHOOK_ADD: &str = "WEBHOOK_ADD";
const SCOPE_WEBHOOK_MANAGE: &str = "WEBHOOK_MANAGE";

/// Body fields a delivery may carry the shared secret in.
const SECRET_FIELDS: [&str; 3] = ["secret_key", "secret", "token"];

fn events_match(hook: &Value) -> bool {
    let mut have: Vec<&str> = hook
        .get("events")
        .and_then(Value::as_array)
        .map(|events| events.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    have.sort_unstable();
    let mut want = HOOK_EVENTS.to_vec();
    want.sort_unstable();
    have == want
}

/// Buddy's webhook body for cigate's hook; `projects` empty means every project.
fn hook_body(target_url: &str, secret: &str, projects: &[String]) -> Value {
    json!({
        "events": HOOK_EVENTS,
        "target_url": target_url,
        "secret_key": secret,
        "projects": projects,
    })
}

/// A 4xx that is about the request's shape (not the credential, scope or throttling):
/// a Buddy that insists on naming `projects` answers so.
fn refused_shape(err: &ProviderError) -> bool {
    matches!(
        err,
        ProviderError::Upstream {
            status: 400 | 422,
            missing_scope: None,
            ..
        }
    )
}

impl BuddyProvider {
    async fn workspaces(&self, call: &Call<'_>) -> Result<Vec<String>, ProviderError> {
        let body = call.get("/workspaces", &[], SCOPE_WORKSPACE).await?;
        Ok(wire::list_items(&body, "workspaces")
            .iter()
            .filter_map(|w| w.get("domain").and_then(wire::id_of))
            .collect())
    }

    /// cigate's webhooks of workspace `ws` (those posting to `target_url`).
    async fn own_hooks(
        &self,
        call: &Call<'_>,
        ws: &str,
        target_url: &str,
    ) -> Result<Vec<Value>, ProviderError> {
        let body = call
            .get(
                &format!("{}/webhooks", ws_path(ws)),
                &[],
                SCOPE_WEBHOOK_INFO,
            )
            .await?;
        Ok(wire::list_items(&body, "webhooks")
            .into_iter()
            .filter(|h| h.get("target_url").and_then(Value::as_str) == Some(target_url))
            .collect())
    }

    async fn ensure_in(
        &self,
        call: &Call<'_>,
        ws: &str,
        target_url: &str,
        secret: &str,
    ) -> Result<String, ProviderError> {
        let mut own = self.own_hooks(call, ws, target_url).await?.into_iter();
        let Some(keep) = own.next() else {
            let path = format!("{}/webhooks", ws_path(ws));
            let created = match self
                .send(
                    Method::POST,
                    &path,
                    Some(&hook_body(target_url, secret, &[])),
                    SCOPE_WEBHOOK_ADD,
                )
                .await
            {
                Err(err) if refused_shape(&err) => {
                    let projects = call
                        .get_all(
                            &format!("{}/projects", ws_path(ws)),
                            "projects",
                            SCOPE_WORKSPACE,
                        )
                        .await?
                        .iter()
                        .filter_map(|p| p.get("name").and_then(wire::id_of))
                        .collect::<Vec<_>>();
                    self.send(
                        Method::POST,
                        &path,
                        Some(&hook_body(target_url, secret, &projects)),
                        SCOPE_WEBHOOK_ADD,
                    )
                    .await?
                }
                other => other?,
            };
            return created.0.get("id").and_then(wire::id_of).ok_or_else(|| {
                ProviderError::Transport("Buddy created a webhook without an id".into())
            });
        };
        let id = keep
            .get("id")
            .and_then(wire::id_of)
            .ok_or_else(|| ProviderError::Transport("a Buddy webhook without an id".into()))?;
        let hook_path = format!("{}/webhooks/{}", ws_path(ws), super::segment(&id));
        // Buddy returns `secret_key` in clear; one it does not return is set again.
        let secret_drifted = keep.get("secret_key").and_then(Value::as_str) != Some(secret);
        if !events_match(&keep) || secret_drifted {
            let projects: Vec<String> = keep
                .get("projects")
                .and_then(Value::as_array)
                .map(|p| p.iter().filter_map(wire::id_of).collect())
                .unwrap_or_default();
            self.send(
                Method::PATCH,
                &hook_path,
                Some(&hook_body(target_url, secret, &projects)),
                SCOPE_WEBHOOK_MANAGE,
            )
            .await?;
        }
        // Duplicates (an earlier run interrupted between create and record) go.
        for extra in own {
            if let Some(extra) = extra.get("id").and_then(wire::id_of) {
                let path = format!("{}/webhooks/{}", ws_path(ws), super::segment(&extra));
                self.send(Method::DELETE, &path, None, SCOPE_WEBHOOK_MANAGE)
                    .await?;
            }
        }
        Ok(id)
    }
}

#[async_trait]
impl ProviderHooks for BuddyProvider {
    async fn ensure_hooks(&self, target_url: &str, secret: &str) -> Result<Value, ProviderError> {
        let query = ListQuery::default();
        let call = Call::new(self, &query);
        let mut registered = Vec::new();
        for ws in self.workspaces(&call).await? {
            let id = self.ensure_in(&call, &ws, target_url, secret).await?;
            registered.push(json!({ "workspace": ws, "id": id, "target_url": target_url }));
        }
        Ok(Value::Array(registered))
    }

    async fn remove_hooks(&self, target_url: &str) -> Result<u32, ProviderError> {
        let query = ListQuery::default();
        let call = Call::new(self, &query);
        let mut removed = 0;
        for ws in self.workspaces(&call).await? {
            for hook in self.own_hooks(&call, &ws, target_url).await? {
                let Some(id) = hook.get("id").and_then(wire::id_of) else {
                    continue;
                };
                let path = format!("{}/webhooks/{}", ws_path(&ws), super::segment(&id));
                match self
                    .send(Method::DELETE, &path, None, SCOPE_WEBHOOK_MANAGE)
                    .await
                {
                    Ok(_) => removed += 1,
                    // Gone already: what removal wanted.
                    Err(ProviderError::Upstream { status: 404, .. }) => {}
                    Err(err) => return Err(err),
                }
            }
        }
        Ok(removed)
    }

    fn hint(&self, body: &Value) -> HookHint {
        hint(body)
    }
}

/// The secret and the execution a Buddy delivery names. The pipeline comes from
/// `execution.pipeline.id`, else from the execution's API URL
/// (`…/projects/<p>/pipelines/<id>/executions/<n>`), whose project also stands in for
/// a missing `project.name`.
pub fn hint(body: &Value) -> HookHint {
    let secrets = SECRET_FIELDS
        .iter()
        .filter_map(|field| body.get(*field).and_then(Value::as_str))
        .map(str::to_owned)
        .collect();
    HookHint {
        secrets,
        job: job_of(body),
    }
}

fn job_of(body: &Value) -> Option<JobRef> {
    let execution = body.get("execution")?;
    let job = execution.get("id").and_then(wire::id_of)?;
    let url = execution
        .get("url")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let from_url = |after: &str| {
        let mut parts = url.split('/');
        parts.by_ref().find(|p| *p == after)?;
        parts.next().filter(|p| !p.is_empty()).map(str::to_owned)
    };
    let workflow = execution
        .get("pipeline")
        .and_then(|p| p.get("id"))
        .and_then(wire::id_of)
        .or_else(|| from_url("pipelines"))?;
    let repo = body
        .get("project")
        .and_then(|p| p.get("name"))
        .and_then(wire::id_of)
        .or_else(|| from_url("projects"))?;
    let workspace = body
        .get("workspace")
        .and_then(|w| w.get("domain"))
        .and_then(wire::id_of)
        .or_else(|| from_url("workspaces"))?;
    Some(JobRef {
        workspace,
        repo,
        workflow,
        job,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_payload_names_its_execution() {
        let body = json!({
            "workspace": {"domain": "buddy", "id": 1},
            "project": {"url": "https://api.buddy.works/projects/company-website", "name": "company-website"},
            "execution": {"url": "https://api.buddy.works/projects/company-website/pipelines/2/executions/1",
                          "id": 1, "status": "SUCCESSFUL"},
            "secret_key": "s3"
        });
        let hint = hint(&body);
        assert_eq!(hint.secrets, vec!["s3".to_owned()]);
        assert_eq!(
            hint.job,
            Some(JobRef {
                workspace: "buddy".into(),
                repo: "company-website".into(),
                workflow: "2".into(),
                job: "1".into(),
            })
        );
    }

    #[test]
    fn a_payload_that_does_not_say_which_job_names_none() {
        assert_eq!(hint(&json!({"workspace": {"domain": "w"}})).job, None);
        // No pipeline anywhere: no job, rather than a guess.
        let body = json!({"workspace": {"domain": "w"}, "project": {"name": "p"},
                          "execution": {"id": 3, "url": "https://x/executions/3"}});
        assert_eq!(hint(&body).job, None);
        assert!(hint(&json!([1, 2])).secrets.is_empty());
    }

    #[test]
    fn hook_events_compare_as_sets() {
        let mut events: Vec<&str> = HOOK_EVENTS.to_vec();
        events.reverse();
        assert!(events_match(&json!({ "events": events })));
        assert!(!events_match(&json!({ "events": ["PUSH"] })));
    }
}
