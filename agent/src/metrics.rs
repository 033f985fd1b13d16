//! Prometheus exposition of a Snapshot. Values are already aggregated (in the kernel or by
//! the collectors), so families are built directly from the Snapshot and encoded with the
//! prometheus crate's text encoder; nothing here keeps state between scrapes.
use agent_common::HIST_BUCKETS;
use prometheus::{
    proto::{Bucket, Counter, Gauge, Histogram, LabelPair, Metric, MetricFamily, MetricType},
    Encoder, TextEncoder,
};

use crate::snapshot::{Snapshot, State, SyscallSeries};

pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

fn labels(pairs: &[(&str, &str)]) -> Vec<LabelPair> {
    pairs
        .iter()
        .map(|(n, v)| {
            let mut l = LabelPair::default();
            l.set_name((*n).to_string());
            l.set_value((*v).to_string());
            l
        })
        .collect()
}

fn family(name: &str, help: &str, kind: MetricType, metrics: Vec<Metric>) -> MetricFamily {
    let mut f = MetricFamily::default();
    f.set_name(name.to_string());
    f.set_help(help.to_string());
    f.set_field_type(kind);
    f.set_metric(metrics);
    f
}

fn gauge(pairs: &[(&str, &str)], v: f64) -> Metric {
    let mut g = Gauge::default();
    g.set_value(v);
    let mut m = Metric::from_label(labels(pairs));
    m.set_gauge(g);
    m
}

fn counter(pairs: &[(&str, &str)], v: f64) -> Metric {
    let mut c = Counter::default();
    c.set_value(v);
    let mut m = Metric::from_label(labels(pairs));
    m.set_counter(c);
    m
}

fn histogram(pairs: &[(&str, &str)], s: &SyscallSeries) -> Metric {
    let mut cumulative = 0u64;
    let mut buckets = Vec::with_capacity(HIST_BUCKETS);
    for (i, n) in s.buckets.iter().enumerate() {
        cumulative += n;
        if let Some(upper) = SyscallSeries::bucket_upper_seconds(i) {
            let mut b = Bucket::default();
            b.set_upper_bound(upper);
            b.set_cumulative_count(cumulative);
            buckets.push(b);
        }
    }
    let mut h = Histogram::default();
    h.set_sample_count(cumulative);
    h.set_sample_sum(s.duration_sum_seconds);
    h.set_bucket(buckets);
    let mut m = Metric::from_label(labels(pairs));
    m.set_histogram(h);
    m
}

fn families(snap: &Snapshot) -> Vec<MetricFamily> {
    let mut out = vec![family(
        "infersight_build_info",
        "Build information of the running agent; the value is always 1.",
        MetricType::GAUGE,
        vec![gauge(&[("version", env!("CARGO_PKG_VERSION"))], 1.0)],
    )];
    out.push(family(
        "infersight_collector_up",
        "Whether each collector is working (1) or not (0: unsupported or failed; see /health).",
        MetricType::GAUGE,
        snap.collectors
            .iter()
            .map(|c| {
                let up = if c.health.state == State::Active {
                    1.0
                } else {
                    0.0
                };
                gauge(&[("collector", &c.name)], up)
            })
            .collect(),
    ));
    out.push(family(
        "infersight_ebpf_program_attached",
        "Whether each eBPF program is loaded and attached.",
        MetricType::GAUGE,
        snap.programs
            .iter()
            .map(|p| {
                let up = if p.health.state == State::Active {
                    1.0
                } else {
                    0.0
                };
                gauge(&[("program", &p.name)], up)
            })
            .collect(),
    ));
    // Run-time statistics are absent (not 0) when the kernel does not collect them.
    let run_time: Vec<Metric> = snap
        .programs
        .iter()
        .filter_map(|p| {
            p.run_time_ns
                .map(|ns| counter(&[("program", &p.name)], ns as f64 / 1e9))
        })
        .collect();
    let run_count: Vec<Metric> = snap
        .programs
        .iter()
        .filter_map(|p| {
            p.run_count
                .map(|n| counter(&[("program", &p.name)], n as f64))
        })
        .collect();
    out.push(family(
        "infersight_ebpf_program_run_time_seconds_total",
        "Time spent running each eBPF program (BPF_ENABLE_STATS).",
        MetricType::COUNTER,
        run_time,
    ));
    out.push(family(
        "infersight_ebpf_program_run_count_total",
        "Number of runs of each eBPF program (BPF_ENABLE_STATS).",
        MetricType::COUNTER,
        run_count,
    ));

    let mut calls = Vec::with_capacity(snap.syscalls.len());
    let mut errors = Vec::with_capacity(snap.syscalls.len());
    let mut durations = Vec::with_capacity(snap.syscalls.len());
    for s in &snap.syscalls {
        let l = [
            ("target", s.target.as_str()),
            ("syscall", s.syscall.as_str()),
        ];
        calls.push(counter(&l, s.count as f64));
        errors.push(counter(&l, s.errors as f64));
        durations.push(histogram(&l, s));
    }
    out.push(family(
        "infersight_syscalls_total",
        "System calls made by each target.",
        MetricType::COUNTER,
        calls,
    ));
    out.push(family(
        "infersight_syscall_errors_total",
        "System calls of each target that returned an error (negative return value).",
        MetricType::COUNTER,
        errors,
    ));
    out.push(family(
        "infersight_syscall_duration_seconds",
        "Time from syscall entry to exit (log2 buckets; exit and exit_group are counted but never return).",
        MetricType::HISTOGRAM,
        durations,
    ));
    // The text encoder rejects families without samples.
    out.retain(|f| !f.get_metric().is_empty());
    out
}

/// The Snapshot in Prometheus text exposition format.
pub fn render(snap: &Snapshot) -> Result<Vec<u8>, prometheus::Error> {
    let mut buf = Vec::with_capacity(16 * 1024);
    TextEncoder::new().encode(&families(snap), &mut buf)?;
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::{CollectorStatus, Health, ProgramStatus};

    fn snap() -> Snapshot {
        let mut buckets = [0u64; HIST_BUCKETS];
        buckets[21] = 3;
        buckets[22] = 1;
        Snapshot {
            timestamp_ms: 0,
            tick: 1,
            targets: vec![],
            collectors: vec![CollectorStatus {
                name: "syscalls".into(),
                health: Health::unsupported("no privileges"),
            }],
            programs: vec![
                ProgramStatus {
                    name: "sys_enter".into(),
                    health: Health::active(),
                    run_time_ns: Some(1_500_000_000),
                    run_count: Some(10),
                },
                ProgramStatus {
                    name: "sys_exit".into(),
                    health: Health::failed("x"),
                    run_time_ns: None,
                    run_count: None,
                },
            ],
            syscalls: vec![SyscallSeries {
                target: "vllm".into(),
                syscall: "nanosleep".into(),
                count: 5,
                errors: 1,
                duration_sum_seconds: 0.012,
                buckets,
            }],
        }
    }

    #[test]
    fn exposition() {
        let text = String::from_utf8(render(&snap()).unwrap()).unwrap();
        for line in [
            "infersight_build_info{version=\"0.1.0\"} 1",
            "infersight_collector_up{collector=\"syscalls\"} 0",
            "infersight_ebpf_program_attached{program=\"sys_enter\"} 1",
            "infersight_ebpf_program_attached{program=\"sys_exit\"} 0",
            "infersight_ebpf_program_run_time_seconds_total{program=\"sys_enter\"} 1.5",
            "infersight_ebpf_program_run_count_total{program=\"sys_enter\"} 10",
            "infersight_syscalls_total{target=\"vllm\",syscall=\"nanosleep\"} 5",
            "infersight_syscall_errors_total{target=\"vllm\",syscall=\"nanosleep\"} 1",
            "infersight_syscall_duration_seconds_bucket{target=\"vllm\",syscall=\"nanosleep\",le=\"0.002097152\"} 0",
            "infersight_syscall_duration_seconds_bucket{target=\"vllm\",syscall=\"nanosleep\",le=\"0.004194304\"} 3",
            "infersight_syscall_duration_seconds_bucket{target=\"vllm\",syscall=\"nanosleep\",le=\"0.008388608\"} 4",
            "infersight_syscall_duration_seconds_bucket{target=\"vllm\",syscall=\"nanosleep\",le=\"+Inf\"} 4",
            "infersight_syscall_duration_seconds_sum{target=\"vllm\",syscall=\"nanosleep\"} 0.012",
            "infersight_syscall_duration_seconds_count{target=\"vllm\",syscall=\"nanosleep\"} 4",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
        }
        // No run-time sample for the program without statistics: absent, not 0.
        assert!(!text.contains("run_time_seconds_total{program=\"sys_exit\"}"));
    }
}
