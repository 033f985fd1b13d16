use super::*;
use crate::snapshot::{CollectorStatus, Health, ProgramStatus};
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
