//! The per-tick data model. Built once per tick by the collectors, then shared read-only
//! (`Arc`) with every consumer, so `/metrics`, `/health` and later the alert engine, history
//! and stream all see the same values.
use agent_common::HIST_BUCKETS;
use serde::Serialize;

use crate::{
    alert::runtime::AlertingView,
    collect::{
        cuda::CudaSeries,
        energy::EnergySummary,
        gpu::DeviceReading,
        host::HostSample,
        process::ProcessSample,
        sched::{SchedSeries, TcpSeries},
    },
    hist::Hist,
    targets::Target,
};

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
}

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

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TargetStatus {
    #[serde(flatten)]
    pub target: Target,
    /// For a PID target: whether the process still exists.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alive: Option<bool>,
}

/// Cumulative syscall figures of one target, since the agent started.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SyscallSeries {
    pub target: String,
    pub syscall: String,
    pub count: u64,
    pub errors: u64,
    /// Sum of measured durations, in seconds.
    pub duration_sum_seconds: f64,
    /// Non-cumulative log2 buckets: `buckets[i]` counts durations in [2^i, 2^(i+1)) ns.
    #[serde(serialize_with = "serialize_buckets")]
    pub buckets: [u64; HIST_BUCKETS],
}

pub(crate) fn serialize_buckets<S: serde::Serializer>(
    b: &[u64; HIST_BUCKETS],
    s: S,
) -> Result<S::Ok, S::Error> {
    s.collect_seq(b.iter())
}

impl SyscallSeries {
    /// Upper bound of bucket `i` in seconds (`None` for the open-ended last bucket).
    pub fn bucket_upper_seconds(i: usize) -> Option<f64> {
        (i + 1 < HIST_BUCKETS).then(|| (1u64 << (i + 1)) as f64 / 1e9)
    }
}

/// Cumulative HTTP figures of one (target, method, route, status).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HttpSeries {
    pub target: String,
    pub method: String,
    pub route: String,
    pub status: u16,
    pub duration: Hist,
    pub request_body: Hist,
    pub response_body: Hist,
}

/// Cumulative streaming (chunked or SSE) figures of one (target, route).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StreamSeries {
    pub target: String,
    pub route: String,
    pub ttft: Hist,
    pub tpot: Hist,
    pub duration: Hist,
    pub chunks: u64,
}

/// One target's requests over the recent window (what alert rules read). A figure that
/// cannot be known (no requests, no stream) is absent.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RequestSummary {
    pub target: String,
    pub active: Option<u64>,
    /// Cumulative: connections the target accepted.
    pub accepted_connections: Option<u64>,
    /// Cumulative: accepted connections that did not speak HTTP/1.x.
    pub ignored_connections: Option<u64>,
    /// Cumulative: requests that ended without a response being seen.
    pub unanswered: Option<u64>,
    pub request_rate: Option<f64>,
    /// Share of responses with a 5xx status.
    pub error_ratio: Option<f64>,
    pub latency_avg_seconds: Option<f64>,
    pub latency_p50_seconds: Option<f64>,
    pub latency_p95_seconds: Option<f64>,
    pub latency_p99_seconds: Option<f64>,
    pub ttft_p50_seconds: Option<f64>,
    pub ttft_p95_seconds: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Default)]
pub struct Snapshot {
    pub timestamp_ms: u64,
    pub tick: u64,
    pub targets: Vec<TargetStatus>,
    pub collectors: Vec<CollectorStatus>,
    pub programs: Vec<ProgramStatus>,
    pub syscalls: Vec<SyscallSeries>,
    pub http: Vec<HttpSeries>,
    pub streams: Vec<StreamSeries>,
    pub requests: Vec<RequestSummary>,
    /// Completed requests whose event did not fit in the ring buffer (absent when the
    /// counters cannot be read).
    pub ringbuf_dropped: Option<u64>,
    /// Events that reached userspace but could not be used (malformed or inconsistent).
    pub http_events_discarded: u64,
    /// The host name (the GPU series' `Hostname` label).
    pub hostname: String,
    pub host: Option<HostSample>,
    pub processes: Vec<ProcessSample>,
    pub gpus: Vec<DeviceReading>,
    pub energy: EnergySummary,
    pub cuda: Vec<CudaSeries>,
    pub sched: Vec<SchedSeries>,
    pub tcp: Vec<TcpSeries>,
    pub alerting: AlertingView,
    /// The push client, when one is configured.
    pub push: Option<crate::push::PushView>,
    /// Ticks the history writer could not keep up with (absent: history off).
    pub history_dropped: Option<u64>,
    /// Ticks the history database refused (a full disk; absent: history off).
    pub history_failed: Option<u64>,
    /// The configuration in force and how the last reload went.
    pub config: ConfigStatus,
    /// (target, syscall) series not exported because of `[agent] max_syscall_series`.
    pub syscall_series_limited: u64,
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
        let failed = self
            .collectors
            .iter()
            .map(|c| c.health.state)
            .chain(self.programs.iter().map(|p| p.health.state))
            .any(|s| s == State::Failed);
        if failed {
            State::Failed
        } else {
            State::Active
        }
    }
}
