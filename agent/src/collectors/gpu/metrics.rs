//! GPU families with DCGM exporter's names, units and labels, and per-process and energy
//! families of our own.
use super::{DeviceReading, GpuPart, GpuProcess};
use crate::base::family::{series, MetricFamily, MetricType};

type Field = fn(&DeviceReading) -> Option<f64>;

/// (name, help, type, value) of each per-device family.
const FIELDS: &[(&str, &str, MetricType, Field)] = &[
    (
        "DCGM_FI_DEV_GPU_UTIL",
        "GPU utilization (in %).",
        MetricType::GAUGE,
        |d| d.gpu_util_percent.map(f64::from),
    ),
    (
        "DCGM_FI_DEV_MEM_COPY_UTIL",
        "Memory utilization (in %).",
        MetricType::GAUGE,
        |d| d.mem_copy_util_percent.map(f64::from),
    ),
    (
        "DCGM_FI_DEV_FB_USED",
        "Framebuffer memory used (in MiB).",
        MetricType::GAUGE,
        |d| d.fb_used_mib.map(|v| v as f64),
    ),
    (
        "DCGM_FI_DEV_FB_FREE",
        "Framebuffer memory free (in MiB).",
        MetricType::GAUGE,
        |d| d.fb_free_mib.map(|v| v as f64),
    ),
    (
        "DCGM_FI_DEV_FB_TOTAL",
        "Framebuffer memory total (in MiB).",
        MetricType::GAUGE,
        |d| d.fb_total_mib.map(|v| v as f64),
    ),
    (
        "DCGM_FI_DEV_GPU_TEMP",
        "GPU temperature (in C).",
        MetricType::GAUGE,
        |d| d.temperature_celsius.map(f64::from),
    ),
    (
        "DCGM_FI_DEV_POWER_USAGE",
        "Power draw (in W).",
        MetricType::GAUGE,
        |d| d.power_watts,
    ),
    (
        "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION",
        "Total energy consumption since boot (in mJ).",
        MetricType::COUNTER,
        |d| d.energy_millijoules.map(|v| v as f64),
    ),
    (
        "DCGM_FI_DEV_SM_CLOCK",
        "SM clock frequency (in MHz).",
        MetricType::GAUGE,
        |d| d.sm_clock_mhz.map(f64::from),
    ),
    (
        "DCGM_FI_DEV_MEM_CLOCK",
        "Memory clock frequency (in MHz).",
        MetricType::GAUGE,
        |d| d.mem_clock_mhz.map(f64::from),
    ),
    (
        "DCGM_FI_DEV_XID_ERRORS",
        "Value of the last XID error encountered (0: none since the agent started).",
        MetricType::GAUGE,
        |d| d.last_xid.map(|v| v as f64),
    ),
    (
        "DCGM_FI_PROF_PCIE_TX_BYTES",
        "The rate of data transmitted over the PCIe bus, including headers (bytes per second).",
        MetricType::GAUGE,
        |d| d.pcie_tx_bytes_per_second.map(|v| v as f64),
    ),
    (
        "DCGM_FI_PROF_PCIE_RX_BYTES",
        "The rate of data received over the PCIe bus, including headers (bytes per second).",
        MetricType::GAUGE,
        |d| d.pcie_rx_bytes_per_second.map(|v| v as f64),
    ),
    (
        "DCGM_FI_DEV_CLOCK_THROTTLE_REASONS",
        "Current clock throttle reasons (NVML bit mask).",
        MetricType::GAUGE,
        |d| d.throttle_reasons.map(|v| v as f64),
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
    for (name, help, kind, value) in FIELDS {
        out.push(series(
            name,
            help,
            *kind,
            &part.gpus,
            |d| identity(d, host),
            value,
        ));
    }
    let xids: Vec<(&DeviceReading, u64, u64)> = part
        .gpus
        .iter()
        .flat_map(|d| {
            d.xid_counts
                .iter()
                .flatten()
                .map(move |(code, n)| (d, *code, *n))
        })
        .collect();
    out.push(series(
        "infersight_gpu_xid_errors_total",
        "XID errors reported by the driver since the agent started, per code.",
        MetricType::COUNTER,
        &xids,
        |(d, code, _)| {
            let mut l = identity(d, host);
            l.push(("xid", code.to_string()));
            l
        },
        |(_, _, n)| Some(*n as f64),
    ));
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
