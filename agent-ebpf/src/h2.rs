//! HTTP/2 frames of a connection that started with the client preface, followed as far
//! as the agent needs: frame headers (length, type, flags, stream), END_STREAM and
//! RST_STREAM per stream, the time of each response DATA frame, gRPC's length-prefixed
//! messages inside DATA, and the header blocks' bytes, which go to userspace for HPACK
//! decoding (fragments numbered per direction: a lost one is a gap there).
//!
//! `http_h2` (and `tls_http_h2` for OpenSSL plaintext) walks a call's bytes a few frame
//! pieces per run and tail-calls itself for the rest; a call with more pieces than the
//! tail-call limit allows loses the connection's frame boundaries: it is counted and no
//! longer followed.
use agent_common::{
    h2::{
        frame_header, H2Dir, H2Head, H2Key, H2Stream, CHUNK, CONTINUATION, DATA, DIR_READ,
        DIR_WRITE, END_HEADERS, END_STREAM, HEADERS, PADDED, PREFACE_LEN, PUSH_PROMISE,
        REC_CONN_END, REC_CONN_START, REC_FRAGMENT, REC_STREAM_END, RST_STREAM, SKIP, S_REQ_END,
        S_RESET_BY_CLIENT, S_RESET_BY_SERVER, S_RESP_HEADERS,
    },
    ConnState, HttpJob, CONN_H2, CONN_NOT_HTTP,
};
use aya_ebpf::{
    helpers::bpf_probe_read_user_buf,
    macros::map,
    maps::{LruHashMap, PerCpuArray, ProgramArray, RingBuf},
    EbpfContext,
};

use crate::http::{conn_key, counters, iov_at, job_and_conn, min, set, wakeup, MAX_HOPS, TAIL_H2};

/// Frame pieces (a header, or a payload's bytes in one buffer) handled per program run.
const STEPS: usize = 12;
/// gRPC message prefixes or bodies walked per DATA piece.
const WALK: usize = 4;

#[map]
static H2_STREAMS: LruHashMap<H2Key, H2Stream> = LruHashMap::with_max_entries(16384, 0);

#[map]
static H2_EVENTS: RingBuf = RingBuf::with_byte_size(2 << 20, 0);

/// A record under construction: a head and, for fragments, the header-block bytes.
#[repr(C)]
pub struct Frag {
    head: H2Head,
    data: [u8; CHUNK],
}

#[map]
static H2_FRAG: PerCpuArray<Frag> = PerCpuArray::with_max_entries(1, 0);

const HEAD: usize = core::mem::size_of::<H2Head>();

const ZERO_HEAD: H2Head = H2Head {
    kind: REC_STREAM_END,
    tgid: 0,
    fd: 0,
    target: 0,
    stream: 0,
    dir: 0,
    ftype: 0,
    fflags: 0,
    _pad: 0,
    seq: 0,
    frame_len: 0,
    off: 0,
    len: 0,
    listen_fd: u32::MAX,
    ts: 0,
};

/// A new stream's record, inserted by reference (no memset on the stack).
static NEW_STREAM: H2Stream = H2Stream {
    head: ZERO_HEAD,
    flags: 0,
    data_frames: 0,
    req_start_ns: 0,
    req_end_ns: 0,
    resp_start_ns: 0,
    first_data_ns: 0,
    resp_end_ns: 0,
    req_bytes: 0,
    resp_bytes: 0,
    gap_sum_ns: 0,
    gap_max_ns: 0,
    last_data_ns: 0,
    msgs: [0; 2],
    msg_left: [0; 2],
    pfx_have: [0; 2],
    pfx: [[0; 16]; 2],
};

#[inline(always)]
fn dir(c: &mut ConnState, d: usize) -> &mut H2Dir {
    &mut c.h2.dir[d & 1]
}

#[inline(always)]
fn key(j: &HttpJob, stream: u32) -> H2Key {
    H2Key {
        conn: conn_key(j.tgid, j.fd),
        stream,
        _pad: 0,
    }
}

/// Send a connection record (start, end, lost) from the scratch head.
#[inline(always)]
fn conn_record(c: &ConnState, kind: u32, lost: u8, now: u64) {
    let Some(f) = H2_FRAG.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: this CPU's scratch record.
    let h = unsafe { &mut (*f).head };
    set(&mut h.kind, kind);
    set(&mut h.tgid, c.ev.tgid);
    set(&mut h.fd, c.ev.fd);
    set(&mut h.target, c.ev.req.target);
    set(&mut h.stream, 0);
    set(&mut h.dir, 0);
    set(&mut h.ftype, 0);
    set(&mut h.fflags, lost);
    set(&mut h.seq, 0);
    set(&mut h.frame_len, 0);
    set(&mut h.off, 0);
    set(&mut h.len, 0);
    set(&mut h.listen_fd, c.ev.listen_fd);
    set(&mut h.ts, now);
    let _ = H2_EVENTS.output::<H2Head>(&*h, wakeup(&H2_EVENTS, HEAD));
}

/// The preface was read: frames follow. Its 24 bytes are skipped as a payload.
#[inline(always)]
pub fn begin(c: &mut ConnState, j: &HttpJob) {
    c.phase = CONN_H2;
    c.pre_kind = 0;
    c.pre_len = 0;
    // The connection's identity, for its records.
    set(&mut c.ev.tgid, j.tgid);
    set(&mut c.ev.fd, j.fd);
    set(&mut c.ev.req.target, j.target);
    let r = dir(c, DIR_READ as usize);
    r.left = PREFACE_LEN;
    r.ftype = SKIP;
    if let Some(k) = counters(j.target) {
        // SAFETY: this CPU's counters.
        unsafe { (*k).h2_connections += 1 };
    }
    conn_record(c, REC_CONN_START, 0, j.now);
}

/// The connection ends (closed, or lost track of): its open streams end unanswered.
#[inline(always)]
pub fn end(conn: *mut ConnState, lost: bool) {
    // SAFETY: `conn` points at this connection's value in the LRU map.
    let c = unsafe { &mut *conn };
    c.phase = CONN_NOT_HTTP;
    let open =
        c.h2.opened
            .wrapping_sub(c.h2.closed[0])
            .wrapping_sub(c.h2.closed[1]) as u64;
    // Streams closed concurrently by the other direction can make this briefly negative.
    let open = if open > u32::MAX as u64 / 2 { 0 } else { open };
    if let Some(k) = counters(c.ev.req.target) {
        // SAFETY: this CPU's counters.
        unsafe {
            (*k).finished += open;
            (*k).unanswered += open;
            if lost {
                (*k).h2_lost += 1;
            }
        }
    }
    // SAFETY: plain helper call.
    let now = unsafe { aya_ebpf::helpers::bpf_ktime_get_ns() };
    conn_record(c, REC_CONN_END, lost as u8, now);
}

/// Bytes written without being looked at (sendfile): payload the frames announced.
#[inline(always)]
pub fn skip(conn: *mut ConnState, total: u64) {
    // SAFETY: `conn` points at this connection's value in the LRU map.
    let w = dir(unsafe { &mut *conn }, DIR_WRITE as usize);
    if (w.left as u64) < total {
        end(conn, true);
        return;
    }
    w.left -= total as u32;
}

/// `http_h2`: a few frame pieces of the job's call, then a tail call for the rest.
#[inline(always)]
pub fn frames<C: EbpfContext>(ctx: &C, tail: &ProgramArray) -> i32 {
    let Some((job, conn)) = job_and_conn() else {
        return 0;
    };
    // SAFETY: this CPU's job slot.
    let j = unsafe { &mut *job };
    let d = (j.kind & 1) as usize;
    for _ in 0..STEPS {
        if j.off >= j.len && !next_buf(j) {
            return 0;
        }
        if !step(conn, j, d) {
            return 0;
        }
    }
    if j.off >= j.len && !next_buf(j) {
        return 0;
    }
    j.hops += 1;
    if j.hops >= MAX_HOPS {
        end(conn, true);
        return 0;
    }
    // SAFETY: tail call with this program's own context.
    unsafe { tail.tail_call(ctx, TAIL_H2) };
    0
}

/// The next non-empty buffer of a vectored call; false when the call's bytes are done.
#[inline(always)]
fn next_buf(j: &mut HttpJob) -> bool {
    if j.iov == 0 {
        return false;
    }
    for _ in 0..4 {
        j.before += j.len;
        j.len = 0;
        let left = j.total.saturating_sub(j.before);
        let i = j.iov_idx + 1;
        if left == 0 || i >= j.iov_cnt {
            return false;
        }
        j.iov_idx = i;
        let Some((base, l)) = iov_at(j.iov, i) else {
            return false;
        };
        if l > 0 {
            j.buf = base;
            j.len = min(l, left);
            j.off = 0;
            return true;
        }
    }
    false
}

/// One piece: (the rest of) a frame header, then payload bytes in the current buffer.
/// False when the connection is no longer followed.
#[inline(always)]
fn step(conn: *mut ConnState, j: &mut HttpJob, d: usize) -> bool {
    // SAFETY: `conn` points at this connection's value in the LRU map.
    let c = unsafe { &mut *conn };
    if c.phase != CONN_H2 {
        return false;
    }
    if dir(c, d).left == 0 {
        let avail = j.len - j.off;
        let p = j.buf + j.off;
        let have = (dir(c, d).have & 7) as usize;
        let take = min(9 - have as u64, avail) as usize;
        let take = if take > 9 { 9 } else { take };
        let hdr = &mut dir(c, d).hdr;
        // SAFETY: at most 9 bytes at an offset below 8 of a 24-byte array; the helper
        // checks the user address.
        let ok = unsafe {
            let to = core::slice::from_raw_parts_mut(hdr.as_mut_ptr().add(have), take);
            bpf_probe_read_user_buf(p as *const u8, to).is_ok()
        };
        if !ok {
            end(conn, true);
            return false;
        }
        j.off += take as u64;
        let have = have + take;
        if have < 9 {
            dir(c, d).have = have as u32;
            return true;
        }
        dir(c, d).have = 0;
        let (len, t, f, s) = frame_header(&dir(c, d).hdr[..9]);
        begin_frame(c, j, d, len, t, f, s);
    }
    // The payload's bytes in this buffer (frames without a payload are done already).
    let left = dir(c, d).left as u64;
    let avail = j.len - j.off;
    if left == 0 || avail == 0 {
        return true;
    }
    let p = j.buf + j.off;
    let take = min(left, avail);
    let used = match dir(c, d).ftype {
        HEADERS | CONTINUATION | PUSH_PROMISE => fragment(c, j, d, p, take),
        DATA => data(c, j, d, p, take),
        _ => take,
    };
    j.off += used;
    let r = dir(c, d);
    r.left -= used as u32;
    if r.left == 0 {
        end_frame(c, j, d);
    }
    true
}

#[inline(always)]
fn begin_frame(c: &mut ConnState, j: &HttpJob, d: usize, len: u32, t: u8, f: u8, s: u32) {
    let r = dir(c, d);
    r.left = len;
    r.frame_len = len;
    r.ftype = t;
    r.fflags = f;
    r.stream = s;
    r.seg = 0;
    if t == HEADERS || t == PUSH_PROMISE {
        r.block_end = if t == HEADERS { f & END_STREAM } else { 0 };
        r.block_stream = s;
    }
    if t == HEADERS {
        headers(c, j, d, s);
    }
    if len == 0 {
        end_frame(c, j, d);
    }
}

/// A HEADERS frame: a new stream's request, trailers, or a response's head.
#[inline(always)]
fn headers(c: &mut ConnState, j: &HttpJob, d: usize, s: u32) {
    let k = key(j, s);
    if d == DIR_READ as usize {
        // Clients open odd-numbered streams; a known one gets trailers.
        if s & 1 == 0 || H2_STREAMS.get_ptr_mut(k).is_some() {
            return;
        }
        // By reference: a by-value argument would be copied with a memcpy loop.
        #[allow(clippy::needless_borrows_for_generic_args)]
        let inserted = H2_STREAMS.insert(k, &NEW_STREAM, 0);
        if inserted.is_err() {
            return;
        }
        let Some(st) = H2_STREAMS.get_ptr_mut(k) else {
            return;
        };
        // SAFETY: `st` points at the value just inserted.
        let st = unsafe { &mut *st };
        set(&mut st.head.tgid, j.tgid);
        set(&mut st.head.fd, j.fd);
        set(&mut st.head.target, j.target);
        set(&mut st.head.stream, s);
        set(&mut st.head.listen_fd, c.ev.listen_fd);
        set(&mut st.req_start_ns, j.now);
        c.h2.opened += 1;
        if let Some(k) = counters(j.target) {
            // SAFETY: this CPU's counters.
            unsafe { (*k).started += 1 };
        }
    } else if let Some(st) = H2_STREAMS.get_ptr_mut(k) {
        // SAFETY: `st` points at this stream's value.
        let st = unsafe { &mut *st };
        if st.resp_start_ns == 0 {
            st.resp_start_ns = j.now;
        }
        st.flags |= S_RESP_HEADERS;
    }
}

#[inline(always)]
fn end_frame(c: &mut ConnState, j: &HttpJob, d: usize) {
    let r = dir(c, d);
    let (t, f, s) = (r.ftype, r.fflags, r.stream);
    match t {
        HEADERS | CONTINUATION => {
            if f & END_HEADERS != 0 && r.block_end != 0 {
                r.block_end = 0;
                let s = r.block_stream;
                end_stream(c, j, d, s);
            }
        }
        DATA => {
            if f & END_STREAM != 0 {
                end_stream(c, j, d, s);
            }
        }
        RST_STREAM => reset(c, j, d, s),
        _ => {}
    }
}

#[inline(always)]
fn end_stream(c: &mut ConnState, j: &HttpJob, d: usize, s: u32) {
    let k = key(j, s);
    let Some(st) = H2_STREAMS.get_ptr_mut(k) else {
        return;
    };
    // SAFETY: `st` points at this stream's value.
    let v = unsafe { &mut *st };
    if d == DIR_READ as usize {
        v.req_end_ns = j.now;
        v.flags |= S_REQ_END;
        return;
    }
    v.resp_end_ns = j.now;
    done(c, j, d, st, &k);
}

#[inline(always)]
fn reset(c: &mut ConnState, j: &HttpJob, d: usize, s: u32) {
    let k = key(j, s);
    let Some(st) = H2_STREAMS.get_ptr_mut(k) else {
        return;
    };
    // SAFETY: `st` points at this stream's value.
    let v = unsafe { &mut *st };
    v.flags |= if d == DIR_READ as usize {
        S_RESET_BY_CLIENT
    } else {
        S_RESET_BY_SERVER
    };
    v.resp_end_ns = j.now;
    done(c, j, d, st, &k);
}

/// The stream ended: its record goes to userspace, its state away.
#[inline(always)]
fn done(c: &mut ConnState, j: &HttpJob, d: usize, st: *mut H2Stream, k: &H2Key) {
    // SAFETY: `st` points at this stream's value.
    let v = unsafe { &mut *st };
    v.head.ts = j.now;
    let answered = v.flags & S_RESP_HEADERS != 0;
    let target = v.head.target;
    let sent = H2_EVENTS
        .output::<H2Stream>(&*v, wakeup(&H2_EVENTS, core::mem::size_of::<H2Stream>()))
        .is_ok();
    let _ = H2_STREAMS.remove(*k);
    c.h2.closed[d & 1] += 1;
    if let Some(n) = counters(target) {
        // SAFETY: this CPU's counters.
        unsafe {
            (*n).finished += 1;
            if !answered {
                (*n).unanswered += 1;
            }
            if !sent {
                (*n).dropped += 1;
            }
        }
    }
}

/// Header-block bytes: one fragment record of up to `CHUNK` bytes.
#[inline(always)]
fn fragment(c: &mut ConnState, j: &HttpJob, d: usize, p: u64, take: u64) -> u64 {
    let n = min(take, CHUNK as u64) as usize;
    let n = if n > CHUNK { CHUNK } else { n };
    let listen_fd = c.ev.listen_fd;
    let r = dir(c, d);
    let seq = r.seq;
    r.seq = seq.wrapping_add(1);
    let Some(f) = H2_FRAG.get_ptr_mut(0) else {
        return n as u64;
    };
    // SAFETY: this CPU's scratch record; `n` is at most CHUNK, the size of `data`.
    let ok = unsafe {
        let to = core::slice::from_raw_parts_mut((*f).data.as_mut_ptr(), n);
        bpf_probe_read_user_buf(p as *const u8, to).is_ok()
    };
    // SAFETY: as above.
    let h = unsafe { &mut (*f).head };
    set(&mut h.kind, REC_FRAGMENT);
    set(&mut h.tgid, j.tgid);
    set(&mut h.fd, j.fd);
    set(&mut h.target, j.target);
    set(&mut h.stream, r.stream);
    set(&mut h.dir, d as u8);
    set(&mut h.ftype, r.ftype);
    set(&mut h.fflags, r.fflags);
    set(&mut h.seq, seq);
    set(&mut h.frame_len, r.frame_len);
    set(&mut h.off, r.frame_len - r.left);
    set(&mut h.len, n as u32);
    set(&mut h.listen_fd, listen_fd);
    set(&mut h.ts, j.now);
    let sent = ok && {
        // SAFETY: the record's head and its first `n` data bytes, inside the value.
        let bytes = unsafe { core::slice::from_raw_parts(f as *const u8, HEAD + n) };
        H2_EVENTS
            .output::<[u8]>(bytes, wakeup(&H2_EVENTS, HEAD + n))
            .is_ok()
    };
    if !sent {
        // The gap in `seq` tells userspace; the count tells the operator.
        if let Some(k) = counters(j.target) {
            // SAFETY: this CPU's counters.
            unsafe { (*k).h2_lost += 1 };
        }
    }
    n as u64
}

/// DATA payload bytes: counted, timed (responses), and walked for gRPC message
/// prefixes. Returns how many were taken (fewer than `take` when more messages start in
/// them than one walk covers: the rest is the next piece).
#[inline(always)]
fn data(c: &mut ConnState, j: &HttpJob, d: usize, p: u64, take: u64) -> u64 {
    let r = dir(c, d);
    let first_piece = r.seg == 0;
    r.seg = 1;
    let padded = r.fflags & PADDED != 0;
    let k = key(j, r.stream);
    let Some(st) = H2_STREAMS.get_ptr_mut(k) else {
        return take;
    };
    // SAFETY: `st` points at this stream's value.
    let st = unsafe { &mut *st };
    if first_piece && d == DIR_WRITE as usize {
        if st.data_frames == 0 {
            st.first_data_ns = j.now;
        } else {
            let gap = j.now.saturating_sub(st.last_data_ns);
            st.gap_sum_ns += gap;
            if gap > st.gap_max_ns {
                st.gap_max_ns = gap;
            }
        }
        st.data_frames += 1;
        st.last_data_ns = j.now;
    }
    let mut pos: u64 = if padded { take } else { 0 };
    let i = d & 1;
    for _ in 0..WALK {
        if pos >= take {
            break;
        }
        let left = st.msg_left[i] as u64;
        if left > 0 {
            let t = min(left, take - pos);
            st.msg_left[i] = (left - t) as u32;
            pos += t;
            continue;
        }
        let have = (st.pfx_have[i] & 7) as usize;
        let t = min(5u64.saturating_sub(have as u64), take - pos) as usize;
        let t = if t > 5 { 5 } else { t };
        // SAFETY: at most 5 bytes at an offset below 8 of a 16-byte array; the helper
        // checks the user address.
        let ok = unsafe {
            let to = core::slice::from_raw_parts_mut(st.pfx[i].as_mut_ptr().add(have), t);
            bpf_probe_read_user_buf((p + pos) as *const u8, to).is_ok()
        };
        if !ok {
            pos = take;
            break;
        }
        pos += t as u64;
        let have = have + t;
        if have >= 5 {
            st.msgs[i] += 1;
            let b = &st.pfx[i];
            st.msg_left[i] = u32::from_be_bytes([b[1], b[2], b[3], b[4]]);
            st.pfx_have[i] = 0;
        } else {
            st.pfx_have[i] = have as u32;
        }
    }
    if d == DIR_READ as usize {
        st.req_bytes += pos;
    } else {
        st.resp_bytes += pos;
    }
    pos
}
