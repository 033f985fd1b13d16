//! HTTP/2 records from the kernel (`agent_common::h2`) → completed exchanges. Header-block
//! fragments are put back together per connection and direction and HPACK-decoded in
//! order, each direction with its own dynamic table; a stream's end record is then joined
//! with what its header blocks said. A gap in a direction's fragment numbers (a fragment
//! the ring buffer had no room for), or a block that does not decode, makes the
//! connection's tables unusable: its streams are counted as undecoded from then on, never
//! guessed.
use std::collections::HashMap;

use agent_common::h2::{
    self as h2, H2Head, H2Stream, DIR_READ, END_HEADERS, PUSH_PROMISE, REC_CONN_END,
    REC_CONN_START, REC_FRAGMENT, REC_STREAM_END, S_RESET_BY_CLIENT, S_RESP_HEADERS,
};
use loona_hpack::Decoder;

/// A stream as its header blocks and the kernel's record describe it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Exchange {
    pub target: u32,
    pub tgid: u32,
    pub listen_fd: u32,
    pub method: String,
    pub path: Vec<u8>,
    /// The request's content-type.
    pub content_type: String,
    /// The response's `:status` (absent when no response head was written).
    pub status: Option<u16>,
    pub response_content_type: String,
    /// `grpc-status` from the response head (trailers-only) or trailers.
    pub grpc_status: Option<u32>,
    pub reset_by_client: bool,
    pub stream: H2Stream,
}

/// Header blocks longer than this are not kept (the stream is undecoded).
const MAX_BLOCK: usize = 256 * 1024;

struct Dir {
    hpack: Decoder<'static>,
    next_seq: u32,
    /// The frame payload being put together, and its type, flags and stream.
    frame: Vec<u8>,
    ftype: u8,
    fflags: u8,
    /// The header block being put together (HEADERS or PUSH_PROMISE, then CONTINUATION).
    block: Vec<u8>,
    block_stream: u32,
    block_type: u8,
}

impl Dir {
    fn new() -> Dir {
        Dir {
            hpack: Decoder::new(),
            next_seq: 0,
            frame: Vec::new(),
            ftype: 0,
            fflags: 0,
            block: Vec::new(),
            block_stream: 0,
            block_type: 0,
        }
    }
}

#[derive(Default)]
struct Heads {
    method: String,
    path: Vec<u8>,
    content_type: String,
    /// Request blocks seen (the first is the request's head, later ones trailers).
    request_blocks: u32,
    status: Option<u16>,
    response_content_type: String,
    grpc_status: Option<u32>,
}

struct Conn {
    target: u32,
    usable: bool,
    dirs: [Dir; 2],
    streams: HashMap<u32, Heads>,
}

impl Conn {
    fn new(target: u32) -> Conn {
        Conn {
            target,
            usable: true,
            dirs: [Dir::new(), Dir::new()],
            streams: HashMap::new(),
        }
    }
}

/// Per-target counts of what could not be used.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Losses {
    /// Header blocks lost (a fragment missing, or a block that did not decode).
    pub blocks: u64,
    /// Streams that ended on a connection whose tables were unusable.
    pub undecoded: u64,
}

#[derive(Default)]
pub struct H2Decoder {
    conns: HashMap<u64, Conn>,
    pub losses: HashMap<u32, Losses>,
    /// Records too short or of an unknown kind.
    pub malformed: u64,
}

fn head_of(bytes: &[u8]) -> Option<H2Head> {
    if bytes.len() < std::mem::size_of::<H2Head>() {
        return None;
    }
    // SAFETY: at least size_of::<H2Head>() bytes; H2Head is repr(C) integers, valid for
    // any bit pattern; read_unaligned has no alignment requirement.
    Some(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<H2Head>()) })
}

fn stream_of(bytes: &[u8]) -> Option<H2Stream> {
    if bytes.len() < std::mem::size_of::<H2Stream>() {
        return None;
    }
    // SAFETY: as in `head_of`, for H2Stream.
    Some(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<H2Stream>()) })
}

fn key(h: &H2Head) -> u64 {
    (u64::from(h.tgid) << 32) | u64::from(h.fd)
}

impl H2Decoder {
    /// One record; a completed exchange when it ends a decodable stream.
    pub fn record(&mut self, bytes: &[u8]) -> Option<Exchange> {
        let Some(h) = head_of(bytes) else {
            self.malformed += 1;
            return None;
        };
        match h.kind {
            REC_CONN_START => {
                self.conns.insert(key(&h), Conn::new(h.target));
                None
            }
            REC_CONN_END => {
                // Frames lost track of (`fflags` 1) are the kernel's count.
                self.conns.remove(&key(&h));
                None
            }
            REC_FRAGMENT => {
                let data = bytes.get(std::mem::size_of::<H2Head>()..)?;
                let Some(data) = data.get(..h.len as usize) else {
                    self.malformed += 1;
                    return None;
                };
                self.fragment(&h, data);
                None
            }
            REC_STREAM_END => match stream_of(bytes) {
                Some(s) => self.stream_end(s),
                None => {
                    self.malformed += 1;
                    None
                }
            },
            _ => {
                self.malformed += 1;
                None
            }
        }
    }

    fn lose(&mut self, k: u64) {
        if let Some(c) = self.conns.get_mut(&k) {
            if c.usable {
                c.usable = false;
                self.losses.entry(c.target).or_default().blocks += 1;
            }
        }
    }

    fn fragment(&mut self, h: &H2Head, data: &[u8]) {
        let k = key(h);
        // A connection whose start record was lost starts here, unusable unless this is
        // its very first fragment.
        let c = self.conns.entry(k).or_insert_with(|| {
            let mut c = Conn::new(h.target);
            c.usable = h.seq == 0;
            c
        });
        if apply(c, h, data).is_err() {
            self.lose(k);
        }
    }

    fn stream_end(&mut self, s: H2Stream) -> Option<Exchange> {
        let k = key(&s.head);
        let c = self.conns.get_mut(&k);
        let heads = c.as_ref().and_then(|c| c.usable.then_some(()));
        let (Some(c), Some(())) = (c, heads) else {
            self.losses.entry(s.head.target).or_default().undecoded += 1;
            return None;
        };
        let Some(h) = c.streams.remove(&s.head.stream) else {
            // Its request head never decoded here (lost before the connection was seen).
            self.losses.entry(s.head.target).or_default().undecoded += 1;
            return None;
        };
        if h.request_blocks == 0 {
            self.losses.entry(s.head.target).or_default().undecoded += 1;
            return None;
        }
        let status = if s.flags & S_RESP_HEADERS != 0 {
            h.status
        } else {
            None
        };
        Some(Exchange {
            target: s.head.target,
            tgid: s.head.tgid,
            listen_fd: s.head.listen_fd,
            method: h.method,
            path: h.path,
            content_type: h.content_type,
            status,
            response_content_type: h.response_content_type,
            grpc_status: h.grpc_status,
            reset_by_client: s.flags & S_RESET_BY_CLIENT != 0,
            stream: s,
        })
    }

    /// Forget the connections of a target no longer traced.
    pub fn remove_target(&mut self, index: u32) {
        self.conns.retain(|_, c| c.target != index);
        self.losses.remove(&index);
    }
}

/// A fragment applied to its connection; `Err` when the connection's tables can no
/// longer be trusted (a gap, a malformed frame, a block that does not decode).
fn apply(c: &mut Conn, h: &H2Head, data: &[u8]) -> Result<(), ()> {
    let d = usize::from(h.dir & 1);
    let dir = &mut c.dirs[d];
    let in_order = h.seq == dir.next_seq;
    dir.next_seq = h.seq.wrapping_add(1);
    if !in_order {
        return Err(());
    }
    if !c.usable {
        return Ok(());
    }
    if h.off == 0 {
        dir.frame.clear();
        dir.ftype = h.ftype;
        dir.fflags = h.fflags;
    }
    if dir.frame.len() != h.off as usize || dir.frame.len() + data.len() > MAX_BLOCK {
        return Err(());
    }
    dir.frame.extend_from_slice(data);
    if dir.frame.len() < h.frame_len as usize {
        return Ok(());
    }
    // The frame is whole: its header-block bytes join the block.
    if dir.ftype != h2::CONTINUATION {
        dir.block.clear();
        dir.block_stream = h.stream;
        dir.block_type = dir.ftype;
    }
    let bytes = h2::block_bytes(dir.ftype, dir.fflags, &dir.frame).ok_or(())?;
    if dir.block.len() + bytes.len() > MAX_BLOCK {
        return Err(());
    }
    dir.block.extend_from_slice(bytes);
    if dir.fflags & END_HEADERS == 0 {
        return Ok(());
    }
    let mut fields: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    dir.hpack
        .decode_with_cb(&dir.block, |n, v| {
            fields.push((n.into_owned(), v.into_owned()))
        })
        .map_err(|_| ())?;
    // Promised streams' requests only keep the table in step.
    if dir.block_type == PUSH_PROMISE {
        return Ok(());
    }
    let heads = c.streams.entry(dir.block_stream).or_default();
    let request = d == DIR_READ as usize;
    if request {
        heads.request_blocks += 1;
        if heads.request_blocks > 1 {
            return Ok(());
        }
    }
    for (n, v) in fields {
        let v = String::from_utf8_lossy(&v);
        match n.as_slice() {
            b":method" => heads.method = v.into_owned(),
            b":path" => heads.path = v.as_bytes().to_vec(),
            b":status" => heads.status = v.parse().ok(),
            b"content-type" if request => heads.content_type = v.into_owned(),
            b"content-type" => heads.response_content_type = v.into_owned(),
            b"grpc-status" => heads.grpc_status = v.parse().ok(),
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
