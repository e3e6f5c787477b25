//! The account gateway: the one road from an integrated account to its provider.
//!
//! Unified reads, writes, the proxy and `/custom` all go out and come back through a
//! [`Gateway`], so each of them gets the same treatment: the hot cache, cigate's own
//! per-account limits (rate and calls in flight), an OAuth token refreshed before it
//! expires and once more when the provider answers 401 (single-flight across requests
//! and instances), a `needs_reauth` account made `active` again by a success, and a
//! 401 or 403 recorded on the account.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use chrono::{DateTime, Utc};
use cigate_buddy::client::{BuddyClient, RawRequest, RawResponse, TokenInfo};
use cigate_buddy::error::{parse_error_body, BuddyError};
use cigate_buddy::provider::BuddyProvider;
use cigate_core::{
    ListQuery, Provider, ProviderError, ProviderWrites, RateLimit, Resource, Secret,
};
use cigate_store::{Account, AccountPatch, AccountStatus, AuthMethod};
use serde_json::{json, Value};

use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::extract::QueryPairs;
use crate::limits::Slot;
use crate::refresh;
use crate::state::AppState;

/// Largest error body read from a raw call to record a 401/403 on the account.
const MAX_ERROR_BODY: usize = 256 * 1024;

/// The account in the caller's environment (404 otherwise, never another
/// environment's account).
pub async fn load(state: &AppState, caller: &Caller, id: &str) -> ApiResult<Account> {
    state
        .store
        .get_account(&caller.environment_id, id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("integrated account `{id}` not found")))
}

/// An account of a tenant a tenant-wide read left out, and why.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct SkippedAccount {
    pub id: String,
    /// The account's status (`needs_reauth`, `validation_error`, `connecting`).
    pub status: String,
    pub last_error: Option<String>,
}

/// The accounts a read across accounts covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccountScope<'a> {
    /// Every account of the caller's environment.
    All,
    /// Every account of one tenant.
    Tenant(&'a str),
    /// One account (404 when it is not the caller's).
    Account(&'a str),
}

impl AccountScope<'_> {
    /// The scope's name in a cursor binding, so a cursor only continues its own scope.
    pub fn binding_key(&self) -> String {
        match self {
            AccountScope::All => "environment".into(),
            AccountScope::Tenant(tenant) => format!("tenant:{tenant}"),
            AccountScope::Account(id) => format!("account:{id}"),
        }
    }
}

/// Every account in `scope`, oldest first: the active ones to read, and the others to
/// name as skipped.
pub async fn scoped_accounts(
    state: &AppState,
    caller: &Caller,
    scope: AccountScope<'_>,
) -> ApiResult<(Vec<Account>, Vec<SkippedAccount>)> {
    let accounts = match scope {
        AccountScope::Account(id) => vec![load(state, caller, id).await?],
        AccountScope::All | AccountScope::Tenant(_) => {
            let filter = cigate_store::AccountFilter {
                tenant_id: match scope {
                    AccountScope::Tenant(tenant) => Some(tenant.to_owned()),
                    _ => None,
                },
                ..Default::default()
            };
            all_accounts(state, caller, &filter).await?
        }
    };
    let (mut active, mut skipped) = (Vec::new(), Vec::new());
    for account in accounts {
        if account.status == AccountStatus::Active {
            active.push(account);
        } else {
            skipped.push(SkippedAccount {
                id: account.id,
                status: account.status.as_str().to_owned(),
                last_error: account.last_error,
            });
        }
    }
    Ok((active, skipped))
}

/// Every account of the caller's environment that `filter` lets through, oldest first.
pub async fn all_accounts(
    state: &AppState,
    caller: &Caller,
    filter: &cigate_store::AccountFilter,
) -> ApiResult<Vec<Account>> {
    const PAGE: u32 = 500;
    let (mut all, mut after) = (Vec::new(), None::<String>);
    loop {
        let page = state
            .store
            .list_accounts(&caller.environment_id, filter, after.as_deref(), PAGE)
            .await?;
        let last = page.last().map(Account::page_key);
        let full = page.len() == PAGE as usize;
        all.extend(page);
        match last {
            Some(key) if full => after = Some(key),
            _ => return Ok(all),
        }
    }
}

/// Every record of a list, page by page, and the provider calls it took.
pub async fn every(
    gateway: &Gateway,
    resource: Resource,
    query: &ListQuery,
) -> ApiResult<(Vec<Value>, u64)> {
    let (mut items, mut calls, mut position) = (Vec::new(), 0u64, None);
    loop {
        let page = gateway
            .call(|provider| {
                let position = position.clone();
                async move { provider.list(resource, query, position).await }
            })
            .await?;
        calls += u64::from(page.upstream_calls);
        items.extend(
            page.items
                .iter()
                .map(|r| serde_json::to_value(&r.unified).unwrap_or(Value::Null)),
        );
        match page.next {
            Some(next) => position = Some(next),
            None => return Ok((items, calls)),
        }
    }
}

/// The `id`s of unified records.
pub fn record_ids(records: &[Value]) -> Vec<String> {
    records
        .iter()
        .filter_map(|r| r.get("id").and_then(Value::as_str).map(str::to_owned))
        .collect()
}

/// Checks the URL against the upstream policy and the token against Buddy, before an
/// account exists (linking). Returns the normalised base URL and what Buddy said about
/// the token. A token Buddy refuses is the caller's problem (422); Buddy throttling or
/// failing is not (429, 502, 504).
pub async fn verify(
    state: &AppState,
    base_url: &str,
    token: &Secret,
) -> ApiResult<(String, TokenInfo)> {
    let url = cigate_buddy::base_url::validate_base_url(base_url, state.upstream_policy())
        .await
        .map_err(|err| ApiError::Validation(format!("`base_url` is not allowed: {err}")))?;
    let client = BuddyClient::new(&state.http, url.clone(), token.clone());
    match client.verify_token().await {
        Ok(info) => Ok((url.to_string().trim_end_matches('/').to_owned(), info)),
        Err(err) if err.is_rate_limited() => Err(err.into()),
        Err(BuddyError::Api {
            status,
            message,
            body,
        }) if (400..500).contains(&status) => Err(ApiError::CredentialRejected {
            upstream_status: status,
            message,
            body,
        }),
        Err(err) => Err(err.into()),
    }
}

/// An account's Buddy client and the token it carries, so error bodies can be
/// scrubbed of it before they reach a caller.
pub struct AccountClient {
    pub client: BuddyClient,
    token: Secret,
    /// When an OAuth access token expires, so a long-held client is renewed in time.
    expires_at: Option<DateTime<Utc>>,
}

impl AccountClient {
    /// The credential this client sends (to tell a refresh which token Buddy refused).
    pub fn token(&self) -> &Secret {
        &self.token
    }

    /// Removes the account's token from a Buddy body, should Buddy ever echo it.
    pub fn scrub(&self, body: Value) -> Value {
        self.client.scrub(body)
    }

    fn expiring(&self) -> bool {
        self.expires_at
            .is_some_and(|at| at <= Utc::now() + refresh::EARLY_REFRESH)
    }
}

/// An account with its ready client, as the hot cache keeps it.
pub struct Linked {
    pub account: Account,
    pub client: AccountClient,
}

/// One request's way to an account's provider. Cheap to hold for the length of a
/// request (a followed log keeps one for minutes): every call through it takes its own
/// turn of the account's limits, and a token that expires meanwhile is renewed.
pub struct Gateway {
    state: AppState,
    caller: Caller,
    linked: std::sync::Mutex<Arc<Linked>>,
    timeout: Duration,
}

/// What a raw call brought back.
pub enum Sent {
    /// Buddy's answer, body not yet read; `slot` is the account's in-flight turn, to be
    /// held until the body is through.
    Answered { response: RawResponse, slot: Slot },
    /// Buddy refused the credential (401) or the permission (403); the body was read
    /// and recorded on the account. `error` is the answer in cigate's conventions.
    Refused {
        status: StatusCode,
        headers: HeaderMap,
        body: Bytes,
        error: ApiError,
    },
}

impl Gateway {
    /// Opens the caller's account `account_id` for calls with `timeout` each (retries
    /// and rate-limit waits included). From the hot cache when fresh.
    pub async fn open(
        state: &AppState,
        caller: &Caller,
        account_id: &str,
        timeout: Duration,
    ) -> ApiResult<Self> {
        let linked = match state.cache.account(&caller.environment_id, account_id) {
            Some(linked) => linked,
            None => Box::pin(link(state, caller, account_id)).await?,
        };
        Ok(Self {
            state: state.clone(),
            caller: caller.clone(),
            linked: std::sync::Mutex::new(linked),
            timeout,
        })
    }

    /// Opens the account a request names with `integrated_account_id`, with the
    /// request's `truto_timeout_ms` (or the server's default deadline).
    pub async fn for_query(
        state: &AppState,
        caller: &Caller,
        query: &QueryPairs,
        api: &str,
    ) -> ApiResult<Self> {
        let account_id = query.account_id(api)?;
        let timeout = query.timeout(state.default_timeout())?;
        Self::open(state, caller, account_id, timeout).await
    }

    fn linked(&self) -> std::sync::MutexGuard<'_, Arc<Linked>> {
        self.linked
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The account as it was when this gateway was opened (or last renewed).
    pub fn account(&self) -> Account {
        self.linked().account.clone()
    }

    /// The linked account, renewed first when its OAuth token is about to expire.
    async fn current(&self) -> ApiResult<Arc<Linked>> {
        let linked = Arc::clone(&*self.linked());
        if !linked.client.expiring() {
            return Ok(linked);
        }
        self.state.cache.forget_account(&linked.account.id);
        let fresh = Box::pin(link(&self.state, &self.caller, &linked.account.id)).await?;
        *self.linked() = Arc::clone(&fresh);
        Ok(fresh)
    }

    /// Spends one request of the account's own rate limit and takes one of its
    /// in-flight slots (waiting for one until the deadline).
    async fn turn(&self, account_id: &str) -> ApiResult<Slot> {
        self.state.check_account_limit(account_id)?;
        self.state
            .limits
            .slot(account_id, Instant::now() + self.timeout)
            .await
    }

    /// Runs one provider operation. A 401 on an OAuth token is refreshed once (or found
    /// already replaced by a concurrent refresh) and the operation run again: Buddy
    /// acted on nothing, so this is safe for writes too. A second 401 or a dead grant
    /// marks the account `needs_reauth`.
    pub async fn call<T, F, Fut>(&self, f: F) -> ApiResult<T>
    where
        F: Fn(Arc<dyn Provider>) -> Fut,
        Fut: Future<Output = Result<T, ProviderError>>,
    {
        let mut linked = self.current().await?;
        let _slot = self.turn(&linked.account.id).await?;
        let mut outcome = f(self.provider(&linked)).await;
        if matches!(outcome, Err(ProviderError::Upstream { status: 401, .. }))
            && is_oauth(&linked.account)
        {
            linked = self.refreshed(&linked).await?;
            outcome = f(self.provider(&linked)).await;
        }
        match outcome {
            Ok(value) => {
                self.succeeded(&linked.account).await;
                Ok(value)
            }
            Err(err) => Err(note_failure(&self.state, &linked.account, err).await),
        }
    }

    fn provider(&self, linked: &Linked) -> Arc<dyn Provider> {
        Arc::new(BuddyProvider::new(
            linked.client.client.with_timeout(self.timeout),
        ))
    }

    /// Sends a raw request (the proxy and `/custom`) with the same refresh-and-resend
    /// on a 401 as [`Gateway::call`] (when the body can be sent again).
    pub async fn send(&self, raw: RawRequest) -> ApiResult<Sent> {
        let mut linked = self.current().await?;
        let slot = self.turn(&linked.account.id).await?;
        let again = is_oauth(&linked.account).then(|| raw.try_clone()).flatten();
        // Boxed: this future then stays small while it waits, which is what 1,000
        // queued callers cost in memory.
        let mut response = Box::pin(linked.client.client.send_raw(raw)).await?;
        if let (StatusCode::UNAUTHORIZED, Some(again)) = (response.status(), again) {
            drop(response);
            linked = Box::pin(self.refreshed(&linked)).await?;
            response = Box::pin(linked.client.client.send_raw(again)).await?;
        }
        let status = response.status();
        if matches!(status.as_u16(), 401 | 403) {
            let headers = response.headers().clone();
            let body = read_limited(response, MAX_ERROR_BODY).await?;
            let failure = remote_error(&linked.client, status.as_u16(), &body);
            let error = Box::pin(note_failure(&self.state, &linked.account, failure)).await;
            return Ok(Sent::Refused {
                status,
                headers,
                body,
                error,
            });
        }
        if status.is_success() {
            Box::pin(self.succeeded(&linked.account)).await;
        }
        Ok(Sent::Answered { response, slot })
    }

    /// Buddy's error answer as a provider error, its body scrubbed of the credential.
    pub fn remote_error(&self, status: u16, body: &[u8]) -> ProviderError {
        remote_error(&self.linked().client, status, body)
    }

    /// Replaces the token Buddy refused (single-flight; a concurrent refresh counts)
    /// and relinks the account with it, for this and every later call of the gateway.
    async fn refreshed(&self, stale: &Linked) -> ApiResult<Arc<Linked>> {
        refresh::refresh_account(
            &self.state,
            &stale.account,
            refresh::Trigger::Replace(stale.client.token()),
        )
        .await?;
        self.state.cache.forget_account(&stale.account.id);
        let fresh = Box::pin(link(&self.state, &self.caller, &stale.account.id)).await?;
        *self.linked() = Arc::clone(&fresh);
        Ok(fresh)
    }

    /// A success on a `needs_reauth` account proves its credential works again.
    async fn succeeded(&self, account: &Account) {
        if account.status == AccountStatus::NeedsReauth {
            reactivate(&self.state, account).await;
        }
    }
}

/// The provider's write half of a gateway call, or `Unsupported` (501).
pub fn writes_of(provider: &dyn Provider) -> Result<&dyn ProviderWrites, ProviderError> {
    provider.writes().ok_or_else(|| {
        ProviderError::Unsupported("this integration does not support writes".into())
    })
}

fn remote_error(client: &AccountClient, status: u16, body: &[u8]) -> ProviderError {
    let (message, parsed) = parse_error_body(body);
    ProviderError::Upstream {
        status,
        message,
        body: client.scrub(parsed),
        missing_scope: None,
    }
}

fn is_oauth(account: &Account) -> bool {
    account.authentication_method == AuthMethod::Oauth2
}

/// Loads the account, builds its client and remembers both in the hot cache.
async fn link(state: &AppState, caller: &Caller, account_id: &str) -> ApiResult<Arc<Linked>> {
    let account = load(state, caller, account_id).await?;
    let client = build_client(state, &account).await?;
    let linked = Arc::new(Linked { account, client });
    state.cache.remember_account(Arc::clone(&linked));
    Ok(linked)
}

/// How the account's integration reads one of its webhook deliveries, before any call
/// is made (the delivery's secret must be checked first); `None` for an integration
/// that sends none.
pub fn hook_hint(account: &Account, body: &Value) -> Option<cigate_core::events::HookHint> {
    match account.integration.as_str() {
        "buddy" => Some(cigate_buddy::provider::hooks::hint(body)),
        _ => None,
    }
}

async fn build_client(state: &AppState, account: &Account) -> ApiResult<AccountClient> {
    if account.integration != "buddy" {
        return Err(ApiError::Validation(format!(
            "integration `{}` is not supported",
            account.integration
        )));
    }
    let base_url = refresh::base_url_of(account);
    let url = cigate_buddy::base_url::validate_base_url(&base_url, state.upstream_policy())
        .await
        .map_err(|err| {
            ApiError::Validation(format!("the account's `base_url` is not allowed: {err}"))
        })?;
    // An OAuth token expiring within a minute is refreshed first (single-flight).
    let (token, expires_at) = refresh::current_token(state, account).await?;
    let client =
        BuddyClient::new(&state.http, url, token.clone()).with_timeout(state.default_timeout());
    Ok(AccountClient {
        client,
        token,
        expires_at,
    })
}

async fn reactivate(state: &AppState, account: &Account) {
    let patch = AccountPatch {
        status: Some(AccountStatus::Active),
        last_error: Some(None),
        ..AccountPatch::default()
    };
    if refresh::patch_account(state, account, patch, "the account's reactivation").await {
        refresh::record_event(state, account, refresh::REACTIVATED, json!({})).await;
    }
}

/// Records what an upstream failure says about the account, then returns the error.
/// A 401 marks it `needs_reauth` (with the lifecycle event); a 403 is recorded.
async fn note_failure(state: &AppState, account: &Account, err: ProviderError) -> ApiError {
    if let ProviderError::Upstream {
        status, message, ..
    } = &err
    {
        match status {
            401 => refresh::mark_needs_reauth(state, account, message).await,
            403 => {
                let patch = AccountPatch {
                    last_forbidden_error: Some(Some(message.clone())),
                    ..AccountPatch::default()
                };
                refresh::patch_account(state, account, patch, "the account's 403").await;
            }
            _ => {}
        }
    }
    err.into()
}

/// Reads a body of at most `limit` bytes (larger → 502: use `/custom` to stream it).
pub async fn read_limited(mut response: RawResponse, limit: usize) -> ApiResult<Bytes> {
    let mut buf = Vec::with_capacity(
        response
            .content_length()
            .map_or(0, |n| n.min(limit as u64) as usize),
    );
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|err| ApiError::UpstreamUnreachable(err.to_string()))?
    {
        if buf.len() + chunk.len() > limit {
            return Err(ApiError::UpstreamUnreachable(format!(
                "Buddy's body is larger than {limit} bytes; use /custom to stream it"
            )));
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(Bytes::from(buf))
}

/// `ratelimit-*` headers (IETF draft names) mapped from Buddy's `X-Rate-Limit-*`.
pub fn rate_limit_headers(rate: Option<&RateLimit>) -> HeaderMap {
    let mut headers = HeaderMap::new();
    if let Some(rate) = rate {
        insert_rate_limit_headers(&mut headers, rate);
    }
    headers
}

/// Adds the `ratelimit-*` headers of `rate` to `headers` (on the proxy's hot path, so
/// without building a map of its own).
pub fn insert_rate_limit_headers(headers: &mut HeaderMap, rate: &RateLimit) {
    const LIMIT: HeaderName = HeaderName::from_static("ratelimit-limit");
    const REMAINING: HeaderName = HeaderName::from_static("ratelimit-remaining");
    const RESET: HeaderName = HeaderName::from_static("ratelimit-reset");
    if let Some(limit) = rate.limit {
        headers.insert(LIMIT, HeaderValue::from(limit));
    }
    if let Some(remaining) = rate.remaining {
        headers.insert(REMAINING, HeaderValue::from(remaining));
    }
    if let Some(reset) = rate.reset {
        let now = Utc::now().timestamp();
        headers.insert(RESET, HeaderValue::from((reset - now).max(0)));
    }
}
