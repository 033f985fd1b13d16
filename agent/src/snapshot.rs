//! What is published each tick: the collectors' readings plus the state of the agent's own
//! services (alerting, push, history, configuration). Built once per tick and shared
//! read-only (`Arc`) with every consumer, so `/metrics`, `/health`, the API, the stream and
//! the history all see the same values.
use serde::Serialize;

use crate::{alerting::AlertingView, base::State, readings::Readings};

#[derive(Debug, Clone, PartialEq, Serialize, Default)]
pub struct Snapshot {
    #[serde(flatten)]
    pub readings: Readings,
    pub alerting: AlertingView,
    /// The push client, when one is configured.
    pub push: Option<PushView>,
    /// Ticks the history writer could not keep up with (absent: history off).
    pub history_dropped: Option<u64>,
    /// Ticks the history database refused (a full disk; absent: history off).
    pub history_failed: Option<u64>,
    /// The configuration in force and how the last reload went.
    pub config: ConfigStatus,
}

/// What `/metrics` shows of the push client.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct PushView {
    pub url: String,
    pub connected: bool,
    pub sent: u64,
    pub dropped: u64,
    pub connects: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ConfigStatus {
    /// The file the configuration came from.
    pub file: Option<std::path::PathBuf>,
    pub last_reload_successful: bool,
    /// When the configuration in force was loaded (start or the last good reload).
    pub last_reload_success_timestamp_seconds: f64,
    /// Why the last reload was refused (the old configuration stays in force).
    pub last_reload_error: Option<String>,
}

impl Snapshot {
    /// Overall state for `/health`: failed when any collector or program failed.
    pub fn overall(&self) -> State {
        let r = &self.readings;
        let failed = r
            .collectors
            .iter()
            .map(|c| c.health.state)
            .chain(r.programs.iter().map(|p| p.health.state))
            .any(|s| s == State::Failed);
        if failed {
            State::Failed
        } else {
            State::Active
        }
    }
}

impl std::ops::Deref for Snapshot {
    type Target = Readings;
    fn deref(&self) -> &Readings {
        &self.readings
    }
}
