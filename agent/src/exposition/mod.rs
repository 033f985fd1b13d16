//! Prometheus exposition of a Snapshot. Values are already aggregated (in the kernel or by
//! the collectors), so families are built directly from the Snapshot: the agent's own
//! (build, collector and program health) here, each collector's by the registry, the
//! alerting, push, history and configuration ones in `alerts`. `text` writes the
//! prometheus crate's text format, faster; nothing here keeps state between scrapes but
//! the size of the last page.
mod alerts;
mod text;

use prometheus::proto::{MetricFamily, MetricType};

use crate::{
    base::family::{counter, family, gauge, series, up_gauges},
    snapshot::Snapshot,
};

pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Every family of the page but the process_* ones (what `render` writes).
pub fn families(snap: &Snapshot) -> Vec<MetricFamily> {
    let r = &snap.readings;
    let mut out = vec![family(
        "infersight_build_info",
        "Build information of the running agent; the value is always 1.",
        MetricType::GAUGE,
        vec![gauge(&[("version", env!("CARGO_PKG_VERSION"))], 1.0)],
    )];
    out.push(up_gauges(
        "infersight_collector_up",
        "Whether each collector is working (1) or not (0: unsupported or failed; see /health).",
        "collector",
        r.collectors
            .iter()
            .map(|c| (c.name.as_str(), c.health.is_active())),
    ));
    out.push(series(
        "infersight_collector_duration_seconds",
        "How long each collector sampled on its own interval took for its last reading.",
        MetricType::GAUGE,
        &r.collectors,
        |c| vec![("collector", c.name.clone())],
        |c| c.duration_seconds,
    ));
    out.push(up_gauges(
        "infersight_ebpf_program_attached",
        "Whether each eBPF program is loaded and attached.",
        "program",
        r.programs
            .iter()
            .map(|p| (p.name.as_str(), p.health.is_active())),
    ));
    // Run-time statistics are absent (not 0) when the kernel does not collect them.
    let run_time = r
        .programs
        .iter()
        .filter_map(|p| {
            p.run_time_ns
                .map(|ns| counter(&[("program", &p.name)], ns as f64 / 1e9))
        })
        .collect();
    let run_count = r
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
    r.families(&mut out);
    alerts::families(snap, &mut out);
    // A family without samples says nothing (and the crate's own encoder refuses one).
    out.retain(|f| !f.get_metric().is_empty());
    out
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

#[cfg(test)]
mod tests;
