use super::*;
use agent_common::h2::{H2Head, DIR_WRITE, END_STREAM, HEADERS, S_REQ_END};
use loona_hpack::Encoder;

fn head(kind: u32, stream: u32, dir: u32) -> H2Head {
    H2Head {
        kind,
        tgid: 7,
        fd: 9,
        target: 1,
        stream,
        dir: dir as u8,
        listen_fd: 3,
        ..H2Head::default()
    }
}

fn bytes<T>(v: &T) -> Vec<u8> {
    // SAFETY: test records are repr(C) plain integers.
    unsafe { std::slice::from_raw_parts((v as *const T).cast::<u8>(), std::mem::size_of::<T>()) }
        .to_vec()
}

/// The fragment records of one HEADERS frame carrying `block`, cut in `cut`-byte pieces.
fn fragments(block: &[u8], stream: u32, dir: u32, seq: &mut u32, cut: usize) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for (i, piece) in block.chunks(cut).enumerate() {
        let mut h = head(REC_FRAGMENT, stream, dir);
        h.ftype = HEADERS;
        h.fflags = END_HEADERS | if dir == DIR_READ { END_STREAM } else { 0 };
        h.seq = *seq;
        *seq += 1;
        h.frame_len = block.len() as u32;
        h.off = (i * cut) as u32;
        h.len = piece.len() as u32;
        let mut r = bytes(&h);
        r.extend_from_slice(piece);
        out.push(r);
    }
    out
}

fn end(stream: u32) -> Vec<u8> {
    let mut s = H2Stream {
        head: head(REC_STREAM_END, stream, DIR_WRITE),
        flags: S_REQ_END | S_RESP_HEADERS,
        req_start_ns: 10,
        resp_end_ns: 20,
        ..H2Stream::default()
    };
    s.msgs = [1, 3];
    bytes(&s)
}

#[test]
fn header_blocks_are_decoded_in_order_with_their_dynamic_tables() {
    let mut d = H2Decoder::default();
    assert!(d.record(&bytes(&head(REC_CONN_START, 0, 0))).is_none());
    let mut enc_req = Encoder::new();
    let mut enc_resp = Encoder::new();
    let (mut rs, mut ws) = (0, 0);
    let big = "x".repeat(3000);
    for stream in [1u32, 3, 5] {
        // The same large header each time: the second and third blocks refer to the
        // dynamic table the first one filled.
        let req = enc_req.encode(vec![
            (&b":method"[..], &b"POST"[..]),
            (b":path", format!("/pkg.Svc/Call{stream}").as_bytes()),
            (b"content-type", b"application/grpc"),
            (b"x-big", big.as_bytes()),
        ]);
        if stream == 1 {
            assert!(req.len() > 3000);
        } else {
            assert!(req.len() < 100, "{}", req.len());
        }
        for f in fragments(&req, stream, DIR_READ, &mut rs, 700) {
            assert!(d.record(&f).is_none());
        }
        let resp = enc_resp.encode(vec![
            (&b":status"[..], &b"200"[..]),
            (b"grpc-status", b"14"),
        ]);
        for f in fragments(&resp, stream, DIR_WRITE, &mut ws, 1000) {
            assert!(d.record(&f).is_none());
        }
        let x = d.record(&end(stream)).expect("an exchange");
        assert_eq!(x.method, "POST");
        assert_eq!(x.path, format!("/pkg.Svc/Call{stream}").into_bytes());
        assert_eq!(x.content_type, "application/grpc");
        assert_eq!((x.status, x.grpc_status), (Some(200), Some(14)));
        assert_eq!((x.tgid, x.listen_fd, x.stream.msgs), (7, 3, [1, 3]));
    }
    assert_eq!(d.losses.get(&1), None);
}

#[test]
fn a_lost_fragment_makes_the_connection_undecodable() {
    let mut d = H2Decoder::default();
    d.record(&bytes(&head(REC_CONN_START, 0, 0)));
    let mut enc = Encoder::new();
    let mut seq = 0;
    let req = enc.encode(vec![(&b":method"[..], &b"GET"[..]), (b":path", b"/a")]);
    let mut f = fragments(&req, 1, DIR_READ, &mut seq, 1000);
    // Fragment 0 never arrives: the next one is number 1.
    seq = 1;
    let req2 = enc.encode(vec![(&b":method"[..], &b"GET"[..]), (b":path", b"/b")]);
    f = fragments(&req2, 3, DIR_READ, &mut seq, 1000)
        .into_iter()
        .chain(f.drain(..0))
        .collect();
    for r in f {
        d.record(&r);
    }
    assert!(d.record(&end(3)).is_none());
    assert_eq!(
        d.losses[&1],
        Losses {
            blocks: 1,
            undecoded: 1
        }
    );
    // A new connection on the same socket starts over.
    d.record(&bytes(&head(REC_CONN_START, 0, 0)));
    let mut enc = Encoder::new();
    let mut seq = 0;
    let req = enc.encode(vec![(&b":method"[..], &b"GET"[..]), (b":path", b"/c")]);
    for r in fragments(&req, 1, DIR_READ, &mut seq, 1000) {
        d.record(&r);
    }
    let x = d.record(&end(1)).expect("decoded again");
    assert_eq!(x.path, b"/c");
    assert_eq!(x.status, None);
}

#[test]
fn short_or_unknown_records_are_malformed() {
    let mut d = H2Decoder::default();
    assert!(d.record(&[0u8; 10]).is_none());
    assert!(d.record(&bytes(&head(99, 0, 0))).is_none());
    assert_eq!(d.malformed, 2);
}
