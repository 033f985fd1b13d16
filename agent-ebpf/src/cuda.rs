//! CUDA driver API uprobes on the libcuda.so the targets map. Every call is counted in a
//! per-CPU array slot of its target (no event per call): kernel and graph launches,
//! allocations with bytes, frees, copies with bytes by direction, and how long
//! synchronize calls wait (entry/return pair, log2 histogram).
use agent_common::{log2_bucket, CudaStats, HTTP_TARGETS, HTTP_TARGET_MASK};
use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns},
    macros::{map, uprobe, uretprobe},
    maps::{HashMap, PerCpuArray},
    programs::{ProbeContext, RetProbeContext},
};

use crate::target_of;

#[map]
static CUDA_STATS: PerCpuArray<CudaStats> = PerCpuArray::with_max_entries(HTTP_TARGETS, 0);

/// Thread → start time of its synchronize call in progress.
#[map]
static CUDA_SYNC_START: HashMap<u32, u64> = HashMap::with_max_entries(16384, 0);

/// This CPU's stats of the current task's target, if it is one.
#[inline(always)]
fn stats() -> Option<*mut CudaStats> {
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    let target = target_of(tgid)?;
    CUDA_STATS.get_ptr_mut(target & HTTP_TARGET_MASK)
}

#[uprobe]
pub fn cuda_launch(_ctx: ProbeContext) -> u32 {
    if let Some(s) = stats() {
        // SAFETY: `s` points at this CPU's value; uprobe programs do not nest on a CPU.
        unsafe { (*s).kernel_launches += 1 };
    }
    0
}

#[uprobe]
pub fn cuda_graph_launch(_ctx: ProbeContext) -> u32 {
    if let Some(s) = stats() {
        // SAFETY: as in cuda_launch.
        unsafe { (*s).graph_launches += 1 };
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

/// An empty uprobe: the benchmark's floor (what the trap alone costs).
#[uprobe]
pub fn noop_uprobe(_ctx: ProbeContext) -> u32 {
    0
}
