//! HTTP/1.x request tracing on targeted processes' accepted sockets.
//!
//! Runs inside the syscall programs, for targeted threads and socket-related calls only.
//! accept/accept4 mark a server-side connection; reads are classified as the start of a
//! request (a request line, possibly split over several reads: its first bytes wait in
//! the connection's state), more of its head, or its body; the write carrying the status
//! line starts the response, whose head may span several writes; later writes are body
//! data (one SSE event or chunk each). A request ends when its Content-Length is written,
//! when the terminating chunk is written, when the next request arrives, when the
//! response switches protocols (101), or at close — whichever comes first — and then one
//! event goes to the ring buffer.
//!
//! The cheap cases (body bytes of a request or a response) are handled in `sys_exit`
//! itself. What needs bytes classified goes on by tail calls: `http_start` reads a
//! request line (the bytes pending from earlier reads plus up to `SCAN` new ones), and
//! `http_head` scans one window of a head (the bytes carried from earlier calls plus up to
//! `SCAN` new ones), tail-calling itself for the next window of a longer head (up to
//! `HEAD_MAX` bytes). Both use the parser in `agent_common::http`. Each program is
//! verified on its own, and everything in them is inlined (no calls next to tail calls),
//! so the syscall hooks stay small.
use agent_common::http::{self as h, RequestStart, Window, HEAD_MAX, PRE, SCAN};
use agent_common::{
    h2::{self as h2c, H2Conn, H2Dir},
    low_bytes, method, ConnState, HttpCounters, HttpEvent, HttpJob, HttpRequest, CONN_H2,
    CONN_IDLE, CONN_NEW, CONN_NOT_HTTP, CONN_REQUEST, CONN_RESPONSE, CONN_RESPONSE_HEAD, END_CLOSE,
    END_CONTENT_LENGTH, END_LAST_CHUNK, END_NEXT_REQUEST, END_UPGRADE, HTTP_CHUNKED, HTTP_CL_KNOWN,
    HTTP_PATH_MAX, HTTP_PATH_TRUNCATED, HTTP_TARGETS, HTTP_TARGET_MASK, HTTP_V10, JOB_READ,
    JOB_WRITE, PRE_CARRY, PRE_NONE, PRE_PENDING, TLS_NONE, TLS_SEEN, TLS_UNSEEN,
};
use aya_ebpf::{
    helpers::{
        bpf_probe_read_kernel, bpf_probe_read_kernel_buf, bpf_probe_read_user,
        bpf_probe_read_user_buf,
    },
    macros::{map, raw_tracepoint, uretprobe},
    maps::{LruHashMap, PerCpuArray, ProgramArray, RingBuf},
    programs::{RawTracePointContext, RetProbeContext},
    EbpfContext,
};

const NR_READ: u32 = 0;
const NR_WRITE: u32 = 1;
const NR_CLOSE: u32 = 3;
const NR_READV: u32 = 19;
const NR_WRITEV: u32 = 20;
const NR_SENDFILE: u32 = 40;
const NR_ACCEPT: u32 = 43;
const NR_SENDTO: u32 = 44;
const NR_RECVFROM: u32 = 45;
const NR_SENDMSG: u32 = 46;
const NR_RECVMSG: u32 = 47;
const NR_ACCEPT4: u32 = 288;

/// Scratch buffer bytes: a window (at most `PRE + SCAN`) plus slack for word reads past
/// its end, rounded to a power of two so offsets can be masked into it.
const BUF: usize = 1024;
/// Tail calls one socket call may take (the kernel allows 33).
pub(crate) const MAX_HOPS: u32 = 30;
/// `HTTP_TAIL` and `HTTP_TAIL_TLS` indexes.
const TAIL_START: u32 = 0;
const TAIL_HEAD: u32 = 1;
pub(crate) const TAIL_H2: u32 = 2;

#[map]
pub(crate) static CONNS: LruHashMap<u64, ConnState> = LruHashMap::with_max_entries(16384, 0);

const RING_BYTES: u32 = 2 << 20;
/// Unread bytes at which a record wakes the reader (a quarter of the smaller ring: the
/// agent sizes the request ring to 1 MiB at load).
const RING_WAKEUP_BYTES: u64 = 256 << 10;
/// Ring buffer records carry an 8-byte header, and sizes round up to 8.
const RING_RECORD_HEADER: u64 = 8;
const BPF_RB_AVAIL_DATA: u64 = 0;
const BPF_RB_NO_WAKEUP: u64 = 1;
const BPF_RB_FORCE_WAKEUP: u64 = 2;

#[map]
pub(crate) static HTTP_EVENTS: RingBuf = RingBuf::with_byte_size(RING_BYTES, 0);

/// Whether a record of `len` bytes is to wake the reader: only the record that takes the
/// unread bytes past `RING_WAKEUP_BYTES`. The reader drains on a timer besides. A wake-up
/// is an interrupt (on a VM, an exit to the hypervisor): sent for every record while the
/// ring is that full, it cost several µs per request as soon as the reader lagged.
#[inline(always)]
pub(crate) fn wakeup(ring: &RingBuf, len: usize) -> u64 {
    let unread = ring.query(BPF_RB_AVAIL_DATA);
    let after = unread + ((len as u64 + RING_RECORD_HEADER + 7) & !7);
    if unread <= RING_WAKEUP_BYTES && after > RING_WAKEUP_BYTES {
        BPF_RB_FORCE_WAKEUP
    } else {
        BPF_RB_NO_WAKEUP
    }
}

#[map]
static HTTP_COUNTERS: PerCpuArray<HttpCounters> = PerCpuArray::with_max_entries(HTTP_TARGETS, 0);

/// `http_start` at index 0, `http_head` at 1 and `http_h2` at 2 (set by the agent before
/// it turns tracing on).
#[map]
static HTTP_TAIL: ProgramArray = ProgramArray::with_max_entries(3, 0);

/// The same programs for the plaintext of the OpenSSL return probes (a tail call stays
/// within one program type): `tls_http_start`, `tls_http_head`, `tls_http_h2`.
#[map]
pub(crate) static HTTP_TAIL_TLS: ProgramArray = ProgramArray::with_max_entries(3, 0);

/// The socket call being scanned, handed from `sys_exit` (or an OpenSSL return probe)
/// to the tail-called programs.
#[map]
static JOB: PerCpuArray<HttpJob> = PerCpuArray::with_max_entries(1, 0);

/// One window of bytes under scan, and what the scan found (in the map value rather than
/// in registers, so the verifier's states converge after each branch of the scan).
#[repr(C)]
pub struct Scratch {
    buf: [u8; BUF],
    /// Valid bytes in `buf`. Compared against from memory, so that no verifier path
    /// carries a range of its own for it.
    n: u64,
    facts: h::HeadFacts,
}

#[map]
static SCRATCH: PerCpuArray<Scratch> = PerCpuArray::with_max_entries(1, 0);

const ZERO_REQ: HttpRequest = HttpRequest {
    target: 0,
    status: 0,
    method: 0,
    flags: 0,
    path_len: 0,
    chunks: 0,
    req_start_ns: 0,
    req_end_ns: 0,
    resp_start_ns: 0,
    first_data_ns: 0,
    resp_end_ns: 0,
    req_bytes: 0,
    req_header_bytes: 0,
    resp_bytes: 0,
    resp_header_bytes: 0,
    gap_sum_ns: 0,
    gap_max_ns: 0,
    path: [0; HTTP_PATH_MAX],
};

/// A new connection's state, by reference (building it on the stack would be a memset).
static NEW_CONN: ConnState = ConnState {
    phase: CONN_NEW,
    pre_kind: PRE_NONE,
    pre_len: 0,
    req_head_open: 0,
    remaining: 0,
    resp_cl: -1,
    last_data_ns: 0,
    pending_ns: 0,
    tls: TLS_NONE,
    _pad: 0,
    pre: [0; PRE],
    ev: HttpEvent {
        tgid: 0,
        fd: 0,
        end: 0,
        listen_fd: u32::MAX,
        req: ZERO_REQ,
    },
    h2: H2Conn {
        dir: [ZERO_DIR; 2],
        opened: 0,
        closed: [0; 2],
        _pad: 0,
    },
};

const ZERO_DIR: H2Dir = H2Dir {
    left: 0,
    have: 0,
    stream: 0,
    ftype: 0,
    fflags: 0,
    block_end: 0,
    seg: 0,
    frame_len: 0,
    seq: 0,
    block_stream: 0,
    _pad: 0,
    hdr: [0; 24],
};

/// The socket calls this module looks at.
#[inline(always)]
pub fn is_socket_call(nr: u32) -> bool {
    matches!(
        nr,
        NR_READ
            | NR_WRITE
            | NR_CLOSE
            | NR_READV
            | NR_WRITEV
            | NR_SENDFILE
            | NR_ACCEPT
            | NR_SENDTO
            | NR_RECVFROM
            | NR_SENDMSG
            | NR_RECVMSG
            | NR_ACCEPT4
    )
}

/// First three syscall arguments from the `sys_enter` raw tracepoint's `pt_regs`. The
/// x86_64 `struct pt_regs` layout is fixed by the syscall entry code: dx, si, di are the
/// consecutive words at offsets 96, 104 and 112.
#[inline(always)]
pub fn syscall_args(ctx: &RawTracePointContext) -> [u64; 3] {
    let regs: u64 = ctx.arg(0);
    // SAFETY: bpf_probe_read_kernel checks the address; a failure yields zeros.
    match unsafe { bpf_probe_read_kernel((regs + 96) as *const [u64; 3]) } {
        Ok([dx, si, di]) => [di, si, dx],
        Err(_) => [0; 3],
    }
}

/// A store LLVM will not fuse with its neighbours into a `memset` call (which the BPF
/// target emits as a byte loop the verifier then walks one byte at a time).
#[inline(always)]
pub(crate) fn set<T>(place: &mut T, value: T) {
    // SAFETY: `place` is a valid, aligned, exclusive reference.
    unsafe { core::ptr::write_volatile(place, value) }
}

#[inline(always)]
pub(crate) fn conn_key(tgid: u32, fd: u32) -> u64 {
    ((tgid as u64) << 32) | fd as u64
}

#[inline(always)]
pub(crate) fn counters(target: u32) -> Option<*mut HttpCounters> {
    HTTP_COUNTERS.get_ptr_mut(target & HTTP_TARGET_MASK)
}

#[inline(always)]
pub(crate) fn min(a: u64, b: u64) -> u64 {
    if a < b {
        a
    } else {
        b
    }
}

/// A targeted thread enters close(fd). Handled at entry, while the fd still names this
/// connection: once close releases it, another thread's accept can get the same number,
/// and an exit handler would then delete the new connection's state.
#[inline(always)]
pub fn on_close(tgid: u32, fd: u32) {
    let key = conn_key(tgid, fd);
    if let Some(conn) = CONNS.get_ptr_mut(key) {
        // SAFETY: `conn` points at this connection's value in the LRU map.
        if unsafe { (*conn).phase } == CONN_H2 {
            crate::h2::end(conn, false);
        } else {
            finish(conn, tgid, fd, END_CLOSE);
        }
        let _ = CONNS.remove(key);
    }
}

/// `iov[i]` of a user iovec array: (base, len).
#[inline(always)]
pub(crate) fn iov_at(iov: u64, i: u64) -> Option<(u64, u64)> {
    // SAFETY: bpf_probe_read_user checks the address.
    unsafe { bpf_probe_read_user((iov + i * 16) as *const [u64; 2]) }
        .ok()
        .map(|[b, l]| (b, l))
}

/// (msg_iov, msg_iovlen) of a user `struct msghdr`.
#[inline(always)]
fn msg_iov(msg: u64) -> Option<(u64, u64)> {
    // SAFETY: bpf_probe_read_user checks the address; msg_iov and msg_iovlen are the
    // words at offsets 16 and 24 of the x86_64 ABI struct msghdr.
    unsafe { bpf_probe_read_user((msg + 16) as *const [u64; 2]) }
        .ok()
        .map(|[iov, n]| (iov, n))
}

/// Handle a finished socket call of a targeted thread.
#[inline(always)]
pub fn on_exit(
    ctx: &RawTracePointContext,
    tgid: u32,
    target: u32,
    nr: u32,
    ret: i64,
    args: &[u64; 3],
    now: u64,
) {
    match nr {
        NR_ACCEPT | NR_ACCEPT4 => {
            if ret >= 0 {
                accepted(tgid, target, ret as u32, args[0] as u32);
            }
            return;
        }
        // close is handled at entry (see `on_close`).
        NR_CLOSE => return,
        _ => {}
    }
    if ret <= 0 {
        return;
    }
    let fd = args[0] as u32;
    let Some(conn) = CONNS.get_ptr_mut(conn_key(tgid, fd)) else {
        return;
    };
    // SAFETY: `conn` points at this connection's value in the LRU map.
    if unsafe { (*conn).tls } != TLS_NONE {
        // Ciphertext: the OpenSSL probes see this connection's plaintext (or nobody
        // does). A call made inside a probed OpenSSL call ties its SSL to this socket.
        crate::tls::tie(fd);
        return;
    }
    let total = ret as u64;
    let read = matches!(nr, NR_READ | NR_RECVFROM | NR_READV | NR_RECVMSG);
    // The first buffer of the call: (base, bytes of the call in it), and the iovec array.
    let (buf, len, iov, iov_cnt) = match nr {
        NR_READ | NR_RECVFROM | NR_WRITE | NR_SENDTO => (args[1], total, 0, 0),
        NR_READV | NR_WRITEV | NR_RECVMSG | NR_SENDMSG => {
            let v = if nr == NR_READV || nr == NR_WRITEV {
                Some((args[1], args[2]))
            } else {
                msg_iov(args[1])
            };
            let Some((iov, cnt)) = v else {
                return;
            };
            if cnt == 0 || cnt > 1024 {
                return;
            }
            let Some((mut base, mut l)) = iov_at(iov, 0) else {
                return;
            };
            let mut idx = 0;
            // Writers may lead with an empty buffer: look at the next one.
            if l == 0 && cnt > 1 {
                (base, l) = iov_at(iov, 1).unwrap_or((0, 0));
                idx = 1;
            }
            // Only the first buffer's bytes are inspected at first: reading `total`
            // bytes from it could run past its end.
            (base, min(total, l), iov, cnt | (idx << 32))
        }
        // sendfile: body bytes only, nothing to inspect.
        _ => (0, 0, 0, 0),
    };
    let call = Call {
        tgid,
        fd,
        target,
        read,
        total,
        buf,
        len,
        iov,
        iov_cnt,
        now,
    };
    dispatch(ctx, &HTTP_TAIL, conn, &call);
}

/// The bytes of one socket call (or of one OpenSSL call's plaintext).
pub(crate) struct Call {
    pub tgid: u32,
    pub fd: u32,
    pub target: u32,
    pub read: bool,
    /// Bytes the call moved.
    pub total: u64,
    /// The first buffer and the call's bytes in it (0: none to look at).
    pub buf: u64,
    pub len: u64,
    /// Vectored calls: the iovec array, and its length with the first buffer's index in
    /// the high half.
    pub iov: u64,
    pub iov_cnt: u64,
    pub now: u64,
}

/// Classify a call's bytes on connection `conn`: the cheap cases here, the rest by a
/// tail call into `tail` (the programs of the caller's type).
#[inline(always)]
pub(crate) fn dispatch<C: EbpfContext>(
    ctx: &C,
    tail: &ProgramArray,
    conn: *mut ConnState,
    call: &Call,
) {
    let Call {
        tgid,
        fd,
        target: _,
        read,
        total,
        buf,
        len,
        iov,
        iov_cnt,
        now,
    } = *call;
    // SAFETY: `conn` points at this connection's value in the LRU map.
    let c = unsafe { &mut *conn };
    let phase = c.phase;
    if phase == CONN_NOT_HTTP {
        return;
    }
    if phase == CONN_H2 {
        if buf == 0 {
            // sendfile: payload bytes the frames announced.
            crate::h2::skip(conn, total);
            return;
        }
        if job(
            call,
            buf,
            len,
            iov_cnt,
            if read { JOB_READ } else { JOB_WRITE },
        ) {
            // SAFETY: tail call with the caller's own context.
            unsafe { tail.tail_call(ctx, TAIL_H2) };
        }
        return;
    }
    if read {
        if phase == CONN_REQUEST {
            // More of the request: bytes and time, then a scan only when its head is still
            // open or a new request line shows that the response was missed.
            c.ev.req.req_bytes += total;
            c.ev.req.req_end_ns = now;
            if c.req_head_open == 0 && !starts_request(buf, len) {
                return;
            }
            if c.req_head_open == 0 {
                // A new request: undo what was just added to the old one.
                c.ev.req.req_bytes -= total;
            }
        }
    } else {
        match phase {
            CONN_RESPONSE => {
                body_write(conn, tgid, fd, total, buf, len, iov, iov_cnt, now);
                return;
            }
            CONN_RESPONSE_HEAD => {
                c.ev.req.resp_bytes += total;
                c.ev.req.resp_end_ns = now;
            }
            CONN_REQUEST => {}
            // No request to answer.
            _ => return,
        }
        if buf == 0 {
            return;
        }
    }
    let next = if !read || c.req_head_open != 0 {
        TAIL_HEAD
    } else {
        TAIL_START
    };
    if job(
        call,
        buf,
        len,
        iov_cnt,
        if read { JOB_READ } else { JOB_WRITE },
    ) {
        // SAFETY: tail call with the caller's own context.
        unsafe { tail.tail_call(ctx, next) };
    }
}

/// Fill this CPU's job slot for a tail call; false when there is none.
#[inline(always)]
fn job(call: &Call, buf: u64, len: u64, iov_cnt: u64, kind: u32) -> bool {
    let Some(job) = JOB.get_ptr_mut(0) else {
        return false;
    };
    // SAFETY: this CPU's job slot; no other program runs on this CPU until the tail call.
    unsafe {
        *job = HttpJob {
            tgid: call.tgid,
            fd: call.fd,
            target: call.target,
            kind,
            buf,
            len,
            off: 0,
            total: call.total,
            before: 0,
            iov: call.iov,
            iov_cnt: iov_cnt & 0xffff_ffff,
            iov_idx: iov_cnt >> 32,
            now: call.now,
            hops: 0,
            loaded: 0,
            base: 0,
        };
    }
    true
}

/// A connection accepted on `listen_fd`: tracked from now on (a reused fd number starts
/// over).
#[inline(always)]
fn accepted(tgid: u32, target: u32, fd: u32, listen_fd: u32) {
    let key = conn_key(tgid, fd);
    // By reference: a by-value argument would be copied onto the stack with a memcpy loop.
    #[allow(clippy::needless_borrows_for_generic_args)]
    let inserted = CONNS.insert(key, &NEW_CONN, 0).is_ok();
    if !inserted {
        return;
    }
    if let Some(c) = CONNS.get_ptr_mut(key) {
        // SAFETY: `c` points at the value just inserted.
        unsafe { (*c).ev.listen_fd = listen_fd };
    }
    if let Some(k) = counters(target) {
        // SAFETY: this CPU's counters.
        unsafe { (*k).accepted += 1 };
    }
}

/// Whether a read's first bytes are a request line's (a response was missed).
#[inline(always)]
fn starts_request(buf: u64, len: u64) -> bool {
    if len < 14 || buf == 0 {
        return false;
    }
    // SAFETY: bpf_probe_read_user checks the address.
    let first = unsafe { bpf_probe_read_user(buf as *const u64) }.unwrap_or(0);
    method(first).is_some()
}

/// A response body write.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn body_write(
    conn: *mut ConnState,
    tgid: u32,
    fd: u32,
    total: u64,
    buf: u64,
    len: u64,
    iov: u64,
    iov_cnt: u64,
    now: u64,
) {
    // SAFETY: `conn` points at this connection's value in the LRU map.
    let c = unsafe { &mut *conn };
    c.ev.req.resp_bytes += total;
    c.ev.req.resp_end_ns = now;
    let chunked = c.ev.req.flags & HTTP_CHUNKED != 0;
    let terminator = chunked && last_chunk(buf, len, iov, iov_cnt & 0xffff_ffff, total);
    // A write holding only "0\r\n\r\n" carries no data.
    if !(terminator && total == 5) {
        data(c, now);
    }
    if c.ev.req.flags & HTTP_CL_KNOWN != 0 {
        c.remaining -= total as i64;
        if c.remaining <= 0 {
            finish(conn, tgid, fd, END_CONTENT_LENGTH);
        }
    } else if terminator {
        finish(conn, tgid, fd, END_LAST_CHUNK);
    }
}

/// Whether the call's bytes end with the terminating chunk "0\r\n\r\n". Only bytes inside
/// the call's buffers are read: for a vectored write, the tail may span its last buffers
/// (nginx writes a chunk as [size line, data, "\r\n"]).
#[inline(always)]
fn last_chunk(buf: u64, len: u64, iov: u64, iov_cnt: u64, total: u64) -> bool {
    if total < 5 {
        return false;
    }
    if iov == 0 {
        if buf == 0 || len < 5 {
            return false;
        }
        // SAFETY: bpf_probe_read_user checks the address; the 5 bytes end the buffer.
        return match unsafe { bpf_probe_read_user((buf + len - 5) as *const [u8; 5]) } {
            Ok(b) => b == *b"0\r\n\r\n",
            Err(_) => false,
        };
    }
    // The last five bytes, gathered from the last buffers backwards (at most four).
    let mut tail: u64 = 0;
    let mut need: u64 = 5;
    let mut i = iov_cnt;
    for _ in 0..4 {
        if need == 0 || i == 0 {
            break;
        }
        i -= 1;
        let Some((base, l)) = iov_at(iov, i) else {
            return false;
        };
        let take = min(l, need);
        if take == 0 {
            continue;
        }
        let mut part = [0u8; 8];
        let take = (take & 7) as usize;
        // SAFETY: bpf_probe_read_user_buf checks the address; `take` is at most 5 (`need`
        // is), so the copy fits `part`, and the bytes end the buffer.
        let copied = unsafe {
            let to = core::slice::from_raw_parts_mut(part.as_mut_ptr(), take);
            bpf_probe_read_user_buf((base + l - take as u64) as *const u8, to)
        };
        if copied.is_err() {
            return false;
        }
        let word = u64::from_le_bytes(part) & low_bytes(take as u32);
        // Earlier bytes go below the ones already gathered.
        tail = (tail << (8 * take as u32)) | word;
        need -= take as u64;
    }
    need == 0 && h::is_last_chunk(tail)
}

#[inline(always)]
fn data(c: &mut ConnState, now: u64) {
    if c.ev.req.chunks == 0 {
        c.ev.req.first_data_ns = now;
    } else {
        let gap = now.saturating_sub(c.last_data_ns);
        c.ev.req.gap_sum_ns += gap;
        if gap > c.ev.req.gap_max_ns {
            c.ev.req.gap_max_ns = gap;
        }
    }
    c.ev.req.chunks += 1;
    c.last_data_ns = now;
}

/// End the exchange in progress (if any): one event when a response was seen.
#[inline(always)]
fn finish(conn: *mut ConnState, tgid: u32, fd: u32, end: u32) {
    // SAFETY: `conn` points at this connection's value in the LRU map.
    let c = unsafe { &mut *conn };
    let phase = c.phase;
    if phase != CONN_REQUEST && phase != CONN_RESPONSE && phase != CONN_RESPONSE_HEAD {
        return;
    }
    c.phase = CONN_IDLE;
    c.req_head_open = 0;
    c.pre_kind = PRE_NONE;
    c.pre_len = 0;
    let k = counters(c.ev.req.target);
    if phase != CONN_REQUEST {
        c.ev.tgid = tgid;
        c.ev.fd = fd;
        c.ev.end = end;
        // The kernel copies the event: no struct copy inside the program.
        if HTTP_EVENTS
            .output::<HttpEvent>(
                &c.ev,
                wakeup(&HTTP_EVENTS, core::mem::size_of::<HttpEvent>()),
            )
            .is_err()
        {
            if let Some(k) = k {
                // SAFETY: this CPU's counters.
                unsafe { (*k).dropped += 1 };
            }
        }
    }
    if let Some(k) = k {
        // SAFETY: this CPU's counters.
        unsafe {
            (*k).finished += 1;
            if phase == CONN_REQUEST {
                (*k).unanswered += 1;
            }
        }
    }
}

// ---- The head-scanning program (tail-called from sys_exit) ----------------------------

/// The scratch window as the parser sees it.
struct Win(*mut Scratch);

impl Win {
    /// The aligned word at byte offset `a` (a multiple of 8 below `BUF`).
    #[inline(always)]
    fn aligned(&self, a: usize) -> u64 {
        // SAFETY: the offset is masked to a multiple of 8 below BUF - 8, so the 8-byte read
        // stays inside buf (BUF bytes at offset 0 of an 8-byte aligned map value).
        unsafe { core::ptr::read((*self.0).buf.as_ptr().add(a & (BUF - 8)) as *const u64) }
    }
}

impl Window for Win {
    #[inline(always)]
    fn valid(&self) -> usize {
        // SAFETY: `self.0` points at this CPU's scratch value.
        unsafe { core::ptr::read_volatile(&(*self.0).n) as usize }
    }
    /// The 8 bytes at any offset, from two aligned loads (an unaligned load is lowered to
    /// eight byte loads on BPF).
    #[inline(always)]
    fn word(&self, at: usize) -> u64 {
        let at = at & (BUF - 1);
        let a = at & !7;
        let sh = ((at & 7) * 8) as u32;
        let lo = self.aligned(a);
        let hi = self.aligned(a + 8);
        // For sh == 0 the second term is 0: (hi << 1) << 63 keeps only a zero bit.
        (lo >> sh) | ((hi << 1) << (63 - sh))
    }
    #[inline(always)]
    fn byte(&self, at: usize) -> u8 {
        // SAFETY: the index is masked into the buffer.
        unsafe { *(*self.0).buf.as_ptr().add(at & (BUF - 1)) }
    }
    #[inline(always)]
    fn facts(&mut self) -> &mut h::HeadFacts {
        // SAFETY: `self.0` points at this CPU's scratch value.
        unsafe { &mut (*self.0).facts }
    }
}

/// Load a window: `pre_len` bytes of `pre` (carried from earlier calls), then up to
/// `SCAN` bytes of the user buffer at `src`; returns the window and how many user bytes
/// it holds.
#[inline(always)]
fn load(pre: *const [u8; PRE], pre_len: u64, src: u64, avail: u64) -> Option<(Win, u64)> {
    let s = SCRATCH.get_ptr_mut(0)?;
    let n = if avail > SCAN as u64 {
        SCAN
    } else {
        avail as usize
    };
    let p = if pre_len > PRE as u64 {
        PRE
    } else {
        pre_len as usize
    };
    // SAFETY: `s` points at this CPU's scratch value; the copies stay inside buf: `p` is
    // at most PRE and `n` at most SCAN, and PRE + SCAN < BUF.
    unsafe {
        let dst = (*s).buf.as_mut_ptr();
        if p > 0 {
            let to = core::slice::from_raw_parts_mut(dst, PRE);
            bpf_probe_read_kernel_buf(pre as *const u8, to).ok()?;
        }
        if n > 0 {
            let to = core::slice::from_raw_parts_mut(dst.add(p), n);
            bpf_probe_read_user_buf(src as *const u8, to).ok()?;
        }
        let total = p + n;
        // Zero what follows the valid bytes (the rest of their last word and five more
        // words), so word reads past the end see no stray bytes of an earlier window
        // (stores, not a memset, which would be a byte loop for the verifier).
        let tail = total & !7;
        // Bounded for the verifier: a window is never this long.
        let tail = if tail > BUF - 64 { BUF - 64 } else { tail };
        let w = dst.add(tail) as *mut u64;
        let last = core::ptr::read_volatile(w);
        core::ptr::write_volatile(w, last & low_bytes((total & 7) as u32));
        for i in 1..6 {
            core::ptr::write_volatile(w.add(i), 0);
        }
        set(&mut (*s).n, total as u64);
        set(&mut (*s).facts, h::HeadFacts::default());
    }
    Some((Win(s), n as u64))
}

/// Keep the last `PRE` bytes of the window (or all of it) as the connection's carry.
#[inline(always)]
fn carry(c: &mut ConnState, w: &Win, kind: u32) {
    let n = w.valid() as u64;
    let keep = min(n, PRE as u64);
    let from = ((n - keep) as usize) & (BUF - 1);
    // SAFETY: `w.0` points at this CPU's scratch value; the source range is inside buf.
    unsafe {
        let src = (*w.0).buf.as_ptr().add(from);
        if bpf_probe_read_kernel_buf(src, &mut c.pre).is_err() {
            return;
        }
    }
    c.pre_kind = kind;
    c.pre_len = keep as u32;
}

/// The job and connection of a tail-called program.
#[inline(always)]
pub(crate) fn job_and_conn() -> Option<(*mut HttpJob, *mut ConnState)> {
    let job = JOB.get_ptr_mut(0)?;
    // SAFETY: this CPU's job slot, filled by sys_exit (or a program of this chain).
    let (tgid, fd) = unsafe { ((*job).tgid, (*job).fd) };
    let conn = CONNS.get_ptr_mut(conn_key(tgid, fd))?;
    Some((job, conn))
}

/// A read where a request may start: its bytes (after any pending ones) classified. A
/// request line starts a request, whose head `http_head` then scans in the same window.
#[raw_tracepoint(tracepoint = "sys_exit")]
pub fn http_start(ctx: RawTracePointContext) -> i32 {
    start(&ctx, &HTTP_TAIL)
}

#[raw_tracepoint(tracepoint = "sys_exit")]
pub fn http_head(ctx: RawTracePointContext) -> i32 {
    head(&ctx, &HTTP_TAIL)
}

#[raw_tracepoint(tracepoint = "sys_exit")]
pub fn http_h2(ctx: RawTracePointContext) -> i32 {
    crate::h2::frames(&ctx, &HTTP_TAIL)
}

/// The same three for the OpenSSL return probes' plaintext.
#[uretprobe]
pub fn tls_http_start(ctx: RetProbeContext) -> u32 {
    start(&ctx, &HTTP_TAIL_TLS) as u32
}

#[uretprobe]
pub fn tls_http_head(ctx: RetProbeContext) -> u32 {
    head(&ctx, &HTTP_TAIL_TLS) as u32
}

#[uretprobe]
pub fn tls_http_h2(ctx: RetProbeContext) -> u32 {
    crate::h2::frames(&ctx, &HTTP_TAIL_TLS) as u32
}

#[inline(always)]
fn start<C: EbpfContext>(ctx: &C, tail: &ProgramArray) -> i32 {
    let Some((job, conn)) = job_and_conn() else {
        return 0;
    };
    // SAFETY: both point at this CPU's job and this connection's value.
    let (j, c) = unsafe { (&mut *job, &mut *conn) };
    let pending = if c.pre_kind == PRE_PENDING {
        c.pre_len as u64
    } else {
        0
    };
    let Some((w, n)) = load(&c.pre, pending, j.buf, j.len) else {
        return 0;
    };
    j.off = n;
    match h::request_start(&w) {
        RequestStart::Line {
            method,
            path_start,
            path_len,
            version_seen,
        } => {
            // " HTTP/1.x" follows the target: x is its ninth byte.
            let v10 = version_seen && w.byte(path_start + path_len + 8) == b'0';
            // The exchange before, if any, ends here (with an event when it had a response).
            finish(conn, j.tgid, j.fd, END_NEXT_REQUEST);
            let start_ns = if pending > 0 { c.pending_ns } else { j.now };
            begin(
                c,
                j,
                method,
                path_start,
                path_len,
                start_ns,
                pending + j.total,
                &w,
                v10,
            );
            // The window starts with the request's first byte.
            j.loaded = 1;
            j.base = 0;
            c.req_head_open = 1;
            // SAFETY: tail call with this program's own context.
            unsafe { tail.tail_call(ctx, TAIL_HEAD) };
        }
        RequestStart::Partial => {
            // Wait for more: the bytes so far are kept (they fit: see `PENDING`).
            if pending == 0 {
                set(&mut c.pending_ns, j.now);
            }
            carry(c, &w, PRE_PENDING);
        }
        RequestStart::No => {
            c.pre_kind = PRE_NONE;
            c.pre_len = 0;
            let seen = w.valid();
            if c.phase == CONN_REQUEST {
                // Body bytes after all (sys_exit suspected a request line).
                c.ev.req.req_bytes += j.total;
            } else if c.phase == CONN_NEW && pending == 0 && seen == 1 && w.byte(0) == 0x16 {
                // One byte of a TLS record, peeked (nginx tells TLS from plain HTTP so):
                // the same bytes come again.
            } else if c.phase == CONN_NEW
                && pending == 0
                && seen >= 2
                && h2c::is_tls_record(w.byte(0), w.byte(1))
            {
                // A TLS handshake: its plaintext is the OpenSSL probes' when this read is
                // made inside a probed OpenSSL call, else nobody's.
                let seen_by_probes = crate::tls::tie(j.fd);
                c.tls = if seen_by_probes { TLS_SEEN } else { TLS_UNSEEN };
                if let Some(k) = counters(j.target) {
                    // SAFETY: this CPU's counters.
                    unsafe {
                        if seen_by_probes {
                            (*k).tls_connections += 1;
                        } else {
                            (*k).tls_unseen += 1;
                        }
                    }
                }
            } else if c.phase == CONN_NEW
                && pending == 0
                && seen >= 8
                && w.word(0) == h2c::PREFACE_WORD
            {
                // The HTTP/2 client preface: frames from here on, the preface's bytes
                // skipped as a payload.
                crate::h2::begin(c, j);
                j.off = 0;
                // SAFETY: tail call with this program's own context.
                unsafe { tail.tail_call(ctx, TAIL_H2) };
            } else if c.phase == CONN_NEW && (seen >= 14 || pending == 0) {
                // Not HTTP/1.x: a full line's worth of bytes that is no request line, or
                // a first read that cannot start one (a TLS record's first byte).
                c.phase = CONN_NOT_HTTP;
                if let Some(k) = counters(j.target) {
                    // SAFETY: this CPU's counters.
                    unsafe { (*k).ignored_connections += 1 };
                }
            }
        }
    }
    0
}

/// Start a request: its line's facts into the event.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn begin(
    c: &mut ConnState,
    j: &HttpJob,
    method: u8,
    path_start: usize,
    path_len: usize,
    start_ns: u64,
    bytes: u64,
    w: &Win,
    v10: bool,
) {
    set(&mut c.ev.tgid, j.tgid);
    set(&mut c.ev.fd, j.fd);
    set(&mut c.ev.end, 0);
    let r = &mut c.ev.req;
    set(&mut r.target, j.target);
    set(&mut r.method, method);
    set(&mut r.status, 0);
    set(&mut r.chunks, 0);
    set(&mut r.resp_start_ns, 0);
    set(&mut r.first_data_ns, 0);
    set(&mut r.resp_end_ns, 0);
    set(&mut r.resp_bytes, 0);
    set(&mut r.resp_header_bytes, 0);
    set(&mut r.gap_sum_ns, 0);
    set(&mut r.gap_max_ns, 0);
    let version = if v10 { HTTP_V10 } else { 0 };
    if path_len > HTTP_PATH_MAX {
        set(&mut r.flags, HTTP_PATH_TRUNCATED | version);
        set(&mut r.path_len, HTTP_PATH_MAX as u32);
    } else {
        set(&mut r.flags, version);
        set(&mut r.path_len, path_len as u32);
    }
    // SAFETY: the source is HTTP_PATH_MAX bytes at an offset below 128 of the scratch
    // buffer (BUF bytes long); the helper copies without a loop in the program.
    unsafe {
        let src = (*w.0).buf.as_ptr().add(path_start & 127);
        let _ = bpf_probe_read_kernel_buf(src, &mut c.ev.req.path);
    }
    set(&mut c.ev.req.req_start_ns, start_ns);
    set(&mut c.ev.req.req_end_ns, j.now);
    set(&mut c.ev.req.req_bytes, bytes);
    set(&mut c.ev.req.req_header_bytes, bytes);
    set(&mut c.remaining, 0);
    set(&mut c.resp_cl, -1);
    set(&mut c.last_data_ns, 0);
    set(&mut c.pre_kind, PRE_NONE);
    set(&mut c.pre_len, 0);
    set(&mut c.phase, CONN_REQUEST);
    if let Some(k) = counters(j.target) {
        // SAFETY: this CPU's counters.
        unsafe { (*k).started += 1 };
    }
}

/// One window of a head: a request's (after its line) or a response's (the status line
/// first). Loads the window unless `http_start` did, scans it, applies what it found, and
/// goes on with the next window while the head is open and the call has more bytes.
#[inline(always)]
fn head<C: EbpfContext>(ctx: &C, tail: &ProgramArray) -> i32 {
    let Some((job, conn)) = job_and_conn() else {
        return 0;
    };
    // SAFETY: both point at this CPU's job and this connection's value.
    let (j, c) = unsafe { (&mut *job, &mut *conn) };
    let request = j.kind == JOB_READ;
    let mut w = if j.loaded != 0 {
        j.loaded = 0;
        match SCRATCH.get_ptr_mut(0) {
            Some(s) => Win(s),
            None => return 0,
        }
    } else {
        let pre = if c.pre_kind == PRE_CARRY {
            c.pre_len as u64
        } else {
            0
        };
        let response_start = !request && c.phase == CONN_REQUEST;
        let pre = if response_start { 0 } else { pre };
        let Some((w, n)) = load(&c.pre, pre, j.buf + j.off, j.len - j.off) else {
            return 0;
        };
        // Head bytes before the window: those before this call, this call's bytes before
        // the window's new ones, less the carried bytes the window repeats.
        let before_call = if request {
            c.ev.req.req_bytes.saturating_sub(j.total)
        } else if response_start {
            // The response starts with this call.
            0
        } else {
            c.ev.req.resp_bytes.saturating_sub(j.total)
        };
        j.base = (before_call + j.before + j.off).saturating_sub(pre);
        j.off += n;
        if response_start && !status(conn, j, &w) {
            return 0;
        }
        w
    };
    h::scan_head(&mut w);
    let f = *w.facts();
    // SAFETY: `conn` points at this connection's value (re-read: `status` may have ended
    // the exchange).
    let c = unsafe { &mut *conn };
    if request {
        if c.phase != CONN_REQUEST {
            return 0;
        }
        if f.head_len != 0 {
            c.req_head_open = 0;
            c.pre_kind = PRE_NONE;
            c.pre_len = 0;
            set(&mut c.ev.req.req_header_bytes, j.base + f.head_len);
            return 0;
        }
        // Not ended here: its header bytes are what was read, until it ends.
        set(&mut c.ev.req.req_header_bytes, c.ev.req.req_bytes);
        if j.base + w.valid() as u64 >= HEAD_MAX as u64 {
            // Past the longest head classified: counted with what is known.
            c.req_head_open = 0;
            c.pre_kind = PRE_NONE;
            return 0;
        }
        carry(c, &w, PRE_CARRY);
    } else {
        if c.phase != CONN_RESPONSE_HEAD {
            return 0;
        }
        c.ev.req.flags |= f.flags as u8;
        if c.resp_cl < 0 && f.cl_at != 0 {
            c.resp_cl = h::content_length(&mut w);
        }
        if f.head_len != 0 {
            response_head_end(conn, j, j.base + f.head_len);
            return 0;
        }
        if j.base + w.valid() as u64 >= HEAD_MAX as u64 {
            // Past the longest head classified: the response goes on with what is known.
            set(&mut c.ev.req.resp_header_bytes, c.ev.req.resp_bytes);
            c.pre_kind = PRE_NONE;
            c.phase = CONN_RESPONSE;
            return 0;
        }
        carry(c, &w, PRE_CARRY);
    }
    if next(j) {
        // SAFETY: tail call with this program's own context.
        unsafe { tail.tail_call(ctx, TAIL_HEAD) };
    }
    0
}

/// The status line of a write in the request phase: `true` when it starts the response
/// (and its head is to be scanned).
#[inline(always)]
fn status(conn: *mut ConnState, j: &HttpJob, w: &Win) -> bool {
    let Some(status) = h::status_line(w) else {
        return false;
    };
    if status < 200 && status != 101 {
        // 100 Continue and friends: the real response is still to come.
        return false;
    }
    // SAFETY: `conn` points at this connection's value in the LRU map.
    let c = unsafe { &mut *conn };
    set(&mut c.ev.req.status, status);
    set(&mut c.ev.req.resp_start_ns, j.now);
    set(&mut c.ev.req.resp_end_ns, j.now);
    set(&mut c.ev.req.resp_bytes, j.total);
    set(&mut c.ev.req.resp_header_bytes, j.total);
    set(&mut c.resp_cl, -1);
    set(&mut c.phase, CONN_RESPONSE_HEAD);
    if status == 101 {
        // Switching protocols: this exchange ends, and what follows is not HTTP/1.x.
        finish(conn, j.tgid, j.fd, END_UPGRADE);
        c.phase = CONN_NOT_HTTP;
        return false;
    }
    true
}

/// The response head ends `end` bytes into the response: apply it to what follows.
#[inline(always)]
fn response_head_end(conn: *mut ConnState, j: &HttpJob, end: u64) {
    // SAFETY: `conn` points at this connection's value in the LRU map.
    let c = unsafe { &mut *conn };
    c.pre_kind = PRE_NONE;
    c.pre_len = 0;
    c.phase = CONN_RESPONSE;
    set(&mut c.ev.req.resp_header_bytes, end);
    let body = c.ev.req.resp_bytes.saturating_sub(end);
    if body > 0 {
        data(c, j.now);
    }
    // No body follows for HEAD, 204 and 304.
    let status = c.ev.req.status;
    if c.ev.req.method == 5 || status == 204 || status == 304 {
        finish(conn, j.tgid, j.fd, END_CONTENT_LENGTH);
        return;
    }
    let cl = c.resp_cl;
    if cl >= 0 {
        c.ev.req.flags |= HTTP_CL_KNOWN;
        c.remaining = cl - body as i64;
        if c.remaining <= 0 {
            finish(conn, j.tgid, j.fd, END_CONTENT_LENGTH);
        }
        return;
    }
    if c.ev.req.flags & HTTP_CHUNKED != 0
        && body > 0
        && last_chunk(j.buf, j.len, j.iov, j.iov_cnt, j.total)
    {
        finish(conn, j.tgid, j.fd, END_LAST_CHUNK);
    }
}

/// Move the job past the window just scanned: to the buffer's next bytes, or the next
/// buffer of a vectored call. `false` when there is nothing more to scan.
#[inline(always)]
fn next(j: &mut HttpJob) -> bool {
    j.hops += 1;
    if j.hops >= MAX_HOPS {
        return false;
    }
    if j.off < j.len {
        return true;
    }
    if j.iov == 0 {
        return false;
    }
    // Skip empty buffers (bounded: a few; a constant trip count for the verifier).
    let mut i = j.iov_idx;
    for _ in 0..4 {
        i += 1;
        if i >= j.iov_cnt {
            return false;
        }
        let Some((base, l)) = iov_at(j.iov, i) else {
            return false;
        };
        j.before += j.len;
        let left = j.total.saturating_sub(j.before);
        if left == 0 {
            return false;
        }
        if l > 0 {
            j.buf = base;
            j.len = min(l, left);
            j.off = 0;
            j.iov_idx = i;
            return true;
        }
        j.len = 0;
    }
    false
}
