//! The write side of the provider contract: running and steering jobs, reading their
//! logs, managing workflows and variables.
//!
//! Kept apart from [`crate::Provider`] so read-only providers stay valid: a provider
//! opts in by answering [`crate::Provider::writes`]. Scoping reuses [`ListQuery`]
//! (`workspace`, `repo`, `workflow`); paging fields are ignored.
//!
//! Values of variables travel as [`Secret`] so no `Debug`, log field or serialization of
//! a request can reveal them; an encrypted variable's value is never part of an answer.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::error::ProviderError;
use crate::provider::{GetResult, ListQuery, Record};
use crate::secret::Secret;

/// A run-time variable of a job run or an approval.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"key": "DEPLOY_ENV", "value": "staging"}))]
pub struct RunVariable {
    pub key: String,
    /// Write-only; redacted wherever the request is printed.
    #[schema(value_type = String)]
    pub value: Secret,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encrypted: Option<bool>,
}

/// What to run: at most one of `branch`, `tag`, `pull_request`; `commit` pins the exact
/// revision (a rollback) and may be combined with `branch`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({
    "branch": "main", "commit": "506a3963507943d6908154f4bc9646e829128a08",
    "comment": "Roll back to the last good release", "clear_cache": false
}))]
pub struct JobRun {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    /// A pull request number (`3`) or name (`pull/3`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pull_request: Option<String>,
    /// An exact commit SHA.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variables: Option<Vec<RunVariable>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clear_cache: Option<bool>,
    /// Run from scratch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh: Option<bool>,
    /// `low`, `normal` or `high`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<String>,
}

impl JobRun {
    /// Checks what can be checked without asking the provider; the message names the
    /// offending field.
    pub fn validate(&self) -> Result<(), String> {
        let refs = [&self.branch, &self.tag, &self.pull_request]
            .iter()
            .filter(|r| r.is_some())
            .count();
        if refs > 1 {
            return Err("give at most one of `branch`, `tag`, `pull_request`".into());
        }
        for (name, value) in [
            ("branch", &self.branch),
            ("tag", &self.tag),
            ("pull_request", &self.pull_request),
        ] {
            if value.as_deref().is_some_and(|v| v.trim().is_empty()) {
                return Err(format!("`{name}` must not be empty"));
            }
        }
        if let Some(commit) = &self.commit {
            let ok =
                (4..=64).contains(&commit.len()) && commit.bytes().all(|b| b.is_ascii_hexdigit());
            if !ok {
                return Err("`commit` must be a commit SHA (4–64 hexadecimal digits)".into());
            }
        }
        if let Some(p) = &self.priority {
            priority_upper(p)?;
        }
        for v in self.variables.iter().flatten() {
            validate_key(&v.key)?;
        }
        Ok(())
    }
}

/// `low|normal|high` (any case) → `LOW|NORMAL|HIGH`.
pub fn priority_upper(p: &str) -> Result<&'static str, String> {
    match p.to_ascii_lowercase().as_str() {
        "low" => Ok("LOW"),
        "normal" => Ok("NORMAL"),
        "high" => Ok("HIGH"),
        _ => Err(format!("`priority` must be low, normal or high, not `{p}`")),
    }
}

fn validate_key(key: &str) -> Result<(), String> {
    let ok = !key.is_empty()
        && key.len() <= 255
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "variable key `{key}` must be 1–255 letters, digits, `_`, `.` or `-`"
        ))
    }
}

/// A change to a running or finished job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobOperation {
    Cancel,
    Retry,
    /// Approves a job waiting for approval; with variables, supplies the variables it
    /// waits for.
    Approve {
        variables: Vec<RunVariable>,
    },
}

impl JobOperation {
    pub fn name(&self) -> &'static str {
        match self {
            JobOperation::Cancel => "cancel",
            JobOperation::Retry => "retry",
            JobOperation::Approve { .. } => "approve",
        }
    }
}

/// The log of one step.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[schema(example = json!({
    "step": "Build application", "step_id": "6836dca490f5896b4bb8e6a7", "status": "completed",
    "conclusion": "passed", "lines": ["$ npm ci", "added 120 packages", "Build finished successfully"]
}))]
pub struct JobLog {
    /// The step's name (its id when it has none).
    pub step: String,
    pub step_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conclusion: Option<String>,
    pub lines: Vec<String>,
}

/// Every step's log at one moment, with the job as seen just before.
#[derive(Debug, Clone, PartialEq)]
pub struct JobLogs {
    pub job: crate::model::Job,
    pub steps: Vec<JobLog>,
}

/// A workflow to create, or the fields of one to change (absent = unchanged).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"name": "Deploy customer-42", "trigger": "push", "branch": "main", "priority": "normal"}))]
pub struct WorkflowInput {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// `manual`, `push` or `schedule`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trigger: Option<String>,
    /// Shorthand for `refs: ["refs/heads/<branch>"]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
    /// Git refs the workflow runs on (`refs/heads/*`, `refs/tags/*`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refs: Option<Vec<String>>,
    /// Cron expression, required for `schedule`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cron: Option<String>,
    /// IANA time zone of `cron` (default UTC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
    /// `low`, `normal` or `high`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disabled: Option<bool>,
    /// The whole workflow as the provider's pipeline YAML (Buddy's `- pipeline: …`),
    /// instead of the fields above.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub yaml: Option<String>,
}

impl WorkflowInput {
    /// `creating` requires a name (or `yaml`); the trigger/branch/refs/cron combination
    /// must make sense; `yaml` comes alone.
    pub fn validate(&self, creating: bool) -> Result<(), String> {
        if let Some(yaml) = &self.yaml {
            if yaml.trim().is_empty() {
                return Err("`yaml` must not be empty".into());
            }
            let alone = WorkflowInput {
                yaml: None,
                ..self.clone()
            } == WorkflowInput::default();
            if !alone {
                return Err(
                    "`yaml` describes the whole workflow: send it without the other fields".into(),
                );
            }
            return Ok(());
        }
        match &self.name {
            Some(n) if n.trim().is_empty() => return Err("`name` must not be empty".into()),
            None if creating => return Err("`name` is required".into()),
            _ => {}
        }
        if self.branch.is_some() && self.refs.is_some() {
            return Err("give `branch` or `refs`, not both".into());
        }
        if self.branch.as_deref().is_some_and(|b| b.trim().is_empty()) {
            return Err("`branch` must not be empty".into());
        }
        if let Some(refs) = &self.refs {
            if refs.is_empty() || refs.iter().any(|r| r.trim().is_empty()) {
                return Err("`refs` must be a non-empty list of refs".into());
            }
        }
        match self.trigger.as_deref() {
            None | Some("manual") | Some("push") => {}
            Some("schedule") => {
                if self
                    .cron
                    .as_deref()
                    .is_none_or(|c| c.split_whitespace().count() < 5)
                {
                    return Err("`schedule` needs `cron` (five fields, e.g. `0 2 * * *`)".into());
                }
            }
            Some(other) => {
                return Err(format!(
                    "`trigger` must be manual, push or schedule, not `{other}`"
                ))
            }
        }
        if self.cron.is_some() && self.trigger.as_deref() != Some("schedule") {
            return Err("`cron` only applies to `trigger: schedule`".into());
        }
        if let Some(p) = &self.priority {
            priority_upper(p)?;
        }
        Ok(())
    }

    /// The refs the workflow should run on, from `branch` or `refs`.
    pub fn refs(&self) -> Option<Vec<String>> {
        match (&self.branch, &self.refs) {
            (Some(b), _) => Some(vec![if b.starts_with("refs/") {
                b.clone()
            } else {
                format!("refs/heads/{b}")
            }]),
            (None, Some(refs)) => Some(refs.clone()),
            (None, None) => None,
        }
    }
}

/// A variable to create, or the fields of one to change (absent = unchanged).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"key": "API_TOKEN", "value": "s3cr3t", "encrypted": true, "settable": false, "description": "deploy token"}))]
pub struct VariableInput {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// Write-only when `encrypted`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub value: Option<Secret>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encrypted: Option<bool>,
    /// May be overridden when a job runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settable: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

impl VariableInput {
    pub fn validate(&self, creating: bool) -> Result<(), String> {
        match &self.key {
            Some(k) => validate_key(k)?,
            None if creating => return Err("`key` is required".into()),
            None => {}
        }
        if creating && self.value.is_none() {
            return Err("`value` is required".into());
        }
        Ok(())
    }
}

/// A workspace to create, where the provider allows it through its API (self-hosted
/// Buddy; Buddy's cloud creates workspaces in its UI only).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"domain": "acme-eu", "name": "Acme EU"}))]
pub struct WorkspaceInput {
    /// The URL handle: letters, digits, `_` and `-`, not starting or ending with `-`.
    pub domain: String,
    /// The display name (default: the domain).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

impl WorkspaceInput {
    pub fn validate(&self) -> Result<(), String> {
        let d = &self.domain;
        let ok = !d.is_empty()
            && d.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            && !d.starts_with('-')
            && !d.ends_with('-');
        if !ok {
            return Err(format!(
                "`domain` `{d}` may hold letters, digits, `-` and `_` only (no leading or trailing `-`)"
            ));
        }
        if self.name.as_deref().is_some_and(|n| n.trim().is_empty()) {
            return Err("`name` must not be empty".into());
        }
        Ok(())
    }
}

/// A repo (Buddy project) to create, or the fields of one to change (absent =
/// unchanged). Its Git source, on creation only: none (the provider hosts the Git
/// repository), a Git integration of the account (`integration` + `external_repo`), or
/// any Git URL (`git_url` with `git_username`/`git_password`, write-only).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"name": "shop-api", "display_name": "Shop API", "integration": "a1b2c3", "external_repo": "acme/shop-api"}))]
pub struct RepoInput {
    /// The id used in paths (a slug); made from `display_name` when left out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The human name; required to create.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    /// A Git integration's id (`GET /unified/ci-cd/integrations`), with `external_repo`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub integration: Option<String>,
    /// The repository at the integration's Git host, e.g. `owner/repo`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_repo: Option<String>,
    /// Any Git repository's URL (instead of an integration).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git_username: Option<String>,
    /// Write-only: never returned or logged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub git_password: Option<Secret>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_branch: Option<String>,
    /// `private` or `public`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access: Option<String>,
    /// Pull-request support (GitHub-backed repos).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_pull_requests: Option<bool>,
}

impl RepoInput {
    /// `creating` requires a display name and allows a Git source; a change may not
    /// move the repo to another Git source.
    pub fn validate(&self, creating: bool) -> Result<(), String> {
        for (field, value) in [
            ("name", &self.name),
            ("display_name", &self.display_name),
            ("default_branch", &self.default_branch),
            ("integration", &self.integration),
            ("external_repo", &self.external_repo),
            ("git_url", &self.git_url),
        ] {
            if value.as_deref().is_some_and(|v| v.trim().is_empty()) {
                return Err(format!("`{field}` must not be empty"));
            }
        }
        if let Some(name) = &self.name {
            let ok = name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
            if !ok || name.starts_with('-') || name.ends_with('-') {
                return Err(format!(
                    "`name` `{name}` may hold letters, digits, `-` and `_` only (no leading or trailing `-`)"
                ));
            }
        }
        if creating && self.display_name.is_none() {
            return Err("`display_name` is required".into());
        }
        let integration = self.integration.is_some() || self.external_repo.is_some();
        let custom =
            self.git_url.is_some() || self.git_username.is_some() || self.git_password.is_some();
        if !creating && (integration || custom) {
            return Err(
                "a repo's Git source is set when it is created; create another repo to change it"
                    .into(),
            );
        }
        if integration && (self.integration.is_none() || self.external_repo.is_none()) {
            return Err("`integration` and `external_repo` go together".into());
        }
        if integration && custom {
            return Err("give `integration` + `external_repo` or `git_url`, not both".into());
        }
        if custom && self.git_url.is_none() {
            return Err("`git_username` and `git_password` need `git_url`".into());
        }
        if let Some(url) = &self.git_url {
            let scheme_ok = ["https://", "ssh://", "git@"]
                .iter()
                .any(|p| url.starts_with(p));
            if !scheme_ok || url.chars().any(char::is_control) {
                return Err(format!(
                    "`git_url` `{url}` is not a Git URL (https://, ssh:// or git@…)"
                ));
            }
        }
        if let Some(access) = &self.access {
            if !matches!(access.as_str(), "private" | "public") {
                return Err(format!(
                    "`access` must be private or public, not `{access}`"
                ));
            }
        }
        Ok(())
    }
}

/// The write operations of a provider bound to one account. Every method may reach the
/// upstream at most once per call for the write itself: no automatic retry of a write.
#[async_trait]
pub trait ProviderWrites: Send + Sync {
    /// Runs a workflow (`scope.workflow`); the new job.
    async fn run_job(&self, scope: &ListQuery, run: &JobRun) -> Result<GetResult, ProviderError>;

    /// Cancels, retries or approves a job; the job after the change. A change the job's
    /// state does not allow is [`ProviderError::Conflict`].
    async fn operate_job(
        &self,
        scope: &ListQuery,
        id: &str,
        operation: &JobOperation,
    ) -> Result<GetResult, ProviderError>;

    /// Every step's log. Steps named in `skip_steps` (ids) are returned without fetching
    /// their lines, so a follower does not re-read finished steps.
    async fn job_logs(
        &self,
        scope: &ListQuery,
        id: &str,
        skip_steps: &[String],
    ) -> Result<JobLogs, ProviderError>;

    async fn create_workflow(
        &self,
        scope: &ListQuery,
        input: &WorkflowInput,
    ) -> Result<GetResult, ProviderError>;

    async fn update_workflow(
        &self,
        scope: &ListQuery,
        id: &str,
        input: &WorkflowInput,
    ) -> Result<GetResult, ProviderError>;

    async fn delete_workflow(&self, scope: &ListQuery, id: &str) -> Result<(), ProviderError>;

    /// Variables of the narrowest scope given (`workflow` > `repo` > `workspace`).
    async fn list_variables(&self, scope: &ListQuery) -> Result<Vec<Record>, ProviderError>;

    async fn get_variable(&self, scope: &ListQuery, id: &str) -> Result<GetResult, ProviderError>;

    /// Creates a variable in the narrowest scope given.
    async fn create_variable(
        &self,
        scope: &ListQuery,
        input: &VariableInput,
    ) -> Result<GetResult, ProviderError>;

    async fn update_variable(
        &self,
        scope: &ListQuery,
        id: &str,
        input: &VariableInput,
    ) -> Result<GetResult, ProviderError>;

    async fn delete_variable(&self, scope: &ListQuery, id: &str) -> Result<(), ProviderError>;

    /// Creates a workspace, where the provider allows it through its API.
    async fn create_workspace(&self, input: &WorkspaceInput) -> Result<GetResult, ProviderError>;

    /// Creates a repo in `scope.workspace`.
    async fn create_repo(
        &self,
        scope: &ListQuery,
        input: &RepoInput,
    ) -> Result<GetResult, ProviderError>;

    async fn update_repo(
        &self,
        scope: &ListQuery,
        id: &str,
        input: &RepoInput,
    ) -> Result<GetResult, ProviderError>;

    async fn delete_repo(&self, scope: &ListQuery, id: &str) -> Result<(), ProviderError>;

    /// The workflow's definition as the provider's pipeline YAML.
    async fn workflow_yaml(&self, scope: &ListQuery, id: &str) -> Result<String, ProviderError>;

    /// The Git integrations of `scope.workspace` a repo can be created from.
    async fn list_integrations(&self, scope: &ListQuery) -> Result<Vec<Record>, ProviderError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_validation() {
        assert!(JobRun::default().validate().is_ok());
        let two = JobRun {
            branch: Some("main".into()),
            tag: Some("v1".into()),
            ..Default::default()
        };
        assert!(two.validate().is_err());
        let rollback = JobRun {
            branch: Some("main".into()),
            commit: Some("506a3963507943d6908154f4bc9646e829128a08".into()),
            ..Default::default()
        };
        assert!(rollback.validate().is_ok());
        let bad = JobRun {
            commit: Some("HEAD; rm".into()),
            ..Default::default()
        };
        assert!(bad.validate().unwrap_err().contains("commit"));
        let prio = JobRun {
            priority: Some("urgent".into()),
            ..Default::default()
        };
        assert!(prio.validate().is_err());
    }

    #[test]
    fn run_bodies_refuse_unknown_fields_and_hide_values() {
        assert!(serde_json::from_str::<JobRun>(r#"{"brnch":"main"}"#).is_err());
        let run: JobRun =
            serde_json::from_str(r#"{"variables":[{"key":"K","value":"plain-secret"}]}"#).unwrap();
        assert!(!format!("{run:?}").contains("plain-secret"));
        assert!(!serde_json::to_string(&run)
            .unwrap()
            .contains("plain-secret"));
    }

    #[test]
    fn workflow_validation_and_refs() {
        let w = WorkflowInput {
            name: Some("x".into()),
            branch: Some("main".into()),
            ..Default::default()
        };
        assert!(w.validate(true).is_ok());
        assert_eq!(w.refs(), Some(vec!["refs/heads/main".to_owned()]));
        assert!(WorkflowInput::default().validate(true).is_err());
        assert!(WorkflowInput::default().validate(false).is_ok());
        let sched = WorkflowInput {
            name: Some("n".into()),
            trigger: Some("schedule".into()),
            ..Default::default()
        };
        assert!(sched.validate(true).unwrap_err().contains("cron"));
        let odd = WorkflowInput {
            trigger: Some("webhook".into()),
            ..Default::default()
        };
        assert!(odd.validate(false).is_err());
    }

    #[test]
    fn repo_validation() {
        let ok = |json: serde_json::Value, creating: bool| {
            serde_json::from_value::<RepoInput>(json)
                .unwrap()
                .validate(creating)
        };
        assert!(ok(serde_json::json!({"display_name": "Shop API"}), true).is_ok());
        assert!(ok(serde_json::json!({"display_name": "Shop", "integration": "a1", "external_repo": "acme/shop"}), true).is_ok());
        assert!(ok(serde_json::json!({"display_name": "Shop", "git_url": "https://git.example/shop.git", "git_username": "u", "git_password": "p"}), true).is_ok());
        assert!(ok(
            serde_json::json!({"access": "public", "allow_pull_requests": true}),
            false
        )
        .is_ok());
        for (bad, creating) in [
            (serde_json::json!({}), true),
            (serde_json::json!({"display_name": " "}), true),
            (
                serde_json::json!({"display_name": "x", "name": "a/b"}),
                true,
            ),
            (serde_json::json!({"display_name": "x", "name": "-a"}), true),
            (
                serde_json::json!({"display_name": "x", "integration": "a1"}),
                true,
            ),
            (
                serde_json::json!({"display_name": "x", "integration": "a1", "external_repo": "o/r", "git_url": "https://g/x"}),
                true,
            ),
            (
                serde_json::json!({"display_name": "x", "git_password": "p"}),
                true,
            ),
            (
                serde_json::json!({"display_name": "x", "git_url": "file:///etc"}),
                true,
            ),
            (
                serde_json::json!({"display_name": "x", "git_url": "http://plain/x"}),
                true,
            ),
            (serde_json::json!({"access": "team"}), false),
            (
                serde_json::json!({"integration": "a1", "external_repo": "o/r"}),
                false,
            ),
        ] {
            assert!(ok(bad.clone(), creating).is_err(), "{bad}");
        }
        assert!(serde_json::from_value::<RepoInput>(
            serde_json::json!({"display_name": "x", "colour": 1})
        )
        .is_err());
        // The password never shows in debug output.
        let input: RepoInput = serde_json::from_value(serde_json::json!({"display_name": "x", "git_url": "https://g/x", "git_password": "hunter2"})).unwrap();
        assert!(!format!("{input:?}").contains("hunter2"));
    }

    #[test]
    fn yaml_comes_alone() {
        let yaml = WorkflowInput {
            yaml: Some("- pipeline: build\n  actions: []\n".into()),
            ..WorkflowInput::default()
        };
        assert!(yaml.validate(true).is_ok());
        let mixed = WorkflowInput {
            name: Some("x".into()),
            ..yaml.clone()
        };
        assert!(mixed.validate(true).is_err());
        let empty = WorkflowInput {
            yaml: Some("  ".into()),
            ..WorkflowInput::default()
        };
        assert!(empty.validate(false).is_err());
    }

    #[test]
    fn variable_validation() {
        let v = VariableInput {
            key: Some("API_URL".into()),
            value: Some(Secret::new("x")),
            ..Default::default()
        };
        assert!(v.validate(true).is_ok());
        let bad = VariableInput {
            key: Some("has space".into()),
            ..Default::default()
        };
        assert!(bad.validate(false).is_err());
        assert!(VariableInput::default().validate(true).is_err());
    }
}
