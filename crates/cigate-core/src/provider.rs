//! The contract between the HTTP layer and a CI/CD provider (Buddy today).
//!
//! One provider instance serves one integrated account. Positions are opaque JSON chosen
//! by the provider; the server signs them into cursors with [`crate::CursorCodec`] and hands
//! them back unchanged, so a provider can page however its upstream needs.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::ProviderError;

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

/// One object: the unified model serialised (with `remote_data`) plus the upstream's raw
/// object, so the server can drop fields, drop `remote_data` or answer raw.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub unified: serde_json::Value,
    pub raw: serde_json::Value,
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
    pub fn new<T: Serialize>(model: &T, raw: serde_json::Value) -> Record {
        let unified = serde_json::to_value(model).unwrap_or(serde_json::Value::Null);
        Record { unified, raw }
    }

    /// The JSON to put in a response. `raw` wins over the other options.
    pub fn render(&self, options: &RenderOptions) -> serde_json::Value {
        if options.raw {
            return self.raw.clone();
        }
        let mut value = self.unified.clone();
        if let Some(object) = value.as_object_mut() {
            if options.ignore_remote_data {
                object.remove("remote_data");
            }
            for field in &options.exclude_fields {
                object.remove(field.as_str());
            }
        }
        value
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
        let r = Record {
            unified: serde_json::json!({"id": "1", "name": "x", "remote_data": {"id": 1}}),
            raw: serde_json::json!({"id": 1}),
        };
        let opts = RenderOptions {
            ignore_remote_data: true,
            exclude_fields: vec!["name".into()],
            raw: false,
        };
        assert_eq!(r.render(&opts), serde_json::json!({"id": "1"}));
        let raw = RenderOptions {
            raw: true,
            ..Default::default()
        };
        assert_eq!(r.render(&raw), serde_json::json!({"id": 1}));
    }
}
