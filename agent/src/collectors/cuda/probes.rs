//! Attaching the CUDA driver uprobes to a libcuda.so and reading their per-target counts.
use std::path::Path;

use agent_common::{cuda_error_key_parts, CudaStats, CUDA_ERROR_CALLS};
use aya::{
    maps::{MapData, PerCpuArray, PerCpuHashMap},
    programs::{uprobe::UProbeScope, UProbe},
    Ebpf,
};

use crate::ebpf::{brief, sum_per_target, EbpfError, Kernel};

/// Each program and the driver entry points it is attached to. The `_ptsz`/`_ptds`
/// variants are the per-thread-default-stream entry points (`--default-stream
/// per-thread`); a library without some symbol is attached where it has them.
const HOOKS: &[(&str, &[&str])] = &[
    (
        "cuda_launch",
        &[
            "cuLaunchKernel",
            "cuLaunchKernel_ptsz",
            "cuLaunchKernelEx",
            "cuLaunchKernelEx_ptsz",
        ],
    ),
    (
        "cuda_graph_launch",
        &["cuGraphLaunch", "cuGraphLaunch_ptsz"],
    ),
    (
        "cuda_alloc",
        &["cuMemAlloc_v2", "cuMemAllocAsync", "cuMemAllocAsync_ptsz"],
    ),
    (
        "cuda_free",
        &["cuMemFree_v2", "cuMemFreeAsync", "cuMemFreeAsync_ptsz"],
    ),
    (
        "cuda_memcpy_htod",
        &[
            "cuMemcpyHtoD_v2",
            "cuMemcpyHtoD_v2_ptds",
            "cuMemcpyHtoDAsync_v2",
            "cuMemcpyHtoDAsync_v2_ptsz",
        ],
    ),
    (
        "cuda_memcpy_dtoh",
        &[
            "cuMemcpyDtoH_v2",
            "cuMemcpyDtoH_v2_ptds",
            "cuMemcpyDtoHAsync_v2",
            "cuMemcpyDtoHAsync_v2_ptsz",
        ],
    ),
    (
        "cuda_memcpy_dtod",
        &[
            "cuMemcpyDtoD_v2",
            "cuMemcpyDtoD_v2_ptds",
            "cuMemcpyDtoDAsync_v2",
            "cuMemcpyDtoDAsync_v2_ptsz",
        ],
    ),
    (
        "cuda_memcpy_any",
        &[
            "cuMemcpy",
            "cuMemcpy_ptds",
            "cuMemcpyAsync",
            "cuMemcpyAsync_ptsz",
        ],
    ),
    (
        "cuda_sync_enter",
        &[
            "cuCtxSynchronize",
            "cuStreamSynchronize",
            "cuStreamSynchronize_ptsz",
        ],
    ),
    (
        "cuda_sync_exit",
        &[
            "cuCtxSynchronize",
            "cuStreamSynchronize",
            "cuStreamSynchronize_ptsz",
        ],
    ),
    // Return probes of the allocation calls (error returns by CUresult), one program per
    // entry of CUDA_ERROR_CALLS. Not on launches: a second trap per launch would double
    // the cost of the hottest path.
    ("cuda_alloc_ret", &["cuMemAlloc_v2"]),
    ("cuda_alloc_managed_ret", &["cuMemAllocManaged"]),
    ("cuda_mem_create_ret", &["cuMemCreate"]),
    (
        "cuda_alloc_async_ret",
        &["cuMemAllocAsync", "cuMemAllocAsync_ptsz"],
    ),
];

/// The return probes among `HOOKS`, and the entry points they watch.
const RETURN_HOOKS: [&str; 4] = [
    "cuda_alloc_ret",
    "cuda_alloc_managed_ret",
    "cuda_mem_create_ret",
    "cuda_alloc_async_ret",
];

/// Error returns of one (target, call, CUresult), summed over CPUs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ErrorCount {
    pub target: u32,
    /// An entry of `CUDA_ERROR_CALLS`.
    pub call: &'static str,
    pub code: u32,
    pub count: u64,
}

/// The uprobe programs (loaded on first use, attached per library) and their counts.
pub struct Probes {
    stats: PerCpuArray<MapData, CudaStats>,
    errors: PerCpuHashMap<MapData, u64, u64>,
    loaded: bool,
}

/// The names of the CUDA programs (for their status and statistics).
pub fn programs() -> impl Iterator<Item = &'static str> {
    HOOKS.iter().map(|(name, _)| *name)
}

impl Probes {
    pub fn take(kernel: &mut Kernel) -> Result<Probes, EbpfError> {
        Ok(Probes {
            stats: kernel.take_map("CUDA_STATS", PerCpuArray::try_from)?,
            errors: kernel.take_map("CUDA_ERRORS", PerCpuHashMap::try_from)?,
            loaded: false,
        })
    }

    /// Whether the programs are loaded (they are on the first attach).
    pub fn is_loaded(&self) -> bool {
        self.loaded
    }

    /// Attach every CUDA hook to the library at `path` (reached through
    /// /proc/PID/root, so it works across mount namespaces). Returns how many entry points
    /// were attached; an error when none could be.
    pub fn attach(&mut self, bpf: &mut Ebpf, path: &Path) -> Result<usize, String> {
        if !self.loaded {
            for (name, _) in HOOKS {
                let p: &mut UProbe = bpf
                    .program_mut(name)
                    .ok_or_else(|| format!("program {name} is missing"))?
                    .try_into()
                    .map_err(|e| format!("{name}: {e}"))?;
                p.load()
                    .map_err(|e| format!("{name}: load: {}", brief(e)))?;
            }
            self.loaded = true;
        }
        let mut attached = 0;
        let mut last_err = None;
        for (name, symbols) in HOOKS {
            let Some(p) = bpf.program_mut(name) else {
                continue;
            };
            let p: &mut UProbe = p.try_into().map_err(|e| format!("{name}: {e}"))?;
            for sym in *symbols {
                // Every process mapping the library fires the probe; the kernel side counts
                // only the targets' calls.
                match p.attach(*sym, path, UProbeScope::AllProcesses) {
                    Ok(_) => attached += 1,
                    Err(e) => last_err = Some(format!("{sym}: {e}")),
                }
            }
        }
        if attached == 0 {
            return Err(last_err.unwrap_or_else(|| "no CUDA entry point found".into()));
        }
        Ok(attached)
    }

    /// Per-target CUDA counts summed over CPUs.
    pub fn read(
        &self,
        targets: impl Iterator<Item = u32>,
    ) -> Result<Vec<(u32, CudaStats)>, EbpfError> {
        sum_per_target(
            &self.stats,
            "CUDA_STATS",
            targets,
            CudaStats::ZERO,
            |sum, c| {
                sum.kernel_launches += c.kernel_launches;
                sum.graph_launches += c.graph_launches;
                sum.allocs += c.allocs;
                sum.alloc_bytes += c.alloc_bytes;
                sum.frees += c.frees;
                for i in 0..sum.memcpy_calls.len() {
                    sum.memcpy_calls[i] += c.memcpy_calls[i];
                    sum.memcpy_bytes[i] += c.memcpy_bytes[i];
                }
                sum.sync_count += c.sync_count;
                sum.sync_sum_ns += c.sync_sum_ns;
                for (s, b) in sum.sync_buckets.iter_mut().zip(c.sync_buckets.iter()) {
                    *s += b;
                }
                // Each CPU keeps the time of its own last launch.
                sum.last_launch_ns = sum.last_launch_ns.max(c.last_launch_ns);
            },
        )
    }

    /// Every (target, call, CUresult) error count, summed over CPUs.
    pub fn errors(&self) -> Result<Vec<ErrorCount>, EbpfError> {
        let mut out = Vec::new();
        for item in self.errors.iter() {
            let (key, per_cpu) = item.map_err(|source| EbpfError::Map {
                name: "CUDA_ERRORS",
                source,
            })?;
            let (target, call, code) = cuda_error_key_parts(key);
            let Some(call) = CUDA_ERROR_CALLS.get(call as usize) else {
                continue;
            };
            out.push(ErrorCount {
                target,
                call,
                code,
                count: per_cpu.iter().sum(),
            });
        }
        out.sort_by_key(|e| (e.target, e.call, e.code));
        Ok(out)
    }

    /// Forget the error counts of a removed target (its index is never used again).
    pub fn forget(&mut self, target: u32) {
        let keys: Vec<u64> = self
            .errors
            .keys()
            .flatten()
            .filter(|k| cuda_error_key_parts(*k).0 == target & agent_common::HTTP_TARGET_MASK)
            .collect();
        for k in keys {
            let _ = self.errors.remove(&k);
        }
    }
}

/// The benchmark's floor: the empty `noop_uprobe` on every entry point `Probes::attach`
/// would probe, and with `returns` the empty `noop_uretprobe` where it puts return
/// probes. Returns how many were attached.
pub fn attach_floor(kernel: &mut Kernel, path: &Path, returns: bool) -> Result<usize, String> {
    let bpf = kernel.object_mut().ok_or("eBPF is not loaded")?;
    let mut attached = 0;
    for (program, on_return) in [("noop_uprobe", false), ("noop_uretprobe", true)] {
        if on_return && !returns {
            continue;
        }
        let p: &mut UProbe = bpf
            .program_mut(program)
            .ok_or_else(|| format!("program {program} is missing"))?
            .try_into()
            .map_err(|e| format!("{program}: {e}"))?;
        p.load()
            .map_err(|e| format!("{program}: load: {}", brief(e)))?;
        let mut symbols: Vec<&str> = HOOKS
            .iter()
            .filter(|(name, _)| RETURN_HOOKS.contains(name) == on_return)
            .flat_map(|(_, s)| s.iter().copied())
            .collect();
        symbols.sort_unstable();
        symbols.dedup();
        attached += symbols
            .into_iter()
            .filter(|sym| p.attach(*sym, path, UProbeScope::AllProcesses).is_ok())
            .count();
    }
    Ok(attached)
}
