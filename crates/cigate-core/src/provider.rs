//! The contract between the HTTP layer and a CI/CD provider (Buddy today).
//!
//! One provider instance serves one integrated account. Positions are opaque JSON chosen
//! by the provider; the server signs them into cursors with [`crate::CursorCodec`] and hands
//! them back unchanged, so a provider can page however its upstream needs.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::ProviderError;
use crate::model::{
    Branch, Integration, Job, PullRequest, RemoteData, Repo, Variable, Workflow, Workspace,
};

/// The unified CI/CD resources.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Resource {
    Workspaces,
    Repos,
    Branches,
    PullRequests,
    Workflows,
    Jobs,
}

impl Resource {
    pub const ALL: [Resource; 6] = [
        Resource::Workspaces,
        Resource::Repos,
        Resource::Branches,
        Resource::PullRequests,
        Resource::Workflows,
        Resource::Jobs,
    ];

    /// Parses the `<resource>` path segment of `/unified/ci-cd/<resource>`; `workflow` is
    /// Truto's spelling, `workflows` an alias.
    pub fn from_path(segment: &str) -> Option<Resource> {
        match segment {
            "workspaces" => Some(Resource::Workspaces),
            "repos" => Some(Resource::Repos),
            "branches" => Some(Resource::Branches),
            "pull-requests" => Some(Resource::PullRequests),
            "workflow" | "workflows" => Some(Resource::Workflows),
            "jobs" => Some(Resource::Jobs),
            _ => None,
        }
    }

    /// The canonical path segment (Truto's spelling); stable, used in cursor bindings.
    pub fn as_str(self) -> &'static str {
        match self {
            Resource::Workspaces => "workspaces",
            Resource::Repos => "repos",
            Resource::Branches => "branches",
            Resource::PullRequests => "pull-requests",
            Resource::Workflows => "workflow",
            Resource::Jobs => "jobs",
        }
    }
}

impl std::fmt::Display for Resource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Job filters; upstreams without server-side filters get them applied by the provider,
/// which still fills a page with `limit` matching items when more exist.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobFilters {
    /// Normalised (`completed`) or raw upstream value.
    pub status: Option<String>,
    pub conclusion: Option<String>,
    pub branch: Option<String>,
    /// `created_at[gte]`, inclusive.
    pub created_after: Option<DateTime<Utc>>,
    /// `created_at[lte]`, inclusive.
    pub created_before: Option<DateTime<Utc>>,
}

impl JobFilters {
    pub fn is_empty(&self) -> bool {
        self == &JobFilters::default()
    }
}

/// The scoping, paging and filter parameters of a unified request, already parsed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListQuery {
    /// Upstream workspace; `None` lets the provider default it when the account has
    /// exactly one (the server fills it from the account's context first).
    pub workspace: Option<String>,
    /// `repo` or its alias `project`, resolved to one value by the server.
    pub repo: Option<String>,
    pub workflow: Option<String>,
    /// Items per unified page (1..=1000).
    pub limit: u32,
    pub filters: JobFilters,
    /// `remote_query[key]=value`, passed to every upstream list call as `key=value`.
    pub remote_query: Vec<(String, String)>,
}

impl Default for ListQuery {
    fn default() -> Self {
        ListQuery {
            workspace: None,
            repo: None,
            workflow: None,
            limit: Self::DEFAULT_LIMIT,
            filters: JobFilters::default(),
            remote_query: Vec::new(),
        }
    }
}

impl ListQuery {
    pub const DEFAULT_LIMIT: u32 = 100;
    pub const MAX_LIMIT: u32 = 1000;

    /// A canonical, unambiguous string of everything that shapes the result set, for
    /// [`crate::CursorBinding::filters`]: a cursor is only valid with the same scope,
    /// filters and limit (positions depend on the limit).
    pub fn canonical(&self) -> String {
        let mut remote = self.remote_query.clone();
        remote.sort();
        serde_json::json!([
            self.workspace,
            self.repo,
            self.workflow,
            self.limit,
            self.filters.status,
            self.filters.conclusion,
            self.filters.branch,
            self.filters.created_after.map(|d| d.timestamp_millis()),
            self.filters.created_before.map(|d| d.timestamp_millis()),
            remote,
        ])
        .to_string()
    }
}

/// The upstream's rate-limit state as of its latest answer, for `ratelimit-*` headers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RateLimit {
    pub limit: Option<u64>,
    pub remaining: Option<u64>,
    /// Unix seconds when the window resets.
    pub reset: Option<i64>,
}

/// One unified object, typed: serialised straight into the response, never through a
/// JSON tree.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Unified {
    Workspace(Workspace),
    Repo(Repo),
    Branch(Branch),
    PullRequest(PullRequest),
    Workflow(Box<Workflow>),
    Job(Box<Job>),
    Variable(Variable),
    Integration(Integration),
}

impl Unified {
    /// The object's unified `id`.
    pub fn id(&self) -> &str {
        match self {
            Unified::Workspace(x) => &x.id,
            Unified::Repo(x) => &x.id,
            Unified::Branch(x) => &x.id,
            Unified::PullRequest(x) => &x.id,
            Unified::Workflow(x) => &x.id,
            Unified::Job(x) => &x.id,
            Unified::Variable(x) => &x.id,
            Unified::Integration(x) => &x.id,
        }
    }

    pub fn as_workspace(&self) -> Option<&Workspace> {
        match self {
            Unified::Workspace(w) => Some(w),
            _ => None,
        }
    }

    pub fn as_repo(&self) -> Option<&Repo> {
        match self {
            Unified::Repo(r) => Some(r),
            _ => None,
        }
    }

    pub fn as_workflow(&self) -> Option<&Workflow> {
        match self {
            Unified::Workflow(w) => Some(w),
            _ => None,
        }
    }

    pub fn as_job(&self) -> Option<&Job> {
        match self {
            Unified::Job(job) => Some(job),
            _ => None,
        }
    }

    pub fn as_variable(&self) -> Option<&Variable> {
        match self {
            Unified::Variable(v) => Some(v),
            _ => None,
        }
    }

    pub fn remote_data(&self) -> Option<&RemoteData> {
        match self {
            Unified::Workspace(x) => x.remote_data.as_ref(),
            Unified::Repo(x) => x.remote_data.as_ref(),
            Unified::Branch(x) => x.remote_data.as_ref(),
            Unified::PullRequest(x) => x.remote_data.as_ref(),
            Unified::Workflow(x) => x.remote_data.as_ref(),
            Unified::Job(x) => x.remote_data.as_ref(),
            Unified::Variable(x) => x.remote_data.as_ref(),
            Unified::Integration(x) => x.remote_data.as_ref(),
        }
    }

    fn remote_data_mut(&mut self) -> &mut Option<RemoteData> {
        match self {
            Unified::Workspace(x) => &mut x.remote_data,
            Unified::Repo(x) => &mut x.remote_data,
            Unified::Branch(x) => &mut x.remote_data,
            Unified::PullRequest(x) => &mut x.remote_data,
            Unified::Workflow(x) => &mut x.remote_data,
            Unified::Job(x) => &mut x.remote_data,
            Unified::Variable(x) => &mut x.remote_data,
            Unified::Integration(x) => &mut x.remote_data,
        }
    }
}

macro_rules! unified_from {
    ($($model:ident => $variant:expr),* $(,)?) => {
        $(impl From<$model> for Unified {
            fn from(model: $model) -> Unified {
                $variant(model)
            }
        })*
    };
}

unified_from! {
    Workspace => Unified::Workspace,
    Repo => Unified::Repo,
    Branch => Unified::Branch,
    PullRequest => Unified::PullRequest,
    Workflow => |w| Unified::Workflow(Box::new(w)),
    Job => |j| Unified::Job(Box::new(j)),
    Variable => Unified::Variable,
    Integration => Unified::Integration,
}

/// One object of a provider's answer: the unified model, whose `remote_data` is the
/// upstream's object as it sent it (so the server can drop fields, drop `remote_data`
/// or answer raw without the provider's help).
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub unified: Unified,
    /// Fields added by the server after the provider (the tenant feed's
    /// `integrated_account_id`, `tenant_id`), shown in the unified and the raw form.
    extra: Vec<(&'static str, String)>,
}

/// How a caller asked to see records (`truto_ignore_remote_data`, `truto_exclude_fields`,
/// `truto_response_format=raw`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RenderOptions {
    pub ignore_remote_data: bool,
    pub exclude_fields: Vec<String>,
    pub raw: bool,
}

impl Record {
    pub fn new(unified: impl Into<Unified>) -> Record {
        Record {
            unified: unified.into(),
            extra: Vec::new(),
        }
    }

    /// The upstream's object.
    pub fn raw(&self) -> Option<&RemoteData> {
        self.unified.remote_data()
    }

    /// Adds a field to both forms of the object.
    pub fn annotate(&mut self, key: &'static str, value: String) {
        self.extra.retain(|(k, _)| *k != key);
        self.extra.push((key, value));
    }

    /// What to put in a response. `raw` wins over the other options; the fields and
    /// `remote_data` left out are never serialised.
    pub fn render(mut self, options: &RenderOptions) -> Rendered {
        let raw = self.unified.remote_data_mut().take();
        if options.raw {
            if self.extra.is_empty() {
                return Rendered(Shape::Raw(raw));
            }
            let mut value = raw.map_or(serde_json::Value::Null, |r| r.to_value());
            if let Some(object) = value.as_object_mut() {
                for (key, v) in self.extra {
                    object.insert(key.to_owned(), serde_json::Value::String(v));
                }
            }
            return Rendered(Shape::Value(value));
        }
        let excluded = |name: &str| options.exclude_fields.iter().any(|f| f == name);
        let raw = raw.filter(|_| !options.ignore_remote_data && !excluded("remote_data"));
        if options.exclude_fields.is_empty() && self.extra.is_empty() {
            *self.unified.remote_data_mut() = raw;
            return Rendered(Shape::Model(self.unified));
        }
        // Rare: the object without `remote_data` is small, so editing it as a tree is cheap.
        let mut fields = match serde_json::to_value(&self.unified) {
            Ok(serde_json::Value::Object(fields)) => fields,
            _ => serde_json::Map::new(),
        };
        for (key, v) in self.extra {
            fields.insert(key.to_owned(), serde_json::Value::String(v));
        }
        for field in &options.exclude_fields {
            fields.remove(field.as_str());
        }
        Rendered(Shape::Fields(fields, raw))
    }
}

/// A record as a response shows it; serialises without copying `remote_data`.
#[derive(Debug)]
pub struct Rendered(Shape);

// `Model` is the common case and the big one; boxing it would cost an allocation per
// item of every page.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
enum Shape {
    Model(Unified),
    Fields(
        serde_json::Map<String, serde_json::Value>,
        Option<RemoteData>,
    ),
    Raw(Option<RemoteData>),
    Value(serde_json::Value),
}

impl Serialize for Rendered {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match &self.0 {
            Shape::Model(unified) => unified.serialize(serializer),
            Shape::Fields(fields, raw) => {
                use serde::ser::SerializeMap;
                let mut map =
                    serializer.serialize_map(Some(fields.len() + usize::from(raw.is_some())))?;
                for (key, value) in fields {
                    map.serialize_entry(key, value)?;
                }
                if let Some(raw) = raw {
                    map.serialize_entry("remote_data", raw)?;
                }
                map.end()
            }
            Shape::Raw(raw) => raw.serialize(serializer),
            Shape::Value(value) => value.serialize(serializer),
        }
    }
}

/// One unified page.
#[derive(Debug, Clone, PartialEq)]
pub struct ListPage {
    pub items: Vec<Record>,
    /// Opaque provider position of the next page; `None` on the last page.
    pub next: Option<serde_json::Value>,
    pub rate_limit: Option<RateLimit>,
    /// Calls to the upstream this page took (for callers that report their cost).
    pub upstream_calls: u32,
}

/// One object fetched by id, with the rate-limit state of the call that fetched it.
#[derive(Debug, Clone, PartialEq)]
pub struct GetResult {
    pub record: Record,
    pub rate_limit: Option<RateLimit>,
}

/// A CI/CD provider bound to one integrated account.
///
/// `workspace` defaulting is the provider's job: when `query.workspace` is `None` it lists
/// the account's workspaces and uses the only one, else answers
/// [`ProviderError::MissingParameter`].
#[async_trait]
pub trait Provider: Send + Sync {
    /// A page of `query.limit` items starting at `position` (`None` = first page, else a
    /// value this provider returned in [`ListPage::next`]).
    async fn list(
        &self,
        resource: Resource,
        query: &ListQuery,
        position: Option<serde_json::Value>,
    ) -> Result<ListPage, ProviderError>;

    /// One object by its unified id, scoped by `query` (`workspace`, `repo`, `workflow`).
    async fn get(
        &self,
        resource: Resource,
        id: &str,
        query: &ListQuery,
    ) -> Result<GetResult, ProviderError>;

    /// The write side, for providers that offer it (see [`crate::writes`]).
    fn writes(&self) -> Option<&dyn crate::writes::ProviderWrites> {
        None
    }

    /// Webhooks the provider sends cigate when jobs change, for providers that have them.
    fn hooks(&self) -> Option<&dyn ProviderHooks> {
        None
    }
}

/// Provider webhooks pointing back at cigate: registered for every workspace the
/// account sees, so job events need no set-up by the account's owner.
#[async_trait]
pub trait ProviderHooks: Send + Sync {
    /// Makes every workspace the account sees post its job changes to `target_url` with
    /// the shared `secret`: finds cigate's own webhook by its URL, creates it where it is
    /// missing and repairs it where it drifted, never adding a second one. Returns what
    /// is registered, for [`ProviderHooks::remove_hooks`].
    async fn ensure_hooks(
        &self,
        target_url: &str,
        secret: &str,
    ) -> Result<serde_json::Value, ProviderError>;

    /// Removes every webhook of the account's workspaces that posts to `target_url`;
    /// returns how many.
    async fn remove_hooks(&self, target_url: &str) -> Result<u32, ProviderError>;

    /// What a delivery's JSON body claims (a hint: the job is read again before any
    /// event).
    fn hint(&self, body: &serde_json::Value) -> crate::events::HookHint;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resource_paths_round_trip() {
        for r in Resource::ALL {
            assert_eq!(Resource::from_path(r.as_str()), Some(r));
        }
        assert_eq!(Resource::from_path("workflows"), Some(Resource::Workflows));
        assert_eq!(Resource::from_path("pipelines"), None);
    }

    #[test]
    fn canonical_ignores_remote_query_order_but_not_limit() {
        let mut a = ListQuery {
            remote_query: vec![("b".into(), "1".into()), ("a".into(), "2".into())],
            ..Default::default()
        };
        let mut b = a.clone();
        b.remote_query.reverse();
        assert_eq!(a.canonical(), b.canonical());
        a.limit = 37;
        assert_ne!(a.canonical(), b.canonical());
    }

    #[test]
    fn render_options() {
        let record = || {
            Record::new(Workspace {
                id: "1".into(),
                name: Some("x".into()),
                remote_data: RemoteData::from_value(&serde_json::json!({"id": 1})),
                ..Workspace::default()
            })
        };
        let shown =
            |r: Record, options: &RenderOptions| serde_json::to_value(r.render(options)).unwrap();
        assert_eq!(
            shown(record(), &RenderOptions::default()),
            serde_json::json!({"id": "1", "name": "x", "remote_data": {"id": 1}})
        );
        let opts = RenderOptions {
            ignore_remote_data: true,
            exclude_fields: vec!["name".into()],
            raw: false,
        };
        assert_eq!(shown(record(), &opts), serde_json::json!({"id": "1"}));
        let only_name = RenderOptions {
            exclude_fields: vec!["name".into()],
            ..Default::default()
        };
        assert_eq!(
            shown(record(), &only_name),
            serde_json::json!({"id": "1", "remote_data": {"id": 1}})
        );
        let raw = RenderOptions {
            raw: true,
            ..Default::default()
        };
        assert_eq!(shown(record(), &raw), serde_json::json!({"id": 1}));
        let mut annotated = record();
        annotated.annotate("tenant_id", "acme".into());
        assert_eq!(
            shown(annotated.clone(), &RenderOptions::default()),
            serde_json::json!({"id": "1", "name": "x", "tenant_id": "acme", "remote_data": {"id": 1}})
        );
        assert_eq!(
            shown(annotated, &raw),
            serde_json::json!({"id": 1, "tenant_id": "acme"})
        );
    }
}
