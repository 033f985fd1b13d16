//! TCP retransmits and connection state changes of the targets. Both tracepoints often
//! fire in softirq context, where the current task is whichever was interrupted: sockets
//! are attributed by what a target did in process context (its listening ports, and
//! sockets whose state it changed: connect, close), then by the socket's local port. Only
//! the states a process enters by its own calls (connect, listen, close, shutdown) are
//! credited to the current task; the others may be entered in an interrupt. (A BPF
//! program cannot read the record's common flags: the kernel writes the registers'
//! address over them.)
use agent_common::{TcpStats, HTTP_TARGETS, HTTP_TARGET_MASK};
use aya_ebpf::{
    helpers::bpf_get_current_pid_tgid,
    macros::{map, tracepoint},
    maps::{HashMap, LruHashMap, PerCpuArray},
    programs::TracePointContext,
};

use crate::{read_global, target_of};

const IPPROTO_TCP: u16 = 6;
const TCP_CLOSE: i32 = 7;
const TCP_LISTEN: i32 = 10;

#[no_mangle]
static RETRANS_SKADDR_OFFSET: u32 = 16;
#[no_mangle]
static RETRANS_SPORT_OFFSET: u32 = 28;
#[no_mangle]
static STATE_SKADDR_OFFSET: u32 = 8;
#[no_mangle]
static STATE_NEWSTATE_OFFSET: u32 = 20;
#[no_mangle]
static STATE_SPORT_OFFSET: u32 = 24;
#[no_mangle]
static STATE_PROTOCOL_OFFSET: u32 = 30;

const TCP_SYN_SENT: i32 = 2;
const TCP_FIN_WAIT1: i32 = 4;
const TCP_LAST_ACK: i32 = 9;

#[map]
static TCP_STATS: PerCpuArray<TcpStats> = PerCpuArray::with_max_entries(HTTP_TARGETS, 0);

/// Socket address → target.
#[map]
static SOCK_OWNER: LruHashMap<u64, u32> = LruHashMap::with_max_entries(65536, 0);

/// Listening port → target (accepted sockets inherit the port).
#[map]
static PORT_OWNER: HashMap<u16, u32> = HashMap::with_max_entries(1024, 0);

#[inline(always)]
fn read<T>(ctx: &TracePointContext, off: &'static u32) -> Option<T> {
    // SAFETY: read_at goes through bpf_probe_read_kernel on the tracepoint record.
    unsafe { ctx.read_at::<T>(read_global(off) as usize) }.ok()
}

#[inline(always)]
fn owner(sk: u64, sport: u16) -> Option<u32> {
    // SAFETY: the values are plain u32s copied out at once.
    unsafe {
        if let Some(t) = SOCK_OWNER.get(sk) {
            return Some(*t);
        }
        PORT_OWNER.get(sport).copied()
    }
}

#[inline(always)]
fn stats(target: u32) -> Option<*mut TcpStats> {
    TCP_STATS.get_ptr_mut(target & HTTP_TARGET_MASK)
}

#[tracepoint(category = "tcp", name = "tcp_retransmit_skb")]
pub fn tcp_retransmit_skb(ctx: TracePointContext) -> u32 {
    let (Some(sk), Some(sport)) = (
        read::<u64>(&ctx, &RETRANS_SKADDR_OFFSET),
        read::<u16>(&ctx, &RETRANS_SPORT_OFFSET),
    ) else {
        return 0;
    };
    if let Some(s) = owner(sk, sport).and_then(stats) {
        // SAFETY: `s` points at this CPU's value.
        unsafe { (*s).retransmits += 1 };
    }
    0
}

#[tracepoint(category = "sock", name = "inet_sock_set_state")]
pub fn inet_sock_set_state(ctx: TracePointContext) -> u32 {
    if read::<u16>(&ctx, &STATE_PROTOCOL_OFFSET) != Some(IPPROTO_TCP) {
        return 0;
    }
    let (Some(sk), Some(new), Some(sport)) = (
        read::<u64>(&ctx, &STATE_SKADDR_OFFSET),
        read::<i32>(&ctx, &STATE_NEWSTATE_OFFSET),
        read::<u16>(&ctx, &STATE_SPORT_OFFSET),
    ) else {
        return 0;
    };
    // States only a process's own calls enter (connect, listen, close, shutdown): the
    // current task did it.
    let by_call = matches!(
        new,
        TCP_SYN_SENT | TCP_LISTEN | TCP_FIN_WAIT1 | TCP_LAST_ACK
    );
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    let current = (tgid != 0 && by_call).then(|| target_of(tgid)).flatten();
    let target = match current {
        Some(t) => {
            let _ = SOCK_OWNER.insert(sk, t, 0);
            if new == TCP_LISTEN {
                let _ = PORT_OWNER.insert(sport, t, 0);
            }
            t
        }
        None => match owner(sk, sport) {
            Some(t) => {
                let _ = SOCK_OWNER.insert(sk, t, 0);
                t
            }
            None => return 0,
        },
    };
    if let Some(s) = stats(target) {
        // SAFETY: `s` points at this CPU's value.
        unsafe {
            if let Some(c) = (*s).state_changes.get_mut((new & 15) as usize) {
                *c += 1;
            }
        }
    }
    if new == TCP_CLOSE {
        let _ = SOCK_OWNER.remove(sk);
    }
    0
}
