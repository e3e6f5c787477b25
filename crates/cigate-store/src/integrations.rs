//! Per-environment settings of an integration, such as the OAuth app used to link Buddy
//! accounts. Non-secret settings are plain JSON; the one secret (the OAuth client secret)
//! is sealed under the master key with `environment-integration:<env>:<name>` as
//! associated data ([`INTEGRATION_SECRETS`], so rotation moves it too).

use chrono::{DateTime, Utc};
use cigate_core::Secret;
use zeroize::Zeroize;

use crate::crypto::Sealed;
use crate::db::on_pool;
use crate::keys::{key_changed, key_is_current, INTEGRATION_SECRETS, WRITE_ATTEMPTS};
use crate::model::secret_context_key;
use crate::{now, Store, StoreError};

/// An environment's settings for one integration.
#[derive(Clone, Debug)]
pub struct EnvironmentIntegration {
    pub environment_id: String,
    pub integration: String,
    /// Non-secret settings (e.g. `{"oauth": {"client_id", "scopes", …}}`).
    pub config: serde_json::Value,
    pub secret: Option<Secret>,
    pub updated_at: DateTime<Utc>,
}

fn aad(environment_id: &str, integration: &str) -> Vec<u8> {
    INTEGRATION_SECRETS.aad(&[environment_id, integration])
}

type Row = (
    String,
    Option<String>,
    Option<Vec<u8>>,
    Option<Vec<u8>>,
    DateTime<Utc>,
);

impl Store {
    /// Creates or replaces the settings of `integration` in this environment.
    pub async fn put_environment_integration(
        &self,
        environment_id: &str,
        integration: &str,
        config: serde_json::Value,
        secret: Option<Secret>,
    ) -> Result<EnvironmentIntegration, StoreError> {
        if !config.is_object() {
            return Err(StoreError::InvalidInput(
                "config must be a JSON object".into(),
            ));
        }
        if let Some(key) = secret_context_key(&config) {
            return Err(StoreError::InvalidInput(format!(
                "config key `{key}` looks secret; pass it as the secret"
            )));
        }
        let text =
            serde_json::to_string(&config).map_err(|e| StoreError::InvalidInput(e.to_string()))?;
        let at = now();
        // The secret lands only while its key is the store's current one (see
        // `key_is_current`); settings without a secret are written as they are.
        let sql = format!(
            "INSERT INTO environment_integrations (environment_id, integration, config, \
             key_id, nonce, ciphertext, updated_at) SELECT $1, $2, $3, $4, $5, $6, $7 \
             WHERE $4 IS NULL OR {} \
             ON CONFLICT (environment_id, integration) DO UPDATE SET config = excluded.config, \
             key_id = excluded.key_id, nonce = excluded.nonce, \
             ciphertext = excluded.ciphertext, updated_at = excluded.updated_at",
            key_is_current("$4")
        );
        let mut written = false;
        for _ in 0..WRITE_ATTEMPTS {
            let sealed = match &secret {
                None => None,
                Some(s) => {
                    let mut plain = s.expose().as_bytes().to_vec();
                    let sealed = self
                        .inner
                        .keys
                        .seal(&aad(environment_id, integration), &plain);
                    plain.zeroize();
                    Some(sealed?)
                }
            };
            let n = on_pool!(self.pool(), p => {
                sqlx::query(&sql)
                    .bind(environment_id)
                    .bind(integration)
                    .bind(&text)
                    .bind(sealed.as_ref().map(|s| s.key_id.clone()))
                    .bind(sealed.as_ref().map(|s| s.nonce.clone()))
                    .bind(sealed.as_ref().map(|s| s.ciphertext.clone()))
                    .bind(at)
                    .execute(p)
                    .await?
                    .rows_affected()
            });
            if n == 1 {
                written = true;
                break;
            }
            self.refresh_store_key().await?;
        }
        if !written {
            return Err(key_changed());
        }
        Ok(EnvironmentIntegration {
            environment_id: environment_id.to_owned(),
            integration: integration.to_owned(),
            config,
            secret,
            updated_at: at,
        })
    }

    /// The settings of `integration` in this environment, secret decrypted.
    pub async fn environment_integration(
        &self,
        environment_id: &str,
        integration: &str,
    ) -> Result<Option<EnvironmentIntegration>, StoreError> {
        let row: Option<Row> = on_pool!(self.pool(), p => {
            sqlx::query_as(
                "SELECT config, key_id, nonce, ciphertext, updated_at FROM environment_integrations \
                 WHERE environment_id = $1 AND integration = $2",
            )
            .bind(environment_id)
            .bind(integration)
            .fetch_optional(p)
            .await?
        });
        let Some((config, key_id, nonce, ciphertext, updated_at)) = row else {
            return Ok(None);
        };
        let config = serde_json::from_str(&config)
            .map_err(|_| StoreError::Corrupt("environment integration: config".into()))?;
        let secret = match (key_id, nonce, ciphertext) {
            (Some(key_id), Some(nonce), Some(ciphertext)) => {
                let sealed = Sealed {
                    key_id,
                    nonce,
                    ciphertext,
                };
                let mut plain = self
                    .inner
                    .keys
                    .open(&aad(environment_id, integration), &sealed)?;
                let text = String::from_utf8(plain.clone())
                    .map_err(|_| StoreError::Corrupt("environment integration: secret".into()))?;
                plain.zeroize();
                Some(Secret::new(text))
            }
            _ => None,
        };
        Ok(Some(EnvironmentIntegration {
            environment_id: environment_id.to_owned(),
            integration: integration.to_owned(),
            config,
            secret,
            updated_at,
        }))
    }
}
