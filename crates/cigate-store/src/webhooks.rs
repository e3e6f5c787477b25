//! Event subscriptions (webhooks cigate sends), the event log and the delivery outbox.
//!
//! An event and one delivery per matching active subscription are written in one
//! transaction ([`Store::record_event`]), so an event is never logged without its
//! deliveries or delivered without being logged. Workers claim due deliveries with row
//! leases ([`Store::claim_deliveries`]): only the oldest pending delivery of an order key
//! (a job, an account) is claimable, so a subscription has at most one delivery of a key
//! in flight and receives a key's events in the order they were recorded, while a
//! delivery waiting for its retry holds back only its own key. A worker that dies mid-delivery
//! loses nothing: its lease expires and another worker claims the same delivery (same
//! id, which receivers see as `webhook-id`).
//!
//! Signing secrets live in `webhook_secrets`, sealed like every secret at rest
//! ([`WEBHOOK_SECRETS`] in `SEALED`): the current one (`expires_at` NULL) and, after a
//! rotation, the previous one until it expires.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use cigate_core::events::{EventPattern, WebhookSecret};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use zeroize::Zeroize;

use crate::crypto::Sealed;
use crate::db::on_pool;
use crate::keys::{key_changed, key_is_current, WEBHOOK_SECRETS, WRITE_ATTEMPTS};
use crate::model::secret_context_key;
use crate::{new_id, now, ttl_from, Store, StoreError};

/// Largest page any list here returns: the API's largest page (1,000) and one more,
/// which tells a pager whether another page follows.
const MAX_PAGE: u32 = 1001;
/// Bytes of a generated signing secret.
const SECRET_BYTES: usize = 32;

/// How a subscription's deliveries are shaped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WebhookFormat {
    /// `{ id, event, payload, environment_id, webhook_id, created_at }`.
    Cigate,
    /// CDEvents carried as structured CloudEvents.
    Cdevents,
}

impl WebhookFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            WebhookFormat::Cigate => "cigate",
            WebhookFormat::Cdevents => "cdevents",
        }
    }
}

impl std::str::FromStr for WebhookFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "cigate" => Ok(WebhookFormat::Cigate),
            "cdevents" => Ok(WebhookFormat::Cdevents),
            other => Err(format!(
                "unknown format `{other}`; use `cigate` or `cdevents`"
            )),
        }
    }
}

/// A subscription. Holds no secret.
#[derive(Clone, Debug, PartialEq)]
pub struct Webhook {
    pub id: String,
    pub environment_id: String,
    pub target_url: String,
    pub event_types: Vec<String>,
    pub format: WebhookFormat,
    pub tenant_id: Option<String>,
    pub integrated_account_id: Option<String>,
    pub workflow: Option<String>,
    pub is_active: bool,
    /// Start of the current run of failed attempts (`None` after a success).
    pub failing_since: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl Webhook {
    /// Position of this webhook in a list, for the next page's `after`.
    pub fn page_key(&self) -> String {
        page_key(self.created_at, &self.id)
    }

    /// Whether this subscription receives `event`.
    pub(crate) fn wants(&self, event: &NewEvent) -> bool {
        let wanted = self
            .event_types
            .iter()
            .filter_map(|t| EventPattern::parse(t).ok())
            .any(|p| p.matches(&event.event_type));
        let filter = |mine: &Option<String>, theirs: &Option<String>| {
            mine.is_none() || mine.as_deref() == theirs.as_deref()
        };
        wanted
            && filter(&self.tenant_id, &event.tenant_id)
            && filter(&self.integrated_account_id, &event.integrated_account_id)
            && filter(&self.workflow, &event.workflow)
    }
}

#[derive(Clone, Debug)]
pub struct NewWebhook {
    pub environment_id: String,
    /// Already checked by the caller against the upstream address policy.
    pub target_url: String,
    pub event_types: Vec<String>,
    pub format: WebhookFormat,
    pub tenant_id: Option<String>,
    pub integrated_account_id: Option<String>,
    pub workflow: Option<String>,
    pub is_active: bool,
}

/// A change to a subscription; `None` leaves a field as it is, `Some(None)` clears a filter.
#[derive(Clone, Debug, Default)]
pub struct WebhookPatch {
    pub target_url: Option<String>,
    pub event_types: Option<Vec<String>>,
    pub format: Option<WebhookFormat>,
    pub tenant_id: Option<Option<String>>,
    pub integrated_account_id: Option<Option<String>>,
    pub workflow: Option<Option<String>>,
    pub is_active: Option<bool>,
}

/// An entry of the event log.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Event {
    pub id: String,
    pub environment_id: String,
    pub event_type: String,
    pub integrated_account_id: Option<String>,
    pub tenant_id: Option<String>,
    pub payload: Value,
    pub created_at: DateTime<Utc>,
}

impl Event {
    pub fn page_key(&self) -> String {
        page_key(self.created_at, &self.id)
    }
}

/// An event to record.
#[derive(Clone, Debug)]
pub struct NewEvent {
    pub environment_id: String,
    pub event_type: String,
    pub integrated_account_id: Option<String>,
    pub tenant_id: Option<String>,
    /// Matched against subscriptions' `workflow` filter; not kept in the log.
    pub workflow: Option<String>,
    /// Non-secret data only.
    pub payload: Value,
    /// Deliver to this subscription only (a test event), whatever its `event_types`.
    pub only_webhook: Option<String>,
    /// Never deliver to this subscription (an event about its own failures).
    pub except_webhook: Option<String>,
    /// What the event is about (a job, an account): a subscription receives the events
    /// of one key in the order they were recorded, and a delivery held back by
    /// retries delays only later events of its own key. `None`: no order with others.
    pub order_key: Option<String>,
}

#[derive(Clone, Debug, Default)]
pub struct EventFilter {
    pub event_type: Option<String>,
    pub integrated_account_id: Option<String>,
    pub tenant_id: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryStatus {
    Pending,
    Delivered,
    Failed,
}

impl DeliveryStatus {
    fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Pending => "pending",
            DeliveryStatus::Delivered => "delivered",
            DeliveryStatus::Failed => "failed",
        }
    }

    fn parse(s: &str) -> Result<Self, StoreError> {
        match s {
            "pending" => Ok(DeliveryStatus::Pending),
            "delivered" => Ok(DeliveryStatus::Delivered),
            "failed" => Ok(DeliveryStatus::Failed),
            other => Err(StoreError::Corrupt(format!("delivery status `{other}`"))),
        }
    }
}

/// One try at delivering.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryAttempt {
    pub at: DateTime<Utc>,
    /// The receiver's status, when it answered.
    pub response_status: Option<u16>,
    pub latency_ms: u64,
    pub error: Option<String>,
}

/// One event on its way to one subscription. Its id is the `webhook-id` receivers see.
#[derive(Clone, Debug, PartialEq)]
pub struct Delivery {
    pub id: String,
    pub event_id: String,
    pub webhook_id: String,
    pub status: DeliveryStatus,
    /// Attempts since the delivery was last scheduled (the retry schedule's position).
    pub round_attempts: u32,
    /// Every attempt, oldest first.
    pub attempts: Vec<DeliveryAttempt>,
    pub next_attempt_at: DateTime<Utc>,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl Delivery {
    pub fn page_key(&self) -> String {
        page_key(self.created_at, &self.id)
    }
}

/// A delivery a worker holds the lease of, with what it needs to send it.
#[derive(Clone, Debug)]
pub struct ClaimedDelivery {
    pub delivery: Delivery,
    pub event: Event,
    pub webhook: Webhook,
    /// Current secret first, then the previous one while a rotation is in its grace time.
    pub secrets: Vec<WebhookSecret>,
}

/// How an attempt ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AttemptOutcome {
    Delivered,
    /// Try again at this time.
    Retry(DateTime<Utc>),
    /// No attempts left.
    Exhausted,
    /// The receiver said the subscription is gone (410): it is deactivated.
    Gone,
}

fn page_key(at: DateTime<Utc>, id: &str) -> String {
    format!("{}.{id}", at.timestamp_micros())
}

fn parse_page_key(
    after: Option<&str>,
) -> Result<(Option<DateTime<Utc>>, Option<String>), StoreError> {
    let Some(after) = after else {
        return Ok((None, None));
    };
    let bad = || StoreError::InvalidInput("the page position is not valid".into());
    let (micros, id) = after.split_once('.').ok_or_else(bad)?;
    let at = micros
        .parse::<i64>()
        .ok()
        .and_then(|m| Utc.timestamp_micros(m).single())
        .ok_or_else(bad)?;
    Ok((Some(at), Some(id.to_owned())))
}

/// Event times strictly increase within a process, so events recorded one after the
/// other (a job's phases) keep their order even within one microsecond.
fn event_time() -> DateTime<Utc> {
    static LAST: AtomicI64 = AtomicI64::new(0);
    let wanted = now().timestamp_micros();
    let mut last = LAST.load(Ordering::Relaxed);
    loop {
        let next = wanted.max(last + 1);
        match LAST.compare_exchange(last, next, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return Utc.timestamp_micros(next).single().unwrap_or_else(now),
            Err(seen) => last = seen,
        }
    }
}

fn validate_event_types(types: &[String]) -> Result<String, StoreError> {
    if types.is_empty() {
        return Err(StoreError::InvalidInput(
            "event_types must name at least one event type".into(),
        ));
    }
    for t in types {
        EventPattern::parse(t).map_err(StoreError::InvalidInput)?;
    }
    serde_json::to_string(types).map_err(|e| StoreError::InvalidInput(e.to_string()))
}

fn generate_secret() -> Result<WebhookSecret, StoreError> {
    let mut bytes = vec![0u8; SECRET_BYTES];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    WebhookSecret::from_bytes(bytes).map_err(StoreError::Crypto)
}

pub(crate) const WEBHOOK_COLUMNS: &str =
    "id, environment_id, target_url, event_types, format, tenant_id, \
     integrated_account_id, workflow, is_active, failing_since, created_at, updated_at";

pub(crate) type WebhookRow = (
    String,
    String,
    String,
    String,
    String,
    Option<String>,
    Option<String>,
    Option<String>,
    bool,
    Option<DateTime<Utc>>,
    DateTime<Utc>,
    DateTime<Utc>,
);

pub(crate) fn webhook_from_row(r: WebhookRow) -> Result<Webhook, StoreError> {
    let corrupt = |what: &str| StoreError::Corrupt(format!("webhook {}: {what}", r.0));
    Ok(Webhook {
        event_types: serde_json::from_str(&r.3).map_err(|_| corrupt("event_types"))?,
        format: r.4.parse().map_err(|_| corrupt("format"))?,
        id: r.0,
        environment_id: r.1,
        target_url: r.2,
        tenant_id: r.5,
        integrated_account_id: r.6,
        workflow: r.7,
        is_active: r.8,
        failing_since: r.9,
        created_at: r.10,
        updated_at: r.11,
    })
}

pub(crate) const EVENT_COLUMNS: &str =
    "id, environment_id, event_type, integrated_account_id, tenant_id, payload, created_at";

pub(crate) type EventRow = (
    String,
    String,
    String,
    Option<String>,
    Option<String>,
    String,
    DateTime<Utc>,
);

pub(crate) fn event_from_row(r: EventRow) -> Result<Event, StoreError> {
    Ok(Event {
        payload: serde_json::from_str(&r.5)
            .map_err(|_| StoreError::Corrupt(format!("event {}: payload", r.0)))?,
        id: r.0,
        environment_id: r.1,
        event_type: r.2,
        integrated_account_id: r.3,
        tenant_id: r.4,
        created_at: r.6,
    })
}

const DELIVERY_COLUMNS: &str = "id, event_id, webhook_id, status, attempts, attempt_log, \
     next_attempt_at, last_error, created_at, updated_at";

type DeliveryRow = (
    String,
    String,
    String,
    String,
    i32,
    String,
    DateTime<Utc>,
    Option<String>,
    DateTime<Utc>,
    DateTime<Utc>,
);

fn delivery_from_row(r: DeliveryRow) -> Result<Delivery, StoreError> {
    Ok(Delivery {
        status: DeliveryStatus::parse(&r.3)?,
        round_attempts: u32::try_from(r.4).unwrap_or_default(),
        attempts: serde_json::from_str(&r.5)
            .map_err(|_| StoreError::Corrupt(format!("delivery {}: attempts", r.0)))?,
        id: r.0,
        event_id: r.1,
        webhook_id: r.2,
        next_attempt_at: r.6,
        last_error: r.7,
        created_at: r.8,
        updated_at: r.9,
    })
}

/// The write of a new current secret; lands only while its key is the store's current
/// one (see `key_is_current`).
/// An event checked and serialised, ready to be written by [`queue_event!`].
pub(crate) struct PreparedEvent {
    pub(crate) id: String,
    pub(crate) at: DateTime<Utc>,
    pub(crate) text: String,
    pub(crate) event: NewEvent,
}

impl PreparedEvent {
    pub(crate) fn new(event: NewEvent) -> Result<Self, StoreError> {
        if let Some(key) = secret_context_key(&event.payload) {
            return Err(StoreError::InvalidInput(format!(
                "event payload key `{key}` looks secret"
            )));
        }
        let text = serde_json::to_string(&event.payload)
            .map_err(|e| StoreError::InvalidInput(e.to_string()))?;
        Ok(Self {
            id: new_id(),
            at: event_time(),
            text,
            event,
        })
    }
}

/// Writes a [`PreparedEvent`] and its deliveries inside the open transaction `$tx`
/// (either backend), evaluating to `(Event, deliveries queued)`; `?` on errors. A macro
/// because the statements are the same on both backends but their executors differ.
macro_rules! queue_event {
    ($tx:expr, $prepared:expr) => {{
        let prepared: $crate::webhooks::PreparedEvent = $prepared;
        let tx = $tx;
        let row: $crate::webhooks::EventRow = sqlx::query_as(&format!(
            "INSERT INTO events ({}) VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING {}",
            $crate::webhooks::EVENT_COLUMNS,
            $crate::webhooks::EVENT_COLUMNS
        ))
        .bind(&prepared.id)
        .bind(&prepared.event.environment_id)
        .bind(&prepared.event.event_type)
        .bind(&prepared.event.integrated_account_id)
        .bind(&prepared.event.tenant_id)
        .bind(&prepared.text)
        .bind(prepared.at)
        .fetch_one(&mut **tx)
        .await?;
        let hooks: Vec<$crate::webhooks::WebhookRow> = sqlx::query_as(&format!(
            "SELECT {} FROM webhooks WHERE environment_id = $1 \
             AND ($2 IS NULL OR id = $2) AND (is_active OR $2 IS NOT NULL)",
            $crate::webhooks::WEBHOOK_COLUMNS
        ))
        .bind(&prepared.event.environment_id)
        .bind(&prepared.event.only_webhook)
        .fetch_all(&mut **tx)
        .await?;
        let mut queued = 0usize;
        for hook in hooks {
            let hook = $crate::webhooks::webhook_from_row(hook)?;
            if prepared.event.only_webhook.is_none() && !hook.wants(&prepared.event) {
                continue;
            }
            if prepared.event.except_webhook.as_deref() == Some(hook.id.as_str()) {
                continue;
            }
            let id = $crate::new_id();
            // Without a key, the delivery's own id: ordered with nothing else.
            let order_key = prepared.event.order_key.as_deref().unwrap_or(&id);
            sqlx::query(
                "INSERT INTO webhook_deliveries (id, event_id, webhook_id, status, \
                 attempts, attempt_log, next_attempt_at, lease_holder, lease_until, last_error, \
                 created_at, updated_at, order_key) VALUES ($1, $2, $3, 'pending', 0, '[]', $4, \
                 NULL, NULL, NULL, $4, $4, $5)",
            )
            .bind(&id)
            .bind(&prepared.id)
            .bind(&hook.id)
            .bind(prepared.at)
            .bind(order_key)
            .execute(&mut **tx)
            .await?;
            queued += 1;
        }
        ($crate::webhooks::event_from_row(row)?, queued)
    }};
}
pub(crate) use queue_event;

fn insert_secret_sql() -> String {
    format!(
        "INSERT INTO webhook_secrets (id, webhook_id, expires_at, key_id, nonce, ciphertext, \
         created_at) SELECT $1, $2, NULL, $3, $4, $5, $6 WHERE {}",
        key_is_current("$3")
    )
}

impl Store {
    fn seal_webhook_secret(
        &self,
        webhook_id: &str,
        secret_id: &str,
        secret: &WebhookSecret,
    ) -> Result<Sealed, StoreError> {
        let mut plain = secret.expose().into_bytes();
        let sealed = self
            .inner
            .keys
            .seal(&WEBHOOK_SECRETS.aad(&[webhook_id, secret_id]), &plain);
        plain.zeroize();
        sealed
    }

    /// Creates a subscription with a fresh signing secret, returned only here (and by
    /// [`Store::rotate_webhook_secret`]).
    pub async fn create_webhook(
        &self,
        new: NewWebhook,
    ) -> Result<(Webhook, WebhookSecret), StoreError> {
        let types = validate_event_types(&new.event_types)?;
        let id = new_id();
        let secret = generate_secret()?;
        let at = now();
        let insert_secret = insert_secret_sql();
        for _ in 0..WRITE_ATTEMPTS {
            let secret_id = new_id();
            let sealed = self.seal_webhook_secret(&id, &secret_id, &secret)?;
            let row: Option<WebhookRow> = on_pool!(self.pool(), p => {
                let mut tx = p.begin().await?;
                let row: WebhookRow = sqlx::query_as(&format!(
                    "INSERT INTO webhooks ({WEBHOOK_COLUMNS}) VALUES \
                     ($1, $2, $3, $4, $5, $6, $7, $8, $9, NULL, $10, $10) RETURNING {WEBHOOK_COLUMNS}"
                ))
                .bind(&id)
                .bind(&new.environment_id)
                .bind(&new.target_url)
                .bind(&types)
                .bind(new.format.as_str())
                .bind(&new.tenant_id)
                .bind(&new.integrated_account_id)
                .bind(&new.workflow)
                .bind(new.is_active)
                .bind(at)
                .fetch_one(&mut *tx)
                .await?;
                let written = sqlx::query(&insert_secret)
                    .bind(&secret_id)
                    .bind(&id)
                    .bind(&sealed.key_id)
                    .bind(&sealed.nonce)
                    .bind(&sealed.ciphertext)
                    .bind(at)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                if written == 1 {
                    tx.commit().await?;
                    Some(row)
                } else {
                    tx.rollback().await?;
                    None
                }
            });
            match row {
                Some(row) => return Ok((webhook_from_row(row)?, secret)),
                None => self.refresh_store_key().await?,
            }
        }
        Err(key_changed())
    }

    pub async fn get_webhook(
        &self,
        environment_id: &str,
        id: &str,
    ) -> Result<Option<Webhook>, StoreError> {
        let row: Option<WebhookRow> = on_pool!(self.pool(), p => {
            sqlx::query_as(&format!(
                "SELECT {WEBHOOK_COLUMNS} FROM webhooks WHERE environment_id = $1 AND id = $2"
            ))
            .bind(environment_id)
            .bind(id)
            .fetch_optional(p)
            .await?
        });
        row.map(webhook_from_row).transpose()
    }

    /// One page of subscriptions in `(created_at, id)` order after `after` (a
    /// [`Webhook::page_key`]); `limit` is clamped to 1..=1000.
    pub async fn list_webhooks(
        &self,
        environment_id: &str,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<Webhook>, StoreError> {
        let (at, id) = parse_page_key(after)?;
        let rows: Vec<WebhookRow> = on_pool!(self.pool(), p => {
            sqlx::query_as(&format!(
                "SELECT {WEBHOOK_COLUMNS} FROM webhooks WHERE environment_id = $1 \
                 AND ($2 IS NULL OR created_at > $2 OR (created_at = $2 AND id > $3)) \
                 ORDER BY created_at, id LIMIT $4"
            ))
            .bind(environment_id)
            .bind(at)
            .bind(id)
            .bind(i64::from(limit.clamp(1, MAX_PAGE)))
            .fetch_all(p)
            .await?
        });
        rows.into_iter().map(webhook_from_row).collect()
    }

    /// Applies `patch`; `None` if there is no such subscription in this environment.
    /// Re-activating clears the failure streak.
    pub async fn update_webhook(
        &self,
        environment_id: &str,
        id: &str,
        patch: WebhookPatch,
    ) -> Result<Option<Webhook>, StoreError> {
        let Some(mut hook) = self.get_webhook(environment_id, id).await? else {
            return Ok(None);
        };
        if let Some(url) = patch.target_url {
            hook.target_url = url;
        }
        if let Some(types) = patch.event_types {
            hook.event_types = types;
        }
        let types = validate_event_types(&hook.event_types)?;
        if let Some(format) = patch.format {
            hook.format = format;
        }
        if let Some(tenant) = patch.tenant_id {
            hook.tenant_id = tenant;
        }
        if let Some(account) = patch.integrated_account_id {
            hook.integrated_account_id = account;
        }
        if let Some(workflow) = patch.workflow {
            hook.workflow = workflow;
        }
        if let Some(active) = patch.is_active {
            if active && !hook.is_active {
                hook.failing_since = None;
            }
            hook.is_active = active;
        }
        let row: Option<WebhookRow> = on_pool!(self.pool(), p => {
            sqlx::query_as(&format!(
                "UPDATE webhooks SET target_url = $3, event_types = $4, format = $5, \
                 tenant_id = $6, integrated_account_id = $7, workflow = $8, is_active = $9, \
                 failing_since = $10, updated_at = $11 WHERE environment_id = $1 AND id = $2 \
                 RETURNING {WEBHOOK_COLUMNS}"
            ))
            .bind(environment_id)
            .bind(id)
            .bind(&hook.target_url)
            .bind(&types)
            .bind(hook.format.as_str())
            .bind(&hook.tenant_id)
            .bind(&hook.integrated_account_id)
            .bind(&hook.workflow)
            .bind(hook.is_active)
            .bind(hook.failing_since)
            .bind(now())
            .fetch_optional(p)
            .await?
        });
        row.map(webhook_from_row).transpose()
    }

    /// Deletes the subscription with its secrets and deliveries; `false` if not found.
    pub async fn delete_webhook(&self, environment_id: &str, id: &str) -> Result<bool, StoreError> {
        let n = on_pool!(self.pool(), p => {
            sqlx::query("DELETE FROM webhooks WHERE environment_id = $1 AND id = $2")
                .bind(environment_id)
                .bind(id)
                .execute(p)
                .await?
                .rows_affected()
        });
        Ok(n > 0)
    }

    /// A new current secret; the one it replaces keeps signing until `grace` has passed
    /// (older ones are dropped). `None` if there is no such subscription.
    pub async fn rotate_webhook_secret(
        &self,
        environment_id: &str,
        id: &str,
        grace: Duration,
    ) -> Result<Option<WebhookSecret>, StoreError> {
        if self.get_webhook(environment_id, id).await?.is_none() {
            return Ok(None);
        }
        let secret = generate_secret()?;
        let insert_secret = insert_secret_sql();
        for _ in 0..WRITE_ATTEMPTS {
            let at = now();
            let expires = ttl_from(at, grace)?;
            let secret_id = new_id();
            let sealed = self.seal_webhook_secret(id, &secret_id, &secret)?;
            let written = on_pool!(self.pool(), p => {
                let mut tx = p.begin().await?;
                sqlx::query(
                    "DELETE FROM webhook_secrets WHERE webhook_id = $1 AND expires_at IS NOT NULL",
                )
                .bind(id)
                .execute(&mut *tx)
                .await?;
                sqlx::query(
                    "UPDATE webhook_secrets SET expires_at = $2 WHERE webhook_id = $1 \
                     AND expires_at IS NULL",
                )
                .bind(id)
                .bind(expires)
                .execute(&mut *tx)
                .await?;
                let n = sqlx::query(&insert_secret)
                    .bind(&secret_id)
                    .bind(id)
                    .bind(&sealed.key_id)
                    .bind(&sealed.nonce)
                    .bind(&sealed.ciphertext)
                    .bind(at)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                if n == 1 {
                    tx.commit().await?;
                    true
                } else {
                    tx.rollback().await?;
                    false
                }
            });
            if written {
                return Ok(Some(secret));
            }
            self.refresh_store_key().await?;
        }
        Err(key_changed())
    }

    /// The secrets a delivery is signed with: current first, then an unexpired previous.
    pub async fn webhook_secrets(
        &self,
        webhook_id: &str,
    ) -> Result<Vec<WebhookSecret>, StoreError> {
        type SecretRow = (String, String, Vec<u8>, Vec<u8>);
        let rows: Vec<SecretRow> = on_pool!(self.pool(), p => {
            sqlx::query_as(
                "SELECT id, key_id, nonce, ciphertext FROM webhook_secrets WHERE webhook_id = $1 \
                 AND (expires_at IS NULL OR expires_at > $2) \
                 ORDER BY (expires_at IS NOT NULL), created_at DESC",
            )
            .bind(webhook_id)
            .bind(now())
            .fetch_all(p)
            .await?
        });
        rows.into_iter()
            .map(|(secret_id, key_id, nonce, ciphertext)| {
                let sealed = Sealed {
                    key_id,
                    nonce,
                    ciphertext,
                };
                let mut plain = self
                    .inner
                    .keys
                    .open(&WEBHOOK_SECRETS.aad(&[webhook_id, &secret_id]), &sealed)?;
                let parsed = std::str::from_utf8(&plain)
                    .ok()
                    .and_then(|text| WebhookSecret::parse(text).ok());
                plain.zeroize();
                parsed.ok_or_else(|| StoreError::Corrupt(format!("webhook {webhook_id}: secret")))
            })
            .collect()
    }

    /// Logs `event` and, in the same transaction, queues one delivery to every active
    /// subscription of its environment that wants it (or to `only_webhook` alone).
    /// Returns the event and the number of deliveries queued.
    pub async fn record_event(&self, event: NewEvent) -> Result<(Event, usize), StoreError> {
        let prepared = PreparedEvent::new(event)?;
        on_pool!(self.pool(), p => {
            let mut tx = p.begin().await?;
            let recorded = queue_event!(&mut tx, prepared);
            tx.commit().await?;
            Ok(recorded)
        })
    }

    /// The page key of the environment's newest event (where a live tail starts).
    pub async fn latest_event_key(
        &self,
        environment_id: &str,
    ) -> Result<Option<String>, StoreError> {
        let row: Option<(DateTime<Utc>, String)> = on_pool!(self.pool(), p => {
            sqlx::query_as(
                "SELECT created_at, id FROM events WHERE environment_id = $1 \
                 ORDER BY created_at DESC, id DESC LIMIT 1",
            )
            .bind(environment_id)
            .fetch_optional(p)
            .await?
        });
        Ok(row.map(|(at, id)| page_key(at, &id)))
    }

    /// Drops events older than `before` whose deliveries are all settled (delivered or
    /// failed); their deliveries go with them. Returns how many events went.
    pub async fn prune_events(&self, before: DateTime<Utc>) -> Result<u64, StoreError> {
        Ok(on_pool!(self.pool(), p => {
            sqlx::query(
                "DELETE FROM events WHERE created_at < $1 AND NOT EXISTS \
                 (SELECT 1 FROM webhook_deliveries d WHERE d.event_id = events.id \
                  AND d.status = 'pending')",
            )
            .bind(before)
            .execute(p)
            .await?
            .rows_affected()
        }))
    }

    /// Deliveries still to make, and when the oldest of them was queued.
    pub async fn outbox_backlog(&self) -> Result<(u64, Option<DateTime<Utc>>), StoreError> {
        let (count, oldest): (i64, Option<DateTime<Utc>>) = on_pool!(self.pool(), p => {
            sqlx::query_as(
                "SELECT COUNT(*), MIN(created_at) FROM webhook_deliveries WHERE status = 'pending'",
            )
            .fetch_one(p)
            .await?
        });
        Ok((u64::try_from(count).unwrap_or(0), oldest))
    }

    pub async fn get_event(
        &self,
        environment_id: &str,
        id: &str,
    ) -> Result<Option<Event>, StoreError> {
        let row: Option<EventRow> = on_pool!(self.pool(), p => {
            sqlx::query_as(&format!(
                "SELECT {EVENT_COLUMNS} FROM events WHERE environment_id = $1 AND id = $2"
            ))
            .bind(environment_id)
            .bind(id)
            .fetch_optional(p)
            .await?
        });
        row.map(event_from_row).transpose()
    }

    /// One page of the event log, oldest first, after `after` (an [`Event::page_key`]).
    pub async fn list_events(
        &self,
        environment_id: &str,
        filter: &EventFilter,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<Event>, StoreError> {
        let (at, id) = parse_page_key(after)?;
        let rows: Vec<EventRow> = on_pool!(self.pool(), p => {
            sqlx::query_as(&format!(
                "SELECT {EVENT_COLUMNS} FROM events WHERE environment_id = $1 \
                 AND ($2 IS NULL OR event_type = $2) \
                 AND ($3 IS NULL OR integrated_account_id = $3) \
                 AND ($4 IS NULL OR tenant_id = $4) \
                 AND ($5 IS NULL OR created_at > $5 OR (created_at = $5 AND id > $6)) \
                 ORDER BY created_at, id LIMIT $7"
            ))
            .bind(environment_id)
            .bind(&filter.event_type)
            .bind(&filter.integrated_account_id)
            .bind(&filter.tenant_id)
            .bind(at)
            .bind(id)
            .bind(i64::from(limit.clamp(1, MAX_PAGE)))
            .fetch_all(p)
            .await?
        });
        rows.into_iter().map(event_from_row).collect()
    }

    /// One page of a subscription's deliveries, oldest first, after `after` (a
    /// [`Delivery::page_key`]). The caller checks the subscription's environment.
    pub async fn list_deliveries(
        &self,
        webhook_id: &str,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<Delivery>, StoreError> {
        let (at, id) = parse_page_key(after)?;
        let rows: Vec<DeliveryRow> = on_pool!(self.pool(), p => {
            sqlx::query_as(&format!(
                "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries WHERE webhook_id = $1 \
                 AND ($2 IS NULL OR created_at > $2 OR (created_at = $2 AND id > $3)) \
                 ORDER BY created_at, id LIMIT $4"
            ))
            .bind(webhook_id)
            .bind(at)
            .bind(id)
            .bind(i64::from(limit.clamp(1, MAX_PAGE)))
            .fetch_all(p)
            .await?
        });
        rows.into_iter().map(delivery_from_row).collect()
    }

    /// The environment's latest deliveries, newest first. With `failing`, only those
    /// not delivered whose last attempt failed (given up on, or waiting for a retry).
    pub async fn recent_deliveries(
        &self,
        environment_id: &str,
        failing: bool,
        limit: u32,
    ) -> Result<Vec<Delivery>, StoreError> {
        let rows: Vec<DeliveryRow> = on_pool!(self.pool(), p => {
            sqlx::query_as(&format!(
                "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries \
                 WHERE webhook_id IN (SELECT id FROM webhooks WHERE environment_id = $1) \
                 AND ($2 = 0 OR (status <> 'delivered' AND last_error IS NOT NULL)) \
                 ORDER BY updated_at DESC, id DESC LIMIT $3"
            ))
            .bind(environment_id)
            .bind(i64::from(failing))
            .bind(i64::from(limit.clamp(1, MAX_PAGE)))
            .fetch_all(p)
            .await?
        });
        rows.into_iter().map(delivery_from_row).collect()
    }

    /// How many of the environment's deliveries are failing, as
    /// [`Store::recent_deliveries`] with `failing` counts them.
    pub async fn count_failing_deliveries(&self, environment_id: &str) -> Result<u64, StoreError> {
        let count: i64 = on_pool!(self.pool(), p => {
            sqlx::query_scalar(
                "SELECT COUNT(*) FROM webhook_deliveries \
                 WHERE webhook_id IN (SELECT id FROM webhooks WHERE environment_id = $1) \
                 AND status <> 'delivered' AND last_error IS NOT NULL",
            )
            .bind(environment_id)
            .fetch_one(p)
            .await?
        });
        Ok(u64::try_from(count).unwrap_or(0))
    }

    pub async fn get_delivery(
        &self,
        webhook_id: &str,
        id: &str,
    ) -> Result<Option<Delivery>, StoreError> {
        let row: Option<DeliveryRow> = on_pool!(self.pool(), p => {
            sqlx::query_as(&format!(
                "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries WHERE webhook_id = $1 AND id = $2"
            ))
            .bind(webhook_id)
            .bind(id)
            .fetch_optional(p)
            .await?
        });
        row.map(delivery_from_row).transpose()
    }

    /// Schedules the delivery again now, with a fresh retry schedule (its attempts are
    /// kept). `None` if not found; a delivery in flight is a conflict.
    pub async fn redeliver(
        &self,
        webhook_id: &str,
        id: &str,
    ) -> Result<Option<Delivery>, StoreError> {
        let at = now();
        let row: Option<DeliveryRow> = on_pool!(self.pool(), p => {
            sqlx::query_as(&format!(
                "UPDATE webhook_deliveries SET status = 'pending', attempts = 0, \
                 next_attempt_at = $3, updated_at = $3 WHERE webhook_id = $1 AND id = $2 \
                 AND (lease_until IS NULL OR lease_until <= $3) RETURNING {DELIVERY_COLUMNS}"
            ))
            .bind(webhook_id)
            .bind(id)
            .bind(at)
            .fetch_optional(p)
            .await?
        });
        match row {
            Some(row) => delivery_from_row(row).map(Some),
            None if self.get_delivery(webhook_id, id).await?.is_some() => Err(
                StoreError::Conflict("the delivery is being attempted right now".into()),
            ),
            None => Ok(None),
        }
    }

    /// Takes the lease (for `ttl`) of up to `limit` due deliveries for `holder`: only the
    /// oldest pending delivery of each order key of an active subscription qualifies, so
    /// a subscription gets a job's events one at a time and in order, while a delivery
    /// waiting for its retry holds back nothing else. PostgreSQL skips rows another
    /// worker is claiming (`FOR UPDATE SKIP LOCKED`); SQLite claims in one statement
    /// under its single writer.
    pub async fn claim_deliveries(
        &self,
        holder: &str,
        limit: u32,
        ttl: Duration,
    ) -> Result<Vec<ClaimedDelivery>, StoreError> {
        let at = now();
        let until = ttl_from(at, ttl)?;
        // Due deliveries in due order (the `due` index), each kept only when no older
        // delivery of its key is pending (one probe of the `order` index). A key holds a
        // job's few events, so the scan passes over few held-back rows to fill a batch,
        // whatever the backlog.
        let due = "SELECT d.id FROM webhook_deliveries d \
             JOIN webhooks w ON w.id = d.webhook_id \
             WHERE d.status = 'pending' AND d.next_attempt_at <= $1 \
             AND (d.lease_until IS NULL OR d.lease_until <= $1) AND w.is_active \
             AND NOT EXISTS (SELECT 1 FROM webhook_deliveries o \
             WHERE o.webhook_id = d.webhook_id AND o.order_key = d.order_key \
             AND o.status = 'pending' \
             AND (o.created_at < d.created_at OR (o.created_at = d.created_at AND o.id < d.id))) \
             ORDER BY d.next_attempt_at LIMIT $2";
        let lease = "UPDATE webhook_deliveries SET lease_holder = $3, lease_until = $4";
        let limit = i64::from(limit.clamp(1, MAX_PAGE));
        let rows: Vec<DeliveryRow> = on_pool!(self.pool(), p => {
            let sql = match self.backend() {
                crate::Backend::Postgres => format!(
                    "WITH due AS ({due} FOR UPDATE OF d SKIP LOCKED) {lease} FROM due \
                     WHERE webhook_deliveries.id = due.id RETURNING {}",
                    DELIVERY_COLUMNS
                        .split(", ")
                        .map(|c| format!("webhook_deliveries.{c}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                crate::Backend::Sqlite => format!(
                    "{lease} WHERE id IN ({due}) RETURNING {DELIVERY_COLUMNS}"
                ),
            };
            sqlx::query_as(&sql)
                .bind(at)
                .bind(limit)
                .bind(holder)
                .bind(until)
                .fetch_all(p)
                .await?
        });
        let mut claimed = Vec::with_capacity(rows.len());
        for row in rows {
            let delivery = delivery_from_row(row)?;
            let hook: Option<WebhookRow> = on_pool!(self.pool(), p => {
                sqlx::query_as(&format!("SELECT {WEBHOOK_COLUMNS} FROM webhooks WHERE id = $1"))
                    .bind(&delivery.webhook_id)
                    .fetch_optional(p)
                    .await?
            });
            let event: Option<EventRow> = on_pool!(self.pool(), p => {
                sqlx::query_as(&format!("SELECT {EVENT_COLUMNS} FROM events WHERE id = $1"))
                    .bind(&delivery.event_id)
                    .fetch_optional(p)
                    .await?
            });
            // Deleted meanwhile (cascade): nothing left to deliver.
            let (Some(hook), Some(event)) = (hook, event) else {
                continue;
            };
            claimed.push(ClaimedDelivery {
                secrets: self.webhook_secrets(&delivery.webhook_id).await?,
                webhook: webhook_from_row(hook)?,
                event: event_from_row(event)?,
                delivery,
            });
        }
        Ok(claimed)
    }

    /// Frees the leases `holder` holds on pending deliveries it is not attempting
    /// (`busy`): a claim whose answer was lost with the database leaves leases its worker
    /// never saw, which would otherwise wait out their whole term. Returns how many.
    pub async fn release_leases(&self, holder: &str, busy: &[&str]) -> Result<u64, StoreError> {
        let mut sql = "UPDATE webhook_deliveries SET lease_holder = NULL, lease_until = NULL \
                       WHERE status = 'pending' AND lease_holder = $1"
            .to_owned();
        if !busy.is_empty() {
            let params: Vec<String> = (2..busy.len() + 2).map(|n| format!("${n}")).collect();
            sql.push_str(&format!(" AND id NOT IN ({})", params.join(", ")));
        }
        Ok(on_pool!(self.pool(), p => {
            let mut query = sqlx::query(&sql).bind(holder);
            for id in busy {
                query = query.bind(*id);
            }
            query.execute(p).await?.rows_affected()
        }))
    }

    /// Records one attempt of a delivery `holder` has claimed and releases the lease.
    /// `false` (nothing written) if the lease was lost to another worker meanwhile.
    pub async fn finish_attempt(
        &self,
        claimed: &Delivery,
        holder: &str,
        attempt: DeliveryAttempt,
        outcome: AttemptOutcome,
    ) -> Result<bool, StoreError> {
        let at = now();
        let mut log = claimed.attempts.clone();
        let error = attempt.error.clone().or_else(|| {
            attempt
                .response_status
                .filter(|s| !(200..300).contains(s))
                .map(|s| format!("the receiver answered {s}"))
        });
        log.push(attempt);
        let log = serde_json::to_string(&log).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let (status, next) = match &outcome {
            AttemptOutcome::Delivered => (DeliveryStatus::Delivered, at),
            AttemptOutcome::Retry(next) => (DeliveryStatus::Pending, *next),
            AttemptOutcome::Exhausted | AttemptOutcome::Gone => (DeliveryStatus::Failed, at),
        };
        let last_error = match outcome {
            AttemptOutcome::Delivered => None,
            _ => error,
        };
        let round = i32::try_from(claimed.round_attempts.saturating_add(1)).unwrap_or(i32::MAX);
        let hook_update = match outcome {
            AttemptOutcome::Delivered => {
                "UPDATE webhooks SET failing_since = NULL WHERE id = $1 AND failing_since <= $2"
            }
            AttemptOutcome::Gone => {
                "UPDATE webhooks SET is_active = FALSE, failing_since = COALESCE(failing_since, $2), \
                 updated_at = $2 WHERE id = $1"
            }
            _ => "UPDATE webhooks SET failing_since = COALESCE(failing_since, $2) WHERE id = $1",
        };
        on_pool!(self.pool(), p => {
            let mut tx = p.begin().await?;
            let n = sqlx::query(
                "UPDATE webhook_deliveries SET status = $3, attempts = $4, attempt_log = $5, \
                 next_attempt_at = $6, last_error = $7, lease_holder = NULL, lease_until = NULL, \
                 updated_at = $8 WHERE id = $1 AND lease_holder = $2 AND lease_until > $8",
            )
            .bind(&claimed.id)
            .bind(holder)
            .bind(status.as_str())
            .bind(round)
            .bind(&log)
            .bind(next)
            .bind(&last_error)
            .bind(at)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if n == 0 {
                tx.rollback().await?;
                return Ok(false);
            }
            sqlx::query(hook_update)
                .bind(&claimed.webhook_id)
                .bind(at)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok(true)
        })
    }
}
