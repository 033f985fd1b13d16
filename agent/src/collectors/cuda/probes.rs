//! The CUDA driver uprobes: each library's entry points resolved once (file offsets from
//! its dynamic symbols), attached per target process, so that the kernel puts the
//! breakpoints only in that process's memory (in host mode, on the library file for every
//! process), and their per-target counts.
use std::{collections::HashMap, fs::File, num::NonZeroU32, path::Path};

use agent_common::{cuda_error_key_parts, CudaStats, CUDA_ERROR_CALLS};
use aya::{
    maps::{MapData, PerCpuArray, PerCpuHashMap},
    programs::{
        uprobe::{UProbeLink, UProbeScope},
        ProgramError, UProbe,
    },
    Ebpf,
};
use object::{Object, ObjectKind, ObjectSection, ObjectSymbol};

use crate::ebpf::{brief, sum_per_target, EbpfError, Kernel};

#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("eBPF is not loaded")]
    NotLoaded,
    #[error("program {0} is missing from the eBPF object")]
    MissingProgram(&'static str),
    #[error("{name}: {source}")]
    Program {
        name: &'static str,
        source: ProgramError,
    },
    #[error("{name}: load: {reason}")]
    Load { name: &'static str, reason: String },
    #[error("{path}: {source}")]
    Open {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: not a readable ELF object: {source}")]
    Elf {
        path: String,
        source: object::read::Error,
    },
    #[error("{path}: defines none of the CUDA entry points")]
    NoEntryPoint { path: String },
    #[error("{symbol}: {source}")]
    Attach {
        symbol: &'static str,
        source: ProgramError,
    },
}

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

/// One probe: a program and the file offset of the entry point it is attached to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntryPoint {
    pub program: &'static str,
    pub symbol: &'static str,
    pub offset: u64,
}

/// The names of the CUDA programs (for their status and statistics).
pub fn programs() -> impl Iterator<Item = &'static str> {
    HOOKS.iter().map(|(name, _)| *name)
}

/// Every probe `HOOKS` asks for that the library at `path` defines, with its file offset
/// (what the kernel attaches uprobes by), read once per library: only the ELF headers and
/// the symbol tables are read, not the whole file.
pub fn entry_points(path: &Path) -> Result<Vec<EntryPoint>, ProbeError> {
    let shown = || path.display().to_string();
    let file = File::open(path).map_err(|source| ProbeError::Open {
        path: shown(),
        source,
    })?;
    let cache = object::read::ReadCache::new(file);
    let obj = object::File::parse(&cache).map_err(|source| ProbeError::Elf {
        path: shown(),
        source,
    })?;
    let wanted: Vec<&'static str> = HOOKS.iter().flat_map(|(_, s)| s.iter().copied()).collect();
    let mut found: HashMap<&'static str, u64> = HashMap::new();
    // The driver exports its entry points (dynamic symbols); a library with a symbol
    // table has them there too.
    for sym in obj.dynamic_symbols().chain(obj.symbols()) {
        if !sym.is_definition() {
            continue;
        }
        let Some(name) = sym
            .name()
            .ok()
            .and_then(|n| wanted.iter().copied().find(|w| *w == n))
        else {
            continue;
        };
        if found.contains_key(name) {
            continue;
        }
        // A shared object's symbol value is a virtual address: its file offset is where
        // its section lies in the file.
        let offset = if matches!(obj.kind(), ObjectKind::Dynamic | ObjectKind::Executable) {
            sym.section_index()
                .and_then(|i| obj.section_by_index(i).ok())
                .and_then(|sec| {
                    let (file_offset, _) = sec.file_range()?;
                    sym.address()
                        .checked_sub(sec.address())?
                        .checked_add(file_offset)
                })
        } else {
            Some(sym.address())
        };
        if let Some(offset) = offset {
            found.insert(name, offset);
        }
    }
    let points: Vec<EntryPoint> = HOOKS
        .iter()
        .flat_map(|(program, symbols)| {
            symbols.iter().filter_map(|symbol| {
                Some(EntryPoint {
                    program,
                    symbol,
                    offset: *found.get(symbol)?,
                })
            })
        })
        .collect();
    if points.is_empty() {
        return Err(ProbeError::NoEntryPoint { path: shown() });
    }
    Ok(points)
}

/// The uprobe programs (loaded on first use, attached per process) and their counts.
pub struct Probes {
    stats: PerCpuArray<MapData, CudaStats>,
    errors: PerCpuHashMap<MapData, u64, u64>,
    loaded: bool,
    /// The program the kernel refused to load, and why.
    refused: Option<(&'static str, String)>,
}

impl Probes {
    pub fn take(kernel: &mut Kernel) -> Result<Probes, EbpfError> {
        Ok(Probes {
            stats: kernel.take_map("CUDA_STATS", PerCpuArray::try_from)?,
            errors: kernel.take_map("CUDA_ERRORS", PerCpuHashMap::try_from)?,
            loaded: false,
            refused: None,
        })
    }

    /// Whether the programs are loaded (they are on the first attach).
    pub fn is_loaded(&self) -> bool {
        self.loaded
    }

    /// Load the programs on first use; a program the kernel refused is not tried again.
    fn load(&mut self, bpf: &mut Ebpf) -> Result<(), ProbeError> {
        if self.loaded {
            return Ok(());
        }
        if let Some((name, reason)) = &self.refused {
            return Err(ProbeError::Load {
                name,
                reason: reason.clone(),
            });
        }
        for (name, _) in HOOKS {
            if let Err(e) = uprobe(bpf, name)?.load() {
                let reason = brief(e);
                self.refused = Some((name, reason.clone()));
                return Err(ProbeError::Load { name, reason });
            }
        }
        self.loaded = true;
        Ok(())
    }

    /// Attach the probes at `points` of the library at `path` (reached through
    /// /proc/PID/root, so it works across mount namespaces): in process `pid` only (the
    /// kernel puts the breakpoints in its memory alone, and runs the programs for its
    /// threads alone), or with `None` in every process that maps the library. The links
    /// are the caller's: dropping one detaches it. An error when none could be attached;
    /// an entry point that fails alone is left out (logged).
    pub fn attach(
        &mut self,
        bpf: &mut Ebpf,
        path: &Path,
        points: &[EntryPoint],
        pid: Option<NonZeroU32>,
    ) -> Result<Vec<UProbeLink>, ProbeError> {
        self.load(bpf)?;
        let scope = pid.map_or(UProbeScope::AllProcesses, UProbeScope::OneProcess);
        let mut links = Vec::with_capacity(points.len());
        let mut last_err = None;
        for p in points {
            let prog = uprobe(bpf, p.program)?;
            match prog
                .attach(p.offset, path, scope)
                .and_then(|id| prog.take_link(id))
            {
                Ok(link) => links.push(link),
                Err(source) => {
                    tracing::debug!("CUDA: {} in {}: {source}", p.symbol, path.display());
                    last_err = Some(ProbeError::Attach {
                        symbol: p.symbol,
                        source,
                    });
                }
            }
        }
        if links.is_empty() {
            return Err(last_err.unwrap_or_else(|| ProbeError::NoEntryPoint {
                path: path.display().to_string(),
            }));
        }
        Ok(links)
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

/// A program of the object as a uprobe.
fn uprobe<'a>(bpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut UProbe, ProbeError> {
    bpf.program_mut(name)
        .ok_or(ProbeError::MissingProgram(name))?
        .try_into()
        .map_err(|source| ProbeError::Program { name, source })
}

/// The benchmark's floor: the empty `noop_uprobe` on every entry point `Probes::attach`
/// would probe, and with `returns` the empty `noop_uretprobe` where it puts return
/// probes; in process `pid` only, or with `None` in every process. Returns how many
/// were attached (the links stay with the programs, detached when the kernel object is
/// dropped).
pub fn attach_floor(
    kernel: &mut Kernel,
    path: &Path,
    returns: bool,
    pid: Option<NonZeroU32>,
) -> Result<usize, ProbeError> {
    let points = entry_points(path)?;
    let bpf = kernel.object_mut().ok_or(ProbeError::NotLoaded)?;
    let scope = pid.map_or(UProbeScope::AllProcesses, UProbeScope::OneProcess);
    let mut attached = 0;
    for (program, on_return) in [("noop_uprobe", false), ("noop_uretprobe", true)] {
        if on_return && !returns {
            continue;
        }
        let p = uprobe(bpf, program)?;
        p.load().map_err(|e| ProbeError::Load {
            name: program,
            reason: brief(e),
        })?;
        let mut offsets: Vec<u64> = points
            .iter()
            .filter(|e| RETURN_HOOKS.contains(&e.program) == on_return)
            .map(|e| e.offset)
            .collect();
        offsets.sort_unstable();
        offsets.dedup();
        attached += offsets
            .into_iter()
            .filter(|offset| p.attach(*offset, path, scope).is_ok())
            .count();
    }
    Ok(attached)
}
