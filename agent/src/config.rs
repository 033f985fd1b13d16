//! Configuration: the TOML file and the command line merged into one validated `Config`.
//!
//! Precedence: command-line flags over the file over built-in defaults. Targets given on
//! the command line replace the file's targets (they are not merged), so a one-off
//! `--pid` never silently also traces what the file names.
use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use serde::Deserialize;

pub const DEFAULT_LISTEN: &str = "127.0.0.1:9464";
pub const DEFAULT_TICK: Duration = Duration::from_secs(1);
pub const DEFAULT_ROUTE_LIMIT: usize = 100;
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(60);
/// Used when `--config` is not given and this file exists.
pub const SYSTEM_CONFIG: &str = "/etc/infersight/infersight.toml";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: cannot read config: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{origin}: invalid value {value:?}: {reason}")]
    Invalid {
        origin: String,
        value: String,
        reason: String,
    },
    #[error("{0}")]
    Conflict(String),
}

/// The command-line flags that overlay the file (the binary's clap parser fills this).
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub config: Option<PathBuf>,
    pub listen: Option<String>,
    pub tick: Option<String>,
    pub pids: Vec<String>,
    pub cgroups: Vec<String>,
    pub all: bool,
}

/// What to trace, before it is checked against the running system (see `targets`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetRequest {
    Pid { pid: u32, name: Option<String> },
    Cgroup { path: PathBuf, name: Option<String> },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetSpec {
    /// The whole host as one target named `host`.
    Host,
    List(Vec<TargetRequest>),
}

#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub tick: Duration,
    pub targets: TargetSpec,
    /// Distinct `http_route` values per target before new ones fold into `_OTHER`.
    pub route_limit: usize,
    /// Window of the per-target request summaries (rate, error ratio, percentiles).
    pub window: Duration,
    /// HTTP request tracing on the targets' sockets.
    pub http: bool,
    /// BPF run-time statistics for the self-cost metrics.
    pub bpf_stats: bool,
    /// The file the configuration came from, if any.
    pub source: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    #[serde(default)]
    agent: AgentSection,
    #[serde(default)]
    targets: TargetsSection,
    #[serde(default)]
    http: HttpSection,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct HttpSection {
    enabled: Option<bool>,
    route_limit: Option<usize>,
    window: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct AgentSection {
    listen: Option<String>,
    tick: Option<String>,
    bpf_stats: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct TargetsSection {
    #[serde(default)]
    all: bool,
    #[serde(default)]
    pid: Vec<PidEntry>,
    #[serde(default)]
    cgroup: Vec<CgroupEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PidEntry {
    pid: u32,
    name: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CgroupEntry {
    path: PathBuf,
    name: Option<String>,
}

impl Config {
    /// Load the file named by `--config` (or the system file when it exists) and apply the
    /// command-line overrides.
    pub fn load(over: &Overrides) -> Result<Config, ConfigError> {
        let path = match &over.config {
            Some(p) => Some(p.clone()),
            None => Some(PathBuf::from(SYSTEM_CONFIG)).filter(|p| p.exists()),
        };
        let (file, source) = match path {
            Some(p) => {
                let text = std::fs::read_to_string(&p).map_err(|source| ConfigError::Read {
                    path: p.clone(),
                    source,
                })?;
                (parse_file(&p, &text)?, Some(p))
            }
            None => (FileConfig::default(), None),
        };
        build(file, source, over)
    }
}

fn parse_file(path: &Path, text: &str) -> Result<FileConfig, ConfigError> {
    toml::from_str(text).map_err(|e| ConfigError::Parse {
        path: path.to_path_buf(),
        // toml's message already names the line, column and key; keep it on one line.
        message: one_line(&e.to_string()),
    })
}

fn one_line(s: &str) -> String {
    s.split('\n')
        .map(str::trim)
        .filter(|l| !l.is_empty() && *l != "|")
        .collect::<Vec<_>>()
        .join(" ")
}

fn build(
    file: FileConfig,
    source: Option<PathBuf>,
    over: &Overrides,
) -> Result<Config, ConfigError> {
    let file_origin = |key: &str| match &source {
        Some(p) => format!("{}: {key}", p.display()),
        None => key.to_string(),
    };
    let listen = match (&over.listen, &file.agent.listen) {
        (Some(v), _) => parse_listen("--listen", v)?,
        (None, Some(v)) => parse_listen(&file_origin("agent.listen"), v)?,
        (None, None) => parse_listen("default listen", DEFAULT_LISTEN)?,
    };
    let tick = match (&over.tick, &file.agent.tick) {
        (Some(v), _) => parse_duration("--tick", v, MIN_TICK, MAX_TICK)?,
        (None, Some(v)) => parse_duration(&file_origin("agent.tick"), v, MIN_TICK, MAX_TICK)?,
        (None, None) => DEFAULT_TICK,
    };
    let window = match &file.http.window {
        Some(v) => parse_duration(
            &file_origin("http.window"),
            v,
            Duration::from_secs(1),
            MAX_TICK,
        )?,
        None => DEFAULT_WINDOW,
    };
    let route_limit = match file.http.route_limit {
        Some(0) => {
            return Err(ConfigError::Invalid {
                origin: file_origin("http.route_limit"),
                value: "0".into(),
                reason: "must be at least 1".into(),
            })
        }
        Some(n) => n,
        None => DEFAULT_ROUTE_LIMIT,
    };

    let cli_has_targets = over.all || !over.pids.is_empty() || !over.cgroups.is_empty();
    let targets = if cli_has_targets {
        let mut list = Vec::new();
        for p in &over.pids {
            list.push(parse_pid_arg(p)?);
        }
        for c in &over.cgroups {
            list.push(parse_cgroup_arg(c)?);
        }
        spec(
            over.all,
            list,
            "--all cannot be combined with --pid or --cgroup",
        )?
    } else {
        let mut list = Vec::new();
        for (i, p) in file.targets.pid.iter().enumerate() {
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
        for c in &file.targets.cgroup {
            list.push(TargetRequest::Cgroup {
                path: c.path.clone(),
                name: c.name.clone(),
            });
        }
        let msg = format!(
            "{}: targets.all = true cannot be combined with [[targets.pid]] or [[targets.cgroup]]",
            source
                .as_deref()
                .map(|p| p.display().to_string())
                .unwrap_or_default()
        );
        spec(file.targets.all, list, &msg)?
    };
    Ok(Config {
        listen,
        tick,
        targets,
        route_limit,
        window,
        http: file.http.enabled.unwrap_or(true),
        bpf_stats: file.agent.bpf_stats.unwrap_or(true),
        source,
    })
}

fn spec(all: bool, list: Vec<TargetRequest>, conflict: &str) -> Result<TargetSpec, ConfigError> {
    match (all, list.is_empty()) {
        (true, false) => Err(ConfigError::Conflict(conflict.to_string())),
        // No target at all: trace the whole host, so a newcomer sees data at once.
        (_, true) => Ok(TargetSpec::Host),
        (false, false) => Ok(TargetSpec::List(list)),
    }
}

pub fn parse_listen(origin: &str, v: &str) -> Result<SocketAddr, ConfigError> {
    v.parse().map_err(|_| ConfigError::Invalid {
        origin: origin.to_string(),
        value: v.to_string(),
        reason: "expected an IP address and port, such as 127.0.0.1:9464 or [::1]:9464".into(),
    })
}

const MIN_TICK: Duration = Duration::from_millis(100);
const MAX_TICK: Duration = Duration::from_secs(3600);

fn parse_duration(
    origin: &str,
    v: &str,
    min: Duration,
    max: Duration,
) -> Result<Duration, ConfigError> {
    let invalid = |reason: &str| ConfigError::Invalid {
        origin: origin.to_string(),
        value: v.to_string(),
        reason: reason.to_string(),
    };
    let d = humantime::parse_duration(v).map_err(|e| invalid(&format!("{e} (e.g. \"1s\")")))?;
    if d < min || d > max {
        return Err(invalid(&format!(
            "must be between {} and {}",
            humantime::format_duration(min),
            humantime::format_duration(max)
        )));
    }
    Ok(d)
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
    let (v, name) = split_name(arg);
    if v.trim().is_empty() {
        return Err(ConfigError::Invalid {
            origin: "--cgroup".into(),
            value: arg.to_string(),
            reason: "expected a cgroup v2 path".into(),
        });
    }
    Ok(TargetRequest::Cgroup {
        path: PathBuf::from(v),
        name,
    })
}

#[cfg(test)]
mod tests;
