//! The simulator's data model. Projects, pipelines and commits are materialised;
//! seeded executions are derived on demand (see `seed::seeded_execution`) and only
//! runs created or changed at run time live in a pipeline's `overlay`.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::config::SeedSpec;
use crate::error::SimError;

#[derive(Debug, Clone)]
pub struct State {
    pub spec: SeedSpec,
    pub seeded_at: DateTime<Utc>,
    pub workspaces: Vec<Workspace>,
    pub next_pipeline_id: u64,
    pub next_action_id: u64,
    pub next_variable_id: u64,
    pub next_webhook_id: u64,
    /// Counter mixed into ids of runs created at run time.
    pub runtime_serial: u64,
    /// Runs that may still change, as (workspace, project, pipeline id, execution id).
    pub active: Vec<ExecKey>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecKey {
    pub workspace: String,
    pub project: String,
    pub pipeline_id: u64,
    pub execution_id: u64,
}

#[derive(Debug, Clone)]
pub struct Workspace {
    pub id: u64,
    pub index: u64,
    pub domain: String,
    pub name: String,
    pub create_date: DateTime<Utc>,
    pub api_enabled: bool,
    pub members: Vec<Member>,
    pub projects: Vec<Project>,
    pub variables: Vec<Variable>,
    pub webhooks: Vec<Webhook>,
}

#[derive(Debug, Clone)]
pub struct Member {
    pub id: u64,
    pub name: String,
    pub email: String,
    pub title: String,
    pub admin: bool,
    pub owner: bool,
}

#[derive(Debug, Clone)]
pub struct Project {
    /// Seed index used to derive data; runtime-created projects get fresh indices.
    pub index: u64,
    pub name: String,
    pub display_name: String,
    pub status: String,
    pub create_date: DateTime<Utc>,
    pub created_by: u64,
    /// `owner/repo` on GitHub when the project is synchronised from GitHub.
    pub github_repo: Option<String>,
    pub default_branch: String,
    pub access: String,
    pub allow_pull_requests: bool,
    pub fetch_submodules: bool,
    pub fetch_submodules_env_key: Option<String>,
    pub update_default_branch_from_external: bool,
    pub without_repository: bool,
    pub repository_size: u64,
    pub commits: Vec<Commit>,
    pub branches: Vec<Branch>,
    pub tags: Vec<Tag>,
    pub pulls: Vec<u64>,
    pub pipelines: Vec<Pipeline>,
}

impl Project {
    pub fn commit(&self, revision: &str) -> Option<&Commit> {
        self.commits.iter().find(|c| c.revision == revision)
    }

    pub fn branch(&self, name: &str) -> Option<&Branch> {
        self.branches.iter().find(|b| b.name == name)
    }

    pub fn pipeline(&self, id: u64) -> Option<&Pipeline> {
        self.pipelines.iter().find(|p| p.id == id)
    }

    pub fn pipeline_mut(&mut self, id: u64) -> Option<&mut Pipeline> {
        self.pipelines.iter_mut().find(|p| p.id == id)
    }

    pub fn head_of(&self, branch: &str) -> Option<&Commit> {
        self.branch(branch)
            .and_then(|b| b.commits.last())
            .and_then(|i| self.commits.get(*i))
    }
}

#[derive(Debug, Clone)]
pub struct Commit {
    pub revision: String,
    pub message: String,
    pub author: u64,
    pub date: DateTime<Utc>,
}

#[derive(Debug, Clone)]
pub struct Branch {
    pub name: String,
    /// Indices into `Project::commits`, oldest first; the last one is the head.
    pub commits: Vec<usize>,
}

#[derive(Debug, Clone)]
pub struct Tag {
    pub name: String,
    pub commit: usize,
}

#[derive(Debug, Clone)]
pub struct Pipeline {
    pub id: u64,
    pub index: u64,
    pub name: String,
    pub identifier: String,
    pub refs: Vec<String>,
    pub events: Value,
    pub trigger_conditions: Value,
    pub priority: String,
    pub create_date: DateTime<Utc>,
    pub creator: u64,
    pub disabled: bool,
    pub paused: bool,
    pub concurrent_pipeline_runs: bool,
    pub execution_message_template: String,
    pub actions: Vec<Action>,
    /// Executions 1..=seeded_count are derived from the seed unless overridden in `overlay`.
    pub seeded_count: u64,
    pub last_id: u64,
    pub overlay: HashMap<u64, Execution>,
    /// Outcomes queued by the control API for the next runs.
    pub scripted_failures: u32,
    /// Fields accepted on create/update that the simulator stores verbatim.
    pub extra: BTreeMap<String, Value>,
}

impl Pipeline {
    /// `on` of the v1.1 model, derived from the current model's events.
    pub fn on(&self) -> &'static str {
        let first = self
            .events
            .as_array()
            .and_then(|e| e.first())
            .and_then(|e| e.get("type"))
            .and_then(Value::as_str);
        match first {
            None => "CLICK",
            Some("SCHEDULE") => "SCHEDULE",
            Some(_) => "EVENT",
        }
    }

    pub fn listens_to_push(&self) -> bool {
        self.events.as_array().is_some_and(|events| {
            events
                .iter()
                .any(|e| e.get("type").and_then(Value::as_str) == Some("PUSH"))
        })
    }
}

#[derive(Debug, Clone)]
pub struct Action {
    pub id: u64,
    pub name: String,
    pub action_type: String,
    pub trigger_time: String,
    pub disabled: bool,
}

#[derive(Debug, Clone)]
pub struct Execution {
    pub id: u64,
    pub hex: String,
    pub status: String,
    pub triggered_on: String,
    pub created: DateTime<Utc>,
    pub start_date: Option<DateTime<Utc>>,
    pub finish_date: Option<DateTime<Utc>>,
    pub priority: String,
    pub refresh: bool,
    pub clear_cache: bool,
    pub comment: String,
    pub branch: Option<String>,
    pub tag: Option<String>,
    pub pull_request: Option<String>,
    pub to_revision: Option<String>,
    pub from_revision: Option<String>,
    pub creator: u64,
    pub variables: Vec<(String, String)>,
    pub delay_until: Option<DateTime<Utc>>,
    /// Index of the action planned to fail, if any.
    pub fail_at: Option<usize>,
    pub terminating_since: Option<DateTime<Utc>>,
    pub actions: Vec<ActionExecution>,
}

impl Execution {
    pub fn is_terminal(&self) -> bool {
        is_terminal(&self.status)
    }
}

pub fn is_terminal(status: &str) -> bool {
    matches!(
        status,
        "SUCCESSFUL" | "FAILED" | "TERMINATED" | "SKIPPED" | "NOT_EXECUTED"
    )
}

#[derive(Debug, Clone)]
pub struct ActionExecution {
    pub hex: String,
    pub action_id: u64,
    pub status: String,
    pub start_date: Option<DateTime<Utc>>,
    pub finish_date: Option<DateTime<Utc>>,
    pub error_message: Option<String>,
    pub log: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct Variable {
    pub id: u64,
    pub key: String,
    pub value: String,
    pub var_type: String,
    pub encrypted: bool,
    pub settable: bool,
    pub description: Option<String>,
    pub project: Option<String>,
    pub pipeline: Option<u64>,
    pub action: Option<u64>,
    pub environment: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Webhook {
    pub id: u64,
    pub target_url: String,
    pub secret_key: Option<String>,
    pub projects: Vec<String>,
    pub events: Vec<String>,
    pub requests: Vec<WebhookRequest>,
}

#[derive(Debug, Clone)]
pub struct WebhookRequest {
    pub delivery_id: u64,
    pub post_date: DateTime<Utc>,
    pub response_status: Option<u16>,
    pub body: String,
}

impl State {
    pub fn workspace(&self, domain: &str) -> Option<&Workspace> {
        self.workspaces.iter().find(|w| w.domain == domain)
    }

    pub fn workspace_mut(&mut self, domain: &str) -> Option<&mut Workspace> {
        self.workspaces.iter_mut().find(|w| w.domain == domain)
    }

    /// A project by path, answering Buddy's 404 for whichever part is missing.
    pub fn find_project(
        &self,
        ws: &str,
        project: &str,
    ) -> Result<(&Workspace, &Project), SimError> {
        let w = self
            .workspace(ws)
            .ok_or_else(|| SimError::not_found("Workspace"))?;
        let p = w
            .project(project)
            .ok_or_else(|| SimError::not_found("Project"))?;
        Ok((w, p))
    }

    /// A pipeline by path, answering Buddy's 404 for whichever part is missing.
    pub fn find_pipeline(
        &self,
        ws: &str,
        project: &str,
        id: u64,
    ) -> Result<(&Workspace, &Project, &Pipeline), SimError> {
        let (w, p) = self.find_project(ws, project)?;
        let pl = p
            .pipeline(id)
            .ok_or_else(|| SimError::not_found("Pipeline"))?;
        Ok((w, p, pl))
    }
}

impl Workspace {
    pub fn project(&self, name: &str) -> Option<&Project> {
        self.projects.iter().find(|p| p.name == name)
    }

    pub fn project_mut(&mut self, name: &str) -> Option<&mut Project> {
        self.projects.iter_mut().find(|p| p.name == name)
    }

    pub fn member(&self, id: u64) -> Option<&Member> {
        self.members.iter().find(|m| m.id == id)
    }

    pub fn owner(&self) -> Option<&Member> {
        self.members.iter().find(|m| m.owner)
    }
}
