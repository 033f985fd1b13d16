//! Loads the embedded kernel object, fills the target maps, attaches each program on its
//! own and keeps its status, and reads the per-CPU maps back.
//!
//! Loading never stops the agent: whatever cannot be done is recorded as the program's or
//! the collector's health (unsupported without privileges, failed otherwise).
mod cuda;
mod sys;

use std::os::fd::OwnedFd;

use agent_common::{
    stats_key_parts, HttpCounters, SchedStats, SyscallStats, TargetSlot, TcpStats,
    CONFIG_CGROUP_LEVELS, CONFIG_HTTP, CONFIG_MODE, MAX_CGROUP_LEVELS, MODE_ALL, MODE_CGROUP,
    SLOT_OVERFLOW, TARGET_SLOTS, TARGET_SLOT_MASK,
};
use aya::{
    maps::{Array, HashMap, MapData, PerCpuArray, PerCpuHashMap, RingBuf},
    programs::{Program, RawTracePoint, TracePoint},
    Ebpf, EbpfLoader,
};

use crate::{
    snapshot::{Health, ProgramStatus, State},
    targets::{descendants, Change, Target, TargetKind, Targets},
};

/// The kernel object built by agent/build.rs.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/infersight-ebpf"));

#[derive(Debug, thiserror::Error)]
pub enum EbpfError {
    #[error("eBPF is not loaded")]
    NotLoaded,
    #[error("map {name}: {source}")]
    Map {
        name: &'static str,
        source: aya::maps::MapError,
    },
    #[error("map {0} is missing from the eBPF object")]
    MissingMap(&'static str),
    #[error("cgroup targets span more than {MAX_CGROUP_LEVELS} distinct depths")]
    TooManyCgroupLevels,
}

#[derive(Debug, Clone, Copy)]
enum Hook {
    Raw(&'static str),
    Tracepoint(&'static str, &'static str),
}

#[derive(Debug, Clone, Copy)]
pub struct ProgramSpec {
    pub name: &'static str,
    hook: Hook,
    /// Needed for the collector to be active (others only add fork following).
    essential: bool,
}

/// The syscall collector's programs.
pub const SYSCALL_PROGRAMS: &[ProgramSpec] = &[
    ProgramSpec {
        name: "sys_enter",
        hook: Hook::Raw("sys_enter"),
        essential: true,
    },
    ProgramSpec {
        name: "sys_exit",
        hook: Hook::Raw("sys_exit"),
        essential: true,
    },
    ProgramSpec {
        name: "task_newtask",
        hook: Hook::Tracepoint("task", "task_newtask"),
        essential: false,
    },
    ProgramSpec {
        name: "sched_process_exit",
        hook: Hook::Tracepoint("sched", "sched_process_exit"),
        essential: false,
    },
    ProgramSpec {
        name: "sched_switch",
        hook: Hook::Tracepoint("sched", "sched_switch"),
        essential: false,
    },
    ProgramSpec {
        name: "sched_wakeup",
        hook: Hook::Tracepoint("sched", "sched_wakeup"),
        essential: false,
    },
    ProgramSpec {
        name: "sched_wakeup_new",
        hook: Hook::Tracepoint("sched", "sched_wakeup_new"),
        essential: false,
    },
    ProgramSpec {
        name: "tcp_retransmit_skb",
        hook: Hook::Tracepoint("tcp", "tcp_retransmit_skb"),
        essential: false,
    },
    ProgramSpec {
        name: "inet_sock_set_state",
        hook: Hook::Tracepoint("sock", "inet_sock_set_state"),
        essential: false,
    },
];

/// The programs each secondary collector needs attached to be active.
pub const SCHED_PROGRAMS: &[&str] = &["sched_switch", "sched_wakeup", "sched_wakeup_new"];
pub const TCP_PROGRAMS: &[&str] = &["tcp_retransmit_skb", "inet_sock_set_state"];

/// Empty programs on the syscall hooks: the benchmark's cost floor.
pub const FLOOR_PROGRAMS: &[ProgramSpec] = &[
    ProgramSpec {
        name: "noop_sys_enter",
        hook: Hook::Raw("sys_enter"),
        essential: true,
    },
    ProgramSpec {
        name: "noop_sys_exit",
        hook: Hook::Raw("sys_exit"),
        essential: true,
    },
];

/// Tracepoint record offsets the kernel programs read, as (global in the object, category,
/// event, field): read from tracefs `format` files at load time; the object's defaults
/// (this kernel's) stay where a file cannot be read.
const RECORD_OFFSETS: &[(&str, &str, &str, &str)] = &[
    ("NEWTASK_PID_OFFSET", "task", "task_newtask", "pid"),
    (
        "NEWTASK_FLAGS_OFFSET",
        "task",
        "task_newtask",
        "clone_flags",
    ),
    (
        "EXIT_GROUP_DEAD_OFFSET",
        "sched",
        "sched_process_exit",
        "group_dead",
    ),
    (
        "SWITCH_PREV_PID_OFFSET",
        "sched",
        "sched_switch",
        "prev_pid",
    ),
    (
        "SWITCH_PREV_STATE_OFFSET",
        "sched",
        "sched_switch",
        "prev_state",
    ),
    (
        "SWITCH_NEXT_PID_OFFSET",
        "sched",
        "sched_switch",
        "next_pid",
    ),
    ("WAKEUP_PID_OFFSET", "sched", "sched_wakeup", "pid"),
    (
        "RETRANS_SKADDR_OFFSET",
        "tcp",
        "tcp_retransmit_skb",
        "skaddr",
    ),
    ("RETRANS_SPORT_OFFSET", "tcp", "tcp_retransmit_skb", "sport"),
    (
        "STATE_SKADDR_OFFSET",
        "sock",
        "inet_sock_set_state",
        "skaddr",
    ),
    (
        "STATE_NEWSTATE_OFFSET",
        "sock",
        "inet_sock_set_state",
        "newstate",
    ),
    ("STATE_SPORT_OFFSET", "sock", "inet_sock_set_state", "sport"),
    (
        "STATE_PROTOCOL_OFFSET",
        "sock",
        "inet_sock_set_state",
        "protocol",
    ),
];

/// What the loaded programs do besides syscall tracing.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// HTTP request tracing on the targets' sockets.
    pub http: bool,
    /// BPF run-time statistics (self-cost metrics). They cost two clock reads per program
    /// run, on every syscall of the host.
    pub bpf_stats: bool,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            http: true,
            bpf_stats: true,
        }
    }
}

/// One (target, syscall) aggregate summed over CPUs.
#[derive(Debug, Clone, Copy)]
pub struct SyscallSample {
    pub target: u32,
    pub nr: u32,
    pub stats: SyscallStats,
}

struct Loaded {
    bpf: Ebpf,
    config: Array<MapData, u32>,
    targets: Array<MapData, TargetSlot>,
    overflow: HashMap<MapData, u32, u32>,
    cgroups: HashMap<MapData, u64, u32>,
    stats: PerCpuHashMap<MapData, u32, SyscallStats>,
    http_counters: PerCpuArray<MapData, HttpCounters>,
    /// Handed to the event reader task by `take_http_events`.
    http_events: Option<RingBuf<MapData>>,
    /// Keeps BPF run-time statistics on while the agent runs.
    stats_fd: Option<OwnedFd>,
    cuda: Option<cuda::Cuda>,
    sched: PerCpuArray<MapData, SchedStats>,
    tcp: PerCpuArray<MapData, TcpStats>,
}

pub struct Probes {
    loaded: Option<Loaded>,
    programs: Vec<(ProgramSpec, Health)>,
    collector: Health,
    stats_note: Option<String>,
}

fn take<T>(
    bpf: &mut Ebpf,
    name: &'static str,
    convert: impl FnOnce(aya::maps::Map) -> Result<T, aya::maps::MapError>,
) -> Result<T, EbpfError> {
    let map = bpf.take_map(name).ok_or(EbpfError::MissingMap(name))?;
    convert(map).map_err(|source| EbpfError::Map { name, source })
}

impl Probes {
    /// Load and attach `specs` for `targets` with the default options. Never fails:
    /// problems become health states.
    pub fn start(targets: &Targets, specs: &[ProgramSpec]) -> Probes {
        Self::start_with(targets, specs, Options::default())
    }

    pub fn start_with(targets: &Targets, specs: &[ProgramSpec], options: Options) -> Probes {
        if let Some(reason) = sys::missing_bpf_privileges() {
            return Self::none(specs, Health::unsupported(reason));
        }
        // Classic tracepoints need tracefs; raw tracepoints do not, so a failure here only
        // costs fork following (reported on those programs).
        let tracefs = sys::ensure_mounted(sys::TRACEFS, "tracefs");
        if let Err(e) = sys::ensure_mounted(sys::BPFFS, "bpf") {
            tracing::debug!("{e}");
        }

        let mut loader = EbpfLoader::new();
        let offsets: Vec<(&'static str, u32)> = RECORD_OFFSETS
            .iter()
            .filter_map(|(global, cat, event, field)| {
                let found = sys::field_offset(cat, event, field);
                // 0 tells the exit handler the kernel has no `group_dead` field.
                let value = if *global == "EXIT_GROUP_DEAD_OFFSET" {
                    Some(found.unwrap_or(0))
                } else {
                    found
                };
                value.map(|v| (*global, v))
            })
            .collect();
        for (name, value) in &offsets {
            loader.override_global(name, value, true);
        }
        let mut bpf = match loader.load(OBJECT) {
            Ok(b) => b,
            Err(e) => {
                let reason = format!("loading the eBPF object failed: {}", brief(e));
                return Self::none(specs, Health::failed(reason));
            }
        };
        let maps = (|| -> Result<_, EbpfError> {
            Ok((
                take(&mut bpf, "CONFIG", Array::try_from)?,
                take(&mut bpf, "TARGETS", Array::try_from)?,
                take(&mut bpf, "TARGETS_OVERFLOW", HashMap::try_from)?,
                take(&mut bpf, "CGROUP_TARGETS", HashMap::try_from)?,
                take(&mut bpf, "SYSCALL_STATS", PerCpuHashMap::try_from)?,
                take(&mut bpf, "HTTP_COUNTERS", PerCpuArray::try_from)?,
                take(&mut bpf, "HTTP_EVENTS", RingBuf::try_from)?,
                take(&mut bpf, "SCHED_STATS", PerCpuArray::try_from)?,
                take(&mut bpf, "TCP_STATS", PerCpuArray::try_from)?,
            ))
        })();
        let (config, targets_map, overflow, cgroups, stats, http_counters, http_events, sched, tcp) =
            match maps {
                Ok(m) => m,
                Err(e) => return Self::none(specs, Health::failed(e.to_string())),
            };
        let (stats_fd, stats_note) = if !options.bpf_stats {
            (
                None,
                Some("turned off in the configuration ([agent] bpf_stats = false)".to_string()),
            )
        } else if sys::stats_enabled_by_sysctl() {
            // Turned on host-wide (the systemd unit's privileged ExecStartPre does it, so
            // the agent itself needs no CAP_SYS_ADMIN).
            (None, None)
        } else if sys::can_enable_stats() {
            match aya::sys::enable_stats(aya::sys::Stats::RunTime) {
                Ok(fd) => (Some(fd), None),
                Err(e) => (None, Some(format!("BPF_ENABLE_STATS failed: {e}"))),
            }
        } else {
            (
                None,
                Some(
                    "BPF run-time statistics need CAP_SYS_ADMIN or kernel.bpf_stats_enabled = 1"
                        .to_string(),
                ),
            )
        };
        let cuda = match cuda::Cuda::take(&mut bpf) {
            Ok(c) => Some(c),
            Err(e) => {
                tracing::warn!("CUDA probes unavailable: {e}");
                None
            }
        };
        let mut loaded = Loaded {
            cuda,
            sched,
            tcp,
            bpf,
            config,
            targets: targets_map,
            overflow,
            cgroups,
            stats,
            http_counters,
            http_events: Some(http_events),
            stats_fd,
        };
        // Fill the target maps before attaching, so the first events are already right.
        let mut collector = match loaded.register(targets, options.http) {
            Ok(()) => Health::active(),
            Err(e) => Health::failed(e.to_string()),
        };

        let programs: Vec<(ProgramSpec, Health)> = specs
            .iter()
            .map(|spec| {
                let health = match (spec.hook, &tracefs) {
                    (Hook::Tracepoint(..), Err(e)) => Health::failed(e.clone()),
                    _ => match attach(&mut loaded.bpf, spec) {
                        Ok(()) => Health::active(),
                        Err(e) => Health::failed(e),
                    },
                };
                (*spec, health)
            })
            .collect();
        if let Some((spec, h)) = programs
            .iter()
            .find(|(s, h)| s.essential && h.state != State::Active)
        {
            collector = Health::failed(format!(
                "program {} not attached: {}",
                spec.name,
                h.reason.clone().unwrap_or_default()
            ));
        }
        Probes {
            loaded: Some(loaded),
            programs,
            collector,
            stats_note,
        }
    }

    /// Nothing loaded: every program and the collector share `health`.
    fn none(specs: &[ProgramSpec], health: Health) -> Probes {
        Probes {
            loaded: None,
            programs: specs.iter().map(|s| (*s, health.clone())).collect(),
            collector: health,
            stats_note: None,
        }
    }

    pub fn is_loaded(&self) -> bool {
        self.loaded.is_some()
    }

    pub fn collector_health(&self) -> Health {
        self.collector.clone()
    }

    /// Why run-time statistics are absent, if they are.
    pub fn stats_note(&self) -> Option<&str> {
        self.stats_note.as_deref()
    }

    pub fn program_statuses(&self) -> Vec<ProgramStatus> {
        self.programs
            .iter()
            .map(|(spec, health)| {
                let info = self
                    .loaded
                    .as_ref()
                    .filter(|l| l.stats_fd.is_some() && health.state == State::Active)
                    .and_then(|l| l.bpf.program(spec.name))
                    .and_then(|p: &Program| p.info().ok());
                ProgramStatus {
                    name: spec.name.to_string(),
                    health: health.clone(),
                    run_time_ns: info
                        .as_ref()
                        .map(|i| u64::try_from(i.run_time().as_nanos()).unwrap_or(u64::MAX)),
                    run_count: info.as_ref().map(|i| i.run_count()),
                }
            })
            .collect()
    }

    /// Every (target, syscall) aggregate, summed over CPUs.
    pub fn read_syscalls(&self) -> Result<Vec<SyscallSample>, EbpfError> {
        let loaded = self.loaded.as_ref().ok_or(EbpfError::NotLoaded)?;
        let mut out = Vec::new();
        for item in loaded.stats.iter() {
            let (key, per_cpu) = item.map_err(|source| EbpfError::Map {
                name: "SYSCALL_STATS",
                source,
            })?;
            let (target, nr) = stats_key_parts(key);
            let mut sum = SyscallStats::ZERO;
            for v in per_cpu.iter() {
                sum.count += v.count;
                sum.errors += v.errors;
                sum.sum_ns += v.sum_ns;
                for (s, b) in sum.buckets.iter_mut().zip(v.buckets.iter()) {
                    *s += b;
                }
            }
            out.push(SyscallSample {
                target,
                nr,
                stats: sum,
            });
        }
        Ok(out)
    }

    /// Apply what `Targets::refresh` found: a process target's new PID, a cgroup's new id.
    pub fn apply(&mut self, changes: &[Change]) -> Result<(), EbpfError> {
        let loaded = self.loaded.as_mut().ok_or(EbpfError::NotLoaded)?;
        for c in changes {
            match *c {
                Change::Pid { index, old, new } => {
                    if let Some(old) = old {
                        loaded.remove_pid(old)?;
                    }
                    if let Some(new) = new {
                        loaded.add_tree(new, index)?;
                    }
                }
                Change::Cgroup { index, old, new } => {
                    let map_err = |source| EbpfError::Map {
                        name: "CGROUP_TARGETS",
                        source,
                    };
                    match loaded.cgroups.remove(&old) {
                        Ok(()) | Err(aya::maps::MapError::KeyNotFound) => {}
                        Err(e) => return Err(map_err(e)),
                    }
                    loaded.cgroups.insert(new, index, 0).map_err(map_err)?;
                }
            }
        }
        Ok(())
    }

    /// Start tracing a target added at run time; `all` is the list with it.
    pub fn add_target(&mut self, t: &Target, all: &Targets) -> Result<(), EbpfError> {
        let loaded = self.loaded.as_mut().ok_or(EbpfError::NotLoaded)?;
        loaded.add_target(t)?;
        loaded.set_mode(all)
    }

    /// Stop tracing a removed target; `rest` is the list without it.
    pub fn remove_target(&mut self, t: &Target, rest: &Targets) -> Result<(), EbpfError> {
        let loaded = self.loaded.as_mut().ok_or(EbpfError::NotLoaded)?;
        loaded.set_mode(rest)?;
        loaded.remove_target(t)
    }

    /// Start tracing a process found at run time (a GPU process) as target `index`.
    pub fn add_process(&mut self, pid: u32, index: u32) -> Result<(), EbpfError> {
        let loaded = self.loaded.as_mut().ok_or(EbpfError::NotLoaded)?;
        loaded.add_tree(pid, index)
    }

    /// Whether all of `programs` are attached, or why not.
    pub fn programs_health(&self, programs: &[&str]) -> Health {
        if self.loaded.is_none() {
            return self.collector.clone();
        }
        for name in programs {
            if let Some((_, h)) = self.programs.iter().find(|(s, _)| s.name == *name) {
                if h.state != State::Active {
                    return Health {
                        state: h.state,
                        reason: Some(format!(
                            "program {name}: {}",
                            h.reason.clone().unwrap_or_default()
                        )),
                    };
                }
            }
        }
        Health::active()
    }

    /// Per-target scheduler figures summed over CPUs.
    pub fn read_sched(
        &self,
        targets: impl Iterator<Item = u32>,
    ) -> Result<Vec<(u32, SchedStats)>, EbpfError> {
        let loaded = self.loaded.as_ref().ok_or(EbpfError::NotLoaded)?;
        read_per_target(
            &loaded.sched,
            "SCHED_STATS",
            targets,
            SchedStats::ZERO,
            |sum, c| {
                sum.on_cpu_ns += c.on_cpu_ns;
                sum.off_cpu_ns += c.off_cpu_ns;
                sum.runq_count += c.runq_count;
                sum.runq_sum_ns += c.runq_sum_ns;
                for (s, b) in sum.runq_buckets.iter_mut().zip(c.runq_buckets.iter()) {
                    *s += b;
                }
            },
        )
    }

    /// Per-target TCP figures summed over CPUs.
    pub fn read_tcp(
        &self,
        targets: impl Iterator<Item = u32>,
    ) -> Result<Vec<(u32, TcpStats)>, EbpfError> {
        let loaded = self.loaded.as_ref().ok_or(EbpfError::NotLoaded)?;
        read_per_target(
            &loaded.tcp,
            "TCP_STATS",
            targets,
            TcpStats::ZERO,
            |sum, c| {
                sum.retransmits += c.retransmits;
                for (s, n) in sum.state_changes.iter_mut().zip(c.state_changes.iter()) {
                    *s += n;
                }
            },
        )
    }

    /// The ring buffer of completed HTTP requests, for the reader task (once).
    pub fn take_http_events(&mut self) -> Option<RingBuf<MapData>> {
        self.loaded.as_mut()?.http_events.take()
    }

    /// Per-target request counters summed over CPUs, for the given target indexes.
    pub fn read_http_counters(
        &self,
        targets: impl Iterator<Item = u32>,
    ) -> Result<Vec<(u32, HttpCounters)>, EbpfError> {
        let loaded = self.loaded.as_ref().ok_or(EbpfError::NotLoaded)?;
        read_per_target(
            &loaded.http_counters,
            "HTTP_COUNTERS",
            targets,
            HttpCounters::default(),
            |sum, c| {
                sum.started += c.started;
                sum.finished += c.finished;
                sum.dropped += c.dropped;
                sum.accepted += c.accepted;
                sum.ignored_connections += c.ignored_connections;
                sum.unanswered += c.unanswered;
            },
        )
    }
}

/// One per-CPU array slot per target, folded over CPUs with `add`.
pub(super) fn read_per_target<T: aya::Pod + Copy>(
    map: &PerCpuArray<MapData, T>,
    name: &'static str,
    targets: impl Iterator<Item = u32>,
    zero: T,
    add: impl Fn(&mut T, &T),
) -> Result<Vec<(u32, T)>, EbpfError> {
    let mut out = Vec::new();
    for t in targets {
        let per_cpu = map
            .get(&(t & agent_common::HTTP_TARGET_MASK), 0)
            .map_err(|source| EbpfError::Map { name, source })?;
        let mut sum = zero;
        for c in per_cpu.iter() {
            add(&mut sum, c);
        }
        out.push((t, sum));
    }
    Ok(out)
}

/// An error on one line: a verifier log is cut to its first line and its last lines
/// (where the verifier says why it refused).
fn map_err(name: &'static str) -> impl Fn(aya::maps::MapError) -> EbpfError {
    move |source| EbpfError::Map { name, source }
}

fn brief(e: impl std::fmt::Display) -> String {
    let text = e.to_string();
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    if lines.len() <= 4 {
        return lines.join(" | ");
    }
    let tail = &lines[lines.len() - 3..];
    format!("{} | … | {}", lines[0], tail.join(" | "))
}

fn attach(bpf: &mut Ebpf, spec: &ProgramSpec) -> Result<(), String> {
    let prog = bpf
        .program_mut(spec.name)
        .ok_or_else(|| format!("program {} is missing from the eBPF object", spec.name))?;
    match spec.hook {
        Hook::Raw(tp) => {
            let p: &mut RawTracePoint = prog.try_into().map_err(|e| format!("{e}"))?;
            p.load().map_err(|e| {
                tracing::debug!("{}: {e}", spec.name);
                format!("load: {}", brief(e))
            })?;
            p.attach(tp)
                .map_err(|e| format!("attach raw_tp/{tp}: {e}"))?;
        }
        Hook::Tracepoint(cat, name) => {
            let p: &mut TracePoint = prog.try_into().map_err(|e| format!("{e}"))?;
            p.load().map_err(|e| format!("load: {}", brief(e)))?;
            p.attach(cat, name)
                .map_err(|e| format!("attach tracepoint/{cat}/{name}: {e}"))?;
        }
    }
    Ok(())
}

impl Loaded {
    fn register(&mut self, targets: &Targets, http: bool) -> Result<(), EbpfError> {
        for t in targets.iter() {
            self.add_target(t)?;
        }
        self.config
            .set(CONFIG_HTTP, u32::from(http), 0)
            .map_err(map_err("CONFIG"))?;
        self.set_mode(targets)
    }

    /// The target's processes or cgroup into the lookup maps (the mode is set apart).
    fn add_target(&mut self, t: &Target) -> Result<(), EbpfError> {
        match &t.kind {
            TargetKind::Host => Ok(()),
            TargetKind::Pid { .. } | TargetKind::PidFile { .. } | TargetKind::Process { .. } => {
                match t.pid() {
                    Some(pid) => self.add_tree(pid, t.index),
                    None => Ok(()),
                }
            }
            TargetKind::Cgroup { id, .. } => self
                .cgroups
                .insert(id, t.index, 0)
                .map_err(map_err("CGROUP_TARGETS")),
        }
    }

    /// Every slot and overflow entry of the target's processes (its forks included, which
    /// only the kernel knew), or its cgroup, out of the lookup maps.
    fn remove_target(&mut self, t: &Target) -> Result<(), EbpfError> {
        if let TargetKind::Cgroup { id, .. } = &t.kind {
            return match self.cgroups.remove(id) {
                Ok(()) | Err(aya::maps::MapError::KeyNotFound) => Ok(()),
                Err(e) => Err(map_err("CGROUP_TARGETS")(e)),
            };
        }
        for index in 0..TARGET_SLOTS {
            let cur = self.targets.get(&index, 0).map_err(map_err("TARGETS"))?;
            if cur.target_index() == t.index {
                let slot = TargetSlot {
                    tgid: 0,
                    target: cur.target & SLOT_OVERFLOW,
                };
                self.targets
                    .set(index, slot, 0)
                    .map_err(map_err("TARGETS"))?;
            }
        }
        let pids: Vec<u32> = self
            .overflow
            .iter()
            .filter_map(Result::ok)
            .filter(|(_, target)| *target == t.index)
            .map(|(pid, _)| pid)
            .collect();
        for pid in pids {
            match self.overflow.remove(&pid) {
                Ok(()) | Err(aya::maps::MapError::KeyNotFound) => {}
                Err(e) => return Err(map_err("TARGETS_OVERFLOW")(e)),
            }
        }
        Ok(())
    }

    /// The lookup mode and the cgroup depths to check, from the whole target list.
    fn set_mode(&mut self, targets: &Targets) -> Result<(), EbpfError> {
        let mut mode = 0;
        let mut levels: Vec<u32> = Vec::new();
        for t in targets.iter() {
            match &t.kind {
                TargetKind::Host => mode |= MODE_ALL,
                TargetKind::Cgroup { level, .. } => {
                    mode |= MODE_CGROUP;
                    if !levels.contains(level) {
                        levels.push(*level);
                    }
                }
                _ => {}
            }
        }
        if levels.len() > MAX_CGROUP_LEVELS as usize {
            return Err(EbpfError::TooManyCgroupLevels);
        }
        // Unused slots are 0: the kernel stops at the first.
        for i in 0..MAX_CGROUP_LEVELS {
            let level = levels.get(i as usize).copied().unwrap_or(0);
            self.config
                .set(CONFIG_CGROUP_LEVELS + i, level, 0)
                .map_err(map_err("CONFIG"))?;
        }
        self.config
            .set(CONFIG_MODE, mode, 0)
            .map_err(map_err("CONFIG"))
    }

    /// The root first: from here on the kernel follows its forks, then the workers it
    /// started before we came.
    fn add_tree(&mut self, pid: u32, target: u32) -> Result<(), EbpfError> {
        self.add_pid(pid, target)?;
        for child in descendants(pid) {
            self.add_pid(child, target)?;
        }
        Ok(())
    }

    /// Forget a process that is gone (its exit handler normally did it already).
    fn remove_pid(&mut self, pid: u32) -> Result<(), EbpfError> {
        let index = pid & TARGET_SLOT_MASK;
        let cur = self.targets.get(&index, 0).map_err(map_err("TARGETS"))?;
        if cur.tgid == pid && cur.target_index() != 0 {
            let slot = TargetSlot {
                tgid: 0,
                target: cur.target & SLOT_OVERFLOW,
            };
            return self.targets.set(index, slot, 0).map_err(map_err("TARGETS"));
        }
        match self.overflow.remove(&pid) {
            Ok(()) | Err(aya::maps::MapError::KeyNotFound) => Ok(()),
            Err(source) => Err(EbpfError::Map {
                name: "TARGETS_OVERFLOW",
                source,
            }),
        }
    }

    /// Same placement rule as the kernel's fork handler: the slot if free, else the
    /// overflow map with the slot flagged.
    fn add_pid(&mut self, pid: u32, target: u32) -> Result<(), EbpfError> {
        let index = pid & TARGET_SLOT_MASK;
        let cur = self.targets.get(&index, 0).map_err(map_err("TARGETS"))?;
        if cur.target_index() == 0 || cur.tgid == pid {
            let slot = TargetSlot {
                tgid: pid,
                target: target | (cur.target & SLOT_OVERFLOW),
            };
            self.targets.set(index, slot, 0).map_err(map_err("TARGETS"))
        } else {
            self.overflow
                .insert(pid, target, 0)
                .map_err(map_err("TARGETS_OVERFLOW"))?;
            let slot = TargetSlot {
                tgid: cur.tgid,
                target: cur.target | SLOT_OVERFLOW,
            };
            self.targets.set(index, slot, 0).map_err(map_err("TARGETS"))
        }
    }
}
