use super::*;
use crate::{HTTP_CHUNKED, HTTP_SSE};

fn start(bytes: &[u8]) -> RequestStart {
    request_start(&Bytes::new(bytes))
}

fn head(bytes: &[u8]) -> (HeadFacts, i64) {
    let mut w = Bytes::new(bytes);
    scan_head(&mut w);
    let cl = content_length(&mut w);
    (w.found(), cl)
}

#[test]
fn request_lines_split_anywhere_are_partial_until_they_can_be_told() {
    let line = b"GET /cut HTTP/1.1\r\nHost: x\r\n\r\n";
    // Every split before " HTTP/1." is complete waits for more bytes.
    for n in 1..=15 {
        assert_eq!(start(&line[..n]), RequestStart::Partial, "{n} bytes");
    }
    for n in 16..=line.len() {
        assert_eq!(
            start(&line[..n]),
            RequestStart::Line {
                method: 1,
                path_start: 4,
                path_len: 4,
                version_seen: true
            },
            "{n} bytes"
        );
    }
    for (text, method) in [("POST /v1/chat", 2u8), ("OPTIONS *", 7), ("DELETE /a", 4)] {
        assert_eq!(
            start(&text.as_bytes()[..3]),
            RequestStart::Partial,
            "{text}"
        );
        let full = format!("{text} HTTP/1.0\r\n");
        assert!(
            matches!(start(full.as_bytes()), RequestStart::Line { method: m, .. } if m == method),
            "{full}"
        );
    }
}

#[test]
fn what_is_not_a_request_line_says_so_early() {
    // TLS ClientHello, HTTP/2 preface, a response, lower-case methods, a bad version.
    assert_eq!(
        start(b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03"),
        RequestStart::No
    );
    assert_eq!(start(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"), RequestStart::No);
    assert_eq!(start(b"HTTP/1.1 200 OK\r\n"), RequestStart::No);
    assert_eq!(start(b"get / HTTP/1.1\r\n"), RequestStart::No);
    assert_eq!(start(b"GET /x FTP/1.0\r\n\r\n"), RequestStart::No);
    assert_eq!(start(b"\x16"), RequestStart::No);
    assert_eq!(start(b"X"), RequestStart::No);
}

#[test]
fn a_long_target_is_a_request_with_its_start() {
    let mut line = b"GET /".to_vec();
    line.extend(std::iter::repeat_n(b'a', 700));
    line.extend(b" HTTP/1.1\r\n\r\n");
    assert_eq!(
        start(&line),
        RequestStart::Line {
            method: 1,
            path_start: 4,
            path_len: PRE + SCAN - 4,
            version_seen: false
        }
    );
    // Shorter than a kept path and no space yet: wait.
    assert_eq!(start(b"GET /abcdefghij"), RequestStart::Partial);
}

#[test]
fn status_lines() {
    let w = |b: &[u8]| status_line(&Bytes::new(b));
    assert_eq!(w(b"HTTP/1.1 200 OK\r\n"), Some(200));
    assert_eq!(w(b"HTTP/1.0 101 Switching"), Some(101));
    assert_eq!(w(b"HTTP/1.1 2x0 OK\r\n"), None);
    assert_eq!(w(b"HTTP/1.1 20"), None);
    assert_eq!(w(b"HTTP/2 200 \r\n"), None);
}

#[test]
fn head_facts_with_any_case_and_whitespace() {
    let (f, cl) = head(b"HTTP/1.1 200 OK\r\nServer: x\r\nContent-Length:\t 42\r\n\r\nbody");
    assert_eq!(f.head_len, 51);
    assert_eq!(cl, 42);
    assert_eq!(f.flags, 0);
    let (f, cl) = head(
        b"HTTP/1.1 200 OK\r\ncontent-type: Text/Event-Stream; charset=utf-8\r\nTRANSFER-ENCODING:  chunked\r\n\r\n",
    );
    assert_eq!(cl, -1);
    assert_eq!(f.flags, (HTTP_SSE | HTTP_CHUNKED) as u64);
    assert_eq!(f.head_len, 96);
    // Not there yet: no end, but what was seen is kept.
    let (f, cl) = head(b"HTTP/1.1 200 OK\r\nContent-Length: 7\r\nX-A: b");
    assert_eq!((f.head_len, cl), (0, 7));
    // The first Content-Length counts; look-alike names do not.
    let (_, cl) = head(b"X\r\nContent-Length: 5\r\nContent-Length: 9\r\n\r\n");
    assert_eq!(cl, 5);
    let (f, cl) = head(b"X\r\nContent-Lengthy: 5\r\nTransfer-Encodinx: chunked\r\n\r\n");
    assert_eq!((f.flags, cl), (0, -1));
}

#[test]
fn a_head_whose_lines_start_in_the_carried_bytes() {
    // A status line written on its own: the next write's window starts with the last
    // bytes of the previous one, so its first header line is seen.
    let (f, cl) = head(b"K\r\nContent-Length: 3\r\n\r\nabc");
    assert_eq!((f.head_len, cl), (24, 3));
    let (f, _) = head(b"\r\n\r\n");
    assert_eq!(f.head_len, 4);
}

#[test]
fn terminating_chunk() {
    assert!(is_last_chunk(u64::from_le_bytes(*b"0\r\n\r\n\0\0\0")));
    assert!(!is_last_chunk(u64::from_le_bytes(*b"1\r\n\r\n\0\0\0")));
    assert!(method_prefix(u64::from_le_bytes(*b"GE\0\0\0\0\0\0"), 2));
    assert!(method_prefix(u64::from_le_bytes(*b"GET \0\0\0\0"), 4));
    assert!(!method_prefix(u64::from_le_bytes(*b"GET/\0\0\0\0"), 4));
    assert!(!method_prefix(u64::from_le_bytes(*b"GETS\0\0\0\0"), 4));
    assert!(method_prefix(u64::from_le_bytes(*b"OPTIONS\0"), 7));
}

#[test]
fn python_sse_head() {
    let h = b"HTTP/1.1 200 OK\r\nServer: BaseHTTP/0.6 Python/3.11.7\r\nDate: Tue, 01 Dec 2026 11:00:35 GMT\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n";
    let (f, cl) = head(h);
    assert_eq!(
        (f.head_len as usize, cl, f.flags),
        (h.len(), -1, (HTTP_SSE | HTTP_CHUNKED) as u64)
    );
}
