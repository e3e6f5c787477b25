//! Checks of caller-supplied parameter values, made before anything reaches an
//! upstream: a value that cannot be right is the caller's mistake (400 naming the
//! parameter), not an upstream failure.

use crate::error::ProviderError;
use crate::model::{job_conclusion, job_status};

/// Longest identifier accepted; real workspace, project and pipeline names are far
/// shorter, and the bound keeps hostile values out of upstream URLs and logs.
pub const MAX_IDENTIFIER_LEN: usize = 255;

/// An identifier (workspace, repo/project, workflow, an object id) that a provider puts
/// into its upstream's URL as exactly one path segment: non-empty, at most
/// [`MAX_IDENTIFIER_LEN`] bytes, no control characters, no `/`, `\`, `%`, `?`, `#`
/// (separators, or escapes an upstream client refuses once encoded), and not `.`/`..`.
pub fn check_identifier(name: &str, value: &str) -> Result<(), ProviderError> {
    let refuse = |why: &str| {
        Err(ProviderError::InvalidParameter {
            name: name.to_owned(),
            message: why.to_owned(),
        })
    };
    if value.is_empty() {
        return refuse("must not be empty");
    }
    if value.len() > MAX_IDENTIFIER_LEN {
        return refuse(&format!("is longer than {MAX_IDENTIFIER_LEN} bytes"));
    }
    if value.chars().any(char::is_control) {
        return refuse("must not contain control characters (such as CR, LF or NUL)");
    }
    if let Some(c) = value
        .chars()
        .find(|c| matches!(c, '/' | '\\' | '%' | '?' | '#'))
    {
        return refuse(&format!("is one name and must not contain `{c}`"));
    }
    if value == "." || value == ".." {
        return refuse("must not be `.` or `..`");
    }
    Ok(())
}

/// A value from a fixed vocabulary, exactly as spelled there; the error lists the
/// allowed values so the caller can correct the request.
pub fn check_choice(name: &str, value: &str, allowed: &[&str]) -> Result<(), ProviderError> {
    if allowed.contains(&value) {
        return Ok(());
    }
    Err(ProviderError::InvalidParameter {
        name: name.to_owned(),
        message: format!("`{value}` is not one of {}", allowed.join(", ")),
    })
}

/// The `status` job filter: a normalised [`job_status`] value.
pub fn check_job_status(value: &str) -> Result<(), ProviderError> {
    check_choice("status", value, job_status::ALL)
}

/// The `conclusion` job filter: a normalised [`job_conclusion`] value.
pub fn check_job_conclusion(value: &str) -> Result<(), ProviderError> {
    check_choice("conclusion", value, job_conclusion::ALL)
}

/// Whether a credential can travel in an HTTP header: printable ASCII only (no CR/LF
/// or other control characters, which would otherwise surface later as a transport
/// error rather than as the caller's mistake).
pub fn is_header_safe(value: &str) -> bool {
    value.bytes().all(|b| (0x20..0x7f).contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_one_segment() {
        for good in ["acme", "company-website", "p_1.x", "42", "ünï", "a b"] {
            assert!(check_identifier("workspace", good).is_ok(), "{good:?}");
        }
        for bad in [
            "", ".", "..", "a/b", "a\\b", "a%2Fb", "acme\0", "a\r\nb", "a?b", "a#b",
        ] {
            let err = check_identifier("workspace", bad).unwrap_err();
            assert!(
                matches!(&err, ProviderError::InvalidParameter { name, .. } if name == "workspace"),
                "{bad:?}: {err}"
            );
        }
        assert!(check_identifier("repo", &"x".repeat(MAX_IDENTIFIER_LEN + 1)).is_err());
    }

    #[test]
    fn job_filters_name_the_allowed_values() {
        assert!(check_job_status("completed").is_ok());
        assert!(check_job_status("in_progress").is_ok());
        assert!(check_job_status("COMPLETED").is_err());
        assert!(check_job_conclusion("passed").is_ok());
        let err = check_job_status("done").unwrap_err().to_string();
        assert!(
            err.contains("queued, in_progress, waiting, completed"),
            "{err}"
        );
        let err = check_job_conclusion("ok").unwrap_err().to_string();
        assert!(err.contains("passed, failed"), "{err}");
    }

    #[test]
    fn header_safety() {
        assert!(is_header_safe("tok-123_ABC.x"));
        assert!(!is_header_safe("tok\r\nX-Injected: 1"));
        assert!(!is_header_safe("tok\u{7f}"));
        assert!(!is_header_safe("tök"));
    }
}
