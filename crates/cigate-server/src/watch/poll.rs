//! Polling for job changes where no provider webhook reaches this server.
//!
//! Every `CIGATE_EVENT_POLL_INTERVAL` each active account is swept as cheaply as the
//! provider allows: its workflows list, whose latest-job status, conclusion and commit
//! serve as change markers, then the first jobs page only of workflows whose marker
//! moved or that have jobs running. The account's repositories are listed again every
//! [`DEEP_EVERY`] sweeps, which also read every workflow's first jobs page (a re-run
//! that ends as the run before it leaves the marker as it was). A store lease keeps
//! instances from sweeping one account at once, and a sweep spends at most the
//! configured share of the account's rate budget, skipping its turn when the budget
//! left is below that share.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use cigate_core::events::event_type;
use cigate_core::model::job_status;
use cigate_core::{ListPage, ListQuery, Provider, RateLimit, Record, Resource};
use cigate_store::{AccountStatus, EventSource, PollCandidate};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::task::JoinSet;

use super::{caller_for, observe, Source};
use crate::error::{ApiError, ApiResult};
use crate::gateway::Gateway;
use crate::metrics::OutcomeLabels;
use crate::state::AppState;

/// Sweeps between two listings of an account's repositories (and full reads).
pub const DEEP_EVERY: u64 = 10;
/// Jobs read per changed workflow: Buddy's default page, newest first.
const JOBS_PER_WORKFLOW: u32 = 20;
/// Accounts one instance sweeps at once.
const MAX_SWEEPS_IN_FLIGHT: usize = 32;
/// Calls a sweep may make when the provider has not said what its budget is.
const UNKNOWN_BUDGET_CALLS: u64 = 200;
/// How long a sweep holds an account without renewing its lease.
const POLL_LEASE: Duration = Duration::from_secs(15);
/// A provider list read in pages of this many items: small enough that each page is
/// one upstream call (Buddy's largest page is 50), so an idle sweep costs one call per
/// repository with up to 50 workflows.
const PAGE: u32 = 50;

/// What a sweep remembers of an account between sweeps (the event source's markers).
#[derive(Serialize, Deserialize, Default, Debug, Clone, PartialEq)]
struct Markers {
    #[serde(default)]
    cycle: u64,
    /// `(workspace, repo)` pairs, from the last deep sweep.
    #[serde(default)]
    repos: Vec<(String, String)>,
    /// Per `workspace/repo/workflow`: its latest-job marker.
    #[serde(default)]
    workflows: BTreeMap<String, Value>,
    /// Workflows with jobs not completed when last read.
    #[serde(default)]
    running: Vec<String>,
    /// The provider's budget as of the last call of the last sweep.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    rate: Option<RateLimit>,
    /// Calls polling made in that budget's window.
    #[serde(default)]
    window_spent: u64,
}

/// The calls polling may still make: at most its share of the provider's window (as
/// the provider's own rate-limit answers describe it), counted across sweeps, and
/// none while less than that share is left for everyone.
struct Budget {
    share: f64,
    /// Calls polling made in the current window.
    spent: u64,
    /// Calls polling may make in a window (per sweep while the window is unknown).
    cap: u64,
    rate: Option<RateLimit>,
}

/// Reset times this close apart name one window (providers round them differently).
const SAME_WINDOW_SECS: i64 = 2;

impl Budget {
    fn new(share: f64, rate: Option<RateLimit>, spent_in_window: u64) -> Self {
        let mut budget = Self {
            share,
            spent: 0,
            cap: UNKNOWN_BUDGET_CALLS,
            rate: None,
        };
        budget.saw(rate);
        if budget.rate.is_some() {
            budget.spent = spent_in_window;
        }
        budget
    }

    /// A window that has reset since it was seen is full again, and a new window
    /// starts polling's count afresh.
    fn saw(&mut self, rate: Option<RateLimit>) {
        let Some(rate) = rate else { return };
        if rate
            .reset
            .is_some_and(|reset| reset <= Utc::now().timestamp())
        {
            return;
        }
        let new_window = match (self.rate.and_then(|r| r.reset), rate.reset) {
            (Some(old), Some(new)) => (new - old).abs() > SAME_WINDOW_SECS,
            _ => false,
        };
        if new_window {
            self.spent = 0;
        }
        if let Some(limit) = rate.limit.filter(|l| *l > 0) {
            self.cap = ((limit as f64 * self.share).floor() as u64).max(1);
        }
        self.rate = Some(rate);
    }

    /// Less than the share left in the window: this sweep waits for the next turn.
    fn tight(&self) -> bool {
        match self.rate {
            Some(RateLimit {
                limit: Some(limit),
                remaining: Some(remaining),
                ..
            }) => (remaining as f64) < limit as f64 * self.share,
            _ => false,
        }
    }

    fn spend(&mut self) -> bool {
        if self.spent >= self.cap || self.tight() {
            return false;
        }
        self.spent += 1;
        true
    }

    /// What the next sweep carries over (nothing when the window is unknown).
    fn spent_in_window(&self) -> u64 {
        if self.rate.is_some() {
            self.spent
        } else {
            0
        }
    }
}

/// The poller loop; runs until the server stops it (at once when the interval is 0).
pub async fn background(state: AppState) {
    let holder = format!("poll-{}", uuid::Uuid::new_v4());
    let interval = state.config.event_poll_interval;
    if interval.is_zero() {
        // Polling is off: job events come from provider webhooks alone.
        return;
    }
    let tick = (interval / 10).clamp(Duration::from_millis(100), Duration::from_secs(5));
    let mut running = JoinSet::new();
    let mut in_flight: HashSet<String> = HashSet::new();
    loop {
        while let Some(done) = running.try_join_next() {
            if let Ok(id) = done {
                in_flight.remove(&id);
            }
        }
        let mut due = state.watch.take_poll_now();
        let room = MAX_SWEEPS_IN_FLIGHT.saturating_sub(in_flight.len() + due.len());
        if room > 0 {
            let now = Utc::now();
            let span = |d: Duration| chrono::Duration::from_std(d).unwrap_or_default();
            match state
                .store
                .poll_candidates(
                    now - span(interval),
                    now - span(interval * 10),
                    u32::try_from(room).unwrap_or(1),
                )
                .await
            {
                Ok(found) => due.extend(found),
                Err(err) => tracing::warn!(error = %err, "finding accounts to poll failed"),
            }
        }
        for candidate in due {
            if !in_flight.insert(candidate.account_id.clone()) {
                continue;
            }
            let (state, holder) = (state.clone(), holder.clone());
            running.spawn(async move {
                let id = candidate.account_id.clone();
                poll_account(&state, &holder, &candidate).await;
                id
            });
        }
        tokio::select! {
            _ = state.watch.poll_wake.notified() => {}
            _ = tokio::time::sleep(tick) => {}
            Some(done) = running.join_next(), if !running.is_empty() => {
                if let Ok(id) = done {
                    in_flight.remove(&id);
                }
            }
        }
    }
}

/// One sweep of one account, under its poll lease (renewed while the sweep runs, so
/// an instance that dies mid-sweep holds the account up for one lease at most).
async fn poll_account(state: &AppState, holder: &str, candidate: &PollCandidate) {
    let lease = POLL_LEASE;
    let source = match state
        .store
        .try_poll_lease(&candidate.account_id, holder, lease)
        .await
    {
        Ok(Some(source)) => source,
        Ok(None) => return,
        Err(err) => {
            tracing::warn!(account = %candidate.account_id, error = %err, "taking a poll lease failed");
            return;
        }
    };
    let outcome = {
        let swept = sweep(state, candidate, source);
        tokio::pin!(swept);
        let mut renew = tokio::time::interval(lease / 3);
        renew.tick().await;
        loop {
            tokio::select! {
                outcome = &mut swept => break outcome,
                _ = renew.tick() => {
                    let renewed = state
                        .store
                        .try_poll_lease(&candidate.account_id, holder, lease)
                        .await;
                    if !matches!(renewed, Ok(Some(_))) {
                        tracing::warn!(account = %candidate.account_id, "poll lease lost mid-sweep");
                    }
                }
            }
        }
    };
    let (label, markers) = match outcome {
        Ok((label, markers)) => (label, markers),
        Err(err) => {
            tracing::debug!(account = %candidate.account_id, error = %err, "polling failed");
            ("failed", None)
        }
    };
    state
        .metrics
        .polls
        .get_or_create(&OutcomeLabels { outcome: label })
        .inc();
    let markers = markers.and_then(|m| serde_json::to_value(m).ok());
    if let Err(err) = state
        .store
        .finish_poll(&candidate.account_id, holder, markers.as_ref())
        .await
    {
        tracing::warn!(account = %candidate.account_id, error = %err, "ending a poll failed");
    }
}

/// A provider list read whole (every page), each page one call of the budget.
async fn list_all(
    gateway: &Gateway,
    budget: &mut Budget,
    state: &AppState,
    resource: Resource,
    query: &ListQuery,
) -> ApiResult<Option<Vec<Record>>> {
    let mut items = Vec::new();
    let mut position: Option<Value> = None;
    loop {
        if !budget.spend() {
            return Ok(None);
        }
        state.metrics.poll_calls.inc();
        let page: ListPage = gateway
            .call(|provider: Arc<dyn Provider>| {
                let position = position.clone();
                async move { provider.list(resource, query, position).await }
            })
            .await?;
        budget.saw(page.rate_limit);
        items.extend(page.items);
        match page.next {
            Some(next) => position = Some(next),
            None => return Ok(Some(items)),
        }
    }
}

fn is_running(status: Option<&str>) -> bool {
    matches!(
        status,
        Some(job_status::QUEUED | job_status::IN_PROGRESS | job_status::WAITING)
    )
}

/// Sweeps the account; returns the outcome's label and the markers to keep (`None`:
/// keep the old ones).
async fn sweep(
    state: &AppState,
    candidate: &PollCandidate,
    source: EventSource,
) -> ApiResult<(&'static str, Option<Markers>)> {
    let Some(account) = state
        .store
        .get_account(&candidate.environment_id, &candidate.account_id)
        .await?
    else {
        return Ok(("failed", None));
    };
    if account.status != AccountStatus::Active {
        return Ok(("skipped", None));
    }
    let old: Markers = serde_json::from_value(source.markers).unwrap_or_default();
    // No sweep has finished yet (a failed or cut-short one does not count): what is
    // there now is the baseline, not news.
    let baseline = old.cycle == 0;
    let mut budget = Budget::new(
        state.config.event_poll_budget_share,
        old.rate,
        old.window_spent,
    );
    if budget.tight() {
        return Ok(("skipped", None));
    }
    let gateway = Gateway::open(
        state,
        &caller_for(&account),
        &account.id,
        state.default_timeout(),
    )
    .await?;
    let deep = old.cycle.is_multiple_of(DEEP_EVERY) || old.repos.is_empty();
    let mut next = Markers {
        cycle: old.cycle + 1,
        repos: old.repos.clone(),
        workflows: old.workflows.clone(),
        running: Vec::new(),
        rate: None,
        window_spent: 0,
    };
    if deep {
        match repos_of(&gateway, &mut budget, state).await? {
            Some(repos) => next.repos = repos,
            None => return Ok(("skipped", None)),
        }
    }
    let mut changed = 0;
    // A completion the poll found first: the provider webhook, which would have
    // reported it at once, is not delivering.
    let mut missed_by_hook = false;
    let mut unfinished = false;
    for (ws, repo) in next.repos.clone() {
        let query = ListQuery {
            workspace: Some(ws.clone()),
            repo: Some(repo.clone()),
            limit: PAGE,
            ..ListQuery::default()
        };
        let Some(workflows) =
            list_all(&gateway, &mut budget, state, Resource::Workflows, &query).await?
        else {
            unfinished = true;
            break;
        };
        for record in workflows {
            let Some(workflow) = record.unified.as_workflow() else {
                continue;
            };
            let key = format!("{ws}/{repo}/{}", workflow.id);
            let marker = json!([
                workflow.last_job_status,
                workflow.last_job_conclusion,
                workflow.last_job_commit
            ]);
            let moved = old.workflows.get(&key) != Some(&marker);
            let busy =
                is_running(workflow.last_job_status.as_deref()) || old.running.contains(&key);
            if !(deep || baseline || moved || busy) {
                continue;
            }
            if !budget.spend() {
                // Not read: the old marker stays, so the next sweep reads it.
                unfinished = true;
                next.running.push(key);
                continue;
            }
            state.metrics.poll_calls.inc();
            let jobs_query = ListQuery {
                workflow: Some(workflow.id.clone()),
                limit: JOBS_PER_WORKFLOW,
                ..query.clone()
            };
            let read_at = Utc::now();
            let page = match gateway
                .call(|provider: Arc<dyn Provider>| {
                    let jobs_query = &jobs_query;
                    async move { provider.list(Resource::Jobs, jobs_query, None).await }
                })
                .await
            {
                Ok(page) => page,
                // A workflow deleted meanwhile is not the account failing.
                Err(ApiError::Remote { status: 404, .. } | ApiError::NotFound(_)) => continue,
                Err(err) => return Err(err),
            };
            budget.saw(page.rate_limit);
            let mut job_running = false;
            for job in &page.items {
                let status = job.unified.as_job().and_then(|j| j.status.as_deref());
                job_running |= is_running(status);
                let found = observe(state, &account, Source::Poll, read_at, job, baseline).await?;
                missed_by_hook |= found
                    .iter()
                    .any(|e| e.event_type == event_type::JOB_COMPLETED);
                changed += found.len();
            }
            if job_running {
                next.running.push(key.clone());
            }
            next.workflows.insert(key, marker);
        }
    }
    if !unfinished {
        // Workflows gone from every listing are forgotten.
        let listed: HashSet<String> = next
            .repos
            .iter()
            .map(|(ws, repo)| format!("{ws}/{repo}/"))
            .collect();
        next.workflows
            .retain(|key, _| listed.iter().any(|prefix| key.starts_with(prefix.as_str())));
    }
    if baseline && unfinished {
        // The rest of the baseline comes with the next sweep.
        next.cycle = 0;
    }
    let hooked = source.hooks.as_array().is_some_and(|h| !h.is_empty());
    if hooked && missed_by_hook && source.hooks_error.is_none() {
        tracing::info!(account = %account.id, "the provider webhook missed a completion; polling at the normal interval until it is repaired");
        state
            .store
            .record_hooks(
                &account.id,
                &source.hooks,
                Some("the provider webhook stayed silent: a poll found a completion first"),
            )
            .await?;
    }
    next.rate = budget.rate;
    next.window_spent = budget.spent_in_window();
    let label = if changed > 0 { "changed" } else { "idle" };
    Ok((label, Some(next)))
}

/// Every `(workspace, repo)` the account sees; `None` when the budget ran out.
async fn repos_of(
    gateway: &Gateway,
    budget: &mut Budget,
    state: &AppState,
) -> ApiResult<Option<Vec<(String, String)>>> {
    let all = ListQuery {
        limit: PAGE,
        ..ListQuery::default()
    };
    let Some(workspaces) = list_all(gateway, budget, state, Resource::Workspaces, &all).await?
    else {
        return Ok(None);
    };
    let mut repos = Vec::new();
    for ws in workspaces.iter().filter_map(|r| r.unified.as_workspace()) {
        let query = ListQuery {
            workspace: Some(ws.id.clone()),
            ..all.clone()
        };
        let Some(found) = list_all(gateway, budget, state, Resource::Repos, &query).await? else {
            return Ok(None);
        };
        repos.extend(
            found
                .iter()
                .filter_map(|r| r.unified.as_repo())
                .map(|repo| (ws.id.clone(), repo.id.clone())),
        );
    }
    Ok(Some(repos))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rate(limit: u64, remaining: u64) -> Option<RateLimit> {
        Some(RateLimit {
            limit: Some(limit),
            remaining: Some(remaining),
            reset: Some(Utc::now().timestamp() + 60),
        })
    }

    #[test]
    fn polling_spends_at_most_its_share_of_a_window_across_sweeps() {
        let mut budget = Budget::new(0.1, rate(1000, 1000), 0);
        let spent = (0..1000).take_while(|_| budget.spend()).count();
        assert_eq!(spent, 100);
        // The next sweep in the same window has nothing left.
        let mut next = Budget::new(0.1, budget.rate, budget.spent_in_window());
        assert!(!next.spend());
        // A new window (a reset time further on) starts afresh.
        let later = Some(RateLimit {
            reset: Some(Utc::now().timestamp() + 3600),
            ..rate(1000, 1000).unwrap()
        });
        next.saw(later);
        assert!(next.spend());
    }

    #[test]
    fn a_tight_budget_skips_the_turn_and_a_reset_one_is_full() {
        let budget = Budget::new(0.1, rate(1000, 50), 0);
        assert!(budget.tight());
        let reset = Some(RateLimit {
            reset: Some(Utc::now().timestamp() - 1),
            ..rate(1000, 50).unwrap()
        });
        let mut budget = Budget::new(0.1, reset, 0);
        assert!(!budget.tight());
        assert!(budget.spend());
        // Unknown budget: bounded all the same.
        let mut unknown = Budget::new(0.1, None, 0);
        let spent = (0..10_000).take_while(|_| unknown.spend()).count() as u64;
        assert_eq!(spent, UNKNOWN_BUDGET_CALLS);
    }
}
