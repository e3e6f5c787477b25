//! Job events, independent of any provider: what changed between two sightings of a
//! job, the event vocabulary and how subscriptions select from it, the signatures a
//! receiver verifies (Standard Webhooks and Truto's), and the CDEvents form.
//!
//! The change detector is a pure function of the last state it remembered and the job
//! as the provider reports it now, so every source (a webhook hint re-read through the
//! provider, a poll) and every instance reach the same events for the same change.

use chrono::{DateTime, SecondsFormat, Utc};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sha2::Sha256;

use crate::model::{job_conclusion, job_status, Job, Step};

/// The event names cigate emits (`event` of a delivery, `event_types` of a
/// subscription).
pub mod event_type {
    pub const JOB_QUEUED: &str = "job:queued";
    pub const JOB_STARTED: &str = "job:started";
    pub const JOB_COMPLETED: &str = "job:completed";
    /// A step (a Buddy action execution) of a job started or finished: payload
    /// `{ "job": Job, "step": Step }` (CDEvents `taskrun`).
    pub const JOB_STEP_STARTED: &str = "job:step_started";
    pub const JOB_STEP_COMPLETED: &str = "job:step_completed";
    pub const RECORD_CREATED: &str = "record:created";
    pub const RECORD_UPDATED: &str = "record:updated";
    pub const ACCOUNT_CREATED: &str = "integrated_account:created";
    pub const ACCOUNT_UPDATED: &str = "integrated_account:updated";
    pub const ACCOUNT_ACTIVE: &str = "integrated_account:active";
    pub const ACCOUNT_REACTIVATED: &str = "integrated_account:reactivated";
    pub const ACCOUNT_AUTHENTICATION_ERROR: &str = "integrated_account:authentication_error";
    pub const ACCOUNT_DELETED: &str = "integrated_account:deleted";
    pub const WEBHOOK_DELIVERY_EXHAUSTED: &str = "webhook:delivery_exhausted";
    pub const WEBHOOK_DISABLED: &str = "webhook:disabled";
    pub const TEST: &str = "test";

    /// Every name, for validating subscriptions.
    pub const ALL: &[&str] = &[
        JOB_QUEUED,
        JOB_STARTED,
        JOB_COMPLETED,
        JOB_STEP_STARTED,
        JOB_STEP_COMPLETED,
        RECORD_CREATED,
        RECORD_UPDATED,
        ACCOUNT_CREATED,
        ACCOUNT_UPDATED,
        ACCOUNT_ACTIVE,
        ACCOUNT_REACTIVATED,
        ACCOUNT_AUTHENTICATION_ERROR,
        ACCOUNT_DELETED,
        WEBHOOK_DELIVERY_EXHAUSTED,
        WEBHOOK_DISABLED,
        TEST,
    ];
}

/// A subscription's `event_types` entry: an exact name or a prefix ending in `*`
/// (`job:*`, `integrated_account:*`, `*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventPattern(String);

impl EventPattern {
    /// Refuses a name cigate never emits and a prefix that selects nothing, so a typo
    /// is an error at subscription time instead of silence forever.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let raw = raw.trim();
        let known = match raw.strip_suffix('*') {
            Some(prefix) => event_type::ALL.iter().any(|name| name.starts_with(prefix)),
            None => event_type::ALL.contains(&raw),
        };
        if known {
            Ok(Self(raw.to_owned()))
        } else {
            Err(format!(
                "`{raw}` is not an event type; known: {} (a trailing `*` matches a prefix)",
                event_type::ALL.join(", ")
            ))
        }
    }

    pub fn matches(&self, event: &str) -> bool {
        match self.0.strip_suffix('*') {
            Some(prefix) => event.starts_with(prefix),
            None => self.0 == event,
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// One job as the change detector keys it: unique within an account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobRef {
    pub workspace: String,
    pub repo: String,
    pub workflow: String,
    pub job: String,
}

impl JobRef {
    /// The job a unified [`Job`] is, when it says where it belongs.
    pub fn of(job: &Job) -> Option<Self> {
        let part = |v: &Option<String>| v.as_deref().filter(|s| !s.is_empty()).map(str::to_owned);
        Some(Self {
            workspace: part(&job.workspace)?,
            repo: part(&job.repo)?,
            workflow: part(&job.workflow)?,
            job: Some(job.id.clone()).filter(|id| !id.is_empty())?,
        })
    }

    /// The detector's key (`/` cannot occur in any part unescaped: each is escaped).
    pub fn key(&self) -> String {
        [&self.workspace, &self.repo, &self.workflow, &self.job]
            .map(|part| part.replace('%', "%25").replace('/', "%2F"))
            .join("/")
    }
}

/// What a provider's webhook delivery says, before anything in it is believed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HookHint {
    /// Shared secrets carried in the body (headers and query are checked by the
    /// server whatever the provider).
    pub secrets: Vec<String>,
    /// The job it claims changed; `None` when the payload does not say precisely
    /// (the account is then polled at once instead).
    pub job: Option<JobRef>,
}

/// Where a job is in its life, in the order it moves through it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Phase {
    Queued,
    Started,
    Completed,
}

fn phase(status: Option<&str>) -> Option<Phase> {
    match status? {
        job_status::QUEUED => Some(Phase::Queued),
        job_status::IN_PROGRESS | job_status::WAITING => Some(Phase::Started),
        job_status::COMPLETED => Some(Phase::Completed),
        _ => None,
    }
}

/// What the detector remembers of one job between two sightings.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct JobState {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conclusion: Option<String>,
    /// Runs of the same job (a retry restarts it under the same id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempts: Option<u32>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub steps: Vec<StepState>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct StepState {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conclusion: Option<String>,
}

impl JobState {
    pub fn of(job: &Job) -> Self {
        Self {
            status: job.status.clone(),
            conclusion: job.conclusion.clone(),
            attempts: job.attempts,
            steps: job
                .steps
                .iter()
                .flatten()
                .map(|step| StepState {
                    id: step.id.clone(),
                    status: step.status.clone(),
                    conclusion: step.conclusion.clone(),
                })
                .collect(),
        }
    }

    /// Nothing seen yet of this run: what a first sighting and a restart compare with.
    fn fresh() -> Self {
        Self::default()
    }
}

/// One thing that happened to a job, in the order it happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transition {
    /// `job:queued`, `job:started` or `job:completed`.
    Job(&'static str),
    /// `record:created` (first sighting) or `record:updated`.
    Record(&'static str),
    /// A step (an action execution) started or finished (CDEvents `taskrun`).
    StepStarted(String),
    StepFinished(String),
}

/// What changed between `previous` (`None`: never seen) and `current`, in order: the
/// record event first, then the job's phases it passed through (a job seen queued and
/// then completed also gets `job:started`), then its steps'. A job seen again at an
/// earlier phase or with more attempts was re-run: its phases are reported again.
/// The same state seen twice yields nothing, so duplicates of a hint cost nothing.
pub fn transitions(previous: Option<&JobState>, current: &JobState) -> Vec<Transition> {
    let mut out = Vec::new();
    match previous {
        None => out.push(Transition::Record(event_type::RECORD_CREATED)),
        Some(prev) if prev != current => out.push(Transition::Record(event_type::RECORD_UPDATED)),
        Some(_) => return out,
    }
    let now = phase(current.status.as_deref());
    let fresh = JobState::fresh();
    let restarted = previous.is_some_and(|prev| {
        let then = phase(prev.status.as_deref());
        matches!((then, now), (Some(then), Some(now)) if now < then)
            || matches!((prev.attempts, current.attempts), (Some(a), Some(b)) if b > a)
    });
    let base = match previous {
        Some(prev) if !restarted => prev,
        _ => &fresh,
    };
    if let Some(now) = now {
        // A run first seen (or re-run) reports where it is, and `started` before
        // `completed`; one seen before reports every phase it moved through.
        let from = match phase(base.status.as_deref()) {
            Some(then) => next(then),
            None if now == Phase::Queued => Some(Phase::Queued),
            None => Some(Phase::Started),
        };
        let mut at = from;
        while let Some(p) = at.filter(|p| *p <= now) {
            out.push(Transition::Job(phase_event(p)));
            at = next(p);
        }
    }
    for step in &current.steps {
        let before = base.steps.iter().find(|s| s.id == step.id);
        let was = before.and_then(|s| phase(s.status.as_deref()));
        let is = phase(step.status.as_deref());
        if step.conclusion.as_deref() == Some(job_conclusion::SKIPPED) {
            continue;
        }
        let started = |p: Option<Phase>| p.is_some_and(|p| p >= Phase::Started);
        if started(is) && !started(was) {
            out.push(Transition::StepStarted(step.id.clone()));
        }
        if is == Some(Phase::Completed) && was != Some(Phase::Completed) {
            out.push(Transition::StepFinished(step.id.clone()));
        }
    }
    out
}

fn next(p: Phase) -> Option<Phase> {
    match p {
        Phase::Queued => Some(Phase::Started),
        Phase::Started => Some(Phase::Completed),
        Phase::Completed => None,
    }
}

fn phase_event(p: Phase) -> &'static str {
    match p {
        Phase::Queued => event_type::JOB_QUEUED,
        Phase::Started => event_type::JOB_STARTED,
        Phase::Completed => event_type::JOB_COMPLETED,
    }
}

/// A subscription's signing secret: `whsec_` + base64 of its key bytes, as the
/// Standard Webhooks libraries expect it.
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookSecret(Vec<u8>);

impl std::fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WebhookSecret(<redacted>)")
    }
}

const SECRET_PREFIX: &str = "whsec_";
/// Standard Webhooks asks for 24 to 64 bytes of key.
const MIN_SECRET_BYTES: usize = 24;
const MAX_SECRET_BYTES: usize = 64;

impl WebhookSecret {
    /// From random bytes the caller drew (the core does no I/O).
    pub fn from_bytes(bytes: Vec<u8>) -> Result<Self, String> {
        if (MIN_SECRET_BYTES..=MAX_SECRET_BYTES).contains(&bytes.len()) {
            Ok(Self(bytes))
        } else {
            Err(format!(
                "a webhook secret holds {MIN_SECRET_BYTES} to {MAX_SECRET_BYTES} bytes, not {}",
                bytes.len()
            ))
        }
    }

    /// `whsec_<base64>`, or the bare base64 some senders show.
    pub fn parse(text: &str) -> Result<Self, String> {
        use base64::Engine;
        let encoded = text.strip_prefix(SECRET_PREFIX).unwrap_or(text);
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .map_err(|_| "a webhook secret is `whsec_` followed by base64".to_owned())?;
        Self::from_bytes(bytes)
    }

    /// The form shown to the subscriber once.
    pub fn expose(&self) -> String {
        use base64::Engine;
        format!(
            "{SECRET_PREFIX}{}",
            base64::engine::general_purpose::STANDARD.encode(&self.0)
        )
    }

    /// One Standard Webhooks signature, `v1,<base64 HMAC-SHA256(key, id.timestamp.body)>`.
    pub fn sign(&self, msg_id: &str, timestamp: i64, body: &[u8]) -> String {
        use base64::Engine;
        let mut mac = keyed_mac(&self.0);
        mac.update(msg_id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        format!(
            "v1,{}",
            base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
        )
    }

    /// `X-Truto-Signature`: `format=sha256,v=<hex HMAC-SHA256(secret, body)>`, keyed by
    /// the secret as the subscriber was shown it.
    pub fn truto_signature(&self, body: &[u8]) -> String {
        let mut mac = keyed_mac(self.expose().as_bytes());
        mac.update(body);
        format!(
            "format=sha256,v={}",
            hex_lower(&mac.finalize().into_bytes())
        )
    }
}

/// HMAC-SHA256 keyed by `key` of any length, prepared as RFC 2104 says (a key longer
/// than the block is hashed first, a shorter one padded with zeros), so no fallible
/// constructor is needed.
fn keyed_mac(key: &[u8]) -> Hmac<Sha256> {
    use hmac::digest::KeyInit;
    use sha2::Digest;
    let mut block = [0u8; 64];
    if key.len() > block.len() {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    <Hmac<Sha256> as KeyInit>::new(&block.into())
}

fn hex_lower(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::new(), |mut out, b| {
        let _ = write!(out, "{b:02x}");
        out
    })
}

/// The `webhook-signature` header: one signature per secret in force (two for a day
/// after a rotation), space-separated, as Standard Webhooks verifiers accept.
pub fn signature_header(
    secrets: &[&WebhookSecret],
    msg_id: &str,
    timestamp: i64,
    body: &[u8],
) -> String {
    secrets
        .iter()
        .map(|secret| secret.sign(msg_id, timestamp, body))
        .collect::<Vec<_>>()
        .join(" ")
}

/// CDEvents spec version of the events cigate sends.
pub const CDEVENTS_SPEC_VERSION: &str = "0.5.0";

/// CDEvents `outcome` of a finished job or step.
pub fn cdevents_outcome(conclusion: Option<&str>) -> &'static str {
    match conclusion {
        Some(job_conclusion::PASSED) | Some(job_conclusion::SKIPPED) => "success",
        Some(job_conclusion::FAILED)
        | Some(job_conclusion::TIMEOUT)
        | Some(job_conclusion::PARTIAL) => "failure",
        Some(job_conclusion::CANCELLED) => "cancel",
        _ => "error",
    }
}

/// What a CDEvent is about, with the ids it needs.
pub struct CdEventInput<'a> {
    /// The delivery's stable id (`webhook-id`), used as CloudEvents and CDEvents id.
    pub id: &'a str,
    /// Who observed it: a URI naming the account, e.g. `/integrated-account/<id>`.
    pub source: &'a str,
    pub time: DateTime<Utc>,
    pub job: &'a Job,
    pub transition: &'a Transition,
}

/// The transition as a CDEvent carried in a structured-mode CloudEvent 1.0
/// (`application/cloudevents+json`); `None` for transitions CDEvents has no event for
/// (`record:*`).
pub fn cdevent(input: &CdEventInput<'_>) -> Option<Value> {
    let job = input.job;
    let pipeline_run = format!("{}/jobs/{}", input.source, job.id);
    let (ty, subject) = match input.transition {
        Transition::Job(event) => {
            let predicate = match *event {
                event_type::JOB_QUEUED => "queued",
                event_type::JOB_STARTED => "started",
                event_type::JOB_COMPLETED => "finished",
                _ => return None,
            };
            let mut content = json!({ "pipelineName": pipeline_name(job) });
            if let Some(url) = &job.url {
                content["url"] = json!(url);
            }
            if predicate == "finished" {
                content["outcome"] = json!(cdevents_outcome(job.conclusion.as_deref()));
            }
            (
                format!("dev.cdevents.pipelinerun.{predicate}.0.3.0"),
                json!({ "id": job.id, "source": input.source, "type": "pipelineRun", "content": content }),
            )
        }
        Transition::StepStarted(step_id) | Transition::StepFinished(step_id) => {
            let finished = matches!(input.transition, Transition::StepFinished(_));
            let step = job.steps.iter().flatten().find(|s| &s.id == step_id);
            let mut content = json!({
                "taskName": step.and_then(|s: &Step| s.name.clone()).unwrap_or_else(|| step_id.clone()),
                "pipelineRun": { "id": job.id, "source": input.source },
            });
            if let Some(url) = &job.url {
                content["url"] = json!(url);
            }
            if finished {
                content["outcome"] =
                    json!(cdevents_outcome(step.and_then(|s| s.conclusion.as_deref())));
            }
            let predicate = if finished { "finished" } else { "started" };
            (
                format!("dev.cdevents.taskrun.{predicate}.0.3.0"),
                json!({ "id": format!("{}/steps/{step_id}", job.id), "source": pipeline_run, "type": "taskRun", "content": content }),
            )
        }
        Transition::Record(_) => return None,
    };
    let time = input.time.to_rfc3339_opts(SecondsFormat::Millis, true);
    let data = json!({
        "context": {
            "specversion": CDEVENTS_SPEC_VERSION,
            "id": input.id,
            "source": input.source,
            "type": ty,
            "timestamp": time,
        },
        "subject": subject,
    });
    Some(json!({
        "specversion": "1.0",
        "id": input.id,
        "source": input.source,
        "type": ty,
        "time": time,
        "datacontenttype": "application/json",
        "data": data,
    }))
}

fn pipeline_name(job: &Job) -> String {
    job.name
        .clone()
        .or_else(|| job.workflow.clone())
        .unwrap_or_else(|| job.id.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(status: &str, conclusion: Option<&str>, steps: &[(&str, &str)]) -> JobState {
        JobState {
            status: Some(status.into()),
            conclusion: conclusion.map(Into::into),
            attempts: Some(1),
            steps: steps
                .iter()
                .map(|(id, status)| StepState {
                    id: (*id).into(),
                    status: Some((*status).into()),
                    conclusion: (*status == "completed").then(|| "passed".into()),
                })
                .collect(),
        }
    }

    fn jobs(t: &[Transition]) -> Vec<&'static str> {
        t.iter()
            .filter_map(|t| match t {
                Transition::Job(e) | Transition::Record(e) => Some(*e),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_job_moving_forward_reports_each_phase_once() {
        let queued = state("queued", None, &[("a", "queued")]);
        let first = transitions(None, &queued);
        assert_eq!(jobs(&first), ["record:created", "job:queued"]);
        let running = state("in_progress", None, &[("a", "in_progress")]);
        let t = transitions(Some(&queued), &running);
        assert_eq!(jobs(&t), ["record:updated", "job:started"]);
        assert!(t.contains(&Transition::StepStarted("a".into())));
        let done = state("completed", Some("failed"), &[("a", "completed")]);
        let t = transitions(Some(&running), &done);
        assert_eq!(jobs(&t), ["record:updated", "job:completed"]);
        assert_eq!(t.last(), Some(&Transition::StepFinished("a".into())));
        assert!(
            transitions(Some(&done), &done).is_empty(),
            "seen twice: nothing"
        );
    }

    #[test]
    fn missed_phases_are_filled_in_order() {
        let queued = state("queued", None, &[]);
        let done = state("completed", Some("passed"), &[("a", "completed")]);
        let t = transitions(Some(&queued), &done);
        assert_eq!(jobs(&t), ["record:updated", "job:started", "job:completed"]);
        assert_eq!(
            &t[3..],
            [
                Transition::StepStarted("a".into()),
                Transition::StepFinished("a".into())
            ]
        );
        // First seen finished: started, then completed.
        assert_eq!(
            jobs(&transitions(None, &done)),
            ["record:created", "job:started", "job:completed"]
        );
        // Waiting on an approval counts as started.
        let waiting = state("waiting", None, &[]);
        assert_eq!(
            jobs(&transitions(Some(&queued), &waiting)),
            ["record:updated", "job:started"]
        );
    }

    #[test]
    fn a_rerun_is_reported_again() {
        let done = state("completed", Some("failed"), &[("a", "completed")]);
        let again = state("in_progress", None, &[("a", "in_progress")]);
        let t = transitions(Some(&done), &again);
        assert_eq!(jobs(&t), ["record:updated", "job:started"]);
        assert!(t.contains(&Transition::StepStarted("a".into())));
        // A whole retry between two sightings: more attempts, same phase.
        let mut retried = state("completed", Some("passed"), &[("a", "completed")]);
        retried.attempts = Some(2);
        assert_eq!(
            jobs(&transitions(Some(&done), &retried)),
            ["record:updated", "job:started", "job:completed"]
        );
    }

    #[test]
    fn raw_statuses_and_skipped_steps_update_only_the_record() {
        let odd = state("ENQUEUED_SOMEWHERE", None, &[]);
        assert_eq!(jobs(&transitions(None, &odd)), ["record:created"]);
        let mut skipped = state("completed", Some("passed"), &[]);
        skipped.steps.push(StepState {
            id: "s".into(),
            status: Some("completed".into()),
            conclusion: Some("skipped".into()),
        });
        let t = transitions(Some(&state("completed", Some("passed"), &[])), &skipped);
        assert_eq!(t, [Transition::Record(event_type::RECORD_UPDATED)]);
    }

    #[test]
    fn patterns_match_names_and_prefixes_and_refuse_typos() {
        let jobs = EventPattern::parse("job:*").unwrap();
        assert!(jobs.matches("job:completed"));
        assert!(!jobs.matches("record:created"));
        assert!(EventPattern::parse("*").unwrap().matches("test"));
        assert!(EventPattern::parse("job:completed")
            .unwrap()
            .matches("job:completed"));
        assert!(EventPattern::parse("job:finished").is_err());
        assert!(EventPattern::parse("jobs:*").is_err());
    }

    /// The reference vector of the Standard Webhooks specification.
    #[test]
    fn standard_webhooks_reference_signature() {
        let secret = WebhookSecret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        assert_eq!(
            secret.sign(
                "msg_p5jXN8AQM9LWM0D4loKWxJek",
                1614265330,
                br#"{"test": 2432232314}"#
            ),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
        assert_eq!(secret.expose(), "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw");
        let other = WebhookSecret::from_bytes(vec![7; 32]).unwrap();
        let header = signature_header(&[&secret, &other], "m", 1, b"{}");
        assert_eq!(header.split(' ').count(), 2);
        assert!(WebhookSecret::from_bytes(vec![0; 8]).is_err());
        assert!(WebhookSecret::parse("whsec_not base64").is_err());
        assert!(!format!("{secret:?}").contains("MfKQ"));
        let truto = secret.truto_signature(b"{}");
        assert!(truto.starts_with("format=sha256,v="));
        assert_eq!(truto.len(), "format=sha256,v=".len() + 64);
    }

    #[test]
    fn keys_of_any_length_give_hmac() {
        for len in [0, 1, 24, 50, 63, 64, 65, 94, 200] {
            let key = vec![0x5a; len];
            let mut ours = keyed_mac(&key);
            let mut reference = Hmac::<Sha256>::new_from_slice(&key).unwrap();
            ours.update(b"body");
            reference.update(b"body");
            assert_eq!(
                ours.finalize().into_bytes(),
                reference.finalize().into_bytes(),
                "{len}"
            );
        }
    }

    #[test]
    fn cdevents_carry_the_job_and_its_outcome() {
        let job = Job {
            id: "42".into(),
            name: Some("Deploy".into()),
            status: Some("completed".into()),
            conclusion: Some("failed".into()),
            url: Some("https://app.buddy.works/acme/shop/pipelines/pipeline/7/execution/42".into()),
            steps: Some(vec![Step {
                id: "9".into(),
                name: Some("Build".into()),
                status: Some("completed".into()),
                conclusion: Some("cancelled".into()),
                ..Default::default()
            }]),
            ..Default::default()
        };
        let time = DateTime::parse_from_rfc3339("2026-12-01T10:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let finished = Transition::Job(event_type::JOB_COMPLETED);
        let ce = cdevent(&CdEventInput {
            id: "evt_1",
            source: "/integrated-account/acc",
            time,
            job: &job,
            transition: &finished,
        })
        .unwrap();
        assert_eq!(ce["specversion"], "1.0");
        assert_eq!(ce["id"], "evt_1");
        assert_eq!(ce["type"], "dev.cdevents.pipelinerun.finished.0.3.0");
        assert_eq!(ce["data"]["context"]["type"], ce["type"]);
        assert_eq!(ce["data"]["context"]["specversion"], "0.5.0");
        assert_eq!(ce["data"]["subject"]["content"]["outcome"], "failure");
        assert_eq!(ce["data"]["subject"]["content"]["pipelineName"], "Deploy");
        let step = Transition::StepFinished("9".into());
        let ce = cdevent(&CdEventInput {
            id: "evt_2",
            source: "/integrated-account/acc",
            time,
            job: &job,
            transition: &step,
        })
        .unwrap();
        assert_eq!(ce["type"], "dev.cdevents.taskrun.finished.0.3.0");
        assert_eq!(ce["data"]["subject"]["content"]["outcome"], "cancel");
        assert_eq!(ce["data"]["subject"]["content"]["taskName"], "Build");
        assert_eq!(ce["data"]["subject"]["content"]["pipelineRun"]["id"], "42");
        assert!(cdevent(&CdEventInput {
            id: "evt_3",
            source: "/integrated-account/acc",
            time,
            job: &job,
            transition: &Transition::Record(event_type::RECORD_UPDATED),
        })
        .is_none());
    }

    proptest::proptest! {
        /// Sightings of one run whose status only moves forward (with repeats, as
        /// webhooks and polls overlap) report each phase exactly once, in order, and
        /// every phase up to the last one seen.
        #[test]
        fn forward_sightings_report_each_phase_once(
            steps in proptest::collection::vec(0usize..3, 1..12)
        ) {
            let mut seen: Vec<usize> = steps;
            seen.sort_unstable();
            let names = ["queued", "in_progress", "completed"];
            let mut previous: Option<JobState> = None;
            let mut emitted = Vec::new();
            for &i in &seen {
                let current = state(names[i], (i == 2).then_some("passed"), &[]);
                for t in transitions(previous.as_ref(), &current) {
                    if let Transition::Job(e) = t {
                        emitted.push(e);
                    }
                }
                previous = Some(current);
            }
            let first = seen[0].min(1);
            let last = seen[seen.len() - 1];
            let expected: Vec<&str> = (first..=last)
                .map(|i| [event_type::JOB_QUEUED, event_type::JOB_STARTED, event_type::JOB_COMPLETED][i])
                .filter(|e| seen[0] == 0 || *e != event_type::JOB_QUEUED)
                .collect();
            proptest::prop_assert_eq!(emitted, expected);
        }
    }
}
