//! CUDA driver API uprobes on the libcuda.so the targets map. Every call is counted in a
//! per-CPU array slot of its target (no event per call): kernel and graph launches,
//! allocations with bytes, frees, copies with bytes by direction, and how long
//! synchronize calls wait (entry/return pair, log2 histogram), when each target last
//! launched work, and the error returns of the allocation calls (return probes, by call
//! and CUresult).
use agent_common::{cuda_error_key, log2_bucket, CudaStats, HTTP_TARGETS, HTTP_TARGET_MASK};
use aya_ebpf::{
    bindings::BPF_F_NO_PREALLOC,
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns},
    macros::{map, uprobe, uretprobe},
    maps::{HashMap, PerCpuArray, PerCpuHashMap},
    programs::{ProbeContext, RetProbeContext},
};

use crate::target_of;

#[map]
static CUDA_STATS: PerCpuArray<CudaStats> = PerCpuArray::with_max_entries(HTTP_TARGETS, 0);

/// Thread → start time of its synchronize call in progress.
#[map]
static CUDA_SYNC_START: HashMap<u32, u64> = HashMap::with_max_entries(16384, 0);

/// Error returns of the allocation calls, by `cuda_error_key(target, call, CUresult)`. A
/// hash is fine here: only an error return reaches it. Not preallocated: only the
/// (target, call, code) triples that occur take per-CPU memory.
const CUDA_ERROR_ENTRIES: u32 = 1024;
#[map]
static CUDA_ERRORS: PerCpuHashMap<u64, u64> =
    PerCpuHashMap::with_max_entries(CUDA_ERROR_ENTRIES, BPF_F_NO_PREALLOC);

const BPF_NOEXIST: u64 = 1;

/// This CPU's stats of the current task's target, if it is one.
#[inline(always)]
fn stats() -> Option<*mut CudaStats> {
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    let target = target_of(tgid)?;
    CUDA_STATS.get_ptr_mut(target & HTTP_TARGET_MASK)
}

/// The launch path is the hottest: one clock read and one store more than the count.
/// (The cheaper coarse clock, bpf_ktime_get_coarse_ns, fails verification in a uprobe.)
#[uprobe]
pub fn cuda_launch(_ctx: ProbeContext) -> u32 {
    if let Some(s) = stats() {
        // SAFETY: plain helper call.
        let now = unsafe { bpf_ktime_get_ns() };
        // SAFETY: `s` points at this CPU's value; uprobe programs do not nest on a CPU.
        unsafe {
            (*s).kernel_launches += 1;
            (*s).last_launch_ns = now;
        }
    }
    0
}

/// A graph launch is launched work too (servers that capture their decode step in a CUDA
/// graph launch few kernels one by one).
#[uprobe]
pub fn cuda_graph_launch(_ctx: ProbeContext) -> u32 {
    if let Some(s) = stats() {
        // SAFETY: plain helper call.
        let now = unsafe { bpf_ktime_get_ns() };
        // SAFETY: as in cuda_launch.
        unsafe {
            (*s).graph_launches += 1;
            (*s).last_launch_ns = now;
        }
    }
    0
}

/// cuMemAlloc_v2(CUdeviceptr *dptr, size_t bytesize), cuMemAllocAsync(dptr, bytesize, stream).
#[uprobe]
pub fn cuda_alloc(ctx: ProbeContext) -> u32 {
    if let Some(s) = stats() {
        let bytes: u64 = ctx.arg(1).unwrap_or(0);
        // SAFETY: as in cuda_launch.
        unsafe {
            (*s).allocs += 1;
            (*s).alloc_bytes += bytes;
        }
    }
    0
}

#[uprobe]
pub fn cuda_free(_ctx: ProbeContext) -> u32 {
    if let Some(s) = stats() {
        // SAFETY: as in cuda_launch.
        unsafe { (*s).frees += 1 };
    }
    0
}

/// Every cuMemcpy* variant has its byte count as the third argument.
#[inline(always)]
fn memcpy<const KIND: usize>(ctx: &ProbeContext) {
    if let Some(s) = stats() {
        let bytes: u64 = ctx.arg(2).unwrap_or(0);
        // SAFETY: as in cuda_launch; KIND is a constant below CUDA_MEMCPY_KINDS.
        unsafe {
            (*s).memcpy_calls[KIND] += 1;
            (*s).memcpy_bytes[KIND] += bytes;
        }
    }
}

#[uprobe]
pub fn cuda_memcpy_htod(ctx: ProbeContext) -> u32 {
    memcpy::<0>(&ctx);
    0
}

#[uprobe]
pub fn cuda_memcpy_dtoh(ctx: ProbeContext) -> u32 {
    memcpy::<1>(&ctx);
    0
}

#[uprobe]
pub fn cuda_memcpy_dtod(ctx: ProbeContext) -> u32 {
    memcpy::<2>(&ctx);
    0
}

/// cuMemcpy / cuMemcpyAsync: unified addressing, the direction is not in the call.
#[uprobe]
pub fn cuda_memcpy_any(ctx: ProbeContext) -> u32 {
    memcpy::<3>(&ctx);
    0
}

#[uprobe]
pub fn cuda_sync_enter(_ctx: ProbeContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    if target_of((pid_tgid >> 32) as u32).is_none() {
        return 0;
    }
    // SAFETY: plain helper call.
    let now = unsafe { bpf_ktime_get_ns() };
    let _ = CUDA_SYNC_START.insert(pid_tgid as u32, now, 0);
    0
}

#[uretprobe]
pub fn cuda_sync_exit(_ctx: RetProbeContext) -> u32 {
    let tid = bpf_get_current_pid_tgid() as u32;
    // SAFETY: the value is a plain u64 copied out at once.
    let Some(start) = (unsafe { CUDA_SYNC_START.get(tid) }).copied() else {
        return 0;
    };
    let _ = CUDA_SYNC_START.remove(tid);
    // SAFETY: plain helper call.
    let ns = unsafe { bpf_ktime_get_ns() }.saturating_sub(start);
    if let Some(s) = stats() {
        // SAFETY: as in cuda_launch.
        unsafe {
            (*s).sync_count += 1;
            (*s).sync_sum_ns += ns;
            if let Some(c) = (*s).sync_buckets.get_mut(log2_bucket(ns)) {
                *c += 1;
            }
        }
    }
    0
}

/// Count an allocation call's error return. Success (0) returns before anything else: it
/// is what nearly every call returns, targeted or not.
#[inline(always)]
fn alloc_returned<const CALL: u32>(ctx: &RetProbeContext) {
    // CUresult is a C enum (int): the low 32 bits of the return register.
    let code: u32 = ctx.ret();
    if code == 0 {
        return;
    }
    let Some(target) = target_of((bpf_get_current_pid_tgid() >> 32) as u32) else {
        return;
    };
    let key = cuda_error_key(target & HTTP_TARGET_MASK, CALL, code);
    let counter = match CUDA_ERRORS.get_ptr_mut(key) {
        Some(p) => p,
        None => {
            // Another CPU may insert the key first: then ours fails and the lookup finds
            // theirs (each CPU has its own value). A full map drops the error.
            let _ = CUDA_ERRORS.insert(key, 0, BPF_NOEXIST);
            let Some(p) = CUDA_ERRORS.get_ptr_mut(key) else {
                return;
            };
            p
        }
    };
    // SAFETY: `counter` points at this CPU's value; uprobe programs do not nest on a CPU.
    unsafe { *counter += 1 };
}

// One program per call (the index into CUDA_ERROR_CALLS): a return probe cannot tell
// which function returned, and a program per call needs no attach cookies.
#[uretprobe]
pub fn cuda_alloc_ret(ctx: RetProbeContext) -> u32 {
    alloc_returned::<0>(&ctx);
    0
}

#[uretprobe]
pub fn cuda_alloc_managed_ret(ctx: RetProbeContext) -> u32 {
    alloc_returned::<1>(&ctx);
    0
}

#[uretprobe]
pub fn cuda_mem_create_ret(ctx: RetProbeContext) -> u32 {
    alloc_returned::<2>(&ctx);
    0
}

#[uretprobe]
pub fn cuda_alloc_async_ret(ctx: RetProbeContext) -> u32 {
    alloc_returned::<3>(&ctx);
    0
}

/// An empty uprobe: the benchmark's floor (what the trap alone costs).
#[uprobe]
pub fn noop_uprobe(_ctx: ProbeContext) -> u32 {
    0
}

/// An empty return probe: the floor of the allocation calls' return probes.
#[uretprobe]
pub fn noop_uretprobe(_ctx: RetProbeContext) -> u32 {
    0
}
