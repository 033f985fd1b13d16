//! The kernel programs' HTTP/1.x head parsing (agent-common, the same code the kernel
//! runs) against httparse on the same bytes: whenever httparse reads a complete request or
//! response head that fits the kernel's window and uses CRLF line ends, ours finds the same
//! method, target, status and head length, and the same Content-Length, chunked and SSE
//! facts. Nothing panics on any input.
#![no_main]
use agent_common::{
    http::{
        content_length, request_start, scan_head, status_line, Bytes, RequestStart, PRE, SCAN,
    },
    HTTP_CHUNKED, HTTP_PATH_MAX, HTTP_SSE, METHODS,
};
use libfuzzer_sys::fuzz_target;

/// What the kernel's rules say a head's headers mean, read from the header lines as
/// httparse split them (names exact up to case, at most three spaces or tabs before a
/// value).
fn expected(head: &str) -> (i64, u64) {
    // The first Content-Length line alone counts, whatever its value (a second one could
    // only disagree).
    let mut cl = None;
    let mut flags = 0;
    for line in head.split("\r\n").skip(1) {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let ws = value.len() - value.trim_start_matches([' ', '\t']).len();
        let name = name.to_ascii_lowercase();
        if name == "content-length" && cl.is_none() {
            let digits: String = value[ws.min(3)..]
                .chars()
                .take_while(char::is_ascii_digit)
                .take(15)
                .collect();
            cl = Some(if ws > 3 || digits.is_empty() {
                -1
            } else {
                digits.parse().unwrap_or(-1)
            });
            continue;
        }
        if ws > 3 {
            continue;
        }
        let value = value[ws..].to_ascii_lowercase();
        match name.as_str() {
            "content-type" if value.starts_with("text/event-strea") => flags |= HTTP_SSE as u64,
            "transfer-encoding" if value.starts_with("chunked") => flags |= HTTP_CHUNKED as u64,
            _ => {}
        }
    }
    (cl.unwrap_or(-1), flags)
}

/// CRLF line ends only (the kernel does not take a bare LF as a line end).
fn crlf_only(head: &[u8]) -> bool {
    head.iter()
        .enumerate()
        .all(|(i, b)| *b != b'\n' || (i > 0 && head[i - 1] == b'\r'))
}

fn check_head(data: &[u8], len: usize) {
    let mut w = Bytes::new(data);
    scan_head(&mut w);
    let cl = content_length(&mut w);
    let found = w.found();
    assert_eq!(found.head_len as usize, len, "head end of {data:?}");
    let text = String::from_utf8_lossy(&data[..len]);
    let (want_cl, want_flags) = expected(&text);
    assert_eq!(cl, want_cl, "Content-Length of {data:?}");
    assert_eq!(found.flags, want_flags, "flags of {data:?}");
}

fuzz_target!(|data: &[u8]| {
    let w = Bytes::new(data);
    let start = request_start(&w);
    let _ = status_line(&w);

    // httparse skips empty lines before a request line (RFC 9112 §2.2 lets a server do
    // so); the kernel looks for the request line at the first byte of a read, a limit the
    // README states. Such inputs are left out of the comparison (not of the no-panic check).
    let leading_empty_line = matches!(data.first(), Some(b'\r' | b'\n'));
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut req = httparse::Request::new(&mut headers);
    if let (Ok(httparse::Status::Complete(len)), false) = (req.parse(data), leading_empty_line) {
        let ours = METHODS.iter().position(|m| Some(*m) == req.method);
        if let (Some(code), true, true) = (ours, len <= PRE + SCAN, crlf_only(&data[..len])) {
            let path = req.path.unwrap_or("");
            match start {
                RequestStart::Line {
                    method,
                    path_start,
                    path_len,
                    version_seen,
                } => {
                    assert_eq!(method as usize, code, "method of {data:?}");
                    assert!(version_seen, "{data:?}");
                    let kept = path_len.min(HTTP_PATH_MAX);
                    assert_eq!(
                        &data[path_start..path_start + kept],
                        &path.as_bytes()[..kept.min(path.len())],
                        "target of {data:?}"
                    );
                    assert_eq!(path_len, path.len(), "target length of {data:?}");
                }
                other => panic!("httparse read a request, ours {other:?}: {data:?}"),
            }
            check_head(data, len);
        }
    }

    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut resp = httparse::Response::new(&mut headers);
    if let Ok(httparse::Status::Complete(len)) = resp.parse(data) {
        if len <= PRE + SCAN && crlf_only(&data[..len]) && data.get(8) == Some(&b' ') {
            assert_eq!(status_line(&w), resp.code, "status of {data:?}");
            check_head(data, len);
        }
    }
});
