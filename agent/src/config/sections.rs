//! One type per section of the configuration, each built (and validated) from its part of
//! the file and the flags, and each naming the settings that take effect only at a
//! restart (`Section::keep`), so a reload's answer is derived from the sections.
use std::{net::SocketAddr, path::PathBuf, time::Duration};

use super::{
    alerting::secret,
    file::{
        AgentSection, ApiSection, EnergySection, EnginesSection, GpuSection, HistorySection,
        HostSection, HttpSection, PushSection,
    },
    parse::{parse_duration, parse_listen, MAX_TICK, MIN_TICK},
    ConfigError, Overrides, DEFAULT_GPU_INTERVAL, DEFAULT_HISTORY_MAX_POINTS,
    DEFAULT_HISTORY_MAX_SERIES, DEFAULT_LISTEN, DEFAULT_MAX_SYSCALL_SERIES, DEFAULT_MAX_TARGETS,
    DEFAULT_ROUTE_LIMIT, DEFAULT_STATE_DIR, DEFAULT_TICK, DEFAULT_WINDOW,
};

/// Where a key of the file is (`FILE: line N: KEY`), for error messages.
pub(super) type Origin<'a> = &'a dyn Fn(&str) -> String;

/// A section's settings that take effect only at a restart.
pub trait Section {
    /// Put the running values of the restart-only settings back into `new` (so the next
    /// reload compares against what really runs); the keys that differed.
    fn keep(&self, new: &mut Self) -> Vec<&'static str>;
}

/// Put `old` back into `new`; `key` when they differed.
fn keep<T: PartialEq + Clone>(
    key: &'static str,
    old: &T,
    new: &mut T,
    out: &mut Vec<&'static str>,
) {
    if old != new {
        *new = old.clone();
        out.push(key);
    }
}

/// A whole section that needs a restart, named once however many keys changed.
fn keep_all<T: PartialEq + Clone>(key: &'static str, old: &T, new: &mut T) -> Vec<&'static str> {
    let mut out = Vec::new();
    keep(key, old, new, &mut out);
    out
}

fn invalid(origin: String, value: impl ToString, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        origin,
        value: value.to_string(),
        reason: reason.into(),
    }
}

/// `[agent]`, with `--listen`, `--tick` and `--state-dir`.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentConfig {
    pub listen: SocketAddr,
    pub tick: Duration,
    /// BPF run-time statistics for the self-cost metrics.
    pub bpf_stats: bool,
    /// Self-protection: targets traced at once (GPU processes and API additions count),
    /// and (target, syscall) series exported.
    pub max_targets: u32,
    pub max_syscall_series: usize,
    /// SQLite state (alert states, history, outbox).
    pub state_dir: PathBuf,
}

impl AgentConfig {
    pub(super) fn build(
        file: &AgentSection,
        over: &Overrides,
        origin: Origin,
    ) -> Result<AgentConfig, ConfigError> {
        let listen = match (&over.listen, &file.listen) {
            (Some(v), _) => parse_listen("--listen", v)?,
            (None, Some(v)) => parse_listen(&origin("agent.listen"), v)?,
            (None, None) => parse_listen("default listen", DEFAULT_LISTEN)?,
        };
        let tick = match (&over.tick, &file.tick) {
            (Some(v), _) => parse_duration("--tick", v, MIN_TICK, MAX_TICK)?,
            (None, Some(v)) => parse_duration(&origin("agent.tick"), v, MIN_TICK, MAX_TICK)?,
            (None, None) => DEFAULT_TICK,
        };
        let max_targets = match file.max_targets {
            Some(n) if n == 0 || n >= agent_common::HTTP_TARGETS => {
                return Err(invalid(
                    origin("agent.max_targets"),
                    n,
                    format!("must be between 1 and {}", agent_common::HTTP_TARGETS - 1),
                ))
            }
            Some(n) => n,
            None => DEFAULT_MAX_TARGETS,
        };
        let max_syscall_series = match file.max_syscall_series {
            Some(0) => {
                return Err(invalid(
                    origin("agent.max_syscall_series"),
                    0,
                    "must be at least 1",
                ))
            }
            Some(n) => n,
            None => DEFAULT_MAX_SYSCALL_SERIES,
        };
        Ok(AgentConfig {
            listen,
            tick,
            bpf_stats: file.bpf_stats.unwrap_or(true),
            max_targets,
            max_syscall_series,
            state_dir: over
                .state_dir
                .clone()
                .unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIR)),
        })
    }
}

impl Section for AgentConfig {
    fn keep(&self, new: &mut Self) -> Vec<&'static str> {
        let mut out = Vec::new();
        keep("agent.listen", &self.listen, &mut new.listen, &mut out);
        keep("agent.tick", &self.tick, &mut new.tick, &mut out);
        keep(
            "agent.bpf_stats",
            &self.bpf_stats,
            &mut new.bpf_stats,
            &mut out,
        );
        keep(
            "agent.max_targets",
            &self.max_targets,
            &mut new.max_targets,
            &mut out,
        );
        keep("--state-dir", &self.state_dir, &mut new.state_dir, &mut out);
        out
    }
}

/// `[http]`: request tracing.
#[derive(Debug, Clone, PartialEq)]
pub struct HttpConfig {
    pub enabled: bool,
    /// Distinct `http_route` values per target before new ones fold into `_OTHER`.
    pub route_limit: usize,
    /// Window of the per-target request summaries (rate, error ratio, percentiles).
    pub window: Duration,
}

impl HttpConfig {
    pub(super) fn build(file: &HttpSection, origin: Origin) -> Result<HttpConfig, ConfigError> {
        let window = match &file.window {
            Some(v) => parse_duration(&origin("http.window"), v, Duration::from_secs(1), MAX_TICK)?,
            None => DEFAULT_WINDOW,
        };
        let route_limit = match file.route_limit {
            Some(0) => return Err(invalid(origin("http.route_limit"), 0, "must be at least 1")),
            Some(n) => n,
            None => DEFAULT_ROUTE_LIMIT,
        };
        Ok(HttpConfig {
            enabled: file.enabled.unwrap_or(true),
            route_limit,
            window,
        })
    }
}

impl Section for HttpConfig {
    fn keep(&self, new: &mut Self) -> Vec<&'static str> {
        keep_all("http", self, new)
    }
}

/// `[host]` and `--no-host`: the host collector (node_* metrics).
#[derive(Debug, Clone, PartialEq)]
pub struct HostConfig {
    pub enabled: bool,
}

impl HostConfig {
    pub(super) fn build(file: &HostSection, over: &Overrides) -> HostConfig {
        HostConfig {
            enabled: !over.no_host && file.enabled.unwrap_or(true),
        }
    }
}

impl Section for HostConfig {
    fn keep(&self, new: &mut Self) -> Vec<&'static str> {
        keep_all("host.enabled", self, new)
    }
}

/// `[gpu]`: the NVML collector, its interval, and GPU processes as targets.
#[derive(Debug, Clone, PartialEq)]
pub struct GpuConfig {
    pub enabled: bool,
    pub interval: Duration,
    /// Every process holding a GPU context becomes a target (refreshed each tick).
    pub processes: bool,
    /// Read the NVIDIA driver's XID and "fallen off the bus" lines from /dev/kmsg.
    pub kernel_log: bool,
    /// Where sysfs is mounted, for the count of NVIDIA GPUs on the PCI bus (tests point
    /// it at a fake tree).
    pub sysfs_root: PathBuf,
}

impl GpuConfig {
    pub(super) fn build(
        file: &GpuSection,
        processes: bool,
        origin: Origin,
    ) -> Result<GpuConfig, ConfigError> {
        let interval = match &file.interval {
            Some(v) => parse_duration(&origin("gpu.interval"), v, MIN_TICK, MAX_TICK)?,
            None => DEFAULT_GPU_INTERVAL,
        };
        Ok(GpuConfig {
            enabled: file.enabled.unwrap_or(true),
            interval,
            processes,
            kernel_log: file.kernel_log.unwrap_or(true),
            sysfs_root: file
                .sysfs_root
                .clone()
                .unwrap_or_else(|| PathBuf::from("/sys")),
        })
    }
}

impl Section for GpuConfig {
    fn keep(&self, new: &mut Self) -> Vec<&'static str> {
        keep_all("gpu", self, new)
    }
}

/// `[energy]`: the price of a kWh for the energy cost estimate (changes at once).
#[derive(Debug, Clone, PartialEq)]
pub struct EnergyConfig {
    pub price_per_kwh: Option<f64>,
    pub currency: String,
}

impl EnergyConfig {
    pub(super) fn build(file: &EnergySection, origin: Origin) -> Result<EnergyConfig, ConfigError> {
        let price_per_kwh = match file.price_per_kwh {
            Some(p) if !(p.is_finite() && p >= 0.0) => {
                return Err(invalid(
                    origin("energy.price_per_kwh"),
                    p,
                    "must be a non-negative number",
                ))
            }
            p => p,
        };
        Ok(EnergyConfig {
            price_per_kwh,
            currency: file.currency.clone().unwrap_or_else(|| "USD".into()),
        })
    }
}

impl Section for EnergyConfig {
    fn keep(&self, _: &mut Self) -> Vec<&'static str> {
        Vec::new()
    }
}

/// `[push]`: where to push the live stream (a WebSocket URL) and how often a Snapshot
/// goes.
#[derive(Debug, Clone, PartialEq)]
pub struct PushConfig {
    pub url: Option<String>,
    pub interval: Duration,
}

impl PushConfig {
    /// `INFERSIGHT_PUSH_URL` or the user documents' `MONITORING_WEBSOCKET_URL` over the
    /// file; `MONITORING_INTERVAL_SECONDS` over `[push] interval`, else the tick.
    pub(super) fn build(file: &PushSection, origin: Origin) -> Result<PushConfig, ConfigError> {
        let url = ["INFERSIGHT_PUSH_URL", "MONITORING_WEBSOCKET_URL"]
            .iter()
            .find_map(|k| std::env::var(k).ok().filter(|v| !v.trim().is_empty()))
            .or(file.url.clone());
        let interval = if let Ok(v) = std::env::var("MONITORING_INTERVAL_SECONDS") {
            match v.trim().parse::<f64>() {
                Ok(s) if (0.1..=3600.0).contains(&s) => Duration::from_secs_f64(s),
                _ => {
                    return Err(invalid(
                        "MONITORING_INTERVAL_SECONDS".into(),
                        v,
                        "expected seconds between 0.1 and 3600",
                    ))
                }
            }
        } else {
            match &file.interval {
                Some(v) => parse_duration(&origin("push.interval"), v, MIN_TICK, MAX_TICK)?,
                None => DEFAULT_TICK,
            }
        };
        Ok(PushConfig { url, interval })
    }
}

impl Section for PushConfig {
    fn keep(&self, new: &mut Self) -> Vec<&'static str> {
        keep_all("push", self, new)
    }
}

/// `[history]` when enabled: raw and 1-minute retention.
#[derive(Debug, Clone, PartialEq)]
pub struct HistoryConfig {
    pub raw_retention: Duration,
    pub minute_retention: Duration,
}

impl HistoryConfig {
    pub(super) fn build(
        file: &HistorySection,
        origin: Origin,
    ) -> Result<Option<HistoryConfig>, ConfigError> {
        if !file.enabled.unwrap_or(true) {
            return Ok(None);
        }
        let long = Duration::from_secs(366 * 86400);
        let retention = |key: &str, v: &Option<String>, default: u64| match v {
            Some(v) => parse_duration(&origin(key), v, Duration::from_secs(60), long),
            None => Ok(Duration::from_secs(default)),
        };
        Ok(Some(HistoryConfig {
            raw_retention: retention("history.raw_retention", &file.raw_retention, 24 * 3600)?,
            minute_retention: retention(
                "history.minute_retention",
                &file.minute_retention,
                7 * 86400,
            )?,
        }))
    }
}

impl Section for Option<HistoryConfig> {
    fn keep(&self, new: &mut Self) -> Vec<&'static str> {
        keep_all("history", self, new)
    }
}

/// `[api]`: the bearer token for API writes (none: writes are refused; changes at once),
/// the browser origins besides the agent's own that may open `/ws`, and the bounds of
/// `/api/v1/history` answers.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiConfig {
    pub token: Option<String>,
    /// Serialised origins (`https://grafana.example:3000`).
    pub allowed_origins: Vec<String>,
    pub history_max_points: usize,
    pub history_max_series: usize,
}

impl ApiConfig {
    pub(super) fn build(file: &ApiSection, origin: Origin) -> Result<ApiConfig, ConfigError> {
        let token = secret(
            &origin("api.token_file"),
            file.token.as_ref(),
            file.token_file.as_ref(),
            "INFERSIGHT_API_TOKEN",
        )?
        .filter(|t| !t.is_empty());
        let allowed_origins = file
            .allowed_origins
            .iter()
            .flatten()
            .map(|o| browser_origin(origin("api.allowed_origins"), o))
            .collect::<Result<_, _>>()?;
        let at_least_one = |key: &str, v: Option<usize>, default: usize| match v {
            Some(0) => Err(invalid(origin(key), 0, "must be at least 1")),
            Some(n) => Ok(n),
            None => Ok(default),
        };
        Ok(ApiConfig {
            token,
            allowed_origins,
            history_max_points: at_least_one(
                "api.history_max_points",
                file.history_max_points,
                DEFAULT_HISTORY_MAX_POINTS,
            )?,
            history_max_series: at_least_one(
                "api.history_max_series",
                file.history_max_series,
                DEFAULT_HISTORY_MAX_SERIES,
            )?,
        })
    }
}

/// A browser origin (`https://host[:port]`) in the form browsers send it.
fn browser_origin(key: String, v: &str) -> Result<String, ConfigError> {
    let u = url::Url::parse(v).map_err(|e| invalid(key.clone(), v, format!("not a URL: {e}")))?;
    if !matches!(u.scheme(), "http" | "https") || u.host_str().is_none() {
        return Err(invalid(
            key,
            v,
            "expected an origin such as https://grafana.example:3000",
        ));
    }
    Ok(u.origin().ascii_serialization())
}

impl Section for ApiConfig {
    /// The token changes at once; the rest is read when the server starts.
    fn keep(&self, new: &mut Self) -> Vec<&'static str> {
        let mut out = Vec::new();
        keep(
            "api.allowed_origins",
            &self.allowed_origins,
            &mut new.allowed_origins,
            &mut out,
        );
        keep(
            "api.history_max_points",
            &self.history_max_points,
            &mut new.history_max_points,
            &mut out,
        );
        keep(
            "api.history_max_series",
            &self.history_max_series,
            &mut new.history_max_series,
            &mut out,
        );
        out
    }
}

/// `[engines]`: the inference servers' own Prometheus metrics and health endpoints, read
/// on their own threads. Every key needs a restart (the threads start with them).
#[derive(Debug, Clone, PartialEq)]
pub struct EnginesConfig {
    pub enabled: bool,
    /// How often each target's metrics endpoint is scraped.
    pub interval: Duration,
    /// How often each target's health endpoint is probed.
    pub health_interval: Duration,
    /// Longest a scrape or probe may take (connect to last byte).
    pub timeout: Duration,
    /// Largest metrics response read; a longer one fails the scrape.
    pub max_response_bytes: usize,
}

const DEFAULT_ENGINES_INTERVAL: Duration = Duration::from_secs(5);
const DEFAULT_HEALTH_INTERVAL: Duration = Duration::from_secs(15);
const DEFAULT_ENGINES_TIMEOUT: Duration = Duration::from_secs(2);
const DEFAULT_MAX_RESPONSE_BYTES: usize = 4 << 20;
/// Bounds of `max_response_bytes`: a real engine's page is 10–500 KB.
const MAX_RESPONSE_BYTES: std::ops::RangeInclusive<usize> = 1024..=(256 << 20);

impl EnginesConfig {
    pub(super) fn build(
        file: &EnginesSection,
        origin: Origin,
    ) -> Result<EnginesConfig, ConfigError> {
        let duration = |key: &str, v: &Option<String>, default: Duration| match v {
            Some(v) => parse_duration(&origin(key), v, MIN_TICK, MAX_TICK),
            None => Ok(default),
        };
        let interval = duration("engines.interval", &file.interval, DEFAULT_ENGINES_INTERVAL)?;
        let health_interval = duration(
            "engines.health_interval",
            &file.health_interval,
            DEFAULT_HEALTH_INTERVAL,
        )?;
        let timeout = match &file.timeout {
            Some(v) => parse_duration(
                &origin("engines.timeout"),
                v,
                Duration::from_millis(10),
                MAX_TICK,
            )?,
            None => DEFAULT_ENGINES_TIMEOUT.min(interval).min(health_interval),
        };
        // A slower answer would overlap the next round and make the thread look stuck.
        if timeout > interval.min(health_interval) {
            return Err(invalid(
                origin("engines.timeout"),
                file.timeout.as_deref().unwrap_or_default(),
                "must not be longer than engines.interval or engines.health_interval",
            ));
        }
        let max_response_bytes = match file.max_response_bytes {
            Some(n) if !MAX_RESPONSE_BYTES.contains(&n) => {
                return Err(invalid(
                    origin("engines.max_response_bytes"),
                    n,
                    format!(
                        "must be between {} and {}",
                        MAX_RESPONSE_BYTES.start(),
                        MAX_RESPONSE_BYTES.end()
                    ),
                ))
            }
            Some(n) => n,
            None => DEFAULT_MAX_RESPONSE_BYTES,
        };
        Ok(EnginesConfig {
            enabled: file.enabled.unwrap_or(true),
            interval,
            health_interval,
            timeout,
            max_response_bytes,
        })
    }
}

impl Section for EnginesConfig {
    fn keep(&self, new: &mut Self) -> Vec<&'static str> {
        keep_all("engines", self, new)
    }
}
