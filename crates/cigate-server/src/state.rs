//! What every handler shares.

use std::sync::Arc;

use cigate_buddy::base_url::UpstreamPolicy;
use cigate_buddy::client::HttpPool;
use cigate_core::cursor::CursorCodec;
use cigate_store::Store;

use crate::cache::HotCache;
use crate::config::ServerConfig;
use crate::error::ApiError;
use crate::limits::Limits;
use crate::metrics::{Metrics, ScopeLabels};
use crate::refresh::Refresher;

/// Cheap to clone (one reference count): every middleware layer and handler takes its
/// own copy per request. Fields are read through `Deref`.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl AppState {
    pub fn new(shared: Shared) -> Self {
        Self(Arc::new(shared))
    }
}

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

pub struct Shared {
    pub store: Store,
    pub http: HttpPool,
    pub cursors: Arc<CursorCodec>,
    pub config: Arc<ServerConfig>,
    pub metrics: Arc<Metrics>,
    pub limits: Arc<Limits>,
    pub cache: Arc<HotCache>,
    /// Token endpoint client (same upstream policy as `http`).
    pub oauth_http: reqwest::Client,
    pub refresher: Arc<Refresher>,
    /// Signs the Link page's form tokens.
    pub link_key: Arc<Vec<u8>>,
    /// Wakes this instance's delivery worker when an event was queued.
    pub deliveries: Arc<tokio::sync::Notify>,
    /// Signals between job-event sources, the detector and event streams.
    pub watch: Arc<crate::watch::Hub>,
    /// Kept answers of status badges: the one short-lived cache of CI/CD data.
    pub badges: crate::badge::Views,
}

impl AppState {
    /// Spends one request of the API token's own limit (429 when spent).
    pub fn check_token_limit(&self, token_id: &str) -> Result<(), ApiError> {
        self.count_refusal(self.limits.check_token(token_id), "token")
    }

    /// Spends one request of the account's own limit (429 when spent); called before
    /// every unified, proxy or custom call that reaches Buddy.
    pub fn check_account_limit(&self, account_id: &str) -> Result<(), ApiError> {
        self.count_refusal(self.limits.check_account(account_id), "account")
    }

    fn count_refusal(
        &self,
        result: Result<(), ApiError>,
        scope: &'static str,
    ) -> Result<(), ApiError> {
        if result.is_err() {
            self.metrics
                .limited
                .get_or_create(&ScopeLabels { scope })
                .inc();
        }
        result
    }

    /// The deadline of an upstream call when the caller sets none (`truto_timeout_ms`).
    pub fn default_timeout(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.config.upstream_timeout_ms)
    }

    pub fn upstream_policy(&self) -> UpstreamPolicy {
        UpstreamPolicy {
            allow_private: self.config.allow_private_upstreams,
        }
    }
}
