#![recursion_limit = "256"]
//! cigate-buddy-sim: a Buddy.Works REST API simulator (axum), faithful enough that
//! connectors and tests written against Buddy's documentation run against it.

mod auth;
mod clock;
mod config;
mod control;
mod error;
mod executions;
mod faults;
mod listener;
mod oauth;
mod prng;
mod ratelimit;
mod render;
mod routes;
mod seed;
mod sim;
mod state;
mod transport;
mod webhooks;

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Duration as StdDuration;

use axum::routing::{get, post};
use axum::Router;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use auth::{TokenSpec, ALL_SCOPES};
pub use config::{
    RateLimitPolicy, RateLimitSpec, RateLimitStatus, ResetFormat, SeedSpec, SimConfig, SpecError,
    TimeMode, WindowStart,
};
pub use error::SimError;
pub use faults::{FaultKind, FaultSpec};
pub use sim::{RunRequest, Sim};

/// A running simulator bound to a local port.
pub struct SimHandle {
    addr: SocketAddr,
    sim: Sim,
    shutdown: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl SimHandle {
    /// API base URL, e.g. `http://127.0.0.1:41234` (+ base path).
    pub fn base_url(&self) -> String {
        self.sim.urls().api
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn sim(&self) -> Sim {
        self.sim.clone()
    }

    pub async fn shutdown(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        let _ = (&mut self.task).await;
    }
}

/// Binds (port 0 allowed), spawns the server and returns once it accepts connections.
pub async fn start(config: SimConfig) -> Result<SimHandle, SimError> {
    let listen = config.listen;
    let tcp = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|source| SimError::Bind {
            addr: listen,
            source,
        })?;
    let addr = tcp.local_addr().map_err(|source| SimError::Bind {
        addr: listen,
        source,
    })?;
    let sim = Sim::new(config);
    sim.set_origin(&format!("http://{addr}"));
    let app = router(sim.clone());
    let (tx, rx) = oneshot::channel::<()>();
    let listener = listener::SimListener(tcp);
    let task = tokio::spawn(async move {
        let server = axum::serve(
            listener,
            app.into_make_service_with_connect_info::<listener::ConnHandle>(),
        )
        .with_graceful_shutdown(async {
            let _ = rx.await;
        });
        if let Err(e) = server.await {
            tracing::error!("simulator server stopped: {e}");
        }
    });
    Ok(SimHandle {
        addr,
        sim,
        shutdown: Some(tx),
        task,
    })
}

/// The full application (Buddy API under the base path, `/__sim` at the root).
/// Starts the background ticker and webhook sender on the current Tokio runtime.
pub fn router(sim: Sim) -> Router {
    start_background(&sim);
    let api = routes::api_router()
        .route("/oauth2/authorize", get(oauth::authorize))
        .route("/oauth2/token", post(oauth::token))
        .layer(axum::middleware::from_fn_with_state(
            sim.clone(),
            transport::rate_limit,
        ));
    let base = sim.config().normalized_base_path();
    let api = if base.is_empty() {
        api
    } else {
        Router::new().nest(&base, api)
    };
    api.merge(control::router())
        .fallback(|| async { error::SimError::NotFound("Not found".into()) })
        .layer(axum::middleware::from_fn_with_state(
            sim.clone(),
            transport::count_and_fault,
        ))
        .with_state(sim)
}

fn start_background(sim: &Sim) {
    let Ok(rt) = tokio::runtime::Handle::try_current() else {
        return;
    };
    if sim.inner.background_started.swap(true, Ordering::SeqCst) {
        return;
    }
    if let Some(rx) = sim.inner.deliveries_rx.lock().take() {
        rt.spawn(webhooks::run_deliveries(sim.clone(), rx));
    }
    if sim.config().time == TimeMode::Real {
        let weak = std::sync::Arc::downgrade(&sim.inner);
        rt.spawn(async move {
            let mut interval = tokio::time::interval(StdDuration::from_millis(250));
            loop {
                interval.tick().await;
                match weak.upgrade() {
                    Some(inner) => Sim { inner }.tick(),
                    None => break,
                }
            }
        });
    }
}
