//! The kernel programs' rare diagnostics (aya-log records) in the agent's log. Each cause
//! is logged once by the kernel until its flag is cleared here, every `REARM`, so a lasting
//! problem is logged again then, never once per event.
use std::time::Duration;

use agent_common::DIAG_CAUSES;
use aya::{
    maps::{Array, MapData},
    Ebpf,
};
use aya_log::EbpfLogger;
use tokio::io::unix::AsyncFd;

use super::take;

/// How often a logged cause may be logged again.
const REARM: Duration = Duration::from_secs(600);

/// Forwards aya-log records to `tracing`, under the target `infersight::kernel`.
struct ToTracing;

impl log::Log for ToTracing {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }

    fn log(&self, r: &log::Record<'_>) {
        let msg = r.args();
        match r.level() {
            log::Level::Error => tracing::error!(target: "infersight::kernel", "{msg}"),
            log::Level::Warn => tracing::warn!(target: "infersight::kernel", "{msg}"),
            log::Level::Info => tracing::info!(target: "infersight::kernel", "{msg}"),
            log::Level::Debug => tracing::debug!(target: "infersight::kernel", "{msg}"),
            log::Level::Trace => tracing::trace!(target: "infersight::kernel", "{msg}"),
        }
    }

    fn flush(&self) {}
}

pub struct KernelLog {
    logger: EbpfLogger<ToTracing>,
    once: Array<MapData, u32>,
}

impl KernelLog {
    /// Take the log ring and the once-flags out of the object.
    pub(super) fn take(bpf: &mut Ebpf) -> Result<KernelLog, String> {
        let once = take(bpf, "DIAG_ONCE", Array::try_from).map_err(|e| e.to_string())?;
        let logger = EbpfLogger::init_with_logger(bpf, ToTracing).map_err(|e| e.to_string())?;
        Ok(KernelLog { logger, once })
    }

    /// Read records as they come; clear the once-flags every `REARM`.
    pub async fn run(mut self) {
        // SAFETY: the logger owns its ring buffer's map fd, which stays open and unchanged
        // for as long as the AsyncFd owns the logger.
        let registered =
            unsafe { AsyncFd::register_with_interest(self.logger, tokio::io::Interest::READABLE) };
        let mut fd = match registered {
            Ok(fd) => fd,
            Err(e) => {
                tracing::warn!("kernel diagnostics unavailable: {e}");
                return;
            }
        };
        let mut rearm = tokio::time::interval(REARM);
        rearm.tick().await;
        loop {
            tokio::select! {
                ready = fd.readable_mut() => match ready {
                    Ok(mut guard) => {
                        guard.get_inner_mut().flush();
                        guard.clear_ready();
                    }
                    Err(e) => {
                        tracing::warn!("kernel diagnostics reader stopped: {e}");
                        return;
                    }
                },
                _ = rearm.tick() => {
                    for cause in 0..DIAG_CAUSES {
                        if let Err(e) = self.once.set(cause, 0, 0) {
                            tracing::debug!("DIAG_ONCE[{cause}]: {e}");
                        }
                    }
                }
            }
        }
    }
}
