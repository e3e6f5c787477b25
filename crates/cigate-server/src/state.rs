//! What every handler shares.

use std::sync::Arc;

use cigate_buddy::base_url::UpstreamPolicy;
use cigate_buddy::client::HttpPool;
use cigate_core::cursor::CursorCodec;
use cigate_store::Store;

use crate::config::ServerConfig;

#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub http: HttpPool,
    pub cursors: Arc<CursorCodec>,
    pub config: Arc<ServerConfig>,
}

impl AppState {
    pub fn upstream_policy(&self) -> UpstreamPolicy {
        UpstreamPolicy {
            allow_private: self.config.allow_private_upstreams,
        }
    }
}
