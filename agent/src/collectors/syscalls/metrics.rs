//! `infersight_syscall*` families.
use super::SyscallsPart;
use crate::base::family::{counter, family, gauge, log2_histogram, MetricFamily, MetricType};

pub(super) fn families(part: &SyscallsPart, out: &mut Vec<MetricFamily>) {
    let n = part.syscalls.len();
    let (mut calls, mut errors, mut durations) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    for s in &part.syscalls {
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
    out.push(family(
        "infersight_series_limited",
        "Series not exported because of a configured limit ([agent] max_syscall_series).",
        MetricType::GAUGE,
        vec![gauge(
            &[("kind", "syscall")],
            part.syscall_series_limited as f64,
        )],
    ));
}
