//! What the NVML thread and the kernel-log thread both report: XIDs, each counted once
//! however many of the two saw it, and GPUs lost (fallen off the bus). Shared between
//! the two threads and read by the collector each tick.
use std::{
    collections::{BTreeMap, VecDeque},
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant},
};

use super::{pci::PciAddr, xid};

/// Where an XID was seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Nvml,
    KernelLog,
}

/// One XID reaches NVML's event set and the kernel log within about one interval of each
/// thread; the same code on the same GPU from the other source within this window is
/// the same error.
const SAME_ERROR_WITHIN: Duration = Duration::from_secs(10);

/// Bounds on what the kernel log can make the agent remember (its text is not only the
/// driver's: root may write anything there). Past them new GPUs or codes are not counted.
const MAX_XID_SERIES: usize = 1024;
const MAX_LOST: usize = 256;

/// An XID code's count on one GPU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XidCount {
    pub pci: PciAddr,
    pub code: u64,
    pub name: &'static str,
    pub action: &'static str,
    pub count: u64,
}

struct Seen {
    pci: PciAddr,
    code: u64,
    source: Source,
    at: Instant,
    /// Already paired with the other source's report of the same error.
    paired: bool,
}

#[derive(Default)]
pub struct GpuEvents {
    counts: BTreeMap<(PciAddr, u64), u64>,
    last: BTreeMap<PciAddr, u64>,
    recent: VecDeque<Seen>,
    /// GPUs reported lost, and since when.
    lost: BTreeMap<PciAddr, Instant>,
}

pub type SharedEvents = Arc<Mutex<GpuEvents>>;

/// Lock, taking the data of a thread that panicked holding it (counts stay valid).
pub fn lock(events: &SharedEvents) -> std::sync::MutexGuard<'_, GpuEvents> {
    events.lock().unwrap_or_else(PoisonError::into_inner)
}

impl GpuEvents {
    /// An XID `source` saw at `at`; counted unless the other source already reported it.
    pub fn xid(&mut self, pci: PciAddr, code: u64, source: Source, at: Instant) {
        while self
            .recent
            .front()
            .is_some_and(|s| at.saturating_duration_since(s.at) > SAME_ERROR_WITHIN)
        {
            self.recent.pop_front();
        }
        let twin = self
            .recent
            .iter_mut()
            .find(|s| !s.paired && s.source != source && s.pci == pci && s.code == code);
        // The latest error on the GPU, however many sources report it.
        self.last.insert(pci, code);
        if let Some(twin) = twin {
            twin.paired = true;
            return;
        }
        self.recent.push_back(Seen {
            pci,
            code,
            source,
            at,
            paired: false,
        });
        if self.counts.len() >= MAX_XID_SERIES && !self.counts.contains_key(&(pci, code)) {
            tracing::warn!("XID {code} on {pci} not counted: {MAX_XID_SERIES} series already");
            return;
        }
        *self.counts.entry((pci, code)).or_default() += 1;
    }

    /// The GPU at `pci` is off the bus (kernel log) or NVML answers GPU_IS_LOST for it.
    pub fn lost(&mut self, pci: PciAddr, at: Instant) {
        if self.lost.len() < MAX_LOST || self.lost.contains_key(&pci) {
            self.lost.entry(pci).or_insert(at);
        }
    }

    /// NVML read the GPU at `pci` in a reading that started at `at`: a loss reported
    /// before that is over (the GPU was reset or the node rebooted without the agent).
    pub fn answered(&mut self, pci: PciAddr, at: Instant) {
        if self.lost.get(&pci).is_some_and(|since| *since < at) {
            self.lost.remove(&pci);
        }
    }

    pub fn counts(&self) -> Vec<XidCount> {
        self.counts
            .iter()
            .map(|(&(pci, code), &count)| {
                let (name, action) = xid::decode(code);
                XidCount {
                    pci,
                    code,
                    name,
                    action,
                    count,
                }
            })
            .collect()
    }

    /// The last XID code seen on `pci`.
    pub fn last(&self, pci: PciAddr) -> Option<u64> {
        self.last.get(&pci).copied()
    }

    pub fn lost_gpus(&self) -> Vec<PciAddr> {
        self.lost.keys().copied().collect()
    }
}

#[cfg(test)]
mod tests;
