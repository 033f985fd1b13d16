//! How the targets' processes fail: OOM kills, fatal signals, how each process ended,
//! and restarts. The kernel side (`agent-ebpf/src/failures.rs`) counts signals and exits
//! per target and hands over OOM victims; restarts are seen here, from the targets'
//! processes at each tick.
mod metrics;
mod oom;
mod restarts;

use std::{collections::HashMap, time::Instant};

use agent_common::{FailureStats, OomVictim, CONFIG_FAILURES, EXIT_NONZERO};
use aya::maps::{HashMap as BpfHashMap, MapData, PerCpuArray};
use serde::Serialize;

use super::{Collected, Collector, Tick};
use crate::{
    base::{
        signal::{Instance, SignalDoc, SignalSet},
        Health,
    },
    config::Config,
    ebpf::{sum_per_target, Hook, Kernel, ProgramSpec, RecordOffset, SYSCALL_HOOKS},
    targets::{cgroup2_mount, Target, TargetKind, Targets},
};

/// Its own programs (the failures benchmark detaches them to measure their cost).
pub const PROGRAMS: &[ProgramSpec] = &[
    ProgramSpec {
        name: "mark_victim",
        hook: Hook::Tracepoint("oom", "mark_victim"),
        essential: true,
    },
    ProgramSpec {
        name: "signal_generate",
        hook: Hook::Tracepoint("signal", "signal_generate"),
        essential: true,
    },
];

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FailureSeries {
    pub target: String,
    /// Processes of the target the OOM killer chose.
    pub oom_kills: u64,
    /// For a cgroup target with `memory.events`: times it hit its memory limit and the
    /// OOM killer ran (absent otherwise).
    pub oom_events: Option<u64>,
    /// Recent OOM victims (kept an hour): PID and kills.
    pub oom_victims: Vec<(u32, u64)>,
    /// Kills `memory.events` counted that no victim accounts for.
    pub oom_unattributed: u64,
    /// Fatal signals delivered to its tasks, by name (`agent_common::FATAL_SIGNALS`).
    pub signals: Vec<(&'static str, u64)>,
    /// How its processes ended, by kind (`agent_common::EXIT_KINDS`).
    pub exits: Vec<(&'static str, u64)>,
    pub restarts: u64,
}

impl FailureSeries {
    /// Fatal signals plus non-zero exits.
    pub fn crashes(&self) -> u64 {
        let signals: u64 = self.signals.iter().map(|(_, n)| n).sum();
        signals + self.exits.get(EXIT_NONZERO).map_or(0, |(_, n)| *n)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct FailuresPart {
    pub failures: Vec<FailureSeries>,
}

struct Maps {
    stats: PerCpuArray<MapData, FailureStats>,
    victims: BpfHashMap<MapData, u32, OomVictim>,
}

#[derive(Default)]
struct TargetState {
    oom: oom::Oom,
    restarts: restarts::Restarts,
}

pub struct Failures {
    maps: Result<Maps, Health>,
    state: HashMap<u32, TargetState>,
}

impl Collector for Failures {
    const NAME: &'static str = "failures";
    const RECORD_OFFSETS: &'static [RecordOffset] = &[
        RecordOffset::new("VICTIM_PID_OFFSET", "oom", "mark_victim", "pid"),
        RecordOffset::new("SIGNAL_SIG_OFFSET", "signal", "signal_generate", "sig"),
        RecordOffset::new("SIGNAL_PID_OFFSET", "signal", "signal_generate", "pid"),
        RecordOffset::new(
            "SIGNAL_RESULT_OFFSET",
            "signal",
            "signal_generate",
            "result",
        ),
    ];
    const SIGNALS: &'static [SignalDoc] = &[
        SignalDoc {
            name: "target_oom_kills_total",
            labels: "target, pid",
            meaning: "OOM kills: one instance per victim of the last hour (its PID); pid=\"unknown\" for kills only memory.events saw",
        },
        SignalDoc {
            name: "target_restarts_total",
            labels: "target",
            meaning: "times all of the target's processes were replaced",
        },
        SignalDoc {
            name: "target_crashes_total",
            labels: "target",
            meaning: "fatal signals (KILL, SEGV, ABRT, BUS, ILL, FPE) plus non-zero exits",
        },
    ];
    type Part = FailuresPart;

    fn start(_: &Config, kernel: &mut Kernel, _: &Targets) -> Failures {
        kernel.follow_processes();
        // Exit statuses are read where `exit_group` enters.
        let hooks = kernel.attach(SYSCALL_HOOKS);
        let health = kernel.attach(PROGRAMS);
        let maps = if !hooks.is_active() {
            Err(hooks)
        } else if !health.is_active() {
            Err(kernel.programs_health(PROGRAMS))
        } else {
            take_maps(kernel).map_err(Health::failed)
        };
        Failures {
            maps,
            state: HashMap::new(),
        }
    }

    fn collect(&mut self, tick: &mut Tick<'_>) -> Collected<FailuresPart> {
        let maps = match &mut self.maps {
            Ok(m) => m,
            Err(h) => return Collected::new(FailuresPart::default(), h.clone()),
        };
        let now = Instant::now();
        let stats = match sum_per_target(
            &maps.stats,
            "FAILURE_STATS",
            tick.targets.iter().map(|t| t.index),
            FailureStats::default(),
            |sum, c| {
                for (s, n) in sum.signals.iter_mut().zip(c.signals) {
                    *s += n;
                }
                for (s, n) in sum.exits.iter_mut().zip(c.exits) {
                    *s += n;
                }
            },
        ) {
            Ok(s) => s,
            Err(e) => {
                return Collected::new(FailuresPart::default(), Health::failed(e.to_string()))
            }
        };
        for (pid, victim) in drain(&mut maps.victims) {
            if tick.targets.name_of(victim.target).is_some() {
                self.state
                    .entry(victim.target)
                    .or_default()
                    .oom
                    .victim(pid, now);
            }
        }
        let mount = cgroup2_mount();
        let mut failures = Vec::new();
        for (t, (_, s)) in tick.targets.iter().zip(stats) {
            let state = self.state.entry(t.index).or_default();
            observe(state, t, tick, mount.as_deref());
            state.oom.prune(now);
            failures.push(series(t, state, &s));
        }
        Collected::new(FailuresPart { failures }, Health::active())
    }

    fn families(part: &FailuresPart, out: &mut Vec<prometheus::proto::MetricFamily>) {
        metrics::families(part, out);
    }

    fn signals(part: &FailuresPart, out: &mut SignalSet) {
        let mut kills = Vec::new();
        for f in &part.failures {
            for (pid, n) in &f.oom_victims {
                let pid = pid.to_string();
                kills.push(Instance::labelled(
                    &[("target", &f.target), ("pid", &pid)],
                    *n as f64,
                ));
            }
            if f.oom_unattributed > 0 {
                kills.push(Instance::labelled(
                    &[("target", &f.target), ("pid", "unknown")],
                    f.oom_unattributed as f64,
                ));
            }
        }
        out.put("target_oom_kills_total", kills);
        let per_target = |value: fn(&FailureSeries) -> u64| {
            part.failures
                .iter()
                .map(|f| Instance::labelled(&[("target", &f.target)], value(f) as f64))
                .collect()
        };
        out.put("target_restarts_total", per_target(|f| f.restarts));
        out.put("target_crashes_total", per_target(FailureSeries::crashes));
    }

    fn target_removed(&mut self, t: &Target) {
        self.state.remove(&t.index);
    }

    fn stop(&mut self, kernel: &mut Kernel) {
        kernel.detach(PROGRAMS);
    }
}

fn take_maps(kernel: &mut Kernel) -> Result<Maps, String> {
    let stats = kernel
        .take_map("FAILURE_STATS", PerCpuArray::try_from)
        .map_err(|e| e.to_string())?;
    let victims = kernel
        .take_map("OOM_VICTIMS", BpfHashMap::try_from)
        .map_err(|e| e.to_string())?;
    // Last: exit statuses are kept once everything that reads them is in place.
    kernel
        .set_config(CONFIG_FAILURES, 1)
        .map_err(|e| e.to_string())?;
    Ok(Maps { stats, victims })
}

/// The victims the kernel handed over since the last tick (removed from the map).
fn drain(map: &mut BpfHashMap<MapData, u32, OomVictim>) -> Vec<(u32, OomVictim)> {
    let found: Vec<(u32, OomVictim)> = map.iter().filter_map(Result::ok).collect();
    for (pid, _) in &found {
        if let Err(e) = map.remove(pid) {
            tracing::debug!("OOM_VICTIMS: remove {pid}: {e}");
        }
    }
    found
}

/// What this tick's targets and processes say: restarts, and a cgroup target's
/// `memory.events`.
fn observe(state: &mut TargetState, t: &Target, tick: &Tick<'_>, mount: Option<&std::path::Path>) {
    match &t.kind {
        TargetKind::PidFile { .. } | TargetKind::Process { .. } => {
            let root = t.pid().zip(t.started);
            let alive = tick
                .members
                .of(t.index)
                .and_then(|m| m.root_alive)
                .unwrap_or(false);
            state.restarts.root(root.filter(|_| alive));
        }
        TargetKind::Cgroup { path, id, .. } => {
            let pids = tick.members.of(t.index).map_or(&[][..], |m| &m.pids);
            state.restarts.cgroup(*id, pids);
            let dir = mount.map(|m| m.join(path.strip_prefix("/").unwrap_or(path)));
            if let Some(read) = dir.and_then(|d| oom::memory_events(&d)) {
                state.oom.events(*id, read);
            }
        }
        TargetKind::Host | TargetKind::Pid { .. } | TargetKind::GpuProcess { .. } => {}
    }
}

fn series(t: &Target, state: &TargetState, s: &FailureStats) -> FailureSeries {
    let kills = state.oom.kills();
    FailureSeries {
        target: t.name.clone(),
        oom_kills: kills,
        oom_events: state.oom.events_total().map(|e| e.0),
        oom_victims: state.oom.victims.iter().map(|v| (v.pid, v.kills)).collect(),
        oom_unattributed: kills.saturating_sub(state.oom.attributed),
        signals: agent_common::FATAL_SIGNALS
            .iter()
            .zip(s.signals)
            .map(|((_, name), n)| (*name, n))
            .collect(),
        exits: agent_common::EXIT_KINDS
            .iter()
            .copied()
            .zip(s.exits)
            .collect(),
        restarts: state.restarts.count,
    }
}
