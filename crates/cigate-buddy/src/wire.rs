//! Buddy's JSON, as tolerant types.
//!
//! Buddy's documentation comes in several generations that disagree on details, so every
//! field is optional, `null` is accepted everywhere, unknown fields are ignored, and fields
//! whose type has been seen to vary (ids, dates, flags, counters) are read leniently: a value
//! of an unexpected type becomes `None` instead of failing the whole page.

use std::borrow::Cow;

use chrono::{DateTime, NaiveDateTime, Utc};
use std::marker::PhantomData;

use serde::de::value::MapAccessDeserializer;
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
    Ok(match Scalar::deserialize(deserializer)? {
        Scalar::Str(s) if !s.is_empty() => Some(s.into_owned()),
        Scalar::Number(n) => Some(n.to_string()),
        _ => None,
    })
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
    Ok(match Scalar::deserialize(deserializer)? {
        Scalar::Str(s) => parse_date(&s),
        _ => None,
    })
}

/// A JSON value read for a string or a number in it, without building anything for the
/// other kinds (objects and arrays are skipped).
enum Scalar<'de> {
    Str(Cow<'de, str>),
    Number(serde_json::Number),
    Other,
}

impl<'de> Deserialize<'de> for Scalar<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Scalar<'de>, D::Error> {
        struct ScalarVisitor;
        impl<'de> Visitor<'de> for ScalarVisitor {
            type Value = Scalar<'de>;

            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("any JSON value")
            }

            fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Scalar<'de>, E> {
                Ok(Scalar::Str(Cow::Borrowed(s)))
            }

            fn visit_str<E>(self, s: &str) -> Result<Scalar<'de>, E> {
                Ok(Scalar::Str(Cow::Owned(s.to_owned())))
            }

            fn visit_string<E>(self, s: String) -> Result<Scalar<'de>, E> {
                Ok(Scalar::Str(Cow::Owned(s)))
            }

            fn visit_u64<E>(self, n: u64) -> Result<Scalar<'de>, E> {
                Ok(Scalar::Number(n.into()))
            }

            fn visit_i64<E>(self, n: i64) -> Result<Scalar<'de>, E> {
                Ok(Scalar::Number(n.into()))
            }

            fn visit_f64<E>(self, n: f64) -> Result<Scalar<'de>, E> {
                Ok(serde_json::Number::from_f64(n).map_or(Scalar::Other, Scalar::Number))
            }

            fn visit_bool<E>(self, _: bool) -> Result<Scalar<'de>, E> {
                Ok(Scalar::Other)
            }

            fn visit_unit<E>(self) -> Result<Scalar<'de>, E> {
                Ok(Scalar::Other)
            }

            fn visit_none<E>(self) -> Result<Scalar<'de>, E> {
                Ok(Scalar::Other)
            }

            fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Scalar<'de>, D::Error> {
                Scalar::deserialize(d)
            }

            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Scalar<'de>, A::Error> {
                IgnoredAny.visit_seq(seq)?;
                Ok(Scalar::Other)
            }

            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Scalar<'de>, A::Error> {
                IgnoredAny.visit_map(map)?;
                Ok(Scalar::Other)
            }
        }
        deserializer.deserialize_any(ScalarVisitor)
    }
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
///
/// The objects nested in others keep only the fields the mapping reads (no `url`,
/// `html_url`): every item is parsed on every unified read, and the rest of Buddy's
/// object is in `remote_data` anyway.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default)]
pub struct MemberRef {
    #[serde(deserialize_with = "lenient_id")]
    pub id: Option<String>,
    #[serde(deserialize_with = "lenient_str")]
    pub name: Option<String>,
    #[serde(deserialize_with = "lenient_str")]
    pub email: Option<String>,
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
    #[serde(deserialize_with = "lenient_str")]
    pub url: Option<String>,
    #[serde(deserialize_with = "lenient_str")]
    pub html_url: Option<String>,
    #[serde(deserialize_with = "lenient_str")]
    pub name: Option<String>,
    #[serde(deserialize_with = "lenient_str")]
    pub display_name: Option<String>,
    #[serde(deserialize_with = "lenient_str")]
    pub status: Option<String>,
    #[serde(deserialize_with = "lenient_date")]
    pub create_date: Option<DateTime<Utc>>,
    #[serde(deserialize_with = "lenient_object")]
    pub created_by: Option<MemberRef>,
    #[serde(deserialize_with = "lenient_str")]
    pub http_repository: Option<String>,
    #[serde(deserialize_with = "lenient_str")]
    pub ssh_repository: Option<String>,
    #[serde(deserialize_with = "lenient_str")]
    pub default_branch: Option<String>,
    #[serde(deserialize_with = "lenient_str")]
    pub access: Option<String>,
    #[serde(deserialize_with = "lenient")]
    pub allow_pull_requests: Option<bool>,
    #[serde(deserialize_with = "lenient")]
    pub without_repository: Option<bool>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default)]
pub struct Commit {
    #[serde(deserialize_with = "lenient_str")]
    pub revision: Option<String>,
    #[serde(deserialize_with = "lenient_date")]
    pub author_date: Option<DateTime<Utc>>,
    #[serde(deserialize_with = "lenient_date")]
    pub commit_date: Option<DateTime<Utc>>,
    #[serde(deserialize_with = "lenient_str")]
    pub message: Option<String>,
    #[serde(deserialize_with = "lenient_object")]
    pub author: Option<MemberRef>,
    #[serde(deserialize_with = "lenient_object")]
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
    #[serde(deserialize_with = "lenient_object")]
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
    #[serde(deserialize_with = "lenient_str")]
    pub kind: Option<String>,
    #[serde(deserialize_with = "lenient_strings")]
    pub refs: Option<Vec<String>>,
    #[serde(deserialize_with = "lenient_str")]
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
    #[serde(deserialize_with = "lenient_strings")]
    pub refs: Option<Vec<String>>,
    #[serde(deserialize_with = "lenient_objects")]
    pub events: Option<Vec<PipelineEvent>>,
    pub last_execution_status: Option<String>,
    pub last_execution_revision: Option<String>,
    #[serde(deserialize_with = "lenient_date")]
    pub create_date: Option<DateTime<Utc>>,
    #[serde(deserialize_with = "lenient")]
    pub disabled: Option<bool>,
    #[serde(deserialize_with = "lenient")]
    pub paused: Option<bool>,
    #[serde(deserialize_with = "lenient_object")]
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
    #[serde(deserialize_with = "lenient_str")]
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
    #[serde(deserialize_with = "lenient_id")]
    pub id: Option<String>,
    #[serde(deserialize_with = "lenient_str")]
    pub name: Option<String>,
    #[serde(rename = "type")]
    #[serde(deserialize_with = "lenient_str")]
    pub kind: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default)]
pub struct ActionExecution {
    #[serde(deserialize_with = "lenient_id")]
    pub action_execution_id: Option<String>,
    #[serde(deserialize_with = "lenient_str")]
    pub status: Option<String>,
    #[serde(deserialize_with = "lenient")]
    pub progress: Option<f64>,
    #[serde(deserialize_with = "lenient_date")]
    pub start_date: Option<DateTime<Utc>>,
    #[serde(deserialize_with = "lenient_date")]
    pub finish_date: Option<DateTime<Utc>>,
    #[serde(deserialize_with = "lenient_str")]
    pub error_message: Option<String>,
    #[serde(deserialize_with = "lenient_object")]
    pub action: Option<ActionRef>,
}

/// Pipeline reference inside an execution.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default)]
pub struct PipelineRef {
    #[serde(deserialize_with = "lenient_id")]
    pub id: Option<String>,
    #[serde(deserialize_with = "lenient_str")]
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
    #[serde(deserialize_with = "lenient_ref")]
    pub branch: Option<RefField>,
    #[serde(deserialize_with = "lenient_ref")]
    pub tag: Option<RefField>,
    #[serde(deserialize_with = "lenient_ref")]
    pub pull_request: Option<RefField>,
    #[serde(deserialize_with = "lenient_object")]
    pub to_revision: Option<Commit>,
    #[serde(deserialize_with = "lenient_object")]
    pub from_revision: Option<Commit>,
    #[serde(deserialize_with = "lenient_object")]
    pub creator: Option<MemberRef>,
    #[serde(deserialize_with = "lenient_objects")]
    pub action_executions: Option<Vec<ActionExecution>>,
    #[serde(deserialize_with = "lenient_object")]
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

/// `visit_*` for the JSON kinds a visitor does not want: they read as `$none`.
macro_rules! not_this_kind {
    ($value:ty, $none:expr) => {
        fn visit_bool<E>(self, _: bool) -> Result<$value, E> {
            Ok($none)
        }

        fn visit_i64<E>(self, _: i64) -> Result<$value, E> {
            Ok($none)
        }

        fn visit_u64<E>(self, _: u64) -> Result<$value, E> {
            Ok($none)
        }

        fn visit_f64<E>(self, _: f64) -> Result<$value, E> {
            Ok($none)
        }

        fn visit_unit<E>(self) -> Result<$value, E> {
            Ok($none)
        }

        fn visit_none<E>(self) -> Result<$value, E> {
            Ok($none)
        }
    };
}

/// A string; any other JSON value is `None`.
pub fn lenient_str<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<String>, D::Error> {
    Ok(match Scalar::deserialize(deserializer)? {
        Scalar::Str(s) => Some(s.into_owned()),
        _ => None,
    })
}

/// A nested object (its fields lenient themselves); anything but an object is `None`.
/// Read in the same pass as its parent, without buffering it first.
pub fn lenient_object<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    ObjectSeed(PhantomData).deserialize(deserializer)
}

/// An array of nested objects; elements that are not objects are left out, anything but
/// an array is `None`.
pub fn lenient_objects<'de, D, T>(deserializer: D) -> Result<Option<Vec<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    struct ObjectsVisitor<T>(PhantomData<T>);
    impl<'de, T: Deserialize<'de>> Visitor<'de> for ObjectsVisitor<T> {
        type Value = Option<Vec<T>>;

        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("an array of objects")
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Option<Vec<T>>, A::Error> {
            let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0));
            while let Some(item) = seq.next_element_seed(ObjectSeed::<T>(PhantomData))? {
                items.extend(item);
            }
            Ok(Some(items))
        }

        fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Option<Vec<T>>, A::Error> {
            IgnoredAny.visit_map(map)?;
            Ok(None)
        }

        fn visit_str<E>(self, _: &str) -> Result<Option<Vec<T>>, E> {
            Ok(None)
        }

        not_this_kind!(Option<Vec<T>>, None);
    }
    deserializer.deserialize_any(ObjectsVisitor(PhantomData))
}

/// An array of strings; elements that are not strings are left out, anything but an
/// array is `None`.
pub fn lenient_strings<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Vec<String>>, D::Error> {
    struct StringsVisitor;
    impl<'de> Visitor<'de> for StringsVisitor {
        type Value = Option<Vec<String>>;

        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("an array of strings")
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Option<Vec<String>>, A::Error> {
            let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0));
            while let Some(item) = seq.next_element::<Scalar>()? {
                if let Scalar::Str(s) = item {
                    items.push(s.into_owned());
                }
            }
            Ok(Some(items))
        }

        fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Option<Vec<String>>, A::Error> {
            IgnoredAny.visit_map(map)?;
            Ok(None)
        }

        fn visit_str<E>(self, _: &str) -> Result<Option<Vec<String>>, E> {
            Ok(None)
        }

        not_this_kind!(Option<Vec<String>>, None);
    }
    deserializer.deserialize_any(StringsVisitor)
}

/// A [`RefField`]: a name or an object; anything else is `None`.
pub fn lenient_ref<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<RefField>, D::Error> {
    struct RefVisitor;
    impl<'de> Visitor<'de> for RefVisitor {
        type Value = Option<RefField>;

        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a ref name or object")
        }

        fn visit_str<E>(self, s: &str) -> Result<Option<RefField>, E> {
            Ok(Some(RefField::Name(s.to_owned())))
        }

        fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Option<RefField>, A::Error> {
            RefObject::deserialize(MapAccessDeserializer::new(map))
                .map(|o| Some(RefField::Object(o)))
        }

        fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Option<RefField>, A::Error> {
            IgnoredAny.visit_seq(seq)?;
            Ok(None)
        }

        not_this_kind!(Option<RefField>, None);
    }
    deserializer.deserialize_any(RefVisitor)
}

struct ObjectSeed<T>(PhantomData<T>);

impl<'de, T: Deserialize<'de>> DeserializeSeed<'de> for ObjectSeed<T> {
    type Value = Option<T>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Option<T>, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de, T: Deserialize<'de>> Visitor<'de> for ObjectSeed<T> {
    type Value = Option<T>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("an object")
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Option<T>, A::Error> {
        T::deserialize(MapAccessDeserializer::new(map)).map(Some)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Option<T>, A::Error> {
        IgnoredAny.visit_seq(seq)?;
        Ok(None)
    }

    fn visit_str<E>(self, _: &str) -> Result<Option<T>, E> {
        Ok(None)
    }

    not_this_kind!(Option<T>, None);
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
    fn pages_read_from_bytes() {
        let body = br#"{"page": 2, "page_size": 2, "total_element_count": 9, "extra": {"a": [1]},
            "executions": [{"id": 7, "start_date": "2024-01-01T00:00:00Z",
                "creator": "not an object", "action_executions": [{"action_execution_id": "a"}]},
                null]}"#;
        let page = RawPage::parse(body, "executions").unwrap();
        assert_eq!(page.counters.page, Some(2));
        assert_eq!(page.counters.total_element_count, Some(9));
        assert_eq!(page.counters.element_count, None);
        assert_eq!(page.items.len(), 2);
        let e: Execution = parse_raw(&page.items[0]);
        assert_eq!(e.id.as_deref(), Some("7"));
        assert!(e.start_date.is_some());
        assert_eq!(e.creator, None);
        assert_eq!(e.action_executions.unwrap().len(), 1);
        assert_eq!(parse_raw::<Execution>(&page.items[1]), Execution::default());
        for other in [
            &br#"{"executions": {"a": 1}}"#[..],
            b"[1, 2]",
            b"null",
            b"{}",
        ] {
            assert!(RawPage::parse(other, "executions")
                .unwrap()
                .items
                .is_empty());
        }
        assert!(RawPage::parse(b"{", "executions").is_err());
        let odd: Execution = serde_json::from_str(
            r#"{"id": {"n": 1}, "start_date": ["2024-01-01"], "finish_date": 5, "status": "FAILED"}"#,
        )
        .unwrap();
        assert_eq!(
            (odd.id, odd.start_date, odd.finish_date),
            (None, None, None)
        );
        assert_eq!(odd.status.as_deref(), Some("FAILED"));
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
