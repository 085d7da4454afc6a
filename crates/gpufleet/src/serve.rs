//! The HTTP(S) listener: accepts connections, terminates TLS when configured, serves the API
//! ([`ApiService`]: plain TCP first on the inference lane, then hyper with the inference fast
//! path + axum router) over HTTP/1.1 with bounded header size and read timeouts, passes the peer address to the app
//! (`ConnectInfo`), and on shutdown stops accepting and waits for in-flight requests.
//!
//! A non-loopback address without TLS is refused unless `insecure_http` says a proxy in front
//! terminates TLS.

use anyhow::{bail, Result};
use axum::extract::ConnectInfo;
// The lane's head limits are hyper's too: a head the lane leaves for being too large or slow
// meets the same limits here.
use gpufleet_api::lane::{Handoff, LaneThreads, OnHandoff, Rewind, HEAD_TIMEOUT, MAX_HEAD};
use gpufleet_api::ApiService;
use gpufleet_runtime::Shutdown;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;
use tracing::{debug, warn};

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
/// Plain-TCP connections start on `lane_threads` inference-lane threads (0 = half the cores).
pub async fn serve(listener: TcpListener, app: ApiService, tls: Option<Arc<tokio_rustls::rustls::ServerConfig>>, shutdown: Shutdown, grace: Duration, lane_threads: usize) {
    let acceptor = tls.map(TlsAcceptor::from);
    let graceful = GracefulShutdown::new();
    let lanes = match &acceptor {
        Some(_) => None,
        None if !app.has_lane() => None,
        None => match LaneThreads::start(lane_threads, app.clone(), shutdown.clone(), to_hyper(app.clone())) {
            Ok(l) => Some(l),
            Err(error) => {
                warn!(%error, "inference lane threads not started; hyper serves every connection");
                None
            }
        },
    };
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
        match (&acceptor, &lanes) {
            (None, Some(lanes)) => {
                // Plain TCP starts on the inference lane; the first other request hands the
                // connection (and what was read of it) back here, to hyper. The watcher keeps
                // shutdown waiting for the connection either way.
                if let Err(error) = lanes.submit(stream, peer, graceful.watcher()) {
                    debug!(%error, %peer, "connection not handed to the lane");
                }
            }
            (None, None) => {
                let conn = graceful.watch(http1().serve_connection(TokioIo::new(stream), hyper_service(app.clone(), peer)));
                tokio::spawn(async move {
                    if let Err(error) = conn.await {
                        debug!(%error, %peer, "connection ended with an error");
                    }
                });
            }
            (Some(acceptor), _) => {
                // The TLS handshake runs in the connection task so a slow client cannot stall accept.
                let acceptor = acceptor.clone();
                let watcher = graceful.watcher();
                let app = app.clone();
                tokio::spawn(async move {
                    let tls = match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream)).await {
                        Ok(Ok(s)) => s,
                        Ok(Err(error)) => return debug!(%error, %peer, "TLS handshake failed"),
                        Err(_) => return debug!(%peer, "TLS handshake timed out"),
                    };
                    let conn = http1().serve_connection(TokioIo::new(tls), hyper_service(app, peer));
                    if let Err(error) = watcher.watch(conn).await {
                        debug!(%error, %peer, "connection ended with an error");
                    }
                });
            }
        }
    }
    drop(listener);
    drop(lanes);
    if tokio::time::timeout(grace, graceful.shutdown()).await.is_err() {
        warn!(?grace, "in-flight requests did not finish in time");
    }
}

/// The HTTP/1.1 server settings of every hyper connection.
fn http1() -> hyper::server::conn::http1::Builder {
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new()).header_read_timeout(HEAD_TIMEOUT).max_buf_size(MAX_HEAD);
    http
}

/// Connections the lane hands over are served by hyper on this (the main) runtime.
fn to_hyper(app: ApiService) -> OnHandoff<Watcher> {
    let main = tokio::runtime::Handle::current();
    Arc::new(move |handoff: Handoff, peer: SocketAddr, watcher: Watcher| {
        let (std, read) = match handoff.into_std() {
            Ok(x) => x,
            Err(error) => return debug!(%error, %peer, "handed-over connection lost"),
        };
        let app = app.clone();
        main.spawn(async move {
            let io = match tokio::net::TcpStream::from_std(std) {
                Ok(io) => io,
                Err(error) => return debug!(%error, %peer, "handed-over connection lost"),
            };
            let conn = http1().serve_connection(TokioIo::new(Rewind::new(read, io)), hyper_service(app, peer));
            if let Err(error) = watcher.watch(conn).await {
                debug!(%error, %peer, "connection ended with an error");
            }
        });
    })
}

/// `app` as hyper serves it, with the peer address as `ConnectInfo`.
fn hyper_service(
    app: ApiService,
    peer: SocketAddr,
) -> hyper_util::service::TowerToHyperService<impl tower::Service<hyper::Request<hyper::body::Incoming>, Response = axum::response::Response, Error = std::convert::Infallible, Future: Send> + Clone> {
    let svc = app.map_request(move |mut req: hyper::Request<hyper::body::Incoming>| {
        req.extensions_mut().insert(ConnectInfo(peer));
        req
    });
    hyper_util::service::TowerToHyperService::new(svc)
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
