//! The bridge from an integrated account to its provider: credentials in, account
//! status out (Buddy's 401 marks the account, 403 is recorded).

use std::sync::Arc;

use cigate_buddy::client::{BuddyClient, TokenInfo};
use cigate_buddy::error::BuddyError;
use cigate_buddy::provider::BuddyProvider;
use cigate_core::{Provider, ProviderError, Secret};
use cigate_store::{Account, AccountPatch, AccountStatus, Credential};

use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
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

/// The provider for one account, with its decrypted credential.
pub async fn provider_for(
    state: &AppState,
    caller: &Caller,
    account: &Account,
) -> ApiResult<Arc<dyn Provider>> {
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
    let credential = state
        .store
        .credential(&caller.environment_id, &account.id)
        .await?
        .ok_or_else(|| {
            ApiError::NotFound(format!("integrated account `{}` not found", account.id))
        })?;
    let token = match credential {
        Credential::ApiKey { api_key } => api_key,
        Credential::OAuth2 { access_token, .. } => access_token,
    };
    let client = BuddyClient::new(&state.http, url, token);
    Ok(Arc::new(BuddyProvider::new(client)))
}

/// Records what an upstream failure says about the account, then returns the error.
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
        let patch = match status {
            401 => Some(AccountPatch {
                status: Some(AccountStatus::NeedsReauth),
                last_error: Some(Some(message.clone())),
                ..AccountPatch::default()
            }),
            403 => Some(AccountPatch {
                last_forbidden_error: Some(Some(message.clone())),
                ..AccountPatch::default()
            }),
            _ => None,
        };
        if let Some(patch) = patch {
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
