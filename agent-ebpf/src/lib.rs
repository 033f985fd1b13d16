//! Host build of the eBPF crate: empty on purpose. The programs live in `main.rs` and are
//! built for `bpfel-unknown-none` by `agent/build.rs` (aya-build).
#![no_std]
