//! Target processes from /proc: up, CPU, memory, threads, descriptors, start time, summed
//! over each target's processes (its members, which the tick brings).
mod metrics;

use serde::Serialize;

use super::{Collected, Collector, Tick};
use crate::{
    base::{
        signal::{Instance, SignalDoc, SignalSet},
        Health,
    },
    config::Config,
    ebpf::Kernel,
    targets::{Members, Target, TargetKind, Targets},
};

/// One target's processes, summed. A figure no process could be read for is absent.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProcessSample {
    pub target: String,
    /// The root process exists (process targets) or the cgroup holds a process.
    pub up: bool,
    pub processes: u64,
    pub pids: Vec<u32>,
    pub cpu_seconds: Option<f64>,
    pub resident_bytes: Option<u64>,
    pub threads: Option<u64>,
    pub open_fds: Option<u64>,
    /// Unix time the target's oldest process started.
    pub start_time_seconds: Option<f64>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ProcessPart {
    pub processes: Vec<ProcessSample>,
    /// The agent's own process (the dashboard's self-cost read-out); absent when
    /// /proc/self cannot be read.
    pub agent: Option<OwnUsage>,
}

/// The agent's own cumulative CPU time and resident memory.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct OwnUsage {
    pub cpu_seconds: f64,
    pub resident_bytes: u64,
}

fn own() -> Option<OwnUsage> {
    let stat = procfs::process::Process::myself().ok()?.stat().ok()?;
    Some(OwnUsage {
        cpu_seconds: (stat.utime + stat.stime) as f64 / procfs::ticks_per_second() as f64,
        resident_bytes: stat.rss * procfs::page_size(),
    })
}

pub struct Process;

impl Collector for Process {
    const NAME: &'static str = "process";
    const SIGNALS: &'static [SignalDoc] = &[SignalDoc {
        name: "target_up",
        labels: "target",
        meaning: "1 while the target's process exists, else 0",
    }];
    type Part = ProcessPart;

    fn start(_: &Config, _: &mut Kernel, _: &Targets) -> Process {
        Process
    }

    fn collect(&mut self, tick: &mut Tick<'_>) -> Collected<ProcessPart> {
        let health = if tick.targets.iter().any(|t| t.kind != TargetKind::Host) {
            Health::active()
        } else {
            Health::unsupported("no process or cgroup target (the host is the target)")
        };
        let processes = sample(tick.targets, tick.members);
        let agent = own();
        Collected::new(ProcessPart { processes, agent }, health)
    }

    fn families(part: &ProcessPart, out: &mut Vec<prometheus::proto::MetricFamily>) {
        metrics::families(part, out);
    }

    fn signals(part: &ProcessPart, out: &mut SignalSet) {
        out.put(
            "target_up",
            part.processes
                .iter()
                .map(|p| Instance::labelled(&[("target", &p.target)], f64::from(u8::from(p.up))))
                .collect(),
        );
    }
}

/// Read every process and cgroup target (the host target has none).
pub fn sample(targets: &Targets, members: &Members) -> Vec<ProcessSample> {
    let boot = procfs::boot_time_secs().ok();
    let tps = procfs::ticks_per_second() as f64;
    let page = procfs::page_size();
    targets
        .iter()
        .filter_map(|t| {
            let m = members.of(t.index)?;
            Some(read(t, &m.pids, m.up(), boot, tps, page))
        })
        .collect()
}

fn read(
    t: &Target,
    pids: &[u32],
    up: bool,
    boot: Option<u64>,
    tps: f64,
    page: u64,
) -> ProcessSample {
    let mut s = ProcessSample {
        target: t.name.clone(),
        up,
        processes: 0,
        pids: Vec::with_capacity(pids.len()),
        cpu_seconds: None,
        resident_bytes: None,
        threads: None,
        open_fds: None,
        start_time_seconds: None,
    };
    let add = |acc: &mut Option<u64>, v: u64| *acc = Some(acc.unwrap_or(0) + v);
    let mut cpu_ticks = None;
    let mut oldest: Option<u64> = None;
    for &pid in pids {
        let Ok(p) = procfs::process::Process::new(i32::try_from(pid).unwrap_or(i32::MAX)) else {
            continue;
        };
        // A process that exits between listing and reading is skipped, not counted as 0.
        let Ok(stat) = p.stat() else { continue };
        s.processes += 1;
        s.pids.push(pid);
        add(&mut cpu_ticks, stat.utime + stat.stime);
        add(&mut s.resident_bytes, stat.rss * page);
        add(&mut s.threads, u64::try_from(stat.num_threads).unwrap_or(0));
        if let Ok(n) = p.fd_count() {
            add(&mut s.open_fds, n as u64);
        }
        oldest = Some(oldest.map_or(stat.starttime, |o| o.min(stat.starttime)));
    }
    s.cpu_seconds = cpu_ticks.map(|t| t as f64 / tps);
    s.start_time_seconds = match (oldest, boot) {
        (Some(start), Some(boot)) => Some(boot as f64 + start as f64 / tps),
        _ => None,
    };
    s
}
