use super::*;

#[test]
fn disk_exclusions_follow_node_exporter() {
    for name in [
        "sda1",
        "vdb12",
        "xvda1",
        "nvme0n1p2",
        "loop3",
        "ram0",
        "zram1",
        "fd0",
    ] {
        assert!(ignored_disk(name), "{name} is excluded");
    }
    for name in ["sda", "vdb", "nvme0n1", "dm-0", "md127", "loop", "sdaa1x"] {
        assert!(!ignored_disk(name), "{name} is kept");
    }
}

#[test]
fn mountpoint_exclusions_follow_node_exporter() {
    for m in [
        "/dev",
        "/dev/shm",
        "/proc",
        "/sys/fs/cgroup",
        "/run/credentials/x.service",
        "/var/lib/docker/overlay2/abc",
    ] {
        assert!(ignored_mountpoint(m), "{m} is excluded");
    }
    for m in [
        "/",
        "/run",
        "/home",
        "/devices",
        "/var/lib/docker",
        "/run/credentials",
    ] {
        assert!(!ignored_mountpoint(m), "{m} is kept");
    }
}

#[test]
fn a_second_reading_has_a_cpu_usage_ratio() {
    let mut c = HostReader::default();
    let first = c.sample();
    assert_eq!(first.cpu_usage_ratio, None);
    assert!(!first.cpus.is_empty());
    std::thread::sleep(std::time::Duration::from_millis(50));
    let second = c.sample();
    let r = second.cpu_usage_ratio.unwrap_or(-1.0);
    assert!((0.0..=1.0).contains(&r), "{r}");
    assert!(second
        .memory_used_ratio()
        .is_some_and(|r| r > 0.0 && r < 1.0));
    assert!(second.filesystems.iter().any(|f| f.mountpoint == "/"));
    assert!(second.network.iter().any(|n| n.device == "lo"));
    assert!(second.errors.is_empty(), "{:?}", second.errors);
}
