//! The named signals rules read, derived from one Snapshot. A signal whose collector is not
//! working has no data (`None`), which rules report instead of resolving.
use std::collections::HashMap;

use super::expr::{Instance, Labels, Signals};
use crate::snapshot::{Snapshot, State};

/// (name, labels, collector, meaning): the documented list (README) and the names rules
/// may use.
pub const SIGNALS: &[(&str, &str, &str, &str)] = &[
    (
        "cpu_usage_percent",
        "",
        "host",
        "busy share of all CPUs since the previous reading",
    ),
    (
        "memory_usage_percent",
        "",
        "host",
        "100 × (1 − MemAvailable / MemTotal)",
    ),
    (
        "disk_usage_percent",
        "mountpoint, device, fstype",
        "host",
        "100 × (1 − avail / size) per filesystem",
    ),
    ("load1", "", "host", "1-minute load average"),
    (
        "gpu_utilization_percent",
        "gpu, UUID",
        "gpu",
        "DCGM_FI_DEV_GPU_UTIL",
    ),
    (
        "gpu_memory_used_ratio",
        "gpu, UUID",
        "gpu",
        "framebuffer used / total",
    ),
    (
        "gpu_temperature_celsius",
        "gpu, UUID",
        "gpu",
        "DCGM_FI_DEV_GPU_TEMP",
    ),
    (
        "gpu_power_watts",
        "gpu, UUID",
        "gpu",
        "DCGM_FI_DEV_POWER_USAGE",
    ),
    (
        "gpu_xid_errors",
        "gpu, UUID",
        "gpu",
        "XID errors since the agent started",
    ),
    (
        "target_up",
        "target",
        "process",
        "1 while the target's process exists, else 0",
    ),
    (
        "http_request_rate",
        "target",
        "http",
        "requests per second over the window",
    ),
    (
        "http_error_ratio",
        "target",
        "http",
        "share of 5xx responses over the window",
    ),
    (
        "http_latency_avg_seconds",
        "target",
        "http",
        "mean request duration over the window",
    ),
    (
        "http_latency_p95_seconds",
        "target",
        "http",
        "95th percentile request duration",
    ),
    (
        "http_active_requests",
        "target",
        "http",
        "requests read and not yet answered",
    ),
    (
        "ttft_p95_seconds",
        "target",
        "http",
        "95th percentile time to first token",
    ),
];

pub struct SignalSet {
    values: HashMap<&'static str, Option<Vec<Instance>>>,
}

impl Signals for SignalSet {
    fn get(&self, name: &str) -> Option<&[Instance]> {
        self.values.get(name)?.as_deref()
    }
}

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn one(value: Option<f64>) -> Vec<Instance> {
    value
        .map(|value| Instance::new(Labels::new(), value))
        .into_iter()
        .collect()
}

impl SignalSet {
    pub fn from_snapshot(s: &Snapshot) -> SignalSet {
        let up = |name: &str| {
            s.collectors
                .iter()
                .any(|c| c.name == name && c.health.state == State::Active)
        };
        let mut values: HashMap<&'static str, Option<Vec<Instance>>> = HashMap::new();
        let mut put = |name: &'static str, collector: &str, v: Vec<Instance>| {
            values.insert(name, up(collector).then_some(v));
        };
        let host = s.host.as_ref();
        put(
            "cpu_usage_percent",
            "host",
            one(host.and_then(|h| h.cpu_usage_ratio).map(|r| r * 100.0)),
        );
        put(
            "memory_usage_percent",
            "host",
            one(host.and_then(|h| h.memory_used_ratio()).map(|r| r * 100.0)),
        );
        put(
            "load1",
            "host",
            one(host.and_then(|h| h.load).map(|l| l[0])),
        );
        put(
            "disk_usage_percent",
            "host",
            host.map(|h| {
                h.filesystems
                    .iter()
                    .filter(|f| f.size_bytes > 0)
                    .map(|f| {
                        Instance::new(
                            labels(&[
                                ("device", &f.device),
                                ("fstype", &f.fstype),
                                ("mountpoint", &f.mountpoint),
                            ]),
                            100.0 * (1.0 - f.avail_bytes as f64 / f.size_bytes as f64),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default(),
        );
        type GpuField = fn(&crate::collect::gpu::DeviceReading) -> Option<f64>;
        let gpu: [(&'static str, GpuField); 5] = [
            ("gpu_utilization_percent", |d| {
                d.gpu_util_percent.map(f64::from)
            }),
            ("gpu_memory_used_ratio", |d| d.memory_used_ratio()),
            ("gpu_temperature_celsius", |d| {
                d.temperature_celsius.map(f64::from)
            }),
            ("gpu_power_watts", |d| d.power_watts),
            ("gpu_xid_errors", |d| {
                d.xid_counts
                    .as_ref()
                    .map(|c| c.iter().map(|(_, n)| *n as f64).sum())
            }),
        ];
        for (name, field) in gpu {
            let v = s
                .gpus
                .iter()
                .filter_map(|d| {
                    Some(Instance::new(
                        labels(&[("gpu", &d.index.to_string()), ("UUID", &d.uuid)]),
                        field(d)?,
                    ))
                })
                .collect();
            put(name, "gpu", v);
        }
        put(
            "target_up",
            "process",
            s.processes
                .iter()
                .map(|p| Instance::new(labels(&[("target", &p.target)]), f64::from(u8::from(p.up))))
                .collect(),
        );
        type HttpField = fn(&crate::snapshot::RequestSummary) -> Option<f64>;
        let http: [(&'static str, HttpField); 6] = [
            ("http_request_rate", |r| r.request_rate),
            ("http_error_ratio", |r| r.error_ratio),
            ("http_latency_avg_seconds", |r| r.latency_avg_seconds),
            ("http_latency_p95_seconds", |r| r.latency_p95_seconds),
            ("http_active_requests", |r| r.active.map(|a| a as f64)),
            ("ttft_p95_seconds", |r| r.ttft_p95_seconds),
        ];
        for (name, field) in http {
            let v = s
                .requests
                .iter()
                .filter_map(|r| Some(Instance::new(labels(&[("target", &r.target)]), field(r)?)))
                .collect();
            put(name, "http", v);
        }
        SignalSet { values }
    }

    /// Every instance of every signal with data, for the history.
    pub fn samples(&self) -> crate::history::Samples {
        let mut out = Vec::new();
        for (name, v) in &self.values {
            for i in v.iter().flatten() {
                out.push((*name, Labels::clone(&i.labels), i.value));
            }
        }
        out
    }

    /// A signal name rules may use.
    pub fn known(name: &str) -> bool {
        SIGNALS.iter().any(|(n, ..)| *n == name)
    }
}
