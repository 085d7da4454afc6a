//! [`MockBackend`] (the axum router of one simulated server) and the listener loop that serves it.
//!
//! [`serve`] owns every connection task in a `JoinSet`: when its shutdown future resolves, all
//! open connections are dropped at once, which is what clients of a killed `llama-server` see.
//! [`MockServer`] runs that loop on `127.0.0.1:0` for tests and benchmarks and stops it on drop.

use crate::state::Shared;
use crate::{completions, info, MockConfig, MockHandle};
use axum::routing::{get, post};
use axum::Router;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use std::future::Future;
use std::net::SocketAddr;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::{JoinHandle, JoinSet};
use tracing::debug;

/// One simulated llama.cpp server: its routes and its run-time handle.
#[derive(Clone, Debug)]
pub struct MockBackend {
    handle: MockHandle,
}

impl MockBackend {
    /// A server with these settings; its loading period starts now.
    pub fn new(config: MockConfig) -> Self {
        Self {
            handle: MockHandle {
                shared: Shared::new(config),
            },
        }
    }

    /// The run-time control of this server.
    pub fn handle(&self) -> MockHandle {
        self.handle.clone()
    }

    /// The routes, for `oneshot` tests or any axum server.
    pub fn router(&self) -> Router {
        Router::new()
            .route("/v1/chat/completions", post(completions::chat))
            .route("/v1/completions", post(completions::text))
            .route("/v1/embeddings", post(completions::embeddings))
            .route("/v1/models", get(info::models))
            .route("/health", get(info::health))
            .route("/slots", get(info::slots))
            .route("/metrics", get(info::metrics))
            .with_state(self.handle.shared.clone())
    }
}

impl MockBackend {
    /// Serves this backend on `listener` until `shutdown` resolves (keep a [`MockBackend::handle`]
    /// first to act on [`MockHandle::crash_requested`]).
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()>,
    ) -> std::io::Result<()> {
        serve_router(listener, self.router(), shutdown).await
    }
}

/// Serves a mock backend with `config` on `listener` until `shutdown` resolves, then drops every
/// open connection.
pub async fn serve(
    listener: TcpListener,
    config: MockConfig,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    serve_router(listener, MockBackend::new(config).router(), shutdown).await
}

pub(crate) async fn serve_router(
    listener: TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let mut conns = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => {
                let (stream, _) = match accepted {
                    Ok(x) => x,
                    Err(error) => {
                        // Out of descriptors or a reset before accept: keep serving the others.
                        debug!(%error, "accept failed");
                        tokio::task::yield_now().await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let svc = TowerToHyperService::new(router.clone());
                conns.spawn(async move {
                    let builder = hyper::server::conn::http1::Builder::new();
                    let _ = builder.serve_connection(TokioIo::new(stream), svc).await;
                });
            }
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
    conns.abort_all();
    Ok(())
}

/// A mock backend serving on `127.0.0.1:0` in this runtime; stopped (connections dropped) by
/// [`MockServer::stop`] or on drop.
#[derive(Debug)]
pub struct MockServer {
    addr: SocketAddr,
    handle: MockHandle,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<std::io::Result<()>>,
}

impl MockServer {
    /// Binds `127.0.0.1:0` and starts serving.
    pub async fn start(config: MockConfig) -> std::io::Result<Self> {
        Self::start_on(TcpListener::bind(("127.0.0.1", 0)).await?, config)
    }

    /// Starts serving on an already bound listener (to restart on a known port).
    pub fn start_on(listener: TcpListener, config: MockConfig) -> std::io::Result<Self> {
        let addr = listener.local_addr()?;
        let backend = MockBackend::new(config);
        let handle = backend.handle();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(serve_router(listener, backend.router(), async {
            let _ = stopped.await;
        }));
        Ok(Self {
            addr,
            handle,
            stop: Some(stop),
            task,
        })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Run-time control.
    pub fn handle(&self) -> &MockHandle {
        &self.handle
    }

    /// Stops accepting, drops every open connection and waits until the port is released.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = (&mut self.task).await;
    }
}

impl Drop for MockServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}
