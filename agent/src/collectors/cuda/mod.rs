//! CUDA driver calls of the targets: finds the libcuda.so each target process maps (servers
//! load it lazily, so processes are looked at again until it appears), has the uprobes
//! attached to it once per library file, and turns the kernel counts into series: calls,
//! bytes, synchronize waits, the allocation calls' error returns by CUresult name, and when
//! each target last launched work.
use std::{
    collections::{HashMap, HashSet},
    os::unix::fs::MetadataExt,
    path::PathBuf,
    time::{Duration, Instant},
};

mod errors;
mod metrics;
mod probes;

use agent_common::{CudaStats, CUDA_MEMCPY_NAMES, HIST_BUCKETS};
use serde::Serialize;

pub use probes::{attach_floor, ErrorCount, Probes};

use super::{Collected, Collector, Tick};
use crate::{
    base::{
        histogram::serialize_log2,
        monotonic_ns, now_seconds,
        signal::{Instance, SignalDoc, SignalSet},
        Health,
    },
    config::Config,
    ebpf::{Hook, Kernel, ProgramSpec},
    targets::{Target, Targets},
};

/// How often a process without libcuda.so is looked at again.
const RESCAN: Duration = Duration::from_secs(2);

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
    /// Library files attached to, by (device, inode).
    attached: HashSet<(u64, u64)>,
    /// When each process was last looked at.
    scanned: HashMap<u32, Instant>,
    /// Whether the programs' statuses are recorded with the kernel's.
    statuses: bool,
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
            Ok(_) => Health::unsupported("no target process has libcuda.so mapped yet"),
            Err(h) => h.clone(),
        };
        Cuda {
            probes,
            attached: HashSet::new(),
            scanned: HashMap::new(),
            statuses: false,
            health,
        }
    }

    fn collect(&mut self, tick: &mut Tick<'_>) -> Collected<CudaPart> {
        self.scan(tick);
        self.record_statuses(tick.kernel);
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
        if let Ok(p) = self.probes.as_mut() {
            p.forget(target.index);
        }
    }
}

impl Cuda {
    /// Look at the target processes (and in host mode the GPU processes) that are due,
    /// and attach to each new library found.
    fn scan(&mut self, tick: &mut Tick<'_>) {
        let Ok(probes) = self.probes.as_mut() else {
            return;
        };
        let Some(bpf) = tick.kernel.object_mut() else {
            return;
        };
        let now = Instant::now();
        let pids: HashSet<u32> = tick
            .members
            .pids()
            .chain(tick.gpu_pids.iter().copied())
            .collect();
        self.scanned.retain(|pid, _| pids.contains(pid));
        for pid in pids {
            if self
                .scanned
                .get(&pid)
                .is_some_and(|t| now.duration_since(*t) < RESCAN)
            {
                continue;
            }
            self.scanned.insert(pid, now);
            for lib in libcuda_of(pid) {
                let Ok(meta) = std::fs::metadata(&lib) else {
                    continue;
                };
                if !self.attached.insert((meta.dev(), meta.ino())) {
                    continue;
                }
                match probes.attach(bpf, &lib) {
                    Ok(n) => {
                        tracing::info!("CUDA: {n} entry points attached in {}", lib.display());
                        self.health = Health::active();
                    }
                    Err(e) => {
                        tracing::warn!("CUDA: {}: {e}", lib.display());
                        if self.attached.len() == 1 {
                            self.health = Health::failed(format!("{}: {e}", lib.display()));
                        }
                    }
                }
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
