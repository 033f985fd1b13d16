//! Scheduler figures of the targets from `sched_switch` and `sched_wakeup(_new)`:
//! run-queue latency (runnable → on a CPU), on-CPU and off-CPU time. Only target threads
//! have state; for every other task each hook costs one target check or one hash miss.
use agent_common::{log2_bucket, SchedStats, ThreadSched, HTTP_TARGETS, HTTP_TARGET_MASK};
use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns},
    macros::{map, tracepoint},
    maps::{LruHashMap, PerCpuArray},
    programs::TracePointContext,
};

use crate::{read_global, target_of};

/// Record offsets, filled in by userspace from tracefs (these are 6.x's).
#[no_mangle]
static SWITCH_PREV_PID_OFFSET: u32 = 24;
#[no_mangle]
static SWITCH_PREV_STATE_OFFSET: u32 = 32;
#[no_mangle]
static SWITCH_NEXT_PID_OFFSET: u32 = 56;
/// `TASK_REPORT_MAX`: the `prev_state` of a task preempted while runnable (its bits below
/// this one are the sleeping states). Filled in by userspace from the tracepoint's format.
#[no_mangle]
static SWITCH_REPORT_MAX: u32 = 0x100;
#[no_mangle]
static WAKEUP_PID_OFFSET: u32 = 24;

#[map]
static SCHED_STATS: PerCpuArray<SchedStats> = PerCpuArray::with_max_entries(HTTP_TARGETS, 0);

#[map]
static THREADS: LruHashMap<u32, ThreadSched> = LruHashMap::with_max_entries(65536, 0);

static NEW_THREAD: ThreadSched = ThreadSched {
    target: 0,
    _pad: 0,
    enqueued_ns: 0,
    on_cpu_since_ns: 0,
    off_cpu_since_ns: 0,
};

#[inline(always)]
fn stats(target: u32) -> Option<*mut SchedStats> {
    SCHED_STATS.get_ptr_mut(target & HTTP_TARGET_MASK)
}

#[inline(always)]
fn read<T>(ctx: &TracePointContext, off: &'static u32) -> Option<T> {
    // SAFETY: read_at goes through bpf_probe_read_kernel on the tracepoint record.
    unsafe { ctx.read_at::<T>(read_global(off) as usize) }.ok()
}

#[inline(always)]
fn wakeup(ctx: &TracePointContext) {
    let Some(tid) = read::<i32>(ctx, &WAKEUP_PID_OFFSET) else {
        return;
    };
    if let Some(t) = THREADS.get_ptr_mut(tid as u32) {
        // SAFETY: `t` points into the map value; a thread's entry is written by the hooks
        // of its own state changes, which the scheduler serializes.
        unsafe {
            (*t).enqueued_ns = bpf_ktime_get_ns();
        }
    }
}

#[tracepoint(category = "sched", name = "sched_wakeup")]
pub fn sched_wakeup(ctx: TracePointContext) -> u32 {
    wakeup(&ctx);
    0
}

#[tracepoint(category = "sched", name = "sched_wakeup_new")]
pub fn sched_wakeup_new(ctx: TracePointContext) -> u32 {
    wakeup(&ctx);
    0
}

#[tracepoint(category = "sched", name = "sched_switch")]
pub fn sched_switch(ctx: TracePointContext) -> u32 {
    // The clock is read only when a target thread is involved: this hook runs on every
    // context switch of the host, and on a VM a clock read is a large part of its cost.
    let mut now = 0;
    // The current task is still the one leaving the CPU.
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    if tgid != 0 {
        if let Some(target) = target_of(tgid) {
            // SAFETY: plain helper call.
            now = unsafe { bpf_ktime_get_ns() };
            leave(&ctx, target, now);
        }
    }
    let Some(next) = read::<i32>(&ctx, &SWITCH_NEXT_PID_OFFSET) else {
        return 0;
    };
    let Some(t) = THREADS.get_ptr_mut(next as u32) else {
        return 0;
    };
    if now == 0 {
        // SAFETY: plain helper call.
        now = unsafe { bpf_ktime_get_ns() };
    }
    // SAFETY: as in `wakeup`.
    unsafe {
        let target = (*t).target;
        if let Some(s) = stats(target) {
            if (*t).enqueued_ns != 0 && now > (*t).enqueued_ns {
                let ns = now - (*t).enqueued_ns;
                (*s).runq_count += 1;
                (*s).runq_sum_ns += ns;
                if let Some(c) = (*s).runq_buckets.get_mut(log2_bucket(ns)) {
                    *c += 1;
                }
            }
            if (*t).off_cpu_since_ns != 0 && now > (*t).off_cpu_since_ns {
                (*s).off_cpu_ns += now - (*t).off_cpu_since_ns;
            }
        }
        (*t).enqueued_ns = 0;
        (*t).off_cpu_since_ns = 0;
        (*t).on_cpu_since_ns = now;
    }
    0
}

/// A target thread leaves the CPU: count its time on it, and note whether it is still
/// runnable (preempted: it waits in the run queue from now) or goes to sleep.
#[inline(always)]
fn leave(ctx: &TracePointContext, target: u32, now: u64) {
    let Some(prev) = read::<i32>(ctx, &SWITCH_PREV_PID_OFFSET) else {
        return;
    };
    let prev = prev as u32;
    // Still runnable (preempted, or yielding): no sleeping-state bit. A task preempted
    // inside the kernel (at a cond_resched) is reported with TASK_REPORT_MAX, not 0.
    let sleeping = (read_global(&SWITCH_REPORT_MAX) as i64).wrapping_sub(1);
    let preempted = read::<i64>(ctx, &SWITCH_PREV_STATE_OFFSET).is_some_and(|s| s & sleeping == 0);
    let t = match THREADS.get_ptr_mut(prev) {
        Some(t) => t,
        None => {
            #[allow(clippy::needless_borrows_for_generic_args)] // see ZERO_STATS in main.rs
            let _ = THREADS.insert(prev, &NEW_THREAD, 0);
            match THREADS.get_ptr_mut(prev) {
                Some(t) => t,
                None => return,
            }
        }
    };
    // SAFETY: as in `wakeup`.
    unsafe {
        (*t).target = target;
        if (*t).on_cpu_since_ns != 0 && now > (*t).on_cpu_since_ns {
            if let Some(s) = stats(target) {
                (*s).on_cpu_ns += now - (*t).on_cpu_since_ns;
            }
        }
        (*t).on_cpu_since_ns = 0;
        if preempted {
            (*t).enqueued_ns = now;
            (*t).off_cpu_since_ns = 0;
        } else {
            (*t).enqueued_ns = 0;
            (*t).off_cpu_since_ns = now;
        }
    }
}

/// Empty programs on the same tracepoints: the cost floor `cargo xtask bench sched`
/// compares against.
#[tracepoint(category = "sched", name = "sched_switch")]
pub fn noop_sched_switch(_ctx: TracePointContext) -> u32 {
    0
}

#[tracepoint(category = "sched", name = "sched_wakeup")]
pub fn noop_sched_wakeup(_ctx: TracePointContext) -> u32 {
    0
}

#[tracepoint(category = "sched", name = "sched_wakeup_new")]
pub fn noop_sched_wakeup_new(_ctx: TracePointContext) -> u32 {
    0
}
