//! The operator dashboard at `/ui`: accounts and their health, a timeline of jobs
//! across accounts, delivery metrics as charts, and webhook deliveries.
//!
//! Server-rendered (askama templates in `templates/ui/`), with a small script for what
//! only a browser can do (drawing charts from the tables the page already holds,
//! refreshing the timeline when a job event arrives). Everything it loads is compiled
//! into the binary and served from here, under the same strict Content-Security-Policy
//! as the Link page, with no inline script or style.
//!
//! A browser signs in with an API token and then holds a session cookie (see
//! [`session`]); the pages read through the same functions as the API, as that token's
//! caller. The cookie is never accepted by the API, which keeps requiring bearer tokens.

use askama::Template;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{middleware, Router};

use crate::error::ApiError;
use crate::state::AppState;

mod pages;
pub mod session;

const UI_CSS: &[u8] = include_bytes!("../../assets/ui/ui.css");
const UI_JS: &[u8] = include_bytes!("../../assets/ui/ui.js");
/// Chart.js from the npm registry (see `assets/README.md`).
const FAVICON: &[u8] = include_bytes!("../../assets/ui/favicon.svg");
const CHART_JS: &[u8] = include_bytes!("../../assets/ui/chart.umd.min.js");

pub fn routes(state: AppState) -> Router<AppState> {
    let signed_in = Router::new()
        .route("/ui", get(pages::overview))
        .route("/ui/accounts", get(pages::accounts))
        .route(
            "/ui/accounts/{id}/delete",
            get(pages::confirm_delete).post(pages::delete_account),
        )
        .route("/ui/accounts/{id}/reconnect", post(pages::reconnect))
        .route("/ui/timeline", get(pages::timeline))
        .route("/ui/timeline/events", get(pages::timeline_events))
        .route("/ui/metrics", get(pages::metrics))
        .route("/ui/webhooks", get(pages::webhooks))
        .route("/ui/webhooks/{id}/test", post(pages::test_webhook))
        .route(
            "/ui/webhooks/{id}/deliveries/{delivery}/redeliver",
            post(pages::redeliver),
        )
        .route("/ui/sign-out", post(session::sign_out))
        .route_layer(middleware::from_fn_with_state(state, session::require));
    Router::new()
        .route(
            "/ui/sign-in",
            get(session::sign_in_page).post(session::sign_in),
        )
        .route("/ui/", get(|| async { session::see_other("/ui") }))
        .route(
            "/ui/assets/ui.css",
            get(|| async { crate::html::asset(UI_CSS, "text/css") }),
        )
        .route(
            "/ui/assets/ui.js",
            get(|| async { crate::html::asset(UI_JS, "text/javascript") }),
        )
        .route(
            "/ui/assets/favicon.svg",
            get(|| async { crate::html::asset(FAVICON, "image/svg+xml") }),
        )
        .route(
            "/ui/assets/chart.umd.min.js",
            get(|| async { crate::html::asset(CHART_JS, "text/javascript") }),
        )
        .merge(signed_in)
}

/// A page of the dashboard: never framed by anyone.
fn page(status: StatusCode, template: &impl Template) -> Response {
    crate::html::page(status, template, "'none'")
}

/// One entry of the navigation.
pub struct NavLink {
    pub href: &'static str,
    pub label: &'static str,
    pub current: bool,
}

/// The pages, in the navigation's order: (key, path, link text).
const NAV: [(&str, &str, &str); 5] = [
    ("overview", "/ui", "Overview"),
    ("accounts", "/ui/accounts", "Accounts"),
    ("timeline", "/ui/timeline", "Timeline"),
    ("metrics", "/ui/metrics", "Metrics"),
    ("webhooks", "/ui/webhooks", "Webhooks"),
];

/// What every page around its content shows: the navigation, the environment it sees
/// and the sign-out form (with the session's CSRF token), when signed in.
pub struct Chrome {
    pub current: &'static str,
    pub environment: String,
    /// Empty when not signed in (no sign-out form then).
    pub csrf: String,
}

impl Chrome {
    /// Around a page shown before signing in, or without a session (errors).
    pub fn signed_out() -> Chrome {
        Chrome {
            current: "",
            environment: String::new(),
            csrf: String::new(),
        }
    }

    pub fn nav(&self) -> Vec<NavLink> {
        NAV.iter()
            .map(|(key, href, label)| NavLink {
                href,
                label,
                current: *key == self.current,
            })
            .collect()
    }

    pub fn signed_in(&self) -> bool {
        !self.csrf.is_empty()
    }
}

#[derive(Template)]
#[template(path = "ui/message.html")]
struct MessagePage {
    chrome: Chrome,
    title: String,
    message: String,
}

/// A failure while building a page, shown as a page that says what went wrong in
/// plain words (the API's problem detail) with the same status as the API's answer.
pub struct UiError(pub ApiError);

impl From<ApiError> for UiError {
    fn from(err: ApiError) -> Self {
        UiError(err)
    }
}

impl From<cigate_store::StoreError> for UiError {
    fn from(err: cigate_store::StoreError) -> Self {
        UiError(err.into())
    }
}

impl IntoResponse for UiError {
    fn into_response(self) -> Response {
        let status = self.0.status();
        if let ApiError::Internal(detail) = &self.0 {
            tracing::error!(detail = %detail, "internal error on a dashboard page");
        }
        let title = match status {
            StatusCode::NOT_FOUND => "Not found",
            StatusCode::SERVICE_UNAVAILABLE => "The database is unavailable",
            StatusCode::TOO_MANY_REQUESTS => "Too many requests",
            s if s.is_client_error() => "That did not work",
            _ => "Something went wrong",
        };
        message(status, title, self.0.to_string())
    }
}

/// A page with a title and one message (errors, confirmations without a form).
fn message(status: StatusCode, title: &str, message: String) -> Response {
    page(
        status,
        &MessagePage {
            chrome: Chrome::signed_out(),
            title: title.to_owned(),
            message,
        },
    )
}

type UiResult<T = Response> = Result<T, UiError>;
