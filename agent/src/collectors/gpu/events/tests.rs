use super::*;

fn pci(s: &str) -> PciAddr {
    PciAddr::parse(s).unwrap()
}

fn counts(e: &GpuEvents) -> Vec<(String, u64, &'static str, u64)> {
    e.counts()
        .into_iter()
        .map(|c| (c.pci.to_string(), c.code, c.action, c.count))
        .collect()
}

#[test]
fn an_xid_both_sources_report_is_counted_once() {
    let (a, b) = (pci("0000:18:00"), pci("0000:3b:00"));
    let t = Instant::now();
    let s = Duration::from_secs;
    let mut e = GpuEvents::default();
    // One XID 79 on a: NVML first, then the kernel log.
    e.xid(a, 79, Source::Nvml, t);
    e.xid(a, 79, Source::KernelLog, t + s(1));
    // Two XID 13 on b from the kernel log, one of them also from NVML: two errors.
    e.xid(b, 13, Source::KernelLog, t);
    e.xid(b, 13, Source::KernelLog, t + s(1));
    e.xid(b, 13, Source::Nvml, t + s(2));
    // The same code on another GPU, or another code, is another error.
    e.xid(b, 79, Source::KernelLog, t + s(2));
    // Outside the window the other source's report is a new error.
    e.xid(a, 48, Source::Nvml, t + s(3));
    e.xid(
        a,
        48,
        Source::KernelLog,
        t + s(3) + SAME_ERROR_WITHIN + s(1),
    );
    assert_eq!(
        counts(&e),
        vec![
            ("00000000:18:00.0".into(), 48, xid::action::RESET_GPU, 2),
            ("00000000:18:00.0".into(), 79, xid::action::REBOOT_NODE, 1),
            ("00000000:3B:00.0".into(), 13, xid::action::RESTART_APP, 2),
            ("00000000:3B:00.0".into(), 79, xid::action::REBOOT_NODE, 1),
        ]
    );
    assert_eq!(e.last(a), Some(48));
    assert_eq!(e.last(b), Some(79));
    assert_eq!(e.last(pci("0000:99:00")), None);
}

#[test]
fn a_lost_gpu_stays_lost_until_nvml_reads_it_afterwards() {
    let a = pci("0000:3b:00");
    let t = Instant::now();
    let mut e = GpuEvents::default();
    e.lost(a, t + Duration::from_secs(2));
    // A reading that started before the loss says nothing about it.
    e.answered(a, t + Duration::from_secs(1));
    assert_eq!(e.lost_gpus(), vec![a]);
    e.answered(a, t + Duration::from_secs(3));
    assert_eq!(e.lost_gpus(), vec![]);
}

#[test]
fn what_the_kernel_log_can_add_is_bounded() {
    let t = Instant::now();
    let mut e = GpuEvents::default();
    for code in 0..(MAX_XID_SERIES as u64 + 10) {
        e.xid(pci("0000:3b:00"), code, Source::KernelLog, t);
    }
    assert_eq!(e.counts().len(), MAX_XID_SERIES);
    // Codes already counted still count.
    e.xid(pci("0000:3b:00"), 5, Source::KernelLog, t);
    assert_eq!(e.counts()[5].count, 2);
    for bus in 0..=255u8 {
        e.lost(PciAddr::parse(&format!("0001:{bus:02x}:00")).unwrap(), t);
    }
    e.lost(pci("0002:00:00"), t);
    assert_eq!(e.lost_gpus().len(), MAX_LOST);
}
