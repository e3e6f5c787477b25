//! [`ProviderWrites`] for Buddy: runs (`POST .../executions`), operations (`PATCH
//! .../executions/:id` with `CANCEL`/`RETRY`/`APPLY`/`APPLY_VARIABLES`), logs (the
//! execution, then each action execution's `log[]`), pipelines and variables.
//!
//! Every write is one `send_json` call; the client never retries a POST/PATCH that may
//! have reached Buddy, and nothing here retries either.

use async_trait::async_trait;
use cigate_core::model::{variable_scope, workflow_trigger};
use cigate_core::writes::priority_upper;
use cigate_core::{
    GetResult, JobLog, JobLogs, JobOperation, JobRun, ListQuery, ProviderError, ProviderWrites,
    RateLimit, Record, RepoInput, RunVariable, Variable, VariableInput, VariableScope,
    WorkflowInput, WorkspaceInput,
};
use futures::stream::{self, StreamExt, TryStreamExt};
use http::Method;
use serde_json::{json, Map, Value};

use super::{
    numeric_id, pipeline_path, project_path, provider_error, segment, ws_path, BuddyProvider, Call,
    SCOPE_EXECUTION, SCOPE_WORKSPACE,
};
use crate::mapping::{self, JobContext};
use crate::wire;

const SCOPE_RUN: &str = "EXECUTION_RUN";
const SCOPE_MANAGE: &str = "EXECUTION_MANAGE";
const SCOPE_VARIABLE_INFO: &str = "VARIABLE_INFO";
const SCOPE_VARIABLE_ADD: &str = "VARIABLE_ADD";
const SCOPE_VARIABLE_MANAGE: &str = "VARIABLE_MANAGE";
const SCOPE_PROJECT_DELETE: &str = "PROJECT_DELETE";
const SCOPE_INTEGRATION_INFO: &str = "INTEGRATION_INFO";

/// Prefix Buddy puts on the ciphertext it returns for encrypted values.
const CIPHERTEXT_PREFIX: &str = "secure!";

/// Action-execution statuses that have no log yet (or never will).
const NO_LOG_YET: &[&str] = &["INITIAL", "ENQUEUED", "SKIPPED", "NOT_EXECUTED"];

/// Buddy's project body for a create or a change (only the fields given).
fn project_body(input: &RepoInput) -> Value {
    let mut body = serde_json::Map::new();
    let mut put = |key: &str, value: Value| {
        body.insert(key.to_owned(), value);
    };
    if let Some(v) = &input.name {
        put("name", json!(v));
    }
    if let Some(v) = &input.display_name {
        put("display_name", json!(v));
    }
    if let (Some(integration), Some(repo)) = (&input.integration, &input.external_repo) {
        put("integration", json!({ "hash_id": integration }));
        put("external_project_id", json!(repo));
    }
    if let Some(url) = &input.git_url {
        put("custom_repo_url", json!(url));
        if let Some(user) = &input.git_username {
            put("custom_repo_user", json!(user));
        }
        if let Some(pass) = &input.git_password {
            put("custom_repo_pass", json!(pass.expose()));
        }
    }
    if let Some(v) = &input.default_branch {
        put("default_branch", json!(v));
    }
    if let Some(v) = &input.access {
        put("access", json!(v.to_ascii_uppercase()));
    }
    if let Some(v) = input.allow_pull_requests {
        put("allow_pull_requests", json!(v));
    }
    Value::Object(body)
}

fn variables_json(variables: &[RunVariable]) -> Value {
    Value::Array(
        variables
            .iter()
            .map(|v| {
                let mut o = json!({ "key": v.key, "value": v.value.expose() });
                if let Some(e) = v.encrypted {
                    o["encrypted"] = json!(e);
                }
                o
            })
            .collect(),
    )
}

/// The body of `POST .../executions`. An exact `commit` becomes `to_revision` (a
/// rollback), kept beside `branch` so Buddy runs it in that branch's context; without a
/// commit Buddy runs the ref's tip (`HEAD`).
pub fn run_body(run: &JobRun) -> Value {
    let mut body = Map::new();
    let revision = run.commit.clone().unwrap_or_else(|| "HEAD".to_owned());
    body.insert("to_revision".into(), json!({ "revision": revision }));
    if let Some(b) = &run.branch {
        body.insert("branch".into(), json!({ "name": b }));
    }
    if let Some(t) = &run.tag {
        body.insert("tag".into(), json!({ "name": t }));
    }
    if let Some(pr) = &run.pull_request {
        let name = match pr.parse::<u64>() {
            Ok(n) => format!("pull/{n}"),
            Err(_) => pr.clone(),
        };
        body.insert("pull_request".into(), json!({ "name": name }));
    }
    if let Some(c) = &run.comment {
        body.insert("comment".into(), json!(c));
    }
    if let Some(v) = run.clear_cache {
        body.insert("clear_cache".into(), json!(v));
    }
    if let Some(v) = run.refresh {
        body.insert("refresh".into(), json!(v));
    }
    if let Some(p) = run.priority.as_deref().and_then(|p| priority_upper(p).ok()) {
        body.insert("priority".into(), json!(p));
    }
    if let Some(vars) = &run.variables {
        body.insert("variables".into(), variables_json(vars));
    }
    Value::Object(body)
}

/// The body of `PATCH .../executions/:id`.
pub fn operation_body(op: &JobOperation) -> Value {
    match op {
        JobOperation::Cancel => json!({ "operation": "CANCEL" }),
        JobOperation::Retry => json!({ "operation": "RETRY" }),
        JobOperation::Approve { variables } if variables.is_empty() => {
            json!({ "operation": "APPLY" })
        }
        JobOperation::Approve { variables } => {
            json!({ "operation": "APPLY_VARIABLES", "variables": variables_json(variables) })
        }
    }
}

/// `events[]` of a pipeline for a unified trigger (Buddy's current model).
pub fn events_for(
    trigger: &str,
    refs: &[String],
    cron: Option<&str>,
    timezone: Option<&str>,
) -> Value {
    match trigger {
        workflow_trigger::PUSH => json!([{ "type": "PUSH", "refs": refs }]),
        workflow_trigger::SCHEDULE => json!([{
            "type": "SCHEDULE",
            "cron": cron.unwrap_or_default(),
            "timezone": timezone.unwrap_or("UTC"),
        }]),
        _ => json!([]),
    }
}

/// The unified variable of a Buddy variable, and the raw object with any encrypted
/// value (Buddy's `secure!…` ciphertext) removed.
pub fn variable(raw: &Value, workspace: &str) -> (Variable, Value) {
    let encrypted = raw
        .get("encrypted")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let value = raw.get("value").and_then(Value::as_str);
    let hide = encrypted || value.is_some_and(|v| v.starts_with(CIPHERTEXT_PREFIX));
    let mut scrubbed = raw.clone();
    if hide {
        if let Some(o) = scrubbed.as_object_mut() {
            o.remove("value");
        }
    }
    let name_of = |key: &str, field: &str| {
        raw.get(key)
            .and_then(|r| r.get(field))
            .and_then(wire::id_of)
    };
    let project = name_of("project", "name");
    let pipeline = name_of("pipeline", "id");
    let kind = if pipeline.is_some() {
        variable_scope::WORKFLOW.to_owned()
    } else if project.is_some() {
        variable_scope::REPO.to_owned()
    } else if let Some(other) = ["action", "environment"]
        .into_iter()
        .find(|k| raw.get(*k).is_some_and(|v| !v.is_null()))
    {
        other.to_owned()
    } else {
        variable_scope::WORKSPACE.to_owned()
    };
    let v = Variable {
        id: raw.get("id").and_then(wire::id_of).unwrap_or_default(),
        key: raw
            .get("key")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned(),
        value: if hide { None } else { value.map(str::to_owned) },
        encrypted: hide,
        settable: raw.get("settable").and_then(Value::as_bool),
        description: raw
            .get("description")
            .and_then(Value::as_str)
            .filter(|d| !d.is_empty())
            .map(str::to_owned),
        scope: VariableScope {
            kind,
            workspace: Some(workspace.to_owned()),
            repo: project,
            workflow: pipeline,
        },
        remote_data: crate::mapping::raw_data(&scrubbed),
    };
    (v, scrubbed)
}

fn variable_record(raw: &Value, workspace: &str) -> Record {
    let (v, scrubbed) = variable(raw, workspace);
    Record::new(&v, scrubbed)
}

/// A Buddy 4xx on an operation is the job's state refusing it (Buddy answers 400 for
/// "not allowed for an execution with status …"); scope and lookup failures keep their
/// own meaning.
fn operation_error(err: ProviderError) -> ProviderError {
    match err {
        ProviderError::Upstream {
            status: status @ (400 | 409 | 422),
            message,
            body,
            missing_scope: None,
        } => ProviderError::Conflict {
            status,
            message,
            body,
        },
        other => other,
    }
}

fn rate_of(up: &crate::client::Upstream) -> Option<RateLimit> {
    (!up.rate_limit.is_empty()).then_some(RateLimit {
        limit: up.rate_limit.limit,
        remaining: up.rate_limit.remaining,
        reset: up.rate_limit.reset,
    })
}

/// Where a variable request lands.
struct VarScope {
    workspace: String,
    repo: Option<String>,
    workflow: Option<String>,
}

impl VarScope {
    fn kind(&self) -> &'static str {
        if self.workflow.is_some() {
            variable_scope::WORKFLOW
        } else if self.repo.is_some() {
            variable_scope::REPO
        } else {
            variable_scope::WORKSPACE
        }
    }
}

impl BuddyProvider {
    /// One write to Buddy; 2xx body and rate-limit state.
    pub(crate) async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        scope: &'static str,
    ) -> Result<(Value, Option<RateLimit>), ProviderError> {
        let up = self
            .client
            .send_json(method, path, &[], body)
            .await
            .map_err(|e| provider_error(e, scope))?;
        let rate = rate_of(&up);
        Ok((up.body, rate))
    }

    /// Workspace, project and pipeline of a job-level request, all required.
    async fn job_scope(
        &self,
        call: &Call<'_>,
        scope: &ListQuery,
    ) -> Result<(String, String, String), ProviderError> {
        let s = self.scope(call, scope, Some("project"), true).await?;
        let repo = s.repo.unwrap_or_default();
        let workflow = numeric_id(s.workflow.as_deref().unwrap_or_default(), "workflow")?;
        Ok((s.workspace, repo, workflow))
    }

    /// Sends pipeline YAML as Buddy takes it (base64 in `{"yaml"}`). Buddy's refusal of
    /// the definition (400/422) is the caller's to fix: [`ProviderError::Rejected`].
    async fn send_yaml(
        &self,
        method: Method,
        path: &str,
        yaml: &str,
    ) -> Result<(Value, Option<RateLimit>), ProviderError> {
        use base64::Engine;
        let body = json!({ "yaml": base64::engine::general_purpose::STANDARD.encode(yaml) });
        match self.send(method, path, Some(&body), SCOPE_MANAGE).await {
            Err(ProviderError::Upstream {
                status: status @ (400 | 422),
                message,
                body,
                missing_scope: None,
            }) => Err(ProviderError::Rejected {
                status,
                message,
                body,
            }),
            other => other,
        }
    }

    /// The workflow a YAML write made: Buddy's answer when it is the pipeline, else the
    /// pipeline read again (by `id`, or the answer's).
    async fn yaml_answer(
        &self,
        call: &Call<'_>,
        ws: &str,
        repo: &str,
        id: Option<&str>,
        (raw, rate): (Value, Option<RateLimit>),
    ) -> Result<GetResult, ProviderError> {
        let answered_id = raw
            .get("id")
            .map(|v| v.to_string().trim_matches('"').to_owned());
        let raw = match (raw.get("name").is_some(), answered_id.as_deref().or(id)) {
            (true, _) => raw,
            (false, Some(id)) => self.pipeline_raw(call, ws, repo, id).await?,
            (false, None) => raw,
        };
        Ok(GetResult {
            record: Record::new(
                &mapping::workflow(&wire::parse(&raw), Some(ws), Some(repo), &raw),
                raw,
            ),
            rate_limit: rate,
        })
    }

    fn repo_record(ws: &str, raw: Value, rate: Option<RateLimit>) -> GetResult {
        GetResult {
            record: Record::new(&mapping::repo(&wire::parse(&raw), Some(ws), &raw), raw),
            rate_limit: rate,
        }
    }

    fn job_record(ws: &str, repo: &str, workflow: &str, raw: Value) -> Record {
        let ctx = JobContext {
            workspace: Some(ws.to_owned()),
            repo: Some(repo.to_owned()),
            workflow: Some(workflow.to_owned()),
            workflow_name: None,
        };
        Record::new(&mapping::job(&wire::parse(&raw), &ctx, &raw), raw)
    }

    async fn var_scope(
        &self,
        call: &Call<'_>,
        scope: &ListQuery,
    ) -> Result<VarScope, ProviderError> {
        let s = self.scope(call, scope, None, false).await?;
        if s.workflow.is_some() && s.repo.is_none() {
            return Err(ProviderError::MissingParameter(vec!["project".into()]));
        }
        let workflow = s
            .workflow
            .as_deref()
            .map(|w| numeric_id(w, "workflow"))
            .transpose()?;
        Ok(VarScope {
            workspace: s.workspace,
            repo: s.repo,
            workflow,
        })
    }

    /// The current pipeline, for updates that change its trigger or refs.
    async fn pipeline_raw(
        &self,
        call: &Call<'_>,
        ws: &str,
        repo: &str,
        id: &str,
    ) -> Result<Value, ProviderError> {
        call.get(&pipeline_path(ws, repo, id), &[], SCOPE_EXECUTION)
            .await
    }

    /// The pipeline body for a create (`current` = None) or an update.
    async fn pipeline_body(
        &self,
        call: &Call<'_>,
        ws: &str,
        repo: &str,
        input: &WorkflowInput,
        current: Option<&Value>,
    ) -> Result<Value, ProviderError> {
        let mut body = Map::new();
        if let Some(n) = &input.name {
            body.insert("name".into(), json!(n.trim()));
        }
        if let Some(p) = input
            .priority
            .as_deref()
            .and_then(|p| priority_upper(p).ok())
        {
            body.insert("priority".into(), json!(p));
        }
        if let Some(d) = input.disabled {
            body.insert("disabled".into(), json!(d));
        }
        let new_refs = input.refs();
        if let Some(refs) = &new_refs {
            body.insert("refs".into(), json!(refs));
        }
        let touches_events = input.trigger.is_some() || input.cron.is_some() || new_refs.is_some();
        if current.is_none() || touches_events {
            let parsed: Option<wire::Pipeline> = current.map(wire::parse);
            let trigger = input
                .trigger
                .clone()
                .or_else(|| parsed.as_ref().map(mapping::workflow_trigger_of))
                .unwrap_or_else(|| workflow_trigger::MANUAL.to_owned());
            let refs = match (&new_refs, &parsed) {
                (Some(r), _) => r.clone(),
                (None, Some(p)) => p.refs.clone().unwrap_or_default(),
                (None, None) => Vec::new(),
            };
            let refs = if refs.is_empty() && trigger == workflow_trigger::PUSH {
                let project = call
                    .get(&project_path(ws, repo), &[], SCOPE_WORKSPACE)
                    .await?;
                let branch = wire::parse::<wire::Project>(&project)
                    .default_branch
                    .unwrap_or_else(|| "main".to_owned());
                let refs = vec![format!("refs/heads/{branch}")];
                body.insert("refs".into(), json!(refs));
                refs
            } else {
                refs
            };
            let existing_cron = parsed
                .as_ref()
                .and_then(|p| p.events.iter().flatten().find_map(|e| e.cron.clone()));
            let cron = input.cron.clone().or(existing_cron);
            if trigger == workflow_trigger::SCHEDULE && cron.is_none() {
                return Err(ProviderError::InvalidParameter {
                    name: "cron".into(),
                    message: "a scheduled workflow needs `cron`".into(),
                });
            }
            if known_trigger(&trigger) {
                body.insert(
                    "events".into(),
                    events_for(&trigger, &refs, cron.as_deref(), input.timezone.as_deref()),
                );
            }
        }
        Ok(Value::Object(body))
    }
}

fn known_trigger(t: &str) -> bool {
    matches!(
        t,
        workflow_trigger::MANUAL | workflow_trigger::PUSH | workflow_trigger::SCHEDULE
    )
}

#[async_trait]
impl ProviderWrites for BuddyProvider {
    async fn run_job(&self, scope: &ListQuery, run: &JobRun) -> Result<GetResult, ProviderError> {
        let call = Call::new(self, scope);
        let (ws, repo, workflow) = self.job_scope(&call, scope).await?;
        let path = format!("{}/executions", pipeline_path(&ws, &repo, &workflow));
        let (raw, rate) = self
            .send(Method::POST, &path, Some(&run_body(run)), SCOPE_RUN)
            .await?;
        Ok(GetResult {
            record: Self::job_record(&ws, &repo, &workflow, raw),
            rate_limit: rate,
        })
    }

    async fn operate_job(
        &self,
        scope: &ListQuery,
        id: &str,
        operation: &JobOperation,
    ) -> Result<GetResult, ProviderError> {
        let call = Call::new(self, scope);
        let (ws, repo, workflow) = self.job_scope(&call, scope).await?;
        let id = numeric_id(id, "job")?;
        let path = format!("{}/executions/{id}", pipeline_path(&ws, &repo, &workflow));
        let (raw, rate) = self
            .send(
                Method::PATCH,
                &path,
                Some(&operation_body(operation)),
                SCOPE_RUN,
            )
            .await
            .map_err(operation_error)?;
        Ok(GetResult {
            record: Self::job_record(&ws, &repo, &workflow, raw),
            rate_limit: rate,
        })
    }

    async fn job_logs(
        &self,
        scope: &ListQuery,
        id: &str,
        skip_steps: &[String],
    ) -> Result<JobLogs, ProviderError> {
        let call = Call::new(self, scope);
        let (ws, repo, workflow) = self.job_scope(&call, scope).await?;
        let id = numeric_id(id, "job")?;
        let base = format!("{}/executions/{id}", pipeline_path(&ws, &repo, &workflow));
        let raw = call.get(&base, &[], SCOPE_EXECUTION).await?;
        let execution: wire::Execution = wire::parse(&raw);
        let job = mapping::job(
            &execution,
            &JobContext {
                workspace: Some(ws.clone()),
                repo: Some(repo.clone()),
                workflow: Some(workflow.clone()),
                workflow_name: None,
            },
            &raw,
        );
        let actions = execution.action_executions.clone().unwrap_or_default();
        let call = &call;
        let base = &base;
        let steps: Vec<JobLog> = stream::iter(actions)
            .map(|a| async move {
                let step = mapping::step(&a);
                let status = a.status.as_deref().unwrap_or_default();
                let fetch = !skip_steps.contains(&step.id)
                    && !NO_LOG_YET.contains(&status)
                    && !step.id.is_empty();
                let lines = if fetch {
                    let path = match (
                        &a.action_execution_id,
                        a.action.as_ref().and_then(|x| x.id.clone()),
                    ) {
                        (Some(hex), _) => format!("{base}/action_executions/{}", segment(hex)),
                        (None, Some(action)) => format!("{base}/action/{}", segment(&action)),
                        (None, None) => return Ok(None),
                    };
                    let detail = call.get(&path, &[], SCOPE_EXECUTION).await?;
                    detail
                        .get("log")
                        .and_then(Value::as_array)
                        .map(|l| {
                            l.iter()
                                .map(|line| match line {
                                    Value::String(s) => s.clone(),
                                    other => other.to_string(),
                                })
                                .collect()
                        })
                        .unwrap_or_default()
                } else {
                    Vec::new()
                };
                Ok::<_, ProviderError>(Some(JobLog {
                    step: step.name.clone().unwrap_or_else(|| step.id.clone()),
                    step_id: step.id,
                    status: step.status,
                    conclusion: step.conclusion,
                    lines,
                }))
            })
            .buffered(self.concurrency)
            .try_filter_map(|s| async move { Ok(s) })
            .try_collect()
            .await?;
        Ok(JobLogs { job, steps })
    }

    async fn create_workflow(
        &self,
        scope: &ListQuery,
        input: &WorkflowInput,
    ) -> Result<GetResult, ProviderError> {
        let call = Call::new(self, scope);
        let s = self.scope(&call, scope, Some("repo"), false).await?;
        let repo = s.repo.unwrap_or_default();
        if let Some(yaml) = &input.yaml {
            let path = format!("{}/pipelines/yaml", project_path(&s.workspace, &repo));
            let raw = self.send_yaml(Method::POST, &path, yaml).await?;
            return self
                .yaml_answer(&call, &s.workspace, &repo, None, raw)
                .await;
        }
        let body = self
            .pipeline_body(&call, &s.workspace, &repo, input, None)
            .await?;
        let path = format!("{}/pipelines", project_path(&s.workspace, &repo));
        let (raw, rate) = self
            .send(Method::POST, &path, Some(&body), SCOPE_MANAGE)
            .await?;
        Ok(GetResult {
            record: Record::new(
                &mapping::workflow(&wire::parse(&raw), Some(&s.workspace), Some(&repo), &raw),
                raw,
            ),
            rate_limit: rate,
        })
    }

    async fn update_workflow(
        &self,
        scope: &ListQuery,
        id: &str,
        input: &WorkflowInput,
    ) -> Result<GetResult, ProviderError> {
        let call = Call::new(self, scope);
        let s = self.scope(&call, scope, Some("repo"), false).await?;
        let repo = s.repo.unwrap_or_default();
        let id = numeric_id(id, "workflow")?;
        if let Some(yaml) = &input.yaml {
            let path = format!("{}/yaml", pipeline_path(&s.workspace, &repo, &id));
            let raw = self.send_yaml(Method::PATCH, &path, yaml).await?;
            return self
                .yaml_answer(&call, &s.workspace, &repo, Some(&id), raw)
                .await;
        }
        let needs_current =
            input.trigger.is_some() || input.cron.is_some() || input.refs().is_some();
        let current = if needs_current {
            Some(self.pipeline_raw(&call, &s.workspace, &repo, &id).await?)
        } else {
            None
        };
        // Without event-related changes the pipeline need not be read first.
        let unchanged = json!({});
        let body = self
            .pipeline_body(
                &call,
                &s.workspace,
                &repo,
                input,
                Some(current.as_ref().unwrap_or(&unchanged)),
            )
            .await?;
        let path = pipeline_path(&s.workspace, &repo, &id);
        let (raw, rate) = self
            .send(Method::PATCH, &path, Some(&body), SCOPE_MANAGE)
            .await?;
        Ok(GetResult {
            record: Record::new(
                &mapping::workflow(&wire::parse(&raw), Some(&s.workspace), Some(&repo), &raw),
                raw,
            ),
            rate_limit: rate,
        })
    }

    async fn delete_workflow(&self, scope: &ListQuery, id: &str) -> Result<(), ProviderError> {
        let call = Call::new(self, scope);
        let s = self.scope(&call, scope, Some("repo"), false).await?;
        let repo = s.repo.unwrap_or_default();
        let id = numeric_id(id, "workflow")?;
        self.send(
            Method::DELETE,
            &pipeline_path(&s.workspace, &repo, &id),
            None,
            SCOPE_MANAGE,
        )
        .await?;
        Ok(())
    }

    async fn list_variables(&self, scope: &ListQuery) -> Result<Vec<Record>, ProviderError> {
        let call = Call::new(self, scope);
        let vs = self.var_scope(&call, scope).await?;
        let mut params = Vec::new();
        if let Some(repo) = &vs.repo {
            params.push(("projectName", repo.clone()));
        }
        if let Some(w) = &vs.workflow {
            params.push(("pipelineId", w.clone()));
        }
        let body = call
            .get(
                &format!("{}/variables", ws_path(&vs.workspace)),
                &params,
                SCOPE_VARIABLE_INFO,
            )
            .await?;
        let kind = vs.kind();
        Ok(wire::list_items(&body, "variables")
            .iter()
            .map(|raw| variable_record(raw, &vs.workspace))
            .filter(|r| {
                // Buddy's filters are inclusive of narrower scopes; keep the exact one.
                r.unified
                    .get("scope")
                    .and_then(|s| s.get("type"))
                    .and_then(Value::as_str)
                    == Some(kind)
            })
            .collect())
    }

    async fn get_variable(&self, scope: &ListQuery, id: &str) -> Result<GetResult, ProviderError> {
        let call = Call::new(self, scope);
        let s = self.scope(&call, scope, None, false).await?;
        let id = numeric_id(id, "variable")?;
        let raw = call
            .get(
                &format!("{}/variables/{id}", ws_path(&s.workspace)),
                &[],
                SCOPE_VARIABLE_INFO,
            )
            .await?;
        Ok(GetResult {
            record: variable_record(&raw, &s.workspace),
            rate_limit: call.rate_limit(),
        })
    }

    async fn create_variable(
        &self,
        scope: &ListQuery,
        input: &VariableInput,
    ) -> Result<GetResult, ProviderError> {
        let call = Call::new(self, scope);
        let vs = self.var_scope(&call, scope).await?;
        let mut body = variable_body(input);
        body["type"] = json!("VAR");
        // A pipeline's variable names its project too (pipeline ids live under one).
        if let Some(repo) = &vs.repo {
            body["project"] = json!({ "name": repo });
        }
        if let Some(w) = &vs.workflow {
            let id: u64 = w
                .parse()
                .map_err(|_| ProviderError::NotFound(format!("workflow `{w}`")))?;
            body["pipeline"] = json!({ "id": id });
        }
        let (raw, rate) = self
            .send(
                Method::POST,
                &format!("{}/variables", ws_path(&vs.workspace)),
                Some(&body),
                SCOPE_VARIABLE_ADD,
            )
            .await?;
        Ok(GetResult {
            record: variable_record(&raw, &vs.workspace),
            rate_limit: rate,
        })
    }

    async fn update_variable(
        &self,
        scope: &ListQuery,
        id: &str,
        input: &VariableInput,
    ) -> Result<GetResult, ProviderError> {
        let call = Call::new(self, scope);
        let s = self.scope(&call, scope, None, false).await?;
        let id = numeric_id(id, "variable")?;
        let (raw, rate) = self
            .send(
                Method::PATCH,
                &format!("{}/variables/{id}", ws_path(&s.workspace)),
                Some(&variable_body(input)),
                SCOPE_VARIABLE_MANAGE,
            )
            .await?;
        Ok(GetResult {
            record: variable_record(&raw, &s.workspace),
            rate_limit: rate,
        })
    }

    async fn delete_variable(&self, scope: &ListQuery, id: &str) -> Result<(), ProviderError> {
        let call = Call::new(self, scope);
        let s = self.scope(&call, scope, None, false).await?;
        let id = numeric_id(id, "variable")?;
        self.send(
            Method::DELETE,
            &format!("{}/variables/{id}", ws_path(&s.workspace)),
            None,
            SCOPE_VARIABLE_MANAGE,
        )
        .await?;
        Ok(())
    }

    async fn create_workspace(&self, input: &WorkspaceInput) -> Result<GetResult, ProviderError> {
        if crate::base_url::Region::of(self.client.base_url())
            != crate::base_url::Region::SelfHosted
        {
            return Err(ProviderError::NotAllowed(
                "Buddy's cloud creates workspaces in its web app only (app.buddy.works, or \
                 app.eu.buddy.works): create the workspace there and it appears in this \
                 account at once; self-hosted Buddy creates them through the API"
                    .into(),
            ));
        }
        let mut body = json!({ "domain": input.domain });
        body["name"] = json!(input.name.as_deref().unwrap_or(&input.domain));
        let (raw, rate) = self
            .send(Method::POST, "/workspaces", Some(&body), SCOPE_WORKSPACE)
            .await?;
        Ok(GetResult {
            record: Record::new(&mapping::workspace(&wire::parse(&raw), &raw), raw),
            rate_limit: rate,
        })
    }

    async fn create_repo(
        &self,
        scope: &ListQuery,
        input: &RepoInput,
    ) -> Result<GetResult, ProviderError> {
        let call = Call::new(self, scope);
        let s = self.scope(&call, scope, None, false).await?;
        let body = project_body(input);
        let path = format!("{}/projects", ws_path(&s.workspace));
        let (raw, rate) = self
            .send(Method::POST, &path, Some(&body), SCOPE_WORKSPACE)
            .await?;
        Ok(Self::repo_record(&s.workspace, raw, rate))
    }

    async fn update_repo(
        &self,
        scope: &ListQuery,
        id: &str,
        input: &RepoInput,
    ) -> Result<GetResult, ProviderError> {
        let call = Call::new(self, scope);
        let s = self.scope(&call, scope, None, false).await?;
        let body = project_body(input);
        let (raw, rate) = self
            .send(
                Method::PATCH,
                &project_path(&s.workspace, id),
                Some(&body),
                SCOPE_WORKSPACE,
            )
            .await?;
        Ok(Self::repo_record(&s.workspace, raw, rate))
    }

    async fn delete_repo(&self, scope: &ListQuery, id: &str) -> Result<(), ProviderError> {
        let call = Call::new(self, scope);
        let s = self.scope(&call, scope, None, false).await?;
        self.send(
            Method::DELETE,
            &project_path(&s.workspace, id),
            None,
            SCOPE_PROJECT_DELETE,
        )
        .await?;
        Ok(())
    }

    async fn workflow_yaml(&self, scope: &ListQuery, id: &str) -> Result<String, ProviderError> {
        use base64::Engine;
        let call = Call::new(self, scope);
        let s = self.scope(&call, scope, Some("repo"), false).await?;
        let repo = s.repo.unwrap_or_default();
        let id = numeric_id(id, "workflow")?;
        let path = pipeline_path(&s.workspace, &repo, &id);
        // Today's export, then the older `?yaml=true` form of the same.
        let body = match call
            .get(&format!("{path}/yaml"), &[], SCOPE_EXECUTION)
            .await
        {
            Err(ProviderError::Upstream { status: 404, .. }) => {
                call.get(&path, &[("yaml", "true".to_owned())], SCOPE_EXECUTION)
                    .await?
            }
            other => other?,
        };
        let encoded = body.get("yaml").and_then(Value::as_str).ok_or_else(|| {
            ProviderError::Unsupported("this Buddy does not export the pipeline as YAML".into())
        })?;
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(encoded.trim())
            .ok()
            .and_then(|bytes| String::from_utf8(bytes).ok());
        // Some answers carry the YAML as it is rather than in base64.
        Ok(decoded.unwrap_or_else(|| encoded.to_owned()))
    }

    async fn list_integrations(&self, scope: &ListQuery) -> Result<Vec<Record>, ProviderError> {
        let call = Call::new(self, scope);
        let s = self.scope(&call, scope, None, false).await?;
        let body = call
            .get(
                &format!("{}/integrations", ws_path(&s.workspace)),
                &[],
                SCOPE_INTEGRATION_INFO,
            )
            .await?;
        Ok(body
            .get("integrations")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|raw| {
                let integration = mapping::integration(raw)?;
                Some(Record::new(&integration, raw.clone()))
            })
            .collect())
    }
}

/// The fields of a variable create/update that were given.
fn variable_body(input: &VariableInput) -> Value {
    let mut body = Map::new();
    if let Some(k) = &input.key {
        body.insert("key".into(), json!(k));
    }
    if let Some(v) = &input.value {
        body.insert("value".into(), json!(v.expose()));
    }
    if let Some(e) = input.encrypted {
        body.insert("encrypted".into(), json!(e));
    }
    if let Some(s) = input.settable {
        body.insert("settable".into(), json!(s));
    }
    if let Some(d) = &input.description {
        body.insert("description".into(), json!(d));
    }
    Value::Object(body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use cigate_core::Secret;

    #[test]
    fn rollback_pins_the_exact_revision_and_keeps_the_branch() {
        let sha = "506a3963507943d6908154f4bc9646e829128a08";
        let body = run_body(&JobRun {
            branch: Some("main".into()),
            commit: Some(sha.into()),
            comment: Some("rollback".into()),
            ..Default::default()
        });
        assert_eq!(
            body,
            json!({"to_revision": {"revision": sha}, "branch": {"name": "main"}, "comment": "rollback"})
        );
    }

    #[test]
    fn plain_runs_use_head_and_map_every_option() {
        let body = run_body(&JobRun {
            pull_request: Some("3".into()),
            clear_cache: Some(true),
            refresh: Some(false),
            priority: Some("high".into()),
            variables: Some(vec![RunVariable {
                key: "K".into(),
                value: Secret::new("v"),
                encrypted: Some(true),
            }]),
            ..Default::default()
        });
        assert_eq!(body["to_revision"], json!({"revision": "HEAD"}));
        assert_eq!(body["pull_request"], json!({"name": "pull/3"}));
        assert_eq!(body["clear_cache"], json!(true));
        assert_eq!(body["refresh"], json!(false));
        assert_eq!(body["priority"], json!("HIGH"));
        assert_eq!(
            body["variables"],
            json!([{"key": "K", "value": "v", "encrypted": true}])
        );
        assert!(body.get("branch").is_none());
        let tag = run_body(&JobRun {
            tag: Some("v1.2.0".into()),
            ..Default::default()
        });
        assert_eq!(tag["tag"], json!({"name": "v1.2.0"}));
    }

    #[test]
    fn operations() {
        assert_eq!(
            operation_body(&JobOperation::Cancel),
            json!({"operation": "CANCEL"})
        );
        assert_eq!(
            operation_body(&JobOperation::Retry),
            json!({"operation": "RETRY"})
        );
        assert_eq!(
            operation_body(&JobOperation::Approve { variables: vec![] }),
            json!({"operation": "APPLY"})
        );
        let with = operation_body(&JobOperation::Approve {
            variables: vec![RunVariable {
                key: "VERSION".into(),
                value: Secret::new("1.2.3"),
                encrypted: None,
            }],
        });
        assert_eq!(
            with,
            json!({"operation": "APPLY_VARIABLES", "variables": [{"key": "VERSION", "value": "1.2.3"}]})
        );
    }

    #[test]
    fn state_refusals_become_conflicts() {
        let err = operation_error(ProviderError::Upstream {
            status: 400,
            message: "Operation CANCEL is not allowed for an execution with status SUCCESSFUL."
                .into(),
            body: json!({}),
            missing_scope: None,
        });
        assert!(matches!(err, ProviderError::Conflict { status: 400, .. }));
        let scope = operation_error(ProviderError::Upstream {
            status: 403,
            message: "Insufficient scope".into(),
            body: json!({}),
            missing_scope: Some("EXECUTION_RUN".into()),
        });
        assert!(matches!(scope, ProviderError::Upstream { status: 403, .. }));
    }

    #[test]
    fn events_per_trigger() {
        let refs = vec!["refs/heads/main".to_owned()];
        assert_eq!(events_for("manual", &refs, None, None), json!([]));
        assert_eq!(
            events_for("push", &refs, None, None),
            json!([{"type": "PUSH", "refs": ["refs/heads/main"]}])
        );
        assert_eq!(
            events_for("schedule", &refs, Some("0 2 * * *"), None),
            json!([{"type": "SCHEDULE", "cron": "0 2 * * *", "timezone": "UTC"}])
        );
    }

    #[test]
    fn encrypted_values_are_dropped_everywhere() {
        let raw = json!({"id": 12, "key": "TOKEN", "value": "secure!abc=.def==", "encrypted": true,
            "settable": false, "description": null, "project": {"name": "web"}, "pipeline": null});
        let (v, scrubbed) = variable(&raw, "acme");
        assert_eq!(v.value, None);
        assert!(v.encrypted);
        assert_eq!(v.scope.kind, "repo");
        assert_eq!(v.scope.repo.as_deref(), Some("web"));
        let out = serde_json::to_string(&Record::new(&v, scrubbed.clone()).unified).unwrap();
        assert!(!out.contains("secure!"), "{out}");
        assert!(!scrubbed.to_string().contains("secure!"));
        let plain = json!({"id": 13, "key": "URL", "value": "https://x", "encrypted": false,
            "pipeline": {"id": 7}});
        let (v, _) = variable(&plain, "acme");
        assert_eq!(v.value.as_deref(), Some("https://x"));
        assert_eq!(v.scope.kind, "workflow");
        assert_eq!(v.scope.workflow.as_deref(), Some("7"));
    }
}
