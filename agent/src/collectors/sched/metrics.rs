//! Scheduler families of the targets.
use super::SchedPart;
use crate::base::family::{family, log2_histogram, series, MetricFamily, MetricType};

pub(super) fn families(part: &SchedPart, out: &mut Vec<MetricFamily>) {
    out.push(family(
        "infersight_sched_runqueue_latency_seconds",
        "Time the target's threads waited runnable for a CPU (wakeup or preemption to running).",
        MetricType::HISTOGRAM,
        part.sched
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
        &part.sched,
        |s| vec![("target", s.target.clone())],
        |s| Some(s.on_cpu_seconds),
    ));
    out.push(series(
        "infersight_sched_off_cpu_seconds_total",
        "Time the target's threads were off CPU and not runnable (blocked or sleeping).",
        MetricType::COUNTER,
        &part.sched,
        |s| vec![("target", s.target.clone())],
        |s| Some(s.off_cpu_seconds),
    ));
}
