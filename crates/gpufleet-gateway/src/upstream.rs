//! [`Upstream`]: the HTTP client on the proxy's hot path — hyper 1 through hyper-util's pooled
//! client (keep-alive pool per backend, idle connections reaped after [`IDLE_TIMEOUT`]), one
//! connector for plain HTTP and HTTPS: `HttpConnector` with `TCP_NODELAY` and the connect
//! timeout, under rustls with the ring provider and the Mozilla roots of `webpki-roots` (the
//! roots reqwest used; `hyper-rustls` and `webpki-roots` were already built as reqwest's
//! internals, so TLS costs no new dependency).
//!
//! Everything that can be decided once per backend is decided at start ([`Target`]): the
//! absolute URI of each OpenAI endpoint, the `Host` header, the `Authorization` header (the
//! backend's API key, or the user and password of its URL). A request then costs no URL parsing
//! and no string formatting: it clones shared values and the body's [`Bytes`] handle.
//!
//! Dropping a response body before its end closes that connection (hyper does not pool it), so
//! a client that goes away cancels the work upstream. The health/capacity probe keeps using
//! reqwest (`Gateway::client`): it runs a few times a second, not per request.
//!
//! Tried and not kept: driving each connection from the request's own task (no connection task,
//! no channel hand-offs) measured the same requests/s and CPU per request as this pooled client
//! on the benchmark (see `docs/benchmarks.md`), for 220 more lines and no background reaping.

use crate::config::{BackendSettings, GatewaySettings};
use crate::proxy::Endpoint;
use axum::http::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HOST};
use axum::http::{HeaderValue, Method, Request, Uri};
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::{Client, ResponseFuture};
use hyper_util::rt::{TokioExecutor, TokioTimer};
use percent_encoding::percent_decode_str;
use std::time::Duration;
use thiserror::Error;
use tokio_rustls::rustls;

/// The body of a backend's answer, read as it arrives.
pub(crate) type UpstreamBody = Incoming;

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

/// What is sent to one backend, prepared at start.
#[derive(Debug)]
struct Target {
    /// Absolute URIs of chat, completions and embeddings, in [`Endpoint`] order.
    uris: [Uri; 3],
    /// `host[:port]` as hyper would write it.
    host: HeaderValue,
    /// `Bearer <api_key>`, or `Basic …` from the URL's user info; marked sensitive.
    auth: Option<HeaderValue>,
}

/// The pooled upstream client with one prepared [`Target`] per backend (config order).
pub(crate) struct Upstream {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
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
        let per_host = settings.idle_connections_per_backend();
        let client = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(per_host)
            .pool_idle_timeout(IDLE_TIMEOUT)
            .pool_timer(TokioTimer::new())
            .build(connector);
        Ok(Self { client, targets })
    }

    /// Starts `POST <backend><endpoint>` with `body`; `stream` asks for `text/event-stream`.
    /// `backend` is the backend's index in the settings (`Backend::idx`).
    pub(crate) fn post(
        &self,
        backend: usize,
        endpoint: Endpoint,
        body: Bytes,
        stream: bool,
    ) -> Option<ResponseFuture> {
        let t = self.targets.get(backend)?;
        let mut req = Request::new(Full::new(body));
        *req.method_mut() = Method::POST;
        *req.uri_mut() = t.uris[endpoint_index(endpoint)].clone();
        let h = req.headers_mut();
        h.insert(HOST, t.host.clone());
        h.insert(CONTENT_TYPE, JSON);
        if let Some(auth) = &t.auth {
            h.insert(AUTHORIZATION, auth.clone());
        }
        if stream {
            h.insert(ACCEPT, EVENT_STREAM);
        }
        Some(self.client.request(req))
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
        let uri = |e: Endpoint| {
            Uri::try_from(format!("{}://{authority}{base}{}", url.scheme(), e.path()))
                .map_err(|_| bad("the url is not a valid HTTP URI"))
        };
        let uris = [
            uri(Endpoint::Chat)?,
            uri(Endpoint::Completions)?,
            uri(Endpoint::Embeddings)?,
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
        Ok(Self { uris, host, auth })
    }
}

#[cfg(test)]
mod tests;
