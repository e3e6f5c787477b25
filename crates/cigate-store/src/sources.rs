//! Where an account's job events come from and what the change detector remembers.
//!
//! An account's event source holds the random path token and shared secret of the
//! provider webhook that points back at cigate, what was registered with the provider,
//! and the poller's lease and change markers. The detector's memory is one row per job;
//! [`Store::observe_job`] writes a job's new state and the events it causes in one
//! transaction (the outbox), and a compare-and-swap on the previous state makes the
//! same change seen twice (a provider retrying its webhook, webhook and poll both
//! seeing it, two instances) cause its events once.

use std::time::Duration;

use chrono::{DateTime, Utc};
use cigate_core::events::JobState;
use cigate_core::Secret;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use zeroize::Zeroize;

use crate::crypto::Sealed;
use crate::db::on_pool;
use crate::keys::{key_changed, key_is_current, EVENT_SOURCES, WRITE_ATTEMPTS};
use crate::webhooks::{queue_event, PreparedEvent};
use crate::{now, ttl_from, Event, NewEvent, Store, StoreError};

/// Random bytes of a path token and of a shared secret.
const RANDOM_BYTES: usize = 32;
/// Attempts of a job's compare-and-swap before giving up on a hot row.
const OBSERVE_ATTEMPTS: usize = 8;

/// An account's event source.
#[derive(Clone, Debug)]
pub struct EventSource {
    pub account_id: String,
    /// The last path segment of the incoming webhook URL.
    pub hook_token: Secret,
    /// The shared secret the provider sends with every delivery.
    pub hook_secret: Secret,
    /// What is registered with the provider (provider-specific, for repair and removal).
    pub hooks: Value,
    /// Why registering failed last, if it did.
    pub hooks_error: Option<String>,
    /// When registration last ran (either way).
    pub hooks_at: Option<DateTime<Utc>>,
    /// When a genuine provider webhook last arrived.
    pub hook_seen_at: Option<DateTime<Utc>>,
    /// The poller's change markers (provider-specific).
    pub markers: Value,
    pub polled_at: Option<DateTime<Utc>>,
}

/// An account due for a poll.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PollCandidate {
    pub account_id: String,
    pub environment_id: String,
}

#[derive(Serialize, Deserialize)]
struct SealedPair {
    token: String,
    secret: String,
}

type SourceRow = (
    String,
    String,
    Vec<u8>,
    Vec<u8>,
    String,
    Option<String>,
    Option<DateTime<Utc>>,
    Option<DateTime<Utc>>,
    String,
    Option<DateTime<Utc>>,
);

const SOURCE_COLUMNS: &str = "account_id, key_id, nonce, ciphertext, hooks, hooks_error, \
     hooks_at, hook_seen_at, markers, polled_at";

fn random_text() -> String {
    use base64::Engine as _;
    let mut bytes = [0u8; RANDOM_BYTES];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    let text = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    bytes.zeroize();
    text
}

fn candidates(rows: Vec<(String, String)>) -> Vec<PollCandidate> {
    rows.into_iter()
        .map(|(account_id, environment_id)| PollCandidate {
            account_id,
            environment_id,
        })
        .collect()
}

fn json_text(value: &Value) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(|e| StoreError::InvalidInput(e.to_string()))
}

fn state_text(state: &JobState) -> Result<String, StoreError> {
    serde_json::to_string(state).map_err(|e| StoreError::InvalidInput(e.to_string()))
}

impl Store {
    fn open_source(&self, row: SourceRow) -> Result<EventSource, StoreError> {
        let (
            account_id,
            key_id,
            nonce,
            ciphertext,
            hooks,
            hooks_error,
            hooks_at,
            seen,
            markers,
            polled,
        ) = row;
        let sealed = Sealed {
            key_id,
            nonce,
            ciphertext,
        };
        let mut plain = self
            .inner
            .keys
            .open(&EVENT_SOURCES.aad(&[&account_id]), &sealed)?;
        let pair: Option<SealedPair> = serde_json::from_slice(&plain).ok();
        plain.zeroize();
        let pair =
            pair.ok_or_else(|| StoreError::Corrupt(format!("event source {account_id}: secret")))?;
        let parse = |text: &str, what: &str| {
            serde_json::from_str(text)
                .map_err(|_| StoreError::Corrupt(format!("event source {account_id}: {what}")))
        };
        Ok(EventSource {
            hook_token: Secret::new(pair.token),
            hook_secret: Secret::new(pair.secret),
            hooks: parse(&hooks, "hooks")?,
            hooks_error,
            hooks_at,
            hook_seen_at: seen,
            markers: parse(&markers, "markers")?,
            polled_at: polled,
            account_id,
        })
    }

    /// The account's event source, if one was made.
    pub async fn event_source(&self, account_id: &str) -> Result<Option<EventSource>, StoreError> {
        let row: Option<SourceRow> = on_pool!(self.pool(), p => {
            sqlx::query_as(&format!(
                "SELECT {SOURCE_COLUMNS} FROM event_sources WHERE account_id = $1"
            ))
            .bind(account_id)
            .fetch_optional(p)
            .await?
        });
        row.map(|row| self.open_source(row)).transpose()
    }

    /// The account's event source, made with a fresh path token and secret when it has
    /// none (concurrent callers all get the one that was written first). Unknown
    /// account → [`StoreError::NotFound`].
    pub async fn ensure_event_source(&self, account_id: &str) -> Result<EventSource, StoreError> {
        for _ in 0..WRITE_ATTEMPTS {
            if let Some(source) = self.event_source(account_id).await? {
                return Ok(source);
            }
            let mut plain = serde_json::to_vec(&SealedPair {
                token: random_text(),
                secret: random_text(),
            })
            .map_err(|e| StoreError::InvalidInput(e.to_string()))?;
            let sealed = self
                .inner
                .keys
                .seal(&EVENT_SOURCES.aad(&[account_id]), &plain);
            plain.zeroize();
            let sealed = sealed?;
            let insert = format!(
                "INSERT INTO event_sources (account_id, key_id, nonce, ciphertext, hooks, \
                 markers, created_at) SELECT $1, $2, $3, $4, '[]', '{{}}', $5 \
                 WHERE {} AND EXISTS (SELECT 1 FROM accounts WHERE id = $1) \
                 ON CONFLICT (account_id) DO NOTHING",
                key_is_current("$2")
            );
            let written = on_pool!(self.pool(), p => {
                sqlx::query(&insert)
                    .bind(account_id)
                    .bind(&sealed.key_id)
                    .bind(&sealed.nonce)
                    .bind(&sealed.ciphertext)
                    .bind(now())
                    .execute(p)
                    .await?
                    .rows_affected()
            });
            if written == 0 {
                if let Some(source) = self.event_source(account_id).await? {
                    return Ok(source);
                }
                if self.account_exists(account_id).await? {
                    // The store key changed under us: seal again with the new one.
                    self.refresh_store_key().await?;
                    continue;
                }
                return Err(StoreError::NotFound);
            }
        }
        Err(key_changed())
    }

    async fn account_exists(&self, account_id: &str) -> Result<bool, StoreError> {
        let n: i64 = on_pool!(self.pool(), p => {
            sqlx::query_scalar("SELECT COUNT(*) FROM accounts WHERE id = $1")
                .bind(account_id)
                .fetch_one(p)
                .await?
        });
        Ok(n > 0)
    }

    /// Records what registering the provider webhook left behind (`error`: why it
    /// failed, with `hooks` what is still known to be registered).
    pub async fn record_hooks(
        &self,
        account_id: &str,
        hooks: &Value,
        error: Option<&str>,
    ) -> Result<(), StoreError> {
        let text = json_text(hooks)?;
        on_pool!(self.pool(), p => {
            sqlx::query(
                "UPDATE event_sources SET hooks = $2, hooks_error = $3, hooks_at = $4 \
                 WHERE account_id = $1",
            )
            .bind(account_id)
            .bind(&text)
            .bind(error)
            .bind(now())
            .execute(p)
            .await?;
        });
        Ok(())
    }

    /// Claims the registration of the account's provider webhook: `false` when one was
    /// started within `window` (by this or another instance), so instances starting
    /// together do not both create one.
    pub async fn claim_hooks(
        &self,
        account_id: &str,
        window: Duration,
    ) -> Result<bool, StoreError> {
        let at = now();
        let since = at
            - chrono::Duration::from_std(window)
                .map_err(|_| StoreError::InvalidInput("claim window too long".into()))?;
        let n = on_pool!(self.pool(), p => {
            sqlx::query(
                "UPDATE event_sources SET hooks_at = $2 WHERE account_id = $1 \
                 AND (hooks_at IS NULL OR hooks_at < $3)",
            )
            .bind(account_id)
            .bind(at)
            .bind(since)
            .execute(p)
            .await?
            .rows_affected()
        });
        Ok(n > 0)
    }

    /// Notes that a genuine provider webhook arrived (it keeps the poller slow).
    pub async fn note_hook_seen(&self, account_id: &str) -> Result<(), StoreError> {
        on_pool!(self.pool(), p => {
            sqlx::query("UPDATE event_sources SET hook_seen_at = $2 WHERE account_id = $1")
                .bind(account_id)
                .bind(now())
                .execute(p)
                .await?;
        });
        Ok(())
    }

    /// Active accounts whose last poll ended before `polled_before` (or never ran) and
    /// that no poller holds, least recently polled first. Accounts with a registered
    /// provider webhook that works (no `hooks_error`) count as due only when their last
    /// poll ended before `hooked_polled_before` (the poll is then a safety net).
    pub async fn poll_candidates(
        &self,
        polled_before: DateTime<Utc>,
        hooked_polled_before: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<PollCandidate>, StoreError> {
        let rows: Vec<(String, String)> = on_pool!(self.pool(), p => {
            sqlx::query_as(
                "SELECT a.id, a.environment_id FROM accounts a \
                 LEFT JOIN event_sources s ON s.account_id = a.id \
                 WHERE a.status = 'active' \
                 AND (s.poll_until IS NULL OR s.poll_until <= $1) \
                 AND (s.polled_at IS NULL \
                      OR ((s.hooks = '[]' OR s.hooks_error IS NOT NULL) AND s.polled_at <= $2) \
                      OR s.polled_at <= $3) \
                 ORDER BY s.polled_at IS NOT NULL, s.polled_at, a.id LIMIT $4",
            )
            .bind(now())
            .bind(polled_before)
            .bind(hooked_polled_before)
            .bind(i64::from(limit))
            .fetch_all(p)
            .await?
        });
        Ok(candidates(rows))
    }

    /// Active accounts whose provider webhook was last registered before `before` (or
    /// never), in id order after `after`: registration at start-up and its repair.
    pub async fn hook_candidates(
        &self,
        before: DateTime<Utc>,
        after: &str,
        limit: u32,
    ) -> Result<Vec<PollCandidate>, StoreError> {
        let rows: Vec<(String, String)> = on_pool!(self.pool(), p => {
            sqlx::query_as(
                "SELECT a.id, a.environment_id FROM accounts a \
                 LEFT JOIN event_sources s ON s.account_id = a.id \
                 WHERE a.status = 'active' AND a.id > $1 \
                 AND (s.hooks_at IS NULL OR s.hooks_at < $2) ORDER BY a.id LIMIT $3",
            )
            .bind(after)
            .bind(before)
            .bind(i64::from(limit))
            .fetch_all(p)
            .await?
        });
        Ok(candidates(rows))
    }

    /// Takes the account's poll lease for `ttl` when it is free, expired or already
    /// `holder`'s (which renews it): several instances never poll one account at once.
    /// Returns the event source as the lease found it (markers as the last poll left
    /// them), or `None` when another holder has it. The account's event source is made
    /// first if it has none.
    pub async fn try_poll_lease(
        &self,
        account_id: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<Option<EventSource>, StoreError> {
        let take = format!(
            "UPDATE event_sources SET poll_holder = $2, poll_until = $3 \
             WHERE account_id = $1 \
             AND (poll_until IS NULL OR poll_until <= $4 OR poll_holder = $2) \
             RETURNING {SOURCE_COLUMNS}"
        );
        for made in [false, true] {
            let at = now();
            let until = ttl_from(at, ttl)?;
            let row: Option<SourceRow> = on_pool!(self.pool(), p => {
                sqlx::query_as(&take)
                    .bind(account_id)
                    .bind(holder)
                    .bind(until)
                    .bind(at)
                    .fetch_optional(p)
                    .await?
            });
            if let Some(row) = row {
                return self.open_source(row).map(Some);
            }
            if made || self.event_source(account_id).await?.is_some() {
                return Ok(None);
            }
            self.ensure_event_source(account_id).await?;
        }
        Ok(None)
    }

    /// Ends `holder`'s poll of the account: keeps the new change markers (when given)
    /// and frees the lease. `false` if the lease was no longer `holder`'s.
    pub async fn finish_poll(
        &self,
        account_id: &str,
        holder: &str,
        markers: Option<&Value>,
    ) -> Result<bool, StoreError> {
        let text = markers.map(json_text).transpose()?;
        let n = on_pool!(self.pool(), p => {
            sqlx::query(
                "UPDATE event_sources SET markers = COALESCE($3, markers), polled_at = $4, \
                 poll_holder = NULL, poll_until = NULL \
                 WHERE account_id = $1 AND poll_holder = $2",
            )
            .bind(account_id)
            .bind(holder)
            .bind(text)
            .bind(now())
            .execute(p)
            .await?
            .rows_affected()
        });
        Ok(n > 0)
    }

    /// What the detector last saw of a job.
    pub async fn job_state(
        &self,
        account_id: &str,
        job_key: &str,
    ) -> Result<Option<(JobState, DateTime<Utc>)>, StoreError> {
        let row: Option<(String, DateTime<Utc>)> = on_pool!(self.pool(), p => {
            sqlx::query_as(
                "SELECT state, updated_at FROM job_states WHERE account_id = $1 AND job_key = $2",
            )
            .bind(account_id)
            .bind(job_key)
            .fetch_optional(p)
            .await?
        });
        row.map(|(text, at)| {
            serde_json::from_str(&text)
                .map(|state| (state, at))
                .map_err(|_| StoreError::Corrupt(format!("job state {account_id}/{job_key}")))
        })
        .transpose()
    }

    /// Records that the job `job_key` of the account was in state `current` as read at
    /// `read_at` (taken before the read was sent), with the events `events_for` derives
    /// from the state seen before (`None`: never seen), in one transaction. Returns the
    /// events recorded and the deliveries they queued: none when the state is the one
    /// already known, or when a read taken later has been recorded meanwhile (a stale
    /// read never moves a job backwards).
    pub async fn observe_job<F>(
        &self,
        account_id: &str,
        job_key: &str,
        read_at: DateTime<Utc>,
        current: &JobState,
        events_for: F,
    ) -> Result<(Vec<Event>, usize), StoreError>
    where
        F: Fn(Option<&JobState>) -> Vec<NewEvent>,
    {
        let text = state_text(current)?;
        for _ in 0..OBSERVE_ATTEMPTS {
            let previous = self.job_state(account_id, job_key).await?;
            if let Some((state, at)) = &previous {
                if state == current || *at > read_at {
                    return Ok((Vec::new(), 0));
                }
            }
            let previous_text = previous
                .as_ref()
                .map(|(state, _)| state_text(state))
                .transpose()?;
            let prepared = events_for(previous.as_ref().map(|(state, _)| state))
                .into_iter()
                .map(PreparedEvent::new)
                .collect::<Result<Vec<_>, _>>()?;
            let outcome: Option<(Vec<Event>, usize)> = on_pool!(self.pool(), p => {
                let mut tx = p.begin().await?;
                // The swap is the transaction's first statement, so on SQLite it takes
                // the write lock before anything is read.
                let swapped = match &previous_text {
                    None => sqlx::query(
                        "INSERT INTO job_states (account_id, job_key, state, updated_at) \
                         SELECT $1, $2, $3, $4 WHERE EXISTS (SELECT 1 FROM accounts WHERE id = $1) \
                         ON CONFLICT (account_id, job_key) DO NOTHING",
                    )
                    .bind(account_id)
                    .bind(job_key)
                    .bind(&text)
                    .bind(read_at)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected(),
                    Some(before) => sqlx::query(
                        "UPDATE job_states SET state = $3, updated_at = $4 \
                         WHERE account_id = $1 AND job_key = $2 AND state = $5",
                    )
                    .bind(account_id)
                    .bind(job_key)
                    .bind(&text)
                    .bind(read_at)
                    .bind(before)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected(),
                };
                if swapped == 1 {
                    let mut events = Vec::with_capacity(prepared.len());
                    let mut queued = 0;
                    for event in prepared {
                        let (event, n) = queue_event!(&mut tx, event);
                        events.push(event);
                        queued += n;
                    }
                    tx.commit().await?;
                    Some((events, queued))
                } else {
                    tx.rollback().await?;
                    None
                }
            });
            match outcome {
                Some(outcome) => return Ok(outcome),
                None if previous.is_none() && !self.account_exists(account_id).await? => {
                    return Err(StoreError::NotFound)
                }
                None => continue,
            }
        }
        Err(StoreError::Conflict(format!(
            "job {job_key} of account {account_id} changed too often to record"
        )))
    }

    /// Forgets jobs the detector has not seen change since `before` (with the events
    /// log's retention): a job that old reappearing counts as new.
    pub async fn prune_job_states(&self, before: DateTime<Utc>) -> Result<u64, StoreError> {
        Ok(on_pool!(self.pool(), p => {
            sqlx::query("DELETE FROM job_states WHERE updated_at < $1")
                .bind(before)
                .execute(p)
                .await?
                .rows_affected()
        }))
    }
}
