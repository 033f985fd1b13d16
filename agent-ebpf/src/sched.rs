//! Scheduler figures of the targets from `sched_switch` and `sched_wakeup(_new)`:
//! run-queue latency (runnable → on a CPU), on-CPU and off-CPU time. Only target threads
//! have state. These hooks run on every context switch and wake-up of the host, so the
//! path for everyone else is short: the record's pid read straight from the record, one
//! inlined array lookup (`THREAD_SLOTS`) instead of a hash lookup, and no clock read.
use agent_common::{log2_bucket, SchedStats, ThreadSched, HTTP_TARGETS, HTTP_TARGET_MASK};
use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns},
    macros::{map, tracepoint},
    maps::{Array, LruHashMap, PerCpuArray},
    programs::TracePointContext,
    EbpfContext,
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

/// The filter in front of `THREADS`: slot `tid & THREAD_SLOT_MASK` holds the tid of the
/// target thread with an entry there, `SLOT_SHARED` once two such threads landed on it, or
/// 0. A task whose slot holds neither its tid nor `SLOT_SHARED` has no entry, and its
/// switches and wake-ups end after this lookup. Slots are not cleared when a thread
/// exits: a stale one costs a later task with the same slot one hash miss per event.
#[map]
static THREAD_SLOTS: Array<u32> = Array::with_max_entries(THREAD_SLOTS_N, 0);

const THREAD_SLOTS_N: u32 = 1 << 16;
const THREAD_SLOT_MASK: u32 = THREAD_SLOTS_N - 1;
const SLOT_SHARED: u32 = u32::MAX;

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

/// A pid field of the record at `off`: loaded straight from the record when the offset is
/// `usual` (the verifier needs a constant offset for that), else through the helper.
#[inline(always)]
fn read_pid(ctx: &TracePointContext, off: &'static u32, usual: usize) -> Option<u32> {
    if read_global(off) as usize == usual {
        // SAFETY: tracepoint programs may read their record directly at a constant,
        // aligned offset; `usual` is inside every kernel's record for these events.
        return Some(unsafe { *(ctx.as_ptr() as *const u8).add(usual).cast::<u32>() });
    }
    read::<i32>(ctx, off).map(|p| p as u32)
}

/// Whether `tid` may have an entry in `THREADS` (false for every task but a target's
/// threads, whose slots `leave` sets).
#[inline(always)]
fn may_be_tracked(tid: u32) -> bool {
    match THREAD_SLOTS.get(tid & THREAD_SLOT_MASK) {
        Some(&slot) => tid != 0 && (slot == tid || slot == SLOT_SHARED),
        None => false,
    }
}

/// Mark `tid`'s slot (done on each switch-out of a target thread: a mark lost to a race
/// with another CPU comes back at the thread's next switch).
#[inline(always)]
fn mark(tid: u32) {
    if let Some(slot) = THREAD_SLOTS.get_ptr_mut(tid & THREAD_SLOT_MASK) {
        // SAFETY: `slot` points into the array map's value.
        unsafe {
            let cur = *slot;
            if cur != tid && cur != SLOT_SHARED {
                *slot = if cur == 0 { tid } else { SLOT_SHARED };
            }
        }
    }
}

#[inline(always)]
fn wakeup(ctx: &TracePointContext) {
    let Some(tid) = read_pid(ctx, &WAKEUP_PID_OFFSET, 24) else {
        return;
    };
    if !may_be_tracked(tid) {
        return;
    }
    if let Some(t) = THREADS.get_ptr_mut(tid) {
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
    let Some(next) = read_pid(&ctx, &SWITCH_NEXT_PID_OFFSET, 56) else {
        return 0;
    };
    if !may_be_tracked(next) {
        return 0;
    }
    let Some(t) = THREADS.get_ptr_mut(next) else {
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
    mark(prev);
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
