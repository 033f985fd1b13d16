use super::*;

/// PID → target for the target `target` made of `pids`.
fn proc(target: &'static str, pids: &[u32]) -> Vec<(u32, &'static str)> {
    pids.iter().map(|p| (*p, target)).collect()
}

fn gpu(mj: u64, procs: &[(u32, Option<u64>, Option<u32>)]) -> DeviceReading {
    DeviceReading {
        uuid: "GPU-1".into(),
        energy_millijoules: Some(mj),
        processes: procs
            .iter()
            .map(|&(pid, mem, util)| GpuProcess {
                pid,
                used_memory_bytes: mem,
                sm_util_percent: util,
                mem_util_percent: None,
                target: None,
                orphan_of: None,
            })
            .collect(),
        ..DeviceReading::default()
    }
}

#[test]
fn energy_is_shared_by_utilization_then_by_memory() {
    let procs: HashMap<u32, &str> = [proc("a", &[10, 11]), proc("b", &[20])]
        .concat()
        .into_iter()
        .collect();
    let mut l = EnergyLedger::default();
    // The first reading only sets the baseline.
    l.update(&[gpu(1_000_000, &[])], &procs);
    assert!(l.summary(None, "USD").targets.is_empty());
    // 1000 J; utilization 30 + 10 (a) vs 40 (b): half each; pid 99 is no target's.
    l.update(
        &[gpu(
            2_000_000,
            &[
                (10, Some(1), Some(30)),
                (11, None, Some(10)),
                (20, Some(1), Some(40)),
                (99, Some(5), Some(0)),
            ],
        )],
        &procs,
    );
    // 3600 J more, no utilization samples: by memory 1:3 (pid 99 holds 0).
    l.update(
        &[gpu(
            5_600_000,
            &[(10, Some(100), None), (20, Some(300), None)],
        )],
        &procs,
    );
    let s = l.summary(Some(0.5), "EUR");
    assert_eq!(
        s.targets,
        vec![
            ("a".to_string(), 500.0 + 900.0),
            ("b".to_string(), 500.0 + 2700.0)
        ]
    );
    assert_eq!(s.cost(3.6e6), Some(0.5));
    // A counter that went backwards (driver reload) attributes nothing.
    l.update(&[gpu(10, &[(10, Some(1), Some(50))])], &procs);
    assert_eq!(l.summary(None, "USD").targets[0].1, 1400.0);
}
