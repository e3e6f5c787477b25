//! Integrated accounts: one customer's connected Buddy account.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use cigate_core::Secret;
use cigate_store::{Account, AccountFilter, AccountPatch, AuthMethod, Credential};

use crate::auth::Caller;
use crate::envelope::ListEnvelope;
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, ApiPath, QueryPairs};
use crate::gateway::load;
use crate::linking::{self, is_secret_key, string_field, Target};
use crate::state::AppState;
use crate::{oauth, refresh};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/integrated-account", get(list).post(create))
        .route(
            "/integrated-account/{id}",
            get(fetch).patch(update).delete(remove),
        )
        .route("/integrated-account/refresh-credentials", post(refresh))
}

/// The public form of an account: no secret, ever.
pub fn account_view(account: &Account) -> Value {
    json!({
        "id": account.id,
        "tenant_id": account.tenant_id,
        "environment_id": account.environment_id,
        "integration": { "name": account.integration, "category": "ci-cd" },
        "status": account.status,
        "authentication_method": account.authentication_method,
        "context": account.context,
        "last_error": account.last_error,
        "last_forbidden_error": account.last_forbidden_error,
        "created_at": account.created_at,
        "updated_at": account.updated_at,
    })
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateAccount {
    /// Your own customer's id.
    pub tenant_id: Option<String>,
    /// Only `buddy` today.
    pub integration: String,
    /// `api_key` (a personal access token), or `oauth2` to import an existing OAuth
    /// connection from `context.oauth.token`. New OAuth connections use the Link page.
    #[serde(default = "default_auth_method")]
    pub authentication_method: String,
    /// `api_key` (secret), `base_url` or `region` (`us`, `eu`), optional default `workspace`.
    #[serde(default)]
    pub context: Map<String, Value>,
}

fn default_auth_method() -> String {
    "api_key".into()
}

/// `base_url`, else `region`, else Buddy's US cloud.
pub(crate) fn requested_base_url(context: &Map<String, Value>) -> ApiResult<String> {
    if let Some(url) = string_field(context, "base_url")? {
        return Ok(url.to_owned());
    }
    match string_field(context, "region")? {
        None => Ok(cigate_buddy::base_url::US_BASE_URL.to_owned()),
        Some(region) => cigate_buddy::base_url::resolve_base_url(region)
            .map(|(_, url)| url.to_string())
            .map_err(|err| ApiError::Validation(err.to_string())),
    }
}

#[utoipa::path(post, path = "/integrated-account", tag = crate::openapi::TAG_ACCOUNTS, security(("api_token" = [])),
    summary = "Link an account with a credential",
    description = "Creates an account from a Buddy personal access token (`context.api_key`), or imports an existing OAuth connection (`authentication_method: oauth2`, `context.oauth.token`). The credential is verified against Buddy first (refreshed if expired); nothing is stored when it is refused. End users normally link through the Link page instead (`POST /link-token`).",
    request_body(content = CreateAccount,
        example = json!({"tenant_id": "acme", "integration": "buddy", "context": {"api_key": "<personal access token>", "base_url": "https://api.buddy.works"}})),
    responses(
        (status = 201, description = "the account (bare object)", example = json!({"id": "0b7e8c4e-5a55-4b8e-9a57-3f0f6f1f2a10", "tenant_id": "acme", "environment_id": "1f6c2d3e-0a1b-4c5d-8e9f-001122334455",
                "integration": {"name": "buddy", "category": "ci-cd"}, "status": "active", "authentication_method": "api_key",
                "context": {"base_url": "https://api.buddy.works", "region": "us", "scopes": ["WORKSPACE", "EXECUTION_INFO"], "workspaces": ["acme"], "workspace": "acme"},
                "last_error": null, "last_forbidden_error": null, "created_at": "2026-11-30T09:00:00Z", "updated_at": "2026-11-30T09:00:00Z"})),
        (status = 400, description = "a body that is not JSON"),
        (status = 422, description = "the credential was refused by Buddy or cannot be sent (line breaks), or the input is invalid; nothing stored"),
        (status = 502, description = "Buddy failed or could not be reached"),
        (status = 504, description = "Buddy did not answer within the deadline"),
    ))]
pub async fn create(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiJson(body): ApiJson<CreateAccount>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    if body.integration != "buddy" {
        return Err(ApiError::Validation(format!(
            "unknown integration `{}`; supported: buddy",
            body.integration
        )));
    }
    let base_url = requested_base_url(&body.context)?;
    let credential = match body.authentication_method.as_str() {
        "api_key" => {
            let api_key = string_field(&body.context, "api_key")?
                .ok_or_else(|| ApiError::Validation("`context.api_key` is required".into()))?;
            Credential::ApiKey {
                api_key: Secret::new(api_key),
            }
        }
        "oauth2" => imported_oauth(&state, &caller, &body.context, &base_url).await?,
        other => {
            return Err(ApiError::Validation(format!(
                "authentication_method `{other}` is not supported; use `api_key`, or `oauth2` with `context.oauth.token`"
            )))
        }
    };
    let verified = linking::verify(&state, &base_url, credential).await?;
    let account = linking::save(
        &state,
        Target {
            environment_id: &caller.environment_id,
            tenant_id: body.tenant_id,
            account_id: None,
            context: &body.context,
        },
        verified,
    )
    .await?;
    Ok((StatusCode::CREATED, Json(account_view(&account))))
}

/// An OAuth connection imported from another system: `context.oauth.token` with
/// `access_token`, `refresh_token`, and `expires_in` (seconds from now) or `expires_at`
/// (RFC 3339). A token expiring within a minute is refreshed first with the
/// environment's OAuth app.
async fn imported_oauth(
    state: &AppState,
    caller: &Caller,
    context: &Map<String, Value>,
    base_url: &str,
) -> ApiResult<Credential> {
    let token = context
        .get("oauth")
        .and_then(|o| o.get("token"))
        .and_then(Value::as_object)
        .ok_or_else(|| ApiError::Validation("`context.oauth.token` is required".into()))?;
    let text = |key: &str| {
        token
            .get(key)
            .and_then(Value::as_str)
            .map(str::trim)
            .filter(|s| !s.is_empty())
    };
    let access_token = text("access_token").ok_or_else(|| {
        ApiError::Validation("`context.oauth.token.access_token` is required".into())
    })?;
    let refresh_token = text("refresh_token").map(Secret::new);
    let expires_at = match (text("expires_at"), token.get("expires_in")) {
        (Some(at), _) => Some(
            chrono::DateTime::parse_from_rfc3339(at)
                .map_err(|_| {
                    ApiError::Validation(
                        "`context.oauth.token.expires_at` must be an RFC 3339 timestamp".into(),
                    )
                })?
                .with_timezone(&chrono::Utc),
        ),
        (None, Some(Value::Number(n))) => {
            let seconds = n.as_i64().ok_or_else(|| {
                ApiError::Validation(
                    "`context.oauth.token.expires_in` must be whole seconds".into(),
                )
            })?;
            Some(chrono::Utc::now() + chrono::Duration::seconds(seconds))
        }
        (None, None | Some(Value::Null)) => None,
        (None, Some(_)) => {
            return Err(ApiError::Validation(
                "`context.oauth.token.expires_in` must be a number".into(),
            ))
        }
    };
    let expired = expires_at.is_some_and(|at| at <= chrono::Utc::now() + refresh::EARLY_REFRESH);
    if !expired {
        return Ok(Credential::OAuth2 {
            access_token: Secret::new(access_token),
            refresh_token,
            expires_at,
        });
    }
    let refresh_token = refresh_token.ok_or_else(|| {
        ApiError::Validation(
            "the imported access token has expired and there is no `refresh_token` to renew it"
                .into(),
        )
    })?;
    let app = oauth::app_for(state, &caller.environment_id)
        .await?
        .ok_or_else(|| {
            ApiError::Validation(
                "the imported token has expired; configure the OAuth app (PUT /environment-integration/buddy) so it can be refreshed".into(),
            )
        })?;
    let url = cigate_buddy::base_url::validate_base_url(base_url, state.upstream_policy())
        .await
        .map_err(|err| ApiError::Validation(format!("`base_url` is not allowed: {err}")))?;
    let tokens = app
        .refresh(
            &state.oauth_http,
            state.upstream_policy(),
            url.as_str(),
            &refresh_token,
        )
        .await?;
    Ok(Credential::OAuth2 {
        access_token: tokens.access_token,
        refresh_token: tokens.refresh_token,
        expires_at: tokens.expires_at,
    })
}

#[utoipa::path(get, path = "/integrated-account", tag = crate::openapi::TAG_ACCOUNTS, security(("api_token" = [])),
    summary = "List accounts",
    params(("tenant_id" = Option<String>, Query, description = "only this customer's accounts"),
        ("status" = Option<String>, Query, description = "`connecting`, `active`, `needs_reauth` or `validation_error`"),
        ("integration" = Option<String>, Query, description = "`buddy`"),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 1000, description = "accounts per page, 1–1000, default 100"),
        ("next_cursor" = Option<String>, Query, description = "from the previous page")),
    responses(
        (status = 200, description = "the list envelope of accounts"),
        (status = 400, description = "an invalid parameter or cursor"),
    ))]
pub async fn list(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    query: QueryPairs,
) -> ApiResult<Json<ListEnvelope<Value>>> {
    let limit = query.int_in("limit", 100, 1, 1000)?;
    let filter = AccountFilter {
        tenant_id: query.get("tenant_id").map(str::to_owned),
        status: query
            .get("status")
            .map(|s| {
                s.parse().map_err(|_| {
                    ApiError::bad_request(
                        "/problems/invalid-parameter",
                        format!("unknown status `{s}`"),
                    )
                })
            })
            .transpose()?,
        integration: query.get("integration").map(str::to_owned),
    };
    let binding = cigate_core::cursor::CursorBinding {
        environment_id: caller.environment_id.clone(),
        account_id: String::new(),
        resource: "integrated-account".into(),
        filters: format!("{filter:?}|{limit}"),
    };
    let after = match query.get("next_cursor") {
        None => None,
        Some(cursor) => Some(
            state
                .cursors
                .decode(&binding, cursor)
                .map_err(|err| ApiError::InvalidCursor(err.to_string()))?
                .as_str()
                .map(str::to_owned)
                .ok_or_else(|| ApiError::InvalidCursor("not an account cursor".into()))?,
        ),
    };
    let accounts = state
        .store
        .list_accounts(&caller.environment_id, &filter, after.as_deref(), limit + 1)
        .await?;
    let has_more = accounts.len() > limit as usize;
    let page: Vec<&Account> = accounts.iter().take(limit as usize).collect();
    let next_cursor = match (has_more, page.last()) {
        (true, Some(last)) => Some(state.cursors.encode(&binding, &json!(last.page_key()))),
        _ => None,
    };
    Ok(Json(ListEnvelope::new(
        page.into_iter().map(account_view).collect(),
        next_cursor,
    )))
}

#[utoipa::path(get, path = "/integrated-account/{id}", tag = crate::openapi::TAG_ACCOUNTS, security(("api_token" = [])),
    summary = "Get an account",
    params(("id" = String, Path, description = "the account's id")),
    responses(
        (status = 200, description = "the account (bare object; never a secret)", example = json!({"id": "0b7e8c4e-5a55-4b8e-9a57-3f0f6f1f2a10", "tenant_id": "acme", "environment_id": "1f6c2d3e-0a1b-4c5d-8e9f-001122334455",
                "integration": {"name": "buddy", "category": "ci-cd"}, "status": "active", "authentication_method": "api_key",
                "context": {"base_url": "https://api.buddy.works", "region": "us", "scopes": ["WORKSPACE", "EXECUTION_INFO"], "workspaces": ["acme"], "workspace": "acme"},
                "last_error": null, "last_forbidden_error": null, "created_at": "2026-11-30T09:00:00Z", "updated_at": "2026-11-30T09:00:00Z"})),
        (status = 400, description = "an id that is not UTF-8"),
        (status = 404, description = "not found in this environment"),
    ))]
pub async fn fetch(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<Value>> {
    Ok(Json(account_view(&load(&state, &caller, &id).await?)))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateAccount {
    pub tenant_id: Option<String>,
    /// Non-secret keys are merged; an `api_key` replaces the credential after verification.
    #[serde(default)]
    pub context: Map<String, Value>,
}

#[utoipa::path(patch, path = "/integrated-account/{id}", tag = crate::openapi::TAG_ACCOUNTS, security(("api_token" = [])),
    summary = "Change an account",
    description = "Changes `tenant_id` or non-secret `context` keys, or replaces the credential (`context.api_key`, verified again).",
    params(("id" = String, Path, description = "the account's id")), request_body = UpdateAccount,
    responses(
        (status = 200, description = "the account after the change"),
        (status = 400, description = "a body that is not JSON"),
        (status = 404, description = "not found in this environment"),
        (status = 422, description = "the new credential was refused, or the input is invalid"),
        (status = 502, description = "Buddy failed or could not be reached"),
        (status = 504, description = "Buddy did not answer within the deadline"),
    ))]
pub async fn update(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<UpdateAccount>,
) -> ApiResult<Json<Value>> {
    let account = load(&state, &caller, &id).await?;
    let mut context = account.context.as_object().cloned().unwrap_or_default();
    let mut patch = AccountPatch {
        tenant_id: body.tenant_id.clone().map(Some),
        ..AccountPatch::default()
    };
    let moves_upstream =
        body.context.contains_key("base_url") || body.context.contains_key("region");
    if moves_upstream && !body.context.contains_key("api_key") {
        return Err(ApiError::Validation(
            "changing `base_url` needs the credential for it: send `context.api_key` too".into(),
        ));
    }
    if let Some(api_key) = string_field(&body.context, "api_key")? {
        let api_key = Secret::new(api_key);
        let base_url =
            if body.context.contains_key("base_url") || body.context.contains_key("region") {
                requested_base_url(&body.context)?
            } else {
                context
                    .get("base_url")
                    .and_then(Value::as_str)
                    .unwrap_or(cigate_buddy::base_url::US_BASE_URL)
                    .to_owned()
            };
        let verified = linking::verify(&state, &base_url, Credential::ApiKey { api_key }).await?;
        let updated = linking::save(
            &state,
            Target {
                environment_id: &caller.environment_id,
                tenant_id: body.tenant_id,
                account_id: Some(&id),
                context: &body.context,
            },
            verified,
        )
        .await?;
        return Ok(Json(account_view(&updated)));
    } else {
        for (key, value) in body.context.iter().filter(|(k, _)| !is_secret_key(k)) {
            context.insert(key.clone(), value.clone());
        }
    }
    patch.context = Some(Value::Object(context));
    state.cache.forget_account(&id);
    let updated = state
        .store
        .update_account(&caller.environment_id, &id, patch)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("integrated account `{id}` not found")))?;
    Ok(Json(account_view(&updated)))
}

#[utoipa::path(delete, path = "/integrated-account/{id}", tag = crate::openapi::TAG_ACCOUNTS, security(("api_token" = [])),
    summary = "Delete an account",
    description = "Removes the account and its credential.",
    params(("id" = String, Path, description = "the account's id")),
    responses(
        (status = 200, description = "`{ id }`", example = json!({"id": "0b7e8c4e-5a55-4b8e-9a57-3f0f6f1f2a10"})),
        (status = 400, description = "an id that is not UTF-8"),
        (status = 404, description = "not found in this environment"),
    ))]
pub async fn remove(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<Value>> {
    let account = load(&state, &caller, &id).await?;
    // While the credential still exists: the provider webhook pointing here goes first.
    crate::watch::hooks::unregister(&state, &account).await;
    if state
        .store
        .delete_account(&caller.environment_id, &id)
        .await?
    {
        state.cache.forget_account(&id);
        refresh::record_event(&state, &account, linking::DELETED, json!({})).await;
        Ok(Json(json!({ "id": id })))
    } else {
        Err(ApiError::NotFound(format!(
            "integrated account `{id}` not found"
        )))
    }
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefreshCredentials {
    pub id: String,
}

/// Refresh an OAuth account's token now (through the same single-flight as every other
/// refresh). Personal access tokens have nothing to refresh.
#[utoipa::path(post, path = "/integrated-account/refresh-credentials", tag = crate::openapi::TAG_ACCOUNTS, security(("api_token" = [])),
    summary = "Refresh an OAuth account's token now",
    request_body = RefreshCredentials,
    responses(
        (status = 200, description = "`{ success: true }`", example = json!({"success": true})),
        (status = 400, description = "a body that is not JSON"),
        (status = 401, description = "Buddy refused the refresh token (the account is now `needs_reauth`), or the API token is missing or invalid"),
        (status = 404, description = "not found in this environment"),
        (status = 422, description = "not an OAuth account, or an invalid body"),
        (status = 502, description = "Buddy failed or could not be reached"),
        (status = 504, description = "Buddy did not answer within the deadline"),
    ))]
pub async fn refresh(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiJson(body): ApiJson<RefreshCredentials>,
) -> ApiResult<Json<Value>> {
    let account = load(&state, &caller, &body.id).await?;
    if account.authentication_method != AuthMethod::Oauth2 {
        return Err(ApiError::Validation(
            "this account uses a personal access token, which has nothing to refresh".into(),
        ));
    }
    let credential = state
        .store
        .credential(&caller.environment_id, &account.id)
        .await?
        .ok_or_else(|| {
            ApiError::NotFound(format!("integrated account `{}` not found", account.id))
        })?;
    let Credential::OAuth2 { access_token, .. } = credential else {
        return Err(ApiError::Validation(
            "the account holds no OAuth token".into(),
        ));
    };
    refresh::refresh_account(&state, &account, refresh::Trigger::Replace(&access_token)).await?;
    crate::watch::hooks::register_soon(&state, &account);
    Ok(Json(json!({ "success": true })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_keys_are_recognised() {
        for key in [
            "api_key",
            "access_token",
            "refresh_token",
            "client_secret",
            "password",
            "Token",
        ] {
            assert!(is_secret_key(key), "{key}");
        }
        for key in ["base_url", "workspace", "region", "scopes"] {
            assert!(!is_secret_key(key), "{key}");
        }
    }

    #[test]
    fn stored_context_drops_secrets() {
        let given: Map<String, Value> = serde_json::from_value(json!({
            "api_key": "s3cret", "base_url": "x", "foo_token": "t", "workspace": "acme"
        }))
        .unwrap();
        let info = cigate_buddy::client::TokenInfo {
            scopes: Some(vec!["WORKSPACE".into()]),
            expires_at: None,
            workspaces: vec!["acme".into()],
        };
        let ctx = linking::stored_context(&given, "https://api.buddy.works", &info);
        let text = ctx.to_string();
        assert!(!text.contains("s3cret"));
        assert!(!text.contains("foo_token"));
        assert_eq!(ctx["workspace"], "acme");
        assert_eq!(ctx["scopes"], json!(["WORKSPACE"]));
    }
}
