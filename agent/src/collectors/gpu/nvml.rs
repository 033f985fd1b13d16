//! GPUs through NVML (nvml-wrapper opens libnvidia-ml.so.1 at run time, so a host without
//! the driver runs fine and reports this collector `unsupported`). Runs on the GPU
//! sampler's thread: XID events go to the shared events, a GPU answering GPU_IS_LOST is
//! reported lost, and GPM samples are compared one interval apart.
use std::{collections::HashMap, time::Instant};

use nvml_wrapper::{
    bitmasks::event::EventTypes,
    enum_wrappers::device::{Clock, PcieUtilCounter, TemperatureSensor},
    enums::device::UsedGpuMemory,
    enums::event::XidError,
    error::NvmlError,
    event::EventSet,
    Device, Nvml,
};

use super::{
    events::{lock, SharedEvents, Source},
    gpm::Gpm,
    memory, mig,
    pci::PciAddr,
    reading::{DeviceReading, GpuProcess, GpuReading, GpuSource, NvmlReading},
    throttle,
};
use crate::base::Health;

/// NVML reports XID 999 when it cannot tell the code.
const UNKNOWN_XID: u64 = 999;

pub struct NvmlSource {
    /// Leaked once: event sets and GPM samples borrow the library for the agent's lifetime.
    nvml: &'static Nvml,
    /// One XID event set per device that supports them (a failed registration consumes
    /// its set, so sets are not shared).
    events: Vec<(u32, EventSet<'static>)>,
    shared: SharedEvents,
    /// Per device index: the identity of its last good reading, so a GPU that is lost
    /// keeps its labels.
    known: HashMap<u32, DeviceReading>,
    /// Per device index: timestamp of the last per-process utilization sample taken.
    last_util: HashMap<u32, u64>,
    gpm: Gpm,
}

/// Open NVML; `unsupported` with the reason where there is no driver.
pub fn open_nvml(shared: SharedEvents) -> Result<NvmlSource, Health> {
    let nvml = Nvml::init().map_err(|e| match e {
        NvmlError::LibloadingError(e) => Health::unsupported(format!(
            "NVML is not available (no NVIDIA driver on this host): {e}"
        )),
        NvmlError::DriverNotLoaded => Health::unsupported("the NVIDIA kernel driver is not loaded"),
        NvmlError::NoPermission => Health::unsupported("no permission to use NVML"),
        e => Health::failed(format!("NVML init: {e}")),
    })?;
    let nvml: &'static Nvml = Box::leak(Box::new(nvml));
    let mut source = NvmlSource {
        nvml,
        events: Vec::new(),
        shared,
        known: HashMap::new(),
        last_util: HashMap::new(),
        gpm: Gpm::new(nvml),
    };
    for i in 0..nvml.device_count().unwrap_or(0) {
        let Ok(dev) = nvml.device_by_index(i) else {
            continue;
        };
        // Identity now, so an XID or a loss before the first reading has its GPU.
        if let Ok(id) = identity(i, &dev) {
            source.known.insert(i, id);
        }
        let Ok(set) = nvml.create_event_set() else {
            continue;
        };
        match dev.register_events(EventTypes::CRITICAL_XID_ERROR, set) {
            Ok(set) => source.events.push((i, set)),
            Err(e) => tracing::info!("GPU {i}: XID events cannot be watched: {}", e.error),
        }
    }
    Ok(source)
}

/// The labels of device `index`; its error when NVML cannot even name it.
fn identity(index: u32, dev: &Device<'_>) -> Result<DeviceReading, NvmlError> {
    Ok(DeviceReading {
        index,
        uuid: dev.uuid()?,
        pci_bus_id: dev.pci_info().map(|p| p.bus_id).unwrap_or_default(),
        device: dev
            .minor_number()
            .map(|m| format!("nvidia{m}"))
            .unwrap_or_else(|_| format!("nvidia{index}")),
        model: dev.name().unwrap_or_default(),
        ..DeviceReading::default()
    })
}

impl NvmlSource {
    fn pci(&self, index: u32) -> Option<PciAddr> {
        PciAddr::parse(&self.known.get(&index)?.pci_bus_id)
    }

    /// Take every pending XID event without waiting.
    fn drain_events(&mut self) {
        for (index, set) in &self.events {
            while let Ok(ev) = set.wait(0) {
                let code = match ev.event_data {
                    Some(XidError::Value(v)) => v,
                    _ => UNKNOWN_XID,
                };
                let pci = self
                    .known
                    .get(index)
                    .and_then(|d| PciAddr::parse(&d.pci_bus_id));
                match pci {
                    Some(pci) => lock(&self.shared).xid(pci, code, Source::Nvml, Instant::now()),
                    None => {
                        tracing::warn!("GPU {index}: XID {code}, on a GPU without a PCI address")
                    }
                }
            }
        }
    }

    /// Device `index` answered GPU_IS_LOST: its known identity, nothing measured.
    fn lost(&mut self, index: u32) -> DeviceReading {
        if let Some(pci) = self.pci(index) {
            lock(&self.shared).lost(pci, Instant::now());
        }
        let mut r = self.known.get(&index).cloned().unwrap_or(DeviceReading {
            index,
            ..DeviceReading::default()
        });
        r.lost = true;
        r.xid_events = self.events.iter().any(|(i, _)| *i == index);
        r
    }

    /// One device's reading; `None` when NVML cannot name it (logged).
    fn device(
        &mut self,
        index: u32,
        dev: &Device<'static>,
        started: Instant,
    ) -> Option<DeviceReading> {
        let mut r = match identity(index, dev) {
            Ok(r) => r,
            Err(NvmlError::GpuLost) => return Some(self.lost(index)),
            Err(e) => {
                tracing::warn!("GPU {index}: {e}");
                return None;
            }
        };
        self.known.insert(index, r.clone());
        // A GPU off the bus may still name itself from the driver's cache.
        let (mem, util) = (dev.memory_info(), dev.utilization_rates());
        if matches!(mem, Err(NvmlError::GpuLost)) || matches!(util, Err(NvmlError::GpuLost)) {
            return Some(self.lost(index));
        }
        let (mem, util) = (mem.ok(), util.ok());
        if let Some(pci) = PciAddr::parse(&r.pci_bus_id) {
            lock(&self.shared).answered(pci, started);
        }
        let mib = |b: u64| b / (1024 * 1024);
        r.xid_events = self.events.iter().any(|(i, _)| *i == index);
        r.gpu_util_percent = util.as_ref().map(|u| u.gpu);
        r.mem_copy_util_percent = util.as_ref().map(|u| u.memory);
        r.fb_used_mib = mem.as_ref().map(|m| mib(m.used));
        r.fb_free_mib = mem.as_ref().map(|m| mib(m.free));
        r.fb_total_mib = mem.as_ref().map(|m| mib(m.total));
        r.temperature_celsius = dev.temperature(TemperatureSensor::Gpu).ok();
        r.power_watts = dev.power_usage().ok().map(|mw| f64::from(mw) / 1000.0);
        r.energy_millijoules = dev.total_energy_consumption().ok();
        r.sm_clock_mhz = dev.clock_info(Clock::SM).ok();
        r.mem_clock_mhz = dev.clock_info(Clock::Memory).ok();
        // NVML reports KB/s.
        let kb = |c| dev.pcie_throughput(c).ok().map(|kb| u64::from(kb) * 1024);
        r.pcie_tx_bytes_per_second = kb(PcieUtilCounter::Send);
        r.pcie_rx_bytes_per_second = kb(PcieUtilCounter::Receive);
        r.throttle_reasons = dev.current_throttle_reasons().ok().map(|t| t.bits());
        r.violations = throttle::read(dev);
        r.memory = memory::read(dev).unwrap_or_default();
        r.saturation = self.gpm.read(index, dev, None).unwrap_or_default();
        r.mig = mig::read(self.nvml, index, dev, &mut self.gpm);
        r.processes = self.processes(index, dev);
        Some(r)
    }

    fn processes(&mut self, index: u32, dev: &Device<'static>) -> Vec<GpuProcess> {
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
                orphan_of: None,
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
        procs
    }
}

impl GpuSource for NvmlSource {
    fn read(&mut self) -> GpuReading {
        let started = Instant::now();
        self.drain_events();
        let n = self
            .nvml
            .device_count()
            .map_err(|e| Health::failed(format!("NVML device count: {e}")))?;
        let mut devices = Vec::with_capacity(n as usize);
        for i in 0..n {
            match self.nvml.device_by_index(i) {
                Ok(dev) => devices.extend(self.device(i, &dev, started)),
                Err(NvmlError::GpuLost) => devices.push(self.lost(i)),
                Err(e) => return Err(Health::failed(format!("GPU {i}: {e}"))),
            }
        }
        Ok(NvmlReading {
            device_count: n,
            devices,
        })
    }
}
