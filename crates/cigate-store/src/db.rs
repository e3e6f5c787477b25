//! The two backends. SQL is written once with `$N` placeholders, which both PostgreSQL
//! and SQLite (through sqlx) bind by number; [`on_pool!`] expands a query body once per
//! backend so the same text is type-checked against each driver. The differences that
//! remain (column types in migrations, catalog queries) live here and in the migration
//! directories.

use std::borrow::Cow;
use std::str::FromStr;
use std::sync::LazyLock;
use std::time::Duration;

use sqlx::migrate::{Migrate, Migration, MigrationType, Migrator};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Connection, Executor, PgPool, SqlitePool};

use crate::{StoreError, StoreOptions};

/// `(version, description, SQL)` of every migration, per backend (see `build.rs`).
mod embedded {
    include!(concat!(env!("OUT_DIR"), "/migrations.rs"));
}

static SQLITE_MIGRATOR: LazyLock<Migrator> = LazyLock::new(|| migrator(embedded::SQLITE));
static POSTGRES_MIGRATOR: LazyLock<Migrator> = LazyLock::new(|| migrator(embedded::POSTGRES));

/// The migrator `sqlx::migrate!` would build from the same files: checksums are the
/// SQL's SHA-384, so databases migrated by earlier builds stay valid.
fn migrator(files: &'static [(i64, &'static str, &'static str)]) -> Migrator {
    let migrations = files
        .iter()
        .map(|&(version, description, sql)| {
            Migration::new(
                version,
                Cow::Borrowed(description),
                MigrationType::Simple,
                Cow::Borrowed(sql),
                sql.starts_with("-- no-transaction"),
            )
        })
        .collect::<Vec<_>>();
    Migrator {
        migrations: Cow::Owned(migrations),
        ..Migrator::DEFAULT
    }
}

/// Which database a [`crate::Store`] talks to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Backend {
    Sqlite,
    Postgres,
}

#[derive(Clone, Debug)]
pub(crate) enum DbPool {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// Runs `$body` with `$p` bound to the backend's pool; the body is compiled once per
/// backend, so it must only use what both drivers support.
macro_rules! on_pool {
    ($pool:expr, $p:ident => $body:expr) => {
        match $pool {
            $crate::db::DbPool::Sqlite($p) => $body,
            $crate::db::DbPool::Postgres($p) => $body,
        }
    };
}
pub(crate) use on_pool;

/// Declares a struct read from a row by column name on either backend: what
/// `#[derive(sqlx::FromRow)]` gives, without sqlx's proc-macro crate (which builds a
/// second copy of sqlx and SQLite for the host).
macro_rules! row_struct {
    ($(#[$meta:meta])* struct $name:ident { $($field:ident: $ty:ty),* $(,)? }) => {
        $(#[$meta])*
        struct $name {
            $($field: $ty),*
        }
        $crate::db::row_struct!(@impl $name, sqlx::sqlite::SqliteRow, $($field),*);
        $crate::db::row_struct!(@impl $name, sqlx::postgres::PgRow, $($field),*);
    };
    (@impl $name:ident, $row:ty, $($field:ident),*) => {
        impl<'r> sqlx::FromRow<'r, $row> for $name {
            fn from_row(row: &'r $row) -> Result<Self, sqlx::Error> {
                use sqlx::Row as _;
                Ok(Self {
                    $($field: row.try_get(stringify!($field))?),*
                })
            }
        }
    };
}
pub(crate) use row_struct;

impl DbPool {
    pub(crate) fn backend(&self) -> Backend {
        match self {
            DbPool::Sqlite(_) => Backend::Sqlite,
            DbPool::Postgres(_) => Backend::Postgres,
        }
    }

    pub(crate) async fn table_exists(&self, table: &str) -> Result<bool, StoreError> {
        let n: i64 = match self {
            DbPool::Sqlite(pool) => {
                sqlx::query_scalar(
                    "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = $1",
                )
                .bind(table)
                .fetch_one(pool)
                .await?
            }
            DbPool::Postgres(pool) => {
                sqlx::query_scalar(
                    "SELECT COUNT(*) FROM information_schema.tables \
                     WHERE table_schema = current_schema() AND table_name = $1",
                )
                .bind(table)
                .fetch_one(pool)
                .await?
            }
        };
        Ok(n > 0)
    }

    pub(crate) async fn migrate(&self) -> Result<(), StoreError> {
        match self {
            DbPool::Sqlite(pool) => SQLITE_MIGRATOR.run(pool).await?,
            DbPool::Postgres(pool) => POSTGRES_MIGRATOR.run(pool).await?,
        }
        Ok(())
    }

    /// Reachable, and every migration this build knows is applied with a matching checksum.
    pub(crate) async fn ready(&self) -> Result<(), StoreError> {
        let (applied, migrator) = match self {
            DbPool::Sqlite(pool) => {
                let mut conn = pool.acquire().await?;
                conn.ping().await?;
                (conn.list_applied_migrations().await, &SQLITE_MIGRATOR)
            }
            DbPool::Postgres(pool) => {
                let mut conn = pool.acquire().await?;
                conn.ping().await?;
                (conn.list_applied_migrations().await, &POSTGRES_MIGRATOR)
            }
        };
        let applied = applied.map_err(|_| {
            StoreError::NotMigrated("no migrations have been applied; run `cigate migrate`".into())
        })?;
        for m in migrator
            .iter()
            .filter(|m| !m.migration_type.is_down_migration())
        {
            match applied.iter().find(|a| a.version == m.version) {
                None => {
                    return Err(StoreError::NotMigrated(format!(
                        "migration {} ({}) is not applied; run `cigate migrate`",
                        m.version, m.description
                    )))
                }
                Some(a) if a.checksum != m.checksum => {
                    return Err(StoreError::NotMigrated(format!(
                        "applied migration {} differs from this build's",
                        m.version
                    )))
                }
                Some(_) => {}
            }
        }
        Ok(())
    }
}

pub(crate) async fn connect(url: &str, opts: &StoreOptions) -> Result<DbPool, StoreError> {
    let max = opts.max_connections.max(1);
    if url.starts_with("sqlite:") {
        let options = SqliteConnectOptions::from_str(url)
            .map_err(|e| StoreError::InvalidUrl(format!("not a valid SQLite URL: {e}")))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10));
        let file = options.get_filename();
        let on_disk = !file.as_os_str().to_string_lossy().starts_with(':');
        if let Some(parent) = file.parent().filter(|p| !p.as_os_str().is_empty()) {
            if on_disk && !parent.exists() {
                std::fs::create_dir_all(parent).map_err(|e| StoreError::io(parent, e))?;
            }
        }
        if on_disk {
            create_private(file)?;
        }
        let pool = SqlitePoolOptions::new()
            .max_connections(max)
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(options)
            .await?;
        Ok(DbPool::Sqlite(pool))
    } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
        let options = PgConnectOptions::from_str(url)
            // The parse error may quote the URL, which can carry a password.
            .map_err(|_| StoreError::InvalidUrl("not a valid PostgreSQL URL".into()))?;
        let mut pool_options = PgPoolOptions::new()
            .max_connections(max)
            .acquire_timeout(opts.acquire_timeout);
        if let Some(schema) = &opts.schema {
            validate_schema_name(schema)?;
            let mut conn = sqlx::PgConnection::connect_with(&options).await?;
            conn.execute(format!("CREATE SCHEMA IF NOT EXISTS \"{schema}\"").as_str())
                .await?;
            conn.close().await?;
            let set_path = format!("SET search_path TO \"{schema}\"");
            pool_options = pool_options.after_connect(move |conn, _meta| {
                let set_path = set_path.clone();
                Box::pin(async move {
                    conn.execute(set_path.as_str()).await?;
                    Ok(())
                })
            });
        }
        Ok(DbPool::Postgres(pool_options.connect_with(options).await?))
    } else {
        Err(StoreError::InvalidUrl(
            "expected a URL starting with sqlite:// or postgres://".into(),
        ))
    }
}

/// Creates a missing database file readable by its owner only (0600), as the key file
/// is: it holds sealed credentials and the signing keys. SQLite gives its `-wal` and
/// `-shm` files the database file's mode.
fn create_private(file: &std::path::Path) -> Result<(), StoreError> {
    match crate::crypto::open_private(file, true) {
        Ok(_) => Ok(()),
        Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(err) => Err(StoreError::io(file, err)),
    }
}

fn validate_schema_name(schema: &str) -> Result<(), StoreError> {
    let ok = !schema.is_empty()
        && schema.len() <= 63
        && schema
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && schema
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(StoreError::InvalidInput(format!(
            "schema name `{schema}` must match [a-z_][a-z0-9_]{{0,62}}"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `sqlx::migrate!` (and `sqlx migrate run`) read from the same directory:
    /// version, description, type, transaction mode and checksum must all agree, or a
    /// database migrated by an earlier build would be refused as changed.
    #[tokio::test]
    async fn the_embedded_migrations_are_what_sqlx_reads_from_the_directory() {
        for (backend, ours) in [
            ("sqlite", &*SQLITE_MIGRATOR),
            ("postgres", &*POSTGRES_MIGRATOR),
        ] {
            let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("migrations")
                .join(backend);
            let files = std::fs::read_dir(&dir).unwrap().count();
            let theirs = Migrator::new(dir).await.unwrap();
            let shape = |m: &Migrator| {
                m.iter()
                    .map(|m| {
                        (
                            m.version,
                            m.description.to_string(),
                            m.migration_type,
                            m.no_tx,
                            m.checksum.to_vec(),
                        )
                    })
                    .collect::<Vec<_>>()
            };
            assert_eq!(
                theirs.iter().count(),
                files,
                "{backend}: every file was read"
            );
            assert_eq!(shape(ours), shape(&theirs), "{backend}");
        }
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn a_new_sqlite_database_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("sub").join("cigate.db");
        let opts = StoreOptions::new(crate::KeyConfig::File(dir.path().join("cigate.key")));
        let pool = connect(&format!("sqlite://{}", db.display()), &opts)
            .await
            .unwrap();
        pool.migrate().await.unwrap();
        for file in [db.clone(), db.with_extension("db-wal")] {
            let mode = std::fs::metadata(&file).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "{}", file.display());
        }
    }
}
