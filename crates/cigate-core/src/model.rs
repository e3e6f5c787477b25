//! The unified CI/CD model served by `/unified/ci-cd/*`.
//!
//! Every field except the identifiers is optional and skipped when absent: a provider maps
//! what its upstream has and leaves the rest out rather than inventing values. Status-like
//! fields are plain strings: the normalised values are the constants in [`job_status`],
//! [`job_conclusion`], [`workflow_status`], [`repo_status`], [`workflow_trigger`]; any other
//! value is the upstream's raw value passed through unchanged.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::Value;
use utoipa::ToSchema;

/// The upstream's object as it sent it: its bytes, passed through to `remote_data`
/// rather than rebuilt as a tree (most callers never look inside).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RemoteData(Box<RawValue>);

impl RemoteData {
    /// The upstream's object; `None` for a `null` (a tolerant list page's empty item has
    /// no `remote_data`, like any absent field).
    pub fn new(raw: Box<RawValue>) -> Option<RemoteData> {
        let text = raw.get();
        if text.trim() == "null" {
            return None;
        }
        if !may_hold_raw_value_token(text) {
            return Some(RemoteData(raw));
        }
        // Rare: rebuilt without the key (see `RAW_VALUE_TOKEN`), read as plain JSON.
        let plain: plain::Json = serde_json::from_str(text).ok()?;
        serde_json::value::to_raw_value(&plain.without_key(RAW_VALUE_TOKEN))
            .ok()
            .map(RemoteData)
    }

    /// The JSON text of a value the provider built or changed; `None` for `null`.
    pub fn from_value(value: &Value) -> Option<RemoteData> {
        if value.is_null() {
            return None;
        }
        serde_json::value::to_raw_value(&without_raw_value_token(value))
            .ok()
            .map(RemoteData)
    }

    /// The JSON text, exactly as the upstream sent it.
    pub fn get(&self) -> &str {
        self.0.get()
    }

    pub fn as_raw(&self) -> &RawValue {
        &self.0
    }

    /// Parsed, for the rare caller that needs to look inside or change it.
    pub fn to_value(&self) -> Value {
        serde_json::from_str(self.get()).unwrap_or(Value::Null)
    }
}

/// The key serde_json (with its `raw_value` feature) reads as "this object is raw JSON
/// text": an object whose first key it is cannot be written or read back as a value. No
/// Buddy object has it; an upstream that sends it loses that one key.
const RAW_VALUE_TOKEN: &str = "$serde_json::private::RawValue";

/// Whether `text` may hold the token as a key: literally, or spelled with `\u` escapes
/// (no other JSON escape yields one of its characters). One fast scan for the common
/// case, an object with neither a `$` nor a `\`.
fn may_hold_raw_value_token(text: &str) -> bool {
    memchr::memchr2(b'$', b'\\', text.as_bytes()).is_some()
        && (text.contains(RAW_VALUE_TOKEN) || text.contains("\\u"))
}

/// JSON read as what it says, key for key: unlike `serde_json::Value` (with the
/// `raw_value` feature), an object whose first key is the raw-value token is an object.
mod plain {
    use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
    use serde::ser::{Serialize, SerializeMap, Serializer};

    pub enum Json {
        Null,
        Bool(bool),
        Number(serde_json::Number),
        String(String),
        Array(Vec<Json>),
        Object(Vec<(String, Json)>),
    }

    impl Json {
        /// The same JSON without `key` in any object, at any depth.
        pub fn without_key(self, key: &str) -> Json {
            match self {
                Json::Object(entries) => Json::Object(
                    entries
                        .into_iter()
                        .filter(|(k, _)| k != key)
                        .map(|(k, v)| (k, v.without_key(key)))
                        .collect(),
                ),
                Json::Array(items) => {
                    Json::Array(items.into_iter().map(|v| v.without_key(key)).collect())
                }
                other => other,
            }
        }
    }

    impl<'de> Deserialize<'de> for Json {
        fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Json, D::Error> {
            deserializer.deserialize_any(JsonVisitor)
        }
    }

    struct JsonVisitor;

    impl<'de> Visitor<'de> for JsonVisitor {
        type Value = Json;

        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("JSON")
        }
        fn visit_unit<E>(self) -> Result<Json, E> {
            Ok(Json::Null)
        }
        fn visit_bool<E>(self, v: bool) -> Result<Json, E> {
            Ok(Json::Bool(v))
        }
        fn visit_u64<E>(self, v: u64) -> Result<Json, E> {
            Ok(Json::Number(v.into()))
        }
        fn visit_i64<E>(self, v: i64) -> Result<Json, E> {
            Ok(Json::Number(v.into()))
        }
        fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Json, E> {
            serde_json::Number::from_f64(v)
                .map(Json::Number)
                .ok_or_else(|| E::custom("not a JSON number"))
        }
        fn visit_str<E>(self, v: &str) -> Result<Json, E> {
            Ok(Json::String(v.to_owned()))
        }
        fn visit_string<E>(self, v: String) -> Result<Json, E> {
            Ok(Json::String(v))
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Json, A::Error> {
            let mut items = Vec::new();
            while let Some(item) = seq.next_element()? {
                items.push(item);
            }
            Ok(Json::Array(items))
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Json, A::Error> {
            let mut entries = Vec::new();
            while let Some(entry) = map.next_entry::<String, Json>()? {
                entries.push(entry);
            }
            Ok(Json::Object(entries))
        }
    }

    impl Serialize for Json {
        fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
            match self {
                Json::Null => serializer.serialize_unit(),
                Json::Bool(v) => serializer.serialize_bool(*v),
                Json::Number(v) => v.serialize(serializer),
                Json::String(v) => serializer.serialize_str(v),
                Json::Array(items) => items.serialize(serializer),
                Json::Object(entries) => {
                    let mut map = serializer.serialize_map(Some(entries.len()))?;
                    for (k, v) in entries {
                        map.serialize_entry(k, v)?;
                    }
                    map.end()
                }
            }
        }
    }
}

fn without_raw_value_token(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .filter(|(key, _)| key.as_str() != RAW_VALUE_TOKEN)
                .map(|(key, value)| (key.clone(), without_raw_value_token(value)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(without_raw_value_token).collect()),
        other => other.clone(),
    }
}

/// Equal when they mean the same JSON (whitespace and key order aside).
impl PartialEq for RemoteData {
    fn eq(&self, other: &RemoteData) -> bool {
        self.get() == other.get() || self.to_value() == other.to_value()
    }
}

/// Normalised `Job.status` / `Step.status` values.
pub mod job_status {
    pub const QUEUED: &str = "queued";
    pub const IN_PROGRESS: &str = "in_progress";
    pub const WAITING: &str = "waiting";
    pub const COMPLETED: &str = "completed";
    /// Every normalised value, for validating filters.
    pub const ALL: &[&str] = &[QUEUED, IN_PROGRESS, WAITING, COMPLETED];
}

/// Normalised `Job.conclusion` / `Step.conclusion` values (only set once completed).
pub mod job_conclusion {
    pub const PASSED: &str = "passed";
    pub const FAILED: &str = "failed";
    pub const CANCELLED: &str = "cancelled";
    pub const TIMEOUT: &str = "timeout";
    pub const SKIPPED: &str = "skipped";
    pub const PARTIAL: &str = "partial";
    /// Every normalised value, for validating filters.
    pub const ALL: &[&str] = &[PASSED, FAILED, CANCELLED, TIMEOUT, SKIPPED, PARTIAL];
}

/// Normalised `Workflow.status` values.
pub mod workflow_status {
    pub const ACTIVE: &str = "active";
    pub const DISABLED: &str = "disabled";
}

/// Normalised `Repo.status` values.
pub mod repo_status {
    pub const ACTIVE: &str = "active";
    pub const INACTIVE: &str = "inactive";
}

/// Normalised `Workflow.trigger` values; anything else is the upstream's kind, lowercased.
pub mod workflow_trigger {
    pub const MANUAL: &str = "manual";
    pub const PUSH: &str = "push";
    pub const SCHEDULE: &str = "schedule";
}

/// Normalised `PullRequest.status` values.
pub mod pull_request_status {
    pub const OPEN: &str = "open";
    pub const CLOSED: &str = "closed";
    pub const MERGED: &str = "merged";
    pub const LOCKED: &str = "locked";
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, ToSchema)]
#[schema(example = json!({
    "id": "acme", "name": "Acme", "url": "https://app.buddy.works/acme",
    "created_at": "2016-02-29T11:22:40Z",
    "remote_data": {"id": 1, "name": "Acme", "domain": "acme"}
}))]
pub struct Workspace {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "rfc3339::option"
    )]
    pub created_at: Option<DateTime<Utc>>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "rfc3339::option"
    )]
    pub updated_at: Option<DateTime<Utc>>,
    /// The upstream's object, unmapped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub remote_data: Option<RemoteData>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, ToSchema)]
#[schema(example = json!({
    "id": "company-website", "name": "Company Website", "visibility": "public",
    "vcs_url": "https://app.buddy.works/acme/company-website", "status": "active",
    "default_branch": "master", "url": "https://app.buddy.works/acme/company-website",
    "workspace": "acme", "created_at": "2016-02-29T11:23:04Z",
    "remote_data": {"name": "company-website", "display_name": "Company Website", "status": "ACTIVE"}
}))]
pub struct Repo {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner_type: Option<String>,
    /// `public` / `private`, or the upstream's value lowercased.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub visibility: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vcs_url: Option<String>,
    /// `active` / `inactive` (see [`repo_status`]), else raw.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_branch: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workspace: Option<String>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "rfc3339::option"
    )]
    pub created_at: Option<DateTime<Utc>>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "rfc3339::option"
    )]
    pub updated_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub remote_data: Option<RemoteData>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, ToSchema)]
#[schema(example = json!({
    "id": "master", "name": "master", "repo": "company-website",
    "last_commit": "506a3963507943d6908154f4bc9646e829128a08", "last_commit_by": "Mike Benson",
    "last_commit_message": "init repo\n", "last_commit_at": "2016-01-19T12:36:33Z", "is_default": true,
    "remote_data": {"name": "master", "default": true}
}))]
pub struct Branch {
    pub id: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repo: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_commit: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_commit_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_commit_message: Option<String>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "rfc3339::option"
    )]
    pub last_commit_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub is_default: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub remote_data: Option<RemoteData>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, ToSchema)]
#[schema(example = json!({"content": "Fixes the login redirect.", "format": "markdown"}))]
pub struct PullRequestDescription {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, ToSchema)]
#[schema(example = json!({"id": "feature/login", "name": "feature/login", "last_commit": "506a3963507943d6908154f4bc9646e829128a08"}))]
pub struct BranchRef {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_commit: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, ToSchema)]
#[schema(example = json!({
    "id": "3", "number": 3, "url": "https://github.com/acme/company-website/pull/3",
    "remote_data": {"name": "pull/3", "github_html_url": "https://github.com/acme/company-website/pull/3"}
}))]
pub struct PullRequest {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub number: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<PullRequestDescription>,
    /// `open`, `closed`, `merged`, `locked` (see [`pull_request_status`]), else raw.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_branch: Option<BranchRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head_branch: Option<BranchRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "rfc3339::option"
    )]
    pub created_at: Option<DateTime<Utc>>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "rfc3339::option"
    )]
    pub updated_at: Option<DateTime<Utc>>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "rfc3339::option"
    )]
    pub closed_at: Option<DateTime<Utc>>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "rfc3339::option"
    )]
    pub merged_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub remote_data: Option<RemoteData>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, ToSchema)]
#[schema(example = json!({
    "id": "2", "name": "Live mirror", "repo": "company-website", "workspace": "acme",
    "trigger": "push", "refs": ["refs/heads/master"], "status": "active",
    "last_job_status": "completed", "last_job_conclusion": "passed",
    "url": "https://app.buddy.works/acme/company-website/pipelines/pipeline/2",
    "created_at": "2016-02-29T11:23:12Z",
    "remote_data": {"id": 2, "name": "Live mirror", "events": [{"type": "PUSH", "refs": ["refs/heads/master"]}]}
}))]
pub struct Workflow {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repo: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workspace: Option<String>,
    /// `manual`, `push`, `schedule` (see [`workflow_trigger`]), else the upstream kind lowercased.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trigger: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refs: Option<Vec<String>>,
    /// `active` / `disabled` (see [`workflow_status`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_job_status: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_job_conclusion: Option<String>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "rfc3339::option"
    )]
    pub last_job_at: Option<DateTime<Utc>>,
    /// The commit the latest job ran, when the provider says (a cheap change marker).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_job_commit: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "rfc3339::option"
    )]
    pub created_at: Option<DateTime<Utc>>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "rfc3339::option"
    )]
    pub updated_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub remote_data: Option<RemoteData>,
}

/// One step of a job (an upstream action execution).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, ToSchema)]
#[schema(example = json!({
    "id": "6836dca490f5896b4bb8e6a7", "name": "Build application", "status": "completed",
    "conclusion": "passed", "started_at": "2025-05-28T09:51:00Z", "completed_at": "2025-05-28T09:52:10Z"
}))]
pub struct Step {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conclusion: Option<String>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "rfc3339::option"
    )]
    pub started_at: Option<DateTime<Utc>>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "rfc3339::option"
    )]
    pub completed_at: Option<DateTime<Utc>>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, ToSchema)]
#[schema(example = json!({
    "id": "1", "status": "completed", "conclusion": "passed",
    "commit": "506a3963507943d6908154f4bc9646e829128a08", "branch": "master",
    "workflow": "2", "repo": "company-website", "workspace": "acme",
    "triggered_by": "Mike Benson", "trigger": "click", "comment": "",
    "url": "https://app.buddy.works/acme/company-website/pipelines/pipeline/2/execution/56fa2a981faaf061c7c9e0a0",
    "started_at": "2016-03-29T07:11:20.278Z", "completed_at": "2016-03-29T07:11:22.527Z", "duration_ms": 2249,
    "remote_data": {"id": 1, "status": "SUCCESSFUL", "triggeredOn": "CLICK"}
}))]
pub struct Job {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub build: Option<String>,
    /// `queued`, `in_progress`, `waiting`, `completed` (see [`job_status`]), else raw.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// `passed`, `failed`, `cancelled`, `timeout`, `skipped`, `partial` (see
    /// [`job_conclusion`]), else raw.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conclusion: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    /// When `commit` was committed (for lead times), where the provider says.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "rfc3339::option"
    )]
    pub commit_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempts: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workflow: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repo: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workspace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub triggered_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trigger: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub steps: Option<Vec<Step>>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "rfc3339::option"
    )]
    pub created_at: Option<DateTime<Utc>>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "rfc3339::option"
    )]
    pub updated_at: Option<DateTime<Utc>>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "rfc3339::option"
    )]
    pub started_at: Option<DateTime<Utc>>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "rfc3339::option"
    )]
    pub completed_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queued_duration_ms: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub remote_data: Option<RemoteData>,
}

/// A Git integration of the account (GitHub, GitLab, Bitbucket, …), to create repos
/// mirrored from it.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, ToSchema)]
#[schema(example = json!({"id": "a1b2c3d4", "type": "github", "name": "GitHub (acme)"}))]
pub struct Integration {
    /// Pass as `integration` when creating a repo.
    pub id: String,
    /// `github`, `gitlab`, `bitbucket`, else the provider's own kind, lower-cased.
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub remote_data: Option<RemoteData>,
}

/// Where a variable lives: the narrowest of workspace, repo (Buddy project) and workflow.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, ToSchema)]
#[schema(example = json!({"type": "repo", "workspace": "acme", "repo": "company-website"}))]
pub struct VariableScope {
    /// `workspace`, `repo` or `workflow` (see [`variable_scope`]), else the upstream's kind.
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workspace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repo: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workflow: Option<String>,
}

/// Normalised `VariableScope.type` values.
pub mod variable_scope {
    pub const WORKSPACE: &str = "workspace";
    pub const REPO: &str = "repo";
    pub const WORKFLOW: &str = "workflow";
}

/// An environment variable. The value of an encrypted variable is write-only: it is
/// never part of an answer (nor is the upstream's ciphertext of it).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, ToSchema)]
#[schema(example = json!({
    "id": "12", "key": "API_URL", "value": "https://staging.example.com", "encrypted": false,
    "settable": true, "description": "target URL",
    "scope": {"type": "repo", "workspace": "acme", "repo": "company-website"}
}))]
pub struct Variable {
    pub id: String,
    pub key: String,
    /// Absent for encrypted variables.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    pub encrypted: bool,
    /// May be overridden when a job runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settable: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub scope: VariableScope,
    /// The upstream's object, with an encrypted value removed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub remote_data: Option<RemoteData>,
}

/// Timestamps written as chrono writes them (RFC 3339, `Z`, as many fractional digits as
/// needed: none, 3, 6 or 9), without going through `fmt`: every job carries a dozen.
mod rfc3339 {
    use chrono::{DateTime, Datelike, Timelike, Utc};
    use serde::{Serialize, Serializer};

    pub fn option<S: Serializer>(
        at: &Option<DateTime<Utc>>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match at {
            Some(at) => one(at, serializer),
            None => serializer.serialize_none(),
        }
    }

    fn one<S: Serializer>(at: &DateTime<Utc>, serializer: S) -> Result<S::Ok, S::Error> {
        let mut buf = [0u8; 30];
        match write(at, &mut buf).and_then(|n| std::str::from_utf8(&buf[..n]).ok()) {
            Some(text) => serializer.serialize_str(text),
            // Years outside 0–9999 and leap seconds: chrono's own form.
            None => at.serialize(serializer),
        }
    }

    fn write(at: &DateTime<Utc>, buf: &mut [u8; 30]) -> Option<usize> {
        let year = u32::try_from(at.year()).ok().filter(|y| *y <= 9999)?;
        let nano = at.nanosecond();
        if nano >= 1_000_000_000 {
            return None;
        }
        let mut n = 0;
        let mut put = |value: u32, width: u32, then: u8| {
            for i in (0..width).rev() {
                buf[n] = b'0' + (value / 10u32.pow(i) % 10) as u8;
                n += 1;
            }
            buf[n] = then;
            n += 1;
        };
        put(year, 4, b'-');
        put(at.month(), 2, b'-');
        put(at.day(), 2, b'T');
        put(at.hour(), 2, b':');
        put(at.minute(), 2, b':');
        match nano {
            0 => put(at.second(), 2, b'Z'),
            _ => {
                put(at.second(), 2, b'.');
                match nano {
                    _ if nano.is_multiple_of(1_000_000) => put(nano / 1_000_000, 3, b'Z'),
                    _ if nano.is_multiple_of(1_000) => put(nano / 1_000, 6, b'Z'),
                    _ => put(nano, 9, b'Z'),
                }
            }
        }
        Some(n)
    }

    #[cfg(test)]
    mod tests {
        use chrono::{DateTime, Utc};

        #[test]
        fn written_as_chrono_writes_them() {
            for text in [
                "2016-02-29T11:22:40Z",
                "2016-02-29T11:22:40.330Z",
                "2016-02-29T11:22:40.000001Z",
                "2016-02-29T11:22:40.000000001Z",
                "0001-01-01T00:00:00.5Z",
                "9999-12-31T23:59:59.999999999Z",
                "+10000-01-01T00:00:00Z",
                "2016-12-31T23:59:60.5Z",
            ] {
                let at: DateTime<Utc> = text.parse().unwrap();
                let ours = super::option(&Some(at), serde_json::value::Serializer).unwrap();
                assert_eq!(ours, serde_json::to_value(at).unwrap(), "{text}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Buddy's bytes kept as they are read back as the same JSON, including an object
    /// that names serde_json's raw-value token (literally or with `\u` escapes), which
    /// loses that key instead of failing every later read as a value.
    #[test]
    fn remote_data_from_bytes_always_reads_back() {
        let raw = |text: &str| RemoteData::new(RawValue::from_string(text.into()).unwrap());
        let plain = r#"{"id":7,"ref":"refs/heads/$x","nested":{"a":[1,2.5,"b\n"]}}"#;
        let kept = raw(plain).unwrap();
        assert_eq!(kept.get(), plain, "passed through byte for byte");
        assert_eq!(kept.to_value()["nested"]["a"][1], 2.5);
        for text in [
            r#"{"$serde_json::private::RawValue":"EVENT","on":"SCHEDULE"}"#,
            r#"{"on":"SCHEDULE","x":{"$serde_json::private::RawValue":"{"}}"#,
            r#"{"\u0024serde_json::private::RawValue":"EVENT","on":"SCHEDULE"}"#,
        ] {
            let data = raw(text).unwrap();
            assert!(!data.get().contains("RawValue"), "{}", data.get());
            let back: Value = serde_json::from_str(data.get()).unwrap();
            assert_eq!(back.to_string(), data.get(), "{text}");
            assert!(back.to_string().contains("SCHEDULE"), "{text}");
        }
        assert!(raw("null").is_none());
    }

    #[test]
    fn absent_fields_are_not_serialized() {
        let job = Job {
            id: "1".into(),
            status: Some(job_status::QUEUED.into()),
            ..Default::default()
        };
        let v = serde_json::to_value(&job).unwrap();
        assert_eq!(v, serde_json::json!({"id": "1", "status": "queued"}));
    }

    #[test]
    fn schemas_carry_examples() {
        use utoipa::PartialSchema;
        for schema in [
            Workspace::schema(),
            Repo::schema(),
            Branch::schema(),
            PullRequest::schema(),
            Workflow::schema(),
            Job::schema(),
            Step::schema(),
            Variable::schema(),
            VariableScope::schema(),
        ] {
            let v = serde_json::to_value(&schema).unwrap();
            assert!(
                v.get("example").is_some() || v.get("examples").is_some(),
                "{v}"
            );
        }
    }

    #[test]
    fn dates_serialize_as_rfc3339_utc() {
        let ws = Workspace {
            id: "acme".into(),
            created_at: Some("2016-02-29T11:22:40.33Z".parse().unwrap()),
            ..Default::default()
        };
        let v = serde_json::to_value(&ws).unwrap();
        assert_eq!(v["created_at"], "2016-02-29T11:22:40.330Z");
    }
}
