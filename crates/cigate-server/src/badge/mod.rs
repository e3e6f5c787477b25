//! Status badges: the latest job of one branch, drawn as a shields-style SVG or
//! answered in shields.io's endpoint schema.
//!
//! # The one short-lived cache of CI/CD data in cigate
//! Everywhere else cigate reads the provider live and keeps nothing of what it read. A
//! badge is the exception: it sits in READMEs and dashboards and may be viewed thousands
//! of times a minute, while an account's provider budget is small. So [`Views`] keeps
//! each badge's answer in memory for `CIGATE_BADGE_CACHE_TTL` (15 s by default), and
//! concurrent views of one badge wait for the one provider call in flight instead of
//! making their own. A failed call is never kept: the next view tries again (still one
//! call at a time per badge). The cache is per instance and holds only what a badge
//! draws (label, message, colour), never a job.

pub mod svg;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use cigate_core::model::{job_conclusion, job_status};
use cigate_core::{Job, JobFilters, ListQuery, Resource};
use cigate_store::Badge;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::gateway::Gateway;
use crate::state::AppState;

/// The label of a badge created without one.
pub const DEFAULT_LABEL: &str = "build";

/// Badges whose answers are kept at once; beyond, the least used are dropped first.
const MAX_KEPT: u64 = 10_000;

/// The longest a view waits for the provider: an `<img>` is not worth the 30 s an API
/// call may take, and coalesced views all wait as long as the first.
const MAX_WAIT: Duration = Duration::from_secs(10);

/// What the latest job of the badge's branch says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Passing,
    Failing,
    Running,
    Cancelled,
    NoRuns,
    /// The provider could not be asked, or answered a state the badge cannot name.
    Unknown,
}

impl Outcome {
    /// From the unified Job (`None`: the branch has no job). A job that is queued,
    /// waiting (approval, variables) or in progress is `running`; a completed one
    /// says its conclusion: `passed` passing; `failed`, `timeout` and `partial`
    /// failing; `cancelled` cancelled. A `skipped` job ran nothing, so it reads like a
    /// branch without runs (`no runs`). A raw provider status or conclusion cigate
    /// does not normalise is `unknown` rather than a guess.
    pub fn of_latest(job: Option<&Job>) -> Self {
        let Some(job) = job else {
            return Outcome::NoRuns;
        };
        match job.status.as_deref() {
            Some(job_status::QUEUED | job_status::IN_PROGRESS | job_status::WAITING) => {
                Outcome::Running
            }
            Some(job_status::COMPLETED) => match job.conclusion.as_deref() {
                Some(job_conclusion::PASSED) => Outcome::Passing,
                Some(
                    job_conclusion::FAILED | job_conclusion::TIMEOUT | job_conclusion::PARTIAL,
                ) => Outcome::Failing,
                Some(job_conclusion::CANCELLED) => Outcome::Cancelled,
                Some(job_conclusion::SKIPPED) => Outcome::NoRuns,
                _ => Outcome::Unknown,
            },
            _ => Outcome::Unknown,
        }
    }

    pub fn message(self) -> &'static str {
        match self {
            Outcome::Passing => "passing",
            Outcome::Failing => "failing",
            Outcome::Running => "running",
            Outcome::Cancelled => "cancelled",
            Outcome::NoRuns => "no runs",
            Outcome::Unknown => "unknown",
        }
    }

    /// shields.io's colour name (for the endpoint schema) and its hex value (for the
    /// SVG), so both forms of a badge look alike.
    pub fn color(self) -> (&'static str, &'static str) {
        match self {
            Outcome::Passing => ("brightgreen", "#4c1"),
            Outcome::Failing => ("red", "#e05d44"),
            Outcome::Running => ("yellow", "#dfb317"),
            Outcome::Cancelled | Outcome::NoRuns | Outcome::Unknown => ("lightgrey", "#9f9f9f"),
        }
    }
}

/// One answer of a badge in both forms, with the entity tag of each.
#[derive(Debug)]
pub struct Drawn {
    /// When the provider was asked, so HTTP caches keep the answer only for what is
    /// left of its time here.
    pub at: Instant,
    pub svg: Bytes,
    pub svg_etag: String,
    pub json: Bytes,
    pub json_etag: String,
}

impl Drawn {
    /// `failed`: the provider could not be asked; the answer says `unknown` and the
    /// JSON form carries shields.io's `isError`.
    pub fn new(label: &str, outcome: Outcome, failed: bool) -> Self {
        let (color_name, color_hex) = outcome.color();
        let svg = Bytes::from(svg::flat(label, outcome.message(), color_hex));
        let mut json = json!({
            "schemaVersion": 1,
            "label": label,
            "message": outcome.message(),
            "color": color_name,
        });
        if failed {
            json["isError"] = Value::Bool(true);
        }
        let json = Bytes::from(json.to_string());
        Self {
            at: Instant::now(),
            svg_etag: etag(&svg),
            svg,
            json_etag: etag(&json),
            json,
        }
    }
}

/// A strong entity tag of the body: equal bodies (the same status again after the
/// cache renewed) keep their tag, so a client's copy stays valid.
fn etag(body: &[u8]) -> String {
    format!("\"{}\"", hex::encode(&Sha256::digest(body)[..16]))
}

/// The label a badge is drawn with.
pub fn label_of(badge: &Badge) -> &str {
    badge.label.as_deref().unwrap_or(DEFAULT_LABEL)
}

/// The kept answers of badges, by badge id (see the module documentation).
#[derive(Clone)]
pub struct Views {
    cache: moka::future::Cache<String, Arc<Drawn>>,
    ttl: Duration,
}

impl Views {
    pub fn new(ttl: Duration) -> Self {
        Self {
            cache: moka::future::Cache::builder()
                .max_capacity(MAX_KEPT)
                .time_to_live(ttl)
                .build(),
            ttl,
        }
    }

    /// How long `drawn` stays kept here, in whole seconds (rounded down): the
    /// `max-age` of its `Cache-Control`, so a copy downstream is never older than an
    /// answer kept here may be.
    pub fn seconds_left(&self, drawn: &Drawn) -> u64 {
        self.ttl.saturating_sub(drawn.at.elapsed()).as_secs()
    }

    /// The badge's answer: kept, or read from the provider once for every view asking
    /// meanwhile. The error is shared by those views, and not kept.
    pub async fn answer(
        &self,
        state: &AppState,
        badge: &Badge,
    ) -> Result<Arc<Drawn>, Arc<ApiError>> {
        self.cache
            .try_get_with(badge.id.clone(), async {
                let outcome = latest(state, badge).await?;
                Ok(Arc::new(Drawn::new(label_of(badge), outcome, false)))
            })
            .await
    }

    /// After the badge is deleted here (other instances drop it within the TTL).
    pub async fn forget(&self, id: &str) {
        self.cache.invalidate(id).await;
    }
}

/// Reads the latest job of the badge's branch through the account gateway, as the
/// badge's environment (a view carries no token).
async fn latest(state: &AppState, badge: &Badge) -> ApiResult<Outcome> {
    let caller = Caller {
        environment_id: badge.environment_id.clone(),
        token_id: "badge".into(),
    };
    let timeout = state.default_timeout().min(MAX_WAIT);
    let gateway = Gateway::open(state, &caller, &badge.account_id, timeout).await?;
    let query = ListQuery {
        workspace: Some(badge.workspace.clone()),
        repo: Some(badge.repo.clone()),
        workflow: badge.workflow.clone(),
        limit: 1,
        filters: JobFilters {
            branch: Some(badge.branch.clone()),
            ..JobFilters::default()
        },
        remote_query: Vec::new(),
    };
    let page = gateway
        .call(|provider| {
            let query = &query;
            async move { provider.list(Resource::Jobs, query, None).await }
        })
        .await?;
    Ok(Outcome::of_latest(
        page.items.first().and_then(|job| job.unified.as_job()),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(status: &str, conclusion: Option<&str>) -> Job {
        Job {
            id: "1".into(),
            status: Some(status.into()),
            conclusion: conclusion.map(str::to_owned),
            ..Job::default()
        }
    }

    #[test]
    fn the_latest_job_names_the_outcome() {
        assert_eq!(Outcome::of_latest(None), Outcome::NoRuns);
        for (status, conclusion, expected) in [
            ("queued", None, Outcome::Running),
            ("in_progress", None, Outcome::Running),
            ("waiting", None, Outcome::Running),
            ("completed", Some("passed"), Outcome::Passing),
            ("completed", Some("failed"), Outcome::Failing),
            ("completed", Some("timeout"), Outcome::Failing),
            ("completed", Some("partial"), Outcome::Failing),
            ("completed", Some("cancelled"), Outcome::Cancelled),
            ("completed", Some("skipped"), Outcome::NoRuns),
            ("completed", Some("SOMETHING_NEW"), Outcome::Unknown),
            ("completed", None, Outcome::Unknown),
            ("SOMETHING_NEW", None, Outcome::Unknown),
        ] {
            let job = job(status, conclusion);
            assert_eq!(Outcome::of_latest(Some(&job)), expected, "{job:?}");
        }
        assert_eq!(Outcome::of_latest(Some(&Job::default())), Outcome::Unknown);
    }

    #[test]
    fn messages_and_colours_follow_shields() {
        assert_eq!(Outcome::Passing.message(), "passing");
        assert_eq!(Outcome::NoRuns.message(), "no runs");
        assert_eq!(Outcome::Passing.color(), ("brightgreen", "#4c1"));
        assert_eq!(Outcome::Failing.color(), ("red", "#e05d44"));
        assert_eq!(Outcome::Running.color(), ("yellow", "#dfb317"));
        assert_eq!(Outcome::Cancelled.color().0, "lightgrey");
    }

    #[test]
    fn both_forms_say_the_same_and_tag_their_bodies() {
        let drawn = Drawn::new("ci", Outcome::Failing, false);
        let json: Value = serde_json::from_slice(&drawn.json).unwrap();
        assert_eq!(
            json,
            json!({"schemaVersion": 1, "label": "ci", "message": "failing", "color": "red"})
        );
        let svg = std::str::from_utf8(&drawn.svg).unwrap();
        assert!(
            svg.contains("ci: failing") && svg.contains("#e05d44"),
            "{svg}"
        );
        assert_eq!(
            drawn.svg_etag,
            Drawn::new("ci", Outcome::Failing, false).svg_etag
        );
        assert_ne!(
            drawn.svg_etag,
            Drawn::new("ci", Outcome::Passing, false).svg_etag
        );
        assert!(drawn.svg_etag.starts_with('"') && drawn.svg_etag.ends_with('"'));
        let failed = Drawn::new("ci", Outcome::Unknown, true);
        let json: Value = serde_json::from_slice(&failed.json).unwrap();
        assert_eq!(json["isError"], true);
        assert_eq!(json["message"], "unknown");
    }
}
