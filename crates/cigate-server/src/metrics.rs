//! Prometheus metrics at `GET /metrics` (OpenMetrics text).
//!
//! Labels are bounded and carry no secret: the `route` of a request is the matched route
//! template (`/proxy/{*path}`), never the raw path with its ids; an unmatched request is
//! `unmatched`. Upstream counters are read from the shared [`HttpPool`] at scrape time,
//! so the hot path of an upstream call pays only its atomic increments.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use cigate_buddy::client::HttpPool;
use prometheus_client::collector::Collector;
use std::fmt::Write as _;

use prometheus_client::encoding::{
    DescriptorEncoder, EncodeCounterValue, EncodeLabelSet, EncodeLabelValue, EncodeMetric,
    LabelValueEncoder,
};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

use crate::state::AppState;

/// A route template, shared between the series of one route without copying.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
struct Route(Arc<str>);

impl EncodeLabelValue for Route {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        encoder.write_str(&self.0)
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: Route,
    method: &'static str,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: Route,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ScopeLabels {
    pub scope: &'static str,
}

/// Every series the server exports. Cheap to share (`Arc` in [`AppState`]).
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Family<RouteLabels, Histogram>,
    /// Replays answered from a stored `Idempotency-Key` response.
    pub idempotent_replays: Counter,
    /// OAuth token refreshes, `outcome` = `success` or `failure`.
    pub refreshes: Family<OutcomeLabels, Counter>,
    /// Requests refused by cigate's own limits, `scope` = `token` or `account`.
    pub limited: Family<ScopeLabels, Counter>,
    /// Events recorded, by `source`: `hook` (a provider webhook, re-read), `poll`,
    /// `account` (lifecycle), `api` (tests through the API).
    pub events_detected: Family<SourceLabels, Counter>,
    /// Provider calls spent polling for job changes.
    pub poll_calls: Counter,
    /// Polls that ran, by outcome (`changed`, `idle`, `skipped` for a tight budget,
    /// `failed`).
    pub polls: Family<OutcomeLabels, Counter>,
    /// Delivery attempts, by outcome (`delivered`, `retry`, `failed`, `disabled`).
    pub deliveries: Family<OutcomeLabels, Counter>,
    /// From an event's detection to its delivery's 2xx.
    pub delivery_latency: Histogram,
    /// Deliveries not yet delivered or failed, and the age of the oldest, as last seen.
    pub outbox_backlog: Gauge,
    pub outbox_oldest_age: Gauge<f64, std::sync::atomic::AtomicU64>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceLabels {
    pub source: &'static str,
}

/// Latency buckets from 100 µs to ~52 s: proxied calls sit at the low end, governed
/// and retried calls at the high end.
fn latency_histogram() -> Histogram {
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        0.0001, 2.0, 20,
    ))
}

impl Metrics {
    pub fn new(pool: HttpPool) -> Self {
        let mut registry = Registry::with_prefix("cigate");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests served, by route template, method and status",
            requests.clone(),
        );
        let latency =
            Family::<RouteLabels, Histogram>::new_with_constructor(latency_histogram as fn() -> _);
        registry.register_with_unit(
            "http_request_duration",
            "Time to the response head, by route template",
            Unit::Seconds,
            latency.clone(),
        );
        let idempotent_replays = Counter::default();
        registry.register(
            "idempotent_replays",
            "Requests answered from a stored Idempotency-Key response without calling Buddy",
            idempotent_replays.clone(),
        );
        let refreshes = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "oauth_refreshes",
            "OAuth access-token refreshes, by outcome",
            refreshes.clone(),
        );
        let limited = Family::<ScopeLabels, Counter>::default();
        registry.register(
            "own_limit_refusals",
            "Requests refused with 429 by cigate's own per-token or per-account limits",
            limited.clone(),
        );
        let events_detected = Family::<SourceLabels, Counter>::default();
        registry.register(
            "events_detected",
            "Events recorded, by source (hook, poll, account, api)",
            events_detected.clone(),
        );
        let poll_calls = Counter::default();
        registry.register(
            "event_poll_upstream_calls",
            "Provider calls spent polling accounts for job changes",
            poll_calls.clone(),
        );
        let polls = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "event_polls",
            "Account polls, by outcome (changed, idle, skipped, failed)",
            polls.clone(),
        );
        let deliveries = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "webhook_delivery_attempts",
            "Webhook delivery attempts, by outcome (delivered, retry, failed, disabled)",
            deliveries.clone(),
        );
        let delivery_latency = latency_histogram();
        registry.register_with_unit(
            "webhook_delivery_latency",
            "From an event's detection to its delivery's 2xx",
            Unit::Seconds,
            delivery_latency.clone(),
        );
        let outbox_backlog = Gauge::default();
        registry.register(
            "webhook_outbox_backlog",
            "Deliveries pending or retrying",
            outbox_backlog.clone(),
        );
        let outbox_oldest_age = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
        registry.register_with_unit(
            "webhook_outbox_oldest_age",
            "Age of the oldest event with a delivery pending or retrying",
            Unit::Seconds,
            outbox_oldest_age.clone(),
        );
        registry.register_collector(Box::new(UpstreamCollector { pool }));
        Self {
            registry,
            requests,
            latency,
            idempotent_replays,
            refreshes,
            limited,
            events_detected,
            poll_calls,
            polls,
            deliveries,
            delivery_latency,
            outbox_backlog,
            outbox_oldest_age,
        }
    }

    fn observe(&self, route: Route, method: &'static str, status: StatusCode, secs: f64) {
        self.latency
            .get_or_create(&RouteLabels {
                route: route.clone(),
            })
            .observe(secs);
        self.requests
            .get_or_create(&RequestLabels {
                route,
                method,
                status: status.as_u16(),
            })
            .inc();
    }

    /// The OpenMetrics text of every series.
    pub fn render(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::with_capacity(8 * 1024);
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

/// Upstream counters of the shared pool, read at scrape time.
#[derive(Debug)]
struct UpstreamCollector {
    pool: HttpPool,
}

/// One constant counter series, `u64` or `f64`.
fn encode_counter<N: EncodeCounterValue>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    value: N,
) -> Result<(), std::fmt::Error> {
    let counter = ConstCounter::new(value);
    let metric = encoder.encode_descriptor(name, help, unit, counter.metric_type())?;
    counter.encode(metric)
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClassLabels {
    class: &'static str,
}

impl Collector for UpstreamCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let stats = self.pool.stats();
        {
            let counter = ConstCounter::new(0u64);
            let mut family = encoder.encode_descriptor(
                "upstream_calls",
                "Answers from Buddy by status class (every attempt, retries included); \
                 `error` = no answer (connect failure, reset, timeout)",
                None,
                counter.metric_type(),
            )?;
            for (class, value) in [
                ("1xx", stats.calls_1xx),
                ("2xx", stats.calls_2xx),
                ("3xx", stats.calls_3xx),
                ("4xx", stats.calls_4xx),
                ("5xx", stats.calls_5xx),
                ("error", stats.transport_errors),
            ] {
                ConstCounter::new(value).encode(family.encode_family(&ClassLabels { class })?)?;
            }
        }
        encode_counter(
            &mut encoder,
            "upstream_retries",
            "Upstream attempts after the first one of a call",
            None,
            stats.retries,
        )?;
        encode_counter(
            &mut encoder,
            "upstream_rate_limited_received",
            "Rate-limit answers received from Buddy (429, or 403 \"Rate limit exceeded.\")",
            None,
            stats.rate_limited_received,
        )?;
        encode_counter(
            &mut encoder,
            "upstream_governor_refused",
            "Calls answered 429 because the account's next turn came after their deadline",
            None,
            stats.governor_refused,
        )?;
        encode_counter(
            &mut encoder,
            "upstream_governor_wait",
            "Time calls spent waiting for the per-account rate governor, summed",
            Some(&Unit::Seconds),
            stats.governor_wait_ms_total as f64 / 1000.0,
        )
    }
}

/// Records every request under its route template, and logs it at `debug` (the
/// request log: method, route template, status, time to the response head; never the
/// raw path or query, which carry ids and may carry tokens). Installed around the whole
/// router, so 401s, 404s and our own 429s are counted too.
pub async fn track(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = Route(match request.extensions().get::<MatchedPath>() {
        Some(path) => Arc::from(path.as_str()),
        None => Arc::from("unmatched"),
    });
    let method = method_label(request.method());
    let response = next.run(request).await;
    let elapsed = started.elapsed();
    tracing::debug!(
        http.request.method = method,
        http.route = &*route.0,
        http.response.status_code = response.status().as_u16(),
        elapsed_us = elapsed.as_micros() as u64,
        "request"
    );
    state
        .metrics
        .observe(route, method, response.status(), elapsed.as_secs_f64());
    response
}

/// Methods outside the standard set share one label, so the label set stays bounded.
fn method_label(method: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// `GET /metrics`.
pub async fn serve(State(state): State<AppState>) -> Response {
    match state.metrics.render() {
        Ok(text) => (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static(
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                ),
            )],
            text,
        )
            .into_response(),
        Err(_) => crate::error::ApiError::Internal("cannot encode metrics".into()).into_response(),
    }
}
