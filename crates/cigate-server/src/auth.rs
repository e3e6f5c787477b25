//! Bearer API tokens: each maps to exactly one environment, and every handler scopes
//! its queries by that environment.

use axum::extract::{Request, State};
use axum::http::header::AUTHORIZATION;
use axum::http::HeaderMap;
use axum::middleware::Next;
use axum::response::Response;

use crate::error::ApiError;
use crate::state::AppState;

/// Who is calling, put into request extensions by [`require_token`].
#[derive(Debug, Clone)]
pub struct Caller {
    pub environment_id: String,
    pub token_id: String,
}

pub async fn require_token(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let caller = authenticate(&state, request.headers()).await?;
    request.extensions_mut().insert(caller);
    Ok(next.run(request).await)
}

/// The caller named by the request's `Authorization: Bearer` token, after spending one
/// request of the token's own limit. For routes that are public in one form and need a
/// token in another (`/badge/{id}.svg` and `/badge/{id}`), which the
/// [`require_token`] layer cannot tell apart.
pub async fn authenticate(state: &AppState, headers: &HeaderMap) -> Result<Caller, ApiError> {
    let token = headers
        .get(AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| {
            value
                .strip_prefix("Bearer ")
                .or_else(|| value.strip_prefix("bearer "))
        })
        .map(str::trim)
        .filter(|token| !token.is_empty())
        .ok_or(ApiError::Unauthorized)?;
    let caller = match state.cache.token(token) {
        Some(caller) => caller,
        None => {
            let api_token = state
                .store
                .authenticate(token)
                .await?
                .ok_or(ApiError::Unauthorized)?;
            let caller = Caller {
                environment_id: api_token.environment_id,
                token_id: api_token.id,
            };
            state.cache.remember_token(token, caller.clone());
            caller
        }
    };
    state.check_token_limit(&caller.token_id)?;
    Ok(caller)
}
