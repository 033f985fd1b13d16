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
    maps::{LruHashMap, PerCpuArray},
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

/// `exit`/`exit_group` statuses of targeted tasks: a thread's by its tid, a process's
/// (exit_group) by `GROUP | tgid`.
#[map]
static EXIT_CODES: LruHashMap<u64, u32> = LruHashMap::with_max_entries(4096, 0);
const GROUP: u64 = 1 << 32;

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
    let code = crate::http::syscall_args(ctx)[0] as u32 & 0xff;
    let key = if nr == NR_EXIT_GROUP {
        GROUP | (pid_tgid >> 32)
    } else {
        pid_tgid & 0xffff_ffff
    };
    let _ = EXIT_CODES.insert(key, code, 0);
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
    // SAFETY: the value is copied out at once.
    let thread_code = unsafe { EXIT_CODES.get(tid as u64) }.copied();
    if thread_code.is_some() {
        let _ = EXIT_CODES.remove(tid as u64);
    }
    if !last_thread {
        return;
    }
    let Some(t) = crate::target_of(tgid) else {
        return;
    };
    let group = GROUP | tgid as u64;
    // SAFETY: the value is copied out at once.
    let group_code = unsafe { EXIT_CODES.get(group) }.copied();
    if group_code.is_some() {
        let _ = EXIT_CODES.remove(group);
    }
    let kind = match group_code.or(thread_code) {
        Some(0) => EXIT_ZERO,
        Some(_) => EXIT_NONZERO,
        None => EXIT_SIGNAL,
    };
    if let Some(s) = FAILURE_STATS.get_ptr_mut(t & HTTP_TARGET_MASK) {
        // SAFETY: `s` points at this CPU's value.
        unsafe {
            if let Some(c) = (*s).exits.get_mut(kind) {
                *c += 1;
            }
        }
    }
}
