//! A provider rate budget shared by every instance on the database: several `cigate
//! serve` processes using one account each govern their own calls, and without a shared
//! count two of them may take a window's last unit at once. A unit is taken here before
//! a call goes out; one row per account and window.

use crate::db::on_pool;
use crate::{Store, StoreError};

impl Store {
    /// Takes one unit of the window ending at `window_reset` unless `limit` are taken
    /// already. The units taken after this one, or `None` when the window is full.
    pub async fn take_rate_unit(
        &self,
        account_key: &str,
        window_reset: i64,
        limit: u64,
    ) -> Result<Option<u64>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let taken: Option<i64> = on_pool!(self.pool(), p => {
            sqlx::query_scalar(
                "INSERT INTO rate_units (account_key, window_reset, taken) VALUES ($1, $2, 1) \
                 ON CONFLICT (account_key, window_reset) DO UPDATE \
                 SET taken = rate_units.taken + 1 WHERE rate_units.taken < $3 \
                 RETURNING taken",
            )
            .bind(account_key)
            .bind(window_reset)
            .bind(limit)
            .fetch_optional(p)
            .await?
        });
        Ok(taken.map(|n| n.max(0) as u64))
    }

    /// Counts a unit spent without taking it first (a call sent before its window was
    /// known, or one that landed in the next window).
    pub async fn count_rate_unit(
        &self,
        account_key: &str,
        window_reset: i64,
    ) -> Result<(), StoreError> {
        on_pool!(self.pool(), p => {
            sqlx::query(
                "INSERT INTO rate_units (account_key, window_reset, taken) VALUES ($1, $2, 1) \
                 ON CONFLICT (account_key, window_reset) DO UPDATE SET taken = rate_units.taken + 1",
            )
            .bind(account_key)
            .bind(window_reset)
            .execute(p)
            .await?;
        });
        Ok(())
    }

    /// Forgets windows that reset before `before` (Unix seconds).
    pub async fn prune_rate_units(&self, before: i64) -> Result<u64, StoreError> {
        Ok(on_pool!(self.pool(), p => {
            sqlx::query("DELETE FROM rate_units WHERE window_reset < $1")
                .bind(before)
                .execute(p)
                .await?
                .rows_affected()
        }))
    }
}
