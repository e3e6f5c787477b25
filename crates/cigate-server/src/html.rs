//! Server-rendered pages (the Link page and the dashboard): one way to render a
//! template with the headers every page of ours carries, and one way to serve an asset
//! embedded in the binary.

use askama::Template;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

/// Renders `template` with a strict Content-Security-Policy (nothing but this server's
/// own scripts, styles and images; forms post only here), `no-store` and `nosniff`.
/// `frame_ancestors` is the CSP source list of who may frame the page (`'none'`).
pub fn page(status: StatusCode, template: &impl Template, frame_ancestors: &str) -> Response {
    let body = match template.render() {
        Ok(body) => body,
        Err(err) => {
            tracing::error!(error = %err, "page template failed");
            return (StatusCode::INTERNAL_SERVER_ERROR, "internal error").into_response();
        }
    };
    let ancestors: String = frame_ancestors
        .chars()
        .filter(|c| !matches!(c, ';' | ',' | '\r' | '\n'))
        .collect();
    let csp = format!(
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
         connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors {}",
        if ancestors.trim().is_empty() {
            "'none'"
        } else {
            ancestors.trim()
        }
    );
    let mut response = (status, body).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    if let Ok(value) = HeaderValue::from_str(&csp) {
        headers.insert(header::CONTENT_SECURITY_POLICY, value);
    }
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}

/// An asset compiled into the binary, cacheable for a few minutes.
pub fn asset(body: &'static [u8], content_type: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (
                header::CACHE_CONTROL,
                HeaderValue::from_static("public, max-age=300"),
            ),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
        ],
        body,
    )
        .into_response()
}
