//! `cargo xtask bench store`: history writes per second (goal ≥ 100k samples/s), a
//! history query over 24 h of 1 s samples (goal ≤ 20 ms), and rendering `/metrics` and
//! `/api/v1/snapshot` for a Snapshot with 1 GPU and 10 targets (goal ≤ 5 ms).
//!
//! Usage: cargo bench -p infersight --bench store
mod common;

use std::{collections::BTreeMap, time::Duration, time::Instant};

use infersight::{
    alert::expr::Labels,
    base::histogram::{self, Histogram},
    collectors::{
        gpu::{DeviceReading, GpuPart},
        host::{HostPart, HostReader},
        http::{HttpPart, HttpSeries, RequestSummary},
        syscalls::{SyscallSeries, SyscallsPart},
    },
    history::{History, Samples},
    readings::Readings,
    snapshot::Snapshot,
};

fn labels(pairs: &[(&str, String)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect()
}

fn main() {
    let dir = std::env::temp_dir().join(format!("infersight-bench-store-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let day = Duration::from_secs(86_400);
    let (mut h, _) = History::open(&dir, day, 7 * day).expect("open history");

    // 1. Writes: 200 ticks of 1000 samples (1000 series), one transaction per tick.
    let tick: Samples = (0..1000)
        .map(|i| {
            (
                "http_request_rate",
                labels(&[("target", format!("t{i}"))]),
                i as f64,
            )
        })
        .collect();
    let t0 = 1_700_000_000;
    h.write(t0 - 1, &tick).expect("warm up");
    let start = Instant::now();
    for i in 0..200 {
        h.write(t0 + i, &tick).expect("write");
    }
    let write_rate = 200_000.0 / start.elapsed().as_secs_f64();
    // What the writer thread adds once a minute: repacking the ticks into per-series
    // chunks and minute averages (here 200 s of ticks at once).
    h.maintain(t0 + 260).expect("maintain");
    let packed_rate = 200_000.0 / start.elapsed().as_secs_f64();

    // 2. A day of 1 s samples of one series, then queries over it.
    let now = t0 + 86_400;
    let one: Samples = vec![("cpu_usage_percent", Labels::new(), 0.0)];
    let fill = Instant::now();
    for i in 0..86_400 {
        let mut s = one.clone();
        s[0].2 = (i % 100) as f64;
        h.write(t0 + i, &s).expect("fill");
    }
    let fill_s = fill.elapsed().as_secs_f64();
    // What the writer thread does once a minute.
    h.maintain(now).expect("maintain");
    let mut q300 = Vec::new();
    let mut q1 = Vec::new();
    for _ in 0..20 {
        let s = Instant::now();
        let r = h
            .query(
                "cpu_usage_percent",
                &BTreeMap::new(),
                now - 86_400,
                now,
                300,
                now,
            )
            .expect("query");
        q300.push(s.elapsed().as_secs_f64() * 1e3);
        // 288 buckets, plus one where the day does not start on a 300 s boundary.
        assert!((288..=289).contains(&r[0].points.len()));
        let s = Instant::now();
        let r = h
            .query(
                "cpu_usage_percent",
                &BTreeMap::new(),
                now - 86_400,
                now,
                1,
                now,
            )
            .expect("query");
        q1.push(s.elapsed().as_secs_f64() * 1e3);
        assert_eq!(r[0].points.len(), 86_400);
    }

    // 3. Rendering with 1 GPU and 10 targets.
    let mut host = HostReader::default();
    let _ = host.sample();
    let mut d = Histogram::new(histogram::HTTP_DURATION);
    for i in 0..100 {
        d.observe(f64::from(i) / 1000.0);
    }
    let targets: Vec<String> = (0..10).map(|i| format!("svc{i}")).collect();
    let readings = Readings {
        host: HostPart {
            host: Some(host.sample()),
        },
        gpu: GpuPart {
            gpus: vec![DeviceReading {
                uuid: "GPU-0".into(),
                gpu_util_percent: Some(50),
                fb_used_mib: Some(1000),
                ..DeviceReading::default()
            }],
            ..GpuPart::default()
        },
        http: HttpPart {
            http: targets
                .iter()
                .flat_map(|t| {
                    let d = d.clone();
                    (0..5).map(move |r| HttpSeries {
                        target: t.clone(),
                        version: "1.1",
                        method: "GET".into(),
                        route: format!("/v1/r{r}"),
                        status: 200,
                        duration: d.clone(),
                        request_body: Histogram::new(histogram::BODY_SIZE),
                        response_body: Histogram::new(histogram::BODY_SIZE),
                    })
                })
                .collect(),
            requests: targets
                .iter()
                .map(|t| RequestSummary {
                    target: t.clone(),
                    active: Some(1),
                    accepted_connections: Some(1),
                    ignored_connections: Some(0),
                    unanswered: Some(0),
                    request_rate: Some(1.0),
                    error_ratio: Some(0.0),
                    latency_avg_seconds: Some(0.1),
                    latency_p50_seconds: Some(0.1),
                    latency_p95_seconds: Some(0.2),
                    latency_p99_seconds: Some(0.3),
                    ttft_p50_seconds: None,
                    ttft_p95_seconds: None,
                    oldest_active_request_seconds: Some(0.1),
                    stream_idle_seconds: None,
                    ..RequestSummary::default()
                })
                .collect(),
            ..HttpPart::default()
        },
        syscalls: SyscallsPart {
            syscalls: targets
                .iter()
                .flat_map(|t| {
                    (0..30).map(move |n| SyscallSeries {
                        target: t.clone(),
                        syscall: format!("nr_{n}"),
                        count: 10,
                        errors: 0,
                        duration_sum_seconds: 0.1,
                        buckets: [1; agent_common::HIST_BUCKETS],
                    })
                })
                .collect(),
            syscall_series_limited: 0,
        },
        ..Readings::default()
    };
    let snap = Snapshot {
        readings,
        ..Snapshot::default()
    };
    let mut metrics = Vec::new();
    let mut crate_encoder = Vec::new();
    let mut json = Vec::new();
    let mut size = (0, 0);
    for _ in 0..100 {
        let s = Instant::now();
        let m = infersight::exposition::render(&snap);
        metrics.push(s.elapsed().as_secs_f64() * 1e3);
        // The same families through the prometheus crate's own text encoder (what render
        // used before), interleaved for a side-by-side ratio.
        let s = Instant::now();
        let mut buf = Vec::with_capacity(16 * 1024);
        prometheus::Encoder::encode(
            &prometheus::TextEncoder::new(),
            &infersight::exposition::families(&snap),
            &mut buf,
        )
        .expect("crate encoder");
        crate_encoder.push(s.elapsed().as_secs_f64() * 1e3);
        let s = Instant::now();
        let j = serde_json::to_vec(&snap).expect("json");
        json.push(s.elapsed().as_secs_f64() * 1e3);
        size = (m.len(), j.len());
    }
    let _ = std::fs::remove_dir_all(&dir);

    println!("\nstore benchmark\n");
    println!("| measure | result | goal |");
    println!("| --- | ---: | --- |");
    println!("| history writes (1000 samples per tick-transaction) | {write_rate:.0} samples/s | ≥ 100000 |");
    println!("| history writes including the once-a-minute repacking into chunks | {packed_rate:.0} samples/s | ≥ 100000 |");
    println!(
        "| query 24 h of 1 s samples, step 300 s (288 points) | {:.2} ms median | ≤ 20 ms |",
        common::median(&mut q300)
    );
    println!(
        "| query 24 h of 1 s samples, step 1 s (86400 points) | {:.2} ms median | – |",
        common::median(&mut q1)
    );
    println!(
        "| render /metrics, 1 GPU + 10 targets ({} bytes) | {:.2} ms median | ≤ 5 ms |",
        size.0,
        common::median(&mut metrics)
    );
    println!(
        "| same families, prometheus crate's TextEncoder (no process_* families) | {:.2} ms median | – |",
        common::median(&mut crate_encoder)
    );
    println!(
        "| encode /api/v1/snapshot, same ({} bytes) | {:.2} ms median | ≤ 5 ms |",
        size.1,
        common::median(&mut json)
    );
    println!("\n(filling 86400 one-sample ticks took {fill_s:.1} s: one transaction per tick)");
    let (q, m, j) = (
        common::median(&mut q300),
        common::median(&mut metrics),
        common::median(&mut json),
    );
    common::goal(
        "history writes, with repacking",
        format!("{packed_rate:.0} samples/s"),
        "≥ 100 000 /s",
        packed_rate >= 100_000.0,
    );
    common::goal(
        "history query over 24 h (300 s step)",
        format!("{q:.2} ms"),
        "≤ 20 ms",
        q <= 20.0,
    );
    common::goal(
        "render /metrics, 1 GPU + 10 targets (first scrape of a tick)",
        format!("{m:.2} ms"),
        "≤ 5 ms",
        m <= 5.0,
    );
    common::goal(
        "encode /api/v1/snapshot, same",
        format!("{j:.2} ms"),
        "≤ 5 ms",
        j <= 5.0,
    );
}
