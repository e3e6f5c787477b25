//! Integrated accounts and their encrypted credentials. Every query is scoped by the
//! caller's environment.

use chrono::{DateTime, TimeZone, Utc};
use zeroize::Zeroize;

use crate::crypto::Sealed;
use crate::db::on_pool;
use crate::keys::{key_changed, CREDENTIALS, WRITE_ATTEMPTS};
use crate::model::{secret_context_key, CredentialPlain};
use crate::{
    new_id, now, Account, AccountFilter, AccountPatch, Credential, NewAccount, Store, StoreError,
};

const ACCOUNT_COLUMNS: &str = "id, environment_id, tenant_id, integration, status, \
     authentication_method, context, last_error, last_forbidden_error, created_at, updated_at";

/// Writes a credential only while its key is the store-wide current key (the
/// `key_check` row, as in [`crate::keys::key_is_current`]), so once a rotation has switched
/// keys no process can add a row under the old one: the write affects nothing, the writer
/// re-reads the current key and seals again.
const UPSERT_CREDENTIAL: &str = "INSERT INTO account_credentials \
     (account_id, key_id, nonce, ciphertext, updated_at) SELECT $1, $2, $3, $4, $5 \
     WHERE EXISTS (SELECT 1 FROM key_check WHERE id = 1 AND key_id = $2) \
     ON CONFLICT (account_id) DO UPDATE SET key_id = excluded.key_id, nonce = excluded.nonce, \
     ciphertext = excluded.ciphertext, updated_at = excluded.updated_at";

/// Largest page [`Store::list_accounts`] returns: the API's largest page (1,000) and one
/// more, which tells a pager whether another page follows.
pub const MAX_PAGE: u32 = 1001;

crate::db::row_struct! {
    struct AccountRow {
        id: String,
        environment_id: String,
        tenant_id: Option<String>,
        integration: String,
        status: String,
        authentication_method: String,
        context: String,
        last_error: Option<String>,
        last_forbidden_error: Option<String>,
        created_at: DateTime<Utc>,
        updated_at: DateTime<Utc>,
    }
}

impl TryFrom<AccountRow> for Account {
    type Error = StoreError;
    fn try_from(r: AccountRow) -> Result<Self, StoreError> {
        let corrupt = |what: &str| StoreError::Corrupt(format!("account {}: {what}", r.id));
        Ok(Account {
            status: r.status.parse().map_err(|_| corrupt("status"))?,
            authentication_method: r
                .authentication_method
                .parse()
                .map_err(|_| corrupt("authentication_method"))?,
            context: serde_json::from_str(&r.context).map_err(|_| corrupt("context"))?,
            id: r.id,
            environment_id: r.environment_id,
            tenant_id: r.tenant_id,
            integration: r.integration,
            last_error: r.last_error,
            last_forbidden_error: r.last_forbidden_error,
            created_at: r.created_at,
            updated_at: r.updated_at,
        })
    }
}

fn check_context(context: &serde_json::Value) -> Result<String, StoreError> {
    if !context.is_object() {
        return Err(StoreError::InvalidInput(
            "context must be a JSON object".into(),
        ));
    }
    if let Some(key) = secret_context_key(context) {
        return Err(StoreError::InvalidInput(format!(
            "context key `{key}` looks secret; credentials belong in the credential"
        )));
    }
    serde_json::to_string(context).map_err(|e| StoreError::InvalidInput(e.to_string()))
}

/// Numbers bind parameters for SQL assembled from optional parts.
struct Placeholders(usize);

impl Placeholders {
    fn next(&mut self) -> String {
        self.0 += 1;
        format!("${}", self.0)
    }
}

/// Parses `after` for keyset pagination: an [`Account::page_key`], or an account id.
enum After {
    Key(DateTime<Utc>, String),
    Id(String),
}

fn parse_after(after: &str) -> After {
    if let Some((micros, id)) = after.split_once('.') {
        if let Some(at) = micros
            .parse::<i64>()
            .ok()
            .and_then(|m| Utc.timestamp_micros(m).single())
        {
            return After::Key(at, id.to_string());
        }
    }
    After::Id(after.to_string())
}

impl Store {
    fn seal_credential(
        &self,
        account_id: &str,
        credential: &Credential,
    ) -> Result<Sealed, StoreError> {
        let mut json = serde_json::to_vec(&CredentialPlain::from(credential))
            .map_err(|_| StoreError::Crypto("could not serialize the credential".into()))?;
        let sealed = self.inner.keys.seal(&CREDENTIALS.aad(&[account_id]), &json);
        json.zeroize();
        sealed
    }

    /// Creates the account and its encrypted credential in one transaction.
    pub async fn create_account(&self, new: NewAccount) -> Result<Account, StoreError> {
        let context = check_context(&new.context)?;
        if new.integration.is_empty() {
            return Err(StoreError::InvalidInput("integration is required".into()));
        }
        let id = new_id();
        let at = now();
        for _ in 0..WRITE_ATTEMPTS {
            let sealed = self.seal_credential(&id, &new.credential)?;
            let row: Option<AccountRow> = on_pool!(self.pool(), p => {
                let mut tx = p.begin().await?;
                let row: AccountRow = sqlx::query_as(&format!(
                    "INSERT INTO accounts (id, environment_id, tenant_id, integration, status, \
                     authentication_method, context, last_error, last_forbidden_error, \
                     created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, NULL, $9, $9) \
                     RETURNING {ACCOUNT_COLUMNS}"
                ))
                .bind(&id)
                .bind(&new.environment_id)
                .bind(&new.tenant_id)
                .bind(&new.integration)
                .bind(new.status.as_str())
                .bind(new.credential.method().as_str())
                .bind(&context)
                .bind(&new.last_error)
                .bind(at)
                .fetch_one(&mut *tx)
                .await?;
                let written = sqlx::query(UPSERT_CREDENTIAL)
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
                Some(row) => return row.try_into(),
                None => self.refresh_store_key().await?,
            }
        }
        Err(key_changed())
    }

    pub async fn get_account(
        &self,
        environment_id: &str,
        id: &str,
    ) -> Result<Option<Account>, StoreError> {
        let row: Option<AccountRow> = on_pool!(self.pool(), p => {
            sqlx::query_as(&format!(
                "SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE environment_id = $1 AND id = $2"
            ))
            .bind(environment_id)
            .bind(id)
            .fetch_optional(p)
            .await?
        });
        row.map(Account::try_from).transpose()
    }

    /// The account `id` in whatever environment it is, for callers that proved the
    /// right to it otherwise (a provider webhook carrying the account's own secret).
    pub async fn account_by_id(&self, id: &str) -> Result<Option<Account>, StoreError> {
        let row: Option<AccountRow> = on_pool!(self.pool(), p => {
            sqlx::query_as(&format!("SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE id = $1"))
                .bind(id)
                .fetch_optional(p)
                .await?
        });
        row.map(Account::try_from).transpose()
    }

    /// One page of accounts in `(created_at, id)` order, starting after `after` (an
    /// [`Account::page_key`] of the previous page's last item; a bare account id is also
    /// accepted). `limit` is clamped to 1..=1000.
    pub async fn list_accounts(
        &self,
        environment_id: &str,
        filter: &AccountFilter,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<Account>, StoreError> {
        let after = match after.map(parse_after) {
            None => None,
            Some(After::Key(at, id)) => Some((at, id)),
            Some(After::Id(id)) => {
                let account = self
                    .get_account(environment_id, &id)
                    .await?
                    .ok_or_else(|| {
                        StoreError::InvalidInput("the page position names no account".into())
                    })?;
                Some((account.created_at, account.id))
            }
        };
        let mut sql = format!("SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE environment_id = $1");
        let mut arg = Placeholders(1);
        if filter.tenant_id.is_some() {
            sql.push_str(&format!(" AND tenant_id = {}", arg.next()));
        }
        if filter.status.is_some() {
            sql.push_str(&format!(" AND status = {}", arg.next()));
        }
        if filter.integration.is_some() {
            sql.push_str(&format!(" AND integration = {}", arg.next()));
        }
        if after.is_some() {
            let (at, id) = (arg.next(), arg.next());
            sql.push_str(&format!(
                " AND (created_at > {at} OR (created_at = {at} AND id > {id}))"
            ));
        }
        sql.push_str(&format!(" ORDER BY created_at, id LIMIT {}", arg.next()));
        let limit = i64::from(limit.clamp(1, MAX_PAGE));

        let rows: Vec<AccountRow> = on_pool!(self.pool(), p => {
            let mut q = sqlx::query_as(&sql).bind(environment_id);
            if let Some(t) = &filter.tenant_id {
                q = q.bind(t);
            }
            if let Some(s) = filter.status {
                q = q.bind(s.as_str());
            }
            if let Some(i) = &filter.integration {
                q = q.bind(i);
            }
            if let Some((at, id)) = &after {
                q = q.bind(*at).bind(id);
            }
            q.bind(limit).fetch_all(p).await?
        });
        rows.into_iter().map(Account::try_from).collect()
    }

    /// Applies the patch in one transaction; `None` if the account is not in this
    /// environment. A new credential is encrypted and sets the authentication method.
    pub async fn update_account(
        &self,
        environment_id: &str,
        id: &str,
        patch: AccountPatch,
    ) -> Result<Option<Account>, StoreError> {
        if patch.is_empty() {
            return self.get_account(environment_id, id).await;
        }
        let context = patch.context.as_ref().map(check_context).transpose()?;
        let at = now();

        let mut sql = String::from("UPDATE accounts SET updated_at = $1");
        let mut arg = Placeholders(1);
        let columns = [
            ("tenant_id", patch.tenant_id.is_some()),
            ("context", context.is_some()),
            ("status", patch.status.is_some()),
            ("last_error", patch.last_error.is_some()),
            ("last_forbidden_error", patch.last_forbidden_error.is_some()),
            ("authentication_method", patch.credential.is_some()),
        ];
        for (column, present) in columns {
            if present {
                sql.push_str(&format!(", {column} = {}", arg.next()));
            }
        }
        sql.push_str(&format!(
            " WHERE environment_id = {} AND id = {} RETURNING {ACCOUNT_COLUMNS}",
            arg.next(),
            arg.next()
        ));

        for _ in 0..WRITE_ATTEMPTS {
            let sealed = patch
                .credential
                .as_ref()
                .map(|c| self.seal_credential(id, c))
                .transpose()?;
            // `None`: the account is not there; `Some(None)`: the store key changed.
            let outcome: Option<Option<AccountRow>> = on_pool!(self.pool(), p => {
                let mut tx = p.begin().await?;
                let mut q = sqlx::query_as(&sql).bind(at);
                if let Some(t) = &patch.tenant_id {
                    q = q.bind(t.clone());
                }
                if let Some(c) = &context {
                    q = q.bind(c);
                }
                if let Some(s) = patch.status {
                    q = q.bind(s.as_str());
                }
                if let Some(e) = &patch.last_error {
                    q = q.bind(e.clone());
                }
                if let Some(e) = &patch.last_forbidden_error {
                    q = q.bind(e.clone());
                }
                if let Some(c) = &patch.credential {
                    q = q.bind(c.method().as_str());
                }
                let row: Option<AccountRow> =
                    q.bind(environment_id).bind(id).fetch_optional(&mut *tx).await?;
                match (row, &sealed) {
                    (None, _) => {
                        tx.rollback().await?;
                        None
                    }
                    (Some(row), None) => {
                        tx.commit().await?;
                        Some(Some(row))
                    }
                    (Some(row), Some(sealed)) => {
                        let written = sqlx::query(UPSERT_CREDENTIAL)
                            .bind(id)
                            .bind(&sealed.key_id)
                            .bind(&sealed.nonce)
                            .bind(&sealed.ciphertext)
                            .bind(at)
                            .execute(&mut *tx)
                            .await?
                            .rows_affected();
                        if written == 1 {
                            tx.commit().await?;
                            Some(Some(row))
                        } else {
                            tx.rollback().await?;
                            Some(None)
                        }
                    }
                }
            });
            match outcome {
                None => return Ok(None),
                Some(Some(row)) => return Account::try_from(row).map(Some),
                Some(None) => self.refresh_store_key().await?,
            }
        }
        Err(key_changed())
    }

    /// Removes the account with its credential, lease and idempotency records. `false` if
    /// it is not in this environment.
    pub async fn delete_account(&self, environment_id: &str, id: &str) -> Result<bool, StoreError> {
        let n = on_pool!(self.pool(), p => {
            let mut tx = p.begin().await?;
            let n = sqlx::query("DELETE FROM accounts WHERE environment_id = $1 AND id = $2")
                .bind(environment_id)
                .bind(id)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if n > 0 {
                sqlx::query(
                    "DELETE FROM idempotency_records WHERE environment_id = $1 AND account_id = $2",
                )
                .bind(environment_id)
                .bind(id)
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
            n
        });
        Ok(n > 0)
    }

    /// The decrypted credential of an account of this environment. A ciphertext that
    /// fails to open is a [`StoreError::Crypto`]; an unknown key id (after reloading the
    /// key file once) a [`StoreError::Key`].
    pub async fn credential(
        &self,
        environment_id: &str,
        account_id: &str,
    ) -> Result<Option<Credential>, StoreError> {
        let row: Option<(String, Vec<u8>, Vec<u8>)> = on_pool!(self.pool(), p => {
            sqlx::query_as(
                "SELECT c.key_id, c.nonce, c.ciphertext FROM account_credentials c \
                 JOIN accounts a ON a.id = c.account_id \
                 WHERE a.environment_id = $1 AND a.id = $2",
            )
            .bind(environment_id)
            .bind(account_id)
            .fetch_optional(p)
            .await?
        });
        let Some((key_id, nonce, ciphertext)) = row else {
            return Ok(None);
        };
        let sealed = Sealed {
            key_id,
            nonce,
            ciphertext,
        };
        let mut plaintext = self
            .inner
            .keys
            .open(&CREDENTIALS.aad(&[account_id]), &sealed)?;
        let parsed = serde_json::from_slice::<CredentialPlain>(&plaintext);
        plaintext.zeroize();
        let plain = parsed.map_err(|_| {
            StoreError::Corrupt(format!("credential of account {account_id} does not parse"))
        })?;
        Ok(Some(plain.into()))
    }
}
