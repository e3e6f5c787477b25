use std::path::PathBuf;

/// Everything the store can fail with. Messages never contain key material, credentials
/// or token plaintexts: they name key ids, paths and columns only.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("not found")]
    NotFound,
    #[error("conflict: {0}")]
    Conflict(String),
    #[error("invalid input: {0}")]
    InvalidInput(String),
    #[error("invalid database URL: {0}")]
    InvalidUrl(String),
    /// The master key configuration is missing, malformed, or does not match the data.
    #[error("master key: {0}")]
    Key(String),
    /// A ciphertext failed to decrypt (tampered, moved to another row, or sealed under a
    /// different key with the same id) or could not be produced.
    #[error("credential encryption: {0}")]
    Crypto(String),
    #[error("migration failed: {0}")]
    Migration(#[from] sqlx::migrate::MigrateError),
    #[error("database is not migrated: {0}")]
    NotMigrated(String),
    #[error("database error: {0}")]
    Database(#[source] sqlx::Error),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A stored value the store itself wrote no longer parses.
    #[error("corrupt stored data: {0}")]
    Corrupt(String),
}

impl From<sqlx::Error> for StoreError {
    fn from(err: sqlx::Error) -> Self {
        if let sqlx::Error::Database(db) = &err {
            if db.is_unique_violation() {
                return StoreError::Conflict("a record with the same unique key exists".into());
            }
            if db.is_foreign_key_violation() {
                return StoreError::NotFound;
            }
        }
        StoreError::Database(err)
    }
}

impl StoreError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        StoreError::Io {
            path: path.into(),
            source,
        }
    }
}
