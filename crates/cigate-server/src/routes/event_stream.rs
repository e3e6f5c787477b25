//! `GET /events/stream`: the event log as Server-Sent Events, for a terminal
//! (`cigate events tail`) or a browser's `EventSource`.
//!
//! The stream reads the store, not this instance's memory, so it shows what every
//! instance recorded; events this instance records wake it at once, others' within
//! [`IDLE_RECHECK`]. Each message's `id` is the event's position: a client that
//! reconnects with `Last-Event-ID` (or `after`) continues where it left off.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::Extension;
use cigate_core::events::EventPattern;
use cigate_store::{Event, EventFilter};
use futures::Stream;

use super::webhooks::{event_view, store_error};
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::extract::QueryPairs;
use crate::state::AppState;

/// How long a quiet stream waits before it looks at the store again.
const IDLE_RECHECK: Duration = Duration::from_secs(1);
/// Events read from the store at once.
const BATCH: u32 = 200;

struct Tail {
    state: AppState,
    environment_id: String,
    filter: EventFilter,
    pattern: Option<EventPattern>,
    after: Option<String>,
    buffer: VecDeque<Event>,
}

impl Tail {
    /// Reads what follows `after` into the buffer (only what `pattern` wants, but the
    /// position moves past everything read).
    async fn fill(&mut self) -> ApiResult<()> {
        let events = self
            .state
            .store
            .list_events(
                &self.environment_id,
                &self.filter,
                self.after.as_deref(),
                BATCH,
            )
            .await
            .map_err(store_error)?;
        if let Some(last) = events.last() {
            self.after = Some(last.page_key());
        }
        let pattern = self.pattern.as_ref();
        self.buffer.extend(
            events
                .into_iter()
                .filter(|e| pattern.is_none_or(|p| p.matches(&e.event_type))),
        );
        Ok(())
    }

    async fn next(mut self) -> Option<(Result<SseEvent, Infallible>, Self)> {
        loop {
            if let Some(event) = self.buffer.pop_front() {
                let message = SseEvent::default()
                    .id(event.page_key())
                    .event(event.event_type.clone())
                    .json_data(event_view(&event))
                    .unwrap_or_else(|_| SseEvent::default().comment("unencodable event"));
                return Some((Ok(message), self));
            }
            let watch = self.state.watch.clone();
            let woken = watch.recorded.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            if let Err(err) = self.fill().await {
                tracing::warn!(error = %err, "reading the event log for a stream failed");
                return None;
            }
            if self.buffer.is_empty() {
                tokio::select! {
                    _ = &mut woken => {}
                    _ = tokio::time::sleep(IDLE_RECHECK) => {}
                }
            }
        }
    }
}

#[utoipa::path(get, path = "/events/stream", tag = crate::openapi::TAG_EVENTS, security(("api_token" = [])),
    summary = "Follow the event log (Server-Sent Events)",
    description = "New events as they are recorded, as `text/event-stream`: each message's `event` is the event type, `data` the event as `GET /events` lists it, `id` its position. Starts at the newest event unless `Last-Event-ID` (or `after`) names a position to continue from. Comments keep the connection alive.",
    params(
        ("event_type" = Option<String>, Query, description = "an event type or a prefix pattern such as `job:*`"),
        ("integrated_account_id" = Option<String>, Query),
        ("tenant_id" = Option<String>, Query),
        ("after" = Option<String>, Query, description = "continue after this position (an earlier message's `id`)"),
    ),
    responses(
        (status = 200, description = "the stream", content_type = "text/event-stream"),
        (status = 400, description = "an invalid pattern or position"),
    ))]
pub async fn stream(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    query: QueryPairs,
) -> ApiResult<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>> {
    let pattern = query
        .get("event_type")
        .map(EventPattern::parse)
        .transpose()
        .map_err(|message| ApiError::bad_request("/problems/invalid-parameter", message))?;
    let filter = EventFilter {
        event_type: None,
        integrated_account_id: query.get("integrated_account_id").map(str::to_owned),
        tenant_id: query.get("tenant_id").map(str::to_owned),
    };
    let resume = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .or_else(|| query.get("after"))
        .map(str::to_owned);
    let after = match resume {
        Some(position) => Some(position),
        None => state
            .store
            .latest_event_key(&caller.environment_id)
            .await
            .map_err(store_error)?,
    };
    let mut tail = Tail {
        state,
        environment_id: caller.environment_id,
        filter,
        pattern,
        after,
        buffer: VecDeque::new(),
    };
    // Read once now, so a bad position is a 400 rather than an empty stream.
    tail.fill().await.map_err(|err| match err {
        ApiError::Validation(message) => ApiError::InvalidCursor(format!(
            "`Last-Event-ID`/`after` is not a position of this stream: {message}"
        )),
        other => other,
    })?;
    let events = futures::stream::unfold(tail, Tail::next);
    Ok(Sse::new(events).keep_alive(KeepAlive::default()))
}
