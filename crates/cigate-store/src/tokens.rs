//! Environments and the API tokens that map a caller to one of them.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chrono::{DateTime, Utc};
use cigate_core::Secret;
use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::db::on_pool;
use crate::{new_id, now, ApiToken, Environment, Store, StoreError};

const TOKEN_PREFIX: &str = "cgt_";
/// `last_used_at` is refreshed at most this often, so authentication rarely writes.
const LAST_USED_GRANULARITY_SECS: i64 = 60;

crate::db::row_struct! {
    struct TokenRow {
        id: String,
        environment_id: String,
        name: Option<String>,
        created_at: DateTime<Utc>,
        last_used_at: Option<DateTime<Utc>>,
    }
}

impl From<TokenRow> for ApiToken {
    fn from(r: TokenRow) -> Self {
        ApiToken {
            id: r.id,
            environment_id: r.environment_id,
            name: r.name,
            created_at: r.created_at,
            last_used_at: r.last_used_at,
        }
    }
}

fn hash_token(plaintext: &str) -> String {
    hex::encode(Sha256::digest(plaintext.as_bytes()))
}

fn validate_environment_name(name: &str) -> Result<(), StoreError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(StoreError::InvalidInput(
            "environment names are 1-64 characters of letters, digits, '-', '_' and '.'".into(),
        ))
    }
}

impl Store {
    /// The environment with this name, created if it does not exist (race-free).
    pub async fn ensure_environment(&self, name: &str) -> Result<Environment, StoreError> {
        validate_environment_name(name)?;
        let env: Environment = on_pool!(self.pool(), p => {
            sqlx::query(
                "INSERT INTO environments (id, name, created_at) VALUES ($1, $2, $3) \
                 ON CONFLICT (name) DO NOTHING",
            )
            .bind(new_id())
            .bind(name)
            .bind(now())
            .execute(p)
            .await?;
            let (id, name, created_at) = sqlx::query_as(
                "SELECT id, name, created_at FROM environments WHERE name = $1",
            )
            .bind(name)
            .fetch_one(p)
            .await?;
            Environment { id, name, created_at }
        });
        Ok(env)
    }

    pub async fn get_environment(&self, id: &str) -> Result<Option<Environment>, StoreError> {
        let row: Option<(String, String, DateTime<Utc>)> = on_pool!(self.pool(), p => {
            sqlx::query_as("SELECT id, name, created_at FROM environments WHERE id = $1")
                .bind(id)
                .fetch_optional(p)
                .await?
        });
        Ok(row.map(|(id, name, created_at)| Environment {
            id,
            name,
            created_at,
        }))
    }

    pub async fn get_environment_by_name(
        &self,
        name: &str,
    ) -> Result<Option<Environment>, StoreError> {
        let row: Option<(String, String, DateTime<Utc>)> = on_pool!(self.pool(), p => {
            sqlx::query_as("SELECT id, name, created_at FROM environments WHERE name = $1")
                .bind(name)
                .fetch_optional(p)
                .await?
        });
        Ok(row.map(|(id, name, created_at)| Environment {
            id,
            name,
            created_at,
        }))
    }

    pub async fn list_environments(&self) -> Result<Vec<Environment>, StoreError> {
        let rows: Vec<(String, String, DateTime<Utc>)> = on_pool!(self.pool(), p => {
            sqlx::query_as("SELECT id, name, created_at FROM environments ORDER BY created_at, id")
                .fetch_all(p)
                .await?
        });
        Ok(rows
            .into_iter()
            .map(|(id, name, created_at)| Environment {
                id,
                name,
                created_at,
            })
            .collect())
    }

    /// Creates a token for the environment; the plaintext is returned here only. Unknown
    /// environment → [`StoreError::NotFound`].
    pub async fn create_api_token(
        &self,
        environment_id: &str,
        name: Option<&str>,
    ) -> Result<(ApiToken, Secret), StoreError> {
        let mut random = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut random);
        let plaintext = Secret::new(format!("{TOKEN_PREFIX}{}", URL_SAFE_NO_PAD.encode(random)));
        let token = ApiToken {
            id: new_id(),
            environment_id: environment_id.to_string(),
            name: name.map(str::to_string),
            created_at: now(),
            last_used_at: None,
        };
        on_pool!(self.pool(), p => {
            sqlx::query(
                "INSERT INTO api_tokens (id, environment_id, name, token_hash, created_at) \
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(&token.id)
            .bind(&token.environment_id)
            .bind(&token.name)
            .bind(hash_token(plaintext.expose()))
            .bind(token.created_at)
            .execute(p)
            .await?
            .rows_affected()
        });
        Ok((token, plaintext))
    }

    /// The token with this plaintext, if any. Looks up the SHA-256 of the plaintext by
    /// unique index, so timing reveals nothing about stored tokens.
    pub async fn authenticate(&self, plaintext: &str) -> Result<Option<ApiToken>, StoreError> {
        if !plaintext.starts_with(TOKEN_PREFIX) || plaintext.len() > 256 {
            return Ok(None);
        }
        let hash = hash_token(plaintext);
        let row: Option<TokenRow> = on_pool!(self.pool(), p => {
            sqlx::query_as(
                "SELECT id, environment_id, name, created_at, last_used_at FROM api_tokens \
                 WHERE token_hash = $1",
            )
            .bind(&hash)
            .fetch_optional(p)
            .await?
        });
        let Some(row) = row else {
            return Ok(None);
        };
        let mut token = ApiToken::from(row);
        let now = now();
        let stale = match token.last_used_at {
            None => true,
            Some(t) => (now - t).num_seconds() >= LAST_USED_GRANULARITY_SECS,
        };
        if stale {
            let threshold = now - chrono::Duration::seconds(LAST_USED_GRANULARITY_SECS);
            on_pool!(self.pool(), p => {
                sqlx::query(
                    "UPDATE api_tokens SET last_used_at = $1 \
                     WHERE id = $2 AND (last_used_at IS NULL OR last_used_at < $3)",
                )
                .bind(now)
                .bind(&token.id)
                .bind(threshold)
                .execute(p)
                .await?
                .rows_affected()
            });
            token.last_used_at = Some(now);
        }
        Ok(Some(token))
    }

    pub async fn list_api_tokens(&self, environment_id: &str) -> Result<Vec<ApiToken>, StoreError> {
        let rows: Vec<TokenRow> = on_pool!(self.pool(), p => {
            sqlx::query_as(
                "SELECT id, environment_id, name, created_at, last_used_at FROM api_tokens \
                 WHERE environment_id = $1 ORDER BY created_at, id",
            )
            .bind(environment_id)
            .fetch_all(p)
            .await?
        });
        Ok(rows.into_iter().map(ApiToken::from).collect())
    }

    pub async fn get_api_token(
        &self,
        environment_id: &str,
        id: &str,
    ) -> Result<Option<ApiToken>, StoreError> {
        let row: Option<TokenRow> = on_pool!(self.pool(), p => {
            sqlx::query_as(
                "SELECT id, environment_id, name, created_at, last_used_at FROM api_tokens \
                 WHERE environment_id = $1 AND id = $2",
            )
            .bind(environment_id)
            .bind(id)
            .fetch_optional(p)
            .await?
        });
        Ok(row.map(ApiToken::from))
    }

    /// `false` if no such token exists in this environment.
    pub async fn delete_api_token(
        &self,
        environment_id: &str,
        id: &str,
    ) -> Result<bool, StoreError> {
        let n = on_pool!(self.pool(), p => {
            sqlx::query("DELETE FROM api_tokens WHERE environment_id = $1 AND id = $2")
                .bind(environment_id)
                .bind(id)
                .execute(p)
                .await?
                .rows_affected()
        });
        Ok(n > 0)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn environment_names() {
        assert!(super::validate_environment_name("production").is_ok());
        assert!(super::validate_environment_name("a.b-c_1").is_ok());
        assert!(super::validate_environment_name("").is_err());
        assert!(super::validate_environment_name("no spaces").is_err());
    }
}
