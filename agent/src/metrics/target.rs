//! Per-target process families (`infersight_target_*`).
use prometheus::proto::{MetricFamily, MetricType};

use super::series;
use crate::{collect::process::ProcessSample, snapshot::Snapshot};

pub(super) fn families(snap: &Snapshot, out: &mut Vec<MetricFamily>) {
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
        out.push(series(name, help, kind, &snap.processes, label, value));
    }
    let e = &snap.energy;
    out.push(series(
        "infersight_energy_joules_total",
        "GPU energy attributed to the target (its share of each GPU's utilization, else memory).",
        MetricType::COUNTER,
        &e.targets,
        |(t, _)| vec![("target", t.clone())],
        |(_, j)| Some(*j),
    ));
    out.push(series(
        "infersight_energy_cost_total",
        "Estimated cost of the target's GPU energy at the configured price per kWh.",
        MetricType::COUNTER,
        &e.targets,
        |(t, _)| vec![("currency", e.currency.clone()), ("target", t.clone())],
        |(_, j)| e.cost(*j),
    ));
}
