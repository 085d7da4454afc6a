//! Writing the lane's answers: the status line, the reply's headers, the API's security headers
//! (the same set [`crate::auth::secure`] puts on every router answer), `x-request-id`, `date`,
//! and the body — whole with `content-length`, or relayed with chunked transfer coding.

use axum::http::StatusCode;
use bytes::Bytes;
use gpufleet_gateway::Reply;
use crate::auth::SECURITY_HEADERS;
use std::cell::RefCell;
use std::sync::LazyLock;
use std::time::{Duration, UNIX_EPOCH};

/// [`SECURITY_HEADERS`] as head lines, written once.
static SECURITY: LazyLock<Vec<u8>> = LazyLock::new(|| {
    SECURITY_HEADERS.iter().flat_map(|(name, value)| [name.as_bytes(), b": ", value.as_bytes(), b"\r\n"]).flatten().copied().collect()
});

/// Whether `name` is one of [`SECURITY_HEADERS`] (the lane writes them itself).
pub(crate) fn is_security_header(name: &str) -> bool {
    SECURITY_HEADERS.iter().any(|(n, _)| *n == name)
}

/// The answer's head, for a whole body of `len` bytes or a streamed one (`None`).
pub(crate) fn head(out: &mut Vec<u8>, reply: &Reply, len: Option<usize>, id: &str, close: bool) {
    status_line(out, reply.status);
    out.extend_from_slice(b"content-type: ");
    out.extend_from_slice(reply.content_type.as_bytes());
    match len {
        Some(n) => {
            out.extend_from_slice(b"\r\ncontent-length: ");
            out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        None => out.extend_from_slice(b"\r\ntransfer-encoding: chunked\r\nx-accel-buffering: no\r\n"),
    }
    if let Some(secs) = reply.retry_after {
        out.extend_from_slice(b"retry-after: ");
        out.extend_from_slice(itoa::Buffer::new().format(secs).as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if let Some(loc) = &reply.location {
        out.extend_from_slice(b"location: ");
        out.extend_from_slice(loc.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    tail(out, id, close);
}

/// The status line.
pub(crate) fn status_line(out: &mut Vec<u8>, status: StatusCode) {
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("Unknown").as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// Security headers, request id, `connection: close` when closing, `date`, and the blank line.
pub(crate) fn tail(out: &mut Vec<u8>, id: &str, close: bool) {
    out.extend_from_slice(&SECURITY);
    out.extend_from_slice(b"x-request-id: ");
    out.extend_from_slice(id.as_bytes());
    if close {
        out.extend_from_slice(b"\r\nconnection: close");
    }
    out.extend_from_slice(b"\r\ndate: ");
    date(out);
    out.extend_from_slice(b"\r\n\r\n");
}

/// A whole reply: head and body in one buffer.
pub(crate) fn full(out: &mut Vec<u8>, reply: &Reply, body: &Bytes, id: &str, close: bool) {
    head(out, reply, Some(body.len()), id, close);
    out.extend_from_slice(body);
}

/// One chunk of a streamed body in chunked transfer coding (never empty: that ends the body).
pub(crate) fn chunk(out: &mut Vec<u8>, data: &[u8]) {
    debug_assert!(!data.is_empty());
    let mut hex = [0u8; 16];
    let mut n = data.len();
    let mut i = hex.len();
    loop {
        i -= 1;
        hex[i] = b"0123456789abcdef"[n & 15];
        n >>= 4;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&hex[i..]);
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
}

/// The end of a chunked body.
pub(crate) const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

thread_local! {
    /// The `date` value of the current second on this thread.
    static DATE: RefCell<(u64, [u8; 29])> = const { RefCell::new((u64::MAX, [0; 29])) };
}

/// Appends the HTTP date of now (the coarse clock; formatted once per second per thread).
fn date(out: &mut Vec<u8>) {
    let secs = u64::try_from(gpufleet_runtime::coarse::unix_ms() / 1000).unwrap_or(0);
    DATE.with(|d| {
        let mut d = d.borrow_mut();
        if d.0 != secs {
            let text = httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_secs(secs));
            if text.len() == 29 {
                d.1.copy_from_slice(text.as_bytes());
            }
            d.0 = secs;
        }
        out.extend_from_slice(&d.1);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_whole_reply_is_one_valid_http_answer() {
        let reply = Reply { retry_after: Some(3), ..Reply::json(StatusCode::OK, Bytes::from_static(b"{}")) };
        let mut out = Vec::new();
        let gpufleet_gateway::ReplyBody::Full(body) = &reply.body else { unreachable!() };
        full(&mut out, &reply, body, "abc", true);
        let mut headers = [httparse::EMPTY_HEADER; 16];
        let mut resp = httparse::Response::new(&mut headers);
        let httparse::Status::Complete(n) = resp.parse(&out).unwrap() else { panic!("complete") };
        assert_eq!(&out[n..], b"{}");
        assert_eq!((resp.code, resp.reason), (Some(200), Some("OK")));
        let get = |name: &str| resp.headers.iter().find(|h| h.name == name).map(|h| std::str::from_utf8(h.value).unwrap());
        assert_eq!(get("content-length"), Some("2"));
        assert_eq!(get("content-type"), Some("application/json"));
        assert_eq!(get("retry-after"), Some("3"));
        assert_eq!(get("x-request-id"), Some("abc"));
        assert_eq!(get("connection"), Some("close"));
        assert_eq!(get("x-frame-options"), Some("DENY"));
        assert!(httpdate::parse_http_date(get("date").unwrap()).is_ok());
    }

    /// The lane's fixed security headers are exactly those the router's answers get.
    #[test]
    fn security_headers_match_the_routers() {
        let mut resp = axum::response::Response::new(axum::body::Body::empty());
        crate::auth::secure(&mut resp, "id");
        let mut expected: Vec<String> = resp
            .headers()
            .iter()
            .filter(|(n, _)| *n != "x-request-id")
            .map(|(n, v)| format!("{}: {}\r\n", n, v.to_str().unwrap()))
            .collect();
        let mut ours: Vec<String> = std::str::from_utf8(&SECURITY).unwrap().split_inclusive("\r\n").map(str::to_owned).collect();
        expected.sort();
        ours.sort();
        assert_eq!(ours, expected);
        assert!(is_security_header("x-frame-options") && !is_security_header("x-request-id"));
    }

    #[test]
    fn chunks_are_hex_sized() {
        let mut out = Vec::new();
        chunk(&mut out, &[b'x'; 26]);
        assert_eq!(&out[..4], b"1a\r\n");
        assert!(out.ends_with(b"x\r\n"));
    }
}
