//! Target processes from /proc: up, CPU, memory, threads, descriptors, start time. A
//! process target is its root process and every descendant (as the kernel side follows
//! forks); a cgroup target is every process in the cgroup or below it.
use std::{
    collections::HashMap,
    path::{Path, PathBuf},
};

use serde::Serialize;

use crate::targets::{cgroup2_mount, Target, TargetKind, Targets};

/// One target's processes, summed. A figure no process could be read for is absent.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProcessSample {
    pub target: String,
    /// The root process exists (process targets) or the cgroup holds a process.
    pub up: bool,
    pub processes: u64,
    pub pids: Vec<u32>,
    pub cpu_seconds: Option<f64>,
    pub resident_bytes: Option<u64>,
    pub threads: Option<u64>,
    pub open_fds: Option<u64>,
    /// Unix time the target's oldest process started.
    pub start_time_seconds: Option<f64>,
}

/// The process table of one reading: parent → children.
fn children() -> HashMap<u32, Vec<u32>> {
    let mut map: HashMap<u32, Vec<u32>> = HashMap::new();
    if let Ok(all) = procfs::process::all_processes() {
        for p in all.flatten() {
            if let Ok(stat) = p.stat() {
                if let (Ok(pid), Ok(ppid)) = (u32::try_from(stat.pid), u32::try_from(stat.ppid)) {
                    map.entry(ppid).or_default().push(pid);
                }
            }
        }
    }
    map
}

fn tree(root: u32, children: &HashMap<u32, Vec<u32>>) -> Vec<u32> {
    let mut out = vec![root];
    let mut i = 0;
    while i < out.len() {
        if let Some(kids) = children.get(&out[i]) {
            out.extend(kids);
        }
        i += 1;
    }
    out
}

fn cgroup_pids(dir: &Path, out: &mut Vec<u32>) {
    if let Ok(text) = std::fs::read_to_string(dir.join("cgroup.procs")) {
        out.extend(text.lines().filter_map(|l| l.trim().parse::<u32>().ok()));
    }
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                cgroup_pids(&e.path(), out);
            }
        }
    }
}

/// Read every process and cgroup target (the host target has none).
pub fn sample(targets: &Targets) -> Vec<ProcessSample> {
    let table = children();
    let boot = procfs::boot_time_secs().ok();
    let tps = procfs::ticks_per_second() as f64;
    let page = procfs::page_size();
    let mount: Option<PathBuf> = cgroup2_mount();
    targets
        .iter()
        .filter_map(|t| {
            let (pids, root_alive) = members(t, &table, mount.as_deref())?;
            Some(read(t, pids, root_alive, boot, tps, page))
        })
        .collect()
}

fn members(
    t: &Target,
    table: &HashMap<u32, Vec<u32>>,
    mount: Option<&Path>,
) -> Option<(Vec<u32>, Option<bool>)> {
    match &t.kind {
        TargetKind::Host => None,
        TargetKind::Cgroup { path, .. } => {
            let mut pids = Vec::new();
            if let Some(m) = mount {
                cgroup_pids(&m.join(path.strip_prefix("/").unwrap_or(path)), &mut pids);
            }
            Some((pids, None))
        }
        _ => match t.pid() {
            Some(pid) if crate::targets::process_alive(pid) => Some((tree(pid, table), Some(true))),
            _ => Some((Vec::new(), Some(false))),
        },
    }
}

fn read(
    t: &Target,
    pids: Vec<u32>,
    root_alive: Option<bool>,
    boot: Option<u64>,
    tps: f64,
    page: u64,
) -> ProcessSample {
    let mut s = ProcessSample {
        target: t.name.clone(),
        up: root_alive.unwrap_or(!pids.is_empty()),
        processes: 0,
        pids: Vec::with_capacity(pids.len()),
        cpu_seconds: None,
        resident_bytes: None,
        threads: None,
        open_fds: None,
        start_time_seconds: None,
    };
    let add = |acc: &mut Option<u64>, v: u64| *acc = Some(acc.unwrap_or(0) + v);
    let mut cpu_ticks = None;
    let mut oldest: Option<u64> = None;
    for pid in pids {
        let Ok(p) = procfs::process::Process::new(i32::try_from(pid).unwrap_or(i32::MAX)) else {
            continue;
        };
        // A process that exits between listing and reading is skipped, not counted as 0.
        let Ok(stat) = p.stat() else { continue };
        s.processes += 1;
        s.pids.push(pid);
        add(&mut cpu_ticks, stat.utime + stat.stime);
        add(&mut s.resident_bytes, stat.rss * page);
        add(&mut s.threads, u64::try_from(stat.num_threads).unwrap_or(0));
        if let Ok(n) = p.fd_count() {
            add(&mut s.open_fds, n as u64);
        }
        oldest = Some(oldest.map_or(stat.starttime, |o| o.min(stat.starttime)));
    }
    s.cpu_seconds = cpu_ticks.map(|t| t as f64 / tps);
    s.start_time_seconds = match (oldest, boot) {
        (Some(start), Some(boot)) => Some(boot as f64 + start as f64 / tps),
        _ => None,
    };
    s
}
