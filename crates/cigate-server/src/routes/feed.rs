//! The job feed across accounts: `GET /unified/ci-cd/jobs?tenant_id=…` without
//! `integrated_account_id` merges the jobs of every active account of the tenant, newest
//! first, behind one signed cursor (the dashboard's timeline reads every account of the
//! environment the same way).
//!
//! Each (account, workspace) is a *source*, read through the account's provider page by
//! page (the provider's own job feed of that workspace, newest first). The cursor keeps,
//! per source, the provider position of the page holding its next unreturned job, how
//! many jobs of that page were already returned, and the sort key of that next job, so a
//! source is read only when its head is the newest of all (every source once on the
//! first page, to learn its head). A page a source stopped in the middle of is read
//! again on the next page: the same trade as the provider's merged feed, so cursors stay
//! small. Accounts that are not active are skipped and named in `skipped_accounts`,
//! on the first page and on every later one.

use std::collections::VecDeque;

use futures::stream::{self, StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use cigate_core::cursor::CursorBinding;
use cigate_core::{ListPage, ListQuery, Record, RenderOptions, Rendered, Resource};

use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::gateway::{self, AccountScope, Gateway, SkippedAccount};
use crate::state::AppState;

/// Sources read at once.
const CONCURRENCY: usize = 4;

/// Sort key of a job: creation time in milliseconds (unknown = newest: not started
/// yet), then the account's index, then the job id. Larger = newer.
type Key = (i64, usize, String);

/// `[account index, workspace, provider position, consumed, head]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Source(usize, String, Option<Value>, u32, Option<Key>);

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct FeedState {
    /// Account ids, referenced by index.
    a: Vec<String>,
    s: Vec<Source>,
}

/// A page of the tenant feed.
pub struct FeedPage {
    pub items: Vec<Rendered>,
    pub next_cursor: Option<String>,
    pub skipped_accounts: Vec<SkippedAccount>,
}

/// Provider reads one page may spend beyond learning every source's head; past it the
/// page is returned short, with a cursor to go on.
const MAX_LOADS_PER_PAGE: usize = 500;

/// A source during one page: its state, the unreturned jobs of the page last read, and
/// whether it has nothing more.
struct Live {
    src: Source,
    buffer: Option<Loaded>,
    done: bool,
}

struct Loaded {
    items: VecDeque<Record>,
    next: Option<Value>,
}

fn key(record: &Record, account: usize) -> Key {
    let job = record.unified.as_job();
    let at = job
        .and_then(|j| j.created_at)
        .map_or(i64::MAX, |t| t.timestamp_millis());
    (at, account, record.unified.id().to_owned())
}

/// Every job of the feed names its account and tenant (in the raw form too; an account
/// without a tenant, read only by the dashboard's environment-wide timeline, names none).
fn annotate(record: &mut Record, account: &str, tenant: Option<&str>) {
    record.annotate("integrated_account_id", account.to_owned());
    if let Some(tenant) = tenant {
        record.annotate("tenant_id", tenant.to_owned());
    }
}

fn binding(caller: &Caller, scope: AccountScope<'_>, query: &ListQuery) -> CursorBinding {
    CursorBinding {
        environment_id: caller.environment_id.clone(),
        account_id: scope.binding_key(),
        resource: Resource::Jobs.as_str().to_owned(),
        filters: query.canonical(),
    }
}

/// The sources of a first page: every active account of the tenant (by id) and each of
/// its workspaces (or the one asked for).
async fn first_state(accounts: &[(String, Gateway)], query: &ListQuery) -> ApiResult<FeedState> {
    let mut feed = FeedState {
        a: Vec::new(),
        s: Vec::new(),
    };
    for (index, (id, gateway)) in accounts.iter().enumerate() {
        feed.a.push(id.clone());
        let workspaces = match &query.workspace {
            Some(ws) => vec![ws.clone()],
            None => {
                let (all, _) =
                    gateway::every(gateway, Resource::Workspaces, &ListQuery::default()).await?;
                gateway::record_ids(&all)
            }
        };
        feed.s.extend(
            workspaces
                .into_iter()
                .map(|ws| Source(index, ws, None, 0, None)),
        );
    }
    Ok(feed)
}

/// Reads the page each source in `which` stands at, past what was already returned.
async fn load(
    gateways: &[Option<Gateway>],
    query: &ListQuery,
    live: &mut [Live],
    which: &[usize],
) -> ApiResult<()> {
    let reads: Vec<(usize, ListPage)> = stream::iter(which.iter().copied())
        .map(|i| {
            let src = live[i].src.clone();
            async move {
                let gateway = gateways
                    .get(src.0)
                    .and_then(Option::as_ref)
                    .ok_or_else(|| {
                        ApiError::InvalidCursor("the feed names an unknown account".into())
                    })?;
                let q = ListQuery {
                    workspace: Some(src.1.clone()),
                    ..query.clone()
                };
                let page = gateway
                    .call(|provider| {
                        let (q, position) = (&q, src.2.clone());
                        async move { provider.list(Resource::Jobs, q, position).await }
                    })
                    .await?;
                Ok::<_, ApiError>((i, page))
            }
        })
        .buffer_unordered(CONCURRENCY)
        .try_collect()
        .await?;
    for (i, page) in reads {
        let entry = &mut live[i];
        let items: VecDeque<Record> = page.items.into_iter().skip(entry.src.3 as usize).collect();
        match (items.front(), page.next) {
            (Some(front), next) => {
                entry.src.4 = Some(key(front, entry.src.0));
                entry.buffer = Some(Loaded { items, next });
            }
            // Nothing left on this page: on to the next one, head still unknown.
            (None, Some(next)) => {
                entry.src.2 = Some(next);
                entry.src.3 = 0;
                entry.src.4 = None;
            }
            (None, None) => entry.done = true,
        }
    }
    Ok(())
}

/// One page of the jobs of the accounts in `scope`, newest first.
pub async fn page(
    state: &AppState,
    caller: &Caller,
    scope: AccountScope<'_>,
    query: &ListQuery,
    cursor: Option<&str>,
    render: &RenderOptions,
    timeout: std::time::Duration,
) -> ApiResult<FeedPage> {
    let binding = binding(caller, scope, query);
    let (active, skipped) = gateway::scoped_accounts(state, caller, scope).await?;
    let mut opened = Vec::with_capacity(active.len());
    for account in &active {
        opened.push((
            account.id.clone(),
            Gateway::open(state, caller, &account.id, timeout).await?,
        ));
    }
    let tenant_of = |id: &str| {
        active
            .iter()
            .find(|a| a.id == id)
            .and_then(|a| a.tenant_id.as_deref())
    };
    let feed = match cursor {
        Some(cursor) => {
            let position = state
                .cursors
                .decode(&binding, cursor)
                .map_err(|err| ApiError::InvalidCursor(err.to_string()))?;
            serde_json::from_value::<FeedState>(position)
                .map_err(|_| ApiError::InvalidCursor("not a tenant feed position".into()))?
        }
        None => first_state(&opened, query).await?,
    };
    // The feed's accounts by index; one no longer active has no gateway and its
    // sources are dropped (it is named in `skipped_accounts`).
    let mut by_index: Vec<Option<Gateway>> = Vec::with_capacity(feed.a.len());
    let mut opened: Vec<Option<(String, Gateway)>> = opened.into_iter().map(Some).collect();
    for id in &feed.a {
        let slot = opened
            .iter_mut()
            .find(|o| o.as_ref().is_some_and(|(oid, _)| oid == id));
        by_index.push(slot.and_then(Option::take).map(|(_, g)| g));
    }
    let mut live: Vec<Live> = feed
        .s
        .into_iter()
        .filter(|s| by_index.get(s.0).is_some_and(Option::is_some))
        .map(|src| Live {
            src,
            buffer: None,
            done: false,
        })
        .collect();
    let limit = query.limit as usize;
    let mut items = Vec::new();
    let mut loads = 0usize;
    while items.len() < limit {
        let unknown: Vec<usize> = (0..live.len())
            .filter(|&i| !live[i].done && live[i].src.4.is_none())
            .collect();
        if !unknown.is_empty() {
            if loads > MAX_LOADS_PER_PAGE {
                break;
            }
            loads += unknown.len();
            load(&by_index, query, &mut live, &unknown).await?;
            continue;
        }
        let Some(newest) = (0..live.len())
            .filter(|&i| !live[i].done)
            .max_by(|&x, &y| live[x].src.4.cmp(&live[y].src.4))
        else {
            break;
        };
        let entry = &mut live[newest];
        let Some(buffer) = entry.buffer.as_mut() else {
            if loads > MAX_LOADS_PER_PAGE {
                break;
            }
            loads += 1;
            load(&by_index, query, &mut live, &[newest]).await?;
            continue;
        };
        let Some(mut job) = buffer.items.pop_front() else {
            entry.buffer = None;
            continue;
        };
        entry.src.3 += 1;
        let account = &feed.a[entry.src.0];
        annotate(&mut job, account, tenant_of(account));
        items.push(job.render(render));
        if let Some(front) = buffer.items.front() {
            entry.src.4 = Some(key(front, entry.src.0));
        } else {
            match buffer.next.take() {
                Some(next) => {
                    entry.src.2 = Some(next);
                    entry.src.3 = 0;
                    entry.src.4 = None;
                }
                None => entry.done = true,
            }
            entry.buffer = None;
        }
    }
    let rest = FeedState {
        a: feed.a,
        s: live
            .into_iter()
            .filter(|l| !l.done)
            .map(|l| l.src)
            .collect(),
    };
    let next_cursor = (!rest.s.is_empty()).then(|| {
        let position = serde_json::to_value(&rest).unwrap_or(Value::Null);
        state.cursors.encode(&binding, &position)
    });
    Ok(FeedPage {
        items,
        next_cursor,
        skipped_accounts: skipped,
    })
}
