//! Sends queued webhook deliveries: claims due ones from the store's outbox with row
//! leases, POSTs each signed (Standard Webhooks and Truto's signature), and records the
//! attempt. Every instance runs one worker; the store hands out a job's deliveries to a
//! subscription one at a time and in event order, so a refused delivery holds up only
//! its own job's later events (and a slow receiver only its own subscription). A
//! worker that dies mid-delivery loses nothing: the lease expires and a worker sends the
//! same delivery again under the same `webhook-id`.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use chrono::{DateTime, SecondsFormat, Utc};
use cigate_core::events::{
    cdevent, event_type, signature_header, CdEventInput, Transition, WebhookSecret,
};
use cigate_core::model::Job;
use cigate_store::{
    AttemptOutcome, ClaimedDelivery, DeliveryAttempt, Event, NewEvent, WebhookFormat,
};
use rand::Rng;
use serde_json::{json, Value};
use tokio::task::JoinSet;

use crate::error::ApiResult;
use crate::state::AppState;

/// A receiver gets this long to answer.
pub const DELIVERY_TIMEOUT: Duration = Duration::from_secs(15);
/// How often the worker looks for work other instances queued (or retries that came
/// due); events this instance records wake it at once.
const POLL_INTERVAL: Duration = Duration::from_secs(1);
/// Deliveries one instance sends at once (each of a different job or subscription).
const MAX_IN_FLIGHT: usize = 64;
/// First and longest wait before recording an attempt again while the database is away.
const RECORD_BACKOFF: Duration = Duration::from_millis(100);
const MAX_RECORD_BACKOFF: Duration = Duration::from_secs(2);
/// The longest `Retry-After` a receiver can ask for.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 3600);

/// Records `event` with its deliveries and wakes this instance's worker.
pub async fn record(state: &AppState, event: NewEvent) -> ApiResult<Event> {
    let (event, queued) = state.store.record_event(event).await?;
    if queued > 0 {
        state.deliveries.notify_one();
    }
    Ok(event)
}

/// The worker loop; runs until the server stops it.
pub async fn background(state: AppState) {
    let holder = format!("delivery-{}", uuid::Uuid::new_v4());
    let mut running = JoinSet::new();
    // The delivery each running task attempts, so leases nobody attempts can be found.
    let mut attempting: HashMap<tokio::task::Id, String> = HashMap::new();
    // A claim failed: the database may have leased rows whose answer never came back.
    let mut leases_unsure = false;
    loop {
        while let Some(done) = running.try_join_next_with_id() {
            attempting.remove(&finished_id(done));
        }
        if leases_unsure {
            let busy: Vec<&str> = attempting.values().map(String::as_str).collect();
            match state.store.release_leases(&holder, &busy).await {
                Ok(released) => {
                    leases_unsure = false;
                    if released > 0 {
                        tracing::info!(
                            released,
                            "released webhook deliveries a failed claim left leased"
                        );
                    }
                }
                Err(err) => {
                    tracing::warn!(error = %err, "releasing webhook delivery leases failed")
                }
            }
        }
        let room = MAX_IN_FLIGHT.saturating_sub(running.len());
        let claimed = if room == 0 {
            Vec::new()
        } else {
            let limit = u32::try_from(room).unwrap_or(1);
            match state
                .store
                .claim_deliveries(&holder, limit, state.config.webhook_delivery_lease)
                .await
            {
                Ok(claimed) => claimed,
                Err(err) => {
                    tracing::warn!(error = %err, "claiming webhook deliveries failed");
                    leases_unsure = true;
                    Vec::new()
                }
            }
        };
        let idle = claimed.is_empty();
        for delivery in claimed {
            let id = delivery.delivery.id.clone();
            let task = running.spawn(attempt(state.clone(), holder.clone(), delivery));
            attempting.insert(task.id(), id);
        }
        if idle {
            // A finished delivery can unblock the next one of its job.
            tokio::select! {
                _ = state.deliveries.notified() => {}
                _ = tokio::time::sleep(POLL_INTERVAL) => {}
                Some(done) = running.join_next_with_id(), if !running.is_empty() => {
                    attempting.remove(&finished_id(done));
                }
            }
        }
    }
}

/// The id of a finished attempt's task, whether it returned or panicked.
fn finished_id(done: Result<(tokio::task::Id, ()), tokio::task::JoinError>) -> tokio::task::Id {
    match done {
        Ok((id, ())) => id,
        Err(err) => err.id(),
    }
}

/// The request a delivery sends: body and content type.
fn render(claimed: &ClaimedDelivery) -> Option<(Vec<u8>, &'static str)> {
    let event = &claimed.event;
    match claimed.webhook.format {
        WebhookFormat::Cigate => {
            let body = json!({
                "id": event.id,
                "event": event.event_type,
                "payload": event.payload,
                "environment_id": event.environment_id,
                "webhook_id": claimed.webhook.id,
                "created_at": event.created_at.to_rfc3339_opts(SecondsFormat::Micros, true),
            });
            Some((body.to_string().into_bytes(), "application/json"))
        }
        WebhookFormat::Cdevents => {
            let (transition, job_value) = match event.event_type.as_str() {
                event_type::JOB_QUEUED => job_phase(event, event_type::JOB_QUEUED),
                event_type::JOB_STARTED => job_phase(event, event_type::JOB_STARTED),
                event_type::JOB_COMPLETED => job_phase(event, event_type::JOB_COMPLETED),
                event_type::JOB_STEP_STARTED | event_type::JOB_STEP_COMPLETED => {
                    let step = event.payload["step"]["id"].as_str()?.to_owned();
                    let transition = if event.event_type == event_type::JOB_STEP_STARTED {
                        Transition::StepStarted(step)
                    } else {
                        Transition::StepFinished(step)
                    };
                    (transition, event.payload.get("job")?)
                }
                _ => return None,
            };
            let job: Job = serde_json::from_value(job_value.clone()).ok()?;
            let source = format!(
                "/integrated-account/{}",
                event.integrated_account_id.as_deref().unwrap_or("-")
            );
            let cloud_event = cdevent(&CdEventInput {
                id: &claimed.delivery.id,
                source: &source,
                time: event.created_at,
                job: &job,
                transition: &transition,
            })?;
            Some((
                cloud_event.to_string().into_bytes(),
                "application/cloudevents+json",
            ))
        }
    }
}

/// A job phase event's transition and its Job (the payload, or its `record`).
fn job_phase<'a>(event: &'a Event, phase: &'static str) -> (Transition, &'a Value) {
    (
        Transition::Job(phase),
        event.payload.get("record").unwrap_or(&event.payload),
    )
}

/// The wait before the next attempt, or `None` when the schedule is used up.
fn next_attempt(
    state: &AppState,
    round_attempts: u32,
    retry_after: Option<Duration>,
) -> Option<DateTime<Utc>> {
    let schedule = &state.config.webhook_retry_schedule.0;
    let planned = *schedule.get(usize::try_from(round_attempts).ok()?)?;
    let wait = match retry_after {
        Some(asked) => asked.min(MAX_RETRY_AFTER),
        // ±10 % so receivers recovering from an outage are not hit all at once.
        None => planned.mul_f64(rand::thread_rng().gen_range(0.9..=1.1)),
    };
    let wait = chrono::Duration::from_std(wait).ok()?;
    Utc::now().checked_add_signed(wait)
}

/// `Retry-After` as seconds or an HTTP date.
fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let value = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?;
    if let Ok(secs) = value.trim().parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = DateTime::parse_from_rfc2822(value.trim()).ok()?;
    (at.with_timezone(&Utc) - Utc::now()).to_std().ok()
}

async fn attempt(state: AppState, holder: String, claimed: ClaimedDelivery) {
    // The lease was taken a moment ago, at the claim.
    let lease_ends = Instant::now() + state.config.webhook_delivery_lease;
    let started_at = Utc::now();
    let Some((body, content_type)) = render(&claimed) else {
        // Nothing this format can say about the event (a CDEvents subscription and an
        // account event): done, without a request.
        let skipped = DeliveryAttempt {
            at: started_at,
            response_status: None,
            latency_ms: 0,
            error: None,
        };
        finish(
            &state,
            &holder,
            &claimed,
            skipped,
            AttemptOutcome::Delivered,
            lease_ends,
        )
        .await;
        return;
    };
    let Some(current) = claimed.secrets.first() else {
        tracing::error!(webhook_id = %claimed.webhook.id, "webhook has no signing secret");
        return;
    };
    let secrets: Vec<&WebhookSecret> = claimed.secrets.iter().collect();
    let timestamp = started_at.timestamp();
    let clock = Instant::now();
    let sent = state
        .oauth_http
        .post(&claimed.webhook.target_url)
        .timeout(DELIVERY_TIMEOUT)
        .header(reqwest::header::CONTENT_TYPE, content_type)
        .header("webhook-id", &claimed.delivery.id)
        .header("webhook-timestamp", timestamp.to_string())
        .header(
            "webhook-signature",
            signature_header(&secrets, &claimed.delivery.id, timestamp, &body),
        )
        .header("X-Truto-Signature", current.truto_signature(&body))
        .body(body)
        .send()
        .await;
    let latency_ms = u64::try_from(clock.elapsed().as_millis()).unwrap_or(u64::MAX);
    let (response_status, error, wait) = match sent {
        Ok(response) => (
            Some(response.status().as_u16()),
            None,
            retry_after(response.headers()),
        ),
        Err(err) => {
            let reason = if err.is_timeout() {
                "the receiver did not answer in time".to_owned()
            } else {
                format!("could not reach the receiver: {err}")
            };
            (None, Some(reason), None)
        }
    };
    let outcome = match response_status {
        Some(200..=299) => AttemptOutcome::Delivered,
        Some(410) => AttemptOutcome::Gone,
        _ => match next_attempt(&state, claimed.delivery.round_attempts, wait) {
            Some(at) => AttemptOutcome::Retry(at),
            None => AttemptOutcome::Exhausted,
        },
    };
    let record = DeliveryAttempt {
        at: started_at,
        response_status,
        latency_ms,
        error,
    };
    finish(&state, &holder, &claimed, record, outcome, lease_ends).await;
}

/// Records the attempt. While the database is unreachable it tries again (with backoff)
/// until `lease_ends`: a delivery left leased after an outage would wait out its whole
/// lease before any worker sent it again.
async fn finish(
    state: &AppState,
    holder: &str,
    claimed: &ClaimedDelivery,
    attempt: DeliveryAttempt,
    outcome: AttemptOutcome,
    lease_ends: Instant,
) {
    let mut backoff = RECORD_BACKOFF;
    let result = loop {
        let result = state
            .store
            .finish_attempt(&claimed.delivery, holder, attempt.clone(), outcome.clone())
            .await;
        match result {
            Err(err) if err.is_unavailable() && Instant::now() + backoff < lease_ends => {
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_RECORD_BACKOFF);
            }
            result => break result,
        }
    };
    match result {
        Ok(true) => settled(state, claimed, &attempt, &outcome).await,
        // Another worker took the delivery over after our lease ran out; it will
        // send it again under the same id.
        Ok(false) => tracing::warn!(delivery_id = %claimed.delivery.id, "delivery lease lost"),
        Err(err) => {
            tracing::warn!(delivery_id = %claimed.delivery.id, error = %err, "recording a delivery attempt failed")
        }
    }
}

/// What an attempt's outcome means beyond the delivery: metrics, and the events that
/// tell an operator a subscription is in trouble (never sent to that subscription).
async fn settled(
    state: &AppState,
    claimed: &ClaimedDelivery,
    attempt: &DeliveryAttempt,
    outcome: &AttemptOutcome,
) {
    let hook = &claimed.webhook;
    let label = match outcome {
        AttemptOutcome::Delivered => {
            let since = Utc::now() - claimed.event.created_at;
            let secs = since.num_microseconds().unwrap_or(i64::MAX).max(0) as f64 / 1e6;
            state.metrics.delivery_latency.observe(secs);
            "delivered"
        }
        AttemptOutcome::Retry(_) => "retry",
        AttemptOutcome::Exhausted => "failed",
        AttemptOutcome::Gone => "disabled",
    };
    state
        .metrics
        .deliveries
        .get_or_create(&crate::metrics::OutcomeLabels { outcome: label })
        .inc();
    let about = |kind: &str, extra: Value| {
        let mut payload = json!({
            "webhook_id": hook.id,
            "target_url": hook.target_url,
            "delivery_id": claimed.delivery.id,
            "event_id": claimed.event.id,
            "event_type": claimed.event.event_type,
            "last_response_status": attempt.response_status,
            "last_error": attempt.error,
        });
        if let (Some(payload), Value::Object(extra)) = (payload.as_object_mut(), extra) {
            payload.extend(extra);
        }
        NewEvent {
            environment_id: hook.environment_id.clone(),
            event_type: kind.to_owned(),
            integrated_account_id: claimed.event.integrated_account_id.clone(),
            tenant_id: claimed.event.tenant_id.clone(),
            workflow: None,
            payload,
            only_webhook: None,
            except_webhook: Some(hook.id.clone()),
            order_key: Some(format!("webhook:{}", hook.id)),
        }
    };
    let mut events = Vec::new();
    match outcome {
        AttemptOutcome::Exhausted => events.push(about(
            event_type::WEBHOOK_DELIVERY_EXHAUSTED,
            json!({ "attempts": claimed.delivery.attempts.len() + 1 }),
        )),
        AttemptOutcome::Gone => {
            tracing::info!(webhook_id = %hook.id, "receiver answered 410; webhook deactivated");
            events.push(about(
                event_type::WEBHOOK_DISABLED,
                json!({ "reason": "the receiver answered 410 Gone" }),
            ));
        }
        _ => {}
    }
    let failing_too_long = hook.is_active
        && matches!(
            outcome,
            AttemptOutcome::Retry(_) | AttemptOutcome::Exhausted
        )
        && hook.failing_since.is_some_and(|since| {
            chrono::Duration::from_std(state.config.webhook_disable_after)
                .is_ok_and(|limit| Utc::now() - since >= limit)
        });
    if failing_too_long {
        let patch = cigate_store::WebhookPatch {
            is_active: Some(false),
            ..cigate_store::WebhookPatch::default()
        };
        match state
            .store
            .update_webhook(&hook.environment_id, &hook.id, patch)
            .await
        {
            Ok(_) => {
                tracing::info!(webhook_id = %hook.id, "webhook failing too long; deactivated");
                events.push(about(
                    event_type::WEBHOOK_DISABLED,
                    json!({ "reason": "deliveries failed for too long", "failing_since": hook.failing_since }),
                ));
            }
            Err(err) => {
                tracing::warn!(webhook_id = %hook.id, error = %err, "deactivating a failing webhook failed")
            }
        }
    }
    for event in events {
        if let Err(err) = record(state, event).await {
            tracing::warn!(webhook_id = %hook.id, error = %err, "recording a webhook event failed");
        }
    }
}

/// A delivery's public form.
pub fn delivery_view(delivery: &cigate_store::Delivery) -> Value {
    json!({
        "id": delivery.id,
        "event_id": delivery.event_id,
        "webhook_id": delivery.webhook_id,
        "status": delivery.status,
        "attempt_count": delivery.attempts.len(),
        "attempts": delivery.attempts,
        "next_attempt_at": (delivery.status == cigate_store::DeliveryStatus::Pending)
            .then_some(delivery.next_attempt_at),
        "last_error": delivery.last_error,
        "created_at": delivery.created_at,
        "updated_at": delivery.updated_at,
    })
}
