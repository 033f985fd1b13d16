//! Prometheus exposition of a Snapshot. Values are already aggregated (in the kernel or by
//! the collectors), so families are built directly from the Snapshot (the prometheus
//! crate's data model) and written by `text` (the crate's text format, faster); nothing
//! here keeps state between scrapes but the size of the last page.
use prometheus::proto::{
    Bucket, Counter, Gauge, Histogram, LabelPair, Metric, MetricFamily, MetricType,
};

use crate::{
    hist::Hist,
    snapshot::{RequestSummary, Snapshot, State, SyscallSeries},
};

pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

fn labels(pairs: &[(&str, &str)]) -> Vec<LabelPair> {
    pairs
        .iter()
        .map(|(n, v)| {
            let mut l = LabelPair::default();
            l.set_name((*n).to_string());
            l.set_value((*v).to_string());
            l
        })
        .collect()
}

fn family(name: &str, help: &str, kind: MetricType, metrics: Vec<Metric>) -> MetricFamily {
    let mut f = MetricFamily::default();
    f.set_name(name.to_string());
    f.set_help(help.to_string());
    f.set_field_type(kind);
    f.set_metric(metrics);
    f
}

fn gauge(pairs: &[(&str, &str)], v: f64) -> Metric {
    let mut g = Gauge::default();
    g.set_value(v);
    let mut m = Metric::from_label(labels(pairs));
    m.set_gauge(g);
    m
}

fn counter(pairs: &[(&str, &str)], v: f64) -> Metric {
    let mut c = Counter::default();
    c.set_value(v);
    let mut m = Metric::from_label(labels(pairs));
    m.set_counter(c);
    m
}

/// A histogram sample from (upper bound, cumulative count) pairs.
fn histogram(
    pairs: &[(&str, &str)],
    cumulative: impl Iterator<Item = (f64, u64)>,
    count: u64,
    sum: f64,
) -> Metric {
    let buckets = cumulative
        .map(|(upper, c)| {
            let mut b = Bucket::default();
            b.set_upper_bound(upper);
            b.set_cumulative_count(c);
            b
        })
        .collect();
    let mut h = Histogram::default();
    h.set_sample_count(count);
    h.set_sample_sum(sum);
    h.set_bucket(buckets);
    let mut m = Metric::from_label(labels(pairs));
    m.set_histogram(h);
    m
}

/// A gauge or counter sample.
fn sample(kind: MetricType, pairs: &[(&str, &str)], v: f64) -> Metric {
    if kind == MetricType::COUNTER {
        counter(pairs, v)
    } else {
        gauge(pairs, v)
    }
}

/// A family of one sample without labels.
fn single(name: &str, help: &str, kind: MetricType, v: f64) -> MetricFamily {
    family(name, help, kind, vec![sample(kind, &[], v)])
}

/// One family with a sample per item that has a value.
fn series<T, K: AsRef<str>>(
    name: &str,
    help: &str,
    kind: MetricType,
    items: &[T],
    labels: impl Fn(&T) -> Vec<(K, String)>,
    value: impl Fn(&T) -> Option<f64>,
) -> MetricFamily {
    let metrics = items
        .iter()
        .filter_map(|item| {
            let v = value(item)?;
            let owned = labels(item);
            let pairs: Vec<(&str, &str)> = owned
                .iter()
                .map(|(n, v)| (n.as_ref(), v.as_str()))
                .collect();
            Some(sample(kind, &pairs, v))
        })
        .collect();
    family(name, help, kind, metrics)
}

/// The first exported log2 bucket bound: 2^10 ns.
const FIRST_LOG2_BUCKET_SECONDS: f64 = 1.024e-6;

/// A histogram from non-cumulative log2 nanosecond buckets (see `SyscallSeries::buckets`).
fn log2_histogram(pairs: &[(&str, &str)], buckets: &[u64], sum_seconds: f64) -> Metric {
    let cumulative: Vec<(f64, u64)> = buckets
        .iter()
        .scan(0u64, |acc, n| {
            *acc += n;
            Some(*acc)
        })
        .enumerate()
        .filter_map(|(i, c)| SyscallSeries::bucket_upper_seconds(i).map(|u| (u, c)))
        // Nothing the kernel times finishes in under a microsecond but the cheapest
        // syscalls: the buckets below 2^10 ns fold into the first one (a quarter fewer
        // lines for /metrics to render).
        .filter(|(u, _)| *u >= FIRST_LOG2_BUCKET_SECONDS)
        .collect();
    let count = buckets.iter().sum();
    histogram(pairs, cumulative.into_iter(), count, sum_seconds)
}

fn hist(pairs: &[(&str, &str)], h: &Hist) -> Metric {
    histogram(pairs, h.cumulative(), h.count, h.sum)
}

/// Every family of the page but the process_* ones (what `render` writes).
pub fn families(snap: &Snapshot) -> Vec<MetricFamily> {
    let mut out = vec![family(
        "infersight_build_info",
        "Build information of the running agent; the value is always 1.",
        MetricType::GAUGE,
        vec![gauge(&[("version", env!("CARGO_PKG_VERSION"))], 1.0)],
    )];
    out.push(family(
        "infersight_collector_up",
        "Whether each collector is working (1) or not (0: unsupported or failed; see /health).",
        MetricType::GAUGE,
        snap.collectors
            .iter()
            .map(|c| {
                let up = if c.health.state == State::Active {
                    1.0
                } else {
                    0.0
                };
                gauge(&[("collector", &c.name)], up)
            })
            .collect(),
    ));
    out.push(series(
        "infersight_collector_duration_seconds",
        "How long each collector sampled on its own interval took for its last reading.",
        MetricType::GAUGE,
        &snap.collectors,
        |c| vec![("collector", c.name.clone())],
        |c| c.duration_seconds,
    ));
    out.push(family(
        "infersight_ebpf_program_attached",
        "Whether each eBPF program is loaded and attached.",
        MetricType::GAUGE,
        snap.programs
            .iter()
            .map(|p| {
                let up = if p.health.state == State::Active {
                    1.0
                } else {
                    0.0
                };
                gauge(&[("program", &p.name)], up)
            })
            .collect(),
    ));
    // Run-time statistics are absent (not 0) when the kernel does not collect them.
    let run_time: Vec<Metric> = snap
        .programs
        .iter()
        .filter_map(|p| {
            p.run_time_ns
                .map(|ns| counter(&[("program", &p.name)], ns as f64 / 1e9))
        })
        .collect();
    let run_count: Vec<Metric> = snap
        .programs
        .iter()
        .filter_map(|p| {
            p.run_count
                .map(|n| counter(&[("program", &p.name)], n as f64))
        })
        .collect();
    out.push(family(
        "infersight_ebpf_program_run_time_seconds_total",
        "Time spent running each eBPF program (BPF_ENABLE_STATS).",
        MetricType::COUNTER,
        run_time,
    ));
    out.push(family(
        "infersight_ebpf_program_run_count_total",
        "Number of runs of each eBPF program (BPF_ENABLE_STATS).",
        MetricType::COUNTER,
        run_count,
    ));

    let mut calls = Vec::with_capacity(snap.syscalls.len());
    let mut errors = Vec::with_capacity(snap.syscalls.len());
    let mut durations = Vec::with_capacity(snap.syscalls.len());
    for s in &snap.syscalls {
        let l = [
            ("target", s.target.as_str()),
            ("syscall", s.syscall.as_str()),
        ];
        calls.push(counter(&l, s.count as f64));
        errors.push(counter(&l, s.errors as f64));
        durations.push(log2_histogram(&l, &s.buckets, s.duration_sum_seconds));
    }
    out.push(family(
        "infersight_syscalls_total",
        "System calls made by each target.",
        MetricType::COUNTER,
        calls,
    ));
    out.push(family(
        "infersight_syscall_errors_total",
        "System calls of each target that returned an error (negative return value).",
        MetricType::COUNTER,
        errors,
    ));
    out.push(family(
        "infersight_syscall_duration_seconds",
        "Time from syscall entry to exit (log2 buckets; exit and exit_group are counted but never return).",
        MetricType::HISTOGRAM,
        durations,
    ));
    http_families(snap, &mut out);
    if let Some(h) = &snap.host {
        node::families(h, &mut out);
    }
    target::families(snap, &mut out);
    gpu::families(snap, &mut out);
    cuda::families(snap, &mut out);
    sched::families(snap, &mut out);
    alerts::families(snap, &mut out);
    alerts::push_families(snap, &mut out);
    alerts::history_families(snap, &mut out);
    alerts::config_families(snap, &mut out);
    // A family without samples says nothing (and the crate's own encoder refuses one).
    out.retain(|f| !f.get_metric().is_empty());
    out
}

fn http_families(snap: &Snapshot, out: &mut Vec<MetricFamily>) {
    let mut duration = Vec::new();
    let mut req_body = Vec::new();
    let mut resp_body = Vec::new();
    for s in &snap.http {
        let status = s.status.to_string();
        let l = [
            ("http_request_method", s.method.as_str()),
            ("http_response_status_code", status.as_str()),
            ("http_route", s.route.as_str()),
            ("target", s.target.as_str()),
        ];
        duration.push(hist(&l, &s.duration));
        req_body.push(hist(&l, &s.request_body));
        resp_body.push(hist(&l, &s.response_body));
    }
    out.push(family(
        "http_server_request_duration_seconds",
        "Duration of HTTP server requests: first request byte read to last response byte written.",
        MetricType::HISTOGRAM,
        duration,
    ));
    out.push(family(
        "http_server_request_body_size_bytes",
        "Size of HTTP server request bodies.",
        MetricType::HISTOGRAM,
        req_body,
    ));
    out.push(family(
        "http_server_response_body_size_bytes",
        "Size of HTTP server response bodies.",
        MetricType::HISTOGRAM,
        resp_body,
    ));
    type Field = fn(&RequestSummary) -> Option<u64>;
    let per_target: [(&str, &str, MetricType, Field); 4] = [
        (
            "http_server_active_requests",
            "HTTP requests read but not yet answered completely.",
            MetricType::GAUGE,
            |r| r.active,
        ),
        (
            "infersight_http_connections_accepted_total",
            "Connections accepted by a target (tracked for HTTP).",
            MetricType::COUNTER,
            |r| r.accepted_connections,
        ),
        (
            "infersight_http_connections_ignored_total",
            "Accepted connections of a target whose first bytes were not HTTP/1.x (TLS, other protocols).",
            MetricType::COUNTER,
            |r| r.ignored_connections,
        ),
        (
            "infersight_http_requests_unanswered_total",
            "Requests that ended (next request or close) without a response being seen.",
            MetricType::COUNTER,
            |r| r.unanswered,
        ),
    ];
    for (name, help, kind, field) in per_target {
        let metrics = snap
            .requests
            .iter()
            .filter_map(|r| {
                let v = field(r)? as f64;
                let l = [("target", r.target.as_str())];
                Some(if kind == MetricType::GAUGE {
                    gauge(&l, v)
                } else {
                    counter(&l, v)
                })
            })
            .collect();
        out.push(family(name, help, kind, metrics));
    }
    let mut ttft = Vec::new();
    let mut tpot = Vec::new();
    let mut gen_duration = Vec::new();
    let mut chunks = Vec::new();
    for s in &snap.streams {
        let l = [
            ("http_route", s.route.as_str()),
            ("target", s.target.as_str()),
        ];
        ttft.push(hist(&l, &s.ttft));
        tpot.push(hist(&l, &s.tpot));
        gen_duration.push(hist(&l, &s.duration));
        chunks.push(counter(&l, s.chunks as f64));
    }
    out.push(family(
        "gen_ai_server_time_to_first_token_seconds",
        "Streaming responses: request fully read to the first response write carrying data.",
        MetricType::HISTOGRAM,
        ttft,
    ));
    out.push(family(
        "gen_ai_server_time_per_output_token_seconds",
        "Streaming responses: mean gap between data writes (one SSE event or chunk = one token chunk).",
        MetricType::HISTOGRAM,
        tpot,
    ));
    out.push(family(
        "gen_ai_server_request_duration_seconds",
        "Streaming responses: duration from first request byte to last response byte.",
        MetricType::HISTOGRAM,
        gen_duration,
    ));
    out.push(family(
        "infersight_http_stream_chunks_total",
        "Data writes (SSE events or chunks) of streaming responses.",
        MetricType::COUNTER,
        chunks,
    ));
    if snap
        .collectors
        .iter()
        .any(|c| c.name == "http" && c.health.state == State::Active)
    {
        out.push(single(
            "infersight_http_events_discarded_total",
            "Request events that reached the agent but were malformed or inconsistent.",
            MetricType::COUNTER,
            snap.http_events_discarded as f64,
        ));
    }
    if let Some(d) = snap.ringbuf_dropped {
        out.push(single(
            "infersight_ringbuf_dropped_events_total",
            "Completed requests whose event did not fit in the kernel ring buffer.",
            MetricType::COUNTER,
            d as f64,
        ));
    }
}

/// The Snapshot in Prometheus text exposition format.
pub fn render(snap: &Snapshot) -> Vec<u8> {
    use prometheus::core::Collector;
    use std::sync::atomic::{AtomicUsize, Ordering};
    static SELF: std::sync::OnceLock<prometheus::process_collector::ProcessCollector> =
        std::sync::OnceLock::new();
    // The page is about as large as the last one: one allocation instead of ~20 doublings.
    static LAST_LEN: AtomicUsize = AtomicUsize::new(16 * 1024);
    let mut all = families(snap);
    // The agent's own cost: process_cpu_seconds_total, process_resident_memory_bytes,
    // process_open_fds… (the names every Prometheus client library exports).
    all.extend(
        SELF.get_or_init(prometheus::process_collector::ProcessCollector::for_self)
            .collect(),
    );
    let last = LAST_LEN.load(Ordering::Relaxed);
    let mut buf = Vec::with_capacity(last + last / 8);
    text::encode(&all, &mut buf);
    LAST_LEN.store(buf.len(), Ordering::Relaxed);
    buf
}

mod alerts;
mod cuda;
mod gpu;
mod node;
mod sched;
mod target;
mod text;

#[cfg(test)]
mod tests;
