//! The bottom layer: status and clock types every other layer uses, the histogram types,
//! alert signal instances, the builders of Prometheus metric families, and URLs reduced
//! to what may be shown (`redact`). Nothing here
//! imports from the rest of the crate.
pub mod family;
pub mod histogram;
pub mod memory;
pub mod redact;
pub mod signal;

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// Working.
    Active,
    /// Not available on this host or with these privileges; by design, not an error.
    Unsupported,
    /// Expected to work but broken.
    Failed,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Health {
    pub state: State,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl Health {
    pub fn active() -> Health {
        Health {
            state: State::Active,
            reason: None,
        }
    }
    pub fn unsupported(reason: impl Into<String>) -> Health {
        Health {
            state: State::Unsupported,
            reason: Some(reason.into()),
        }
    }
    pub fn failed(reason: impl Into<String>) -> Health {
        Health {
            state: State::Failed,
            reason: Some(reason.into()),
        }
    }
    pub fn is_active(&self) -> bool {
        self.state == State::Active
    }
}

/// One eBPF program: attached or why not, and its run-time statistics.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProgramStatus {
    pub name: String,
    #[serde(flatten)]
    pub health: Health,
    /// Cumulative run time from BPF_ENABLE_STATS; absent when stats are not enabled.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run_time_ns: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run_count: Option<u64>,
}

/// One entry of `/health`'s collector list (collectors and the agent's own services).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CollectorStatus {
    pub name: String,
    #[serde(flatten)]
    pub health: Health,
    /// How long the collector's last reading took (collectors sampled on their own
    /// interval).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration_seconds: Option<f64>,
}

impl CollectorStatus {
    pub fn new(name: &str, health: Health, took: Option<std::time::Duration>) -> CollectorStatus {
        CollectorStatus {
            name: name.into(),
            health,
            duration_seconds: took.map(|d| d.as_secs_f64()),
        }
    }
}

/// The query parameter the agent adds to its own requests to targets (engine scrapes,
/// health probes): `infersight=` and 16 random hex digits, new each run, so no client can
/// hide its requests by copying it. The HTTP collector drops the events whose path
/// carries it, so the agent's requests are never counted as the target's.
pub fn own_request_marker() -> &'static str {
    static MARKER: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    MARKER.get_or_init(|| format!("infersight={:016x}", fastrand::u64(..)))
}

/// Wall-clock time in Unix seconds (0 before 1970, which a sane clock never is).
pub fn now_seconds() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// Wall-clock time in Unix milliseconds.
pub fn now_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// The kernel programs' clock (`bpf_ktime_get_ns`: CLOCK_MONOTONIC), in nanoseconds, to
/// age the times they record.
pub fn monotonic_ns() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    u64::try_from(t.tv_sec).unwrap_or(0) * 1_000_000_000 + u64::try_from(t.tv_nsec).unwrap_or(0)
}

/// What kind of refusal a change asked of the running agent met; the HTTP server maps
/// each kind to a status code (the core never chooses one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefusalKind {
    /// The request is malformed (bad JSON, wrong shape).
    BadRequest,
    /// Well-formed, but its values cannot be accepted.
    Invalid,
    NotFound,
    /// It clashes with what exists (a name in use, a rule from the file).
    Conflict,
    /// The part that would do it is not running.
    Unavailable,
    /// It could not be done (a failed write).
    Failed,
}

/// Why a change was refused: a kind and one or more messages.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", .errors.join("; "))]
pub struct Refusal {
    pub kind: RefusalKind,
    pub errors: Vec<String>,
    /// Whether the answer lists the errors one by one (a reload's answer does).
    pub listed: bool,
}

impl Refusal {
    pub fn new(kind: RefusalKind, message: impl std::fmt::Display) -> Refusal {
        Refusal {
            kind,
            errors: vec![message.to_string()],
            listed: false,
        }
    }

    /// Several problems, each named in the answer.
    pub fn listed(kind: RefusalKind, errors: Vec<String>) -> Refusal {
        Refusal {
            kind,
            errors,
            listed: true,
        }
    }
}

/// The answer to a change: a JSON body, or why it was refused.
pub type Reply = Result<(Done, serde_json::Value), Refusal>;

/// How a change that was made went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Done {
    /// Something new exists.
    Created,
    /// Something changed (or was removed).
    Changed,
}
