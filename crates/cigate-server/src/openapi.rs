//! `/openapi.json`, generated from the handlers, and `/docs`, a reference page whose
//! assets ship inside the binary (the service often runs without internet access).

use axum::http::header;
use axum::response::{Html, IntoResponse};
use axum::routing::get;
use axum::{Json, Router};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::routes::{accounts, admin, link, proxy, unified, writes};
use crate::state::AppState;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "cigate",
        description = "One HTTP API for your customers' CI/CD data (Buddy first), following Truto's Unified CI/CD API conventions.",
    ),
    paths(
        admin::healthz, admin::readyz, admin::list_environments, admin::get_environment,
        admin::create_api_token, admin::list_api_tokens, admin::delete_api_token,
        accounts::create, accounts::list, accounts::fetch, accounts::update, accounts::remove, accounts::refresh,
        unified::list, unified::fetch,
        proxy::proxy, proxy::custom,
        writes::run_job, writes::operate, writes::logs, writes::create_workflow, writes::update, writes::remove,
        writes::list_variables, writes::get_variable, writes::create_variable, writes::update_variable, writes::delete_variable,
        link::create_link_token, link::put_integration, link::get_integration,
    ),
    components(schemas(
        admin::NewApiToken, accounts::CreateAccount, accounts::UpdateAccount, accounts::RefreshCredentials,
        link::CreateLinkToken, link::IntegrationSettings, link::OAuthSettings,
        cigate_core::model::Workspace, cigate_core::model::Repo, cigate_core::model::Branch,
        cigate_core::model::PullRequest, cigate_core::model::Workflow, cigate_core::model::Job,
        cigate_core::model::Step,
        cigate_core::model::Variable, cigate_core::model::VariableScope, cigate_core::JobRun, cigate_core::RunVariable,
        cigate_core::JobLog, cigate_core::WorkflowInput, cigate_core::VariableInput, writes::ApproveBody,
    )),
    modifiers(&BearerAuth),
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_token",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

const REDOC_JS: &[u8] = include_bytes!("../assets/redoc.standalone.js");

const DOCS_PAGE: &str = r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>cigate API reference</title>
<meta name="viewport" content="width=device-width, initial-scale=1"></head>
<body><redoc spec-url="/openapi.json"></redoc><script src="/docs/redoc.standalone.js"></script></body></html>"#;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/openapi.json", get(|| async { Json(ApiDoc::openapi()) }))
        .route("/docs", get(|| async { Html(DOCS_PAGE) }))
        .route(
            "/docs/redoc.standalone.js",
            get(|| async {
                (
                    [
                        (header::CONTENT_TYPE, "application/javascript"),
                        (header::CACHE_CONTROL, "public, max-age=86400"),
                    ],
                    REDOC_JS,
                )
                    .into_response()
            }),
        )
}
