//! What a provision document applied to an account (see the `provisioned` migration):
//! the memory that makes applying the same document again change nothing already done.

use crate::db::on_pool;
use crate::{now, Store, StoreError};

/// One object a document applied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Provisioned {
    /// `repo`, `workflow`, `variable` or `webhook`.
    pub kind: String,
    /// The natural key within the document (`shop-api`, `shop-api/Build`, …).
    pub object_key: String,
    pub upstream_id: String,
    /// Keyed fingerprint of what was last applied.
    pub fingerprint: String,
    /// This document created the object (so `prune` may delete it).
    pub created: bool,
}

impl Store {
    /// Everything `document` applied to the account.
    pub async fn provisioned(
        &self,
        account_id: &str,
        document: &str,
    ) -> Result<Vec<Provisioned>, StoreError> {
        let rows: Vec<(String, String, String, String, bool)> = on_pool!(self.pool(), p => {
            sqlx::query_as(
                "SELECT kind, object_key, upstream_id, fingerprint, created FROM provisioned \
                 WHERE account_id = $1 AND document = $2 ORDER BY kind, object_key",
            )
            .bind(account_id)
            .bind(document)
            .fetch_all(p)
            .await?
        });
        Ok(rows
            .into_iter()
            .map(
                |(kind, object_key, upstream_id, fingerprint, created)| Provisioned {
                    kind,
                    object_key,
                    upstream_id,
                    fingerprint,
                    created,
                },
            )
            .collect())
    }

    /// Records what was applied; `created` stays true once set (a later update does not
    /// make the object someone else's).
    pub async fn record_provisioned(
        &self,
        account_id: &str,
        document: &str,
        object: &Provisioned,
    ) -> Result<(), StoreError> {
        let at = now();
        on_pool!(self.pool(), p => {
            sqlx::query(
                "INSERT INTO provisioned (account_id, document, kind, object_key, upstream_id, \
                 fingerprint, created, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
                 ON CONFLICT (account_id, document, kind, object_key) DO UPDATE SET \
                 upstream_id = excluded.upstream_id, fingerprint = excluded.fingerprint, \
                 created = provisioned.created OR excluded.created, updated_at = excluded.updated_at",
            )
            .bind(account_id)
            .bind(document)
            .bind(&object.kind)
            .bind(&object.object_key)
            .bind(&object.upstream_id)
            .bind(&object.fingerprint)
            .bind(object.created)
            .bind(at)
            .execute(p)
            .await?;
        });
        Ok(())
    }

    /// Forgets an object (pruned, or found deleted upstream).
    pub async fn forget_provisioned(
        &self,
        account_id: &str,
        document: &str,
        kind: &str,
        object_key: &str,
    ) -> Result<(), StoreError> {
        on_pool!(self.pool(), p => {
            sqlx::query(
                "DELETE FROM provisioned WHERE account_id = $1 AND document = $2 \
                 AND kind = $3 AND object_key = $4",
            )
            .bind(account_id)
            .bind(document)
            .bind(kind)
            .bind(object_key)
            .execute(p)
            .await?;
        });
        Ok(())
    }
}
