//! Signing in to the dashboard and the session that follows.
//!
//! The sign-in form takes an API token; a valid one opens a server-side session
//! ([`cigate_store::UiSession`]) whose random id travels in an `HttpOnly`,
//! `SameSite=Strict` cookie scoped to `/ui` (`Secure` when `CIGATE_PUBLIC_URL` is
//! https). The session sees the token's environment only, ends after
//! `CIGATE_UI_SESSION_IDLE` without use, when its token is deleted, or when signed out
//! (the row is deleted, so an old cookie is worthless).
//!
//! Every form post is checked twice against cross-site requests: a foreign `Origin` is
//! refused, and the form must carry the session's CSRF token (the sign-in form, before
//! any session, a random value that must match a cookie of its own). Both checks sit in
//! [`require`], so no dashboard form can forget them.

use askama::Template;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use cookie::{Cookie, SameSite};
use rand::RngCore;
use serde::Deserialize;
use subtle::ConstantTimeEq;

use super::{message, page, Chrome, UiError};
use crate::auth::Caller;
use crate::extract::QueryPairs;
use crate::routes::link::public_origin;
use crate::state::AppState;

/// The session cookie.
const SESSION_COOKIE: &str = "cigate_session";
/// The sign-in form's own CSRF cookie (there is no session yet to hold the token).
const SIGN_IN_COOKIE: &str = "cigate_sign_in";
/// Largest form the dashboard reads (its forms hold a few short fields).
const MAX_FORM: usize = 64 * 1024;

/// The signed-in browser, beside its [`Caller`] in the request's extensions.
#[derive(Clone, Debug)]
pub struct SignedIn {
    pub environment_id: String,
    pub csrf: String,
}

/// `303 See Other` to a path of ours.
pub fn see_other(to: &str) -> Response {
    let mut response = StatusCode::SEE_OTHER.into_response();
    if let Ok(value) = HeaderValue::from_str(to) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    response
}

/// Where to go after signing in: a dashboard path, never another site (`//host`,
/// `/\host`) or anything outside `/ui`.
fn safe_next(next: Option<&str>) -> &str {
    match next {
        Some(path)
            if (path == "/ui" || path.starts_with("/ui/") || path.starts_with("/ui?"))
                && !path.contains("//")
                && !path.contains('\\')
                && !path.chars().any(char::is_control) =>
        {
            path
        }
        _ => "/ui",
    }
}

fn secure(state: &AppState) -> bool {
    state
        .config
        .public_url
        .as_deref()
        .is_some_and(|url| url.to_ascii_lowercase().starts_with("https://"))
}

fn cookie_header(state: &AppState, name: &str, value: String, remove: bool) -> HeaderValue {
    let cookie = set_cookie(name, value, secure(state), remove);
    HeaderValue::from_str(&cookie).unwrap_or_else(|_| HeaderValue::from_static("x=; Max-Age=0"))
}

/// A `Set-Cookie` value of ours: `/ui` only, out of scripts' reach, never sent by
/// another site's request; `remove` expires it at once.
fn set_cookie(name: &str, value: String, secure: bool, remove: bool) -> String {
    let mut cookie = Cookie::build((name, value))
        .path("/ui")
        .http_only(true)
        .same_site(SameSite::Strict)
        .secure(secure)
        .build();
    if remove {
        cookie.make_removal();
    }
    cookie.to_string()
}

fn read_cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(Cookie::split_parse)
        .filter_map(Result::ok)
        .find(|cookie| cookie.name() == name)
        .map(|cookie| cookie.value().to_owned())
}

fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

fn same(a: &str, b: &str) -> bool {
    !a.is_empty() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

/// A post from another site: its `Origin` is not ours. Pages sent with
/// `Referrer-Policy: no-referrer` make browsers send `Origin: null` even from here, so
/// `null` proves nothing either way and the CSRF token decides.
fn cross_site(state: &AppState, headers: &HeaderMap) -> bool {
    headers
        .get(header::ORIGIN)
        .and_then(|o| o.to_str().ok())
        .is_some_and(|origin| origin != "null" && origin != public_origin(state, headers))
}

fn refused_form() -> Response {
    message(
        StatusCode::FORBIDDEN,
        "Form refused",
        "This form was not sent from this dashboard, or it has expired. Go back, reload the page and try again.".into(),
    )
}

#[derive(Template)]
#[template(path = "ui/sign_in.html")]
struct SignInPage {
    chrome: Chrome,
    title: String,
    csrf: String,
    next: String,
    error: String,
    notice: String,
}

fn sign_in_form(
    state: &AppState,
    status: StatusCode,
    next: &str,
    error: &str,
    notice: &str,
) -> Response {
    let csrf = random_token();
    let mut response = page(
        status,
        &SignInPage {
            chrome: Chrome::signed_out(),
            title: "Sign in".into(),
            csrf: csrf.clone(),
            next: next.to_owned(),
            error: error.to_owned(),
            notice: notice.to_owned(),
        },
    );
    response.headers_mut().append(
        header::SET_COOKIE,
        cookie_header(state, SIGN_IN_COOKIE, csrf, false),
    );
    response
}

/// `GET /ui/sign-in`: the form (or on to the dashboard when already signed in).
pub async fn sign_in_page(
    State(state): State<AppState>,
    headers: HeaderMap,
    query: QueryPairs,
) -> Response {
    let next = safe_next(query.get("next"));
    if let Some(cookie) = read_cookie(&headers, SESSION_COOKIE) {
        if let Ok(Some(_)) = state
            .store
            .ui_session(&cookie, state.config.ui_session_idle)
            .await
        {
            return see_other(next);
        }
    }
    let notice = if query.get("signed_out").is_some() {
        "You are signed out."
    } else if query.get("ended").is_some() {
        "Your session has ended. Sign in again to go on."
    } else {
        ""
    };
    sign_in_form(&state, StatusCode::OK, next, "", notice)
}

#[derive(Debug, Deserialize)]
struct SignInForm {
    #[serde(default)]
    token: String,
    #[serde(default)]
    csrf: String,
    next: Option<String>,
}

/// `POST /ui/sign-in`: checks the token and opens a session.
pub async fn sign_in(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let Ok(form) = serde_urlencoded::from_bytes::<SignInForm>(&body) else {
        return sign_in_form(
            &state,
            StatusCode::BAD_REQUEST,
            "/ui",
            "The form could not be read. Please try again.",
            "",
        );
    };
    let next = safe_next(form.next.as_deref());
    let expected = read_cookie(&headers, SIGN_IN_COOKIE).unwrap_or_default();
    if cross_site(&state, &headers) || !same(&form.csrf, &expected) {
        return sign_in_form(
            &state,
            StatusCode::FORBIDDEN,
            next,
            "This sign-in form had expired or came from another site. Please enter the token again.",
            "",
        );
    }
    let token = match state.store.authenticate(form.token.trim()).await {
        Ok(Some(token)) => token,
        Ok(None) => {
            return sign_in_form(
                &state,
                StatusCode::UNAUTHORIZED,
                next,
                "That API token was not accepted. Check that you pasted the whole token (it starts with cgt_) and that it has not been deleted.",
                "",
            )
        }
        Err(err) => return UiError::from(err).into_response(),
    };
    let secret = match state
        .store
        .create_ui_session(&token.environment_id, &token.id)
        .await
    {
        Ok((secret, _)) => secret,
        Err(err) => return UiError::from(err).into_response(),
    };
    let mut response = see_other(next);
    let headers = response.headers_mut();
    headers.append(
        header::SET_COOKIE,
        cookie_header(&state, SESSION_COOKIE, secret.expose().to_owned(), false),
    );
    headers.append(
        header::SET_COOKIE,
        cookie_header(&state, SIGN_IN_COOKIE, String::new(), true),
    );
    response
}

/// `POST /ui/sign-out`: ends the session on the server and clears the cookie.
pub async fn sign_out(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if let Some(cookie) = read_cookie(&headers, SESSION_COOKIE) {
        if let Err(err) = state.store.delete_ui_session(&cookie).await {
            return UiError::from(err).into_response();
        }
    }
    let mut response = see_other("/ui/sign-in?signed_out=1");
    response.headers_mut().append(
        header::SET_COOKIE,
        cookie_header(&state, SESSION_COOKIE, String::new(), true),
    );
    response
}

/// Lets only a signed-in browser through, as its token's [`Caller`] (after spending one
/// request of that token's limit), and only forms of this dashboard's own making.
pub async fn require(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let cookie = read_cookie(request.headers(), SESSION_COOKIE);
    let session = match &cookie {
        Some(value) => match state
            .store
            .ui_session(value, state.config.ui_session_idle)
            .await
        {
            Ok(session) => session,
            Err(err) => return UiError::from(err).into_response(),
        },
        None => None,
    };
    let Some(session) = session else {
        if request.uri().path() == "/ui/timeline/events" {
            return StatusCode::UNAUTHORIZED.into_response();
        }
        let back = if request.method() == Method::GET {
            request
                .uri()
                .path_and_query()
                .map(|pq| pq.as_str().to_owned())
                .unwrap_or_default()
        } else {
            String::new()
        };
        let mut to = String::from("/ui/sign-in?");
        let mut query = url::form_urlencoded::Serializer::new(String::new());
        if cookie.is_some() {
            query.append_pair("ended", "1");
        }
        if back != "/ui" && !back.is_empty() {
            query.append_pair("next", safe_next(Some(&back)));
        }
        to.push_str(&query.finish());
        return see_other(to.trim_end_matches('?'));
    };
    if let Err(err) = state.check_token_limit(&session.token_id) {
        return UiError(err).into_response();
    }
    let (parts, body) = request.into_parts();
    let mut request = if parts.method == Method::POST {
        if cross_site(&state, &parts.headers) {
            return refused_form();
        }
        let Ok(bytes) = axum::body::to_bytes(body, MAX_FORM).await else {
            return message(
                StatusCode::PAYLOAD_TOO_LARGE,
                "Form too large",
                "The form sent more than the dashboard reads.".into(),
            );
        };
        let csrf = serde_urlencoded::from_bytes::<Vec<(String, String)>>(&bytes)
            .ok()
            .and_then(|pairs| pairs.into_iter().find(|(k, _)| k == "csrf"))
            .map(|(_, v)| v)
            .unwrap_or_default();
        if !same(&csrf, &session.csrf) {
            return refused_form();
        }
        Request::from_parts(parts, Body::from(bytes))
    } else {
        Request::from_parts(parts, body)
    };
    request.extensions_mut().insert(Caller {
        environment_id: session.environment_id.clone(),
        token_id: session.token_id,
    });
    request.extensions_mut().insert(SignedIn {
        environment_id: session.environment_id,
        csrf: session.csrf,
    });
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_dashboard_paths_are_followed_after_sign_in() {
        assert_eq!(
            safe_next(Some("/ui/accounts?status=active")),
            "/ui/accounts?status=active"
        );
        assert_eq!(safe_next(Some("/ui?x=1")), "/ui?x=1");
        for hostile in [
            "https://evil.example/ui",
            "//evil.example/ui",
            "/ui//evil.example",
            "/ui/\\evil",
            "/uix",
            "/accounts",
            "/ui/\nSet-Cookie: x",
        ] {
            assert_eq!(safe_next(Some(hostile)), "/ui", "{hostile:?}");
        }
        assert_eq!(safe_next(None), "/ui");
    }

    #[test]
    fn cookies_are_http_only_strict_and_secure_over_https() {
        let plain = set_cookie(SESSION_COOKIE, "cgs_x".into(), false, false);
        assert!(plain.starts_with("cigate_session=cgs_x"), "{plain}");
        for part in ["HttpOnly", "SameSite=Strict", "Path=/ui"] {
            assert!(plain.contains(part), "{plain}");
        }
        assert!(!plain.contains("Secure"), "{plain}");
        assert!(set_cookie(SESSION_COOKIE, "v".into(), true, false).contains("Secure"));
        let gone = set_cookie(SESSION_COOKIE, String::new(), false, true);
        assert!(gone.contains("Max-Age=0"), "{gone}");
    }

    #[test]
    fn an_empty_csrf_token_never_matches() {
        assert!(!same("", ""));
        assert!(same("abc", "abc"));
        assert!(!same("abc", "abd"));
    }
}
