//! Targets: what the kernel programs trace, resolved against the running system.
//!
//! A target is a process (its TGID; its children follow through fork), a cgroup v2 (every
//! process in it or below it), or the whole host. Each target gets a stable index used as
//! the key in the kernel maps and a name used as the `target` label.
//!
//! Paths may come from the API: a PID file is read only if it is a regular file, opened
//! without blocking and read up to `PID_FILE_MAX` bytes; a cgroup path may not leave the
//! cgroup mount.
use std::{
    collections::{HashMap, HashSet},
    io::Read,
    os::unix::fs::MetadataExt,
    path::{Component, Path, PathBuf},
};

use serde::Serialize;

use crate::config::{Endpoints, TargetRequest, TargetSpec};

pub mod sockets;

#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error("--pid {0}: no such process")]
    NoProcess(u32),
    #[error("--cgroup {path}: {reason}")]
    Cgroup { path: String, reason: String },
    #[error("--pid-file {path}: {reason}")]
    PidFile { path: String, reason: String },
    #[error("target name {0:?} is used twice: give each target its own name (PID=name)")]
    DuplicateName(String),
    #[error("the agent traces the whole host (--all): no other target can be added")]
    HostMode,
    #[error("no target index left: at most {} targets may be added while the agent runs", agent_common::HTTP_TARGETS - 1)]
    Full,
    #[error("{0} targets are traced already ([agent] max_targets)")]
    Limit(u32),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum TargetKind {
    Host,
    Pid {
        pid: u32,
    },
    /// Found through a PID file; `pid` is absent while no live process is found.
    PidFile {
        path: PathBuf,
        pid: Option<u32>,
    },
    /// Found by process name (also: a GPU process in `--gpu-processes` mode).
    Process {
        comm: String,
        pid: Option<u32>,
    },
    Cgroup {
        path: PathBuf,
        #[serde(skip)]
        id: u64,
        #[serde(skip)]
        level: u32,
    },
    /// A process holding a GPU context (`--gpu-processes`): the target ends with it.
    #[serde(rename = "gpu_process")]
    GpuProcess {
        pid: u32,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Target {
    /// Key in the kernel maps; 0 is the host target.
    pub index: u32,
    pub name: String,
    #[serde(flatten)]
    pub kind: TargetKind,
    /// When its root process started (clock ticks after boot, /proc's `starttime`): a
    /// process that has the same PID later is another process.
    #[serde(skip)]
    pub started: Option<u64>,
    /// Its own metrics and health endpoints as configured (none: discovered).
    #[serde(flatten)]
    pub endpoints: Endpoints,
}

/// The resolved target list.
#[derive(Debug, Clone, Default)]
pub struct Targets {
    list: Vec<Target>,
    /// The next index to hand out. Indexes are never reused while the agent runs, so a
    /// new target never inherits the kernel counters of a removed one.
    next: u32,
    /// Most targets at once (`[agent] max_targets`).
    limit: u32,
}

impl Targets {
    pub fn resolve(spec: &TargetSpec) -> Result<Targets, TargetError> {
        Self::resolve_limited(spec, crate::config::DEFAULT_MAX_TARGETS)
    }

    /// Resolve with at most `limit` targets at once (`[agent] max_targets`).
    pub fn resolve_limited(spec: &TargetSpec, limit: u32) -> Result<Targets, TargetError> {
        let mut targets = Targets {
            list: Vec::new(),
            next: 1,
            limit,
        };
        match spec {
            TargetSpec::Host => targets.list.push(Target {
                index: agent_common::HOST_TARGET,
                name: "host".into(),
                kind: TargetKind::Host,
                started: None,
                endpoints: Endpoints::default(),
            }),
            TargetSpec::List(reqs) => {
                for req in reqs {
                    targets.add(req)?;
                }
            }
        }
        Ok(targets)
    }

    /// Whether the whole host is the one target.
    pub fn is_host(&self) -> bool {
        self.list.iter().any(|t| t.kind == TargetKind::Host)
    }

    /// Resolve `req` and add it under a fresh index.
    pub fn add(&mut self, req: &TargetRequest) -> Result<&Target, TargetError> {
        if self.is_host() {
            return Err(TargetError::HostMode);
        }
        if self.list.len() >= self.limit as usize {
            return Err(TargetError::Limit(self.limit));
        }
        let index = self.free_index().ok_or(TargetError::Full)?;
        let t = resolve_one(index, req)?;
        if self.list.iter().any(|x| x.name == t.name) {
            return Err(TargetError::DuplicateName(t.name));
        }
        self.next += 1;
        self.list.push(t);
        Ok(&self.list[self.list.len() - 1])
    }

    /// Stop tracing the target named `name`; the removed target, if there was one.
    pub fn remove(&mut self, name: &str) -> Option<Target> {
        let i = self.list.iter().position(|t| t.name == name)?;
        Some(self.list.remove(i))
    }

    /// Whether `req` would resolve now, and the target it would be (index 0).
    pub fn check(req: &TargetRequest) -> Result<Target, TargetError> {
        resolve_one(0, req)
    }

    fn free_index(&self) -> Option<u32> {
        (self.next < agent_common::HTTP_TARGETS).then_some(self.next)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Target> {
        self.list.iter()
    }

    /// Look again for the process of each PID-file or name target whose process is gone,
    /// and for a cgroup that was removed and created again (a restarted systemd unit gets
    /// a new cgroup id). Returns what changed, for the kernel maps.
    pub fn refresh(&mut self) -> Vec<Change> {
        let mut changes = Vec::new();
        let mut table = None;
        for t in &mut self.list {
            let alive = t.alive();
            let (index, started) = (t.index, &mut t.started);
            match &mut t.kind {
                TargetKind::PidFile { path, pid } => {
                    if alive {
                        continue;
                    }
                    let new = read_pid_file(path);
                    if new.map(|p| p.0) != *pid {
                        changes.push(Change::Pid {
                            index,
                            old: *pid,
                            new: new.map(|p| p.0),
                        });
                    }
                    *pid = new.map(|p| p.0);
                    *started = new.map(|p| p.1);
                }
                TargetKind::Process { comm, pid } => {
                    if alive {
                        continue;
                    }
                    let table = table.get_or_insert_with(processes);
                    let new = find_process(comm, table);
                    if new.map(|p| p.0) != *pid {
                        changes.push(Change::Pid {
                            index,
                            old: *pid,
                            new: new.map(|p| p.0),
                        });
                    }
                    *pid = new.map(|p| p.0);
                    *started = new.map(|p| p.1);
                }
                TargetKind::GpuProcess { .. } if !alive => {
                    changes.push(Change::Ended { index });
                }
                TargetKind::Cgroup { path, id, .. } => {
                    let full =
                        cgroup2_mount().map(|m| m.join(path.strip_prefix("/").unwrap_or(path)));
                    let now = full
                        .and_then(|f| std::fs::metadata(f).ok())
                        .map(|m| m.ino());
                    if let Some(new) = now.filter(|n| n != id) {
                        changes.push(Change::Cgroup {
                            index,
                            old: *id,
                            new,
                        });
                        *id = new;
                    }
                }
                TargetKind::Host | TargetKind::Pid { .. } | TargetKind::GpuProcess { .. } => {}
            }
        }
        changes
    }

    /// Add a process found at run time (a GPU process) as a target of its own; `None` when
    /// the kernel maps have no index left.
    pub fn add_process(&mut self, pid: u32) -> Option<&Target> {
        if self.list.len() >= self.limit as usize {
            return None;
        }
        let index = self.free_index()?;
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
        let comm = comm.trim_end().to_string();
        let mut name = comm.clone();
        if self.list.iter().any(|t| t.name == name) {
            name = format!("{comm}-{pid}");
        }
        self.next += 1;
        self.list.push(Target {
            index,
            name,
            kind: TargetKind::GpuProcess { pid },
            started: start_time(pid),
            endpoints: Endpoints::default(),
        });
        self.list.last()
    }

    pub fn name_of(&self, index: u32) -> Option<&str> {
        self.list
            .iter()
            .find(|t| t.index == index)
            .map(|t| t.name.as_str())
    }
}

/// What `Targets::refresh` changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Pid {
        index: u32,
        old: Option<u32>,
        new: Option<u32>,
    },
    Cgroup {
        index: u32,
        old: u64,
        new: u64,
    },
    /// A GPU-process target whose process exited: it is removed.
    Ended {
        index: u32,
    },
}

impl Target {
    /// The root process of a process target, when it is known.
    pub fn pid(&self) -> Option<u32> {
        match &self.kind {
            TargetKind::Pid { pid } | TargetKind::GpuProcess { pid } => Some(*pid),
            TargetKind::PidFile { pid, .. } | TargetKind::Process { pid, .. } => *pid,
            TargetKind::Host | TargetKind::Cgroup { .. } => None,
        }
    }

    /// Whether its root process still lives: the PID exists and started when the one
    /// found did (not a later process that got the same PID).
    pub fn alive(&self) -> bool {
        self.pid()
            .is_some_and(|pid| same_process(pid, self.started))
    }
}

/// When process `pid` started (clock ticks after boot), if it exists.
pub fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The comm field may hold spaces and parentheses: parse after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// Whether `pid` is the process that started at `started` (any process, when unknown).
fn same_process(pid: u32, started: Option<u64>) -> bool {
    match started {
        Some(s) => start_time(pid) == Some(s),
        None => process_alive(pid),
    }
}

fn resolve_one(index: u32, req: &TargetRequest) -> Result<Target, TargetError> {
    let mut t = match req {
        TargetRequest::Pid { pid, name, .. } => resolve_pid(index, *pid, name.as_deref())?,
        TargetRequest::Cgroup { path, name, .. } => resolve_cgroup(index, path, name.as_deref())?,
        // These may be down at start (a supervisor starts the server later): the target
        // exists and is reported down until its process appears.
        TargetRequest::PidFile { path, name, .. } => {
            // Not there yet is fine; there and not a regular file (a FIFO, a device, a
            // directory) never holds a PID.
            if std::fs::metadata(path).is_ok_and(|m| !m.is_file()) {
                return Err(TargetError::PidFile {
                    path: path.display().to_string(),
                    reason: "not a regular file".into(),
                });
            }
            pid_file_target(index, path, name.as_ref())
        }
        TargetRequest::Process { comm, name, .. } => {
            let found = find_process(comm, &processes());
            Target {
                index,
                name: name.clone().unwrap_or_else(|| comm.clone()),
                kind: TargetKind::Process {
                    comm: comm.clone(),
                    pid: found.map(|p| p.0),
                },
                started: found.map(|p| p.1),
                endpoints: Endpoints::default(),
            }
        }
    };
    t.endpoints = req.endpoints().clone();
    Ok(t)
}

fn pid_file_target(index: u32, path: &Path, name: Option<&String>) -> Target {
    let found = read_pid_file(path);
    Target {
        index,
        name: name.cloned().unwrap_or_else(|| {
            path.file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| path.display().to_string())
        }),
        kind: TargetKind::PidFile {
            path: path.to_path_buf(),
            pid: found.map(|p| p.0),
        },
        started: found.map(|p| p.1),
        endpoints: Endpoints::default(),
    }
}

/// Bytes of a PID file read: a PID and a newline, with room to spare.
pub const PID_FILE_MAX: u64 = 64;

/// The live process a PID file names, if any, with its start time. Opened without
/// blocking (a FIFO would wait for a writer) and read only when it is a regular file, and
/// only its first bytes. The process must be the one that wrote it, or one the writer
/// knew: started no later than the file was last written (a PID reused by a later process
/// is not it). PID 1 and the agent itself never are (a container's PID file can hold its
/// own namespace's PID 1).
fn read_pid_file(path: &Path) -> Option<(u32, u64)> {
    use rustix::fs::{Mode, OFlags};
    let flags = OFlags::RDONLY | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC;
    let file = std::fs::File::from(rustix::fs::open(path, flags, Mode::empty()).ok()?);
    let meta = file.metadata().ok()?;
    if !meta.is_file() {
        return None;
    }
    let mut text = String::new();
    file.take(PID_FILE_MAX).read_to_string(&mut text).ok()?;
    let pid: u32 = text.trim().parse().ok()?;
    if pid <= 1 || pid == std::process::id() {
        return None;
    }
    let started = start_time(pid)?;
    let tps = procfs::ticks_per_second() as f64;
    let boot = procfs::boot_time_secs().ok()? as f64;
    let written = meta
        .modified()
        .ok()?
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?
        .as_secs_f64();
    // A second of slack: boot time and the file's time have coarse clocks.
    (boot + started as f64 / tps <= written + 1.0).then_some((pid, started))
}

/// (pid, parent, comm, exe name, start time) of every process.
struct ProcInfo {
    pid: u32,
    ppid: u32,
    names: [String; 2],
    start: u64,
}

fn processes() -> Vec<ProcInfo> {
    let Ok(all) = procfs::process::all_processes() else {
        return Vec::new();
    };
    all.flatten()
        .filter_map(|p| {
            let stat = p.stat().ok()?;
            let exe = p
                .exe()
                .ok()
                .and_then(|e| e.file_name().map(|n| n.to_string_lossy().into_owned()))
                .unwrap_or_default();
            Some(ProcInfo {
                pid: u32::try_from(stat.pid).ok()?,
                ppid: u32::try_from(stat.ppid).ok()?,
                names: [stat.comm, exe],
                start: stat.starttime,
            })
        })
        .collect()
}

/// The oldest process named `comm` whose parent is not also named so (the server, not
/// one of its workers, which the kernel follows from it anyway).
fn find_process(comm: &str, table: &[ProcInfo]) -> Option<(u32, u64)> {
    let named = |p: &ProcInfo| p.names.iter().any(|n| n == comm);
    let matching: HashSet<u32> = table.iter().filter(|p| named(p)).map(|p| p.pid).collect();
    table
        .iter()
        .filter(|p| matching.contains(&p.pid) && !matching.contains(&p.ppid))
        .min_by_key(|p| (p.start, p.pid))
        .map(|p| (p.pid, p.start))
}

fn resolve_pid(index: u32, pid: u32, name: Option<&str>) -> Result<Target, TargetError> {
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .map_err(|_| TargetError::NoProcess(pid))?;
    Ok(Target {
        index,
        name: name.map_or_else(|| comm.trim_end().to_string(), str::to_string),
        kind: TargetKind::Pid { pid },
        started: start_time(pid),
        endpoints: Endpoints::default(),
    })
}

fn resolve_cgroup(index: u32, path: &Path, name: Option<&str>) -> Result<Target, TargetError> {
    let err = |reason: String| TargetError::Cgroup {
        path: path.display().to_string(),
        reason,
    };
    // ".." could leave the mount (and the process collector walks the cgroup each tick).
    if path.components().any(|c| c == Component::ParentDir) {
        return Err(err(
            "must be a path below the cgroup mount, without \"..\"".into()
        ));
    }
    let mount = cgroup2_mount().ok_or_else(|| err("no cgroup v2 hierarchy is mounted".into()))?;
    // Accept a full path below the mount point, or a path relative to the hierarchy's root
    // (as systemd and /proc/PID/cgroup write it: /system.slice/x.service).
    let full = if path.starts_with(&mount) {
        path.to_path_buf()
    } else {
        mount.join(path.strip_prefix("/").unwrap_or(path))
    };
    let meta = std::fs::metadata(&full)
        .map_err(|_| err(format!("no such cgroup (looked for {})", full.display())))?;
    if !meta.is_dir() {
        return Err(err(format!("{} is not a cgroup directory", full.display())));
    }
    let rel = full.strip_prefix(&mount).unwrap_or(Path::new(""));
    let level = u32::try_from(rel.components().count()).unwrap_or(u32::MAX);
    if level == 0 {
        return Err(err(
            "is the root cgroup: use --all to trace the whole host".into()
        ));
    }
    let default_name = rel
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    Ok(Target {
        index,
        name: name.map_or(default_name, str::to_string),
        kind: TargetKind::Cgroup {
            path: Path::new("/").join(rel),
            // The cgroup v2 id the kernel reports is the directory's inode number.
            id: meta.ino(),
            level,
        },
        started: None,
        endpoints: Endpoints::default(),
    })
}

/// Where the cgroup v2 hierarchy is mounted (`/sys/fs/cgroup` on unified hosts,
/// `/sys/fs/cgroup/unified` on hybrid ones).
pub fn cgroup2_mount() -> Option<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    text.lines().find_map(|line| {
        // Fields: id parent major:minor root mountpoint options... - fstype source options
        let (pre, post) = line.split_once(" - ")?;
        let fstype = post.split_whitespace().next()?;
        let mountpoint = pre.split_whitespace().nth(4)?;
        (fstype == "cgroup2").then(|| PathBuf::from(mountpoint))
    })
}

/// Each target's live processes at one reading of the process table: a process target's
/// root and its descendants (as the kernel follows forks), a cgroup target's processes in
/// the cgroup and below it. The host target has none.
#[derive(Debug, Default)]
pub struct Members {
    per_target: HashMap<u32, TargetMembers>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct TargetMembers {
    pub pids: Vec<u32>,
    /// Process targets: whether the root process exists; cgroup targets: `None`.
    pub root_alive: Option<bool>,
}

impl TargetMembers {
    /// The root process exists (process targets) or the cgroup holds a process.
    pub fn up(&self) -> bool {
        self.root_alive.unwrap_or(!self.pids.is_empty())
    }
}

impl Members {
    /// Read the process table once for every target.
    pub fn read(targets: &Targets) -> Members {
        let table = children_table();
        let mount = cgroup2_mount();
        let per_target = targets
            .iter()
            .filter_map(|t| Some((t.index, members(t, &table, mount.as_deref())?)))
            .collect();
        Members { per_target }
    }

    /// A target's processes (`None` for the host target or one not read).
    pub fn of(&self, index: u32) -> Option<&TargetMembers> {
        self.per_target.get(&index)
    }

    /// Every process of every target.
    pub fn pids(&self) -> impl Iterator<Item = u32> + '_ {
        self.per_target
            .values()
            .flat_map(|m| m.pids.iter().copied())
    }
}

/// The process table of one reading: parent → children.
fn children_table() -> HashMap<u32, Vec<u32>> {
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

/// Cgroups (the target's and those below it) read per target and tick, at most: the walk
/// runs on the tick thread.
pub const MAX_CGROUPS: usize = 4096;

/// The processes in `dir` and the cgroups below it (directories only, symlinks not
/// followed), visiting at most `*budget` cgroups.
fn cgroup_pids(dir: &Path, out: &mut Vec<u32>, budget: &mut usize) {
    if *budget == 0 {
        return;
    }
    *budget -= 1;
    if let Ok(text) = std::fs::read_to_string(dir.join("cgroup.procs")) {
        out.extend(text.lines().filter_map(|l| l.trim().parse::<u32>().ok()));
    }
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                cgroup_pids(&e.path(), out, budget);
            }
        }
    }
}

fn members(
    t: &Target,
    table: &HashMap<u32, Vec<u32>>,
    mount: Option<&Path>,
) -> Option<TargetMembers> {
    match &t.kind {
        TargetKind::Host => None,
        TargetKind::Cgroup { path, .. } => {
            let mut pids = Vec::new();
            if let Some(m) = mount {
                let mut budget = MAX_CGROUPS;
                cgroup_pids(
                    &m.join(path.strip_prefix("/").unwrap_or(path)),
                    &mut pids,
                    &mut budget,
                );
            }
            Some(TargetMembers {
                pids,
                root_alive: None,
            })
        }
        _ => Some(match t.pid() {
            Some(pid) if t.alive() => TargetMembers {
                pids: tree(pid, table),
                root_alive: Some(true),
            },
            _ => TargetMembers {
                pids: Vec::new(),
                root_alive: Some(false),
            },
        }),
    }
}

/// Processes that currently descend from `root` (not including it). Forks after the
/// target is registered are followed in the kernel; this covers workers started before.
pub fn descendants(root: u32) -> Vec<u32> {
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for entry in dir.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<u32>().ok())
            else {
                continue;
            };
            if let Some(ppid) = parent_of(pid) {
                children.entry(ppid).or_default().push(pid);
            }
        }
    }
    let mut out = Vec::new();
    let mut stack = vec![root];
    while let Some(p) = stack.pop() {
        if let Some(kids) = children.get(&p) {
            for &k in kids {
                out.push(k);
                stack.push(k);
            }
        }
    }
    out
}

fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The comm field may hold spaces and parentheses: parse after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

pub fn process_alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

#[cfg(test)]
mod tests;
