//! What the collectors produced in one tick, and the registry that produces it: every
//! collector, in the order they are read (and listed in `/health`), one line each.
//! Each collector's part is flattened into the readings, so its fields are top-level
//! Snapshot fields. Figures that need several collectors' parts are merged here
//! (`merged.rs`).
mod merged;

use std::{collections::HashMap, time::Instant};

use prometheus::proto::MetricFamily;
use serde::Serialize;

pub use merged::TargetFigures;

use crate::{
    base::{
        signal::{SignalDoc, SignalSet},
        CollectorStatus, Health, ProgramStatus,
    },
    collectors::{
        self,
        engines::{EngineKind, EnginesPart, ProbeStatus},
        Collector, Tick,
    },
    config::Config,
    ebpf::{Kernel, RecordOffset},
    targets::{Target, TargetKind, Targets},
};

/// A target as published: what it is, for a process target whether it lives, and its
/// engine endpoint and health probe as last read.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TargetStatus {
    #[serde(flatten)]
    pub target: Target,
    /// For a process target: whether the process still exists.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alive: Option<bool>,
    /// Its engine's metrics endpoint and the last scrape (the figures are in `engines`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub engine: Option<EngineView>,
    /// Its health endpoint's last probe.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub health_probe: Option<ProbeStatus>,
}

/// Where a target's engine metrics are read and how the last scrape went.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EngineView {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub engine: Option<EngineKind>,
    #[serde(flatten)]
    pub health: Health,
}

impl TargetStatus {
    pub fn of(targets: &Targets, engines: &EnginesPart) -> Vec<TargetStatus> {
        targets
            .iter()
            .map(|t| TargetStatus {
                target: t.clone(),
                alive: match t.kind {
                    TargetKind::Host | TargetKind::Cgroup { .. } => None,
                    _ => Some(t.alive()),
                },
                engine: engines
                    .engines
                    .iter()
                    .find(|e| e.target == t.name)
                    .map(|e| EngineView {
                        url: e.url.clone(),
                        engine: e.engine,
                        health: e.health.clone(),
                    }),
                health_probe: engines
                    .health_probes
                    .iter()
                    .find(|p| p.target == t.name)
                    .cloned(),
            })
            .collect()
    }
}

/// One family per name: a collector may add series to a family another one fills (the
/// engines' own TTFT histograms beside the kernel-measured ones).
fn merge_same_names(out: &mut Vec<MetricFamily>) {
    let mut first: HashMap<String, usize> = HashMap::new();
    let mut i = 0;
    while i < out.len() {
        match first.get(out[i].name()) {
            Some(&j) => {
                let f = out.remove(i);
                out[j].mut_metric().extend(f.get_metric().iter().cloned());
            }
            None => {
                first.insert(out[i].name().to_string(), i);
                i += 1;
            }
        }
    }
}

/// The registry: `field: Type` for each collector, in reading order. `Readings` gets a
/// field of the collector's part, `Registry` one of the collector.
macro_rules! registry {
    ($($field:ident: $ty:ty),* $(,)?) => {
        /// What every collector produced this tick.
        #[derive(Debug, Clone, Default, PartialEq, Serialize)]
        pub struct Readings {
            pub timestamp_ms: u64,
            pub tick: u64,
            pub targets: Vec<TargetStatus>,
            pub collectors: Vec<CollectorStatus>,
            pub programs: Vec<ProgramStatus>,
            /// Figures merged from several collectors' parts.
            pub merged: Vec<TargetFigures>,
            $(
                #[serde(flatten)]
                pub $field: <$ty as Collector>::Part,
            )*
        }

        /// Every collector's record offsets, for `Kernel::load`.
        pub const RECORD_OFFSETS: &[&[RecordOffset]] = &[
            $(<$ty as Collector>::RECORD_OFFSETS,)*
        ];

        /// Every collector, started.
        pub struct Registry {
            $($field: $ty,)*
            merger: merged::Merger,
        }

        /// (collector name, its signals), in registry order: the README's tables, the
        /// rule parser's known names.
        pub const COLLECTORS: &[(&str, &[SignalDoc])] = &[
            $((<$ty as Collector>::NAME, <$ty as Collector>::SIGNALS),)*
        ];

        impl Registry {
            pub fn start(config: &Config, kernel: &mut Kernel, targets: &Targets) -> Registry {
                Registry {
                    $($field: <$ty as Collector>::start(config, kernel, targets),)*
                    merger: merged::Merger::new(config.http.window),
                }
            }

            /// Read every collector; `readings` gets their parts and health entries.
            pub fn collect(&mut self, tick: &mut Tick<'_>, readings: &mut Readings) {
                $(
                    let c = self.$field.collect(tick);
                    readings.collectors.push(CollectorStatus::new(
                        <$ty as Collector>::NAME,
                        c.health,
                        c.took,
                    ));
                    readings.$field = c.part;
                )*
                readings.merged = self.merger.update(readings, Instant::now());
            }

            pub fn spawn(&mut self, kernel: &mut Kernel) {
                $(self.$field.spawn(kernel);)*
            }

            pub fn reconfigure(&mut self, config: &Config) {
                $(self.$field.reconfigure(config);)*
            }

            pub fn target_added(&mut self, t: &Target) {
                $(self.$field.target_added(t);)*
            }

            pub fn target_removed(&mut self, t: &Target) {
                $(self.$field.target_removed(t);)*
            }

            pub fn stop(&mut self, kernel: &mut Kernel) {
                $(self.$field.stop(kernel);)*
            }
        }

        impl Readings {
            /// Every collector's metric families.
            pub fn families(&self, out: &mut Vec<MetricFamily>) {
                $(<$ty as Collector>::families(&self.$field, out);)*
                merged::families(&self.merged, out);
                merge_same_names(out);
            }

            /// Every signal's instances; a collector that is not active has no data.
            pub fn signals(&self) -> SignalSet {
                let mut out = SignalSet::default();
                $(
                    let name = <$ty as Collector>::NAME;
                    if self.collectors.iter().any(|c| c.name == name && c.health.is_active()) {
                        for s in <$ty as Collector>::SIGNALS {
                            out.put(s.name, Vec::new());
                        }
                        <$ty as Collector>::signals(&self.$field, &mut out);
                    } else {
                        for s in <$ty as Collector>::SIGNALS {
                            out.no_data(s.name);
                        }
                    }
                )*
                let active = |name: &str| {
                    self.collectors.iter().any(|c| c.name == name && c.health.is_active())
                };
                merged::signals(&self.merged, active("http"), active("engines"), &mut out);
                out
            }
        }
    };
}

registry! {
    syscalls: collectors::syscalls::Syscalls,
    http: collectors::http::Http,
    host: collectors::host::Host,
    process: collectors::process::Process,
    gpu: collectors::gpu::Gpu,
    cuda: collectors::cuda::Cuda,
    sched: collectors::sched::Sched,
    tcp: collectors::tcp::Tcp,
    failures: collectors::failures::Failures,
    engines: collectors::engines::Engines,
}

/// Every signal rules may use, in registry order.
pub fn signal_docs() -> impl Iterator<Item = (&'static str, &'static SignalDoc)> {
    COLLECTORS
        .iter()
        .flat_map(|(c, docs)| docs.iter().map(move |d| (*c, d)))
}

/// A signal name rules may use.
pub fn known_signal(name: &str) -> bool {
    signal_docs().any(|(_, d)| d.name == name)
}

/// The README's signal table (rows of `| name | labels | collector: meaning |`), made
/// from the registry.
pub fn signal_table() -> String {
    let mut out = String::from("| signal | labels | from |\n| --- | --- | --- |\n");
    for (collector, d) in signal_docs() {
        let labels = if d.labels.is_empty() {
            "–".to_string()
        } else {
            d.labels
                .split(", ")
                .map(|l| format!("`{l}`"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        out += &format!("| `{}` | {labels} | {collector}: {} |\n", d.name, d.meaning);
    }
    out
}

#[cfg(test)]
mod tests;
