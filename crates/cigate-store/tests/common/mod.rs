//! Runs each test body against SQLite (always) and PostgreSQL (when
//! `CIGATE_TEST_POSTGRES_URL` is set), each PostgreSQL test in a fresh schema.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

use cigate_store::{Backend, KeyConfig, Store, StoreOptions};
use sqlx::postgres::PgPoolOptions;
use sqlx::{Executor, PgPool, SqlitePool};

pub const PG_ENV: &str = "CIGATE_TEST_POSTGRES_URL";

pub struct Ctx {
    pub backend: Backend,
    pub url: String,
    pub schema: Option<String>,
    pub dir: tempfile::TempDir,
}

impl Ctx {
    pub fn sqlite() -> Ctx {
        let dir = tempfile::tempdir().expect("tempdir");
        let url = format!("sqlite://{}", dir.path().join("data/cigate.db").display());
        Ctx {
            backend: Backend::Sqlite,
            url,
            schema: None,
            dir,
        }
    }

    pub fn postgres() -> Option<Ctx> {
        let Ok(url) = std::env::var(PG_ENV) else {
            eprintln!("skipping: {PG_ENV} not set");
            return None;
        };
        Some(Ctx {
            backend: Backend::Postgres,
            url,
            schema: Some(format!("cigate_test_{}", uuid::Uuid::new_v4().simple())),
            dir: tempfile::tempdir().expect("tempdir"),
        })
    }

    pub fn key_file(&self) -> PathBuf {
        self.dir.path().join("cigate.key")
    }

    pub fn options(&self, key: KeyConfig) -> StoreOptions {
        StoreOptions {
            schema: self.schema.clone(),
            max_connections: 5,
            key,
            acquire_timeout: std::time::Duration::from_secs(30),
        }
    }

    pub async fn connect(&self, key: KeyConfig) -> Result<Store, cigate_store::StoreError> {
        Store::connect(&self.url, self.options(key)).await
    }

    /// Connected with the default key file and migrated.
    pub async fn store(&self) -> Store {
        let store = self
            .connect(KeyConfig::File(self.key_file()))
            .await
            .expect("connect");
        store.migrate().await.expect("migrate");
        store
    }

    pub async fn raw(&self) -> Raw {
        match self.backend {
            Backend::Sqlite => {
                Raw::Sqlite(SqlitePool::connect(&self.url).await.expect("raw sqlite"))
            }
            Backend::Postgres => {
                let path = format!(
                    "SET search_path TO \"{}\"",
                    self.schema.clone().unwrap_or_default()
                );
                let pool = PgPoolOptions::new()
                    .max_connections(2)
                    .after_connect(move |conn, _| {
                        let path = path.clone();
                        Box::pin(async move {
                            conn.execute(path.as_str()).await?;
                            Ok(())
                        })
                    })
                    .connect(&self.url)
                    .await
                    .expect("raw postgres");
                Raw::Postgres(pool)
            }
        }
    }

    pub async fn cleanup(&self) {
        if let (Backend::Postgres, Some(schema)) = (self.backend, &self.schema) {
            if let Ok(pool) = PgPool::connect(&self.url).await {
                let _ = pool
                    .execute(format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE").as_str())
                    .await;
                pool.close().await;
            }
        }
    }

    /// Every byte the backend keeps for this store: the SQLite files, or a text dump of
    /// the schema's tables for PostgreSQL.
    pub async fn all_stored_bytes(&self) -> Vec<u8> {
        match self.backend {
            Backend::Sqlite => {
                let mut out = Vec::new();
                collect_files(self.dir.path(), &mut out);
                out
            }
            Backend::Postgres => {
                let raw = self.raw().await;
                let mut out = Vec::new();
                for table in [
                    "environments",
                    "api_tokens",
                    "accounts",
                    "account_credentials",
                    "key_check",
                ] {
                    for text in raw
                        .strings(&format!("SELECT row_to_json(t)::text FROM {table} t"))
                        .await
                    {
                        out.extend_from_slice(text.as_bytes());
                    }
                }
                out
            }
        }
    }
}

fn collect_files(dir: &Path, out: &mut Vec<u8>) {
    for entry in std::fs::read_dir(dir).expect("read_dir").flatten() {
        let path = entry.path();
        if path.is_dir() {
            collect_files(&path, out);
        } else if path.extension().and_then(|e| e.to_str()) != Some("key") {
            out.extend(std::fs::read(&path).unwrap_or_default());
        }
    }
}

pub enum Raw {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

pub type CredRow = (String, Vec<u8>, Vec<u8>);

impl Raw {
    pub async fn strings(&self, sql: &str) -> Vec<String> {
        match self {
            Raw::Sqlite(p) => sqlx::query_scalar(sql).fetch_all(p).await.expect(sql),
            Raw::Postgres(p) => sqlx::query_scalar(sql).fetch_all(p).await.expect(sql),
        }
    }

    pub async fn cred_row(&self, account_id: &str) -> CredRow {
        let sql = "SELECT key_id, nonce, ciphertext FROM account_credentials WHERE account_id = $1";
        match self {
            Raw::Sqlite(p) => sqlx::query_as(sql).bind(account_id).fetch_one(p).await,
            Raw::Postgres(p) => sqlx::query_as(sql).bind(account_id).fetch_one(p).await,
        }
        .expect("credential row")
    }

    pub async fn set_cred_row(&self, account_id: &str, row: &CredRow) {
        let sql = "UPDATE account_credentials SET key_id = $1, nonce = $2, ciphertext = $3 \
                   WHERE account_id = $4";
        let n = match self {
            Raw::Sqlite(p) => sqlx::query(sql)
                .bind(&row.0)
                .bind(&row.1)
                .bind(&row.2)
                .bind(account_id)
                .execute(p)
                .await
                .map(|r| r.rows_affected()),
            Raw::Postgres(p) => sqlx::query(sql)
                .bind(&row.0)
                .bind(&row.1)
                .bind(&row.2)
                .bind(account_id)
                .execute(p)
                .await
                .map(|r| r.rows_affected()),
        }
        .expect("update credential row");
        assert_eq!(n, 1);
    }

    /// Runs a statement; returns the rows it touched.
    pub async fn execute(&self, sql: &str) -> u64 {
        match self {
            Raw::Sqlite(p) => sqlx::query(sql).execute(p).await.map(|r| r.rows_affected()),
            Raw::Postgres(p) => sqlx::query(sql).execute(p).await.map(|r| r.rows_affected()),
        }
        .expect(sql)
    }

    pub async fn count(&self, sql: &str) -> i64 {
        match self {
            Raw::Sqlite(p) => sqlx::query_scalar(sql).fetch_one(p).await,
            Raw::Postgres(p) => sqlx::query_scalar(sql).fetch_one(p).await,
        }
        .expect(sql)
    }

    pub async fn close(self) {
        match self {
            Raw::Sqlite(p) => p.close().await,
            Raw::Postgres(p) => p.close().await,
        }
    }
}

/// `both_backends!(name, |ctx| { ... })` defines `name::sqlite` and `name::postgres`.
#[macro_export]
macro_rules! both_backends {
    ($name:ident, |$ctx:ident| $body:block) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                let $ctx = common::Ctx::sqlite();
                $body
                $ctx.cleanup().await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                let Some($ctx) = common::Ctx::postgres() else {
                    return;
                };
                $body
                $ctx.cleanup().await;
            }
        }
    };
}
