//! `Idempotency-Key` records: the first request with a key runs, later ones with the same
//! key (per environment, account, method and path) replay its response.
//!
//! An in-progress record is held by a lease that its request renews while it runs
//! ([`Store::renew_idempotent`]). A lease past its time means the holder died (a killed
//! process) before recording the answer: whether Buddy acted is then unknown, so the key
//! is never run again, and a resend learns that at once instead of waiting.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::db::on_pool;
use crate::{now, ttl_from, Store, StoreError};

/// Identifies one idempotent request.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct IdempotencyKey {
    pub environment_id: String,
    /// `None` for requests not about one integrated account.
    pub account_id: Option<String>,
    pub method: String,
    pub path: String,
    /// The caller's `Idempotency-Key` header.
    pub key: String,
}

impl IdempotencyKey {
    fn account(&self) -> &str {
        self.account_id.as_deref().unwrap_or("")
    }
}

/// The response recorded for replay.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// Outcome of [`Store::begin_idempotent`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Begin {
    /// This caller owns the key: do the work, then `finish_idempotent` (or
    /// `abandon_idempotent` if nothing was done upstream).
    Started,
    /// Another request with this key is still running: its lease is being renewed.
    InProgress,
    /// The request holding this key stopped renewing its lease (its process died)
    /// without recording an answer: it may or may not have reached Buddy. The key stays
    /// spent until it expires, so the write is never run twice.
    Orphaned,
    /// The request already completed: send this response again.
    Replay(StoredResponse),
    /// The key was used with a different request body (answer 422).
    Mismatch,
}

const KEY_WHERE: &str = "environment_id = $1 AND account_id = $2 AND method = $3 AND path = $4 \
                         AND idempotency_key = $5";

/// How long a record written before leases existed (no `lease_expires_at`) counts as
/// held: longer than any upstream deadline of those versions.
const LEGACY_LEASE: chrono::TimeDelta = chrono::TimeDelta::minutes(1);

crate::db::row_struct! {
    struct RecordRow {
        request_hash: String,
        state: String,
        status: Option<i32>,
        response_headers: Option<String>,
        response_body: Option<Vec<u8>>,
        created_at: DateTime<Utc>,
        expires_at: DateTime<Utc>,
        lease_expires_at: Option<DateTime<Utc>>,
    }
}

impl Store {
    /// Claims `key` for a request whose body hashes to `request_hash`, for `ttl`, held by
    /// a lease of `lease` that the caller renews with [`Store::renew_idempotent`] while
    /// the request runs. An expired record is replaced as if it did not exist.
    pub async fn begin_idempotent(
        &self,
        key: &IdempotencyKey,
        request_hash: &str,
        ttl: Duration,
        lease: Duration,
    ) -> Result<Begin, StoreError> {
        let now = now();
        let expires_at = ttl_from(now, ttl)?;
        let lease_expires_at = ttl_from(now, lease)?;
        for _ in 0..3 {
            let inserted = on_pool!(self.pool(), p => {
                sqlx::query(
                    "INSERT INTO idempotency_records (environment_id, account_id, method, path, \
                     idempotency_key, request_hash, state, created_at, expires_at, \
                     lease_expires_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, 'in_progress', $7, $8, $9) \
                     ON CONFLICT DO NOTHING",
                )
                .bind(&key.environment_id)
                .bind(key.account())
                .bind(&key.method)
                .bind(&key.path)
                .bind(&key.key)
                .bind(request_hash)
                .bind(now)
                .bind(expires_at)
                .bind(lease_expires_at)
                .execute(p)
                .await?
                .rows_affected()
            });
            if inserted == 1 {
                return Ok(Begin::Started);
            }
            let row: Option<RecordRow> = on_pool!(self.pool(), p => {
                sqlx::query_as(&format!(
                    "SELECT request_hash, state, status, response_headers, response_body, \
                     created_at, expires_at, lease_expires_at FROM idempotency_records WHERE {KEY_WHERE}"
                ))
                .bind(&key.environment_id)
                .bind(key.account())
                .bind(&key.method)
                .bind(&key.path)
                .bind(&key.key)
                .fetch_optional(p)
                .await?
            });
            let Some(row) = row else {
                continue;
            };
            if row.expires_at <= now {
                on_pool!(self.pool(), p => {
                    sqlx::query(&format!(
                        "DELETE FROM idempotency_records WHERE {KEY_WHERE} AND expires_at <= $6"
                    ))
                    .bind(&key.environment_id)
                    .bind(key.account())
                    .bind(&key.method)
                    .bind(&key.path)
                    .bind(&key.key)
                    .bind(now)
                    .execute(p)
                    .await?
                    .rows_affected()
                });
                continue;
            }
            if row.request_hash != request_hash {
                return Ok(Begin::Mismatch);
            }
            if row.state != "done" {
                let lease_end = row
                    .lease_expires_at
                    .unwrap_or(row.created_at + LEGACY_LEASE);
                return Ok(if lease_end <= now {
                    Begin::Orphaned
                } else {
                    Begin::InProgress
                });
            }
            let status = row
                .status
                .and_then(|s| u16::try_from(s).ok())
                .ok_or_else(|| StoreError::Corrupt("idempotency record without status".into()))?;
            let headers = match row.response_headers {
                Some(text) => serde_json::from_str(&text)
                    .map_err(|_| StoreError::Corrupt("idempotency record headers".into()))?,
                None => Vec::new(),
            };
            return Ok(Begin::Replay(StoredResponse {
                status,
                headers,
                body: row.response_body.unwrap_or_default(),
            }));
        }
        Err(StoreError::Conflict(
            "the idempotency record changed repeatedly; retry".into(),
        ))
    }

    /// Extends the lease of a started request to `lease` from now. `false` if the record
    /// is gone, finished, or belongs to another request (`request_hash` differs).
    pub async fn renew_idempotent(
        &self,
        key: &IdempotencyKey,
        request_hash: &str,
        lease: Duration,
    ) -> Result<bool, StoreError> {
        let lease_expires_at = ttl_from(now(), lease)?;
        let n = on_pool!(self.pool(), p => {
            sqlx::query(&format!(
                "UPDATE idempotency_records SET lease_expires_at = $6 \
                 WHERE {KEY_WHERE} AND state = 'in_progress' AND request_hash = $7"
            ))
            .bind(&key.environment_id)
            .bind(key.account())
            .bind(&key.method)
            .bind(&key.path)
            .bind(&key.key)
            .bind(lease_expires_at)
            .bind(request_hash)
            .execute(p)
            .await?
            .rows_affected()
        });
        Ok(n > 0)
    }

    /// Records the response of a started request, also after its lease ran out (a late
    /// answer is still the truth; later resends replay it). `false` if the record is
    /// gone or was already finished.
    pub async fn finish_idempotent(
        &self,
        key: &IdempotencyKey,
        response: &StoredResponse,
    ) -> Result<bool, StoreError> {
        let headers = serde_json::to_string(&response.headers)
            .map_err(|e| StoreError::InvalidInput(e.to_string()))?;
        let n = on_pool!(self.pool(), p => {
            sqlx::query(&format!(
                "UPDATE idempotency_records SET state = 'done', status = $6, \
                 response_headers = $7, response_body = $8 \
                 WHERE {KEY_WHERE} AND state = 'in_progress'"
            ))
            .bind(&key.environment_id)
            .bind(key.account())
            .bind(&key.method)
            .bind(&key.path)
            .bind(&key.key)
            .bind(i32::from(response.status))
            .bind(&headers)
            .bind(&response.body)
            .execute(p)
            .await?
            .rows_affected()
        });
        Ok(n > 0)
    }

    /// Releases a started key without a response (the request failed before anything
    /// happened upstream), so the caller may retry with the same key.
    pub async fn abandon_idempotent(&self, key: &IdempotencyKey) -> Result<bool, StoreError> {
        let n = on_pool!(self.pool(), p => {
            sqlx::query(&format!(
                "DELETE FROM idempotency_records WHERE {KEY_WHERE} AND state = 'in_progress'"
            ))
            .bind(&key.environment_id)
            .bind(key.account())
            .bind(&key.method)
            .bind(&key.path)
            .bind(&key.key)
            .execute(p)
            .await?
            .rows_affected()
        });
        Ok(n > 0)
    }

    /// Deletes expired idempotency records, refresh leases, link tokens and OAuth states;
    /// returns how many rows went.
    pub async fn purge_expired(&self) -> Result<u64, StoreError> {
        let now = now();
        let mut total = 0;
        for table in [
            "idempotency_records",
            "refresh_leases",
            "oauth_states",
            "link_tokens",
        ] {
            total += on_pool!(self.pool(), p => {
                sqlx::query(&format!("DELETE FROM {table} WHERE expires_at <= $1"))
                    .bind(now)
                    .execute(p)
                    .await?
                    .rows_affected()
            });
        }
        Ok(total)
    }
}
