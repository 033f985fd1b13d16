//! Configuration: the TOML file, `INFERSIGHT_*` environment variables and the command line
//! merged into one validated `Config`, one type per section.
//!
//! Precedence: command-line flags, then the environment, then the file, then built-in
//! defaults. Targets given on the command line replace the file's targets.
mod alerting;
mod file;
mod parse;
mod sections;
mod source;
mod targets;

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use serde::Deserialize;

pub use alerting::{Alerting, Smtp, Tls};
pub use parse::parse_listen;
pub use sections::{
    AgentConfig, ApiConfig, EnergyConfig, EnginesConfig, GpuConfig, HistoryConfig, HostConfig,
    HttpConfig, PushConfig, Section,
};
pub use source::line_of;
pub use targets::{
    parse_cgroup_arg, parse_pid_arg, BadEndpoint, Endpoints, PortsValue, TargetRequest, TargetSpec,
};

use file::FileConfig;

pub const DEFAULT_LISTEN: &str = "127.0.0.1:9464";
pub const DEFAULT_TICK: Duration = Duration::from_secs(1);
pub const DEFAULT_ROUTE_LIMIT: usize = 100;
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(60);
pub const DEFAULT_GPU_INTERVAL: Duration = Duration::from_secs(1);
pub const DEFAULT_MAX_TARGETS: u32 = 64;
pub const DEFAULT_MAX_SYSCALL_SERIES: usize = 5000;
pub const DEFAULT_STATE_DIR: &str = "/var/lib/infersight";
pub const DEFAULT_COOLDOWN: Duration = Duration::from_secs(300);
pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(24 * 3600);
/// `/api/v1/history` bounds: points per series (Prometheus's) and series per answer.
pub const DEFAULT_HISTORY_MAX_POINTS: usize = 11_000;
pub const DEFAULT_HISTORY_MAX_SERIES: usize = 100;
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
    pub pid_files: Vec<String>,
    pub processes: Vec<String>,
    /// `--ports [NAME=]PORT[,PORT…]`: front-door ports of the command line's targets.
    pub ports: Vec<String>,
    pub all: bool,
    pub gpu_processes: bool,
    pub no_host: bool,
    pub state_dir: Option<PathBuf>,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub agent: AgentConfig,
    pub targets: TargetSpec,
    pub http: HttpConfig,
    pub host: HostConfig,
    pub gpu: GpuConfig,
    pub energy: EnergyConfig,
    pub engines: EnginesConfig,
    pub alerting: Alerting,
    pub push: PushConfig,
    /// History in SQLite (`None`: turned off).
    pub history: Option<HistoryConfig>,
    pub api: ApiConfig,
    /// The file the configuration came from, if any.
    pub source: Option<PathBuf>,
}

impl Config {
    /// Load the file named by `--config` (or the system file when it exists), apply the
    /// `INFERSIGHT_*` environment overrides, then the command-line flags.
    pub fn load(over: &Overrides) -> Result<Config, ConfigError> {
        Self::load_with_env(over, std::env::vars())
    }

    pub fn load_with_env(
        over: &Overrides,
        vars: impl Iterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let path = match &over.config {
            Some(p) => Some(p.clone()),
            None => Some(PathBuf::from(SYSTEM_CONFIG)).filter(|p| p.exists()),
        };
        let text = match &path {
            Some(p) => std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
                path: p.clone(),
                source,
            })?,
            None => String::new(),
        };
        Self::from_text(path.as_deref(), &text, over, vars)
    }

    /// The configuration in `text` (read from `path`, if any) with the environment
    /// overrides `vars` and the flags `over`.
    pub fn from_text(
        path: Option<&Path>,
        text: &str,
        over: &Overrides,
        vars: impl Iterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let shown = path.map_or_else(|| PathBuf::from("(no config file)"), Path::to_path_buf);
        // Parsed straight from the text first: toml's errors then name line and key.
        let mut file = parse_file(&shown, text)?;
        let mut table: toml::Table = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: shown.clone(),
            message: one_line(&e.to_string()),
        })?;
        let env = source::apply_env(&mut table, vars)?;
        if !env.is_empty() {
            file = FileConfig::deserialize(table).map_err(|e| ConfigError::Parse {
                path: shown.clone(),
                message: format!(
                    "with the environment overrides {}: {}",
                    env.values().cloned().collect::<Vec<_>>().join(", "),
                    one_line(&e.to_string())
                ),
            })?;
        }
        let src = source::Source { path, text, env };
        build(file, &src, over)
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

fn build(file: FileConfig, src: &source::Source, over: &Overrides) -> Result<Config, ConfigError> {
    let origin = |key: &str| src.at(key);
    let source = src.path.map(Path::to_path_buf);
    let (targets, gpu_processes) = targets::targets(
        &file.targets,
        file.gpu.processes,
        over,
        source.as_deref(),
        &origin,
    )?;
    Ok(Config {
        agent: AgentConfig::build(&file.agent, over, &origin)?,
        targets,
        http: HttpConfig::build(&file.http, &origin)?,
        host: HostConfig::build(&file.host, over),
        gpu: GpuConfig::build(&file.gpu, gpu_processes, &origin)?,
        energy: EnergyConfig::build(&file.energy, &origin)?,
        engines: EnginesConfig::build(&file.engines, &origin)?,
        alerting: alerting::alerting(&file.alerting, &file.channels, source.as_deref(), &origin)?,
        push: PushConfig::build(&file.push, &origin)?,
        history: HistoryConfig::build(&file.history, &origin)?,
        api: ApiConfig::build(&file.api, &origin)?,
        source,
    })
}

impl Config {
    /// Keep the running values of every setting that needs a restart in `new`; the keys
    /// that differed (each section names its own).
    pub fn keep_restart_only(&self, new: &mut Config) -> Vec<&'static str> {
        [
            self.agent.keep(&mut new.agent),
            self.http.keep(&mut new.http),
            self.host.keep(&mut new.host),
            self.gpu.keep(&mut new.gpu),
            self.energy.keep(&mut new.energy),
            self.engines.keep(&mut new.engines),
            self.push.keep(&mut new.push),
            self.history.keep(&mut new.history),
            self.api.keep(&mut new.api),
        ]
        .concat()
    }
}

#[cfg(test)]
mod tests;
