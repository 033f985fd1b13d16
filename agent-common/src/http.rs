//! HTTP/1.x head parsing, shared by the kernel programs (which call it on their per-CPU
//! scratch window) and the host (unit tests, and a fuzz target that compares it with
//! `httparse` on the same bytes).
//!
//! Everything here is written for the eBPF verifier: loops have constant bounds, offsets
//! are masked into the window, branches are few (checks are computed and combined), and
//! a head scan keeps its results in the window's memory (`Window::facts`) rather than in
//! registers, so the verifier's states converge after each branch.
use crate::{lit, low_bytes, HTTP_CHUNKED, HTTP_SSE};

/// Bytes a window holds for one scan (a head longer than this is scanned in several).
pub const SCAN: usize = 512;
/// Bytes of a request start kept across reads until its request line can be classified
/// (a client or server that splits the line over several reads).
pub const PENDING: usize = 64;
/// Bytes before a window that it may start with (what is carried from an earlier read or
/// write): a window's valid bytes are at most `PRE + SCAN`.
pub const PRE: usize = PENDING;
/// Longest head that is classified; past it, a request is counted with what is known.
pub const HEAD_MAX: usize = 8192;

/// What a head scan found in a window, at offsets in that window.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HeadFacts {
    /// End of the head (just after its blank line); 0 while not seen.
    pub head_len: u64,
    /// Where the first Content-Length value starts; 0 when there is none.
    pub cl_at: u64,
    /// `HTTP_SSE` and `HTTP_CHUNKED`, from Content-Type and Transfer-Encoding.
    pub flags: u64,
}

/// Bytes under scan. The kernel's implementation reads its per-CPU scratch map; tests and
/// the fuzz target use `Bytes`.
pub trait Window {
    /// How many bytes are valid (read back from memory in the kernel, so that no verifier
    /// path carries a range of its own for it).
    fn valid(&self) -> usize;
    /// The 8 bytes at `at` as a little-endian word; bytes past `len` read as 0.
    fn word(&self, at: usize) -> u64;
    fn byte(&self, at: usize) -> u8;
    /// Where a scan records what it found.
    fn facts(&mut self) -> &mut HeadFacts;
}

/// A window over a byte slice (host side).
pub struct Bytes<'a> {
    data: &'a [u8],
    facts: HeadFacts,
}

impl<'a> Bytes<'a> {
    /// At most `PRE + SCAN` bytes of `data`, as the kernel would load them.
    pub fn new(data: &'a [u8]) -> Bytes<'a> {
        let n = if data.len() > PRE + SCAN {
            PRE + SCAN
        } else {
            data.len()
        };
        Bytes {
            data: &data[..n],
            facts: HeadFacts::default(),
        }
    }

    pub fn found(&self) -> HeadFacts {
        self.facts
    }
}

impl Window for Bytes<'_> {
    fn valid(&self) -> usize {
        self.data.len()
    }
    fn word(&self, at: usize) -> u64 {
        let mut w = [0u8; 8];
        for (i, b) in w.iter_mut().enumerate() {
            *b = self.byte(at + i);
        }
        u64::from_le_bytes(w)
    }
    fn byte(&self, at: usize) -> u8 {
        match self.data.get(at) {
            Some(b) => *b,
            None => 0,
        }
    }
    fn facts(&mut self) -> &mut HeadFacts {
        &mut self.facts
    }
}

/// 1 when `x == y`, else 0, without a branch.
#[inline(always)]
pub fn eq(x: u64, y: u64) -> u64 {
    let d = x ^ y;
    (d.wrapping_sub(1) & !d) >> 63
}

const LOW: u64 = 0x0101_0101_0101_0101;
const HIGH: u64 = 0x8080_8080_8080_8080;
/// ASCII letters to lower case (also maps some punctuation, harmless for our compares).
const LOWER: u64 = 0x2020_2020_2020_2020;

/// Bytes equal to `b` in `w`, as the high bit of each matching byte.
#[inline(always)]
pub fn matches_byte(w: u64, b: u8) -> u64 {
    let x = w ^ (LOW * b as u64);
    x.wrapping_sub(LOW) & !x & HIGH
}

/// Byte index (0..8) of the lowest byte flagged in `mask` (as `matches_byte` returns it).
/// Branch-free, so the verifier follows one path rather than eight.
#[inline(always)]
pub fn lowest(mask: u64) -> usize {
    let one = (mask & mask.wrapping_neg()) >> 7; // 1 << (8 * i)
    (one.wrapping_mul(0x0001_0203_0405_0607) >> 56) as usize
}

/// Position of the first `b` at or after `from` and before the window's end.
#[inline(always)]
pub fn find<W: Window>(w: &W, from: usize, b: u8) -> Option<usize> {
    let mut at = from;
    for _ in 0..(PRE + SCAN) / 8 {
        let n = w.valid();
        if at >= n {
            return None;
        }
        let m = matches_byte(w.word(at), b);
        if m != 0 {
            let pos = at + lowest(m);
            return if pos < n { Some(pos) } else { None };
        }
        at += 8;
    }
    None
}

/// The request methods, as stored in `HttpRequest::method` (index), each with its space.
const METHOD_WORDS: [(u64, u32); 9] = [
    (lit(b"GET \0\0\0\0"), 4),
    (lit(b"POST \0\0\0"), 5),
    (lit(b"PUT \0\0\0\0"), 4),
    (lit(b"DELETE \0"), 7),
    (lit(b"HEAD \0\0\0"), 5),
    (lit(b"PATCH \0\0"), 6),
    (lit(b"OPTIONS "), 8),
    (lit(b"CONNECT "), 8),
    (lit(b"TRACE \0\0"), 6),
];

/// Whether the first `n` bytes of `w` (`n` < 8) can be the start of a request line: a
/// prefix of some method followed by its space.
#[inline(always)]
pub fn method_prefix(w: u64, n: usize) -> bool {
    if n == 0 || n >= 8 {
        return false;
    }
    let mask = low_bytes(n as u32);
    let mut any = 0;
    for (m, len) in METHOD_WORDS {
        any |= eq(w & mask, m & mask) & ((n <= len as usize) as u64);
    }
    any != 0
}

/// How the bytes at the start of a window read as the start of a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequestStart {
    /// A request line: method code, where its target starts and how long it is (up to
    /// the window's end when no space ends it there), and whether `HTTP/1.x` was seen.
    Line {
        method: u8,
        path_start: usize,
        path_len: usize,
        version_seen: bool,
    },
    /// Too few bytes to tell; they can be the start of a request line.
    Partial,
    /// Not a request line.
    No,
}

/// Classify the start of a window as a request line.
#[inline(always)]
pub fn request_start<W: Window>(w: &W) -> RequestStart {
    let n = w.valid();
    let w0 = w.word(0);
    let Some((method, start)) = crate::method(w0) else {
        return if n < 8 && method_prefix(w0, n) {
            RequestStart::Partial
        } else {
            RequestStart::No
        };
    };
    if n <= start {
        return RequestStart::Partial;
    }
    match find(w, start, b' ') {
        Some(sp) => {
            if sp + 8 > n {
                // " HTTP/1." not all here yet.
                return RequestStart::Partial;
            }
            if w.word(sp + 1) & low_bytes(7) != lit(b"HTTP/1.\0") {
                return RequestStart::No;
            }
            RequestStart::Line {
                method,
                path_start: start,
                path_len: sp - start,
                version_seen: true,
            }
        }
        // A long target: what is here is its start (only `HTTP_PATH_MAX` bytes are kept).
        None if n - start >= crate::HTTP_PATH_MAX => RequestStart::Line {
            method,
            path_start: start,
            path_len: n - start,
            version_seen: false,
        },
        None => RequestStart::Partial,
    }
}

/// The status code of a status line at the start of the window (`HTTP/1.x NNN`).
#[inline(always)]
pub fn status_line<W: Window>(w: &W) -> Option<u16> {
    if w.valid() < 12 || w.word(0) & low_bytes(7) != lit(b"HTTP/1.\0") || w.byte(8) != b' ' {
        return None;
    }
    let (d0, d1, d2) = (w.byte(9), w.byte(10), w.byte(11));
    if !d0.is_ascii_digit() || !d1.is_ascii_digit() || !d2.is_ascii_digit() {
        return None;
    }
    Some((d0 - b'0') as u16 * 100 + (d1 - b'0') as u16 * 10 + (d2 - b'0') as u16)
}

/// Offset of the first byte after up to three spaces or tabs at `at`.
#[inline(always)]
fn skip_ws<W: Window>(w: &W, at: usize) -> usize {
    let is_ws = |b: u8| (eq(b as u64, b' ' as u64) | eq(b as u64, b'\t' as u64)) as usize;
    let a = is_ws(w.byte(at));
    let b = a & is_ws(w.byte(at + 1));
    let c = b & is_ws(w.byte(at + 2));
    at + a + b + c
}

/// Scan the window from its start for line starts (after each `\n`), recording the head's
/// end and the headers we use in `w.facts()`. One flat loop over 8-byte words; newlines
/// inside a word are taken one bit at a time.
pub fn scan_head<W: Window>(w: &mut W) {
    for k in 0..(PRE + SCAN) / 8 {
        let base = k * 8;
        if base >= w.valid() {
            return;
        }
        let mut m = matches_byte(w.word(base), b'\n');
        // A header line is at least "\r\n": at most four line ends in a word.
        for _ in 0..4 {
            if m == 0 {
                break;
            }
            let at = base + lowest(m) + 1;
            m &= m.wrapping_sub(1);
            if at + 2 > w.valid() {
                break;
            }
            header_line(w, at);
            if w.facts().head_len != 0 {
                return;
            }
        }
    }
}

/// Look at the header line starting at `at`; record what it says. Branch-free: every check
/// is computed and OR-ed in, so the verifier follows one path.
#[inline(always)]
pub fn header_line<W: Window>(w: &mut W, at: usize) {
    let w0 = w.word(at);
    // Only the blank line and lines starting with c/C or t/T can matter: one compare
    // skips the rest (Host, Date, Server, User-Agent, ...).
    let first = (w0 & 0xff) | 0x20;
    if first != b'c' as u64 && first != b't' as u64 && first != (b'\r' | 0x20) as u64 {
        return;
    }
    let l0 = w0 | LOWER;
    let l1 = w.word(at + 8) | LOWER;
    let end = eq(w0 & low_bytes(2), lit(b"\r\n\0\0\0\0\0\0"));
    let content = eq(l0, lit(b"content-"));
    let cl = content & eq(l1 & low_bytes(7), lit(b"length:\0"));
    let ct = content & eq(l1 & low_bytes(5), lit(b"type:\0\0\0"));
    let ct_at = skip_ws(w, at + 13);
    let sse = ct
        & eq(w.word(ct_at) | LOWER, lit(b"text/eve"))
        & eq(w.word(ct_at + 8) | LOWER, lit(b"nt-strea"));
    let te = eq(l0, lit(b"transfer")) & eq(l1, lit(b"-encodin"));
    let te_at = skip_ws(w, at + 18);
    let chunked = te
        & eq(w.byte(at + 16) as u64 | 0x20, b'g' as u64)
        & eq(w.byte(at + 17) as u64, b':' as u64)
        & eq((w.word(te_at) | LOWER) & low_bytes(7), lit(b"chunked\0"));
    let cl_at = skip_ws(w, at + 15) as u64;
    let f = w.facts();
    f.head_len |= end * (at as u64 + 2);
    // The first Content-Length counts (a second one could only disagree).
    f.cl_at |= cl * eq(f.cl_at, 0) * cl_at;
    f.flags |= (sse * HTTP_SSE as u64) | (chunked * HTTP_CHUNKED as u64);
}

/// Decimal number at `at`, or -1 when there is no digit there.
#[inline(always)]
// A constant trip count, which the verifier bounds at once (a range from `at` it cannot).
#[allow(clippy::explicit_counter_loop)]
pub fn digits<W: Window>(w: &W, at: usize) -> i64 {
    let mut p = at;
    let mut v: i64 = 0;
    let mut any = false;
    for _ in 0..15 {
        if p >= w.valid() {
            break;
        }
        let c = w.byte(p);
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

/// The Content-Length value a scan found, or -1.
#[inline(always)]
pub fn content_length<W: Window>(w: &mut W) -> i64 {
    let at = w.facts().cl_at;
    if at == 0 {
        -1
    } else {
        digits(w, at as usize)
    }
}

/// Whether the last five bytes written (low byte first: the oldest) are the terminating
/// chunk `0\r\n\r\n`.
#[inline(always)]
pub const fn is_last_chunk(tail: u64) -> bool {
    tail & low_bytes(5) == lit(b"0\r\n\r\n\0\0\0")
}

#[cfg(test)]
mod tests;
