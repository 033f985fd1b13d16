//! The shipped rules: every one parses and fires on a Snapshot that crosses it.
use std::{collections::BTreeSet, path::Path};

use super::{engine::Engine, rules};
use crate::{
    base::{CollectorStatus, Health},
    collectors::{
        cuda::{CudaErrorSeries, CudaPart},
        engines::{EngineKind, EngineSeries, EngineTarget, EnginesPart, ProbeStatus},
        failures::{FailureSeries, FailuresPart},
        gpu::{
            BusState, DeviceReading, GpuHealth, GpuPart, GpuProcess, MemoryHealth, Saturation,
            XidSeries,
        },
        host::{Filesystem, HostPart, HostSample, MemoryBytes},
        http::{HttpPart, RequestSummary},
        process::{ProcessPart, ProcessSample},
    },
    readings::{Readings, TargetFigures},
};

fn summary(target: &str, rate: f64, errors: f64, latency: f64, ttft: f64) -> RequestSummary {
    RequestSummary {
        target: target.into(),
        active: Some(3),
        accepted_connections: None,
        ignored_connections: None,
        unanswered: None,
        request_rate: Some(rate),
        error_ratio: Some(errors),
        latency_avg_seconds: Some(latency),
        latency_p50_seconds: None,
        latency_p95_seconds: Some(latency),
        latency_p99_seconds: None,
        ttft_p50_seconds: None,
        ttft_p95_seconds: Some(ttft),
        oldest_active_request_seconds: Some(latency),
        stream_idle_seconds: Some(latency * 10.0),
        ..RequestSummary::default()
    }
}

/// A target that has restarted `restarts` times and lost `victims` to the OOM killer.
fn failing(restarts: u64, victims: &[u32]) -> FailuresPart {
    FailuresPart {
        failures: vec![FailureSeries {
            target: "llm".into(),
            oom_kills: victims.len() as u64,
            oom_events: None,
            oom_victims: victims.iter().map(|p| (*p, 1)).collect(),
            oom_unattributed: 0,
            signals: vec![("SIGKILL", restarts)],
            exits: vec![("signal", restarts)],
            restarts,
        }],
    }
}

/// `n` allocations of target "llm" refused for lack of GPU memory.
fn out_of_memory(n: u64) -> CudaPart {
    CudaPart {
        cuda: vec![],
        cuda_errors: vec![CudaErrorSeries {
            target: "llm".into(),
            call: "cuMemAlloc_v2",
            error: "CUDA_ERROR_OUT_OF_MEMORY".into(),
            count: n,
        }],
    }
}

/// Everything over its threshold (counters: after they rose from `failing(0, &[])`).
fn burning() -> Readings {
    let active = |name: &str| CollectorStatus {
        name: name.into(),
        health: Health::active(),
        duration_seconds: None,
    };
    Readings {
        collectors: [
            "host", "gpu", "process", "http", "engines", "failures", "cuda",
        ]
        .map(active)
        .to_vec(),
        engines: EnginesPart {
            engines: vec![EngineTarget {
                target: "llm".into(),
                url: Some("http://127.0.0.1:8000/metrics".into()),
                engine: Some(EngineKind::Vllm),
                health: Health::active(),
                duration_seconds: None,
                series: vec![EngineSeries {
                    engine_index: "0".into(),
                    requests_waiting: Some(7.0),
                    kv_cache_usage_ratio: Some(0.93),
                    preemption_rate: Some(0.5),
                    ..EngineSeries::default()
                }],
            }],
            health_probes: vec![ProbeStatus {
                target: "llm".into(),
                url: "http://127.0.0.1:8000/health".into(),
                ok: false,
                status: Some(503),
                duration_seconds: 0.01,
                reason: Some("503 Service Unavailable".into()),
                at_ms: 0,
            }],
        },
        merged: vec![TargetFigures {
            target: "llm".into(),
            requests_waiting: Some(7.0),
            ..TargetFigures::default()
        }],
        host: HostPart {
            host: Some(HostSample {
                cpu_usage_ratio: Some(0.97),
                memory: Some(MemoryBytes {
                    fields: vec![("MemTotal", 1000), ("MemAvailable", 50)],
                }),
                filesystems: vec![Filesystem {
                    device: "/dev/vda1".into(),
                    fstype: "ext4".into(),
                    mountpoint: "/".into(),
                    size_bytes: 100,
                    free_bytes: 8,
                    avail_bytes: 5,
                    files: 10,
                    files_free: 5,
                    readonly: false,
                }],
                ..HostSample::default()
            }),
        },
        http: HttpPart {
            requests: vec![
                summary("api", 12.0, 0.4, 7.5, 3.0),
                summary("idle", 0.0, 0.0, 0.1, 0.1),
            ],
            ..HttpPart::default()
        },
        process: ProcessPart {
            processes: vec![ProcessSample {
                target: "worker".into(),
                up: false,
                processes: 0,
                pids: vec![],
                cpu_seconds: None,
                resident_bytes: None,
                threads: None,
                open_fds: None,
                start_time_seconds: None,
            }],
            agent: None,
        },
        failures: failing(3, &[4242]),
        cuda: out_of_memory(1),
        gpu: GpuPart {
            gpus: vec![DeviceReading {
                index: 0,
                uuid: "GPU-1".into(),
                pci_bus_id: "00000000:18:00.0".into(),
                gpu_util_percent: Some(10),
                fb_used_mib: Some(990),
                fb_total_mib: Some(1000),
                temperature_celsius: Some(91),
                last_xid: Some(79),
                memory: MemoryHealth {
                    remap_pending: Some(1),
                    ..MemoryHealth::default()
                },
                saturation: Saturation {
                    sm_active: Some(0.05),
                    ..Saturation::default()
                },
                processes: vec![GpuProcess {
                    pid: 1,
                    used_memory_bytes: None,
                    sm_util_percent: None,
                    mem_util_percent: None,
                    target: None,
                    orphan_of: Some("llm".into()),
                }],
                ..DeviceReading::default()
            }],
            gpu_health: GpuHealth {
                xids: vec![XidSeries {
                    gpu: Some(0),
                    uuid: "GPU-1".into(),
                    pci_bus_id: "00000000:18:00.0".into(),
                    xid: 79,
                    name: "GPU has fallen off the bus",
                    action: "reboot_node",
                    count: 1,
                    ..XidSeries::default()
                }],
                // A second GPU fell off the bus: gone from NVML's count, still on the PCI
                // bus.
                bus: vec![
                    BusState {
                        pci_bus_id: "00000000:18:00.0".into(),
                        lost: false,
                    },
                    BusState {
                        pci_bus_id: "00000000:3B:00.0".into(),
                        lost: true,
                    },
                ],
                pci_devices: Some(2),
                nvml_devices: Some(1),
            },
            ..GpuPart::default()
        },
        ..Readings::default()
    }
}

#[test]
fn every_shipped_rule_parses_and_fires() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/rules.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let loaded = rules::parse(&path, &text, &["log".into()]);
    assert!(loaded.errors.is_empty(), "{:?}", loaded.errors);
    let names: BTreeSet<String> = loaded.rules.iter().map(|r| r.name.clone()).collect();
    let mut engine = Engine::new(loaded.rules, 300.0);
    let calm = Readings {
        failures: failing(0, &[]),
        cuda: out_of_memory(0),
        ..burning()
    };
    let mut fired = BTreeSet::new();
    // Counters rise a minute after the start; then longer than the longest `for`.
    for (t, r) in [(0.0, calm), (60.0, burning()), (3600.0, burning())] {
        for n in engine.evaluate(&r.signals(), t) {
            fired.insert(n.rule);
        }
    }
    assert_eq!(fired, names);
    assert!(names.len() >= 12, "{names:?}");
}
