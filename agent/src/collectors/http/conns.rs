//! The kernel's per-connection states (`CONNS`), read by the agent to end exchanges the
//! kernel cannot end itself: those of a process that died with requests open (the kernel
//! closes its sockets without a close call the programs see), and those whose state the
//! LRU map evicted under pressure. Each such request is counted as aborted, so the
//! in-flight gauge never stays above what is really open. Read while requests are open,
//! they also tell how long the oldest has waited and how long a response has been silent
//! (stalls).
use std::collections::{BTreeMap, HashMap, HashSet};

use agent_common::{ConnState, CONN_REQUEST, CONN_RESPONSE, CONN_RESPONSE_HEAD};
use aya::maps::{HashMap as BpfHashMap, MapData};
use serde::Serialize;

/// Why a request was counted as aborted (the `reason` label).
pub const PROCESS_EXIT: &str = "process_exit";
pub const EVICTED: &str = "evicted";

pub struct Conns {
    map: BpfHashMap<MapData, u64, ConnState>,
    /// Per target: requests lost to eviction suspected at the last sweep.
    suspected: HashMap<u32, u64>,
}

#[inline]
fn open(c: &ConnState) -> bool {
    matches!(c.phase, CONN_REQUEST | CONN_RESPONSE | CONN_RESPONSE_HEAD)
}

impl Conns {
    pub fn new(map: BpfHashMap<MapData, u64, ConnState>) -> Conns {
        Conns {
            map,
            suspected: HashMap::new(),
        }
    }

    /// End the exchanges of processes that are gone: their entries are removed; the
    /// open ones are counted per target.
    pub fn end_dead(&mut self, dead: &HashSet<u32>) -> HashMap<u32, u64> {
        let mut ended: HashMap<u32, u64> = HashMap::new();
        if dead.is_empty() {
            return ended;
        }
        let gone: Vec<(u64, Option<u32>)> = self
            .map
            .iter()
            .filter_map(Result::ok)
            .filter(|(k, _)| dead.contains(&((k >> 32) as u32)))
            .map(|(k, c)| (k, open(&c).then_some(c.ev.req.target)))
            .collect();
        for (key, target) in gone {
            if self.map.remove(&key).is_ok() {
                if let Some(t) = target {
                    *ended.entry(t).or_default() += 1;
                }
            }
        }
        ended
    }

    /// The open exchanges per target as the kernel holds them at `now_ns` (its clock).
    pub fn scan(&self, now_ns: u64) -> HashMap<u32, Open> {
        let mut out: HashMap<u32, Open> = HashMap::new();
        for (_, c) in self.map.iter().filter_map(Result::ok) {
            if open(&c) {
                out.entry(c.ev.req.target).or_default().add(&c, now_ns);
            }
        }
        out
    }

    /// Requests the counters say are open but no connection state holds any more (the
    /// LRU map evicted it): counted when seen at two sweeps in a row (a request that
    /// starts or ends while a sweep runs differs at one sweep only).
    pub fn evicted(
        &mut self,
        counted_open: &BTreeMap<u32, u64>,
        held: &HashMap<u32, Open>,
    ) -> HashMap<u32, u64> {
        let mut lost = HashMap::new();
        let mut suspected = HashMap::new();
        for (t, n) in counted_open {
            let missing = n.saturating_sub(held.get(t).map_or(0, |o| o.exchanges));
            if missing == 0 {
                continue;
            }
            let before = self.suspected.get(t).copied().unwrap_or(0);
            let confirmed = missing.min(before);
            if confirmed > 0 {
                lost.insert(*t, confirmed);
            }
            suspected.insert(*t, missing - confirmed);
        }
        self.suspected = suspected;
        lost
    }
}

/// A target's open exchanges at one scan.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Open {
    pub exchanges: u64,
    /// Age of the oldest request read and not yet answered (no status line written).
    pub oldest_request_ns: Option<u64>,
    /// Time since the last write of the longest-silent response in progress.
    pub stream_idle_ns: Option<u64>,
}

impl Open {
    fn add(&mut self, c: &ConnState, now_ns: u64) {
        self.exchanges += 1;
        let r = &c.ev.req;
        let (since, slot) = if c.phase == CONN_REQUEST {
            (r.req_start_ns, &mut self.oldest_request_ns)
        } else {
            (r.resp_end_ns, &mut self.stream_idle_ns)
        };
        // 0: a request the agent found blocked at its start (no time known).
        if since != 0 {
            let age = now_ns.saturating_sub(since);
            *slot = Some(slot.map_or(age, |a| a.max(age)));
        }
    }
}
