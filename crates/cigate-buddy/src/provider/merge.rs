//! The merged job feed: executions of several pipelines (all of a project, or all of a
//! workspace), newest first, behind one cursor — and the filtered feed of one pipeline,
//! which needs the same "keep reading until `limit` matches" machinery.
//!
//! Each pipeline is a *source* read page by page (Buddy's lists are newest first). The
//! position keeps, per source, the Buddy page holding its next unreturned item, how many
//! items of that page were already consumed, and the sort key of that next item. So:
//!
//! * nothing is lost or repeated while data is static: a source resumes exactly after its
//!   last consumed item;
//! * a source is only fetched when its (remembered) head is the newest of all, so a page
//!   of the feed costs calls only for the pipelines that contribute to it — plus, on the
//!   first page, one call per pipeline to learn every head;
//! * the page a source stopped in the middle of is fetched again on the next unified page.
//!   That is the one refetch we accept: carrying the unreturned items in the cursor instead
//!   would make cursors grow with `limit × sources`. The price shows when pipelines
//!   interleave and `limit` is small: each contributing pipeline costs a call per page
//!   (9 interleaved pipelines at `limit=7`: about one call per job; at the default
//!   `limit=100`: about one call per pipeline per page, ≤ 50 jobs each).
//!
//! Exhausted sources are dropped from the position. Project names are stored once and
//! referenced by index, keeping cursors small (≈35 bytes per live pipeline).

use std::cmp::Reverse;
use std::collections::VecDeque;

use cigate_core::{Job, JobFilters, ProviderError, Record, RemoteData};
use futures::stream::{self, StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{json, Value};

use super::{
    pipeline_path, project_path, ws_path, Call, MAX_PER_PAGE, SCOPE_EXECUTION, SCOPE_WORKSPACE,
};
use crate::mapping::{self, JobContext};
use crate::wire;

/// Upstream calls one unified page may spend beyond learning every source's head. Past
/// it the page is returned short, with a cursor to go on, so a filter that matches almost
/// nothing in a long history cannot hold a request (and the account's rate budget) hostage.
pub const MAX_LOADS_PER_PAGE: usize = 500;

/// Sort key of an execution: start time (unknown = newest, e.g. not yet started), then
/// execution id. Larger = newer.
type Head = (i64, u64);

/// `[project index, pipeline id, page, skip, head]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct SourceState(usize, String, u64, u32, Option<Head>);

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct MergeState {
    /// Buddy page size used for every source of this feed.
    pp: u32,
    /// Project names, referenced by index.
    ps: Vec<String>,
    s: Vec<SourceState>,
}

impl MergeState {
    fn from_position(position: &Value) -> Result<MergeState, ProviderError> {
        let state: MergeState = position
            .get("m")
            .cloned()
            .and_then(|m| serde_json::from_value(m).ok())
            .ok_or(ProviderError::InvalidPosition)?;
        let valid = (1..=MAX_PER_PAGE).contains(&state.pp)
            && state.s.iter().all(|SourceState(p, id, page, skip, _)| {
                *p < state.ps.len() && !id.is_empty() && *page >= 1 && *skip < state.pp
            });
        if valid {
            Ok(state)
        } else {
            Err(ProviderError::InvalidPosition)
        }
    }
}

struct Item {
    raw: Box<RawValue>,
    exec: wire::Execution,
    head: Head,
}

struct Buffer {
    items: VecDeque<Item>,
    last_page: bool,
}

struct Source {
    project: usize,
    pipeline: String,
    page: u64,
    skip: u32,
    head: Option<Head>,
    buffer: Option<Buffer>,
    exhausted: bool,
}

impl Source {
    /// Newest known item; `None` when it must be fetched to know.
    fn key(&self) -> Option<Head> {
        match &self.buffer {
            Some(b) => b.items.front().map(|i| i.head),
            None => self.head,
        }
    }

    /// After items were consumed: an emptied page moves the source to its next page (or
    /// ends it), so every live source is either buffered with items or unloaded.
    fn settle(&mut self) {
        if let Some(b) = &self.buffer {
            if b.items.is_empty() {
                if b.last_page {
                    self.exhausted = true;
                } else {
                    self.page += 1;
                    self.skip = 0;
                    self.head = None;
                }
                self.buffer = None;
            }
        }
    }
}

fn head_of(exec: &wire::Execution) -> Head {
    (
        exec.start_date.map_or(i64::MAX, |d| d.timestamp_millis()),
        exec.id.as_deref().and_then(|i| i.parse().ok()).unwrap_or(0),
    )
}

fn eq_any(want: &str, values: [Option<&str>; 2]) -> bool {
    values
        .into_iter()
        .flatten()
        .any(|v| v.eq_ignore_ascii_case(want))
}

/// Filters Buddy cannot apply, applied to the mapped job (`status`/`conclusion` match the
/// normalised or the raw Buddy value).
pub(crate) fn matches(job: &Job, exec: &wire::Execution, f: &JobFilters) -> bool {
    let raw_status = exec.status.as_deref();
    if let Some(want) = &f.status {
        if !eq_any(want, [job.status.as_deref(), raw_status]) {
            return false;
        }
    }
    if let Some(want) = &f.conclusion {
        if !eq_any(want, [job.conclusion.as_deref(), raw_status]) {
            return false;
        }
    }
    if let Some(want) = &f.branch {
        if job.branch.as_deref() != Some(want.as_str()) {
            return false;
        }
    }
    if let Some(after) = f.created_after {
        if job.created_at.is_none_or(|c| c < after) {
            return false;
        }
    }
    if let Some(before) = f.created_before {
        if job.created_at.is_none_or(|c| c > before) {
            return false;
        }
    }
    true
}

async fn load(
    call: &Call<'_>,
    ws: &str,
    project: &str,
    pipeline: &str,
    page: u64,
    skip: u32,
    per_page: u32,
) -> Result<Buffer, ProviderError> {
    let path = format!("{}/executions", pipeline_path(ws, project, pipeline));
    let page_read = call
        .get_page(
            &path,
            &[
                ("page", page.to_string()),
                ("per_page", per_page.to_string()),
            ],
            "executions",
            SCOPE_EXECUTION,
        )
        .await?;
    let counters = page_read.counters;
    let mut raws = page_read.items;
    raws.truncate(per_page as usize);
    let last_page =
        raws.len() < per_page as usize || counters.total_page_count.is_some_and(|t| page >= t);
    let items = raws
        .into_iter()
        .skip(skip as usize)
        .map(|raw| {
            let exec: wire::Execution = wire::parse_raw(&raw);
            let head = head_of(&exec);
            Item { raw, exec, head }
        })
        .collect();
    Ok(Buffer { items, last_page })
}

/// Every pipeline in scope, as the first position of a feed.
async fn discover(
    call: &Call<'_>,
    ws: &str,
    repo: Option<&str>,
    workflow: Option<&str>,
) -> Result<MergeState, ProviderError> {
    let projects: Vec<String> = match repo {
        Some(r) => vec![r.to_owned()],
        None => call
            .get_all(
                &format!("{}/projects", ws_path(ws)),
                "projects",
                SCOPE_WORKSPACE,
            )
            .await?
            .iter()
            .filter_map(|p| wire::parse::<wire::Project>(p).name)
            .filter(|n| !n.is_empty())
            .collect(),
    };
    let sources: Vec<SourceState> = match workflow {
        Some(w) => vec![SourceState(0, w.to_owned(), 1, 0, None)],
        None => {
            let mut per_project: Vec<(usize, Vec<String>)> =
                stream::iter(projects.clone().into_iter().enumerate())
                    .map(|(i, project)| async move {
                        let path = format!("{}/pipelines", project_path(ws, &project));
                        let ids = call
                            .get_all(&path, "pipelines", SCOPE_EXECUTION)
                            .await?
                            .iter()
                            .filter_map(|p| wire::parse::<wire::Pipeline>(p).id)
                            .collect::<Vec<_>>();
                        Ok::<_, ProviderError>((i, ids))
                    })
                    .buffer_unordered(call.concurrency())
                    .try_collect()
                    .await?;
            per_project.sort_by_key(|(i, _)| *i);
            per_project
                .into_iter()
                .flat_map(|(i, ids)| {
                    ids.into_iter()
                        .map(move |id| SourceState(i, id, 1, 0, None))
                })
                .collect()
        }
    };
    Ok(MergeState {
        pp: MAX_PER_PAGE,
        ps: projects,
        s: sources,
    })
}

/// One page of a merged or filtered job feed; see the module docs.
pub(crate) async fn page(
    call: &Call<'_>,
    ws: &str,
    repo: Option<&str>,
    workflow: Option<&str>,
    limit: u32,
    filters: &JobFilters,
    position: Option<&Value>,
) -> Result<(Vec<Record>, Option<Value>), ProviderError> {
    let state = match position {
        Some(p) => MergeState::from_position(p)?,
        None => discover(call, ws, repo, workflow).await?,
    };
    let per_page = state.pp;
    let projects = state.ps;
    let mut sources: Vec<Source> = state
        .s
        .into_iter()
        .map(|SourceState(project, pipeline, page, skip, head)| Source {
            project,
            pipeline,
            page,
            skip,
            head,
            buffer: None,
            exhausted: false,
        })
        .collect();

    let mut out: Vec<Record> = Vec::new();
    let mut older_than_window = false;
    let mut loads = 0usize;
    while out.len() < limit as usize {
        // Learn every unknown head first (concurrently): the newest item can only be
        // chosen once all candidates are known.
        let unknown: Vec<usize> = (0..sources.len())
            .filter(|&i| !sources[i].exhausted && sources[i].key().is_none())
            .collect();
        if !unknown.is_empty() {
            if loads >= MAX_LOADS_PER_PAGE {
                break;
            }
            loads += unknown.len();
            let loaded: Vec<(usize, Buffer)> = stream::iter(unknown)
                .map(|i| {
                    let s = &sources[i];
                    let project = &projects[s.project];
                    let (pipeline, page, skip) = (s.pipeline.clone(), s.page, s.skip);
                    async move {
                        load(call, ws, project, &pipeline, page, skip, per_page)
                            .await
                            .map(|b| (i, b))
                    }
                })
                .buffer_unordered(call.concurrency())
                .try_collect()
                .await?;
            for (i, buffer) in loaded {
                sources[i].buffer = Some(buffer);
                sources[i].settle();
            }
            continue;
        }
        let newest = sources
            .iter()
            .enumerate()
            .filter(|(_, s)| !s.exhausted)
            .filter_map(|(i, s)| s.key().map(|k| (k, Reverse(i))))
            .max();
        let Some((_, Reverse(i))) = newest else {
            break; // every source exhausted
        };
        let source = &mut sources[i];
        if source.buffer.is_none() {
            if loads >= MAX_LOADS_PER_PAGE {
                break;
            }
            loads += 1;
            // Its remembered head is the newest: fetch its page (again, if it was cut
            // in the middle last time).
            let buffer = load(
                call,
                ws,
                &projects[source.project],
                &source.pipeline,
                source.page,
                source.skip,
                per_page,
            )
            .await?;
            source.buffer = Some(buffer);
            source.settle();
            continue;
        }
        let Some(item) = source.buffer.as_mut().and_then(|b| b.items.pop_front()) else {
            source.settle();
            continue;
        };
        source.skip += 1;
        source.settle();
        let ctx = JobContext {
            workspace: Some(ws.to_owned()),
            repo: Some(projects[source.project].clone()),
            workflow: Some(source.pipeline.clone()),
            workflow_name: None,
        };
        let job = mapping::job(&item.exec, &ctx, RemoteData::new(item.raw));
        // Newest first across all sources: once the newest remaining item is older than
        // the window, everything else is too.
        if let (Some(after), Some(started)) = (filters.created_after, item.exec.start_date) {
            if started < after {
                older_than_window = true;
                break;
            }
        }
        if matches(&job, &item.exec, filters) {
            out.push(Record::new(job));
        }
    }

    let remaining: Vec<SourceState> = sources
        .into_iter()
        .filter(|s| !s.exhausted)
        .map(|s| {
            let head = s.key();
            SourceState(s.project, s.pipeline, s.page, s.skip, head)
        })
        .collect();
    let next = (!older_than_window && !remaining.is_empty())
        .then(|| json!({ "m": MergeState { pp: per_page, ps: projects, s: remaining } }));
    Ok((out, next))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_are_validated() {
        let good =
            json!({"m": {"pp": 50, "ps": ["web"], "s": [[0, "2", 3, 10, [1700000000000i64, 7]]]}});
        assert!(MergeState::from_position(&good).is_ok());
        for bad in [
            json!({"m": {"pp": 0, "ps": ["web"], "s": []}}),
            json!({"m": {"pp": 50, "ps": [], "s": [[0, "2", 1, 0, null]]}}),
            json!({"m": {"pp": 50, "ps": ["web"], "s": [[0, "2", 0, 0, null]]}}),
            json!({"m": {"pp": 50, "ps": ["web"], "s": [[0, "2", 1, 50, null]]}}),
            json!({"m": "x"}),
            json!({"o": 3}),
        ] {
            assert!(MergeState::from_position(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn filters() {
        let exec: wire::Execution = wire::parse(&json!({"id": 1, "status": "FAILED",
            "branch": {"name": "main"}, "start_date": "2024-05-01T00:00:00Z"}));
        let job = mapping::job(&exec, &JobContext::default(), None);
        let f = |v: Value| -> JobFilters { serde_json::from_value(v).unwrap() };
        assert!(matches(&job, &exec, &JobFilters::default()));
        assert!(matches(&job, &exec, &f(json!({"status": "completed"}))));
        assert!(matches(&job, &exec, &f(json!({"status": "FAILED"}))));
        assert!(matches(
            &job,
            &exec,
            &f(json!({"conclusion": "failed", "branch": "main"}))
        ));
        assert!(!matches(&job, &exec, &f(json!({"conclusion": "passed"}))));
        assert!(!matches(&job, &exec, &f(json!({"branch": "dev"}))));
        assert!(matches(
            &job,
            &exec,
            &f(json!({"created_after": "2024-05-01T00:00:00Z"}))
        ));
        assert!(!matches(
            &job,
            &exec,
            &f(json!({"created_after": "2024-05-01T00:00:01Z"}))
        ));
        assert!(!matches(
            &job,
            &exec,
            &f(json!({"created_before": "2024-04-30T00:00:00Z"}))
        ));
    }
}
