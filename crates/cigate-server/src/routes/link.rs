//! Linking: `POST /link-token`, the environment's OAuth app
//! (`/environment-integration/buddy`), and the hosted Link page an end user opens
//! (`/connect`, also `/connect-account` for Truto's Link SDK), its form posts, the
//! OAuth callback, and the browser scripts (`/link.js`, the page's own assets).
//!
//! The pages are server-rendered (askama templates in `templates/`), carry a strict
//! Content-Security-Policy (`default-src 'none'`, scripts and styles only from this
//! server, `form-action 'self'`, `frame-ancestors` from `CIGATE_LINK_FRAME_ANCESTORS`)
//! and never load anything from elsewhere. Because `form-action 'self'` also covers the
//! redirects that follow a form post, leaving the page (to Buddy's authorize URL or to the
//! product's `redirect_uri`) goes through a small page with a link that our script
//! follows, not through a redirect. Form posts are CSRF-safe: each carries an HMAC of the
//! link token's id under a store-wide key, and a cross-site `Origin` is refused.

use std::time::Duration;

use askama::Template;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use axum::routing::{get, post, put};
use axum::{Extension, Json, Router};
use chrono::Utc;
use cigate_core::Secret;
use cigate_store::{Credential, LinkToken, NewLinkToken, NewOAuthState};
use hmac::{Hmac, Mac};
use oauth2::PkceCodeChallenge;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use sha2::Sha256;
use url::Url;

use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::extract::ApiJson;
use crate::linking::{self, Target};
use crate::oauth::{self, TokenError};
use crate::state::AppState;

/// Default lifetime of a link token.
const LINK_TTL: Duration = Duration::from_secs(7 * 24 * 3600);
const MAX_LINK_TTL: Duration = Duration::from_secs(30 * 24 * 3600);
/// Lifetime of an OAuth `state` (one trip to Buddy and back).
const STATE_TTL: Duration = Duration::from_secs(600);

const CONNECT_JS: &str = include_str!("../../assets/link/connect.js");
const CONNECT_CSS: &str = include_str!("../../assets/link/connect.css");
const LINK_JS: &str = include_str!("../../assets/link/link.js");

/// Routes that need an API token.
pub fn api_routes() -> Router<AppState> {
    Router::new()
        .route("/link-token", post(create_link_token))
        .route(
            "/environment-integration/buddy",
            put(put_integration).get(get_integration),
        )
}

/// The public pages an end user's browser reaches.
pub fn page_routes() -> Router<AppState> {
    Router::new()
        .route("/connect", get(connect_page))
        .route("/connect-account", get(connect_page))
        .route("/connect/token", post(connect_token))
        .route("/connect/oauth", post(connect_oauth))
        .route("/oauth/callback", get(oauth_callback))
        .route(
            "/link.js",
            get(|| async { asset(LINK_JS, "text/javascript") }),
        )
        .route(
            "/connect/assets/connect.js",
            get(|| async { asset(CONNECT_JS, "text/javascript") }),
        )
        .route(
            "/connect/assets/connect.css",
            get(|| async { asset(CONNECT_CSS, "text/css") }),
        )
}

fn asset(body: &'static str, content_type: &'static str) -> Response {
    let mut response = crate::html::asset(body.as_bytes(), content_type);
    // `/link.js` is loaded by products' pages on other origins.
    response.headers_mut().insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    response
}

/// The origin browsers and callers reach us at: `CIGATE_PUBLIC_URL`, else this
/// request's `Host` over plain HTTP (tests, local use).
pub(crate) fn public_origin(state: &AppState, headers: &HeaderMap) -> String {
    if let Some(url) = state.config.public_url.as_deref().filter(|u| !u.is_empty()) {
        return url.trim_end_matches('/').to_owned();
    }
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("localhost");
    format!("http://{host}")
}

fn callback_url(state: &AppState, headers: &HeaderMap) -> String {
    format!("{}/oauth/callback", public_origin(state, headers))
}

// ----- API: link tokens and the OAuth app ----------------------------------------------

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateLinkToken {
    /// Your own customer's id, set on the account the link creates.
    pub tenant_id: Option<String>,
    /// Where the Link page sends the user when done, with `integrated_account_id` and
    /// `integration` added to the query.
    pub redirect_uri: Option<String>,
    /// Reconnect this account in place (same id, new credential).
    pub integrated_account_id: Option<String>,
    /// Non-secret context copied onto the account. `base_url` (a self-hosted Buddy's API,
    /// or a region's) or `region` (`us`, `eu`) makes that choice for the end user: the
    /// Link page then does not ask where the account is. Checked like any base URL.
    #[serde(default)]
    pub context: Map<String, Value>,
    /// Only `buddy`.
    pub integration: Option<String>,
    /// Lifetime in seconds (default 7 days, at most 30).
    #[schema(minimum = 1, maximum = 2592000)]
    pub expires_in: Option<u64>,
}

#[utoipa::path(post, path = "/link-token", tag = crate::openapi::TAG_LINKING, security(("api_token" = [])),
    summary = "Create a link token for the Link page",
    description = "A single-use token for the hosted Link page your end user connects Buddy through (OAuth or a pasted token). Open `link_url` in a new tab, popup or iframe; with `integrated_account_id`, the page reconnects that account in place.",
    request_body(content = CreateLinkToken, example = json!({"tenant_id": "acme", "redirect_uri": "https://app.example.com/integrations/done"})),
    responses(
        (status = 201, description = "`{ link_token, link_url, expires_at }`; the token is shown once",
            example = json!({"link_token": "lt_4k9…", "link_url": "https://cigate.example.com/connect?link_token=lt_4k9…", "expires_at": "2026-12-07T09:00:00Z"})),
        (status = 400, description = "a body that is not JSON"),
        (status = 404, description = "`integrated_account_id` not found"),
        (status = 422, description = "invalid input"),
    ))]
pub async fn create_link_token(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<CreateLinkToken>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    if let Some(integration) = body.integration.as_deref() {
        if integration != "buddy" {
            return Err(ApiError::Validation(format!(
                "unknown integration `{integration}`; supported: buddy"
            )));
        }
    }
    if let Some(uri) = &body.redirect_uri {
        let parsed = Url::parse(uri)
            .map_err(|_| ApiError::Validation("`redirect_uri` must be an absolute URL".into()))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(ApiError::Validation(
                "`redirect_uri` must be an http or https URL".into(),
            ));
        }
    }
    let mut tenant_id = body.tenant_id;
    if let Some(id) = &body.integrated_account_id {
        let account = crate::gateway::load(&state, &caller, id).await?;
        tenant_id = tenant_id.or(account.tenant_id);
    }
    if let Some(key) = body.context.keys().find(|k| linking::is_secret_key(k)) {
        return Err(ApiError::Validation(format!(
            "`context.{key}` looks secret; link tokens carry no credentials"
        )));
    }
    // A Buddy the product names is checked now like any base URL, so the page can use
    // it without asking the end user.
    let mut context = body.context;
    if let Some(url) = linking::named_base_url(&context)? {
        let url = checked_base_url(&state, &url).await.map_err(|err| {
            ApiError::Validation(format!("`context.base_url` is not allowed: {err}"))
        })?;
        context.insert("base_url".into(), Value::String(url));
    }
    let ttl = body.expires_in.map(Duration::from_secs).unwrap_or(LINK_TTL);
    if ttl.is_zero() || ttl > MAX_LINK_TTL {
        return Err(ApiError::Validation(
            "`expires_in` must be between 1 second and 30 days".into(),
        ));
    }
    let (record, token) = state
        .store
        .create_link_token(NewLinkToken {
            environment_id: caller.environment_id.clone(),
            tenant_id,
            integrated_account_id: body.integrated_account_id,
            redirect_uri: body.redirect_uri,
            context: Value::Object(context),
            ttl,
        })
        .await
        .map_err(|err| match err {
            cigate_store::StoreError::InvalidInput(msg) => ApiError::Validation(msg),
            other => other.into(),
        })?;
    let mut link_url = Url::parse(&format!("{}/connect", public_origin(&state, &headers)))
        .map_err(|e| ApiError::Internal(format!("public URL: {e}")))?;
    link_url
        .query_pairs_mut()
        .append_pair("link_token", token.expose());
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "link_token": token.expose(),
            "link_url": link_url.as_str(),
            "expires_at": record.expires_at,
        })),
    ))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OAuthSettings {
    pub client_id: String,
    /// Required the first time; omit to keep the stored one.
    pub client_secret: Option<String>,
    /// Scopes to request; empty asks for cigate's default set.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// Defaults to `<account base URL>/oauth2/authorize`.
    pub authorize_url: Option<String>,
    /// Defaults to `<account base URL>/oauth2/token`.
    pub token_url: Option<String>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct IntegrationSettings {
    pub oauth: OAuthSettings,
}

fn integration_view(settings: &cigate_store::EnvironmentIntegration) -> Value {
    let mut oauth = settings.config["oauth"].clone();
    if let Some(map) = oauth.as_object_mut() {
        let url = map.remove("exchange_url").unwrap_or(Value::Null);
        map.insert("token_url".into(), url);
        map.insert("has_client_secret".into(), json!(settings.secret.is_some()));
    }
    json!({
        "integration": settings.integration,
        "environment_id": settings.environment_id,
        "oauth": oauth,
        "updated_at": settings.updated_at,
    })
}

#[utoipa::path(put, path = "/environment-integration/buddy", tag = crate::openapi::TAG_LINKING, security(("api_token" = [])),
    summary = "Set the environment's Buddy OAuth app",
    request_body = IntegrationSettings,
    responses(
        (status = 200, description = "the settings, without the client secret"),
        (status = 400, description = "a body that is not JSON"),
        (status = 422, description = "invalid settings"),
    ))]
pub async fn put_integration(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiJson(body): ApiJson<IntegrationSettings>,
) -> ApiResult<Json<Value>> {
    let oauth = body.oauth;
    if oauth.client_id.trim().is_empty() {
        return Err(ApiError::Validation("`oauth.client_id` is required".into()));
    }
    for (name, value) in [
        ("authorize_url", &oauth.authorize_url),
        ("token_url", &oauth.token_url),
    ] {
        if let Some(url) = value {
            let parsed = Url::parse(url).map_err(|_| {
                ApiError::Validation(format!("`oauth.{name}` must be an absolute URL"))
            })?;
            cigate_buddy::base_url::check_url(&parsed, state.upstream_policy())
                .map_err(|e| ApiError::Validation(format!("`oauth.{name}` is not allowed: {e}")))?;
        }
    }
    let secret = match oauth.client_secret.filter(|s| !s.is_empty()) {
        Some(secret) => Some(Secret::new(secret)),
        None => state
            .store
            .environment_integration(&caller.environment_id, "buddy")
            .await?
            .and_then(|s| s.secret),
    };
    let Some(secret) = secret else {
        return Err(ApiError::Validation(
            "`oauth.client_secret` is required".into(),
        ));
    };
    let config = json!({ "oauth": {
        "client_id": oauth.client_id.trim(),
        "scopes": oauth.scopes,
        "authorize_url": oauth.authorize_url,
        // Stored under a name the store does not take for a secret.
        "exchange_url": oauth.token_url,
    }});
    let saved = state
        .store
        .put_environment_integration(&caller.environment_id, "buddy", config, Some(secret))
        .await?;
    Ok(Json(integration_view(&saved)))
}

#[utoipa::path(get, path = "/environment-integration/buddy", tag = crate::openapi::TAG_LINKING, security(("api_token" = [])),
    summary = "Get the environment's Buddy OAuth app",
    responses(
        (status = 200, description = "the settings, without the client secret"),
        (status = 404, description = "not configured"),
    ))]
pub async fn get_integration(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> ApiResult<Json<Value>> {
    let settings = state
        .store
        .environment_integration(&caller.environment_id, "buddy")
        .await?
        .ok_or_else(|| ApiError::NotFound("buddy has no settings in this environment".into()))?;
    Ok(Json(integration_view(&settings)))
}

// ----- pages --------------------------------------------------------------------------

#[derive(Template)]
#[template(path = "connect.html")]
struct ConnectPage {
    title: String,
    error: String,
    reconnect: bool,
    link_token: String,
    csrf: String,
    ui: Vec<(String, String)>,
    region: String,
    base_url: String,
    /// Where the account is, in words, when the link token names its Buddy (no picker
    /// then); empty otherwise.
    named: String,
    show_oauth: bool,
    show_token: bool,
}

#[derive(Template)]
#[template(path = "result.html")]
struct ResultPage {
    title: String,
    result: &'static str,
    message: String,
    error_type: &'static str,
    account_id: String,
    redirect: String,
    target_origin: String,
}

#[derive(Template)]
#[template(path = "authorize.html")]
struct AuthorizePage {
    title: String,
    url: String,
}

/// Renders a page with the Link page's security headers (framing as
/// `CIGATE_LINK_FRAME_ANCESTORS` allows).
fn page(state: &AppState, status: StatusCode, template: &impl Template) -> Response {
    crate::html::page(status, template, &state.config.link_frame_ancestors)
}

/// A page that ends the flow with an error (also delivered to a popup's opener).
fn error_page(
    state: &AppState,
    status: StatusCode,
    error_type: &'static str,
    message: impl Into<String>,
    link: Option<&LinkToken>,
) -> Response {
    page(
        state,
        status,
        &ResultPage {
            title: "Could not connect Buddy".into(),
            result: "error",
            message: message.into(),
            error_type,
            account_id: String::new(),
            redirect: String::new(),
            target_origin: link.map(target_origin).unwrap_or_else(|| "*".into()),
        },
    )
}

/// Where popup/iframe results may be posted: the origin of the product's
/// `redirect_uri` when it gave one (the payload holds no secret, so `*` otherwise).
fn target_origin(link: &LinkToken) -> String {
    link.redirect_uri
        .as_deref()
        .and_then(|u| Url::parse(u).ok())
        .map(|u| u.origin().ascii_serialization())
        .filter(|o| o != "null")
        .unwrap_or_else(|| "*".into())
}

fn success_page(state: &AppState, link: &LinkToken, account_id: &str) -> Response {
    let redirect = link
        .redirect_uri
        .as_deref()
        .and_then(|u| Url::parse(u).ok())
        .map(|mut url| {
            url.query_pairs_mut()
                .append_pair("integrated_account_id", account_id)
                .append_pair("integration", "buddy");
            url.to_string()
        })
        .unwrap_or_default();
    page(
        state,
        StatusCode::OK,
        &ResultPage {
            title: "Buddy is connected".into(),
            result: "success",
            message: "Your Buddy account is connected. You can close this window.".into(),
            error_type: "",
            account_id: account_id.to_owned(),
            redirect,
            target_origin: target_origin(link),
        },
    )
}

/// The link token if it can still be used; otherwise the page that says why.
async fn usable_link(state: &AppState, token: Option<&str>) -> Result<LinkToken, Box<Response>> {
    let Some(token) = token.map(str::trim).filter(|t| !t.is_empty()) else {
        return Err(Box::new(error_page(
            state,
            StatusCode::BAD_REQUEST,
            "invalid_link_token",
            "This page needs a link from the app you are connecting to. Open the link it gave you again.",
            None,
        )));
    };
    let record = match state.store.link_token(token).await {
        Ok(record) => record,
        Err(err) => {
            tracing::error!(error = %err, "link token lookup failed");
            return Err(Box::new(error_page(
                state,
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "Something went wrong on our side. Please try again in a moment.",
                None,
            )));
        }
    };
    check_link(state, record)
}

fn check_link(state: &AppState, record: Option<LinkToken>) -> Result<LinkToken, Box<Response>> {
    let Some(record) = record else {
        return Err(Box::new(error_page(
            state,
            StatusCode::NOT_FOUND,
            "invalid_link_token",
            "This link is not valid. Ask the app that sent you here for a new one.",
            None,
        )));
    };
    if record.used_at.is_some() {
        return Err(Box::new(error_page(
            state,
            StatusCode::GONE,
            "link_token_used",
            "This link has already been used to connect an account. Ask the app that sent you here for a new link if you need to connect again.",
            Some(&record),
        )));
    }
    if record.is_expired(Utc::now()) {
        return Err(Box::new(error_page(
            state,
            StatusCode::GONE,
            "link_token_expired",
            "This link has expired. Ask the app that sent you here for a new one.",
            Some(&record),
        )));
    }
    Ok(record)
}

fn csrf_for(state: &AppState, link: &LinkToken) -> String {
    hex::encode(csrf_mac(state, link).finalize().into_bytes())
}

fn csrf_mac(state: &AppState, link: &LinkToken) -> Hmac<Sha256> {
    // HMAC pads a short key with zeros to the block size; doing it here gives the
    // infallible fixed-size constructor.
    let mut key = [0u8; 64];
    let n = state.link_key.len().min(key.len());
    key[..n].copy_from_slice(&state.link_key[..n]);
    let mut mac = <Hmac<Sha256> as hmac::digest::KeyInit>::new(&key.into());
    mac.update(b"link-form:");
    mac.update(link.id.as_bytes());
    mac
}

fn csrf_ok(state: &AppState, link: &LinkToken, given: &str) -> bool {
    hex::decode(given)
        .map(|bytes| csrf_mac(state, link).verify_slice(&bytes).is_ok())
        .unwrap_or(false)
}

/// The SDK's query parameters, kept across the form post.
#[derive(Debug, Default, PartialEq, Deserialize, Serialize)]
pub(crate) struct UiParams {
    pub(crate) integration: Option<String>,
    pub(crate) auth_format: Option<String>,
    pub(crate) no_back: Option<String>,
    pub(crate) iframe: Option<String>,
}

impl UiParams {
    pub(crate) fn pairs(&self) -> Vec<(String, String)> {
        [
            ("integration", &self.integration),
            ("auth_format", &self.auth_format),
            ("no_back", &self.no_back),
            ("iframe", &self.iframe),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.as_ref().map(|v| (k.to_owned(), v.clone())))
        .collect()
    }
}

#[derive(Debug, Default, PartialEq, Deserialize, Serialize)]
pub(crate) struct PageQuery {
    pub(crate) link_token: Option<String>,
    #[serde(flatten)]
    pub(crate) ui: UiParams,
}

async fn form_page(
    state: &AppState,
    link: &LinkToken,
    ui: &UiParams,
    (region, base_url): (&str, &str),
    error: String,
    status: StatusCode,
    token: &str,
) -> Response {
    let has_oauth = matches!(
        oauth::app_for(state, &link.environment_id).await,
        Ok(Some(_))
    );
    let (show_oauth, show_token) = match ui.auth_format.as_deref() {
        Some("api_key") => (false, true),
        Some("oauth2") if has_oauth => (true, false),
        _ => (has_oauth, true),
    };
    let named = named_by(link)
        .ok()
        .flatten()
        .map(|url| describe_buddy(&url))
        .unwrap_or_default();
    page(
        state,
        status,
        &ConnectPage {
            title: if link.integrated_account_id.is_some() {
                "Reconnect Buddy".into()
            } else {
                "Connect Buddy".into()
            },
            error,
            reconnect: link.integrated_account_id.is_some(),
            link_token: token.to_owned(),
            csrf: csrf_for(state, link),
            ui: ui.pairs(),
            region: region.to_owned(),
            base_url: base_url.to_owned(),
            named,
            show_oauth,
            show_token,
        },
    )
}

async fn connect_page(State(state): State<AppState>, Query(query): Query<PageQuery>) -> Response {
    if let Some(integration) = query.ui.integration.as_deref() {
        if !integration.is_empty() && integration != "buddy" {
            return error_page(
                &state,
                StatusCode::BAD_REQUEST,
                "unsupported_integration",
                format!("This page connects Buddy accounts only, not `{integration}`."),
                None,
            );
        }
    }
    let link = match usable_link(&state, query.link_token.as_deref()).await {
        Ok(link) => link,
        Err(page) => return *page,
    };
    let token = query.link_token.unwrap_or_default();
    form_page(
        &state,
        &link,
        &query.ui,
        ("us", ""),
        String::new(),
        StatusCode::OK,
        token.trim(),
    )
    .await
}

#[derive(Debug, Default, PartialEq, Deserialize, Serialize)]
pub(crate) struct ConnectForm {
    pub(crate) link_token: Option<String>,
    pub(crate) csrf: Option<String>,
    pub(crate) region: Option<String>,
    pub(crate) base_url: Option<String>,
    pub(crate) api_key: Option<String>,
    #[serde(flatten)]
    pub(crate) ui: UiParams,
}

/// A checked form post: the link, and what the user chose.
struct Posted {
    link: LinkToken,
    form: ConnectForm,
}

async fn check_post(
    state: &AppState,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<Posted, Box<Response>> {
    let Ok(form) = serde_urlencoded::from_bytes::<ConnectForm>(body) else {
        return Err(Box::new(error_page(
            state,
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "The form could not be read. Open the link you were given again.",
            None,
        )));
    };
    if let Some(origin) = headers.get(header::ORIGIN).and_then(|o| o.to_str().ok()) {
        if origin != "null" && origin != public_origin(state, headers) {
            return Err(Box::new(error_page(
                state,
                StatusCode::FORBIDDEN,
                "invalid_request",
                "This form was sent from another site, so it was ignored.",
                None,
            )));
        }
    }
    let link = usable_link(state, form.link_token.as_deref()).await?;
    if !csrf_ok(state, &link, form.csrf.as_deref().unwrap_or("")) {
        return Err(Box::new(error_page(
            state,
            StatusCode::FORBIDDEN,
            "invalid_request",
            "This form has expired or was not sent from this page. Open the link you were given again.",
            Some(&link),
        )));
    }
    Ok(Posted { link, form })
}

/// The Buddy the link token's context names, if any.
fn named_by(link: &LinkToken) -> ApiResult<Option<String>> {
    match link.context.as_object() {
        Some(context) => linking::named_base_url(context),
        None => Ok(None),
    }
}

/// A Buddy base URL as the page names it to the end user.
fn describe_buddy(url: &str) -> String {
    use cigate_buddy::base_url::{resolve_base_url, Region};
    match resolve_base_url(url) {
        Ok((Region::Us, _)) => "Buddy cloud, US region".into(),
        Ok((Region::Eu, _)) => "Buddy cloud, EU region".into(),
        _ => format!("Self-hosted Buddy at {url}"),
    }
}

/// `raw` checked against the upstream policy, without a trailing slash.
async fn checked_base_url(
    state: &AppState,
    raw: &str,
) -> Result<String, cigate_buddy::base_url::BaseUrlError> {
    cigate_buddy::base_url::validate_base_url(raw, state.upstream_policy())
        .await
        .map(|url| url.to_string().trim_end_matches('/').to_owned())
}

/// The Buddy the link token names, else the one the user picked; checked against the
/// upstream policy. (The form's choice is ignored when the link names one.)
async fn chosen_base_url(
    state: &AppState,
    link: &LinkToken,
    form: &ConnectForm,
) -> Result<String, String> {
    let named = named_by(link)
        .map_err(|err| format!("This link names a Buddy that cannot be used: {err}."))?;
    let raw = match named {
        Some(url) => url,
        None => match form.region.as_deref().unwrap_or("us") {
            "us" => cigate_buddy::base_url::US_BASE_URL.to_owned(),
            "eu" => cigate_buddy::base_url::EU_BASE_URL.to_owned(),
            "self_hosted" => match form.base_url.as_deref().map(str::trim) {
                Some(url) if !url.is_empty() => url.to_owned(),
                _ => return Err("Enter the address of your self-hosted Buddy API.".into()),
            },
            _ => return Err("Choose where your Buddy account is.".into()),
        },
    };
    checked_base_url(state, &raw)
        .await
        .map_err(|err| format!("This Buddy address cannot be used: {err}."))
}

/// Plain words for what went wrong while verifying or storing.
fn friendly(err: &ApiError, base_url: &str) -> (&'static str, String) {
    match err {
        ApiError::CredentialRejected { message, .. } => (
            "invalid_credentials",
            format!("Buddy did not accept this token ({message}). Check that you copied all of it, that it has not expired, and that it has the scopes listed below."),
        ),
        ApiError::UpstreamTimeout | ApiError::UpstreamUnreachable(_) => (
            "buddy_unreachable",
            format!("We could not reach Buddy at {base_url}. Check the address, or try again in a moment."),
        ),
        ApiError::Remote { message, .. } => (
            "buddy_error",
            format!("Buddy answered with an error ({message}). Try again in a moment."),
        ),
        ApiError::Validation(message) => ("invalid_request", message.clone()),
        ApiError::NotFound(_) => (
            "invalid_link_token",
            "The account this link was meant to reconnect no longer exists.".into(),
        ),
        _ => (
            "internal",
            "Something went wrong on our side. Please try again in a moment.".into(),
        ),
    }
}

/// Spends the link token and stores the verified credential; the page to show.
async fn finish(state: &AppState, link: &LinkToken, verified: linking::Verified) -> Response {
    match state.store.use_link_token(&link.id).await {
        Ok(true) => {}
        Ok(false) => {
            return error_page(
                state,
                StatusCode::GONE,
                "link_token_used",
                "This link has already been used to connect an account. Ask the app that sent you here for a new link if you need to connect again.",
                Some(link),
            )
        }
        Err(err) => {
            let err = ApiError::from(err);
            let (kind, message) = friendly(&err, "");
            return error_page(state, StatusCode::INTERNAL_SERVER_ERROR, kind, message, Some(link));
        }
    }
    let context = link.context.as_object().cloned().unwrap_or_default();
    let saved = linking::save(
        state,
        Target {
            environment_id: &link.environment_id,
            tenant_id: link.tenant_id.clone(),
            account_id: link.integrated_account_id.as_deref(),
            context: &context,
        },
        verified,
    )
    .await;
    match saved {
        Ok(account) => success_page(state, link, &account.id),
        Err(err) => {
            let (kind, message) = friendly(&err, "");
            error_page(
                state,
                StatusCode::INTERNAL_SERVER_ERROR,
                kind,
                message,
                Some(link),
            )
        }
    }
}

async fn connect_token(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let Posted { link, form } = match check_post(&state, &headers, &body).await {
        Ok(posted) => posted,
        Err(page) => return *page,
    };
    let token = form.link_token.clone().unwrap_or_default();
    let region = form.region.clone().unwrap_or_else(|| "us".into());
    let typed_url = form.base_url.clone().unwrap_or_default();
    let again = |error: String, status: StatusCode| {
        let (state, link, form, token, region, typed_url) =
            (&state, &link, &form, &token, &region, &typed_url);
        async move {
            form_page(
                state,
                link,
                &form.ui,
                (region, typed_url),
                error,
                status,
                token.trim(),
            )
            .await
        }
    };
    let base_url = match chosen_base_url(&state, &link, &form).await {
        Ok(url) => url,
        Err(message) => return again(message, StatusCode::UNPROCESSABLE_ENTITY).await,
    };
    let Some(api_key) = form
        .api_key
        .as_deref()
        .map(str::trim)
        .filter(|k| !k.is_empty())
    else {
        return again(
            "Paste your personal access token to connect with a token.".into(),
            StatusCode::UNPROCESSABLE_ENTITY,
        )
        .await;
    };
    let credential = Credential::ApiKey {
        api_key: Secret::new(api_key),
    };
    match linking::verify(&state, &base_url, credential).await {
        Ok(verified) => finish(&state, &link, verified).await,
        Err(err) => {
            let (_, message) = friendly(&err, &base_url);
            again(message, StatusCode::UNPROCESSABLE_ENTITY).await
        }
    }
}

async fn connect_oauth(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let Posted { link, form } = match check_post(&state, &headers, &body).await {
        Ok(posted) => posted,
        Err(page) => return *page,
    };
    let token = form.link_token.clone().unwrap_or_default();
    let region = form.region.clone().unwrap_or_else(|| "us".into());
    let typed_url = form.base_url.clone().unwrap_or_default();
    let base_url = match chosen_base_url(&state, &link, &form).await {
        Ok(url) => url,
        Err(message) => {
            return form_page(
                &state,
                &link,
                &form.ui,
                (&region, &typed_url),
                message,
                StatusCode::UNPROCESSABLE_ENTITY,
                token.trim(),
            )
            .await
        }
    };
    let app = match oauth::app_for(&state, &link.environment_id).await {
        Ok(Some(app)) => app,
        _ => {
            return form_page(
                &state,
                &link,
                &form.ui,
                (&region, &typed_url),
                "Signing in with Buddy is not set up for this app. Use a personal access token instead.".into(),
                StatusCode::UNPROCESSABLE_ENTITY,
                token.trim(),
            )
            .await
        }
    };
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let created = state
        .store
        .create_oauth_state(NewOAuthState {
            environment_id: link.environment_id.clone(),
            link_token_id: Some(link.id.clone()),
            base_url: Some(base_url.clone()),
            code_verifier: Secret::new(verifier.secret().clone()),
            ttl: STATE_TTL,
        })
        .await;
    let oauth_state = match created {
        Ok(s) => s,
        Err(err) => {
            tracing::error!(error = %err, "could not store the OAuth state");
            return error_page(
                &state,
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "Something went wrong on our side. Please try again in a moment.",
                Some(&link),
            );
        }
    };
    match app.authorize(
        &base_url,
        &callback_url(&state, &headers),
        &oauth_state,
        challenge,
    ) {
        Ok(url) => page(
            &state,
            StatusCode::OK,
            &AuthorizePage {
                title: "Continue to Buddy".into(),
                url: url.to_string(),
            },
        ),
        Err(err) => error_page(
            &state,
            StatusCode::UNPROCESSABLE_ENTITY,
            "oauth_not_configured",
            format!("Signing in with Buddy is misconfigured: {err}."),
            Some(&link),
        ),
    }
}

#[derive(Debug, Default, PartialEq, Deserialize, Serialize)]
pub(crate) struct CallbackQuery {
    pub(crate) code: Option<String>,
    pub(crate) state: Option<String>,
    pub(crate) error: Option<String>,
    pub(crate) error_description: Option<String>,
}

async fn oauth_callback(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(query): Query<CallbackQuery>,
) -> Response {
    let Some(state_value) = query.state.as_deref().filter(|s| !s.is_empty()) else {
        return error_page(
            &state,
            StatusCode::BAD_REQUEST,
            "invalid_state",
            "This sign-in is missing its security check. Start again from the link you were given.",
            None,
        );
    };
    let taken = match state.store.take_oauth_state(state_value).await {
        Ok(Some(taken)) => taken,
        Ok(None) => {
            return error_page(
                &state,
                StatusCode::BAD_REQUEST,
                "invalid_state",
                "This sign-in was already completed, or is not valid. Start again from the link you were given.",
                None,
            )
        }
        Err(err) => {
            tracing::error!(error = %err, "could not read the OAuth state");
            return error_page(
                &state,
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "Something went wrong on our side. Please try again in a moment.",
                None,
            );
        }
    };
    let link = match taken.link_token_id.as_deref() {
        Some(id) => match state.store.link_token_by_id(id).await {
            Ok(record) => match check_link(&state, record) {
                Ok(link) => link,
                Err(page) => return *page,
            },
            Err(err) => {
                tracing::error!(error = %err, "link token lookup failed");
                return error_page(
                    &state,
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "Something went wrong on our side. Please try again in a moment.",
                    None,
                );
            }
        },
        None => match check_link(&state, None) {
            Ok(link) => link,
            Err(page) => return *page,
        },
    };
    if link.environment_id != taken.environment_id {
        return error_page(
            &state,
            StatusCode::BAD_REQUEST,
            "invalid_state",
            "This sign-in is not valid. Start again from the link you were given.",
            Some(&link),
        );
    }
    if taken.is_expired(Utc::now()) {
        return error_page(
            &state,
            StatusCode::BAD_REQUEST,
            "invalid_state",
            "The sign-in took too long and expired. Start again from the link you were given.",
            Some(&link),
        );
    }
    if let Some(error) = query.error.as_deref() {
        let (kind, message) = if error == "access_denied" {
            (
                "oauth_denied",
                "You declined access in Buddy, so no account was connected. Open the link again if you want to try once more.".to_owned(),
            )
        } else {
            (
                "oauth_error",
                format!(
                    "Buddy did not complete the sign-in ({}).",
                    query.error_description.as_deref().unwrap_or(error)
                ),
            )
        };
        return error_page(&state, StatusCode::BAD_REQUEST, kind, message, Some(&link));
    }
    let Some(code) = query.code.as_deref().filter(|c| !c.is_empty()) else {
        return error_page(
            &state,
            StatusCode::BAD_REQUEST,
            "oauth_error",
            "Buddy sent you back without an authorization. Start again from the link you were given.",
            Some(&link),
        );
    };
    let base_url = taken
        .base_url
        .clone()
        .unwrap_or_else(|| cigate_buddy::base_url::US_BASE_URL.to_owned());
    let app = match oauth::app_for(&state, &link.environment_id).await {
        Ok(Some(app)) => app,
        _ => {
            return error_page(
                &state,
                StatusCode::UNPROCESSABLE_ENTITY,
                "oauth_not_configured",
                "Signing in with Buddy is not set up for this app.",
                Some(&link),
            )
        }
    };
    let exchanged = app
        .exchange_code(
            &state.oauth_http,
            state.upstream_policy(),
            &base_url,
            &callback_url(&state, &headers),
            code,
            &taken.code_verifier,
        )
        .await;
    let tokens = match exchanged {
        Ok(tokens) => tokens,
        Err(TokenError::Refused { description, .. }) => {
            return error_page(
                &state,
                StatusCode::BAD_REQUEST,
                "oauth_error",
                format!("Buddy did not accept the sign-in ({description}). Start again from the link you were given."),
                Some(&link),
            )
        }
        Err(TokenError::Unavailable(_)) => {
            return error_page(
                &state,
                StatusCode::BAD_GATEWAY,
                "buddy_unreachable",
                format!("We could not reach Buddy at {base_url}. Try again in a moment."),
                Some(&link),
            )
        }
        Err(err @ TokenError::Config(_)) => {
            return error_page(
                &state,
                StatusCode::UNPROCESSABLE_ENTITY,
                "oauth_not_configured",
                format!("Signing in with Buddy is misconfigured: {err}."),
                Some(&link),
            )
        }
    };
    let credential = Credential::OAuth2 {
        access_token: tokens.access_token,
        refresh_token: tokens.refresh_token,
        expires_at: tokens.expires_at,
    };
    match linking::verify(&state, &base_url, credential).await {
        Ok(verified) => finish(&state, &link, verified).await,
        Err(err) => {
            let (kind, message) = friendly(&err, &base_url);
            error_page(
                &state,
                StatusCode::UNPROCESSABLE_ENTITY,
                kind,
                message,
                Some(&link),
            )
        }
    }
}
