//! The kernel's view of the targets: the TGID slot array (with its overflow hash), the
//! cgroup ids, and the CONFIG words (lookup mode, cgroup depths, collector switches).
//! Placement follows the same rule as the kernel's fork handler.
use agent_common::{
    Inflight, TargetSlot, CONFIG_CGROUP_LEVELS, CONFIG_MODE, INFLIGHT_SLOT_MASK, MAX_CGROUP_LEVELS,
    MODE_ALL, MODE_CGROUP, SLOT_OVERFLOW, TARGET_SLOTS, TARGET_SLOT_MASK,
};
use aya::{
    maps::{Array, HashMap, MapData, MapError},
    Ebpf,
};

use super::{take, EbpfError};
use crate::targets::{descendants, Change, Target, TargetKind, Targets};

fn map_err(name: &'static str) -> impl Fn(MapError) -> EbpfError {
    move |source| EbpfError::Map { name, source }
}

/// Remove `key`, where a key already gone is fine (the kernel's exit handler may have
/// removed it first).
fn remove_if_present<K: aya::Pod>(
    map: &mut HashMap<MapData, K, u32>,
    key: &K,
    name: &'static str,
) -> Result<(), EbpfError> {
    match map.remove(key) {
        Ok(()) | Err(MapError::KeyNotFound) => Ok(()),
        Err(MapError::SyscallError(e)) if e.io_error.kind() == std::io::ErrorKind::NotFound => {
            Ok(())
        }
        Err(e) => Err(map_err(name)(e)),
    }
}

pub(super) struct TargetMaps {
    config: Array<MapData, u32>,
    targets: Array<MapData, TargetSlot>,
    overflow: HashMap<MapData, u32, u32>,
    cgroups: HashMap<MapData, u64, u32>,
    inflight: Array<MapData, Inflight>,
}

/// accept and accept4: a call blocked in them when a process becomes a target is given its
/// in-flight entry, so its exit (the accepted connection) is seen.
const ACCEPT_CALLS: [u32; 2] = [43, 288];

/// (syscall number, first three arguments) of a thread blocked in a syscall, from
/// `/proc/<tgid>/task/<tid>/syscall`; `None` when it runs or cannot be read.
fn blocked_call(tgid: u32, tid: u32) -> Option<(u32, [u64; 3])> {
    let text = std::fs::read_to_string(format!("/proc/{tgid}/task/{tid}/syscall")).ok()?;
    let mut f = text.split_whitespace();
    let nr: u32 = f.next()?.parse().ok()?;
    let mut arg = || u64::from_str_radix(f.next()?.trim_start_matches("0x"), 16).ok();
    Some((nr, [arg()?, arg()?, arg()?]))
}

impl TargetMaps {
    pub(super) fn take(bpf: &mut Ebpf) -> Result<TargetMaps, EbpfError> {
        Ok(TargetMaps {
            config: take(bpf, "CONFIG", Array::try_from)?,
            targets: take(bpf, "TARGETS", Array::try_from)?,
            overflow: take(bpf, "TARGETS_OVERFLOW", HashMap::try_from)?,
            cgroups: take(bpf, "CGROUP_TARGETS", HashMap::try_from)?,
            inflight: take(bpf, "INFLIGHT", Array::try_from)?,
        })
    }

    pub(super) fn register(&mut self, targets: &Targets) -> Result<(), EbpfError> {
        for t in targets.iter() {
            self.add_target(t)?;
        }
        self.set_mode(targets)
    }

    pub(super) fn set_config(&mut self, index: u32, value: u32) -> Result<(), EbpfError> {
        self.config.set(index, value, 0).map_err(map_err("CONFIG"))
    }

    pub(super) fn apply(&mut self, changes: &[Change]) -> Result<(), EbpfError> {
        for c in changes {
            match *c {
                Change::Pid { index, old, new } => {
                    if let Some(old) = old {
                        self.remove_pid(old)?;
                    }
                    if let Some(new) = new {
                        self.add_tree(new, index)?;
                    }
                }
                // The agent removes an ended target (and its processes) as a whole.
                Change::Ended { .. } => {}
                Change::Cgroup { index, old, new } => {
                    remove_if_present(&mut self.cgroups, &old, "CGROUP_TARGETS")?;
                    self.cgroups
                        .insert(new, index, 0)
                        .map_err(map_err("CGROUP_TARGETS"))?;
                }
            }
        }
        Ok(())
    }

    /// The target's processes or cgroup into the lookup maps (the mode is set apart).
    pub(super) fn add_target(&mut self, t: &Target) -> Result<(), EbpfError> {
        match &t.kind {
            TargetKind::Host => Ok(()),
            TargetKind::Pid { .. }
            | TargetKind::PidFile { .. }
            | TargetKind::Process { .. }
            | TargetKind::GpuProcess { .. } => match t.pid() {
                Some(pid) => self.add_tree(pid, t.index),
                None => Ok(()),
            },
            TargetKind::Cgroup { id, .. } => self
                .cgroups
                .insert(id, t.index, 0)
                .map_err(map_err("CGROUP_TARGETS")),
        }
    }

    /// Every slot and overflow entry of the target's processes (its forks included, which
    /// only the kernel knew), or its cgroup, out of the lookup maps.
    pub(super) fn remove_target(&mut self, t: &Target) -> Result<(), EbpfError> {
        if let TargetKind::Cgroup { id, .. } = &t.kind {
            return remove_if_present(&mut self.cgroups, id, "CGROUP_TARGETS");
        }
        for index in 0..TARGET_SLOTS {
            let cur = self.targets.get(&index, 0).map_err(map_err("TARGETS"))?;
            if cur.target_index() == t.index {
                let slot = TargetSlot {
                    tgid: 0,
                    target: cur.target & SLOT_OVERFLOW,
                };
                self.targets
                    .set(index, slot, 0)
                    .map_err(map_err("TARGETS"))?;
            }
        }
        let pids: Vec<u32> = self
            .overflow
            .iter()
            .filter_map(Result::ok)
            .filter(|(_, target)| *target == t.index)
            .map(|(pid, _)| pid)
            .collect();
        for pid in pids {
            remove_if_present(&mut self.overflow, &pid, "TARGETS_OVERFLOW")?;
        }
        Ok(())
    }

    /// The lookup mode and the cgroup depths to check, from the whole target list.
    pub(super) fn set_mode(&mut self, targets: &Targets) -> Result<(), EbpfError> {
        let mut mode = 0;
        let mut levels: Vec<u32> = Vec::new();
        for t in targets.iter() {
            match &t.kind {
                TargetKind::Host => mode |= MODE_ALL,
                TargetKind::Cgroup { level, .. } => {
                    mode |= MODE_CGROUP;
                    if !levels.contains(level) {
                        levels.push(*level);
                    }
                }
                _ => {}
            }
        }
        if levels.len() > MAX_CGROUP_LEVELS as usize {
            return Err(EbpfError::TooManyCgroupLevels);
        }
        // Unused slots are 0: the kernel stops at the first.
        for i in 0..MAX_CGROUP_LEVELS {
            let level = levels.get(i as usize).copied().unwrap_or(0);
            self.set_config(CONFIG_CGROUP_LEVELS + i, level)?;
        }
        self.set_config(CONFIG_MODE, mode)
    }

    /// The root first: from here on the kernel follows its forks, then the workers it
    /// started before we came.
    pub(super) fn add_tree(&mut self, pid: u32, target: u32) -> Result<(), EbpfError> {
        self.add_pid(pid, target)?;
        self.blocked_accepts(pid, target)?;
        for child in descendants(pid) {
            self.add_pid(child, target)?;
            self.blocked_accepts(child, target)?;
        }
        Ok(())
    }

    /// In-flight entries for the process's threads blocked in accept: the call entered
    /// before the programs saw it, and its exit alone is enough to follow the connection.
    /// No start time: the call is counted, not timed.
    fn blocked_accepts(&mut self, tgid: u32, target: u32) -> Result<(), EbpfError> {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{tgid}/task")) else {
            return Ok(());
        };
        for tid in tasks
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        {
            let Some((nr, args)) = blocked_call(tgid, tid) else {
                continue;
            };
            if !ACCEPT_CALLS.contains(&nr) {
                continue;
            }
            let entry = Inflight {
                tid,
                target,
                nr,
                _pad: 0,
                start_ns: 0,
                args,
            };
            self.inflight
                .set(tid & INFLIGHT_SLOT_MASK, entry, 0)
                .map_err(map_err("INFLIGHT"))?;
        }
        Ok(())
    }

    /// Forget a process that is gone (its exit handler normally did it already).
    fn remove_pid(&mut self, pid: u32) -> Result<(), EbpfError> {
        let index = pid & TARGET_SLOT_MASK;
        let cur = self.targets.get(&index, 0).map_err(map_err("TARGETS"))?;
        if cur.tgid == pid && cur.target_index() != 0 {
            let slot = TargetSlot {
                tgid: 0,
                target: cur.target & SLOT_OVERFLOW,
            };
            return self.targets.set(index, slot, 0).map_err(map_err("TARGETS"));
        }
        if !cur.has_overflow() {
            // The exit handler cleared the slot and nothing of it is in the overflow map.
            return Ok(());
        }
        remove_if_present(&mut self.overflow, &pid, "TARGETS_OVERFLOW")
    }

    /// Same placement rule as the kernel's fork handler: the slot if free, else the
    /// overflow map with the slot flagged.
    fn add_pid(&mut self, pid: u32, target: u32) -> Result<(), EbpfError> {
        let index = pid & TARGET_SLOT_MASK;
        let cur = self.targets.get(&index, 0).map_err(map_err("TARGETS"))?;
        if cur.target_index() == 0 || cur.tgid == pid {
            let slot = TargetSlot {
                tgid: pid,
                target: target | (cur.target & SLOT_OVERFLOW),
            };
            self.targets.set(index, slot, 0).map_err(map_err("TARGETS"))
        } else {
            self.overflow
                .insert(pid, target, 0)
                .map_err(map_err("TARGETS_OVERFLOW"))?;
            let slot = TargetSlot {
                tgid: cur.tgid,
                target: cur.target | SLOT_OVERFLOW,
            };
            self.targets.set(index, slot, 0).map_err(map_err("TARGETS"))
        }
    }
}
