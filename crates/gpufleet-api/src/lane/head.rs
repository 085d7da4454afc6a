//! Reading a request head for the inference lane: what the lane serves (a well-formed HTTP/1.1
//! `POST` of one of the three inference paths with a `Content-Length` body, nothing that asks for
//! more than that) and the few headers it reads. Everything else is [`Parsed::Other`] and goes
//! to hyper, which answers it as it always did (405, 400, 413, 431, `Expect`, chunked bodies …).

/// Most headers the lane parses; more → hyper (which allows 100).
const MAX_HEADERS: usize = 48;

/// The headers of a lane request the lane and the guard read, as offsets into the head.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Span {
    pub(crate) start: usize,
    pub(crate) end: usize,
}

/// A request head the lane serves.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct LaneHead {
    /// Index into `FAST_ROUTES`.
    pub(crate) route: usize,
    /// Bytes of the head, the blank line included.
    pub(crate) head_len: usize,
    pub(crate) content_length: usize,
    /// The client asked to close after this request.
    pub(crate) close: bool,
    /// Bytes of all header names and values (+4 each), as the gateway's header limit counts.
    pub(crate) header_bytes: usize,
    pub(crate) authorization: Option<Span>,
    pub(crate) x_api_key: Option<Span>,
    pub(crate) x_forwarded_for: Option<Span>,
    pub(crate) x_request_id: Option<Span>,
    pub(crate) x_model: Option<Span>,
    pub(crate) x_priority: Option<Span>,
}

/// What a complete head is.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Parsed {
    /// Served by the lane.
    Lane(LaneHead),
    /// Left to hyper.
    Other,
}

/// Where a header the lane reads is kept.
fn header_slot<'h>(head: &'h mut LaneHead, name: &[u8]) -> Option<&'h mut Option<Span>> {
    let is = |n: &str| name.eq_ignore_ascii_case(n.as_bytes());
    Some(if is("authorization") {
        &mut head.authorization
    } else if is("x-api-key") {
        &mut head.x_api_key
    } else if is("x-forwarded-for") {
        &mut head.x_forwarded_for
    } else if is("x-request-id") {
        &mut head.x_request_id
    } else if is("x-model") {
        &mut head.x_model
    } else if is("x-priority") {
        &mut head.x_priority
    } else {
        return None;
    })
}

/// Parses the complete head `buf[..head_len]` (found by the caller); `routes` are the lane's
/// paths.
pub(crate) fn parse(buf: &[u8], head_len: usize, routes: &[&str]) -> Parsed {
    // Uninitialised: httparse writes the headers it finds (zeroing 48 of them cost more).
    let mut headers = [const { std::mem::MaybeUninit::uninit() }; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut []);
    let Ok(httparse::Status::Complete(n)) = req.parse_with_uninit_headers(&buf[..head_len], &mut headers) else {
        return Parsed::Other;
    };
    if n != head_len || req.method != Some("POST") || req.version != Some(1) {
        return Parsed::Other;
    }
    let Some(route) = req.path.and_then(|p| routes.iter().position(|r| *r == p)) else {
        return Parsed::Other;
    };
    let base = buf.as_ptr() as usize;
    let span = |v: &[u8]| {
        let start = v.as_ptr() as usize - base;
        Some(Span { start, end: start + v.len() })
    };
    let mut head = LaneHead { route, head_len, ..LaneHead::default() };
    let mut length: Option<usize> = None;
    for h in req.headers.iter() {
        head.header_bytes += h.name.len() + h.value.len() + 4;
        let name = h.name.as_bytes();
        let is = |n: &str| name.eq_ignore_ascii_case(n.as_bytes());
        // By length first: most headers are compared with nothing.
        match name.len() {
            14 if is("content-length") => {
                let Some(n) = gpufleet_gateway::content_length(h.value) else {
                    return Parsed::Other;
                };
                if length.replace(n).is_some() {
                    return Parsed::Other; // two lengths: hyper refuses it
                }
            }
            10 if is("connection") => {
                for token in h.value.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
                    if token.eq_ignore_ascii_case(b"close") {
                        head.close = true;
                    } else if token.eq_ignore_ascii_case(b"upgrade") {
                        return Parsed::Other;
                    }
                }
            }
            17 | 6 | 7 if is("transfer-encoding") || is("expect") || is("upgrade") => return Parsed::Other,
            7 | 9 | 10 | 12 | 13 | 15 => {
                if let Some(slot) = header_slot(&mut head, name) {
                    // A header given twice: the router reads the first (`HeaderMap::get`),
                    // except `X-Forwarded-For`, whose copies it joins: leave every repeat to it.
                    if slot.is_some() {
                        return Parsed::Other;
                    }
                    *slot = span(h.value);
                }
            }
            _ => {}
        }
    }
    match length {
        Some(n) => {
            head.content_length = n;
            Parsed::Lane(head)
        }
        None => Parsed::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROUTES: [&str; 3] = ["/v1/chat/completions", "/v1/completions", "/v1/embeddings"];

    fn lane(raw: &str) -> Parsed {
        parse(raw.as_bytes(), raw.len(), &ROUTES)
    }

    #[test]
    fn an_inference_post_is_the_lanes_with_its_headers() {
        let raw = "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 12\r\n\
                   Authorization: Bearer k\r\nX-Model: m\r\nx-priority: high\r\nConnection: keep-alive, close\r\n\r\n";
        let Parsed::Lane(h) = lane(raw) else { panic!("lane") };
        assert_eq!((h.route, h.head_len, h.content_length, h.close), (1, raw.len(), 12, true));
        let text = |s: Option<Span>| s.map(|s| &raw[s.start..s.end]);
        assert_eq!(text(h.authorization), Some("Bearer k"));
        assert_eq!(text(h.x_model), Some("m"));
        assert_eq!(text(h.x_priority), Some("high"));
        assert_eq!(text(h.x_api_key), None);
        assert_eq!(h.header_bytes, (4 + 1) + (14 + 2) + (13 + 8) + (7 + 1) + (10 + 4) + (10 + 17) + 6 * 4);
    }

    #[test]
    fn everything_unusual_goes_to_hyper() {
        for raw in [
            "GET /v1/chat/completions HTTP/1.1\r\n\r\n",
            "POST /v1/chat/completions HTTP/1.0\r\nContent-Length: 2\r\n\r\n",
            "POST /v1/chat/completions?x=1 HTTP/1.1\r\nContent-Length: 2\r\n\r\n",
            "POST /v1/models HTTP/1.1\r\nContent-Length: 2\r\n\r\n",
            "POST /v1/chat/completions HTTP/1.1\r\n\r\n",
            "POST /v1/chat/completions HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST /v1/chat/completions HTTP/1.1\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST /v1/chat/completions HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\n",
            "POST /v1/chat/completions HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
            "POST /v1/chat/completions HTTP/1.1\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\n",
            "POST /v1/chat/completions HTTP/1.1\r\nContent-Length: 2\r\nConnection: Upgrade\r\n\r\n",
            "POST /v1/chat/completions HTTP/1.1\r\nbad header line\r\n\r\n",
            "POST /v1/chat/completions HTTP/1.1\r\nContent-Length: 2\r\nX-Forwarded-For: 1.2.3.4\r\nX-Forwarded-For: 5.6.7.8\r\n\r\n",
            "POST /v1/chat/completions HTTP/1.1\r\nContent-Length: 2\r\nAuthorization: a\r\nauthorization: b\r\n\r\n",
            "\r\n\r\n",
        ] {
            assert_eq!(lane(raw), Parsed::Other, "{raw:?}");
        }
        let many = format!("POST /v1/embeddings HTTP/1.1\r\nContent-Length: 1\r\n{}\r\n", "a: b\r\n".repeat(MAX_HEADERS));
        assert_eq!(lane(&many), Parsed::Other, "too many headers");
    }

    proptest::proptest! {
        /// Any bytes: no panic, and an accepted head's spans lie inside it.
        #[test]
        fn arbitrary_heads_never_panic(raw in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..400)) {
            let mut raw = raw;
            raw.extend_from_slice(b"\r\n\r\n");
            if let Parsed::Lane(h) = parse(&raw, raw.len(), &ROUTES) {
                for s in [h.authorization, h.x_api_key, h.x_forwarded_for, h.x_request_id, h.x_model, h.x_priority].into_iter().flatten() {
                    proptest::prop_assert!(s.start <= s.end && s.end <= h.head_len);
                }
            }
        }

        /// Heads built from random headers: the lane reads the same values a header map would
        /// give the router (the first of each), or leaves the request to hyper.
        #[test]
        fn the_lane_reads_what_the_router_would(
            headers in proptest::collection::vec((0usize..8, "[a-zA-Z0-9 ,._-]{0,12}"), 0..8),
            len in 0usize..100_000,
        ) {
            const NAMES: [&str; 8] = ["Authorization", "x-api-key", "X-Model", "x-priority", "X-Request-Id", "x-forwarded-for", "Accept", "User-Agent"];
            let mut raw = format!("POST /v1/embeddings HTTP/1.1\r\nContent-Length: {len}\r\n");
            for (n, v) in &headers {
                raw.push_str(&format!("{}: {v}\r\n", NAMES[*n]));
            }
            raw.push_str("\r\n");
            let parsed = parse(raw.as_bytes(), raw.len(), &ROUTES);
            let repeated = (0..6).any(|n| headers.iter().filter(|(m, _)| *m == n).count() > 1);
            match parsed {
                Parsed::Other => proptest::prop_assert!(repeated, "refused without a repeat: {raw:?}"),
                Parsed::Lane(h) => {
                    proptest::prop_assert!(!repeated);
                    proptest::prop_assert_eq!(h.content_length, len);
                    let got = |s: Option<Span>| s.map(|s| raw[s.start..s.end].to_owned());
                    let want = |n: usize| headers.iter().find(|(m, _)| *m == n).map(|(_, v)| v.trim().to_owned());
                    proptest::prop_assert_eq!(got(h.authorization), want(0));
                    proptest::prop_assert_eq!(got(h.x_api_key), want(1));
                    proptest::prop_assert_eq!(got(h.x_model), want(2));
                    proptest::prop_assert_eq!(got(h.x_priority), want(3));
                    proptest::prop_assert_eq!(got(h.x_request_id), want(4));
                    proptest::prop_assert_eq!(got(h.x_forwarded_for), want(5));
                }
            }
        }
    }
}
