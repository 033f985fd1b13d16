//! HTTP requests and gRPC calls of the targets, classified in the kernel where the socket
//! calls happen (`agent-ebpf/src/http.rs`, inside the syscall hooks): one ring-buffer event
//! per completed HTTP/1.x request; for HTTP/2, header-block fragments and one record per
//! ended stream (`h2.rs` decodes them); read by tasks into per-route and per-method series
//! and per-target windows, plus per-target counters (accepted, ignored, TLS, unanswered
//! connections; active requests). TLS through OpenSSL reaches the same classification
//! through uprobes on the targets' libssl (`tls.rs`).
mod conns;
mod doors;
mod h2;
mod metrics;
mod requests;
mod route;
mod rpc;
mod tls;

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    time::{Duration, Instant},
};

use agent_common::{HttpCounters, CONFIG_HTTP};
use aya::{
    maps::{MapData, PerCpuArray, ProgramArray, RingBuf},
    programs::{RawTracePoint, UProbe},
};
use serde::Serialize;
use tokio::{io::unix::AsyncFd, time::MissedTickBehavior};

pub use h2::{Exchange, H2Decoder};
pub use requests::{
    decode, AllSeries, HttpSeries, InternalRequests, RequestSummary, Requests, StreamSeries,
};
pub use route::template;
pub use rpc::{RpcSeries, RpcStreamSeries};

use super::{Collected, Collector, Tick};
use crate::{
    base::{
        signal::{Instance, SignalDoc, SignalSet},
        Health,
    },
    config::Config,
    ebpf::{sum_per_target, Hook, Kernel, ProgramSpec, SYSCALL_HOOKS},
    targets::{Target, Targets},
};

/// The protocol probes that see a target's traffic (what `/health` lists per target).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct TargetProtocols {
    pub target: String,
    /// `http/1.x` and `http/2` (the syscall hooks, plain sockets), and `tls:` with each
    /// probed libssl the target's processes map.
    pub probes: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct HttpPart {
    pub http: Vec<HttpSeries>,
    pub streams: Vec<StreamSeries>,
    pub rpc: Vec<RpcSeries>,
    pub rpc_streams: Vec<RpcStreamSeries>,
    pub protocols: Vec<TargetProtocols>,
    pub requests: Vec<RequestSummary>,
    /// Completed requests whose event did not fit in the ring buffer (absent when the
    /// counters cannot be read).
    pub ringbuf_dropped: Option<u64>,
    /// Events that reached userspace but could not be used (malformed or inconsistent).
    pub http_events_discarded: u64,
    /// Requests ended by the agent, not the kernel: (target, reason, count).
    pub http_aborted: Vec<(String, &'static str, u64)>,
    /// Requests accepted on a target's ports that are not its front door (`ports`): not
    /// in its request figures, counted here instead.
    pub http_internal: Vec<InternalRequests>,
}

/// How often the connection states are compared with the counters (only while some
/// request is open): requests the LRU map evicted are found within two of these.
const SWEEP: Duration = Duration::from_secs(30);

pub struct Http {
    requests: Arc<Mutex<Requests>>,
    counters: Option<PerCpuArray<MapData, HttpCounters>>,
    ring: Option<RingBuf<MapData>>,
    h2_ring: Option<RingBuf<MapData>>,
    /// Hold the programs the syscall hooks and the OpenSSL return probe tail-call.
    _tail: Option<(ProgramArray<MapData>, ProgramArray<MapData>)>,
    tls: tls::Tls,
    conns: Option<conns::Conns>,
    /// The targets' processes at the last tick (to see which died).
    pids: HashSet<u32>,
    /// Requests ended by the agent, per (target index, reason).
    aborted: BTreeMap<(u32, &'static str), u64>,
    last_sweep: Instant,
    health: Health,
}

/// The programs `sys_exit` tail-calls to classify bytes (`agent-ebpf/src/http.rs`), at
/// their indexes of `HTTP_TAIL`: loaded, not attached.
const TAIL_PROGRAMS: [&str; 3] = ["http_start", "http_head", "http_h2"];

type TailArrays = (ProgramArray<MapData>, ProgramArray<MapData>);

fn load_scanner(kernel: &mut Kernel) -> Result<TailArrays, String> {
    let mut tail: ProgramArray<MapData> = kernel
        .take_map("HTTP_TAIL", ProgramArray::try_from)
        .map_err(|e| e.to_string())?;
    let mut tail_tls: ProgramArray<MapData> = kernel
        .take_map("HTTP_TAIL_TLS", ProgramArray::try_from)
        .map_err(|e| e.to_string())?;
    let bpf = kernel.object_mut().ok_or("eBPF is not loaded")?;
    for (index, name) in (0u32..).zip(TAIL_PROGRAMS) {
        let p: &mut RawTracePoint = bpf
            .program_mut(name)
            .ok_or_else(|| format!("program {name} is missing from the eBPF object"))?
            .try_into()
            .map_err(|e| format!("{name}: {e}"))?;
        p.load().map_err(|e| {
            tracing::debug!("{name}: {e}");
            format!("{name}: load: {}", crate::ebpf::brief(e))
        })?;
        let fd = p.fd().map_err(|e| format!("{name}: {e}"))?;
        tail.set(index, fd, 0)
            .map_err(|e| format!("HTTP_TAIL: {e}"))?;
    }
    for (index, name) in (0u32..).zip(tls::TAIL_PROGRAMS) {
        let p: &mut UProbe = bpf
            .program_mut(name)
            .ok_or_else(|| format!("program {name} is missing from the eBPF object"))?
            .try_into()
            .map_err(|e| format!("{name}: {e}"))?;
        p.load().map_err(|e| {
            tracing::debug!("{name}: {e}");
            format!("{name}: load: {}", crate::ebpf::brief(e))
        })?;
        let fd = p.fd().map_err(|e| format!("{name}: {e}"))?;
        tail_tls
            .set(index, fd, 0)
            .map_err(|e| format!("HTTP_TAIL_TLS: {e}"))?;
    }
    Ok((tail, tail_tls))
}

/// The requests behind the lock, even if a reader panicked while holding it (its data is
/// still consistent: each event is recorded in one call).
fn locked(m: &Mutex<Requests>) -> MutexGuard<'_, Requests> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

type Field = fn(&RequestSummary) -> Option<f64>;
/// The request signals and where each comes from in a target's summary.
const FIELDS: [Field; 8] = [
    |r| r.request_rate,
    |r| r.error_ratio,
    |r| r.latency_avg_seconds,
    |r| r.latency_p95_seconds,
    |r| r.active.map(|a| a as f64),
    |r| r.ttft_p95_seconds,
    |r| r.oldest_active_request_seconds,
    |r| r.stream_idle_seconds,
];

impl Collector for Http {
    const NAME: &'static str = "http";
    const SIGNALS: &'static [SignalDoc] = &[
        SignalDoc {
            name: "http_request_rate",
            labels: "target",
            meaning: "requests per second over the window",
        },
        SignalDoc {
            name: "http_error_ratio",
            labels: "target",
            meaning: "share of 5xx responses over the window",
        },
        SignalDoc {
            name: "http_latency_avg_seconds",
            labels: "target",
            meaning: "mean request duration over the window",
        },
        SignalDoc {
            name: "http_latency_p95_seconds",
            labels: "target",
            meaning: "95th percentile request duration",
        },
        SignalDoc {
            name: "http_active_requests",
            labels: "target",
            meaning: "requests read and not yet answered",
        },
        SignalDoc {
            name: "ttft_p95_seconds",
            labels: "target",
            meaning: "95th percentile time to first token",
        },
        SignalDoc {
            name: "http_oldest_active_request_seconds",
            labels: "target",
            meaning: "age of the oldest request read and not yet answered (absent when none)",
        },
        SignalDoc {
            name: "http_stream_idle_seconds",
            labels: "target",
            meaning: "seconds since the last write of the most silent response in progress (absent when none)",
        },
    ];
    type Part = HttpPart;

    fn start(config: &Config, kernel: &mut Kernel, targets: &Targets) -> Http {
        let c = &config.http;
        let requests = Arc::new(Mutex::new(Requests::new(targets, c.route_limit, c.window)));
        let mut http = Http {
            requests,
            counters: None,
            ring: None,
            h2_ring: None,
            _tail: None,
            tls: tls::Tls::default(),
            conns: None,
            pids: HashSet::new(),
            aborted: BTreeMap::new(),
            last_sweep: Instant::now(),
            health: Health::unsupported("disabled in the configuration ([http] enabled = false)"),
        };
        if !c.enabled {
            return http;
        }
        http.health = kernel.attach(SYSCALL_HOOKS);
        if !http.health.is_active() {
            return http;
        }
        match kernel.take_map("CONNS", aya::maps::HashMap::try_from) {
            Ok(m) => http.conns = Some(conns::Conns::new(m)),
            Err(e) => tracing::warn!(
                "connection states unreadable, open requests of dead processes stay counted: {e}"
            ),
        }
        let maps = kernel
            .take_map("HTTP_COUNTERS", PerCpuArray::try_from)
            .and_then(|c| Ok((c, kernel.take_map("HTTP_EVENTS", RingBuf::try_from)?)))
            .and_then(|(c, r)| Ok(((c, r), kernel.take_map("H2_EVENTS", RingBuf::try_from)?)))
            .map(|((c, r), h2r)| {
                http.h2_ring = Some(h2r);
                (c, r)
            })
            .map_err(|e| e.to_string())
            .and_then(|m| Ok((m, load_scanner(kernel)?)))
            // Last: tracing turns on once everything it uses is in place.
            .and_then(|m| {
                kernel
                    .set_config(CONFIG_HTTP, 1)
                    .map(|()| m)
                    .map_err(|e| e.to_string())
            });
        match maps {
            Ok(((counters, ring), tail)) => {
                http.counters = Some(counters);
                http.ring = Some(ring);
                http._tail = Some(tail);
            }
            Err(e) => http.health = Health::failed(e),
        }
        http
    }

    fn spawn(&mut self, _: &mut Kernel) {
        let (Some(ring), Some(h2_ring)) = (self.ring.take(), self.h2_ring.take()) else {
            return;
        };
        let readers = [
            (ring, Reader::Http1),
            (h2_ring, Reader::Http2(Box::default())),
        ];
        for (ring, reader) in readers {
            // SAFETY: the RingBuf owns its map fd, which stays open and unchanged for as
            // long as the AsyncFd owns the RingBuf.
            match unsafe { AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE) } {
                Ok(fd) => {
                    tokio::spawn(read_events(fd, self.requests.clone(), reader));
                }
                Err(e) => self.health = Health::failed(format!("ring buffer: {e}")),
            }
        }
    }

    fn collect(&mut self, tick: &mut Tick<'_>) -> Collected<HttpPart> {
        let counters = match (&self.counters, self.health.is_active()) {
            (Some(map), true) => sum_per_target(
                map,
                "HTTP_COUNTERS",
                tick.targets.iter().map(|t| t.index),
                HttpCounters::default(),
                |sum, c| {
                    sum.started += c.started;
                    sum.finished += c.finished;
                    sum.dropped += c.dropped;
                    sum.accepted += c.accepted;
                    sum.ignored_connections += c.ignored_connections;
                    sum.unanswered += c.unanswered;
                    sum.tls_connections += c.tls_connections;
                    sum.tls_unseen += c.tls_unseen;
                    sum.h2_connections += c.h2_connections;
                    sum.h2_lost += c.h2_lost;
                },
            )
            .ok(),
            _ => None,
        };
        let ringbuf_dropped = counters
            .as_ref()
            .map(|c| c.iter().map(|(_, k)| k.dropped).sum());
        let counters: HashMap<u32, HttpCounters> = counters.into_iter().flatten().collect();
        let held = self.end_lost(tick, &counters);
        let mut aborted: HashMap<u32, u64> = HashMap::new();
        for ((t, _), n) in &self.aborted {
            *aborted.entry(*t).or_default() += n;
        }
        let protocols = self.protocols(tick);
        let mut r = locked(&self.requests);
        let all = r.series();
        let mut requests = r.summaries(Instant::now(), &counters, &aborted);
        for (t, o) in held {
            let name = tick.targets.name_of(t);
            if let Some(s) = requests
                .iter_mut()
                .find(|s| Some(s.target.as_str()) == name)
            {
                s.oldest_active_request_seconds = o.oldest_request_ns.map(|n| n as f64 / 1e9);
                s.stream_idle_seconds = o.stream_idle_ns.map(|n| n as f64 / 1e9);
            }
        }
        let part = HttpPart {
            http: all.http,
            streams: all.streams,
            rpc: all.rpc,
            rpc_streams: all.rpc_streams,
            protocols,
            requests,
            ringbuf_dropped,
            http_events_discarded: r.malformed + r.discarded + r.malformed_h2,
            http_aborted: self
                .aborted
                .iter()
                .filter_map(|((t, reason), n)| {
                    Some((tick.targets.name_of(*t)?.to_string(), *reason, *n))
                })
                .collect(),
            http_internal: r.internal_requests(),
        };
        Collected::new(part, self.health.clone())
    }

    fn families(part: &HttpPart, out: &mut Vec<prometheus::proto::MetricFamily>) {
        metrics::families(part, out);
    }

    fn signals(part: &HttpPart, out: &mut SignalSet) {
        for (doc, field) in Self::SIGNALS.iter().zip(FIELDS) {
            let v = part
                .requests
                .iter()
                .filter_map(|r| Some(Instance::labelled(&[("target", &r.target)], field(r)?)))
                .collect();
            out.put(doc.name, v);
        }
    }

    fn target_added(&mut self, t: &Target) {
        locked(&self.requests).add_target(t);
    }

    fn target_removed(&mut self, t: &Target) {
        locked(&self.requests).remove_target(t.index);
    }
}

impl Http {
    /// Attach the OpenSSL probes to the libraries target processes map, and say per
    /// target which protocol probes see its traffic.
    fn protocols(&mut self, tick: &mut Tick<'_>) -> Vec<TargetProtocols> {
        if !self.health.is_active() || self._tail.is_none() {
            return Vec::new();
        }
        if let Some(bpf) = tick.kernel.object_mut() {
            self.tls.scan(bpf, tick.members.pids());
        }
        if self.tls.any_attached() {
            for name in tls::PROGRAMS {
                tick.kernel.track(ProgramSpec {
                    name,
                    hook: Hook::Uprobe("libssl.so.3"),
                    essential: false,
                });
            }
        }
        tick.targets
            .iter()
            .map(|t| {
                let mut probes = vec!["http/1.x".to_string(), "http/2".to_string()];
                let pids = tick.members.of(t.index).map(|m| m.pids.clone());
                for lib in self.tls.libraries_of(pids.unwrap_or_default().into_iter()) {
                    probes.push(format!("tls: {}", lib.display()));
                }
                TargetProtocols {
                    target: t.name.clone(),
                    probes,
                }
            })
            .collect()
    }

    /// End the requests the kernel cannot: those of target processes that died since the
    /// last tick, and (at a sweep) those whose connection state was evicted. While any
    /// request is open, the connection states are read: what is open per target.
    fn end_lost(
        &mut self,
        tick: &Tick<'_>,
        counters: &HashMap<u32, HttpCounters>,
    ) -> HashMap<u32, conns::Open> {
        let Some(conns) = self.conns.as_mut() else {
            return HashMap::new();
        };
        let now: HashSet<u32> = tick.members.pids().collect();
        let dead: HashSet<u32> = self.pids.difference(&now).copied().collect();
        self.pids = now;
        for (t, n) in conns.end_dead(&dead) {
            *self.aborted.entry((t, conns::PROCESS_EXIT)).or_default() += n;
        }
        let mut open = BTreeMap::new();
        for (t, k) in counters {
            let ended: u64 = self
                .aborted
                .iter()
                .filter(|((i, _), _)| i == t)
                .map(|(_, n)| n)
                .sum();
            let n = k.started.saturating_sub(k.finished).saturating_sub(ended);
            if n > 0 {
                open.insert(*t, n);
            }
        }
        if open.is_empty() {
            return HashMap::new();
        }
        let held = conns.scan(crate::base::monotonic_ns());
        if self.last_sweep.elapsed() >= SWEEP {
            self.last_sweep = Instant::now();
            for (t, n) in conns.evicted(&open, &held) {
                *self.aborted.entry((t, conns::EVICTED)).or_default() += n;
            }
        }
        held
    }
}

/// How often the event reader drains a ring buffer; the kernel wakes it earlier once, with
/// the record that takes the unread bytes past 256 KiB (it sends no wake-up per event).
const DRAIN_INTERVAL: Duration = Duration::from_millis(50);

/// What a ring buffer carries: HTTP/1.x request events, or HTTP/2 records (with the
/// decoder that keeps the connections' HPACK tables).
enum Reader {
    Http1,
    Http2(Box<H2Decoder>),
}

/// Drain a ring buffer on a timer, or sooner when the kernel signals.
async fn read_events(
    mut fd: AsyncFd<RingBuf<MapData>>,
    requests: Arc<Mutex<Requests>>,
    mut reader: Reader,
) {
    let mut timer = tokio::time::interval(DRAIN_INTERVAL);
    timer.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = timer.tick() => drain(fd.get_mut(), &requests, &mut reader),
            ready = fd.readable_mut() => match ready {
                Ok(mut guard) => {
                    // Cleared first: a wake-up that comes while draining is kept for the
                    // next turn (the kernel sends one per crossing of its threshold).
                    guard.clear_ready();
                    drain(guard.get_inner_mut(), &requests, &mut reader);
                }
                Err(e) => {
                    tracing::error!("HTTP event reader stopped: {e}");
                    return;
                }
            },
        }
    }
}

fn drain(ring: &mut RingBuf<MapData>, requests: &Mutex<Requests>, reader: &mut Reader) {
    let now = Instant::now();
    match reader {
        Reader::Http1 => {
            let mut r = locked(requests);
            while let Some(item) = ring.next() {
                r.record_bytes(&item, now);
            }
        }
        Reader::Http2(d) => {
            // HPACK decoding is the slow part: done before taking the lock the request
            // reader and the tick share.
            let mut done = Vec::new();
            while let Some(item) = ring.next() {
                done.extend(d.record(&item));
            }
            let mut r = locked(requests);
            for x in &done {
                r.record_h2(x, now);
            }
            r.h2_losses.clone_from(&d.losses);
            r.malformed_h2 = d.malformed;
        }
    }
}
