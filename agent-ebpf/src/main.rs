//! infersight kernel programs.
//!
//! Syscall tracing: raw tracepoints on `sys_enter`/`sys_exit` (raw, not classic tracepoints:
//! no perf record is built per syscall, and tracefs is not needed). Each program first checks
//! whether the current task belongs to a target and returns at once otherwise. Targeted calls
//! are aggregated in a per-CPU hash keyed by (target, syscall): count, errors and a log2
//! latency histogram. No event per syscall leaves the kernel.
//!
//! Process following: `task/task_newtask` (its record carries `clone_flags`, so new threads
//! are told apart from new processes) adds children of targets; `sched/sched_process_exit`
//! with `group_dead` removes a target process once its last thread is gone.
#![no_std]
#![no_main]

mod cuda;
mod diag;
mod failures;
mod h2;
mod http;
mod sched;
mod tcp;
mod tls;

use agent_common::{
    log2_bucket, stats_key, Inflight, SyscallStats, TargetSlot, CONFIG_CGROUP_LEVELS,
    CONFIG_ENTRIES, CONFIG_FAILURES, CONFIG_HTTP, CONFIG_MODE, DIAG_SYSCALL_STATS_FULL,
    DIAG_TARGETS_OVERFLOW_FULL, HOST_TARGET, INFLIGHT_SLOTS, INFLIGHT_SLOT_MASK, MAX_CGROUP_LEVELS,
    MODE_ALL, MODE_CGROUP, SLOT_OVERFLOW, TARGET_SLOTS, TARGET_SLOT_MASK,
};
use aya_ebpf::{
    bindings::BPF_F_NO_PREALLOC,
    helpers::{bpf_get_current_ancestor_cgroup_id, bpf_get_current_pid_tgid, bpf_ktime_get_ns},
    macros::{map, raw_tracepoint, tracepoint},
    maps::{Array, HashMap, LruHashMap, PerCpuHashMap},
    programs::{RawTracePointContext, TracePointContext},
    EbpfContext,
};
use aya_log_ebpf::warn;

const NR_CLOSE: u32 = 3;
const NR_EXIT: u32 = 60;
pub(crate) const NR_EXIT_GROUP: u32 = 231;
const CLONE_THREAD: u64 = 0x0001_0000;
const BPF_NOEXIST: u64 = 1;

/// Record offsets of the classic tracepoints, filled in by userspace from tracefs `format`
/// files (they differ between kernel versions). `EXIT_GROUP_DEAD_OFFSET == 0` means the
/// kernel has no `group_dead` field: fall back to "the leader thread exited".
#[no_mangle]
static NEWTASK_PID_OFFSET: u32 = 8;
#[no_mangle]
static NEWTASK_FLAGS_OFFSET: u32 = 32;
#[no_mangle]
static EXIT_GROUP_DEAD_OFFSET: u32 = 32;

#[map]
static CONFIG: Array<u32> = Array::with_max_entries(CONFIG_ENTRIES, 0);

#[map]
static TARGETS: Array<TargetSlot> = Array::with_max_entries(TARGET_SLOTS, 0);

#[map]
static TARGETS_OVERFLOW: HashMap<u32, u32> = HashMap::with_max_entries(OVERFLOW_ENTRIES, 0);

#[map]
static CGROUP_TARGETS: HashMap<u64, u32> = HashMap::with_max_entries(256, 0);

#[map]
static INFLIGHT: Array<Inflight> = Array::with_max_entries(INFLIGHT_SLOTS, 0);

/// Calls of targeted threads whose in-flight slot another targeted thread holds (their
/// tids are equal modulo the slot count), by tid. LRU: a thread killed inside a call
/// leaves an entry nobody removes.
#[map]
static INFLIGHT_SHARED: LruHashMap<u32, Inflight> = LruHashMap::with_max_entries(1024, 0);

/// Set on a slot's `_pad` once a call went to `INFLIGHT_SHARED` for it: exits of threads
/// landing on that slot look there too (only they pay for the hash lookup).
const SLOT_SHARED: u32 = 1;

/// Not preallocated: only the (target, syscall) pairs that occur take per-CPU memory.
const SYSCALL_STATS_ENTRIES: u32 = 16384;
#[map]
static SYSCALL_STATS: PerCpuHashMap<u32, SyscallStats> =
    PerCpuHashMap::with_max_entries(SYSCALL_STATS_ENTRIES, BPF_F_NO_PREALLOC);

const OVERFLOW_ENTRIES: u32 = 4096;

#[inline(always)]
fn config(index: u32) -> u32 {
    CONFIG.get(index).copied().unwrap_or(0)
}

#[inline(always)]
pub(crate) fn read_global(v: &'static u32) -> u32 {
    // SAFETY: the pointer comes from a reference to a static; the volatile read keeps the
    // compiler from folding the value userspace overrides at load time.
    unsafe { core::ptr::read_volatile(v) }
}

/// The target a TGID was registered under (by userspace or fork following).
#[inline(always)]
fn pid_target(tgid: u32) -> Option<u32> {
    let slot = TARGETS.get(tgid & TARGET_SLOT_MASK)?;
    if slot.tgid == tgid && slot.target_index() != 0 {
        return Some(slot.target_index());
    }
    if slot.has_overflow() {
        // SAFETY: the value is a plain u32 copied out at once.
        return unsafe { TARGETS_OVERFLOW.get(tgid) }.copied();
    }
    None
}

#[inline(always)]
fn cgroup_target() -> Option<u32> {
    let mut i = 0;
    while i < MAX_CGROUP_LEVELS {
        let level = config(CONFIG_CGROUP_LEVELS + i);
        if level == 0 {
            return None;
        }
        // SAFETY: plain helper call with a scalar argument.
        let id = unsafe { bpf_get_current_ancestor_cgroup_id(level as i32) };
        // SAFETY: the value is a plain u32 copied out at once.
        if let Some(t) = unsafe { CGROUP_TARGETS.get(id) } {
            return Some(*t);
        }
        i += 1;
    }
    None
}

/// The target check every syscall pays: one inlined array lookup for untargeted tasks.
#[inline(always)]
pub(crate) fn target_of(tgid: u32) -> Option<u32> {
    let mode = config(CONFIG_MODE);
    if mode & MODE_ALL != 0 {
        return Some(HOST_TARGET);
    }
    if let Some(t) = pid_target(tgid) {
        return Some(t);
    }
    if mode & MODE_CGROUP != 0 {
        return cgroup_target();
    }
    None
}

/// The target of task `pid` (a thread or process id), as far as a program running in
/// another task can tell: the current task's when it is that task (cgroup targets
/// included), else a registered process's, else the host's in whole-host mode.
#[inline(always)]
pub(crate) fn target_of_task(pid: u32) -> Option<u32> {
    let current = bpf_get_current_pid_tgid();
    let tgid = (current >> 32) as u32;
    if current as u32 == pid || tgid == pid {
        return target_of(tgid);
    }
    if config(CONFIG_MODE) & MODE_ALL != 0 {
        return Some(HOST_TARGET);
    }
    pid_target(pid)
}

/// Inserted by reference: building the value on the stack would need a memset, which is
/// a byte loop for the verifier.
static ZERO_STATS: SyscallStats = SyscallStats::ZERO;

#[inline(always)]
fn record<C: EbpfContext>(ctx: &C, target: u32, nr: u32, ret: i64, duration_ns: Option<u64>) {
    let key = stats_key(target, nr);
    let stats = match SYSCALL_STATS.get_ptr_mut(key) {
        Some(p) => p,
        None => {
            // A concurrent insert on another CPU may win: then ours fails with EEXIST and
            // the lookup below finds theirs.
            #[allow(clippy::needless_borrows_for_generic_args)] // see ZERO_STATS
            let _ = SYSCALL_STATS.insert(key, &ZERO_STATS, BPF_NOEXIST);
            match SYSCALL_STATS.get_ptr_mut(key) {
                Some(p) => p,
                None => {
                    // Only a full map makes both the insert and the lookup fail.
                    if diag::first(DIAG_SYSCALL_STATS_FULL) {
                        warn!(
                            ctx,
                            "SYSCALL_STATS is full ({} (target, syscall) pairs): new pairs are not counted",
                            SYSCALL_STATS_ENTRIES
                        );
                    }
                    return;
                }
            }
        }
    };
    // SAFETY: `stats` points at this CPU's copy of the value; programs on one CPU do not
    // run concurrently with each other for these hooks.
    unsafe {
        (*stats).count += 1;
        if ret < 0 {
            (*stats).errors += 1;
        }
        if let Some(ns) = duration_ns {
            (*stats).sum_ns += ns;
            let b = log2_bucket(ns);
            if let Some(c) = (*stats).buckets.get_mut(b) {
                *c += 1;
            }
        }
    }
}

#[raw_tracepoint(tracepoint = "sys_enter")]
pub fn sys_enter(ctx: RawTracePointContext) -> i32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let Some(target) = target_of((pid_tgid >> 32) as u32) else {
        return 0;
    };
    let nr: i64 = ctx.arg(1);
    let nr = nr as u32;
    if nr == NR_EXIT || nr == NR_EXIT_GROUP {
        // These never reach sys_exit: count them here.
        record(&ctx, target, nr, 0, None);
        if config(CONFIG_FAILURES) != 0 {
            failures::exit_called(&ctx, pid_tgid, nr);
        }
        return 0;
    }
    let tid = pid_tgid as u32;
    let args = if http::is_socket_call(nr) && config(CONFIG_HTTP) != 0 {
        let args = http::syscall_args(&ctx);
        if nr == NR_CLOSE {
            http::on_close((pid_tgid >> 32) as u32, args[0] as u32);
        }
        args
    } else {
        [0; 3]
    };
    if let Some(slot) = INFLIGHT.get_ptr_mut(tid & INFLIGHT_SLOT_MASK) {
        // SAFETY: plain helper call.
        let start_ns = unsafe { bpf_ktime_get_ns() };
        // SAFETY: `slot` is a valid pointer into the array map's value.
        unsafe {
            let holder = (*slot).tid;
            let shared = (*slot)._pad & SLOT_SHARED;
            let entry = Inflight {
                tid,
                target,
                nr,
                _pad: shared,
                start_ns,
                args,
            };
            if holder != 0 && holder != tid {
                // Another targeted thread is inside a call on this slot: this one is kept
                // apart, and the slot says where to look.
                #[allow(clippy::needless_borrows_for_generic_args)] // see ZERO_STATS
                if INFLIGHT_SHARED.insert(tid, &entry, 0).is_ok() {
                    (*slot)._pad = SLOT_SHARED;
                }
            } else {
                *slot = entry;
            }
        }
    }
    0
}

#[raw_tracepoint(tracepoint = "sys_exit")]
pub fn sys_exit(ctx: RawTracePointContext) -> i32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tid = pid_tgid as u32;
    let Some(slot) = INFLIGHT.get_ptr_mut(tid & INFLIGHT_SLOT_MASK) else {
        return 0;
    };
    // SAFETY: `slot` is a valid pointer into the array map's value; only this thread's own
    // enter/exit write an entry whose tid equals its tid.
    let (target, nr, start, args) = unsafe {
        if (*slot).tid == tid && tid != 0 {
            (*slot).tid = 0;
            ((*slot).target, (*slot).nr, (*slot).start_ns, (*slot).args)
        } else if (*slot)._pad & SLOT_SHARED != 0 && tid != 0 {
            let Some(e) = INFLIGHT_SHARED.get(tid) else {
                return 0;
            };
            let found = (e.target, e.nr, e.start_ns, e.args);
            let _ = INFLIGHT_SHARED.remove(tid);
            found
        } else {
            return 0;
        }
    };
    // SAFETY: plain helper call.
    let now = unsafe { bpf_ktime_get_ns() };
    let ret: i64 = ctx.arg(1);
    // An entry the agent made for a call blocked when it started has no start time.
    let duration = (start != 0).then(|| now.saturating_sub(start));
    record(&ctx, target, nr, ret, duration);
    if http::is_socket_call(nr) && config(CONFIG_HTTP) != 0 {
        http::on_exit(&ctx, (pid_tgid >> 32) as u32, target, nr, ret, &args, now);
    }
    0
}

#[tracepoint(category = "task", name = "task_newtask")]
pub fn task_newtask(ctx: TracePointContext) -> u32 {
    // The current task is the parent. Only registered processes are followed: cgroup
    // members stay members through fork, and host mode covers everything already.
    let parent = (bpf_get_current_pid_tgid() >> 32) as u32;
    let Some(target) = pid_target(parent) else {
        return 0;
    };
    // SAFETY: read_at goes through bpf_probe_read_kernel on the tracepoint record.
    let flags: u64 = match unsafe { ctx.read_at(read_global(&NEWTASK_FLAGS_OFFSET) as usize) } {
        Ok(v) => v,
        Err(_) => return 0,
    };
    if flags & CLONE_THREAD != 0 {
        return 0;
    }
    // SAFETY: as above.
    let child: i32 = match unsafe { ctx.read_at(read_global(&NEWTASK_PID_OFFSET) as usize) } {
        Ok(v) => v,
        Err(_) => return 0,
    };
    if !add_target(child as u32, target) && diag::first(DIAG_TARGETS_OVERFLOW_FULL) {
        warn!(
            &ctx,
            "TARGETS_OVERFLOW is full ({} processes): process {} of target {} is not followed",
            OVERFLOW_ENTRIES,
            child,
            target
        );
    }
    0
}

/// Register `tgid` under `target`; false when it could not be (the overflow map is full).
#[inline(always)]
fn add_target(tgid: u32, target: u32) -> bool {
    let Some(slot) = TARGETS.get_ptr_mut(tgid & TARGET_SLOT_MASK) else {
        return true;
    };
    // SAFETY: `slot` is a valid pointer into the array map's value.
    unsafe {
        let cur = *slot;
        if cur.target_index() == 0 || cur.tgid == tgid {
            *slot = TargetSlot {
                tgid,
                target: target | (cur.target & SLOT_OVERFLOW),
            };
        } else if TARGETS_OVERFLOW.insert(tgid, target, 0).is_ok() {
            (*slot).target = cur.target | SLOT_OVERFLOW;
        } else {
            return false;
        }
    }
    true
}

#[tracepoint(category = "sched", name = "sched_process_exit")]
pub fn sched_process_exit(ctx: TracePointContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    // A thread that exits inside a call (killed) leaves no holder on its in-flight slot.
    let tid = pid_tgid as u32;
    if let Some(slot) = INFLIGHT.get_ptr_mut(tid & INFLIGHT_SLOT_MASK) {
        // SAFETY: `slot` is a valid pointer into the array map's value.
        unsafe {
            if (*slot).tid == tid {
                (*slot).tid = 0;
            }
        }
    }
    let off = read_global(&EXIT_GROUP_DEAD_OFFSET);
    let last_thread = if off != 0 {
        // SAFETY: read_at goes through bpf_probe_read_kernel on the tracepoint record.
        match unsafe { ctx.read_at::<u8>(off as usize) } {
            Ok(v) => v != 0,
            Err(_) => return 0,
        }
    } else {
        pid_tgid as u32 == tgid
    };
    // Before the process leaves the target maps: its target is still known.
    if config(CONFIG_FAILURES) != 0 {
        failures::task_exit(tgid, tid, last_thread);
    }
    if !last_thread {
        return 0;
    }
    let Some(slot) = TARGETS.get_ptr_mut(tgid & TARGET_SLOT_MASK) else {
        return 0;
    };
    // SAFETY: `slot` is a valid pointer into the array map's value.
    unsafe {
        let cur = *slot;
        if cur.tgid == tgid && cur.target_index() != 0 {
            *slot = TargetSlot {
                tgid: 0,
                target: cur.target & SLOT_OVERFLOW,
            };
        } else if cur.has_overflow() {
            let _ = TARGETS_OVERFLOW.remove(tgid);
        }
    }
    0
}

/// Empty programs on the same hooks: the cost floor the benchmark compares against.
#[raw_tracepoint(tracepoint = "sys_enter")]
pub fn noop_sys_enter(_ctx: RawTracePointContext) -> i32 {
    0
}

#[raw_tracepoint(tracepoint = "sys_exit")]
pub fn noop_sys_exit(_ctx: RawTracePointContext) -> i32 {
    0
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[link_section = "license"]
#[no_mangle]
static LICENSE: [u8; 4] = *b"GPL\0";
