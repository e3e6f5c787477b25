//! Every error the HTTP API can answer, rendered in one place as RFC 9457 problem+json
//! carrying Truto's members (`statusCode`, `error`, `message`) beside RFC 9457's.

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use cigate_buddy::error::BuddyError;
use cigate_core::ProviderError;
use cigate_store::StoreError;
use serde_json::{json, Value};

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("missing or invalid API token")]
    Unauthorized,
    #[error("{0}")]
    NotFound(String),
    #[error("{message}")]
    BadRequest { kind: &'static str, message: String },
    #[error("{message}")]
    MissingParameter {
        message: String,
        missing: Vec<String>,
    },
    #[error("{0}")]
    InvalidBody(String),
    #[error("{0}")]
    Validation(String),
    #[error("request body is larger than the limit")]
    PayloadTooLarge,
    #[error("the next_cursor is invalid: {0}")]
    InvalidCursor(String),
    /// Buddy answered with an error; its status and body are kept for the caller.
    #[error("{message}")]
    Remote {
        status: u16,
        message: String,
        body: Value,
    },
    /// Buddy refused for lack of a token scope: a remote error that names the scopes, so
    /// the caller knows what to grant instead of guessing from Buddy's wording.
    #[error("the account's token lacks the scope {} that this request needs (Buddy said: {message})", .scopes.join(", "))]
    MissingScope {
        status: u16,
        message: String,
        body: Value,
        scopes: Vec<String>,
    },
    /// Buddy refused the credential being linked: nothing was stored.
    #[error("Buddy refused the credential: {message}")]
    CredentialRejected {
        upstream_status: u16,
        message: String,
        body: Value,
    },
    #[error("Buddy did not answer in time")]
    UpstreamTimeout,
    /// The account's Buddy budget leaves no turn before the call's deadline.
    #[error("Buddy's rate limit for this account is spent; retry after {retry_after_secs} s")]
    UpstreamRateLimited { retry_after_secs: u64 },
    /// cigate's own limit per API token or per account (`scope` says which).
    #[error("too many requests for this {scope}; retry after {retry_after_secs} s")]
    TooManyRequests {
        scope: &'static str,
        retry_after_secs: u64,
    },
    /// A proxy path that could leave the account's Buddy base URL.
    #[error("the path cannot be proxied: {0}")]
    InvalidPath(String),
    #[error("Buddy could not be reached: {0}")]
    UpstreamUnreachable(String),
    /// The store (database) cannot be reached right now: 503 with `Retry-After`, so
    /// clients and load balancers retry instead of reading it as cigate's bug.
    #[error("the database cannot be reached right now; retry shortly")]
    StoreUnavailable,
    /// Buddy refused a change the object's state does not allow (cancelling a finished
    /// job): 409 with Buddy's reason.
    #[error("{message}")]
    Conflict {
        upstream_status: u16,
        message: String,
        body: Value,
    },
    /// Buddy refused the content of a write (an invalid pipeline YAML): 422 with its
    /// reason.
    #[error("Buddy refused it: {message}")]
    Rejected {
        upstream_status: u16,
        message: String,
        body: Value,
    },
    /// The `Idempotency-Key` was first used with another request (method, path, query
    /// or body).
    #[error("this Idempotency-Key was used with a different request; use a new key")]
    IdempotencyKeyReused,
    /// The first request with this `Idempotency-Key` is still running.
    #[error("a request with this Idempotency-Key is still in progress; retry later")]
    IdempotencyInProgress,
    /// The first request with this `Idempotency-Key` was cut off (its server stopped)
    /// before its answer was recorded: it may or may not have reached Buddy, and it is
    /// never run again under this key.
    #[error(
        "the first request with this Idempotency-Key was interrupted before its answer was \
         recorded, so whether it reached Buddy is unknown; it will not be run again under \
         this key. Check whether it took effect ({check}), then send it again under a new \
         key only if it did not"
    )]
    IdempotencyOutcomeUnknown { check: String },
    /// The request body did not arrive within the body read timeout.
    #[error("the request body did not arrive in time")]
    RequestTimeout,
    #[error("{0}")]
    Unsupported(String),
    /// The route exists without this method; the response's `Allow` lists those it has
    /// (`allow`, or, for routes axum refuses itself, axum's).
    #[error("{method} is not allowed on this route; see the Allow header")]
    MethodNotAllowed {
        method: String,
        allow: Option<&'static str>,
    },
    /// cigate's own state refuses the change right now (a delivery being attempted).
    #[error("{0}")]
    Busy(String),
    #[error("internal error")]
    Internal(String),
}

impl ApiError {
    pub fn bad_request(kind: &'static str, message: impl Into<String>) -> Self {
        Self::BadRequest {
            kind,
            message: message.into(),
        }
    }

    pub fn missing(params: Vec<String>, what: &str) -> Self {
        let list = params
            .iter()
            .map(|p| format!("`{p}`"))
            .collect::<Vec<_>>()
            .join(", ");
        Self::MissingParameter {
            message: format!("query parameter {list} is required for {what}"),
            missing: params,
        }
    }

    /// Nothing happened at Buddy: decided by cigate before any call, or refused by a
    /// rate limit (Buddy refuses those before acting). An `Idempotency-Key` used with it
    /// is released so a later retry can run.
    pub fn is_local(&self) -> bool {
        matches!(
            self,
            Self::Unauthorized
                | Self::TooManyRequests { .. }
                | Self::UpstreamRateLimited { .. }
                | Self::NotFound(_)
                | Self::BadRequest { .. }
                | Self::MissingParameter { .. }
                | Self::InvalidBody(_)
                | Self::Validation(_)
                | Self::PayloadTooLarge
                | Self::InvalidCursor(_)
                | Self::IdempotencyKeyReused
                | Self::IdempotencyInProgress
                | Self::IdempotencyOutcomeUnknown { .. }
                | Self::RequestTimeout
                | Self::Unsupported(_)
                | Self::MethodNotAllowed { .. }
                | Self::Busy(_)
        )
    }

    pub(crate) fn status(&self) -> StatusCode {
        match self {
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::BadRequest { .. }
            | Self::MissingParameter { .. }
            | Self::InvalidBody(_)
            | Self::InvalidCursor(_)
            | Self::InvalidPath(_) => StatusCode::BAD_REQUEST,
            Self::Validation(_) | Self::CredentialRejected { .. } => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            Self::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Remote { status, .. } | Self::MissingScope { status, .. } => {
                remote_status(*status)
            }
            Self::Conflict { .. }
            | Self::IdempotencyInProgress
            | Self::Busy(_)
            | Self::IdempotencyOutcomeUnknown { .. } => StatusCode::CONFLICT,
            Self::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            Self::IdempotencyKeyReused | Self::Rejected { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            Self::Unsupported(_) => StatusCode::NOT_IMPLEMENTED,
            Self::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            Self::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
            Self::UpstreamRateLimited { .. } | Self::TooManyRequests { .. } => {
                StatusCode::TOO_MANY_REQUESTS
            }
            Self::UpstreamUnreachable(_) => StatusCode::BAD_GATEWAY,
            Self::StoreUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The stable problem `type`: clients switch on it, so it never changes meaning.
    fn problem_type(&self) -> &'static str {
        match self {
            Self::Unauthorized => "/problems/unauthorized",
            Self::NotFound(_) => "/problems/not-found",
            Self::BadRequest { kind, .. } => kind,
            Self::MissingParameter { .. } => "/problems/missing-parameter",
            Self::InvalidBody(_) => "/problems/invalid-body",
            Self::Validation(_) => "/problems/validation-failed",
            Self::PayloadTooLarge => "/problems/payload-too-large",
            Self::InvalidCursor(_) => "/problems/invalid-cursor",
            Self::Remote { .. } | Self::MissingScope { .. } => "/problems/remote-error",
            Self::CredentialRejected { .. } => "/problems/credential-rejected",
            Self::Conflict { .. } => "/problems/conflict",
            Self::Rejected { .. } => "/problems/upstream-rejected",
            Self::IdempotencyKeyReused => "/problems/idempotency-key-reused",
            Self::IdempotencyInProgress => "/problems/idempotency-key-in-progress",
            Self::IdempotencyOutcomeUnknown { .. } => "/problems/idempotency-outcome-unknown",
            Self::RequestTimeout => "/problems/request-timeout",
            Self::Unsupported(_) => "/problems/unsupported",
            Self::MethodNotAllowed { .. } => "/problems/method-not-allowed",
            Self::Busy(_) => "/problems/busy",
            Self::UpstreamTimeout => "/problems/upstream-timeout",
            Self::UpstreamRateLimited { .. } => "/problems/upstream-rate-limited",
            Self::TooManyRequests { .. } => "/problems/rate-limited",
            Self::InvalidPath(_) => "/problems/invalid-path",
            Self::UpstreamUnreachable(_) => "/problems/upstream-unreachable",
            Self::StoreUnavailable => "/problems/store-unavailable",
            Self::Internal(_) => "/problems/internal",
        }
    }
}

/// Buddy's 4xx pass through (401 marks the account, 403 is recorded); 5xx after our
/// retries become 502 so callers can tell "Buddy failed" from "cigate failed".
fn remote_status(status: u16) -> StatusCode {
    match status {
        400..=499 => StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY),
        _ => StatusCode::BAD_GATEWAY,
    }
}

/// `Retry-After` of a 503 while the store cannot be reached.
const STORE_RETRY_AFTER_SECS: u64 = 5;

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let local = self.is_local();
        let retry_after = match &self {
            Self::UpstreamRateLimited { retry_after_secs }
            | Self::TooManyRequests {
                retry_after_secs, ..
            } => Some(*retry_after_secs),
            // Long enough for a restart or a failover to finish.
            Self::StoreUnavailable => Some(STORE_RETRY_AFTER_SECS),
            _ => None,
        };
        let allow = match &self {
            Self::MethodNotAllowed { allow, .. } => *allow,
            _ => None,
        };
        if let Self::Internal(detail) = &self {
            tracing::error!(detail = %detail, "internal error");
        }
        let message = self.to_string();
        let reason = status.canonical_reason().unwrap_or("Error");
        let mut body = json!({
            "statusCode": status.as_u16(),
            "error": reason,
            "message": message,
            "type": self.problem_type(),
            "title": reason,
            "status": status.as_u16(),
            "detail": message,
        });
        match self {
            Self::MissingParameter { missing, .. } => {
                body["details"] = json!({ "missing_required_query_parameters": missing });
            }
            Self::MissingScope {
                status: upstream,
                body: raw,
                scopes,
                ..
            } => {
                body["details"] = json!({ "missing_scopes": scopes });
                body["truto_is_remote_error"] = Value::Bool(true);
                body["remote_status"] = json!(upstream);
                body["raw_response"] = raw;
            }
            Self::Remote {
                status: upstream,
                body: raw,
                ..
            }
            | Self::CredentialRejected {
                upstream_status: upstream,
                body: raw,
                ..
            }
            | Self::Conflict {
                upstream_status: upstream,
                body: raw,
                ..
            }
            | Self::Rejected {
                upstream_status: upstream,
                body: raw,
                ..
            } => {
                body["truto_is_remote_error"] = Value::Bool(true);
                body["remote_status"] = json!(upstream);
                body["raw_response"] = raw;
            }
            _ => {}
        }
        let mut response = (status, axum::Json(body)).into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if let Some(secs) = retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if let Some(allow) = allow {
            response
                .headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static(allow));
        }
        if local {
            response
                .extensions_mut()
                .insert(crate::idempotency::NotSentUpstream);
        }
        response
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        match rejection.status() {
            StatusCode::PAYLOAD_TOO_LARGE => Self::PayloadTooLarge,
            StatusCode::UNPROCESSABLE_ENTITY => Self::Validation(rejection.body_text()),
            _ => Self::InvalidBody(rejection.body_text()),
        }
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        Self::bad_request("/problems/invalid-parameter", rejection.body_text())
    }
}

impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> Self {
        if rejection.status().is_server_error() {
            return Self::Internal(rejection.body_text());
        }
        Self::bad_request("/problems/invalid-parameter", rejection.body_text())
    }
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        if err.is_unavailable() {
            tracing::warn!(error = %err, "the store cannot be reached");
            return Self::StoreUnavailable;
        }
        Self::Internal(err.to_string())
    }
}

impl From<BuddyError> for ApiError {
    fn from(err: BuddyError) -> Self {
        if err.is_rate_limited() && !matches!(err, BuddyError::RateLimited { .. }) {
            // Buddy throttled the call and said nothing of when to come back.
            return Self::UpstreamRateLimited {
                retry_after_secs: 1,
            };
        }
        match err {
            BuddyError::Api {
                status,
                message,
                body,
            } => Self::Remote {
                status,
                message,
                body,
            },
            BuddyError::Timeout => Self::UpstreamTimeout,
            BuddyError::RateLimited { retry_after } => Self::UpstreamRateLimited {
                retry_after_secs: retry_after_secs(retry_after),
            },
            BuddyError::InvalidPath(why) => Self::InvalidPath(why),
            BuddyError::Forbidden(why) => {
                Self::Validation(format!("the account's `base_url` is not allowed: {why}"))
            }
            BuddyError::InvalidCredential => Self::Validation(
                "the account's credential cannot be sent to Buddy; replace it".into(),
            ),
            other @ (BuddyError::Connect(_) | BuddyError::Transport(_) | BuddyError::Decode(_)) => {
                Self::UpstreamUnreachable(other.to_string())
            }
        }
    }
}

/// `Retry-After` in whole seconds, rounded up, at least 1 (0 would invite a hot loop).
pub fn retry_after_secs(wait: std::time::Duration) -> u64 {
    wait.as_secs_f64().ceil().max(1.0) as u64
}

impl From<ProviderError> for ApiError {
    fn from(err: ProviderError) -> Self {
        match err {
            ProviderError::MissingParameter(params) => Self::missing(params, "this resource"),
            ProviderError::InvalidParameter { name, message } => Self::bad_request(
                "/problems/invalid-parameter",
                format!("query parameter `{name}`: {message}"),
            ),
            ProviderError::NotFound(what) => Self::NotFound(what),
            ProviderError::Upstream {
                status,
                message,
                body,
                missing_scope: Some(scope),
            } => Self::MissingScope {
                status,
                message,
                body,
                scopes: vec![scope],
            },
            ProviderError::Upstream {
                status,
                message,
                body,
                missing_scope: None,
            } => Self::Remote {
                status,
                message,
                body,
            },
            ProviderError::Conflict {
                status,
                message,
                body,
            } => Self::Conflict {
                upstream_status: status,
                message,
                body,
            },
            ProviderError::Rejected {
                status,
                message,
                body,
            } => Self::Rejected {
                upstream_status: status,
                message,
                body,
            },
            ProviderError::NotAllowed(why) => Self::Validation(why),
            ProviderError::Unsupported(what) => Self::Unsupported(what),
            ProviderError::RateLimited { retry_after } => Self::UpstreamRateLimited {
                retry_after_secs: retry_after_secs(retry_after),
            },
            ProviderError::Timeout => Self::UpstreamTimeout,
            ProviderError::Transport(msg) => Self::UpstreamUnreachable(msg),
            ProviderError::InvalidPosition => {
                Self::InvalidCursor("it does not match this resource".into())
            }
        }
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unreachable_store_is_a_503_with_retry_after_not_a_500() {
        let err = ApiError::from(StoreError::Database(sqlx::Error::PoolTimedOut));
        let response = err.into_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()["retry-after"], "5");
        assert_eq!(
            response.headers()[header::CONTENT_TYPE],
            "application/problem+json"
        );
        // Other store failures stay cigate's own.
        let other = ApiError::from(StoreError::Corrupt("x".into())).into_response();
        assert_eq!(other.status(), StatusCode::INTERNAL_SERVER_ERROR);
    }
}
