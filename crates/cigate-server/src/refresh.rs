//! OAuth token refresh, exactly once per account at a time.
//!
//! Two layers keep refreshes from racing (a rotated refresh token works once, so a
//! second concurrent refresh would lose the account):
//! * in this process, one `tokio::sync::Mutex` per account: concurrent callers queue and
//!   the ones after the first find the credential already replaced;
//! * across processes sharing the store, the account's lease row
//!   ([`cigate_store::Store::try_acquire_lease`]): an instance that cannot take it polls
//!   (with backoff, bounded) until the holder has stored the new credential, then uses it.
//!
//! The new access token and the rotated refresh token are written together (one
//! credential in one `update_account`). `invalid_grant` marks the account `needs_reauth`
//! and records `integrated_account:authentication_error`; network trouble and 5xx are
//! retried and leave the account `active`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use cigate_core::Secret;
use cigate_store::{Account, AccountPatch, AccountStatus, AuthMethod, Credential};
use serde_json::json;

use crate::error::{ApiError, ApiResult};
use crate::oauth::{self, TokenError, Tokens};
use crate::state::AppState;

/// A token expiring within this window is refreshed before use.
pub const EARLY_REFRESH: chrono::Duration = chrono::Duration::seconds(60);
/// The background task refreshes tokens expiring within this window.
const BACKGROUND_AHEAD: chrono::Duration = chrono::Duration::minutes(10);
/// ... and any OAuth account left untouched this long, so idle refresh tokens stay alive.
const BACKGROUND_IDLE: chrono::Duration = chrono::Duration::hours(24);
const BACKGROUND_EVERY: Duration = Duration::from_secs(60);
/// Longer than one refresh with its retries.
const LEASE_TTL: Duration = Duration::from_secs(30);
/// How long a caller waits for another instance's refresh before giving up.
const WAIT_BUDGET: Duration = Duration::from_secs(20);
const TOKEN_ATTEMPTS: u32 = 3;

pub const AUTHENTICATION_ERROR: &str =
    cigate_core::events::event_type::ACCOUNT_AUTHENTICATION_ERROR;
pub const REACTIVATED: &str = cigate_core::events::event_type::ACCOUNT_REACTIVATED;

/// Per-process refresh coordination; one per [`AppState`].
pub struct Refresher {
    /// Names this process in lease rows.
    holder: String,
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl Default for Refresher {
    fn default() -> Self {
        Self {
            holder: uuid::Uuid::new_v4().to_string(),
            locks: Mutex::new(HashMap::new()),
        }
    }
}

impl Refresher {
    fn lock_for(&self, account_id: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.locks.lock().unwrap_or_else(|p| p.into_inner());
        // Drop locks nobody holds, so the map stays as small as the set of busy accounts.
        if locks.len() > 1024 {
            locks.retain(|_, lock| Arc::strong_count(lock) > 1);
        }
        Arc::clone(locks.entry(account_id.to_owned()).or_default())
    }
}

/// Why a refresh is wanted; decides when another caller's refresh already satisfies it.
#[derive(Clone, Copy)]
pub enum Trigger<'a> {
    /// The token expires within [`EARLY_REFRESH`].
    Expiring,
    /// Buddy refused this token (or the caller forces a refresh of the token it saw).
    Replace(&'a Secret),
}

fn expiring(expires_at: Option<chrono::DateTime<Utc>>, within: chrono::Duration) -> bool {
    expires_at.is_some_and(|at| at <= Utc::now() + within)
}

/// The access token to use now if the trigger no longer calls for a refresh.
fn satisfied(credential: &Credential, trigger: Trigger<'_>) -> Option<Secret> {
    let Credential::OAuth2 {
        access_token,
        expires_at,
        ..
    } = credential
    else {
        return None;
    };
    let done = match trigger {
        Trigger::Expiring => !expiring(*expires_at, EARLY_REFRESH),
        Trigger::Replace(seen) => access_token.expose() != seen.expose(),
    };
    done.then(|| access_token.clone())
}

/// Why a refresh did not produce a token.
#[derive(Debug, thiserror::Error)]
pub enum RefreshError {
    /// The grant is dead; the account is now `needs_reauth`.
    #[error("{message}")]
    Revoked {
        message: String,
        body: serde_json::Value,
    },
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    NotPossible(String),
}

impl From<RefreshError> for ApiError {
    fn from(err: RefreshError) -> Self {
        match err {
            RefreshError::Revoked { message, body } => ApiError::Remote {
                status: 401,
                message,
                body,
            },
            RefreshError::Unavailable(msg) => ApiError::UpstreamUnreachable(msg),
            RefreshError::NotPossible(msg) => ApiError::Validation(msg),
        }
    }
}

impl From<cigate_store::StoreError> for RefreshError {
    fn from(err: cigate_store::StoreError) -> Self {
        RefreshError::Unavailable(format!("store: {err}"))
    }
}

async fn read_credential(state: &AppState, account: &Account) -> Result<Credential, RefreshError> {
    state
        .store
        .credential(&account.environment_id, &account.id)
        .await?
        .ok_or_else(|| RefreshError::NotPossible("the account has no credential".into()))
}

/// The token to call Buddy with and when it expires: a personal access token as is
/// (no expiry); an OAuth token, refreshed first when it expires within a minute.
pub async fn current_token(
    state: &AppState,
    account: &Account,
) -> ApiResult<(Secret, Option<chrono::DateTime<Utc>>)> {
    let credential = read_credential(state, account).await?;
    match credential {
        Credential::ApiKey { api_key } => Ok((api_key, None)),
        Credential::OAuth2 {
            access_token,
            expires_at,
            ..
        } => {
            if expiring(expires_at, EARLY_REFRESH) {
                let fresh = refresh_account(state, account, Trigger::Expiring).await?;
                // The refresh stored the new expiry; this process renews the client
                // again at the latest when the early-refresh window comes round.
                let credential = read_credential(state, account).await?;
                let expires_at = match credential {
                    Credential::OAuth2 { expires_at, .. } => expires_at,
                    Credential::ApiKey { .. } => None,
                };
                Ok((fresh, expires_at))
            } else {
                Ok((access_token, expires_at))
            }
        }
    }
}

/// Refreshes the account's token unless another caller (here or in another instance)
/// already did what `trigger` asks for; returns the access token to use.
pub async fn refresh_account(
    state: &AppState,
    account: &Account,
    trigger: Trigger<'_>,
) -> Result<Secret, RefreshError> {
    if account.authentication_method != AuthMethod::Oauth2 {
        return Err(RefreshError::NotPossible(
            "this account uses a personal access token, which has nothing to refresh".into(),
        ));
    }
    let refresher = &state.refresher;
    let lock = refresher.lock_for(&account.id);
    let _in_process = lock.lock().await;

    let credential = read_credential(state, account).await?;
    if let Some(token) = satisfied(&credential, trigger) {
        return Ok(token);
    }
    let deadline = tokio::time::Instant::now() + WAIT_BUDGET;
    let mut delay = Duration::from_millis(20);
    loop {
        if state
            .store
            .try_acquire_lease(&account.id, &refresher.holder, LEASE_TTL)
            .await?
        {
            break;
        }
        if tokio::time::Instant::now() + delay > deadline {
            return Err(RefreshError::Unavailable(
                "another instance is refreshing this account's token; try again".into(),
            ));
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_millis(400));
        let credential = read_credential(state, account).await?;
        if let Some(token) = satisfied(&credential, trigger) {
            return Ok(token);
        }
    }
    let result = refresh_holding_lease(state, account, trigger).await;
    if let Err(err) = state
        .store
        .release_lease(&account.id, &refresher.holder)
        .await
    {
        tracing::warn!(account = %account.id, error = %err, "could not release the refresh lease");
    }
    result
}

async fn refresh_holding_lease(
    state: &AppState,
    account: &Account,
    trigger: Trigger<'_>,
) -> Result<Secret, RefreshError> {
    // The previous holder may have finished between our last look and the lease.
    let credential = read_credential(state, account).await?;
    if let Some(token) = satisfied(&credential, trigger) {
        return Ok(token);
    }
    let Credential::OAuth2 { refresh_token, .. } = &credential else {
        return Err(RefreshError::NotPossible(
            "the account has no OAuth credential".into(),
        ));
    };
    let Some(refresh_token) = refresh_token else {
        return Err(mark_revoked(
            state,
            account,
            "Buddy issued no refresh token; reconnect the account".into(),
            json!({}),
        )
        .await);
    };
    let app = oauth::app_for(state, &account.environment_id)
        .await
        .map_err(|e| RefreshError::Unavailable(e.to_string()))?
        .ok_or_else(|| {
            RefreshError::NotPossible(
                "no OAuth app is configured for this environment (PUT /environment-integration/buddy)"
                    .into(),
            )
        })?;
    let base_url = base_url_of(account);
    let mut delay = Duration::from_millis(200);
    let mut attempt = 1;
    let tokens = loop {
        match app
            .refresh(
                &state.oauth_http,
                state.upstream_policy(),
                &base_url,
                refresh_token,
            )
            .await
        {
            Ok(tokens) => break tokens,
            Err(err) if err.is_invalid_grant() => {
                count_refresh(state, "failure");
                let (message, body) = match err {
                    TokenError::Refused {
                        description, body, ..
                    } => (description, body),
                    other => (other.to_string(), json!({})),
                };
                return Err(mark_revoked(state, account, message, body).await);
            }
            Err(TokenError::Unavailable(msg)) if attempt < TOKEN_ATTEMPTS => {
                tracing::info!(account = %account.id, attempt, error = %msg, "token refresh failed; retrying");
                tokio::time::sleep(delay).await;
                delay *= 2;
                attempt += 1;
            }
            Err(err) => {
                count_refresh(state, "failure");
                let message = err.to_string();
                record_error(state, account, &message).await;
                return Err(RefreshError::Unavailable(message));
            }
        }
    };
    count_refresh(state, "success");
    store_tokens(state, account, tokens).await
}

/// One call to Buddy's token endpoint that ended (retries of an unreachable endpoint
/// count once), for `cigate_oauth_refreshes_total`.
fn count_refresh(state: &AppState, outcome: &'static str) {
    state
        .metrics
        .refreshes
        .get_or_create(&crate::metrics::OutcomeLabels { outcome })
        .inc();
}

async fn store_tokens(
    state: &AppState,
    account: &Account,
    tokens: Tokens,
) -> Result<Secret, RefreshError> {
    let access = tokens.access_token.clone();
    state.cache.forget_account(&account.id);
    let updated = state
        .store
        .update_account(
            &account.environment_id,
            &account.id,
            AccountPatch {
                credential: Some(Credential::OAuth2 {
                    access_token: tokens.access_token,
                    refresh_token: tokens.refresh_token,
                    expires_at: tokens.expires_at,
                }),
                status: Some(AccountStatus::Active),
                last_error: Some(None),
                ..AccountPatch::default()
            },
        )
        .await?;
    if updated.is_none() {
        return Err(RefreshError::NotPossible("the account was deleted".into()));
    }
    if account.status == AccountStatus::NeedsReauth {
        record_event(state, account, REACTIVATED, json!({})).await;
    }
    tracing::info!(account = %account.id, "OAuth token refreshed");
    Ok(access)
}

async fn record_error(state: &AppState, account: &Account, message: &str) {
    let patch = AccountPatch {
        last_error: Some(Some(message.to_owned())),
        ..AccountPatch::default()
    };
    patch_account(state, account, patch, "the refresh failure").await;
}

/// Records what was learnt about the account (status, errors) and forgets its cached
/// copy. A store failure is logged, not returned: the caller's answer does not
/// depend on it. Returns whether the row was written.
pub async fn patch_account(
    state: &AppState,
    account: &Account,
    patch: AccountPatch,
    what: &'static str,
) -> bool {
    state.cache.forget_account(&account.id);
    match state
        .store
        .update_account(&account.environment_id, &account.id, patch)
        .await
    {
        Ok(_) => true,
        Err(err) => {
            tracing::warn!(account = %account.id, error = %err, "could not record {what}");
            false
        }
    }
}

/// Marks the account `needs_reauth` with the reason and records the lifecycle event.
pub async fn mark_revoked(
    state: &AppState,
    account: &Account,
    message: String,
    body: serde_json::Value,
) -> RefreshError {
    mark_needs_reauth(state, account, &message).await;
    RefreshError::Revoked { message, body }
}

/// `needs_reauth` + `last_error` + `integrated_account:authentication_error`.
pub async fn mark_needs_reauth(state: &AppState, account: &Account, message: &str) {
    let patch = AccountPatch {
        status: Some(AccountStatus::NeedsReauth),
        last_error: Some(Some(message.to_owned())),
        ..AccountPatch::default()
    };
    if patch_account(state, account, patch, "the account's needs_reauth").await {
        let payload = json!({ "message": message });
        record_event(state, account, AUTHENTICATION_ERROR, payload).await;
    }
}

/// Logs an account lifecycle event and queues it for the environment's webhook
/// subscribers. The payload is the account's public form (no secret), with `details`'
/// keys added. A store failure is logged: the caller's answer does not depend on it.
pub async fn record_event(
    state: &AppState,
    account: &Account,
    event_type: &str,
    details: serde_json::Value,
) {
    let mut payload = crate::routes::accounts::account_view(account);
    if let (Some(payload), serde_json::Value::Object(details)) = (payload.as_object_mut(), details)
    {
        payload.extend(details);
    }
    let event = cigate_store::NewEvent {
        environment_id: account.environment_id.clone(),
        event_type: event_type.to_owned(),
        integrated_account_id: Some(account.id.clone()),
        tenant_id: account.tenant_id.clone(),
        workflow: None,
        payload,
        only_webhook: None,
        except_webhook: None,
        order_key: Some(format!("integrated_account:{}", account.id)),
    };
    if let Err(err) = crate::delivery::record(state, event).await {
        tracing::warn!(account = %account.id, error = %err, event_type, "could not record the account event");
    }
}

pub fn base_url_of(account: &Account) -> String {
    account
        .context
        .get("base_url")
        .and_then(|v| v.as_str())
        .unwrap_or(cigate_buddy::base_url::US_BASE_URL)
        .to_owned()
}

/// Refreshes, ahead of time, every active OAuth account whose token expires soon or
/// that nothing has touched for a day. Runs until the task is aborted.
pub async fn background(state: AppState) {
    let mut interval = tokio::time::interval(BACKGROUND_EVERY);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        if let Err(err) = background_pass(&state).await {
            tracing::warn!(error = %err, "background token refresh pass failed");
        }
    }
}

/// One pass of [`background`]; returns how many accounts were refreshed.
pub async fn background_pass(state: &AppState) -> ApiResult<usize> {
    let mut refreshed = 0;
    for environment in state.store.list_environments().await? {
        let filter = cigate_store::AccountFilter {
            status: Some(AccountStatus::Active),
            ..Default::default()
        };
        let mut after: Option<String> = None;
        loop {
            let page = state
                .store
                .list_accounts(&environment.id, &filter, after.as_deref(), 500)
                .await?;
            for account in &page {
                if account.authentication_method != AuthMethod::Oauth2 {
                    continue;
                }
                let Ok(Credential::OAuth2 {
                    access_token,
                    expires_at,
                    ..
                }) = read_credential(state, account).await
                else {
                    continue;
                };
                let idle = account.updated_at <= Utc::now() - BACKGROUND_IDLE;
                if !idle && !expiring(expires_at, BACKGROUND_AHEAD) {
                    continue;
                }
                match refresh_account(state, account, Trigger::Replace(&access_token)).await {
                    Ok(_) => refreshed += 1,
                    Err(err) => {
                        tracing::info!(account = %account.id, error = %err, "background refresh failed")
                    }
                }
            }
            match page.last() {
                Some(last) if page.len() == 500 => after = Some(last.page_key()),
                _ => break,
            }
        }
    }
    Ok(refreshed)
}
