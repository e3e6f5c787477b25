//! Provider webhooks pointing back at cigate: registered when an account is linked
//! (and at start-up, and repaired every `CIGATE_EVENT_HOOK_REPAIR_INTERVAL`), removed
//! when it is deleted, and received at
//! `/integrated-account-webhook/{account id}/{path token}`.
//!
//! A delivery is checked (path token, then the shared secret wherever the provider put
//! it: a body field, a header or a query parameter; constant-time) and answered at
//! once. What it says is a hint only: the job it names is read again through the
//! account's gateway before the detector sees it, so a forged, replayed or stale
//! delivery can never produce a wrong event.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::post;
use axum::{Json, Router};
use chrono::Utc;
use cigate_core::events::{HookHint, JobRef};
use cigate_core::{Provider, ProviderError, Resource};
use cigate_store::{Account, AccountStatus, EventSource};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::{caller_for, job_query, observe, Source};
use crate::error::{ApiError, ApiResult};
use crate::gateway::Gateway;
use crate::state::AppState;

/// The path provider webhooks post to, under `CIGATE_PUBLIC_URL`.
pub const HOOK_PATH: &str = "/integrated-account-webhook";
/// Accounts whose webhooks one pass of the registrar checks at once.
const REGISTRAR_BATCH: u32 = 100;
/// How often the registrar looks for accounts to check.
const REGISTRAR_TICK: Duration = Duration::from_secs(60);
/// A registration started this recently (anywhere) is not started again.
const CLAIM_WINDOW: Duration = Duration::from_secs(30);

pub fn routes() -> Router<AppState> {
    Router::new().route(
        &format!("{HOOK_PATH}/{{account_id}}/{{token}}"),
        post(receive),
    )
}

/// The public base URL provider webhooks can reach, if configured.
fn public_url(state: &AppState) -> Option<&str> {
    state
        .config
        .public_url
        .as_deref()
        .map(|url| url.trim_end_matches('/'))
        .filter(|url| !url.is_empty())
}

fn target_url(public: &str, source: &EventSource) -> String {
    format!(
        "{public}{HOOK_PATH}/{}/{}",
        source.account_id,
        source.hook_token.expose()
    )
}

fn provider_hooks(
    provider: &dyn Provider,
) -> Result<&dyn cigate_core::ProviderHooks, ProviderError> {
    provider
        .hooks()
        .ok_or_else(|| ProviderError::Unsupported("this integration does not send webhooks".into()))
}

/// Registers (or repairs) the account's provider webhook, when this server has a
/// public URL and no instance started the same within [`CLAIM_WINDOW`]; records what
/// happened on the account's event source. Failing leaves the account to polling,
/// which is what an account without one gets anyway.
pub async fn register(state: &AppState, account: &Account) {
    let Some(public) = public_url(state) else {
        return;
    };
    if account.status != AccountStatus::Active {
        return;
    }
    let Some(source) = event_source(state, account).await else {
        return;
    };
    match state.store.claim_hooks(&account.id, CLAIM_WINDOW).await {
        Ok(true) => ensure_with(state, account, public, &source).await,
        Ok(false) => {}
        Err(err) => {
            tracing::warn!(account = %account.id, error = %err, "claiming the webhook registration failed");
        }
    }
}

/// [`register`] without the claim: checks and repairs the account's provider webhook
/// now.
pub async fn ensure(state: &AppState, account: &Account) {
    let Some(public) = public_url(state) else {
        return;
    };
    if let Some(source) = event_source(state, account).await {
        ensure_with(state, account, public, &source).await;
    }
}

async fn event_source(state: &AppState, account: &Account) -> Option<EventSource> {
    match state.store.ensure_event_source(&account.id).await {
        Ok(source) => Some(source),
        Err(err) => {
            tracing::warn!(account = %account.id, error = %err, "making an event source failed");
            None
        }
    }
}

async fn ensure_with(state: &AppState, account: &Account, public: &str, source: &EventSource) {
    let target = target_url(public, source);
    let outcome = match Gateway::open(
        state,
        &caller_for(account),
        &account.id,
        state.default_timeout(),
    )
    .await
    {
        Ok(gateway) => {
            let (target, secret) = (&target, source.hook_secret.expose());
            gateway
                .call(|provider: Arc<dyn Provider>| async move {
                    provider_hooks(provider.as_ref())?
                        .ensure_hooks(target, secret)
                        .await
                })
                .await
        }
        Err(err) => Err(err),
    };
    let written = match &outcome {
        Ok(hooks) => state.store.record_hooks(&account.id, hooks, None).await,
        Err(err) => {
            tracing::info!(account = %account.id, error = %err, "registering the provider webhook failed; polling instead");
            state
                .store
                .record_hooks(&account.id, &json!([]), Some(&err.to_string()))
                .await
        }
    };
    if let Err(err) = written {
        tracing::warn!(account = %account.id, error = %err, "recording the provider webhook failed");
    }
}

/// [`register`] in the background (linking answers without waiting for it).
pub fn register_soon(state: &AppState, account: &Account) {
    if public_url(state).is_none() {
        return;
    }
    let (state, account) = (state.clone(), account.clone());
    tokio::spawn(async move { register(&state, &account).await });
}

/// Removes the account's provider webhooks (before the account is deleted). Failing
/// is logged: the account goes all the same, and its webhook's deliveries then find
/// no account (404).
pub async fn unregister(state: &AppState, account: &Account) {
    let source = match state.store.event_source(&account.id).await {
        Ok(Some(source)) => source,
        Ok(None) => return,
        Err(err) => {
            tracing::warn!(account = %account.id, error = %err, "reading the event source failed");
            return;
        }
    };
    // Registered under this URL (or an earlier one, recorded with each hook).
    let mut targets: Vec<String> = source
        .hooks
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|hook| hook.get("target_url").and_then(Value::as_str))
        .map(str::to_owned)
        .collect();
    if let Some(public) = public_url(state) {
        targets.push(target_url(public, &source));
    }
    targets.sort();
    targets.dedup();
    if targets.is_empty() {
        return;
    }
    let gateway = match Gateway::open(
        state,
        &caller_for(account),
        &account.id,
        state.default_timeout(),
    )
    .await
    {
        Ok(gateway) => gateway,
        Err(err) => {
            tracing::warn!(account = %account.id, error = %err, "removing the provider webhook failed");
            return;
        }
    };
    for target in &targets {
        let removed = gateway
            .call(|provider: Arc<dyn Provider>| async move {
                provider_hooks(provider.as_ref())?
                    .remove_hooks(target)
                    .await
            })
            .await;
        if let Err(err) = removed {
            tracing::warn!(account = %account.id, error = %err, "removing the provider webhook failed");
        }
    }
}

/// Registers webhooks for active accounts that lack one (start-up) and repairs every
/// account's once per repair interval; runs until the server stops it.
pub async fn registrar(state: AppState) {
    if public_url(&state).is_none() {
        return;
    }
    // At start-up every account is checked once, whatever it had.
    let mut before = Utc::now();
    let repair = chrono::Duration::from_std(state.config.event_hook_repair_interval)
        .unwrap_or_else(|_| chrono::Duration::hours(1));
    loop {
        let mut after = String::new();
        loop {
            let batch = match state
                .store
                .hook_candidates(before, &after, REGISTRAR_BATCH)
                .await
            {
                Ok(batch) => batch,
                Err(err) => {
                    tracing::warn!(error = %err, "finding accounts to register webhooks for failed");
                    break;
                }
            };
            let Some(last) = batch.last() else { break };
            after = last.account_id.clone();
            for candidate in batch {
                if let Ok(Some(account)) = state
                    .store
                    .get_account(&candidate.environment_id, &candidate.account_id)
                    .await
                {
                    register(&state, &account).await;
                }
            }
        }
        tokio::time::sleep(REGISTRAR_TICK).await;
        before = Utc::now() - repair;
    }
}

/// Both sides hashed first, so the comparison takes the same time whatever the lengths.
fn same_secret(expected: &str, given: &str) -> bool {
    let a = Sha256::digest(expected.as_bytes());
    let b = Sha256::digest(given.as_bytes());
    bool::from(a.ct_eq(&b))
}

/// Every place and form a shared secret can take: the provider's body fields, any
/// header value (with or without a `Bearer `/`token ` prefix) and any query value, in
/// clear; or, should a provider sign instead of echoing, any header carrying the
/// HMAC-SHA256 of the body under the secret (hex or base64, with or without `sha256=`).
pub(crate) fn carries_secret(
    secret: &str,
    hint: &HookHint,
    headers: &HeaderMap,
    query: Option<&str>,
    body: &[u8],
) -> bool {
    use base64::Engine as _;
    use hmac::{Hmac, Mac};
    let signature = Hmac::<Sha256>::new_from_slice(secret.as_bytes())
        .map(|mut mac| {
            mac.update(body);
            mac.finalize().into_bytes()
        })
        .ok();
    let signed = signature.map(|sig| {
        (
            hex::encode(sig),
            base64::engine::general_purpose::STANDARD.encode(sig),
        )
    });
    let mut found = false;
    let mut check = |given: &str| {
        let given = given.trim();
        found |= same_secret(secret, given);
        if let Some((hex_form, base64_form)) = &signed {
            let bare = given.strip_prefix("sha256=").unwrap_or(given);
            found |= same_secret(hex_form, &bare.to_ascii_lowercase());
            found |= same_secret(base64_form, bare);
        }
    };
    for given in &hint.secrets {
        check(given);
    }
    for value in headers.values() {
        if let Ok(text) = value.to_str() {
            check(text);
            if let Some((_, rest)) = text.split_once(' ') {
                check(rest);
            }
        }
    }
    if let Some(query) = query {
        for (_, value) in url::form_urlencoded::parse(query.as_bytes()) {
            check(&value);
        }
    }
    found
}

#[utoipa::path(post, path = "/integrated-account-webhook/{account_id}/{token}", tag = crate::openapi::TAG_EVENTS,
    summary = "Receive a provider webhook (Buddy posts here)",
    description = "Where the Buddy webhook cigate registers for an account posts its execution events; no API token, the path token and the shared secret prove the sender. The payload is a hint only: the job it names is read again from Buddy before any event is emitted.",
    params(("account_id" = String, Path, description = "the account's id"), ("token" = String, Path, description = "the account's random path token")),
    request_body(content = Object, description = "Buddy's webhook payload"),
    responses(
        (status = 200, description = "`{ received: true }`", example = json!({"received": true})),
        (status = 400, description = "a body that is not JSON"),
        (status = 401, description = "the shared secret is missing or wrong"),
        (status = 404, description = "no such account, or a wrong path token"),
    ))]
pub async fn receive(
    State(state): State<AppState>,
    Path((account_id, token)): Path<(String, String)>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<impl IntoResponse> {
    let unknown = || ApiError::NotFound("no such webhook".into());
    let source = state
        .store
        .event_source(&account_id)
        .await?
        .ok_or_else(unknown)?;
    if !same_secret(source.hook_token.expose(), &token) {
        return Err(unknown());
    }
    let account = state
        .store
        .account_by_id(&account_id)
        .await?
        .ok_or_else(unknown)?;
    let parsed: Value = serde_json::from_slice(&body)
        .map_err(|err| ApiError::InvalidBody(format!("the webhook body is not JSON: {err}")))?;
    let hint = crate::gateway::hook_hint(&account, &parsed).unwrap_or_default();
    if !carries_secret(
        source.hook_secret.expose(),
        &hint,
        &headers,
        query.as_deref(),
        &body,
    ) {
        return Err(ApiError::Unauthorized);
    }
    if let Err(err) = state.store.note_hook_seen(&account.id).await {
        tracing::warn!(account = %account.id, error = %err, "noting a webhook failed");
    }
    let task_state = state.clone();
    tokio::spawn(async move { follow(&task_state, &account, hint.job).await });
    Ok((StatusCode::OK, Json(json!({ "received": true }))))
}

/// Reads the job a delivery named and runs it through the detector; a delivery that
/// named none precisely makes the account be polled now.
async fn follow(state: &AppState, account: &Account, job: Option<JobRef>) {
    let Some(job) = job else {
        state.watch.poll_soon(account);
        return;
    };
    let read = async {
        let gateway = Gateway::open(
            state,
            &caller_for(account),
            &account.id,
            state.default_timeout(),
        )
        .await?;
        let query = job_query(&job);
        let read_at = Utc::now();
        let got = gateway
            .call(|provider: Arc<dyn Provider>| {
                let (query, id) = (&query, &job.job);
                async move { provider.get(Resource::Jobs, id, query).await }
            })
            .await?;
        observe(state, account, Source::Hook, read_at, &got.record, false).await
    };
    match read.await {
        Ok(_) => {}
        // The delivery named a job the account cannot see: nothing happened.
        Err(ApiError::NotFound(_) | ApiError::Remote { status: 404, .. }) => {}
        Err(err) => {
            tracing::info!(account = %account.id, error = %err, "reading a hinted job failed; polling instead");
            state.watch.poll_soon(account);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn a_secret_is_found_wherever_it_travels() {
        let none = HookHint::default();
        let mut headers = HeaderMap::new();
        assert!(!carries_secret("s3cret", &none, &headers, None, b""));
        let in_body = HookHint {
            secrets: vec!["s3cret".into()],
            job: None,
        };
        assert!(carries_secret("s3cret", &in_body, &headers, None, b""));
        assert!(carries_secret(
            "s3cret",
            &none,
            &headers,
            Some("secret=s3cret"),
            b""
        ));
        assert!(!carries_secret(
            "s3cret",
            &none,
            &headers,
            Some("secret=s3cre"),
            b""
        ));
        headers.insert("x-buddy-webhook-secret", HeaderValue::from_static("s3cret"));
        assert!(carries_secret("s3cret", &none, &headers, None, b""));
        let mut bearer = HeaderMap::new();
        bearer.insert("authorization", HeaderValue::from_static("Bearer s3cret"));
        assert!(carries_secret("s3cret", &none, &bearer, None, b""));
        let mut wrong = HeaderMap::new();
        wrong.insert(
            "x-buddy-webhook-secret",
            HeaderValue::from_static("s3cret2"),
        );
        assert!(!carries_secret("s3cret", &none, &wrong, None, b""));
    }

    #[test]
    fn a_signature_of_the_body_under_the_secret_counts_too() {
        use hmac::{Hmac, Mac};
        let none = HookHint::default();
        let body = br#"{"execution":{"id":1}}"#;
        let mut mac = Hmac::<Sha256>::new_from_slice(b"s3cret").unwrap();
        mac.update(body);
        let sig = hex::encode(mac.finalize().into_bytes());
        for value in [sig.clone(), format!("sha256={sig}"), sig.to_uppercase()] {
            let mut headers = HeaderMap::new();
            headers.insert("x-signature", HeaderValue::from_str(&value).unwrap());
            assert!(
                carries_secret("s3cret", &none, &headers, None, body),
                "{value}"
            );
            assert!(
                !carries_secret("other", &none, &headers, None, body),
                "{value}"
            );
            assert!(
                !carries_secret("s3cret", &none, &headers, None, b"{}"),
                "{value}"
            );
        }
    }
}
