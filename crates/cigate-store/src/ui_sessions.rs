//! Dashboard sessions: what a browser signed in to `/ui` holds instead of an API token.
//!
//! The cookie carries 32 random bytes (`cgs_` + base64url); only their SHA-256 is
//! stored, looked up by primary key. A session is bound to the API token it was opened
//! with, so it sees that token's environment only and ends when the token is deleted
//! (the foreign key cascades, and the lookup joins the token as well). It also ends
//! after a stretch of inactivity that the caller chooses, or when signed out.

use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use chrono::{DateTime, Utc};
use cigate_core::Secret;
use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::db::on_pool;
use crate::{now, Store, StoreError};

const SESSION_PREFIX: &str = "cgs_";
/// `last_seen_at` moves at most this often, so browsing rarely writes.
const TOUCH_GRANULARITY_SECS: i64 = 30;

/// A live dashboard session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UiSession {
    pub environment_id: String,
    pub token_id: String,
    /// Sent back with every form the dashboard renders and checked on every post.
    pub csrf: String,
    pub created_at: DateTime<Utc>,
    pub last_seen_at: DateTime<Utc>,
}

type SessionRow = (String, String, String, DateTime<Utc>, DateTime<Utc>);

fn hash(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

fn random_b64() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

fn idle_cutoff(at: DateTime<Utc>, idle: Duration) -> DateTime<Utc> {
    chrono::Duration::from_std(idle)
        .ok()
        .and_then(|idle| at.checked_sub_signed(idle))
        .unwrap_or(DateTime::<Utc>::MIN_UTC)
}

impl Store {
    /// Opens a session for an API token; the cookie value is returned here only.
    /// [`StoreError::NotFound`] when the token is not (or no longer) of that environment.
    pub async fn create_ui_session(
        &self,
        environment_id: &str,
        token_id: &str,
    ) -> Result<(Secret, UiSession), StoreError> {
        let secret = Secret::new(format!("{SESSION_PREFIX}{}", random_b64()));
        let at = now();
        let csrf = random_b64();
        let inserted = on_pool!(self.pool(), p => {
            sqlx::query(
                "INSERT INTO ui_sessions \
                 (id_hash, environment_id, token_id, csrf, created_at, last_seen_at) \
                 SELECT $1, environment_id, id, $2, $3, $3 FROM api_tokens \
                 WHERE id = $4 AND environment_id = $5",
            )
            .bind(hash(secret.expose()))
            .bind(&csrf)
            .bind(at)
            .bind(token_id)
            .bind(environment_id)
            .execute(p)
            .await?
            .rows_affected()
        });
        if inserted == 0 {
            return Err(StoreError::NotFound);
        }
        Ok((
            secret,
            UiSession {
                environment_id: environment_id.to_owned(),
                token_id: token_id.to_owned(),
                csrf,
                created_at: at,
                last_seen_at: at,
            },
        ))
    }

    /// The session a cookie names, if it is live (its token exists and it was used
    /// within `idle`); using it keeps it alive. An idle session is deleted here.
    pub async fn ui_session(
        &self,
        secret: &str,
        idle: Duration,
    ) -> Result<Option<UiSession>, StoreError> {
        if !secret.starts_with(SESSION_PREFIX) || secret.len() > 128 {
            return Ok(None);
        }
        let id_hash = hash(secret);
        let row: Option<SessionRow> = on_pool!(self.pool(), p => {
            sqlx::query_as(
                "SELECT s.environment_id, s.token_id, s.csrf, s.created_at, s.last_seen_at \
                 FROM ui_sessions s JOIN api_tokens t \
                 ON t.id = s.token_id AND t.environment_id = s.environment_id \
                 WHERE s.id_hash = $1",
            )
            .bind(&id_hash)
            .fetch_optional(p)
            .await?
        });
        let Some((environment_id, token_id, csrf, created_at, last_seen_at)) = row else {
            return Ok(None);
        };
        let at = now();
        if last_seen_at <= idle_cutoff(at, idle) {
            self.delete_ui_session(secret).await?;
            return Ok(None);
        }
        let mut session = UiSession {
            environment_id,
            token_id,
            csrf,
            created_at,
            last_seen_at,
        };
        if (at - last_seen_at).num_seconds() >= TOUCH_GRANULARITY_SECS {
            on_pool!(self.pool(), p => {
                sqlx::query("UPDATE ui_sessions SET last_seen_at = $1 WHERE id_hash = $2")
                    .bind(at)
                    .bind(&id_hash)
                    .execute(p)
                    .await?
                    .rows_affected()
            });
            session.last_seen_at = at;
        }
        Ok(Some(session))
    }

    /// Ends a session (signing out). `false` if there was none.
    pub async fn delete_ui_session(&self, secret: &str) -> Result<bool, StoreError> {
        let deleted = on_pool!(self.pool(), p => {
            sqlx::query("DELETE FROM ui_sessions WHERE id_hash = $1")
                .bind(hash(secret))
                .execute(p)
                .await?
                .rows_affected()
        });
        Ok(deleted > 0)
    }

    /// Deletes the sessions idle for longer than `idle` (housekeeping).
    pub async fn prune_ui_sessions(&self, idle: Duration) -> Result<u64, StoreError> {
        Ok(on_pool!(self.pool(), p => {
            sqlx::query("DELETE FROM ui_sessions WHERE last_seen_at <= $1")
                .bind(idle_cutoff(now(), idle))
                .execute(p)
                .await?
                .rows_affected()
        }))
    }
}
