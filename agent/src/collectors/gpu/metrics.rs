//! GPU families with DCGM exporter's names, units and labels (MIG instances labelled
//! `GPU_I_ID` and `GPU_I_PROFILE` as it does), and families of our own: XIDs with what to
//! do, lost GPUs, GPU counts, throttling seconds, per-process and energy.
use super::{DeviceReading, GpuPart, GpuProcess, MigInstance, Saturation};
use crate::base::family::{series, MetricFamily, MetricType};

/// A whole GPU, or one GPU instance of a GPU in MIG mode.
enum Row<'a> {
    Gpu(&'a DeviceReading),
    Instance(&'a DeviceReading, &'a MigInstance),
}

impl<'a> Row<'a> {
    /// The whole GPU (its fields that have no per-instance value).
    fn gpu(&self) -> Option<&'a DeviceReading> {
        match self {
            Row::Gpu(d) => Some(d),
            Row::Instance(..) => None,
        }
    }

    fn fb(&self) -> (Option<u64>, Option<u64>, Option<u64>) {
        match self {
            Row::Gpu(d) => (d.fb_used_mib, d.fb_free_mib, d.fb_total_mib),
            Row::Instance(_, m) => (m.fb_used_mib, m.fb_free_mib, m.fb_total_mib),
        }
    }

    fn saturation(&self) -> &'a Saturation {
        match self {
            Row::Gpu(d) => &d.saturation,
            Row::Instance(_, m) => &m.saturation,
        }
    }

    fn labels(&self, host: &str) -> Vec<(&'static str, String)> {
        match self {
            Row::Gpu(d) => identity(d, host),
            Row::Instance(d, m) => {
                let mut l = identity(d, host);
                l.push(("GPU_I_PROFILE", m.profile.clone()));
                l.push(("GPU_I_ID", m.gpu_instance_id.to_string()));
                l
            }
        }
    }
}

type Field = fn(&Row) -> Option<f64>;

const fn gauge(name: &'static str, help: &'static str, f: Field) -> Family {
    (name, help, MetricType::GAUGE, f)
}

const fn counter(name: &'static str, help: &'static str, f: Field) -> Family {
    (name, help, MetricType::COUNTER, f)
}

type Family = (&'static str, &'static str, MetricType, Field);

fn n(v: Option<u64>) -> Option<f64> {
    v.map(|v| v as f64)
}

/// (name, help, type, value) of each per-GPU family.
const FIELDS: &[Family] = &[
    gauge("DCGM_FI_DEV_GPU_UTIL", "GPU utilization (in %).", |r| {
        r.gpu()?.gpu_util_percent.map(f64::from)
    }),
    gauge(
        "DCGM_FI_DEV_MEM_COPY_UTIL",
        "Memory utilization (in %).",
        |r| r.gpu()?.mem_copy_util_percent.map(f64::from),
    ),
    gauge(
        "DCGM_FI_DEV_FB_USED",
        "Framebuffer memory used (in MiB).",
        |r| n(r.fb().0),
    ),
    gauge(
        "DCGM_FI_DEV_FB_FREE",
        "Framebuffer memory free (in MiB).",
        |r| n(r.fb().1),
    ),
    gauge(
        "DCGM_FI_DEV_FB_TOTAL",
        "Framebuffer memory total (in MiB).",
        |r| n(r.fb().2),
    ),
    gauge("DCGM_FI_DEV_GPU_TEMP", "GPU temperature (in C).", |r| {
        r.gpu()?.temperature_celsius.map(f64::from)
    }),
    gauge("DCGM_FI_DEV_POWER_USAGE", "Power draw (in W).", |r| {
        r.gpu()?.power_watts
    }),
    counter(
        "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION",
        "Total energy consumption since boot (in mJ).",
        |r| n(r.gpu()?.energy_millijoules),
    ),
    gauge(
        "DCGM_FI_DEV_SM_CLOCK",
        "SM clock frequency (in MHz).",
        |r| r.gpu()?.sm_clock_mhz.map(f64::from),
    ),
    gauge(
        "DCGM_FI_DEV_MEM_CLOCK",
        "Memory clock frequency (in MHz).",
        |r| r.gpu()?.mem_clock_mhz.map(f64::from),
    ),
    gauge(
        "DCGM_FI_DEV_XID_ERRORS",
        "Value of the last XID error encountered (0: none since the agent started).",
        |r| n(r.gpu()?.last_xid),
    ),
    gauge(
        "DCGM_FI_PROF_PCIE_TX_BYTES",
        "The rate of data transmitted over the PCIe bus, including headers (bytes per second).",
        |r| n(r.gpu()?.pcie_tx_bytes_per_second),
    ),
    gauge(
        "DCGM_FI_PROF_PCIE_RX_BYTES",
        "The rate of data received over the PCIe bus, including headers (bytes per second).",
        |r| n(r.gpu()?.pcie_rx_bytes_per_second),
    ),
    gauge(
        "DCGM_FI_DEV_CLOCK_THROTTLE_REASONS",
        "Current clock throttle reasons (NVML bit mask).",
        |r| n(r.gpu()?.throttle_reasons),
    ),
    // Throttling time, in DCGM's unit (ns); infersight_gpu_throttle_seconds_total has it
    // in seconds.
    counter(
        "DCGM_FI_DEV_POWER_VIOLATION",
        "Throttling duration due to power constraints (in ns).",
        |r| n(r.gpu()?.violations.power_ns),
    ),
    counter(
        "DCGM_FI_DEV_THERMAL_VIOLATION",
        "Throttling duration due to thermal constraints (in ns).",
        |r| n(r.gpu()?.violations.thermal_ns),
    ),
    counter(
        "DCGM_FI_DEV_SYNC_BOOST_VIOLATION",
        "Throttling duration due to sync-boost constraints (in ns).",
        |r| n(r.gpu()?.violations.sync_boost_ns),
    ),
    counter(
        "DCGM_FI_DEV_BOARD_LIMIT_VIOLATION",
        "Throttling duration due to board limit constraints (in ns).",
        |r| n(r.gpu()?.violations.board_limit_ns),
    ),
    counter(
        "DCGM_FI_DEV_LOW_UTIL_VIOLATION",
        "Throttling duration due to low utilization (in ns).",
        |r| n(r.gpu()?.violations.low_util_ns),
    ),
    counter(
        "DCGM_FI_DEV_RELIABILITY_VIOLATION",
        "Throttling duration due to reliability constraints (in ns).",
        |r| n(r.gpu()?.violations.reliability_ns),
    ),
    counter(
        "DCGM_FI_DEV_CORRECTABLE_REMAPPED_ROWS",
        "Number of remapped rows for correctable errors.",
        |r| n(r.gpu()?.memory.remapped_correctable),
    ),
    counter(
        "DCGM_FI_DEV_UNCORRECTABLE_REMAPPED_ROWS",
        "Number of remapped rows for uncorrectable errors.",
        |r| n(r.gpu()?.memory.remapped_uncorrectable),
    ),
    gauge(
        "DCGM_FI_DEV_ROW_REMAP_PENDING",
        "Whether a row remapping is pending until the next GPU reset (1) or not (0).",
        |r| n(r.gpu()?.memory.remap_pending),
    ),
    gauge(
        "DCGM_FI_DEV_ROW_REMAP_FAILURE",
        "Whether remapping of rows has failed.",
        |r| n(r.gpu()?.memory.remap_failure),
    ),
    counter(
        "DCGM_FI_DEV_ECC_SBE_VOL_TOTAL",
        "Total number of single-bit volatile ECC errors.",
        |r| n(r.gpu()?.memory.ecc_sbe_volatile),
    ),
    counter(
        "DCGM_FI_DEV_ECC_DBE_VOL_TOTAL",
        "Total number of double-bit volatile ECC errors.",
        |r| n(r.gpu()?.memory.ecc_dbe_volatile),
    ),
    counter(
        "DCGM_FI_DEV_ECC_SBE_AGG_TOTAL",
        "Total number of single-bit persistent ECC errors.",
        |r| n(r.gpu()?.memory.ecc_sbe_aggregate),
    ),
    counter(
        "DCGM_FI_DEV_ECC_DBE_AGG_TOTAL",
        "Total number of double-bit persistent ECC errors.",
        |r| n(r.gpu()?.memory.ecc_dbe_aggregate),
    ),
    counter(
        "DCGM_FI_DEV_RETIRED_SBE",
        "Total number of retired pages due to single-bit errors.",
        |r| n(r.gpu()?.memory.retired_sbe),
    ),
    counter(
        "DCGM_FI_DEV_RETIRED_DBE",
        "Total number of retired pages due to double-bit errors.",
        |r| n(r.gpu()?.memory.retired_dbe),
    ),
    gauge(
        "DCGM_FI_DEV_RETIRED_PENDING",
        "Whether pages are pending retirement until the next reboot (1) or not (0).",
        |r| n(r.gpu()?.memory.retired_pending),
    ),
    gauge(
        "DCGM_FI_PROF_GR_ENGINE_ACTIVE",
        "Ratio of time the graphics engine is active.",
        |r| r.saturation().gr_engine_active,
    ),
    gauge(
        "DCGM_FI_PROF_SM_ACTIVE",
        "The ratio of cycles an SM has at least 1 warp assigned.",
        |r| r.saturation().sm_active,
    ),
    gauge(
        "DCGM_FI_PROF_SM_OCCUPANCY",
        "The ratio of number of warps resident on an SM.",
        |r| r.saturation().sm_occupancy,
    ),
    gauge(
        "DCGM_FI_PROF_PIPE_TENSOR_ACTIVE",
        "Ratio of cycles the tensor (HMMA) pipe is active.",
        |r| r.saturation().tensor_active,
    ),
    gauge(
        "DCGM_FI_PROF_DRAM_ACTIVE",
        "Ratio of cycles the device memory interface is active sending or receiving data.",
        |r| r.saturation().dram_active,
    ),
];

fn identity(d: &DeviceReading, host: &str) -> Vec<(&'static str, String)> {
    vec![
        ("gpu", d.index.to_string()),
        ("UUID", d.uuid.clone()),
        ("pci_bus_id", d.pci_bus_id.clone()),
        ("device", d.device.clone()),
        ("modelName", d.model.clone()),
        ("Hostname", host.to_string()),
    ]
}

pub(super) fn families(part: &GpuPart, out: &mut Vec<MetricFamily>) {
    let host = part.hostname.as_str();
    let rows: Vec<Row> = part
        .gpus
        .iter()
        .flat_map(|d| {
            std::iter::once(Row::Gpu(d)).chain(d.mig.iter().map(move |m| Row::Instance(d, m)))
        })
        .collect();
    for (name, help, kind, value) in FIELDS {
        out.push(series(name, help, *kind, &rows, |r| r.labels(host), value));
    }
    health(part, out);
    processes_and_energy(part, out);
}

/// XIDs, lost GPUs, the two GPU counts and throttling seconds.
fn health(part: &GpuPart, out: &mut Vec<MetricFamily>) {
    let host = part.hostname.as_str();
    let h = &part.gpu_health;
    out.push(series(
        "infersight_gpu_xid_errors_total",
        "XID errors since the agent started, per code, from NVML's events and the kernel log \
         (each error once), with the XID catalog's name and recommended action.",
        MetricType::COUNTER,
        &h.xids,
        |x| {
            vec![
                ("gpu", x.gpu.map(|g| g.to_string()).unwrap_or_default()),
                ("UUID", x.uuid.clone()),
                ("pci_bus_id", x.pci_bus_id.clone()),
                ("device", x.device.clone()),
                ("modelName", x.model.clone()),
                ("Hostname", host.to_string()),
                ("xid", x.xid.to_string()),
                ("name", x.name.to_string()),
                ("action", x.action.to_string()),
            ]
        },
        |x| Some(x.count as f64),
    ));
    out.push(series(
        "infersight_gpu_lost",
        "1 for a GPU fallen off the bus (kernel log) or answering GPU_IS_LOST, 0 for one NVML reads.",
        MetricType::GAUGE,
        &h.bus,
        |b| vec![("pci_bus_id", b.pci_bus_id.clone())],
        |b| Some(f64::from(u8::from(b.lost))),
    ));
    let counts = [("pci", h.pci_devices), ("nvml", h.nvml_devices)];
    out.push(series(
        "infersight_gpu_devices",
        "NVIDIA GPUs on the PCI bus (sysfs) and in NVML's device count.",
        MetricType::GAUGE,
        &counts,
        |(source, _)| vec![("source", source.to_string())],
        |(_, n)| n.map(f64::from),
    ));
    let throttled: Vec<(&DeviceReading, &str, u64)> = part
        .gpus
        .iter()
        .flat_map(|d| {
            d.violations
                .by_reason()
                .into_iter()
                .filter_map(move |(reason, ns)| Some((d, reason, ns?)))
        })
        .collect();
    out.push(series(
        "infersight_gpu_throttle_seconds_total",
        "Time NVML's performance policies held the GPU's clocks down since the driver loaded, per cause.",
        MetricType::COUNTER,
        &throttled,
        |(d, reason, _)| {
            let mut l = identity(d, host);
            l.push(("reason", reason.to_string()));
            l
        },
        |(_, _, ns)| Some(*ns as f64 / 1e9),
    ));
}

fn processes_and_energy(part: &GpuPart, out: &mut Vec<MetricFamily>) {
    let host = part.hostname.as_str();
    out.push(series(
        "infersight_gpu_energy_joules_total",
        "Energy the GPU used since the driver loaded (NVML total energy consumption).",
        MetricType::COUNTER,
        &part.gpus,
        |d| identity(d, host),
        |d| d.energy_millijoules.map(|mj| mj as f64 / 1000.0),
    ));
    out.push(series(
        "infersight_gpu_energy_cost_total",
        "Estimated cost of the GPU's energy since the driver loaded, at the configured price.",
        MetricType::COUNTER,
        &part.gpus,
        |d| {
            let mut l = identity(d, host);
            l.push(("currency", part.energy.currency.clone()));
            l
        },
        |d| part.energy.cost(d.energy_millijoules? as f64 / 1000.0),
    ));
    // Processes of a target only: their series stay bounded by the targets.
    let owned: Vec<(&DeviceReading, &GpuProcess, &str)> = part
        .gpus
        .iter()
        .flat_map(|d| d.processes.iter().map(move |p| (d, p)))
        .filter_map(|(d, p)| Some((d, p, p.target.as_deref()?)))
        .collect();
    let labels = |(d, p, t): &(&DeviceReading, &GpuProcess, &str)| {
        vec![
            ("gpu", d.index.to_string()),
            ("UUID", d.uuid.clone()),
            ("pid", p.pid.to_string()),
            ("target", t.to_string()),
        ]
    };
    out.push(series(
        "infersight_gpu_process_memory_used_bytes",
        "GPU memory used by each process of a target.",
        MetricType::GAUGE,
        &owned,
        labels,
        |(_, p, _)| p.used_memory_bytes.map(|b| b as f64),
    ));
    out.push(series(
        "infersight_gpu_process_sm_utilization_percent",
        "Latest SM utilization sample of each process of a target (in %).",
        MetricType::GAUGE,
        &owned,
        labels,
        |(_, p, _)| p.sm_util_percent.map(f64::from),
    ));
    out.push(series(
        "infersight_gpu_process_memory_utilization_percent",
        "Latest memory-controller utilization sample of each process of a target (in %).",
        MetricType::GAUGE,
        &owned,
        labels,
        |(_, p, _)| p.mem_util_percent.map(f64::from),
    ));
    // Every GPU NVML reads has a value (0: none); a lost one has none.
    let read: Vec<&DeviceReading> = part.gpus.iter().filter(|d| !d.lost).collect();
    out.push(series(
        "infersight_gpu_orphan_processes",
        "Processes holding GPU memory whose target's root process died (left behind by a \
         server that was killed or restarted).",
        MetricType::GAUGE,
        &read,
        |d| identity(d, host),
        |d| Some(d.orphans().count() as f64),
    ));
    out.push(series(
        "infersight_gpu_orphan_memory_bytes",
        "GPU memory held by those processes.",
        MetricType::GAUGE,
        &read,
        |d| identity(d, host),
        |d| d.orphan_memory_bytes().map(|b| b as f64),
    ));
    let e = &part.energy;
    out.push(series(
        "infersight_energy_joules_total",
        "GPU energy attributed to the target (its share of each GPU's utilization, else memory).",
        MetricType::COUNTER,
        &e.targets,
        |(t, _)| vec![("target", t.clone())],
        |(_, j)| Some(*j),
    ));
    out.push(series(
        "infersight_energy_cost_total",
        "Estimated cost of the target's GPU energy at the configured price per kWh.",
        MetricType::COUNTER,
        &e.targets,
        |(t, _)| vec![("currency", e.currency.clone()), ("target", t.clone())],
        |(_, j)| e.cost(*j),
    ));
}
