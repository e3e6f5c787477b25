//! Error kinds shared by every provider, so the server maps them to problem+json in one place.

use thiserror::Error;

/// What a [`crate::Provider`] call can fail with. The server turns each variant into a
/// documented HTTP status; providers never build HTTP responses themselves.
#[derive(Debug, Error)]
pub enum ProviderError {
    /// Scoping parameters the resource needs and the caller did not send (→ 400,
    /// `details.missing_required_query_parameters`).
    #[error("missing required query parameters: {}", .0.join(", "))]
    MissingParameter(Vec<String>),
    /// A parameter was present but unusable (→ 400).
    #[error("invalid query parameter `{name}`: {message}")]
    InvalidParameter { name: String, message: String },
    /// The object cannot exist (e.g. a non-numeric pipeline id), decided without asking
    /// upstream (→ 404).
    #[error("not found: {0}")]
    NotFound(String),
    /// The upstream answered with an error; its status and body are kept so the caller
    /// sees them (`truto_is_remote_error`). `missing_scope` names the scope the endpoint
    /// needs when the upstream refused with 403.
    #[error("upstream answered {status}: {message}")]
    Upstream {
        status: u16,
        message: String,
        body: serde_json::Value,
        missing_scope: Option<String>,
    },
    /// The upstream did not answer within the deadline (→ 504).
    #[error("upstream timed out")]
    Timeout,
    /// Connection-level failure after retries (→ 502).
    #[error("upstream transport error: {0}")]
    Transport(String),
    /// The decoded cursor position does not fit this provider/resource (→ 400).
    #[error("invalid cursor position")]
    InvalidPosition,
    /// The upstream refused a change the object's current state does not allow, e.g.
    /// cancelling a finished job (→ 409 with the upstream's reason).
    #[error("{message}")]
    Conflict {
        status: u16,
        message: String,
        body: serde_json::Value,
    },
    /// The upstream refused the content of a write, e.g. an invalid pipeline definition
    /// (→ 422 with the upstream's reason).
    #[error("{message}")]
    Rejected {
        status: u16,
        message: String,
        body: serde_json::Value,
    },
    /// The provider does not allow this for this account, whatever the input, e.g.
    /// creating a workspace on Buddy's cloud (→ 422 saying where to do it instead).
    #[error("{0}")]
    NotAllowed(String),
    /// The provider does not offer this operation (→ 501).
    #[error("not supported by this provider: {0}")]
    Unsupported(String),
    /// The account's upstream rate limit leaves no turn before the call's deadline
    /// (→ 429 with `Retry-After`).
    #[error("upstream rate limit spent; retry after {retry_after:?}")]
    RateLimited { retry_after: std::time::Duration },
}

/// Why a cursor was refused. Every variant means "400, bad cursor"; the detail is for logs.
#[derive(Debug, Error, PartialEq, Eq, Clone, Copy)]
pub enum CursorError {
    #[error("cursor is too long")]
    TooLong,
    #[error("cursor is malformed")]
    Malformed,
    /// Tampered, or issued for another environment, account, resource or filter set.
    #[error("cursor signature does not match")]
    BadSignature,
}
