//! Per-target process families (`infersight_target_*`).
use super::{ProcessPart, ProcessSample};
use crate::base::family::{series, MetricFamily, MetricType};

pub(super) fn families(part: &ProcessPart, out: &mut Vec<MetricFamily>) {
    let label = |p: &ProcessSample| vec![("target", p.target.clone())];
    type Field = fn(&ProcessSample) -> Option<f64>;
    let fields: [(&str, &str, MetricType, Field); 7] = [
        (
            "infersight_target_up",
            "Whether the target's process exists (process targets) or its cgroup holds a process.",
            MetricType::GAUGE,
            |p| Some(f64::from(u8::from(p.up))),
        ),
        (
            "infersight_target_processes",
            "Processes that make up the target (its root and descendants, or its cgroup's).",
            MetricType::GAUGE,
            |p| Some(p.processes as f64),
        ),
        (
            "infersight_target_cpu_seconds_total",
            "User and system CPU time of the target's live processes.",
            MetricType::COUNTER,
            |p| p.cpu_seconds,
        ),
        (
            "infersight_target_resident_memory_bytes",
            "Resident memory of the target's processes.",
            MetricType::GAUGE,
            |p| p.resident_bytes.map(|b| b as f64),
        ),
        (
            "infersight_target_threads",
            "Threads of the target's processes.",
            MetricType::GAUGE,
            |p| p.threads.map(|n| n as f64),
        ),
        (
            "infersight_target_open_fds",
            "Open file descriptors of the target's processes.",
            MetricType::GAUGE,
            |p| p.open_fds.map(|n| n as f64),
        ),
        (
            "infersight_target_start_time_seconds",
            "Start time of the target's oldest process, in unixtime.",
            MetricType::GAUGE,
            |p| p.start_time_seconds,
        ),
    ];
    for (name, help, kind, value) in fields {
        out.push(series(name, help, kind, &part.processes, label, value));
    }
}
