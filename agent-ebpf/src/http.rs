//! HTTP/1.x request tracing on targeted processes' accepted sockets.
//!
//! Runs inside the syscall programs, for targeted threads and socket-related calls only.
//! accept/accept4 mark a server-side connection; the first read decides whether it speaks
//! HTTP/1.x (else it is ignored from then on); a read that starts with a request line
//! starts a request; the write carrying the status line starts the response; later writes
//! are body data (one SSE event or chunk each). A request ends when its Content-Length is
//! written, when the terminating chunk is written, when the next request arrives, or at
//! close — whichever comes first — and then one event goes to the ring buffer.
//!
//! Scans use 8-byte words (SWAR) over at most HTTP_HEAD_SCAN bytes, with constant loop
//! bounds the verifier can follow.
use agent_common::{lit, low_bytes, method};
use agent_common::{
    ConnState, HttpCounters, HttpEvent, HttpRequest, CONN_IDLE, CONN_NEW, CONN_NOT_HTTP,
    CONN_REQUEST, CONN_RESPONSE, END_CLOSE, END_CONTENT_LENGTH, END_LAST_CHUNK, END_NEXT_REQUEST,
    HTTP_CHUNKED, HTTP_CL_KNOWN, HTTP_HEAD_SCAN, HTTP_PATH_MAX, HTTP_PATH_TRUNCATED, HTTP_SSE,
    HTTP_TARGETS, HTTP_TARGET_MASK,
};
use aya_ebpf::{
    helpers::{
        bpf_probe_read_kernel, bpf_probe_read_kernel_buf, bpf_probe_read_user,
        bpf_probe_read_user_buf,
    },
    macros::map,
    maps::{LruHashMap, PerCpuArray, RingBuf},
    programs::RawTracePointContext,
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

const SCAN: usize = HTTP_HEAD_SCAN;
const WORDS: usize = SCAN / 8;

#[map]
static CONNS: LruHashMap<u64, ConnState> = LruHashMap::with_max_entries(16384, 0);

const RING_BYTES: u32 = 2 << 20;
const RING_WAKEUP_BYTES: u64 = RING_BYTES as u64 / 4;
const BPF_RB_AVAIL_DATA: u64 = 0;
const BPF_RB_NO_WAKEUP: u64 = 1;
const BPF_RB_FORCE_WAKEUP: u64 = 2;

#[map]
static HTTP_EVENTS: RingBuf = RingBuf::with_byte_size(RING_BYTES, 0);

#[map]
static HTTP_COUNTERS: PerCpuArray<HttpCounters> = PerCpuArray::with_max_entries(HTTP_TARGETS, 0);

/// Head bytes copied from the user buffer (the second half is slack for word reads), and
/// what a head scan found. The results live in the map value rather than in registers so
/// the verifier's states converge after each branch of the scan.
#[repr(C)]
pub struct Scratch {
    buf: [u8; 2 * SCAN],
    /// Bytes copied into `buf`. Compared against from memory, so that no verifier path
    /// carries a range of its own for it.
    n: u64,
    head_len: u64,
    cl_at: u64,
    flags: u64,
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

static NEW_CONN: ConnState = ConnState {
    phase: CONN_NEW,
    _pad: 0,
    remaining: 0,
    last_data_ns: 0,
    ev: HttpEvent {
        tgid: 0,
        fd: 0,
        end: 0,
        _pad: 0,
        req: ZERO_REQ,
    },
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
fn set<T>(place: &mut T, value: T) {
    // SAFETY: `place` is a valid, aligned, exclusive reference.
    unsafe { core::ptr::write_volatile(place, value) }
}

#[inline(always)]
fn conn_key(tgid: u32, fd: u32) -> u64 {
    ((tgid as u64) << 32) | fd as u64
}

fn counters(target: u32) -> Option<*mut HttpCounters> {
    HTTP_COUNTERS.get_ptr_mut(target & HTTP_TARGET_MASK)
}

/// A targeted thread enters close(fd). Handled at entry, while the fd still names this
/// connection: once close releases it, another thread's accept can get the same number,
/// and an exit handler would then delete the new connection's state.
pub fn on_close(tgid: u32, fd: u32) {
    let key = conn_key(tgid, fd);
    if let Some(conn) = CONNS.get_ptr_mut(key) {
        finish(conn, tgid, fd, END_CLOSE);
        let _ = CONNS.remove(key);
    }
}

/// One socket call's facts, passed by reference (BPF calls take at most 5 arguments).
struct Io {
    tgid: u32,
    fd: u32,
    target: u32,
    /// First data buffer and how many of the returned bytes are in it.
    buf: u64,
    len: u64,
    /// Bytes the call moved in total.
    total: u64,
    /// Writes: end of the single buffer, or 0 with `iov`/`iov_cnt` set for vectored ones
    /// (their last buffer is only looked up when a terminating chunk is possible).
    end: u64,
    iov: u64,
    iov_cnt: u64,
    now: u64,
}

/// Handle a finished socket call of a targeted thread.
pub fn on_exit(tgid: u32, target: u32, nr: u32, ret: i64, args: &[u64; 3], now: u64) {
    match nr {
        NR_ACCEPT | NR_ACCEPT4 => {
            if ret >= 0 {
                // A reused fd number starts over. By reference: a by-value argument would
                // be copied onto the stack with a memcpy loop.
                #[allow(clippy::needless_borrows_for_generic_args)]
                let inserted = CONNS
                    .insert(conn_key(tgid, ret as u32), &NEW_CONN, 0)
                    .is_ok();
                if let (true, Some(k)) = (inserted, counters(target)) {
                    // SAFETY: this CPU's counters.
                    unsafe { (*k).accepted += 1 };
                }
            }
        }
        // close is handled at entry (see `on_close`).
        NR_CLOSE => {}
        _ => {
            if ret <= 0 {
                return;
            }
            let fd = args[0] as u32;
            let Some(conn) = CONNS.get_ptr_mut(conn_key(tgid, fd)) else {
                return;
            };
            let total = ret as u64;
            let mut io = Io {
                tgid,
                fd,
                target,
                buf: args[1],
                len: total,
                total,
                end: 0,
                iov: 0,
                iov_cnt: 0,
                now,
            };
            let is_read = matches!(nr, NR_READ | NR_RECVFROM | NR_READV | NR_RECVMSG);
            match nr {
                NR_READV | NR_RECVMSG => {
                    let iov = if nr == NR_READV {
                        Some(args[1])
                    } else {
                        msg_iov(args[1]).map(|(iov, _)| iov)
                    };
                    let Some((base, iov_len)) = iov.and_then(|v| iov_at(v, 0)) else {
                        return;
                    };
                    io.buf = base;
                    io.len = min(total, iov_len);
                }
                NR_WRITE | NR_SENDTO => io.end = args[1] + total,
                NR_WRITEV | NR_SENDMSG => {
                    let v = if nr == NR_WRITEV {
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
                    let Some((mut base, mut iov_len)) = iov_at(iov, 0) else {
                        return;
                    };
                    // Writers may lead with an empty buffer: look at the next one.
                    if iov_len == 0 && cnt > 1 {
                        (base, iov_len) = iov_at(iov, 1).unwrap_or((0, 0));
                    }
                    // Inspect only that buffer: reading `total` bytes from it could run
                    // past its end.
                    io.buf = base;
                    io.len = min(total, iov_len);
                    io.iov = iov;
                    io.iov_cnt = cnt;
                }
                NR_SENDFILE => io.buf = 0,
                _ => {}
            }
            if is_read {
                on_read(conn, &io);
            } else {
                on_write(conn, &io);
            }
        }
    }
}

#[inline(always)]
fn min(a: u64, b: u64) -> u64 {
    if a < b {
        a
    } else {
        b
    }
}

/// `iov[i]` of a user iovec array: (base, len).
#[inline(always)]
fn iov_at(iov: u64, i: u64) -> Option<(u64, u64)> {
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

/// Copy up to SCAN bytes of the user buffer into the per-CPU scratch; returns the count.
#[inline(always)]
fn load(buf: u64, len: u64) -> Option<(*mut Scratch, usize)> {
    let s = SCRATCH.get_ptr_mut(0)?;
    let n = if len > SCAN as u64 {
        SCAN
    } else {
        len as usize
    };
    if n == 0 {
        return None;
    }
    // SAFETY: `s` points at this CPU's scratch value; `n` is at most SCAN, inside `buf`.
    unsafe {
        let dst = &mut (*s).buf;
        // Zero the words after the copied bytes so word reads past `n` see no stray match
        // (two stores, not a memset, which would be a byte loop for the verifier).
        let tail = (n & !7) & (SCAN - 1);
        let p = dst.as_mut_ptr().add(tail) as *mut u64;
        core::ptr::write_volatile(p, 0);
        core::ptr::write_volatile(p.add(1), 0);
        bpf_probe_read_user_buf(buf as *const u8, dst.get_mut(..n)?).ok()?;
        set(&mut (*s).n, n as u64);
    }
    Some((s, n))
}

/// The aligned word at byte offset `a` (a multiple of 8, below SCAN + 8).
#[inline(always)]
fn aligned(s: *const Scratch, a: usize) -> u64 {
    // SAFETY: the offset is masked to a multiple of 8 below 2 * SCAN - 8, so the 8-byte
    // read stays inside buf (2 * SCAN bytes at offset 0 of an 8-byte aligned map value).
    unsafe { core::ptr::read((*s).buf.as_ptr().add(a & (2 * SCAN - 8)) as *const u64) }
}

/// The 8 bytes at any offset, from two aligned loads (an unaligned load is lowered to
/// eight byte loads on BPF).
#[inline(always)]
fn word(s: *const Scratch, at: usize) -> u64 {
    let at = at & (SCAN - 1);
    let a = at & !7;
    let sh = ((at & 7) * 8) as u32;
    let lo = aligned(s, a);
    let hi = aligned(s, a + 8);
    // For sh == 0 the second term is 0: (hi << 1) << 63 keeps only a zero bit.
    (lo >> sh) | ((hi << 1) << (63 - sh))
}

/// 1 when `x == y`, else 0, without a branch.
#[inline(always)]
fn eq(x: u64, y: u64) -> u64 {
    let d = x ^ y;
    (d.wrapping_sub(1) & !d) >> 63
}

#[inline(always)]
fn byte(s: *const Scratch, at: usize) -> u8 {
    // SAFETY: the index is masked into the buffer.
    unsafe { *(*s).buf.as_ptr().add(at & (SCAN - 1)) }
}

const LOW: u64 = 0x0101_0101_0101_0101;
const HIGH: u64 = 0x8080_8080_8080_8080;
/// ASCII letters to lower case (also maps some punctuation, harmless for our compares).
const LOWER: u64 = 0x2020_2020_2020_2020;

/// Bytes equal to `b` in `w`, as the high bit of each matching byte.
#[inline(always)]
fn matches_byte(w: u64, b: u8) -> u64 {
    let x = w ^ (LOW * b as u64);
    x.wrapping_sub(LOW) & !x & HIGH
}

/// Byte index (0..8) of the lowest byte flagged in `mask` (as `matches_byte` returns it).
/// Branch-free, so the verifier follows one path rather than eight.
#[inline(always)]
fn lowest(mask: u64) -> usize {
    let one = (mask & mask.wrapping_neg()) >> 7; // 1 << (8 * i)
    (one.wrapping_mul(0x0001_0203_0405_0607) >> 56) as usize
}

/// `n` as stored by `load`, read back from memory (see `Scratch::n`).
#[inline(always)]
fn stored_n(s: *const Scratch) -> usize {
    // SAFETY: `s` points at this CPU's scratch value.
    unsafe { core::ptr::read_volatile(&(*s).n) as usize }
}

/// Position of the first `b` at or after `from` and before `n`.
#[inline(always)]
fn find(s: *const Scratch, from: usize, n: usize, b: u8) -> Option<usize> {
    let mut at = from;
    for _ in 0..WORDS {
        if at >= n {
            return None;
        }
        let m = matches_byte(word(s, at), b);
        if m != 0 {
            let pos = at + lowest(m);
            return if pos < n { Some(pos) } else { None };
        }
        at += 8;
    }
    None
}

/// Scan a head for its end and the headers we use: (length of the head including the
/// blank line, or 0 when it ends beyond the scanned bytes; Content-Length or -1; flags).
/// One flat loop over 8-byte words; newlines inside a word are taken one bit at a time.
fn scan_head(s: *mut Scratch) -> (usize, i64, u8) {
    // SAFETY: `s` points at this CPU's scratch value.
    unsafe {
        set(&mut (*s).head_len, 0);
        set(&mut (*s).cl_at, 0);
        set(&mut (*s).flags, 0);
    }
    for k in 0..WORDS {
        let base = k * 8;
        if base >= stored_n(s) {
            break;
        }
        let mut m = matches_byte(word(s, base), b'\n');
        // A header line is at least "\r\n": at most four line ends in a word.
        for _ in 0..4 {
            if m == 0 {
                break;
            }
            let at = base + lowest(m) + 1;
            m &= m.wrapping_sub(1);
            if at + 2 > stored_n(s) {
                break;
            }
            header_line(s, at);
            // SAFETY: as above.
            if unsafe { core::ptr::read_volatile(&(*s).head_len) } != 0 {
                return head_result(s);
            }
        }
    }
    head_result(s)
}

#[inline(always)]
fn head_result(s: *mut Scratch) -> (usize, i64, u8) {
    // SAFETY: `s` points at this CPU's scratch value.
    let (head, cl_at, flags) = unsafe { ((*s).head_len, (*s).cl_at, (*s).flags) };
    let cl = if cl_at != 0 {
        digits(s, cl_at as usize, stored_n(s))
    } else {
        -1
    };
    (head as usize, cl, flags as u8)
}

/// Look at the header line starting at `at`; record what it says in the scratch value.
/// Branch-free: every check is computed and OR-ed in, so the verifier follows one path.
#[inline(always)]
fn header_line(s: *mut Scratch, at: usize) {
    let w0 = word(s, at);
    // Only the blank line and lines starting with c/C or t/T can matter: one compare
    // skips the rest (Host, Date, Server, User-Agent, ...).
    let first = (w0 & 0xff) | 0x20;
    if first != b'c' as u64 && first != b't' as u64 && first != (b'\r' | 0x20) as u64 {
        return;
    }
    let l0 = w0 | LOWER;
    let l1 = word(s, at + 8) | LOWER;
    let end = eq(w0 & low_bytes(2), lit(b"\r\n\0\0\0\0\0\0"));
    let content = eq(l0, lit(b"content-"));
    let cl = content & eq(l1 & low_bytes(7), lit(b"length:\0"));
    let ct = content & eq(l1 & low_bytes(5), lit(b"type:\0\0\0"));
    let ct_at = at + 13 + eq(byte(s, at + 13) as u64, b' ' as u64) as usize;
    let sse = ct & eq(word(s, ct_at) | LOWER, lit(b"text/eve"));
    let te = eq(l0, lit(b"transfer")) & eq(l1, lit(b"-encodin"));
    let te_at = at + 18 + eq(byte(s, at + 18) as u64, b' ' as u64) as usize;
    let chunked = te & eq((word(s, te_at) | LOWER) & low_bytes(7), lit(b"chunked\0"));
    // SAFETY: `s` points at this CPU's scratch value.
    unsafe {
        (*s).head_len |= end * (at as u64 + 2);
        (*s).cl_at |= cl * (at as u64 + 15);
        (*s).flags |= (sse * HTTP_SSE as u64) | (chunked * HTTP_CHUNKED as u64);
    }
}

/// Decimal number at `at` (after optional spaces), or -1.
#[inline(always)]
fn digits(s: *const Scratch, at: usize, n: usize) -> i64 {
    let mut p = at;
    if byte(s, p) == b' ' {
        p += 1;
    }
    let mut v: i64 = 0;
    let mut any = false;
    for _ in 0..15 {
        if p >= n {
            break;
        }
        let c = byte(s, p);
        if !c.is_ascii_digit() {
            break;
        }
        v = v * 10 + (c - b'0') as i64;
        any = true;
        p += 1;
    }
    if any {
        v
    } else {
        -1
    }
}

fn on_read(conn: *mut ConnState, io: &Io) {
    let (tgid, fd, target, buf, len, now) = (io.tgid, io.fd, io.target, io.buf, io.len, io.now);
    // SAFETY: `conn` points at this connection's value in the LRU map.
    let c = unsafe { &mut *conn };
    match c.phase {
        CONN_NOT_HTTP => return,
        CONN_REQUEST => {
            // More of the request (body), unless a new request line shows that the
            // response was missed: then the connection must not stay stuck here.
            // SAFETY: bpf_probe_read_user checks the address.
            let first = unsafe { bpf_probe_read_user(buf as *const u64) }.unwrap_or(0);
            if len < 14 || method(first).is_none() {
                more_request(c, io);
                return;
            }
        }
        _ => {}
    }
    let Some((s, n)) = load(buf, len) else {
        return;
    };
    let Some((m, start)) = (if n >= 14 { method(word(s, 0)) } else { None }) else {
        not_a_request(c, io, n);
        return;
    };
    // The request target ends at the next space, followed by "HTTP/1.".
    let Some(sp) = find(s, start, n, b' ') else {
        not_a_request(c, io, n);
        return;
    };
    if sp + 8 > n || word(s, sp + 1) & low_bytes(7) != lit(b"HTTP/1.\0") {
        not_a_request(c, io, n);
        return;
    }
    // The exchange before, if any, ends here (with an event when it had a response).
    finish(conn, tgid, fd, END_NEXT_REQUEST);
    let path_len = sp - start;
    set(&mut c.ev.tgid, tgid);
    set(&mut c.ev.fd, fd);
    set(&mut c.ev.end, 0);
    let r = &mut c.ev.req;
    set(&mut r.target, target);
    set(&mut r.method, m);
    set(&mut r.status, 0);
    set(&mut r.chunks, 0);
    set(&mut r.resp_start_ns, 0);
    set(&mut r.first_data_ns, 0);
    set(&mut r.resp_end_ns, 0);
    set(&mut r.resp_bytes, 0);
    set(&mut r.resp_header_bytes, 0);
    set(&mut r.gap_sum_ns, 0);
    set(&mut r.gap_max_ns, 0);
    if path_len > HTTP_PATH_MAX {
        set(&mut r.flags, HTTP_PATH_TRUNCATED);
        set(&mut r.path_len, HTTP_PATH_MAX as u32);
    } else {
        set(&mut r.flags, 0);
        set(&mut r.path_len, path_len as u32);
    }
    // SAFETY: the source is HTTP_PATH_MAX bytes at an offset <= 8 of the scratch buffer
    // (2 * SCAN bytes long); the helper copies without a loop in the program.
    unsafe {
        let src = (*s).buf.as_ptr().add(start & 15);
        let _ = bpf_probe_read_kernel_buf(src, &mut c.ev.req.path);
    }
    set(&mut c.ev.req.req_start_ns, now);
    set(&mut c.ev.req.req_end_ns, now);
    set(&mut c.ev.req.req_bytes, io.total);
    set(&mut c.remaining, 0);
    set(&mut c.last_data_ns, 0);
    set(&mut c.phase, CONN_REQUEST);
    if let Some(k) = counters(target) {
        // SAFETY: this CPU's counters.
        unsafe { (*k).started += 1 };
    }
    // A read that ends exactly with the blank line is the whole head (the usual GET):
    // no scan needed.
    let n_now = stored_n(s);
    if n_now >= 4 && word(s, n_now - 4) & low_bytes(4) == lit(b"\r\n\r\n\0\0\0\0") {
        // SAFETY: `conn` still points at this connection's value.
        unsafe { (*conn).ev.req.req_header_bytes = n_now as u64 };
        return;
    }
    // Last, with everything above already stored: the scan's many verifier states then
    // start from one caller state instead of one per method and path length.
    let (head, _, _) = scan_head(s);
    // SAFETY: `conn` still points at this connection's value.
    let c = unsafe { &mut *conn };
    c.ev.req.req_header_bytes = if head > 0 {
        head as u64
    } else {
        stored_n(s) as u64
    };
}

#[inline(always)]
fn more_request(c: &mut ConnState, io: &Io) {
    c.ev.req.req_bytes += io.total;
    c.ev.req.req_end_ns = io.now;
}

/// A read that does not start a request: body bytes in the request phase; on a new
/// connection, proof that it does not speak HTTP/1.x (a short first read waits for more).
#[inline(always)]
fn not_a_request(c: &mut ConnState, io: &Io, n: usize) {
    match c.phase {
        CONN_REQUEST => more_request(c, io),
        CONN_NEW if n >= 14 => {
            c.phase = CONN_NOT_HTTP;
            if let Some(k) = counters(io.target) {
                // SAFETY: this CPU's counters.
                unsafe { (*k).ignored_connections += 1 };
            }
        }
        _ => {}
    }
}

/// A response write: `io.buf` holds the first bytes (0 for sendfile).
fn on_write(conn: *mut ConnState, io: &Io) {
    let (tgid, fd, buf, len, now) = (io.tgid, io.fd, io.buf, io.total, io.now);
    // Bytes of the first buffer that may be inspected.
    let head_len = io.len;
    // SAFETY: `conn` points at this connection's value in the LRU map.
    let c = unsafe { &mut *conn };
    match c.phase {
        CONN_REQUEST => {
            if buf == 0 {
                return;
            }
            let Some((s, n)) = load(buf, head_len) else {
                return;
            };
            let w = word(s, 0);
            if n < 12 || w & low_bytes(7) != lit(b"HTTP/1.\0") || byte(s, 8) != b' ' {
                return;
            }
            let (d0, d1, d2) = (byte(s, 9), byte(s, 10), byte(s, 11));
            if !d0.is_ascii_digit() || !d1.is_ascii_digit() || !d2.is_ascii_digit() {
                return;
            }
            let status = (d0 - b'0') as u16 * 100 + (d1 - b'0') as u16 * 10 + (d2 - b'0') as u16;
            if status < 200 {
                // 100 Continue and friends: the real response is still to come.
                return;
            }
            set(&mut c.ev.req.status, status);
            set(&mut c.ev.req.resp_start_ns, now);
            set(&mut c.ev.req.resp_end_ns, now);
            set(&mut c.ev.req.resp_bytes, len);
            set(&mut c.phase, CONN_RESPONSE);
            response_head(conn, io, s);
        }
        CONN_RESPONSE => {
            c.ev.req.resp_bytes += len;
            c.ev.req.resp_end_ns = now;
            let chunked = c.ev.req.flags & HTTP_CHUNKED != 0;
            let terminator = chunked && last_chunk(io);
            // A write holding only "0\r\n\r\n" carries no data.
            if !(terminator && len == 5) {
                data(c, now);
            }
            if c.ev.req.flags & HTTP_CL_KNOWN != 0 {
                c.remaining -= len as i64;
                if c.remaining <= 0 {
                    finish(conn, tgid, fd, END_CONTENT_LENGTH);
                }
            } else if terminator {
                finish(conn, tgid, fd, END_LAST_CHUNK);
            }
        }
        _ => {}
    }
}

/// The rest of a response's first write, once its status is stored: the head scan runs
/// from this one caller state (see `on_read`).
fn response_head(conn: *mut ConnState, io: &Io, s: *mut Scratch) {
    let (head, cl, flags) = scan_head(s);
    // SAFETY: `conn` points at this connection's value in the LRU map.
    let c = unsafe { &mut *conn };
    let len = io.total;
    c.ev.req.flags |= flags;
    c.ev.req.resp_header_bytes = if head > 0 { head as u64 } else { len };
    let body = if head > 0 {
        len.saturating_sub(head as u64)
    } else {
        0
    };
    if body > 0 {
        data(c, io.now);
    }
    // No body follows for HEAD, 204 and 304.
    let status = c.ev.req.status;
    if c.ev.req.method == 5 || status == 204 || status == 304 {
        finish(conn, io.tgid, io.fd, END_CONTENT_LENGTH);
        return;
    }
    if cl >= 0 && head > 0 {
        c.ev.req.flags |= HTTP_CL_KNOWN;
        c.remaining = cl - body as i64;
        if c.remaining <= 0 {
            finish(conn, io.tgid, io.fd, END_CONTENT_LENGTH);
            return;
        }
    }
    if flags & HTTP_CHUNKED != 0 && body > 0 && last_chunk(io) {
        finish(conn, io.tgid, io.fd, END_LAST_CHUNK);
    }
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

/// Whether the write ended with the terminating chunk "0\r\n\r\n".
#[inline(always)]
fn last_chunk(io: &Io) -> bool {
    let end = if io.iov_cnt > 0 {
        iov_at(io.iov, io.iov_cnt - 1).map_or(0, |(b, l)| b + l)
    } else {
        io.end
    };
    if end < 5 {
        return false;
    }
    // SAFETY: bpf_probe_read_user checks the address.
    match unsafe { bpf_probe_read_user((end - 5) as *const [u8; 5]) } {
        Ok(b) => b == *b"0\r\n\r\n",
        Err(_) => false,
    }
}

/// End the exchange in progress (if any): one event when a response was seen.
fn finish(conn: *mut ConnState, tgid: u32, fd: u32, end: u32) {
    // SAFETY: `conn` points at this connection's value in the LRU map.
    let c = unsafe { &mut *conn };
    let phase = c.phase;
    if phase != CONN_REQUEST && phase != CONN_RESPONSE {
        return;
    }
    c.phase = CONN_IDLE;
    let k = counters(c.ev.req.target);
    if phase == CONN_RESPONSE {
        c.ev.tgid = tgid;
        c.ev.fd = fd;
        c.ev.end = end;
        // No wake-up per event (on a VM each one is an inter-processor interrupt): the
        // reader drains on a timer, and is woken only when a quarter of the ring is used.
        let flags = if HTTP_EVENTS.query(BPF_RB_AVAIL_DATA) > RING_WAKEUP_BYTES {
            BPF_RB_FORCE_WAKEUP
        } else {
            BPF_RB_NO_WAKEUP
        };
        // The kernel copies the event: no struct copy inside the program.
        if HTTP_EVENTS.output::<HttpEvent>(&c.ev, flags).is_err() {
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
