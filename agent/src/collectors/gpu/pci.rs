//! PCI addresses of GPUs as NVML, the kernel log and sysfs spell them, and the count of
//! NVIDIA GPUs on the PCI bus (what the machine has, whatever NVML still sees).
use std::{fmt, path::Path};

/// NVIDIA's PCI vendor id.
const NVIDIA: u32 = 0x10de;
/// PCI base class "display controller" (VGA 0x0300, 3D 0x0302): GPUs, not the audio
/// functions or NVSwitches NVIDIA also makes.
const DISPLAY_CLASS: u32 = 0x03;

/// Domain, bus and device of a GPU. The function is left out: the kernel log's
/// `PCI:0000:3b:00` has none, and a GPU is function 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PciAddr {
    domain: u32,
    bus: u8,
    device: u8,
}

impl PciAddr {
    /// Parse `00000000:3B:00.0` (NVML), `0000:3b:00.0` (sysfs), `PCI:0000:3b:00` and
    /// `0000:3b:00` (kernel log).
    pub fn parse(s: &str) -> Option<PciAddr> {
        let s = s.strip_prefix("PCI:").unwrap_or(s);
        let s = s.split_once('.').map_or(s, |(a, _)| a);
        let mut parts = s.split(':');
        let (domain, bus, device) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() || bus.len() != 2 || device.len() != 2 || domain.is_empty() {
            return None;
        }
        Some(PciAddr {
            domain: u32::from_str_radix(domain, 16).ok()?,
            bus: u8::from_str_radix(bus, 16).ok()?,
            device: u8::from_str_radix(device, 16).ok()?,
        })
    }
}

/// NVML's spelling (the `pci_bus_id` label, as DCGM exporter writes it).
impl fmt::Display for PciAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:08X}:{:02X}:{:02X}.0",
            self.domain, self.bus, self.device
        )
    }
}

/// NVIDIA display-class devices under `<sysfs_root>/bus/pci/devices`; `None` where that
/// directory cannot be read (no sysfs in a container). Reads only the kernel's cached
/// `vendor` and `class` attributes, never the device, so a GPU off the bus still counts.
pub fn count_nvidia_gpus(sysfs_root: &Path) -> Option<u32> {
    let dir = std::fs::read_dir(sysfs_root.join("bus/pci/devices")).ok()?;
    let hex = |path: &Path| -> Option<u32> {
        let text = std::fs::read_to_string(path).ok()?;
        u32::from_str_radix(text.trim().trim_start_matches("0x"), 16).ok()
    };
    let n = dir
        .filter_map(Result::ok)
        .filter(|e| {
            let p = e.path();
            hex(&p.join("vendor")) == Some(NVIDIA)
                && hex(&p.join("class")).is_some_and(|c| c >> 16 == DISPLAY_CLASS)
        })
        .count();
    u32::try_from(n).ok()
}

#[cfg(test)]
mod tests;
