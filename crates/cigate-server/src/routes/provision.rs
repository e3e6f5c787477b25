//! `POST /unified/ci-cd/provision`: one document (JSON or YAML) describing the repos,
//! workflows, variables and event webhook an account should have, applied
//! declaratively and safe to apply again.
//!
//! Each object is matched by its natural key (repo name; workflow name within its repo,
//! from the YAML when given as YAML; variable key within its scope; webhook target URL),
//! created when missing, updated when different, left alone when equal. "Equal" is
//! decided from what the provider shows where it can be compared (a plain variable's
//! value, a repo's name and default branch, a workflow's refs) and otherwise from a keyed
//! fingerprint of what this document last applied, kept in the store: an encrypted
//! value cannot be read back, so it is rewritten only when the document's value changes.
//! Steps run one at a time in document order; a failure stops there, and applying the
//! document again finishes the job (every step is idempotent). `dry_run=true` returns
//! the plan without writing. `prune=true` deletes objects this document created earlier
//! and no longer names; nothing else is ever deleted.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::{Extension, Json, Router};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sha2::Sha256;

use cigate_core::{
    ListQuery, ProviderError, RepoInput, Resource, Secret, VariableInput, WorkflowInput,
};
use cigate_store::{Provisioned, WebhookPatch};

use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::extract::QueryPairs;
use crate::gateway::{self, writes_of, Gateway};
use crate::routes::webhooks::{subscribe, CreateWebhook};
use crate::state::AppState;

const API: &str = "provisioning";

pub fn routes() -> Router<AppState> {
    Router::new().route("/unified/ci-cd/provision", post(provision))
}

/// What an account should have.
#[derive(Debug, PartialEq, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Document {
    /// Names the document: what it created is remembered under this name.
    pub name: String,
    #[serde(default)]
    pub repos: Vec<RepoSpec>,
    /// Variables of the workspace.
    #[serde(default)]
    pub variables: Vec<VariableSpec>,
    /// A subscription to this account's events.
    pub webhook: Option<WebhookSpec>,
}

#[derive(Debug, PartialEq, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RepoSpec {
    /// The repo's id (Buddy project name): its natural key.
    pub name: String,
    pub display_name: Option<String>,
    pub integration: Option<String>,
    pub external_repo: Option<String>,
    pub git_url: Option<String>,
    pub git_username: Option<String>,
    #[schema(value_type = Option<String>)]
    pub git_password: Option<Secret>,
    pub default_branch: Option<String>,
    pub access: Option<String>,
    pub allow_pull_requests: Option<bool>,
    #[serde(default)]
    pub workflows: Vec<WorkflowSpec>,
    /// Variables of the repo (Buddy project scope).
    #[serde(default)]
    pub variables: Vec<VariableSpec>,
}

#[derive(Debug, PartialEq, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WorkflowSpec {
    pub name: Option<String>,
    pub trigger: Option<String>,
    pub branch: Option<String>,
    pub refs: Option<Vec<String>>,
    pub cron: Option<String>,
    pub timezone: Option<String>,
    pub priority: Option<String>,
    pub disabled: Option<bool>,
    /// The whole workflow as Buddy's pipeline YAML (its name is read from it).
    pub yaml: Option<String>,
    /// Variables of the workflow.
    #[serde(default)]
    pub variables: Vec<VariableSpec>,
}

#[derive(Debug, PartialEq, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VariableSpec {
    pub key: String,
    /// Never returned, logged or shown in a plan.
    #[schema(value_type = String)]
    pub value: Secret,
    pub encrypted: Option<bool>,
    pub settable: Option<bool>,
    pub description: Option<String>,
}

#[derive(Debug, PartialEq, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookSpec {
    pub target_url: String,
    pub event_types: Option<Vec<String>>,
    pub format: Option<String>,
}

/// What one step did (or, in a dry run, would do).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Step {
    /// `repo`, `workflow`, `variable` or `webhook`.
    pub kind: &'static str,
    /// The natural key: `shop-api`, `shop-api/Build`, `workspace/API_URL`, …
    pub key: String,
    /// `create`, `update`, `unchanged` or `delete`.
    pub action: &'static str,
    /// The provider's id (cigate's for the webhook); absent for a planned creation.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// A created webhook's signing secret, shown only on creation.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
}

/// The answer: every step in order.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ProvisionAnswer {
    pub name: String,
    pub dry_run: bool,
    pub steps: Vec<Step>,
}

/// Object keys are JSON arrays of their parts, so no name can collide with another.
fn object_key(parts: &[&str]) -> String {
    serde_json::to_string(parts).unwrap_or_default()
}

/// A readable key for the answer.
fn shown_key(parts: &[&str]) -> String {
    parts.join("/")
}

/// The name a YAML workflow gives itself: its `name`, else its `pipeline` id.
pub(crate) fn yaml_name(yaml: &str) -> ApiResult<String> {
    let doc: Value = serde_norway::from_str(yaml)
        .map_err(|e| ApiError::Validation(format!("a workflow's `yaml` is not YAML: {e}")))?;
    let first = doc.as_array().and_then(|list| list.first()).unwrap_or(&doc);
    first
        .get("name")
        .or_else(|| first.get("pipeline"))
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| {
            ApiError::Validation("a workflow's `yaml` names no `pipeline` (or `name`)".into())
        })
}

/// Prefixes the step to the reason of a failed step, so the caller knows where it
/// stopped.
fn at_step(err: ApiError, kind: &str, key: &str) -> ApiError {
    let at = |m: String| format!("{kind} `{key}`: {m}");
    match err {
        ApiError::Rejected {
            upstream_status,
            message,
            body,
        } => ApiError::Rejected {
            upstream_status,
            message: at(message),
            body,
        },
        ApiError::Remote {
            status,
            message,
            body,
        } => ApiError::Remote {
            status,
            message: at(message),
            body,
        },
        ApiError::Validation(m) => ApiError::Validation(at(m)),
        other => other,
    }
}

struct Run<'a> {
    state: &'a AppState,
    caller: &'a Caller,
    gateway: Gateway,
    account_id: String,
    workspace: Option<String>,
    document: String,
    dry_run: bool,
    key: Vec<u8>,
    records: HashMap<(String, String), Provisioned>,
    /// Object keys the document names, for `prune`.
    named: Vec<(String, String)>,
    steps: Vec<Step>,
}

/// What a step will do, decided before any write.
struct Decision {
    kind: &'static str,
    key: String,
    shown: String,
    action: &'static str,
    fingerprint: String,
    found_id: Option<String>,
    created: bool,
}

impl Decision {
    fn writes(&self, dry_run: bool) -> bool {
        !dry_run && self.action != "unchanged"
    }
}

impl Run<'_> {
    fn fingerprint(&self, kind: &str, key: &str, spec: &Value) -> ApiResult<String> {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.key)
            .map_err(|e| ApiError::Internal(format!("fingerprint key: {e}")))?;
        for part in [kind, key, &spec.to_string()] {
            mac.update(&(part.len() as u64).to_be_bytes());
            mac.update(part.as_bytes());
        }
        Ok(hex::encode(mac.finalize().into_bytes()))
    }

    fn scope(&self, repo: Option<&str>, workflow: Option<&str>) -> ListQuery {
        ListQuery {
            workspace: self.workspace.clone(),
            repo: repo.map(str::to_owned),
            workflow: workflow.map(str::to_owned),
            ..ListQuery::default()
        }
    }

    /// Every record of a list in `scope`, by `field`.
    async fn existing(
        &self,
        resource: Resource,
        scope: &ListQuery,
        field: &str,
    ) -> ApiResult<HashMap<String, Value>> {
        let (all, _) = gateway::every(&self.gateway, resource, scope).await?;
        Ok(all
            .into_iter()
            .filter_map(|r| Some((r.get(field)?.as_str()?.to_owned(), r)))
            .collect())
    }

    /// Create when missing; when present, unchanged if this document applied the same
    /// before, updated if it applied something else, else as the provider shows it.
    fn decide(
        &mut self,
        kind: &'static str,
        parts: &[&str],
        spec: &Value,
        found: Option<&Value>,
        differs: bool,
    ) -> ApiResult<Decision> {
        let key = object_key(parts);
        self.named.push((kind.to_owned(), key.clone()));
        let fingerprint = self.fingerprint(kind, &key, spec)?;
        let found_id = found
            .and_then(|f| f.get("id"))
            .and_then(Value::as_str)
            .map(str::to_owned);
        let record = self.records.get(&(kind.to_owned(), key.clone()));
        let action = match (&found_id, record) {
            (None, _) => "create",
            (Some(id), Some(r)) if r.upstream_id == *id && r.fingerprint == fingerprint => {
                "unchanged"
            }
            (Some(id), Some(r)) if r.upstream_id == *id => "update",
            (Some(_), _) if differs => "update",
            (Some(_), _) => "unchanged",
        };
        Ok(Decision {
            kind,
            shown: shown_key(parts),
            key,
            action,
            fingerprint,
            created: action == "create" || record.is_some_and(|r| r.created),
            found_id,
        })
    }

    /// Records what a step did and adds it to the answer.
    async fn finish(&mut self, d: Decision, id: Option<String>) -> ApiResult<Option<String>> {
        if let (false, Some(id)) = (self.dry_run, &id) {
            self.state
                .store
                .record_provisioned(
                    &self.account_id,
                    &self.document,
                    &Provisioned {
                        kind: d.kind.to_owned(),
                        object_key: d.key,
                        upstream_id: id.clone(),
                        fingerprint: d.fingerprint,
                        created: d.created,
                    },
                )
                .await?;
        }
        self.steps.push(Step {
            kind: d.kind,
            key: d.shown,
            action: d.action,
            id: id.clone(),
            secret: None,
        });
        Ok(id)
    }

    /// Runs the write a decision calls for (none when unchanged, or in a dry run)
    /// through the account's gateway: `f` gets the provider and the object's id
    /// (`None`: create it). The object's id after the step.
    async fn apply<F, Fut>(&self, d: &Decision, f: F) -> ApiResult<Option<String>>
    where
        F: Fn(std::sync::Arc<dyn cigate_core::Provider>, Option<String>) -> Fut,
        Fut: std::future::Future<Output = Result<cigate_core::GetResult, ProviderError>>,
    {
        if !d.writes(self.dry_run) {
            return Ok(d.found_id.clone());
        }
        let found = self
            .gateway
            .call(|p| f(p, d.found_id.clone()))
            .await
            .map_err(|e| at_step(e, d.kind, &d.shown))?;
        Ok(Some(found.record.unified.id().to_owned()))
    }

    async fn repo(&mut self, spec: &RepoSpec, found: Option<&Value>) -> ApiResult<Option<String>> {
        let fingerprinted = serde_json::to_value(RepoFields::of(spec)).unwrap_or(Value::Null);
        let shows = |field: &str, want: &Option<String>| {
            want.as_ref().is_some_and(|w| {
                found.and_then(|f| f.get(field)).and_then(Value::as_str) != Some(w.as_str())
            })
        };
        let differs = shows("name", &spec.display_name)
            || shows("default_branch", &spec.default_branch)
            || shows("visibility", &spec.access);
        let d = self.decide("repo", &[&spec.name], &fingerprinted, found, differs)?;
        let creating = d.found_id.is_none();
        let input = RepoFields::of(spec).input(spec, creating);
        input
            .validate(creating)
            .map_err(|e| at_step(ApiError::Validation(e), "repo", &spec.name))?;
        let scope = self.scope(None, None);
        let id = self
            .apply(&d, |p, id| {
                let (scope, input) = (&scope, &input);
                async move {
                    let w = writes_of(&*p)?;
                    match id {
                        Some(id) => w.update_repo(scope, &id, input).await,
                        None => w.create_repo(scope, input).await,
                    }
                }
            })
            .await?;
        self.finish(d, id).await
    }

    async fn workflow(
        &mut self,
        repo: &str,
        spec: &WorkflowSpec,
        existing: &HashMap<String, Value>,
    ) -> ApiResult<Option<String>> {
        let name = match (&spec.yaml, &spec.name) {
            (Some(yaml), _) => yaml_name(yaml).map_err(|e| at_step(e, "workflow", repo))?,
            (None, Some(name)) => name.clone(),
            (None, None) => {
                return Err(ApiError::Validation(format!(
                    "a workflow of repo `{repo}` has neither `name` nor `yaml`"
                )))
            }
        };
        let input = WorkflowInput {
            name: spec.yaml.is_none().then(|| name.clone()),
            trigger: spec.trigger.clone(),
            branch: spec.branch.clone(),
            refs: spec.refs.clone(),
            cron: spec.cron.clone(),
            timezone: spec.timezone.clone(),
            priority: spec.priority.clone(),
            disabled: spec.disabled,
            yaml: spec.yaml.clone(),
        };
        let found = existing.get(&name);
        input.validate(found.is_none()).map_err(|e| {
            at_step(
                ApiError::Validation(e),
                "workflow",
                &format!("{repo}/{name}"),
            )
        })?;
        let fingerprinted = serde_json::to_value(&input).unwrap_or(Value::Null);
        let differs = spec.yaml.is_some()
            || input
                .refs()
                .is_some_and(|refs| found.and_then(|f| f.get("refs")) != Some(&json!(refs)))
            || spec.trigger.as_ref().is_some_and(|t| {
                found.and_then(|f| f.get("trigger")).and_then(Value::as_str) != Some(t.as_str())
            });
        let d = self.decide("workflow", &[repo, &name], &fingerprinted, found, differs)?;
        let scope = self.scope(Some(repo), None);
        let id = self
            .apply(&d, |p, id| {
                let (scope, input) = (&scope, &input);
                async move {
                    let w = writes_of(&*p)?;
                    match id {
                        Some(id) => w.update_workflow(scope, &id, input).await,
                        None => w.create_workflow(scope, input).await,
                    }
                }
            })
            .await?;
        let id = self.finish(d, id).await?;
        let scope_id = id.clone().unwrap_or_default();
        let parts = ["workflow", repo, name.as_str()];
        self.variables(
            &spec.variables,
            &parts,
            self.scope(Some(repo), Some(&scope_id)),
            id.is_none(),
        )
        .await?;
        Ok(id)
    }

    /// The variables of one scope (`absent`: the scope is still to be created, in a dry
    /// run, so nothing exists in it yet).
    async fn variables(
        &mut self,
        specs: &[VariableSpec],
        scope_parts: &[&str],
        scope: ListQuery,
        absent: bool,
    ) -> ApiResult<()> {
        if specs.is_empty() {
            return Ok(());
        }
        let existing: HashMap<String, Value> = if absent {
            HashMap::new()
        } else {
            let records = self
                .gateway
                .call(|p| {
                    let scope = &scope;
                    async move { writes_of(&*p)?.list_variables(scope).await }
                })
                .await?;
            records
                .into_iter()
                .filter_map(|r| {
                    let v = r.unified.as_variable()?;
                    Some((v.key.clone(), serde_json::to_value(v).ok()?))
                })
                .collect()
        };
        for spec in specs {
            let mut parts = scope_parts.to_vec();
            parts.push(&spec.key);
            let encrypted = spec.encrypted.unwrap_or(false);
            let input = VariableInput {
                key: Some(spec.key.clone()),
                value: Some(spec.value.clone()),
                encrypted: Some(encrypted),
                settable: spec.settable,
                description: spec.description.clone(),
            };
            input
                .validate(true)
                .map_err(|e| at_step(ApiError::Validation(e), "variable", &shown_key(&parts)))?;
            let found = existing.get(&spec.key);
            let text =
                |f: &Value, field: &str| f.get(field).and_then(Value::as_str).map(str::to_owned);
            let differs = found.is_some_and(|f| {
                f.get("encrypted").and_then(Value::as_bool).unwrap_or(false) != encrypted
                    // An encrypted value cannot be read back: without a record of it,
                    // it is written once.
                    || encrypted
                    || text(f, "value").as_deref() != Some(spec.value.expose())
                    || spec.settable.is_some_and(|s| f.get("settable").and_then(Value::as_bool) != Some(s))
                    || spec.description.as_ref().is_some_and(|d| text(f, "description").as_ref() != Some(d))
            });
            let fingerprinted = json!({
                "value": spec.value.expose(), "encrypted": encrypted,
                "settable": spec.settable, "description": spec.description,
            });
            let d = self.decide("variable", &parts, &fingerprinted, found, differs)?;
            let id = self
                .apply(&d, |p, id| {
                    let (scope, input) = (&scope, &input);
                    async move {
                        let w = writes_of(&*p)?;
                        match id {
                            Some(id) => w.update_variable(scope, &id, input).await,
                            None => w.create_variable(scope, input).await,
                        }
                    }
                })
                .await?;
            self.finish(d, id).await?;
        }
        Ok(())
    }

    async fn webhook(&mut self, spec: &WebhookSpec) -> ApiResult<()> {
        let mut found = None;
        let mut after = None;
        loop {
            let page = self
                .state
                .store
                .list_webhooks(&self.caller.environment_id, after.as_deref(), 500)
                .await?;
            found = found.or_else(|| {
                page.iter()
                    .find(|h| {
                        h.target_url == spec.target_url
                            && h.integrated_account_id.as_deref() == Some(self.account_id.as_str())
                    })
                    .cloned()
            });
            match page.last() {
                Some(last) if page.len() == 500 && found.is_none() => after = Some(last.page_key()),
                _ => break,
            }
        }
        let types = spec.event_types.clone().unwrap_or_else(|| vec!["*".into()]);
        let shown = found.as_ref().map(|h| json!({ "id": h.id }));
        let differs = found.as_ref().is_some_and(|h| h.event_types != types);
        let fingerprinted = serde_json::to_value(spec).unwrap_or(Value::Null);
        let d = self.decide(
            "webhook",
            &[&spec.target_url],
            &fingerprinted,
            shown.as_ref(),
            differs,
        )?;
        let mut secret = None;
        let id = match (d.writes(self.dry_run), &found) {
            (false, _) => d.found_id.clone(),
            (true, Some(hook)) => {
                let patch = WebhookPatch {
                    event_types: Some(types),
                    ..WebhookPatch::default()
                };
                self.state
                    .store
                    .update_webhook(&self.caller.environment_id, &hook.id, patch)
                    .await
                    .map_err(crate::routes::webhooks::store_error)?;
                Some(hook.id.clone())
            }
            (true, None) => {
                let (hook, s) = subscribe(
                    self.state,
                    self.caller,
                    CreateWebhook {
                        target_url: spec.target_url.clone(),
                        event_types: Some(types),
                        is_active: Some(true),
                        format: spec.format.clone(),
                        tenant_id: None,
                        integrated_account_id: Some(self.account_id.clone()),
                        workflow: None,
                    },
                )
                .await
                .map_err(|e| at_step(e, "webhook", &spec.target_url))?;
                secret = Some(s.expose().to_owned());
                Some(hook.id)
            }
        };
        self.finish(d, id).await?;
        if let Some(step) = self.steps.last_mut() {
            step.secret = secret;
        }
        Ok(())
    }

    /// Deletes what this document created before and no longer names: variables,
    /// then workflows, then repos, then the webhook.
    async fn prune(&mut self) -> ApiResult<()> {
        let named: std::collections::HashSet<(String, String)> =
            self.named.iter().cloned().collect();
        let mut gone: Vec<Provisioned> = self
            .records
            .values()
            .filter(|r| r.created && !named.contains(&(r.kind.clone(), r.object_key.clone())))
            .cloned()
            .collect();
        let order = |k: &str| match k {
            "variable" => 0,
            "workflow" => 1,
            "repo" => 2,
            _ => 3,
        };
        gone.sort_by_key(|r| (order(&r.kind), r.object_key.clone()));
        for record in gone {
            let parts: Vec<String> = serde_json::from_str(&record.object_key).unwrap_or_default();
            let shown = parts.join("/");
            if !self.dry_run {
                self.delete(&record, &parts)
                    .await
                    .map_err(|e| at_step(e, "delete", &shown))?;
                self.state
                    .store
                    .forget_provisioned(
                        &self.account_id,
                        &self.document,
                        &record.kind,
                        &record.object_key,
                    )
                    .await?;
            }
            let kind = match record.kind.as_str() {
                "variable" => "variable",
                "workflow" => "workflow",
                "repo" => "repo",
                _ => "webhook",
            };
            self.steps.push(Step {
                kind,
                key: shown,
                action: "delete",
                id: Some(record.upstream_id.clone()),
                secret: None,
            });
        }
        Ok(())
    }

    async fn delete(&self, record: &Provisioned, parts: &[String]) -> ApiResult<()> {
        let id = record.upstream_id.clone();
        let part = |i: usize| parts.get(i).map(String::as_str);
        let scope = match (record.kind.as_str(), part(0)) {
            ("variable", Some("repo")) => self.scope(part(1), None),
            ("variable", Some("workflow")) => {
                let wf_key = object_key(&[part(1).unwrap_or(""), part(2).unwrap_or("")]);
                let wf = self
                    .records
                    .get(&("workflow".to_owned(), wf_key))
                    .map(|r| r.upstream_id.clone());
                self.scope(part(1), wf.as_deref())
            }
            ("workflow", _) => self.scope(part(0), None),
            _ => self.scope(None, None),
        };
        if record.kind == "webhook" {
            self.state
                .store
                .delete_webhook(&self.caller.environment_id, &id)
                .await
                .map_err(crate::routes::webhooks::store_error)?;
            return Ok(());
        }
        let kind = record.kind.clone();
        let outcome = self
            .gateway
            .call(|p| {
                let (scope, id, kind) = (&scope, &id, &kind);
                async move {
                    let w = writes_of(&*p)?;
                    match kind.as_str() {
                        "variable" => w.delete_variable(scope, id).await,
                        "workflow" => w.delete_workflow(scope, id).await,
                        _ => w.delete_repo(scope, id).await,
                    }
                }
            })
            .await;
        match outcome {
            // Already gone.
            Err(ApiError::NotFound(_)) | Err(ApiError::Remote { status: 404, .. }) => Ok(()),
            other => other,
        }
    }
}

/// The fields of a repo the fingerprint covers (the password only as given).
#[derive(Serialize)]
struct RepoFields<'a> {
    display_name: &'a Option<String>,
    integration: &'a Option<String>,
    external_repo: &'a Option<String>,
    git_url: &'a Option<String>,
    git_username: &'a Option<String>,
    git_password: Option<&'a str>,
    default_branch: &'a Option<String>,
    access: &'a Option<String>,
    allow_pull_requests: Option<bool>,
}

impl<'a> RepoFields<'a> {
    fn of(spec: &'a RepoSpec) -> Self {
        RepoFields {
            display_name: &spec.display_name,
            integration: &spec.integration,
            external_repo: &spec.external_repo,
            git_url: &spec.git_url,
            git_username: &spec.git_username,
            git_password: spec.git_password.as_ref().map(Secret::expose),
            default_branch: &spec.default_branch,
            access: &spec.access,
            allow_pull_requests: spec.allow_pull_requests,
        }
    }

    /// The unified write: the Git source only on creation (it cannot change).
    fn input(&self, spec: &RepoSpec, creating: bool) -> RepoInput {
        let source = |v: &Option<String>| if creating { v.clone() } else { None };
        RepoInput {
            name: creating.then(|| spec.name.clone()),
            display_name: spec
                .display_name
                .clone()
                .or_else(|| creating.then(|| spec.name.clone())),
            integration: source(&spec.integration),
            external_repo: source(&spec.external_repo),
            git_url: source(&spec.git_url),
            git_username: source(&spec.git_username),
            git_password: if creating {
                spec.git_password.clone()
            } else {
                None
            },
            default_branch: spec.default_branch.clone(),
            access: spec.access.clone(),
            allow_pull_requests: spec.allow_pull_requests,
        }
    }
}

/// The document from a JSON or YAML body.
pub(crate) fn document(headers: &HeaderMap, body: &Bytes) -> ApiResult<Document> {
    let yaml = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.contains("yaml"));
    let doc: Document = if yaml {
        serde_norway::from_slice(body)
            .map_err(|e| ApiError::InvalidBody(format!("the document is not valid: {e}")))?
    } else {
        serde_json::from_slice(body)
            .map_err(|e| ApiError::InvalidBody(format!("the document is not valid: {e}")))?
    };
    if doc.name.trim().is_empty() {
        return Err(ApiError::Validation("`name` must not be empty".into()));
    }
    Ok(doc)
}

#[utoipa::path(post, path = "/unified/ci-cd/provision", tag = crate::openapi::TAG_WRITES, security(("api_token" = [])),
    summary = "Provision repos, workflows, variables and a webhook",
    description = "Applies a document (JSON, or YAML with a YAML `Content-Type`) declaratively: each object is matched by its natural key and created when missing, updated when different, left alone when equal; encrypted values are compared by a keyed fingerprint of what was last applied. Safe to apply again after a failure. `dry_run=true` returns the plan and writes nothing; `prune=true` deletes objects an earlier provision of the same document name created and this one no longer names. Secret values never appear in an answer.",
    params(("integrated_account_id" = String, Query, description = "the linked account"),
        ("workspace" = Option<String>, Query, description = "Buddy workspace domain; optional when the account has one workspace"),
        ("dry_run" = Option<bool>, Query, description = "plan only"),
        ("prune" = Option<bool>, Query, description = "delete what this document created before and no longer names")),
    request_body(content = Document, description = "what the account should have", content_type = "application/json"),
    responses(
        (status = 200, description = "every step in order, with the provider's ids", body = ProvisionAnswer),
        (status = 400, description = "a body that is not a document, a missing or invalid parameter, or Buddy refused a step (its reason in `detail`, prefixed by the step)"),
        (status = 403, description = "Buddy refused: the account's token lacks a scope (`details.missing_scopes`)"),
        (status = 404, description = "no such account or workspace"),
        (status = 422, description = "an invalid object, or Buddy refused a workflow's definition (its reason in `detail`, prefixed by the step)"),
        (status = 502, description = "Buddy failed or could not be reached"),
        (status = 504, description = "Buddy did not answer within the deadline"),
    ))]
pub async fn provision(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    query: QueryPairs,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<(StatusCode, Json<ProvisionAnswer>)> {
    let doc = document(&headers, &body)?;
    let dry_run = query.flag("dry_run")?;
    let prune = query.flag("prune")?;
    let gateway = Gateway::for_query(&state, &caller, &query, API).await?;
    let account = gateway.account();
    let scope = query.list_query(&account.context)?;
    let records = state
        .store
        .provisioned(&account.id, &doc.name)
        .await?
        .into_iter()
        .map(|r| ((r.kind.clone(), r.object_key.clone()), r))
        .collect();
    let mut run = Run {
        state: &state,
        caller: &caller,
        gateway,
        account_id: account.id.clone(),
        workspace: scope.workspace.clone(),
        document: doc.name.clone(),
        dry_run,
        key: state.store.signing_key("provision").await?,
        records,
        named: Vec::new(),
        steps: Vec::new(),
    };
    let repos = run
        .existing(Resource::Repos, &run.scope(None, None), "id")
        .await?;
    for spec in &doc.repos {
        let id = run.repo(spec, repos.get(&spec.name)).await?;
        let absent = id.is_none();
        let workflows = if absent {
            HashMap::new()
        } else {
            run.existing(
                Resource::Workflows,
                &run.scope(Some(&spec.name), None),
                "name",
            )
            .await?
        };
        for wf in &spec.workflows {
            run.workflow(&spec.name, wf, &workflows).await?;
        }
        let repo_scope = run.scope(Some(&spec.name), None);
        run.variables(&spec.variables, &["repo", &spec.name], repo_scope, absent)
            .await?;
    }
    let ws_scope = run.scope(None, None);
    run.variables(&doc.variables, &["workspace"], ws_scope, false)
        .await?;
    if let Some(hook) = &doc.webhook {
        run.webhook(hook).await?;
    }
    if prune {
        run.prune().await?;
    }
    Ok((
        StatusCode::OK,
        Json(ProvisionAnswer {
            name: doc.name,
            dry_run,
            steps: run.steps,
        }),
    ))
}
