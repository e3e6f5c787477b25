//! Integrated accounts: one customer's connected Buddy account.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use cigate_buddy::client::TokenInfo;
use cigate_core::Secret;
use cigate_store::{
    Account, AccountFilter, AccountPatch, AccountStatus, AuthMethod, Credential, NewAccount,
};

use crate::auth::Caller;
use crate::envelope::ListEnvelope;
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, QueryPairs};
use crate::state::AppState;
use crate::upstream;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/integrated-account", get(list).post(create))
        .route(
            "/integrated-account/{id}",
            get(fetch).patch(update).delete(remove),
        )
        .route("/integrated-account/refresh-credentials", post(refresh))
}

/// Keys of `context` that are never stored in clear nor returned.
fn is_secret_key(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    key.contains("token") || key.contains("secret") || key == "password" || key == "api_key"
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
    /// `api_key` (a personal access token). OAuth connections are made through the Link page.
    #[serde(default = "default_auth_method")]
    pub authentication_method: String,
    /// `api_key` (secret), `base_url` or `region` (`us`, `eu`), optional default `workspace`.
    #[serde(default)]
    pub context: Map<String, Value>,
}

fn default_auth_method() -> String {
    "api_key".into()
}

/// Non-secret context kept on the account, with what verification learned.
fn stored_context(given: &Map<String, Value>, base_url: &str, info: &TokenInfo) -> Value {
    let mut context: Map<String, Value> = given
        .iter()
        .filter(|(key, _)| !is_secret_key(key))
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

fn string_field<'a>(context: &'a Map<String, Value>, key: &str) -> ApiResult<Option<&'a str>> {
    match context.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if !s.trim().is_empty() => Ok(Some(s.trim())),
        Some(_) => Err(ApiError::Validation(format!(
            "`context.{key}` must be a non-empty string"
        ))),
    }
}

/// `base_url`, else `region`, else Buddy's US cloud.
fn requested_base_url(context: &Map<String, Value>) -> ApiResult<String> {
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

#[utoipa::path(post, path = "/integrated-account", tag = "integrated accounts", security(("api_token" = [])),
    request_body = CreateAccount,
    responses((status = 201, description = "the account (bare object)"), (status = 422, description = "credential refused by Buddy, or invalid input; nothing stored")))]
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
    if body.authentication_method != "api_key" {
        return Err(ApiError::Validation(format!(
            "authentication_method `{}` cannot be created here; use `api_key`, or link OAuth accounts through the Link page",
            body.authentication_method
        )));
    }
    let api_key = string_field(&body.context, "api_key")?
        .ok_or_else(|| ApiError::Validation("`context.api_key` is required".into()))?;
    let api_key = Secret::new(api_key);
    let base_url = requested_base_url(&body.context)?;
    let (base_url, info) = upstream::verify(&state, &base_url, &api_key).await?;
    let account = state
        .store
        .create_account(NewAccount {
            environment_id: caller.environment_id,
            tenant_id: body.tenant_id,
            integration: "buddy".into(),
            status: AccountStatus::Active,
            context: stored_context(&body.context, &base_url, &info),
            last_error: None,
            credential: Credential::ApiKey { api_key },
        })
        .await?;
    Ok((StatusCode::CREATED, Json(account_view(&account))))
}

#[utoipa::path(get, path = "/integrated-account", tag = "integrated accounts", security(("api_token" = [])),
    params(("tenant_id" = Option<String>, Query), ("status" = Option<String>, Query), ("integration" = Option<String>, Query),
        ("limit" = Option<u32>, Query), ("next_cursor" = Option<String>, Query)),
    responses((status = 200, description = "list envelope of accounts")))]
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

pub async fn load(state: &AppState, caller: &Caller, id: &str) -> ApiResult<Account> {
    state
        .store
        .get_account(&caller.environment_id, id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("integrated account `{id}` not found")))
}

#[utoipa::path(get, path = "/integrated-account/{id}", tag = "integrated accounts", security(("api_token" = [])),
    params(("id" = String, Path)), responses((status = 200, description = "the account"), (status = 404, description = "not found in this environment")))]
pub async fn fetch(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
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

#[utoipa::path(patch, path = "/integrated-account/{id}", tag = "integrated accounts", security(("api_token" = [])),
    params(("id" = String, Path)), request_body = UpdateAccount,
    responses((status = 200, description = "the account"), (status = 404, description = "not found"), (status = 422, description = "new credential refused")))]
pub async fn update(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<UpdateAccount>,
) -> ApiResult<Json<Value>> {
    let account = load(&state, &caller, &id).await?;
    let mut context = account.context.as_object().cloned().unwrap_or_default();
    let mut patch = AccountPatch {
        tenant_id: body.tenant_id.map(Some),
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
        let (base_url, info) = upstream::verify(&state, &base_url, &api_key).await?;
        if let Value::Object(fresh) = stored_context(&body.context, &base_url, &info) {
            context.extend(fresh);
        }
        patch.credential = Some(Credential::ApiKey { api_key });
        patch.status = Some(AccountStatus::Active);
        patch.last_error = Some(None);
    } else {
        for (key, value) in body.context.iter().filter(|(k, _)| !is_secret_key(k)) {
            context.insert(key.clone(), value.clone());
        }
    }
    patch.context = Some(Value::Object(context));
    let updated = state
        .store
        .update_account(&caller.environment_id, &id, patch)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("integrated account `{id}` not found")))?;
    Ok(Json(account_view(&updated)))
}

#[utoipa::path(delete, path = "/integrated-account/{id}", tag = "integrated accounts", security(("api_token" = [])),
    params(("id" = String, Path)), responses((status = 200, description = "`{ id }`"), (status = 404, description = "not found")))]
pub async fn remove(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    if state
        .store
        .delete_account(&caller.environment_id, &id)
        .await?
    {
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

/// Refresh an OAuth account's token now. Personal access tokens have nothing to refresh.
#[utoipa::path(post, path = "/integrated-account/refresh-credentials", tag = "integrated accounts", security(("api_token" = [])),
    request_body = RefreshCredentials, responses((status = 200, description = "`{ success: true }`"), (status = 422, description = "not an OAuth account")))]
pub async fn refresh(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiJson(body): ApiJson<RefreshCredentials>,
) -> ApiResult<Json<Value>> {
    let account = load(&state, &caller, &body.id).await?;
    match account.authentication_method {
        AuthMethod::ApiKey => Err(ApiError::Validation(
            "this account uses a personal access token, which has nothing to refresh".into(),
        )),
        AuthMethod::Oauth2 => Err(ApiError::Validation(
            "OAuth token refresh is not available in this version".into(),
        )),
    }
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
        let info = TokenInfo {
            scopes: Some(vec!["WORKSPACE".into()]),
            expires_at: None,
            workspaces: vec!["acme".into()],
        };
        let ctx = stored_context(&given, "https://api.buddy.works", &info);
        let text = ctx.to_string();
        assert!(!text.contains("s3cret"));
        assert!(!text.contains("foo_token"));
        assert_eq!(ctx["workspace"], "acme");
        assert_eq!(ctx["scopes"], json!(["WORKSPACE"]));
    }
}
