//! `cargo xtask bench alerts`: time to evaluate 1000 rules on one Snapshot (signals built
//! from the Snapshot included). Goal: ≤ 1 ms.
//!
//! The Snapshot is a busy inference host: 8 GPUs, 32 targets, 12 filesystems. The rules
//! cycle through every signal with thresholds that make about a third of the instances
//! match, plus `and`/`or` combinations, range functions (`increase`, `rate`, `changes`
//! over 1 to 10 minutes) and `absent`. Between evaluations (10 s apart) request rates
//! change and targets go down and up, so the range functions' history grows and slides.
//!
//! Usage: cargo bench -p infersight --bench alerts -- [--rules N] [--rounds R]
mod common;

use std::{path::Path, time::Instant};

use infersight::{
    alert::{engine::Engine, rules},
    base::{CollectorStatus, Health},
    collectors::{
        gpu::{DeviceReading, GpuPart},
        host::{Filesystem, HostPart, HostSample, MemoryBytes},
        http::{HttpPart, RequestSummary},
        process::{ProcessPart, ProcessSample},
    },
    readings::Readings,
};

fn snapshot() -> Readings {
    let active = |name: &str| CollectorStatus {
        name: name.into(),
        health: Health::active(),
        duration_seconds: None,
    };
    let targets: Vec<String> = (0..32).map(|i| format!("svc{i}")).collect();
    Readings {
        collectors: ["host", "gpu", "process", "http"].map(active).to_vec(),
        host: HostPart {
            host: Some(HostSample {
                cpu_usage_ratio: Some(0.6),
                memory: Some(MemoryBytes {
                    fields: vec![("MemTotal", 1 << 40), ("MemAvailable", 1 << 38)],
                }),
                load: Some([4.0, 3.0, 2.0]),
                filesystems: (0..12)
                    .map(|i| Filesystem {
                        device: format!("/dev/nvme{i}n1"),
                        fstype: "xfs".into(),
                        mountpoint: format!("/data{i}"),
                        size_bytes: 1000,
                        free_bytes: 100 * i,
                        avail_bytes: 80 * i,
                        files: 10,
                        files_free: 5,
                        readonly: false,
                    })
                    .collect(),
                ..HostSample::default()
            }),
        },
        gpu: GpuPart {
            gpus: (0..8)
                .map(|i| DeviceReading {
                    index: i,
                    uuid: format!("GPU-{i}"),
                    gpu_util_percent: Some(i * 12),
                    fb_used_mib: Some(u64::from(i) * 10_000),
                    fb_total_mib: Some(81_559),
                    temperature_celsius: Some(50 + i * 5),
                    power_watts: Some(300.0),
                    last_xid: Some(0),
                    ..DeviceReading::default()
                })
                .collect(),
            ..GpuPart::default()
        },
        process: ProcessPart {
            processes: targets
                .iter()
                .enumerate()
                .map(|(i, t)| ProcessSample {
                    target: t.clone(),
                    up: i % 3 != 0,
                    processes: 1,
                    pids: vec![],
                    cpu_seconds: None,
                    resident_bytes: None,
                    threads: None,
                    open_fds: None,
                    start_time_seconds: None,
                })
                .collect(),
            agent: None,
        },
        http: HttpPart {
            requests: targets
                .iter()
                .enumerate()
                .map(|(i, t)| RequestSummary {
                    target: t.clone(),
                    active: Some(i as u64 % 4),
                    accepted_connections: None,
                    ignored_connections: None,
                    unanswered: None,
                    request_rate: Some(i as f64),
                    error_ratio: Some(i as f64 / 100.0),
                    latency_avg_seconds: Some(i as f64 / 10.0),
                    latency_p50_seconds: None,
                    latency_p95_seconds: Some(i as f64 / 5.0),
                    latency_p99_seconds: None,
                    ttft_p50_seconds: None,
                    ttft_p95_seconds: Some(i as f64 / 20.0),
                    oldest_active_request_seconds: None,
                    stream_idle_seconds: None,
                    ..RequestSummary::default()
                })
                .collect(),
            ..HttpPart::default()
        },
        ..Readings::default()
    }
}

const EXPRS: &[&str] = &[
    "cpu_usage_percent > 50",
    "memory_usage_percent > 70",
    "disk_usage_percent > 50",
    "load1 > 3",
    "gpu_utilization_percent > 40",
    "gpu_memory_used_ratio > 50%",
    "gpu_temperature_celsius > 70",
    "gpu_xid_errors > 0",
    "target_up == 0",
    "http_request_rate > 20",
    "http_error_ratio > 20%",
    "http_latency_avg_seconds > 2s",
    "http_latency_p95_seconds > 4",
    r#"ttft_p95_seconds{target!="svc1"} > 1"#,
    "gpu_utilization_percent < 50 and http_active_requests > 0",
    "http_error_ratio > 5% or http_latency_p95_seconds > 5",
    "increase(gpu_xid_errors[5m]) > 0",
    "changes(target_up[10m]) >= 2",
    "rate(http_request_rate[1m]) > 0.05",
    r#"changes(http_request_rate{target!="svc1"}[5m]) > 10 and target_up == 1"#,
    r#"absent(target_up{target="svc40"})"#,
];

/// The readings at evaluation `round`: request rates move every round, each target goes
/// down for 5 rounds in 15.
fn advance(snap: &mut Readings, round: usize) {
    for (i, r) in snap.http.requests.iter_mut().enumerate() {
        r.request_rate = Some(((i + round) % 7) as f64);
    }
    for (i, p) in snap.process.processes.iter_mut().enumerate() {
        p.up = !(i + round / 5).is_multiple_of(3);
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let n = common::flag(&args, "--rules", 1000) as usize;
    let rounds = common::flag(&args, "--rounds", 200) as usize;
    let mut text = String::new();
    for i in 0..n {
        text.push_str(&format!(
            "[[rule]]\nname = \"R{i}\"\nexpr = '{}'\nfor = \"{}s\"\nseverity = \"warning\"\n[rule.annotations]\nsummary = \"{{{{ $labels.target }}}} at {{{{ $value }}}}\"\n\n",
            EXPRS[i % EXPRS.len()],
            i % 3 * 60
        ));
    }
    let loaded = rules::parse(Path::new("bench.toml"), &text, &["log".into()]);
    assert!(loaded.errors.is_empty(), "{:?}", loaded.errors);
    let mut engine = Engine::new(loaded.rules, 300.0);
    let mut snap = snapshot();
    let mut times = Vec::with_capacity(rounds);
    let mut notes = 0;
    for r in 0..rounds {
        advance(&mut snap, r);
        let start = Instant::now();
        let signals = snap.signals();
        notes += engine.evaluate(&signals, r as f64 * 10.0).len();
        times.push(start.elapsed().as_secs_f64() * 1e3);
    }
    let alerts = engine.alerts().len();
    let median = common::median(&mut times);
    let max = times.last().copied().unwrap_or(0.0);
    println!("\nalerts benchmark: {n} rules, {alerts} active alert instances, {notes} notifications over {rounds} evaluations\n");
    println!("| | ms per evaluation |");
    println!("| --- | ---: |");
    println!("| median | {median:.3} (goal ≤ 1 ms) |");
    println!("| worst | {max:.3} |");
    common::goal(
        &format!("evaluate {n} rules"),
        format!("{median:.3} ms"),
        "≤ 1 ms",
        median <= 1.0,
    );
}
