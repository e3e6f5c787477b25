//! Buddy's JSON, as tolerant types.
//!
//! Buddy's documentation comes in several generations that disagree on details, so every
//! field is optional, `null` is accepted everywhere, unknown fields are ignored, and fields
//! whose type has been seen to vary (ids, dates, flags, counters) are read leniently: a value
//! of an unexpected type becomes `None` instead of failing the whole page.

use chrono::{DateTime, NaiveDateTime, Utc};
use serde::de::{
    DeserializeOwned, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor,
};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Value;

/// Reads any JSON value and keeps it only if it converts to `T`.
pub fn lenient<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: DeserializeOwned,
{
    let value = Value::deserialize(deserializer)?;
    Ok(serde_json::from_value(value).ok())
}

/// Ids arrive as numbers (workspaces, pipelines, executions) or strings (action executions,
/// tokens); both become a string.
pub fn lenient_id<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<String>, D::Error> {
    Ok(id_of(&Value::deserialize(deserializer)?))
}

/// The string form of an id-like JSON value.
pub fn id_of(value: &Value) -> Option<String> {
    match value {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// ISO-8601 UTC dates with 0–3 (or more) fractional digits and `Z` or an offset; a date
/// without an offset is taken as UTC. Anything unreadable becomes `None`.
pub fn lenient_date<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<DateTime<Utc>>, D::Error> {
    Ok(match Value::deserialize(deserializer)? {
        Value::String(s) => parse_date(&s),
        _ => None,
    })
}

pub fn parse_date(s: &str) -> Option<DateTime<Utc>> {
    let s = s.trim();
    if let Ok(d) = DateTime::parse_from_rfc3339(s) {
        return Some(d.with_timezone(&Utc));
    }
    NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f")
        .ok()
        .map(|n| n.and_utc())
}

/// `{"errors":[{"message":…}]}`, `{"errors":["…"]}` or `{"message":…}`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct ErrorBody {
    #[serde(deserialize_with = "lenient")]
    pub errors: Option<Vec<ErrorItem>>,
    pub message: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum ErrorItem {
    Text(String),
    Object {
        #[serde(default)]
        message: Option<String>,
    },
}

impl ErrorBody {
    pub fn message(&self) -> Option<String> {
        let from_errors: Vec<&str> = self
            .errors
            .iter()
            .flatten()
            .filter_map(|e| match e {
                ErrorItem::Text(t) => Some(t.as_str()),
                ErrorItem::Object { message } => message.as_deref(),
            })
            .collect();
        if from_errors.is_empty() {
            self.message.clone()
        } else {
            Some(from_errors.join("; "))
        }
    }
}

/// A member reference (`creator`, `created_by`, commit `author`/`committer`). Commits by
/// non-members may carry only `name`/`email`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default)]
pub struct MemberRef {
    pub url: Option<String>,
    pub html_url: Option<String>,
    #[serde(deserialize_with = "lenient_id")]
    pub id: Option<String>,
    pub name: Option<String>,
    pub email: Option<String>,
    pub avatar_url: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default)]
pub struct Workspace {
    pub url: Option<String>,
    pub html_url: Option<String>,
    #[serde(deserialize_with = "lenient_id")]
    pub id: Option<String>,
    pub name: Option<String>,
    pub domain: Option<String>,
    #[serde(deserialize_with = "lenient_id")]
    pub owner_id: Option<String>,
    #[serde(deserialize_with = "lenient")]
    pub frozen: Option<bool>,
    #[serde(deserialize_with = "lenient_date")]
    pub create_date: Option<DateTime<Utc>>,
}

/// Project, short (list) or detailed (get) form.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default)]
pub struct Project {
    pub url: Option<String>,
    pub html_url: Option<String>,
    pub name: Option<String>,
    pub display_name: Option<String>,
    pub status: Option<String>,
    #[serde(deserialize_with = "lenient_date")]
    pub create_date: Option<DateTime<Utc>>,
    #[serde(deserialize_with = "lenient_nested")]
    pub created_by: Option<MemberRef>,
    pub http_repository: Option<String>,
    pub ssh_repository: Option<String>,
    pub default_branch: Option<String>,
    pub access: Option<String>,
    #[serde(deserialize_with = "lenient")]
    pub allow_pull_requests: Option<bool>,
    #[serde(deserialize_with = "lenient")]
    pub without_repository: Option<bool>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default)]
pub struct Commit {
    pub url: Option<String>,
    pub html_url: Option<String>,
    pub revision: Option<String>,
    #[serde(deserialize_with = "lenient_date")]
    pub author_date: Option<DateTime<Utc>>,
    #[serde(deserialize_with = "lenient_date")]
    pub commit_date: Option<DateTime<Utc>>,
    pub message: Option<String>,
    #[serde(deserialize_with = "lenient_nested")]
    pub author: Option<MemberRef>,
    #[serde(deserialize_with = "lenient_nested")]
    pub committer: Option<MemberRef>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default)]
pub struct Branch {
    pub url: Option<String>,
    pub html_url: Option<String>,
    pub name: Option<String>,
    #[serde(deserialize_with = "lenient")]
    pub default: Option<bool>,
    #[serde(deserialize_with = "lenient_nested")]
    pub commit: Option<Commit>,
}

/// Buddy's minimal pull request: `name` is `pull/<n>`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default)]
pub struct PullRequest {
    pub url: Option<String>,
    pub html_url: Option<String>,
    pub name: Option<String>,
    pub github_html_url: Option<String>,
}

impl PullRequest {
    /// The number in `pull/<n>`, else the last segment of the API URL.
    pub fn number(&self) -> Option<u64> {
        self.name
            .as_deref()
            .and_then(pull_number)
            .or_else(|| self.url.as_deref().and_then(last_number_segment))
    }
}

/// `pull/3`, `refs/pull/3/head`, `refs/pull/3/merge` → 3.
pub fn pull_number(name: &str) -> Option<u64> {
    let rest = name.strip_prefix("refs/").unwrap_or(name);
    let rest = rest.strip_prefix("pull/")?;
    rest.split('/').next()?.parse().ok()
}

fn last_number_segment(url: &str) -> Option<u64> {
    url.trim_end_matches('/').rsplit('/').next()?.parse().ok()
}

/// Pipeline `events[]` entry (current model; also present in v1.1).
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default)]
pub struct PipelineEvent {
    #[serde(rename = "type")]
    pub kind: Option<String>,
    #[serde(deserialize_with = "lenient_nested")]
    pub refs: Option<Vec<String>>,
    pub cron: Option<String>,
}

/// Pipeline in the current model, the v1.1 model (`on`) or the v1.0 model (`trigger_mode`).
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default)]
pub struct Pipeline {
    pub url: Option<String>,
    pub html_url: Option<String>,
    #[serde(deserialize_with = "lenient_id")]
    pub id: Option<String>,
    pub identifier: Option<String>,
    pub name: Option<String>,
    /// v1.1 only: `CLICK`, `EVENT`, `SCHEDULE`.
    pub on: Option<String>,
    /// v1.0 only: `MANUAL`, `SCHEDULED`, `ON_EVERY_PUSH`.
    pub trigger_mode: Option<String>,
    pub ref_name: Option<String>,
    pub ref_type: Option<String>,
    #[serde(deserialize_with = "lenient_nested")]
    pub refs: Option<Vec<String>>,
    #[serde(deserialize_with = "lenient_nested")]
    pub events: Option<Vec<PipelineEvent>>,
    pub last_execution_status: Option<String>,
    pub last_execution_revision: Option<String>,
    #[serde(deserialize_with = "lenient_date")]
    pub create_date: Option<DateTime<Utc>>,
    #[serde(deserialize_with = "lenient")]
    pub disabled: Option<bool>,
    #[serde(deserialize_with = "lenient")]
    pub paused: Option<bool>,
    #[serde(deserialize_with = "lenient_nested")]
    pub project: Option<Project>,
}

/// A named ref on an execution (`branch`, `tag`, `pull_request`). Webhook payloads of the
/// old model send `branch` as a plain string.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum RefField {
    Name(String),
    Object(RefObject),
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default)]
pub struct RefObject {
    pub url: Option<String>,
    pub html_url: Option<String>,
    pub name: Option<String>,
    #[serde(deserialize_with = "lenient")]
    pub default: Option<bool>,
}

impl RefField {
    pub fn name(&self) -> Option<&str> {
        match self {
            RefField::Name(n) => Some(n.as_str()),
            RefField::Object(o) => o.name.as_deref(),
        }
        .filter(|n| !n.is_empty())
    }
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default)]
pub struct ActionRef {
    pub url: Option<String>,
    pub html_url: Option<String>,
    #[serde(deserialize_with = "lenient_id")]
    pub id: Option<String>,
    pub name: Option<String>,
    #[serde(rename = "type")]
    pub kind: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default)]
pub struct ActionExecution {
    pub url: Option<String>,
    pub html_url: Option<String>,
    #[serde(deserialize_with = "lenient_id")]
    pub action_execution_id: Option<String>,
    pub status: Option<String>,
    #[serde(deserialize_with = "lenient")]
    pub progress: Option<f64>,
    #[serde(deserialize_with = "lenient_date")]
    pub start_date: Option<DateTime<Utc>>,
    #[serde(deserialize_with = "lenient_date")]
    pub finish_date: Option<DateTime<Utc>>,
    pub error_message: Option<String>,
    #[serde(deserialize_with = "lenient_nested")]
    pub action: Option<ActionRef>,
}

/// Pipeline reference inside an execution.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default)]
pub struct PipelineRef {
    #[serde(deserialize_with = "lenient_id")]
    pub id: Option<String>,
    pub name: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default)]
pub struct Execution {
    pub url: Option<String>,
    pub html_url: Option<String>,
    #[serde(deserialize_with = "lenient_id")]
    pub id: Option<String>,
    #[serde(deserialize_with = "lenient_date")]
    pub start_date: Option<DateTime<Utc>>,
    #[serde(deserialize_with = "lenient_date")]
    pub finish_date: Option<DateTime<Utc>>,
    /// Buddy's camelCase spelling; see [`Execution::triggered_on`].
    #[serde(rename = "triggeredOn")]
    pub triggered_on_camel: Option<String>,
    #[serde(rename = "triggered_on")]
    pub triggered_on_snake: Option<String>,
    /// Legacy (`MANUAL`) in old webhook payloads.
    pub mode: Option<String>,
    pub priority: Option<String>,
    #[serde(deserialize_with = "lenient")]
    pub refresh: Option<bool>,
    #[serde(deserialize_with = "lenient")]
    pub clear_cache: Option<bool>,
    pub status: Option<String>,
    pub comment: Option<String>,
    #[serde(deserialize_with = "lenient_nested")]
    pub branch: Option<RefField>,
    #[serde(deserialize_with = "lenient_nested")]
    pub tag: Option<RefField>,
    #[serde(deserialize_with = "lenient_nested")]
    pub pull_request: Option<RefField>,
    #[serde(deserialize_with = "lenient_nested")]
    pub to_revision: Option<Commit>,
    #[serde(deserialize_with = "lenient_nested")]
    pub from_revision: Option<Commit>,
    #[serde(deserialize_with = "lenient_nested")]
    pub creator: Option<MemberRef>,
    #[serde(deserialize_with = "lenient_nested")]
    pub action_executions: Option<Vec<ActionExecution>>,
    #[serde(deserialize_with = "lenient_nested")]
    pub pipeline: Option<PipelineRef>,
}

impl Execution {
    /// `triggeredOn` (every documented sample) or `triggered_on`, whichever is set; both
    /// may appear without failing the parse.
    pub fn triggered_on(&self) -> Option<&str> {
        self.triggered_on_camel
            .as_deref()
            .or(self.triggered_on_snake.as_deref())
    }

    /// The ref it ran on: branch, else tag, else pull request.
    pub fn ref_name(&self) -> Option<&str> {
        [&self.branch, &self.tag, &self.pull_request]
            .into_iter()
            .find_map(|r| r.as_ref().and_then(RefField::name))
    }
}

/// Counters of the executions list envelope; other lists have none.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct PageCounters {
    #[serde(deserialize_with = "lenient")]
    pub page: Option<u64>,
    #[serde(deserialize_with = "lenient")]
    pub page_size: Option<u64>,
    #[serde(deserialize_with = "lenient")]
    pub total_page_count: Option<u64>,
    #[serde(deserialize_with = "lenient")]
    pub element_count: Option<u64>,
    #[serde(deserialize_with = "lenient")]
    pub total_element_count: Option<u64>,
}

/// The item array of a list envelope (`workspaces`, `projects`, `branches`,
/// `pull_requests`, `pipelines`, `executions`); missing or `null` is empty.
pub fn list_items(body: &Value, key: &str) -> Vec<Value> {
    match body.get(key) {
        Some(Value::Array(items)) => items.clone(),
        _ => Vec::new(),
    }
}

/// Parses one object; an object that does not fit at all (not even leniently) maps as an
/// empty one, so one odd item never fails a page; its raw form is still returned.
pub fn parse<T: DeserializeOwned + Default>(value: &Value) -> T {
    T::deserialize(value).unwrap_or_default()
}

/// Like [`lenient`], for objects and arrays: buffered as JSON text rather than a tree.
/// Not for a field read inside an untagged enum (serde buffers those in a form a raw
/// value cannot be read from, so the field would always be `None`).
pub fn lenient_nested<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: DeserializeOwned,
{
    let raw = Box::<RawValue>::deserialize(deserializer)?;
    Ok(serde_json::from_str(raw.get()).ok())
}

/// A list envelope read once: the items under its key as Buddy sent them (each parsed
/// into its wire type by whoever maps it, and kept as `remote_data`) and the executions
/// envelope's counters.
#[derive(Debug, Default)]
pub struct RawPage {
    pub items: Vec<Box<RawValue>>,
    pub counters: PageCounters,
}

impl RawPage {
    /// The items under `key` (`workspaces`, `projects`, `branches`, `pull_requests`,
    /// `pipelines`, `executions`); a body that is not an object, or whose `key` is
    /// missing, `null` or not an array, has none.
    pub fn parse(body: &[u8], key: &str) -> Result<RawPage, serde_json::Error> {
        let mut deserializer = serde_json::Deserializer::from_slice(body);
        let page = PageSeed(key).deserialize(&mut deserializer)?;
        deserializer.end()?;
        Ok(page)
    }
}

/// One object as Buddy sent it (an empty body reads as `null`).
pub fn raw_object(body: &[u8]) -> Result<Box<RawValue>, serde_json::Error> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return RawValue::from_string("null".to_owned());
    }
    serde_json::from_slice(body)
}

/// Parses one object from Buddy's bytes, as [`parse`] does from a tree.
pub fn parse_raw<T: DeserializeOwned + Default>(raw: &RawValue) -> T {
    serde_json::from_str(raw.get()).unwrap_or_default()
}

struct PageSeed<'k>(&'k str);

impl<'de> DeserializeSeed<'de> for PageSeed<'_> {
    type Value = RawPage;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<RawPage, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for PageSeed<'_> {
    type Value = RawPage;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a Buddy list envelope")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawPage, A::Error> {
        let mut page = RawPage::default();
        while let Some(key) = map.next_key::<String>()? {
            if key == self.0 {
                page.items = map.next_value::<Items>()?.0;
                continue;
            }
            let c = &mut page.counters;
            let counter = match key.as_str() {
                "page" => &mut c.page,
                "page_size" => &mut c.page_size,
                "total_page_count" => &mut c.total_page_count,
                "element_count" => &mut c.element_count,
                "total_element_count" => &mut c.total_element_count,
                _ => {
                    map.next_value::<IgnoredAny>()?;
                    continue;
                }
            };
            *counter = map.next_value::<Value>()?.as_u64();
        }
        Ok(page)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<RawPage, A::Error> {
        IgnoredAny.visit_seq(seq)?;
        Ok(RawPage::default())
    }

    fn visit_unit<E>(self) -> Result<RawPage, E> {
        Ok(RawPage::default())
    }

    fn visit_bool<E>(self, _: bool) -> Result<RawPage, E> {
        Ok(RawPage::default())
    }

    fn visit_i64<E>(self, _: i64) -> Result<RawPage, E> {
        Ok(RawPage::default())
    }

    fn visit_u64<E>(self, _: u64) -> Result<RawPage, E> {
        Ok(RawPage::default())
    }

    fn visit_f64<E>(self, _: f64) -> Result<RawPage, E> {
        Ok(RawPage::default())
    }

    fn visit_str<E>(self, _: &str) -> Result<RawPage, E> {
        Ok(RawPage::default())
    }
}

/// A list envelope's item array; anything but an array is no items.
struct Items(Vec<Box<RawValue>>);

impl<'de> Deserialize<'de> for Items {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Items, D::Error> {
        struct ItemsVisitor;
        impl<'de> Visitor<'de> for ItemsVisitor {
            type Value = Items;

            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an array of objects")
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Items, A::Error> {
                let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0));
                while let Some(item) = seq.next_element::<Box<RawValue>>()? {
                    items.push(item);
                }
                Ok(Items(items))
            }

            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Items, A::Error> {
                IgnoredAny.visit_map(map)?;
                Ok(Items(Vec::new()))
            }

            fn visit_unit<E>(self) -> Result<Items, E> {
                Ok(Items(Vec::new()))
            }

            fn visit_bool<E>(self, _: bool) -> Result<Items, E> {
                Ok(Items(Vec::new()))
            }

            fn visit_i64<E>(self, _: i64) -> Result<Items, E> {
                Ok(Items(Vec::new()))
            }

            fn visit_u64<E>(self, _: u64) -> Result<Items, E> {
                Ok(Items(Vec::new()))
            }

            fn visit_f64<E>(self, _: f64) -> Result<Items, E> {
                Ok(Items(Vec::new()))
            }

            fn visit_str<E>(self, _: &str) -> Result<Items, E> {
                Ok(Items(Vec::new()))
            }
        }
        deserializer.deserialize_any(ItemsVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn dates_with_zero_to_three_fraction_digits() {
        for (s, millis) in [
            ("2016-02-29T11:23:04Z", 0),
            ("2016-03-29T08:05:30.3Z", 300),
            ("2016-03-29T08:05:30.33Z", 330),
            ("2016-11-18T12:38:16.000Z", 0),
            ("2016-03-29T07:11:20.278Z", 278),
            ("2016-03-29T07:11:20.278+00:00", 278),
            ("2016-03-29T07:11:20.278", 278),
        ] {
            let d = parse_date(s).unwrap_or_else(|| panic!("{s}"));
            assert_eq!(d.timestamp_subsec_millis(), millis, "{s}");
        }
        assert_eq!(
            parse_date("2016-03-29T09:11:20+02:00").unwrap(),
            parse_date("2016-03-29T07:11:20Z").unwrap()
        );
        assert!(parse_date("yesterday").is_none());
    }

    #[test]
    fn null_everywhere() {
        let e: Execution = parse(&json!({
            "url": null, "html_url": null, "id": null, "start_date": null, "finish_date": null,
            "triggeredOn": null, "priority": null, "refresh": null, "status": null, "comment": null,
            "branch": null, "to_revision": null, "creator": null, "action_executions": null
        }));
        assert_eq!(e, Execution::default());
        let p: Pipeline = parse(&json!({"id": null, "events": null, "refs": null, "on": null}));
        assert_eq!(p, Pipeline::default());
    }

    #[test]
    fn wrong_types_degrade_to_none() {
        let e: Execution = parse(&json!({"id": 7, "start_date": 12, "refresh": "no", "branch": 3}));
        assert_eq!(e.id.as_deref(), Some("7"));
        assert_eq!(e.start_date, None);
        assert_eq!(e.refresh, None);
        assert_eq!(e.branch, None);
        let e: Execution = parse(&json!("not an object"));
        assert_eq!(e, Execution::default());
    }

    #[test]
    fn triggered_on_both_spellings() {
        let a: Execution = parse(&json!({"triggeredOn": "CLICK"}));
        let b: Execution = parse(&json!({"triggered_on": "SCHEDULE"}));
        let both: Execution = parse(&json!({"triggeredOn": "EVENT", "triggered_on": "EVENT"}));
        assert_eq!(a.triggered_on(), Some("CLICK"));
        assert_eq!(b.triggered_on(), Some("SCHEDULE"));
        assert_eq!(both.triggered_on(), Some("EVENT"));
    }

    #[test]
    fn branch_as_object_or_string() {
        let a: Execution = parse(&json!({"branch": {"name": "master", "default": true}}));
        let b: Execution = parse(&json!({"branch": "master"}));
        assert_eq!(a.ref_name(), Some("master"));
        assert_eq!(b.ref_name(), Some("master"));
        let pr: Execution = parse(&json!({"branch": null, "pull_request": {"name": "pull/3"}}));
        assert_eq!(pr.ref_name(), Some("pull/3"));
    }

    #[test]
    fn pull_numbers() {
        assert_eq!(pull_number("pull/3"), Some(3));
        assert_eq!(pull_number("refs/pull/12/head"), Some(12));
        assert_eq!(pull_number("master"), None);
        let pr: PullRequest =
            parse(&json!({"url": "https://api/x/repository/pulls/9", "name": null}));
        assert_eq!(pr.number(), Some(9));
    }

    #[test]
    fn error_bodies() {
        let e: ErrorBody = parse(&json!({"errors": [{"message": "a"}, "b"]}));
        assert_eq!(e.message().as_deref(), Some("a; b"));
        let e: ErrorBody = parse(&json!({"message": "Not found"}));
        assert_eq!(e.message().as_deref(), Some("Not found"));
    }

    #[test]
    fn execution_counters_optional() {
        let c: PageCounters = parse(&json!({"page": 1, "page_size": 20, "total_page_count": 1,
            "element_count": 1, "total_element_count": 1, "executions": []}));
        assert_eq!(c.total_element_count, Some(1));
        let c: PageCounters = parse(&json!({"pipelines": []}));
        assert_eq!(c, PageCounters::default());
    }
}
