//! The plain-HTTP client against hand-written loopback servers: framing (length, chunked with
//! extensions and trailers, close-delimited), connection reuse and when it must not happen,
//! interim answers, and invalid answers.

use super::*;
use proptest::prelude::*;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::sync::mpsc;

fn target(port: u16) -> Arc<H1Target> {
    Arc::new(H1Target::new(
        &format!("127.0.0.1:{port}"),
        &format!("127.0.0.1:{port}"),
        "/base",
        Some(&HeaderValue::from_static("Bearer sk-up")),
        Duration::from_secs(2),
        8,
    ))
}

/// Reads one request (head and `Content-Length` body) from `tcp`; `None` at end of stream.
async fn read_request(tcp: &mut TcpStream, buf: &mut BytesMut) -> Option<(String, Bytes)> {
    loop {
        if let Some(at) = memchr::memmem::find(buf, b"\r\n\r\n") {
            let head = String::from_utf8(buf[..at].to_vec()).unwrap();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length: "))
                .map_or(0, |v| v.parse().unwrap());
            while buf.len() < at + 4 + len {
                if tcp.read_buf(buf).await.unwrap() == 0 {
                    return None;
                }
            }
            buf.advance(at + 4);
            let body = buf.split_to(len).freeze();
            return Some((head, body));
        }
        if tcp.read_buf(buf).await.unwrap() == 0 {
            return None;
        }
    }
}

/// A server that answers every request with `answers[i]` (the i-th request overall, written in
/// the given pieces); it reports (connection number, request head, body) for each request.
async fn server(answers: Vec<Vec<Vec<u8>>>) -> (u16, mpsc::UnboundedReceiver<(usize, String, Bytes)>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let answers = Arc::new(Mutex::new(answers.into_iter()));
        for n in 0.. {
            let Ok((mut tcp, _)) = listener.accept().await else { return };
            let (tx, answers) = (tx.clone(), answers.clone());
            tokio::spawn(async move {
                let mut buf = BytesMut::new();
                while let Some((head, body)) = read_request(&mut tcp, &mut buf).await {
                    let _ = tx.send((n, head, body));
                    let Some(pieces) = answers.lock().next() else { return };
                    for p in pieces {
                        if tcp.write_all(&p).await.is_err() {
                            return;
                        }
                        tokio::task::yield_now().await;
                    }
                }
            });
        }
    });
    (port, rx)
}

fn one(s: &str) -> Vec<Vec<u8>> {
    vec![s.as_bytes().to_vec()]
}

async fn full(t: &Arc<H1Target>, body: &'static [u8]) -> (StatusCode, Bytes) {
    let r = t.post(0, &Bytes::from_static(body), false).await.unwrap();
    (r.status, r.body.collect(1 << 20).await.unwrap())
}

#[tokio::test]
async fn a_length_delimited_answer_is_read_and_its_connection_reused() {
    let (port, mut seen) = server(vec![
        one("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n{\"ok\":true}"),
        one("HTTP/1.1 201 Created\r\ncontent-length: 2\r\n\r\nhi"),
    ])
    .await;
    let t = target(port);
    let r = t.post(2, &Bytes::from_static(b"{\"a\":1}"), true).await.unwrap();
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.content_type.as_ref().unwrap(), "application/json");
    assert_eq!(r.body.collect(1024).await.unwrap(), &b"{\"ok\":true}"[..]);
    let (conn, head, body) = seen.recv().await.unwrap();
    assert_eq!(
        head,
        format!(
            "POST /base/v1/embeddings HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\ncontent-type: application/json\r\n\
             authorization: Bearer sk-up\r\naccept: text/event-stream\r\ncontent-length: 7"
        )
    );
    assert_eq!((conn, &body[..]), (0, &b"{\"a\":1}"[..]));
    let mut r = t.post(0, &Bytes::new(), false).await.unwrap();
    assert_eq!(r.status, StatusCode::CREATED);
    assert_eq!(r.body.try_whole(), Some(Bytes::from_static(b"hi")), "buffered whole: taken without waiting");
    let (conn, head, _) = seen.recv().await.unwrap();
    assert_eq!(conn, 0, "the second request reuses the first connection");
    assert!(head.starts_with("POST /base/v1/chat/completions HTTP/1.1\r\n"), "{head}");
    assert!(head.ends_with("content-length: 0"), "{head}");
}

#[tokio::test]
async fn a_chunked_answer_with_extensions_and_trailers_is_decoded_piece_by_piece() {
    let answer = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
                  5;ext=1\r\nhello\r\n1\r\n \r\n5\r\nworld\r\n0\r\nx-trailer: t\r\n\r\n";
    // Sent one byte at a time: every framing line arrives split.
    let pieces: Vec<Vec<u8>> = answer.bytes().map(|b| vec![b]).collect();
    let (port, mut seen) = server(vec![pieces, one("HTTP/1.1 200 OK\r\ncontent-length: 1\r\n\r\nz")]).await;
    let t = target(port);
    let mut r = t.post(0, &Bytes::from_static(b"{}"), true).await.unwrap();
    assert_eq!(r.body.try_whole(), None, "a chunked body is read piece by piece");
    let mut got = Vec::new();
    while let Some(piece) = r.body.data().await {
        let piece = piece.unwrap();
        assert!(!piece.is_empty());
        got.extend_from_slice(&piece);
    }
    assert_eq!(got, b"hello world");
    assert!(r.body.is_end());
    drop(r);
    assert_eq!(full(&t, b"{}").await.1, &b"z"[..]);
    assert_eq!(seen.recv().await.unwrap().0, 0);
    assert_eq!(seen.recv().await.unwrap().0, 0, "reused after the trailers were read");
}

#[tokio::test]
async fn answers_that_end_with_the_connection_are_not_reused() {
    let (port, mut seen) = server(vec![
        one("HTTP/1.1 200 OK\r\nConnection: close\r\ncontent-length: 1\r\n\r\na"),
        one("HTTP/1.0 200 OK\r\ncontent-length: 1\r\n\r\nb"),
        one("HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nc"),
        one("HTTP/1.1 200 OK\r\ncontent-length: 1\r\n\r\nd"),
    ])
    .await;
    let t = target(port);
    for want in [&b"a"[..], b"b", b"c", b"d"] {
        assert_eq!(full(&t, b"{}").await.1, want);
    }
    let conns: Vec<usize> = [(); 4].iter().map(|_| seen.try_recv().unwrap().0).collect();
    assert_eq!(conns, [0, 1, 2, 2], "close and HTTP/1.0 end their connection; keep-alive reuses");
}

#[tokio::test]
async fn a_close_delimited_answer_is_read_to_the_end_of_the_connection() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        let (mut tcp, _) = listener.accept().await.unwrap();
        read_request(&mut tcp, &mut BytesMut::new()).await.unwrap();
        tcp.write_all(b"HTTP/1.1 200 OK\r\n\r\nno length, ").await.unwrap();
        tokio::task::yield_now().await;
        tcp.write_all(b"until close").await.unwrap();
    });
    let t = target(port);
    assert_eq!(full(&t, b"{}").await.1, &b"no length, until close"[..]);
    assert_eq!(t.reap(), 0, "not pooled");
}

#[tokio::test]
async fn interim_answers_are_skipped() {
    let (port, _seen) = server(vec![one(
        "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok",
    )])
    .await;
    assert_eq!(full(&target(port), b"{}").await, (StatusCode::OK, Bytes::from_static(b"ok")));
}

#[tokio::test]
async fn invalid_answers_are_errors_not_panics() {
    for answer in [
        "NOT HTTP AT ALL\r\n\r\n",
        "HTTP/1.1 200 OK\r\ncontent-length: x\r\n\r\n",
        "HTTP/1.1 200 OK\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\nab",
        "HTTP/1.1 999999 Nope\r\n\r\n",
    ] {
        let (port, _seen) = server(vec![one(answer)]).await;
        let err = target(port).post(0, &Bytes::new(), false).await.err();
        assert!(matches!(err, Some(H1Error::Protocol(_))), "{answer:?}: {err:?}");
    }
    let (port, _seen) = server(vec![one("HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n")]).await;
    let r = target(port).post(0, &Bytes::new(), false).await.unwrap();
    assert!(matches!(r.body.collect(1024).await, Err(H1Error::Protocol("bad chunk size"))));
}

#[tokio::test]
async fn an_answer_cut_short_is_an_error() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        let (mut tcp, _) = listener.accept().await.unwrap();
        read_request(&mut tcp, &mut BytesMut::new()).await.unwrap();
        tcp.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nshort").await.unwrap();
    }); // then the connection closes
    let t = target(port);
    let r = t.post(0, &Bytes::new(), false).await.unwrap();
    assert!(matches!(r.body.collect(1024).await, Err(H1Error::Closed)));
    assert_eq!(t.reap(), 0);
}

#[tokio::test]
async fn a_body_larger_than_the_limit_is_refused() {
    let (port, _seen) = server(vec![vec![
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n".to_vec(),
        b"4\r\nabcd\r\n".to_vec(),
        b"4\r\nefgh\r\n0\r\n\r\n".to_vec(),
    ]])
    .await;
    let r = target(port).post(0, &Bytes::new(), false).await.unwrap();
    assert!(matches!(r.body.collect(6).await, Err(H1Error::Protocol(_))));
}

#[tokio::test]
async fn large_bodies_are_sent_whole() {
    let (port, mut seen) = server(vec![one("HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")]).await;
    let body = Bytes::from(vec![b'x'; COPY_BODY_UP_TO * 3 + 7]);
    let r = target(port).post(1, &body, false).await.unwrap();
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.body.is_end());
    assert_eq!(seen.recv().await.unwrap().2, body);
}

#[test]
fn content_lengths_are_digits_only() {
    for (v, want) in [(&b"0"[..], Some(0)), (b"272", Some(272)), (b" 12 ", Some(12)), (b"9999999999999999999", Some(9_999_999_999_999_999_999))] {
        assert_eq!(decimal(v), want, "{v:?}");
    }
    for v in [&b""[..], b"+1", b"-1", b"1 2", b"0x10", b"12a", b"99999999999999999999"] {
        assert_eq!(decimal(v), None, "{v:?}");
    }
}


proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Any body, chunked at random sizes and sent in random pieces, comes out whole.
    #[test]
    fn chunked_bodies_survive_any_split(
        body in proptest::collection::vec(any::<u8>(), 0..600),
        chunk in 1usize..50,
        piece in 1usize..40,
    ) {
        let mut wire = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n".to_vec();
        for c in body.chunks(chunk) {
            wire.extend_from_slice(format!("{:x}\r\n", c.len()).as_bytes());
            wire.extend_from_slice(c);
            wire.extend_from_slice(b"\r\n");
        }
        wire.extend_from_slice(b"0\r\n\r\n");
        let pieces: Vec<Vec<u8>> = wire.chunks(piece).map(<[u8]>::to_vec).collect();
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let got = rt.block_on(async move {
            let (port, _seen) = server(vec![pieces]).await;
            let r = target(port).post(0, &Bytes::new(), true).await.unwrap();
            r.body.collect(1 << 20).await.unwrap()
        });
        prop_assert_eq!(&got[..], &body[..]);
    }

    /// Any answer head and any chunk framing: an error or a result, never a panic, and framing
    /// that consumes what it reports.
    #[test]
    fn arbitrary_answers_never_panic(
        head in proptest::collection::vec(any::<u8>(), 0..300),
        framing in proptest::collection::vec(any::<u8>(), 0..64),
    ) {
        let _ = parse_head(&head);
        for at in [Framing::ChunkSize, Framing::ChunkEnd, Framing::Trailers] {
            let mut buf = BytesMut::from(&framing[..]);
            let before = buf.len();
            if let Ok(Some(next)) = step_chunked(&mut buf, at) {
                prop_assert!(buf.len() < before, "{at:?} -> {next:?} consumed nothing");
            }
        }
    }
}
