//! `Idempotency-Key` for POST and PATCH: the first request with a key runs, every later
//! one with the same key (per environment, account, method and path) gets the first
//! response again, byte for byte, with `Idempotent-Replayed: true`, and never reaches
//! Buddy. A different request under the same key (method, path, query or body differ)
//! is refused with 422 `/problems/idempotency-key-reused`. A duplicate that arrives
//! while the first is still running waits for it (polling the store with backoff, up to
//! the upstream deadline) and then replays; if the first is still running after that,
//! 409 `/problems/idempotency-key-in-progress` with `Retry-After` of one lease.
//!
//! The first request holds its key by a lease (`CIGATE_IDEMPOTENCY_LEASE`) renewed every
//! third of it while the request runs. If its process dies before the answer is recorded
//! (a kill, a crash, a shutdown whose grace ran out), the lease lapses and every resend
//! is answered at once with 409 `/problems/idempotency-outcome-unknown`: the write may or
//! may not have reached Buddy, it is never run again under that key, and the problem
//! says how to check. Waiting or a `Retry-After` could not help such a caller.
//!
//! Applying it to other routes (proxy, custom): add
//! `.route_layer(axum::middleware::from_fn_with_state(state.clone(), idempotency::layer))`
//! to a router whose routes sit behind `require_token` (the layer needs the [`Caller`]
//! extension, so it must run inside the auth layer: `route_layer` on the inner router
//! does that). Requests without the header, and other methods, pass straight through.
//! The account is read from the `integrated_account_id` query parameter.
//!
//! What is stored: status, `Content-Type`, `Location` and the body (read whole; write
//! answers are small JSON). A handler answer that provably never reached Buddy (an
//! [`ApiError`] decided locally: validation, auth, unknown account …, marked with
//! [`NotSentUpstream`]) releases the key instead, so a corrected retry can run. The
//! answer is recorded before it is sent. The handler runs in its own task, so a caller
//! that disconnects mid-write does not leave the key half-done: the write completes and
//! its answer is recorded.
//! Records expire after `CIGATE_IDEMPOTENCY_TTL_SECS` (24 h by default).

use std::time::Duration;

use axum::body::{to_bytes, Body};
use axum::extract::{Request, State};
use axum::http::{header, HeaderName, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use cigate_store::{Begin, IdempotencyKey, StoredResponse};
use sha2::{Digest, Sha256};

use crate::auth::Caller;
use crate::error::ApiError;
use crate::state::AppState;

pub const HEADER: &str = "idempotency-key";
pub const REPLAYED_HEADER: &str = "idempotent-replayed";

/// Longest accepted key.
pub const MAX_KEY_LEN: usize = 255;

/// Largest handler answer recorded for replay.
const MAX_STORED_BODY: usize = 8 * 1024 * 1024;

/// Response extension: this answer was decided without any call to Buddy, so the key
/// may be released. Set by [`ApiError`] for its local variants.
#[derive(Debug, Clone, Copy)]
pub struct NotSentUpstream;

/// The middleware; see the module documentation.
pub async fn layer(State(state): State<AppState>, request: Request, next: Next) -> Response {
    if !matches!(*request.method(), Method::POST | Method::PATCH) {
        return next.run(request).await;
    }
    let Some(raw_key) = request.headers().get(HEADER) else {
        return next.run(request).await;
    };
    let key = match raw_key.to_str() {
        Ok(k) if !k.trim().is_empty() && k.len() <= MAX_KEY_LEN => k.trim().to_owned(),
        _ => {
            return ApiError::bad_request(
                "/problems/invalid-idempotency-key",
                format!("`Idempotency-Key` must be 1–{MAX_KEY_LEN} visible ASCII characters"),
            )
            .into_response()
        }
    };
    let Some(caller) = request.extensions().get::<Caller>().cloned() else {
        return next.run(request).await;
    };
    let (parts, body) = request.into_parts();
    let bytes = match to_bytes(body, state.config.body_limit).await {
        Ok(b) => b,
        Err(_) => return ApiError::PayloadTooLarge.into_response(),
    };
    let account_id = parts.uri.query().and_then(|q| {
        serde_urlencoded::from_str::<Vec<(String, String)>>(q)
            .ok()?
            .into_iter()
            .rev()
            .find(|(k, v)| k == "integrated_account_id" && !v.is_empty())
            .map(|(_, v)| v)
    });
    let id = IdempotencyKey {
        environment_id: caller.environment_id.clone(),
        account_id,
        method: parts.method.as_str().to_owned(),
        path: parts.uri.path().to_owned(),
        key,
    };
    let hash = request_hash(
        parts.method.as_str(),
        parts.uri.path(),
        parts.uri.query().unwrap_or(""),
        &bytes,
    );
    let ttl = Duration::from_secs(state.config.idempotency_ttl_secs.max(1));
    let lease = state.config.idempotency_lease.max(MIN_LEASE);
    // Long enough for the first request's upstream call to finish.
    let wait = Duration::from_millis(state.config.upstream_timeout_ms) + Duration::from_secs(5);
    let deadline = tokio::time::Instant::now() + wait;
    let mut pause = Duration::from_millis(25);
    loop {
        match state.store.begin_idempotent(&id, &hash, ttl, lease).await {
            Ok(Begin::Started) => break,
            Ok(Begin::Replay(stored)) => {
                state.metrics.idempotent_replays.inc();
                return replay(stored);
            }
            Ok(Begin::Mismatch) => return ApiError::IdempotencyKeyReused.into_response(),
            Ok(Begin::Orphaned) => {
                return ApiError::IdempotencyOutcomeUnknown {
                    check: how_to_check(&id.method, &id.path),
                }
                .into_response()
            }
            Ok(Begin::InProgress) => {
                if tokio::time::Instant::now() + pause > deadline {
                    let mut response = ApiError::IdempotencyInProgress.into_response();
                    // By then the holder has renewed its lease or is known to be gone.
                    response.headers_mut().insert(
                        header::RETRY_AFTER,
                        HeaderValue::from(crate::error::retry_after_secs(lease)),
                    );
                    return response;
                }
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_millis(500));
            }
            Err(err) => return ApiError::from(err).into_response(),
        }
    }
    let request = Request::from_parts(parts, Body::from(bytes));
    let store = state.store.clone();
    let task = tokio::spawn(async move {
        let work = async {
            let response = next.run(request).await;
            record(&store, &id, response).await
        };
        hold_lease(&store, &id, &hash, lease, work).await
    });
    match task.await {
        Ok(response) => response,
        Err(join) => ApiError::Internal(format!("write handler failed: {join}")).into_response(),
    }
}

/// Shortest lease honoured: renewing more often than every 100 ms would only load the
/// store.
const MIN_LEASE: Duration = Duration::from_millis(300);

/// Runs `work` while renewing the key's lease every third of `lease`, so the key stays
/// "in progress" exactly as long as this process is alive and working on it.
async fn hold_lease(
    store: &cigate_store::Store,
    id: &IdempotencyKey,
    hash: &str,
    lease: Duration,
    work: impl std::future::Future<Output = Response>,
) -> Response {
    let every = lease / 3;
    let mut renew = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    renew.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(work);
    loop {
        tokio::select! {
            response = &mut work => return response,
            _ = renew.tick() => match store.renew_idempotent(id, hash, lease).await {
                Ok(true) => {}
                // Finished meanwhile (the answer is being sent) or purged: nothing to hold.
                Ok(false) => {}
                Err(err) => tracing::warn!(error = %err, "could not renew an idempotency lease"),
            },
        }
    }
}

/// Where a caller can see whether an interrupted write took effect.
fn how_to_check(method: &str, path: &str) -> String {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    match (method, segments.as_slice()) {
        ("POST", ["unified", "ci-cd", "jobs"]) => "list the workflow's jobs with GET \
             /unified/ci-cd/jobs and the same integrated_account_id, workspace, repo and \
             workflow: a run it started is among the newest"
            .into(),
        ("POST", ["unified", "ci-cd", "jobs", id, _]) => {
            format!("look the job up with GET /unified/ci-cd/jobs/{id}")
        }
        ("POST", ["unified", "ci-cd", resource]) => {
            format!("list them with GET /unified/ci-cd/{resource}")
        }
        (_, ["unified", "ci-cd", resource, id, ..]) => {
            format!("look it up with GET /unified/ci-cd/{resource}/{id}")
        }
        _ => format!("look the object {path} changes up with a GET"),
    }
}

/// SHA-256 over method, path, query and body, so any difference is a mismatch.
pub fn request_hash(method: &str, path: &str, query: &str, body: &[u8]) -> String {
    let mut h = Sha256::new();
    for part in [method.as_bytes(), path.as_bytes(), query.as_bytes()] {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part);
    }
    h.update(body);
    format!("{:x}", h.finalize())
}

/// Stores the handler's answer (or releases the key when it never reached Buddy), then
/// returns it: a caller never holds an answer that a resend could not replay.
async fn record(store: &cigate_store::Store, id: &IdempotencyKey, response: Response) -> Response {
    if response.extensions().get::<NotSentUpstream>().is_some() {
        if let Err(err) = store.abandon_idempotent(id).await {
            tracing::warn!(error = %err, "could not release an idempotency key");
        }
        return response;
    }
    let (parts, body) = response.into_parts();
    let bytes = match to_bytes(body, MAX_STORED_BODY).await {
        Ok(b) => b,
        Err(err) => {
            // The write may have happened; keep the key so it is not run again.
            let failed = ApiError::Internal(format!("could not read the write's answer: {err}"))
                .into_response();
            let stored = StoredResponse {
                status: failed.status().as_u16(),
                headers: vec![(
                    header::CONTENT_TYPE.as_str().to_owned(),
                    "application/problem+json".to_owned(),
                )],
                body: br#"{"status":500,"type":"/problems/internal","message":"internal error"}"#
                    .to_vec(),
            };
            if let Err(err) = store.finish_idempotent(id, &stored).await {
                tracing::warn!(error = %err, "could not record an idempotent answer");
            }
            return failed;
        }
    };
    let headers = [header::CONTENT_TYPE, header::LOCATION]
        .iter()
        .filter_map(|name| {
            parts
                .headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(|v| (name.as_str().to_owned(), v.to_owned()))
        })
        .collect();
    let stored = StoredResponse {
        status: parts.status.as_u16(),
        headers,
        body: bytes.to_vec(),
    };
    if let Err(err) = store.finish_idempotent(id, &stored).await {
        tracing::warn!(error = %err, "could not record an idempotent answer");
    }
    Response::from_parts(parts, Body::from(bytes))
}

fn replay(stored: StoredResponse) -> Response {
    let status = StatusCode::from_u16(stored.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = (status, stored.body).into_response();
    let headers = response.headers_mut();
    headers.remove(header::CONTENT_TYPE);
    for (name, value) in stored.headers {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(&value),
        ) {
            headers.insert(name, value);
        }
    }
    headers.insert(
        HeaderName::from_static(REPLAYED_HEADER),
        HeaderValue::from_static("true"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_separates_every_part() {
        let a = request_hash("POST", "/a", "x=1", b"{}");
        assert_eq!(a, request_hash("POST", "/a", "x=1", b"{}"));
        assert_ne!(a, request_hash("PATCH", "/a", "x=1", b"{}"));
        assert_ne!(a, request_hash("POST", "/a", "x=2", b"{}"));
        assert_ne!(a, request_hash("POST", "/a", "x=1", b"{ }"));
        // Moving bytes between parts changes the hash.
        assert_ne!(
            request_hash("POST", "/ax", "", b""),
            request_hash("POST", "/a", "x", b"")
        );
        assert_eq!(a.len(), 64);
    }

    #[test]
    fn the_outcome_unknown_problem_names_where_to_look() {
        assert!(how_to_check("POST", "/unified/ci-cd/jobs").contains("GET /unified/ci-cd/jobs"));
        assert!(how_to_check("POST", "/unified/ci-cd/jobs/42/cancel")
            .contains("GET /unified/ci-cd/jobs/42"));
        assert!(
            how_to_check("POST", "/unified/ci-cd/workflow").contains("GET /unified/ci-cd/workflow")
        );
        assert!(how_to_check("PATCH", "/unified/ci-cd/variables/7")
            .contains("GET /unified/ci-cd/variables/7"));
        assert!(how_to_check("POST", "/proxy/workspaces").contains("/proxy/workspaces"));
    }
}
