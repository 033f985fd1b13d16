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

use std::collections::BTreeMap;

use serde::Deserialize;
pub use source::line_of;

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
    pub all: bool,
    pub gpu_processes: bool,
    pub no_host: bool,
    pub state_dir: Option<PathBuf>,
}

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

#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub tick: Duration,
    pub targets: TargetSpec,
    /// Every process holding a GPU context becomes a target (refreshed each tick).
    pub gpu_processes: bool,
    /// Host collector (node_* metrics); off where node_exporter already runs.
    pub host: bool,
    /// GPU collector (NVML) and its sampling interval.
    pub gpu: bool,
    pub gpu_interval: Duration,
    /// Price of a kWh for the energy cost estimate, and its currency.
    pub energy_price_per_kwh: Option<f64>,
    pub energy_currency: String,
    pub alerting: Alerting,
    /// SQLite state (alert states, history, outbox).
    pub state_dir: PathBuf,
    /// Where to push the live stream (WebSocket URL), and how often a Snapshot goes.
    pub push_url: Option<String>,
    pub push_interval: Duration,
    /// History in SQLite: on/off, raw and 1-minute retention.
    pub history: Option<(Duration, Duration)>,
    /// Bearer token for API writes (none: writes are refused).
    pub api_token: Option<String>,
    /// Distinct `http_route` values per target before new ones fold into `_OTHER`.
    pub route_limit: usize,
    /// Window of the per-target request summaries (rate, error ratio, percentiles).
    pub window: Duration,
    /// HTTP request tracing on the targets' sockets.
    pub http: bool,
    /// BPF run-time statistics for the self-cost metrics.
    pub bpf_stats: bool,
    /// Self-protection: targets traced at once (GPU processes and API additions count),
    /// and (target, syscall) series exported.
    pub max_targets: u32,
    pub max_syscall_series: usize,
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
    #[serde(default)]
    host: HostSection,
    #[serde(default)]
    gpu: GpuSection,
    #[serde(default)]
    energy: EnergySection,
    #[serde(default)]
    alerting: AlertingSection,
    #[serde(default)]
    channels: ChannelsSection,
    #[serde(default)]
    push: PushSection,
    #[serde(default)]
    history: HistorySection,
    #[serde(default)]
    api: ApiSection,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct HistorySection {
    enabled: Option<bool>,
    raw_retention: Option<String>,
    minute_retention: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ApiSection {
    token: Option<String>,
    token_file: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct PushSection {
    url: Option<String>,
    interval: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct AlertingSection {
    rules_file: Option<PathBuf>,
    default_channels: Option<Vec<String>>,
    #[serde(default)]
    severity_channels: BTreeMap<String, Vec<String>>,
    cooldown: Option<String>,
    notification_max_age: Option<String>,
    dashboard_url: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ChannelsSection {
    slack: Option<SlackSection>,
    email: Option<EmailSection>,
    webhook: Option<UrlSection>,
    alertmanager: Option<UrlSection>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SlackSection {
    webhook_url: Option<String>,
    webhook_url_file: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EmailSection {
    smtp_host: String,
    smtp_port: Option<u16>,
    tls: Option<crate::notify::send::Tls>,
    username: Option<String>,
    password_file: Option<PathBuf>,
    from: String,
    to: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UrlSection {
    url: String,
}

/// Alerting, resolved: rules file path, routing, and the channels with their secrets read.
#[derive(Debug, Clone, Default)]
pub struct Alerting {
    pub rules_file: Option<PathBuf>,
    pub default_channels: Vec<String>,
    pub severity_channels: BTreeMap<String, Vec<String>>,
    pub cooldown: Duration,
    pub max_age: Duration,
    pub dashboard_url: Option<String>,
    pub slack_url: Option<String>,
    pub email: Option<crate::notify::send::Smtp>,
    pub webhook_url: Option<String>,
    pub alertmanager_url: Option<String>,
}

impl Alerting {
    /// Names of the configured channels (`log` always).
    pub fn channel_names(&self) -> Vec<String> {
        let mut v = vec!["log".to_string()];
        for (name, on) in [
            ("slack", self.slack_url.is_some()),
            ("email", self.email.is_some()),
            ("webhook", self.webhook_url.is_some()),
            ("alertmanager", self.alertmanager_url.is_some()),
        ] {
            if on {
                v.push(name.to_string());
            }
        }
        v
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct HostSection {
    enabled: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct GpuSection {
    enabled: Option<bool>,
    interval: Option<String>,
    #[serde(default)]
    processes: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct EnergySection {
    price_per_kwh: Option<f64>,
    currency: Option<String>,
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
    max_targets: Option<u32>,
    max_syscall_series: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct TargetsSection {
    #[serde(default)]
    all: bool,
    #[serde(default)]
    pid: Vec<PidEntry>,
    #[serde(default)]
    cgroup: Vec<PathEntry>,
    #[serde(default)]
    pid_file: Vec<PathEntry>,
    #[serde(default)]
    process: Vec<ProcessEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProcessEntry {
    comm: String,
    name: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PidEntry {
    pid: u32,
    name: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PathEntry {
    path: PathBuf,
    name: Option<String>,
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
    let file_origin = |key: &str| src.at(key);
    let source = src.path.map(Path::to_path_buf);
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

    let cli_has_targets = over.all
        || over.gpu_processes
        || !over.pids.is_empty()
        || !over.cgroups.is_empty()
        || !over.pid_files.is_empty()
        || !over.processes.is_empty();
    let gpu_processes = if cli_has_targets {
        over.gpu_processes
    } else {
        file.gpu.processes
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
        for f in &file.targets.pid_file {
            list.push(TargetRequest::PidFile {
                path: f.path.clone(),
                name: f.name.clone(),
            });
        }
        for (i, p) in file.targets.process.iter().enumerate() {
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
            source
                .as_deref()
                .map(|p| p.display().to_string())
                .unwrap_or_default()
        );
        spec(file.targets.all, gpu_processes, list, &msg)?
    };
    let gpu_interval = match &file.gpu.interval {
        Some(v) => parse_duration(&file_origin("gpu.interval"), v, MIN_TICK, MAX_TICK)?,
        None => DEFAULT_GPU_INTERVAL,
    };
    let energy_price_per_kwh = match file.energy.price_per_kwh {
        Some(p) if !(p.is_finite() && p >= 0.0) => {
            return Err(ConfigError::Invalid {
                origin: file_origin("energy.price_per_kwh"),
                value: p.to_string(),
                reason: "must be a non-negative number".into(),
            })
        }
        p => p,
    };
    Ok(Config {
        listen,
        tick,
        targets,
        route_limit,
        window,
        http: file.http.enabled.unwrap_or(true),
        bpf_stats: file.agent.bpf_stats.unwrap_or(true),
        max_targets: match file.agent.max_targets {
            Some(n) if n == 0 || n >= agent_common::HTTP_TARGETS => {
                return Err(ConfigError::Invalid {
                    origin: file_origin("agent.max_targets"),
                    value: n.to_string(),
                    reason: format!("must be between 1 and {}", agent_common::HTTP_TARGETS - 1),
                })
            }
            Some(n) => n,
            None => DEFAULT_MAX_TARGETS,
        },
        max_syscall_series: match file.agent.max_syscall_series {
            Some(0) => {
                return Err(ConfigError::Invalid {
                    origin: file_origin("agent.max_syscall_series"),
                    value: "0".into(),
                    reason: "must be at least 1".into(),
                })
            }
            Some(n) => n,
            None => DEFAULT_MAX_SYSCALL_SERIES,
        },
        gpu_processes,
        host: !over.no_host && file.host.enabled.unwrap_or(true),
        gpu: file.gpu.enabled.unwrap_or(true),
        gpu_interval,
        energy_price_per_kwh,
        energy_currency: file.energy.currency.unwrap_or_else(|| "USD".into()),
        alerting: alerting(
            &file.alerting,
            &file.channels,
            source.as_deref(),
            &file_origin,
        )?,
        push_url: ["INFERSIGHT_PUSH_URL", "MONITORING_WEBSOCKET_URL"]
            .iter()
            .find_map(|k| std::env::var(k).ok().filter(|v| !v.trim().is_empty()))
            .or(file.push.url.clone()),
        push_interval: push_interval(&file.push, &file_origin)?,
        history: if file.history.enabled.unwrap_or(true) {
            let long = Duration::from_secs(366 * 86400);
            Some((
                match &file.history.raw_retention {
                    Some(v) => parse_duration(
                        &file_origin("history.raw_retention"),
                        v,
                        Duration::from_secs(60),
                        long,
                    )?,
                    None => Duration::from_secs(24 * 3600),
                },
                match &file.history.minute_retention {
                    Some(v) => parse_duration(
                        &file_origin("history.minute_retention"),
                        v,
                        Duration::from_secs(60),
                        long,
                    )?,
                    None => Duration::from_secs(7 * 86400),
                },
            ))
        } else {
            None
        },
        api_token: secret(
            &file_origin("api.token_file"),
            file.api.token.as_ref(),
            file.api.token_file.as_ref(),
            "INFERSIGHT_API_TOKEN",
        )?
        .filter(|t| !t.is_empty()),
        state_dir: over
            .state_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIR)),
        source,
    })
}

/// `MONITORING_INTERVAL_SECONDS` (the user documents' name), else `[push] interval`, else
/// the tick.
fn push_interval(
    p: &PushSection,
    file_origin: &dyn Fn(&str) -> String,
) -> Result<Duration, ConfigError> {
    if let Ok(v) = std::env::var("MONITORING_INTERVAL_SECONDS") {
        return match v.trim().parse::<f64>() {
            Ok(s) if (0.1..=3600.0).contains(&s) => Ok(Duration::from_secs_f64(s)),
            _ => Err(ConfigError::Invalid {
                origin: "MONITORING_INTERVAL_SECONDS".into(),
                value: v,
                reason: "expected seconds between 0.1 and 3600".into(),
            }),
        };
    }
    match &p.interval {
        Some(v) => parse_duration(&file_origin("push.interval"), v, MIN_TICK, MAX_TICK),
        None => Ok(DEFAULT_TICK),
    }
}

const MAX_SECRET: u64 = 64 * 1024;

/// A secret from a file (trimmed), else a systemd credential named like the variable
/// without `INFERSIGHT_` in lower case (`api_token`), else the environment variable,
/// else the inline value. Secrets are never logged.
fn secret(
    origin: &str,
    inline: Option<&String>,
    file: Option<&PathBuf>,
    env: &str,
) -> Result<Option<String>, ConfigError> {
    let credential = std::env::var_os("CREDENTIALS_DIRECTORY")
        .map(|d| PathBuf::from(d).join(env.trim_start_matches("INFERSIGHT_").to_lowercase()));
    let file = file.or(credential.as_ref().filter(|p| p.exists()));
    if let Some(f) = file {
        use std::io::Read;
        let invalid = |reason: String| ConfigError::Invalid {
            origin: origin.to_string(),
            value: f.display().to_string(),
            reason,
        };
        // Bounded: a path such as /dev/zero must not hang the agent.
        let mut v = String::new();
        std::fs::File::open(f)
            .and_then(|file| file.take(MAX_SECRET + 1).read_to_string(&mut v))
            .map_err(|e| invalid(format!("cannot read the secret file: {e}")))?;
        if v.len() as u64 > MAX_SECRET {
            return Err(invalid(format!(
                "the secret file is over {MAX_SECRET} bytes"
            )));
        }
        return Ok(Some(v.trim().to_string()));
    }
    if let Ok(v) = std::env::var(env) {
        if !v.trim().is_empty() {
            return Ok(Some(v.trim().to_string()));
        }
    }
    Ok(inline.cloned())
}

fn alerting(
    a: &AlertingSection,
    c: &ChannelsSection,
    source: Option<&Path>,
    origin: &dyn Fn(&str) -> String,
) -> Result<Alerting, ConfigError> {
    let base = source.and_then(Path::parent).unwrap_or(Path::new("."));
    let dur = |key: &str, v: &Option<String>, default: Duration| match v {
        Some(v) => parse_duration(
            &origin(key),
            v,
            Duration::ZERO,
            Duration::from_secs(30 * 86400),
        ),
        None => Ok(default),
    };
    let slack_url = match &c.slack {
        Some(s) => secret(
            &origin("channels.slack.webhook_url_file"),
            s.webhook_url.as_ref(),
            s.webhook_url_file.as_ref(),
            "INFERSIGHT_SLACK_WEBHOOK_URL",
        )?,
        None => None,
    };
    // A Slack section without any URL cannot deliver: say so at load.
    if c.slack.is_some() && slack_url.is_none() {
        return Err(ConfigError::Invalid {
            origin: origin("channels.slack"),
            value: String::new(),
            reason: "needs webhook_url, webhook_url_file or INFERSIGHT_SLACK_WEBHOOK_URL".into(),
        });
    }
    let email = match &c.email {
        None => None,
        Some(e) => {
            let mailbox = |key: &str, v: &str| {
                v.parse::<lettre::message::Mailbox>()
                    .map_err(|err| ConfigError::Invalid {
                        origin: origin(key),
                        value: v.to_string(),
                        reason: format!("not an email address: {err}"),
                    })
            };
            if e.to.is_empty() {
                return Err(ConfigError::Invalid {
                    origin: origin("channels.email.to"),
                    value: "[]".into(),
                    reason: "needs at least one recipient".into(),
                });
            }
            let password = secret(
                &origin("channels.email.password_file"),
                None,
                e.password_file.as_ref(),
                "INFERSIGHT_SMTP_PASSWORD",
            )?;
            let tls = e.tls.unwrap_or(crate::notify::send::Tls::Starttls);
            Some(crate::notify::send::Smtp {
                host: e.smtp_host.clone(),
                port: e.smtp_port.unwrap_or(match tls {
                    crate::notify::send::Tls::None => 25,
                    crate::notify::send::Tls::Starttls => 587,
                    crate::notify::send::Tls::Tls => 465,
                }),
                tls,
                credentials: e
                    .username
                    .clone()
                    .map(|u| (u, password.clone().unwrap_or_default())),
                from: mailbox("channels.email.from", &e.from)?,
                to: e
                    .to
                    .iter()
                    .map(|t| mailbox("channels.email.to", t))
                    .collect::<Result<_, _>>()?,
            })
        }
    };
    let out = Alerting {
        rules_file: a.rules_file.as_ref().map(|f| base.join(f)),
        default_channels: a
            .default_channels
            .clone()
            .unwrap_or_else(|| vec!["log".to_string()]),
        severity_channels: a.severity_channels.clone(),
        cooldown: dur("alerting.cooldown", &a.cooldown, DEFAULT_COOLDOWN)?,
        max_age: dur(
            "alerting.notification_max_age",
            &a.notification_max_age,
            DEFAULT_MAX_AGE,
        )?,
        dashboard_url: a.dashboard_url.clone(),
        slack_url,
        email,
        webhook_url: c.webhook.as_ref().map(|w| w.url.clone()),
        alertmanager_url: c.alertmanager.as_ref().map(|w| w.url.clone()),
    };
    let names = out.channel_names();
    let routes = std::iter::once((
        "alerting.default_channels".to_string(),
        &out.default_channels,
    ))
    .chain(
        out.severity_channels
            .iter()
            .map(|(k, v)| (format!("alerting.severity_channels.{k}"), v)),
    );
    for (key, list) in routes {
        if let Some(bad) = list.iter().find(|c| !names.contains(c)) {
            return Err(ConfigError::Invalid {
                origin: origin(&key),
                value: bad.clone(),
                reason: format!(
                    "not a configured channel (configured: {})",
                    names.join(", ")
                ),
            });
        }
    }
    for k in out.severity_channels.keys() {
        if !["info", "warning", "medium", "high", "critical"].contains(&k.as_str()) {
            return Err(ConfigError::Invalid {
                origin: origin("alerting.severity_channels"),
                value: k.clone(),
                reason: "not a severity (info, warning, medium, high, critical)".into(),
            });
        }
    }
    Ok(out)
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

fn non_empty(origin: &str, arg: &str, v: &str, reason: &str) -> Result<String, ConfigError> {
    if v.trim().is_empty() {
        return Err(ConfigError::Invalid {
            origin: origin.into(),
            value: arg.to_string(),
            reason: reason.into(),
        });
    }
    Ok(v.trim().to_string())
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

mod source;

#[cfg(test)]
mod tests;
