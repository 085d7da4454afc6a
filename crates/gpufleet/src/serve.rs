//! The HTTP(S) listener: accepts connections, terminates TLS when configured, serves the API
//! ([`ApiService`]: inference fast path + axum router) over HTTP/1.1 with bounded header size and read timeouts, passes the peer address to the app
//! (`ConnectInfo`), and on shutdown stops accepting and waits for in-flight requests.
//!
//! A non-loopback address without TLS is refused unless `insecure_http` says a proxy in front
//! terminates TLS.

use anyhow::{bail, Result};
use axum::extract::ConnectInfo;
use gpufleet_api::ApiService;
use gpufleet_runtime::Shutdown;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;
use tracing::{debug, warn};

/// Largest request head (request line + headers) accepted.
const MAX_HEAD_BYTES: usize = 64 * 1024;

/// Refuses a plain-HTTP listener on a non-loopback address unless explicitly allowed.
pub fn check_plain_http(addr: SocketAddr, tls: bool, insecure_http: bool) -> Result<()> {
    if !tls && !addr.ip().is_loopback() && !insecure_http {
        bail!(
            "refusing to serve plain HTTP on {addr}: API keys would cross the network in clear text. \
             Pass --tls-cert and --tls-key (`gpufleet certs generate` makes a self-signed pair), \
             or --insecure-http if a proxy in front of gpufleet terminates TLS"
        );
    }
    Ok(())
}

/// Serves until `shutdown` fires, then drains in-flight connections for at most `grace`.
pub async fn serve(listener: TcpListener, app: ApiService, tls: Option<Arc<tokio_rustls::rustls::ServerConfig>>, shutdown: Shutdown, grace: Duration) {
    let acceptor = tls.map(TlsAcceptor::from);
    let graceful = GracefulShutdown::new();
    loop {
        let (stream, peer) = tokio::select! {
            _ = shutdown.wait() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(error) => {
                    warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        // Answers and SSE chunks leave at once (as nginx's `tcp_nodelay on`): Nagle would hold a
        // small chunk back until the client's delayed ACK.
        if let Err(error) = stream.set_nodelay(true) {
            debug!(%error, %peer, "TCP_NODELAY not set");
        }
        let svc = app.clone().map_request(move |mut req: hyper::Request<hyper::body::Incoming>| {
            req.extensions_mut().insert(ConnectInfo(peer));
            req
        });
        let svc = hyper_util::service::TowerToHyperService::new(svc);
        let mut http = hyper::server::conn::http1::Builder::new();
        http.timer(TokioTimer::new()).header_read_timeout(Duration::from_secs(15)).max_buf_size(MAX_HEAD_BYTES);
        match &acceptor {
            None => {
                let conn = graceful.watch(http.serve_connection(TokioIo::new(stream), svc));
                tokio::spawn(async move {
                    if let Err(error) = conn.await {
                        debug!(%error, %peer, "connection ended with an error");
                    }
                });
            }
            Some(acceptor) => {
                // The TLS handshake runs in the connection task so a slow client cannot stall accept.
                let acceptor = acceptor.clone();
                let watcher = graceful.watcher();
                tokio::spawn(async move {
                    let tls = match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream)).await {
                        Ok(Ok(s)) => s,
                        Ok(Err(error)) => return debug!(%error, %peer, "TLS handshake failed"),
                        Err(_) => return debug!(%peer, "TLS handshake timed out"),
                    };
                    if let Err(error) = watcher.watch(http.serve_connection(TokioIo::new(tls), svc)).await {
                        debug!(%error, %peer, "connection ended with an error");
                    }
                });
            }
        }
    }
    drop(listener);
    if tokio::time::timeout(grace, graceful.shutdown()).await.is_err() {
        warn!(?grace, "in-flight requests did not finish in time");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_http_only_on_loopback_unless_told() {
        assert!(check_plain_http("127.0.0.1:8080".parse().unwrap(), false, false).is_ok());
        assert!(check_plain_http("[::1]:8080".parse().unwrap(), false, false).is_ok());
        let e = check_plain_http("0.0.0.0:8080".parse().unwrap(), false, false).unwrap_err();
        assert!(e.to_string().contains("--insecure-http"));
        assert!(check_plain_http("0.0.0.0:8080".parse().unwrap(), true, false).is_ok());
        assert!(check_plain_http("0.0.0.0:8080".parse().unwrap(), false, true).is_ok());
    }
}
