//! Failures of the targets' processes: OOM kills (`oom/mark_victim`), fatal signals
//! (`signal/signal_generate`) and how each process ended.
//!
//! Both records name the task the event is about, which is rarely the current task (the
//! OOM killer runs in the allocating task, `kill` in the sender): only a registered
//! process or the current task can be mapped to a target there. The rest wait in
//! `PENDING`, keyed by their thread id, until that thread exits: `sched_process_exit`
//! runs in the dying task, where its target (cgroup targets included) is known.
//!
//! How a process ended: its `exit`/`exit_group` call's status is kept at `sys_enter`; a
//! process whose last thread exits without one was ended by a signal.
use agent_common::{
    fatal_signal_index, FailureStats, OomVictim, EXIT_NONZERO, EXIT_SIGNAL, EXIT_ZERO,
    HTTP_TARGETS, HTTP_TARGET_MASK,
};
use aya_ebpf::{
    helpers::bpf_ktime_get_ns,
    macros::{map, tracepoint},
    maps::{Array, LruHashMap, PerCpuArray},
    programs::{RawTracePointContext, TracePointContext},
};

use crate::{read_global, target_of_task, NR_EXIT_GROUP};

#[no_mangle]
static VICTIM_PID_OFFSET: u32 = 8;
#[no_mangle]
static SIGNAL_SIG_OFFSET: u32 = 8;
#[no_mangle]
static SIGNAL_PID_OFFSET: u32 = 36;
#[no_mangle]
static SIGNAL_RESULT_OFFSET: u32 = 44;

/// `signal_generate`'s result for a signal that was queued (not ignored, not already
/// pending).
const TRACE_SIGNAL_DELIVERED: i32 = 0;

/// A signal or OOM kill older than this when its thread exits was survived: not counted.
const PENDING_NS: u64 = 60_000_000_000;

#[map]
static FAILURE_STATS: PerCpuArray<FailureStats> = PerCpuArray::with_max_entries(HTTP_TARGETS, 0);

/// OOM victims mapped to a target, by PID; userspace reads and deletes them every tick.
#[map]
static OOM_VICTIMS: LruHashMap<u32, OomVictim> = LruHashMap::with_max_entries(256, 0);

/// A task's fatal signal or OOM kill not yet mapped to a target.
#[repr(C)]
#[derive(Clone, Copy)]
struct Pending {
    /// `fatal_signal_index + 1`, 0 for none.
    signal: u32,
    oom: u32,
    ktime_ns: u64,
}

#[map]
static PENDING: LruHashMap<u32, Pending> = LruHashMap::with_max_entries(1024, 0);

/// The last `exit`/`exit_group` call of a targeted process, in the slot `tgid & EXIT_MASK`
/// (checked against the tgid): an array, not a hash, so keeping and finding it costs an
/// indexed load on the exit path. Two processes on one slot exiting at once may lose one
/// status (that process then counts as ended by a signal).
#[repr(C)]
#[derive(Clone, Copy)]
struct ExitCall {
    tgid: u32,
    tid: u32,
    code: u32,
    /// 1 for `exit_group` (the process's status), 0 for one thread's `exit`.
    group: u32,
}

const EXIT_SLOTS: u32 = 1 << 14;
const EXIT_MASK: u32 = EXIT_SLOTS - 1;

#[map]
static EXITS: Array<ExitCall> = Array::with_max_entries(EXIT_SLOTS, 0);

#[inline(always)]
fn read<T>(ctx: &TracePointContext, off: &'static u32) -> Option<T> {
    // SAFETY: read_at goes through bpf_probe_read_kernel on the tracepoint record.
    unsafe { ctx.read_at::<T>(read_global(off) as usize) }.ok()
}

#[inline(always)]
fn now() -> u64 {
    // SAFETY: plain helper call.
    unsafe { bpf_ktime_get_ns() }
}

#[inline(always)]
fn count_signal(target: u32, index: usize) {
    if let Some(s) = FAILURE_STATS.get_ptr_mut(target & HTTP_TARGET_MASK) {
        // SAFETY: `s` points at this CPU's value.
        unsafe {
            if let Some(c) = (*s).signals.get_mut(index) {
                *c += 1;
            }
        }
    }
}

#[inline(always)]
fn oom_victim(pid: u32, target: u32) {
    let v = OomVictim {
        target,
        _pad: 0,
        ktime_ns: now(),
    };
    let _ = OOM_VICTIMS.insert(pid, v, 0);
}

#[tracepoint(category = "oom", name = "mark_victim")]
pub fn mark_victim(ctx: TracePointContext) -> u32 {
    let Some(pid) = read::<i32>(&ctx, &VICTIM_PID_OFFSET) else {
        return 0;
    };
    let pid = pid as u32;
    match target_of_task(pid) {
        Some(t) => oom_victim(pid, t),
        None => {
            // SAFETY: the value is copied out at once.
            let signal = unsafe { PENDING.get(pid) }.map_or(0, |p| p.signal);
            let p = Pending {
                signal,
                oom: 1,
                ktime_ns: now(),
            };
            let _ = PENDING.insert(pid, p, 0);
        }
    }
    0
}

#[tracepoint(category = "signal", name = "signal_generate")]
pub fn signal_generate(ctx: TracePointContext) -> u32 {
    // Most signals on a host are not fatal ones (SIGCHLD, timers, Go's SIGURG): one read.
    let Some(index) =
        read::<i32>(&ctx, &SIGNAL_SIG_OFFSET).and_then(|s| fatal_signal_index(s as u32))
    else {
        return 0;
    };
    if read::<i32>(&ctx, &SIGNAL_RESULT_OFFSET) != Some(TRACE_SIGNAL_DELIVERED) {
        return 0;
    }
    let Some(pid) = read::<i32>(&ctx, &SIGNAL_PID_OFFSET) else {
        return 0;
    };
    let pid = pid as u32;
    match target_of_task(pid) {
        Some(t) => count_signal(t, index),
        None => {
            // SAFETY: the value is copied out at once.
            let oom = unsafe { PENDING.get(pid) }.map_or(0, |p| p.oom);
            let p = Pending {
                signal: index as u32 + 1,
                oom,
                ktime_ns: now(),
            };
            let _ = PENDING.insert(pid, p, 0);
        }
    }
    0
}

/// At `sys_enter` of `exit`/`exit_group` by a targeted task: keep its status.
#[inline(always)]
pub fn exit_called(ctx: &RawTracePointContext, pid_tgid: u64, nr: u32) {
    let (tgid, tid) = ((pid_tgid >> 32) as u32, pid_tgid as u32);
    let group = (nr == NR_EXIT_GROUP) as u32;
    let Some(e) = EXITS.get_ptr_mut(tgid & EXIT_MASK) else {
        return;
    };
    // SAFETY: `e` points into the array map's value.
    unsafe {
        // A process's exit_group status is not replaced by one of its threads' exit.
        if group == 0 && (*e).tgid == tgid && (*e).group != 0 {
            return;
        }
        *e = ExitCall {
            tgid,
            tid,
            code: crate::http::syscall_args(ctx)[0] as u32 & 0xff,
            group,
        };
    }
}

/// At `sched_process_exit`, in the exiting task (before it leaves the target maps): its
/// pending signal or OOM kill, and for the last thread of a process, how it ended.
#[inline(always)]
pub fn task_exit(tgid: u32, tid: u32, last_thread: bool) {
    // SAFETY: the value is copied out at once.
    if let Some(p) = unsafe { PENDING.get(tid) }.copied() {
        let _ = PENDING.remove(tid);
        if now().saturating_sub(p.ktime_ns) < PENDING_NS {
            if let Some(t) = crate::target_of(tgid) {
                if p.oom != 0 {
                    oom_victim(tid, t);
                }
                if p.signal != 0 {
                    count_signal(t, p.signal as usize - 1);
                }
            }
        }
    }
    if !last_thread {
        return;
    }
    let Some(t) = crate::target_of(tgid) else {
        return;
    };
    let mut kind = EXIT_SIGNAL;
    if let Some(e) = EXITS.get_ptr_mut(tgid & EXIT_MASK) {
        // SAFETY: `e` points into the array map's value.
        unsafe {
            if (*e).tgid == tgid {
                // The process's exit_group, or this last thread's own exit.
                if (*e).group != 0 || (*e).tid == tid {
                    kind = if (*e).code == 0 {
                        EXIT_ZERO
                    } else {
                        EXIT_NONZERO
                    };
                }
                (*e).tgid = 0;
            }
        }
    }
    if let Some(s) = FAILURE_STATS.get_ptr_mut(t & HTTP_TARGET_MASK) {
        // SAFETY: `s` points at this CPU's value.
        unsafe {
            if let Some(c) = (*s).exits.get_mut(kind) {
                *c += 1;
            }
        }
    }
}
