//! Attaching the CUDA driver uprobes to a libcuda.so and reading their per-target counts.
use std::path::Path;

use agent_common::CudaStats;
use aya::{
    maps::{MapData, PerCpuArray},
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
];

/// The uprobe programs (loaded on first use, attached per library) and their counts.
pub struct Probes {
    stats: PerCpuArray<MapData, CudaStats>,
    loaded: bool,
}

impl Probes {
    pub fn take(kernel: &mut Kernel) -> Result<Probes, EbpfError> {
        Ok(Probes {
            stats: kernel.take_map("CUDA_STATS", PerCpuArray::try_from)?,
            loaded: false,
        })
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
            },
        )
    }
}

/// The benchmark's floor: the empty `noop_uprobe` on every entry point `Probes::attach`
/// would probe. Returns how many were attached.
pub fn attach_floor(kernel: &mut Kernel, path: &Path) -> Result<usize, String> {
    let bpf = kernel.object_mut().ok_or("eBPF is not loaded")?;
    let p: &mut UProbe = bpf
        .program_mut("noop_uprobe")
        .ok_or("program noop_uprobe is missing")?
        .try_into()
        .map_err(|e| format!("noop_uprobe: {e}"))?;
    p.load()
        .map_err(|e| format!("noop_uprobe: load: {}", brief(e)))?;
    let mut symbols: Vec<&str> = HOOKS.iter().flat_map(|(_, s)| s.iter().copied()).collect();
    symbols.sort_unstable();
    symbols.dedup();
    Ok(symbols
        .into_iter()
        .filter(|sym| p.attach(*sym, path, UProbeScope::AllProcesses).is_ok())
        .count())
}
