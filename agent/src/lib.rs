//! infersight: eBPF-backed observability agent for ML inference hosts.
//!
//! Data flows one way: collectors (eBPF maps, /proc, NVML) → readings → one `Snapshot` per
//! tick → consumers (`/metrics`, `/health`, the API, the stream, the history).
//!
//! The modules are layers, each importing only from the layers below it; the list, bottom
//! to top, is in the README's "How it works" (`cargo xtask test` checks it). Below, the
//! modules are declared in that order, one group per layer.
pub mod base;
pub mod config;
pub mod targets;

pub mod ebpf;

pub mod collectors;

pub mod readings;

pub mod alert;

pub mod history;
pub mod store;

pub mod notify;

pub mod alerting;

pub mod control;
pub mod snapshot;

pub mod exposition;
pub mod stream;

pub mod push;
pub mod server;

pub mod agent;
