//! CUDA driver calls of the targets: finds the libcuda.so each target process maps (servers
//! load it lazily, so processes are looked at again until it appears), has the uprobes
//! attached to it once per library file, and turns the kernel counts into series.
use std::{
    collections::{HashMap, HashSet},
    os::unix::fs::MetadataExt,
    path::PathBuf,
    time::{Duration, Instant},
};

mod metrics;
mod probes;

use agent_common::{CudaStats, CUDA_MEMCPY_NAMES, HIST_BUCKETS};
use serde::Serialize;

pub use probes::{attach_floor, Probes};

use super::{Collected, Collector, Tick};
use crate::{
    base::{histogram::serialize_log2, Health},
    config::Config,
    ebpf::Kernel,
    targets::Targets,
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
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct CudaPart {
    pub cuda: Vec<CudaSeries>,
}

pub struct Cuda {
    probes: Result<Probes, Health>,
    /// Library files attached to, by (device, inode).
    attached: HashSet<(u64, u64)>,
    /// When each process was last looked at.
    scanned: HashMap<u32, Instant>,
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
            health,
        }
    }

    fn collect(&mut self, tick: &mut Tick<'_>) -> Collected<CudaPart> {
        self.scan(tick);
        let cuda = self.series(tick.targets);
        Collected::new(CudaPart { cuda }, self.health.clone())
    }

    fn families(part: &CudaPart, out: &mut Vec<prometheus::proto::MetricFamily>) {
        metrics::families(part, out);
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
        read.into_iter()
            .filter_map(|(index, s)| Some(series(targets.name_of(index)?, &s)))
            .collect()
    }
}

fn series(target: &str, s: &CudaStats) -> CudaSeries {
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
    }
}
