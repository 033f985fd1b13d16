//! GPUs through NVML, sampled on their own thread and interval (a hung GPU marks this
//! collector failed instead of stalling the agent), with each GPU process's target, the
//! energy attributed to each target, and GPU health: XIDs with what to do about them
//! (NVML events and the kernel log), GPUs fallen off the bus, NVML's count against the PCI
//! bus's, memory health, throttling time and GPM saturation, and GPU processes left behind
//! by a target that died.
mod bus;
mod energy;
mod events;
mod gpm;
mod kmsg;
mod memory;
mod metrics;
mod mig;
mod nvml;
mod orphans;
mod pci;
mod reading;
mod throttle;
mod xid;

use std::{
    collections::{BTreeMap, HashMap},
    path::Path,
};

use serde::Serialize;

pub use energy::{EnergyLedger, EnergySummary};
pub use gpm::Saturation;
pub use memory::MemoryHealth;
pub use mig::MigInstance;
pub use nvml::{open_nvml, NvmlSource};
pub use reading::{DeviceReading, GpuProcess, GpuReading, GpuSource, NvmlReading};
pub use throttle::Violations;

use super::{sampler::Sampler, Collected, Collector, Tick};
use crate::{
    base::{
        signal::{Instance, SignalDoc, SignalSet},
        Health, State,
    },
    config::Config,
    ebpf::Kernel,
    targets::Targets,
};
use bus::BusReading;
use events::{lock, SharedEvents};
use orphans::{Holders, TargetStatus};
use pci::PciAddr;

/// One XID code's count on one GPU, with the GPU's labels (empty where NVML never named
/// it) and the catalog's name and action.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct XidSeries {
    pub gpu: Option<u32>,
    pub uuid: String,
    pub pci_bus_id: String,
    pub device: String,
    pub model: String,
    pub xid: u64,
    pub name: &'static str,
    pub action: &'static str,
    pub count: u64,
}

/// A GPU's PCI address and whether it is lost (off the bus, or NVML answers
/// GPU_IS_LOST).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct BusState {
    pub pci_bus_id: String,
    pub lost: bool,
}

/// GPU health beyond each device's reading: XIDs, lost GPUs and the two GPU counts.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct GpuHealth {
    /// XIDs since the agent started, each error once whether NVML, the kernel log or both
    /// reported it.
    pub xids: Vec<XidSeries>,
    /// The GPUs NVML reads, and lost ones it may no longer list.
    pub bus: Vec<BusState>,
    /// NVIDIA GPUs on the PCI bus (sysfs) and in NVML's count; absent where unknown.
    pub pci_devices: Option<u32>,
    pub nvml_devices: Option<u32>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct GpuPart {
    /// The host name (the GPU series' `Hostname` label).
    pub hostname: String,
    pub gpus: Vec<DeviceReading>,
    pub energy: EnergySummary,
    pub gpu_health: GpuHealth,
}

/// A GPU's labels: index, UUID, `nvidia<minor>`, model.
type Named = (u32, String, String, String);

pub struct Gpu {
    sampler: Result<Sampler<GpuReading>, Health>,
    bus: Option<Sampler<BusReading>>,
    shared: SharedEvents,
    /// The labels of every GPU NVML named since the start, by PCI address, for the XIDs
    /// of a GPU it no longer lists.
    named: BTreeMap<PciAddr, Named>,
    energy: EnergyLedger,
    /// The target each GPU process last belonged to, for the orphans of dead targets.
    holders: Holders,
    price_per_kwh: Option<f64>,
    currency: String,
    hostname: String,
}

/// Start the GPU sampler on `open`'s source (NVML in the agent, recorded values in tests).
pub fn sampler<S: GpuSource + 'static>(
    interval: std::time::Duration,
    open: impl FnOnce() -> Result<S, Health> + Send + 'static,
) -> Sampler<GpuReading> {
    let mut open = Some(open);
    let mut source: Option<Result<S, Health>> = None;
    Sampler::spawn("gpu", interval, move || {
        if source.is_none() {
            source = open.take().map(|f| f());
        }
        match source.as_mut() {
            Some(Ok(s)) => s.read(),
            Some(Err(h)) => Err(h.clone()),
            None => Err(Health::failed("GPU source not opened")),
        }
    })
}

/// Where the signals of one device come from.
type Field = fn(&DeviceReading) -> Option<f64>;
const FIELDS: [(&str, Field); 6] = [
    ("gpu_utilization_percent", |d| {
        d.gpu_util_percent.map(f64::from)
    }),
    ("gpu_memory_used_ratio", |d| d.memory_used_ratio()),
    ("gpu_temperature_celsius", |d| {
        d.temperature_celsius.map(f64::from)
    }),
    ("gpu_power_watts", |d| d.power_watts),
    ("gpu_sm_active_ratio", |d| d.saturation.sm_active),
    ("gpu_remapped_rows_pending", |d| {
        d.memory.remap_pending.map(|v| v as f64)
    }),
];

impl Collector for Gpu {
    const NAME: &'static str = "gpu";
    const SIGNALS: &'static [SignalDoc] = &[
        SignalDoc {
            name: "gpu_utilization_percent",
            labels: "gpu, UUID",
            meaning: "DCGM_FI_DEV_GPU_UTIL",
        },
        SignalDoc {
            name: "gpu_memory_used_ratio",
            labels: "gpu, UUID",
            meaning: "framebuffer used / total",
        },
        SignalDoc {
            name: "gpu_temperature_celsius",
            labels: "gpu, UUID",
            meaning: "DCGM_FI_DEV_GPU_TEMP",
        },
        SignalDoc {
            name: "gpu_power_watts",
            labels: "gpu, UUID",
            meaning: "DCGM_FI_DEV_POWER_USAGE",
        },
        SignalDoc {
            name: "gpu_sm_active_ratio",
            labels: "gpu, UUID",
            meaning: "DCGM_FI_PROF_SM_ACTIVE (GPM, Hopper and later)",
        },
        SignalDoc {
            name: "gpu_remapped_rows_pending",
            labels: "gpu, UUID",
            meaning: "DCGM_FI_DEV_ROW_REMAP_PENDING: 1 while a row remapping waits for a GPU reset",
        },
        SignalDoc {
            name: "gpu_xid_errors",
            labels: "gpu, UUID",
            meaning: "XID errors since the agent started",
        },
        SignalDoc {
            name: "gpu_xid_errors_total",
            labels: "gpu, UUID, pci_bus_id, xid, name, action",
            meaning:
                "XID errors since the agent started, per code, with the catalog's name and action",
        },
        SignalDoc {
            name: "gpu_lost",
            labels: "pci_bus_id",
            meaning: "1 for a GPU fallen off the bus (kernel log) or answering GPU_IS_LOST, else 0",
        },
        SignalDoc {
            name: "gpu_devices_missing",
            labels: "",
            meaning: "NVIDIA GPUs on the PCI bus minus those NVML counts",
        },
        SignalDoc {
            name: "gpu_orphan_processes",
            labels: "gpu, UUID",
            meaning: "processes holding GPU memory whose target's root process died (0 when none)",
        },
    ];
    type Part = GpuPart;

    fn start(config: &Config, _: &mut Kernel, _: &Targets) -> Gpu {
        let shared = SharedEvents::default();
        let (sampler, bus) = if config.gpu.enabled {
            // Opened here, before the agent serves: its end now is where counting starts.
            let log = config
                .gpu
                .kernel_log
                .then(|| kmsg::KernelLog::open(Path::new("/dev/kmsg")).map_err(|e| e.to_string()));
            if let Some(Err(why)) = &log {
                tracing::warn!("GPU: the kernel log is not read: {why}");
            }
            let bus = bus::sampler(
                config.gpu.interval,
                config.gpu.sysfs_root.clone(),
                log,
                shared.clone(),
            );
            let events = shared.clone();
            let s = sampler(config.gpu.interval, move || open_nvml(events));
            // The first snapshot should already hold GPU values.
            s.wait_first(std::time::Duration::from_secs(2));
            (Ok(s), Some(bus))
        } else {
            (
                Err(Health::unsupported("disabled ([gpu] enabled = false)")),
                None,
            )
        };
        Gpu {
            sampler,
            bus,
            shared,
            named: BTreeMap::new(),
            energy: EnergyLedger::default(),
            holders: Holders::default(),
            price_per_kwh: config.energy.price_per_kwh,
            currency: config.energy.currency.clone(),
            hostname: sysinfo::System::host_name().unwrap_or_default(),
        }
    }

    fn collect(&mut self, tick: &mut Tick<'_>) -> Collected<GpuPart> {
        let latest = self
            .sampler
            .as_ref()
            .map_err(Clone::clone)
            .and_then(|s| s.latest());
        let (reading, mut health, took) = match latest {
            Ok((reading, took)) => match reading.as_ref() {
                Ok(r) => (r.clone(), Health::active(), Some(took)),
                Err(h) => (NvmlReading::default(), h.clone(), Some(took)),
            },
            Err(h) => (NvmlReading::default(), h, None),
        };
        let nvml_devices = health.is_active().then_some(reading.device_count);
        let mut gpus = reading.devices;
        let bus = self
            .bus
            .as_ref()
            .and_then(|b| b.latest().ok())
            .map(|(r, _)| (*r).clone());
        let log_read = bus.as_ref().is_some_and(|b| b.kernel_log_read);
        if let Some(why) = bus.as_ref().and_then(|b| b.kernel_log_problem.as_ref()) {
            if health.is_active() {
                health = Health {
                    state: State::Active,
                    reason: Some(format!("XIDs from NVML only; kernel log: {why}")),
                };
            }
        }

        let gpu_health = GpuHealth {
            // A host without NVIDIA GPUs has no GPU series at all.
            pci_devices: bus.as_ref().and_then(|b| b.pci_gpus).filter(|n| *n > 0),
            nvml_devices,
            ..self.xids_and_losses(&mut gpus, log_read)
        };

        let owner: HashMap<u32, &str> = tick
            .targets
            .iter()
            .filter_map(|t| Some((t, tick.members.of(t.index)?)))
            .flat_map(|(t, m)| m.pids.iter().map(move |p| (*p, t.name.as_str())))
            .collect();
        for p in gpus.iter_mut().flat_map(|g| g.processes.iter_mut()) {
            p.target = owner.get(&p.pid).map(|t| t.to_string());
        }
        let member_of: HashMap<u32, u32> = tick
            .targets
            .iter()
            .filter_map(|t| Some((t.index, tick.members.of(t.index)?)))
            .flat_map(|(i, m)| m.pids.iter().map(move |p| (*p, i)))
            .collect();
        self.holders.update(
            &mut gpus,
            |pid| member_of.get(&pid).copied(),
            |index| {
                let t = tick.targets.iter().find(|t| t.index == index)?;
                Some(TargetStatus {
                    name: &t.name,
                    root: t.started,
                    up: tick.members.of(index)?.up(),
                })
            },
            crate::targets::start_time,
            nvml_devices.is_some(),
        );
        self.energy.update(&gpus, &owner);
        let part = GpuPart {
            hostname: self.hostname.clone(),
            gpus,
            energy: self.energy.summary(self.price_per_kwh, &self.currency),
            gpu_health,
        };
        Collected { part, health, took }
    }

    fn families(part: &GpuPart, out: &mut Vec<prometheus::proto::MetricFamily>) {
        metrics::families(part, out);
    }

    fn signals(part: &GpuPart, out: &mut SignalSet) {
        let health = &part.gpu_health;
        let gpu_labels = |d: &DeviceReading| (d.index.to_string(), d.uuid.clone());
        for (name, field) in FIELDS {
            let v = part
                .gpus
                .iter()
                .filter_map(|d| {
                    let (gpu, uuid) = gpu_labels(d);
                    Some(Instance::labelled(
                        &[("gpu", &gpu), ("UUID", &uuid)],
                        field(d)?,
                    ))
                })
                .collect();
            out.put(name, v);
        }
        let per_gpu = part
            .gpus
            .iter()
            .filter(|d| d.last_xid.is_some())
            .map(|d| {
                let n: u64 = health
                    .xids
                    .iter()
                    .filter(|x| x.pci_bus_id == d.pci_bus_id)
                    .map(|x| x.count)
                    .sum();
                let (gpu, uuid) = gpu_labels(d);
                Instance::labelled(&[("gpu", &gpu), ("UUID", &uuid)], n as f64)
            })
            .collect();
        out.put("gpu_xid_errors", per_gpu);
        let totals = health
            .xids
            .iter()
            .map(|x| {
                let gpu = x.gpu.map(|g| g.to_string()).unwrap_or_default();
                let code = x.xid.to_string();
                Instance::labelled(
                    &[
                        ("gpu", &gpu),
                        ("UUID", &x.uuid),
                        ("pci_bus_id", &x.pci_bus_id),
                        ("xid", &code),
                        ("name", x.name),
                        ("action", x.action),
                    ],
                    x.count as f64,
                )
            })
            .collect();
        out.put("gpu_xid_errors_total", totals);
        let lost = health
            .bus
            .iter()
            .map(|b| {
                Instance::labelled(
                    &[("pci_bus_id", &b.pci_bus_id)],
                    f64::from(u8::from(b.lost)),
                )
            })
            .collect();
        out.put("gpu_lost", lost);
        let missing = match (health.pci_devices, health.nvml_devices) {
            (Some(p), Some(n)) => vec![Instance::labelled(&[], f64::from(p) - f64::from(n))],
            _ => Vec::new(),
        };
        out.put("gpu_devices_missing", missing);
        let orphans = part
            .gpus
            .iter()
            .filter(|d| !d.lost)
            .map(|d| {
                let (gpu, uuid) = gpu_labels(d);
                Instance::labelled(
                    &[("gpu", &gpu), ("UUID", &uuid)],
                    d.orphans().count() as f64,
                )
            })
            .collect();
        out.put("gpu_orphan_processes", orphans);
    }

    fn reconfigure(&mut self, config: &Config) {
        self.price_per_kwh = config.energy.price_per_kwh;
        self.currency = config.energy.currency.clone();
    }
}

impl Gpu {
    /// XID counts with their GPUs' labels, and which GPUs are lost; sets each device's
    /// last XID (watched by NVML's events or the kernel log, `log_read`).
    fn xids_and_losses(&mut self, gpus: &mut [DeviceReading], log_read: bool) -> GpuHealth {
        for g in gpus.iter() {
            if let Some(pci) = PciAddr::parse(&g.pci_bus_id) {
                let named = (g.index, g.uuid.clone(), g.device.clone(), g.model.clone());
                self.named.insert(pci, named);
            }
        }
        let events = lock(&self.shared);
        for g in gpus.iter_mut() {
            let last = PciAddr::parse(&g.pci_bus_id).and_then(|p| events.last(p));
            g.last_xid = (g.xid_events || log_read).then(|| last.unwrap_or(0));
        }
        let xids = events
            .counts()
            .into_iter()
            .map(|c| {
                let (gpu, uuid, device, model) = match self.named.get(&c.pci) {
                    Some((i, u, d, m)) => (Some(*i), u.clone(), d.clone(), m.clone()),
                    None => Default::default(),
                };
                XidSeries {
                    gpu,
                    uuid,
                    pci_bus_id: c.pci.to_string(),
                    device,
                    model,
                    xid: c.code,
                    name: c.name,
                    action: c.action,
                    count: c.count,
                }
            })
            .collect();
        let gone = events.lost_gpus();
        drop(events);
        let mut lost: BTreeMap<String, bool> = BTreeMap::new();
        for g in gpus.iter().filter(|g| !g.pci_bus_id.is_empty()) {
            let off = PciAddr::parse(&g.pci_bus_id).is_some_and(|p| gone.contains(&p));
            lost.insert(g.pci_bus_id.clone(), g.lost || off);
        }
        for p in gone {
            lost.insert(p.to_string(), true);
        }
        GpuHealth {
            xids,
            bus: lost
                .into_iter()
                .map(|(pci_bus_id, lost)| BusState { pci_bus_id, lost })
                .collect(),
            pci_devices: None,
            nvml_devices: None,
        }
    }

    /// A GPU collector over another source (tests: recorded readings), without the
    /// kernel-log thread.
    pub fn with_sampler(config: &Config, sampler: Sampler<GpuReading>) -> Gpu {
        Gpu {
            sampler: Ok(sampler),
            bus: None,
            shared: SharedEvents::default(),
            named: BTreeMap::new(),
            energy: EnergyLedger::default(),
            holders: Holders::default(),
            price_per_kwh: config.energy.price_per_kwh,
            currency: config.energy.currency.clone(),
            hostname: sysinfo::System::host_name().unwrap_or_default(),
        }
    }
}
