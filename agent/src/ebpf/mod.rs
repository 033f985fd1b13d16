//! The kernel side's loader: loads the embedded eBPF object once, fills the target maps
//! and keeps them in step with the targets, follows forks and exits, and attaches the
//! programs each collector asks for, each on its own, keeping its status.
//!
//! Collectors own their programs and maps: they name their programs' hooks
//! (`ProgramSpec`), take their maps (`Kernel::take_map`) and read them. Loading never
//! stops the agent: whatever cannot be done is recorded as a program's or collector's
//! health (unsupported without privileges, failed otherwise).
pub mod detach;
mod log;
mod sys;
mod targets;

use std::os::fd::OwnedFd;

use agent_common::HTTP_TARGET_MASK;
use aya::{
    maps::{MapData, PerCpuArray},
    programs::{Program, RawTracePoint, TracePoint},
    Ebpf, EbpfLoader,
};

use crate::{
    base::{Health, ProgramStatus},
    targets::{Change, Target, Targets},
};
use targets::TargetMaps;

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
    #[error("map {0} is missing from the eBPF object (or taken already)")]
    MissingMap(&'static str),
    #[error(
        "cgroup targets span more than {} distinct depths",
        agent_common::MAX_CGROUP_LEVELS
    )]
    TooManyCgroupLevels,
}

/// Where a program attaches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hook {
    /// A raw tracepoint: no perf record per event, no tracefs needed.
    Raw(&'static str),
    /// A classic tracepoint (category, event): needs tracefs.
    Tracepoint(&'static str, &'static str),
    /// Uprobes on a library, attached by their collector per process (`Kernel::track`
    /// lists them).
    Uprobe(&'static str),
}

/// A program of the object and its hook.
#[derive(Debug, Clone, Copy)]
pub struct ProgramSpec {
    pub name: &'static str,
    pub hook: Hook,
    /// Needed for its collector to be active (others only add to what it sees).
    pub essential: bool,
}

/// The raw syscall tracepoints. The syscall counters and the HTTP tracer's socket-call
/// hooks run in these two programs, so the `syscalls` and `http` collectors both ask for
/// them.
pub const SYSCALL_HOOKS: &[ProgramSpec] = &[
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
];

/// Process following: children of targets join them, exited processes leave the maps.
/// Every per-target kernel program relies on it; collectors ask for it with
/// `Kernel::follow_processes`.
const FOLLOW_PROGRAMS: &[ProgramSpec] = &[
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
];

/// Empty programs on the syscall hooks: the benchmarks' cost floor.
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

/// Empty programs on the scheduler tracepoints the `sched` collector uses: the scheduler
/// benchmark's cost floor.
pub const SCHED_FLOOR_PROGRAMS: &[ProgramSpec] = &[
    ProgramSpec {
        name: "noop_sched_switch",
        hook: Hook::Tracepoint("sched", "sched_switch"),
        essential: true,
    },
    ProgramSpec {
        name: "noop_sched_wakeup",
        hook: Hook::Tracepoint("sched", "sched_wakeup"),
        essential: true,
    },
    ProgramSpec {
        name: "noop_sched_wakeup_new",
        hook: Hook::Tracepoint("sched", "sched_wakeup_new"),
        essential: true,
    },
];

/// A tracepoint record field a kernel program reads at an offset held in a global of the
/// object: the offset is read from tracefs `format` files at load time; the object's
/// default (this kernel's) stays where a file cannot be read. Collectors declare theirs
/// (`Collector::RECORD_OFFSETS`).
#[derive(Debug, Clone, Copy)]
pub struct RecordOffset {
    pub global: &'static str,
    pub category: &'static str,
    pub event: &'static str,
    pub field: &'static str,
}

impl RecordOffset {
    pub const fn new(
        global: &'static str,
        category: &'static str,
        event: &'static str,
        field: &'static str,
    ) -> RecordOffset {
        RecordOffset {
            global,
            category,
            event,
            field,
        }
    }
}

/// The offsets process following reads.
const FOLLOW_OFFSETS: &[RecordOffset] = &[
    RecordOffset::new("NEWTASK_PID_OFFSET", "task", "task_newtask", "pid"),
    RecordOffset::new(
        "NEWTASK_FLAGS_OFFSET",
        "task",
        "task_newtask",
        "clone_flags",
    ),
    RecordOffset::new(
        "EXIT_GROUP_DEAD_OFFSET",
        "sched",
        "sched_process_exit",
        "group_dead",
    ),
];

/// Size of the HTTP request events' ring buffer (the object's own is 2 MiB).
pub const HTTP_RING_BYTES: u32 = 1 << 20;

/// How the object is loaded.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// BPF run-time statistics (self-cost metrics). They cost two clock reads per program
    /// run, on every syscall of the host.
    pub bpf_stats: bool,
    /// The record offsets the collectors' programs read (the registry's).
    pub record_offsets: &'static [&'static [RecordOffset]],
}

impl Default for Options {
    fn default() -> Options {
        Options {
            bpf_stats: true,
            record_offsets: &[],
        }
    }
}

struct Loaded {
    bpf: Ebpf,
    maps: TargetMaps,
    /// Keeps BPF run-time statistics on while the agent runs.
    _stats_fd: Option<OwnedFd>,
    /// The kernel programs' diagnostics, until the reader task takes them.
    log: Option<log::KernelLog>,
}

/// The loaded object (or why there is none) and the status of every attached program.
pub struct Kernel {
    loaded: Option<Loaded>,
    /// Active when loaded; else why not (shared by every kernel collector).
    health: Health,
    /// Whether tracefs is there (classic tracepoints need it), or why not.
    tracefs: Result<(), String>,
    programs: Vec<(ProgramSpec, Health)>,
    stats_note: Option<String>,
    following: bool,
}

impl Kernel {
    /// Load the object and fill the target maps for `targets`. Never fails: problems
    /// become health states. Nothing is attached yet: collectors attach their programs.
    pub fn load(targets: &Targets, options: Options) -> Kernel {
        if let Some(reason) = sys::missing_bpf_privileges() {
            return Self::unavailable(Health::unsupported(reason));
        }
        // Classic tracepoints need tracefs; raw tracepoints do not, so a failure here only
        // costs the programs on classic tracepoints (reported on each of them).
        let tracefs = sys::ensure_mounted(sys::TRACEFS, "tracefs");
        if let Err(e) = sys::ensure_mounted(sys::BPFFS, "bpf") {
            tracing::debug!("{e}");
        }
        let mut loader = EbpfLoader::new();
        let offsets: Vec<(&'static str, u32)> = options
            .record_offsets
            .iter()
            .copied()
            .chain([FOLLOW_OFFSETS])
            .flatten()
            .filter_map(|o| {
                let found = sys::field_offset(o.category, o.event, o.field);
                // 0 tells the exit handler the kernel has no `group_dead` field.
                let value = if o.global == "EXIT_GROUP_DEAD_OFFSET" {
                    Some(found.unwrap_or(0))
                } else {
                    found
                };
                value.map(|v| (o.global, v))
            })
            .collect();
        for (name, value) in &offsets {
            loader.override_global(name, value, true);
        }
        // The request events' ring buffer is mapped into the agent (twice over, for
        // wrap-around reads) and counts in its RSS: 1 MiB holds 5 000 events, 0.13 s of
        // 40 000 requests/s; the reader drains it every 50 ms, and at once when 256 KiB
        // are unread.
        loader.map_max_entries("HTTP_EVENTS", HTTP_RING_BYTES);
        let report_max = sys::report_max();
        if let Some(v) = &report_max {
            loader.override_global("SWITCH_REPORT_MAX", v, true);
        }
        let mut bpf = match loader.load(OBJECT) {
            Ok(b) => b,
            Err(e) => {
                let reason = format!("loading the eBPF object failed: {}", brief(e));
                return Self::unavailable(Health::failed(reason));
            }
        };
        let log = log::KernelLog::take(&mut bpf)
            .map_err(|e| tracing::warn!("kernel diagnostics unavailable: {e}"))
            .ok();
        let mut maps = match TargetMaps::take(&mut bpf) {
            Ok(m) => m,
            Err(e) => return Self::unavailable(Health::failed(e.to_string())),
        };
        let (stats_fd, stats_note) = stats(options);
        // Fill the target maps before anything attaches, so the first events are right.
        let health = match maps.register(targets) {
            Ok(()) => Health::active(),
            Err(e) => Health::failed(e.to_string()),
        };
        Kernel {
            loaded: Some(Loaded {
                bpf,
                maps,
                _stats_fd: stats_fd,
                log,
            }),
            health,
            tracefs,
            programs: Vec::new(),
            stats_note,
            following: false,
        }
    }

    /// Nothing loaded, for `health`'s reason.
    pub fn unavailable(health: Health) -> Kernel {
        Kernel {
            loaded: None,
            health,
            tracefs: Ok(()),
            programs: Vec::new(),
            stats_note: None,
            following: false,
        }
    }

    pub fn is_loaded(&self) -> bool {
        self.loaded.is_some()
    }

    /// Active when the object is loaded and its target maps are filled; else why not.
    pub fn health(&self) -> Health {
        self.health.clone()
    }

    /// Why run-time statistics are absent, if they are.
    pub fn stats_note(&self) -> Option<&str> {
        self.stats_note.as_deref()
    }

    /// Start reading the kernel programs' diagnostics into the log (needs the async
    /// runtime).
    pub fn spawn_log_reader(&mut self) {
        if let Some(log) = self.loaded.as_mut().and_then(|l| l.log.take()) {
            tokio::spawn(log.run());
        }
    }

    /// Take a map out of the object for a collector to own.
    pub fn take_map<T>(
        &mut self,
        name: &'static str,
        convert: impl FnOnce(aya::maps::Map) -> Result<T, aya::maps::MapError>,
    ) -> Result<T, EbpfError> {
        let bpf = &mut self.loaded.as_mut().ok_or(EbpfError::NotLoaded)?.bpf;
        take(bpf, name, convert)
    }

    /// The object, for collectors that attach in their own way (uprobes per library).
    pub fn object_mut(&mut self) -> Option<&mut Ebpf> {
        self.loaded.as_mut().map(|l| &mut l.bpf)
    }

    /// Attach each of `specs` on its own, recording its status (a program attached
    /// already stays as it is). The collector's health: active when every essential
    /// program attached, else why not.
    pub fn attach(&mut self, specs: &[ProgramSpec]) -> Health {
        let new: Vec<&ProgramSpec> = specs
            .iter()
            .filter(|s| !self.programs.iter().any(|(p, _)| p.name == s.name))
            .collect();
        let Some(loaded) = self.loaded.as_mut() else {
            for spec in new {
                self.programs.push((*spec, self.health.clone()));
            }
            return self.health.clone();
        };
        for spec in new {
            let health = match (spec.hook, &self.tracefs) {
                (Hook::Tracepoint(..), Err(e)) => Health::failed(e.clone()),
                _ => match attach(&mut loaded.bpf, spec) {
                    Ok(()) => Health::active(),
                    Err(e) => Health::failed(e),
                },
            };
            self.programs.push((*spec, health));
        }
        if !self.health.is_active() {
            return self.health.clone();
        }
        self.essential_health(specs)
    }

    /// List a program its collector attached itself (uprobes, per process), so that its
    /// status and run time are exported with the others.
    pub fn track(&mut self, spec: ProgramSpec) {
        if !self.programs.iter().any(|(p, _)| p.name == spec.name) {
            self.programs.push((spec, Health::active()));
        }
    }

    /// Attach process following (once; later calls do nothing).
    pub fn follow_processes(&mut self) {
        if !self.following {
            self.following = true;
            self.attach(FOLLOW_PROGRAMS);
        }
    }

    /// Unload `specs` (which detaches them); their status says so.
    pub fn detach(&mut self, specs: &[ProgramSpec]) {
        let Some(loaded) = self.loaded.as_mut() else {
            return;
        };
        for spec in specs {
            if let Some(p) = loaded.bpf.program_mut(spec.name) {
                let unloaded = match p {
                    Program::RawTracePoint(p) => p.unload(),
                    Program::TracePoint(p) => p.unload(),
                    _ => Ok(()),
                };
                if let Err(e) = unloaded {
                    tracing::debug!("{}: unload: {e}", spec.name);
                }
            }
            for (s, h) in &mut self.programs {
                if s.name == spec.name {
                    *h = Health::unsupported("detached");
                }
            }
        }
    }

    /// Whether the essential ones of `specs` are attached, or why not.
    pub fn essential_health(&self, specs: &[ProgramSpec]) -> Health {
        if !self.health.is_active() {
            return self.health.clone();
        }
        for spec in specs.iter().filter(|s| s.essential) {
            if let Some((_, h)) = self.programs.iter().find(|(s, _)| s.name == spec.name) {
                if !h.is_active() {
                    return Health {
                        state: h.state,
                        reason: Some(format!(
                            "program {} not attached: {}",
                            spec.name,
                            h.reason.clone().unwrap_or_default()
                        )),
                    };
                }
            }
        }
        Health::active()
    }

    /// Whether every one of `specs` is attached, or why not.
    pub fn programs_health(&self, specs: &[ProgramSpec]) -> Health {
        if !self.health.is_active() {
            return self.health.clone();
        }
        for spec in specs {
            if let Some((_, h)) = self.programs.iter().find(|(s, _)| s.name == spec.name) {
                if !h.is_active() {
                    return Health {
                        state: h.state,
                        reason: Some(format!(
                            "program {}: {}",
                            spec.name,
                            h.reason.clone().unwrap_or_default()
                        )),
                    };
                }
            }
        }
        Health::active()
    }

    /// Every program asked for so far, in the order asked, with its run-time statistics.
    pub fn program_statuses(&self) -> Vec<ProgramStatus> {
        self.programs
            .iter()
            .map(|(spec, health)| {
                let info = self
                    .loaded
                    .as_ref()
                    .filter(|_| self.stats_note.is_none() && health.is_active())
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

    /// Set a word of the programs' CONFIG array (`agent_common::CONFIG_*`).
    pub fn set_config(&mut self, index: u32, value: u32) -> Result<(), EbpfError> {
        let loaded = self.loaded.as_mut().ok_or(EbpfError::NotLoaded)?;
        loaded.maps.set_config(index, value)
    }

    fn maps(&mut self) -> Result<&mut TargetMaps, EbpfError> {
        Ok(&mut self.loaded.as_mut().ok_or(EbpfError::NotLoaded)?.maps)
    }

    /// Apply what `Targets::refresh` found: a process target's new PID, a cgroup's new id.
    pub fn apply(&mut self, changes: &[Change]) -> Result<(), EbpfError> {
        self.maps()?.apply(changes)
    }

    /// Start tracing a target added at run time; `all` is the list with it.
    pub fn add_target(&mut self, t: &Target, all: &Targets) -> Result<(), EbpfError> {
        let maps = self.maps()?;
        maps.add_target(t)?;
        maps.set_mode(all)
    }

    /// Stop tracing a removed target; `rest` is the list without it.
    pub fn remove_target(&mut self, t: &Target, rest: &Targets) -> Result<(), EbpfError> {
        let maps = self.maps()?;
        maps.set_mode(rest)?;
        maps.remove_target(t)
    }

    /// Start tracing a process found at run time (a GPU process) as target `index`.
    pub fn add_process(&mut self, pid: u32, index: u32) -> Result<(), EbpfError> {
        self.maps()?.add_tree(pid, index)
    }
}

/// Whether run-time statistics are on (and the fd that keeps them on), or why not.
fn stats(options: Options) -> (Option<OwnedFd>, Option<String>) {
    if !options.bpf_stats {
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
    }
}

fn take<T>(
    bpf: &mut Ebpf,
    name: &'static str,
    convert: impl FnOnce(aya::maps::Map) -> Result<T, aya::maps::MapError>,
) -> Result<T, EbpfError> {
    let map = bpf.take_map(name).ok_or(EbpfError::MissingMap(name))?;
    convert(map).map_err(|source| EbpfError::Map { name, source })
}

/// One per-CPU array slot per target, folded over CPUs with `add`.
pub fn sum_per_target<T: aya::Pod + Copy>(
    map: &PerCpuArray<MapData, T>,
    name: &'static str,
    targets: impl Iterator<Item = u32>,
    zero: T,
    add: impl Fn(&mut T, &T),
) -> Result<Vec<(u32, T)>, EbpfError> {
    let mut out = Vec::new();
    for t in targets {
        let per_cpu = map
            .get(&(t & HTTP_TARGET_MASK), 0)
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
pub fn brief(e: impl std::fmt::Display) -> String {
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
        Hook::Uprobe(lib) => {
            return Err(format!("uprobes on {lib} are attached by their collector"));
        }
    }
    Ok(())
}
