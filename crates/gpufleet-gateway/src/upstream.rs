//! [`Upstream`]: the HTTP client on the proxy's hot path. Plain-`http://` backends (llama.cpp,
//! Ollama, vLLM on the LAN) go through [`h1::H1Target`]: a minimal HTTP/1.1 client driven by the
//! request's own task (see its module for why). `https://` backends (`kind = "openai"` in the
//! cloud) go through hyper-util's pooled client under rustls with the ring provider and the
//! Mozilla roots of `webpki-roots` (the roots reqwest used; `hyper-rustls` and `webpki-roots`
//! were already built as reqwest's internals, so TLS costs no new dependency).
//!
//! Everything that can be decided once per backend is decided at start ([`Target`]): the
//! request heads (plain) or absolute URIs (TLS) of each OpenAI endpoint, the `Host` header, the
//! `Authorization` header (the backend's API key, or the user and password of its URL). A request
//! then costs no URL parsing and no string formatting.
//!
//! Both clients close a connection whose answer body is dropped before its end, so a client that
//! goes away cancels the work upstream. The health/capacity probe keeps using reqwest
//! (`Gateway::client`): it runs a few times a second, not per request.

use crate::config::{BackendSettings, GatewaySettings};
use crate::proxy::Endpoint;
use axum::http::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HOST};
use axum::http::{HeaderValue, Method, Request, Uri};
use axum::http::StatusCode;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::{Body as _, Incoming};
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use percent_encoding::percent_decode_str;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use thiserror::Error;
use tokio_rustls::rustls;

mod h1;

pub(crate) use h1::decimal;
use h1::{H1Body, H1Error, H1Target, IDLE_TIMEOUT};

/// Largest non-streamed answer read whole (an embeddings batch can be tens of MB).
const MAX_ANSWER_BYTES: usize = 256 * 1024 * 1024;

/// An answer on its way: resolves once its head is read.
pub(crate) type PendingAnswer<'a> = Pin<Box<dyn Future<Output = Result<UpResponse, UpFailure>> + Send + 'a>>;

/// A backend's answer, its head read.
#[derive(Debug)]
pub(crate) struct UpResponse {
    pub(crate) status: StatusCode,
    pub(crate) content_type: Option<HeaderValue>,
    pub(crate) body: UpstreamBody,
}

/// The body of a backend's answer, read as it arrives.
#[derive(Debug)]
pub(crate) enum UpstreamBody {
    /// From a plain-HTTP backend.
    H1(H1Body),
    /// From an HTTPS backend.
    Hyper(Incoming),
}

/// A request to a backend failed. The message never holds the URL (it may carry credentials).
#[derive(Debug, Error)]
pub(crate) enum UpFailure {
    /// No connection (refused, unreachable, connect timeout, TLS handshake refused).
    #[error("{0}")]
    Connect(String),
    /// The connection failed or the answer was not valid HTTP.
    #[error("{0}")]
    Failed(String),
}

impl UpFailure {
    /// Whether no connection was made.
    pub(crate) fn is_connect(&self) -> bool {
        matches!(self, UpFailure::Connect(_))
    }
}

impl From<H1Error> for UpFailure {
    fn from(e: H1Error) -> Self {
        match e {
            H1Error::Connect(_) => UpFailure::Connect(e.to_string()),
            _ => UpFailure::Failed(e.to_string()),
        }
    }
}

/// An error and its sources, `: `-separated (hyper's own message is only the outermost layer).
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(inner) = cur {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        cur = inner.source();
    }
    s
}

impl UpstreamBody {
    /// The next non-empty piece of data (trailers are skipped); `None` at the end.
    pub(crate) fn poll_data(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, UpFailure>>> {
        match self {
            UpstreamBody::H1(b) => b.poll_data(cx).map(|o| o.map(|r| r.map_err(UpFailure::from))),
            UpstreamBody::Hyper(b) => loop {
                match Pin::new(&mut *b).poll_frame(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(None) => return Poll::Ready(None),
                    Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(UpFailure::Failed(chain(&e))))),
                    Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                        Ok(data) if !data.is_empty() => return Poll::Ready(Some(Ok(data))),
                        _ => continue,
                    },
                }
            },
        }
    }

    /// The whole body when it has already arrived complete (the common small answer), without
    /// waiting; `None`: read it with [`Self::collect`].
    pub(crate) fn try_whole(&mut self) -> Option<Bytes> {
        match self {
            UpstreamBody::H1(b) => b.try_whole(),
            UpstreamBody::Hyper(_) => None,
        }
    }

    /// The whole body.
    pub(crate) async fn collect(self) -> Result<Bytes, UpFailure> {
        match self {
            UpstreamBody::H1(b) => Ok(b.collect(MAX_ANSWER_BYTES).await?),
            UpstreamBody::Hyper(b) => {
                let limited = http_body_util::Limited::new(b, MAX_ANSWER_BYTES);
                limited.collect().await.map(|c| c.to_bytes()).map_err(|e| UpFailure::Failed(chain(&*e)))
            }
        }
    }
}

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
    /// The plain-HTTP client of an `http://` backend (`None`: HTTPS through hyper).
    h1: Option<Arc<H1Target>>,
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
            .map(|b| Target::new(b, settings))
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
    ) -> Option<PendingAnswer<'_>> {
        let t = self.targets.get(backend)?;
        if let Some(h1) = &t.h1 {
            return Some(Box::pin(async move {
                let r = h1.post(endpoint_index(endpoint), &body, stream).await?;
                Ok(UpResponse { status: r.status, content_type: r.content_type, body: UpstreamBody::H1(r.body) })
            }));
        }
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
        let fut = self.client.request(req);
        Some(Box::pin(async move {
            let resp = fut.await.map_err(|e| {
                if e.is_connect() {
                    UpFailure::Connect(chain(&e))
                } else {
                    UpFailure::Failed(chain(&e))
                }
            })?;
            let content_type = resp.headers().get(CONTENT_TYPE).cloned();
            Ok(UpResponse { status: resp.status(), content_type, body: UpstreamBody::Hyper(resp.into_body()) })
        }))
    }

    /// Closes plain-HTTP connections idle for too long (hyper-util reaps its own).
    pub(crate) fn reap_idle(&self) {
        for t in &self.targets {
            if let Some(h1) = &t.h1 {
                h1.reap();
            }
        }
    }
}

impl Target {
    fn new(b: &BackendSettings, settings: &GatewaySettings) -> Result<Self, UpstreamError> {
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
        let connect_to = format!("{host}:{}", url.port_or_known_default().unwrap_or(80));
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
        let host = HeaderValue::try_from(authority.as_str()).map_err(|_| bad("the host is not valid"))?;
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
        let h1 = (url.scheme() == "http").then(|| {
            Arc::new(H1Target::new(
                &connect_to,
                &authority,
                base,
                auth.as_ref(),
                settings.connect_timeout,
                settings.idle_connections_per_backend(),
            ))
        });
        Ok(Self { h1, uris, host, auth })
    }
}

#[cfg(test)]
mod tests;
