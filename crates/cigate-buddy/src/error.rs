//! Everything that can go wrong talking to Buddy, as data the server can map to
//! problem+json (upstream status kept) and the retry layer can classify.

use serde_json::Value;

use crate::base_url::BaseUrlError;

/// The message Buddy (and the simulator) use when a token's budget is spent. A
/// third-party client sees it with status 403 instead of 429.
pub const RATE_LIMIT_MESSAGE: &str = "Rate limit exceeded.";

/// Longest message kept from an upstream error body; bodies can be HTML error pages.
const MAX_MESSAGE_CHARS: usize = 500;

/// A failed call to Buddy. `Display` never includes a credential: messages come from
/// Buddy's body (with the account's token scrubbed) or from transport errors stripped
/// of their URL.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BuddyError {
    /// Buddy answered with a non-2xx status. `body` is Buddy's body, parsed if JSON,
    /// else the text as a JSON string (for `raw_response`).
    #[error("Buddy answered {status}: {message}")]
    Api {
        status: u16,
        message: String,
        body: Value,
    },
    #[error("Buddy did not answer in time")]
    Timeout,
    /// The account's Buddy rate limit leaves no turn before the call's deadline, either
    /// by the governor's estimate or because Buddy answered 429 and the reset is later
    /// than the deadline. Answer 429 with `Retry-After: retry_after` (rounded up).
    #[error("Buddy's rate limit for this account is spent; retry after {}s", retry_after.as_secs_f64().ceil())]
    RateLimited { retry_after: std::time::Duration },
    #[error("could not connect to Buddy: {0}")]
    Connect(String),
    #[error("transport error talking to Buddy: {0}")]
    Transport(String),
    /// A 2xx answer whose body is not the JSON we asked for.
    #[error("Buddy sent an unreadable body: {0}")]
    Decode(String),
    /// The upstream policy refused the base URL or every address it resolved to.
    #[error("upstream refused: {0}")]
    Forbidden(#[from] BaseUrlError),
    /// A path that could leave the account's Buddy base path (traversal, encoded
    /// separators, schemes, CR/LF).
    #[error("invalid upstream path: {0}")]
    InvalidPath(String),
    /// The stored credential cannot be put in an HTTP header (e.g. contains a newline).
    #[error("the credential is not a valid header value")]
    InvalidCredential,
}

impl BuddyError {
    /// Buddy's HTTP status, if Buddy answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            BuddyError::Api { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// Buddy's error message, if Buddy answered.
    pub fn upstream_message(&self) -> Option<&str> {
        match self {
            BuddyError::Api { message, .. } => Some(message),
            _ => None,
        }
    }

    /// The token is invalid, expired or revoked (the account needs re-authorization).
    pub fn is_unauthorized(&self) -> bool {
        self.status() == Some(401)
    }

    /// Buddy throttled the call: 429, or 403 with "Rate limit exceeded." (seen from
    /// some Buddy versions).
    pub fn is_rate_limited(&self) -> bool {
        match self {
            BuddyError::Api { status: 429, .. } | BuddyError::RateLimited { .. } => true,
            BuddyError::Api {
                status: 403,
                message,
                ..
            } => message
                .to_ascii_lowercase()
                .contains(&RATE_LIMIT_MESSAGE.to_ascii_lowercase()),
            _ => false,
        }
    }

    /// Worth retrying for an idempotent method: throttling, gateway errors, connection
    /// failures and timeouts. Never set for a request Buddy may have acted on unless
    /// the method is idempotent; the caller decides that.
    pub fn is_transient(&self) -> bool {
        match self {
            BuddyError::Api { status, .. } => matches!(status, 502..=504) || self.is_rate_limited(),
            BuddyError::Timeout | BuddyError::Connect(_) | BuddyError::RateLimited { .. } => true,
            _ => false,
        }
    }

    /// The scope Buddy says is missing, when its message names one (e.g. "Token does
    /// not have scope EXECUTION_RUN"). Recorded as the account's `last_forbidden_error`.
    pub fn missing_scope(&self) -> Option<&str> {
        match self {
            BuddyError::Api {
                status: 401 | 403,
                message,
                ..
            } => scope_in_message(message),
            _ => None,
        }
    }
}

/// Scope prefixes Buddy uses (classic and 2025+ names); a token in a message that
/// starts with one of these and is SCREAMING_SNAKE is taken as a scope name.
const SCOPE_WORDS: &[&str] = &[
    "WORKSPACE",
    "PROJECT",
    "REPOSITORY",
    "EXECUTION",
    "PIPELINE",
    "USER",
    "MANAGE_EMAILS",
    "MEMBER",
    "INTEGRATION",
    "WEBHOOK",
    "VARIABLE",
    "TOKEN",
    "ENVIRONMENT",
    "TARGET",
    "ZONE",
    "SANDBOX",
    "PACKAGE",
    "ARTIFACT",
    "UNIT_TEST",
    "VISUAL_TEST",
    "CRAWL",
    "DISTRIBUTION",
    "RELEASE",
];

fn scope_in_message(message: &str) -> Option<&str> {
    if !message.to_ascii_lowercase().contains("scope") {
        return None;
    }
    message
        .split(|c: char| !(c.is_ascii_uppercase() || c == '_'))
        .filter(|w| w.len() >= 4)
        .find(|w| {
            SCOPE_WORDS
                .iter()
                .any(|s| *w == *s || w.starts_with(&format!("{s}_")))
        })
}

/// Buddy's error body as a message and a JSON value. Accepts
/// `{"errors":[{"message":…}]}`, `{"errors":["…"]}`, `{"message":…}`, OAuth's
/// `{"error":…,"error_description":…}` and a bare JSON string; anything else falls back
/// to the raw text. Never panics, whatever the bytes.
pub fn parse_error_body(bytes: &[u8]) -> (String, Value) {
    match serde_json::from_slice::<Value>(bytes) {
        Ok(value) => {
            let message = message_from_json(&value)
                .unwrap_or_else(|| truncate(&String::from_utf8_lossy(bytes)));
            (message, value)
        }
        Err(_) => {
            let text = String::from_utf8_lossy(bytes).into_owned();
            (truncate(&text), Value::String(text))
        }
    }
}

/// The human message in an already parsed error body (see [`parse_error_body`]).
pub fn message_from_value(value: &Value) -> String {
    message_from_json(value).unwrap_or_else(|| truncate(&value.to_string()))
}

fn message_from_json(value: &Value) -> Option<String> {
    let text = match value {
        Value::String(s) => s.clone(),
        Value::Object(map) => {
            let from_errors = map.get("errors").and_then(|errors| match errors {
                Value::String(s) => Some(s.clone()),
                Value::Array(items) => {
                    let parts: Vec<String> = items
                        .iter()
                        .filter_map(|item| match item {
                            Value::String(s) => Some(s.clone()),
                            Value::Object(o) => {
                                o.get("message").and_then(Value::as_str).map(str::to_owned)
                            }
                            _ => None,
                        })
                        .collect();
                    (!parts.is_empty()).then(|| parts.join("; "))
                }
                Value::Object(o) => o.get("message").and_then(Value::as_str).map(str::to_owned),
                _ => None,
            });
            from_errors
                .or_else(|| {
                    map.get("message")
                        .and_then(Value::as_str)
                        .map(str::to_owned)
                })
                .or_else(|| {
                    map.get("error_description")
                        .and_then(Value::as_str)
                        .map(str::to_owned)
                })
                .or_else(|| map.get("error").and_then(Value::as_str).map(str::to_owned))?
        }
        _ => return None,
    };
    Some(truncate(&text))
}

fn truncate(text: &str) -> String {
    let trimmed = text.trim();
    match trimmed.char_indices().nth(MAX_MESSAGE_CHARS) {
        Some((cut, _)) => format!("{}…", &trimmed[..cut]),
        None => trimmed.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn api(status: u16, message: &str) -> BuddyError {
        BuddyError::Api {
            status,
            message: message.into(),
            body: Value::Null,
        }
    }

    #[test]
    fn parses_both_documented_shapes() {
        let (m, b) = parse_error_body(br#"{"errors":[{"message":"Rate limit exceeded."}]}"#);
        assert_eq!(m, "Rate limit exceeded.");
        assert_eq!(b, json!({"errors":[{"message":"Rate limit exceeded."}]}));
        let (m, _) = parse_error_body(br#"{"message":"Not found"}"#);
        assert_eq!(m, "Not found");
        let (m, _) = parse_error_body(br#"{"errors":["Error 1","Error 2"]}"#);
        assert_eq!(m, "Error 1; Error 2");
        let (m, _) = parse_error_body(br#"{"errors":[{"message":"a"},{"message":"b"}]}"#);
        assert_eq!(m, "a; b");
        let (m, _) =
            parse_error_body(br#"{"error":"invalid_grant","error_description":"expired"}"#);
        assert_eq!(m, "expired");
        let (m, b) = parse_error_body(b"<html>Bad Gateway</html>");
        assert_eq!(m, "<html>Bad Gateway</html>");
        assert_eq!(b, json!("<html>Bad Gateway</html>"));
        let (m, b) = parse_error_body(br#"{"errors":[]}"#);
        assert_eq!(m, r#"{"errors":[]}"#);
        assert_eq!(b, json!({"errors": []}));
        let (m, _) = parse_error_body(&vec![b'x'; 5000]);
        assert!(m.chars().count() <= MAX_MESSAGE_CHARS + 1);
    }

    #[test]
    fn classifies_rate_limits() {
        assert!(api(429, "whatever").is_rate_limited());
        assert!(api(403, "Rate limit exceeded.").is_rate_limited());
        assert!(!api(403, "API is disabled in this workspace.").is_rate_limited());
        assert!(!BuddyError::Timeout.is_rate_limited());
        let limited = BuddyError::RateLimited {
            retry_after: std::time::Duration::from_millis(1500),
        };
        assert!(limited.is_rate_limited() && limited.is_transient());
        assert_eq!(limited.status(), None);
        assert!(limited.to_string().contains("retry after 2s"), "{limited}");
        assert!(api(503, "x").is_transient());
        assert!(!api(500, "x").is_transient());
        assert!(api(401, "x").is_unauthorized());
    }

    #[test]
    fn finds_missing_scopes() {
        assert_eq!(
            api(403, "Token does not have scope EXECUTION_RUN").missing_scope(),
            Some("EXECUTION_RUN")
        );
        assert_eq!(
            api(403, "Required scopes: WORKSPACE").missing_scope(),
            Some("WORKSPACE")
        );
        assert_eq!(
            api(403, "Insufficient scope: PIPELINE_READ.").missing_scope(),
            Some("PIPELINE_READ")
        );
        assert_eq!(api(403, "Rate limit exceeded.").missing_scope(), None);
        assert_eq!(api(404, "scope EXECUTION_RUN").missing_scope(), None);
        assert_eq!(api(403, "scope NOT_A_SCOPE").missing_scope(), None);
    }

    proptest! {
        #[test]
        fn never_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let (message, _) = parse_error_body(&bytes);
            prop_assert!(message.chars().count() <= MAX_MESSAGE_CHARS + 1);
        }

        #[test]
        fn extracts_messages_from_both_shapes(msg in "[^\\s][ -~]{0,200}") {
            let msg = msg.trim().to_owned();
            prop_assume!(!msg.is_empty());
            let errors = serde_json::to_vec(&json!({"errors": [{"message": msg}]})).unwrap();
            prop_assert_eq!(parse_error_body(&errors).0, msg.clone());
            let single = serde_json::to_vec(&json!({"message": msg})).unwrap();
            prop_assert_eq!(parse_error_body(&single).0, msg.clone());
            let strings = serde_json::to_vec(&json!({"errors": [msg]})).unwrap();
            prop_assert_eq!(parse_error_body(&strings).0, msg);
        }
    }
}
