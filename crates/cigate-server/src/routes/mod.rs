//! The HTTP surface: public operational routes and everything behind an API token.

use axum::extract::DefaultBodyLimit;
use axum::middleware;
use axum::routing::get;
use axum::Router;

use crate::auth::require_token;
use crate::state::AppState;

pub mod accounts;
pub mod admin;
pub mod analytics;
pub mod badges;
pub mod event_stream;
pub mod feed;
pub mod link;
pub mod provision;
pub mod proxy;
pub mod unified;
pub mod webhooks;
pub mod writes;

pub fn router(state: AppState) -> Router {
    let authed = Router::new()
        .merge(admin::routes())
        .merge(accounts::routes())
        .merge(analytics::routes())
        .merge(unified::routes())
        .merge(writes::routes(state.clone()))
        .merge(proxy::routes(state.clone()))
        .merge(provision::routes())
        .merge(link::api_routes())
        .merge(webhooks::routes())
        .merge(badges::routes())
        .route_layer(middleware::from_fn_with_state(state.clone(), require_token));
    Router::new()
        .route("/healthz", get(admin::healthz))
        .route("/readyz", get(admin::readyz))
        .route("/metrics", get(crate::metrics::serve))
        .merge(crate::openapi::routes())
        .merge(link::page_routes())
        .merge(crate::watch::hooks::routes())
        .merge(badges::public_routes())
        .merge(crate::ui::routes(state.clone()))
        .merge(authed)
        .fallback(admin::not_found)
        .method_not_allowed_fallback(admin::method_not_allowed)
        .layer(middleware::from_fn_with_state(
            state.clone(),
            crate::request_body::guard,
        ))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            crate::metrics::track,
        ))
        .layer(DefaultBodyLimit::max(state.config.body_limit))
        .with_state(state)
}
