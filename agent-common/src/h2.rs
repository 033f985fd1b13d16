//! HTTP/2 as the kernel follows it: the per-connection frame state, the per-stream
//! record, and the records sent to userspace (header-block fragments, stream ends,
//! connection starts and ends). Shared with the agent, which decodes the header blocks
//! (HPACK) and joins them with the stream records.
//!
//! The kernel reads frame headers (9 bytes: length, type, flags, stream id), skips
//! payloads, and copies only header-block payloads (HEADERS, CONTINUATION,
//! PUSH_PROMISE) to the ring buffer, in fragments numbered per direction so that a lost
//! one shows as a gap. DATA payloads are walked only to count gRPC's length-prefixed
//! messages.

/// The client connection preface starts with these 8 bytes (RFC 9113 §3.4), then
/// `TTP/2.0\r\n\r\nSM\r\n\r\n`: 24 bytes in all.
pub const PREFACE_WORD: u64 = crate::lit(b"PRI * HT");
pub const PREFACE_LEN: u32 = 24;

/// Frame types (RFC 9113 §6).
pub const DATA: u8 = 0;
pub const HEADERS: u8 = 1;
pub const RST_STREAM: u8 = 3;
pub const PUSH_PROMISE: u8 = 5;
pub const CONTINUATION: u8 = 9;
/// Not a frame: the preface's bytes, skipped like a payload.
pub const SKIP: u8 = 0xff;

/// Frame flags.
pub const END_STREAM: u8 = 0x1;
pub const END_HEADERS: u8 = 0x4;
pub const PADDED: u8 = 0x8;
pub const PRIORITY: u8 = 0x20;

/// Directions: what the server reads (requests) and writes (responses).
pub const DIR_READ: u32 = 0;
pub const DIR_WRITE: u32 = 1;

/// Header-block bytes one fragment record carries at most.
pub const CHUNK: usize = 2048;

/// Record kinds (`H2Head::kind`).
pub const REC_CONN_START: u32 = 1;
/// A fragment of a header block's frame payload: `len` bytes follow the head.
pub const REC_FRAGMENT: u32 = 2;
/// A stream ended (response END_STREAM, or reset): an `H2Stream`.
pub const REC_STREAM_END: u32 = 3;
/// The connection closed, or its frames were lost track of (`H2Head::fflags` = 1).
pub const REC_CONN_END: u32 = 4;

/// `H2Stream::flags`.
pub const S_REQ_END: u32 = 1;
pub const S_RESET_BY_CLIENT: u32 = 2;
pub const S_RESET_BY_SERVER: u32 = 4;
pub const S_RESP_HEADERS: u32 = 8;

/// The start of every HTTP/2 record.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct H2Head {
    pub kind: u32,
    pub tgid: u32,
    pub fd: u32,
    pub target: u32,
    pub stream: u32,
    /// `DIR_*`
    pub dir: u8,
    /// The frame's type and flags (fragments).
    pub ftype: u8,
    pub fflags: u8,
    pub _pad: u8,
    /// Fragment number in its direction (fragments).
    pub seq: u32,
    /// Payload length of the fragment's frame, and where in it the fragment starts.
    pub frame_len: u32,
    pub off: u32,
    /// Bytes following the head (fragments).
    pub len: u32,
    /// The listening socket the connection was accepted on (u32::MAX: unknown).
    pub listen_fd: u32,
    pub ts: u64,
}

/// One direction of a connection's frame stream.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct H2Dir {
    /// Payload bytes of the current frame still to come.
    pub left: u32,
    /// Bytes of the next frame header collected so far (a header split between calls).
    pub have: u32,
    /// The current frame's stream, type, flags, and payload length.
    pub stream: u32,
    pub ftype: u8,
    pub fflags: u8,
    /// The header block in progress ends its stream (END_STREAM on its HEADERS frame).
    pub block_end: u8,
    /// The current DATA frame's first bytes have been seen.
    pub seg: u8,
    pub frame_len: u32,
    /// Fragments sent in this direction.
    pub seq: u32,
    /// The stream of the header block in progress.
    pub block_stream: u32,
    pub _pad: u32,
    pub hdr: [u8; 24],
}

/// A connection's HTTP/2 state (inside `ConnState`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct H2Conn {
    pub dir: [H2Dir; 2],
    /// Streams opened (request HEADERS read), and ended by each direction (each field is
    /// written by one direction only: reads and writes may run on two CPUs at once).
    pub opened: u32,
    pub closed: [u32; 2],
    pub _pad: u32,
}

/// Key of the per-stream map.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct H2Key {
    /// `(tgid << 32) | fd`
    pub conn: u64,
    pub stream: u32,
    pub _pad: u32,
}

/// What the kernel learned about one stream; sent whole when it ends.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct H2Stream {
    pub head: H2Head,
    /// `S_*`
    pub flags: u32,
    /// Response DATA frames that carried bytes.
    pub data_frames: u32,
    /// Request HEADERS read; request END_STREAM read.
    pub req_start_ns: u64,
    pub req_end_ns: u64,
    /// Response HEADERS written; first response DATA with bytes; response END_STREAM.
    pub resp_start_ns: u64,
    pub first_data_ns: u64,
    pub resp_end_ns: u64,
    /// DATA payload bytes (padding included) per direction.
    pub req_bytes: u64,
    pub resp_bytes: u64,
    /// Gaps between response DATA frames: sum and maximum, and the last one's time.
    pub gap_sum_ns: u64,
    pub gap_max_ns: u64,
    pub last_data_ns: u64,
    /// gRPC messages begun per direction (each a 5-byte prefix: flag, length).
    pub msgs: [u32; 2],
    /// Per direction: message bytes still to come before the next prefix, and how much
    /// of a prefix split between frames or calls has been seen.
    pub msg_left: [u32; 2],
    pub pfx_have: [u32; 2],
    pub pfx: [[u8; 16]; 2],
}

/// (payload length, type, flags, stream id) of a 9-byte frame header.
#[inline(always)]
pub fn frame_header(h: &[u8]) -> (u32, u8, u8, u32) {
    if h.len() < 9 {
        return (0, 0, 0, 0);
    }
    let len = (h[0] as u32) << 16 | (h[1] as u32) << 8 | h[2] as u32;
    let stream = u32::from_be_bytes([h[5], h[6], h[7], h[8]]) & 0x7fff_ffff;
    (len, h[3], h[4], stream)
}

/// Whether the first two bytes of a connection are a TLS handshake record's (a
/// ClientHello: content type 22, version 3.x).
#[inline(always)]
pub const fn is_tls_record(b0: u8, b1: u8) -> bool {
    b0 == 0x16 && b1 == 0x03
}

/// The header-block bytes of a complete frame payload: HEADERS and PUSH_PROMISE carry
/// padding and priority or promised-stream fields around them (RFC 9113 §6.2, §6.6).
pub fn block_bytes(ftype: u8, flags: u8, payload: &[u8]) -> Option<&[u8]> {
    let mut start = 0usize;
    let mut end = payload.len();
    if ftype == HEADERS || ftype == PUSH_PROMISE {
        if flags & PADDED != 0 {
            let pad = *payload.first()? as usize;
            start = 1;
            end = end.checked_sub(pad)?;
        }
        if ftype == HEADERS && flags & PRIORITY != 0 {
            start += 5;
        }
        if ftype == PUSH_PROMISE {
            start += 4;
        }
    }
    payload.get(start..end)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_headers() {
        let h = [
            0,
            0x40,
            0x01,
            HEADERS,
            END_HEADERS | END_STREAM,
            0x80,
            0,
            0,
            5,
        ];
        assert_eq!(frame_header(&h), (0x4001, HEADERS, 5, 5));
        assert_eq!(frame_header(&h[..8]), (0, 0, 0, 0));
    }

    #[test]
    fn header_block_bytes() {
        assert_eq!(block_bytes(HEADERS, 0, b"abc"), Some(&b"abc"[..]));
        assert_eq!(
            block_bytes(HEADERS, PADDED | PRIORITY, b"\x02PPPPPabcXX"),
            Some(&b"abc"[..])
        );
        assert_eq!(
            block_bytes(PUSH_PROMISE, 0, b"\0\0\0\x02ab"),
            Some(&b"ab"[..])
        );
        assert_eq!(
            block_bytes(CONTINUATION, PADDED, b"\x05ab"),
            Some(&b"\x05ab"[..])
        );
        assert_eq!(block_bytes(HEADERS, PADDED, b"\x09ab"), None);
    }

    #[test]
    fn preface_and_tls() {
        assert_eq!(PREFACE_WORD, u64::from_le_bytes(*b"PRI * HT"));
        assert!(is_tls_record(0x16, 0x03));
        assert!(!is_tls_record(b'G', b'E'));
    }
}
