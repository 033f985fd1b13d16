//! Collectors: each reads one source and fills its part of the Snapshot.
pub mod cuda;
pub mod energy;
pub mod gpu;
pub mod host;
pub mod http;
pub mod process;
pub mod sampler;
pub mod sched;
pub mod syscalls;
