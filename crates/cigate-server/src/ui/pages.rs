//! The dashboard's pages. Each reads through the same functions as the API (the
//! account gateway, the job feed, the metrics reader, the store) as the signed-in
//! token's caller, and turns what it gets into rows of plain text for its template.
//! Live reads from the provider can fail without the page failing: the page says what
//! could not be read, in words, where the data would be.

use std::collections::{BTreeSet, HashMap};

use askama::Template;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use chrono::{DateTime, Duration, Utc};
use cigate_core::metrics::{Figures, Window};
use cigate_core::model::Job;
use cigate_core::{ListQuery, RenderOptions, Rendered};
use cigate_store::{Account, AccountFilter, AccountStatus, Delivery, DeliveryStatus, Webhook};
use serde::Deserialize as _;
use serde_json::{Map, Value};

use super::session::{see_other, SignedIn};
use super::{page, Chrome, UiResult};
use crate::auth::Caller;
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiPath, QueryPairs};
use crate::gateway::{self, AccountScope};
use crate::routes::{accounts, analytics, event_stream, feed, link, webhooks};
use crate::state::AppState;

/// Accounts per page of the accounts table.
const ACCOUNTS_PAGE: u32 = 50;
/// Jobs per page of the timeline.
const TIMELINE_PAGE: u32 = 25;
/// Jobs the overview reads at most to sum up the last day.
const DAY_JOBS_CAP: usize = 1000;
/// Account statuses in the order the pages list them.
const STATUSES: [AccountStatus; 4] = [
    AccountStatus::Active,
    AccountStatus::NeedsReauth,
    AccountStatus::ValidationError,
    AccountStatus::Connecting,
];
/// Deliveries the webhooks page lists.
const DELIVERIES_SHOWN: u32 = 50;

async fn chrome(state: &AppState, signed: &SignedIn, current: &'static str) -> UiResult<Chrome> {
    let environment = state
        .store
        .get_environment(&signed.environment_id)
        .await?
        .map(|env| env.name)
        .unwrap_or_default();
    Ok(Chrome {
        current,
        environment,
        csrf: signed.csrf.clone(),
    })
}

// ----- formatting ----------------------------------------------------------------------

fn when(at: Option<DateTime<Utc>>) -> String {
    at.map(|t| t.format("%Y-%m-%d %H:%M UTC").to_string())
        .unwrap_or_else(|| "—".into())
}

fn machine_time(at: Option<DateTime<Utc>>) -> String {
    at.map(|t| t.to_rfc3339()).unwrap_or_default()
}

/// `4 s`, `3 min 20 s`, `2 h 5 min`, `3 d 4 h`; `—` when unknown.
fn span(seconds: Option<f64>) -> String {
    let Some(s) = seconds.filter(|s| s.is_finite() && *s >= 0.0) else {
        return "—".into();
    };
    let s = s.round() as u64;
    match s {
        0..=59 => format!("{s} s"),
        60..=3599 => format!("{} min {} s", s / 60, s % 60),
        3600..=86_399 => format!("{} h {} min", s / 3600, (s % 3600) / 60),
        _ => format!("{} d {} h", s / 86_400, (s % 86_400) / 3600),
    }
}

fn percent(ratio: Option<f64>) -> String {
    ratio
        .map(|r| format!("{:.1} %", r * 100.0))
        .unwrap_or_else(|| "—".into())
}

/// A number for a chart's data table; empty when there is none (a gap in the line).
fn datum(value: Option<f64>) -> String {
    value
        .filter(|v| v.is_finite())
        .map(|v| format!("{}", (v * 100.0).round() / 100.0))
        .unwrap_or_default()
}

/// Words and a colour class for an account status: the words carry the meaning.
fn account_status(status: &str) -> (&'static str, &'static str) {
    match status {
        "active" => ("Active", "good"),
        "needs_reauth" => ("Needs reconnecting", "bad"),
        "validation_error" => ("Credential rejected", "bad"),
        "connecting" => ("Connecting", "wait"),
        _ => ("Unknown", "wait"),
    }
}

/// Words and a colour class for a job: its conclusion once completed, else its status.
fn job_state(job: &Job) -> (String, &'static str) {
    let class = match job.conclusion.as_deref() {
        Some("passed") => "good",
        Some("failed" | "timeout") => "bad",
        Some(_) => "neutral",
        None => "wait",
    };
    let text = match (job.status.as_deref(), job.conclusion.as_deref()) {
        (_, Some(conclusion)) => conclusion.to_owned(),
        (Some("in_progress"), None) => "running".into(),
        (Some(status), None) => status.replace('_', " "),
        (None, None) => "unknown".into(),
    };
    (text, class)
}

fn delivery_state(status: DeliveryStatus, failing: bool) -> (&'static str, &'static str) {
    match (status, failing) {
        (DeliveryStatus::Delivered, _) => ("Delivered", "good"),
        (DeliveryStatus::Failed, _) => ("Failed, gave up", "bad"),
        (DeliveryStatus::Pending, true) => ("Failing, will retry", "bad"),
        (DeliveryStatus::Pending, false) => ("Pending", "wait"),
    }
}

fn query_string(pairs: &[(&str, &str)]) -> String {
    let mut query = url::form_urlencoded::Serializer::new(String::new());
    for (key, value) in pairs.iter().filter(|(_, v)| !v.is_empty()) {
        query.append_pair(key, value);
    }
    query.finish()
}

/// A fixed notice for `?done=…` after a form (never text taken from the URL).
fn notice(done: Option<&str>) -> &'static str {
    match done {
        Some("deleted") => "The account was deleted.",
        Some("test") => "A test event was queued for that webhook; its delivery appears below.",
        Some("redeliver") => "The delivery was scheduled again.",
        _ => "",
    }
}

// ----- overview ------------------------------------------------------------------------

pub struct StatusCount {
    pub label: &'static str,
    pub class: &'static str,
    pub count: usize,
    pub href: String,
}

/// Jobs created in the last 24 hours.
#[derive(Default)]
pub struct DaySummary {
    pub total: usize,
    pub passed: u64,
    pub failed: u64,
    pub running: usize,
    pub success_rate: String,
    /// More jobs than the overview reads: `total` is a lower bound.
    pub capped: bool,
}

#[derive(Template)]
#[template(path = "ui/overview.html")]
struct OverviewPage {
    chrome: Chrome,
    title: String,
    accounts_total: usize,
    statuses: Vec<StatusCount>,
    day: Option<DaySummary>,
    day_error: String,
    skipped: usize,
    failing_deliveries: u64,
    failing_webhooks: usize,
}

fn render_options() -> RenderOptions {
    RenderOptions {
        ignore_remote_data: true,
        ..RenderOptions::default()
    }
}

/// Jobs of every active account created in the last day, newest first, up to the cap.
async fn last_day(state: &AppState, caller: &Caller) -> Result<(DaySummary, usize), ApiError> {
    let mut query = ListQuery {
        limit: 100,
        ..ListQuery::default()
    };
    query.filters.created_after = Some(Utc::now() - Duration::hours(24));
    let (mut summary, mut cursor, mut skipped) = (DaySummary::default(), None::<String>, 0usize);
    let (mut passed, mut failed) = (0u64, 0u64);
    loop {
        let page = feed::page(
            state,
            caller,
            AccountScope::All,
            &query,
            cursor.as_deref(),
            &render_options(),
            state.default_timeout(),
        )
        .await?;
        if cursor.is_none() {
            skipped = page.skipped_accounts.len();
        }
        for job in page.items.iter().filter_map(job_of) {
            summary.total += 1;
            match job.conclusion.as_deref() {
                Some("passed") => passed += 1,
                Some("failed" | "timeout") => failed += 1,
                Some(_) => {}
                None => summary.running += 1,
            }
        }
        match page.next_cursor {
            Some(next) if summary.total < DAY_JOBS_CAP => cursor = Some(next),
            Some(_) => {
                summary.capped = true;
                break;
            }
            None => break,
        }
    }
    summary.passed = passed;
    summary.failed = failed;
    summary.success_rate =
        percent((passed + failed > 0).then(|| passed as f64 / (passed + failed) as f64));
    Ok((summary, skipped))
}

/// A job of the feed, rendered as the API renders it (with the account and tenant the
/// feed adds), as JSON.
fn feed_json(rendered: &Rendered) -> Option<Value> {
    serde_json::to_value(rendered).ok()
}

/// A job of the feed read back as the core type.
fn job_of(rendered: &Rendered) -> Option<Job> {
    Job::deserialize(feed_json(rendered)?).ok()
}

pub async fn overview(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Extension(signed): Extension<SignedIn>,
) -> UiResult {
    let chrome = chrome(&state, &signed, "overview").await?;
    let accounts = gateway::all_accounts(&state, &caller, &AccountFilter::default()).await?;
    let statuses = STATUSES
        .into_iter()
        .map(|status| {
            let (label, class) = account_status(status.as_str());
            StatusCount {
                label,
                class,
                count: accounts.iter().filter(|a| a.status == status).count(),
                href: format!("/ui/accounts?status={}", status.as_str()),
            }
        })
        .collect();
    let (day, day_error, skipped) = match last_day(&state, &caller).await {
        Ok((day, skipped)) => (Some(day), String::new(), skipped),
        Err(err) => (None, err.to_string(), 0),
    };
    let hooks = state
        .store
        .list_webhooks(&caller.environment_id, None, 1000)
        .await?;
    let failing_deliveries = state
        .store
        .count_failing_deliveries(&caller.environment_id)
        .await?;
    Ok(page(
        StatusCode::OK,
        &OverviewPage {
            chrome,
            title: "Overview".into(),
            accounts_total: accounts.len(),
            statuses,
            day,
            day_error,
            skipped,
            failing_deliveries,
            failing_webhooks: hooks.iter().filter(|h| h.failing_since.is_some()).count(),
        },
    ))
}

// ----- accounts ------------------------------------------------------------------------

pub struct AccountRow {
    pub id: String,
    pub tenant: String,
    pub status: &'static str,
    pub status_class: &'static str,
    pub buddy: String,
    pub method: &'static str,
    pub last_error: String,
    pub forbidden_error: String,
    pub created: String,
    pub created_machine: String,
    pub updated: String,
    pub updated_machine: String,
}

fn account_row(account: &Account) -> AccountRow {
    let (status, status_class) = account_status(account.status.as_str());
    let context = &account.context;
    let buddy = context
        .get("base_url")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .or_else(|| {
            context
                .get("region")
                .and_then(Value::as_str)
                .map(|r| format!("Buddy cloud ({})", r.to_uppercase()))
        })
        .unwrap_or_else(|| "Buddy cloud (US)".into());
    AccountRow {
        id: account.id.clone(),
        tenant: account.tenant_id.clone().unwrap_or_default(),
        status,
        status_class,
        buddy,
        method: match account.authentication_method.as_str() {
            "oauth2" => "OAuth",
            _ => "Access token",
        },
        last_error: account.last_error.clone().unwrap_or_default(),
        forbidden_error: account.last_forbidden_error.clone().unwrap_or_default(),
        created: when(Some(account.created_at)),
        created_machine: machine_time(Some(account.created_at)),
        updated: when(Some(account.updated_at)),
        updated_machine: machine_time(Some(account.updated_at)),
    }
}

pub struct Choice {
    pub value: String,
    pub label: String,
    pub selected: bool,
}

#[derive(Template)]
#[template(path = "ui/accounts.html")]
struct AccountsPage {
    chrome: Chrome,
    title: String,
    notice: &'static str,
    tenant: String,
    statuses: Vec<Choice>,
    rows: Vec<AccountRow>,
    next_href: String,
}

pub async fn accounts(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Extension(signed): Extension<SignedIn>,
    query: QueryPairs,
) -> UiResult {
    let chrome = chrome(&state, &signed, "accounts").await?;
    let tenant = query.get("tenant_id").unwrap_or_default().trim().to_owned();
    let status = match query.get("status") {
        Some(s) => Some(s.parse::<AccountStatus>().map_err(ApiError::from)?),
        None => None,
    };
    let filter = AccountFilter {
        tenant_id: (!tenant.is_empty()).then(|| tenant.clone()),
        status,
        integration: None,
    };
    let mut rows = state
        .store
        .list_accounts(
            &caller.environment_id,
            &filter,
            query.get("after"),
            ACCOUNTS_PAGE + 1,
        )
        .await?;
    let next_href = if rows.len() > ACCOUNTS_PAGE as usize {
        rows.truncate(ACCOUNTS_PAGE as usize);
        let after = rows.last().map(Account::page_key).unwrap_or_default();
        format!(
            "/ui/accounts?{}",
            query_string(&[
                ("tenant_id", &tenant),
                (
                    "status",
                    status.map(AccountStatus::as_str).unwrap_or_default()
                ),
                ("after", &after),
            ])
        )
    } else {
        String::new()
    };
    let statuses = std::iter::once(("", "Any status"))
        .chain(
            STATUSES
                .into_iter()
                .map(|s| (s.as_str(), account_status(s.as_str()).0)),
        )
        .map(|(value, label)| Choice {
            value: value.into(),
            label: label.into(),
            selected: status.map(AccountStatus::as_str).unwrap_or_default() == value,
        })
        .collect();
    Ok(page(
        StatusCode::OK,
        &AccountsPage {
            chrome,
            title: "Accounts".into(),
            notice: notice(query.get("done")),
            tenant,
            statuses,
            rows: rows.iter().map(account_row).collect(),
            next_href,
        },
    ))
}

#[derive(Template)]
#[template(path = "ui/confirm_delete.html")]
struct ConfirmDeletePage {
    chrome: Chrome,
    title: String,
    account: AccountRow,
}

pub async fn confirm_delete(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Extension(signed): Extension<SignedIn>,
    ApiPath(id): ApiPath<String>,
) -> UiResult {
    let chrome = chrome(&state, &signed, "accounts").await?;
    let account = gateway::load(&state, &caller, &id).await?;
    Ok(page(
        StatusCode::OK,
        &ConfirmDeletePage {
            chrome,
            title: "Delete an account".into(),
            account: account_row(&account),
        },
    ))
}

pub async fn delete_account(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    path: ApiPath<String>,
) -> UiResult {
    // The API's answer (the id) says nothing the redirect does not.
    let _ = accounts::remove(State(state), Extension(caller), path).await?;
    Ok(see_other("/ui/accounts?done=deleted"))
}

#[derive(Template)]
#[template(path = "ui/reconnect.html")]
struct ReconnectPage {
    chrome: Chrome,
    title: String,
    account: AccountRow,
    link_url: String,
    expires: String,
}

pub async fn reconnect(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Extension(signed): Extension<SignedIn>,
    headers: HeaderMap,
    ApiPath(id): ApiPath<String>,
) -> UiResult {
    let chrome = chrome(&state, &signed, "accounts").await?;
    let account = gateway::load(&state, &caller, &id).await?;
    let (_, Json(made)) = link::create_link_token(
        State(state),
        Extension(caller),
        headers,
        ApiJson(link::CreateLinkToken {
            tenant_id: None,
            redirect_uri: None,
            integrated_account_id: Some(id),
            context: Map::new(),
            integration: None,
            expires_in: None,
        }),
    )
    .await?;
    let text = |key: &str| made.get(key).and_then(Value::as_str).unwrap_or_default();
    let expires = DateTime::parse_from_rfc3339(text("expires_at"))
        .ok()
        .map(|t| t.with_timezone(&Utc));
    Ok(page(
        StatusCode::OK,
        &ReconnectPage {
            chrome,
            title: "Reconnect an account".into(),
            account: account_row(&account),
            link_url: text("link_url").to_owned(),
            expires: when(expires),
        },
    ))
}

// ----- timeline ------------------------------------------------------------------------

pub struct JobRow {
    pub created: String,
    pub created_machine: String,
    pub workflow: String,
    pub repo: String,
    pub branch: String,
    pub commit: String,
    pub commit_full: String,
    pub state: String,
    pub state_class: &'static str,
    pub duration: String,
    pub account: String,
    pub tenant: String,
    pub url: String,
}

fn job_row(rendered: &Rendered) -> Option<JobRow> {
    let value = feed_json(rendered)?;
    let job = Job::deserialize(&value).ok()?;
    let text = |key: &str| value.get(key).and_then(Value::as_str).unwrap_or_default();
    let (state, state_class) = job_state(&job);
    let seconds = match (job.started_at, job.completed_at) {
        (Some(start), Some(end)) => Some((end - start).num_milliseconds() as f64 / 1000.0),
        (Some(start), None) => Some((Utc::now() - start).num_milliseconds() as f64 / 1000.0),
        _ => None,
    };
    let commit = job.commit.clone().unwrap_or_default();
    Some(JobRow {
        created: when(job.created_at.or(job.started_at)),
        created_machine: machine_time(job.created_at.or(job.started_at)),
        workflow: job
            .name
            .clone()
            .or_else(|| job.workflow.clone())
            .unwrap_or_default(),
        repo: job.repo.clone().unwrap_or_default(),
        branch: job.branch.clone().unwrap_or_default(),
        commit: commit.chars().take(7).collect(),
        commit_full: commit,
        state,
        state_class,
        duration: if job.completed_at.is_none() && seconds.is_some() {
            format!("{} so far", span(seconds))
        } else {
            span(seconds)
        },
        account: text("integrated_account_id").to_owned(),
        tenant: text("tenant_id").to_owned(),
        url: job
            .url
            .clone()
            .filter(|u| u.starts_with("https://") || u.starts_with("http://"))
            .unwrap_or_default(),
    })
}

#[derive(Template)]
#[template(path = "ui/timeline.html")]
struct TimelinePage {
    chrome: Chrome,
    title: String,
    tenant: String,
    account: String,
    branch: String,
    conclusions: Vec<Choice>,
    rows: Vec<JobRow>,
    error: String,
    skipped: Vec<String>,
    older_href: String,
    newest_href: String,
    live: bool,
    /// Where the live updates start: the newest event when the page was read, so a job
    /// that starts before the browser connects still refreshes the page.
    live_href: String,
}

fn scope_of(query: &QueryPairs) -> AccountScope<'_> {
    match (query.get("integrated_account_id"), query.get("tenant_id")) {
        (Some(id), _) => AccountScope::Account(id),
        (None, Some(tenant)) => AccountScope::Tenant(tenant),
        (None, None) => AccountScope::All,
    }
}

pub async fn timeline(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Extension(signed): Extension<SignedIn>,
    mut query: QueryPairs,
) -> UiResult {
    let chrome = chrome(&state, &signed, "timeline").await?;
    query.0.retain(|(k, _)| k != "limit");
    query.0.push(("limit".into(), TIMELINE_PAGE.to_string()));
    let filters = [
        (
            "tenant_id",
            query.get("tenant_id").unwrap_or_default().to_owned(),
        ),
        (
            "integrated_account_id",
            query
                .get("integrated_account_id")
                .unwrap_or_default()
                .to_owned(),
        ),
        ("branch", query.get("branch").unwrap_or_default().to_owned()),
        (
            "conclusion",
            query.get("conclusion").unwrap_or_default().to_owned(),
        ),
    ];
    let list_query = query.list_query(&Value::Null)?;
    let cursor = query.get("next_cursor");
    // Read before the jobs: every event after this position is news to the page. Only
    // the newest page is live; without a position the stream starts at its newest event.
    let live_href = match cursor {
        Some(_) => String::new(),
        None => {
            let after = state.store.latest_event_key(&caller.environment_id).await;
            let after = after.ok().flatten().unwrap_or_default();
            let query = query_string(&[("after", &after)]);
            format!("/ui/timeline/events?{query}")
                .trim_end_matches('?')
                .to_owned()
        }
    };
    let result = feed::page(
        &state,
        &caller,
        scope_of(&query),
        &list_query,
        cursor,
        &render_options(),
        state.default_timeout(),
    )
    .await;
    let (rows, error, skipped, next) = match result {
        Ok(page) => (
            page.items.iter().filter_map(job_row).collect(),
            String::new(),
            page.skipped_accounts
                .iter()
                .map(|s| format!("{} ({})", s.id, account_status(&s.status).0))
                .collect(),
            page.next_cursor,
        ),
        Err(err) => (Vec::new(), err.to_string(), Vec::new(), None),
    };
    let base: Vec<(&str, &str)> = filters.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let older_href = next
        .map(|cursor| {
            let mut pairs = base.clone();
            pairs.push(("next_cursor", &cursor));
            format!("/ui/timeline?{}", query_string(&pairs))
        })
        .unwrap_or_default();
    let newest_href = if cursor.is_some() {
        format!("/ui/timeline?{}", query_string(&base))
    } else {
        String::new()
    };
    let conclusion = filters[3].1.clone();
    let conclusions = [
        ("", "Any"),
        ("passed", "passed"),
        ("failed", "failed"),
        ("cancelled", "cancelled"),
        ("timeout", "timeout"),
        ("skipped", "skipped"),
    ]
    .into_iter()
    .map(|(value, label)| Choice {
        value: value.into(),
        label: label.into(),
        selected: conclusion == value,
    })
    .collect();
    Ok(page(
        StatusCode::OK,
        &TimelinePage {
            chrome,
            title: "Timeline".into(),
            tenant: filters[0].1.clone(),
            account: filters[1].1.clone(),
            branch: filters[2].1.clone(),
            conclusions,
            rows,
            error,
            skipped,
            older_href,
            newest_href,
            live: cursor.is_none(),
            live_href,
        },
    ))
}

/// The environment's job events as Server-Sent Events, for the timeline's live updates
/// (the API's `/events/stream`, as the signed-in token's caller).
pub async fn timeline_events(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    asked: QueryPairs,
) -> Response {
    let mut query = QueryPairs(vec![("event_type".into(), "job:*".into())]);
    if let Some(after) = asked.get("after") {
        query.0.push(("after".into(), after.to_owned()));
    }
    match event_stream::stream(State(state), Extension(caller), headers, query).await {
        Ok(stream) => stream.into_response(),
        Err(err) => err.into_response(),
    }
}

// ----- metrics -------------------------------------------------------------------------

pub struct Tile {
    pub label: &'static str,
    pub value: String,
}

pub struct Series {
    pub label: &'static str,
    pub values: Vec<String>,
}

/// A chart: its data as a table, which the page's script draws (and which stays the
/// accessible form of the chart).
pub struct Chart {
    pub id: &'static str,
    pub title: &'static str,
    pub kind: &'static str,
    pub unit: &'static str,
    pub labels: Vec<String>,
    pub series: Vec<Series>,
}

impl Chart {
    /// Row `i` of the table: its label and one value per series.
    pub fn rows(&self) -> Vec<(String, Vec<String>)> {
        self.labels
            .iter()
            .enumerate()
            .map(|(i, label)| {
                (
                    label.clone(),
                    self.series
                        .iter()
                        .map(|s| s.values.get(i).cloned().unwrap_or_default())
                        .collect(),
                )
            })
            .collect()
    }
}

/// A table of figures, one row per account or workflow.
pub struct FigureTable {
    pub id: &'static str,
    pub title: &'static str,
    pub first: &'static str,
    pub rows: Vec<FigureRow>,
}

pub struct FigureRow {
    pub name: String,
    pub detail: String,
    pub jobs: u64,
    pub success_rate: String,
    pub deployments: u64,
    pub change_failure_rate: String,
    pub restore: String,
    pub p50: String,
    pub p95: String,
}

fn figure_row(name: String, detail: String, f: &Figures) -> FigureRow {
    FigureRow {
        name,
        detail,
        jobs: f.jobs_total,
        success_rate: percent(f.success_rate),
        deployments: f.deployments,
        change_failure_rate: percent(f.change_failure_rate),
        restore: span(f.mean_time_to_restore_s),
        p50: span(f.duration_s.p50),
        p95: span(f.duration_s.p95),
    }
}

#[derive(Template)]
#[template(path = "ui/metrics.html")]
struct MetricsPage {
    chrome: Chrome,
    title: String,
    scopes: Vec<Choice>,
    windows: Vec<Choice>,
    window_text: String,
    tiles: Vec<Tile>,
    charts: Vec<Chart>,
    /// Per account (not for one account), then per workflow.
    tables: Vec<FigureTable>,
    error: String,
    skipped: Vec<String>,
}

const WINDOWS: [(&str, &str, i64); 3] = [
    ("7", "Last 7 days", 7),
    ("30", "Last 30 days", 30),
    ("90", "Last 90 days", 90),
];

fn charts(points: &[(Window, Figures)], daily: bool) -> Vec<Chart> {
    let labels: Vec<String> = points
        .iter()
        .map(|(w, _)| {
            if daily {
                w.from.format("%b %d").to_string()
            } else {
                format!("week of {}", w.from.format("%b %d"))
            }
        })
        .collect();
    let values = |f: fn(&Figures) -> Option<f64>| -> Vec<String> {
        points.iter().map(|(_, p)| datum(f(p))).collect()
    };
    vec![
        Chart {
            id: "deployments",
            title: "Deployments per day",
            kind: "bar",
            unit: "deployments per day",
            labels: labels.clone(),
            series: vec![Series {
                label: "Deployments per day",
                values: values(|f| Some(f.deployment_frequency_per_day)),
            }],
        },
        Chart {
            id: "rates",
            title: "Success rate and change failure rate",
            kind: "line",
            unit: "%",
            labels: labels.clone(),
            series: vec![
                Series {
                    label: "Success rate (%)",
                    values: values(|f| f.success_rate.map(|r| r * 100.0)),
                },
                Series {
                    label: "Change failure rate (%)",
                    values: values(|f| f.change_failure_rate.map(|r| r * 100.0)),
                },
            ],
        },
        Chart {
            id: "restore",
            title: "Time to restore",
            kind: "bar",
            unit: "minutes",
            labels: labels.clone(),
            series: vec![Series {
                label: "Mean time to restore (minutes)",
                values: values(|f| f.mean_time_to_restore_s.map(|s| s / 60.0)),
            }],
        },
        Chart {
            id: "duration",
            title: "Job duration",
            kind: "line",
            unit: "seconds",
            labels,
            series: vec![
                Series {
                    label: "Duration p50 (s)",
                    values: values(|f| f.duration_s.p50),
                },
                Series {
                    label: "Duration p95 (s)",
                    values: values(|f| f.duration_s.p95),
                },
            ],
        },
    ]
}

pub async fn metrics(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Extension(signed): Extension<SignedIn>,
    query: QueryPairs,
) -> UiResult {
    let chrome = chrome(&state, &signed, "metrics").await?;
    let days_key = query.get("days").unwrap_or("30");
    let (days_key, window_text, days) = WINDOWS
        .iter()
        .find(|(key, _, _)| *key == days_key)
        .copied()
        .ok_or_else(|| {
            ApiError::bad_request(
                "/problems/invalid-parameter",
                "`days` is one of 7, 30 or 90",
            )
        })?;
    let scope_key = query.get("scope").unwrap_or("all").to_owned();
    let scope = match scope_key.split_once(':') {
        Some(("tenant", tenant)) if !tenant.is_empty() => AccountScope::Tenant(tenant),
        Some(("account", id)) if !id.is_empty() => AccountScope::Account(id),
        _ if scope_key == "all" => AccountScope::All,
        _ => {
            return Err(ApiError::bad_request(
                "/problems/invalid-parameter",
                "`scope` is `all`, `tenant:<id>` or `account:<id>`",
            )
            .into())
        }
    };
    let accounts = gateway::all_accounts(&state, &caller, &AccountFilter::default()).await?;
    let tenants: BTreeSet<&str> = accounts
        .iter()
        .filter_map(|a| a.tenant_id.as_deref())
        .collect();
    let scopes = std::iter::once(("all".to_owned(), "All accounts".to_owned()))
        .chain(
            tenants
                .iter()
                .map(|t| (format!("tenant:{t}"), format!("Tenant {t}"))),
        )
        .chain(accounts.iter().map(|a| {
            (
                format!("account:{}", a.id),
                match &a.tenant_id {
                    Some(t) => format!("Account {} ({t})", a.id),
                    None => format!("Account {}", a.id),
                },
            )
        }))
        .map(|(value, label)| Choice {
            selected: value == scope_key,
            value,
            label,
        })
        .collect();
    let windows = WINDOWS
        .iter()
        .map(|(key, label, _)| Choice {
            value: (*key).into(),
            label: (*label).into(),
            selected: *key == days_key,
        })
        .collect();
    // Whole UTC days, today's so far last: each point of a chart is one calendar day
    // (or week), labelled by its date.
    let to = Utc::now();
    let today = to.date_naive().and_time(chrono::NaiveTime::MIN).and_utc();
    let from = today - Duration::days(days - 1);
    let pairs = QueryPairs(vec![
        ("from".into(), from.to_rfc3339()),
        ("to".into(), to.to_rfc3339()),
    ]);
    let daily = days <= 31;
    let step = if daily {
        Duration::days(1)
    } else {
        Duration::days(7)
    };
    let mut view = MetricsPage {
        chrome,
        title: "Metrics".into(),
        scopes,
        windows,
        window_text: window_text.to_lowercase(),
        tiles: Vec::new(),
        charts: Vec::new(),
        tables: Vec::new(),
        error: String::new(),
        skipped: Vec::new(),
    };
    match analytics::read(&state, &caller, scope, &pairs).await {
        Ok(reading) => {
            view.charts = charts(&reading.series(step), daily);
            let answer = reading.answer(scope);
            let f = &answer.figures;
            view.tiles = vec![
                Tile {
                    label: "Jobs completed",
                    value: f.jobs_total.to_string(),
                },
                Tile {
                    label: "Success rate",
                    value: percent(f.success_rate),
                },
                Tile {
                    label: "Deployments per day",
                    value: format!("{:.2}", f.deployment_frequency_per_day),
                },
                Tile {
                    label: "Change failure rate",
                    value: percent(f.change_failure_rate),
                },
                Tile {
                    label: "Mean time to restore",
                    value: span(f.mean_time_to_restore_s),
                },
                Tile {
                    label: "Duration p50 / p95",
                    value: format!("{} / {}", span(f.duration_s.p50), span(f.duration_s.p95)),
                },
                Tile {
                    label: "Lead time (median)",
                    value: span(f.lead_time_s),
                },
            ];
            let tenants: HashMap<&str, &str> = accounts
                .iter()
                .filter_map(|a| Some((a.id.as_str(), a.tenant_id.as_deref()?)))
                .collect();
            let accounts: Vec<FigureRow> = answer
                .accounts
                .iter()
                .flatten()
                .map(|a| {
                    figure_row(
                        a.integrated_account_id.clone(),
                        tenants
                            .get(a.integrated_account_id.as_str())
                            .map(|t| format!("tenant {t}"))
                            .unwrap_or_default(),
                        &a.figures,
                    )
                })
                .collect();
            let workflows: Vec<FigureRow> = answer
                .workflows
                .iter()
                .map(|w| {
                    figure_row(
                        w.name.clone().unwrap_or_else(|| w.workflow.clone()),
                        format!(
                            "{} / {}{}",
                            w.workspace,
                            w.repo,
                            if w.deploy { " · deploys" } else { "" }
                        ),
                        &w.figures,
                    )
                })
                .collect();
            view.tables = [
                ("per-account", "Per account", "Account", accounts),
                ("per-workflow", "Per workflow", "Workflow", workflows),
            ]
            .into_iter()
            .filter(|(_, _, _, rows)| !rows.is_empty())
            .map(|(id, title, first, rows)| FigureTable {
                id,
                title,
                first,
                rows,
            })
            .collect();
            view.skipped = answer
                .skipped_accounts
                .iter()
                .map(|s| format!("{} ({})", s.id, account_status(&s.status).0))
                .collect();
        }
        Err(err) => view.error = err.to_string(),
    }
    Ok(page(StatusCode::OK, &view))
}

// ----- webhooks ------------------------------------------------------------------------

pub struct WebhookRow {
    pub id: String,
    pub target_url: String,
    pub event_types: String,
    pub format: String,
    pub scope: String,
    pub active: bool,
    pub failing_since: String,
    pub created: String,
}

fn webhook_row(hook: &Webhook) -> WebhookRow {
    let mut scope = Vec::new();
    if let Some(t) = &hook.tenant_id {
        scope.push(format!("tenant {t}"));
    }
    if let Some(a) = &hook.integrated_account_id {
        scope.push(format!("account {a}"));
    }
    if let Some(w) = &hook.workflow {
        scope.push(format!("workflow {w}"));
    }
    WebhookRow {
        id: hook.id.clone(),
        target_url: hook.target_url.clone(),
        event_types: if hook.event_types.is_empty() {
            "every event".into()
        } else {
            hook.event_types.join(", ")
        },
        format: serde_json::to_value(hook.format)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default(),
        scope: if scope.is_empty() {
            "whole environment".into()
        } else {
            scope.join(", ")
        },
        active: hook.is_active,
        failing_since: hook
            .failing_since
            .map(|t| when(Some(t)))
            .unwrap_or_default(),
        created: when(Some(hook.created_at)),
    }
}

pub struct AttemptRow {
    pub at: String,
    pub outcome: String,
}

pub struct DeliveryRow {
    pub id: String,
    pub webhook_id: String,
    pub target: String,
    pub state: &'static str,
    pub state_class: &'static str,
    pub attempts: Vec<AttemptRow>,
    pub last_error: String,
    pub updated: String,
    pub next_attempt: String,
}

fn delivery_row(delivery: &Delivery, targets: &HashMap<&str, &str>) -> DeliveryRow {
    let failing = delivery.last_error.is_some();
    let (state, state_class) = delivery_state(delivery.status, failing);
    DeliveryRow {
        id: delivery.id.clone(),
        webhook_id: delivery.webhook_id.clone(),
        target: targets
            .get(delivery.webhook_id.as_str())
            .map(|t| (*t).to_owned())
            .unwrap_or_else(|| delivery.webhook_id.clone()),
        state,
        state_class,
        attempts: delivery
            .attempts
            .iter()
            .map(|a| AttemptRow {
                at: when(Some(a.at)),
                outcome: match (a.response_status, &a.error) {
                    (Some(status), None) => format!("HTTP {status} in {} ms", a.latency_ms),
                    (Some(status), Some(err)) => {
                        format!("HTTP {status} in {} ms: {err}", a.latency_ms)
                    }
                    (None, Some(err)) => format!("{err} after {} ms", a.latency_ms),
                    (None, None) => format!("no answer after {} ms", a.latency_ms),
                },
            })
            .collect(),
        last_error: delivery.last_error.clone().unwrap_or_default(),
        updated: when(Some(delivery.updated_at)),
        next_attempt: if delivery.status == DeliveryStatus::Pending {
            when(Some(delivery.next_attempt_at))
        } else {
            String::new()
        },
    }
}

#[derive(Template)]
#[template(path = "ui/webhooks.html")]
struct WebhooksPage {
    chrome: Chrome,
    title: String,
    notice: &'static str,
    hooks: Vec<WebhookRow>,
    deliveries: Vec<DeliveryRow>,
    failing_only: bool,
}

pub async fn webhooks(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Extension(signed): Extension<SignedIn>,
    query: QueryPairs,
) -> UiResult {
    let chrome = chrome(&state, &signed, "webhooks").await?;
    let failing_only = query.flag("failing")?;
    let hooks = state
        .store
        .list_webhooks(&caller.environment_id, None, 1000)
        .await?;
    let deliveries = state
        .store
        .recent_deliveries(&caller.environment_id, failing_only, DELIVERIES_SHOWN)
        .await?;
    let targets: HashMap<&str, &str> = hooks
        .iter()
        .map(|h| (h.id.as_str(), h.target_url.as_str()))
        .collect();
    Ok(page(
        StatusCode::OK,
        &WebhooksPage {
            chrome,
            title: "Webhooks".into(),
            notice: notice(query.get("done")),
            hooks: hooks.iter().map(webhook_row).collect(),
            deliveries: deliveries
                .iter()
                .map(|d| delivery_row(d, &targets))
                .collect(),
            failing_only,
        },
    ))
}

pub async fn test_webhook(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiPath(id): ApiPath<String>,
) -> UiResult {
    let _ = webhooks::test(
        State(state),
        Extension(caller),
        ApiJson(webhooks::TestWebhook { id }),
    )
    .await?;
    Ok(see_other("/ui/webhooks?done=test"))
}

pub async fn redeliver(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    path: ApiPath<(String, String)>,
) -> UiResult {
    let _ = webhooks::redeliver(State(state), Extension(caller), path).await?;
    Ok(see_other("/ui/webhooks?done=redeliver"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_read_as_words() {
        assert_eq!(span(Some(4.4)), "4 s");
        assert_eq!(span(Some(200.0)), "3 min 20 s");
        assert_eq!(span(Some(7500.0)), "2 h 5 min");
        assert_eq!(span(Some(3.0 * 86_400.0 + 4.0 * 3600.0)), "3 d 4 h");
        assert_eq!(span(None), "—");
        assert_eq!(span(Some(f64::NAN)), "—");
        assert_eq!(span(Some(-1.0)), "—");
    }

    #[test]
    fn a_job_says_its_state_in_words() {
        let job = |status: &str, conclusion: Option<&str>| Job {
            status: Some(status.into()),
            conclusion: conclusion.map(str::to_owned),
            ..Job::default()
        };
        assert_eq!(
            job_state(&job("completed", Some("failed"))),
            ("failed".into(), "bad")
        );
        assert_eq!(
            job_state(&job("completed", Some("passed"))),
            ("passed".into(), "good")
        );
        assert_eq!(
            job_state(&job("in_progress", None)),
            ("running".into(), "wait")
        );
        assert_eq!(job_state(&job("queued", None)), ("queued".into(), "wait"));
    }

    #[test]
    fn chart_tables_have_one_value_per_series_and_label() {
        let w = |d: i64| Window {
            from: DateTime::<Utc>::UNIX_EPOCH + Duration::days(d),
            to: DateTime::<Utc>::UNIX_EPOCH + Duration::days(d + 1),
        };
        let points = vec![(w(0), Figures::default()), (w(1), Figures::default())];
        for chart in charts(&points, true) {
            let rows = chart.rows();
            assert_eq!(rows.len(), 2, "{}", chart.id);
            assert!(rows.iter().all(|(_, v)| v.len() == chart.series.len()));
        }
    }
}
