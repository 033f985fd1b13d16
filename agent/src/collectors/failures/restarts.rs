//! Restarts of a target: its processes were all replaced by new ones. A process target
//! (PID file, name) restarted when its root process is another one (PID and start time)
//! than the last one seen; a cgroup target (a systemd unit's too) when the cgroup was
//! created again or holds processes none of which it held the last time it held any.
//! Times with no process at all in between are not restarts by themselves: a server
//! stopped for good counts none.
use std::collections::BTreeSet;

/// What a target's processes were the last time it had some.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Seen {
    Root { pid: u32, started: u64 },
    Cgroup { id: u64, pids: BTreeSet<u32> },
}

#[derive(Debug, Default)]
pub struct Restarts {
    last: Option<Seen>,
    pub count: u64,
}

impl Restarts {
    /// A process target's root process now (`None`: none alive).
    pub fn root(&mut self, root: Option<(u32, u64)>) {
        let Some((pid, started)) = root else {
            return;
        };
        self.observe(Seen::Root { pid, started }, |last, now| last != now);
    }

    /// A cgroup target's cgroup id and processes now.
    pub fn cgroup(&mut self, id: u64, pids: &[u32]) {
        if pids.is_empty() {
            return;
        }
        let now = Seen::Cgroup {
            id,
            pids: pids.iter().copied().collect(),
        };
        self.observe(now, |last, now| match (last, now) {
            (Seen::Cgroup { id: a, pids: p }, Seen::Cgroup { id: b, pids: q }) => {
                a != b || p.is_disjoint(q)
            }
            _ => true,
        });
    }

    fn observe(&mut self, now: Seen, replaced: impl Fn(&Seen, &Seen) -> bool) {
        if let Some(last) = &self.last {
            if replaced(last, &now) {
                self.count += 1;
            }
        }
        self.last = Some(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_root_process_is_a_restart_and_a_gap_is_not() {
        let mut r = Restarts::default();
        r.root(Some((10, 100)));
        r.root(Some((10, 100)));
        assert_eq!(r.count, 0);
        r.root(None);
        r.root(None);
        assert_eq!(r.count, 0, "a stopped server is not restarted");
        r.root(Some((11, 200)));
        assert_eq!(r.count, 1);
        // The same PID again, but another process.
        r.root(Some((11, 300)));
        assert_eq!(r.count, 2);
        r.root(Some((11, 300)));
        assert_eq!(r.count, 2);
    }

    #[test]
    fn a_cgroup_restarts_when_recreated_or_wholly_replaced() {
        let mut r = Restarts::default();
        r.cgroup(5, &[1, 2]);
        r.cgroup(5, &[2, 3]);
        assert_eq!(r.count, 0, "a worker replaced while the main process lives");
        r.cgroup(5, &[]);
        r.cgroup(5, &[7]);
        assert_eq!(r.count, 1, "emptied and filled again");
        r.cgroup(6, &[7, 8]);
        assert_eq!(r.count, 2, "created again (a restarted unit)");
        r.cgroup(6, &[9]);
        assert_eq!(r.count, 3, "every process replaced between two readings");
    }
}
