//! [`Upstream`]: the HTTP client on the proxy's hot path — hyper 1 HTTP/1 connections, plain
//! or TLS (rustls with the ring provider and the Mozilla roots of `webpki-roots`, the roots
//! reqwest used), `TCP_NODELAY` on, kept alive in a per-backend pool and driven by the request
//! that uses them, not by a task of their own ([`conn`] says why).
//!
//! Everything that can be decided once per backend is decided at start ([`Target`]): the
//! origin-form URI of each OpenAI endpoint, the `Host` header, the `Authorization` header (the
//! backend's API key, or the user and password of its URL). A request then costs no URL parsing
//! and no string formatting: it clones shared values and the body's [`Bytes`] handle.
//!
//! A request that finds its pooled connection closed by the backend before it was written
//! takes the next one (or a new one); every other failure is the caller's to judge (retry,
//! breaker). The health/capacity probe keeps using reqwest (`Gateway::client`): it runs a few
//! times a second, not per request.

mod conn;

use crate::config::{BackendSettings, GatewaySettings};
use crate::proxy::Endpoint;
use axum::http::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HOST};
use axum::http::{response, HeaderValue, Method, Request, Uri};
use bytes::Bytes;
pub(crate) use conn::BodyReader;
use conn::{Conn, IdlePool};
use http_body_util::Full;
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use percent_encoding::percent_decode_str;
use std::sync::Arc;
use std::time::Duration;
use thiserror::Error;
use tokio_rustls::rustls;
use tower::ServiceExt;

/// How long an idle upstream connection is kept.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

const JSON: HeaderValue = HeaderValue::from_static("application/json");
const EVENT_STREAM: HeaderValue = HeaderValue::from_static("text/event-stream");

/// The client could not be built.
#[derive(Debug, Error)]
pub(crate) enum UpstreamError {
    /// A backend URL that validated as a URL is not usable as an HTTP URI.
    #[error("backend {backend}: {what}")]
    Url {
        /// The backend's name.
        backend: String,
        /// What is wrong (never the URL itself: it may carry credentials).
        what: String,
    },
    /// The TLS configuration was refused.
    #[error("tls setup: {0}")]
    Tls(#[from] rustls::Error),
}

/// A request that got no response head. Messages hold no URL (it may carry credentials).
#[derive(Debug, Error)]
#[error("{message}")]
pub(crate) struct SendError {
    /// No connection could be made (TCP, TLS, connect timeout): the request was not sent.
    pub(crate) connect: bool,
    /// What happened, with its causes.
    pub(crate) message: String,
}

impl SendError {
    fn connect(message: String) -> Self {
        Self {
            connect: true,
            message,
        }
    }
}

/// What is sent to one backend, prepared at start, and its idle connections.
struct Target {
    /// `scheme://authority`, what the connector dials.
    origin: Uri,
    /// Origin-form URIs (path only) of chat, completions and embeddings, in [`Endpoint`] order.
    paths: [Uri; 3],
    /// `host[:port]` as a client writes it (no port when it is the scheme's default).
    host: HeaderValue,
    /// `Bearer <api_key>`, or `Basic …` from the URL's user info; marked sensitive.
    auth: Option<HeaderValue>,
    pool: Arc<IdlePool>,
}

/// The upstream client with one prepared [`Target`] per backend (config order).
pub(crate) struct Upstream {
    connector: HttpsConnector<HttpConnector>,
    connect_timeout: Duration,
    targets: Vec<Target>,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream")
            .field("backends", &self.targets.len())
            .finish_non_exhaustive()
    }
}

fn endpoint_index(e: Endpoint) -> usize {
    match e {
        Endpoint::Chat => 0,
        Endpoint::Completions => 1,
        Endpoint::Embeddings => 2,
    }
}

/// An error and its sources, `: `-separated (hyper's own message is only the outermost layer).
pub(crate) fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(inner) = cur {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        cur = inner.source();
    }
    s
}

impl Upstream {
    /// The client for `settings.backends`, trusting the Mozilla root certificates.
    pub(crate) fn new(settings: &GatewaySettings) -> Result<Self, UpstreamError> {
        let tls = rustls::ClientConfig::builder_with_provider(
            rustls::crypto::ring::default_provider().into(),
        )
        .with_safe_default_protocol_versions()?
        .with_root_certificates(rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        })
        .with_no_client_auth();
        Self::with_tls(settings, tls)
    }

    /// The client with a given TLS configuration (tests trust their own CA with it).
    pub(crate) fn with_tls(
        settings: &GatewaySettings,
        tls: rustls::ClientConfig,
    ) -> Result<Self, UpstreamError> {
        let targets = settings
            .backends
            .iter()
            .map(Target::new)
            .collect::<Result<Vec<_>, _>>()?;
        let mut http = HttpConnector::new();
        http.enforce_http(false); // the TLS layer above handles https://
        http.set_nodelay(true);
        http.set_connect_timeout(Some(settings.connect_timeout));
        let connector = HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        Ok(Self {
            connector,
            connect_timeout: settings.connect_timeout,
            targets,
        })
    }

    /// `POST <backend><endpoint>` with `body` (`stream` asks for `text/event-stream`): the
    /// response head and a reader of its body. `backend` is the backend's index in the settings
    /// (`Backend::idx`).
    pub(crate) async fn post(
        &self,
        backend: usize,
        endpoint: Endpoint,
        body: Bytes,
        stream: bool,
    ) -> Result<(response::Parts, BodyReader), SendError> {
        let t = self.targets.get(backend).ok_or_else(|| SendError {
            connect: true,
            message: format!("no upstream target #{backend}"),
        })?;
        let mut req = Request::new(Full::new(body));
        *req.method_mut() = Method::POST;
        *req.uri_mut() = t.paths[endpoint_index(endpoint)].clone();
        let h = req.headers_mut();
        h.insert(HOST, t.host.clone());
        h.insert(CONTENT_TYPE, JSON);
        if let Some(auth) = &t.auth {
            h.insert(AUTHORIZATION, auth.clone());
        }
        if stream {
            h.insert(ACCEPT, EVENT_STREAM);
        }
        // Bounded: every turn either uses up an idle connection or ends (a new one).
        loop {
            let mut conn = match t.pool.take() {
                Some(c) => c,
                None => self.connect(t).await?,
            };
            if let Err(e) = conn.ready().await {
                if conn.reused {
                    continue; // closed while idle
                }
                return Err(SendError::connect(chain(&e)));
            }
            match conn.send(req).await {
                Ok(resp) => {
                    let (parts, body) = resp.into_parts();
                    return Ok((parts, BodyReader::new(body, conn, t.pool.clone())));
                }
                // Never written on a kept-alive connection the backend had closed: next one.
                Err((_, Some(back))) if conn.reused => req = back,
                Err((e, _)) => {
                    return Err(SendError {
                        connect: false,
                        message: chain(&e),
                    })
                }
            }
        }
    }

    async fn connect(&self, t: &Target) -> Result<Conn, SendError> {
        let dial = self.connector.clone().oneshot(t.origin.clone());
        let io = match tokio::time::timeout(self.connect_timeout, dial).await {
            Err(_) => return Err(SendError::connect("connect timed out".to_owned())),
            Ok(Err(e)) => return Err(SendError::connect(chain(&*e))),
            Ok(Ok(io)) => io,
        };
        let (send, conn) = hyper::client::conn::http1::handshake(io)
            .await
            .map_err(|e| SendError::connect(chain(&e)))?;
        Ok(Conn::new(send, conn))
    }

    /// Idle connections to a backend (tests).
    #[cfg(test)]
    fn idle(&self, backend: usize) -> usize {
        self.targets[backend].pool.len()
    }
}

impl Target {
    fn new(b: &BackendSettings) -> Result<Self, UpstreamError> {
        let bad = |what: &str| UpstreamError::Url {
            backend: b.name.clone(),
            what: what.to_owned(),
        };
        let url = reqwest::Url::parse(&b.url).map_err(|_| bad("the url does not parse"))?;
        let host = url.host_str().ok_or_else(|| bad("the url has no host"))?;
        // `Url::port` is `None` for the scheme's default port, as hyper writes `Host`.
        let authority = match url.port() {
            Some(p) => format!("{host}:{p}"),
            None => host.to_owned(),
        };
        let base = url.path().trim_end_matches('/');
        let origin = Uri::try_from(format!("{}://{authority}", url.scheme()))
            .map_err(|_| bad("the url is not a valid HTTP URI"))?;
        let path = |e: Endpoint| {
            Uri::try_from(format!("{base}{}", e.path()))
                .map_err(|_| bad("the url's path is not a valid HTTP path"))
        };
        let paths = [
            path(Endpoint::Chat)?,
            path(Endpoint::Completions)?,
            path(Endpoint::Embeddings)?,
        ];
        let host = HeaderValue::try_from(authority).map_err(|_| bad("the host is not valid"))?;
        let auth = match (&b.api_key, url.username()) {
            (Some(key), _) => Some(format!("Bearer {}", key.0)),
            (None, "") => None,
            (None, user) => {
                use base64::Engine;
                let user = percent_decode_str(user).decode_utf8_lossy();
                let pass = url.password().unwrap_or_default();
                let raw = format!("{user}:{}", percent_decode_str(pass).decode_utf8_lossy());
                Some(format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode(raw)
                ))
            }
        };
        let auth = auth
            .map(|a| {
                let mut v = HeaderValue::try_from(a)
                    .map_err(|_| bad("the api key is not a valid header value"))?;
                v.set_sensitive(true);
                Ok::<_, UpstreamError>(v)
            })
            .transpose()?;
        let max_idle = (b.max_concurrency as usize).max(32);
        Ok(Self {
            origin,
            paths,
            host,
            auth,
            pool: Arc::new(IdlePool::new(max_idle, IDLE_TIMEOUT)),
        })
    }
}

#[cfg(test)]
mod tests;
