//! The accept loop: each connection served as HTTP/1.1 by hyper directly.
//!
//! Why not `axum::serve`: it negotiates HTTP/1 or HTTP/2 on every connection, which
//! costs about twice the memory per idle keep-alive connection, and it sets no header
//! read timeout. cigate sits behind a load balancer that terminates TLS (and HTTP/2),
//! so plain HTTP/1.1 with keep-alive is what it is spoken to in; a gateway with 1,000
//! open connections then stays within tens of MiB.
//!
//! Shutdown is graceful: a restart (SIGTERM from an orchestrator) must not cut writes in
//! flight, or their callers never learn whether Buddy ran them.

use std::future::Future;
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tower::ServiceExt;

/// A client must send its request head within this time (slow-loris protection).
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Per-connection read buffer ceiling; it is also the largest request head accepted.
const MAX_BUF_SIZE: usize = 64 * 1024;

/// A listening socket on `addr`, in the current runtime. With `share_port`, other
/// sockets may listen on the same port (`SO_REUSEPORT`, the same user only): one per
/// serving thread, the kernel spreading new connections over them.
pub fn bind(addr: std::net::SocketAddr, share_port: bool) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    // What `TcpListener::bind` does too: a restart binds while old connections linger.
    #[cfg(unix)]
    socket.set_reuseaddr(true)?;
    #[cfg(unix)]
    if share_port {
        socket.set_reuseport(true)?;
    }
    #[cfg(not(unix))]
    let _ = share_port;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Connections the kernel queues before they are accepted (as `TcpListener::bind`).
const LISTEN_BACKLOG: u32 = 1024;

/// Where the server is in its life; connections watch it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Phase {
    Serving,
    /// Finish the request in flight, then close (no keep-alive).
    Draining,
    /// The grace period is over: drop whatever is still open.
    Cut,
}

/// Serves `app` on `listener` until `shutdown` completes; then stops accepting, lets
/// every open connection finish its request in flight within `grace` (idle keep-alive
/// connections close at once), cuts what is left (long streams) and returns.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    shutdown: impl Future<Output = ()>,
    grace: Duration,
) -> std::io::Result<()> {
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_buf_size(MAX_BUF_SIZE)
        .keep_alive(true);
    let (phase, watcher) = watch::channel(Phase::Serving);
    // Every connection task holds a sender; `recv` yields `None` once all have ended.
    let (open, mut all_closed) = mpsc::channel::<()>(1);
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(err) => {
                    accept_failed(&err).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // Responses are written whole (head and body in one `writev`), so Nagle only
        // delays them.
        if let Err(err) = stream.set_nodelay(true) {
            tracing::debug!(error = %err, "cannot set TCP_NODELAY");
        }
        let service = TowerToHyperService::new(
            app.clone()
                .map_request(|request: Request<Incoming>| request.map(Body::new)),
        );
        let connection = http
            .serve_connection(TokioIo::new(stream), service)
            .with_upgrades();
        let mut watcher = watcher.clone();
        let open = open.clone();
        tokio::spawn(async move {
            let _open = open;
            tokio::pin!(connection);
            let result = tokio::select! {
                result = connection.as_mut() => result,
                () = reached(&mut watcher, Phase::Draining) => {
                    connection.as_mut().graceful_shutdown();
                    tokio::select! {
                        result = connection.as_mut() => result,
                        () = reached(&mut watcher, Phase::Cut) => return,
                    }
                }
            };
            if let Err(err) = result {
                tracing::debug!(error = %err, "connection ended with an error");
            }
        });
    }
    drop(listener);
    drop(open);
    phase.send_replace(Phase::Draining);
    tracing::info!(grace = ?grace, "no longer accepting; finishing requests in flight");
    if tokio::time::timeout(grace, all_closed.recv())
        .await
        .is_err()
    {
        tracing::warn!("grace period over; closing the connections still open");
        phase.send_replace(Phase::Cut);
        // The cut connections drop their handlers at once.
        let _ = all_closed.recv().await;
    }
    Ok(())
}

/// Waits until the server reaches `phase` (or is gone, which counts as cut).
async fn reached(watcher: &mut watch::Receiver<Phase>, phase: Phase) {
    // The guard `wait_for` returns is dropped here, before the caller acts.
    let _ = watcher.wait_for(|p| *p >= phase).await;
}

/// A failed `accept` is about one connection (reset before it was taken) or about the
/// process (out of file descriptors). The latter would fail again at once, so the loop
/// pauses briefly instead of spinning; the listener itself stays usable either way.
async fn accept_failed(err: &std::io::Error) {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(
        err.kind(),
        ConnectionAborted | ConnectionRefused | ConnectionReset
    ) {
        return;
    }
    tracing::warn!(error = %err, "accept failed; pausing before the next one");
    tokio::time::sleep(Duration::from_millis(100)).await;
}
