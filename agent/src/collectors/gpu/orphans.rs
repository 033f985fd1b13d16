//! GPU processes left behind by a target that died: a worker whose server was OOM-killed
//! keeps its GPU memory, and the next server start fails for want of it. Each GPU process
//! that is one of a target's processes is remembered with that target (and which root
//! process it was under); when the target's root is gone (the target is down, or it came
//! back as another process) while the process still holds GPU memory, it is an orphan of
//! that target.
use std::collections::{HashMap, HashSet};

use super::DeviceReading;

/// What the tick says about one target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct TargetStatus<'a> {
    pub name: &'a str,
    /// Its root process's start time (`None` for cgroup targets, or while none is found).
    pub root: Option<u64>,
    /// Its root process exists (cgroup targets: it holds a process).
    pub up: bool,
}

/// The target a GPU process last belonged to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Holder {
    target: u32,
    /// The target's root process then (start time).
    root: Option<u64>,
    /// The process's own start time, so that a later process with its PID is not taken
    /// for it.
    started: Option<u64>,
}

#[derive(Debug, Default)]
pub(super) struct Holders {
    by_pid: HashMap<u32, Holder>,
}

impl Holders {
    /// Set each GPU process's `orphan_of`. `member_of` gives the target a process belongs
    /// to this tick, `status` what is known of a target (`None`: removed, or not read),
    /// `started` a process's start time. With `listed` (NVML's process lists were read)
    /// processes that no longer hold GPU memory are forgotten.
    pub fn update<'a>(
        &mut self,
        gpus: &mut [DeviceReading],
        member_of: impl Fn(u32) -> Option<u32>,
        status: impl Fn(u32) -> Option<TargetStatus<'a>>,
        started: impl Fn(u32) -> Option<u64>,
        listed: bool,
    ) {
        if listed {
            let held: HashSet<u32> = gpus
                .iter()
                .flat_map(|g| g.processes.iter().map(|p| p.pid))
                .collect();
            self.by_pid.retain(|pid, _| held.contains(pid));
        }
        // A process on several GPUs is decided once.
        let mut decided: HashMap<u32, Option<String>> = HashMap::new();
        for p in gpus.iter_mut().flat_map(|g| g.processes.iter_mut()) {
            let orphan_of = decided
                .entry(p.pid)
                .or_insert_with(|| self.decide(p.pid, &member_of, &status, &started))
                .clone();
            p.orphan_of = orphan_of;
        }
    }

    fn decide<'a>(
        &mut self,
        pid: u32,
        member_of: &impl Fn(u32) -> Option<u32>,
        status: &impl Fn(u32) -> Option<TargetStatus<'a>>,
        started: &impl Fn(u32) -> Option<u64>,
    ) -> Option<String> {
        if let Some(target) = member_of(pid) {
            let root = status(target).and_then(|s| s.root);
            if !self
                .by_pid
                .get(&pid)
                .is_some_and(|h| h.target == target && h.root == root)
            {
                let h = Holder {
                    target,
                    root,
                    started: started(pid),
                };
                self.by_pid.insert(pid, h);
            }
            return None;
        }
        let h = *self.by_pid.get(&pid)?;
        let Some(s) = status(h.target) else {
            // The target was removed: nobody's orphan.
            self.by_pid.remove(&pid);
            return None;
        };
        if started(pid) != h.started {
            // Another process has the PID now.
            self.by_pid.remove(&pid);
            return None;
        }
        let gone = !s.up || s.root != h.root;
        gone.then(|| s.name.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collectors::gpu::GpuProcess;

    fn gpu(pids: &[u32]) -> DeviceReading {
        DeviceReading {
            processes: pids
                .iter()
                .map(|&pid| GpuProcess {
                    pid,
                    used_memory_bytes: Some(1 << 30),
                    sm_util_percent: None,
                    mem_util_percent: None,
                    target: None,
                    orphan_of: None,
                })
                .collect(),
            ..Default::default()
        }
    }

    fn orphans(gpus: &[DeviceReading]) -> Vec<(u32, Option<String>)> {
        gpus.iter()
            .flat_map(|g| g.processes.iter().map(|p| (p.pid, p.orphan_of.clone())))
            .collect()
    }

    /// One target `svc` (index 1) with root 100 (start time 1) and worker 101.
    struct World {
        members: Vec<u32>,
        up: bool,
        root: Option<u64>,
        removed: bool,
        started: HashMap<u32, u64>,
    }

    impl World {
        fn new() -> World {
            World {
                members: vec![100, 101],
                up: true,
                root: Some(1),
                removed: false,
                started: HashMap::from([(100, 1), (101, 2)]),
            }
        }

        fn tick(&self, h: &mut Holders, gpus: &mut [DeviceReading], listed: bool) {
            h.update(
                gpus,
                |pid| self.members.contains(&pid).then_some(1),
                |t| {
                    (t == 1 && !self.removed).then_some(TargetStatus {
                        name: "svc",
                        root: self.root,
                        up: self.up,
                    })
                },
                |pid| self.started.get(&pid).copied(),
                listed,
            );
        }
    }

    #[test]
    fn a_worker_left_by_a_dead_root_is_an_orphan_until_it_exits() {
        let mut w = World::new();
        let mut h = Holders::default();
        let mut gpus = vec![gpu(&[101, 555])];
        w.tick(&mut h, &mut gpus, true);
        // Its target lives; 555 never belonged to a target.
        assert_eq!(orphans(&gpus), vec![(101, None), (555, None)]);
        // The server dies (the worker is re-parented, no longer a member).
        w.members.clear();
        w.up = false;
        w.root = None;
        w.tick(&mut h, &mut gpus, true);
        assert_eq!(orphans(&gpus), vec![(101, Some("svc".into())), (555, None)]);
        // It leaves the GPU: forgotten, so the same PID later is nobody's orphan.
        let mut gpus = vec![gpu(&[555])];
        w.tick(&mut h, &mut gpus, true);
        let mut gpus = vec![gpu(&[101])];
        w.tick(&mut h, &mut gpus, true);
        assert_eq!(orphans(&gpus), vec![(101, None)]);
    }

    #[test]
    fn a_restarted_target_leaves_the_old_workers_orphaned_not_the_new_ones() {
        let mut w = World::new();
        let mut h = Holders::default();
        let mut gpus = vec![gpu(&[101]), gpu(&[101])];
        w.tick(&mut h, &mut gpus, true);
        // Restarted: a new root (200) with a new worker (201); 101 was left behind.
        w.members = vec![200, 201];
        w.root = Some(7);
        w.started.extend([(200, 7), (201, 8)]);
        let mut gpus = vec![gpu(&[101, 201]), gpu(&[101])];
        w.tick(&mut h, &mut gpus, true);
        assert_eq!(
            orphans(&gpus),
            vec![
                (101, Some("svc".into())),
                (201, None),
                (101, Some("svc".into()))
            ]
        );
    }

    #[test]
    fn a_reused_pid_a_removed_target_or_an_unread_list_make_no_orphan() {
        let mut w = World::new();
        let mut h = Holders::default();
        let mut gpus = vec![gpu(&[101])];
        w.tick(&mut h, &mut gpus, true);
        w.members.clear();
        w.up = false;
        // NVML's lists not read this time: nothing forgotten.
        w.tick(&mut h, &mut [], false);
        w.tick(&mut h, &mut gpus, true);
        assert_eq!(orphans(&gpus), vec![(101, Some("svc".into()))]);
        // PID 101 is another process now.
        w.started.insert(101, 99);
        w.tick(&mut h, &mut gpus, true);
        assert_eq!(orphans(&gpus), vec![(101, None)]);

        let mut w = World::new();
        let mut h = Holders::default();
        w.tick(&mut h, &mut gpus, true);
        w.members.clear();
        w.removed = true;
        w.tick(&mut h, &mut gpus, true);
        assert_eq!(orphans(&gpus), vec![(101, None)]);
    }
}
