use super::*;
use crate::{
    collect::{
        energy::EnergySummary,
        gpu::{DeviceReading, GpuProcess, GpuSource},
        process::ProcessSample,
    },
    snapshot::{CollectorStatus, Health, ProgramStatus},
};
use agent_common::HIST_BUCKETS;

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
        http: vec![],
        streams: vec![],
        requests: vec![],
        ringbuf_dropped: None,
        http_events_discarded: 0,
        syscalls: vec![SyscallSeries {
            target: "vllm".into(),
            syscall: "nanosleep".into(),
            count: 5,
            errors: 1,
            duration_sum_seconds: 0.012,
            buckets,
        }],
        ..Snapshot::default()
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

/// Values as NVML gave them on an H100 (one device), read through the same trait seam the
/// agent uses; temperature and PCIe counters left unreadable.
struct Recorded;

impl GpuSource for Recorded {
    fn read(&mut self) -> Result<Vec<DeviceReading>, Health> {
        Ok(vec![DeviceReading {
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
            xid_counts: Some(vec![(79, 2)]),
            processes: vec![
                GpuProcess {
                    pid: 4242,
                    used_memory_bytes: Some(60 * 1024 * 1024 * 1024),
                    sm_util_percent: Some(85),
                    mem_util_percent: None,
                },
                GpuProcess {
                    pid: 777,
                    used_memory_bytes: Some(1 << 30),
                    sm_util_percent: None,
                    mem_util_percent: None,
                },
            ],
        }])
    }
}

#[test]
fn gpu_values_map_to_dcgm_names_and_absent_values_stay_absent() {
    let mut source = Recorded;
    let gpus = source.read().unwrap();
    let snap = Snapshot {
        hostname: "gpu-host-1".into(),
        gpus,
        processes: vec![ProcessSample {
            target: "vllm".into(),
            up: true,
            processes: 1,
            pids: vec![4242],
            cpu_seconds: None,
            resident_bytes: None,
            threads: None,
            open_fds: None,
            start_time_seconds: None,
        }],
        energy: EnergySummary {
            targets: vec![("vllm".into(), 7200.0)],
            price_per_kwh: Some(0.25),
            currency: "EUR".into(),
        },
        ..Snapshot::default()
    };
    let text = String::from_utf8(render(&snap).unwrap()).unwrap();
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
        format!("infersight_gpu_xid_errors_total{{{id},xid=\"79\"}} 2"),
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
