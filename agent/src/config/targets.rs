//! What to trace, as asked on the command line or in the file, before it is resolved
//! against the running system (`crate::targets`). Targets on the command line replace the
//! file's (they are not merged), so a one-off `--pid` never silently also traces what the
//! file names.
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::{file::TargetsSection, ConfigError, Overrides};

/// What to trace, before it is checked against the running system (see `targets`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetRequest {
    Pid {
        pid: u32,
        name: Option<String>,
        endpoints: Endpoints,
    },
    Cgroup {
        path: PathBuf,
        name: Option<String>,
        endpoints: Endpoints,
    },
    /// The process whose PID a file holds, read again whenever that process is gone.
    PidFile {
        path: PathBuf,
        name: Option<String>,
        endpoints: Endpoints,
    },
    /// The process named `comm` (its /proc comm or executable name), found again by name
    /// whenever it is gone.
    Process {
        comm: String,
        name: Option<String>,
        endpoints: Endpoints,
    },
}

impl TargetRequest {
    /// The target's own endpoints as asked (none: discovered).
    pub fn endpoints(&self) -> &Endpoints {
        match self {
            TargetRequest::Pid { endpoints, .. }
            | TargetRequest::Cgroup { endpoints, .. }
            | TargetRequest::PidFile { endpoints, .. }
            | TargetRequest::Process { endpoints, .. } => endpoints,
        }
    }
}

/// A target's own HTTP endpoints, where they are not to be discovered: its engine's
/// Prometheus metrics (`metrics_url`) and its health check (`health_url`, or
/// `health_path` on the target's own listening port).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Endpoints {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub health_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub health_path: Option<String>,
}

/// Why a target's endpoint value was refused: the key and the reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadEndpoint {
    pub key: &'static str,
    pub value: String,
    pub reason: &'static str,
}

impl Endpoints {
    /// The endpoints from their keys (file or API), each checked.
    pub fn checked(
        metrics_url: Option<&str>,
        health_url: Option<&str>,
        health_path: Option<&str>,
    ) -> Result<Endpoints, BadEndpoint> {
        let bad = |key, value: &str, reason| BadEndpoint {
            key,
            value: value.to_string(),
            reason,
        };
        let url = |key, v: Option<&str>| -> Result<Option<String>, BadEndpoint> {
            let Some(v) = v else { return Ok(None) };
            let uri: hyper::Uri = v
                .parse()
                .map_err(|_| bad(key, v, "expected an http:// or https:// URL"))?;
            if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none() {
                return Err(bad(key, v, "expected an http:// or https:// URL"));
            }
            Ok(Some(v.to_string()))
        };
        let metrics_url = url("metrics_url", metrics_url)?;
        let health_url = url("health_url", health_url)?;
        if let Some(p) = health_path {
            if !p.starts_with('/') || p.contains(char::is_whitespace) {
                return Err(bad("health_path", p, "expected a path such as /health"));
            }
            if health_url.is_some() {
                return Err(bad(
                    "health_path",
                    p,
                    "give health_url or health_path, not both",
                ));
            }
        }
        Ok(Endpoints {
            metrics_url,
            health_url,
            health_path: health_path.map(str::to_string),
        })
    }
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
                TargetRequest::PidFile {
                    path,
                    name,
                    endpoints: Endpoints::default(),
                }
            })?);
        }
        for c in &over.processes {
            let (comm, name) = split_name(c);
            list.push(TargetRequest::Process {
                comm: non_empty("--process", c, comm, "expected a process name")?,
                name,
                endpoints: Endpoints::default(),
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
        // Each entry's endpoint keys, checked; an error names the entry's key.
        let endpoints = |at: String, e: [&Option<String>; 3]| {
            Endpoints::checked(e[0].as_deref(), e[1].as_deref(), e[2].as_deref()).map_err(|b| {
                ConfigError::Invalid {
                    origin: file_origin(&format!("{at}.{}", b.key)),
                    value: b.value,
                    reason: b.reason.into(),
                }
            })
        };
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
                endpoints: endpoints(
                    format!("targets.pid[{i}]"),
                    [&p.metrics_url, &p.health_url, &p.health_path],
                )?,
            });
        }
        for (i, c) in file.cgroup.iter().enumerate() {
            list.push(TargetRequest::Cgroup {
                path: c.path.clone(),
                name: c.name.clone(),
                endpoints: endpoints(
                    format!("targets.cgroup[{i}]"),
                    [&c.metrics_url, &c.health_url, &c.health_path],
                )?,
            });
        }
        for (i, f) in file.pid_file.iter().enumerate() {
            list.push(TargetRequest::PidFile {
                path: f.path.clone(),
                name: f.name.clone(),
                endpoints: endpoints(
                    format!("targets.pid_file[{i}]"),
                    [&f.metrics_url, &f.health_url, &f.health_path],
                )?,
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
                endpoints: endpoints(
                    format!("targets.process[{i}]"),
                    [&p.metrics_url, &p.health_url, &p.health_path],
                )?,
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
        Ok(pid) if pid > 0 => Ok(TargetRequest::Pid {
            pid,
            name,
            endpoints: Endpoints::default(),
        }),
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
        endpoints: Endpoints::default(),
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
