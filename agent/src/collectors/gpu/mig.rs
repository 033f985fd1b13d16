//! MIG: the GPU instances of a GPU in MIG mode, labelled as dcgm-exporter labels them
//! (`GPU_I_ID`, `GPU_I_PROFILE`), with the memory and saturation NVML gives per instance.
use nvml_wrapper::{Device, Nvml};
use serde::Serialize;

use super::gpm::{Gpm, Saturation};

/// NVML's "MIG enabled" mode value.
const MIG_ENABLED: u32 = 1;

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct MigInstance {
    pub gpu_instance_id: u32,
    /// The instance profile, e.g. `1g.10gb`.
    pub profile: String,
    pub uuid: String,
    pub fb_used_mib: Option<u64>,
    pub fb_free_mib: Option<u64>,
    pub fb_total_mib: Option<u64>,
    pub saturation: Saturation,
}

/// The GPU instances of `dev` (GPU `index`); none when MIG is off or unsupported.
pub fn read(nvml: &Nvml, index: u32, dev: &Device<'static>, gpm: &mut Gpm) -> Vec<MigInstance> {
    if dev.mig_mode().map(|m| m.current).ok() != Some(MIG_ENABLED) {
        return Vec::new();
    }
    let mib = |b: u64| b / (1024 * 1024);
    let mut out = Vec::new();
    for i in 0..dev.mig_device_count().unwrap_or(0) {
        // Slots without an instance answer NotFound.
        let Ok(mig) = dev.mig_device_by_index(i) else {
            continue;
        };
        let Some(gpu_instance_id) = gpu_instance_id(nvml, &mig) else {
            continue;
        };
        let name = mig.name().unwrap_or_default();
        let mem = mig.memory_info().ok();
        out.push(MigInstance {
            gpu_instance_id,
            profile: profile(&name).to_string(),
            uuid: mig.uuid().unwrap_or_default(),
            fb_used_mib: mem.as_ref().map(|m| mib(m.used)),
            fb_free_mib: mem.as_ref().map(|m| mib(m.free)),
            fb_total_mib: mem.as_ref().map(|m| mib(m.total)),
            saturation: gpm
                .read(index, dev, Some(gpu_instance_id))
                .unwrap_or_default(),
        });
    }
    out
}

/// A MIG device is named after its GPU and profile: `NVIDIA H100 80GB HBM3 MIG 1g.10gb`.
fn profile(name: &str) -> &str {
    name.rsplit_once("MIG ").map_or(name, |(_, p)| p.trim())
}

/// The GPU instance a MIG device handle belongs to. nvml-wrapper 0.13 does not wrap
/// `nvmlDeviceGetGpuInstanceId`; the symbol comes from the library it loaded.
fn gpu_instance_id(nvml: &Nvml, mig: &Device<'_>) -> Option<u32> {
    let get = nvml.lib().nvmlDeviceGetGpuInstanceId.as_ref().ok()?;
    let mut id: std::os::raw::c_uint = 0;
    // SAFETY: `get` is NVML's nvmlDeviceGetGpuInstanceId from the loaded library, called
    // with a live MIG device handle of that library and a valid out-pointer; NVML writes
    // one unsigned int and keeps no pointer.
    let rc = unsafe { get(mig.handle(), &mut id) };
    (rc == 0).then_some(id)
}

#[cfg(test)]
mod tests;
