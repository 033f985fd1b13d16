//! Scheduler and TCP figures of the targets, read from the kernel's per-target arrays.
use agent_common::{HIST_BUCKETS, TCP_STATES};
use serde::Serialize;

use crate::{ebpf::Probes, targets::Targets};

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SchedSeries {
    pub target: String,
    pub on_cpu_seconds: f64,
    pub off_cpu_seconds: f64,
    pub runq_sum_seconds: f64,
    /// Run-queue latency, log2 nanosecond buckets (as `SyscallSeries::buckets`).
    #[serde(serialize_with = "crate::snapshot::serialize_buckets")]
    pub runq_buckets: [u64; HIST_BUCKETS],
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TcpSeries {
    pub target: String,
    pub retransmits: u64,
    /// Transitions into each state seen (states with none are left out).
    pub state_changes: Vec<(&'static str, u64)>,
}

pub fn sched_series(probes: &Probes, targets: &Targets) -> Result<Vec<SchedSeries>, String> {
    let read = probes
        .read_sched(targets.iter().map(|t| t.index))
        .map_err(|e| e.to_string())?;
    Ok(read
        .into_iter()
        .filter_map(|(i, s)| {
            Some(SchedSeries {
                target: targets.name_of(i)?.to_string(),
                on_cpu_seconds: s.on_cpu_ns as f64 / 1e9,
                off_cpu_seconds: s.off_cpu_ns as f64 / 1e9,
                runq_sum_seconds: s.runq_sum_ns as f64 / 1e9,
                runq_buckets: s.runq_buckets,
            })
        })
        .collect())
}

pub fn tcp_series(probes: &Probes, targets: &Targets) -> Result<Vec<TcpSeries>, String> {
    let read = probes
        .read_tcp(targets.iter().map(|t| t.index))
        .map_err(|e| e.to_string())?;
    Ok(read
        .into_iter()
        .filter_map(|(i, s)| {
            Some(TcpSeries {
                target: targets.name_of(i)?.to_string(),
                retransmits: s.retransmits,
                state_changes: TCP_STATES
                    .iter()
                    .zip(s.state_changes.iter())
                    .filter(|(_, n)| **n > 0)
                    .map(|(name, n)| (*name, *n))
                    .collect(),
            })
        })
        .collect())
}
