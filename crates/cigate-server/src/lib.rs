//! The cigate HTTP API: routing, auth, the unified API and its operations endpoints.

use std::net::SocketAddr;
use std::sync::Arc;

use cigate_buddy::client::HttpPool;
use cigate_core::cursor::CursorCodec;
use cigate_store::Store;
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch as signal};
use tokio::task::JoinHandle;

pub mod auth;
pub mod badge;
pub mod cache;
pub mod config;
pub mod delivery;
pub mod envelope;
pub mod error;
pub mod extract;
#[doc(hidden)]
pub mod fuzzing;
pub mod gateway;
pub mod html;
pub mod idempotency;
pub mod limits;
pub mod linking;
pub mod metrics;
pub mod oauth;
pub mod openapi;
pub mod rate_budget;
pub mod refresh;
pub mod request_body;
pub mod routes;
pub mod serve;
pub mod state;
pub mod store;
pub mod ui;
pub mod watch;

pub use config::ServerConfig;
pub use state::AppState;

/// Errors that stop the server from starting.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("store: {0}")]
    Store(#[from] cigate_store::StoreError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("configuration: {0}")]
    Config(String),
    #[error("HTTP client: {0}")]
    Http(String),
}

/// A running server: its address, the task serving it on the caller's runtime, the
/// other serving threads (`workers` > 1), and its background tasks (the token
/// refresher, the webhook delivery worker, the job-event poller, the provider webhook
/// registrar, the event log's housekeeping), stopped with the server.
pub struct RunningServer {
    pub addr: SocketAddr,
    pub state: AppState,
    task: JoinHandle<Result<(), std::io::Error>>,
    workers: Vec<oneshot::Receiver<std::io::Result<()>>>,
    background: Vec<JoinHandle<()>>,
    stop: signal::Sender<Stop>,
}

/// What the server has been told.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Stop {
    Serving,
    /// Stop accepting and finish what is in flight.
    Graceful,
    /// Drop everything at once.
    Abort,
}

/// Resolves once the server is told `at` (or more). Only an explicit call stops the
/// server: dropping the handle does not.
async fn told(mut stop: signal::Receiver<Stop>, at: Stop) {
    if stop.wait_for(|told| *told >= at).await.is_err() {
        std::future::pending::<()>().await;
    }
}

impl RunningServer {
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Serves until the task ends (it does not end on its own).
    pub async fn wait(self) -> Result<(), std::io::Error> {
        match self.task.await {
            Ok(result) => result,
            Err(join) => Err(std::io::Error::other(join.to_string())),
        }
    }

    /// Stops at once: open connections and requests in flight are dropped.
    pub fn abort(&self) {
        self.stop.send_replace(Stop::Abort);
        self.task.abort();
        for task in &self.background {
            task.abort();
        }
    }

    /// Stops gracefully: refuses new connections, lets requests in flight finish within
    /// `shutdown_grace`, cuts what is left, then ends the background tasks. A second
    /// call returns at once.
    pub async fn shutdown(&mut self) -> Result<(), std::io::Error> {
        if *self.stop.borrow() != Stop::Serving {
            return Ok(());
        }
        self.stop.send_replace(Stop::Graceful);
        let mut result = match (&mut self.task).await {
            Ok(result) => result,
            Err(join) => Err(std::io::Error::other(join.to_string())),
        };
        for worker in self.workers.drain(..) {
            let ended = worker
                .await
                .unwrap_or_else(|_| Err(std::io::Error::other("a serving thread panicked")));
            result = result.and(ended);
        }
        for task in &mut self.background {
            task.abort();
            let _ = task.await;
        }
        result
    }
}

/// Builds the shared state from an opened, migrated store.
pub async fn build_state(config: ServerConfig, store: Store) -> Result<AppState, StartError> {
    let http = HttpPool::new(cigate_buddy::base_url::UpstreamPolicy {
        allow_private: config.allow_private_upstreams,
    })
    .map_err(|err| StartError::Http(err.to_string()))?;
    let http = rate_budget::apply(http, config.rate_budget, &store);
    let cursor_key = store.signing_key("cursor").await?;
    let link_key = store.signing_key("link-form").await?;
    let oauth_http = oauth::build_http(cigate_buddy::base_url::UpstreamPolicy {
        allow_private: config.allow_private_upstreams,
    })
    .map_err(StartError::Http)?;
    let badges = badge::Views::new(config.badge_cache_ttl);
    Ok(AppState::new(state::Shared {
        store,
        metrics: Arc::new(metrics::Metrics::new(http.clone())),
        limits: Arc::new(limits::Limits::new(
            config.token_rate_limit,
            config.account_rate_limit,
            config.account_max_in_flight,
        )),
        cache: Arc::new(cache::HotCache::new(std::time::Duration::from_millis(
            config.hot_cache_ms,
        ))),
        http,
        cursors: Arc::new(CursorCodec::new(&cursor_key)),
        config: Arc::new(config),
        oauth_http,
        refresher: Arc::default(),
        link_key: Arc::new(link_key),
        deliveries: Arc::default(),
        watch: Arc::default(),
        badges,
    }))
}

/// Binds and serves in the background; returns once the port is bound. With
/// `workers` > 1, that many sockets share the port (`SO_REUSEPORT`): the first is
/// served on the caller's runtime, each other one by a thread of its own running a
/// single-threaded runtime, so the kernel spreads connections over the threads and
/// each request stays on the thread that accepted it.
pub async fn start(state: AppState) -> Result<RunningServer, StartError> {
    let workers = state.config.worker_count();
    let wanted = state.config.listen;
    let bind_failed = |source| StartError::Bind {
        addr: wanted,
        source,
    };
    let listener = serve::bind(wanted, workers > 1).map_err(bind_failed)?;
    let addr = listener.local_addr().map_err(bind_failed)?;
    let app = routes::router(state.clone());
    let (stop, told_to) = signal::channel(Stop::Serving);
    let grace = state.config.shutdown_grace;
    let mut threads = Vec::with_capacity(workers.saturating_sub(1));
    for index in 1..workers {
        // Same port as the first (which may have been 0).
        let spawned = serve::bind(addr, true)
            .and_then(|listener| listener.into_std())
            .and_then(|listener| {
                spawn_worker(index, listener, app.clone(), told_to.clone(), grace)
            });
        match spawned {
            Ok(thread) => threads.push(thread),
            Err(source) => {
                // The threads already serving stop with the failed start.
                stop.send_replace(Stop::Abort);
                return Err(bind_failed(source));
            }
        }
    }
    let task = tokio::spawn(serve::serve(
        listener,
        app,
        told(told_to, Stop::Graceful),
        grace,
    ));
    let background = vec![
        tokio::spawn(refresh::background(state.clone())),
        tokio::spawn(delivery::background(state.clone())),
        tokio::spawn(watch::poll::background(state.clone())),
        tokio::spawn(watch::hooks::registrar(state.clone())),
        tokio::spawn(watch::housekeeping(state.clone())),
    ];
    Ok(RunningServer {
        addr,
        state,
        task,
        workers: threads,
        background,
        stop,
    })
}

/// A serving thread: its own single-threaded runtime serving `listener` until told to
/// stop; the runtime, and every connection still on it, is dropped with the thread.
fn spawn_worker(
    index: usize,
    listener: std::net::TcpListener,
    app: axum::Router,
    told_to: signal::Receiver<Stop>,
    grace: std::time::Duration,
) -> std::io::Result<oneshot::Receiver<std::io::Result<()>>> {
    let (done, ended) = oneshot::channel();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    std::thread::Builder::new()
        .name(format!("cigate-worker-{index}"))
        .spawn(move || {
            let result = runtime.block_on(async move {
                let listener = TcpListener::from_std(listener)?;
                let graceful = told(told_to.clone(), Stop::Graceful);
                tokio::select! {
                    result = serve::serve(listener, app, graceful, grace) => result,
                    () = told(told_to, Stop::Abort) => Ok(()),
                }
            });
            drop(runtime);
            let _ = done.send(result);
        })?;
    Ok(ended)
}
