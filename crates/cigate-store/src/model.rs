//! The records the store hands out. None of them holds a secret except [`Credential`],
//! whose values are [`Secret`]s and which deliberately does not implement `Serialize`.

use chrono::{DateTime, Utc};
use cigate_core::Secret;
use serde::{Deserialize, Serialize};

use crate::StoreError;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Environment {
    pub id: String,
    pub name: String,
    pub created_at: DateTime<Utc>,
}

/// An API token's metadata; the token itself is only returned once, by
/// [`crate::Store::create_api_token`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiToken {
    pub id: String,
    pub environment_id: String,
    pub name: Option<String>,
    pub created_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AccountStatus {
    Connecting,
    Active,
    NeedsReauth,
    ValidationError,
}

impl AccountStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            AccountStatus::Connecting => "connecting",
            AccountStatus::Active => "active",
            AccountStatus::NeedsReauth => "needs_reauth",
            AccountStatus::ValidationError => "validation_error",
        }
    }
}

impl std::str::FromStr for AccountStatus {
    type Err = StoreError;
    fn from_str(s: &str) -> Result<Self, StoreError> {
        Ok(match s {
            "connecting" => AccountStatus::Connecting,
            "active" => AccountStatus::Active,
            "needs_reauth" => AccountStatus::NeedsReauth,
            "validation_error" => AccountStatus::ValidationError,
            other => {
                return Err(StoreError::InvalidInput(format!(
                    "unknown account status `{other}`"
                )))
            }
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthMethod {
    ApiKey,
    Oauth2,
}

impl AuthMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            AuthMethod::ApiKey => "api_key",
            AuthMethod::Oauth2 => "oauth2",
        }
    }
}

impl std::str::FromStr for AuthMethod {
    type Err = StoreError;
    fn from_str(s: &str) -> Result<Self, StoreError> {
        Ok(match s {
            "api_key" => AuthMethod::ApiKey,
            "oauth2" => AuthMethod::Oauth2,
            other => {
                return Err(StoreError::InvalidInput(format!(
                    "unknown authentication method `{other}`"
                )))
            }
        })
    }
}

/// An integrated account as the API shows it. Holds no secret: the credential lives in
/// its own table, encrypted, and is read with [`crate::Store::credential`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Account {
    pub id: String,
    pub environment_id: String,
    pub tenant_id: Option<String>,
    pub integration: String,
    pub status: AccountStatus,
    pub authentication_method: AuthMethod,
    /// Non-secret keys only (`base_url`, `region`, `workspace`, `scopes`, …); the store
    /// refuses secret-looking keys.
    pub context: serde_json::Value,
    pub last_error: Option<String>,
    pub last_forbidden_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl Account {
    /// The keyset position of this account, to pass as `after` to
    /// [`crate::Store::list_accounts`] for the next page. Opaque; not signed (the server
    /// signs its own cursors).
    pub fn page_key(&self) -> String {
        format!("{}.{}", self.created_at.timestamp_micros(), self.id)
    }
}

/// A decrypted credential. `Debug` redacts every secret; there is no `Serialize`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Credential {
    ApiKey {
        api_key: Secret,
    },
    OAuth2 {
        access_token: Secret,
        refresh_token: Option<Secret>,
        expires_at: Option<DateTime<Utc>>,
    },
}

impl Credential {
    pub fn method(&self) -> AuthMethod {
        match self {
            Credential::ApiKey { .. } => AuthMethod::ApiKey,
            Credential::OAuth2 { .. } => AuthMethod::Oauth2,
        }
    }
}

/// The plaintext form that is encrypted. Private so no code path can serialize a
/// credential anywhere but into [`crate::crypto::seal`].
#[derive(Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(crate) enum CredentialPlain {
    ApiKey {
        api_key: String,
    },
    #[serde(rename = "oauth2")]
    OAuth2 {
        access_token: String,
        #[serde(default)]
        refresh_token: Option<String>,
        #[serde(default)]
        expires_at: Option<DateTime<Utc>>,
    },
}

impl From<&Credential> for CredentialPlain {
    fn from(c: &Credential) -> Self {
        match c {
            Credential::ApiKey { api_key } => CredentialPlain::ApiKey {
                api_key: api_key.expose().to_owned(),
            },
            Credential::OAuth2 {
                access_token,
                refresh_token,
                expires_at,
            } => CredentialPlain::OAuth2 {
                access_token: access_token.expose().to_owned(),
                refresh_token: refresh_token.as_ref().map(|s| s.expose().to_owned()),
                expires_at: *expires_at,
            },
        }
    }
}

impl From<CredentialPlain> for Credential {
    fn from(c: CredentialPlain) -> Self {
        match c {
            CredentialPlain::ApiKey { api_key } => Credential::ApiKey {
                api_key: Secret::new(api_key),
            },
            CredentialPlain::OAuth2 {
                access_token,
                refresh_token,
                expires_at,
            } => Credential::OAuth2 {
                access_token: Secret::new(access_token),
                refresh_token: refresh_token.map(Secret::new),
                expires_at,
            },
        }
    }
}

/// What [`crate::Store::create_account`] needs. The authentication method is taken from
/// the credential.
#[derive(Clone, Debug)]
pub struct NewAccount {
    pub environment_id: String,
    pub tenant_id: Option<String>,
    pub integration: String,
    pub status: AccountStatus,
    pub context: serde_json::Value,
    pub last_error: Option<String>,
    pub credential: Credential,
}

/// Changes for [`crate::Store::update_account`]; `None` leaves a field as it is, and for
/// nullable fields `Some(None)` clears it. A new credential also sets the
/// authentication method.
#[derive(Clone, Debug, Default)]
pub struct AccountPatch {
    pub tenant_id: Option<Option<String>>,
    pub context: Option<serde_json::Value>,
    pub status: Option<AccountStatus>,
    pub last_error: Option<Option<String>>,
    pub last_forbidden_error: Option<Option<String>>,
    pub credential: Option<Credential>,
}

impl AccountPatch {
    pub fn is_empty(&self) -> bool {
        self.tenant_id.is_none()
            && self.context.is_none()
            && self.status.is_none()
            && self.last_error.is_none()
            && self.last_forbidden_error.is_none()
            && self.credential.is_none()
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AccountFilter {
    pub tenant_id: Option<String>,
    pub status: Option<AccountStatus>,
    pub integration: Option<String>,
}

/// Result of [`crate::Store::rotate_keys`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RotationReport {
    /// The key every sealed value is now encrypted under.
    pub current_key_id: String,
    /// Key ids sealed values were moved away from.
    pub previous_key_ids: Vec<String>,
    /// Sealed values re-encrypted, of every kind.
    pub reencrypted: u64,
    /// The same by table (every table holding sealed values is listed).
    pub reencrypted_by_table: std::collections::BTreeMap<String, u64>,
    /// Keys removed from the key file (empty unless the keyring is a key file).
    pub retired_key_ids: Vec<String>,
}

/// Key names that never belong in an account's stored context.
pub(crate) fn secret_context_key(value: &serde_json::Value) -> Option<String> {
    fn looks_secret(key: &str) -> bool {
        let k = key.to_ascii_lowercase();
        k == "api_key"
            || k == "apikey"
            || k == "password"
            || k.contains("token")
            || k.contains("secret")
    }
    match value {
        serde_json::Value::Object(map) => map.iter().find_map(|(k, v)| {
            if looks_secret(k) {
                Some(k.clone())
            } else {
                secret_context_key(v)
            }
        }),
        serde_json::Value::Array(items) => items.iter().find_map(secret_context_key),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credential_plain_round_trip_and_redaction() {
        let c = Credential::OAuth2 {
            access_token: Secret::new("at-plain"),
            refresh_token: Some(Secret::new("rt-plain")),
            expires_at: None,
        };
        assert!(!format!("{c:?}").contains("plain"));
        let json = serde_json::to_string(&CredentialPlain::from(&c)).unwrap();
        assert!(json.contains("\"type\":\"oauth2\""));
        let back: Credential = serde_json::from_str::<CredentialPlain>(&json)
            .unwrap()
            .into();
        assert_eq!(back, c);
    }

    #[test]
    fn finds_secret_keys_anywhere() {
        let ok = serde_json::json!({"base_url": "x", "scopes": ["a"], "workspace": "w"});
        assert_eq!(secret_context_key(&ok), None);
        let bad = serde_json::json!({"oauth": {"token": {"x": 1}}});
        assert_eq!(secret_context_key(&bad).as_deref(), Some("token"));
        let bad = serde_json::json!({"Client_Secret": "s"});
        assert!(secret_context_key(&bad).is_some());
    }
}
