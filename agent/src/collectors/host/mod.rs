//! Host metrics from /proc and statvfs, with node_exporter's names and semantics (its
//! default device and filesystem exclusions included), so existing dashboards work.
mod metrics;

use std::{path::Path, time::Duration};

use procfs::{Current, CurrentSI};
use serde::Serialize;

use super::{sampler::Sampler, Collected, Collector, Tick};
use crate::{
    base::{
        signal::{Instance, SignalDoc, SignalSet},
        Health,
    },
    config::Config,
    ebpf::Kernel,
    targets::Targets,
};

/// How often the host is read (on its own thread: a stuck network filesystem's statvfs
/// marks this collector failed instead of stalling the agent).
const INTERVAL: Duration = Duration::from_secs(1);

/// CPU time of one CPU per mode, in seconds (node_cpu_seconds_total).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CpuSeconds {
    pub cpu: usize,
    pub modes: Vec<(&'static str, f64)>,
}

/// /proc/meminfo fields, in bytes; a field the kernel does not report is absent.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MemoryBytes {
    pub fields: Vec<(&'static str, u64)>,
}

impl MemoryBytes {
    pub fn get(&self, name: &str) -> Option<u64> {
        self.fields
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| *v)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Filesystem {
    pub device: String,
    pub fstype: String,
    pub mountpoint: String,
    pub size_bytes: u64,
    pub free_bytes: u64,
    pub avail_bytes: u64,
    pub files: u64,
    pub files_free: u64,
    pub readonly: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NetDevice {
    pub device: String,
    pub receive_bytes: u64,
    pub transmit_bytes: u64,
    pub receive_packets: u64,
    pub transmit_packets: u64,
    pub receive_errs: u64,
    pub transmit_errs: u64,
    pub receive_drop: u64,
    pub transmit_drop: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DiskIo {
    pub device: String,
    pub reads_completed: u64,
    pub writes_completed: u64,
    pub read_bytes: u64,
    pub written_bytes: u64,
}

/// Pressure stall totals (node_pressure_*_seconds_total).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Pressure {
    /// `cpu_waiting`, `memory_waiting`, `memory_stalled`, `io_waiting`, `io_stalled`.
    pub name: &'static str,
    pub seconds: f64,
}

/// One reading of the host. Parts that could not be read are absent or empty and named in
/// `errors`.
#[derive(Debug, Clone, PartialEq, Serialize, Default)]
pub struct HostSample {
    pub boot_time_seconds: Option<u64>,
    pub cpus: Vec<CpuSeconds>,
    /// Busy share of all CPUs since the previous reading (0..1).
    pub cpu_usage_ratio: Option<f64>,
    pub memory: Option<MemoryBytes>,
    pub load: Option<[f64; 3]>,
    pub filesystems: Vec<Filesystem>,
    pub network: Vec<NetDevice>,
    pub disks: Vec<DiskIo>,
    pub pressure: Vec<Pressure>,
    pub errors: Vec<String>,
}

impl HostSample {
    /// Used share of physical memory (1 - MemAvailable / MemTotal).
    pub fn memory_used_ratio(&self) -> Option<f64> {
        let m = self.memory.as_ref()?;
        let total = m.get("MemTotal")? as f64;
        let avail = m.get("MemAvailable")? as f64;
        (total > 0.0).then(|| 1.0 - avail / total)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct HostPart {
    pub host: Option<HostSample>,
}

pub struct Host {
    sampler: Result<Sampler<HostSample>, Health>,
}

impl Collector for Host {
    const NAME: &'static str = "host";
    const SIGNALS: &'static [SignalDoc] = &[
        SignalDoc {
            name: "cpu_usage_percent",
            labels: "",
            meaning: "busy share of all CPUs since the previous reading",
        },
        SignalDoc {
            name: "memory_usage_percent",
            labels: "",
            meaning: "100 × (1 − MemAvailable / MemTotal)",
        },
        SignalDoc {
            name: "disk_usage_percent",
            labels: "mountpoint, device, fstype",
            meaning: "100 × (1 − avail / size) per filesystem",
        },
        SignalDoc {
            name: "load1",
            labels: "",
            meaning: "1-minute load average",
        },
    ];
    type Part = HostPart;

    fn start(config: &Config, _: &mut Kernel, _: &Targets) -> Host {
        let sampler = if config.host.enabled {
            let mut reader = HostReader::default();
            let s = Sampler::spawn("host", INTERVAL, move || reader.sample());
            // The first snapshot should already hold host values.
            s.wait_first(Duration::from_secs(2));
            Ok(s)
        } else {
            Err(Health::unsupported(
                "disabled (--no-host or [host] enabled = false)",
            ))
        };
        Host { sampler }
    }

    fn collect(&mut self, _: &mut Tick<'_>) -> Collected<HostPart> {
        let latest = self
            .sampler
            .as_ref()
            .map_err(Clone::clone)
            .and_then(|s| s.latest());
        match latest {
            Ok((h, took)) => {
                let health = if h.errors.is_empty() {
                    Health::active()
                } else {
                    Health::failed(h.errors.join("; "))
                };
                Collected {
                    part: HostPart {
                        host: Some(h.as_ref().clone()),
                    },
                    health,
                    took: Some(took),
                }
            }
            Err(h) => Collected::new(HostPart::default(), h),
        }
    }

    fn families(part: &HostPart, out: &mut Vec<prometheus::proto::MetricFamily>) {
        if let Some(h) = &part.host {
            metrics::families(h, out);
        }
    }

    fn signals(part: &HostPart, out: &mut SignalSet) {
        let host = part.host.as_ref();
        out.put_one(
            "cpu_usage_percent",
            host.and_then(|h| h.cpu_usage_ratio).map(|r| r * 100.0),
        );
        out.put_one(
            "memory_usage_percent",
            host.and_then(|h| h.memory_used_ratio()).map(|r| r * 100.0),
        );
        out.put_one("load1", host.and_then(|h| h.load).map(|l| l[0]));
        let disks = host
            .map(|h| {
                h.filesystems
                    .iter()
                    .filter(|f| f.size_bytes > 0)
                    .map(|f| {
                        Instance::labelled(
                            &[
                                ("device", &f.device),
                                ("fstype", &f.fstype),
                                ("mountpoint", &f.mountpoint),
                            ],
                            100.0 * (1.0 - f.avail_bytes as f64 / f.size_bytes as f64),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        out.put("disk_usage_percent", disks);
    }
}

/// Reads the host; keeps the previous CPU totals for the usage ratio.
#[derive(Default)]
pub struct HostReader {
    prev_cpu: Option<(f64, f64)>,
}

impl HostReader {
    pub fn sample(&mut self) -> HostSample {
        let mut s = HostSample::default();
        match procfs::KernelStats::current() {
            Ok(k) => {
                s.boot_time_seconds = Some(k.btime);
                let tps = procfs::ticks_per_second() as f64;
                s.cpus = k
                    .cpu_time
                    .iter()
                    .enumerate()
                    .map(|(cpu, t)| CpuSeconds {
                        cpu,
                        modes: cpu_modes(t, tps),
                    })
                    .collect();
                let total = cpu_modes(&k.total, tps);
                let all: f64 = total.iter().map(|(_, v)| v).sum();
                let idle: f64 = total
                    .iter()
                    .filter(|(m, _)| *m == "idle" || *m == "iowait")
                    .map(|(_, v)| v)
                    .sum();
                if let Some((prev_all, prev_idle)) = self.prev_cpu {
                    let d_all = all - prev_all;
                    if d_all > 0.0 {
                        s.cpu_usage_ratio =
                            Some((1.0 - (idle - prev_idle) / d_all).clamp(0.0, 1.0));
                    }
                }
                self.prev_cpu = Some((all, idle));
            }
            Err(e) => s.errors.push(s_err("/proc/stat", &e)),
        }
        match procfs::Meminfo::current() {
            Ok(m) => s.memory = Some(memory(&m)),
            Err(e) => s.errors.push(s_err("/proc/meminfo", &e)),
        }
        match procfs::LoadAverage::current() {
            Ok(l) => s.load = Some([l.one.into(), l.five.into(), l.fifteen.into()]),
            Err(e) => s.errors.push(s_err("/proc/loadavg", &e)),
        }
        match procfs::net::dev_status() {
            Ok(devs) => {
                let mut list: Vec<NetDevice> = devs
                    .into_values()
                    .map(|d| NetDevice {
                        device: d.name,
                        receive_bytes: d.recv_bytes,
                        transmit_bytes: d.sent_bytes,
                        receive_packets: d.recv_packets,
                        transmit_packets: d.sent_packets,
                        receive_errs: d.recv_errs,
                        transmit_errs: d.sent_errs,
                        receive_drop: d.recv_drop,
                        transmit_drop: d.sent_drop,
                    })
                    .collect();
                list.sort_by(|a, b| a.device.cmp(&b.device));
                s.network = list;
            }
            Err(e) => s.errors.push(s_err("/proc/net/dev", &e)),
        }
        match procfs::DiskStats::current() {
            Ok(d) => {
                s.disks =
                    d.0.into_iter()
                        .filter(|d| !ignored_disk(&d.name))
                        .map(|d| DiskIo {
                            // /proc/diskstats counts 512-byte sectors whatever the device's.
                            read_bytes: d.sectors_read * 512,
                            written_bytes: d.sectors_written * 512,
                            reads_completed: d.reads,
                            writes_completed: d.writes,
                            device: d.name,
                        })
                        .collect();
            }
            Err(e) => s.errors.push(s_err("/proc/diskstats", &e)),
        }
        match filesystems() {
            Ok(f) => s.filesystems = f,
            Err(e) => s.errors.push(s_err("mountinfo", &e)),
        }
        s.pressure = pressure();
        s
    }
}

fn s_err(what: &str, e: &dyn std::fmt::Display) -> String {
    format!("{what}: {e}")
}

fn cpu_modes(t: &procfs::CpuTime, tps: f64) -> Vec<(&'static str, f64)> {
    let mut modes = vec![
        ("user", t.user),
        ("nice", t.nice),
        ("system", t.system),
        ("idle", t.idle),
    ];
    for (name, v) in [
        ("iowait", t.iowait),
        ("irq", t.irq),
        ("softirq", t.softirq),
        ("steal", t.steal),
    ] {
        if let Some(v) = v {
            modes.push((name, v));
        }
    }
    modes
        .into_iter()
        .map(|(m, ticks)| (m, ticks as f64 / tps))
        .collect()
}

fn memory(m: &procfs::Meminfo) -> MemoryBytes {
    let fields = [
        ("MemTotal", Some(m.mem_total)),
        ("MemFree", Some(m.mem_free)),
        ("MemAvailable", m.mem_available),
        ("Buffers", Some(m.buffers)),
        ("Cached", Some(m.cached)),
        ("SwapTotal", Some(m.swap_total)),
        ("SwapFree", Some(m.swap_free)),
    ];
    MemoryBytes {
        fields: fields
            .into_iter()
            .filter_map(|(n, v)| v.map(|v| (n, v)))
            .collect(),
    }
}

/// node_exporter's default `--collector.diskstats.device-exclude`:
/// `^(z?ram|loop|fd|(h|s|v|xv)d[a-z]|nvme\d+n\d+p)\d+$` (partitions and virtual devices).
pub fn ignored_disk(name: &str) -> bool {
    let digits_tail = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    for prefix in ["ram", "zram", "loop", "fd"] {
        if let Some(rest) = name.strip_prefix(prefix) {
            if digits_tail(rest) {
                return true;
            }
        }
    }
    for prefix in ["hd", "sd", "vd", "xvd"] {
        if let Some(rest) = name.strip_prefix(prefix) {
            let mut chars = rest.chars();
            if chars.next().is_some_and(|c| c.is_ascii_lowercase()) && digits_tail(chars.as_str()) {
                return true;
            }
        }
    }
    // nvme<N>n<N>p<N>
    if let Some(rest) = name.strip_prefix("nvme") {
        let mut parts = rest.splitn(2, 'n');
        if let (Some(ctrl), Some(rest)) = (parts.next(), parts.next()) {
            if let Some((ns, part)) = rest.split_once('p') {
                return digits_tail(ctrl) && digits_tail(ns) && digits_tail(part);
            }
        }
    }
    false
}

/// node_exporter's default `--collector.filesystem.fs-types-exclude`.
const IGNORED_FS_TYPES: &[&str] = &[
    "autofs",
    "binfmt_misc",
    "bpf",
    "cgroup",
    "cgroup2",
    "configfs",
    "debugfs",
    "devpts",
    "devtmpfs",
    "fusectl",
    "hugetlbfs",
    "iso9660",
    "mqueue",
    "nsfs",
    "overlay",
    "proc",
    "procfs",
    "pstore",
    "rpc_pipefs",
    "securityfs",
    "selinuxfs",
    "squashfs",
    "erofs",
    "sysfs",
    "tracefs",
];

/// node_exporter's default `--collector.filesystem.mount-points-exclude`:
/// `^/(dev|proc|run/credentials/.+|sys|var/lib/docker/.+|var/lib/containers/storage/.+)($|/)`.
pub fn ignored_mountpoint(m: &str) -> bool {
    let under = |root: &str| m == root || m.starts_with(&format!("{root}/"));
    let strictly_under =
        |root: &str| m.starts_with(&format!("{root}/")) && m.len() > root.len() + 1;
    under("/dev")
        || under("/proc")
        || under("/sys")
        || strictly_under("/run/credentials")
        || strictly_under("/var/lib/docker")
        || strictly_under("/var/lib/containers/storage")
}

/// The host's filesystems, as its init process (PID 1) sees them: under the systemd unit
/// (ProtectSystem, PrivateTmp, ProtectHome) the agent's own mount namespace has read-only
/// binds and private mounts that would misdescribe the host. The list and the read-only
/// flag come from PID 1's mount table (the agent's own where it cannot be read); sizes
/// from statvfs on a path that reaches the same filesystem: the agent's own path when
/// its device matches, else through /proc/1/root (needs ptrace access to PID 1), else the
/// filesystem is left out rather than described wrongly.
fn filesystems() -> procfs::ProcResult<Vec<Filesystem>> {
    let mounts = match procfs::process::Process::new(1).and_then(|p| p.mountinfo()) {
        Ok(m) => m,
        Err(_) => procfs::process::Process::myself()?.mountinfo()?,
    };
    let mut out: Vec<Filesystem> = Vec::new();
    for m in mounts.0 {
        let mountpoint = m.mount_point.to_string_lossy().into_owned();
        if IGNORED_FS_TYPES.contains(&m.fs_type.as_str()) || ignored_mountpoint(&mountpoint) {
            continue;
        }
        let Some(path) = path_to(&mountpoint, &m.majmin) else {
            continue;
        };
        let Ok(st) = rustix::fs::statvfs(Path::new(&path)) else {
            continue;
        };
        let ro = |o: &std::collections::HashMap<String, Option<String>>| o.contains_key("ro");
        let fs = Filesystem {
            device: m.mount_source.unwrap_or_else(|| "none".into()),
            fstype: m.fs_type,
            size_bytes: st.f_blocks * st.f_frsize,
            free_bytes: st.f_bfree * st.f_frsize,
            avail_bytes: st.f_bavail * st.f_frsize,
            files: st.f_files,
            files_free: st.f_ffree,
            readonly: ro(&m.mount_options) || ro(&m.super_options),
            mountpoint,
        };
        // A mount point mounted over again: the last mount is the visible one.
        out.retain(|f| f.mountpoint != fs.mountpoint);
        out.push(fs);
    }
    Ok(out)
}

/// A path to the filesystem mounted at `mountpoint` with device `majmin` ("254:0").
fn path_to(mountpoint: &str, majmin: &str) -> Option<String> {
    let (major, minor) = majmin.split_once(':')?;
    let (major, minor): (u32, u32) = (major.parse().ok()?, minor.parse().ok()?);
    let same = |p: &str| {
        rustix::fs::stat(p).is_ok_and(|st| {
            rustix::fs::major(st.st_dev) == major && rustix::fs::minor(st.st_dev) == minor
        })
    };
    [mountpoint.to_string(), format!("/proc/1/root{mountpoint}")]
        .into_iter()
        .find(|p| same(p))
}

fn pressure() -> Vec<Pressure> {
    let us = |v: u64| v as f64 / 1e6;
    let mut out = Vec::new();
    if let Ok(p) = procfs::CpuPressure::current() {
        out.push(Pressure {
            name: "cpu_waiting",
            seconds: us(p.some.total),
        });
    }
    if let Ok(p) = procfs::MemoryPressure::current() {
        out.push(Pressure {
            name: "memory_waiting",
            seconds: us(p.some.total),
        });
        out.push(Pressure {
            name: "memory_stalled",
            seconds: us(p.full.total),
        });
    }
    if let Ok(p) = procfs::IoPressure::current() {
        out.push(Pressure {
            name: "io_waiting",
            seconds: us(p.some.total),
        });
        out.push(Pressure {
            name: "io_stalled",
            seconds: us(p.full.total),
        });
    }
    out
}

#[cfg(test)]
mod tests;
