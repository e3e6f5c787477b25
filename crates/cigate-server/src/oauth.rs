//! OAuth 2.0 with Buddy: the environment's app settings, the authorization URL (`state`
//! plus PKCE S256), and the token endpoint calls (code exchange, refresh), made with the
//! `oauth2` crate over our own HTTP client, which applies the same upstream policy as
//! every other call to Buddy (SSRF-safe resolver, no redirects, no proxy).

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use cigate_buddy::base_url::{check_url, PolicyResolver, UpstreamPolicy};
use cigate_core::Secret;
use oauth2::basic::{BasicClient, BasicErrorResponseType};
use oauth2::{
    AuthType, AuthUrl, AuthorizationCode, ClientId, ClientSecret, CsrfToken, PkceCodeChallenge,
    PkceCodeVerifier, RedirectUrl, RefreshToken, RequestTokenError, Scope, TokenResponse, TokenUrl,
};
use serde_json::{json, Value};
use url::Url;

use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

/// Scopes asked for when the app settings name none: what the connector reads and does.
pub const DEFAULT_SCOPES: &[&str] = &[
    "WORKSPACE",
    "REPOSITORY_READ",
    "EXECUTION_INFO",
    "EXECUTION_RUN",
    "WEBHOOK_INFO",
    "WEBHOOK_ADD",
    "WEBHOOK_MANAGE",
    "VARIABLE_INFO",
    "USER_INFO",
    "TOKEN_INFO",
];

/// An environment's OAuth app for Buddy.
#[derive(Clone, Debug)]
pub struct OAuthApp {
    pub client_id: String,
    pub client_secret: Secret,
    pub scopes: Vec<String>,
    /// Overrides of `<base_url>/oauth2/authorize` and `<base_url>/oauth2/token`.
    pub authorize_url: Option<String>,
    pub token_url: Option<String>,
}

/// Tokens from the token endpoint.
#[derive(Clone, Debug)]
pub struct Tokens {
    pub access_token: Secret,
    pub refresh_token: Option<Secret>,
    pub expires_at: Option<DateTime<Utc>>,
}

/// Why a token endpoint call failed.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// Buddy refused the grant (`invalid_grant`: revoked or spent refresh token, bad
    /// code or PKCE verifier) or the client. `code` is the RFC 6749 error code, or
    /// `refused` when Buddy sent none.
    #[error("Buddy refused the token request ({code}): {description}")]
    Refused {
        code: String,
        description: String,
        body: Value,
    },
    /// Network trouble or a 5xx: worth retrying, says nothing about the grant.
    #[error("Buddy's token endpoint is unavailable: {0}")]
    Unavailable(String),
    #[error("OAuth settings: {0}")]
    Config(String),
}

impl TokenError {
    /// The grant itself is dead: the account needs its user again.
    pub fn is_invalid_grant(&self) -> bool {
        matches!(self, TokenError::Refused { code, .. } if code == "invalid_grant" || code == "refused")
    }
}

impl From<TokenError> for ApiError {
    fn from(err: TokenError) -> Self {
        match err {
            TokenError::Refused {
                description, body, ..
            } => ApiError::CredentialRejected {
                upstream_status: 400,
                message: description,
                body,
            },
            TokenError::Unavailable(msg) => ApiError::UpstreamUnreachable(msg),
            TokenError::Config(msg) => ApiError::Validation(msg),
        }
    }
}

/// The HTTP client for token endpoints: same resolver policy as the Buddy pool.
pub fn build_http(policy: UpstreamPolicy) -> Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .use_rustls_tls()
        .user_agent(cigate_buddy::client::USER_AGENT)
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(30))
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .https_only(!policy.allow_private)
        .dns_resolver(Arc::new(PolicyResolver::new(policy)))
        .build()
        .map_err(|e| format!("cannot build the OAuth HTTP client: {e}"))
}

/// The environment's app (`PUT /environment-integration/buddy`), else the server-wide
/// one (`CIGATE_BUDDY_CLIENT_ID`/`_SECRET`), else `None`.
pub async fn app_for(state: &AppState, environment_id: &str) -> ApiResult<Option<OAuthApp>> {
    if let Some(settings) = state
        .store
        .environment_integration(environment_id, "buddy")
        .await?
    {
        let oauth = &settings.config["oauth"];
        if let (Some(client_id), Some(secret)) = (oauth["client_id"].as_str(), settings.secret) {
            return Ok(Some(OAuthApp {
                client_id: client_id.to_owned(),
                client_secret: secret,
                scopes: oauth["scopes"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(Value::as_str)
                            .map(str::to_owned)
                            .collect()
                    })
                    .unwrap_or_default(),
                authorize_url: oauth["authorize_url"].as_str().map(str::to_owned),
                token_url: oauth["exchange_url"].as_str().map(str::to_owned),
            }));
        }
    }
    let config = &state.config;
    Ok(
        match (&config.buddy_client_id, &config.buddy_client_secret) {
            (Some(id), Some(secret)) if !id.is_empty() => Some(OAuthApp {
                client_id: id.clone(),
                client_secret: secret.clone(),
                scopes: Vec::new(),
                authorize_url: None,
                token_url: None,
            }),
            _ => None,
        },
    )
}

impl OAuthApp {
    fn endpoint(&self, base_url: &str, over: Option<&String>, path: &str) -> String {
        match over {
            Some(url) => url.clone(),
            None => format!("{}{path}", base_url.trim_end_matches('/')),
        }
    }

    pub fn authorize_endpoint(&self, base_url: &str) -> String {
        self.endpoint(base_url, self.authorize_url.as_ref(), "/oauth2/authorize")
    }

    pub fn token_endpoint(&self, base_url: &str) -> String {
        self.endpoint(base_url, self.token_url.as_ref(), "/oauth2/token")
    }

    fn scopes(&self) -> Vec<String> {
        if self.scopes.is_empty() {
            DEFAULT_SCOPES.iter().map(|s| (*s).to_owned()).collect()
        } else {
            self.scopes.clone()
        }
    }

    /// Where to send the user: Buddy's authorize URL with our `state` and the PKCE
    /// challenge of `verifier`'s pair.
    pub fn authorize(
        &self,
        base_url: &str,
        redirect_uri: &str,
        state: &Secret,
        challenge: PkceCodeChallenge,
    ) -> Result<Url, TokenError> {
        let auth = AuthUrl::new(self.authorize_endpoint(base_url))
            .map_err(|e| TokenError::Config(format!("authorize_url: {e}")))?;
        let redirect = RedirectUrl::new(redirect_uri.to_owned())
            .map_err(|e| TokenError::Config(format!("callback URL: {e}")))?;
        let client = BasicClient::new(ClientId::new(self.client_id.clone()))
            .set_auth_uri(auth)
            .set_redirect_uri(redirect);
        let state = state.expose().to_owned();
        let (url, _) = client
            .authorize_url(move || CsrfToken::new(state))
            .add_scopes(self.scopes().into_iter().map(Scope::new))
            .add_extra_param("type", "web_server")
            .set_pkce_challenge(challenge)
            .url();
        Ok(url)
    }

    /// Exchanges an authorization code (form-encoded, client credentials in the body as
    /// Buddy's SDKs send them).
    pub async fn exchange_code(
        &self,
        http: &reqwest::Client,
        policy: UpstreamPolicy,
        base_url: &str,
        redirect_uri: &str,
        code: &str,
        verifier: &Secret,
    ) -> Result<Tokens, TokenError> {
        let token_url = self.token_url_checked(base_url, policy)?;
        let redirect = RedirectUrl::new(redirect_uri.to_owned())
            .map_err(|e| TokenError::Config(format!("callback URL: {e}")))?;
        let client = BasicClient::new(ClientId::new(self.client_id.clone()))
            .set_client_secret(ClientSecret::new(self.client_secret.expose().to_owned()))
            .set_auth_type(AuthType::RequestBody)
            .set_token_uri(token_url)
            .set_redirect_uri(redirect);
        let send = Client {
            http: http.clone(),
            policy,
        };
        let request = client
            .exchange_code(AuthorizationCode::new(code.to_owned()))
            .set_pkce_verifier(PkceCodeVerifier::new(verifier.expose().to_owned()));
        let response = send_boxed(request.request_async(&send)).await;
        tokens_from(response, None)
    }

    /// Trades a refresh token for new tokens. A response without a refresh token keeps
    /// the old one (no rotation).
    pub async fn refresh(
        &self,
        http: &reqwest::Client,
        policy: UpstreamPolicy,
        base_url: &str,
        refresh_token: &Secret,
    ) -> Result<Tokens, TokenError> {
        let token_url = self.token_url_checked(base_url, policy)?;
        let client = BasicClient::new(ClientId::new(self.client_id.clone()))
            .set_client_secret(ClientSecret::new(self.client_secret.expose().to_owned()))
            .set_auth_type(AuthType::RequestBody)
            .set_token_uri(token_url);
        let send = Client {
            http: http.clone(),
            policy,
        };
        let rt = RefreshToken::new(refresh_token.expose().to_owned());
        let request = client.exchange_refresh_token(&rt);
        let response = send_boxed(request.request_async(&send)).await;
        tokens_from(response, Some(refresh_token))
    }

    fn token_url_checked(
        &self,
        base_url: &str,
        policy: UpstreamPolicy,
    ) -> Result<TokenUrl, TokenError> {
        let text = self.token_endpoint(base_url);
        let url = Url::parse(&text).map_err(|e| TokenError::Config(format!("token_url: {e}")))?;
        check_url(&url, policy)
            .map_err(|e| TokenError::Config(format!("token_url is not allowed: {e}")))?;
        Ok(TokenUrl::from_url(url))
    }
}

type Response = oauth2::basic::BasicTokenResponse;
type ExchangeError = RequestTokenError<HttpError, oauth2::basic::BasicErrorResponse>;

fn tokens_from(
    response: Result<Response, ExchangeError>,
    previous_refresh: Option<&Secret>,
) -> Result<Tokens, TokenError> {
    match response {
        Ok(tokens) => {
            let expires_at = tokens
                .expires_in()
                .and_then(|d| chrono::Duration::from_std(d).ok())
                .map(|d| Utc::now() + d);
            Ok(Tokens {
                access_token: Secret::new(tokens.access_token().secret().clone()),
                refresh_token: tokens
                    .refresh_token()
                    .map(|t| Secret::new(t.secret().clone()))
                    .or_else(|| previous_refresh.cloned()),
                expires_at,
            })
        }
        Err(RequestTokenError::ServerResponse(err)) => {
            let code = match err.error() {
                BasicErrorResponseType::InvalidGrant => "invalid_grant".to_owned(),
                other => other.as_ref().to_owned(),
            };
            let description = err
                .error_description()
                .cloned()
                .unwrap_or_else(|| code.clone());
            Err(TokenError::Refused {
                body: json!({ "error": code, "error_description": description }),
                code,
                description,
            })
        }
        Err(RequestTokenError::Request(HttpError::Refused { status, body })) => {
            let description = cigate_buddy::error::message_from_value(&body);
            Err(TokenError::Refused {
                code: "refused".into(),
                description: format!("HTTP {status}: {description}"),
                body,
            })
        }
        Err(RequestTokenError::Request(HttpError::Policy(msg))) => Err(TokenError::Config(msg)),
        Err(RequestTokenError::Request(err)) => Err(TokenError::Unavailable(err.to_string())),
        Err(RequestTokenError::Parse(err, _)) => Err(TokenError::Unavailable(format!(
            "unreadable token response: {err}"
        ))),
        Err(RequestTokenError::Other(msg)) => Err(TokenError::Unavailable(msg)),
    }
}

/// Pins the `Send` proof to a concrete lifetime; without it the compiler cannot show
/// the handlers' futures are `Send` through `oauth2`'s higher-ranked client bound.
fn send_boxed<'a, T>(
    future: impl std::future::Future<Output = T> + Send + 'a,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>> {
    Box::pin(future)
}

/// Our HTTP client as the `oauth2` crate wants it; a named type (not a closure) so the
/// request futures stay `Send`.
struct Client {
    http: reqwest::Client,
    policy: UpstreamPolicy,
}

impl<'c> oauth2::AsyncHttpClient<'c> for Client {
    type Error = HttpError;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<oauth2::HttpResponse, HttpError>> + Send + 'c>,
    >;

    fn call(&'c self, request: oauth2::HttpRequest) -> Self::Future {
        let http = self.http.clone();
        let policy = self.policy;
        Box::pin(async move { send(&http, policy, request).await })
    }
}

/// Failures of one token endpoint request, as the `oauth2` crate sees them.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("{0}")]
    Policy(String),
    #[error("{0}")]
    Transport(String),
    #[error("HTTP {0} from the token endpoint")]
    Server(u16),
    /// A 4xx without an RFC 6749 error body (Buddy's own `errors[]` shape).
    #[error("HTTP {status} from the token endpoint")]
    Refused { status: u16, body: Value },
}

async fn send(
    http: &reqwest::Client,
    policy: UpstreamPolicy,
    request: oauth2::HttpRequest,
) -> Result<oauth2::HttpResponse, HttpError> {
    let url = Url::parse(&request.uri().to_string())
        .map_err(|e| HttpError::Policy(format!("token URL: {e}")))?;
    check_url(&url, policy).map_err(|e| HttpError::Policy(e.to_string()))?;
    let (parts, body) = request.into_parts();
    let response = http
        .request(parts.method, url)
        .headers(parts.headers)
        .body(body)
        .send()
        .await
        .map_err(|e| HttpError::Transport(without_url(&e)))?;
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response
        .bytes()
        .await
        .map_err(|e| HttpError::Transport(without_url(&e)))?;
    if status.is_server_error() {
        return Err(HttpError::Server(status.as_u16()));
    }
    if status.is_client_error() {
        let parsed: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        if parsed.get("error").and_then(Value::as_str).is_none() {
            let (_, body) = cigate_buddy::error::parse_error_body(&bytes);
            return Err(HttpError::Refused {
                status: status.as_u16(),
                body,
            });
        }
    }
    let mut builder = http::Response::builder().status(status);
    if let Some(h) = builder.headers_mut() {
        *h = headers;
    }
    builder
        .body(bytes.to_vec())
        .map_err(|e| HttpError::Transport(e.to_string()))
}

/// reqwest's messages may carry the URL; token URLs carry no secret, but keep errors
/// short and uniform.
fn without_url(err: &reqwest::Error) -> String {
    if err.is_timeout() {
        "timed out".into()
    } else if err.is_connect() {
        "could not connect".into()
    } else {
        "request failed".into()
    }
}
