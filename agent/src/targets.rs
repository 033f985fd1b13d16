//! Targets: what the kernel programs trace, resolved against the running system.
//!
//! A target is a process (its TGID; its children follow through fork), a cgroup v2 (every
//! process in it or below it), or the whole host. Each target gets a stable index used as
//! the key in the kernel maps and a name used as the `target` label.
use std::{
    collections::{HashMap, HashSet},
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
};

use serde::Serialize;

use crate::config::{TargetRequest, TargetSpec};

#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error("--pid {0}: no such process")]
    NoProcess(u32),
    #[error("--cgroup {path}: {reason}")]
    Cgroup { path: String, reason: String },
    #[error("target name {0:?} is used twice: give each target its own name (PID=name)")]
    DuplicateName(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum TargetKind {
    Host,
    Pid {
        pid: u32,
    },
    Cgroup {
        path: PathBuf,
        #[serde(skip)]
        id: u64,
        #[serde(skip)]
        level: u32,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Target {
    /// Key in the kernel maps; 0 is the host target.
    pub index: u32,
    pub name: String,
    #[serde(flatten)]
    pub kind: TargetKind,
}

/// The resolved target list.
#[derive(Debug, Clone, Default)]
pub struct Targets {
    list: Vec<Target>,
}

impl Targets {
    pub fn resolve(spec: &TargetSpec) -> Result<Targets, TargetError> {
        let reqs = match spec {
            TargetSpec::Host => {
                return Ok(Targets {
                    list: vec![Target {
                        index: agent_common::HOST_TARGET,
                        name: "host".into(),
                        kind: TargetKind::Host,
                    }],
                })
            }
            TargetSpec::List(reqs) => reqs,
        };
        let mut list = Vec::with_capacity(reqs.len());
        let mut names = HashSet::new();
        for (i, req) in reqs.iter().enumerate() {
            let index = u32::try_from(i + 1).unwrap_or(u32::MAX);
            let t = match req {
                TargetRequest::Pid { pid, name } => resolve_pid(index, *pid, name.as_deref())?,
                TargetRequest::Cgroup { path, name } => {
                    resolve_cgroup(index, path, name.as_deref())?
                }
            };
            if !names.insert(t.name.clone()) {
                return Err(TargetError::DuplicateName(t.name));
            }
            list.push(t);
        }
        Ok(Targets { list })
    }

    pub fn iter(&self) -> impl Iterator<Item = &Target> {
        self.list.iter()
    }

    pub fn name_of(&self, index: u32) -> Option<&str> {
        self.list
            .iter()
            .find(|t| t.index == index)
            .map(|t| t.name.as_str())
    }
}

fn resolve_pid(index: u32, pid: u32, name: Option<&str>) -> Result<Target, TargetError> {
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .map_err(|_| TargetError::NoProcess(pid))?;
    Ok(Target {
        index,
        name: name.map_or_else(|| comm.trim_end().to_string(), str::to_string),
        kind: TargetKind::Pid { pid },
    })
}

fn resolve_cgroup(index: u32, path: &Path, name: Option<&str>) -> Result<Target, TargetError> {
    let err = |reason: String| TargetError::Cgroup {
        path: path.display().to_string(),
        reason,
    };
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
