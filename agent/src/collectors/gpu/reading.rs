//! What one reading of the GPUs holds, whatever produced it (NVML in the agent, recorded
//! values in tests). Identity fields are always there; every measurement is optional:
//! a value the GPU does not give is absent, never 0.
use serde::Serialize;

use super::{gpm::Saturation, memory::MemoryHealth, mig::MigInstance, throttle::Violations};
use crate::base::Health;

/// One GPU process as NVML sees it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GpuProcess {
    pub pid: u32,
    pub used_memory_bytes: Option<u64>,
    /// Latest SM and memory utilization sample of this process (percent).
    pub sm_util_percent: Option<u32>,
    pub mem_util_percent: Option<u32>,
    /// The target the process belongs to, if any (set each tick from the targets'
    /// processes).
    pub target: Option<String>,
    /// The target that left it behind: it belonged to that target, whose root process has
    /// died since (set by the collector).
    pub orphan_of: Option<String>,
}

/// One reading of one device.
#[derive(Debug, Clone, PartialEq, Serialize, Default)]
pub struct DeviceReading {
    pub index: u32,
    pub uuid: String,
    pub pci_bus_id: String,
    /// `nvidia<minor>`, as DCGM's `device` label.
    pub device: String,
    pub model: String,
    /// NVML answers GPU_IS_LOST for it: only its identity (from an earlier reading) is
    /// known.
    pub lost: bool,
    /// NVML's XID events are watched on this device.
    pub xid_events: bool,
    pub gpu_util_percent: Option<u32>,
    pub mem_copy_util_percent: Option<u32>,
    pub fb_used_mib: Option<u64>,
    pub fb_free_mib: Option<u64>,
    pub fb_total_mib: Option<u64>,
    pub temperature_celsius: Option<u32>,
    pub power_watts: Option<f64>,
    pub energy_millijoules: Option<u64>,
    pub sm_clock_mhz: Option<u32>,
    pub mem_clock_mhz: Option<u32>,
    pub pcie_tx_bytes_per_second: Option<u64>,
    pub pcie_rx_bytes_per_second: Option<u64>,
    /// NVML clock throttle (clocks event) reason bits.
    pub throttle_reasons: Option<u64>,
    /// How long each cause held the clocks down.
    pub violations: Violations,
    pub memory: MemoryHealth,
    /// GPM ratios over the last interval (Hopper and later).
    pub saturation: Saturation,
    /// GPU instances, when the GPU is in MIG mode.
    pub mig: Vec<MigInstance>,
    /// The last XID code seen on the device since the agent started (0: none), from
    /// NVML's events and the kernel log; absent when neither can be watched. Set by the
    /// collector.
    pub last_xid: Option<u64>,
    pub processes: Vec<GpuProcess>,
}

impl DeviceReading {
    pub fn memory_used_ratio(&self) -> Option<f64> {
        let (used, total) = (self.fb_used_mib?, self.fb_total_mib?);
        (total > 0).then(|| used as f64 / total as f64)
    }

    /// Its processes left behind by a target that died.
    pub fn orphans(&self) -> impl Iterator<Item = &GpuProcess> {
        self.processes.iter().filter(|p| p.orphan_of.is_some())
    }

    /// The GPU memory its orphans hold: absent when NVML does not give one's memory.
    pub fn orphan_memory_bytes(&self) -> Option<u64> {
        self.orphans().map(|p| p.used_memory_bytes).sum()
    }
}

/// The GPUs NVML counts, and the reading of each it could name.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct NvmlReading {
    pub device_count: u32,
    pub devices: Vec<DeviceReading>,
}

/// What the GPU sampler publishes each interval.
pub type GpuReading = Result<NvmlReading, Health>;

/// Where GPU readings come from: NVML, or recorded values in tests.
pub trait GpuSource: Send {
    fn read(&mut self) -> GpuReading;
}
