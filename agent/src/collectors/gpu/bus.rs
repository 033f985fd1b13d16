//! The GPU collector's second thread: the driver's kernel-log lines and the NVIDIA GPUs on
//! the PCI bus. It never calls NVML, so a GPU that hangs NVML (often the one that fell off
//! the bus) does not stop it.
use std::{path::PathBuf, time::Duration, time::Instant};

use super::{
    events::{lock, SharedEvents, Source},
    kmsg::{KernelLog, NvrmEvent},
    pci,
};
use crate::collectors::sampler::Sampler;

/// What the thread found in its last round.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct BusReading {
    /// NVIDIA display-class devices in sysfs (absent where sysfs cannot be read).
    pub pci_gpus: Option<u32>,
    /// The driver's lines are read from the kernel log.
    pub kernel_log_read: bool,
    /// Why the kernel log is not read, where it should be.
    pub kernel_log_problem: Option<String>,
}

/// Start the thread: every `interval`, drain `log` (opened at start, so nothing logged
/// after the agent started is missed) into `shared`, and count the GPUs under
/// `sysfs_root`. `log` is `None` when reading the kernel log is switched off.
pub fn sampler(
    interval: Duration,
    sysfs_root: PathBuf,
    mut log: Option<Result<KernelLog, String>>,
    shared: SharedEvents,
) -> Sampler<BusReading> {
    Sampler::spawn("gpu-bus", interval, move || {
        let kernel_log_problem = match log.as_mut() {
            None => None,
            Some(Err(why)) => Some(why.clone()),
            Some(Ok(log)) => log
                .drain(|event| {
                    let mut events = lock(&shared);
                    match event {
                        NvrmEvent::Xid { pci, code } => {
                            events.xid(pci, code, Source::KernelLog, Instant::now())
                        }
                        NvrmEvent::FellOffBus { pci } => events.lost(pci, Instant::now()),
                    }
                })
                .err()
                .map(|e| e.to_string()),
        };
        BusReading {
            pci_gpus: pci::count_nvidia_gpus(&sysfs_root),
            kernel_log_read: matches!(log, Some(Ok(_))) && kernel_log_problem.is_none(),
            kernel_log_problem,
        }
    })
}
