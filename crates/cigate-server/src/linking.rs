//! Linking a Buddy account: verify a credential against Buddy, then create the account
//! or give an existing one the new credential in place. Shared by
//! `POST /integrated-account` (personal access tokens and OAuth imports) and the Link
//! page (tokens pasted by the end user, OAuth callbacks).

use cigate_buddy::client::TokenInfo;
use cigate_store::{Account, AccountPatch, AccountStatus, Credential, NewAccount};
use serde_json::{json, Map, Value};

use crate::error::{ApiError, ApiResult};
use crate::gateway;
use crate::refresh;
use crate::state::AppState;

pub const CREATED: &str = cigate_core::events::event_type::ACCOUNT_CREATED;
pub const UPDATED: &str = cigate_core::events::event_type::ACCOUNT_UPDATED;
pub const ACTIVE: &str = cigate_core::events::event_type::ACCOUNT_ACTIVE;
pub const DELETED: &str = cigate_core::events::event_type::ACCOUNT_DELETED;

/// Keys of `context` that are never stored in clear nor returned.
pub fn is_secret_key(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    key.contains("token") || key.contains("secret") || key == "password" || key == "api_key"
}

/// Non-secret context kept on the account, with what verification learned. `oauth`
/// (an import's token bundle) is dropped with the other secrets.
pub fn stored_context(given: &Map<String, Value>, base_url: &str, info: &TokenInfo) -> Value {
    let mut context: Map<String, Value> = given
        .iter()
        .filter(|(key, _)| !is_secret_key(key) && key.as_str() != "oauth")
        .map(|(key, value)| (key.clone(), value.clone()))
        .collect();
    context.insert("base_url".into(), Value::String(base_url.to_owned()));
    if let Ok((region, _)) = cigate_buddy::base_url::resolve_base_url(base_url) {
        context.insert("region".into(), Value::String(region.as_str().to_owned()));
    }
    if let Some(scopes) = &info.scopes {
        context.insert("scopes".into(), json!(scopes));
    }
    context.insert("workspaces".into(), json!(info.workspaces));
    if !context.contains_key("workspace") && info.workspaces.len() == 1 {
        context.insert("workspace".into(), json!(info.workspaces[0]));
    }
    Value::Object(context)
}

/// `context.<key>` as a trimmed non-empty string; absent or `null` is `None`, anything
/// else a 422.
pub fn string_field<'a>(context: &'a Map<String, Value>, key: &str) -> ApiResult<Option<&'a str>> {
    match context.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if !s.trim().is_empty() => Ok(Some(s.trim())),
        Some(_) => Err(ApiError::Validation(format!(
            "`context.{key}` must be a non-empty string"
        ))),
    }
}

/// The Buddy a link token's context names (`base_url`, else `region` `us` or `eu`), which
/// the Link page then uses without asking; `None` leaves the choice to the end user. A
/// `region` that contradicts `base_url` is refused. Only parses: the URL still has to
/// pass the upstream policy.
pub fn named_base_url(context: &Map<String, Value>) -> ApiResult<Option<String>> {
    use cigate_buddy::base_url::{resolve_base_url, EU_BASE_URL, US_BASE_URL};
    let base_url = string_field(context, "base_url")?;
    let region = string_field(context, "region")?;
    let url = match (base_url, region) {
        (None, None) => return Ok(None),
        (Some(url), _) => url.to_owned(),
        (None, Some(region)) => match region.to_ascii_lowercase().as_str() {
            "us" => US_BASE_URL.to_owned(),
            "eu" => EU_BASE_URL.to_owned(),
            _ => {
                return Err(ApiError::Validation(format!(
                    "`context.region` `{region}` is not a Buddy cloud region (`us`, `eu`); \
                     name a self-hosted Buddy by `context.base_url`"
                )))
            }
        },
    };
    let (found, _) = resolve_base_url(&url)
        .map_err(|err| ApiError::Validation(format!("`context.base_url`: {err}")))?;
    if let Some(region) = region {
        if !region.eq_ignore_ascii_case(found.as_str()) {
            return Err(ApiError::Validation(format!(
                "`context.region` `{region}` does not match `context.base_url`, which is {}",
                found.as_str()
            )));
        }
    }
    Ok(Some(url))
}

/// A credential Buddy accepted, at a base URL that passed the upstream policy.
pub struct Verified {
    pub base_url: String,
    pub info: TokenInfo,
    pub credential: Credential,
}

/// Checks the base URL against the policy and the credential against Buddy; nothing is
/// stored. Refused → 422 with Buddy's reason; a credential that cannot be sent in a
/// header (CR/LF) → 422 before any call.
pub async fn verify(
    state: &AppState,
    base_url: &str,
    credential: Credential,
) -> ApiResult<Verified> {
    let token = match &credential {
        Credential::ApiKey { api_key } => api_key,
        Credential::OAuth2 { access_token, .. } => access_token,
    };
    if !cigate_core::params::is_header_safe(token.expose()) {
        return Err(ApiError::Validation(
            "the credential must be printable ASCII: no line breaks or other control characters"
                .into(),
        ));
    }
    let (base_url, info) = gateway::verify(state, base_url, token).await?;
    Ok(Verified {
        base_url,
        info,
        credential,
    })
}

/// Where a verified credential goes.
pub struct Target<'a> {
    pub environment_id: &'a str,
    pub tenant_id: Option<String>,
    /// Reconnect in place: this account keeps its id and gets the new credential.
    pub account_id: Option<&'a str>,
    /// Non-secret context given by the caller (secret keys are dropped).
    pub context: &'a Map<String, Value>,
}

/// Creates the account, or updates the target account in place (status `active`,
/// `last_error` cleared), and records the lifecycle event.
pub async fn save(state: &AppState, target: Target<'_>, verified: Verified) -> ApiResult<Account> {
    let fresh = stored_context(target.context, &verified.base_url, &verified.info);
    let Some(id) = target.account_id else {
        let account = state
            .store
            .create_account(NewAccount {
                environment_id: target.environment_id.to_owned(),
                tenant_id: target.tenant_id,
                integration: "buddy".into(),
                status: AccountStatus::Active,
                context: fresh,
                last_error: None,
                credential: verified.credential,
            })
            .await?;
        refresh::record_event(state, &account, CREATED, json!({})).await;
        // Verified against Buddy just now: ready for use.
        refresh::record_event(state, &account, ACTIVE, json!({})).await;
        crate::watch::hooks::register_soon(state, &account);
        return Ok(account);
    };
    let existing = state
        .store
        .get_account(target.environment_id, id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("integrated account `{id}` not found")))?;
    let mut context = existing.context.as_object().cloned().unwrap_or_default();
    if let Value::Object(fresh) = fresh {
        context.extend(fresh);
    }
    let updated = state
        .store
        .update_account(
            target.environment_id,
            id,
            AccountPatch {
                tenant_id: target.tenant_id.map(Some),
                context: Some(Value::Object(context)),
                status: Some(AccountStatus::Active),
                last_error: Some(None),
                credential: Some(verified.credential),
                ..AccountPatch::default()
            },
        )
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("integrated account `{id}` not found")))?;
    let event = if existing.status == AccountStatus::NeedsReauth {
        refresh::REACTIVATED
    } else {
        UPDATED
    };
    refresh::record_event(state, &updated, event, json!({})).await;
    crate::watch::hooks::register_soon(state, &updated);
    Ok(updated)
}
