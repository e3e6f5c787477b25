//! `/openapi.json`, generated from the handlers, and `/docs`, a reference page whose
//! assets ship inside the binary (the service often runs without internet access).

use axum::http::header;
use axum::response::{Html, IntoResponse};
use axum::routing::get;
use axum::{Json, Router};
use cigate_core::model::{job_conclusion, job_status};
use utoipa::openapi::path::{Parameter, ParameterIn};
use utoipa::openapi::schema::{
    AnyOfBuilder, ArrayBuilder, ObjectBuilder, Schema, SchemaType, Type,
};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{Content, Ref, RefOr, Required, Response};
use utoipa::{Modify, OpenApi};

use crate::routes::{accounts, admin, badges, link, proxy, unified, webhooks, writes};
use crate::state::AppState;

/// Tags in the order a user meets them: the unified API first, admin last. `/docs`
/// lists operations under these headings in this order.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "cigate",
        description = "One HTTP API for your customers' CI/CD data (Buddy first), following Truto's Unified CI/CD API conventions.\n\nEvery request but the health checks and badge views carries `Authorization: Bearer <API token>`. Every error is `application/problem+json` with a stable `type` (see the `Problem` schema). Lists answer `{ result, next_cursor, prev_cursor, result_count }`; pass `next_cursor` back, changing nothing else, for the next page.",
    ),
    tags(
        (name = TAG_UNIFIED, description = "Normalised reads of workspaces, repos, branches, pull requests, workflows and jobs of a linked account."),
        (name = TAG_WRITES, description = "Run, cancel, retry and approve jobs, read their logs, manage workflows and variables. POST and PATCH honour `Idempotency-Key`."),
        (name = TAG_PROXY, description = "Any Buddy API call with the account's credential injected: `/proxy` in cigate's conventions, `/custom` byte for byte."),
        (name = TAG_ACCOUNTS, description = "Integrated accounts: one customer's connected Buddy account."),
        (name = TAG_LINKING, description = "The hosted Link flow your end users connect Buddy through, and the environment's OAuth app."),
        (name = TAG_EVENTS, description = "Webhook subscriptions: events such as `job:completed` and `integrated_account:*`, delivered at least once, signed per Standard Webhooks (or as CDEvents), with every attempt visible and redeliverable."),
        (name = TAG_BADGES, description = "Status badges: the latest job of one branch as a shields-style SVG for `<img>` tags, or in shields.io's endpoint schema. Viewing takes no token (the id is unguessable); views are coalesced and kept for `CIGATE_BADGE_CACHE_TTL`."),
        (name = TAG_ENVIRONMENTS, description = "The environment an API token belongs to."),
        (name = TAG_TOKENS, description = "API tokens of the environment."),
        (name = TAG_OPERATIONS, description = "Health checks for load balancers and orchestrators; no token needed."),
    ),
    paths(
        unified::list, unified::fetch, crate::routes::analytics::metrics,
        writes::run_job, writes::operate, writes::logs, writes::create_workflow, writes::update, writes::remove,
        writes::create_workspace, writes::create_repo, crate::routes::provision::provision, writes::update_repo, writes::delete_repo, writes::list_integrations,
        writes::list_variables, writes::get_variable, writes::create_variable, writes::update_variable, writes::delete_variable,
        proxy::proxy, proxy::custom,
        accounts::create, accounts::list, accounts::fetch, accounts::update, accounts::remove, accounts::refresh,
        link::create_link_token, link::put_integration, link::get_integration,
        webhooks::create, webhooks::list, webhooks::fetch, webhooks::update, webhooks::remove,
        webhooks::rotate_secret, webhooks::test, webhooks::deliveries, webhooks::redeliver, webhooks::events,
        crate::routes::event_stream::stream, crate::watch::hooks::receive,
        badges::create, badges::fetch, badges::remove, badges::svg, badges::shields,
        admin::list_environments, admin::get_environment,
        admin::create_api_token, admin::list_api_tokens, admin::delete_api_token,
        admin::healthz, admin::readyz,
    ),
    components(schemas(
        Problem, UnifiedResource,
        admin::NewApiToken, accounts::CreateAccount, accounts::UpdateAccount, accounts::RefreshCredentials,
        link::CreateLinkToken, link::IntegrationSettings, link::OAuthSettings,
        webhooks::CreateWebhook, webhooks::UpdateWebhook, webhooks::TestWebhook,
        badges::CreateBadge,
        cigate_core::model::Workspace, cigate_core::model::Repo, cigate_core::model::Branch,
        cigate_core::model::PullRequest, cigate_core::model::Workflow, cigate_core::model::Job,
        cigate_core::model::Step,
        crate::routes::analytics::MetricsAnswer, crate::routes::analytics::WorkflowFigures,
        crate::routes::analytics::AccountFigures, crate::gateway::SkippedAccount,
        cigate_core::metrics::Figures, cigate_core::metrics::Percentiles,
        cigate_core::model::Variable, cigate_core::model::VariableScope, cigate_core::JobRun, cigate_core::RunVariable,
        cigate_core::JobLog, cigate_core::WorkflowInput, cigate_core::RepoInput, cigate_core::WorkspaceInput,
        crate::routes::provision::Document, crate::routes::provision::RepoSpec, crate::routes::provision::WorkflowSpec,
        crate::routes::provision::VariableSpec, crate::routes::provision::WebhookSpec, crate::routes::provision::Step,
        crate::routes::provision::ProvisionAnswer, cigate_core::model::Integration, cigate_core::VariableInput, writes::ApproveBody,
    )),
    modifiers(&BearerAuth, &Problems),
)]
pub struct ApiDoc;

pub const TAG_UNIFIED: &str = "Unified CI/CD";
pub const TAG_WRITES: &str = "Unified CI/CD writes";
pub const TAG_PROXY: &str = "Proxy";
pub const TAG_ACCOUNTS: &str = "Integrated accounts";
pub const TAG_LINKING: &str = "Linking";
pub const TAG_EVENTS: &str = "Webhooks and events";
pub const TAG_BADGES: &str = "Badges";
pub const TAG_ENVIRONMENTS: &str = "Environments";
pub const TAG_TOKENS: &str = "API tokens";
pub const TAG_OPERATIONS: &str = "Operations";

/// The `{resource}` of `/unified/ci-cd/{resource}[/{id}]`; `workflow` is Truto's
/// spelling, `workflows` an alias. Any other name is 404.
#[derive(serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
#[allow(dead_code)] // a schema only: handlers parse `cigate_core::Resource`
pub enum UnifiedResource {
    Workspaces,
    Repos,
    Branches,
    PullRequests,
    Workflow,
    Workflows,
    Jobs,
}

/// The body of every error (RFC 9457 with Truto's members), `application/problem+json`.
#[derive(serde::Serialize, utoipa::ToSchema)]
#[schema(example = json!({
    "statusCode": 400, "error": "Bad Request",
    "message": "query parameter `workspace` is required for this resource",
    "type": "/problems/missing-parameter", "title": "Bad Request", "status": 400,
    "detail": "query parameter `workspace` is required for this resource",
    "details": {"missing_required_query_parameters": ["workspace"]}
}))]
#[allow(dead_code)] // a schema only: responses are built by `ApiError`
pub struct Problem {
    /// The HTTP status (Truto's member).
    #[serde(rename = "statusCode")]
    status_code: u16,
    /// The status's reason phrase (Truto's member).
    error: String,
    /// What went wrong, for people (Truto's member; same as `detail`).
    message: String,
    /// Stable identifier of the kind of problem, e.g. `/problems/invalid-parameter`;
    /// switch on this, never on the wording.
    #[serde(rename = "type")]
    kind: String,
    title: String,
    status: u16,
    detail: String,
    /// Structured detail, e.g. `missing_required_query_parameters`, `missing_scopes`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    details: Option<serde_json::Value>,
    /// Present and true when Buddy answered with the error.
    #[serde(skip_serializing_if = "Option::is_none")]
    truto_is_remote_error: Option<bool>,
    /// Buddy's status, when Buddy answered with the error.
    #[serde(skip_serializing_if = "Option::is_none")]
    remote_status: Option<u16>,
    /// Buddy's body (parsed when JSON), when Buddy answered with the error.
    #[serde(skip_serializing_if = "Option::is_none")]
    raw_response: Option<serde_json::Value>,
}

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

/// Every error response is problem+json, and every operation behind a token lists the
/// answers any such request can get (401 without a valid token, 429 over cigate's own
/// per-token limit), so the handlers' attributes list only their own.
struct Problems;

impl Modify for Problems {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        for (path, item) in openapi.paths.paths.iter_mut() {
            for operation in [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.patch,
            ]
            .into_iter()
            .flatten()
            {
                if path.starts_with("/unified/ci-cd/{resource}") {
                    describe_records(path, &mut operation.responses.responses);
                }
                for parameter in operation.parameters.iter_mut().flatten() {
                    constrain(path, parameter);
                }
                let responses = &mut operation.responses.responses;
                if operation.security.is_some() {
                    for (status, description) in [
                        ("401", "missing or invalid API token"),
                        ("429", "over cigate's limit for this API token or account, or Buddy's rate limit for the account is spent before the deadline; see `Retry-After`"),
                    ] {
                        responses
                            .entry(status.to_owned())
                            .or_insert_with(|| Response::new(description).into());
                    }
                }
                // Answered by layers every route shares, so no handler lists them.
                let mut shared = Vec::new();
                if operation.request_body.is_some() {
                    shared.push((
                        "408",
                        "the request body did not arrive within `CIGATE_BODY_READ_TIMEOUT`",
                    ));
                    shared.push(("413", "the request body is larger than the limit"));
                }
                let idempotent = operation
                    .parameters
                    .iter()
                    .flatten()
                    .any(|p| p.name.eq_ignore_ascii_case(crate::idempotency::HEADER));
                if idempotent {
                    shared.push(("409", "the `Idempotency-Key` is in use by a request still running, or its first attempt's outcome is unknown (`/problems/idempotency-outcome-unknown`)"));
                }
                for (status, description) in shared {
                    responses
                        .entry(status.to_owned())
                        .or_insert_with(|| Response::new(description).into());
                }
                for (status, response) in responses.iter_mut() {
                    let RefOr::T(response) = response else {
                        continue;
                    };
                    if (status.starts_with('4') || status.starts_with('5'))
                        && response.content.is_empty()
                    {
                        response.content.insert(
                            "application/problem+json".to_owned(),
                            Content::new(Some(Ref::from_schema_name("Problem"))),
                        );
                    }
                }
            }
        }
    }
}

/// The unified models a `/unified/ci-cd/{resource}` answer can hold.
const RECORD_SCHEMAS: [&str; 6] = [
    "Workspace",
    "Repo",
    "Branch",
    "PullRequest",
    "Workflow",
    "Job",
];

/// `/unified/ci-cd/{resource}[/{id}]` answer with the model of the resource asked for:
/// the 200 is any one of them (a bare record, or the list envelope of them).
fn describe_records(
    path: &str,
    responses: &mut std::collections::BTreeMap<String, RefOr<Response>>,
) {
    let Some(RefOr::T(ok)) = responses.get_mut("200") else {
        return;
    };
    let Some(content) = ok.content.get_mut("application/json") else {
        return;
    };
    let record = || {
        RECORD_SCHEMAS
            .iter()
            .fold(AnyOfBuilder::new(), |any, name| {
                any.item(Ref::from_schema_name(*name))
            })
    };
    let nullable_string =
        || ObjectBuilder::new().schema_type(SchemaType::from_iter([Type::String, Type::Null]));
    let schema: RefOr<Schema> = if path.ends_with("{id}") {
        record().into()
    } else {
        ObjectBuilder::new()
            .property("result", ArrayBuilder::new().items(record()))
            .property("next_cursor", nullable_string())
            .property("prev_cursor", nullable_string())
            .property(
                "result_count",
                ObjectBuilder::new()
                    .schema_type(Type::Integer)
                    .minimum(Some(0)),
            )
            .required("result")
            .required("next_cursor")
            .required("prev_cursor")
            .required("result_count")
            .into()
    };
    content.schema = Some(schema);
}

/// What the handlers check, stated in the document in one place: scoping identifiers
/// (`cigate_core::params::check_identifier`), the job filter and account status
/// vocabularies, the `Idempotency-Key` shape, and that a required string must not be
/// empty (an empty value counts as absent).
fn constrain(path: &str, parameter: &mut Parameter) {
    let string = || ObjectBuilder::new().schema_type(Type::String);
    let schema = match (&parameter.parameter_in, parameter.name.as_str()) {
        (ParameterIn::Query, "workspace" | "repo" | "project" | "workflow") => Some(
            string()
                .pattern(Some(IDENTIFIER_PATTERN))
                .max_length(Some(cigate_core::params::MAX_IDENTIFIER_LEN)),
        ),
        (ParameterIn::Query, "status") if path.starts_with("/integrated-account") => {
            Some(string().enum_values(Some(ACCOUNT_STATUSES)))
        }
        (ParameterIn::Query, "status") => {
            Some(string().enum_values(Some(job_status::ALL.iter().copied())))
        }
        (ParameterIn::Query, "conclusion") => {
            Some(string().enum_values(Some(job_conclusion::ALL.iter().copied())))
        }
        (ParameterIn::Header, "Idempotency-Key") => Some(
            string()
                .pattern(Some(r"^[\t\x20-\x7e]*[\x21-\x7e][\t\x20-\x7e]*$"))
                .max_length(Some(crate::idempotency::MAX_KEY_LEN)),
        ),
        (ParameterIn::Query, _)
            if matches!(parameter.required, Required::True) && is_string(parameter) =>
        {
            Some(string().min_length(Some(1)))
        }
        _ => None,
    };
    if let Some(schema) = schema {
        parameter.schema = Some(RefOr::T(Schema::Object(schema.build())));
    }
}

/// One path segment: no control characters (C0, DEL, C1), separators, `%`, `?`, `#`,
/// and not `.` or `..` (see `cigate_core::params::check_identifier`); empty is allowed
/// because an empty value counts as absent.
const IDENTIFIER_PATTERN: &str = r"^(?!\.{1,2}$)[^/\\%?#\x00-\x1f\x7f-\x9f]*$";

const ACCOUNT_STATUSES: [&str; 4] = ["connecting", "active", "needs_reauth", "validation_error"];

fn is_string(parameter: &Parameter) -> bool {
    matches!(
        &parameter.schema,
        Some(RefOr::T(Schema::Object(object))) if object.schema_type == SchemaType::Type(Type::String)
    )
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn document() -> Value {
        serde_json::to_value(ApiDoc::openapi()).unwrap()
    }

    fn operations(doc: &Value) -> Vec<(String, String, &Value)> {
        let mut out = Vec::new();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, operation) in item.as_object().unwrap() {
                if ["get", "post", "put", "patch", "delete"].contains(&method.as_str()) {
                    out.push((method.clone(), path.clone(), operation));
                }
            }
        }
        out
    }

    #[test]
    fn every_operation_has_a_summary_and_problem_errors() {
        let doc = document();
        for (method, path, operation) in operations(&doc) {
            let summary = operation["summary"].as_str().unwrap_or_default();
            assert!(
                !summary.is_empty() && !summary.contains('_'),
                "{method} {path}: summary {summary:?}"
            );
            let responses = operation["responses"].as_object().unwrap();
            if operation.get("security").is_some() {
                assert!(responses.contains_key("401"), "{method} {path} lacks 401");
            }
            for (status, response) in responses {
                if status.starts_with('4') || status.starts_with('5') {
                    assert_eq!(
                        response["content"]["application/problem+json"]["schema"]["$ref"],
                        "#/components/schemas/Problem",
                        "{method} {path} {status}"
                    );
                }
            }
        }
    }

    #[test]
    fn tags_start_with_the_unified_api_and_end_with_operations() {
        let doc = document();
        let tags: Vec<&str> = doc["tags"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["name"].as_str().unwrap())
            .collect();
        assert_eq!(tags.first(), Some(&TAG_UNIFIED));
        assert_eq!(tags.last(), Some(&TAG_OPERATIONS));
        for (method, path, operation) in operations(&doc) {
            let tag = operation["tags"][0].as_str().unwrap();
            assert!(tags.contains(&tag), "{method} {path}: tag {tag}");
        }
    }

    #[test]
    fn limits_bodies_and_envelopes_are_stated() {
        let doc = document();
        let list = &doc["paths"]["/unified/ci-cd/{resource}"]["get"];
        let limit = list["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == "limit")
            .unwrap();
        assert_eq!(limit["schema"]["minimum"], 1);
        assert_eq!(limit["schema"]["maximum"], 1000);
        for (method, path) in [
            ("post", "/integrated-account"),
            ("patch", "/integrated-account/{id}"),
            ("post", "/link-token"),
            ("put", "/environment-integration/buddy"),
            ("post", "/unified/ci-cd/workflow"),
            ("post", "/unified/ci-cd/variables"),
            ("post", "/unified/ci-cd/repos"),
            ("patch", "/unified/ci-cd/repos/{id}"),
        ] {
            assert_eq!(
                doc["paths"][path][method]["requestBody"]["required"], true,
                "{method} {path}"
            );
        }
        let variables = &doc["paths"]["/unified/ci-cd/variables"]["get"]["responses"]["200"]
            ["content"]["application/json"]["schema"];
        let name = variables["$ref"]
            .as_str()
            .and_then(|r| r.strip_prefix("#/components/schemas/"))
            .unwrap_or_default();
        let envelope = &doc["components"]["schemas"][name]["properties"];
        assert!(
            envelope["next_cursor"].is_object() && envelope["result"]["items"].is_object(),
            "{variables}: {envelope}"
        );
        assert!(
            doc["paths"]["/unified/ci-cd/jobs"]["post"]["responses"]["201"]["content"]
                ["application/json"]["example"]
                .is_object()
        );
    }

    #[test]
    fn errors_of_the_shared_layers_are_listed() {
        let doc = document();
        let run = &doc["paths"]["/unified/ci-cd/jobs"]["post"]["responses"];
        for status in ["408", "409", "413"] {
            assert!(
                run.get(status).is_some(),
                "POST /unified/ci-cd/jobs lacks {status}"
            );
        }
        let read = &doc["paths"]["/unified/ci-cd/{resource}"]["get"]["responses"];
        assert!(read.get("413").is_none() && read.get("409").is_none());
    }
}
