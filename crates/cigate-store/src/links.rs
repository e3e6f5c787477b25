//! Link tokens (one end user's single-use ticket to the Link page) and OAuth `state`
//! values (one authorization round trip). Both are random, shown once, and stored only as
//! their SHA-256; the PKCE code verifier travels with the state, sealed under the master
//! key with the state's hash as associated data ([`OAUTH_VERIFIERS`], so rotation moves
//! states in flight too).

use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chrono::{DateTime, Utc};
use cigate_core::Secret;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::crypto::Sealed;
use crate::db::on_pool;
use crate::keys::{key_changed, key_is_current, OAUTH_VERIFIERS, WRITE_ATTEMPTS};
use crate::model::secret_context_key;
use crate::{new_id, now, ttl_from, Store, StoreError};

const LINK_TOKEN_PREFIX: &str = "clt_";

/// A link token's record (never the token itself).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LinkToken {
    pub id: String,
    pub environment_id: String,
    pub tenant_id: Option<String>,
    /// Set for a reconnect: the account gets the new credential in place.
    pub integrated_account_id: Option<String>,
    pub redirect_uri: Option<String>,
    /// Non-secret context copied onto the account it creates.
    pub context: serde_json::Value,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub used_at: Option<DateTime<Utc>>,
}

impl LinkToken {
    pub fn is_expired(&self, at: DateTime<Utc>) -> bool {
        self.expires_at <= at
    }
}

/// What [`Store::create_link_token`] needs.
#[derive(Clone, Debug)]
pub struct NewLinkToken {
    pub environment_id: String,
    pub tenant_id: Option<String>,
    pub integrated_account_id: Option<String>,
    pub redirect_uri: Option<String>,
    pub context: serde_json::Value,
    pub ttl: Duration,
}

/// A taken OAuth state: what the callback needs to finish the exchange.
#[derive(Clone, Debug)]
pub struct OAuthState {
    pub environment_id: String,
    pub link_token_id: Option<String>,
    pub base_url: Option<String>,
    pub code_verifier: Secret,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

impl OAuthState {
    pub fn is_expired(&self, at: DateTime<Utc>) -> bool {
        self.expires_at <= at
    }
}

/// What [`Store::create_oauth_state`] needs.
#[derive(Clone, Debug)]
pub struct NewOAuthState {
    pub environment_id: String,
    pub link_token_id: Option<String>,
    pub base_url: Option<String>,
    pub code_verifier: Secret,
    pub ttl: Duration,
}

crate::db::row_struct! {
    struct LinkRow {
        id: String,
        environment_id: String,
        tenant_id: Option<String>,
        integrated_account_id: Option<String>,
        redirect_uri: Option<String>,
        context: String,
        created_at: DateTime<Utc>,
        expires_at: DateTime<Utc>,
        used_at: Option<DateTime<Utc>>,
    }
}

impl TryFrom<LinkRow> for LinkToken {
    type Error = StoreError;
    fn try_from(r: LinkRow) -> Result<Self, StoreError> {
        Ok(LinkToken {
            context: serde_json::from_str(&r.context)
                .map_err(|_| StoreError::Corrupt(format!("link token {}: context", r.id)))?,
            id: r.id,
            environment_id: r.environment_id,
            tenant_id: r.tenant_id,
            integrated_account_id: r.integrated_account_id,
            redirect_uri: r.redirect_uri,
            created_at: r.created_at,
            expires_at: r.expires_at,
            used_at: r.used_at,
        })
    }
}

const LINK_COLUMNS: &str = "id, environment_id, tenant_id, integrated_account_id, redirect_uri, \
     context, created_at, expires_at, used_at";

fn hash(plaintext: &str) -> String {
    hex::encode(Sha256::digest(plaintext.as_bytes()))
}

fn random_token(prefix: &str) -> Secret {
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    Secret::new(format!("{prefix}{}", URL_SAFE_NO_PAD.encode(bytes)))
}

impl Store {
    /// Creates a link token; returns its record and the token (shown once).
    pub async fn create_link_token(
        &self,
        new: NewLinkToken,
    ) -> Result<(LinkToken, Secret), StoreError> {
        if !new.context.is_object() {
            return Err(StoreError::InvalidInput(
                "context must be a JSON object".into(),
            ));
        }
        if let Some(key) = secret_context_key(&new.context) {
            return Err(StoreError::InvalidInput(format!(
                "context key `{key}` looks secret"
            )));
        }
        let context = serde_json::to_string(&new.context)
            .map_err(|e| StoreError::InvalidInput(e.to_string()))?;
        let token = random_token(LINK_TOKEN_PREFIX);
        let at = now();
        let expires_at = ttl_from(at, new.ttl)?;
        let row: LinkRow = on_pool!(self.pool(), p => {
            sqlx::query_as(&format!(
                "INSERT INTO link_tokens (id, environment_id, token_hash, tenant_id, \
                 integrated_account_id, redirect_uri, context, created_at, expires_at, used_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, NULL) RETURNING {LINK_COLUMNS}"
            ))
            .bind(new_id())
            .bind(&new.environment_id)
            .bind(hash(token.expose()))
            .bind(&new.tenant_id)
            .bind(&new.integrated_account_id)
            .bind(&new.redirect_uri)
            .bind(&context)
            .bind(at)
            .bind(expires_at)
            .fetch_one(p)
            .await?
        });
        Ok((row.try_into()?, token))
    }

    /// The record of a link token, used or expired ones included (the Link page tells
    /// the user which). `None` for an unknown token.
    pub async fn link_token(&self, plaintext: &str) -> Result<Option<LinkToken>, StoreError> {
        let row: Option<LinkRow> = on_pool!(self.pool(), p => {
            sqlx::query_as(&format!(
                "SELECT {LINK_COLUMNS} FROM link_tokens WHERE token_hash = $1"
            ))
            .bind(hash(plaintext))
            .fetch_optional(p)
            .await?
        });
        row.map(LinkToken::try_from).transpose()
    }

    /// The record of a link token by its id (the OAuth callback knows only the id).
    pub async fn link_token_by_id(&self, id: &str) -> Result<Option<LinkToken>, StoreError> {
        let row: Option<LinkRow> = on_pool!(self.pool(), p => {
            sqlx::query_as(&format!("SELECT {LINK_COLUMNS} FROM link_tokens WHERE id = $1"))
                .bind(id)
                .fetch_optional(p)
                .await?
        });
        row.map(LinkToken::try_from).transpose()
    }

    /// Spends a link token: `true` for exactly one caller, and only while it is unused
    /// and unexpired.
    pub async fn use_link_token(&self, id: &str) -> Result<bool, StoreError> {
        let at = now();
        let n = on_pool!(self.pool(), p => {
            sqlx::query(
                "UPDATE link_tokens SET used_at = $1 \
                 WHERE id = $2 AND used_at IS NULL AND expires_at > $1",
            )
            .bind(at)
            .bind(id)
            .execute(p)
            .await?
            .rows_affected()
        });
        Ok(n == 1)
    }

    /// Stores a fresh OAuth `state` with its PKCE verifier; returns the state value to
    /// send to the authorization server.
    pub async fn create_oauth_state(&self, new: NewOAuthState) -> Result<Secret, StoreError> {
        let state = random_token("");
        let state_hash = hash(state.expose());
        let aad = OAUTH_VERIFIERS.aad(&[&state_hash]);
        let at = now();
        let expires_at = ttl_from(at, new.ttl)?;
        let sql = format!(
            "INSERT INTO oauth_states (state_hash, environment_id, link_token_id, base_url, \
             key_id, nonce, ciphertext, created_at, expires_at) \
             SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9 WHERE {}",
            key_is_current("$5")
        );
        for _ in 0..WRITE_ATTEMPTS {
            let sealed = self
                .inner
                .keys
                .seal(&aad, new.code_verifier.expose().as_bytes())?;
            let n = on_pool!(self.pool(), p => {
                sqlx::query(&sql)
                    .bind(&state_hash)
                    .bind(&new.environment_id)
                    .bind(&new.link_token_id)
                    .bind(&new.base_url)
                    .bind(&sealed.key_id)
                    .bind(&sealed.nonce)
                    .bind(&sealed.ciphertext)
                    .bind(at)
                    .bind(expires_at)
                    .execute(p)
                    .await?
                    .rows_affected()
            });
            if n == 1 {
                return Ok(state);
            }
            self.refresh_store_key().await?;
        }
        Err(key_changed())
    }

    /// Takes a state out of the store (so it is honoured once, by one caller). An
    /// expired state is returned too, for the caller to refuse with a clear message.
    pub async fn take_oauth_state(
        &self,
        plaintext: &str,
    ) -> Result<Option<OAuthState>, StoreError> {
        type Row = (
            String,
            Option<String>,
            Option<String>,
            Option<String>,
            Option<Vec<u8>>,
            Option<Vec<u8>>,
            DateTime<Utc>,
            DateTime<Utc>,
        );
        let state_hash = hash(plaintext);
        let row: Option<Row> = on_pool!(self.pool(), p => {
            sqlx::query_as(
                "DELETE FROM oauth_states WHERE state_hash = $1 RETURNING environment_id, \
                 link_token_id, base_url, key_id, nonce, ciphertext, created_at, expires_at",
            )
            .bind(&state_hash)
            .fetch_optional(p)
            .await?
        });
        let Some((
            environment_id,
            link_token_id,
            base_url,
            key_id,
            nonce,
            ciphertext,
            created_at,
            expires_at,
        )) = row
        else {
            return Ok(None);
        };
        let corrupt = || StoreError::Corrupt("oauth state: code_verifier".into());
        let (Some(key_id), Some(nonce), Some(ciphertext)) = (key_id, nonce, ciphertext) else {
            return Err(corrupt());
        };
        let sealed = Sealed {
            key_id,
            nonce,
            ciphertext,
        };
        let plain = self
            .inner
            .keys
            .open(&OAUTH_VERIFIERS.aad(&[&state_hash]), &sealed)?;
        let verifier = String::from_utf8(plain).map_err(|_| corrupt())?;
        Ok(Some(OAuthState {
            environment_id,
            link_token_id,
            base_url,
            code_verifier: Secret::new(verifier),
            created_at,
            expires_at,
        }))
    }
}
