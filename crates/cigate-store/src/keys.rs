//! The process's keyring, start-up verification and rotation.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Mutex, RwLock};

use zeroize::Zeroize;

use crate::crypto::{self, FileStamp, KeyConfig, Keyring, MasterKey, Sealed};
use crate::db::{on_pool, DbPool};
use crate::{now, RotationReport, Store, StoreError};

const KEY_CHECK_AAD: &[u8] = b"cigate:key-check";
const KEY_CHECK_PLAINTEXT: &[u8] = b"cigate master key check v1";
const ROTATION_BATCH: i64 = 100;
const ROTATION_PASSES: usize = 5;

/// A sealed write is retried this often when the store's key changed under it.
pub(crate) const WRITE_ATTEMPTS: usize = 3;

pub(crate) fn key_changed() -> StoreError {
    StoreError::Conflict("the master key changed repeatedly during the write; retry".into())
}

/// The condition that makes a sealed write land only while `param` (the write's key id)
/// is the store-wide current key (the `key_check` row): once a rotation has switched
/// keys, no process can add a value under the old one; the write affects nothing, and
/// the writer re-reads the current key and seals again.
pub(crate) fn key_is_current(param: &str) -> String {
    format!("EXISTS (SELECT 1 FROM key_check WHERE id = 1 AND key_id = {param})")
}

/// One place where secrets are kept sealed: the columns `key_id`, `nonce` and
/// `ciphertext` of `table`, with associated data derived from the row's primary key.
/// Every sealed secret at rest is listed in [`SEALED`], which start-up verification,
/// rotation and the rotation's leftover count walk; a new sealed column is one entry
/// there (and writes through [`key_is_current`]).
pub(crate) struct SealedColumns {
    pub table: &'static str,
    /// Primary key columns (text), in the order rotation walks them.
    pub id: &'static [&'static str],
    /// The associated data of the row with these primary key values (in `id` order).
    aad: fn(&[&str]) -> Vec<u8>,
}

impl SealedColumns {
    pub(crate) fn aad(&self, id: &[&str]) -> Vec<u8> {
        (self.aad)(id)
    }
}

/// Integrated accounts' credentials; the account id is the associated data.
pub(crate) const CREDENTIALS: SealedColumns = SealedColumns {
    table: "account_credentials",
    id: &["account_id"],
    aad: |id| id.concat().into_bytes(),
};

/// An environment's integration secret (the OAuth client secret).
pub(crate) const INTEGRATION_SECRETS: SealedColumns = SealedColumns {
    table: "environment_integrations",
    id: &["environment_id", "integration"],
    aad: |id| format!("environment-integration:{}", id.join(":")).into_bytes(),
};

/// The PKCE code verifier of an OAuth round trip in flight; the state's hash is the
/// associated data.
pub(crate) const OAUTH_VERIFIERS: SealedColumns = SealedColumns {
    table: "oauth_states",
    id: &["state_hash"],
    aad: |id| id.concat().into_bytes(),
};

/// A webhook subscription's signing secret (current or, during a rotation, previous).
pub(crate) const WEBHOOK_SECRETS: SealedColumns = SealedColumns {
    table: "webhook_secrets",
    id: &["webhook_id", "id"],
    aad: |id| format!("webhook-secret:{}", id.join(":")).into_bytes(),
};

/// The path token and shared secret of the provider webhook pointing at cigate.
pub(crate) const EVENT_SOURCES: SealedColumns = SealedColumns {
    table: "event_sources",
    id: &["account_id"],
    aad: |id| format!("event-source:{}", id.join(":")).into_bytes(),
};

/// Every sealed secret at rest.
pub(crate) const SEALED: &[SealedColumns] = &[
    CREDENTIALS,
    INTEGRATION_SECRETS,
    OAUTH_VERIFIERS,
    WEBHOOK_SECRETS,
    EVENT_SOURCES,
];

enum KeySource {
    Env,
    File(PathBuf),
    Memory,
}

pub(crate) struct Keys {
    source: KeySource,
    ring: RwLock<Keyring>,
    stamp: Mutex<Option<FileStamp>>,
    /// The key id of the `key_check` row as last seen: the store-wide current key, which
    /// every process encrypts under (if it holds it) so instances on one database agree.
    store_key_id: RwLock<Option<String>>,
}

impl Keys {
    /// `sentinel_key_id`: the key id the database was sealed with, if it holds any
    /// encrypted data; a missing key file is then an error instead of a fresh key.
    pub(crate) fn load(
        config: &KeyConfig,
        sentinel_key_id: Option<&str>,
    ) -> Result<Keys, StoreError> {
        let (source, ring, stamp) = match config {
            KeyConfig::Env(value) => (KeySource::Env, Keyring::parse(value)?, None),
            KeyConfig::Keys(ring) => (KeySource::Memory, ring.clone(), None),
            KeyConfig::File(path) => {
                let (ring, stamp) = match crypto::read_key_file(path)? {
                    Some(found) => found,
                    None => {
                        if let Some(id) = sentinel_key_id {
                            return Err(StoreError::Key(format!(
                                "key file {} does not exist, but the database holds data \
                                 encrypted under key id {id}; restore the key file or set \
                                 CIGATE_MASTER_KEY",
                                path.display()
                            )));
                        }
                        crypto::create_key_file(path, &Keyring::generate())?
                    }
                };
                (KeySource::File(path.clone()), ring, Some(stamp))
            }
        };
        Ok(Keys {
            source,
            ring: RwLock::new(ring),
            stamp: Mutex::new(stamp),
            store_key_id: RwLock::new(sentinel_key_id.map(str::to_string)),
        })
    }

    pub(crate) fn key_ids(&self) -> Vec<String> {
        self.read_ring().key_ids()
    }

    fn read_ring(&self) -> std::sync::RwLockReadGuard<'_, Keyring> {
        self.ring
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn write_ring(&self) -> std::sync::RwLockWriteGuard<'_, Keyring> {
        self.ring
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn describe_source(&self) -> String {
        match &self.source {
            KeySource::Env => "CIGATE_MASTER_KEY".into(),
            KeySource::File(path) => format!("key file {}", path.display()),
            KeySource::Memory => "the configured keyring".into(),
        }
    }

    /// Re-reads the key file if it changed since we last read it.
    fn refresh_if_changed(&self) -> Result<(), StoreError> {
        let KeySource::File(path) = &self.source else {
            return Ok(());
        };
        let current = crypto::file_stamp(path)?;
        let mut stamp = self.stamp.lock().unwrap_or_else(|p| p.into_inner());
        if current.is_some() && current != *stamp {
            if let Some((fresh, new_stamp)) = crypto::read_key_file(path)? {
                self.write_ring().merge_reloaded(fresh);
                *stamp = Some(new_stamp);
            }
        }
        Ok(())
    }

    fn reload(&self) -> Result<(), StoreError> {
        let KeySource::File(path) = &self.source else {
            return Ok(());
        };
        if let Some((fresh, new_stamp)) = crypto::read_key_file(path)? {
            self.write_ring().merge_reloaded(fresh);
            *self.stamp.lock().unwrap_or_else(|p| p.into_inner()) = Some(new_stamp);
        }
        Ok(())
    }

    /// The key to encrypt with: the store-wide current key if we hold it (after picking
    /// up a key file rewritten by a rotation), else our own current key.
    pub(crate) fn current(&self) -> Result<MasterKey, StoreError> {
        self.refresh_if_changed()?;
        let store_key_id = self
            .store_key_id
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let ring = self.read_ring();
        Ok(store_key_id
            .and_then(|id| ring.get(&id).cloned())
            .unwrap_or_else(|| ring.current().clone()))
    }

    pub(crate) fn set_store_key_id(&self, key_id: &str) {
        *self.store_key_id.write().unwrap_or_else(|p| p.into_inner()) = Some(key_id.to_string());
    }

    /// The key with this id, reloading the key file once if we do not know it.
    pub(crate) fn get(&self, key_id: &str) -> Result<MasterKey, StoreError> {
        if let Some(key) = self.read_ring().get(key_id) {
            return Ok(key.clone());
        }
        self.reload()?;
        let ring = self.read_ring();
        ring.get(key_id).cloned().ok_or_else(|| {
            StoreError::Key(format!(
                "data is encrypted under key id {key_id}, which {} does not contain (it holds {}); \
                 start with the key the data was written with",
                self.describe_source(),
                ring.key_ids().join(", ")
            ))
        })
    }

    pub(crate) fn seal(&self, aad: &[u8], plaintext: &[u8]) -> Result<Sealed, StoreError> {
        crypto::seal(&self.current()?, aad, plaintext)
    }

    pub(crate) fn open(&self, aad: &[u8], sealed: &Sealed) -> Result<Vec<u8>, StoreError> {
        crypto::open(&self.get(&sealed.key_id)?, aad, sealed)
    }
}

pub(crate) async fn read_key_check(pool: &DbPool) -> Result<Option<Sealed>, StoreError> {
    let row: Option<(String, Vec<u8>, Vec<u8>)> = on_pool!(pool, p => {
        sqlx::query_as("SELECT key_id, nonce, ciphertext FROM key_check WHERE id = 1")
            .fetch_optional(p)
            .await?
    });
    Ok(row.map(|(key_id, nonce, ciphertext)| Sealed {
        key_id,
        nonce,
        ciphertext,
    }))
}

impl Store {
    /// Checks the keyring against the data: the key-check row and one credential per key
    /// id in use must open. Writes the key-check row if the store has none yet.
    pub(crate) async fn verify_keys(&self) -> Result<(), StoreError> {
        let keys = &self.inner.keys;
        match read_key_check(self.pool()).await? {
            Some(sealed) => {
                keys.set_store_key_id(&sealed.key_id);
                let key = keys.get(&sealed.key_id)?;
                crypto::open(&key, KEY_CHECK_AAD, &sealed).map_err(|_| {
                    StoreError::Key(format!(
                        "{} holds a key with id {} that does not decrypt this database's key \
                         check; the key is wrong",
                        keys.describe_source(),
                        sealed.key_id
                    ))
                })?;
            }
            None => {
                let sealed = keys.seal(KEY_CHECK_AAD, KEY_CHECK_PLAINTEXT)?;
                on_pool!(self.pool(), p => {
                    sqlx::query(
                        "INSERT INTO key_check (id, key_id, nonce, ciphertext, updated_at) \
                         VALUES (1, $1, $2, $3, $4) ON CONFLICT (id) DO NOTHING",
                    )
                    .bind(&sealed.key_id)
                    .bind(&sealed.nonce)
                    .bind(&sealed.ciphertext)
                    .bind(now())
                    .execute(p)
                    .await?
                    .rows_affected()
                });
                // Another process may have won the insert with a different key.
                if let Some(sealed) = read_key_check(self.pool()).await? {
                    keys.set_store_key_id(&sealed.key_id);
                    let key = keys.get(&sealed.key_id)?;
                    crypto::open(&key, KEY_CHECK_AAD, &sealed)?;
                }
            }
        }

        for columns in SEALED {
            let key_ids: Vec<String> = on_pool!(self.pool(), p => {
                sqlx::query_scalar(&format!(
                    "SELECT DISTINCT key_id FROM {} WHERE key_id IS NOT NULL",
                    columns.table
                ))
                .fetch_all(p)
                .await?
            });
            for key_id in key_ids {
                let no_start = vec![String::new(); columns.id.len()];
                let sample = self
                    .sealed_rows(columns, &key_id, true, &no_start, 1)
                    .await?;
                for (id, sealed) in sample {
                    let id: Vec<&str> = id.iter().map(String::as_str).collect();
                    keys.open(&columns.aad(&id), &sealed)
                        .map_err(|err| match err {
                            StoreError::Crypto(_) => StoreError::Key(format!(
                                "key id {key_id} from {} does not decrypt the values sealed in \
                                 {}; the key is wrong",
                                keys.describe_source(),
                                columns.table
                            )),
                            other => other,
                        })?;
                }
            }
        }
        Ok(())
    }

    /// Moves every sealed value ([`SEALED`]) onto a new current key; see the crate documentation for
    /// the steps. `new_key`: the key to rotate to (generated when `None`); must be `None`
    /// when keys come from `CIGATE_MASTER_KEY`, where rotation moves rows onto the first
    /// key listed. Safe to run while other processes serve traffic; one rotation per
    /// process at a time.
    pub async fn rotate_keys(
        &self,
        new_key: Option<MasterKey>,
    ) -> Result<RotationReport, StoreError> {
        let _only_one = self.inner.rotation.lock().await;
        let keys = &self.inner.keys;

        match &keys.source {
            KeySource::Env => {
                if new_key.is_some() {
                    return Err(StoreError::Key(
                        "keys come from CIGATE_MASTER_KEY: list the new key first and the old \
                         ones after it (comma-separated), restart, then rotate without a new key"
                            .into(),
                    ));
                }
            }
            KeySource::Memory => {
                let key = new_key.unwrap_or_else(MasterKey::generate);
                check_no_id_clash(&keys.read_ring(), &key)?;
                keys.write_ring().promote(key);
            }
            KeySource::File(path) => {
                keys.reload()?;
                let key = new_key.unwrap_or_else(MasterKey::generate);
                check_no_id_clash(&keys.read_ring(), &key)?;
                let mut ring = keys.read_ring().clone();
                ring.promote(key);
                let stamp = crypto::write_key_file(path, &ring)?;
                *keys.write_ring() = ring;
                *keys.stamp.lock().unwrap_or_else(|p| p.into_inner()) = Some(stamp);
            }
        }
        let current = keys.read_ring().current().clone();
        tracing::info!(
            key_id = current.id(),
            "rotating credentials to a new master key"
        );

        let sealed = crypto::seal(&current, KEY_CHECK_AAD, KEY_CHECK_PLAINTEXT)?;
        on_pool!(self.pool(), p => {
            sqlx::query(
                "INSERT INTO key_check (id, key_id, nonce, ciphertext, updated_at) \
                 VALUES (1, $1, $2, $3, $4) ON CONFLICT (id) DO UPDATE SET \
                 key_id = excluded.key_id, nonce = excluded.nonce, \
                 ciphertext = excluded.ciphertext, updated_at = excluded.updated_at",
            )
            .bind(&sealed.key_id)
            .bind(&sealed.nonce)
            .bind(&sealed.ciphertext)
            .bind(now())
            .execute(p)
            .await?
            .rows_affected()
        });

        keys.set_store_key_id(current.id());
        // A PostgreSQL writer whose conditional statement ran just before the switch may
        // not have committed yet; SHARE mode waits for every such transaction to end.
        // (SQLite writers are serialized with the switch already.)
        if let DbPool::Postgres(p) = self.pool() {
            let tables: Vec<&str> = SEALED.iter().map(|c| c.table).collect();
            let mut tx = p.begin().await?;
            sqlx::query(&format!("LOCK TABLE {} IN SHARE MODE", tables.join(", ")))
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
        }

        let mut previous: Vec<String> = Vec::new();
        let mut by_table: BTreeMap<String, u64> =
            SEALED.iter().map(|c| (c.table.to_owned(), 0)).collect();
        for _ in 0..ROTATION_PASSES {
            for columns in SEALED {
                let moved = self
                    .reencrypt_pass(columns, &current, &mut previous)
                    .await?;
                *by_table.entry(columns.table.to_owned()).or_default() += moved;
            }
            if self.count_not_under(current.id()).await? == 0 {
                break;
            }
        }
        let left = self.count_not_under(current.id()).await?;
        if left > 0 {
            return Err(StoreError::Conflict(format!(
                "{left} sealed values are still under old keys (written concurrently); run \
                 the rotation again"
            )));
        }
        let reencrypted = by_table.values().sum();

        let mut retired = Vec::new();
        match &keys.source {
            KeySource::Env => {}
            KeySource::Memory => {
                let mut ring = keys.write_ring();
                retired = ring.key_ids().into_iter().skip(1).collect();
                ring.retire_old();
            }
            KeySource::File(path) => {
                let mut ring = keys.read_ring().clone();
                retired = ring.key_ids().into_iter().skip(1).collect();
                ring.retire_old();
                let stamp = crypto::write_key_file(path, &ring)?;
                *keys.write_ring() = ring;
                *keys.stamp.lock().unwrap_or_else(|p| p.into_inner()) = Some(stamp);
            }
        }
        previous.sort();
        tracing::info!(
            key_id = current.id(),
            reencrypted,
            retired = retired.len(),
            "master key rotation finished"
        );
        Ok(RotationReport {
            current_key_id: current.id().to_string(),
            previous_key_ids: previous,
            reencrypted,
            reencrypted_by_table: by_table,
            retired_key_ids: retired,
        })
    }

    /// Re-reads the store-wide current key after a conditional credential write found it
    /// changed (another process rotated), loading the key file if the id is new to us.
    pub(crate) async fn refresh_store_key(&self) -> Result<(), StoreError> {
        if let Some(sealed) = read_key_check(self.pool()).await? {
            self.inner.keys.get(&sealed.key_id)?;
            self.inner.keys.set_store_key_id(&sealed.key_id);
        }
        Ok(())
    }

    /// A 32-byte key for `purpose` (e.g. `"cursor"`), the same in every process sharing
    /// this database: HMAC-SHA256 of the store-wide current master key over
    /// `cigate:signing-key:<purpose>`. It changes when the master key is rotated, so values
    /// signed with it (pagination cursors) should be short-lived.
    pub async fn signing_key(&self, purpose: &str) -> Result<Vec<u8>, StoreError> {
        use hmac::{Hmac, Mac};
        self.refresh_store_key().await?;
        let key = self.inner.keys.current()?;
        let mut mac = <Hmac<sha2::Sha256> as Mac>::new_from_slice(key.bytes())
            .map_err(|_| StoreError::Crypto("could not derive a signing key".into()))?;
        mac.update(b"cigate:signing-key:");
        mac.update(purpose.as_bytes());
        Ok(mac.finalize().into_bytes().to_vec())
    }

    /// How many sealed values each table of [`SEALED`] holds under each key id (every
    /// table listed): after a rotation, only the current key appears.
    pub async fn sealed_key_usage(
        &self,
    ) -> Result<BTreeMap<String, BTreeMap<String, u64>>, StoreError> {
        let mut usage = BTreeMap::new();
        for columns in SEALED {
            let sql = format!(
                "SELECT key_id, COUNT(*) FROM {} WHERE key_id IS NOT NULL GROUP BY key_id",
                columns.table
            );
            let rows: Vec<(String, i64)> = on_pool!(self.pool(), p => {
                sqlx::query_as(&sql).fetch_all(p).await?
            });
            let by_key = rows
                .into_iter()
                .map(|(key_id, n)| (key_id, u64::try_from(n).unwrap_or_default()))
                .collect();
            usage.insert(columns.table.to_owned(), by_key);
        }
        Ok(usage)
    }

    /// Sealed values of every kind not under `key_id`.
    pub(crate) async fn count_not_under(&self, key_id: &str) -> Result<i64, StoreError> {
        let mut total = 0;
        for columns in SEALED {
            let sql = format!("SELECT COUNT(*) FROM {} WHERE key_id <> $1", columns.table);
            total += on_pool!(self.pool(), p => {
                sqlx::query_scalar::<_, i64>(&sql).bind(key_id).fetch_one(p).await?
            });
        }
        Ok(total)
    }

    /// Up to `limit` rows of `columns` whose key id is (`under`) or is not `key_id`, in
    /// primary key order after `after` (empty strings: from the start); each with its
    /// primary key values.
    async fn sealed_rows(
        &self,
        columns: &SealedColumns,
        key_id: &str,
        under: bool,
        after: &[String],
        limit: i64,
    ) -> Result<Vec<(Vec<String>, Sealed)>, StoreError> {
        use sqlx::Row;
        let n = columns.id.len();
        let ids = columns.id.join(", ");
        let after_params: Vec<String> = (0..n).map(|i| format!("${}", i + 2)).collect();
        let sql = format!(
            "SELECT {ids}, key_id, nonce, ciphertext FROM {table} WHERE key_id {op} $1 \
             AND ({ids}) > ({after}) ORDER BY {ids} LIMIT ${limit}",
            table = columns.table,
            op = if under { "=" } else { "<>" },
            after = after_params.join(", "),
            limit = n + 2,
        );
        Ok(on_pool!(self.pool(), p => {
            let mut query = sqlx::query(&sql).bind(key_id);
            for value in after {
                query = query.bind(value);
            }
            let rows = query.bind(limit).fetch_all(p).await?;
            rows.iter()
                .map(|row| {
                    let id = (0..n)
                        .map(|i| row.try_get::<String, _>(i))
                        .collect::<Result<Vec<_>, _>>()?;
                    Ok((
                        id,
                        Sealed {
                            key_id: row.try_get(n)?,
                            nonce: row.try_get(n + 1)?,
                            ciphertext: row.try_get(n + 2)?,
                        },
                    ))
                })
                .collect::<Result<Vec<_>, sqlx::Error>>()?
        }))
    }

    /// One keyset walk over the rows of `columns` not under `current`; each row is
    /// swapped by its own conditional UPDATE, so nothing is locked for longer than one
    /// statement.
    async fn reencrypt_pass(
        &self,
        columns: &SealedColumns,
        current: &MasterKey,
        previous: &mut Vec<String>,
    ) -> Result<u64, StoreError> {
        let matches_id: Vec<String> = columns
            .id
            .iter()
            .enumerate()
            .map(|(i, column)| format!(" AND {column} = ${}", i + 6))
            .collect();
        let update = format!(
            "UPDATE {} SET key_id = $1, nonce = $2, ciphertext = $3 \
             WHERE key_id = $4 AND nonce = $5{}",
            columns.table,
            matches_id.concat()
        );
        let mut after = vec![String::new(); columns.id.len()];
        let mut moved = 0u64;
        loop {
            let batch = self
                .sealed_rows(columns, current.id(), false, &after, ROTATION_BATCH)
                .await?;
            let Some((last, _)) = batch.last() else {
                return Ok(moved);
            };
            after = last.clone();
            for (id, old) in batch {
                let id: Vec<&str> = id.iter().map(String::as_str).collect();
                let aad = columns.aad(&id);
                let mut plaintext = self.inner.keys.open(&aad, &old)?;
                let new = crypto::seal(current, &aad, &plaintext)?;
                plaintext.zeroize();
                let done = on_pool!(self.pool(), p => {
                    let mut query = sqlx::query(&update)
                        .bind(&new.key_id)
                        .bind(&new.nonce)
                        .bind(&new.ciphertext)
                        .bind(&old.key_id)
                        .bind(&old.nonce);
                    for value in &id {
                        query = query.bind(*value);
                    }
                    query.execute(p).await?.rows_affected()
                });
                if done == 1 {
                    moved += 1;
                    if !previous.contains(&old.key_id) {
                        previous.push(old.key_id);
                    }
                }
            }
        }
    }
}

fn check_no_id_clash(ring: &Keyring, key: &MasterKey) -> Result<(), StoreError> {
    if ring.current().id() == key.id() {
        return Err(StoreError::Key(format!(
            "key id {} is already the current key",
            key.id()
        )));
    }
    match ring.get(key.id()) {
        Some(existing) if existing != key => Err(StoreError::Key(format!(
            "a different key with id {} is already in the keyring; generate another key",
            key.id()
        ))),
        _ => Ok(()),
    }
}
