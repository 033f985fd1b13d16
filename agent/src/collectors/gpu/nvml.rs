//! GPUs through NVML (nvml-wrapper opens libnvidia-ml at run time, so a host without the
//! driver runs fine and reports this collector `unsupported`). Each value NVML cannot read
//! for a device is absent from the reading, never 0.
use std::collections::HashMap;

use nvml_wrapper::{
    bitmasks::event::EventTypes,
    enum_wrappers::device::{Clock, PcieUtilCounter, TemperatureSensor},
    enums::device::UsedGpuMemory,
    enums::event::XidError,
    error::NvmlError,
    event::EventSet,
    Device, Nvml,
};
use serde::Serialize;

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
}

/// One reading of one device. Identity fields are always there; measurements are
/// optional.
#[derive(Debug, Clone, PartialEq, Serialize, Default)]
pub struct DeviceReading {
    pub index: u32,
    pub uuid: String,
    pub pci_bus_id: String,
    /// `nvidia<minor>`, as DCGM's `device` label.
    pub device: String,
    pub model: String,
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
    /// XID errors seen since the agent started: the last code, and counts per code.
    /// Absent when XID events cannot be watched on this device.
    pub last_xid: Option<u64>,
    pub xid_counts: Option<Vec<(u64, u64)>>,
    pub processes: Vec<GpuProcess>,
}

impl DeviceReading {
    pub fn memory_used_ratio(&self) -> Option<f64> {
        let (used, total) = (self.fb_used_mib?, self.fb_total_mib?);
        (total > 0).then(|| used as f64 / total as f64)
    }
}

/// Where GPU readings come from: NVML, or recorded values in tests.
pub trait GpuSource: Send {
    fn read(&mut self) -> Result<Vec<DeviceReading>, Health>;
}

/// What the GPU sampler publishes each interval.
pub type GpuReading = Result<Vec<DeviceReading>, Health>;

pub struct NvmlSource {
    /// Leaked once: the event set borrows the library handle for the agent's lifetime.
    nvml: &'static Nvml,
    /// One XID event set per device that supports them (a failed registration consumes
    /// its set, so sets are not shared).
    events: Vec<(u32, EventSet<'static>)>,
    /// Per device index: XID code → count.
    xids: HashMap<u32, Vec<(u64, u64)>>,
    last_xid: HashMap<u32, u64>,
    /// Per device index: timestamp of the last per-process utilization sample taken.
    last_util: HashMap<u32, u64>,
}

/// Open NVML; `unsupported` with the reason where there is no driver.
pub fn open_nvml() -> Result<NvmlSource, Health> {
    let nvml = Nvml::init().map_err(|e| match e {
        NvmlError::LibloadingError(e) => Health::unsupported(format!(
            "NVML is not available (no NVIDIA driver on this host): {e}"
        )),
        NvmlError::DriverNotLoaded => Health::unsupported("the NVIDIA kernel driver is not loaded"),
        NvmlError::NoPermission => Health::unsupported("no permission to use NVML"),
        e => Health::failed(format!("NVML init: {e}")),
    })?;
    let nvml: &'static Nvml = Box::leak(Box::new(nvml));
    let mut events = Vec::new();
    for i in 0..nvml.device_count().unwrap_or(0) {
        let (Ok(dev), Ok(set)) = (nvml.device_by_index(i), nvml.create_event_set()) else {
            continue;
        };
        match dev.register_events(EventTypes::CRITICAL_XID_ERROR, set) {
            Ok(set) => events.push((i, set)),
            Err(e) => tracing::info!("GPU {i}: XID events cannot be watched: {}", e.error),
        }
    }
    Ok(NvmlSource {
        nvml,
        events,
        xids: HashMap::new(),
        last_xid: HashMap::new(),
        last_util: HashMap::new(),
    })
}

impl NvmlSource {
    /// Take every pending XID event without waiting.
    fn drain_events(&mut self) {
        for (index, set) in &self.events {
            while let Ok(ev) = set.wait(0) {
                let index = *index;
                let code = match ev.event_data {
                    Some(XidError::Value(v)) => v,
                    _ => 0,
                };
                let counts = self.xids.entry(index).or_default();
                match counts.iter_mut().find(|(c, _)| *c == code) {
                    Some((_, n)) => *n += 1,
                    None => counts.push((code, 1)),
                }
                self.last_xid.insert(index, code);
            }
        }
    }

    fn device(&mut self, index: u32, dev: &Device<'static>) -> Result<DeviceReading, NvmlError> {
        let mem = dev.memory_info().ok();
        let util = dev.utilization_rates().ok();
        let mib = |b: u64| b / (1024 * 1024);
        let watched = self.events.iter().any(|(i, _)| *i == index);
        let mut r = DeviceReading {
            index,
            uuid: dev.uuid()?,
            pci_bus_id: dev.pci_info().map(|p| p.bus_id).unwrap_or_default(),
            device: dev
                .minor_number()
                .map(|m| format!("nvidia{m}"))
                .unwrap_or_else(|_| format!("nvidia{index}")),
            model: dev.name().unwrap_or_default(),
            gpu_util_percent: util.as_ref().map(|u| u.gpu),
            mem_copy_util_percent: util.as_ref().map(|u| u.memory),
            fb_used_mib: mem.as_ref().map(|m| mib(m.used)),
            fb_free_mib: mem.as_ref().map(|m| mib(m.free)),
            fb_total_mib: mem.as_ref().map(|m| mib(m.total)),
            temperature_celsius: dev.temperature(TemperatureSensor::Gpu).ok(),
            power_watts: dev.power_usage().ok().map(|mw| f64::from(mw) / 1000.0),
            energy_millijoules: dev.total_energy_consumption().ok(),
            sm_clock_mhz: dev.clock_info(Clock::SM).ok(),
            mem_clock_mhz: dev.clock_info(Clock::Memory).ok(),
            // NVML reports KB/s.
            pcie_tx_bytes_per_second: dev
                .pcie_throughput(PcieUtilCounter::Send)
                .ok()
                .map(|kb| u64::from(kb) * 1024),
            pcie_rx_bytes_per_second: dev
                .pcie_throughput(PcieUtilCounter::Receive)
                .ok()
                .map(|kb| u64::from(kb) * 1024),
            throttle_reasons: dev.current_throttle_reasons().ok().map(|t| t.bits()),
            last_xid: watched.then(|| self.last_xid.get(&index).copied().unwrap_or(0)),
            xid_counts: watched.then(|| self.xids.get(&index).cloned().unwrap_or_default()),
            processes: Vec::new(),
        };
        let mut procs: Vec<GpuProcess> = dev
            .running_compute_processes()
            .unwrap_or_default()
            .into_iter()
            .map(|p| GpuProcess {
                pid: p.pid,
                used_memory_bytes: match p.used_gpu_memory {
                    UsedGpuMemory::Used(b) => Some(b),
                    UsedGpuMemory::Unavailable => None,
                },
                sm_util_percent: None,
                mem_util_percent: None,
                target: None,
            })
            .collect();
        let since = self.last_util.get(&index).copied();
        if let Ok(samples) = dev.process_utilization_stats(since) {
            for s in samples {
                self.last_util
                    .entry(index)
                    .and_modify(|t| *t = (*t).max(s.timestamp))
                    .or_insert(s.timestamp);
                if let Some(p) = procs.iter_mut().find(|p| p.pid == s.pid) {
                    p.sm_util_percent = Some(s.sm_util);
                    p.mem_util_percent = Some(s.mem_util);
                }
            }
        }
        r.processes = std::mem::take(&mut procs);
        Ok(r)
    }
}

impl GpuSource for NvmlSource {
    fn read(&mut self) -> Result<Vec<DeviceReading>, Health> {
        self.drain_events();
        let n = self
            .nvml
            .device_count()
            .map_err(|e| Health::failed(format!("NVML device count: {e}")))?;
        let mut out = Vec::with_capacity(n as usize);
        for i in 0..n {
            let dev = self
                .nvml
                .device_by_index(i)
                .map_err(|e| Health::failed(format!("GPU {i}: {e}")))?;
            match self.device(i, &dev) {
                Ok(r) => out.push(r),
                // A device that cannot even name itself is left out and logged.
                Err(e) => tracing::warn!("GPU {i}: {e}"),
            }
        }
        Ok(out)
    }
}
