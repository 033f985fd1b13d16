//! The whole NVML path without a GPU: a stand-in libnvidia-ml.so.1 built from
//! tests/fake_nvml.c (NVML's entry points, struct layouts and versioned symbols) serves
//! scripted devices, and the agent loads it as it loads the real library (dlopen of
//! libnvidia-ml.so.1 on LD_LIBRARY_PATH). Values must equal the script, values the script
//! leaves out must be absent, a lost GPU raises GpuFellOffBus, a hung NVML call marks the
//! collector failed while /metrics keeps answering. The driver's kernel-log lines are
//! written to /dev/kmsg (as root) in the driver's own formats: each XID counted once, with
//! NVIDIA's catalog name and action, and the shipped rules fire. The rules of
//! config/prometheus/rules.yml are checked with promtool's rule tests.
mod common;

use std::{
    io::Write,
    path::{Path, PathBuf},
    process::Command,
    sync::OnceLock,
    time::{Duration, Instant},
};

use common::{bpf_or_skip, health_entry, Agent, Metrics, AGENT};

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path)
}

/// The directory holding the stand-in libnvidia-ml.so.1 (built once per test binary).
fn fake_nvml_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("fake-nvml-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let st = Command::new("cc")
            .args(["-shared", "-fPIC", "-O1", "-Wall", "-Werror", "-o"])
            .arg(dir.join("libnvidia-ml.so.1"))
            .arg(repo("tests/fake_nvml.c"))
            .status()
            .expect("run cc");
        assert!(st.success(), "cc fake_nvml.c");
        dir
    })
}

/// One test's GPUs: the NVML script, a fake sysfs PCI tree, the agent's configuration
/// (the shipped rules, without their `for` so they fire at once) and state; removed on
/// drop.
struct Rig {
    dir: PathBuf,
}

impl Rig {
    fn new(tag: &str, script: &str, pci: &[&str], gpu: &str) -> Rig {
        let dir = std::env::temp_dir().join(format!("infersight-gpu-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        for addr in pci {
            let d = dir.join("sys/bus/pci/devices").join(addr);
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join("vendor"), "0x10de\n").unwrap();
            std::fs::write(d.join("class"), "0x030200\n").unwrap();
        }
        let rules = std::fs::read_to_string(repo("config/rules.toml")).unwrap();
        let rules: String = rules
            .lines()
            .filter(|l| !l.starts_with("for = "))
            .map(|l| format!("{l}\n"))
            .collect();
        std::fs::write(dir.join("rules.toml"), rules).unwrap();
        std::fs::write(
            dir.join("infersight.toml"),
            format!(
                "[gpu]\ninterval = \"200ms\"\nsysfs_root = \"{}\"\n{gpu}\n\n\
                 [alerting]\nrules_file = \"rules.toml\"\n",
                dir.join("sys").display()
            ),
        )
        .unwrap();
        let rig = Rig { dir };
        rig.script(script);
        rig
    }

    /// Replace the script (whole, so NVML's next reading sees all of it or none).
    fn script(&self, text: &str) {
        let tmp = self.dir.join("script.tmp");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, self.dir.join("script")).unwrap();
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("nvml.log")).unwrap_or_default()
    }

    /// Wait until the stand-in handed out event `seq` and NVML was read twice after it,
    /// then two ticks: whatever the agent makes of the event is in the snapshot.
    fn wait_event_read(&self, agent: &Agent, seq: u64) {
        let start = Instant::now();
        loop {
            let log = self.log();
            let after = log
                .split(&format!("event {seq} "))
                .nth(1)
                .map_or(0, |rest| rest.lines().filter(|l| *l == "count").count());
            if after >= 2 {
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "event {seq} not read; log:\n{}",
                agent.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        agent.settle();
    }

    fn command(&self, mut cmd: Command) -> Command {
        cmd.env("LD_LIBRARY_PATH", fake_nvml_dir())
            .env("FAKE_NVML_SCRIPT", self.dir.join("script"))
            .env("FAKE_NVML_LOG", self.dir.join("nvml.log"));
        cmd
    }

    fn args(&self) -> Vec<String> {
        vec![
            "--config".into(),
            self.dir.join("infersight.toml").display().to_string(),
            "--state-dir".into(),
            self.dir.join("state").display().to_string(),
        ]
    }

    fn start(&self, extra: &[&str]) -> Agent {
        let mut args = self.args();
        args.extend(extra.iter().map(|s| s.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        Agent::start_with(self.command(Command::new(AGENT)), &args)
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A process to be the target whose GPU memory the script reports; killed on drop.
struct Sleeper(std::process::Child);

impl Drop for Sleeper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

const H100: &str = "NVIDIA H100 80GB HBM3";
const UUID0: &str = "GPU-11111111-2222-3333-4444-555555555555";
const UUID1: &str = "GPU-66666666-7777-8888-9999-aaaaaaaaaaaa";

/// GPU 0: every value the agent reads, some left out; GPU 1: in MIG mode with two GPU
/// instances, no temperature, no XID events.
fn two_gpus(pid: u32, extra: &str) -> String {
    format!(
        "0 uuid {UUID0}\n0 pci 00000000:18:00.0\n0 name {H100}\n0 minor 0\n\
         0 util 87 41\n0 memory 85899345920 64424509440\n0 temperature 64\n0 power 412500\n\
         0 energy 7200000000\n0 clock_sm 1980\n0 clock_mem 2619\n0 pcie_tx 1000\n0 pcie_rx 2000\n\
         0 throttle 4\n0 violation 0 1500000000\n0 violation 1 250000000\n\
         0 field 142 3\n0 field 143 1\n0 field 144 1\n0 field 145 0\n0 field 3 12\n0 field 4 0\n\
         0 gpm 2 85\n0 gpm 3 40\n0 gpm 5 60\n0 gpm 10 35\n\
         0 process {pid} 1073741824\n0 procutil {pid} 85 20\n\
         1 uuid {UUID1}\n1 pci 00000000:3B:00.0\n1 name {H100}\n1 minor 1\n1 util 5 1\n\
         1 memory 85899345920 21474836480\n1 noevents\n1 mig 1\n1 gpm 2 20\n\
         1/0 uuid MIG-aaaaaaaa-0000-0000-0000-000000000001\n1/0 name {H100} MIG 3g.40gb\n\
         1/0 gi 1\n1/0 memory 42949672960 10737418240\n1/0 gpm 2 30\n\
         1/3 uuid MIG-aaaaaaaa-0000-0000-0000-000000000002\n1/3 name {H100} MIG 1g.10gb\n\
         1/3 gi 9\n1/3 memory 10737418240 1073741824\n{extra}"
    )
}

fn id(gpu: &str) -> Vec<(&'static str, String)> {
    let (uuid, pci, device) = match gpu {
        "0" => (UUID0, "00000000:18:00.0", "nvidia0"),
        _ => (UUID1, "00000000:3B:00.0", "nvidia1"),
    };
    let host = sysinfo::System::host_name().unwrap_or_default();
    vec![
        ("gpu", gpu.to_string()),
        ("UUID", uuid.to_string()),
        ("pci_bus_id", pci.to_string()),
        ("device", device.to_string()),
        ("modelName", H100.to_string()),
        ("Hostname", host),
    ]
}

fn get(m: &Metrics, name: &str, labels: &[(&'static str, String)]) -> Option<f64> {
    let l: Vec<(&str, &str)> = labels.iter().map(|(k, v)| (*k, v.as_str())).collect();
    m.get(name, &l)
}

fn with(
    mut labels: Vec<(&'static str, String)>,
    more: &[(&'static str, &str)],
) -> Vec<(&'static str, String)> {
    labels.extend(more.iter().map(|(k, v)| (*k, v.to_string())));
    labels
}

fn firing(m: &Metrics, alert: &str, labels: &[(&str, &str)]) -> bool {
    let mut l = vec![("alertname", alert), ("alertstate", "firing")];
    l.extend_from_slice(labels);
    !m.matching("ALERTS", &l).is_empty()
}

#[test]
fn scripted_gpus_reach_the_metrics_and_a_lost_gpu_raises_gpu_fell_off_bus() {
    if !bpf_or_skip("gpu_script") {
        return;
    }
    let sleeper = Sleeper(Command::new("sleep").arg("600").spawn().unwrap());
    let pid = sleeper.0.id();
    let rig = Rig::new(
        "script",
        &two_gpus(pid, ""),
        &["0000:18:00.0", "0000:3b:00.0"],
        "kernel_log = false",
    );
    let target = format!("{pid}=svc");
    let agent = rig.start(&["--pid", &target]);
    // GPM compares two samples: the ratios come with the second reading.
    let m = agent.wait_for(Duration::from_secs(20), "GPM ratios", |m| {
        get(m, "DCGM_FI_PROF_SM_ACTIVE", &id("0")).is_some()
            && get(
                m,
                "DCGM_FI_PROF_SM_ACTIVE",
                &with(id("1"), &[("GPU_I_PROFILE", "3g.40gb"), ("GPU_I_ID", "1")]),
            )
            .is_some()
    });
    let g0 = id("0");
    for (name, want) in [
        ("DCGM_FI_DEV_GPU_UTIL", 87.0),
        ("DCGM_FI_DEV_MEM_COPY_UTIL", 41.0),
        ("DCGM_FI_DEV_FB_TOTAL", 81920.0),
        ("DCGM_FI_DEV_FB_USED", 61440.0),
        ("DCGM_FI_DEV_FB_FREE", 20480.0),
        ("DCGM_FI_DEV_GPU_TEMP", 64.0),
        ("DCGM_FI_DEV_POWER_USAGE", 412.5),
        ("DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION", 7.2e9),
        ("DCGM_FI_DEV_SM_CLOCK", 1980.0),
        ("DCGM_FI_DEV_MEM_CLOCK", 2619.0),
        ("DCGM_FI_PROF_PCIE_TX_BYTES", 1024000.0),
        ("DCGM_FI_PROF_PCIE_RX_BYTES", 2048000.0),
        ("DCGM_FI_DEV_CLOCK_THROTTLE_REASONS", 4.0),
        ("DCGM_FI_DEV_POWER_VIOLATION", 1.5e9),
        ("DCGM_FI_DEV_THERMAL_VIOLATION", 2.5e8),
        ("DCGM_FI_DEV_CORRECTABLE_REMAPPED_ROWS", 3.0),
        ("DCGM_FI_DEV_UNCORRECTABLE_REMAPPED_ROWS", 1.0),
        ("DCGM_FI_DEV_ROW_REMAP_PENDING", 1.0),
        ("DCGM_FI_DEV_ROW_REMAP_FAILURE", 0.0),
        ("DCGM_FI_DEV_ECC_SBE_VOL_TOTAL", 12.0),
        ("DCGM_FI_DEV_ECC_DBE_VOL_TOTAL", 0.0),
        ("DCGM_FI_PROF_SM_ACTIVE", 0.85),
        ("DCGM_FI_PROF_SM_OCCUPANCY", 0.4),
        ("DCGM_FI_PROF_PIPE_TENSOR_ACTIVE", 0.6),
        ("DCGM_FI_PROF_DRAM_ACTIVE", 0.35),
        // XID events are watched on GPU 0 and none came yet.
        ("DCGM_FI_DEV_XID_ERRORS", 0.0),
    ] {
        assert_eq!(get(&m, name, &g0), Some(want), "{name}");
    }
    for (reason, want) in [("power", 1.5), ("thermal", 0.25)] {
        assert_eq!(
            get(
                &m,
                "infersight_gpu_throttle_seconds_total",
                &with(id("0"), &[("reason", reason)])
            ),
            Some(want),
            "{reason}"
        );
    }
    // What the script leaves out NVML answers NOT_SUPPORTED for: absent, never 0.
    for name in [
        "DCGM_FI_DEV_SYNC_BOOST_VIOLATION",
        "DCGM_FI_DEV_BOARD_LIMIT_VIOLATION",
        "DCGM_FI_DEV_LOW_UTIL_VIOLATION",
        "DCGM_FI_DEV_RELIABILITY_VIOLATION",
        "DCGM_FI_DEV_ECC_SBE_AGG_TOTAL",
        "DCGM_FI_DEV_ECC_DBE_AGG_TOTAL",
        "DCGM_FI_DEV_RETIRED_SBE",
        "DCGM_FI_DEV_RETIRED_DBE",
        "DCGM_FI_DEV_RETIRED_PENDING",
        "DCGM_FI_PROF_GR_ENGINE_ACTIVE",
    ] {
        assert!(m.matching(name, &[]).is_empty(), "{name} present");
    }
    assert!(m
        .matching(
            "infersight_gpu_throttle_seconds_total",
            &[("reason", "sync_boost")]
        )
        .is_empty());
    let g1 = id("1");
    assert_eq!(get(&m, "DCGM_FI_DEV_GPU_UTIL", &g1), Some(5.0));
    assert_eq!(get(&m, "DCGM_FI_DEV_FB_USED", &g1), Some(20480.0));
    assert_eq!(get(&m, "DCGM_FI_PROF_SM_ACTIVE", &g1), Some(0.2));
    // No temperature on GPU 1; no XID events there and the kernel log is off: no last XID.
    assert_eq!(get(&m, "DCGM_FI_DEV_GPU_TEMP", &g1), None);
    assert_eq!(get(&m, "DCGM_FI_DEV_XID_ERRORS", &g1), None);
    // Its MIG instances, labelled as dcgm-exporter labels them.
    let i1 = with(id("1"), &[("GPU_I_PROFILE", "3g.40gb"), ("GPU_I_ID", "1")]);
    let i9 = with(id("1"), &[("GPU_I_PROFILE", "1g.10gb"), ("GPU_I_ID", "9")]);
    assert_eq!(get(&m, "DCGM_FI_DEV_FB_USED", &i1), Some(10240.0));
    assert_eq!(get(&m, "DCGM_FI_DEV_FB_FREE", &i1), Some(30720.0));
    assert_eq!(get(&m, "DCGM_FI_DEV_FB_TOTAL", &i9), Some(10240.0));
    assert_eq!(get(&m, "DCGM_FI_PROF_SM_ACTIVE", &i1), Some(0.3));
    assert_eq!(get(&m, "DCGM_FI_PROF_SM_ACTIVE", &i9), None);
    assert_eq!(get(&m, "DCGM_FI_DEV_GPU_UTIL", &i1), None);
    // The target's process on GPU 0.
    let p = [
        ("gpu", "0"),
        ("UUID", UUID0),
        ("pid", &pid.to_string()),
        ("target", "svc"),
    ];
    assert_eq!(
        m.get("infersight_gpu_process_memory_used_bytes", &p),
        Some(1073741824.0)
    );
    assert_eq!(
        m.get("infersight_gpu_process_sm_utilization_percent", &p),
        Some(85.0)
    );
    // Both GPUs answer; the PCI bus and NVML agree.
    for pci in ["00000000:18:00.0", "00000000:3B:00.0"] {
        assert_eq!(
            m.get("infersight_gpu_lost", &[("pci_bus_id", pci)]),
            Some(0.0)
        );
    }
    assert_eq!(
        m.get("infersight_gpu_devices", &[("source", "pci")]),
        Some(2.0)
    );
    assert_eq!(
        m.get("infersight_gpu_devices", &[("source", "nvml")]),
        Some(2.0)
    );
    // The pending row remapping fires its rule; GPU 0's SM active (0.85) is over the idle
    // rule's threshold.
    assert!(firing(&m, "GpuRowRemapPending", &[("gpu", "0")]));
    assert!(!firing(&m, "GpuFellOffBus", &[]));
    assert!(!firing(&m, "GpuCountMismatch", &[]));

    // An XID 13 event through NVML: counted once, decoded; restarting the application is
    // what it needs, not a reset.
    rig.script(&two_gpus(pid, "0 event 1 13\n"));
    rig.wait_event_read(&agent, 1);
    let m = agent.metrics();
    let xid13 = with(
        id("0"),
        &[
            ("xid", "13"),
            ("name", "Graphics engine exception"),
            ("action", "restart_app"),
        ],
    );
    assert_eq!(
        get(&m, "infersight_gpu_xid_errors_total", &xid13),
        Some(1.0)
    );
    assert_eq!(get(&m, "DCGM_FI_DEV_XID_ERRORS", &g0), Some(13.0));
    assert!(firing(&m, "GpuXidError", &[("gpu", "0")]));
    assert!(!firing(&m, "GpuXidNeedsReset", &[]));

    // GPU 1 answers GPU_IS_LOST from now on: its labels stay, its values go, and
    // GpuFellOffBus fires for it; GPU 0 reads on.
    rig.script(&two_gpus(pid, "0 event 1 13\n1 lost\n"));
    let m = agent.wait_for(Duration::from_secs(10), "GPU 1 lost", |m| {
        m.get("infersight_gpu_lost", &[("pci_bus_id", "00000000:3B:00.0")]) == Some(1.0)
    });
    assert!(firing(
        &m,
        "GpuFellOffBus",
        &[("pci_bus_id", "00000000:3B:00.0")]
    ));
    assert!(!firing(
        &m,
        "GpuFellOffBus",
        &[("pci_bus_id", "00000000:18:00.0")]
    ));
    assert_eq!(get(&m, "DCGM_FI_DEV_GPU_UTIL", &g1), None);
    assert_eq!(get(&m, "DCGM_FI_DEV_FB_USED", &i1), None);
    assert_eq!(get(&m, "DCGM_FI_DEV_GPU_UTIL", &g0), Some(87.0));
    assert_eq!(
        m.get("infersight_collector_up", &[("collector", "gpu")]),
        Some(1.0)
    );
    // After a reset it answers again: no longer lost.
    rig.script(&two_gpus(pid, "0 event 1 13\n"));
    let m = agent.wait_for(Duration::from_secs(10), "GPU 1 back", |m| {
        m.get("infersight_gpu_lost", &[("pci_bus_id", "00000000:3B:00.0")]) == Some(0.0)
    });
    assert_eq!(get(&m, "DCGM_FI_DEV_GPU_UTIL", &g1), Some(5.0));
    // Lost again, the driver still naming it: its measurements say so.
    rig.script(&two_gpus(pid, "0 event 1 13\n1 lost_values\n"));
    let m = agent.wait_for(Duration::from_secs(10), "GPU 1 lost again", |m| {
        m.get("infersight_gpu_lost", &[("pci_bus_id", "00000000:3B:00.0")]) == Some(1.0)
    });
    assert_eq!(get(&m, "DCGM_FI_DEV_GPU_UTIL", &g1), None);
    // The event was handed out once and is counted once.
    assert_eq!(
        get(&m, "infersight_gpu_xid_errors_total", &xid13),
        Some(1.0)
    );
}

/// Append one line to the kernel log, as the driver's printk would.
fn kmsg(lines: &[&str]) {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/kmsg")
        .expect("open /dev/kmsg for writing (root)");
    for l in lines {
        // One write is one record.
        f.write_all(l.as_bytes()).unwrap();
    }
}

#[test]
fn kernel_log_xids_are_counted_once_decoded_and_fire_the_reset_rule() {
    if !bpf_or_skip("gpu_kmsg") {
        return;
    }
    // Addresses no other test uses: the kernel log is the machine's.
    let b1 = "00000000:B1:00.0";
    let b2 = "00000000:B2:00.0";
    let script = |extra: &str| {
        format!(
            "0 uuid {UUID0}\n0 pci {b1}\n0 name {H100}\n0 minor 0\n0 util 3 1\n\
             0 memory 85899345920 1073741824\n{extra}"
        )
    };
    // The GPU at b2 fell off the bus: NVML lists only b1; the PCI bus still has both.
    let rig = Rig::new(
        "kmsg",
        &script(""),
        &["0000:b1:00.0", "0000:b2:00.0"],
        "kernel_log = true",
    );
    // Logged before the agent starts: an old message, never counted.
    kmsg(&["NVRM: Xid (PCI:0000:b1:00): 31, pid=77, name=python3, Ch 00000010, intr 10000000. MMU Fault\n"]);
    let agent = rig.start(&[]);
    agent.wait_for(Duration::from_secs(20), "GPU read", |m| {
        m.get("infersight_gpu_devices", &[("source", "nvml")]) == Some(1.0)
    });
    kmsg(&[
        "NVRM: Xid (PCI:0000:b2:00): 79, pid=1234, name=python3, GPU has fallen off the bus.\n",
        "NVRM: Xid (PCI:0000:b1:00): 48, pid='<unknown>', name=<unknown>, An uncorrectable double bit error (DBE) has been detected on GPU in the framebuffer at partition 6, subpartition 0.\n",
        "NVRM: Xid (PCI:0000:b1:00): 13, pid=4242, name=python3, Graphics SM Warp Exception on (GPC 7, TPC 1, SM 0): Out Of Range Address\n",
    ]);
    // NVML reports the same XID 13 too.
    rig.script(&script("0 event 1 13\n"));
    rig.wait_event_read(&agent, 1);
    let m = agent.metrics();
    let host = sysinfo::System::host_name().unwrap_or_default();
    let series = |pci: &str, gpu: &str, uuid: &str, xid: &str, name: &str, action: &str| {
        let device = if gpu.is_empty() { "" } else { "nvidia0" };
        let model = if gpu.is_empty() { "" } else { H100 };
        m.get(
            "infersight_gpu_xid_errors_total",
            &[
                ("gpu", gpu),
                ("UUID", uuid),
                ("pci_bus_id", pci),
                ("device", device),
                ("modelName", model),
                ("Hostname", &host),
                ("xid", xid),
                ("name", name),
                ("action", action),
            ],
        )
    };
    // Each once; the GPU off the bus keeps only its PCI address.
    assert_eq!(
        series(
            b2,
            "",
            "",
            "79",
            "GPU has fallen off the bus",
            "reboot_node"
        ),
        Some(1.0)
    );
    assert_eq!(
        series(b1, "0", UUID0, "48", "Double bit ECC error", "reset_gpu"),
        Some(1.0)
    );
    assert_eq!(
        series(
            b1,
            "0",
            UUID0,
            "13",
            "Graphics engine exception",
            "restart_app"
        ),
        Some(1.0)
    );
    let all: Vec<_> = m.matching("infersight_gpu_xid_errors_total", &[]);
    assert_eq!(all.len(), 3, "{all:?}");
    assert_eq!(
        m.matching("DCGM_FI_DEV_XID_ERRORS", &[("gpu", "0")])
            .first()
            .map(|(_, v)| *v),
        Some(13.0)
    );
    // b2 is lost (the kernel said so); b1 answers.
    assert_eq!(
        m.get("infersight_gpu_lost", &[("pci_bus_id", b2)]),
        Some(1.0)
    );
    assert_eq!(
        m.get("infersight_gpu_lost", &[("pci_bus_id", b1)]),
        Some(0.0)
    );
    assert_eq!(
        m.get("infersight_gpu_devices", &[("source", "pci")]),
        Some(2.0)
    );
    // The shipped rules: a reset or a node drain for 48 and 79, not for 13.
    assert!(firing(
        &m,
        "GpuXidNeedsReset",
        &[("xid", "48"), ("pci_bus_id", b1)]
    ));
    assert!(firing(
        &m,
        "GpuXidNeedsReset",
        &[("xid", "79"), ("pci_bus_id", b2)]
    ));
    assert!(!firing(&m, "GpuXidNeedsReset", &[("xid", "13")]));
    assert!(firing(&m, "GpuFellOffBus", &[("pci_bus_id", b2)]));
    assert!(firing(&m, "GpuCountMismatch", &[]));
    let (_, health) = agent.health();
    let gpu = health_entry(&health, "collectors", "gpu");
    assert_eq!(gpu["state"], "active", "{gpu}");
    assert!(gpu.get("reason").is_none(), "{gpu}");
}

#[test]
fn without_cap_syslog_the_kernel_log_is_a_health_reason() {
    if !bpf_or_skip("gpu_kmsg_denied") {
        return;
    }
    let restricted =
        std::fs::read_to_string("/proc/sys/kernel/dmesg_restrict").is_ok_and(|s| s.trim() == "1");
    if !restricted {
        eprintln!("skipping: kernel.dmesg_restrict is not 1, so anyone may read the log");
        return;
    }
    let rig = Rig::new(
        "nosyslog",
        &format!("0 uuid {UUID0}\n0 pci 00000000:18:00.0\n0 name {H100}\n0 util 9 1\n"),
        &["0000:18:00.0"],
        "kernel_log = true",
    );
    // Root without CAP_SYSLOG (and CAP_SYS_ADMIN, which the kernel also accepts).
    let mut cmd = Command::new("setpriv");
    cmd.args(["--bounding-set=-syslog,-sys_admin", "--"])
        .arg(AGENT);
    let args = rig.args();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let agent = Agent::start_with(rig.command(cmd), &args);
    let m = agent.wait_for(Duration::from_secs(20), "GPU read", |m| {
        m.get("infersight_gpu_devices", &[("source", "nvml")]) == Some(1.0)
    });
    assert_eq!(
        m.get("infersight_collector_up", &[("collector", "gpu")]),
        Some(1.0)
    );
    let (_, health) = agent.health();
    let gpu = health_entry(&health, "collectors", "gpu");
    assert_eq!(gpu["state"], "active", "{gpu}");
    let reason = gpu["reason"].as_str().unwrap_or_default();
    assert!(
        reason.starts_with("XIDs from NVML only; kernel log: /dev/kmsg: ")
            && reason.contains("CAP_SYSLOG"),
        "{gpu}"
    );
}

#[test]
fn a_hung_nvml_call_fails_the_collector_and_metrics_keep_answering() {
    if !bpf_or_skip("gpu_hang") {
        return;
    }
    let script = |extra: &str| {
        format!("0 uuid {UUID0}\n0 pci 00000000:18:00.0\n0 name {H100}\n0 util 50 10\n0 temperature 60\n{extra}")
    };
    let rig = Rig::new("hang", &script(""), &["0000:18:00.0"], "kernel_log = false");
    let agent = rig.start(&[]);
    agent.wait_for(Duration::from_secs(20), "GPU read", |m| {
        m.get("infersight_collector_up", &[("collector", "gpu")]) == Some(1.0)
    });
    // The next reading blocks in nvmlDeviceGetTemperature for good.
    rig.script(&script("0 hang temperature\n"));
    let m = agent.wait_for(Duration::from_secs(20), "gpu collector failed", |m| {
        m.get("infersight_collector_up", &[("collector", "gpu")]) == Some(0.0)
    });
    // The stuck thread holds nothing the rest needs: other collectors, the tick, the
    // endpoints and the PCI count (another thread) go on.
    assert_eq!(
        m.get("infersight_collector_up", &[("collector", "host")]),
        Some(1.0)
    );
    assert_eq!(
        m.get("infersight_gpu_devices", &[("source", "pci")]),
        Some(1.0)
    );
    assert_eq!(m.get("infersight_gpu_devices", &[("source", "nvml")]), None);
    assert!(m.matching("DCGM_FI_DEV_GPU_UTIL", &[]).is_empty());
    let tick = |a: &Agent| {
        let (status, body) = a.get("/api/v1/snapshot");
        assert_eq!(status, 200);
        serde_json::from_str::<serde_json::Value>(&body).unwrap()["tick"]
            .as_u64()
            .unwrap()
    };
    let before = tick(&agent);
    agent.settle();
    assert!(tick(&agent) > before, "the tick stopped");
    let (code, health) = agent.health();
    assert_eq!(code, 503, "{health}");
    let gpu = health_entry(&health, "collectors", "gpu");
    assert_eq!(gpu["state"], "failed", "{gpu}");
    assert!(
        gpu["reason"]
            .as_str()
            .is_some_and(|r| r.contains("the source is not answering")),
        "{gpu}"
    );
}

/// The stand-in's structs have the layouts of nvml-wrapper-sys's bindings, which bindgen
/// made from NVML's header.
#[test]
fn the_stand_in_has_nvmls_struct_layouts() {
    use nvml_wrapper_sys::bindings::*;
    use std::mem::{offset_of, size_of};
    let bin =
        PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("nvml-abi-{}", std::process::id()));
    let st = Command::new("cc")
        .args(["-DFAKE_NVML_ABI", "-o"])
        .arg(&bin)
        .arg(repo("tests/fake_nvml.c"))
        .status()
        .unwrap();
    assert!(st.success());
    let out = Command::new(&bin).output().unwrap();
    let _ = std::fs::remove_file(&bin);
    let text = String::from_utf8(out.stdout).unwrap();
    let want = [
        ("nvmlPciInfo_t size", size_of::<nvmlPciInfo_t>()),
        ("nvmlPciInfo_t.domain", offset_of!(nvmlPciInfo_t, domain)),
        ("nvmlPciInfo_t.busId", offset_of!(nvmlPciInfo_t, busId)),
        ("nvmlUtilization_t size", size_of::<nvmlUtilization_t>()),
        ("nvmlMemory_v2_t size", size_of::<nvmlMemory_v2_t>()),
        ("nvmlMemory_v2_t.used", offset_of!(nvmlMemory_v2_t, used)),
        ("nvmlProcessInfo_t size", size_of::<nvmlProcessInfo_t>()),
        (
            "nvmlProcessInfo_t.usedGpuMemory",
            offset_of!(nvmlProcessInfo_t, usedGpuMemory),
        ),
        (
            "nvmlProcessInfo_t.computeInstanceId",
            offset_of!(nvmlProcessInfo_t, computeInstanceId),
        ),
        (
            "nvmlProcessUtilizationSample_t size",
            size_of::<nvmlProcessUtilizationSample_t>(),
        ),
        (
            "nvmlProcessUtilizationSample_t.smUtil",
            offset_of!(nvmlProcessUtilizationSample_t, smUtil),
        ),
        ("nvmlEventData_t size", size_of::<nvmlEventData_t>()),
        (
            "nvmlEventData_t.eventData",
            offset_of!(nvmlEventData_t, eventData),
        ),
        (
            "nvmlEventData_t.gpuInstanceId",
            offset_of!(nvmlEventData_t, gpuInstanceId),
        ),
        ("nvmlValue_t size", size_of::<nvmlValue_t>()),
        ("nvmlFieldValue_t size", size_of::<nvmlFieldValue_t>()),
        (
            "nvmlFieldValue_t.valueType",
            offset_of!(nvmlFieldValue_t, valueType),
        ),
        (
            "nvmlFieldValue_t.nvmlReturn",
            offset_of!(nvmlFieldValue_t, nvmlReturn),
        ),
        (
            "nvmlFieldValue_t.value",
            offset_of!(nvmlFieldValue_t, value),
        ),
        ("nvmlViolationTime_t size", size_of::<nvmlViolationTime_t>()),
        ("nvmlGpmSupport_t size", size_of::<nvmlGpmSupport_t>()),
        ("nvmlGpmMetric_t size", size_of::<nvmlGpmMetric_t>()),
        ("nvmlGpmMetric_t.value", offset_of!(nvmlGpmMetric_t, value)),
        (
            "nvmlGpmMetric_t.metricInfo",
            offset_of!(nvmlGpmMetric_t, metricInfo),
        ),
        ("nvmlGpmMetricsGet_t size", size_of::<nvmlGpmMetricsGet_t>()),
        (
            "nvmlGpmMetricsGet_t.sample2",
            offset_of!(nvmlGpmMetricsGet_t, sample2),
        ),
        (
            "nvmlGpmMetricsGet_t.metrics",
            offset_of!(nvmlGpmMetricsGet_t, metrics),
        ),
    ];
    let got: Vec<(String, usize)> = text
        .lines()
        .map(|l| {
            let (k, v) = l.rsplit_once(' ').unwrap();
            (k.to_string(), v.parse().unwrap())
        })
        .collect();
    let want: Vec<(String, usize)> = want.iter().map(|(k, v)| (k.to_string(), *v)).collect();
    assert_eq!(got, want);
}

/// config/prometheus/rules.yml's GPU rules in promtool's rule tests: the first XID of a
/// code needing a reset fires (a new counter series), an old one does not; a lost GPU; a
/// count mismatch after its `for`; idle by SM active where a GPU has it, else by
/// utilization.
#[test]
fn the_prometheus_gpu_rules_fire_on_their_series() {
    let dir = std::env::temp_dir().join(format!("infersight-promtest-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let xid = |gpu: &str, code: &str, name: &str, action: &str| {
        format!(
            "infersight_gpu_xid_errors_total{{instance=\"h1\",gpu=\"{gpu}\",pci_bus_id=\"P{gpu}\",xid=\"{code}\",name=\"{name}\",action=\"{action}\"}}"
        )
    };
    let test = format!(
        r#"rule_files:
  - {rules}
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
      # Appears at 2m: the first error of the code.
      - series: '{x48}'
        values: '_ _ 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1'
      - series: '{x13}'
        values: '_ _ 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1'
      - series: 'infersight_gpu_lost{{instance="h1",pci_bus_id="00000000:3B:00.0"}}'
        values: '0 0 1 1'
      - series: 'infersight_gpu_devices{{instance="h1",source="pci"}}'
        values: '2x10'
      - series: 'infersight_gpu_devices{{instance="h1",source="nvml"}}'
        values: '2 1x9'
      # h2: busy by utilization, idle by SM active. h3: no GPM, idle by utilization.
      - series: 'DCGM_FI_DEV_GPU_UTIL{{instance="h2",gpu="0"}}'
        values: '100x20'
      - series: 'DCGM_FI_PROF_SM_ACTIVE{{instance="h2",gpu="0"}}'
        values: '0.2x20'
      - series: 'DCGM_FI_DEV_GPU_UTIL{{instance="h3",gpu="0"}}'
        values: '20x20'
      - series: 'DCGM_FI_DEV_GPU_UTIL{{instance="h4",gpu="0"}}'
        values: '90x20'
      - series: 'http_server_active_requests{{instance="h2",target="vllm"}}'
        values: '4x20'
      - series: 'http_server_active_requests{{instance="h3",target="vllm"}}'
        values: '4x20'
      - series: 'http_server_active_requests{{instance="h4",target="vllm"}}'
        values: '4x20'
    alert_rule_test:
      - eval_time: 3m
        alertname: GpuXidNeedsReset
        exp_alerts:
          - exp_labels: {{severity: critical, instance: h1, gpu: "0", pci_bus_id: P0, xid: "48", name: Double bit ECC error, action: reset_gpu}}
            exp_annotations:
              summary: "GPU 0 (P0) on h1: XID 48, Double bit ECC error: reset_gpu"
              description: "NVIDIA's XID catalog says the GPU must be reset (reset_gpu) or the node drained and rebooted (reboot_node). Drain its work first."
      - eval_time: 20m
        alertname: GpuXidNeedsReset
        exp_alerts: []
      - eval_time: 3m
        alertname: GpuFellOffBus
        exp_alerts:
          - exp_labels: {{severity: critical, instance: h1, pci_bus_id: "00000000:3B:00.0"}}
            exp_annotations:
              summary: "The GPU at 00000000:3B:00.0 on h1 has fallen off the bus"
      - eval_time: 2m
        alertname: GpuCountMismatch
        exp_alerts: []
      - eval_time: 4m
        alertname: GpuCountMismatch
        exp_alerts:
          - exp_labels: {{severity: critical, instance: h1}}
            exp_annotations:
              summary: "h1: 1 NVIDIA GPU(s) on the PCI bus are missing from NVML"
      - eval_time: 15m
        alertname: GpuIdleWhileQueued
        exp_alerts:
          - exp_labels: {{severity: warning, instance: h2}}
            exp_annotations:
              summary: "GPUs on h2 busy 20% (SM active, else utilization) while requests wait"
          - exp_labels: {{severity: warning, instance: h3}}
            exp_annotations:
              summary: "GPUs on h3 busy 20% (SM active, else utilization) while requests wait"
"#,
        rules = repo("config/prometheus/rules.yml").display(),
        x48 = xid("0", "48", "Double bit ECC error", "reset_gpu"),
        x13 = xid("1", "13", "Graphics engine exception", "restart_app"),
    );
    let file = dir.join("gpu_rules_test.yml");
    std::fs::write(&file, test).unwrap();
    let out = Command::new("promtool")
        .args(["test", "rules"])
        .arg(&file)
        .output()
        .expect("run promtool (the test command installs the prometheus package)");
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// With --gpu-processes, a process holding a GPU context becomes a target, and the target
/// ends with its process: it is not looked up again by name (a later process with the
/// same name is another program), and it frees its place for new GPU processes.
#[test]
fn gpu_process_targets_end_with_their_process() {
    if !bpf_or_skip("gpu_process_targets_end_with_their_process") {
        return;
    }
    let first = Sleeper(Command::new("sleep").arg("600").spawn().unwrap());
    let pid = first.0.id();
    let one_gpu = |pid: Option<u32>| {
        let proc = pid.map_or(String::new(), |p| format!("0 process {p} 1073741824\n"));
        format!(
            "0 uuid {UUID0}\n0 pci 00000000:18:00.0\n0 name {H100}\n0 minor 0\n\
             0 util 10 1\n0 memory 85899345920 1073741824\n{proc}"
        )
    };
    let rig = Rig::new(
        "gpu-procs",
        &one_gpu(Some(pid)),
        &["0000:18:00.0"],
        "kernel_log = false",
    );
    let agent = rig.start(&["--gpu-processes"]);
    let targets = |agent: &Agent| -> Vec<serde_json::Value> {
        let (_, body) = agent.get("/api/v1/targets");
        serde_json::from_str::<Vec<serde_json::Value>>(&body).unwrap()
    };
    let start = Instant::now();
    while !targets(&agent).iter().any(|t| t["pid"] == pid) {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{:?}",
            targets(&agent)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        targets(&agent).iter().find(|t| t["pid"] == pid).unwrap()["kind"],
        "gpu_process"
    );
    // It exits (and leaves the GPU); another `sleep` runs, holding no GPU.
    rig.script(&one_gpu(None));
    drop(first);
    let other = Sleeper(Command::new("sleep").arg("600").spawn().unwrap());
    let start = Instant::now();
    while !targets(&agent).is_empty() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{:?}",
            targets(&agent)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    agent.settle();
    assert!(targets(&agent).is_empty(), "{:?}", targets(&agent));
    let m = agent.metrics();
    assert!(m.matching("infersight_target_up", &[]).is_empty());
    drop(other);
}

/// A server's worker that outlives it keeps its GPU memory: a PID-file target `svc` whose
/// root process dies while its child (one of its processes, scripted as holding 2 GiB on
/// GPU 0) stays is counted as an orphan with its memory, and the rule on the signal fires;
/// when the worker leaves the GPU the count is 0 again.
#[test]
fn a_worker_left_by_a_dead_server_is_an_orphaned_gpu_holder() {
    if !bpf_or_skip("gpu_orphans") {
        return;
    }
    // The server: a shell that starts a worker, says its PID and waits on its stdin.
    let mut server = Command::new("sh")
        .args(["-c", "sleep 600 & echo $!; read x"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(server.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    let worker: u32 = line.trim().parse().unwrap();
    struct Kill(u32);
    impl Drop for Kill {
        fn drop(&mut self) {
            // SAFETY: kill(2) with a PID this test started; no memory is involved.
            unsafe { libc::kill(self.0 as i32, libc::SIGKILL) };
        }
    }
    let _worker = Kill(worker);
    let script = |holder: bool| {
        let p = if holder {
            format!("0 process {worker} 2147483648\n")
        } else {
            String::new()
        };
        format!(
            "0 uuid {UUID0}\n0 pci 00000000:18:00.0\n0 name {H100}\n0 minor 0\n\
             0 util 10 1\n0 memory 85899345920 4294967296\n{p}"
        )
    };
    let rig = Rig::new(
        "orphans",
        &script(true),
        &["0000:18:00.0"],
        "kernel_log = false",
    );
    let rules = std::fs::read_to_string(rig.dir.join("rules.toml")).unwrap();
    std::fs::write(
        rig.dir.join("rules.toml"),
        format!(
            "{rules}\n[[rule]]\nname = \"TestGpuOrphans\"\nexpr = \"gpu_orphan_processes > 0\"\n\
             severity = \"high\"\n"
        ),
    )
    .unwrap();
    let pid_file = rig.dir.join("svc.pid");
    std::fs::write(&pid_file, format!("{}\n", server.id())).unwrap();
    let target = format!("{}=svc", pid_file.display());
    let agent = rig.start(&["--pid-file", &target]);
    let g0 = id("0");
    let p = [
        ("gpu", "0"),
        ("UUID", UUID0),
        ("pid", &worker.to_string()),
        ("target", "svc"),
    ];
    // While the server lives its worker is its process on the GPU, no orphan.
    let m = agent.wait_for(Duration::from_secs(20), "the worker as svc's", |m| {
        m.get("infersight_gpu_process_memory_used_bytes", &p) == Some(2147483648.0)
    });
    assert_eq!(get(&m, "infersight_gpu_orphan_processes", &g0), Some(0.0));
    assert_eq!(
        get(&m, "infersight_gpu_orphan_memory_bytes", &g0),
        Some(0.0)
    );
    assert!(!firing(&m, "TestGpuOrphans", &[]));

    // The server is killed; the worker lives on, re-parented, holding the memory.
    server.kill().unwrap();
    server.wait().unwrap();
    let m = agent.wait_for(Duration::from_secs(10), "an orphan", |m| {
        get(m, "infersight_gpu_orphan_processes", &g0) == Some(1.0)
    });
    assert_eq!(
        get(&m, "infersight_gpu_orphan_memory_bytes", &g0),
        Some(2147483648.0)
    );
    assert_eq!(
        m.get("infersight_target_up", &[("target", "svc")]),
        Some(0.0)
    );
    // It is no process of svc's any more.
    assert!(m
        .matching("infersight_gpu_process_memory_used_bytes", &[])
        .is_empty());
    assert!(firing(
        &m,
        "TestGpuOrphans",
        &[("gpu", "0"), ("UUID", UUID0)]
    ));

    // It exits and leaves the GPU.
    drop(_worker);
    rig.script(&script(false));
    let m = agent.wait_for(Duration::from_secs(10), "no orphan", |m| {
        get(m, "infersight_gpu_orphan_processes", &g0) == Some(0.0)
    });
    assert_eq!(
        get(&m, "infersight_gpu_orphan_memory_bytes", &g0),
        Some(0.0)
    );
    assert!(!firing(&m, "TestGpuOrphans", &[]));
}
