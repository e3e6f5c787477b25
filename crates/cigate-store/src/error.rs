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
    /// The database cannot be reached right now (down, unreachable, restarting, out of
    /// connections): worth retrying shortly, unlike a bad query or bad data.
    pub fn is_unavailable(&self) -> bool {
        let StoreError::Database(err) = self else {
            return false;
        };
        match err {
            sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::WorkerCrashed
            // A connection that ends mid-handshake reads as a protocol error.
            | sqlx::Error::Protocol(_) => true,
            // PostgreSQL's connection exceptions (class 08), shutdown and "cannot
            // connect now" (57P01–57P03), too many connections (53300).
            sqlx::Error::Database(db) => db.code().is_some_and(|code| {
                code.starts_with("08") || matches!(&*code, "57P01" | "57P02" | "57P03" | "53300")
            }),
            _ => false,
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        StoreError::Io {
            path: path.into(),
            source,
        }
    }
}

#[cfg(test)]
mod unavailable_tests {
    use super::StoreError;

    #[test]
    fn an_unreachable_database_is_unavailable_and_a_bad_query_is_not() {
        let refused = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        for err in [
            sqlx::Error::PoolTimedOut,
            sqlx::Error::PoolClosed,
            sqlx::Error::Io(refused),
        ] {
            assert!(StoreError::Database(err).is_unavailable());
        }
        assert!(!StoreError::Database(sqlx::Error::RowNotFound).is_unavailable());
        assert!(!StoreError::NotFound.is_unavailable());
        assert!(!StoreError::Corrupt("x".into()).is_unavailable());
    }
}
