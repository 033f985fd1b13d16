//! Completed-request events from the kernel → HTTP and LLM-stream series, and per-target
//! summaries over a sliding window (rate, 5xx share, latency and TTFT percentiles).
use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    time::{Duration, Instant},
};

use agent_common::{HttpCounters, HttpEvent, HTTP_CHUNKED, HTTP_SSE, HTTP_V10, METHODS};

use serde::Serialize;

use super::{
    doors::ListenPorts,
    h2::{Exchange, Losses},
    route::{self, RouteSet},
    rpc::{self, RpcSeries, RpcStreamSeries, TargetRpc},
};
use crate::{
    base::histogram::{self, Histogram},
    targets::{Target, Targets},
};

/// Cumulative HTTP figures of one (target, protocol version, method, route, status).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HttpSeries {
    pub target: String,
    /// "1.0", "1.1" or "2" (`network_protocol_version`).
    pub version: &'static str,
    pub method: String,
    pub route: String,
    pub status: u16,
    pub duration: Histogram,
    pub request_body: Histogram,
    pub response_body: Histogram,
}

/// Cumulative streaming (chunked or SSE) figures of one (target, route).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StreamSeries {
    pub target: String,
    pub route: String,
    pub ttft: Histogram,
    pub tpot: Histogram,
    pub duration: Histogram,
    pub chunks: u64,
}

/// One target's requests over the recent window (what alert rules read). A figure that
/// cannot be known (no requests, no stream) is absent.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct RequestSummary {
    pub target: String,
    pub active: Option<u64>,
    /// Cumulative: connections the target accepted.
    pub accepted_connections: Option<u64>,
    /// Cumulative: accepted connections that did not speak HTTP/1.x.
    pub ignored_connections: Option<u64>,
    /// Cumulative: requests that ended without a response being seen.
    pub unanswered: Option<u64>,
    /// Cumulative: accepted connections carrying TLS the OpenSSL probes see, and TLS no
    /// probe sees.
    pub tls_connections: Option<u64>,
    pub tls_unseen_connections: Option<u64>,
    /// Cumulative: accepted connections that spoke HTTP/2 (h2c, or h2 through OpenSSL).
    pub h2_connections: Option<u64>,
    /// Cumulative: HTTP/2 header blocks lost (the kernel's ring full, a gap, a block that
    /// did not decode, frames lost track of), and streams not decoded because of it.
    pub h2_blocks_lost: Option<u64>,
    pub h2_streams_undecoded: Option<u64>,
    pub request_rate: Option<f64>,
    /// Share of responses with a 5xx status.
    pub error_ratio: Option<f64>,
    pub latency_avg_seconds: Option<f64>,
    pub latency_p50_seconds: Option<f64>,
    pub latency_p95_seconds: Option<f64>,
    pub latency_p99_seconds: Option<f64>,
    pub ttft_p50_seconds: Option<f64>,
    pub ttft_p95_seconds: Option<f64>,
    /// Age of the oldest request read and not yet answered (absent when none is open).
    pub oldest_active_request_seconds: Option<f64>,
    /// Seconds since the last write of the most silent response still in progress.
    pub stream_idle_seconds: Option<f64>,
}

/// Requests a target accepted on one of its listening ports that is not its front door
/// (cumulative).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct InternalRequests {
    pub target: String,
    /// The local port, or `_OTHER` past `MAX_INTERNAL_PORTS`.
    pub port: String,
    pub requests: u64,
}

/// Most recent samples kept per target for percentiles.
const MAX_SAMPLES: usize = 10_000;
/// Internal ports counted apart per target; the rest are counted together.
const MAX_INTERNAL_PORTS: usize = 64;

/// An event as the ring buffer delivers it; `None` when the record is too short.
pub fn decode(bytes: &[u8]) -> Option<HttpEvent> {
    if bytes.len() < std::mem::size_of::<HttpEvent>() {
        return None;
    }
    // SAFETY: the slice holds at least size_of::<HttpEvent>() bytes; HttpEvent is
    // repr(C) plain integers, valid for any bit pattern; read_unaligned has no alignment
    // requirement.
    Some(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<HttpEvent>()) })
}

/// Milliseconds from `epoch` to `now`, wrapping at 2^32 (49 days).
fn millis_since(epoch: Instant, now: Instant) -> u32 {
    now.saturating_duration_since(epoch).as_millis() as u32
}

fn seconds(from_ns: u64, to_ns: u64) -> Option<f64> {
    (to_ns >= from_ns && from_ns != 0).then(|| (to_ns - from_ns) as f64 / 1e9)
}

/// A request in the percentile window: 12 bytes, so that the `MAX_SAMPLES` kept per target
/// stay small (this window is most of the agent's heap under load).
struct Sample {
    /// Milliseconds since `Requests::epoch`, wrapping (only ages within the window count).
    at_ms: u32,
    /// Microseconds, at most `NO_VALUE - 1` (71 minutes).
    duration_us: u32,
    /// Microseconds; `NO_VALUE` when the response streamed nothing.
    ttft_us: u32,
}

const NO_VALUE: u32 = u32::MAX;

fn micros(seconds: f64) -> u32 {
    (seconds * 1e6).round().clamp(0.0, f64::from(NO_VALUE - 1)) as u32
}

/// Every series, sorted: HTTP, streams, gRPC calls, gRPC streaming methods.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AllSeries {
    pub http: Vec<HttpSeries>,
    pub streams: Vec<StreamSeries>,
    pub rpc: Vec<RpcSeries>,
    pub rpc_streams: Vec<RpcStreamSeries>,
}

/// One exchange, as HTTP/1.x events and HTTP/2 streams both give it.
struct Exchange1<'a> {
    version: &'static str,
    method: &'a str,
    path: &'a [u8],
    status: u16,
    duration: f64,
    req_body: u64,
    resp_body: u64,
    /// A streaming response (chunked or SSE): its data writes or frames, the first one's
    /// time after the request was read, and the mean gap between them.
    stream: Option<(u32, Option<f64>, Option<f64>)>,
}

#[derive(Default)]
struct TargetHttp {
    routes: RouteSet,
    rpc: TargetRpc,
    series: BTreeMap<(&'static str, String, String, u16), HttpSeries>,
    streams: BTreeMap<String, StreamSeries>,
    samples: VecDeque<Sample>,
    total: u64,
    errors: u64,
    /// (time, total, errors) at each summary, for windowed rates.
    marks: VecDeque<(Instant, u64, u64)>,
}

pub struct Requests {
    /// Origin of the samples' times.
    epoch: Instant,
    names: HashMap<u32, String>,
    /// The front-door ports of the targets that have some (the others: every port).
    doors: HashMap<u32, Vec<u16>>,
    listen_ports: ListenPorts,
    /// Requests on other ports, per (target, port; `None`: past the cap).
    internal: BTreeMap<(u32, Option<u16>), u64>,
    per_target: HashMap<u32, TargetHttp>,
    route_limit: usize,
    window: Duration,
    /// Events the decoder could not read (short records).
    pub malformed: u64,
    /// Events not recorded: unknown target, or timestamps out of order.
    pub discarded: u64,
    /// The agent's own requests to targets (engine scrapes, health probes), not recorded.
    pub own: u64,
    /// HTTP/2 header blocks lost and streams not decoded, per target (the decoder's).
    pub h2_losses: HashMap<u32, Losses>,
    /// HTTP/2 records the decoder could not read.
    pub malformed_h2: u64,
}

impl Requests {
    pub fn new(targets: &Targets, route_limit: usize, window: Duration) -> Requests {
        let mut r = Requests {
            epoch: Instant::now(),
            names: HashMap::new(),
            doors: HashMap::new(),
            listen_ports: ListenPorts::default(),
            internal: BTreeMap::new(),
            per_target: HashMap::new(),
            route_limit,
            window,
            malformed: 0,
            discarded: 0,
            own: 0,
            h2_losses: HashMap::new(),
            malformed_h2: 0,
        };
        for t in targets.iter() {
            r.add_target(t);
        }
        r
    }

    /// A target added at run time (a GPU process, or through the API).
    pub fn add_target(&mut self, t: &Target) {
        self.names.insert(t.index, t.name.clone());
        if !t.endpoints.ports.is_empty() {
            self.doors.insert(t.index, t.endpoints.ports.clone());
        }
    }

    /// A removed target: its series go, and late events for it are discarded.
    pub fn remove_target(&mut self, index: u32) {
        self.names.remove(&index);
        self.doors.remove(&index);
        self.internal.retain(|(t, _), _| *t != index);
        self.per_target.remove(&index);
    }

    /// Whether a request came in on a port that is not its target's front door; if so
    /// it is counted apart. Unknown ports count as the front door.
    fn internal(&mut self, target: u32, tgid: u32, listen_fd: u32, now: Instant) -> bool {
        let Some(doors) = self.doors.get(&target) else {
            return false;
        };
        let Some(port) = self.listen_ports.port(tgid, listen_fd, now) else {
            return false;
        };
        if doors.contains(&port) {
            return false;
        }
        let key = if self.internal.contains_key(&(target, Some(port)))
            || self
                .internal
                .range((target, Some(0))..=(target, Some(u16::MAX)))
                .count()
                < MAX_INTERNAL_PORTS
        {
            (target, Some(port))
        } else {
            (target, None)
        };
        *self.internal.entry(key).or_default() += 1;
        true
    }

    pub fn record_bytes(&mut self, bytes: &[u8], now: Instant) {
        match decode(bytes) {
            Some(ev) => self.record(&ev, now),
            None => self.malformed += 1,
        }
    }

    pub fn record(&mut self, ev: &HttpEvent, now: Instant) {
        let r = &ev.req;
        if !self.names.contains_key(&r.target) {
            self.discarded += 1;
            tracing::debug!("event for unknown target index {}", r.target);
            return;
        }
        let Some(duration) = seconds(r.req_start_ns, r.resp_end_ns) else {
            self.discarded += 1;
            tracing::debug!(
                "event with request start {} after response end {}",
                r.req_start_ns,
                r.resp_end_ns
            );
            return;
        };
        let path_len = (r.path_len as usize).min(r.path.len());
        if is_own(&r.path[..path_len]) {
            self.own += 1;
            return;
        }
        if self.internal(r.target, ev.tgid, ev.listen_fd, now) {
            return;
        }
        let method = METHODS.get(r.method as usize).copied().unwrap_or("");
        let stream = (r.flags & (HTTP_CHUNKED | HTTP_SSE) != 0).then(|| {
            let ttft = if r.chunks > 0 {
                seconds(r.req_end_ns, r.first_data_ns)
            } else {
                None
            };
            let tpot = (r.chunks > 1).then(|| r.gap_sum_ns as f64 / 1e9 / f64::from(r.chunks - 1));
            (r.chunks, ttft, tpot)
        });
        let x = Exchange1 {
            version: if r.flags & HTTP_V10 != 0 {
                "1.0"
            } else {
                "1.1"
            },
            method,
            path: &r.path[..path_len],
            status: r.status,
            duration,
            req_body: r.req_bytes.saturating_sub(r.req_header_bytes),
            resp_body: r.resp_bytes.saturating_sub(r.resp_header_bytes),
            stream,
        };
        self.observe(r.target, &x, now);
    }

    /// An HTTP/2 stream: a gRPC call, or an HTTP request answered with a response head
    /// (one reset before it was answered is the kernel's unanswered count).
    pub fn record_h2(&mut self, x: &Exchange, now: Instant) {
        let s = &x.stream;
        if !self.names.contains_key(&x.target) {
            self.discarded += 1;
            return;
        }
        if is_own(&x.path) {
            self.own += 1;
            return;
        }
        if self.internal(x.target, x.tgid, x.listen_fd, now) {
            return;
        }
        let Some(name) = self.names.get(&x.target) else {
            return;
        };
        if rpc::is_grpc(&x.content_type) {
            let t = self.per_target.entry(x.target).or_default();
            let Some(call) = t.rpc.record(name, x, self.route_limit) else {
                self.discarded += 1;
                return;
            };
            t.count(
                millis_since(self.epoch, now),
                call.duration,
                call.error,
                call.ttft,
            );
            return;
        }
        let Some(status) = x.status else {
            return;
        };
        let Some(duration) = seconds(s.req_start_ns, s.resp_end_ns) else {
            self.discarded += 1;
            return;
        };
        let ct = x.response_content_type.to_ascii_lowercase();
        let stream = ct.starts_with("text/event-stream").then(|| {
            let n = s.data_frames;
            let ttft = if n > 0 {
                seconds(s.req_end_ns, s.first_data_ns)
            } else {
                None
            };
            let tpot = (n > 1).then(|| s.gap_sum_ns as f64 / 1e9 / f64::from(n - 1));
            (n, ttft, tpot)
        });
        let e = Exchange1 {
            version: "2",
            method: &x.method,
            path: &x.path,
            status,
            duration,
            req_body: s.req_bytes,
            resp_body: s.resp_bytes,
            stream,
        };
        self.observe(x.target, &e, now);
    }

    fn observe(&mut self, target: u32, x: &Exchange1<'_>, now: Instant) {
        let Some(name) = self.names.get(&target) else {
            self.discarded += 1;
            return;
        };
        if is_own(x.path) {
            self.own += 1;
            return;
        }
        let t = self.per_target.entry(target).or_default();
        let route = t
            .routes
            .admit(route::template(x.path), x.status, self.route_limit);
        let series = t
            .series
            .entry((x.version, x.method.to_string(), route.clone(), x.status))
            .or_insert_with(|| HttpSeries {
                target: name.clone(),
                version: x.version,
                method: x.method.to_string(),
                route: route.clone(),
                status: x.status,
                duration: Histogram::new(histogram::HTTP_DURATION),
                request_body: Histogram::new(histogram::BODY_SIZE),
                response_body: Histogram::new(histogram::BODY_SIZE),
            });
        let duration = x.duration;
        series.duration.observe(duration);
        series.request_body.observe(x.req_body as f64);
        series.response_body.observe(x.resp_body as f64);

        let mut ttft = None;
        if let Some((chunks, first, tpot)) = x.stream {
            let s = t
                .streams
                .entry(route.clone())
                .or_insert_with(|| StreamSeries {
                    target: name.clone(),
                    route,
                    ttft: Histogram::new(histogram::TTFT),
                    tpot: Histogram::new(histogram::TPOT),
                    duration: Histogram::new(histogram::GEN_AI_DURATION),
                    chunks: 0,
                });
            s.duration.observe(duration);
            s.chunks += u64::from(chunks);
            ttft = first;
            if let Some(v) = first {
                s.ttft.observe(v);
            }
            if let Some(v) = tpot {
                s.tpot.observe(v);
            }
        }
        t.count(
            millis_since(self.epoch, now),
            duration,
            x.status >= 500,
            ttft,
        );
    }

    /// Requests on ports that are not their target's front door.
    pub fn internal_requests(&self) -> Vec<InternalRequests> {
        self.internal
            .iter()
            .filter_map(|((t, port), n)| {
                Some(InternalRequests {
                    target: self.names.get(t)?.clone(),
                    port: port.map_or_else(|| "_OTHER".to_string(), |p| p.to_string()),
                    requests: *n,
                })
            })
            .collect()
    }

    pub fn series(&self) -> AllSeries {
        let mut all = AllSeries::default();
        for t in self.per_target.values() {
            all.http.extend(t.series.values().cloned());
            all.streams.extend(t.streams.values().cloned());
            all.rpc.extend(t.rpc.series().cloned());
            all.rpc_streams.extend(t.rpc.streams().cloned());
        }
        all.http.sort_by(|a, b| {
            (&a.target, &a.route, &a.method, a.status, a.version)
                .cmp(&(&b.target, &b.route, &b.method, b.status, b.version))
        });
        all.streams
            .sort_by(|a, b| (&a.target, &a.route).cmp(&(&b.target, &b.route)));
        all.rpc.sort_by(|a, b| {
            (&a.target, &a.service, &a.method, a.code)
                .cmp(&(&b.target, &b.service, &b.method, b.code))
        });
        all.rpc_streams.sort_by(|a, b| {
            (&a.target, &a.service, &a.method).cmp(&(&b.target, &b.service, &b.method))
        });
        all
    }

    /// Per-target figures over the window ending `now`, with the kernel's counters.
    /// Per-target figures over the window ending `now`, with the kernel's counters and
    /// the requests the agent ended itself (`aborted`). A target on which no HTTP/1.x
    /// request was ever seen has no request figures at all (absent, not zero: it may
    /// speak another protocol, or its connections predate the agent).
    pub fn summaries(
        &mut self,
        now: Instant,
        counters: &HashMap<u32, HttpCounters>,
        aborted: &HashMap<u32, u64>,
    ) -> Vec<RequestSummary> {
        let mut out = Vec::new();
        for (index, name) in &self.names {
            let t = self.per_target.entry(*index).or_default();
            let horizon = now.checked_sub(self.window);
            let now_ms = millis_since(self.epoch, now);
            let window_ms = u32::try_from(self.window.as_millis()).unwrap_or(u32::MAX);
            while t
                .samples
                .front()
                .is_some_and(|s| now_ms.wrapping_sub(s.at_ms) > window_ms)
            {
                t.samples.pop_front();
            }
            t.marks.push_back((now, t.total, t.errors));
            while t.marks.len() > 1
                && t.marks
                    .get(1)
                    .is_some_and(|m| horizon.is_some_and(|h| m.0 <= h))
            {
                t.marks.pop_front();
            }
            let (rate, error_ratio) = match t.marks.front() {
                Some(&(then, total, errors)) if now > then => {
                    let dt = (now - then).as_secs_f64();
                    let n = t.total - total;
                    let e = t.errors - errors;
                    (Some(n as f64 / dt), (n > 0).then(|| e as f64 / n as f64))
                }
                _ => (None, None),
            };
            let mut d: Vec<f64> = t
                .samples
                .iter()
                .map(|s| f64::from(s.duration_us) / 1e6)
                .collect();
            let mut f: Vec<f64> = t
                .samples
                .iter()
                .filter(|s| s.ttft_us != NO_VALUE)
                .map(|s| f64::from(s.ttft_us) / 1e6)
                .collect();
            d.sort_by(f64::total_cmp);
            f.sort_by(f64::total_cmp);
            let avg = (!d.is_empty()).then(|| d.iter().sum::<f64>() / d.len() as f64);
            let k = counters.get(index);
            let seen = t.total > 0 || k.is_some_and(|k| k.started > 0);
            let (rate, error_ratio) = if seen {
                (rate, error_ratio)
            } else {
                (None, None)
            };
            let gone = aborted.get(index).copied().unwrap_or(0);
            let lost = self.h2_losses.get(index).copied().unwrap_or_default();
            out.push(RequestSummary {
                target: name.clone(),
                active: k
                    .filter(|_| seen)
                    .map(|k| k.started.saturating_sub(k.finished).saturating_sub(gone)),
                accepted_connections: k.map(|k| k.accepted),
                ignored_connections: k.map(|k| k.ignored_connections),
                unanswered: k.map(|k| k.unanswered),
                tls_connections: k.map(|k| k.tls_connections),
                tls_unseen_connections: k.map(|k| k.tls_unseen),
                h2_connections: k.map(|k| k.h2_connections),
                h2_blocks_lost: k.map(|k| k.h2_lost + lost.blocks),
                h2_streams_undecoded: k.map(|_| lost.undecoded),
                request_rate: rate,
                error_ratio,
                latency_avg_seconds: avg,
                latency_p50_seconds: quantile(&d, 0.50),
                latency_p95_seconds: quantile(&d, 0.95),
                latency_p99_seconds: quantile(&d, 0.99),
                ttft_p50_seconds: quantile(&f, 0.50),
                ttft_p95_seconds: quantile(&f, 0.95),
                oldest_active_request_seconds: None,
                stream_idle_seconds: None,
            });
        }
        out.sort_by(|a, b| a.target.cmp(&b.target));
        out
    }
}

impl TargetHttp {
    /// One request or call into the window's figures.
    fn count(&mut self, at_ms: u32, duration: f64, error: bool, ttft: Option<f64>) {
        self.total += 1;
        if error {
            self.errors += 1;
        }
        if self.samples.len() == MAX_SAMPLES {
            self.samples.pop_front();
        } else if self.samples.len() == self.samples.capacity()
            && self.samples.len() >= MAX_SAMPLES / 2
        {
            // Grow to the cap, not past it (doubling would leave most of the last step unused).
            self.samples.reserve_exact(MAX_SAMPLES - self.samples.len());
        }
        self.samples.push_back(Sample {
            at_ms,
            duration_us: micros(duration),
            ttft_us: ttft.map_or(NO_VALUE, micros),
        });
    }
}

/// Whether a raw request path carries the agent's own marker in its query string.
fn is_own(path: &[u8]) -> bool {
    let Some(q) = path.iter().position(|b| *b == b'?') else {
        return false;
    };
    let marker = crate::base::own_request_marker().as_bytes();
    path[q..].windows(marker.len()).any(|w| w == marker)
}

/// Nearest-rank quantile of sorted values; `None` when empty.
fn quantile(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted
        .get(rank.saturating_sub(1).min(sorted.len() - 1))
        .copied()
}

#[cfg(test)]
mod tests;
