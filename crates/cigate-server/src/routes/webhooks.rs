//! Event subscriptions (webhooks cigate sends), their deliveries, and the event log.
//! A subscription's `secret` appears only in the answers of create and rotate-secret.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use serde::{Deserialize, Deserializer};
use serde_json::{json, Value};

use cigate_core::cursor::CursorBinding;
use cigate_core::events::{event_type, EventPattern, WebhookSecret};
use cigate_store::{
    EventFilter, NewEvent, NewWebhook, StoreError, Webhook, WebhookFormat, WebhookPatch,
};

use crate::auth::Caller;
use crate::delivery::{self, delivery_view};
use crate::envelope::ListEnvelope;
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, ApiPath, QueryPairs};
use crate::state::AppState;

/// How long the replaced secret keeps signing after a rotation.
const ROTATION_GRACE: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/webhook", get(list).post(create))
        .route("/webhook/test", post(test))
        .route("/webhook/{id}", get(fetch).patch(update).delete(remove))
        .route("/webhook/{id}/rotate-secret", post(rotate_secret))
        .route("/webhook/{id}/deliveries", get(deliveries))
        .route(
            "/webhook/{id}/deliveries/{delivery}/redeliver",
            post(redeliver),
        )
        .route("/events", get(events))
        .route("/events/stream", get(super::event_stream::stream))
}

/// The public form of a subscription; with `secret` only when it was just made.
fn webhook_view(hook: &Webhook, secret: Option<&WebhookSecret>) -> Value {
    let mut view = json!({
        "id": hook.id,
        "environment_id": hook.environment_id,
        "target_url": hook.target_url,
        "event_types": hook.event_types,
        "format": hook.format,
        "tenant_id": hook.tenant_id,
        "integrated_account_id": hook.integrated_account_id,
        "workflow": hook.workflow,
        "is_active": hook.is_active,
        "failing_since": hook.failing_since,
        "created_at": hook.created_at,
        "updated_at": hook.updated_at,
    });
    if let Some(secret) = secret {
        view["secret"] = json!(secret.expose());
    }
    view
}

pub(crate) fn event_view(event: &cigate_store::Event) -> Value {
    json!({
        "id": event.id,
        "event": event.event_type,
        "environment_id": event.environment_id,
        "integrated_account_id": event.integrated_account_id,
        "tenant_id": event.tenant_id,
        "payload": event.payload,
        "created_at": event.created_at,
    })
}

/// Store refusals of the caller's input become 4xx; the rest stays internal.
pub(crate) fn store_error(err: StoreError) -> ApiError {
    match err {
        StoreError::InvalidInput(message) => ApiError::Validation(message),
        StoreError::Conflict(message) => ApiError::Busy(message),
        other => other.into(),
    }
}

/// `target_url` under the same address policy as an account's Buddy base URL.
async fn checked_target(state: &AppState, url: &str) -> ApiResult<String> {
    cigate_buddy::base_url::validate_base_url(url, state.upstream_policy())
        .await
        .map(|url| url.to_string())
        .map_err(|err| ApiError::Validation(format!("`target_url` is not allowed: {err}")))
}

fn checked_types(types: Vec<String>) -> ApiResult<Vec<String>> {
    if types.is_empty() {
        return Err(ApiError::Validation(
            "`event_types` must name at least one event type".into(),
        ));
    }
    types
        .iter()
        .map(|t| {
            EventPattern::parse(t)
                .map(|p| p.as_str().to_owned())
                .map_err(|err| ApiError::Validation(format!("`event_types`: {err}")))
        })
        .collect()
}

fn checked_format(format: &str) -> ApiResult<WebhookFormat> {
    format
        .parse()
        .map_err(|err: String| ApiError::Validation(format!("`format`: {err}")))
}

async fn owned(state: &AppState, caller: &Caller, id: &str) -> ApiResult<Webhook> {
    state
        .store
        .get_webhook(&caller.environment_id, id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no webhook `{id}`")))
}

/// Cursor paging as `/integrated-account` does it: the cursor carries the store's page
/// key, bound to the environment, the list and its filters.
struct Pager {
    binding: CursorBinding,
    limit: u32,
}

impl Pager {
    fn new(
        caller: &Caller,
        resource: &str,
        filters: String,
        query: &QueryPairs,
    ) -> ApiResult<Self> {
        let limit = query.int_in("limit", 100, 1, 1000)?;
        Ok(Self {
            binding: CursorBinding {
                environment_id: caller.environment_id.clone(),
                account_id: String::new(),
                resource: resource.to_owned(),
                filters: format!("{filters}|{limit}"),
            },
            limit,
        })
    }

    fn after(&self, state: &AppState, query: &QueryPairs) -> ApiResult<Option<String>> {
        let Some(cursor) = query.get("next_cursor") else {
            return Ok(None);
        };
        state
            .cursors
            .decode(&self.binding, cursor)
            .map_err(|err| ApiError::InvalidCursor(err.to_string()))?
            .as_str()
            .map(|s| Some(s.to_owned()))
            .ok_or_else(|| ApiError::InvalidCursor("not a cursor of this list".into()))
    }

    /// The page (at most `limit` of `items`, fetched with `limit + 1`) and its envelope.
    fn envelope<T>(
        &self,
        state: &AppState,
        items: Vec<T>,
        key: impl Fn(&T) -> String,
        view: impl Fn(&T) -> Value,
    ) -> ListEnvelope<Value> {
        let limit = self.limit as usize;
        let next_cursor = match (items.len() > limit, items.get(limit.saturating_sub(1))) {
            (true, Some(last)) => Some(state.cursors.encode(&self.binding, &json!(key(last)))),
            _ => None,
        };
        ListEnvelope::new(items.iter().take(limit).map(view).collect(), next_cursor)
    }
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateWebhook {
    /// Where deliveries are POSTed: https and a public address unless private upstreams
    /// are allowed.
    pub target_url: String,
    /// Event names or prefixes ending in `*` (`job:*`); every event when omitted.
    pub event_types: Option<Vec<String>>,
    pub is_active: Option<bool>,
    /// `cigate` (default) or `cdevents`.
    pub format: Option<String>,
    pub tenant_id: Option<String>,
    pub integrated_account_id: Option<String>,
    pub workflow: Option<String>,
}

#[utoipa::path(post, path = "/webhook", tag = crate::openapi::TAG_EVENTS, security(("api_token" = [])),
    summary = "Subscribe a URL to events",
    request_body = CreateWebhook,
    responses((status = 201, description = "the webhook with its `secret`, shown only here and on rotate-secret"), (status = 400, description = "a body that is not JSON"), (status = 422, description = "invalid or refused target_url, unknown event type or format")))]
pub async fn create(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiJson(body): ApiJson<CreateWebhook>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let (hook, secret) = subscribe(&state, &caller, body).await?;
    Ok((
        StatusCode::CREATED,
        Json(webhook_view(&hook, Some(&secret))),
    ))
}

/// Creates a subscription after checking it (also for provisioning).
pub(crate) async fn subscribe(
    state: &AppState,
    caller: &Caller,
    body: CreateWebhook,
) -> ApiResult<(Webhook, WebhookSecret)> {
    // The checks without I/O first; the address check resolves the host.
    let event_types = checked_types(body.event_types.unwrap_or_else(|| vec!["*".into()]))?;
    let format = checked_format(body.format.as_deref().unwrap_or("cigate"))?;
    let target_url = checked_target(state, &body.target_url).await?;
    state
        .store
        .create_webhook(NewWebhook {
            environment_id: caller.environment_id.clone(),
            target_url,
            event_types,
            format,
            tenant_id: body.tenant_id,
            integrated_account_id: body.integrated_account_id,
            workflow: body.workflow,
            is_active: body.is_active.unwrap_or(true),
        })
        .await
        .map_err(store_error)
}

#[utoipa::path(get, path = "/webhook", tag = crate::openapi::TAG_EVENTS, security(("api_token" = [])),
    summary = "List webhook subscriptions",
    params(("limit" = Option<u32>, Query, minimum = 1, maximum = 1000, description = "items per page, 1–1000, default 100"), ("next_cursor" = Option<String>, Query, description = "from the previous page")),
    responses((status = 200, description = "list envelope of webhooks (no secrets)"), (status = 400, description = "an invalid parameter or cursor")))]
pub async fn list(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    query: QueryPairs,
) -> ApiResult<Json<ListEnvelope<Value>>> {
    let pager = Pager::new(&caller, "webhook", String::new(), &query)?;
    let after = pager.after(&state, &query)?;
    let hooks = state
        .store
        .list_webhooks(&caller.environment_id, after.as_deref(), pager.limit + 1)
        .await
        .map_err(store_error)?;
    Ok(Json(pager.envelope(
        &state,
        hooks,
        Webhook::page_key,
        |h| webhook_view(h, None),
    )))
}

#[utoipa::path(get, path = "/webhook/{id}", tag = crate::openapi::TAG_EVENTS, security(("api_token" = [])),
    summary = "Get a webhook subscription",
    params(("id" = String, Path)), responses((status = 200, description = "the webhook (no secret)"), (status = 404, description = "not found in this environment")))]
pub async fn fetch(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<Value>> {
    Ok(Json(webhook_view(
        &owned(&state, &caller, &id).await?,
        None,
    )))
}

/// `null` clears a filter; an absent field leaves it.
fn nullable<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(d).map(Some)
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateWebhook {
    pub target_url: Option<String>,
    pub event_types: Option<Vec<String>>,
    pub is_active: Option<bool>,
    pub format: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    pub tenant_id: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    pub integrated_account_id: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    pub workflow: Option<Option<String>>,
}

#[utoipa::path(patch, path = "/webhook/{id}", tag = crate::openapi::TAG_EVENTS, security(("api_token" = [])),
    summary = "Change a webhook subscription",
    params(("id" = String, Path)), request_body = UpdateWebhook,
    responses((status = 200, description = "the updated webhook"), (status = 400, description = "a body that is not JSON"), (status = 404, description = "not found"), (status = 422, description = "invalid input")))]
pub async fn update(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<UpdateWebhook>,
) -> ApiResult<Json<Value>> {
    let target_url = match &body.target_url {
        Some(url) => Some(checked_target(&state, url).await?),
        None => None,
    };
    let patch = WebhookPatch {
        target_url,
        event_types: body.event_types.map(checked_types).transpose()?,
        format: body.format.as_deref().map(checked_format).transpose()?,
        tenant_id: body.tenant_id,
        integrated_account_id: body.integrated_account_id,
        workflow: body.workflow,
        is_active: body.is_active,
    };
    let hook = state
        .store
        .update_webhook(&caller.environment_id, &id, patch)
        .await
        .map_err(store_error)?
        .ok_or_else(|| ApiError::NotFound(format!("no webhook `{id}`")))?;
    if hook.is_active {
        // Deliveries held back while it was inactive can go now.
        state.deliveries.notify_one();
    }
    Ok(Json(webhook_view(&hook, None)))
}

#[utoipa::path(delete, path = "/webhook/{id}", tag = crate::openapi::TAG_EVENTS, security(("api_token" = [])),
    summary = "Delete a webhook subscription",
    params(("id" = String, Path)), responses((status = 200, description = "`{ id }` of the deleted webhook"), (status = 404, description = "not found")))]
pub async fn remove(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<Value>> {
    if state
        .store
        .delete_webhook(&caller.environment_id, &id)
        .await?
    {
        Ok(Json(json!({ "id": id })))
    } else {
        Err(ApiError::NotFound(format!("no webhook `{id}`")))
    }
}

#[utoipa::path(post, path = "/webhook/{id}/rotate-secret", tag = crate::openapi::TAG_EVENTS, security(("api_token" = [])),
    summary = "Rotate a subscription's signing secret",
    params(("id" = String, Path)), responses((status = 200, description = "the webhook with its new `secret`; the old one also signs for 24 h"), (status = 404, description = "not found")))]
pub async fn rotate_secret(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<Value>> {
    let secret = state
        .store
        .rotate_webhook_secret(&caller.environment_id, &id, ROTATION_GRACE)
        .await
        .map_err(store_error)?
        .ok_or_else(|| ApiError::NotFound(format!("no webhook `{id}`")))?;
    let hook = owned(&state, &caller, &id).await?;
    Ok(Json(webhook_view(&hook, Some(&secret))))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TestWebhook {
    /// The webhook that receives the `test` event (and no other).
    pub id: String,
}

#[utoipa::path(post, path = "/webhook/test", tag = crate::openapi::TAG_EVENTS, security(("api_token" = [])),
    summary = "Send a test event",
    request_body = TestWebhook,
    responses((status = 202, description = "the `test` event queued for that webhook"), (status = 400, description = "a body that is not JSON"), (status = 404, description = "no such webhook"), (status = 422, description = "the webhook is inactive")))]
pub async fn test(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiJson(body): ApiJson<TestWebhook>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let hook = owned(&state, &caller, &body.id).await?;
    if !hook.is_active {
        // An inactive webhook gets nothing; its test event would wait unseen.
        return Err(ApiError::Validation(format!(
            "webhook `{}` is inactive; set `is_active` to true first",
            hook.id
        )));
    }
    let event = delivery::record(
        &state,
        NewEvent {
            environment_id: caller.environment_id.clone(),
            event_type: event_type::TEST.into(),
            integrated_account_id: None,
            tenant_id: None,
            workflow: None,
            payload: json!({ "message": "a test event from cigate", "webhook_id": hook.id }),
            only_webhook: Some(hook.id.clone()),
            except_webhook: None,
            order_key: None,
        },
    )
    .await?;
    Ok((StatusCode::ACCEPTED, Json(event_view(&event))))
}

#[utoipa::path(get, path = "/webhook/{id}/deliveries", tag = crate::openapi::TAG_EVENTS, security(("api_token" = [])),
    summary = "List a subscription's deliveries",
    params(("id" = String, Path), ("limit" = Option<u32>, Query, minimum = 1, maximum = 1000, description = "items per page, 1–1000, default 100"), ("next_cursor" = Option<String>, Query, description = "from the previous page")),
    responses((status = 200, description = "list envelope of deliveries: status, attempts (time, response status, latency, error)"), (status = 400, description = "an invalid parameter or cursor"), (status = 404, description = "no such webhook")))]
pub async fn deliveries(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiPath(id): ApiPath<String>,
    query: QueryPairs,
) -> ApiResult<Json<ListEnvelope<Value>>> {
    let hook = owned(&state, &caller, &id).await?;
    let pager = Pager::new(&caller, "webhook-deliveries", hook.id.clone(), &query)?;
    let after = pager.after(&state, &query)?;
    let items = state
        .store
        .list_deliveries(&hook.id, after.as_deref(), pager.limit + 1)
        .await
        .map_err(store_error)?;
    Ok(Json(pager.envelope(
        &state,
        items,
        cigate_store::Delivery::page_key,
        delivery_view,
    )))
}

#[utoipa::path(post, path = "/webhook/{id}/deliveries/{delivery}/redeliver", tag = crate::openapi::TAG_EVENTS, security(("api_token" = [])),
    summary = "Deliver an event again",
    params(("id" = String, Path), ("delivery" = String, Path)),
    responses((status = 202, description = "the delivery, scheduled now under the same id"), (status = 404, description = "not found"), (status = 409, description = "being attempted right now")))]
pub async fn redeliver(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiPath((id, delivery)): ApiPath<(String, String)>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let hook = owned(&state, &caller, &id).await?;
    let redone = state
        .store
        .redeliver(&hook.id, &delivery)
        .await
        .map_err(store_error)?
        .ok_or_else(|| ApiError::NotFound(format!("no delivery `{delivery}`")))?;
    state.deliveries.notify_one();
    Ok((StatusCode::ACCEPTED, Json(delivery_view(&redone))))
}

#[utoipa::path(get, path = "/events", tag = crate::openapi::TAG_EVENTS, security(("api_token" = [])),
    summary = "List the event log",
    params(("event_type" = Option<String>, Query), ("integrated_account_id" = Option<String>, Query), ("tenant_id" = Option<String>, Query), ("limit" = Option<u32>, Query, minimum = 1, maximum = 1000, description = "items per page, 1–1000, default 100"), ("next_cursor" = Option<String>, Query, description = "from the previous page")),
    responses((status = 200, description = "list envelope of the environment's events, oldest first"), (status = 400, description = "an invalid parameter or cursor")))]
pub async fn events(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    query: QueryPairs,
) -> ApiResult<Json<ListEnvelope<Value>>> {
    let filter = EventFilter {
        event_type: query.get("event_type").map(str::to_owned),
        integrated_account_id: query.get("integrated_account_id").map(str::to_owned),
        tenant_id: query.get("tenant_id").map(str::to_owned),
    };
    let pager = Pager::new(&caller, "events", format!("{filter:?}"), &query)?;
    let after = pager.after(&state, &query)?;
    let items = state
        .store
        .list_events(
            &caller.environment_id,
            &filter,
            after.as_deref(),
            pager.limit + 1,
        )
        .await
        .map_err(store_error)?;
    Ok(Json(pager.envelope(
        &state,
        items,
        cigate_store::Event::page_key,
        event_view,
    )))
}
