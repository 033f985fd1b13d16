//! GPUs through NVML, sampled on their own thread and interval (a hung GPU marks this
//! collector failed instead of stalling the agent), with each GPU process's target and
//! the energy attributed to each target.
mod energy;
mod metrics;
mod nvml;

use std::collections::HashMap;

use serde::Serialize;

pub use energy::{EnergyLedger, EnergySummary};
pub use nvml::{open_nvml, DeviceReading, GpuProcess, GpuReading, GpuSource, NvmlSource};

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

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct GpuPart {
    /// The host name (the GPU series' `Hostname` label).
    pub hostname: String,
    pub gpus: Vec<DeviceReading>,
    pub energy: EnergySummary,
}

pub struct Gpu {
    sampler: Result<Sampler<GpuReading>, Health>,
    energy: EnergyLedger,
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

type Field = fn(&DeviceReading) -> Option<f64>;
/// Where each signal comes from in a device's reading.
const FIELDS: [Field; 5] = [
    |d| d.gpu_util_percent.map(f64::from),
    |d| d.memory_used_ratio(),
    |d| d.temperature_celsius.map(f64::from),
    |d| d.power_watts,
    |d| {
        d.xid_counts
            .as_ref()
            .map(|c| c.iter().map(|(_, n)| *n as f64).sum())
    },
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
            name: "gpu_xid_errors",
            labels: "gpu, UUID",
            meaning: "XID errors since the agent started",
        },
    ];
    type Part = GpuPart;

    fn start(config: &Config, _: &mut Kernel, _: &Targets) -> Gpu {
        let sampler = if config.gpu.enabled {
            let s = sampler(config.gpu.interval, open_nvml);
            // The first snapshot should already hold GPU values.
            s.wait_first(std::time::Duration::from_secs(2));
            Ok(s)
        } else {
            Err(Health::unsupported("disabled ([gpu] enabled = false)"))
        };
        Gpu {
            sampler,
            energy: EnergyLedger::default(),
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
        let (mut gpus, health, took) = match latest {
            Ok((reading, took)) => match reading.as_ref() {
                Ok(devices) => (devices.clone(), Health::active(), Some(took)),
                Err(h) => (Vec::new(), h.clone(), Some(took)),
            },
            Err(h) => (Vec::new(), h, None),
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
        self.energy.update(&gpus, &owner);
        let part = GpuPart {
            hostname: self.hostname.clone(),
            gpus,
            energy: self.energy.summary(self.price_per_kwh, &self.currency),
        };
        Collected { part, health, took }
    }

    fn families(part: &GpuPart, out: &mut Vec<prometheus::proto::MetricFamily>) {
        metrics::families(part, out);
    }

    fn signals(part: &GpuPart, out: &mut SignalSet) {
        for (doc, field) in Self::SIGNALS.iter().zip(FIELDS) {
            let v = part
                .gpus
                .iter()
                .filter_map(|d| {
                    let gpu = d.index.to_string();
                    Some(Instance::labelled(
                        &[("gpu", &gpu), ("UUID", &d.uuid)],
                        field(d)?,
                    ))
                })
                .collect();
            out.put(doc.name, v);
        }
    }

    fn reconfigure(&mut self, config: &Config) {
        self.price_per_kwh = config.energy.price_per_kwh;
        self.currency = config.energy.currency.clone();
    }
}

impl Gpu {
    /// A GPU collector over another source (tests: recorded readings).
    pub fn with_sampler(config: &Config, sampler: Sampler<GpuReading>) -> Gpu {
        Gpu {
            sampler: Ok(sampler),
            energy: EnergyLedger::default(),
            price_per_kwh: config.energy.price_per_kwh,
            currency: config.energy.currency.clone(),
            hostname: sysinfo::System::host_name().unwrap_or_default(),
        }
    }
}
