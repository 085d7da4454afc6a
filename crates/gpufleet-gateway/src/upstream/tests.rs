//! The upstream client against real loopback servers: plain HTTP with the prepared headers, and
//! HTTPS with a test certificate (the TLS path `kind = "openai"` backends on https:// take).

use super::*;
use crate::config::{BackendConfig, BackendKind, GatewayConfig};
use axum::http::Response;
use http_body_util::BodyExt;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

fn settings(url: &str, api_key: Option<&str>) -> GatewaySettings {
    GatewayConfig {
        backends: vec![BackendConfig {
            name: "b0".into(),
            kind: BackendKind::Openai,
            url: url.into(),
            models: vec!["m".into()],
            max_concurrency: 4,
            weight: 1.0,
            api_key: api_key.map(str::to_owned),
            gpus: vec![],
        }],
        ..GatewayConfig::default()
    }
    .validate()
    .unwrap()
}

/// What the test server saw of one request.
#[derive(Debug)]
struct Seen {
    path: String,
    host: Option<String>,
    auth: Option<String>,
    accept: Option<String>,
    body: Bytes,
}

/// Serves every connection accepted on `listener` (optionally through TLS) with a fixed JSON
/// answer, reporting each request on the channel.
fn serve(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
) -> (mpsc::UnboundedReceiver<Seen>, tokio::task::JoinHandle<()>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let tx = tx.clone();
            let tls = tls.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: Request<Incoming>| {
                    let tx = tx.clone();
                    async move {
                        let h = |n| {
                            req.headers()
                                .get(n)
                                .and_then(|v: &HeaderValue| v.to_str().ok())
                                .map(str::to_owned)
                        };
                        let (path, host, auth, accept) = (
                            req.uri().path().to_owned(),
                            h(HOST),
                            h(AUTHORIZATION),
                            h(ACCEPT),
                        );
                        let body = req.into_body().collect().await.unwrap().to_bytes();
                        let _ = tx.send(Seen {
                            path,
                            host,
                            auth,
                            accept,
                            body,
                        });
                        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(
                            br#"{"ok":true}"#,
                        ))))
                    }
                });
                let http = hyper::server::conn::http1::Builder::new();
                let _ = match tls {
                    Some(acceptor) => match acceptor.accept(tcp).await {
                        Ok(s) => http.serve_connection(TokioIo::new(s), svc).await,
                        Err(_) => return,
                    },
                    None => http.serve_connection(TokioIo::new(tcp), svc).await,
                };
            });
        }
    });
    (rx, task)
}

async fn body_of(resp: UpResponse) -> Bytes {
    resp.body.collect().await.unwrap()
}

#[tokio::test]
async fn plain_http_requests_carry_the_prepared_uri_and_headers() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (mut seen, task) = serve(listener, None);
    let s = settings(&format!("http://127.0.0.1:{port}/base/"), Some("sk-test"));
    let up = Upstream::new(&s).unwrap();
    for (endpoint, stream) in [(Endpoint::Chat, true), (Endpoint::Embeddings, false)] {
        let body = Bytes::from_static(br#"{"model":"m"}"#);
        let resp = up
            .post(0, endpoint, body.clone(), stream)
            .unwrap()
            .await
            .unwrap();
        assert_eq!(resp.status, 200);
        assert_eq!(body_of(resp).await, &br#"{"ok":true}"#[..]);
        let got = seen.recv().await.unwrap();
        assert_eq!(got.path, format!("/base{}", endpoint.path()));
        assert_eq!(
            got.host.as_deref(),
            Some(format!("127.0.0.1:{port}").as_str())
        );
        assert_eq!(got.auth.as_deref(), Some("Bearer sk-test"));
        assert_eq!(got.accept.is_some(), stream);
        assert_eq!(got.body, body);
    }
    assert!(
        up.post(1, Endpoint::Chat, Bytes::new(), false).is_none(),
        "no such backend"
    );
    task.abort();
}

#[tokio::test]
async fn url_user_info_becomes_basic_auth_and_never_the_host() {
    let s = settings("http://us%40er:p%3Ass@127.0.0.1:9/", None);
    let t = Target::new(&s.backends[0], &s).unwrap();
    assert_eq!(t.host, "127.0.0.1:9");
    // base64("us@er:p:ss")
    assert_eq!(t.auth.unwrap(), "Basic dXNAZXI6cDpzcw==");
    assert_eq!(
        t.uris[0].to_string(),
        "http://127.0.0.1:9/v1/chat/completions"
    );
    let s = settings("https://api.example.com", None);
    let t = Target::new(&s.backends[0], &s).unwrap();
    assert_eq!(t.host, "api.example.com", "the default port is not written");
    assert!(t.auth.is_none());
}

#[tokio::test]
async fn connection_refused_is_a_connect_error() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let up = Upstream::new(&settings(&format!("http://127.0.0.1:{port}"), None)).unwrap();
    let err = up
        .post(0, Endpoint::Chat, Bytes::new(), false)
        .unwrap()
        .await
        .unwrap_err();
    assert!(err.is_connect(), "{err:?}");
}

#[tokio::test]
async fn https_backends_are_reached_through_rustls() {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
    let der = cert.cert.der().clone();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(cert.key_pair.serialize_der().into());
    let server = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![der.clone()], key)
        .unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (mut seen, task) = serve(
        listener,
        Some(tokio_rustls::TlsAcceptor::from(Arc::new(server))),
    );
    let s = settings(&format!("https://127.0.0.1:{port}"), Some("sk-tls"));

    // The production client does not trust a self-signed certificate …
    let strict = Upstream::new(&s).unwrap();
    let err = strict
        .post(0, Endpoint::Chat, Bytes::from_static(b"{}"), false)
        .unwrap()
        .await
        .unwrap_err();
    assert!(
        err.is_connect(),
        "a TLS handshake failure is a connect error: {err:?}"
    );

    // … one that trusts it talks HTTPS, with the same prepared headers.
    let mut roots = rustls::RootCertStore::empty();
    roots.add(der).unwrap();
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let up = Upstream::with_tls(&s, tls).unwrap();
    for _ in 0..3 {
        let resp = up
            .post(0, Endpoint::Completions, Bytes::from_static(b"{}"), false)
            .unwrap()
            .await
            .unwrap();
        assert_eq!(resp.status, 200);
        assert_eq!(body_of(resp).await, &br#"{"ok":true}"#[..]);
        let got = seen.recv().await.unwrap();
        assert_eq!(got.path, "/v1/completions");
        assert_eq!(got.auth.as_deref(), Some("Bearer sk-tls"));
    }
    task.abort();
}

/// Reads one request head from a raw socket (the tests below answer by hand).
async fn read_head(tcp: &mut tokio::net::TcpStream) {
    let mut buf = vec![0u8; 4096];
    let mut got = Vec::new();
    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tcp.read(&mut buf).await.unwrap();
        assert!(n > 0, "the request arrives");
        got.extend_from_slice(&buf[..n]);
    }
}

/// A backend that answers one request per connection (keep-alive offered), then closes the
/// socket, as llama.cpp does with idle connections: the pooled connection is stale at the next
/// use, and the request goes out on a new one instead of failing.
#[tokio::test]
async fn a_pooled_connection_the_backend_closed_is_replaced() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (closed_tx, mut closed) = mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        for _ in 0..3 {
            let (mut tcp, _) = listener.accept().await.unwrap();
            read_head(&mut tcp).await;
            tcp.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                .await
                .unwrap();
            drop(tcp);
            let _ = closed_tx.send(());
        }
    });
    let up = Upstream::new(&settings(&format!("http://127.0.0.1:{port}"), None)).unwrap();
    for _ in 0..3 {
        let resp = up
            .post(0, Endpoint::Chat, Bytes::from_static(b"{}"), false)
            .unwrap()
            .await
            .unwrap();
        assert_eq!(resp.status, 200);
        assert_eq!(body_of(resp).await, &b"ok"[..]);
        closed.recv().await.unwrap(); // the backend closed it before the next request
    }
    task.await.unwrap();
}

/// Dropping a response body before its end (the gateway's client went away) closes the upstream
/// connection: the backend reads the end of its socket and can stop generating.
#[tokio::test]
async fn dropping_an_unfinished_body_closes_the_connection() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (eof_tx, mut eof) = mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        let (mut tcp, _) = listener.accept().await.unwrap();
        read_head(&mut tcp).await;
        tcp.write_all(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nfirst\r\n")
            .await
            .unwrap();
        // Nothing more is sent; the next read sees the client's end of stream.
        let mut buf = [0u8; 64];
        let n = tcp.read(&mut buf).await.unwrap();
        let _ = eof_tx.send(n);
    });
    let up = Upstream::new(&settings(&format!("http://127.0.0.1:{port}"), None)).unwrap();
    let resp = up
        .post(0, Endpoint::Chat, Bytes::from_static(b"{}"), true)
        .unwrap()
        .await
        .unwrap();
    assert_eq!(resp.status, 200);
    let mut body = resp.body;
    let first = std::future::poll_fn(|cx| body.poll_data(cx)).await.unwrap().unwrap();
    assert_eq!(first, &b"first"[..]);
    drop(body);
    assert_eq!(
        eof.recv().await,
        Some(0),
        "the backend saw the connection close"
    );
    task.await.unwrap();
}
