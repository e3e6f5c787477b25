//! Job events without set-up: where job changes come from (a provider webhook
//! registered on link, [`hooks`], or polling, [`poll`]) and the one change detector
//! both feed.
//!
//! Neither source is believed as such: a webhook is a hint that makes cigate read the
//! job again through the account's gateway, and a poll reads it anyway. The job as
//! read goes to [`observe`], which compares it with what the store remembers
//! (`cigate_core::events::transitions`) and writes the new state with its events and
//! their deliveries in one transaction, so the same change seen twice, by two sources
//! or two instances, becomes its events once.

pub mod hooks;
pub mod poll;

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};
use cigate_core::events::{event_type, transitions, JobRef, JobState, Transition};
use cigate_core::model::Job;
use cigate_core::Record;
use cigate_store::{Account, Event, NewEvent, PollCandidate};
use serde_json::{json, Value};
use tokio::sync::Notify;

use crate::auth::Caller;
use crate::error::ApiResult;
use crate::metrics::SourceLabels;
use crate::state::AppState;

/// The resource name record events carry for jobs.
pub const JOBS_RESOURCE: &str = "ci-cd/jobs";
/// How often the event log's retention and the outbox gauges run.
const HOUSEKEEPING_INTERVAL: Duration = Duration::from_secs(60);

/// What found a job change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    Hook,
    Poll,
}

impl Source {
    fn label(self) -> &'static str {
        match self {
            Source::Hook => "hook",
            Source::Poll => "poll",
        }
    }
}

/// Per-process signals between the sources, the detector and the event stream.
#[derive(Default)]
pub struct Hub {
    /// Accounts to poll at once (a webhook that named no job precisely), by id.
    poll_now: Mutex<HashMap<String, PollCandidate>>,
    pub(crate) poll_wake: Notify,
    /// Wakes `/events/stream` readers when this instance recorded events.
    pub recorded: Notify,
}

impl Hub {
    /// Asks this instance's poller to poll the account now.
    pub fn poll_soon(&self, account: &Account) {
        self.poll_now
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(
                account.id.clone(),
                PollCandidate {
                    account_id: account.id.clone(),
                    environment_id: account.environment_id.clone(),
                },
            );
        self.poll_wake.notify_one();
    }

    fn take_poll_now(&self) -> Vec<PollCandidate> {
        let mut due = self.poll_now.lock().unwrap_or_else(|p| p.into_inner());
        due.drain().map(|(_, candidate)| candidate).collect()
    }
}

/// The caller background work acts as on an account's behalf (it reaches the
/// account through the same gateway as a request of its environment would).
pub(crate) fn caller_for(account: &Account) -> Caller {
    Caller {
        environment_id: account.environment_id.clone(),
        token_id: "cigate-events".into(),
    }
}

/// Tells the sources and readers that events were recorded.
pub(crate) fn recorded(state: &AppState, source: &'static str, events: usize, queued: usize) {
    if events == 0 {
        return;
    }
    state
        .metrics
        .events_detected
        .get_or_create(&SourceLabels { source })
        .inc_by(events as u64);
    state.watch.recorded.notify_waiters();
    if queued > 0 {
        state.deliveries.notify_one();
    }
}

/// The job as events carry it: the unified Job without the provider's raw object
/// (kept small, and free of anything the provider would echo).
fn event_job(job: &Job) -> Value {
    let job = Job {
        remote_data: None,
        ..job.clone()
    };
    serde_json::to_value(&job).unwrap_or(Value::Null)
}

/// The events `transition`s of `job` on `account` mean.
fn job_events(account: &Account, job: &Job, body: &Value, changes: &[Transition]) -> Vec<NewEvent> {
    changes
        .iter()
        .filter_map(|change| {
            let (kind, payload) = match change {
                Transition::Record(kind) => (
                    *kind,
                    json!({
                        "resource": JOBS_RESOURCE,
                        "integrated_account_id": account.id,
                        "tenant_id": account.tenant_id,
                        "record": body,
                    }),
                ),
                Transition::Job(kind) => (*kind, body.clone()),
                Transition::StepStarted(id) | Transition::StepFinished(id) => {
                    let kind = if matches!(change, Transition::StepStarted(_)) {
                        event_type::JOB_STEP_STARTED
                    } else {
                        event_type::JOB_STEP_COMPLETED
                    };
                    let step = body["steps"]
                        .as_array()
                        .and_then(|steps| steps.iter().find(|s| s["id"] == id.as_str()))?;
                    (kind, json!({ "job": body, "step": step }))
                }
            };
            Some(NewEvent {
                environment_id: account.environment_id.clone(),
                event_type: kind.to_owned(),
                integrated_account_id: Some(account.id.clone()),
                tenant_id: account.tenant_id.clone(),
                workflow: job.workflow.clone(),
                payload,
                only_webhook: None,
                except_webhook: None,
                order_key: Some(format!("job:{}:{}", account.id, job.id)),
            })
        })
        .collect()
}

/// Runs a job as read from the provider at `read_at` through the change detector.
/// `baseline`: remember its state without events (an account's first poll, so linking
/// does not replay its history). Returns the events recorded.
pub async fn observe(
    state: &AppState,
    account: &Account,
    source: Source,
    read_at: DateTime<Utc>,
    record: &Record,
    baseline: bool,
) -> ApiResult<Vec<Event>> {
    let Some(job) = record.unified.as_job() else {
        return Ok(Vec::new());
    };
    let Some(job_ref) = JobRef::of(job) else {
        return Ok(Vec::new());
    };
    let current = JobState::of(job);
    let body = event_job(job);
    let (events, queued) = state
        .store
        .observe_job(&account.id, &job_ref.key(), read_at, &current, |previous| {
            if baseline {
                return Vec::new();
            }
            job_events(account, job, &body, &transitions(previous, &current))
        })
        .await?;
    recorded(state, source.label(), events.len(), queued);
    Ok(events)
}

/// Keeps the event log within its retention and the outbox gauges current; runs until
/// the server stops it.
pub async fn housekeeping(state: AppState) {
    let mut tick = tokio::time::interval(HOUSEKEEPING_INTERVAL);
    loop {
        tick.tick().await;
        let before = chrono::Duration::from_std(state.config.event_retention)
            .ok()
            .and_then(|keep| Utc::now().checked_sub_signed(keep));
        if let Some(before) = before {
            if let Err(err) = state.store.prune_events(before).await {
                tracing::warn!(error = %err, "pruning the event log failed");
            }
            if let Err(err) = state.store.prune_job_states(before).await {
                tracing::warn!(error = %err, "pruning job states failed");
            }
        }
        // Rate windows last seconds to an hour; a day is far past any of them.
        if let Err(err) = state
            .store
            .prune_rate_units(Utc::now().timestamp() - 86_400)
            .await
        {
            tracing::warn!(error = %err, "pruning shared rate windows failed");
        }
        if let Err(err) = state
            .store
            .prune_ui_sessions(state.config.ui_session_idle)
            .await
        {
            tracing::warn!(error = %err, "pruning idle dashboard sessions failed");
        }
        match state.store.outbox_backlog().await {
            Ok((count, oldest)) => {
                state
                    .metrics
                    .outbox_backlog
                    .set(i64::try_from(count).unwrap_or(i64::MAX));
                let age = oldest.map_or(0.0, |at| {
                    (Utc::now() - at).num_milliseconds().max(0) as f64 / 1000.0
                });
                state.metrics.outbox_oldest_age.set(age);
            }
            Err(err) => tracing::warn!(error = %err, "reading the outbox backlog failed"),
        }
    }
}

/// The unified job a webhook hint names, scoped for a provider read.
pub(crate) fn job_query(job: &JobRef) -> cigate_core::ListQuery {
    cigate_core::ListQuery {
        workspace: Some(job.workspace.clone()),
        repo: Some(job.repo.clone()),
        workflow: Some(job.workflow.clone()),
        ..cigate_core::ListQuery::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cigate_store::{AccountStatus, AuthMethod};

    fn account() -> Account {
        Account {
            id: "acc".into(),
            environment_id: "env".into(),
            tenant_id: Some("acme".into()),
            integration: "buddy".into(),
            status: AccountStatus::Active,
            authentication_method: AuthMethod::ApiKey,
            context: json!({}),
            last_error: None,
            last_forbidden_error: None,
            created_at: Utc::now(),
            updated_at: Utc::now(),
        }
    }

    #[test]
    fn a_failed_job_is_a_record_update_and_a_completion_with_its_conclusion() {
        let job = Job {
            id: "7".into(),
            status: Some("completed".into()),
            conclusion: Some("failed".into()),
            workflow: Some("2".into()),
            ..Job::default()
        };
        let body = json!({"id": "7", "status": "completed", "conclusion": "failed"});
        let before = JobState {
            status: Some("in_progress".into()),
            ..JobState::default()
        };
        let events = job_events(
            &account(),
            &job,
            &body,
            &transitions(Some(&before), &JobState::of(&job)),
        );
        let kinds: Vec<&str> = events.iter().map(|e| e.event_type.as_str()).collect();
        assert_eq!(
            kinds,
            [event_type::RECORD_UPDATED, event_type::JOB_COMPLETED]
        );
        assert_eq!(events[0].payload["resource"], JOBS_RESOURCE);
        assert_eq!(events[0].payload["tenant_id"], "acme");
        assert_eq!(events[0].payload["record"], body);
        assert_eq!(events[1].payload["conclusion"], "failed");
        assert_eq!(events[1].workflow.as_deref(), Some("2"));
    }

    #[test]
    fn events_carry_the_job_without_the_raw_object() {
        let job = Job {
            id: "1".into(),
            remote_data: cigate_core::RemoteData::from_value(&json!({"token": "x"})),
            ..Job::default()
        };
        assert_eq!(event_job(&job), json!({"id": "1"}));
    }
}
