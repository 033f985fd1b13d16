//! Host, GPU-absent and collector-health behaviour of the running agent, checked against
//! /proc and statvfs read by the test itself.
mod common;

use std::{process::Command, time::Duration};

use common::Agent;

fn proc_field(file: &str, key: &str) -> u64 {
    let text = std::fs::read_to_string(file).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{key} in {file}"))
}

fn lo_receive_bytes() -> f64 {
    let text = std::fs::read_to_string("/proc/net/dev").unwrap();
    let line = text
        .lines()
        .find(|l| l.trim_start().starts_with("lo:"))
        .unwrap();
    line.split_once(':')
        .unwrap()
        .1
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

/// The root filesystem as `stat -f` sees it: (size, avail) in bytes.
fn root_statfs() -> (f64, f64) {
    let out = Command::new("stat")
        .args(["-f", "-c", "%b %S %a", "/"])
        .output()
        .unwrap();
    let v: Vec<f64> = String::from_utf8(out.stdout)
        .unwrap()
        .split_whitespace()
        .map(|x| x.parse().unwrap())
        .collect();
    (v[0] * v[1], v[2] * v[1])
}

/// The visible (last) mount of "/": (source, fstype).
fn root_mount() -> (String, String) {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    text.lines()
        .rev()
        .find_map(|l| {
            let (pre, post) = l.split_once(" - ")?;
            (pre.split_whitespace().nth(4)? == "/").then(|| {
                let mut p = post.split_whitespace();
                let fstype = p.next().unwrap().to_string();
                (p.next().unwrap().to_string(), fstype)
            })
        })
        .unwrap()
}

#[test]
fn host_metrics_agree_with_proc_and_the_gpu_is_reported_absent() {
    let agent = Agent::start(&[]);
    let lo_before = lo_receive_bytes();
    // The host collector reads once a second: the next reading comes after lo_before.
    std::thread::sleep(Duration::from_millis(1300));
    let m = agent.metrics();
    let lo_after = lo_receive_bytes();

    assert_eq!(
        m.get("node_memory_MemTotal_bytes", &[]),
        Some(proc_field("/proc/meminfo", "MemTotal:") as f64 * 1024.0)
    );
    assert_eq!(
        m.get("node_boot_time_seconds", &[]),
        Some(proc_field("/proc/stat", "btime") as f64)
    );
    let cpus = std::fs::read_to_string("/proc/stat")
        .unwrap()
        .lines()
        .filter(|l| l.starts_with("cpu") && !l.starts_with("cpu "))
        .count();
    assert_eq!(
        m.matching("node_cpu_seconds_total", &[("mode", "idle")])
            .len(),
        cpus
    );
    // cpu0's user time, as /proc/stat says now, is ahead of the agent's reading by at
    // most the age of that reading (one second of one CPU).
    let user_now = {
        let text = std::fs::read_to_string("/proc/stat").unwrap();
        let line = text.lines().find(|l| l.starts_with("cpu0 ")).unwrap();
        line.split_whitespace()
            .nth(1)
            .unwrap()
            .parse::<f64>()
            .unwrap()
            / 100.0
    };
    let user = m
        .get("node_cpu_seconds_total", &[("cpu", "0"), ("mode", "user")])
        .unwrap();
    assert!(
        user <= user_now && user_now - user < 1.5,
        "{user} vs {user_now}"
    );
    let lo = m
        .get("node_network_receive_bytes_total", &[("device", "lo")])
        .unwrap();
    assert!(
        lo_before <= lo && lo <= lo_after,
        "{lo_before} <= {lo} <= {lo_after}"
    );

    let (source, fstype) = root_mount();
    let root = [
        ("device", source.as_str()),
        ("fstype", fstype.as_str()),
        ("mountpoint", "/"),
    ];
    let (size, avail) = root_statfs();
    assert_eq!(m.get("node_filesystem_size_bytes", &root), Some(size));
    let agent_avail = m.get("node_filesystem_avail_bytes", &root).unwrap();
    assert!(
        (agent_avail - avail).abs() < 256.0 * 1024.0 * 1024.0,
        "{agent_avail} vs {avail}"
    );
    // node_exporter's exclusions: no /proc, /sys or /dev mounts.
    for (l, _) in m.matching("node_filesystem_size_bytes", &[]) {
        let mp = &l["mountpoint"];
        assert!(
            !mp.starts_with("/proc") && !mp.starts_with("/sys") && !mp.starts_with("/dev"),
            "{mp}"
        );
    }
    // Disks: whole devices of /proc/diskstats, never partitions.
    for (l, _) in m.matching("node_disk_read_bytes_total", &[]) {
        assert!(
            !infersight::collectors::host::ignored_disk(&l["device"]),
            "{l:?}"
        );
    }
    assert_eq!(
        m.get("infersight_collector_up", &[("collector", "host")]),
        Some(1.0)
    );

    // No GPU here: the collector says so, and there is no GPU series at all.
    assert_eq!(
        m.get("infersight_collector_up", &[("collector", "gpu")]),
        Some(0.0)
    );
    assert!(
        m.samples
            .keys()
            .all(|(n, _)| !n.starts_with("DCGM_") && !n.contains("gpu_")),
        "GPU series without a GPU"
    );
    let (_, v) = agent.health();
    let gpu = common::health_entry(&v, "collectors", "gpu");
    assert_eq!(gpu["state"], "unsupported", "{gpu}");
    assert!(
        gpu["reason"]
            .as_str()
            .unwrap()
            .contains("NVML is not available"),
        "{gpu}"
    );
    // Unsupported is by design: the agent is healthy.
    assert_eq!(v["status"], "ok");
}

#[test]
fn no_host_turns_the_host_collector_off() {
    let agent = Agent::start(&["--no-host"]);
    agent.settle();
    let m = agent.metrics();
    assert!(m.samples.keys().all(|(n, _)| !n.starts_with("node_")));
    assert_eq!(
        m.get("infersight_collector_up", &[("collector", "host")]),
        Some(0.0)
    );
}

/// Under the systemd unit the agent's mount namespace is a sandbox (ProtectSystem=strict
/// makes / read-only, PrivateTmp gives it a /tmp of its own): the filesystem metrics still
/// describe the host. Here the sandbox is made by hand: a private mount namespace whose /
/// is re-mounted read-only and whose /tmp is a fresh tmpfs.
#[test]
fn filesystems_are_the_hosts_under_a_sandboxed_mount_namespace() {
    let mut cmd = Command::new("unshare");
    cmd.args(["--mount", "sh", "-c"]).arg(
        "mount --make-rprivate / && mount -o remount,bind,ro / && \
         mount -t tmpfs sandbox-tmp /tmp && exec \"$0\" \"$@\"",
    );
    cmd.arg(env!("CARGO_BIN_EXE_infersight"));
    let state = std::env::temp_dir().join(format!("infersight-sandbox-{}", std::process::id()));
    let agent = Agent::start_with(cmd, &["--state-dir", state.to_str().unwrap()]);
    agent.settle();
    let m = agent.metrics();
    let (source, fstype) = root_mount();
    let root = [
        ("device", source.as_str()),
        ("fstype", fstype.as_str()),
        ("mountpoint", "/"),
    ];
    // The host's / is read-write; the agent's own view of it is read-only.
    assert_eq!(
        m.get("node_filesystem_readonly", &root),
        Some(0.0),
        "{}",
        agent.log_text()
    );
    // The sandbox's own /tmp is not a host filesystem.
    assert!(
        m.matching("node_filesystem_size_bytes", &[("device", "sandbox-tmp")])
            .is_empty(),
        "{:?}",
        m.matching("node_filesystem_size_bytes", &[("mountpoint", "/tmp")])
    );
    let _ = std::fs::remove_dir_all(&state);
}
