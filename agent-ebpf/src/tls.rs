//! TLS through OpenSSL: uprobes on the `libssl.so.3` the targets map. `SSL_read`,
//! `SSL_read_ex`, `SSL_write`, `SSL_write_ex` and `SSL_do_handshake` note the call on
//! entry (per thread); a socket call the thread makes while inside one ties the call's
//! `SSL` to that socket (`tie`, from the syscall hooks); the return probe hands the
//! plaintext to the same HTTP/1.x and HTTP/2 classification as plain sockets, on the
//! socket's connection state. The syscall hooks leave a TLS socket's bytes (ciphertext)
//! alone, so each connection is counted once.
use agent_common::TLS_SEEN;
use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns, bpf_probe_read_user},
    macros::{map, uprobe, uretprobe},
    maps::{HashMap, LruHashMap},
    programs::{ProbeContext, RetProbeContext},
};

use crate::{
    http::{conn_key, dispatch, Call, CONNS, HTTP_TAIL_TLS},
    target_of,
};

const READ: u32 = 0;
const WRITE: u32 = 1;
const HANDSHAKE: u32 = 2;
/// The `_ex` form: the byte count is written through the fourth argument.
const EX: u32 = 4;
const NO_FD: u32 = u32::MAX;

/// An OpenSSL call in progress on a target's thread.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct SslCall {
    ssl: u64,
    buf: u64,
    /// `size_t *readbytes` / `*written` of the `_ex` forms.
    count_at: u64,
    start_ns: u64,
    /// The socket a syscall inside the call used (`NO_FD` while none).
    fd: u32,
    kind: u32,
    /// Probed calls nested inside this one (their returns are not this one's).
    depth: u32,
    _pad: u32,
}

#[map]
static SSL_CALLS: HashMap<u32, SslCall> = HashMap::with_max_entries(16384, 0);

/// (tgid, SSL*) → socket fd, learned from the socket calls inside OpenSSL calls (a call
/// served from OpenSSL's buffer makes none).
#[map]
static SSL_FDS: LruHashMap<[u64; 2], u32> = LruHashMap::with_max_entries(65536, 0);

#[inline(always)]
fn enter(ctx: &ProbeContext, kind: u32) {
    let pid_tgid = bpf_get_current_pid_tgid();
    if target_of((pid_tgid >> 32) as u32).is_none() {
        return;
    }
    let tid = pid_tgid as u32;
    if let Some(c) = SSL_CALLS.get_ptr_mut(tid) {
        // SAFETY: `c` points at this thread's entry; only this thread writes it.
        unsafe { (*c).depth += 1 };
        return;
    }
    let call = SslCall {
        ssl: ctx.arg(0).unwrap_or(0),
        buf: if kind == HANDSHAKE {
            0
        } else {
            ctx.arg(1).unwrap_or(0)
        },
        count_at: if kind & EX != 0 {
            ctx.arg(3).unwrap_or(0)
        } else {
            0
        },
        // SAFETY: plain helper call.
        start_ns: unsafe { bpf_ktime_get_ns() },
        fd: NO_FD,
        kind,
        depth: 0,
        _pad: 0,
    };
    #[allow(clippy::needless_borrows_for_generic_args)] // no memcpy loop
    let _ = SSL_CALLS.insert(tid, &call, 0);
}

#[uprobe]
pub fn ssl_read_enter(ctx: ProbeContext) -> u32 {
    enter(&ctx, READ);
    0
}

#[uprobe]
pub fn ssl_read_ex_enter(ctx: ProbeContext) -> u32 {
    enter(&ctx, READ | EX);
    0
}

#[uprobe]
pub fn ssl_write_enter(ctx: ProbeContext) -> u32 {
    enter(&ctx, WRITE);
    0
}

#[uprobe]
pub fn ssl_write_ex_enter(ctx: ProbeContext) -> u32 {
    enter(&ctx, WRITE | EX);
    0
}

#[uprobe]
pub fn ssl_handshake_enter(ctx: ProbeContext) -> u32 {
    enter(&ctx, HANDSHAKE);
    0
}

/// A socket call of the current thread on TLS socket `fd`: when the thread is inside a
/// probed OpenSSL call, that call's SSL uses this socket. True when it is.
#[inline(always)]
pub fn tie(fd: u32) -> bool {
    let tid = bpf_get_current_pid_tgid() as u32;
    match SSL_CALLS.get_ptr_mut(tid) {
        Some(c) => {
            // SAFETY: `c` points at this thread's entry.
            unsafe { (*c).fd = fd };
            true
        }
        None => false,
    }
}

/// Every probed function's return: the plaintext read or written, classified.
#[uretprobe]
pub fn ssl_exit(ctx: RetProbeContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tid = pid_tgid as u32;
    let tgid = (pid_tgid >> 32) as u32;
    let Some(c) = SSL_CALLS.get_ptr_mut(tid) else {
        return 0;
    };
    // SAFETY: `c` points at this thread's entry; copied out before it is removed.
    let call = unsafe {
        if (*c).depth > 0 {
            (*c).depth -= 1;
            return 0;
        }
        *c
    };
    let _ = SSL_CALLS.remove(tid);
    let Some(target) = target_of(tgid) else {
        return 0;
    };
    let ssl_key = [tgid as u64, call.ssl];
    if call.fd != NO_FD {
        let _ = SSL_FDS.insert(ssl_key, call.fd, 0);
    }
    let kind = call.kind & 3;
    if kind == HANDSHAKE {
        return 0;
    }
    let bytes: u64 = if call.kind & EX != 0 {
        let ok: i64 = ctx.ret();
        if ok as i32 != 1 {
            return 0;
        }
        // SAFETY: bpf_probe_read_user checks the address.
        unsafe { bpf_probe_read_user(call.count_at as *const u64) }.unwrap_or(0)
    } else {
        let n: i64 = ctx.ret();
        let n = n as i32;
        if n <= 0 {
            return 0;
        }
        n as u64
    };
    if bytes == 0 || call.buf == 0 {
        return 0;
    }
    let fd = if call.fd != NO_FD {
        call.fd
    } else {
        // SAFETY: the value is a plain u32 copied out at once.
        match unsafe { SSL_FDS.get(ssl_key) } {
            Some(fd) => *fd,
            None => return 0,
        }
    };
    let Some(conn) = CONNS.get_ptr_mut(conn_key(tgid, fd)) else {
        return 0;
    };
    // SAFETY: `conn` points at this connection's value in the LRU map.
    if unsafe { (*conn).tls } != TLS_SEEN {
        return 0;
    }
    let read = kind == READ;
    let call = Call {
        tgid,
        fd,
        target,
        read,
        total: bytes,
        buf: call.buf,
        len: bytes,
        iov: 0,
        iov_cnt: 0,
        // A write counts from when the plaintext was handed over (its syscall follows),
        // a read from when the plaintext is the application's.
        // SAFETY: plain helper call.
        now: if read {
            unsafe { bpf_ktime_get_ns() }
        } else {
            call.start_ns
        },
    };
    dispatch(&ctx, &HTTP_TAIL_TLS, conn, &call);
    0
}
