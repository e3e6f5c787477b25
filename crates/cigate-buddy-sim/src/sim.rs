//! `Sim`: the shared simulator state and its in-process control surface.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use parking_lot::{Mutex, RwLock};
use serde_json::{json, Value};
use tokio::sync::mpsc;

use crate::auth::{TokenInfo, TokenRegistry, TokenSpec, ALL_SCOPES};
use crate::clock::{iso, Clock};
use crate::config::{RateLimitPolicy, RateLimitSpec, SeedSpec, SimConfig};
use crate::error::SimError;
use crate::executions::{self, ExecEvent, Timing};
use crate::faults::{FaultSpec, Faults};
use crate::oauth::OAuthStore;
use crate::prng::hex_id;
use crate::ratelimit::RateLimiter;
use crate::render::{self, Urls};
use crate::seed;
use crate::state::{
    ActionExecution, Branch, Commit, ExecKey, Execution, Pipeline, Project, State, WebhookRequest,
    Workspace,
};
use crate::webhooks::Delivery;

/// Cheap handle on a running simulator.
#[derive(Clone)]
pub struct Sim {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub config: SimConfig,
    pub urls: RwLock<Urls>,
    pub clock: Clock,
    pub state: Mutex<State>,
    pub tokens: Mutex<TokenRegistry>,
    pub oauth: Mutex<OAuthStore>,
    pub limiter: Mutex<RateLimiter>,
    pub faults: Mutex<Faults>,
    pub requests: Mutex<HashMap<(String, String), u64>>,
    pub oauth_token_calls: AtomicU64,
    pub deliveries_tx: mpsc::UnboundedSender<Delivery>,
    pub deliveries_rx: Mutex<Option<mpsc::UnboundedReceiver<Delivery>>>,
    pub delivery_serial: AtomicU64,
    pub background_started: AtomicBool,
}

/// Options of a run started through `Sim::run` (same meaning as the REST body).
#[derive(Debug, Clone, Default)]
pub struct RunRequest {
    pub branch: Option<String>,
    pub tag: Option<String>,
    pub pull_request: Option<String>,
    pub revision: Option<String>,
    pub from_revision: Option<String>,
    pub comment: Option<String>,
    pub refresh: bool,
    pub clear_cache: bool,
    pub priority: Option<String>,
    pub variables: Vec<(String, String)>,
    pub delay_until: Option<DateTime<Utc>>,
    pub actions_to_run: Vec<u64>,
    pub triggered_on: Option<String>,
}

impl Sim {
    pub fn new(config: SimConfig) -> Self {
        let clock = Clock::new(config.time);
        let state = seed::build(config.seed, clock.now());
        let mut tokens = TokenRegistry::default();
        for value in &config.tokens {
            let id = tokens.next_id();
            tokens.insert(TokenInfo {
                id,
                value: value.clone(),
                name: "cli".into(),
                scopes: ALL_SCOPES.iter().map(|s| (*s).to_string()).collect(),
                expires_at: None,
                workspace_restrictions: Vec::new(),
                ip_restrictions: Vec::new(),
            });
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let html = config.html_url.clone().unwrap_or_default();
        let api = config.public_url.clone().unwrap_or_default();
        Self {
            inner: Arc::new(Inner {
                limiter: Mutex::new(RateLimiter::new(config.rate_limit_policy())),
                urls: RwLock::new(Urls { api, html }),
                clock,
                state: Mutex::new(state),
                tokens: Mutex::new(tokens),
                oauth: Mutex::new(OAuthStore::default()),
                faults: Mutex::new(Faults::default()),
                requests: Mutex::new(HashMap::new()),
                oauth_token_calls: AtomicU64::new(0),
                deliveries_tx: tx,
                deliveries_rx: Mutex::new(Some(rx)),
                delivery_serial: AtomicU64::new(0),
                background_started: AtomicBool::new(false),
                config,
            }),
        }
    }

    pub fn config(&self) -> &SimConfig {
        &self.inner.config
    }

    /// Sets the bases used in `url`/`html_url` once the listen address is known.
    pub(crate) fn set_origin(&self, origin: &str) {
        let base = self.inner.config.normalized_base_path();
        let mut urls = self.inner.urls.write();
        urls.api = match &self.inner.config.public_url {
            Some(u) => u.trim_end_matches('/').to_string(),
            None => format!("{origin}{base}"),
        };
        urls.html = match &self.inner.config.html_url {
            Some(u) => u.trim_end_matches('/').to_string(),
            None => origin.to_string(),
        };
    }

    pub fn urls(&self) -> Urls {
        self.inner.urls.read().clone()
    }

    pub fn now(&self) -> DateTime<Utc> {
        self.inner.clock.now()
    }

    pub(crate) fn timing(&self) -> Timing {
        let c = &self.inner.config;
        Timing {
            queue: Duration::seconds(c.queue_seconds.max(0)),
            action: Duration::seconds(c.action_seconds.max(1)),
            terminate: Duration::seconds(c.terminate_seconds.max(0)),
        }
    }

    // ----- tokens -------------------------------------------------------

    /// Registers a personal access token and returns its value.
    pub fn issue_token(&self, spec: TokenSpec) -> String {
        let now = self.now();
        let mut tokens = self.inner.tokens.lock();
        let value = spec
            .token
            .clone()
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        let id = tokens.next_id();
        let scopes = if spec.scopes.is_empty() {
            ALL_SCOPES.iter().map(|s| (*s).to_string()).collect()
        } else {
            spec.scopes
                .iter()
                .map(|s| s.trim().to_uppercase())
                .collect()
        };
        tokens.insert(TokenInfo {
            id,
            value: value.clone(),
            name: spec.name.clone().unwrap_or_else(|| "sim token".into()),
            scopes,
            expires_at: spec.expires_in.map(|s| now + Duration::seconds(s)),
            workspace_restrictions: spec.workspace_restrictions.clone(),
            ip_restrictions: spec.ip_restrictions.clone(),
        });
        value
    }

    /// Makes a token expire now (it then gets 401).
    pub fn expire_token(&self, value: &str) -> bool {
        let now = self.now();
        match self.inner.tokens.lock().tokens.get_mut(value) {
            Some(t) => {
                t.expires_at = Some(now);
                true
            }
            None => false,
        }
    }

    pub(crate) fn token(&self, value: &str) -> Option<TokenInfo> {
        self.inner.tokens.lock().get(value).cloned()
    }

    // ----- clock ----------------------------------------------------------

    /// Moves the clock forward and runs every transition that became due.
    pub fn advance(&self, by: Duration) {
        self.inner.clock.advance(by);
        self.tick();
    }

    // ----- counters ----------------------------------------------------------

    pub(crate) fn record_request(&self, method: &str, path: &str) {
        *self
            .inner
            .requests
            .lock()
            .entry((method.to_string(), path.to_string()))
            .or_insert(0) += 1;
    }

    /// Requests received whose method matches (`None` = any) and whose path
    /// (without the base path) starts with `path_prefix`.
    pub fn request_count(&self, method: Option<&str>, path_prefix: &str) -> u64 {
        self.inner
            .requests
            .lock()
            .iter()
            .filter(|((m, p), _)| {
                method.is_none_or(|want| want.eq_ignore_ascii_case(m)) && p.starts_with(path_prefix)
            })
            .map(|(_, n)| *n)
            .sum()
    }

    /// Requests received to exactly this method and path.
    pub fn request_count_exact(&self, method: &str, path: &str) -> u64 {
        self.inner
            .requests
            .lock()
            .get(&(method.to_uppercase(), path.to_string()))
            .copied()
            .unwrap_or(0)
    }

    pub fn total_requests(&self) -> u64 {
        self.request_count(None, "")
    }

    pub fn reset_request_counts(&self) {
        self.inner.requests.lock().clear();
        self.inner.oauth_token_calls.store(0, Ordering::SeqCst);
        self.inner.limiter.lock().reset_counters();
    }

    /// Requests refused for the rate limit (not injected `rate_limit` faults) since the
    /// counters were last reset.
    pub fn throttled_count(&self) -> u64 {
        self.inner.limiter.lock().throttled()
    }

    pub fn oauth_token_calls(&self) -> u64 {
        self.inner.oauth_token_calls.load(Ordering::SeqCst)
    }

    // ----- knobs ----------------------------------------------------------

    pub fn inject(&self, fault: FaultSpec) {
        self.inner.faults.lock().push(fault);
    }

    pub fn clear_faults(&self) {
        self.inner.faults.lock().clear();
    }

    pub fn pending_faults(&self) -> Vec<FaultSpec> {
        self.inner.faults.lock().pending()
    }

    /// Changes the budget, keeping the other rate-limit settings.
    pub fn set_rate_limit(&self, spec: RateLimitSpec) {
        let mut limiter = self.inner.limiter.lock();
        let policy = RateLimitPolicy {
            spec,
            ..limiter.policy
        };
        limiter.set_policy(policy);
    }

    /// Replaces every rate-limit setting; every token's window starts afresh.
    pub fn set_rate_limit_policy(&self, policy: RateLimitPolicy) {
        self.inner.limiter.lock().set_policy(policy);
    }

    pub fn rate_limit_policy(&self) -> RateLimitPolicy {
        self.inner.limiter.lock().policy
    }

    pub fn reset_rate_limits(&self) {
        self.inner.limiter.lock().reset_all();
    }

    pub fn set_api_enabled(&self, workspace: &str, enabled: bool) -> bool {
        match self.inner.state.lock().workspace_mut(workspace) {
            Some(ws) => {
                ws.api_enabled = enabled;
                true
            }
            None => false,
        }
    }

    pub fn register_oauth_client(
        &self,
        client_id: &str,
        client_secret: &str,
        redirect_uris: &[&str],
    ) {
        self.inner.oauth.lock().register(
            client_id,
            client_secret,
            redirect_uris.iter().map(|s| (*s).to_string()).collect(),
        );
    }

    /// Every credential the simulator has handed out or been given: personal access
    /// tokens, OAuth client secrets, authorization codes, access and refresh tokens
    /// (also the used and revoked ones), so tests can check none of them leaks.
    pub fn issued_secrets(&self) -> Vec<String> {
        let mut secrets: Vec<String> = self.inner.tokens.lock().tokens.keys().cloned().collect();
        secrets.extend(self.inner.oauth.lock().secrets().map(str::to_owned));
        secrets
    }

    /// Replaces all data with freshly seeded data (tokens and clients are kept).
    pub fn reseed(&self, spec: SeedSpec) {
        let state = seed::build(spec, self.now());
        *self.inner.state.lock() = state;
    }

    /// The next `count` runs of a pipeline fail on their last action.
    pub fn fail_next_runs(
        &self,
        workspace: &str,
        project: &str,
        pipeline_id: u64,
        count: u32,
    ) -> Result<(), SimError> {
        self.with_pipeline_mut(workspace, project, pipeline_id, |pl| {
            pl.scripted_failures += count;
            Ok(())
        })
    }

    // ----- data accessors -------------------------------------------------

    pub(crate) fn read<T>(&self, f: impl FnOnce(&State, &Urls) -> T) -> T {
        let urls = self.inner.urls.read().clone();
        let state = self.inner.state.lock();
        f(&state, &urls)
    }

    pub(crate) fn write<T>(&self, f: impl FnOnce(&mut State, &Urls) -> T) -> T {
        let urls = self.inner.urls.read().clone();
        let mut state = self.inner.state.lock();
        f(&mut state, &urls)
    }

    pub fn workspace_domains(&self) -> Vec<String> {
        self.read(|s, _| s.workspaces.iter().map(|w| w.domain.clone()).collect())
    }

    pub fn project_names(&self, workspace: &str) -> Vec<String> {
        self.read(|s, _| {
            s.workspace(workspace)
                .map(|w| w.projects.iter().map(|p| p.name.clone()).collect())
                .unwrap_or_default()
        })
    }

    pub fn pipeline_ids(&self, workspace: &str, project: &str) -> Vec<u64> {
        self.read(|s, _| {
            s.workspace(workspace)
                .and_then(|w| w.project(project))
                .map(|p| p.pipelines.iter().map(|pl| pl.id).collect())
                .unwrap_or_default()
        })
    }

    /// Number of executions a pipeline has (seeded and run since).
    pub fn execution_count(&self, workspace: &str, project: &str, pipeline_id: u64) -> u64 {
        self.read(|s, _| {
            s.workspace(workspace)
                .and_then(|w| w.project(project))
                .and_then(|p| p.pipeline(pipeline_id))
                .map(|pl| pl.last_id)
                .unwrap_or(0)
        })
    }

    /// Status of one execution, if it exists.
    pub fn execution_status(
        &self,
        workspace: &str,
        project: &str,
        pipeline_id: u64,
        id: u64,
    ) -> Option<String> {
        self.tick();
        self.read(|s, _| {
            let ws = s.workspace(workspace)?;
            let p = ws.project(project)?;
            let pl = p.pipeline(pipeline_id)?;
            execution_of(s, ws, p, pl, id).map(|e| e.status.clone())
        })
    }

    /// Deliveries recorded on a webhook as `(response_status, body)`.
    pub fn webhook_deliveries(
        &self,
        workspace: &str,
        webhook_id: u64,
    ) -> Vec<(Option<u16>, String)> {
        self.read(|s, _| {
            s.workspace(workspace)
                .and_then(|w| w.webhooks.iter().find(|h| h.id == webhook_id))
                .map(|h| {
                    h.requests
                        .iter()
                        .map(|r| (r.response_status, r.body.clone()))
                        .collect()
                })
                .unwrap_or_default()
        })
    }

    pub(crate) fn with_pipeline_mut<T>(
        &self,
        workspace: &str,
        project: &str,
        pipeline_id: u64,
        f: impl FnOnce(&mut Pipeline) -> Result<T, SimError>,
    ) -> Result<T, SimError> {
        let mut state = self.inner.state.lock();
        let pl = state
            .workspace_mut(workspace)
            .ok_or_else(|| SimError::not_found("Workspace"))?
            .project_mut(project)
            .ok_or_else(|| SimError::not_found("Project"))?
            .pipeline_mut(pipeline_id)
            .ok_or_else(|| SimError::not_found("Pipeline"))?;
        f(pl)
    }

    // ----- repository -----------------------------------------------------

    /// Pushes a commit to a branch (created from the default branch if new), fires
    /// PUSH webhooks and runs pipelines whose PUSH event matches. Returns the revision.
    pub fn push_commit(
        &self,
        workspace: &str,
        project: &str,
        branch: &str,
        message: &str,
    ) -> Result<String, SimError> {
        let now = self.now();
        let urls = self.urls();
        let (revision, pipelines, payload, ws_domain) = {
            let mut state = self.inner.state.lock();
            state.runtime_serial += 1;
            let serial = state.runtime_serial;
            let seed = state.spec.seed;
            let ws = state
                .workspace_mut(workspace)
                .ok_or_else(|| SimError::not_found("Workspace"))?;
            let owner = ws.owner().map(|m| m.id).unwrap_or(1);
            let p = ws
                .project_mut(project)
                .ok_or_else(|| SimError::not_found("Project"))?;
            let revision = hex_id(&[seed, 0x00C0_FFEE, serial, crate::prng::hs(project)], 40);
            p.commits.push(Commit {
                revision: revision.clone(),
                message: if message.ends_with('\n') {
                    message.to_string()
                } else {
                    format!("{message}\n")
                },
                author: owner,
                date: now,
            });
            let idx = p.commits.len() - 1;
            match p.branches.iter_mut().find(|b| b.name == branch) {
                Some(b) => b.commits.push(idx),
                None => {
                    let mut commits = p
                        .branch(&p.default_branch)
                        .map(|b| b.commits.clone())
                        .unwrap_or_default();
                    commits.push(idx);
                    p.branches.push(Branch {
                        name: branch.to_string(),
                        commits,
                    });
                }
            }
            let git_ref = format!("refs/heads/{branch}");
            let pipelines: Vec<u64> = p
                .pipelines
                .iter()
                .filter(|pl| !pl.disabled && pl.listens_to_push() && push_matches(pl, &git_ref))
                .map(|pl| pl.id)
                .collect();
            let (ws, p) = state.find_project(workspace, project)?;
            let commit_json = p
                .commits
                .last()
                .map(|c| render::commit(&urls, ws, p, c))
                .unwrap_or(Value::Null);
            let payload = json!({
                "workspace": render::workspace_short(&urls, ws),
                "invoker": webhook_invoker(&urls, ws),
                "project": webhook_project(&urls, ws, p),
                "current_date": iso(now),
                "branch": branch,
                "ref": git_ref,
                "revision": revision,
                "commits": [commit_json],
            });
            (revision, pipelines, payload, ws.domain.clone())
        };
        self.deliver(&ws_domain, project, "PUSH", payload);
        for id in pipelines {
            let request = RunRequest {
                branch: Some(branch.to_string()),
                revision: Some(revision.clone()),
                triggered_on: Some("EVENT".into()),
                ..RunRequest::default()
            };
            self.run(workspace, project, id, request)?;
        }
        Ok(revision)
    }

    // ----- executions -------------------------------------------------------

    /// Starts a run of a pipeline and returns its execution id.
    pub fn run(
        &self,
        workspace: &str,
        project: &str,
        pipeline_id: u64,
        req: RunRequest,
    ) -> Result<u64, SimError> {
        let now = self.now();
        let id = {
            let mut state = self.inner.state.lock();
            state.runtime_serial += 1;
            let serial = state.runtime_serial;
            let seed = state.spec.seed;
            let ws = state
                .workspace_mut(workspace)
                .ok_or_else(|| SimError::not_found("Workspace"))?;
            let owner = ws.owner().map(|m| m.id).unwrap_or(1);
            let p = ws
                .project_mut(project)
                .ok_or_else(|| SimError::not_found("Project"))?;
            let default_branch = p.default_branch.clone();
            let (branch, to_revision) = resolve_ref(p, &req, pipeline_id)?;
            let pl = p
                .pipeline_mut(pipeline_id)
                .ok_or_else(|| SimError::not_found("Pipeline"))?;
            if pl.disabled {
                return Err(SimError::Validation("Pipeline is disabled.".into()));
            }
            let fail_requested = req.comment.as_deref().is_some_and(|c| c.contains("[fail]"))
                || req
                    .variables
                    .iter()
                    .any(|(k, v)| k == "SIM_FAIL" && v == "true");
            let scripted = pl.scripted_failures > 0;
            if scripted {
                pl.scripted_failures -= 1;
            }
            let runnable: Vec<usize> = pl
                .actions
                .iter()
                .enumerate()
                .filter(|(_, a)| {
                    req.actions_to_run.is_empty() || req.actions_to_run.contains(&a.id)
                })
                .map(|(i, _)| i)
                .collect();
            let fail_at = (fail_requested || scripted)
                .then(|| {
                    runnable
                        .iter()
                        .rev()
                        .find(|i| {
                            !matches!(
                                pl.actions[**i].action_type.as_str(),
                                "WAIT_FOR_APPLY" | "PASS_ARGUMENTS"
                            )
                        })
                        .copied()
                })
                .flatten();
            let id = pl.last_id + 1;
            pl.last_id = id;
            let hex = hex_id(&[seed, 0xE7EC, serial, pipeline_id, id], 24);
            let actions = pl
                .actions
                .iter()
                .enumerate()
                .map(|(i, a)| ActionExecution {
                    hex: hex_id(&[seed, 0xAC7, serial, pipeline_id, id, i as u64], 24),
                    action_id: a.id,
                    status: if runnable.contains(&i) {
                        "ENQUEUED"
                    } else {
                        "SKIPPED"
                    }
                    .into(),
                    start_date: None,
                    finish_date: None,
                    error_message: None,
                    log: Vec::new(),
                })
                .collect();
            let pull_request = req
                .pull_request
                .clone()
                .or_else(|| branch.as_ref().filter(|b| b.starts_with("pull/")).cloned());
            let from_revision = req.from_revision.clone().or_else(|| {
                let last = (1..id)
                    .rev()
                    .find_map(|i| pl.overlay.get(&i).and_then(|e| e.to_revision.clone()));
                last
            });
            let exec = Execution {
                id,
                hex,
                status: "ENQUEUED".into(),
                triggered_on: req.triggered_on.clone().unwrap_or_else(|| "CLICK".into()),
                created: now,
                start_date: None,
                finish_date: None,
                priority: req.priority.clone().unwrap_or_else(|| pl.priority.clone()),
                refresh: req.refresh,
                clear_cache: req.clear_cache,
                comment: req.comment.clone().unwrap_or_default(),
                branch: if req.tag.is_some() {
                    None
                } else {
                    branch.or(Some(default_branch))
                },
                tag: req.tag.clone(),
                pull_request,
                to_revision,
                from_revision,
                creator: owner,
                variables: req.variables.clone(),
                delay_until: req.delay_until,
                fail_at,
                terminating_since: None,
                actions,
            };
            pl.overlay.insert(id, exec);
            state.active.push(ExecKey {
                workspace: workspace.to_string(),
                project: project.to_string(),
                pipeline_id,
                execution_id: id,
            });
            id
        };
        self.tick();
        Ok(id)
    }

    /// Applies a PATCH operation to an execution (materialising a seeded one first).
    pub fn operate(
        &self,
        workspace: &str,
        project: &str,
        pipeline_id: u64,
        execution_id: u64,
        operation: &str,
        variables: Vec<(String, String)>,
    ) -> Result<(), SimError> {
        self.tick();
        let now = self.now();
        let started = {
            let mut state = self.inner.state.lock();
            let spec = state.spec;
            let seeded_at = state.seeded_at;
            let ws = state
                .workspace_mut(workspace)
                .ok_or_else(|| SimError::not_found("Workspace"))?;
            let ws_index = ws.index;
            let p = ws
                .project_mut(project)
                .ok_or_else(|| SimError::not_found("Project"))?;
            let seeded = {
                let pl = p
                    .pipeline(pipeline_id)
                    .ok_or_else(|| SimError::not_found("Pipeline"))?;
                if execution_id == 0 || execution_id > pl.last_id {
                    return Err(SimError::not_found("Execution"));
                }
                (!pl.overlay.contains_key(&execution_id)).then(|| {
                    seed::seeded_execution(&spec, seeded_at, ws_index, p, pl, execution_id)
                })
            };
            let pl = p
                .pipeline_mut(pipeline_id)
                .ok_or_else(|| SimError::not_found("Pipeline"))?;
            if let Some(e) = seeded {
                pl.overlay.insert(execution_id, e);
            }
            let e = pl
                .overlay
                .get_mut(&execution_id)
                .ok_or_else(|| SimError::not_found("Execution"))?;
            executions::operate(e, operation, variables, now)?;
            let key = ExecKey {
                workspace: workspace.to_string(),
                project: project.to_string(),
                pipeline_id,
                execution_id,
            };
            if !state.active.contains(&key) {
                state.active.push(key);
            }
            operation == "RETRY"
        };
        if started {
            self.fire_execution_event(
                workspace,
                project,
                pipeline_id,
                execution_id,
                ExecEvent::Started,
            );
        }
        self.tick();
        Ok(())
    }

    /// Runs every due transition of active executions and sends their webhooks.
    pub fn tick(&self) {
        let now = self.now();
        let timing = self.timing();
        let mut fired = Vec::new();
        {
            let mut state = self.inner.state.lock();
            if state.active.is_empty() {
                return;
            }
            let keys = std::mem::take(&mut state.active);
            let mut still = Vec::new();
            for key in keys {
                let Some(pl) = state
                    .workspace_mut(&key.workspace)
                    .and_then(|w| w.project_mut(&key.project))
                    .and_then(|p| p.pipeline_mut(key.pipeline_id))
                else {
                    continue;
                };
                let actions = pl.actions.clone();
                let Some(e) = pl.overlay.get_mut(&key.execution_id) else {
                    continue;
                };
                let events = executions::step(e, &actions, now, timing);
                let done = e.is_terminal();
                for ev in events {
                    fired.push((key.clone(), ev));
                }
                if !done {
                    still.push(key);
                }
            }
            state.active.extend(still);
        }
        for (key, ev) in fired {
            self.fire_execution_event(
                &key.workspace,
                &key.project,
                key.pipeline_id,
                key.execution_id,
                ev,
            );
        }
    }

    fn fire_execution_event(
        &self,
        workspace: &str,
        project: &str,
        pipeline_id: u64,
        execution_id: u64,
        ev: ExecEvent,
    ) {
        let urls = self.urls();
        let now = self.now();
        let payload = self.read(|s, _| {
            let ws = s.workspace(workspace)?;
            let p = ws.project(project)?;
            let pl = p.pipeline(pipeline_id)?;
            let e = execution_of(s, ws, p, pl, execution_id)?;
            Some(execution_payload(&urls, ws, p, pl, &e, now))
        });
        if let Some(payload) = payload {
            self.deliver(workspace, project, ev.name(), payload);
        }
    }

    /// Queues deliveries of `payload` to every webhook of the workspace subscribed to `event`.
    fn deliver(&self, workspace: &str, project: &str, event: &str, payload: Value) {
        let now = self.now();
        let mut state = self.inner.state.lock();
        let Some(ws) = state.workspace_mut(workspace) else {
            return;
        };
        for hook in ws.webhooks.iter_mut() {
            let wants_event = hook.events.iter().any(|e| e == event);
            let wants_project =
                hook.projects.is_empty() || hook.projects.iter().any(|p| p == project);
            if !wants_event || !wants_project {
                continue;
            }
            let mut body = payload.clone();
            if let Some(o) = body.as_object_mut() {
                o.insert("secret_key".into(), hook.secret_key.clone().into());
            }
            let body = body.to_string();
            let delivery_id = self.inner.delivery_serial.fetch_add(1, Ordering::SeqCst) + 1;
            hook.requests.insert(
                0,
                WebhookRequest {
                    delivery_id,
                    post_date: now,
                    response_status: None,
                    body: body.clone(),
                },
            );
            hook.requests.truncate(20);
            let _ = self.inner.deliveries_tx.send(Delivery {
                delivery_id,
                workspace: workspace.to_string(),
                webhook_id: hook.id,
                target_url: hook.target_url.clone(),
                secret: hook.secret_key.clone(),
                event: event.to_string(),
                body,
            });
        }
    }

    pub(crate) fn record_delivery_status(
        &self,
        workspace: &str,
        webhook_id: u64,
        delivery_id: u64,
        status: Option<u16>,
    ) {
        let mut state = self.inner.state.lock();
        if let Some(req) = state
            .workspace_mut(workspace)
            .and_then(|w| w.webhooks.iter_mut().find(|h| h.id == webhook_id))
            .and_then(|h| h.requests.iter_mut().find(|r| r.delivery_id == delivery_id))
        {
            req.response_status = status;
        }
    }
}

fn push_matches(pl: &Pipeline, git_ref: &str) -> bool {
    pl.events.as_array().is_some_and(|events| {
        events.iter().any(|e| {
            e.get("type").and_then(Value::as_str) == Some("PUSH")
                && e.get("refs").and_then(Value::as_array).is_some_and(|refs| {
                    refs.iter()
                        .filter_map(Value::as_str)
                        .any(|r| ref_matches(r, git_ref))
                })
        })
    })
}

/// Buddy ref patterns: exact, trailing `*` wildcard, or `:default`.
pub(crate) fn ref_matches(pattern: &str, git_ref: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => git_ref.starts_with(prefix),
        None => pattern == git_ref,
    }
}

fn resolve_ref(
    p: &Project,
    req: &RunRequest,
    pipeline_id: u64,
) -> Result<(Option<String>, Option<String>), SimError> {
    let pl = p
        .pipeline(pipeline_id)
        .ok_or_else(|| SimError::not_found("Pipeline"))?;
    let pinned = pl.refs.iter().find_map(|r| {
        r.strip_prefix("refs/heads/")
            .filter(|b| !b.contains('*'))
            .map(str::to_string)
    });
    if let Some(tag) = &req.tag {
        let t = p
            .tags
            .iter()
            .find(|t| t.name == *tag)
            .ok_or_else(|| SimError::Validation(format!("Tag {tag} not found.")))?;
        return Ok((None, p.commits.get(t.commit).map(|c| c.revision.clone())));
    }
    let branch = req
        .branch
        .clone()
        .or_else(|| req.pull_request.clone())
        .or(pinned)
        .unwrap_or_else(|| p.default_branch.clone());
    let head = if let Some(n) = branch.strip_prefix("pull/") {
        let number: u64 = n
            .parse()
            .map_err(|_| SimError::Validation(format!("Pull request {branch} not found.")))?;
        if !p.pulls.contains(&number) {
            return Err(SimError::Validation(format!(
                "Pull request {branch} not found."
            )));
        }
        p.head_of(&p.default_branch).map(|c| c.revision.clone())
    } else {
        Some(
            p.head_of(&branch)
                .ok_or_else(|| SimError::Validation(format!("Branch {branch} not found.")))?
                .revision
                .clone(),
        )
    };
    let revision = match req.revision.as_deref() {
        None | Some("HEAD") | Some("") => head,
        Some(rev) => Some(
            p.commits
                .iter()
                .find(|c| c.revision.starts_with(rev))
                .ok_or_else(|| SimError::Validation(format!("Revision {rev} not found.")))?
                .revision
                .clone(),
        ),
    };
    Ok((Some(branch), revision))
}

/// An execution, from the overlay or derived from the seed.
pub(crate) fn execution_of<'a>(
    s: &State,
    ws: &Workspace,
    p: &Project,
    pl: &'a Pipeline,
    id: u64,
) -> Option<Cow<'a, Execution>> {
    if let Some(e) = pl.overlay.get(&id) {
        return Some(Cow::Borrowed(e));
    }
    (id >= 1 && id <= pl.seeded_count).then(|| {
        Cow::Owned(seed::seeded_execution(
            &s.spec,
            s.seeded_at,
            ws.index,
            p,
            pl,
            id,
        ))
    })
}

/// `last_execution_status` / `last_execution_revision` from the newest run.
pub(crate) fn last_execution(
    s: &State,
    ws: &Workspace,
    p: &Project,
    pl: &Pipeline,
) -> (String, Option<String>) {
    match execution_of(s, ws, p, pl, pl.last_id) {
        Some(e) => (e.status.clone(), e.to_revision.clone()),
        None => ("INITIAL".into(), None),
    }
}

fn webhook_invoker(urls: &Urls, ws: &Workspace) -> Value {
    match ws.owner() {
        Some(m) => {
            let mut v = render::member_ref(urls, &ws.domain, m, true);
            if let Some(o) = v.as_object_mut() {
                // Buddy's payload links members without the /workspaces segment.
                o.insert(
                    "url".into(),
                    format!("{}/{}/member/{}", urls.html, ws.domain, m.id).into(),
                );
            }
            v
        }
        None => Value::Null,
    }
}

fn webhook_project(urls: &Urls, ws: &Workspace, p: &Project) -> Value {
    let mut v = render::project_short(urls, &ws.domain, p);
    if let Some(o) = v.as_object_mut() {
        o.insert(
            "url".into(),
            format!("{}/projects/{}", urls.api, p.name).into(),
        );
    }
    v
}

fn execution_payload(
    urls: &Urls,
    ws: &Workspace,
    p: &Project,
    pl: &Pipeline,
    e: &Execution,
    now: DateTime<Utc>,
) -> Value {
    let (_, html) = urls.execution(&ws.domain, &p.name, pl.id, e);
    json!({
        "workspace": render::workspace_short(urls, ws),
        "invoker": webhook_invoker(urls, ws),
        "project": webhook_project(urls, ws, p),
        "current_date": iso(now),
        "execution": {
            "url": format!("{}/projects/{}/pipelines/{}/executions/{}", urls.api, p.name, pl.id, e.id),
            "html_url": html,
            "id": e.id,
            "start_date": e.start_date.map(iso),
            "finish_date": e.finish_date.map(iso),
            "mode": if e.triggered_on == "CLICK" { "MANUAL" } else { "AUTOMATIC" },
            "triggeredOn": e.triggered_on,
            "refresh": e.refresh,
            "status": e.status,
            "comment": e.comment,
            "branch": e.branch,
            "tag": e.tag,
            "to_revision": e.to_revision.as_ref().map(|r| json!({"revision": r})),
            "creator": ws.member(e.creator).map(|m| render::member_ref(urls, &ws.domain, m, false)),
            "pipeline": {
                "url": urls.pipeline(&ws.domain, &p.name, pl.id).0,
                "html_url": urls.pipeline(&ws.domain, &p.name, pl.id).1,
                "id": pl.id,
                "name": pl.name,
            },
        },
    })
}
