//! Collectors: each reads one source and fills its part of the Snapshot.
pub mod http;
pub mod syscalls;
