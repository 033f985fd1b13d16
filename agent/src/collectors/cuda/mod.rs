//! CUDA driver calls of the targets: finds the libcuda.so each target process maps (servers
//! load it lazily, and workers come and go, so processes are looked at again every 2 s),
//! has the uprobes attached in each such process alone (other processes on the host that
//! use the driver take no trap), detaches them when the process exits or its target is
//! removed, and turns the kernel counts into series: calls, bytes, synchronize waits, the
//! allocation calls' error returns by CUresult name, and when each target last launched
//! work. In host mode every process is a target: the probes go on the library file.
use std::{
    collections::{HashMap, HashSet},
    num::NonZeroU32,
    os::unix::fs::MetadataExt,
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

mod errors;
mod metrics;
mod probes;

use agent_common::{CudaStats, CUDA_MEMCPY_NAMES, HIST_BUCKETS};
use serde::Serialize;

use aya::programs::uprobe::UProbeLink;
pub use probes::{attach_floor, entry_points, EntryPoint, ErrorCount, ProbeError, Probes};

use super::{Collected, Collector, Tick};
use crate::{
    base::{
        histogram::serialize_log2,
        monotonic_ns, now_seconds,
        signal::{Instance, SignalDoc, SignalSet},
        Health,
    },
    config::Config,
    ebpf::{detach::Detacher, Hook, Kernel, ProgramSpec},
    targets::{start_time, Target, Targets},
};

/// How often a target process is looked at again for the libcuda.so files it maps.
const RESCAN: Duration = Duration::from_secs(2);

/// Most probe links at once. Each is a perf event and an open file of the agent: with the
/// real driver's 39 probed entry points, about 100 processes. Lowered to half the agent's
/// open-file limit when that is lower.
const MAX_LINKS: usize = 4096;

/// Until a process is probed.
const NOT_YET: &str = "no target process has libcuda.so mapped yet";

/// A library file, by (device, inode).
type LibKey = (u64, u64);

/// One process's probes on one library.
struct Probed {
    target: u32,
    /// When the process started: a later process with the same PID is another one.
    started: Option<u64>,
    /// Dropping them detaches them (quietly: a process that exited has left nothing to
    /// remove). Empty when attaching failed (not tried again for this process).
    links: Vec<UProbeLink>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CudaSeries {
    pub target: String,
    pub kernel_launches: u64,
    pub graph_launches: u64,
    pub allocs: u64,
    pub alloc_bytes: u64,
    pub frees: u64,
    /// (kind, calls, bytes) per copy direction.
    pub memcpy: Vec<(&'static str, u64, u64)>,
    pub sync_count: u64,
    pub sync_sum_seconds: f64,
    #[serde(serialize_with = "serialize_log2")]
    pub sync_buckets: [u64; HIST_BUCKETS],
    /// Wall-clock time (Unix seconds) of the last kernel or graph launch; absent before
    /// the first.
    pub last_launch_seconds: Option<f64>,
    /// Seconds since then, at this tick.
    pub launch_idle_seconds: Option<f64>,
}

/// Error returns of one allocation call of one target, with one CUresult.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CudaErrorSeries {
    pub target: String,
    pub call: &'static str,
    /// The CUresult's name (`CUDA_ERROR_OUT_OF_MEMORY`).
    pub error: String,
    pub count: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct CudaPart {
    pub cuda: Vec<CudaSeries>,
    pub cuda_errors: Vec<CudaErrorSeries>,
}

pub struct Cuda {
    probes: Result<Probes, Health>,
    /// Each library file's entry points, resolved once (or why they could not be).
    libraries: HashMap<LibKey, Result<Arc<[EntryPoint]>, String>>,
    /// The probes of each target process, by (PID, library).
    probed: HashMap<(u32, LibKey), Probed>,
    /// Host mode: the probes on each library file (every process's calls).
    files: HashMap<LibKey, Vec<UProbeLink>>,
    /// When each process was last looked at.
    scanned: HashMap<u32, Instant>,
    /// Processes left unprobed because the link limit was reached.
    left_out: HashSet<u32>,
    link_limit: usize,
    /// Whether anything was ever probed: from then on every target's series is published.
    ever: bool,
    /// The last attach failure, for the health entry.
    last_error: Option<String>,
    /// Whether the programs' statuses are recorded with the kernel's.
    statuses: bool,
    detacher: Detacher,
    health: Health,
}

/// The libcuda.so files a process maps, as paths that reach into its mount namespace.
fn libcuda_of(pid: u32) -> Vec<PathBuf> {
    let Ok(maps) = std::fs::read_to_string(format!("/proc/{pid}/maps")) else {
        return Vec::new();
    };
    let mut out: Vec<PathBuf> = Vec::new();
    for line in maps.lines() {
        // address perms offset dev inode path
        let Some(path) = line.split_whitespace().nth(5) else {
            continue;
        };
        let is_cuda = path
            .rsplit('/')
            .next()
            .is_some_and(|b| b.starts_with("libcuda.so"));
        let full = PathBuf::from(format!("/proc/{pid}/root{path}"));
        if is_cuda && !out.contains(&full) {
            out.push(full);
        }
    }
    out
}

impl Collector for Cuda {
    const NAME: &'static str = "cuda";
    const SIGNALS: &'static [SignalDoc] = &[
        SignalDoc {
            name: "cuda_errors_total",
            labels: "target, call, error",
            meaning: "error returns of the allocation calls since the agent started, by call and CUresult name",
        },
        SignalDoc {
            name: "cuda_launch_idle_seconds",
            labels: "target",
            meaning: "seconds since the target's last kernel or graph launch (absent before the first)",
        },
    ];
    type Part = CudaPart;

    fn start(_: &Config, kernel: &mut Kernel, _: &Targets) -> Cuda {
        let probes = if kernel.is_loaded() {
            Probes::take(kernel).map_err(|e| Health::failed(e.to_string()))
        } else {
            Err(kernel.health())
        };
        let health = match &probes {
            Ok(_) => Health::unsupported(NOT_YET),
            Err(h) => h.clone(),
        };
        Cuda {
            probes,
            libraries: HashMap::new(),
            probed: HashMap::new(),
            files: HashMap::new(),
            scanned: HashMap::new(),
            left_out: HashSet::new(),
            link_limit: link_limit(),
            ever: false,
            last_error: None,
            statuses: false,
            detacher: Detacher::new("CUDA"),
            health,
        }
    }

    fn collect(&mut self, tick: &mut Tick<'_>) -> Collected<CudaPart> {
        self.scan(tick);
        self.record_statuses(tick.kernel);
        if self.probes.is_ok() {
            self.health = self.health(tick.targets);
        }
        let cuda = self.series(tick.targets);
        let cuda_errors = self.errors(tick.targets);
        Collected::new(CudaPart { cuda, cuda_errors }, self.health.clone())
    }

    fn families(part: &CudaPart, out: &mut Vec<prometheus::proto::MetricFamily>) {
        metrics::families(part, out);
    }

    fn signals(part: &CudaPart, out: &mut SignalSet) {
        out.put(
            "cuda_errors_total",
            part.cuda_errors
                .iter()
                .map(|e| {
                    Instance::labelled(
                        &[("target", &e.target), ("call", e.call), ("error", &e.error)],
                        e.count as f64,
                    )
                })
                .collect(),
        );
        out.put(
            "cuda_launch_idle_seconds",
            part.cuda
                .iter()
                .filter_map(|c| {
                    Some(Instance::labelled(
                        &[("target", &c.target)],
                        c.launch_idle_seconds?,
                    ))
                })
                .collect(),
        );
    }

    fn target_removed(&mut self, target: &Target) {
        // Its processes' probes go now (a process also in another target is probed again
        // for that one at the next look).
        for ((pid, _), p) in self.probed.extract_if(|_, p| p.target == target.index) {
            self.detacher.detach(pid, p.links);
        }
        if let Ok(p) = self.probes.as_mut() {
            p.forget(target.index);
        }
    }

    fn stop(&mut self, _kernel: &mut Kernel) {
        // Here and now: detached one by one (the kernel would do the same at exit).
        self.probed.clear();
        self.files.clear();
    }
}

/// At most `MAX_LINKS`, and half the agent's open-file limit (each link is an open file).
fn link_limit() -> usize {
    link_limit_of(&std::fs::read_to_string("/proc/self/limits").unwrap_or_default())
}

/// The link limit from the text of /proc/self/limits (its soft open-file limit).
fn link_limit_of(limits: &str) -> usize {
    limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|v| v.parse::<usize>().ok())
        .map_or(MAX_LINKS, |n| MAX_LINKS.min(n / 2))
}

impl Cuda {
    /// Drop the probes of processes that left the targets (exited, left their cgroup, or
    /// their target was removed), then look at the target processes that are due (in host
    /// mode the GPU processes) and probe each libcuda.so found in each.
    fn scan(&mut self, tick: &mut Tick<'_>) {
        let Cuda {
            probes,
            libraries,
            probed,
            files,
            scanned,
            left_out,
            link_limit,
            ever,
            last_error,
            detacher,
            ..
        } = self;
        let Ok(probes) = probes.as_mut() else {
            return;
        };
        let Some(bpf) = tick.kernel.object_mut() else {
            return;
        };
        let host = tick.targets.is_host();
        // Each process and its target (the first that has it).
        let mut members: HashMap<u32, u32> = HashMap::new();
        if host {
            for pid in tick.gpu_pids {
                members.insert(*pid, agent_common::HOST_TARGET);
            }
        } else {
            for t in tick.targets.iter() {
                for pid in tick.members.of(t.index).map_or(&[][..], |m| &m.pids[..]) {
                    members.entry(*pid).or_insert(t.index);
                }
            }
        }
        for ((pid, _), p) in probed.extract_if(|(pid, _), p| members.get(pid) != Some(&p.target)) {
            detacher.detach(pid, p.links);
        }
        scanned.retain(|pid, _| members.contains_key(pid));
        left_out.retain(|pid| members.contains_key(pid));
        let now = Instant::now();
        for (&pid, &target) in &members {
            // Not while its old links are being detached (its calls would run the programs
            // twice), nor before it is due.
            if detacher.is_pending(pid)
                || scanned
                    .get(&pid)
                    .is_some_and(|t| now.duration_since(*t) < RESCAN)
            {
                continue;
            }
            scanned.insert(pid, now);
            let started = start_time(pid);
            // The PID now names another process: the old one's probes go.
            for (_, old) in probed.extract_if(|(p, _), x| *p == pid && x.started != started) {
                detacher.detach(pid, old.links);
            }
            for lib in libcuda_of(pid) {
                let Ok(meta) = std::fs::metadata(&lib) else {
                    continue;
                };
                let key = (meta.dev(), meta.ino());
                if probed.contains_key(&(pid, key)) || (host && files.contains_key(&key)) {
                    continue;
                }
                let points = match libraries
                    .entry(key)
                    .or_insert_with(|| entry_points(&lib).map(Arc::from).map_err(|e| e.to_string()))
                {
                    Ok(p) => p.clone(),
                    Err(e) => {
                        *last_error = Some(e.clone());
                        continue;
                    }
                };
                if host {
                    match probes.attach(bpf, &lib, &points, None) {
                        Ok(links) => {
                            tracing::info!(
                                "CUDA: {} entry points attached in {} (every process)",
                                links.len(),
                                lib.display()
                            );
                            files.insert(key, links);
                            *ever = true;
                        }
                        Err(e) => {
                            tracing::warn!("CUDA: {}: {e}", lib.display());
                            *last_error = Some(format!("{}: {e}", lib.display()));
                            files.insert(key, Vec::new());
                        }
                    }
                    continue;
                }
                // Links being detached still hold their files.
                let in_use: usize =
                    probed.values().map(|p| p.links.len()).sum::<usize>() + detacher.pending();
                if in_use + points.len() > *link_limit {
                    if left_out.insert(pid) {
                        tracing::warn!(
                            "CUDA: process {pid} not probed: {in_use} of at most {link_limit} probe links in use"
                        );
                    }
                    continue;
                }
                left_out.remove(&pid);
                let Some(one) = NonZeroU32::new(pid) else {
                    continue;
                };
                let start = Instant::now();
                let links = match probes.attach(bpf, &lib, &points, Some(one)) {
                    Ok(links) => {
                        tracing::info!(
                            "CUDA: {} entry points attached in process {pid} in {} ms, {}",
                            links.len(),
                            start.elapsed().as_millis(),
                            lib.display()
                        );
                        *ever = true;
                        links
                    }
                    Err(e) => {
                        tracing::warn!("CUDA: process {pid}, {}: {e}", lib.display());
                        *last_error = Some(format!("process {pid}, {}: {e}", lib.display()));
                        Vec::new()
                    }
                };
                probed.insert(
                    (pid, key),
                    Probed {
                        target,
                        started,
                        links,
                    },
                );
            }
        }
    }

    /// Once the programs are loaded, they are listed with the kernel's programs (with
    /// their run counts and times).
    fn record_statuses(&mut self, kernel: &mut Kernel) {
        if self.statuses || !self.probes.as_ref().is_ok_and(Probes::is_loaded) {
            return;
        }
        self.statuses = true;
        for name in probes::programs() {
            kernel.track(ProgramSpec {
                name,
                hook: Hook::Uprobe("libcuda.so"),
                essential: false,
            });
        }
    }

    /// Active once anything was probed, saying how many processes of each target are
    /// probed now; before, why not.
    fn health(&self, targets: &Targets) -> Health {
        if targets.is_host() {
            return match (self.files.values().any(|l| !l.is_empty()), &self.last_error) {
                (true, _) => Health {
                    reason: Some(
                        "host mode: probes on the library file (every process that maps it)"
                            .to_string(),
                    ),
                    ..Health::active()
                },
                (false, Some(e)) => Health::failed(e.clone()),
                (false, None) => Health::unsupported(NOT_YET),
            };
        }
        if !self.ever {
            return match &self.last_error {
                Some(e) => Health::failed(e.clone()),
                None => Health::unsupported(NOT_YET),
            };
        }
        let mut reason = format!(
            "processes probed: {}",
            targets
                .iter()
                .map(|t| format!("{} {}", t.name, self.probed_in(t.index)))
                .collect::<Vec<_>>()
                .join(", ")
        );
        if !self.left_out.is_empty() {
            reason += &format!(
                "; {} not probed (at most {} probe links)",
                self.left_out.len(),
                self.link_limit
            );
        }
        let pending = self.detacher.pending();
        if pending > 0 {
            reason += &format!("; {pending} probe links being detached");
        }
        Health {
            reason: Some(reason),
            ..Health::active()
        }
    }

    /// How many processes of target `index` are probed now.
    fn probed_in(&self, index: u32) -> usize {
        self.probed
            .iter()
            .filter(|(_, p)| p.target == index && !p.links.is_empty())
            .map(|((pid, _), _)| *pid)
            .collect::<HashSet<u32>>()
            .len()
    }

    /// Every target's counts, once a library is attached.
    fn series(&self, targets: &Targets) -> Vec<CudaSeries> {
        let (Ok(probes), true) = (&self.probes, self.health.is_active()) else {
            return Vec::new();
        };
        let read = match probes.read(targets.iter().map(|t| t.index)) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!("reading CUDA counts: {e}");
                return Vec::new();
            }
        };
        let clock = Clock::now();
        read.into_iter()
            .filter_map(|(index, s)| Some(series(targets.name_of(index)?, &s, clock)))
            .collect()
    }

    /// Every target's error counts, once a library is attached.
    fn errors(&self, targets: &Targets) -> Vec<CudaErrorSeries> {
        let (Ok(probes), true) = (&self.probes, self.health.is_active()) else {
            return Vec::new();
        };
        let counts = match probes.errors() {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!("reading CUDA errors: {e}");
                return Vec::new();
            }
        };
        counts
            .into_iter()
            .filter_map(|e| {
                Some(CudaErrorSeries {
                    target: targets.name_of(e.target)?.to_string(),
                    call: e.call,
                    error: errors::name(e.code),
                    count: e.count,
                })
            })
            .collect()
    }
}

/// The monotonic clock the kernel stamps launches with (`bpf_ktime_get_ns` is
/// CLOCK_MONOTONIC) and the wall clock, read together, to turn one into the other.
#[derive(Debug, Clone, Copy)]
struct Clock {
    monotonic_ns: u64,
    wall_seconds: f64,
}

impl Clock {
    fn now() -> Clock {
        Clock {
            monotonic_ns: monotonic_ns(),
            wall_seconds: now_seconds(),
        }
    }

    /// Seconds from monotonic time `ns` to now (0 for a stamp taken after this clock was
    /// read).
    fn since(&self, ns: u64) -> f64 {
        self.monotonic_ns.saturating_sub(ns) as f64 / 1e9
    }
}

fn series(target: &str, s: &CudaStats, clock: Clock) -> CudaSeries {
    // 0: no launch yet.
    let launched = (s.last_launch_ns != 0).then_some(clock);
    CudaSeries {
        target: target.to_string(),
        kernel_launches: s.kernel_launches,
        graph_launches: s.graph_launches,
        allocs: s.allocs,
        alloc_bytes: s.alloc_bytes,
        frees: s.frees,
        memcpy: CUDA_MEMCPY_NAMES
            .iter()
            .enumerate()
            .map(|(i, k)| (*k, s.memcpy_calls[i], s.memcpy_bytes[i]))
            .collect(),
        sync_count: s.sync_count,
        sync_sum_seconds: s.sync_sum_ns as f64 / 1e9,
        sync_buckets: s.sync_buckets,
        last_launch_seconds: launched.map(|c| c.wall_seconds - c.since(s.last_launch_ns)),
        launch_idle_seconds: launched.map(|c| c.since(s.last_launch_ns)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_link_limit_is_half_the_open_file_limit_at_most() {
        let limits = |soft: &str| {
            format!(
                "Limit                     Soft Limit           Hard Limit           Units\n\
                 Max processes             63704                63704                processes\n\
                 Max open files            {soft:<20} 524288               files\n"
            )
        };
        assert_eq!(link_limit_of(&limits("1024")), 512);
        assert_eq!(link_limit_of(&limits("65536")), MAX_LINKS);
        assert_eq!(link_limit_of(&limits("unlimited")), MAX_LINKS);
        assert_eq!(link_limit_of(""), MAX_LINKS);
    }

    #[test]
    fn launch_times_are_wall_clock_and_absent_before_the_first() {
        let clock = Clock {
            monotonic_ns: 50_000_000_000,
            wall_seconds: 1_700_000_000.0,
        };
        let mut s = CudaStats::ZERO;
        let c = series("app", &s, clock);
        assert_eq!((c.last_launch_seconds, c.launch_idle_seconds), (None, None));
        s.last_launch_ns = 47_500_000_000;
        let c = series("app", &s, clock);
        assert_eq!(c.launch_idle_seconds, Some(2.5));
        assert_eq!(c.last_launch_seconds, Some(1_699_999_997.5));
        // A stamp just after the clock was read is "now", not negative.
        s.last_launch_ns = 50_000_000_100;
        assert_eq!(series("app", &s, clock).launch_idle_seconds, Some(0.0));
    }
}
