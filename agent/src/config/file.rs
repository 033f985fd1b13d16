//! The configuration file as written: one raw struct per TOML section, checked for unknown
//! keys by serde. Values are validated when the sections are built (`sections.rs`,
//! `alerting.rs`, `targets.rs`), where errors can name the file, line and key.
use std::{collections::BTreeMap, path::PathBuf};

use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileConfig {
    #[serde(default)]
    pub(super) agent: AgentSection,
    #[serde(default)]
    pub(super) targets: TargetsSection,
    #[serde(default)]
    pub(super) http: HttpSection,
    #[serde(default)]
    pub(super) host: HostSection,
    #[serde(default)]
    pub(super) gpu: GpuSection,
    #[serde(default)]
    pub(super) energy: EnergySection,
    #[serde(default)]
    pub(super) alerting: AlertingSection,
    #[serde(default)]
    pub(super) channels: ChannelsSection,
    #[serde(default)]
    pub(super) push: PushSection,
    #[serde(default)]
    pub(super) history: HistorySection,
    #[serde(default)]
    pub(super) api: ApiSection,
    #[serde(default)]
    pub(super) engines: EnginesSection,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct EnginesSection {
    pub(super) enabled: Option<bool>,
    pub(super) interval: Option<String>,
    pub(super) health_interval: Option<String>,
    pub(super) timeout: Option<String>,
    pub(super) max_response_bytes: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct HistorySection {
    pub(super) enabled: Option<bool>,
    pub(super) raw_retention: Option<String>,
    pub(super) minute_retention: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ApiSection {
    pub(super) token: Option<String>,
    pub(super) token_file: Option<PathBuf>,
    pub(super) allowed_origins: Option<Vec<String>>,
    pub(super) history_max_points: Option<usize>,
    pub(super) history_max_series: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct PushSection {
    pub(super) url: Option<String>,
    pub(super) interval: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AlertingSection {
    pub(super) rules_file: Option<PathBuf>,
    pub(super) default_channels: Option<Vec<String>>,
    #[serde(default)]
    pub(super) severity_channels: BTreeMap<String, Vec<String>>,
    pub(super) cooldown: Option<String>,
    pub(super) notification_max_age: Option<String>,
    pub(super) dashboard_url: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ChannelsSection {
    pub(super) slack: Option<SlackSection>,
    pub(super) email: Option<EmailSection>,
    pub(super) webhook: Option<UrlSection>,
    pub(super) alertmanager: Option<UrlSection>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct SlackSection {
    pub(super) webhook_url: Option<String>,
    pub(super) webhook_url_file: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct EmailSection {
    pub(super) smtp_host: String,
    pub(super) smtp_port: Option<u16>,
    pub(super) tls: Option<super::alerting::Tls>,
    pub(super) username: Option<String>,
    pub(super) password_file: Option<PathBuf>,
    pub(super) from: String,
    pub(super) to: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct UrlSection {
    pub(super) url: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct HostSection {
    pub(super) enabled: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct GpuSection {
    pub(super) enabled: Option<bool>,
    pub(super) interval: Option<String>,
    #[serde(default)]
    pub(super) processes: bool,
    pub(super) kernel_log: Option<bool>,
    pub(super) sysfs_root: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct EnergySection {
    pub(super) price_per_kwh: Option<f64>,
    pub(super) currency: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct HttpSection {
    pub(super) enabled: Option<bool>,
    pub(super) route_limit: Option<usize>,
    pub(super) window: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AgentSection {
    pub(super) listen: Option<String>,
    pub(super) tick: Option<String>,
    pub(super) bpf_stats: Option<bool>,
    pub(super) max_targets: Option<u32>,
    pub(super) max_syscall_series: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct TargetsSection {
    #[serde(default)]
    pub(super) all: bool,
    #[serde(default)]
    pub(super) pid: Vec<PidEntry>,
    #[serde(default)]
    pub(super) cgroup: Vec<PathEntry>,
    #[serde(default)]
    pub(super) pid_file: Vec<PathEntry>,
    #[serde(default)]
    pub(super) process: Vec<ProcessEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ProcessEntry {
    pub(super) comm: String,
    pub(super) name: Option<String>,
    pub(super) metrics_url: Option<String>,
    pub(super) health_url: Option<String>,
    pub(super) health_path: Option<String>,
    /// Checked when the targets are built, so that a bad port names its line and key.
    pub(super) ports: Option<toml::Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct PidEntry {
    pub(super) pid: u32,
    pub(super) name: Option<String>,
    pub(super) metrics_url: Option<String>,
    pub(super) health_url: Option<String>,
    pub(super) health_path: Option<String>,
    /// Checked when the targets are built, so that a bad port names its line and key.
    pub(super) ports: Option<toml::Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct PathEntry {
    pub(super) path: PathBuf,
    pub(super) name: Option<String>,
    pub(super) metrics_url: Option<String>,
    pub(super) health_url: Option<String>,
    pub(super) health_path: Option<String>,
    /// Checked when the targets are built, so that a bad port names its line and key.
    pub(super) ports: Option<toml::Value>,
}
