//! Execution state machine. Transitions are computed from the clock, so a big
//! `advance` replays every step at the instant it would have happened.

use chrono::{DateTime, Duration, Utc};

use crate::error::SimError;
use crate::seed::log_lines;
use crate::state::{Action, Execution};

/// Timing of runs, from the configuration.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    pub queue: Duration,
    pub action: Duration,
    pub terminate: Duration,
}

/// Transition worth a webhook delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExecEvent {
    Started,
    Successful,
    Failed,
    Finished,
}

impl ExecEvent {
    pub fn name(self) -> &'static str {
        match self {
            Self::Started => "EXECUTION_STARTED",
            Self::Successful => "EXECUTION_SUCCESSFUL",
            Self::Failed => "EXECUTION_FAILED",
            Self::Finished => "EXECUTION_FINISHED",
        }
    }
}

fn key_of(e: &Execution) -> u64 {
    crate::prng::hs(&e.hex)
}

/// Moves an execution forward to `now`; returns the events that happened.
pub fn step(
    e: &mut Execution,
    actions: &[Action],
    now: DateTime<Utc>,
    t: Timing,
) -> Vec<ExecEvent> {
    let mut events = Vec::new();
    // Bounded: each iteration makes progress or breaks.
    for _ in 0..(actions.len() * 4 + 8) {
        match e.status.as_str() {
            "ENQUEUED" => {
                let due = match e.delay_until {
                    Some(d) => d,
                    None => e.created + t.queue,
                };
                if now < due {
                    break;
                }
                e.status = "INPROGRESS".into();
                e.start_date = Some(due);
                events.push(ExecEvent::Started);
                start_next(e, actions, due);
            }
            "TERMINATING" => {
                let since = e.terminating_since.unwrap_or(now);
                if now < since + t.terminate {
                    break;
                }
                let at = since + t.terminate;
                for ae in &mut e.actions {
                    match ae.status.as_str() {
                        "TERMINATING"
                        | "INPROGRESS"
                        | "WAITING_FOR_APPLY"
                        | "WAITING_FOR_VARIABLES" => {
                            ae.status = "TERMINATED".into();
                            ae.finish_date = Some(at);
                            ae.log.push("Execution terminated by user".into());
                        }
                        "ENQUEUED" | "INITIAL" => ae.status = "NOT_EXECUTED".into(),
                        _ => {}
                    }
                }
                e.status = "TERMINATED".into();
                e.finish_date = Some(at);
                e.terminating_since = None;
                events.push(ExecEvent::Finished);
                break;
            }
            "INPROGRESS" => {
                let Some(i) = e.actions.iter().position(|a| a.status == "INPROGRESS") else {
                    // Waiting on a gate, or nothing left to start.
                    if e.actions.iter().any(|a| a.status.starts_with("WAITING")) {
                        break;
                    }
                    if !start_next(e, actions, now) {
                        finish(e, now, &mut events);
                        break;
                    }
                    continue;
                };
                let started = e.actions[i].start_date.unwrap_or(now);
                let end = started + t.action;
                let Some(action) = actions.iter().find(|a| a.id == e.actions[i].action_id) else {
                    break;
                };
                let failed = e.fail_at == Some(i);
                let lines = log_lines(action, key_of(e) ^ i as u64, failed);
                if now < end {
                    let total = t.action.num_milliseconds().max(1);
                    let done = (now - started).num_milliseconds().max(0);
                    let shown = 1 + (lines.len() as i64 - 1) * done / total;
                    e.actions[i].log = lines.into_iter().take(shown as usize).collect();
                    break;
                }
                let ae = &mut e.actions[i];
                ae.log = lines;
                ae.finish_date = Some(end);
                if failed {
                    ae.status = "FAILED".into();
                    ae.error_message = Some("Error: process exited with code 1".into());
                    for later in e.actions.iter_mut().skip(i + 1) {
                        later.status = "NOT_EXECUTED".into();
                    }
                    e.status = "FAILED".into();
                    e.finish_date = Some(end);
                    events.push(ExecEvent::Failed);
                    events.push(ExecEvent::Finished);
                    break;
                }
                ae.status = "SUCCESSFUL".into();
                if !start_next(e, actions, end) {
                    finish(e, end, &mut events);
                    break;
                }
            }
            _ => break,
        }
    }
    events
}

fn finish(e: &mut Execution, at: DateTime<Utc>, events: &mut Vec<ExecEvent>) {
    e.status = "SUCCESSFUL".into();
    e.finish_date = Some(at);
    events.push(ExecEvent::Successful);
    events.push(ExecEvent::Finished);
}

/// Starts the first pending action; gates wait for APPLY / APPLY_VARIABLES.
fn start_next(e: &mut Execution, actions: &[Action], at: DateTime<Utc>) -> bool {
    let Some(ae) = e
        .actions
        .iter_mut()
        .find(|a| matches!(a.status.as_str(), "ENQUEUED" | "INITIAL"))
    else {
        return false;
    };
    let kind = actions
        .iter()
        .find(|a| a.id == ae.action_id)
        .map(|a| a.action_type.as_str())
        .unwrap_or("BUILD");
    ae.start_date = Some(at);
    ae.log.clear();
    ae.status = match kind {
        "WAIT_FOR_APPLY" => {
            ae.log.push("Waiting for approval".into());
            "WAITING_FOR_APPLY"
        }
        "PASS_ARGUMENTS" => {
            ae.log.push("Waiting for arguments".into());
            "WAITING_FOR_VARIABLES"
        }
        _ => "INPROGRESS",
    }
    .into();
    true
}

/// Applies a PATCH operation (CANCEL, RETRY, APPLY, APPLY_VARIABLES, RUN_DELAYED).
pub fn operate(
    e: &mut Execution,
    operation: &str,
    variables: Vec<(String, String)>,
    now: DateTime<Utc>,
) -> Result<(), SimError> {
    let invalid = |what: &str| {
        Err(SimError::Validation(format!(
            "Operation {operation} is not allowed for an execution with status {what}."
        )))
    };
    match operation {
        "CANCEL" => {
            if e.is_terminal() || e.status == "TERMINATING" {
                return invalid(&e.status);
            }
            e.status = "TERMINATING".into();
            e.terminating_since = Some(now);
            for ae in &mut e.actions {
                if matches!(
                    ae.status.as_str(),
                    "INPROGRESS" | "WAITING_FOR_APPLY" | "WAITING_FOR_VARIABLES"
                ) {
                    ae.status = "TERMINATING".into();
                }
            }
        }
        "RETRY" => {
            if !matches!(e.status.as_str(), "FAILED" | "TERMINATED") {
                return invalid(&e.status);
            }
            e.status = "INPROGRESS".into();
            e.finish_date = None;
            e.fail_at = None;
            for ae in &mut e.actions {
                if ae.status != "SUCCESSFUL" {
                    ae.status = "ENQUEUED".into();
                    ae.start_date = None;
                    ae.finish_date = None;
                    ae.error_message = None;
                    ae.log.clear();
                }
            }
        }
        "APPLY" | "APPLY_VARIABLES" => {
            let gate = if operation == "APPLY" {
                "WAITING_FOR_APPLY"
            } else {
                "WAITING_FOR_VARIABLES"
            };
            let Some(ae) = e.actions.iter_mut().find(|a| a.status == gate) else {
                return invalid(&e.status);
            };
            ae.status = "SUCCESSFUL".into();
            ae.finish_date = Some(now);
            ae.log.push(if operation == "APPLY" {
                "Approved".into()
            } else {
                "Arguments passed".into()
            });
            for (k, v) in variables {
                e.variables.retain(|(key, _)| *key != k);
                e.variables.push((k, v));
            }
            // The next action starts at `now` on the following step.
        }
        "RUN_DELAYED" => {
            if e.status != "ENQUEUED" || e.delay_until.is_none() {
                return invalid(&e.status);
            }
            e.delay_until = Some(now);
        }
        other => {
            return Err(SimError::Validation(format!(
                "Unknown operation {other}; expected CANCEL, RETRY, APPLY, APPLY_VARIABLES or RUN_DELAYED."
            )))
        }
    }
    Ok(())
}
