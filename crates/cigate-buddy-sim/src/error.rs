//! The simulator's single error type, rendered as Buddy renders errors.

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("could not bind {addr}: {source}")]
    Bind {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("{0}")]
    Config(String),
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Validation(String),
    #[error("{message}")]
    Status { status: u16, message: String },
    /// OAuth token-endpoint failure; rendered with both Buddy's `errors[]` and RFC 6749 fields.
    #[error("{description}")]
    OAuth {
        status: u16,
        code: &'static str,
        description: String,
    },
    /// Over budget: 429 with `Retry-After`, or 403 without one.
    #[error("Rate limit exceeded.")]
    RateLimited {
        status: u16,
        retry_after: Option<i64>,
    },
}

impl SimError {
    /// The refusal `policy` answers for `verdict` at `now`.
    pub fn rate_limited(
        policy: &crate::config::RateLimitPolicy,
        verdict: &crate::ratelimit::Verdict,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Self {
        let status = policy.status.code();
        Self::RateLimited {
            status,
            retry_after: (status == 429).then(|| verdict.retry_after(policy, now)),
        }
    }

    pub fn not_found(what: &str) -> Self {
        Self::NotFound(format!("{what} not found"))
    }

    pub fn status(&self) -> StatusCode {
        let code = match self {
            Self::Bind { .. } | Self::Config(_) => 500,
            Self::Unauthorized(_) => 401,
            Self::Forbidden(_) => 403,
            Self::NotFound(_) => 404,
            Self::Validation(_) => 400,
            Self::Status { status, .. }
            | Self::OAuth { status, .. }
            | Self::RateLimited { status, .. } => *status,
        };
        StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }
}

/// Buddy's error envelope.
pub fn error_body(message: &str) -> serde_json::Value {
    json!({ "errors": [ { "message": message } ] })
}

impl IntoResponse for SimError {
    fn into_response(self) -> Response {
        let status = self.status();
        let message = self.to_string();
        let body = match &self {
            Self::OAuth {
                code, description, ..
            } => json!({
                "errors": [ { "message": description } ],
                "error": code,
                "error_description": description,
            }),
            _ => error_body(&message),
        };
        let mut response = (status, axum::Json(body)).into_response();
        if let Self::RateLimited {
            retry_after: Some(retry_after),
            ..
        } = self
        {
            if let Ok(v) = HeaderValue::from_str(&retry_after.max(0).to_string()) {
                response.headers_mut().insert("retry-after", v);
            }
        }
        response
    }
}

pub type ApiResult<T> = Result<T, SimError>;
