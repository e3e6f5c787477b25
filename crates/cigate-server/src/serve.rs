//! The accept loop: each connection served as HTTP/1.1 by hyper directly.
//!
//! Why not `axum::serve`: it negotiates HTTP/1 or HTTP/2 on every connection, which
//! costs about twice the memory per idle keep-alive connection, and it sets no header
//! read timeout. cigate sits behind a load balancer that terminates TLS (and HTTP/2),
//! so plain HTTP/1.1 with keep-alive is what it is spoken to in; a gateway with 1,000
//! open connections then stays within tens of MiB.

use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tower::ServiceExt;

/// A client must send its request head within this time (slow-loris protection).
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Per-connection read buffer ceiling; it is also the largest request head accepted.
const MAX_BUF_SIZE: usize = 64 * 1024;

/// Serves `app` on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, app: Router) -> std::io::Result<()> {
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_buf_size(MAX_BUF_SIZE)
        .keep_alive(true);
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(err) => {
                accept_failed(&err).await;
                continue;
            }
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
        tokio::spawn(async move {
            if let Err(err) = connection.await {
                tracing::debug!(error = %err, "connection ended with an error");
            }
        });
    }
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
