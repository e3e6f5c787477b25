//! Opening the store the way every command does: the URL, then the master key from
//! the environment, an explicit key file, or the key file beside the SQLite database.

use std::path::PathBuf;

use cigate_store::{KeyConfig, Store, StoreOptions};

use crate::config::ServerConfig;
use crate::StartError;

/// Where the key file lives when none is named: beside the SQLite database file.
fn default_key_file(database_url: &str) -> Option<PathBuf> {
    let path = database_url
        .strip_prefix("sqlite://")
        .or_else(|| database_url.strip_prefix("sqlite:"))?;
    let path = path.split('?').next().unwrap_or(path);
    let db = PathBuf::from(path);
    let dir = db.parent().map(PathBuf::from).unwrap_or_default();
    Some(dir.join("cigate.key"))
}

pub fn key_config(config: &ServerConfig) -> Result<KeyConfig, StartError> {
    if let Some(key) = &config.master_key {
        return Ok(KeyConfig::Env(key.expose().to_owned()));
    }
    if let Some(file) = config
        .key_file
        .clone()
        .or_else(|| default_key_file(&config.database_url))
    {
        return Ok(KeyConfig::File(file));
    }
    Err(StartError::Config(
        "no master key: set CIGATE_MASTER_KEY (base64 of 32 bytes) or --key-file for PostgreSQL"
            .into(),
    ))
}

/// Connects and applies migrations.
pub async fn open(config: &ServerConfig) -> Result<Store, StartError> {
    let mut options = StoreOptions::new(key_config(config)?);
    options.schema = config.database_schema.clone();
    options.acquire_timeout = config.database_acquire_timeout;
    let store = Store::connect(&config.database_url, options).await?;
    store.migrate().await?;
    Ok(store)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_file_sits_beside_the_database() {
        assert_eq!(
            default_key_file("sqlite:///var/lib/cigate/cigate.db?mode=rwc"),
            Some(PathBuf::from("/var/lib/cigate/cigate.key"))
        );
        assert_eq!(
            default_key_file("sqlite://cigate.db"),
            Some(PathBuf::from("cigate.key"))
        );
        assert_eq!(default_key_file("postgres://localhost/x"), None);
    }
}
