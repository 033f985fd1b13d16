//! infersight: eBPF-backed observability agent for ML inference hosts.
//!
//! Data flows one way: collectors (eBPF maps, /proc, NVML) → one `Snapshot` per tick →
//! consumers (`/metrics`, `/health`, …). See DESIGN.md for the module owners.
pub mod agent;
pub mod alert;
pub mod collect;
pub mod config;
pub mod control;
pub mod ebpf;
pub mod hist;
pub mod history;
pub mod metrics;
pub mod notify;
pub mod push;
pub mod route;
pub mod server;
pub mod snapshot;
pub mod store;
pub mod stream;
pub mod syscall_names;
pub mod targets;
