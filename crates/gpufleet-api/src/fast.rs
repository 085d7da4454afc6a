//! The inference fast path: [`ApiService`], the service the listener serves. The three inference
//! calls (`POST /v1/chat/completions`, `/v1/completions`, `/v1/embeddings`) go straight to the
//! gateway; every other request goes through the axum router of [`crate::routes::app`].
//!
//! Why: the gateway's whole job is a few microseconds of routing, and the router's generic layers
//! (tower-http trace, two `from_fn` middlewares, route matching, matched-path string, state clone,
//! extractors cloning the header map) cost more than the gateway itself — about 14 µs of the
//! ~44 µs CPU a proxied request cost (profile in docs/benchmarks.md). The fast path does the same
//! checks in one function: the request id, the route's guard from the one table
//! ([`crate::routes::ROUTES`]: allowlist, rate limits, API key, permission, refusals audited by the
//! `AuthService`), the caller's allowed models, and the security headers on the answer. Inference
//! calls are not audited on either path ([`crate::routes::audited`]). A method other than POST on
//! these paths, and every other route, takes the router (405, 404, …).

use crate::auth::{auth_error, request_id, secure};
use crate::routes::{guard_of, Guard};
use crate::state::AppState;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{header, Method, Request};
use axum::response::Response;
use axum::{BoxError, Router};
use bytes::Bytes;
use gpufleet_auth::{AccessRequest, AuthError, AuthService, LimitClass, Permission, ProvenKey};
use gpufleet_gateway::{CallerModels, Endpoint, Gateway};
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use crate::lane::Handoff;
use gpufleet_runtime::Shutdown;
use tokio::net::TcpStream;

/// The inference routes served without the router, with their gateway endpoint.
pub(crate) const FAST_ROUTES: [(&str, Endpoint); 3] = [
    ("/v1/chat/completions", Endpoint::Chat),
    ("/v1/completions", Endpoint::Completions),
    ("/v1/embeddings", Endpoint::Embeddings),
];

/// What the fast path needs, resolved once.
pub(crate) struct Fast {
    pub(crate) gateway: Arc<Gateway>,
    pub(crate) auth: Option<Arc<AuthService>>,
    /// The guard of each of [`FAST_ROUTES`], from the route table.
    pub(crate) guards: [FastGuard; 3],
    /// Requests the lane served, and connections it handed to hyper.
    pub(crate) lane_served: AtomicU64,
    pub(crate) lane_handoffs: AtomicU64,
}

/// A fast route's guard.
#[derive(Clone, Copy)]
pub(crate) enum FastGuard {
    /// Public in the table: no key asked.
    Open,
    /// Key with this permission, rate limits of this class.
    Need(Permission, LimitClass),
    /// Not declared in the table: left to the router, which refuses it.
    Router,
}

/// The whole HTTP application: the inference fast path in front of the router.
#[derive(Clone)]
pub struct ApiService {
    router: Router,
    fast: Option<Arc<Fast>>,
}

impl ApiService {
    /// The application for `state` (the fast path exists when a gateway is configured).
    pub fn new(state: AppState) -> Self {
        let fast = state.gateway.clone().map(|gateway| {
            let guards = FAST_ROUTES.map(|(path, _)| match guard_of("POST", path) {
                Some(Guard::Need(p, c)) => FastGuard::Need(p, c),
                Some(Guard::Public) => FastGuard::Open,
                _ => FastGuard::Router,
            });
            Arc::new(Fast { gateway, auth: state.auth.clone(), guards, lane_served: AtomicU64::new(0), lane_handoffs: AtomicU64::new(0) })
        });
        Self { router: crate::routes::app(state), fast }
    }
}

impl ApiService {
    /// Serves a plain-TCP connection on the inference lane ([`crate::lane`]) until it closes
    /// (`None`) or sends a request the lane leaves to hyper: then the connection and what was
    /// read of it are returned, to be served by hyper with this service. Without a gateway every
    /// connection is handed over at once.
    pub async fn serve_lane(&self, io: TcpStream, peer: SocketAddr, shutdown: &Shutdown) -> Option<Handoff> {
        match &self.fast {
            Some(fast) => crate::lane::serve(fast, io, peer, shutdown, crate::lane::TIMEOUTS).await,
            None => Some(Handoff::new(io)),
        }
    }

    /// [`Self::serve_lane`] with other timeouts.
    #[cfg(test)]
    pub(crate) async fn serve_lane_with(&self, io: TcpStream, peer: SocketAddr, shutdown: &Shutdown, timeouts: crate::lane::Timeouts) -> Option<Handoff> {
        crate::lane::serve(self.fast.as_ref()?, io, peer, shutdown, timeouts).await
    }

    /// Whether there is an inference lane (a gateway is configured).
    pub fn has_lane(&self) -> bool {
        self.fast.is_some()
    }

    /// Requests the inference lane served, and connections it handed to hyper, so far.
    pub fn lane_counts(&self) -> (u64, u64) {
        self.fast.as_ref().map_or((0, 0), |f| (f.lane_served.load(Ordering::Relaxed), f.lane_handoffs.load(Ordering::Relaxed)))
    }
}

type BoxFuture = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

impl<B> tower::Service<Request<B>> for ApiService
where
    B: axum::body::HttpBody<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = BoxFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        if let Some(fast) = &self.fast {
            if req.method() == Method::POST {
                let path = req.uri().path();
                let hit = FAST_ROUTES.iter().position(|(p, _)| *p == path);
                if let Some(i) = hit.filter(|&i| !matches!(fast.guards[i], FastGuard::Router)) {
                    let fast = fast.clone();
                    return Box::pin(async move { Ok(inference(&fast, i, req.map(Body::new)).await) });
                }
            }
        }
        let mut router = self.router.clone();
        Box::pin(async move { tower::Service::call(&mut router, req).await })
    }
}

/// What a request brings to the inference guard.
pub(crate) struct Caller<'a> {
    pub(crate) peer: SocketAddr,
    pub(crate) x_forwarded_for: Option<&'a str>,
    /// `Authorization`, else `X-Api-Key`.
    pub(crate) credential: Option<&'a [u8]>,
    pub(crate) request_id: &'a str,
}

impl Fast {
    /// The route's guard (both the fast path and the lane run it): the models the caller may
    /// use, or the refusal (audited by the `AuthService`). `proven` is the connection's last
    /// proven key, where the server keeps one.
    pub(crate) async fn guard(&self, route: usize, caller: Caller<'_>, proven: Option<&mut ProvenKey>) -> Result<CallerModels, AuthError> {
        let (Some(auth), FastGuard::Need(permission, class)) = (&self.auth, self.guards[route]) else {
            return Ok(CallerModels::default());
        };
        let access_req = AccessRequest {
            peer: caller.peer,
            x_forwarded_for: caller.x_forwarded_for,
            credential: caller.credential,
            class,
            permission,
            method: "POST",
            route: FAST_ROUTES[route].0,
            request_id: Some(caller.request_id),
        };
        // The coarse clock: key expiry needs milliseconds, and this runs on every request.
        let access = auth.check_access_proven(&access_req, gpufleet_runtime::coarse::unix_ms(), proven).await?;
        Ok(CallerModels(access.identity.allowed_models.as_ref().map(|m| m.to_vec())))
    }
}

/// One inference call: guard, gateway, security headers.
async fn inference(fast: &Fast, route: usize, req: Request<Body>) -> Response {
    let (path, endpoint) = FAST_ROUTES[route];
    let id = request_id(&req);
    let started = std::time::Instant::now();
    let headers = req.headers();
    let who = Caller {
        peer: req.extensions().get::<ConnectInfo<SocketAddr>>().map_or(SocketAddr::from(([127, 0, 0, 1], 0)), |c| c.0),
        x_forwarded_for: headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()),
        credential: headers.get(header::AUTHORIZATION).or_else(|| headers.get("x-api-key")).map(|v| v.as_bytes()),
        request_id: &id,
    };
    let caller = match fast.guard(route, who, None).await {
        Ok(c) => c,
        Err(e) => {
            let mut resp = auth_error(&e);
            secure(&mut resp, &id);
            return resp;
        }
    };
    let (parts, body) = req.into_parts();
    let mut resp = fast.gateway.serve(endpoint, &parts.headers, body, &caller).await;
    tracing::debug!(method = "POST", path, status = resp.status().as_u16(), latency_us = started.elapsed().as_micros() as u64, request_id = %id, "inference call");
    secure(&mut resp, &id);
    resp
}
