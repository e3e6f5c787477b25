//! Persistence for cigate: environments, API tokens, integrated accounts with encrypted
//! credentials, and the small coordination tables (idempotency records, refresh leases,
//! link tokens, OAuth states) that let several server instances share one database.
//!
//! # Backends
//! [`Store::connect`] picks the backend from the URL: `sqlite://path/cigate.db` (file and
//! parent directory created on first run; WAL journal, foreign keys on, 10 s busy
//! timeout; `sqlite::memory:` works for throwaway use) or `postgres://…`. Queries are
//! checked at run time (`sqlx::query` with binds), written once with `$N` placeholders
//! that both drivers accept; see `db.rs`. Migrations are versioned per backend in
//! `migrations/{sqlite,postgres}` and applied by [`Store::migrate`] (never by `connect`).
//! [`StoreOptions::schema`] puts every table of a PostgreSQL store in its own schema
//! (created if missing, `search_path` set on each pooled connection); tests use it to run
//! in parallel. Timestamps are produced by the store, truncated to microseconds, so both
//! backends return identical values and keyset pagination by `(created_at, id)` is exact.
//!
//! # Tenancy
//! Every account query takes the caller's `environment_id` and filters on it in SQL; an
//! account of another environment is indistinguishable from a missing one (`None` /
//! `false`). API tokens are `cgt_` + 43 characters of base64url (32 random bytes), stored
//! only as their SHA-256 (hex); authentication looks the hash up by unique index, so no
//! comparison over the plaintext happens.
//!
//! # Credential encryption
//! Each credential is serialized (a private plaintext struct, JSON) and sealed with
//! AES-256-GCM under the keyring's current key: a fresh random 96-bit nonce per write,
//! the **account id as associated data** (a ciphertext copied to another account's row
//! fails to open), and the key id stored beside it (`account_credentials.key_id`,
//! `nonce`, `ciphertext`). A key id is the first 8 hex digits of the SHA-256 of the key.
//! Account rows themselves hold no secret, and [`Account::context`] refuses secret-looking
//! keys (`api_key`, `password`, `*token*`, `*secret*`).
//!
//! Keys come from [`KeyConfig`]:
//! * `Env(value)`: the value of `CIGATE_MASTER_KEY` (read by the caller, not by this
//!   crate): base64 32-byte keys separated by commas, first one current, the others only
//!   decrypt.
//! * `File(path)`: a key file. Format: UTF-8 text, one base64 key per line, first line
//!   current, `#` comment lines ignored (the same syntax as the env value). If the file is
//!   missing and the database holds no encrypted data yet, it is created (mode 0600,
//!   exclusive create, so two processes starting together agree on one key). If the
//!   database already holds encrypted data, a missing file is a start-up error rather than
//!   a silently fresh key.
//! * `Keys(keyring)`: in memory.
//!
//! The `key_check` table holds a known plaintext sealed under the key that set the store
//! up (updated by rotation). `connect` (when the schema exists) and `migrate` open it and
//! open one sealed value per table and key id in use: a wrong or missing key fails start-up with
//! [`StoreError::Key`], naming key ids only, never returning garbage later.
//!
//! # Sealed secrets
//! Every secret at rest is sealed the same way (AES-256-GCM, key id beside it, a row's
//! identity as associated data) in `key_id`/`nonce`/`ciphertext` columns, and listed once
//! in `SEALED` (`keys.rs`): account credentials, each environment's OAuth client secret
//! (`environment_integrations`), the PKCE verifiers of OAuth round trips in flight
//! (`oauth_states`) and webhook signing secrets (`webhook_secrets`). Start-up
//! verification, rotation and its leftover count walk that list, so a new kind of
//! secret is one entry, written under the same `key_check` condition.
//!
//! # Rotation ([`Store::rotate_keys`]), without downtime
//! The `key_check` row also names the **store-wide current key**: every process
//! encrypts under that key when it holds it (its own first key otherwise), and a
//! sealed write only lands while that key is still the store's current one (the
//! `INSERT … SELECT … WHERE EXISTS (key_check …)` of `keys::key_is_current`); if a rotation
//! switched keys meanwhile, the write affects nothing and the writer re-reads the key
//! and seals again. So instances started with `CIGATE_MASTER_KEY=new,old` keep writing
//! under `old` until the rotation, and instances not yet redeployed keep working.
//! 1. With a key file or in-memory keyring: the new key (given, or generated) becomes
//!    current and the key file is rewritten atomically with the new key first and every
//!    old key after it. With `Env`, no key is added: the operator first deploys
//!    `CIGATE_MASTER_KEY=new,old` everywhere, then rotates, which moves rows onto `new`.
//! 2. `key_check` is resealed under the new key (the switch). On PostgreSQL the rotation
//!    then briefly takes `SHARE` on every table holding sealed values, which waits out any
//!    writer that checked the old key just before the switch.
//! 3. Every sealed value under another key is re-encrypted, in batches of 100, each row
//!    by its own compare-and-swap `UPDATE` (no long transaction; a row changed meanwhile
//!    is picked up by the next pass). Passes repeat until no value is left under an old key.
//! 4. The key file is rewritten with the current key only (old keys retired); with `Env`
//!    the report lists the key ids that can now be dropped from the variable.
//!
//! A process that meets a key id it does not know reloads the key file once before
//! failing, and before every encryption a process checks whether the key file changed
//! (inode, modification time, size) and reloads it. Keys a process has loaded stay
//! readable in that process until it restarts.
//!
//! # Other tables
//! `idempotency_records` (see [`Store::begin_idempotent`]), `refresh_leases` (see
//! [`Store::try_acquire_lease`]), `link_tokens` and `oauth_states` (see [`Store::create_link_token`],
//! [`Store::create_oauth_state`]), `account_events` ([`Store::record_account_event`]) and
//! `environment_integrations` ([`Store::put_environment_integration`]). Event
//! subscriptions, the event log and its delivery outbox: `webhooks`, `webhook_secrets`,
//! `events`, `webhook_deliveries` (see [`Store::record_event`], [`Store::claim_deliveries`]).
//! [`Store::purge_expired`] removes expired rows of all four. Status badges: `badges`
//! (see [`Store::create_badge`]; the id is the public view's only credential).

mod accounts;
mod badges;
mod crypto;
mod db;
mod error;
mod events;
mod idempotency;
mod integrations;
mod keys;
mod leases;
mod links;
mod model;
mod provisioned;
mod rate_units;
mod sources;
mod tokens;
mod ui_sessions;
mod webhooks;

use std::sync::Arc;

use chrono::{DateTime, SubsecRound, Utc};

pub use badges::{Badge, NewBadge, BADGE_PREFIX};
pub use cigate_core::Secret;
pub use crypto::{sqlite_key_file, KeyConfig, Keyring, MasterKey, KEY_FILE_NAME};
pub use db::Backend;
pub use error::StoreError;
pub use events::AccountEvent;
pub use idempotency::{Begin, IdempotencyKey, StoredResponse};
pub use integrations::EnvironmentIntegration;
pub use links::{LinkToken, NewLinkToken, NewOAuthState, OAuthState};
pub use model::{
    Account, AccountFilter, AccountPatch, AccountStatus, ApiToken, AuthMethod, Credential,
    Environment, NewAccount, RotationReport,
};
pub use provisioned::Provisioned;
pub use sources::{EventSource, PollCandidate};
pub use ui_sessions::UiSession;
pub use webhooks::{
    AttemptOutcome, ClaimedDelivery, Delivery, DeliveryAttempt, DeliveryStatus, Event, EventFilter,
    NewEvent, NewWebhook, Webhook, WebhookFormat, WebhookPatch,
};

use db::DbPool;
use keys::Keys;

/// Name of the environment [`Store::migrate`] guarantees.
pub const DEFAULT_ENVIRONMENT: &str = "default";

/// How to open a store.
#[derive(Clone, Debug)]
pub struct StoreOptions {
    /// PostgreSQL only: keep every table in this schema (created if missing).
    pub schema: Option<String>,
    pub max_connections: u32,
    pub key: KeyConfig,
    /// PostgreSQL only: how long a query waits for a connection (while the database is
    /// unreachable, connecting is retried this long) before failing as unavailable.
    pub acquire_timeout: std::time::Duration,
}

impl StoreOptions {
    pub fn new(key: KeyConfig) -> Self {
        Self {
            schema: None,
            max_connections: 10,
            key,
            acquire_timeout: std::time::Duration::from_secs(5),
        }
    }
}

/// The persistence layer. Cheap to clone; clones share the pool and keyring.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    pool: DbPool,
    keys: Keys,
    rotation: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("backend", &self.backend())
            .field("key_ids", &self.key_ids())
            .finish()
    }
}

impl Store {
    /// Opens the pool and loads the master key; checks the key against the data if the
    /// schema exists. Does not migrate.
    pub async fn connect(url: &str, opts: StoreOptions) -> Result<Store, StoreError> {
        let pool = db::connect(url, &opts).await?;
        let migrated = pool.table_exists("key_check").await?;
        let sentinel = if migrated {
            keys::read_key_check(&pool).await?
        } else {
            None
        };
        let keys = Keys::load(&opts.key, sentinel.as_ref().map(|s| s.key_id.as_str()))?;
        let store = Store {
            inner: Arc::new(Inner {
                pool,
                keys,
                rotation: tokio::sync::Mutex::new(()),
            }),
        };
        if migrated {
            store.verify_keys().await?;
        }
        Ok(store)
    }

    /// Applies pending migrations (safe to repeat, safe from several processes), makes
    /// sure the `default` environment exists and checks the master key against the data.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        self.inner.pool.migrate().await?;
        self.ensure_environment(DEFAULT_ENVIRONMENT).await?;
        self.verify_keys().await
    }

    /// The database answers and every migration of this build is applied.
    pub async fn ready(&self) -> Result<(), StoreError> {
        self.inner.pool.ready().await
    }

    pub fn backend(&self) -> Backend {
        self.inner.pool.backend()
    }

    /// Ids of the keys this process holds, current first.
    pub fn key_ids(&self) -> Vec<String> {
        self.inner.keys.key_ids()
    }

    /// Closes the pool (waits for connections in use to be returned).
    pub async fn close(&self) {
        on_pool!(&self.inner.pool, pool => pool.close().await)
    }

    fn pool(&self) -> &DbPool {
        &self.inner.pool
    }
}

/// Now, at the precision both backends store.
pub(crate) fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

pub(crate) fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

pub(crate) fn ttl_from(
    now: DateTime<Utc>,
    ttl: std::time::Duration,
) -> Result<DateTime<Utc>, StoreError> {
    chrono::Duration::from_std(ttl)
        .ok()
        .and_then(|d| now.checked_add_signed(d))
        .map(|t| t.trunc_subsecs(6))
        .ok_or_else(|| StoreError::InvalidInput("ttl out of range".into()))
}

pub(crate) use db::on_pool;
