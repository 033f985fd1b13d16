//! System calls of the targets: raw tracepoints on `sys_enter`/`sys_exit` aggregate count,
//! errors and a log2 latency histogram per (target, syscall) in a per-CPU hash map; each
//! tick reads it back and names the calls. These two programs also carry the HTTP
//! tracer's socket-call hooks (the `http` collector).
mod metrics;

use std::collections::HashSet;

use agent_common::{stats_key_parts, SyscallStats, HIST_BUCKETS};
use aya::maps::{MapData, PerCpuHashMap};
use serde::Serialize;

use super::{Collected, Collector, Tick};
use crate::{
    base::{histogram::serialize_log2, Health},
    config::Config,
    ebpf::{EbpfError, Kernel, SYSCALL_HOOKS},
    targets::{Target, Targets},
};

/// Cumulative syscall figures of one target, since the agent started.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SyscallSeries {
    pub target: String,
    pub syscall: String,
    pub count: u64,
    pub errors: u64,
    /// Sum of measured durations, in seconds.
    pub duration_sum_seconds: f64,
    /// Non-cumulative log2 buckets: `buckets[i]` counts durations in [2^i, 2^(i+1)) ns.
    #[serde(serialize_with = "serialize_log2")]
    pub buckets: [u64; HIST_BUCKETS],
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct SyscallsPart {
    pub syscalls: Vec<SyscallSeries>,
    /// (target, syscall) series not exported because of `[agent] max_syscall_series`.
    pub syscall_series_limited: u64,
}

pub struct Syscalls {
    stats: Option<PerCpuHashMap<MapData, u32, SyscallStats>>,
    health: Health,
    /// The last good reading: a failed read must not look like zero calls.
    last: SyscallsPart,
    limit: usize,
    /// (target index, syscall number) series exported so far; those past the limit are
    /// refused (admitted ones stay, so series do not flap).
    admitted: HashSet<(u32, u32)>,
}

impl Collector for Syscalls {
    const NAME: &'static str = "syscalls";
    type Part = SyscallsPart;

    fn start(config: &Config, kernel: &mut Kernel, _: &Targets) -> Syscalls {
        let mut health = kernel.attach(SYSCALL_HOOKS);
        kernel.follow_processes();
        let stats = match kernel.take_map("SYSCALL_STATS", PerCpuHashMap::try_from) {
            Ok(m) => Some(m),
            Err(e) => {
                if health.is_active() {
                    health = Health::failed(e.to_string());
                }
                None
            }
        };
        Syscalls {
            stats,
            health,
            last: SyscallsPart::default(),
            limit: config.agent.max_syscall_series,
            admitted: HashSet::new(),
        }
    }

    fn collect(&mut self, tick: &mut Tick<'_>) -> Collected<SyscallsPart> {
        if !self.health.is_active() {
            return Collected::new(self.last.clone(), self.health.clone());
        }
        match self.read(tick.targets) {
            Ok(part) => {
                self.last = part;
                Collected::new(self.last.clone(), Health::active())
            }
            Err(e) => Collected::new(self.last.clone(), Health::failed(e.to_string())),
        }
    }

    fn families(part: &SyscallsPart, out: &mut Vec<prometheus::proto::MetricFamily>) {
        metrics::families(part, out);
    }

    fn reconfigure(&mut self, config: &Config) {
        self.limit = config.agent.max_syscall_series;
    }

    fn target_removed(&mut self, target: &Target) {
        self.admitted.retain(|(t, _)| *t != target.index);
    }
}

impl Syscalls {
    /// Every (target, syscall) aggregate summed over CPUs, named.
    fn read(&mut self, targets: &Targets) -> Result<SyscallsPart, EbpfError> {
        let map = self
            .stats
            .as_ref()
            .ok_or(EbpfError::MissingMap("SYSCALL_STATS"))?;
        let mut refused = 0;
        let mut syscalls = Vec::new();
        for item in map.iter() {
            let (key, per_cpu) = item.map_err(|source| EbpfError::Map {
                name: "SYSCALL_STATS",
                source,
            })?;
            let (target, nr) = stats_key_parts(key);
            let admitted = &mut self.admitted;
            let keep = admitted.contains(&(target, nr))
                || (admitted.len() < self.limit && admitted.insert((target, nr)));
            if !keep {
                refused += 1;
                continue;
            }
            // A key whose target is gone (not configured any more) is not reported.
            let Some(name) = targets.name_of(target) else {
                continue;
            };
            let mut sum = SyscallStats::ZERO;
            for v in per_cpu.iter() {
                sum.count += v.count;
                sum.errors += v.errors;
                sum.sum_ns += v.sum_ns;
                for (s, b) in sum.buckets.iter_mut().zip(v.buckets.iter()) {
                    *s += b;
                }
            }
            syscalls.push(SyscallSeries {
                target: name.to_string(),
                syscall: label(nr),
                count: sum.count,
                errors: sum.errors,
                duration_sum_seconds: sum.sum_ns as f64 / 1e9,
                buckets: sum.buckets,
            });
        }
        syscalls.sort_by(|a, b| (&a.target, &a.syscall).cmp(&(&b.target, &b.syscall)));
        Ok(SyscallsPart {
            syscalls,
            syscall_series_limited: refused,
        })
    }
}

/// Label value for an x86_64 syscall number: its name, or `nr_<N>` for numbers the table
/// does not know (newer kernels, ia32 compat numbers).
pub fn label(nr: u32) -> String {
    match syscalls::x86_64::Sysno::new(nr as usize) {
        Some(s) => s.name().to_string(),
        None => format!("nr_{nr}"),
    }
}

#[cfg(test)]
mod tests;
