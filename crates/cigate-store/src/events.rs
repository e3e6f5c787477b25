//! Account lifecycle events (`integrated_account:authentication_error`, …): a row per
//! event, read by the events feature that delivers them to webhooks.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::db::on_pool;
use crate::model::secret_context_key;
use crate::{new_id, now, Store, StoreError};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AccountEvent {
    pub id: String,
    pub environment_id: String,
    pub account_id: String,
    pub event_type: String,
    /// Non-secret details only.
    pub payload: serde_json::Value,
    pub created_at: DateTime<Utc>,
}

type EventRow = (String, String, String, String, String, DateTime<Utc>);

fn from_row(r: EventRow) -> Result<AccountEvent, StoreError> {
    Ok(AccountEvent {
        payload: serde_json::from_str(&r.4)
            .map_err(|_| StoreError::Corrupt(format!("account event {}: payload", r.0)))?,
        id: r.0,
        environment_id: r.1,
        account_id: r.2,
        event_type: r.3,
        created_at: r.5,
    })
}

impl Store {
    /// Records one lifecycle event of an account.
    pub async fn record_account_event(
        &self,
        environment_id: &str,
        account_id: &str,
        event_type: &str,
        payload: serde_json::Value,
    ) -> Result<AccountEvent, StoreError> {
        if let Some(key) = secret_context_key(&payload) {
            return Err(StoreError::InvalidInput(format!(
                "event payload key `{key}` looks secret"
            )));
        }
        let text =
            serde_json::to_string(&payload).map_err(|e| StoreError::InvalidInput(e.to_string()))?;
        let row: EventRow = on_pool!(self.pool(), p => {
            sqlx::query_as(
                "INSERT INTO account_events (id, environment_id, account_id, event_type, payload, \
                 created_at) VALUES ($1, $2, $3, $4, $5, $6) RETURNING id, environment_id, \
                 account_id, event_type, payload, created_at",
            )
            .bind(new_id())
            .bind(environment_id)
            .bind(account_id)
            .bind(event_type)
            .bind(&text)
            .bind(now())
            .fetch_one(p)
            .await?
        });
        from_row(row)
    }

    /// Events of this environment (of one account when given), oldest first.
    pub async fn list_account_events(
        &self,
        environment_id: &str,
        account_id: Option<&str>,
        limit: u32,
    ) -> Result<Vec<AccountEvent>, StoreError> {
        let limit = i64::from(limit.clamp(1, 1000));
        let rows: Vec<EventRow> = on_pool!(self.pool(), p => {
            sqlx::query_as(
                "SELECT id, environment_id, account_id, event_type, payload, created_at \
                 FROM account_events WHERE environment_id = $1 \
                 AND ($2 IS NULL OR account_id = $2) ORDER BY created_at, id LIMIT $3",
            )
            .bind(environment_id)
            .bind(account_id)
            .bind(limit)
            .fetch_all(p)
            .await?
        });
        rows.into_iter().map(from_row).collect()
    }
}
