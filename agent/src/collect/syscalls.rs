//! Turns what the kernel maps hold into Snapshot series (names instead of numbers).
use crate::{ebpf::SyscallSample, snapshot::SyscallSeries, syscall_names, targets::Targets};

pub fn syscall_series(samples: &[SyscallSample], targets: &Targets) -> Vec<SyscallSeries> {
    let mut out: Vec<SyscallSeries> = samples
        .iter()
        .filter_map(|s| {
            // A key whose target is gone (not configured any more) is not reported.
            let target = targets.name_of(s.target)?;
            Some(SyscallSeries {
                target: target.to_string(),
                syscall: syscall_names::label(s.nr),
                count: s.stats.count,
                errors: s.stats.errors,
                duration_sum_seconds: s.stats.sum_ns as f64 / 1e9,
                buckets: s.stats.buckets,
            })
        })
        .collect();
    out.sort_by(|a, b| (&a.target, &a.syscall).cmp(&(&b.target, &b.syscall)));
    out
}
