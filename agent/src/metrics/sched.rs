//! Scheduler and TCP families of the targets.
use prometheus::proto::{MetricFamily, MetricType};

use super::{family, log2_histogram, series};
use crate::snapshot::Snapshot;

pub(super) fn families(snap: &Snapshot, out: &mut Vec<MetricFamily>) {
    out.push(family(
        "infersight_sched_runqueue_latency_seconds",
        "Time the target's threads waited runnable for a CPU (wakeup or preemption to running).",
        MetricType::HISTOGRAM,
        snap.sched
            .iter()
            .map(|s| {
                log2_histogram(
                    &[("target", s.target.as_str())],
                    &s.runq_buckets,
                    s.runq_sum_seconds,
                )
            })
            .collect(),
    ));
    out.push(series(
        "infersight_sched_on_cpu_seconds_total",
        "Time the target's threads ran on a CPU (seen at their switch-out).",
        MetricType::COUNTER,
        &snap.sched,
        |s| vec![("target", s.target.clone())],
        |s| Some(s.on_cpu_seconds),
    ));
    out.push(series(
        "infersight_sched_off_cpu_seconds_total",
        "Time the target's threads were off CPU and not runnable (blocked or sleeping).",
        MetricType::COUNTER,
        &snap.sched,
        |s| vec![("target", s.target.clone())],
        |s| Some(s.off_cpu_seconds),
    ));
    out.push(series(
        "infersight_tcp_retransmits_total",
        "TCP segments retransmitted on the target's sockets.",
        MetricType::COUNTER,
        &snap.tcp,
        |t| vec![("target", t.target.clone())],
        |t| Some(t.retransmits as f64),
    ));
    let changes: Vec<(&str, &str, u64)> = snap
        .tcp
        .iter()
        .flat_map(|t| {
            t.state_changes
                .iter()
                .map(move |(s, n)| (t.target.as_str(), *s, *n))
        })
        .collect();
    out.push(series(
        "infersight_tcp_state_changes_total",
        "TCP state transitions of the target's sockets, by new state.",
        MetricType::COUNTER,
        &changes,
        |(t, s, _)| vec![("state", s.to_string()), ("target", t.to_string())],
        |(_, _, n)| Some(*n as f64),
    ));
}
