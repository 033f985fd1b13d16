//! Collectors: each reads one source (its kernel programs and maps, /proc, NVML) and
//! produces its part of each tick's readings, its metric families, its alert signals and
//! its health. Collectors never know each other: what one needs beyond its own source
//! (the targets and their processes) comes in the `Tick`.
//!
//! Adding one: a folder here with a type that implements `Collector`, `pub mod` below,
//! and one line in `readings.rs`'s registry (see the README's "Add a collector").
pub mod cuda;
pub mod engines;
pub mod failures;
pub mod gpu;
pub mod host;
pub mod http;
pub mod process;
pub mod sampler;
pub mod sched;
pub mod syscalls;
pub mod tcp;

use std::time::Duration;

use prometheus::proto::MetricFamily;
use serde::Serialize;

use crate::{
    base::{
        signal::{SignalDoc, SignalSet},
        Health,
    },
    config::Config,
    ebpf::{Kernel, RecordOffset},
    targets::{Members, Target, Targets},
};

/// What every collector may read or change during a tick.
pub struct Tick<'a> {
    pub targets: &'a Targets,
    /// Each target's live processes, read once per tick for every collector.
    pub members: &'a Members,
    /// In host mode, the processes holding a GPU context at the last reading (where
    /// libcuda.so is to be found); empty otherwise.
    pub gpu_pids: &'a [u32],
    pub kernel: &'a mut Kernel,
}

/// One tick's reading of a collector.
pub struct Collected<P> {
    pub part: P,
    pub health: Health,
    /// How long its last reading took (collectors that sample on their own thread).
    pub took: Option<Duration>,
}

impl<P> Collected<P> {
    pub fn new(part: P, health: Health) -> Collected<P> {
        Collected {
            part,
            health,
            took: None,
        }
    }
}

/// A source of readings. The registry (`readings.rs`) starts each one, reads it every
/// tick, publishes its part, renders its families and evaluates its signals.
pub trait Collector: Sized + Send {
    /// Its name in `/health`, `infersight_collector_up` and the startup summary.
    const NAME: &'static str;
    /// The alert signals it offers (the README's table is made from these).
    const SIGNALS: &'static [SignalDoc] = &[];
    /// The tracepoint record fields its kernel programs read (offsets set at load).
    const RECORD_OFFSETS: &'static [RecordOffset] = &[];
    /// Its part of each tick's readings; its fields are top-level Snapshot fields.
    type Part: Clone + Default + std::fmt::Debug + PartialEq + Serialize + Send + Sync;

    /// Start from the configuration: attach its programs, take its maps, start its
    /// threads. A collector switched off by its configuration reports `unsupported`.
    fn start(config: &Config, kernel: &mut Kernel, targets: &Targets) -> Self;

    /// This tick's reading.
    fn collect(&mut self, tick: &mut Tick<'_>) -> Collected<Self::Part>;

    /// Its metric families, from its part.
    fn families(part: &Self::Part, out: &mut Vec<MetricFamily>);

    /// Its signals' instances, from its part (only called while it is active; otherwise
    /// every one of `SIGNALS` has no data).
    fn signals(_part: &Self::Part, _out: &mut SignalSet) {}

    /// Start what needs the async runtime (after `start`, inside it).
    fn spawn(&mut self, _kernel: &mut Kernel) {}

    /// Settings a reload changes at once (the rest need a restart).
    fn reconfigure(&mut self, _config: &Config) {}

    /// A target was added or removed while the agent runs.
    fn target_added(&mut self, _target: &Target) {}
    fn target_removed(&mut self, _target: &Target) {}

    /// Detach its programs (at shutdown).
    fn stop(&mut self, _kernel: &mut Kernel) {}
}
