//! Types shared by the kernel programs (agent-ebpf) and the userspace agent.
//!
//! Every struct here is `#[repr(C)]` plain data: the kernel writes it into BPF maps and
//! userspace reads the same bytes back.
#![cfg_attr(not(test), no_std)]

pub mod h2;
pub mod http;

/// Target index used for whole-host tracing (`--all`): its series are labelled `target="host"`.
pub const HOST_TARGET: u32 = 0;

/// Slots in the TGID filter array; a process sits in slot `tgid & TARGET_SLOT_MASK`.
pub const TARGET_SLOTS: u32 = 1 << 16;
pub const TARGET_SLOT_MASK: u32 = TARGET_SLOTS - 1;
/// Set on a slot's `target` when some other target TGID with the same slot lives in the
/// overflow hash map, so only processes landing on such a slot pay for a hash lookup.
pub const SLOT_OVERFLOW: u32 = 1 << 31;

/// Slots in the per-thread in-flight syscall array (indexed by `tid & INFLIGHT_SLOT_MASK`).
pub const INFLIGHT_SLOTS: u32 = 1 << 16;
pub const INFLIGHT_SLOT_MASK: u32 = INFLIGHT_SLOTS - 1;

/// log2 latency buckets: bucket `i` counts durations in `[2^i, 2^(i+1))` ns (bucket 0 also
/// holds 0 ns); the last bucket is open-ended (≥ 2^(HIST_BUCKETS-1) ns ≈ 17 s).
pub const HIST_BUCKETS: usize = 36;

/// Syscall numbers are folded into 16 bits of the stats key.
pub const MAX_SYSCALL_NR: u32 = 1 << 16;

/// Index of the mode word in the CONFIG array, and of the first cgroup level.
pub const CONFIG_MODE: u32 = 0;
pub const CONFIG_CGROUP_LEVELS: u32 = 1;
/// How many distinct cgroup depths the kernel checks (one helper call each).
pub const MAX_CGROUP_LEVELS: u32 = 4;
/// Index of the word that turns HTTP request tracing on (1) or off (0).
pub const CONFIG_HTTP: u32 = CONFIG_CGROUP_LEVELS + MAX_CGROUP_LEVELS;
/// Index of the word that turns failure accounting (exit codes, deferred signals) on.
pub const CONFIG_FAILURES: u32 = CONFIG_HTTP + 1;
pub const CONFIG_ENTRIES: u32 = CONFIG_FAILURES + 1;

/// Causes of the kernel programs' rare diagnostics (aya-log records), each logged once
/// until userspace clears its flag in `DIAG_ONCE`.
pub const DIAG_SYSCALL_STATS_FULL: u32 = 0;
pub const DIAG_TARGETS_OVERFLOW_FULL: u32 = 1;
pub const DIAG_CAUSES: u32 = 2;

/// Mode bits in `CONFIG[CONFIG_MODE]`.
pub const MODE_ALL: u32 = 1;
pub const MODE_CGROUP: u32 = 2;

/// One slot of the TGID filter array.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TargetSlot {
    pub tgid: u32,
    /// Target index (never `HOST_TARGET`) in the low bits, 0 when empty, plus `SLOT_OVERFLOW`.
    pub target: u32,
}

impl TargetSlot {
    pub const fn target_index(&self) -> u32 {
        self.target & !SLOT_OVERFLOW
    }
    pub const fn has_overflow(&self) -> bool {
        self.target & SLOT_OVERFLOW != 0
    }
}

/// A syscall in progress on a targeted thread.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct Inflight {
    pub tid: u32,
    pub target: u32,
    pub nr: u32,
    pub _pad: u32,
    pub start_ns: u64,
    /// First three syscall arguments (kept for the socket calls the HTTP tracer reads).
    pub args: [u64; 3],
}

/// Per-(target, syscall) aggregate, one copy per CPU.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct SyscallStats {
    pub count: u64,
    pub errors: u64,
    /// Sum of the measured durations (only calls with a measured duration are in the
    /// histogram; see `hist_count`).
    pub sum_ns: u64,
    pub buckets: [u64; HIST_BUCKETS],
}

impl SyscallStats {
    pub const ZERO: SyscallStats = SyscallStats {
        count: 0,
        errors: 0,
        sum_ns: 0,
        buckets: [0; HIST_BUCKETS],
    };
}

/// Key of the stats map: target index in the high half, syscall number in the low half.
#[inline(always)]
pub const fn stats_key(target: u32, nr: u32) -> u32 {
    (target << 16) | (nr & (MAX_SYSCALL_NR - 1))
}

#[inline(always)]
pub const fn stats_key_parts(key: u32) -> (u32, u32) {
    (key >> 16, key & (MAX_SYSCALL_NR - 1))
}

/// Bucket index for a duration: floor(log2(ns)), clamped to the last bucket. Branch-only
/// (no loops) so the verifier sees a short straight-line program.
#[inline(always)]
pub const fn log2_bucket(ns: u64) -> usize {
    let mut v = ns;
    let mut r = 0usize;
    if v >= 1 << 32 {
        v >>= 32;
        r += 32;
    }
    if v >= 1 << 16 {
        v >>= 16;
        r += 16;
    }
    if v >= 1 << 8 {
        v >>= 8;
        r += 8;
    }
    if v >= 1 << 4 {
        v >>= 4;
        r += 4;
    }
    if v >= 1 << 2 {
        v >>= 2;
        r += 2;
    }
    if v >= 1 << 1 {
        r += 1;
    }
    if r >= HIST_BUCKETS {
        HIST_BUCKETS - 1
    } else {
        r
    }
}

/// Bytes of a request path kept in the kernel (longer paths are cut).
pub const HTTP_PATH_MAX: usize = 64;
/// Per-target HTTP counters are indexed by `target & HTTP_TARGET_MASK`.
pub const HTTP_TARGETS: u32 = 256;
pub const HTTP_TARGET_MASK: u32 = HTTP_TARGETS - 1;

/// Request methods, as stored in `HttpRequest::method`.
pub const METHODS: [&str; 10] = [
    "", "GET", "POST", "PUT", "DELETE", "HEAD", "PATCH", "OPTIONS", "CONNECT", "TRACE",
];

/// A literal of 8 bytes as the little-endian word a load of them gives.
#[inline(always)]
pub const fn lit(s: &[u8; 8]) -> u64 {
    u64::from_le_bytes(*s)
}

/// Mask of the low `n` bytes of a word.
#[inline(always)]
pub const fn low_bytes(n: u32) -> u64 {
    if n >= 8 {
        u64::MAX
    } else {
        (1u64 << (n * 8)) - 1
    }
}

/// Method code (index into `METHODS`) and the length of "METHOD " for the first 8 bytes
/// of a request line, read as a little-endian word. Compares whole words: no loop.
#[inline(always)]
pub const fn method(w: u64) -> Option<(u8, usize)> {
    let m4 = w & low_bytes(4);
    let m5 = w & low_bytes(5);
    let m6 = w & low_bytes(6);
    let m7 = w & low_bytes(7);
    if m4 == lit(b"GET \0\0\0\0") {
        Some((1, 4))
    } else if m5 == lit(b"POST \0\0\0") {
        Some((2, 5))
    } else if m4 == lit(b"PUT \0\0\0\0") {
        Some((3, 4))
    } else if m7 == lit(b"DELETE \0") {
        Some((4, 7))
    } else if m5 == lit(b"HEAD \0\0\0") {
        Some((5, 5))
    } else if m6 == lit(b"PATCH \0\0") {
        Some((6, 6))
    } else if w == lit(b"OPTIONS ") {
        Some((7, 8))
    } else if w == lit(b"CONNECT ") {
        Some((8, 8))
    } else if m6 == lit(b"TRACE \0\0") {
        Some((9, 6))
    } else {
        None
    }
}

/// `HttpRequest::flags` bits.
pub const HTTP_CHUNKED: u8 = 1;
pub const HTTP_SSE: u8 = 2;
/// The response's Content-Length was read.
pub const HTTP_CL_KNOWN: u8 = 4;
/// The path did not fit in `HTTP_PATH_MAX` bytes.
pub const HTTP_PATH_TRUNCATED: u8 = 8;
/// The request line said `HTTP/1.0` (else `HTTP/1.1`).
pub const HTTP_V10: u8 = 16;

/// Why a request was reported complete (`HttpEvent::end`).
pub const END_CONTENT_LENGTH: u32 = 1;
pub const END_LAST_CHUNK: u32 = 2;
pub const END_NEXT_REQUEST: u32 = 3;
pub const END_CLOSE: u32 = 4;

/// What the kernel learned about one request/response exchange.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct HttpRequest {
    pub target: u32,
    pub status: u16,
    pub method: u8,
    pub flags: u8,
    pub path_len: u32,
    /// Response writes that carried body data (for streams: one SSE event or chunk each).
    pub chunks: u32,
    /// First byte of the request read (exit of the read that returned the request line).
    pub req_start_ns: u64,
    /// Last read of the request before the response started ("request fully read").
    pub req_end_ns: u64,
    /// Write that carried the status line.
    pub resp_start_ns: u64,
    /// First write carrying body data.
    pub first_data_ns: u64,
    /// Last response write.
    pub resp_end_ns: u64,
    pub req_bytes: u64,
    pub req_header_bytes: u64,
    pub resp_bytes: u64,
    pub resp_header_bytes: u64,
    /// Sum and maximum of the gaps between consecutive data writes.
    pub gap_sum_ns: u64,
    pub gap_max_ns: u64,
    pub path: [u8; HTTP_PATH_MAX],
}

/// Connection phases (`ConnState::phase`).
pub const CONN_NEW: u32 = 0;
pub const CONN_IDLE: u32 = 1;
/// A request's head or body is being read.
pub const CONN_REQUEST: u32 = 2;
/// The response's head is complete; body writes follow.
pub const CONN_RESPONSE: u32 = 3;
/// The first bytes were not HTTP/1.x (or the connection switched protocols): ignored from
/// then on.
pub const CONN_NOT_HTTP: u32 = 4;
/// The response's status line is written, the rest of its head not yet.
pub const CONN_RESPONSE_HEAD: u32 = 5;
/// The client sent the HTTP/2 preface: frames follow in both directions (`ConnState::h2`).
pub const CONN_H2: u32 = 6;

/// `ConnState::tls`: the socket carries plain bytes.
pub const TLS_NONE: u32 = 0;
/// The socket carries TLS, and its handshake ran inside a probed OpenSSL call: the
/// plaintext comes from the `SSL_read`/`SSL_write` probes, and the syscalls' bytes
/// (ciphertext) are not looked at.
pub const TLS_SEEN: u32 = 1;
/// The socket carries TLS that no probe sees (static OpenSSL, rustls, Go, ...): ignored.
pub const TLS_UNSEEN: u32 = 2;

/// `ConnState::pre_kind`: what `ConnState::pre` holds.
pub const PRE_NONE: u32 = 0;
/// The start of a request, read but not yet classifiable (split over reads).
pub const PRE_PENDING: u32 = 1;
/// The last bytes of a head still open (its end not yet read or written), so a line split
/// between two calls is seen whole.
pub const PRE_CARRY: u32 = 2;

/// Per-connection state, keyed by `(tgid << 32) | fd` in an LRU map.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ConnState {
    pub phase: u32,
    /// `PRE_*`: what `pre` holds, and how many of its bytes.
    pub pre_kind: u32,
    pub pre_len: u32,
    /// The request's head is still open (its end not read yet).
    pub req_head_open: u32,
    /// Response body bytes still to come when Content-Length is known.
    pub remaining: i64,
    /// The Content-Length of the response head being read (-1: none seen).
    pub resp_cl: i64,
    /// Time of the last data write (for inter-chunk gaps).
    pub last_data_ns: u64,
    /// When the first pending bytes of a request were read.
    pub pending_ns: u64,
    /// `TLS_*`: whether the bytes of the socket calls are ciphertext, and who sees them.
    pub tls: u32,
    pub _pad: u32,
    pub pre: [u8; http::PRE],
    /// The exchange in progress, already in event form: completing it is one ring-buffer
    /// output of this field (no copy inside the program).
    pub ev: HttpEvent,
    /// Frame tracking of an HTTP/2 connection (`CONN_H2`).
    pub h2: h2::H2Conn,
}

/// Why a request was reported complete (`HttpEvent::end`), continued.
/// The response switched protocols (101): the connection is not HTTP/1.x from then on.
pub const END_UPGRADE: u32 = 5;

/// One completed request: the only per-request data that leaves the kernel.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct HttpEvent {
    pub tgid: u32,
    pub fd: u32,
    pub end: u32,
    /// The listening socket's fd the connection was accepted on (its port tells the
    /// target's front door from internal ports); u32::MAX when unknown.
    pub listen_fd: u32,
    pub req: HttpRequest,
}

/// A socket call handed from `sys_exit` to the head-scanning program (tail call), one per
/// CPU: which connection, which bytes, and how far the scan got.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct HttpJob {
    pub tgid: u32,
    pub fd: u32,
    pub target: u32,
    /// `JOB_READ` or `JOB_WRITE`.
    pub kind: u32,
    /// The buffer under scan and how many of the call's bytes are in it.
    pub buf: u64,
    pub len: u64,
    /// Bytes of `buf` scanned so far.
    pub off: u64,
    /// Bytes the call moved in total, and how many of them came before `buf`.
    pub total: u64,
    pub before: u64,
    /// Vectored calls: the iovec array, its length, and the index of `buf`'s entry.
    pub iov: u64,
    pub iov_cnt: u64,
    pub iov_idx: u64,
    pub now: u64,
    /// Tail calls taken for this call (bounded by the kernel's limit).
    pub hops: u32,
    /// The window is already in the scratch buffer (the request-line program loaded it).
    pub loaded: u32,
    /// Head bytes before the loaded window's first byte (request or response).
    pub base: u64,
}

pub const JOB_READ: u32 = 0;
pub const JOB_WRITE: u32 = 1;

/// Per-target request counters (one copy per CPU).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct HttpCounters {
    pub started: u64,
    pub finished: u64,
    /// Completed requests whose event did not fit in the ring buffer.
    pub dropped: u64,
    /// Connections accepted (and tracked) by the target.
    pub accepted: u64,
    /// Accepted connections whose first bytes were not HTTP/1.x (ignored from then on).
    pub ignored_connections: u64,
    /// Requests that ended (next request or close) without a response being seen.
    pub unanswered: u64,
    /// Accepted connections that carry TLS whose plaintext the OpenSSL probes see.
    pub tls_connections: u64,
    /// Accepted connections that carry TLS no probe sees (another TLS stack).
    pub tls_unseen: u64,
    /// Accepted connections that started with the HTTP/2 client preface.
    pub h2_connections: u64,
    /// HTTP/2 header-block fragments that did not fit in the ring buffer, plus
    /// connections whose frames the kernel lost track of (too many in one call).
    pub h2_lost: u64,
}

/// CUDA driver calls of one target, aggregated in the kernel (per CPU).
pub const CUDA_MEMCPY_KINDS: usize = 4;
/// Memcpy kinds, in the order of `CudaStats::memcpy_*`.
pub const CUDA_MEMCPY_NAMES: [&str; CUDA_MEMCPY_KINDS] = ["htod", "dtoh", "dtod", "any"];

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct CudaStats {
    pub kernel_launches: u64,
    pub graph_launches: u64,
    pub allocs: u64,
    pub alloc_bytes: u64,
    pub frees: u64,
    pub memcpy_calls: [u64; CUDA_MEMCPY_KINDS],
    pub memcpy_bytes: [u64; CUDA_MEMCPY_KINDS],
    pub sync_count: u64,
    pub sync_sum_ns: u64,
    /// log2 buckets of synchronize wait times, as `SyscallStats::buckets`.
    pub sync_buckets: [u64; HIST_BUCKETS],
    /// Monotonic time (`bpf_ktime_get_ns`) of this CPU's last kernel or graph launch of the
    /// target; 0 before the first. Userspace takes the maximum over CPUs.
    pub last_launch_ns: u64,
}

impl CudaStats {
    pub const ZERO: CudaStats = CudaStats {
        kernel_launches: 0,
        graph_launches: 0,
        allocs: 0,
        alloc_bytes: 0,
        frees: 0,
        memcpy_calls: [0; CUDA_MEMCPY_KINDS],
        memcpy_bytes: [0; CUDA_MEMCPY_KINDS],
        sync_count: 0,
        sync_sum_ns: 0,
        sync_buckets: [0; HIST_BUCKETS],
        last_launch_ns: 0,
    };
}

/// The allocation calls whose error returns are counted (`CUDA_ERRORS`), in the order of
/// the `call` part of the key. A `_ptsz` variant counts under its base name.
pub const CUDA_ERROR_CALLS: [&str; 4] = [
    "cuMemAlloc_v2",
    "cuMemAllocManaged",
    "cuMemCreate",
    "cuMemAllocAsync",
];

/// Key of the per-CPU CUDA error counts: target index, call (index into
/// `CUDA_ERROR_CALLS`) and the CUresult, packed in one u64 (no struct padding to zero).
pub const fn cuda_error_key(target: u32, call: u32, code: u32) -> u64 {
    ((target as u64 & 0xff_ffff) << 40) | ((call as u64 & 0xff) << 32) | code as u64
}

/// (target, call, code) of a `cuda_error_key`.
pub const fn cuda_error_key_parts(key: u64) -> (u32, u32, u32) {
    ((key >> 40) as u32, ((key >> 32) & 0xff) as u32, key as u32)
}

/// Scheduler figures of one target (per CPU).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct SchedStats {
    pub on_cpu_ns: u64,
    pub off_cpu_ns: u64,
    pub runq_count: u64,
    pub runq_sum_ns: u64,
    pub runq_buckets: [u64; HIST_BUCKETS],
}

impl SchedStats {
    pub const ZERO: SchedStats = SchedStats {
        on_cpu_ns: 0,
        off_cpu_ns: 0,
        runq_count: 0,
        runq_sum_ns: 0,
        runq_buckets: [0; HIST_BUCKETS],
    };
}

/// A target thread's scheduler state (kernel side only; userspace never reads it).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct ThreadSched {
    pub target: u32,
    pub _pad: u32,
    /// When it became runnable (0: not waiting for a CPU).
    pub enqueued_ns: u64,
    /// When it went on a CPU (0: not running).
    pub on_cpu_since_ns: u64,
    /// When it left a CPU not runnable (0: not sleeping).
    pub off_cpu_since_ns: u64,
}

/// TCP socket states as the kernel numbers them (index = state), for labels.
pub const TCP_STATES: [&str; 13] = [
    "UNKNOWN",
    "ESTABLISHED",
    "SYN_SENT",
    "SYN_RECV",
    "FIN_WAIT1",
    "FIN_WAIT2",
    "TIME_WAIT",
    "CLOSE",
    "CLOSE_WAIT",
    "LAST_ACK",
    "LISTEN",
    "CLOSING",
    "NEW_SYN_RECV",
];

/// TCP figures of one target (per CPU): retransmitted segments and state changes by new
/// state.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct TcpStats {
    pub retransmits: u64,
    pub state_changes: [u64; 16],
}

impl TcpStats {
    pub const ZERO: TcpStats = TcpStats {
        retransmits: 0,
        state_changes: [0; 16],
    };
}

/// The fatal signals counted per target, in `FailureStats::signals` order.
pub const FATAL_SIGNALS: [(u32, &str); 6] = [
    (9, "SIGKILL"),
    (11, "SIGSEGV"),
    (6, "SIGABRT"),
    (7, "SIGBUS"),
    (4, "SIGILL"),
    (8, "SIGFPE"),
];

/// Where signal `sig` is counted in `FailureStats::signals`, if it is one of `FATAL_SIGNALS`.
#[inline(always)]
pub const fn fatal_signal_index(sig: u32) -> Option<usize> {
    match sig {
        9 => Some(0),
        11 => Some(1),
        6 => Some(2),
        7 => Some(3),
        4 => Some(4),
        8 => Some(5),
        _ => None,
    }
}

/// How a target's process ended, in `FailureStats::exits` order: exit status 0, another
/// exit status, or a signal (it never called exit).
pub const EXIT_KINDS: [&str; 3] = ["exit_0", "exit_nonzero", "signal"];
pub const EXIT_ZERO: usize = 0;
pub const EXIT_NONZERO: usize = 1;
pub const EXIT_SIGNAL: usize = 2;

/// Fatal signals delivered to a target's tasks and its processes' ends (per CPU).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FailureStats {
    pub signals: [u64; 6],
    pub exits: [u64; 3],
}

/// A task the OOM killer chose (`OOM_VICTIMS`, keyed by its PID): its target and when.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OomVictim {
    pub target: u32,
    pub _pad: u32,
    pub ktime_ns: u64,
}

#[cfg(feature = "user")]
mod user {
    // SAFETY: repr(C), integers only, no padding.
    unsafe impl aya::Pod for super::FailureStats {}
    // SAFETY: repr(C), integers only, explicit padding field.
    unsafe impl aya::Pod for super::OomVictim {}
    // SAFETY: repr(C), integers only, no padding.
    unsafe impl aya::Pod for super::SchedStats {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::TcpStats {}
    // SAFETY: repr(C), integers only, no padding.
    unsafe impl aya::Pod for super::CudaStats {}
    // SAFETY: as below: repr(C), integers only, explicit padding.
    unsafe impl aya::Pod for super::HttpCounters {}
    // SAFETY: each type is #[repr(C)], Copy, made only of integers, and has no padding the
    // kernel could leave uninitialised (Inflight carries an explicit pad field).
    unsafe impl aya::Pod for super::TargetSlot {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::Inflight {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::SyscallStats {}
    // SAFETY: as above: every field is an integer or an array of them, laid out without
    // gaps (the agent reads connection states when a target process exits).
    unsafe impl aya::Pod for super::ConnState {}
    // SAFETY: repr(C), integers and byte arrays only, explicit padding.
    unsafe impl aya::Pod for super::h2::H2Stream {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::h2::H2Key {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fatal_signal_indexes_follow_the_table() {
        for (i, (sig, _)) in FATAL_SIGNALS.iter().enumerate() {
            assert_eq!(fatal_signal_index(*sig), Some(i));
        }
        for sig in [0, 1, 2, 3, 5, 10, 12, 13, 14, 15, 17, 23, 64] {
            assert_eq!(fatal_signal_index(sig), None, "signal {sig}");
        }
    }

    #[test]
    fn cuda_error_keys_round_trip() {
        for (t, c, e) in [(0, 0, 2), (1, 3, 999), (255, 2, 1), (7, 1, u32::MAX)] {
            assert_eq!(cuda_error_key_parts(cuda_error_key(t, c, e)), (t, c, e));
        }
        assert_ne!(cuda_error_key(1, 0, 2), cuda_error_key(2, 0, 2));
        assert_ne!(cuda_error_key(1, 0, 2), cuda_error_key(1, 1, 2));
    }

    #[test]
    fn log2_buckets() {
        assert_eq!(log2_bucket(0), 0);
        assert_eq!(log2_bucket(1), 0);
        assert_eq!(log2_bucket(2), 1);
        assert_eq!(log2_bucket(3), 1);
        assert_eq!(log2_bucket(1023), 9);
        assert_eq!(log2_bucket(1024), 10);
        assert_eq!(log2_bucket(3_000_000), 21);
        assert_eq!(log2_bucket((1 << 35) - 1), 34);
        assert_eq!(log2_bucket(1 << 35), 35);
        assert_eq!(log2_bucket(u64::MAX), HIST_BUCKETS - 1);
    }

    #[test]
    fn method_codes_match_the_names() {
        for (code, name) in METHODS.iter().enumerate().skip(1) {
            let mut line = [0u8; 8];
            let text = [name.as_bytes(), b" /x HTTP/1.1"].concat();
            line.copy_from_slice(&text[..8]);
            assert_eq!(
                method(u64::from_le_bytes(line)),
                Some((code as u8, name.len() + 1)),
                "{name}"
            );
        }
        assert_eq!(method(u64::from_le_bytes(*b"GETX /a ")), None);
        assert_eq!(
            method(u64::from_le_bytes(*b"\x16\x03\x01\x00\xa5\x01\x00\x00")),
            None
        );
    }

    #[test]
    fn key_round_trip() {
        assert_eq!(stats_key_parts(stats_key(7, 230)), (7, 230));
        assert_eq!(stats_key_parts(stats_key(0, 0)), (0, 0));
    }
}
