//! CUDA driver calls of the targets: finds the libcuda.so each target process maps (servers
//! load it lazily, so processes are looked at again until it appears), has the uprobes
//! attached to it once per library file, and turns the kernel counts into series.
use std::{
    collections::{HashMap, HashSet},
    os::unix::fs::MetadataExt,
    path::PathBuf,
    time::{Duration, Instant},
};

use agent_common::{CudaStats, CUDA_MEMCPY_NAMES, HIST_BUCKETS};
use serde::Serialize;

use super::process::ProcessSample;
use crate::{ebpf::Probes, snapshot::Health, targets::Targets};

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
    #[serde(serialize_with = "crate::snapshot::serialize_buckets")]
    pub sync_buckets: [u64; HIST_BUCKETS],
}

pub struct CudaCollector {
    /// Library files attached to, by (device, inode).
    attached: HashSet<(u64, u64)>,
    /// When each process was last looked at.
    scanned: HashMap<u32, Instant>,
    health: Health,
}

impl Default for CudaCollector {
    fn default() -> Self {
        CudaCollector {
            attached: HashSet::new(),
            scanned: HashMap::new(),
            health: Health::unsupported("no target process has libcuda.so mapped yet"),
        }
    }
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

impl CudaCollector {
    /// Look at the target processes (and `extra` processes, such as GPU processes in
    /// host mode) that are due, and attach to each new library found.
    pub fn scan(&mut self, probes: &mut Probes, procs: &[ProcessSample], extra: &[u32]) {
        if !probes.is_loaded() {
            self.health = probes.collector_health();
            return;
        }
        let now = Instant::now();
        let pids: HashSet<u32> = procs
            .iter()
            .flat_map(|p| p.pids.iter().copied())
            .chain(extra.iter().copied())
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
                match probes.attach_cuda(&lib) {
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

    pub fn health(&self) -> Health {
        self.health.clone()
    }

    /// Every target's counts, once a library is attached.
    pub fn series(&self, probes: &Probes, targets: &Targets) -> Vec<CudaSeries> {
        if self.health.state != crate::snapshot::State::Active {
            return Vec::new();
        }
        let read = match probes.read_cuda(targets.iter().map(|t| t.index)) {
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
