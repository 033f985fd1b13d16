//! A target's OOM kills: the victims the kernel programs mapped to it, and for a cgroup
//! target (cgroup v2 with the memory controller) its `memory.events` counters, which
//! also see kills the programs could not map. The count is the larger of the two (each
//! is a lower bound of the same events), so a kill both see counts once.
use std::{
    path::Path,
    time::{Duration, Instant},
};

/// Victims are kept this long as their own alert instances (labelled by PID).
pub const VICTIM_KEEP: Duration = Duration::from_secs(3600);
/// At most this many recent victims per target (the oldest go first).
pub const VICTIMS_MAX: usize = 16;

/// `memory.events`' `oom` and `oom_kill` lines; `None` when the file is not there (no
/// memory controller on the cgroup v2 hierarchy) or has neither.
pub fn memory_events(cgroup_dir: &Path) -> Option<(u64, u64)> {
    let text = std::fs::read_to_string(cgroup_dir.join("memory.events")).ok()?;
    parse_memory_events(&text)
}

pub fn parse_memory_events(text: &str) -> Option<(u64, u64)> {
    let mut oom = None;
    let mut kill = None;
    for line in text.lines() {
        let mut f = line.split_whitespace();
        match (f.next(), f.next().and_then(|v| v.parse::<u64>().ok())) {
            (Some("oom"), Some(v)) => oom = Some(v),
            (Some("oom_kill"), Some(v)) => kill = Some(v),
            _ => {}
        }
    }
    Some((oom?, kill?))
}

#[derive(Debug, Clone, PartialEq)]
pub struct Victim {
    pub pid: u32,
    pub kills: u64,
    pub last: Instant,
}

/// One cgroup's `memory.events` as first read and as last read.
#[derive(Debug, Clone, Copy)]
struct Events {
    cgroup: u64,
    base: (u64, u64),
    now: (u64, u64),
}

#[derive(Debug, Default)]
pub struct Oom {
    /// Kills the kernel programs mapped to the target.
    pub attributed: u64,
    pub victims: Vec<Victim>,
    events: Option<Events>,
    /// `memory.events` growth of the target's earlier cgroups (before it was recreated).
    earlier: (u64, u64),
}

impl Oom {
    pub fn victim(&mut self, pid: u32, now: Instant) {
        self.attributed += 1;
        match self.victims.iter_mut().find(|v| v.pid == pid) {
            Some(v) => {
                v.kills += 1;
                v.last = now;
            }
            None => self.victims.push(Victim {
                pid,
                kills: 1,
                last: now,
            }),
        }
        if self.victims.len() > VICTIMS_MAX {
            self.victims.remove(0);
        }
    }

    pub fn prune(&mut self, now: Instant) {
        self.victims
            .retain(|v| now.saturating_duration_since(v.last) < VICTIM_KEEP);
    }

    /// This tick's `memory.events` of cgroup `id`: a cgroup seen for the first time
    /// starts from what it holds now, unless it replaced an earlier one (then it is new
    /// and counts from 0).
    pub fn events(&mut self, id: u64, read: (u64, u64)) {
        match &mut self.events {
            Some(e) if e.cgroup == id => e.now = read,
            Some(e) => {
                self.earlier.0 += e.now.0.saturating_sub(e.base.0);
                self.earlier.1 += e.now.1.saturating_sub(e.base.1);
                self.events = Some(Events {
                    cgroup: id,
                    base: (0, 0),
                    now: read,
                });
            }
            None => {
                self.events = Some(Events {
                    cgroup: id,
                    base: read,
                    now: read,
                })
            }
        }
    }

    /// OOM situations and kills `memory.events` counted since the target was added.
    pub fn events_total(&self) -> Option<(u64, u64)> {
        let e = self.events?;
        Some((
            self.earlier.0 + e.now.0.saturating_sub(e.base.0),
            self.earlier.1 + e.now.1.saturating_sub(e.base.1),
        ))
    }

    pub fn kills(&self) -> u64 {
        let counted = self.events_total().map_or(0, |e| e.1);
        self.attributed.max(counted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_events_lines() {
        let text = "low 0\nhigh 0\nmax 12\noom 3\noom_kill 2\noom_group_kill 0\n";
        assert_eq!(parse_memory_events(text), Some((3, 2)));
        assert_eq!(parse_memory_events("low 0\n"), None);
        assert_eq!(parse_memory_events("oom x\noom_kill 1\n"), None);
    }

    #[test]
    fn a_kill_seen_twice_counts_once_and_a_recreated_cgroup_counts_from_zero() {
        let mut o = Oom::default();
        let t = Instant::now();
        o.events(1, (4, 4));
        assert_eq!(o.kills(), 0, "kills before the target was added");
        o.victim(100, t);
        o.events(1, (5, 5));
        assert_eq!(o.kills(), 1);
        o.events(1, (7, 7));
        assert_eq!(o.kills(), 3, "two the programs did not map");
        o.events(2, (1, 1));
        assert_eq!(o.events_total(), Some((4, 4)));
        assert_eq!(o.kills(), 4);
    }

    #[test]
    fn victims_are_kept_an_hour_and_bounded() {
        let mut o = Oom::default();
        let t = Instant::now();
        for pid in 0..20 {
            o.victim(pid, t);
        }
        o.victim(19, t);
        assert_eq!(o.attributed, 21);
        assert_eq!(o.victims.len(), VICTIMS_MAX);
        assert_eq!(o.victims[0].pid, 4);
        assert_eq!(o.victims.last().map(|v| v.kills), Some(2));
        o.prune(t + VICTIM_KEEP);
        assert!(o.victims.is_empty());
    }
}
