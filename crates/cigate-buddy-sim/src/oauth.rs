//! OAuth 2.0 server: authorize (auto-approve), token (authorization_code with
//! PKCE, refresh_token with rotation, client_credentials).

use std::collections::HashMap;
use std::sync::atomic::Ordering;

use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine;
use chrono::{DateTime, Duration, Utc};
use serde::Deserialize;
use serde_json::{json, Value};
use sha2::Digest;

use crate::auth::{parse_scope_list, TokenInfo, ALL_SCOPES};
use crate::error::SimError;
use crate::sim::Sim;

#[derive(Debug, Clone)]
pub struct Client {
    pub secret: String,
    pub redirect_uris: Vec<String>,
}

#[derive(Debug, Clone)]
struct Grant {
    client_id: String,
    redirect_uri: String,
    scopes: Vec<String>,
    challenge: Option<(String, String)>,
    expires_at: DateTime<Utc>,
}

#[derive(Debug, Clone)]
struct Refresh {
    client_id: String,
    scopes: Vec<String>,
    expires_at: DateTime<Utc>,
}

#[derive(Debug, Default)]
pub struct OAuthStore {
    clients: HashMap<String, Client>,
    codes: HashMap<String, Grant>,
    refresh: HashMap<String, Refresh>,
    /// Every code and token ever handed out, kept after use (see [`Sim::issued_secrets`]).
    issued: Vec<String>,
}

impl OAuthStore {
    pub fn register(&mut self, id: &str, secret: &str, redirect_uris: Vec<String>) {
        self.clients.insert(
            id.to_string(),
            Client {
                secret: secret.to_string(),
                redirect_uris,
            },
        );
    }

    /// Every client secret, authorization code, access token and refresh token so far.
    pub fn secrets(&self) -> impl Iterator<Item = &str> {
        let clients = self.clients.values().map(|c| c.secret.as_str());
        clients.chain(self.issued.iter().map(String::as_str))
    }
}

fn oauth_err(status: u16, code: &'static str, description: &str) -> SimError {
    SimError::OAuth {
        status,
        code,
        description: description.to_string(),
    }
}

fn random_hex(bytes: usize) -> String {
    use rand::RngCore;
    let mut buf = vec![0u8; bytes];
    rand::thread_rng().fill_bytes(&mut buf);
    hex::encode(buf)
}

#[derive(Debug, Deserialize)]
pub struct AuthorizeQuery {
    response_type: Option<String>,
    client_id: Option<String>,
    redirect_uri: Option<String>,
    scope: Option<String>,
    state: Option<String>,
    code_challenge: Option<String>,
    code_challenge_method: Option<String>,
}

/// Auto-approves and redirects back with `code` and `state`.
pub async fn authorize(
    State(sim): State<Sim>,
    Query(q): Query<AuthorizeQuery>,
) -> Result<Response, SimError> {
    if q.response_type.as_deref().unwrap_or("code") != "code" {
        return Err(oauth_err(
            400,
            "unsupported_response_type",
            "response_type must be code",
        ));
    }
    let client_id = q
        .client_id
        .ok_or_else(|| oauth_err(400, "invalid_request", "client_id is required"))?;
    let mut store = sim.inner.oauth.lock();
    let client = store
        .clients
        .get(&client_id)
        .ok_or_else(|| oauth_err(400, "invalid_client", "Unknown client_id"))?;
    let redirect_uri = match q.redirect_uri {
        Some(uri) if client.redirect_uris.is_empty() || client.redirect_uris.contains(&uri) => uri,
        Some(_) => {
            return Err(oauth_err(
                400,
                "invalid_request",
                "redirect_uri is not registered",
            ))
        }
        None => client
            .redirect_uris
            .first()
            .cloned()
            .ok_or_else(|| oauth_err(400, "invalid_request", "redirect_uri is required"))?,
    };
    let challenge = match q.code_challenge {
        Some(c) => {
            let method = q.code_challenge_method.unwrap_or_else(|| "plain".into());
            if method != "S256" && method != "plain" {
                return Err(oauth_err(
                    400,
                    "invalid_request",
                    "code_challenge_method must be S256",
                ));
            }
            Some((c, method))
        }
        None => None,
    };
    let scopes = q.scope.as_deref().map(parse_scope_list).unwrap_or_default();
    let code = random_hex(20);
    store.issued.push(code.clone());
    store.codes.insert(
        code.clone(),
        Grant {
            client_id,
            redirect_uri: redirect_uri.clone(),
            scopes,
            challenge,
            expires_at: sim.now() + Duration::minutes(10),
        },
    );
    let mut target = url::Url::parse(&redirect_uri)
        .map_err(|_| oauth_err(400, "invalid_request", "redirect_uri is not a URL"))?;
    {
        let mut pairs = target.query_pairs_mut();
        pairs.append_pair("code", &code);
        if let Some(state) = &q.state {
            pairs.append_pair("state", state);
        }
    }
    let location = HeaderValue::from_str(target.as_str())
        .map_err(|_| oauth_err(400, "invalid_request", "redirect_uri is not a URL"))?;
    Ok((StatusCode::FOUND, [(header::LOCATION, location)]).into_response())
}

#[derive(Debug, Default, Deserialize)]
struct TokenForm {
    grant_type: Option<String>,
    client_id: Option<String>,
    client_secret: Option<String>,
    code: Option<String>,
    redirect_uri: Option<String>,
    code_verifier: Option<String>,
    refresh_token: Option<String>,
    scope: Option<String>,
}

/// Accepts form-encoded and JSON bodies, and client credentials via HTTP Basic.
pub async fn token(
    State(sim): State<Sim>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, SimError> {
    sim.inner.oauth_token_calls.fetch_add(1, Ordering::SeqCst);
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("json"));
    let mut form: TokenForm = if is_json {
        serde_json::from_slice(&body)
            .map_err(|e| oauth_err(400, "invalid_request", &format!("Invalid JSON: {e}")))?
    } else {
        serde_urlencoded::from_bytes(&body)
            .map_err(|e| oauth_err(400, "invalid_request", &format!("Invalid form: {e}")))?
    };
    if let Some((id, secret)) = basic_credentials(&headers) {
        form.client_id.get_or_insert(id);
        form.client_secret.get_or_insert(secret);
    }
    let now = sim.now();
    let client_id = form
        .client_id
        .clone()
        .ok_or_else(|| oauth_err(401, "invalid_client", "client_id is required"))?;
    let mut store = sim.inner.oauth.lock();
    let client = store
        .clients
        .get(&client_id)
        .ok_or_else(|| oauth_err(401, "invalid_client", "Unknown client"))?;
    if form.client_secret.as_deref() != Some(client.secret.as_str()) {
        return Err(oauth_err(
            401,
            "invalid_client",
            "Invalid client credentials",
        ));
    }
    let (scopes, with_refresh) =
        match form.grant_type.as_deref() {
            Some("authorization_code") => {
                let code = form
                    .code
                    .as_deref()
                    .ok_or_else(|| oauth_err(400, "invalid_request", "code is required"))?;
                // Codes are single-use: removed on the first attempt, successful or not.
                let grant = store.codes.remove(code).ok_or_else(|| {
                    oauth_err(400, "invalid_grant", "Invalid or used authorization code")
                })?;
                if grant.client_id != client_id || grant.expires_at <= now {
                    return Err(oauth_err(
                        400,
                        "invalid_grant",
                        "Invalid or expired authorization code",
                    ));
                }
                if form
                    .redirect_uri
                    .as_deref()
                    .is_some_and(|u| u != grant.redirect_uri)
                {
                    return Err(oauth_err(
                        400,
                        "invalid_grant",
                        "redirect_uri does not match",
                    ));
                }
                if let Some((challenge, method)) = &grant.challenge {
                    let verifier = form.code_verifier.as_deref().ok_or_else(|| {
                        oauth_err(400, "invalid_grant", "code_verifier is required")
                    })?;
                    let computed = if method == "S256" {
                        base64::engine::general_purpose::URL_SAFE_NO_PAD
                            .encode(sha2::Sha256::digest(verifier.as_bytes()))
                    } else {
                        verifier.to_string()
                    };
                    if computed != *challenge {
                        return Err(oauth_err(400, "invalid_grant", "PKCE verification failed"));
                    }
                }
                (grant.scopes, true)
            }
            Some("refresh_token") => {
                let rt = form.refresh_token.as_deref().ok_or_else(|| {
                    oauth_err(400, "invalid_request", "refresh_token is required")
                })?;
                // Rotation: the presented refresh token is spent.
                let r = store
                    .refresh
                    .remove(rt)
                    .ok_or_else(|| oauth_err(400, "invalid_grant", "Invalid refresh token"))?;
                if r.client_id != client_id || r.expires_at <= now {
                    return Err(oauth_err(
                        400,
                        "invalid_grant",
                        "Invalid or expired refresh token",
                    ));
                }
                (r.scopes, true)
            }
            Some("client_credentials") => {
                let scope = form
                    .scope
                    .as_deref()
                    .filter(|s| !s.trim().is_empty())
                    .ok_or_else(|| oauth_err(400, "invalid_scope", "scope is required"))?;
                (parse_scope_list(scope), false)
            }
            _ => {
                return Err(oauth_err(
                    400,
                    "unsupported_grant_type",
                    "grant_type must be authorization_code, refresh_token or client_credentials",
                ))
            }
        };
    let scopes = if scopes.is_empty() {
        ALL_SCOPES.iter().map(|s| (*s).to_string()).collect()
    } else {
        scopes
    };
    let cfg = sim.config();
    let access = random_hex(20);
    let expires_at =
        (cfg.oauth_expires_in > 0).then(|| now + Duration::seconds(cfg.oauth_expires_in));
    let refresh = with_refresh.then(|| random_hex(20));
    store.issued.push(access.clone());
    store.issued.extend(refresh.clone());
    if let Some(rt) = &refresh {
        store.refresh.insert(
            rt.clone(),
            Refresh {
                client_id: client_id.clone(),
                scopes: scopes.clone(),
                expires_at: now + Duration::seconds(cfg.oauth_refresh_expires_in),
            },
        );
    }
    drop(store);
    {
        let mut tokens = sim.inner.tokens.lock();
        let id = tokens.next_id();
        tokens.insert(TokenInfo {
            id,
            value: access.clone(),
            name: format!("oauth {client_id}"),
            scopes,
            expires_at,
            workspace_restrictions: Vec::new(),
            ip_restrictions: Vec::new(),
        });
    }
    let body: Value = json!({
        "access_token": access,
        "token_type": "Bearer",
        "expires_in": if cfg.oauth_expires_in > 0 { Value::from(cfg.oauth_expires_in) } else { Value::Null },
        "refresh_token": refresh,
        "refresh_token_expires_in": if with_refresh { Value::from(cfg.oauth_refresh_expires_in) } else { Value::Null },
    });
    Ok((
        StatusCode::OK,
        [(header::CACHE_CONTROL, "no-store")],
        Json(body),
    )
        .into_response())
}

fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let raw = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let encoded = raw.strip_prefix("Basic ")?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (id, secret) = text.split_once(':')?;
    Some((id.to_string(), secret.to_string()))
}
