//! What to trace, as asked on the command line or in the file, before it is resolved
//! against the running system (`crate::targets`). Targets on the command line replace the
//! file's (they are not merged), so a one-off `--pid` never silently also traces what the
//! file names.
use std::path::{Path, PathBuf};

use super::{file::TargetsSection, ConfigError, Overrides};

/// What to trace, before it is checked against the running system (see `targets`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetRequest {
    Pid {
        pid: u32,
        name: Option<String>,
    },
    Cgroup {
        path: PathBuf,
        name: Option<String>,
    },
    /// The process whose PID a file holds, read again whenever that process is gone.
    PidFile {
        path: PathBuf,
        name: Option<String>,
    },
    /// The process named `comm` (its /proc comm or executable name), found again by name
    /// whenever it is gone.
    Process {
        comm: String,
        name: Option<String>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetSpec {
    /// The whole host as one target named `host`.
    Host,
    /// These targets, plus (with `gpu_processes`) every process holding a GPU context.
    List(Vec<TargetRequest>),
}

/// The targets and whether GPU processes become targets, from the flags when they name
/// any target, else from the file.
pub(super) fn targets(
    file: &TargetsSection,
    file_gpu_processes: bool,
    over: &Overrides,
    source: Option<&Path>,
    file_origin: &dyn Fn(&str) -> String,
) -> Result<(TargetSpec, bool), ConfigError> {
    let cli_has_targets = over.all
        || over.gpu_processes
        || !over.pids.is_empty()
        || !over.cgroups.is_empty()
        || !over.pid_files.is_empty()
        || !over.processes.is_empty();
    let gpu_processes = if cli_has_targets {
        over.gpu_processes
    } else {
        file_gpu_processes
    };
    let targets = if cli_has_targets {
        let mut list = Vec::new();
        for p in &over.pids {
            list.push(parse_pid_arg(p)?);
        }
        for c in &over.cgroups {
            list.push(parse_cgroup_arg(c)?);
        }
        for f in &over.pid_files {
            list.push(parse_path_arg("--pid-file", f, |path, name| {
                TargetRequest::PidFile { path, name }
            })?);
        }
        for c in &over.processes {
            let (comm, name) = split_name(c);
            list.push(TargetRequest::Process {
                comm: non_empty("--process", c, comm, "expected a process name")?,
                name,
            });
        }
        spec(
            over.all,
            gpu_processes,
            list,
            "--all cannot be combined with --pid, --cgroup, --pid-file, --process or --gpu-processes",
        )?
    } else {
        let mut list = Vec::new();
        for (i, p) in file.pid.iter().enumerate() {
            if p.pid == 0 {
                return Err(ConfigError::Invalid {
                    origin: file_origin(&format!("targets.pid[{i}].pid")),
                    value: "0".into(),
                    reason: "PID must be positive".into(),
                });
            }
            list.push(TargetRequest::Pid {
                pid: p.pid,
                name: p.name.clone(),
            });
        }
        for c in &file.cgroup {
            list.push(TargetRequest::Cgroup {
                path: c.path.clone(),
                name: c.name.clone(),
            });
        }
        for f in &file.pid_file {
            list.push(TargetRequest::PidFile {
                path: f.path.clone(),
                name: f.name.clone(),
            });
        }
        for (i, p) in file.process.iter().enumerate() {
            list.push(TargetRequest::Process {
                comm: non_empty(
                    &file_origin(&format!("targets.process[{i}].comm")),
                    &p.comm,
                    &p.comm,
                    "expected a process name",
                )?,
                name: p.name.clone(),
            });
        }
        let msg = format!(
            "{}: targets.all = true cannot be combined with other targets or gpu.processes",
            source.map(|p| p.display().to_string()).unwrap_or_default()
        );
        spec(file.all, gpu_processes, list, &msg)?
    };
    Ok((targets, gpu_processes))
}

fn spec(
    all: bool,
    gpu_processes: bool,
    list: Vec<TargetRequest>,
    conflict: &str,
) -> Result<TargetSpec, ConfigError> {
    let some = gpu_processes || !list.is_empty();
    match (all, some) {
        (true, true) => Err(ConfigError::Conflict(conflict.to_string())),
        // No target at all: trace the whole host, so a newcomer sees data at once.
        (_, false) => Ok(TargetSpec::Host),
        (false, true) => Ok(TargetSpec::List(list)),
    }
}

pub(super) fn non_empty(
    origin: &str,
    arg: &str,
    v: &str,
    reason: &str,
) -> Result<String, ConfigError> {
    if v.trim().is_empty() {
        return Err(ConfigError::Invalid {
            origin: origin.into(),
            value: arg.to_string(),
            reason: reason.into(),
        });
    }
    Ok(v.trim().to_string())
}

/// Split `VALUE=name` into the value and an optional non-empty name.
fn split_name(arg: &str) -> (&str, Option<String>) {
    match arg.split_once('=') {
        Some((v, n)) if !n.is_empty() => (v, Some(n.to_string())),
        Some((v, _)) => (v, None),
        None => (arg, None),
    }
}

/// `--pid 1234` or `--pid 1234=vllm`.
pub fn parse_pid_arg(arg: &str) -> Result<TargetRequest, ConfigError> {
    let (v, name) = split_name(arg);
    match v.trim().parse::<u32>() {
        Ok(pid) if pid > 0 => Ok(TargetRequest::Pid { pid, name }),
        _ => Err(ConfigError::Invalid {
            origin: "--pid".into(),
            value: arg.to_string(),
            reason: "expected a positive process ID, optionally with a name (1234=vllm)".into(),
        }),
    }
}

/// `--cgroup /system.slice/vllm.service` or `--cgroup PATH=name`.
pub fn parse_cgroup_arg(arg: &str) -> Result<TargetRequest, ConfigError> {
    parse_path_arg("--cgroup", arg, |path, name| TargetRequest::Cgroup {
        path,
        name,
    })
}

fn parse_path_arg(
    origin: &str,
    arg: &str,
    make: impl FnOnce(PathBuf, Option<String>) -> TargetRequest,
) -> Result<TargetRequest, ConfigError> {
    let (v, name) = split_name(arg);
    let v = non_empty(origin, arg, v, "expected a path")?;
    Ok(make(PathBuf::from(v), name))
}
