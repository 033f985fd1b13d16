//! The kernel's per-connection states (`CONNS`), read by the agent to end exchanges the
//! kernel cannot end itself: those of a process that died with requests open (the kernel
//! closes its sockets without a close call the programs see), and those whose state the
//! LRU map evicted under pressure. Each such request is counted as aborted, so the
//! in-flight gauge never stays above what is really open.
use std::collections::{BTreeMap, HashMap, HashSet};

use agent_common::{ConnState, CONN_REQUEST, CONN_RESPONSE, CONN_RESPONSE_HEAD};
use aya::maps::{HashMap as BpfHashMap, MapData};

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

    /// Open exchanges per target, as the kernel holds them now.
    pub fn open_per_target(&self) -> HashMap<u32, u64> {
        let mut out: HashMap<u32, u64> = HashMap::new();
        for (_, c) in self.map.iter().filter_map(Result::ok) {
            if open(&c) {
                *out.entry(c.ev.req.target).or_default() += 1;
            }
        }
        out
    }

    /// Requests the counters say are open but no connection state holds any more (the
    /// LRU map evicted it): counted when seen at two sweeps in a row (a request that
    /// starts or ends while a sweep runs differs at one sweep only).
    pub fn evicted(&mut self, counted_open: &BTreeMap<u32, u64>) -> HashMap<u32, u64> {
        let held = self.open_per_target();
        let mut lost = HashMap::new();
        let mut suspected = HashMap::new();
        for (t, n) in counted_open {
            let missing = n.saturating_sub(held.get(t).copied().unwrap_or(0));
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
