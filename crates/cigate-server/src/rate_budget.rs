//! The store as the provider rate budget several instances share
//! ([`ServerConfig::rate_budget`](crate::config::ServerConfig::rate_budget)).

use cigate_buddy::client::HttpPool;
use cigate_buddy::governor::SharedBudget;
use cigate_store::{Backend, Store};
use std::sync::Arc;

use crate::config::RateBudget;

/// The pool as configured: sharing its governors' units through the store, or not.
pub fn apply(http: HttpPool, setting: RateBudget, store: &Store) -> HttpPool {
    let shared = match setting {
        RateBudget::Shared => true,
        RateBudget::Local => false,
        RateBudget::Auto => store.backend() == Backend::Postgres,
    };
    if shared {
        http.sharing_budget(Arc::new(StoreBudget(store.clone())))
    } else {
        http
    }
}

/// Units taken in the store's `rate_units`. A store that fails leaves each governor on
/// its own view (the call goes, as it would with a per-process budget).
#[derive(Debug)]
struct StoreBudget(Store);

#[async_trait::async_trait]
impl SharedBudget for StoreBudget {
    async fn take(&self, account: &str, reset: i64, limit: u64) -> Option<u64> {
        match self.0.take_rate_unit(account, reset, limit).await {
            Ok(taken) => taken,
            Err(err) => {
                tracing::warn!(error = %err, "taking a shared rate unit failed; governing locally");
                // Nothing counted: the governor's own estimate stands.
                Some(0)
            }
        }
    }

    async fn count(&self, account: &str, reset: i64) {
        if let Err(err) = self.0.count_rate_unit(account, reset).await {
            tracing::warn!(error = %err, "counting a shared rate unit failed");
        }
    }
}
