//! The bridge from an integrated account to its provider: credentials in, account
//! status out (Buddy's 401 marks the account, 403 is recorded).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::http::{HeaderMap, HeaderName, HeaderValue};
use chrono::Utc;
use cigate_buddy::client::{BuddyClient, TokenInfo};
use cigate_buddy::error::BuddyError;
use cigate_buddy::provider::BuddyProvider;
use cigate_core::{Provider, ProviderError, RateLimit, Secret};
use cigate_store::{Account, AccountPatch, AccountStatus, AuthMethod};
use serde_json::{json, Value};

use crate::auth::Caller;
use crate::cache::Linked;
use crate::error::{ApiError, ApiResult};
use crate::extract::QueryPairs;
use crate::refresh;
use crate::state::AppState;

/// Checks the URL against the upstream policy and the token against Buddy. Returns the
/// normalised base URL and what Buddy said about the token.
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
        Err(BuddyError::Api {
            status,
            message,
            body,
        }) if (400..500).contains(&status) => Err(ApiError::CredentialRejected {
            upstream_status: status,
            message,
            body,
        }),
        Err(err) => Err(transport_error(err)),
    }
}

fn transport_error(err: BuddyError) -> ApiError {
    match err {
        BuddyError::Timeout => ApiError::UpstreamTimeout,
        BuddyError::Api {
            status,
            message,
            body,
        } => ApiError::Remote {
            status,
            message,
            body,
        },
        other => ApiError::UpstreamUnreachable(other.to_string()),
    }
}

/// `truto_timeout_ms`: the caller's deadline for this call, retries and rate-limit
/// waits included (1 ms to 5 min); absent → the server's default.
pub fn call_timeout(state: &AppState, query: &QueryPairs) -> ApiResult<Duration> {
    let default = Duration::from_millis(state.config.upstream_timeout_ms);
    match query.get(TIMEOUT_PARAM) {
        None => Ok(default),
        Some(_) => Ok(Duration::from_millis(u64::from(query.int_in(
            TIMEOUT_PARAM,
            0,
            1,
            300_000,
        )?))),
    }
}

/// The query parameter carrying the caller's per-call deadline (never forwarded).
pub const TIMEOUT_PARAM: &str = "truto_timeout_ms";

/// An account's Buddy client and the token it carries, so error bodies can be
/// scrubbed of it before they reach a caller.
pub struct AccountClient {
    pub client: BuddyClient,
    token: Secret,
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
}

/// The account's Buddy client: its base URL (checked against the upstream policy) and
/// its decrypted credential (refreshed first when it is an OAuth token about to expire), with the server's default deadline. Spends one request of
/// the account's own limit, since every caller of this goes on to call Buddy.
pub async fn account_client(
    state: &AppState,
    caller: &Caller,
    account: &Account,
) -> ApiResult<AccountClient> {
    state.check_account_limit(&account.id)?;
    build_client(state, caller, account).await
}

/// The account and its client for the proxy's hot path, from the [`crate::cache`] when
/// fresh. Does not spend the account's limit: the caller does, per call.
pub async fn linked_account(
    state: &AppState,
    caller: &Caller,
    account_id: &str,
) -> ApiResult<Arc<Linked>> {
    if let Some(linked) = state.cache.account(&caller.environment_id, account_id) {
        return Ok(linked);
    }
    let account = crate::routes::accounts::load(state, caller, account_id).await?;
    let client = build_client(state, caller, &account).await?;
    let linked = Arc::new(Linked { account, client });
    state.cache.remember_account(Arc::clone(&linked));
    Ok(linked)
}

async fn build_client(
    state: &AppState,
    caller: &Caller,
    account: &Account,
) -> ApiResult<AccountClient> {
    if account.integration != "buddy" {
        return Err(ApiError::Validation(format!(
            "integration `{}` is not supported",
            account.integration
        )));
    }
    let base_url = account
        .context
        .get("base_url")
        .and_then(|v| v.as_str())
        .unwrap_or(cigate_buddy::base_url::US_BASE_URL);
    let url = cigate_buddy::base_url::validate_base_url(base_url, state.upstream_policy())
        .await
        .map_err(|err| {
            ApiError::Validation(format!("the account's `base_url` is not allowed: {err}"))
        })?;
    if account.environment_id != caller.environment_id {
        return Err(ApiError::NotFound(format!(
            "integrated account `{}` not found",
            account.id
        )));
    }
    // An OAuth token expiring within a minute is refreshed first (single-flight).
    let token = refresh::current_token(state, account).await?;
    let client = BuddyClient::new(&state.http, url, token.clone())
        .with_timeout(Duration::from_millis(state.config.upstream_timeout_ms));
    Ok(AccountClient { client, token })
}

/// The provider for one account, with its decrypted credential and the server's
/// default deadline.
pub async fn provider_for(
    state: &AppState,
    caller: &Caller,
    account: &Account,
) -> ApiResult<Arc<dyn Provider>> {
    let timeout = Duration::from_millis(state.config.upstream_timeout_ms);
    provider_with_timeout(state, caller, account, timeout).await
}

/// The provider for one account with the call's deadline (see [`call_timeout`]).
pub async fn provider_with_timeout(
    state: &AppState,
    caller: &Caller,
    account: &Account,
    timeout: Duration,
) -> ApiResult<Arc<dyn Provider>> {
    let account = account_client(state, caller, account).await?;
    Ok(Arc::new(BuddyProvider::new(
        account.client.with_timeout(timeout),
    )))
}

/// Runs one provider call for the account within `timeout`. An OAuth token Buddy
/// answers with 401 is refreshed once through the single-flight (or found already
/// replaced by a concurrent refresh) and the call retried once; a second 401 or a dead
/// grant marks the account `needs_reauth`. Never more than one refresh per call. A
/// success on a `needs_reauth` account makes it `active` again.
pub async fn call<T, F, Fut>(
    state: &AppState,
    caller: &Caller,
    account: &Account,
    timeout: Duration,
    f: F,
) -> ApiResult<T>
where
    F: Fn(Arc<dyn Provider>) -> Fut,
    Fut: Future<Output = Result<T, ProviderError>>,
{
    let first = account_client(state, caller, account).await?;
    let base_url = first.client.base_url().clone();
    let provider: Arc<dyn Provider> =
        Arc::new(BuddyProvider::new(first.client.with_timeout(timeout)));
    let outcome = match f(provider).await {
        Err(ProviderError::Upstream { status: 401, .. })
            if account.authentication_method == AuthMethod::Oauth2 =>
        {
            let fresh =
                refresh::refresh_account(state, account, refresh::Trigger::Replace(&first.token))
                    .await?;
            let client = BuddyClient::new(&state.http, base_url, fresh).with_timeout(timeout);
            f(Arc::new(BuddyProvider::new(client))).await
        }
        other => other,
    };
    match outcome {
        Ok(value) => {
            if account.status == AccountStatus::NeedsReauth {
                reactivate(state, account).await;
            }
            Ok(value)
        }
        Err(err) => Err(note_failure(state, caller, account, err).await),
    }
}

async fn reactivate(state: &AppState, account: &Account) {
    let patch = AccountPatch {
        status: Some(AccountStatus::Active),
        last_error: Some(None),
        ..AccountPatch::default()
    };
    match state
        .store
        .update_account(&account.environment_id, &account.id, patch)
        .await
    {
        Ok(_) => refresh::record_event(state, account, refresh::REACTIVATED, json!({})).await,
        Err(err) => {
            tracing::warn!(account = %account.id, error = %err, "could not reactivate the account")
        }
    }
}

/// Records what an upstream failure says about the account, then returns the error.
/// A 401 marks it `needs_reauth` (with the lifecycle event); a 403 is recorded.
pub async fn note_failure(
    state: &AppState,
    caller: &Caller,
    account: &Account,
    err: ProviderError,
) -> ApiError {
    if let ProviderError::Upstream {
        status, message, ..
    } = &err
    {
        if *status == 401 {
            refresh::mark_needs_reauth(state, account, message).await;
            return err.into();
        }
        let patch = match status {
            403 => Some(AccountPatch {
                last_forbidden_error: Some(Some(message.clone())),
                ..AccountPatch::default()
            }),
            _ => None,
        };
        if let Some(patch) = patch {
            state.cache.forget_account(&account.id);
            if let Err(store_err) = state
                .store
                .update_account(&caller.environment_id, &account.id, patch)
                .await
            {
                tracing::warn!(error = %store_err, account = %account.id, "could not record the account's upstream failure");
            }
        }
    }
    err.into()
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
