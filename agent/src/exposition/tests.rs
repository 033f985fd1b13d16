use super::*;
use crate::{
    base::{
        family::{counter, family, gauge, histogram, label_pairs},
        histogram::{self as buckets, Histogram},
        CollectorStatus, Health, ProgramStatus,
    },
    collectors::{
        gpu::{
            DeviceReading, EnergySummary, GpuHealth, GpuPart, GpuProcess, GpuSource, NvmlReading,
            XidSeries,
        },
        http::{HttpPart, HttpSeries},
        syscalls::{SyscallSeries, SyscallsPart},
    },
    readings::Readings,
};
use agent_common::HIST_BUCKETS;
use prometheus::proto::{Bucket, Histogram as ProtoHistogram, Metric};

fn snap() -> Snapshot {
    let mut buckets = [0u64; HIST_BUCKETS];
    buckets[21] = 3;
    buckets[22] = 1;
    Snapshot {
        readings: Readings {
            timestamp_ms: 0,
            tick: 1,
            targets: vec![],
            collectors: vec![CollectorStatus {
                name: "syscalls".into(),
                health: Health::unsupported("no privileges"),
                duration_seconds: None,
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
            syscalls: SyscallsPart {
                syscalls: vec![SyscallSeries {
                    target: "vllm".into(),
                    syscall: "nanosleep".into(),
                    count: 5,
                    errors: 1,
                    duration_sum_seconds: 0.012,
                    buckets,
                }],
                syscall_series_limited: 0,
            },
            ..Readings::default()
        },
        ..Snapshot::default()
    }
}

#[test]
fn exposition() {
    let text = String::from_utf8(render(&snap())).unwrap();
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

/// Values as NVML gave them on an H100 (one device), read through the same trait seam the
/// agent uses; temperature and PCIe counters left unreadable.
struct Recorded;

impl GpuSource for Recorded {
    fn read(&mut self) -> Result<NvmlReading, Health> {
        let devices = vec![DeviceReading {
            index: 0,
            uuid: "GPU-5c9f6b4e-1d2a-7c3b-9e8f-0a1b2c3d4e5f".into(),
            pci_bus_id: "00000000:18:00.0".into(),
            device: "nvidia0".into(),
            model: "NVIDIA H100 80GB HBM3".into(),
            gpu_util_percent: Some(87),
            mem_copy_util_percent: Some(41),
            fb_used_mib: Some(61_440),
            fb_free_mib: Some(19_647),
            fb_total_mib: Some(81_559),
            temperature_celsius: None,
            power_watts: Some(412.5),
            energy_millijoules: Some(7_200_000_000),
            sm_clock_mhz: Some(1980),
            mem_clock_mhz: Some(2619),
            pcie_tx_bytes_per_second: None,
            pcie_rx_bytes_per_second: None,
            throttle_reasons: Some(4),
            last_xid: Some(79),
            processes: vec![
                GpuProcess {
                    pid: 4242,
                    used_memory_bytes: Some(60 * 1024 * 1024 * 1024),
                    sm_util_percent: Some(85),
                    mem_util_percent: None,
                    // The target the agent found it belongs to.
                    target: Some("vllm".into()),
                    orphan_of: None,
                },
                GpuProcess {
                    pid: 777,
                    used_memory_bytes: Some(1 << 30),
                    sm_util_percent: None,
                    mem_util_percent: None,
                    target: None,
                    orphan_of: None,
                },
            ],
            ..DeviceReading::default()
        }];
        Ok(NvmlReading {
            device_count: 1,
            devices,
        })
    }
}

#[test]
fn gpu_values_map_to_dcgm_names_and_absent_values_stay_absent() {
    let mut source = Recorded;
    let gpus = source.read().unwrap().devices;
    let xids = vec![XidSeries {
        gpu: Some(0),
        uuid: gpus[0].uuid.clone(),
        pci_bus_id: gpus[0].pci_bus_id.clone(),
        device: gpus[0].device.clone(),
        model: gpus[0].model.clone(),
        xid: 79,
        name: "GPU has fallen off the bus",
        action: "reboot_node",
        count: 2,
    }];
    let snap = Snapshot {
        readings: Readings {
            gpu: GpuPart {
                hostname: "gpu-host-1".into(),
                gpus,
                energy: EnergySummary {
                    targets: vec![("vllm".into(), 7200.0)],
                    price_per_kwh: Some(0.25),
                    currency: "EUR".into(),
                },
                gpu_health: GpuHealth {
                    xids,
                    ..GpuHealth::default()
                },
            },
            ..Readings::default()
        },
        ..Snapshot::default()
    };
    let text = String::from_utf8(render(&snap)).unwrap();
    let id = "gpu=\"0\",UUID=\"GPU-5c9f6b4e-1d2a-7c3b-9e8f-0a1b2c3d4e5f\",pci_bus_id=\"00000000:18:00.0\",device=\"nvidia0\",modelName=\"NVIDIA H100 80GB HBM3\",Hostname=\"gpu-host-1\"";
    for line in [
        format!("DCGM_FI_DEV_GPU_UTIL{{{id}}} 87"),
        format!("DCGM_FI_DEV_MEM_COPY_UTIL{{{id}}} 41"),
        format!("DCGM_FI_DEV_FB_USED{{{id}}} 61440"),
        format!("DCGM_FI_DEV_FB_FREE{{{id}}} 19647"),
        format!("DCGM_FI_DEV_POWER_USAGE{{{id}}} 412.5"),
        format!("DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION{{{id}}} 7200000000"),
        format!("DCGM_FI_DEV_SM_CLOCK{{{id}}} 1980"),
        format!("DCGM_FI_DEV_MEM_CLOCK{{{id}}} 2619"),
        format!("DCGM_FI_DEV_XID_ERRORS{{{id}}} 79"),
        format!("DCGM_FI_DEV_CLOCK_THROTTLE_REASONS{{{id}}} 4"),
        format!("infersight_gpu_xid_errors_total{{{id},xid=\"79\",name=\"GPU has fallen off the bus\",action=\"reboot_node\"}} 2"),
        format!("infersight_gpu_energy_joules_total{{{id}}} 7200000"),
        // 7.2 MJ = 2 kWh at 0.25 EUR.
        format!("infersight_gpu_energy_cost_total{{{id},currency=\"EUR\"}} 0.5"),
        "infersight_gpu_process_memory_used_bytes{gpu=\"0\",UUID=\"GPU-5c9f6b4e-1d2a-7c3b-9e8f-0a1b2c3d4e5f\",pid=\"4242\",target=\"vllm\"} 64424509440".into(),
        "infersight_gpu_process_sm_utilization_percent{gpu=\"0\",UUID=\"GPU-5c9f6b4e-1d2a-7c3b-9e8f-0a1b2c3d4e5f\",pid=\"4242\",target=\"vllm\"} 85".into(),
        "infersight_energy_joules_total{target=\"vllm\"} 7200".into(),
        "infersight_energy_cost_total{currency=\"EUR\",target=\"vllm\"} 0.0005".into(),
    ] {
        assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
    }
    // Unreadable values and processes of no target have no series at all.
    for absent in [
        "DCGM_FI_DEV_GPU_TEMP",
        "DCGM_FI_PROF_PCIE",
        "pid=\"777\"",
        "memory_utilization_percent",
    ] {
        assert!(!text.contains(absent), "{absent} present in\n{text}");
    }
}

/// Families with every kind of sample and every escape the format has.
fn edge_families() -> Vec<MetricFamily> {
    let odd = [("path", "/a\"b\\c\nd"), ("target", "x")];
    let mut with_ts = gauge(&[("k", "v")], 2.5);
    with_ts.set_timestamp_ms(1_700_000_000_123);
    let mut explicit_inf = ProtoHistogram::default();
    explicit_inf.set_sample_count(4);
    explicit_inf.set_sample_sum(1.25);
    explicit_inf.set_bucket(
        [(0.5, 1u64), (f64::INFINITY, 4)]
            .iter()
            .map(|&(ub, c)| {
                let mut b = Bucket::default();
                b.set_upper_bound(ub);
                b.set_cumulative_count(c);
                b
            })
            .collect(),
    );
    let mut inf_metric = Metric::from_label(label_pairs(&[("k", "inf")]));
    inf_metric.set_histogram(explicit_inf);
    let values = [
        0.0,
        -0.0,
        0.5,
        -3.0,
        1e-9,
        123_456_789_012.0,
        9_007_199_254_740_993.0,
        1e21,
        f64::NAN,
        f64::INFINITY,
        f64::NEG_INFINITY,
    ];
    vec![
        family(
            "edge_gauge",
            "Help with a backslash \\ and a\nnewline and \"quotes\".",
            MetricType::GAUGE,
            values
                .iter()
                .enumerate()
                .map(|(i, v)| gauge(&[("i", &i.to_string()), odd[0]], *v))
                .chain(std::iter::once(with_ts))
                .collect(),
        ),
        family(
            "edge_counter",
            "",
            MetricType::COUNTER,
            vec![counter(&[], 7.0)],
        ),
        family(
            "edge_histogram",
            "h",
            MetricType::HISTOGRAM,
            vec![
                histogram(&odd, [(0.1, 1u64), (1.0, 3)].into_iter(), 5, 2.75),
                histogram(&[("k", "other")], [(0.2, 0u64)].into_iter(), 0, 0.0),
                inf_metric,
            ],
        ),
    ]
}

#[test]
fn text_encoding_matches_the_prometheus_crate_byte_for_byte() {
    use prometheus::Encoder;
    let mut http = snap();
    let mut d = Histogram::new(buckets::HTTP_DURATION);
    for i in 0..50 {
        d.observe(f64::from(i) / 100.0);
    }
    http.readings.http = HttpPart::default();
    http.readings.http.http = vec![HttpSeries {
        target: "vllm".into(),
        method: "POST".into(),
        version: "1.1",
        route: "/v1/items/{id}".into(),
        status: 200,
        duration: d,
        request_body: Histogram::new(buckets::BODY_SIZE),
        response_body: Histogram::new(buckets::BODY_SIZE),
    }];
    let mut all = families(&http);
    all.extend(edge_families());
    let mut ours = Vec::new();
    super::text::encode(&all, &mut ours);
    let mut theirs = Vec::new();
    prometheus::TextEncoder::new()
        .encode(&all, &mut theirs)
        .unwrap();
    assert_eq!(
        String::from_utf8(ours).unwrap(),
        String::from_utf8(theirs).unwrap()
    );
}

#[test]
fn families_without_samples_are_left_out() {
    let empty = family("empty_family", "nothing", MetricType::GAUGE, vec![]);
    let mut out = Vec::new();
    super::text::encode(
        &[
            empty,
            family("one", "", MetricType::GAUGE, vec![gauge(&[], 1.0)]),
        ],
        &mut out,
    );
    assert_eq!(String::from_utf8(out).unwrap(), "# TYPE one gauge\none 1\n");
}
