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

    fn endpoints_mut(&mut self) -> &mut Endpoints {
        match self {
            TargetRequest::Pid { endpoints, .. }
            | TargetRequest::Cgroup { endpoints, .. }
            | TargetRequest::PidFile { endpoints, .. }
            | TargetRequest::Process { endpoints, .. } => endpoints,
        }
    }

    /// The name asked for, if one was.
    pub fn name(&self) -> Option<&str> {
        match self {
            TargetRequest::Pid { name, .. }
            | TargetRequest::Cgroup { name, .. }
            | TargetRequest::PidFile { name, .. }
            | TargetRequest::Process { name, .. } => name.as_deref(),
        }
    }
}

/// A target's own HTTP endpoints, where they are not to be discovered: its engine's
/// Prometheus metrics (`metrics_url`) and its health check (`health_url`, or
/// `health_path` on the target's own listening port); and which of its listening ports
/// serve its clients (`ports`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Endpoints {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub health_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub health_path: Option<String>,
    /// Its front door, sorted: requests accepted on its other listening ports (a server
    /// calling its own runner or workers over loopback) are not counted as its requests.
    /// Empty: every port.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<u16>,
}

/// A `ports` value as the file or the API wrote it, for checking: a list whose entries
/// are integers or (as text) something else, or (as text) a value that is not a list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PortsValue {
    List(Vec<Result<i64, String>>),
    Other(String),
}

impl PortsValue {
    /// From a TOML value (the file).
    pub fn from_toml(v: &toml::Value) -> PortsValue {
        match v {
            toml::Value::Array(a) => PortsValue::List(
                a.iter()
                    .map(|e| e.as_integer().ok_or_else(|| e.to_string()))
                    .collect(),
            ),
            other => PortsValue::Other(other.to_string()),
        }
    }

    /// From a JSON value (the API).
    pub fn from_json(v: &serde_json::Value) -> PortsValue {
        match v {
            serde_json::Value::Array(a) => PortsValue::List(
                a.iter()
                    .map(|e| e.as_i64().ok_or_else(|| e.to_string()))
                    .collect(),
            ),
            other => PortsValue::Other(other.to_string()),
        }
    }

    /// From `--ports 11434,8080` (the command line).
    pub fn from_arg(arg: &str) -> PortsValue {
        PortsValue::List(
            arg.split(',')
                .map(|p| p.trim().parse::<i64>().map_err(|_| p.trim().to_string()))
                .collect(),
        )
    }
}

/// Why a `ports` entry is refused.
const PORT_RANGE: &str = "expected a TCP port from 1 to 65535";

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
            ports: Vec::new(),
        })
    }

    /// These endpoints with the front-door `ports` (none given: every port), checked: a
    /// non-empty list of TCP ports.
    pub fn with_ports(self, ports: Option<PortsValue>) -> Result<Endpoints, BadEndpoint> {
        let bad = |value: String, reason| BadEndpoint {
            key: "ports",
            value,
            reason,
        };
        let list = match ports {
            None => return Ok(self),
            Some(PortsValue::Other(v)) => {
                return Err(bad(v, "expected a list of ports, such as [11434]"))
            }
            Some(PortsValue::List(l)) if l.is_empty() => {
                return Err(bad(
                    "[]".into(),
                    "expected at least one port (leave ports out for every port)",
                ))
            }
            Some(PortsValue::List(l)) => l,
        };
        let mut ports = Vec::with_capacity(list.len());
        for entry in list {
            let port = entry.map_err(|v| bad(v, PORT_RANGE)).and_then(|n| {
                u16::try_from(n)
                    .ok()
                    .filter(|p| *p > 0)
                    .ok_or_else(|| bad(n.to_string(), PORT_RANGE))
            })?;
            ports.push(port);
        }
        ports.sort_unstable();
        ports.dedup();
        Ok(Endpoints { ports, ..self })
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
        cli_ports(&over.ports, &mut list)?;
        spec(
            over.all,
            gpu_processes,
            list,
            "--all cannot be combined with --pid, --cgroup, --pid-file, --process or --gpu-processes",
        )?
    } else {
        let mut list = Vec::new();
        if !over.ports.is_empty() {
            return Err(ports_without_target());
        }
        // Each entry's endpoint keys, checked; an error names the entry's key.
        let endpoints = |at: String, e: [&Option<String>; 3], ports: &Option<toml::Value>| {
            Endpoints::checked(e[0].as_deref(), e[1].as_deref(), e[2].as_deref())
                .and_then(|e| e.with_ports(ports.as_ref().map(PortsValue::from_toml)))
                .map_err(|b| ConfigError::Invalid {
                    origin: file_origin(&format!("{at}.{}", b.key)),
                    value: b.value,
                    reason: b.reason.into(),
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
                    &p.ports,
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
                    &c.ports,
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
                    &f.ports,
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
                    &p.ports,
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

fn ports_without_target() -> ConfigError {
    ConfigError::Conflict(
        "--ports: applies to targets given with --pid, --cgroup, --pid-file or --process".into(),
    )
}

/// `--ports [NAME=]PORT[,PORT…]` put on the command line's targets: with a name, on the
/// target given that name (`--pid 1234=NAME`); without, on every other one.
fn cli_ports(args: &[String], list: &mut [TargetRequest]) -> Result<(), ConfigError> {
    if args.is_empty() {
        return Ok(());
    }
    if list.is_empty() {
        return Err(ports_without_target());
    }
    let invalid = |arg: &str, reason: String| ConfigError::Invalid {
        origin: "--ports".into(),
        value: arg.to_string(),
        reason,
    };
    let mut named: Vec<(String, Vec<u16>)> = Vec::new();
    let mut unnamed: Option<Vec<u16>> = None;
    for arg in args {
        let (name, value) = match arg.split_once('=') {
            Some((n, v)) => (Some(n.trim()), v),
            None => (None, arg.as_str()),
        };
        let ports = Endpoints::default()
            .with_ports(Some(PortsValue::from_arg(value)))
            .map_err(|b| invalid(arg, format!("{:?}: {}", b.value, b.reason)))?
            .ports;
        match name {
            Some(n) => {
                let known = list.iter().any(|r| r.name() == Some(n));
                if !known {
                    return Err(invalid(
                        arg,
                        format!("no target on the command line is named {n:?}"),
                    ));
                }
                if named.iter().any(|(m, _)| m == n) {
                    return Err(invalid(arg, format!("given twice for {n:?}")));
                }
                named.push((n.to_string(), ports));
            }
            None if unnamed.is_some() => {
                return Err(invalid(
                    arg,
                    "given twice without a name: give NAME=PORTS for each target".into(),
                ))
            }
            None => unnamed = Some(ports),
        }
    }
    for r in list.iter_mut() {
        let by_name = r
            .name()
            .and_then(|n| named.iter().find(|(m, _)| m == n))
            .map(|(_, p)| p.clone());
        if let Some(p) = by_name.or_else(|| unnamed.clone()) {
            r.endpoints_mut().ports = p;
        }
    }
    Ok(())
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
