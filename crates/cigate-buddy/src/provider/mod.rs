//! [`BuddyProvider`]: the unified CI/CD resources over Buddy's REST API.
//!
//! Positions (opaque to callers, signed by the server):
//! * `{"o": n}` — offset into an offset-paged list (projects, pipelines, executions of one
//!   pipeline) or into a list Buddy returns whole (workspaces, branches, pull requests),
//!   which cigate slices;
//! * `{"m": …}` — the state of a merged job feed (see [`merge`]).

pub mod hooks;
mod merge;
mod pulls;
pub mod window;
pub mod writes;

use std::sync::Mutex;

use async_trait::async_trait;
use cigate_core::{
    GetResult, ListPage, ListQuery, Provider, ProviderError, RateLimit, Record, Resource,
};
use futures::stream::{self, StreamExt, TryStreamExt};
use serde_json::value::RawValue;
use serde_json::{json, Value};

use crate::client::{decode_json, BuddyClient};
use crate::error::BuddyError;
use crate::mapping::{records, JobContext};
use crate::wire;

pub use window::{MAX_PAGES, MAX_PER_PAGE};

/// Scopes Buddy checks on the endpoints used here, named in errors when Buddy refuses.
pub(crate) const SCOPE_WORKSPACE: &str = "WORKSPACE";
pub(crate) const SCOPE_REPOSITORY: &str = "REPOSITORY_READ";
pub(crate) const SCOPE_EXECUTION: &str = "EXECUTION_INFO";

/// Upstream calls in flight at once for one unified request (merged feeds, multi-page
/// windows). Bounded so one request cannot burn an account's rate budget in a burst.
pub const DEFAULT_CONCURRENCY: usize = 8;

/// The Buddy implementation of [`Provider`], one per integrated account.
pub struct BuddyProvider {
    client: BuddyClient,
    concurrency: usize,
    /// The account's only workspace once seen, so defaulting `workspace` costs one call
    /// per provider instance rather than one per request.
    only_workspace: Mutex<Option<String>>,
}

impl BuddyProvider {
    pub fn new(client: BuddyClient) -> BuddyProvider {
        BuddyProvider {
            client,
            concurrency: DEFAULT_CONCURRENCY,
            only_workspace: Mutex::new(None),
        }
    }

    /// Changes the bound on concurrent upstream calls per request (at least 1).
    pub fn with_concurrency(mut self, concurrency: usize) -> BuddyProvider {
        self.concurrency = concurrency.max(1);
        self
    }

    pub fn client(&self) -> &BuddyClient {
        &self.client
    }
}

/// State of one unified request: the caller's `remote_query` and the rate-limit view of
/// the upstream answers seen so far.
pub(crate) struct Call<'a> {
    provider: &'a BuddyProvider,
    remote_query: &'a [(String, String)],
    rate_limit: Mutex<Option<RateLimit>>,
    /// Upstream GETs made, for [`ListPage::upstream_calls`].
    calls: std::sync::atomic::AtomicU32,
}

impl<'a> Call<'a> {
    fn new(provider: &'a BuddyProvider, query: &'a ListQuery) -> Call<'a> {
        Call {
            provider,
            remote_query: &query.remote_query,
            rate_limit: Mutex::new(None),
            calls: std::sync::atomic::AtomicU32::new(0),
        }
    }

    pub(crate) fn concurrency(&self) -> usize {
        self.provider.concurrency
    }

    /// `GET path` with `params` plus the caller's `remote_query` (our paging parameters
    /// win over the caller's), parsed as JSON.
    pub(crate) async fn get(
        &self,
        path: &str,
        params: &[(&str, String)],
        scope: &'static str,
    ) -> Result<Value, ProviderError> {
        let body = self.get_bytes(path, params, scope).await?;
        decode_json(200, &body).map_err(|e| provider_error(e, scope))
    }

    /// Like [`Call::get`], the body as Buddy sent it, for the reads that map it.
    pub(crate) async fn get_bytes(
        &self,
        path: &str,
        params: &[(&str, String)],
        scope: &'static str,
    ) -> Result<Vec<u8>, ProviderError> {
        let mut query: Vec<(String, String)> = self
            .remote_query
            .iter()
            .filter(|(k, _)| !params.iter().any(|(p, _)| p == k))
            .cloned()
            .collect();
        query.extend(params.iter().map(|(k, v)| ((*k).to_owned(), v.clone())));
        self.calls
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let answer = self
            .provider
            .client
            .get_bytes(path, &query)
            .await
            .map_err(|e| provider_error(e, scope))?;
        let seen = RateLimit {
            limit: answer.rate_limit.limit,
            remaining: answer.rate_limit.remaining,
            reset: answer.rate_limit.reset,
        };
        if seen != RateLimit::default() {
            if let Ok(mut current) = self.rate_limit.lock() {
                // Calls may finish out of order; the lowest remaining budget is the latest.
                let keep_old = matches!(
                    (*current, seen.remaining),
                    (Some(RateLimit { remaining: Some(old), .. }), Some(new)) if old < new
                );
                if !keep_old {
                    *current = Some(seen);
                }
            }
        }
        Ok(answer.body)
    }

    /// A list page's items and counters (see [`wire::RawPage`]).
    pub(crate) async fn get_page(
        &self,
        path: &str,
        params: &[(&str, String)],
        key: &str,
        scope: &'static str,
    ) -> Result<wire::RawPage, ProviderError> {
        let body = self.get_bytes(path, params, scope).await?;
        wire::RawPage::parse(&body, key).map_err(|e| decode_error(e, scope))
    }

    /// One object as Buddy sent it.
    pub(crate) async fn get_object(
        &self,
        path: &str,
        scope: &'static str,
    ) -> Result<Box<RawValue>, ProviderError> {
        let body = self.get_bytes(path, &[], scope).await?;
        wire::raw_object(&body).map_err(|e| decode_error(e, scope))
    }

    /// Every page of a Buddy list whose size is unknown (pipelines of a project, projects
    /// of a workspace), at the largest page size.
    pub(crate) async fn get_all(
        &self,
        path: &str,
        key: &str,
        scope: &'static str,
    ) -> Result<Vec<Value>, ProviderError> {
        let mut all = Vec::new();
        for page in 1..=MAX_PAGES {
            let body = self
                .get(
                    path,
                    &[
                        ("page", page.to_string()),
                        ("per_page", MAX_PER_PAGE.to_string()),
                    ],
                    scope,
                )
                .await?;
            let items = wire::list_items(&body, key);
            let counters: wire::PageCounters = wire::parse(&body);
            let n = items.len();
            all.extend(items);
            if n < MAX_PER_PAGE as usize || counters.total_page_count.is_some_and(|t| page >= t) {
                return Ok(all);
            }
        }
        Err(provider_error(
            BuddyError::Decode(format!(
                "{path} still answered full pages after {MAX_PAGES} pages of {MAX_PER_PAGE}; \
                 Buddy seems to ignore `page`"
            )),
            scope,
        ))
    }

    fn rate_limit(&self) -> Option<RateLimit> {
        self.rate_limit.lock().ok().and_then(|r| *r)
    }
}

/// Buddy's failure as a provider error; `scope` is what the endpoint needs, named when
/// Buddy refuses with 403 for lack of a scope without saying which.
pub(crate) fn provider_error(error: BuddyError, scope: &str) -> ProviderError {
    let missing_scope = error.missing_scope().map(str::to_owned).or_else(|| {
        let scope_refusal = error.status() == Some(403)
            && !error.is_rate_limited()
            && error
                .upstream_message()
                .is_some_and(|m| m.to_ascii_lowercase().contains("scope"));
        scope_refusal.then(|| scope.to_owned())
    });
    match error {
        BuddyError::Api {
            status,
            message,
            body,
        } => ProviderError::Upstream {
            status,
            message,
            body,
            missing_scope,
        },
        BuddyError::Timeout => ProviderError::Timeout,
        BuddyError::RateLimited { retry_after } => ProviderError::RateLimited { retry_after },
        other => ProviderError::Transport(other.to_string()),
    }
}

fn decode_error(error: serde_json::Error, scope: &str) -> ProviderError {
    provider_error(
        BuddyError::Decode(format!("invalid JSON from Buddy: {error}")),
        scope,
    )
}

/// Percent-encodes one path segment (everything but RFC 3986 unreserved characters).
pub(crate) fn segment(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    for b in raw.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

pub(crate) fn ws_path(ws: &str) -> String {
    format!("/workspaces/{}", segment(ws))
}

pub(crate) fn project_path(ws: &str, project: &str) -> String {
    format!("{}/projects/{}", ws_path(ws), segment(project))
}

pub(crate) fn pipeline_path(ws: &str, project: &str, pipeline: &str) -> String {
    format!(
        "{}/pipelines/{}",
        project_path(ws, project),
        segment(pipeline)
    )
}

/// Buddy's numeric ids: anything else cannot exist, so it is a 404 without a call.
fn numeric_id(id: &str, what: &str) -> Result<String, ProviderError> {
    let id = id.trim();
    if !id.is_empty() && id.len() <= 19 && id.bytes().all(|b| b.is_ascii_digit()) {
        Ok(id.to_owned())
    } else {
        Err(ProviderError::NotFound(format!("{what} `{id}`")))
    }
}

/// Scoping resolved for one request.
struct Scope {
    workspace: String,
    repo: Option<String>,
    workflow: Option<String>,
}

impl BuddyProvider {
    /// Resolves `workspace` (defaulting it when the account has exactly one) and checks
    /// that the other scoping parameters the resource needs are present. `repo_name` is
    /// how the missing repo is named in the error (`repo`, or `project` for jobs).
    async fn scope(
        &self,
        call: &Call<'_>,
        query: &ListQuery,
        needs_repo: Option<&str>,
        needs_workflow: bool,
    ) -> Result<Scope, ProviderError> {
        let mut missing = Vec::new();
        let repo = query.repo.clone().filter(|r| !r.is_empty());
        let workflow = query.workflow.clone().filter(|w| !w.is_empty());
        if let (Some(name), None) = (needs_repo, &repo) {
            missing.push(name.to_owned());
        }
        if needs_workflow && workflow.is_none() {
            missing.push("workflow".to_owned());
        }
        let workspace = match query.workspace.clone().filter(|w| !w.is_empty()) {
            Some(ws) => Some(ws),
            None => self.default_workspace(call).await?,
        };
        let Some(workspace) = workspace else {
            missing.insert(0, "workspace".to_owned());
            return Err(ProviderError::MissingParameter(missing));
        };
        if !missing.is_empty() {
            return Err(ProviderError::MissingParameter(missing));
        }
        Ok(Scope {
            workspace,
            repo,
            workflow,
        })
    }

    async fn default_workspace(&self, call: &Call<'_>) -> Result<Option<String>, ProviderError> {
        if let Some(ws) = self.only_workspace.lock().ok().and_then(|w| w.clone()) {
            return Ok(Some(ws));
        }
        let body = call.get("/workspaces", &[], SCOPE_WORKSPACE).await?;
        let items = wire::list_items(&body, "workspaces");
        let only = match items.as_slice() {
            [one] => wire::parse::<wire::Workspace>(one)
                .domain
                .filter(|d| !d.is_empty()),
            _ => None,
        };
        if let (Some(ws), Ok(mut cache)) = (&only, self.only_workspace.lock()) {
            *cache = Some(ws.clone());
        }
        Ok(only)
    }

    /// A list Buddy returns whole, sliced at `offset`; only the slice is mapped.
    fn slice<T>(
        items: Vec<Box<RawValue>>,
        offset: u64,
        limit: u32,
        map: impl FnMut(Box<RawValue>) -> T,
    ) -> (Vec<T>, Option<Value>) {
        let total = items.len();
        let start = usize::try_from(offset).unwrap_or(usize::MAX).min(total);
        let end = start.saturating_add(limit as usize).min(total);
        let records = items
            .into_iter()
            .skip(start)
            .take(end - start)
            .map(map)
            .collect();
        let next = (end < total).then(|| json!({ "o": end }));
        (records, next)
    }

    /// One unified page of an offset-paged Buddy list: the fewest aligned Buddy pages
    /// covering exactly `[offset, offset+limit)` (see [`window`]).
    async fn window(
        &self,
        call: &Call<'_>,
        path: &str,
        key: &str,
        scope: &'static str,
        offset: u64,
        limit: u32,
    ) -> Result<(Vec<Box<RawValue>>, Option<Value>), ProviderError> {
        let plan = window::plan(offset, limit, MAX_PER_PAGE);
        let fetch = |c: window::PageCall| async move {
            let page = call
                .get_page(
                    path,
                    &[
                        ("page", c.page.to_string()),
                        ("per_page", c.per_page.to_string()),
                    ],
                    key,
                    scope,
                )
                .await?;
            Ok::<_, ProviderError>((c, page))
        };
        let Some((&first, rest)) = plan.split_first() else {
            return Ok((Vec::new(), None));
        };
        let first_body = fetch(first).await?;
        // The executions envelope carries the total: calls past it are skipped, and a
        // last page that happens to be full needs no extra call to find the end.
        let total = first_body.1.counters.total_element_count;
        let rest: Vec<window::PageCall> = rest
            .iter()
            .copied()
            .filter(|c| total.is_none_or(|t| c.start() < t))
            .collect();
        let more: Vec<(window::PageCall, wire::RawPage)> = if rest.is_empty() {
            Vec::new()
        } else {
            stream::iter(rest)
                .map(fetch)
                .buffered(call.concurrency())
                .try_collect()
                .await?
        };
        let mut items = Vec::with_capacity(limit as usize);
        let mut ended = false;
        for (c, page) in std::iter::once(first_body).chain(more) {
            let mut page = page.items;
            page.truncate(c.per_page as usize);
            let short = page.len() < c.per_page as usize;
            items.extend(page);
            if short {
                ended = true;
                break;
            }
        }
        let end = offset + items.len() as u64;
        if total.is_some_and(|t| end >= t) {
            ended = true;
        }
        let next = (!ended).then(|| json!({ "o": end }));
        Ok((items, next))
    }
}

/// Reads an `{"o": n}` position; `None` is the first page.
fn offset_of(position: Option<&Value>) -> Result<u64, ProviderError> {
    match position {
        None => Ok(0),
        Some(p) => p
            .get("o")
            .and_then(Value::as_u64)
            .ok_or(ProviderError::InvalidPosition),
    }
}

#[async_trait]
impl Provider for BuddyProvider {
    async fn list(
        &self,
        resource: Resource,
        query: &ListQuery,
        position: Option<Value>,
    ) -> Result<ListPage, ProviderError> {
        let call = Call::new(self, query);
        let limit = query.limit.clamp(1, ListQuery::MAX_LIMIT);
        let (items, next) = match resource {
            Resource::Workspaces => {
                let offset = offset_of(position.as_ref())?;
                let page = call
                    .get_page("/workspaces", &[], "workspaces", SCOPE_WORKSPACE)
                    .await?;
                Self::slice(page.items, offset, limit, records::workspace)
            }
            Resource::Repos => {
                let offset = offset_of(position.as_ref())?;
                let s = self.scope(&call, query, None, false).await?;
                let path = format!("{}/projects", ws_path(&s.workspace));
                let (raws, next) = self
                    .window(&call, &path, "projects", SCOPE_WORKSPACE, offset, limit)
                    .await?;
                let ws = Some(s.workspace.as_str());
                let items = raws.into_iter().map(|raw| records::repo(raw, ws)).collect();
                (items, next)
            }
            Resource::Branches | Resource::PullRequests => {
                let offset = offset_of(position.as_ref())?;
                let s = self.scope(&call, query, Some("repo"), false).await?;
                let repo = s.repo.as_deref().unwrap_or_default();
                let base = format!("{}/repository", project_path(&s.workspace, repo));
                if resource == Resource::Branches {
                    let page = call
                        .get_page(
                            &format!("{base}/branches"),
                            &[],
                            "branches",
                            SCOPE_REPOSITORY,
                        )
                        .await?;
                    Self::slice(page.items, offset, limit, |raw| {
                        records::branch(raw, Some(repo))
                    })
                } else {
                    let page = call
                        .get_page(
                            &format!("{base}/pulls"),
                            &[],
                            "pull_requests",
                            SCOPE_REPOSITORY,
                        )
                        .await?;
                    let (mut prs, next) =
                        Self::slice(page.items, offset, limit, records::pull_request);
                    pulls::enrich(&call, &s.workspace, repo, &mut prs).await;
                    (prs.into_iter().map(Record::new).collect(), next)
                }
            }
            Resource::Workflows => {
                let offset = offset_of(position.as_ref())?;
                let s = self.scope(&call, query, Some("repo"), false).await?;
                let repo = s.repo.as_deref().unwrap_or_default();
                let path = format!("{}/pipelines", project_path(&s.workspace, repo));
                let (raws, next) = self
                    .window(&call, &path, "pipelines", SCOPE_EXECUTION, offset, limit)
                    .await?;
                let ws = Some(s.workspace.as_str());
                let items = raws
                    .into_iter()
                    .map(|raw| records::workflow(raw, ws, Some(repo)))
                    .collect();
                (items, next)
            }
            Resource::Jobs => {
                let s = self.scope(&call, query, None, false).await?;
                if s.workflow.is_some() && s.repo.is_none() {
                    return Err(ProviderError::MissingParameter(vec!["project".into()]));
                }
                match (&s.repo, &s.workflow) {
                    // One pipeline, no filters: plain offset paging, the fewest calls.
                    (Some(repo), Some(workflow))
                        if query.filters.is_empty()
                            && position.as_ref().is_none_or(|p| p.get("m").is_none()) =>
                    {
                        let workflow = numeric_id(workflow, "workflow")?;
                        let offset = offset_of(position.as_ref())?;
                        let path = format!(
                            "{}/executions",
                            pipeline_path(&s.workspace, repo, &workflow)
                        );
                        let (raws, next) = self
                            .window(&call, &path, "executions", SCOPE_EXECUTION, offset, limit)
                            .await?;
                        let ctx = JobContext {
                            workspace: Some(s.workspace.clone()),
                            repo: Some(repo.clone()),
                            workflow: Some(workflow),
                            workflow_name: None,
                        };
                        let items = raws
                            .into_iter()
                            .map(|raw| records::job(raw, &ctx))
                            .collect();
                        (items, next)
                    }
                    _ => {
                        merge::page(
                            &call,
                            &s.workspace,
                            s.repo.as_deref(),
                            s.workflow.as_deref(),
                            limit,
                            &query.filters,
                            position.as_ref(),
                        )
                        .await?
                    }
                }
            }
        };
        Ok(ListPage {
            items,
            next,
            rate_limit: call.rate_limit(),
            upstream_calls: call.calls.load(std::sync::atomic::Ordering::Relaxed),
        })
    }

    async fn get(
        &self,
        resource: Resource,
        id: &str,
        query: &ListQuery,
    ) -> Result<GetResult, ProviderError> {
        let call = Call::new(self, query);
        if id.trim().is_empty() {
            return Err(ProviderError::NotFound("empty id".into()));
        }
        let record = match resource {
            Resource::Workspaces => {
                records::workspace(call.get_object(&ws_path(id), SCOPE_WORKSPACE).await?)
            }
            Resource::Repos => {
                let s = self.scope(&call, query, None, false).await?;
                let raw = call
                    .get_object(&project_path(&s.workspace, id), SCOPE_WORKSPACE)
                    .await?;
                records::repo(raw, Some(&s.workspace))
            }
            Resource::Branches => {
                let s = self.scope(&call, query, Some("repo"), false).await?;
                let repo = s.repo.as_deref().unwrap_or_default();
                let raw = self.branch(&call, &s.workspace, repo, id).await?;
                records::branch(raw, Some(repo))
            }
            Resource::PullRequests => {
                let s = self.scope(&call, query, Some("repo"), false).await?;
                let repo = s.repo.as_deref().unwrap_or_default();
                let number = wire::pull_number(id)
                    .map(|n| n.to_string())
                    .map_or_else(|| numeric_id(id, "pull request"), Ok)?;
                let path = format!(
                    "{}/repository/pulls/{number}",
                    project_path(&s.workspace, repo)
                );
                let raw = call.get_object(&path, SCOPE_REPOSITORY).await?;
                let mut pr = [records::pull_request(raw)];
                pulls::enrich(&call, &s.workspace, repo, &mut pr).await;
                let [pr] = pr;
                Record::new(pr)
            }
            Resource::Workflows => {
                let s = self.scope(&call, query, Some("repo"), false).await?;
                let repo = s.repo.as_deref().unwrap_or_default();
                let id = numeric_id(id, "workflow")?;
                let raw = call
                    .get_object(&pipeline_path(&s.workspace, repo, &id), SCOPE_EXECUTION)
                    .await?;
                records::workflow(raw, Some(&s.workspace), Some(repo))
            }
            Resource::Jobs => {
                let s = self.scope(&call, query, Some("project"), true).await?;
                let repo = s.repo.as_deref().unwrap_or_default();
                let workflow = numeric_id(s.workflow.as_deref().unwrap_or_default(), "workflow")?;
                let id = numeric_id(id, "job")?;
                let path = format!(
                    "{}/executions/{id}",
                    pipeline_path(&s.workspace, repo, &workflow)
                );
                let raw = call.get_object(&path, SCOPE_EXECUTION).await?;
                let ctx = JobContext {
                    workspace: Some(s.workspace.clone()),
                    repo: Some(repo.to_owned()),
                    workflow: Some(workflow),
                    workflow_name: None,
                };
                records::job(raw, &ctx)
            }
        };
        Ok(GetResult {
            record,
            rate_limit: call.rate_limit(),
        })
    }

    fn writes(&self) -> Option<&dyn cigate_core::ProviderWrites> {
        Some(self)
    }

    fn hooks(&self) -> Option<&dyn cigate_core::ProviderHooks> {
        Some(self)
    }
}

impl BuddyProvider {
    /// A branch by name. Names with characters the client will not put in a path (`/`,
    /// `%`, …) are looked up in the branch list instead, which has no commit details.
    async fn branch(
        &self,
        call: &Call<'_>,
        ws: &str,
        repo: &str,
        name: &str,
    ) -> Result<Box<RawValue>, ProviderError> {
        let base = format!("{}/repository/branches", project_path(ws, repo));
        let direct = name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'))
            && name != "."
            && name != "..";
        if direct {
            return call
                .get_object(&format!("{base}/{name}"), SCOPE_REPOSITORY)
                .await;
        }
        let page = call
            .get_page(&base, &[], "branches", SCOPE_REPOSITORY)
            .await?;
        page.items
            .into_iter()
            .find(|b| wire::parse_raw::<wire::Branch>(b).name.as_deref() == Some(name))
            .ok_or_else(|| ProviderError::NotFound(format!("branch `{name}`")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_are_encoded() {
        assert_eq!(segment("company-website"), "company-website");
        assert_eq!(segment("a b/c"), "a%20b%2Fc");
        assert_eq!(segment("ünï"), "%C3%BC%6E%C3%AF".replace("%6E", "n"));
    }

    #[test]
    fn numeric_ids() {
        assert_eq!(numeric_id("42", "job").ok().as_deref(), Some("42"));
        assert!(matches!(
            numeric_id("4x", "job"),
            Err(ProviderError::NotFound(_))
        ));
        assert!(matches!(
            numeric_id("", "job"),
            Err(ProviderError::NotFound(_))
        ));
        assert!(numeric_id("99999999999999999999", "job").is_err());
    }

    #[test]
    fn offsets() {
        assert_eq!(offset_of(None).ok(), Some(0));
        assert_eq!(offset_of(Some(&json!({"o": 74}))).ok(), Some(74));
        assert!(matches!(
            offset_of(Some(&json!({"o": "x"}))),
            Err(ProviderError::InvalidPosition)
        ));
        assert!(offset_of(Some(&json!([1]))).is_err());
    }

    #[test]
    fn slicing_whole_lists() {
        let items: Vec<Box<RawValue>> = (0..5)
            .map(|i| serde_json::value::to_raw_value(&json!({ "name": i.to_string() })).unwrap())
            .collect();
        let map = |raw: Box<RawValue>| raw.get().to_owned();
        let (page, next) = BuddyProvider::slice(items.clone(), 0, 2, map);
        assert_eq!(page.len(), 2);
        assert_eq!(next, Some(json!({"o": 2})));
        let (page, next) = BuddyProvider::slice(items.clone(), 4, 2, map);
        assert_eq!(page.len(), 1);
        assert_eq!(next, None);
        let (page, next) = BuddyProvider::slice(items, 99, 2, map);
        assert!(page.is_empty());
        assert_eq!(next, None);
    }
}
