//! A target's listening TCP sockets, read from /proc: the sockets in its processes' fd
//! tables that the socket table of their network namespace (`/proc/<pid>/net/tcp`,
//! `tcp6`) lists as listening. Shared by the collectors that need them (the engines
//! collector finds endpoints on them; the HTTP collector tells front-door ports from
//! internal ones), so it lives below them.
use std::{
    collections::{BTreeSet, HashSet},
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    path::PathBuf,
};

use procfs::{
    net::{TcpNetEntry, TcpState},
    process::{FDTarget, Process},
};

/// One listening socket of a target: where to connect to it, and its inode (a port
/// closed and opened again is another socket).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Listener {
    pub addr: SocketAddr,
    pub inode: u64,
}

/// What a target listens on.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Listening {
    /// Sorted by port.
    pub listeners: Vec<Listener>,
    /// Some of its processes live in another network namespace (a container): their
    /// ports cannot be reached from here.
    pub elsewhere: bool,
}

fn netns(pid: u32) -> Option<PathBuf> {
    std::fs::read_link(format!("/proc/{pid}/ns/net")).ok()
}

/// The listening entries of the socket tables (IPv4 and IPv6) of `p`'s network
/// namespace.
fn listen_entries(p: &Process) -> impl Iterator<Item = TcpNetEntry> {
    p.tcp()
        .into_iter()
        .flatten()
        .chain(p.tcp6().into_iter().flatten())
        .filter(|e| e.state == TcpState::Listen)
}

/// The listening ports of the processes `pids` (processes that exited meanwhile are left
/// out). Only ports reachable from the agent's network namespace are returned.
pub fn listening(pids: &[u32]) -> Listening {
    let own = netns(std::process::id());
    let mut inodes = HashSet::new();
    // One process per network namespace reads the namespace's socket table.
    let mut readers: Vec<(Option<PathBuf>, u32)> = Vec::new();
    let mut out = Listening::default();
    for &pid in pids {
        let Ok(p) = Process::new(pid as i32) else {
            continue;
        };
        let ns = netns(pid);
        if ns != own {
            out.elsewhere = true;
            continue;
        }
        let Ok(fds) = p.fd() else { continue };
        let before = inodes.len();
        inodes.extend(fds.flatten().filter_map(|fd| match fd.target {
            FDTarget::Socket(inode) => Some(inode),
            _ => None,
        }));
        if inodes.len() > before && !readers.iter().any(|(n, _)| *n == ns) {
            readers.push((ns, pid));
        }
    }
    let mut found = BTreeSet::new();
    for (_, pid) in readers {
        let Ok(p) = Process::new(pid as i32) else {
            continue;
        };
        for e in listen_entries(&p) {
            if inodes.contains(&e.inode) {
                found.insert((
                    e.local_address.port(),
                    connectable(e.local_address),
                    e.inode,
                ));
            }
        }
    }
    out.listeners = found
        .into_iter()
        .map(|(_, addr, inode)| Listener { addr, inode })
        .collect();
    out
}

/// The inode of the socket open as `fd` in process `pid` (`None`: no such process or
/// fd, or not a socket).
pub fn socket_inode(pid: u32, fd: u32) -> Option<u64> {
    let fd = i32::try_from(fd).ok()?;
    match Process::new(i32::try_from(pid).ok()?)
        .ok()?
        .fd_from_fd(fd)
        .ok()?
        .target
    {
        FDTarget::Socket(inode) => Some(inode),
        _ => None,
    }
}

/// The local port of listening TCP socket `inode`, looked up in the socket tables of
/// process `pid`'s network namespace (a container's ports are its own); `None` when it
/// is not a listening TCP socket there.
pub fn listening_port(pid: u32, inode: u64) -> Option<u16> {
    let p = Process::new(i32::try_from(pid).ok()?).ok()?;
    listen_entries(&p)
        .find(|e| e.inode == inode)
        .map(|e| e.local_address.port())
}

/// Where to connect to a socket listening on `local`: the wildcard addresses become the
/// loopback of their family, an IPv4-mapped IPv6 address its IPv4 form.
pub fn connectable(local: SocketAddr) -> SocketAddr {
    let ip = match local.ip() {
        IpAddr::V4(v) if v.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(v) if v.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        IpAddr::V6(v) => match v.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v),
        },
        ip => ip,
    };
    SocketAddr::new(ip, local.port())
}

#[cfg(test)]
mod tests;
