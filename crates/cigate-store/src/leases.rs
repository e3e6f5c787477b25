//! Short leases that make one holder (one process) refresh an account's OAuth token at a
//! time across every instance sharing the database.

use std::time::Duration;

use crate::db::on_pool;
use crate::{now, ttl_from, Store, StoreError};

impl Store {
    /// Takes the refresh lease of `account_id` for `ttl` if it is free, expired, or
    /// already `holder`'s (which extends it). `false` if another holder has it. Unknown
    /// account → [`StoreError::NotFound`].
    pub async fn try_acquire_lease(
        &self,
        account_id: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let now = now();
        let expires_at = ttl_from(now, ttl)?;
        let n = on_pool!(self.pool(), p => {
            sqlx::query(
                "INSERT INTO refresh_leases (account_id, holder, expires_at) VALUES ($1, $2, $3) \
                 ON CONFLICT (account_id) DO UPDATE SET holder = excluded.holder, \
                 expires_at = excluded.expires_at \
                 WHERE refresh_leases.expires_at <= $4 OR refresh_leases.holder = $2",
            )
            .bind(account_id)
            .bind(holder)
            .bind(expires_at)
            .bind(now)
            .execute(p)
            .await?
            .rows_affected()
        });
        Ok(n > 0)
    }

    /// Gives the lease back early; `false` if `holder` did not hold it.
    pub async fn release_lease(&self, account_id: &str, holder: &str) -> Result<bool, StoreError> {
        let n = on_pool!(self.pool(), p => {
            sqlx::query("DELETE FROM refresh_leases WHERE account_id = $1 AND holder = $2")
                .bind(account_id)
                .bind(holder)
                .execute(p)
                .await?
                .rows_affected()
        });
        Ok(n > 0)
    }
}
