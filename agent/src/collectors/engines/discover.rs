//! Where a target's engine endpoints are looked for: its own listening TCP ports (read by
//! `targets::sockets`, which the HTTP collector uses too).
use std::net::SocketAddr;

pub use crate::targets::sockets::{listening, Listener};

/// `http://ADDR` for a listener (IPv6 in brackets).
pub fn base_url(addr: SocketAddr) -> String {
    format!("http://{addr}")
}
